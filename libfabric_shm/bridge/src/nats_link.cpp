// SPDX-License-Identifier: MIT
// NATS connection set-up and stream creation for the bridge. Reconnection is the client's own
// (unlimited attempts, a custom delay: exponential backoff with jitter, so a restarted cluster
// is not hit by every bridge at the same instant); publishes made while disconnected are
// buffered by the client and re-sent, and the exporter's ack wait covers the rest.
#include "nats_link.h"

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <random>

#include "fabric_shm/clock.h"

namespace fabric_shm::bridge {

namespace {

int64_t to_ms(uint64_t ns) { return int64_t(std::max<uint64_t>(1, ns / 1'000'000)); }

bool is_retryable(natsStatus s) {
    switch (s) {
        case NATS_TIMEOUT:
        case NATS_CONNECTION_CLOSED:
        case NATS_CONNECTION_DISCONNECTED:
        case NATS_NO_SERVER:
        case NATS_NOT_YET_CONNECTED:
        case NATS_NO_RESPONDERS:
        case NATS_IO_ERROR:
        case NATS_STALE_CONNECTION:
        case NATS_INSUFFICIENT_BUFFER:
        case NATS_SLOW_CONSUMER:
            return true;
        default:
            return false;
    }
}

}  // namespace

Error nats_error(natsStatus s, std::string_view what, jsErrCode js_code) {
    std::string text = std::string(what) + ": " + natsStatus_GetText(s);
    natsStatus last = NATS_OK;
    if (const char* detail = nats_GetLastError(&last); detail && *detail && last == s) text += std::string(" (") + detail + ")";
    if (js_code != 0) text += " [JetStream error " + std::to_string(int(js_code)) + "]";
    Errc code = Errc::io_error;
    if (s == NATS_TIMEOUT || s == NATS_NO_RESPONDERS) code = Errc::timeout;
    else if (s == NATS_CONNECTION_AUTH_FAILED || s == NATS_NOT_PERMITTED || s == NATS_SSL_ERROR) code = Errc::permission_denied;
    else if (s == NATS_NOT_FOUND) code = Errc::not_found;
    else if (s == NATS_MAX_PAYLOAD) code = Errc::message_too_large;
    else if (s == NATS_INVALID_ARG || s == NATS_INVALID_SUBJECT) code = Errc::invalid_argument;
    else if (!is_retryable(s) && s == NATS_ERR && js_code == 0) code = Errc::io_error;
    return make_error(code, std::move(text));
}

bool message_already_gone(natsStatus s, jsErrCode js_code) noexcept {
    return s == NATS_NOT_FOUND || js_code == JSNoMessageFoundErr || js_code == JSSequenceNotFoundErr ||
           js_code == JSStreamMsgDeleteFailed;
}

Result<std::vector<std::string>> parse_server_list(std::string_view text) {
    std::vector<std::string> out;
    size_t start = 0;
    while (start <= text.size()) {
        size_t comma = text.find(',', start);
        if (comma == std::string_view::npos) comma = text.size();
        std::string item(text.substr(start, comma - start));
        while (!item.empty() && item.front() == ' ') item.erase(item.begin());
        while (!item.empty() && item.back() == ' ') item.pop_back();
        if (!item.empty()) {
            if (item.find("://") == std::string::npos) item = "nats://" + item;
            const bool scheme_ok = item.rfind("nats://", 0) == 0 || item.rfind("tls://", 0) == 0;
            const size_t host_at = item.find("://") + 3;
            if (!scheme_ok || host_at >= item.size() || item.find_first_of(" \t") != std::string::npos)
                return make_error(Errc::invalid_argument, "server '" + item + "': expected nats://HOST:PORT or tls://HOST:PORT");
            out.push_back(std::move(item));
        }
        start = comma + 1;
    }
    if (out.empty()) return make_error(Errc::invalid_argument, "no NATS server given (expected nats://HOST:PORT[,...])");
    return out;
}

Result<std::unique_ptr<NatsLink>> NatsLink::open(const NatsSettings& settings) {
    std::unique_ptr<NatsLink> link(new NatsLink());
    link->settings_ = settings;
    link->since_.store(wall_now_ns(), std::memory_order_relaxed);
    natsStatus s = natsOptions_Create(&link->opts_);
    if (s != NATS_OK) return nats_error(s, "NATS options");
    natsOptions* o = link->opts_;
    std::vector<const char*> urls;
    bool tls_url = false;
    for (const auto& u : settings.servers) {
        urls.push_back(u.c_str());
        tls_url |= u.rfind("tls://", 0) == 0;
    }
    auto check = [&](natsStatus st, const char* what) -> Status {
        if (st != NATS_OK) return nats_error(st, what);
        return {};
    };
    FABRIC_TRY(check(natsOptions_SetServers(o, urls.data(), int(urls.size())), "NATS servers"));
    FABRIC_TRY(check(natsOptions_SetNoRandomize(o, true), "NATS server order"));
    FABRIC_TRY(check(natsOptions_SetName(o, settings.name.empty() ? "fabric-shm-bridge" : settings.name.c_str()),
                     "NATS connection name"));
    FABRIC_TRY(check(natsOptions_SetTimeout(o, to_ms(settings.connect_timeout_ns)), "NATS connect timeout"));
    FABRIC_TRY(check(natsOptions_SetMaxReconnect(o, -1), "NATS reconnect attempts"));
    FABRIC_TRY(check(natsOptions_SetCustomReconnectDelay(o, &NatsLink::reconnect_delay, link.get()), "NATS reconnect delay"));
    FABRIC_TRY(check(natsOptions_SetRetryOnFailedConnect(o, true, &NatsLink::on_connected, link.get()), "NATS connect retry"));
    FABRIC_TRY(check(natsOptions_SetDisconnectedCB(o, &NatsLink::on_disconnected, link.get()), "NATS callbacks"));
    FABRIC_TRY(check(natsOptions_SetReconnectedCB(o, &NatsLink::on_reconnected, link.get()), "NATS callbacks"));
    FABRIC_TRY(check(natsOptions_SetClosedCB(o, &NatsLink::on_closed, link.get()), "NATS callbacks"));
    FABRIC_TRY(check(natsOptions_SetErrorHandler(o, &NatsLink::on_error, link.get()), "NATS callbacks"));
    FABRIC_TRY(check(natsOptions_SetPingInterval(o, 2000), "NATS ping interval"));  // notice a dead server within ~4 s
    FABRIC_TRY(check(natsOptions_SetMaxPingsOut(o, 2), "NATS pings"));
    // A bridge waits on a full local pool, not on the client: let it hold a lot while reconnecting.
    FABRIC_TRY(check(natsOptions_SetReconnectBufSize(o, 64 << 20), "NATS reconnect buffer"));
    if (!settings.user.empty() || !settings.password.empty())
        FABRIC_TRY(check(natsOptions_SetUserInfo(o, settings.user.c_str(), settings.password.c_str()), "NATS user"));
    if (!settings.token.empty()) FABRIC_TRY(check(natsOptions_SetToken(o, settings.token.c_str()), "NATS token"));
    if (!settings.creds_file.empty())
        FABRIC_TRY(check(natsOptions_SetUserCredentialsFromFiles(o, settings.creds_file.c_str(), nullptr),
                         ("NATS credentials file " + settings.creds_file).c_str()));
    if (!settings.nkey_seed_file.empty())
        FABRIC_TRY(check(natsOptions_SetNKeyFromSeed(o, nullptr, settings.nkey_seed_file.c_str()),
                         ("NATS NKey seed file " + settings.nkey_seed_file).c_str()));
    const bool tls = settings.tls || tls_url || !settings.tls_ca_file.empty() || !settings.tls_cert_file.empty();
    if (tls) {
        FABRIC_TRY(check(natsOptions_SetSecure(o, true), "TLS"));
        if (!settings.tls_ca_file.empty())
            FABRIC_TRY(check(natsOptions_LoadCATrustedCertificates(o, settings.tls_ca_file.c_str()),
                             ("TLS CA file " + settings.tls_ca_file).c_str()));
        if (!settings.tls_cert_file.empty() || !settings.tls_key_file.empty()) {
            if (settings.tls_cert_file.empty() || settings.tls_key_file.empty())
                return make_error(Errc::invalid_argument, "TLS client authentication needs both --tls-cert and --tls-key");
            FABRIC_TRY(check(natsOptions_LoadCertificatesChain(o, settings.tls_cert_file.c_str(), settings.tls_key_file.c_str()),
                             ("TLS certificate " + settings.tls_cert_file).c_str()));
        }
        if (settings.tls_skip_verify) FABRIC_TRY(check(natsOptions_SkipServerVerification(o, true), "TLS verification"));
    }

    s = natsConnection_Connect(&link->nc_, o);
    if (s == NATS_OK) {
        link->set_state(ConnectionState::connected);
    } else if (s != NATS_NOT_YET_CONNECTED) {
        return nats_error(s, "connect to " + (settings.servers.empty() ? std::string("?") : settings.servers.front()));
    }
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = to_ms(settings.api_timeout_ns);
    jo.PublishAsync.MaxPending = 1 << 16;
    jo.PublishAsync.AckHandler = &NatsLink::dispatch_ack;
    jo.PublishAsync.AckHandlerClosure = link.get();
    jo.PublishAsync.StallWait = 1000;
    s = natsConnection_JetStream(&link->js_, link->nc_, &jo);
    if (s != NATS_OK) return nats_error(s, "JetStream context");
    return link;
}

NatsLink::~NatsLink() {
    if (nc_) {
        // The client runs the closed callback on its own thread, with `this` as closure: wait
        // for it (the last callback of a connection) before this object goes away.
        natsConnection_Close(nc_);
        for (int i = 0; i < 5000 && !closed_.load(std::memory_order_acquire); ++i) usleep(1000);
    }
    if (js_) jsCtx_Destroy(js_);
    if (nc_) natsConnection_Destroy(nc_);
    if (opts_) natsOptions_Destroy(opts_);
}

bool NatsLink::connected() const { return nc_ && natsConnection_Status(nc_) == NATS_CONN_STATUS_CONNECTED; }

int64_t NatsLink::max_payload() const { return connected() ? natsConnection_GetMaxPayload(nc_) : 0; }

std::string NatsLink::connected_url() const {
    char buf[256] = {};
    if (nc_ && natsConnection_GetConnectedUrl(nc_, buf, sizeof buf) == NATS_OK) return buf;
    return "";
}

std::string NatsLink::take_async_error() {
    std::lock_guard<std::mutex> lock(error_mutex_);
    return std::exchange(async_error_, std::string());
}

void NatsLink::set_ack_handler(jsPubAckHandler handler, void* closure) {
    ack_closure_.store(closure, std::memory_order_release);
    ack_handler_.store(handler, std::memory_order_release);  // pairs with dispatch_ack's acquire load
}

void NatsLink::set_state(ConnectionState s) {
    state_.store(uint64_t(s), std::memory_order_relaxed);  // display; read by the bridge loop
    since_.store(wall_now_ns(), std::memory_order_relaxed);
}

void NatsLink::on_disconnected(natsConnection*, void* closure) {
    auto* self = static_cast<NatsLink*>(closure);
    self->disconnects_.fetch_add(1, std::memory_order_relaxed);
    self->set_state(ConnectionState::reconnecting);
}
void NatsLink::on_reconnected(natsConnection*, void* closure) {
    auto* self = static_cast<NatsLink*>(closure);
    self->reconnects_.fetch_add(1, std::memory_order_relaxed);
    self->set_state(ConnectionState::connected);
}
void NatsLink::on_connected(natsConnection*, void* closure) { static_cast<NatsLink*>(closure)->set_state(ConnectionState::connected); }
void NatsLink::on_closed(natsConnection*, void* closure) {
    auto* self = static_cast<NatsLink*>(closure);
    self->set_state(ConnectionState::closed);
    self->closed_.store(true, std::memory_order_release);  // pairs with the destructor's acquire load
}

void NatsLink::on_error(natsConnection*, natsSubscription*, natsStatus err, void* closure) {
    auto* self = static_cast<NatsLink*>(closure);
    std::lock_guard<std::mutex> lock(self->error_mutex_);
    self->async_error_ = std::string("NATS: ") + natsStatus_GetText(err);
}

int64_t NatsLink::reconnect_delay(natsConnection*, int attempts, void* closure) {
    auto* self = static_cast<NatsLink*>(closure);
    thread_local std::minstd_rand rng(uint32_t(getpid()) ^ uint32_t(mono_now_ns()));
    const uint64_t base = self->settings_.reconnect_wait_ns, cap = std::max(base, self->settings_.reconnect_max_ns);
    uint64_t d = base;
    for (int i = 1; i < attempts && d < cap; ++i) d *= 2;
    d = std::min(d, cap);
    // +-20 % jitter: bridges that lost the same server do not all come back at the same instant.
    const double j = 0.8 + 0.4 * (double(rng() % 1000) / 1000.0);
    return to_ms(uint64_t(double(d) * j));
}

void NatsLink::dispatch_ack(jsCtx* js, natsMsg* msg, jsPubAck* pa, jsPubAckErr* pae, void* closure) {
    auto* self = static_cast<NatsLink*>(closure);
    jsPubAckHandler h = self->ack_handler_.load(std::memory_order_acquire);  // pairs with set_ack_handler
    if (h) {
        h(js, msg, pa, pae, self->ack_closure_.load(std::memory_order_relaxed));
        return;
    }
    natsMsg_Destroy(msg);
}

natsStatus NatsLink::read_stream_created(const std::string& stream, int64_t wait_ms, int64_t* created,
                                         jsErrCode* js_code) const {
    jsOptions o;
    jsOptions_Init(&o);
    o.Wait = wait_ms;
    jsStreamInfo* si = nullptr;
    const natsStatus s = js_GetStreamInfo(&si, js_, stream.c_str(), &o, js_code);
    if (s == NATS_OK) *created = si->Created;
    jsStreamInfo_Destroy(si);
    return s;
}

Status NatsLink::ensure_stream(const std::string& stream, const StreamSettings& want, std::string* note) {
    jsStreamInfo* si = nullptr;
    jsErrCode jerr = jsErrCode(0);
    natsStatus s = js_GetStreamInfo(&si, js_, stream.c_str(), nullptr, &jerr);
    if (s == NATS_NOT_FOUND || jerr == JSStreamNotFoundErr) {
        if (si) jsStreamInfo_Destroy(si);
        si = nullptr;
        jsStreamConfig cfg;
        jsStreamConfig_Init(&cfg);
        const std::string subjects = stream_subjects(stream);
        const char* subj[] = {subjects.c_str()};
        cfg.Name = stream.c_str();
        cfg.Subjects = subj;
        cfg.SubjectsLen = 1;
        cfg.Storage = want.memory_storage ? js_MemoryStorage : js_FileStorage;
        cfg.Replicas = want.replicas;
        cfg.Retention = want.work_queue ? js_WorkQueuePolicy : js_LimitsPolicy;
        cfg.Discard = js_DiscardNew;  // a full stream refuses publishes (export waits); it never drops old messages
        cfg.MaxAge = int64_t(want.max_age_ns);
        cfg.MaxBytes = want.max_bytes;
        cfg.Duplicates = int64_t(want.duplicate_window_ns);
        cfg.AllowDirect = true;
        jerr = jsErrCode(0);
        s = js_AddStream(&si, js_, &cfg, nullptr, &jerr);
        if (s != NATS_OK && jerr != JSStreamNameExistErr) {
            if (si) jsStreamInfo_Destroy(si);
            Error e = nats_error(s, "create stream '" + stream + "' (" + (want.memory_storage ? "memory" : "file") +
                                        ", " + std::to_string(want.replicas) + " replicas)", jerr);
            if (jerr == JSClusterNoPeersErr || jerr == JSInsufficientResourcesErr)
                e.message += "; the cluster has fewer JetStream servers than replicas: lower --replicas";
            return e;
        }
        if (s != NATS_OK) {  // created by another bridge meanwhile
            if (si) jsStreamInfo_Destroy(si);
            si = nullptr;
            s = js_GetStreamInfo(&si, js_, stream.c_str(), nullptr, &jerr);
            if (s != NATS_OK) return nats_error(s, "stream '" + stream + "'", jerr);
        }
    } else if (s != NATS_OK) {
        return nats_error(s, "stream '" + stream + "'", jerr);
    }
    std::string diff;
    if (si && si->Config) {
        const jsStreamConfig& c = *si->Config;
        replicas_ = uint64_t(std::max<int64_t>(1, c.Replicas));
        memory_ = c.Storage == js_MemoryStorage;
        work_queue_ = c.Retention == js_WorkQueuePolicy;
        created_ = si->Created;
        bool covers = false;
        const std::string subjects = stream_subjects(stream);
        for (int i = 0; i < c.SubjectsLen; ++i)
            if (c.Subjects[i] && subjects == c.Subjects[i]) covers = true;
        if (!covers) {
            std::string have;
            for (int i = 0; i < c.SubjectsLen; ++i) have += std::string(have.empty() ? "" : ", ") + (c.Subjects[i] ? c.Subjects[i] : "?");
            jsStreamInfo_Destroy(si);
            return make_error(Errc::invalid_argument, "stream '" + stream + "' exists but does not take subjects '" +
                                                          subjects + "' (it takes " + (have.empty() ? "none" : have) +
                                                          "): it was not made by fabric-shm-bridge");
        }
        if (memory_ != want.memory_storage) diff += std::string(" storage ") + (memory_ ? "memory" : "file");
        if (int64_t(replicas_) != want.replicas) diff += " replicas " + std::to_string(replicas_);
        if ((c.Retention == js_WorkQueuePolicy) != want.work_queue)
            diff += std::string(" retention ") + (c.Retention == js_WorkQueuePolicy ? "workqueue" : "limits");
    }
    if (si) jsStreamInfo_Destroy(si);
    if (note) *note = diff.empty() ? "" : "stream '" + stream + "' exists with" + diff + " (used as it is)";
    return {};
}

}  // namespace fabric_shm::bridge
