// SPDX-License-Identifier: MIT
#include "torture_children.h"

#include <fcntl.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "fabric_shm/clock.h"
#include "fabric_shm/consumer.h"
#include "fabric_shm/jobs.h"
#include "fabric_shm/lease.h"
#include "fabric_shm/mem_object_store.h"
#include "fabric_shm/pool.h"
#include "fabric_shm/tiered_object_store.h"
#include "fabric_shm/topic.h"
#include "fabric_shm/worker_loop.h"
#include "torture_support.h"

namespace fabric_shm::torture {

namespace {

volatile sig_atomic_t g_stop = 0;
void on_stop(int) { g_stop = 1; }

void install_stop_handler() {
    struct sigaction sa {};
    sa.sa_handler = on_stop;
    sigemptyset(&sa.sa_mask);
    ::sigaction(SIGTERM, &sa, nullptr);
}

/// One line per call, appended with a single write(2): a SIGKILL leaves whole lines only.
void log_line(int fd, const std::string& line) {
    const std::string l = line + "\n";
    ssize_t n;
    do n = ::write(fd, l.data(), l.size());
    while (n < 0 && errno == EINTR);
}

std::span<const uint8_t> bytes_of(std::string_view s) { return {reinterpret_cast<const uint8_t*>(s.data()), s.size()}; }

void sleep_ms(uint64_t ms) {
    timespec ts{time_t(ms / 1000), long(ms % 1000) * 1'000'000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR && !g_stop) {
    }
}

}  // namespace

// ---- producer ----------------------------------------------------------------------------------

int producer_child(const ProducerArgs& a) {
    install_stop_handler();
    const int fd = ::open(a.log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0) return 2;
    OpenOptions oo;
    oo.heartbeat_timeout = ns_duration(a.heartbeat_timeout_ms * kNsPerMs);
    auto pool = Pool::open(a.pool, oo);
    if (!pool) {
        log_line(fd, "E open " + pool.error().message);
        return 1;
    }
    log_line(fd, "T " + std::to_string(pool->self()));
    // A call that failed: a violation, unless this process declared a heartbeat timeout and was
    // judged dead by it (fenced): then its calls may be refused, and it stops.
    auto failed = [&](const std::string& what, const Error& e) {
        const bool fenced = a.heartbeat_timeout_ms != 0 &&
                            pool->registry().liveness(pool->self(), MonoClock::now()) == Liveness::certainly_dead;
        log_line(fd, std::string(fenced ? "F " : "E ") + what + " " + std::string(errc_name(e.code)) + ": " + e.message);
        return fenced ? kExitFenced : 1;
    };
    auto store = MemObjectStore::open(*pool);
    if (!store) return failed("store", store.error());
    ProducerOptions po;
    po.block_timeout = std::chrono::seconds(30);
    auto producer = Producer::open(*pool, kTopic, po);
    if (!producer) return failed("producer", producer.error());
    auto beat = [&] {
        // Fenced (stale_generation) only changes who may take its locks: its ring claims are
        // judged by pid, so its sends stay valid and the run goes on.
        if (a.heartbeat_timeout_ms) (void)pool->heartbeat();
    };
    Rng rng(a.seed);
    for (uint64_t n = 0; n < a.max_objects && !g_stop; ++n) {
        const std::string key = a.prefix + "-" + std::to_string(n);
        beat();
        if (rng.below(100) < 15) {
            // Scratch: put, maybe overwrite, maybe remove; never notified.
            auto uri = FabricUri::make(pool->name(), kScratchBucket, key);
            const int steps = 1 + int(rng.below(3));  // 1: put; 2: put, overwrite; 3: put, overwrite, remove
            for (int v = 1; v <= steps; ++v) {
                beat();
                if (v == 3) {
                    log_line(fd, "IR " + key);
                    auto r = (*store)->remove(*uri);
                    if (!r) return failed("remove " + key, r.error());
                    if (!*r) return failed("remove " + key, make_error(Errc::not_found, "absent"));
                    log_line(fd, "R " + key);
                    break;
                }
                const uint64_t size = pick_size(rng);
                const std::string data = content(key, v, size);
                log_line(fd, "IS " + key + " " + std::to_string(v) + " " + std::to_string(size));
                auto ver = (*store)->put(*uri, bytes_of(data));
                if (!ver) return failed("put " + key, ver.error());
                log_line(fd, "S " + key + " " + std::to_string(v) + " " + std::to_string(size) + " " +
                                 std::to_string(*ver));
            }
        } else if (rng.below(100) < 20) {
            // A batch: put_many of 2..8 objects, then their notifications in one send_batch,
            // ordered by partition so that consecutive messages claim runs of slots.
            const size_t count = size_t(2 + rng.below(7));
            std::vector<std::string> keys, datas, uri_texts, ver_texts, ts_texts;
            std::vector<FabricUri> uris;
            std::vector<PutRequest> items;
            for (size_t i = 0; i < count; ++i) {
                keys.push_back(a.prefix + "-" + std::to_string(n + i));
                datas.push_back(content(keys[i], 1, pick_size(rng)));
                uris.push_back(*FabricUri::make(pool->name(), kInBucket, keys[i]));
                uri_texts.push_back(uris[i].to_string());
            }
            n += count - 1;
            for (size_t i = 0; i < count; ++i) items.push_back({uris[i].view(), bytes_of(datas[i])});
            std::vector<BatchStatus> stored(count);
            beat();
            if (Status call = (*store)->put_many(items, stored); !call) return failed("put_many " + keys[0], call.error());
            for (size_t i = 0; i < count; ++i) {
                if (!stored[i].ok()) return failed("put " + keys[i], stored[i].error());
                log_line(fd, "P " + keys[i] + " " + std::to_string(datas[i].size()) + " " +
                                 std::to_string(stored[i].value));
                ver_texts.push_back(std::to_string(stored[i].value));
                ts_texts.push_back(std::to_string(wall_now_ns()));
            }
            std::vector<size_t> order(count);
            for (size_t i = 0; i < count; ++i) order[i] = i;
            const uint32_t parts = producer->num_partitions();
            std::stable_sort(order.begin(), order.end(), [&](size_t x, size_t y) {
                return key_hash(bytes_of(keys[x])) % parts < key_hash(bytes_of(keys[y])) % parts;
            });
            std::vector<std::array<MessageHeader, 2>> headers(count);
            std::vector<OutgoingMessage> messages;
            for (size_t i : order) {
                headers[i] = {MessageHeader{kHeaderVersion, ver_texts[i]}, MessageHeader{kHeaderPutTime, ts_texts[i]}};
                messages.push_back({bytes_of(uri_texts[i]), bytes_of(keys[i]), headers[i]});
            }
            // A `skipped` message (our claim was turned into a skip record while we were
            // stopped) was not delivered, nor were those after it in its partition: send those
            // again, in order (each partition's first failure and what follows it).
            std::vector<BatchStatus> sent(count);
            for (int attempt = 0; !messages.empty(); ++attempt) {
                beat();
                sent.resize(messages.size());
                if (Status call = producer->send_batch(messages, sent); !call)
                    return failed("send_batch " + keys[order[0]], call.error());
                std::vector<OutgoingMessage> again;
                std::vector<size_t> again_order;
                for (size_t i = 0; i < messages.size(); ++i) {
                    if (sent[i].ok()) {
                        log_line(fd, "N " + keys[order[i]] + " " + std::to_string(sent[i].partition) + " " +
                                         std::to_string(sent[i].value));
                        continue;
                    }
                    if (sent[i].code != Errc::skipped || attempt == 7)
                        return failed("send_batch " + keys[order[i]], sent[i].error());
                    log_line(fd, "RS " + keys[order[i]] + " " + sent[i].message);
                    again.push_back(messages[i]);
                    again_order.push_back(order[i]);
                }
                messages = std::move(again);
                order = std::move(again_order);
            }
        } else {
            auto uri = FabricUri::make(pool->name(), kInBucket, key);
            const bool poison = rng.below(100) < a.poison_percent;
            const uint64_t size = pick_size(rng);
            Result<uint64_t> ver = uint64_t(0);
            if (!poison) {
                const std::string data = content(key, 1, size);
                if (size > 0 && rng.below(2) == 0) {  // zero-copy path, as fabric-shm-producer does
                    auto loan = (*store)->loan(size);
                    if (!loan) return failed("loan " + key, loan.error());
                    std::memcpy(loan->bytes().data(), data.data(), size);
                    ver = (*store)->commit(std::move(*loan), *uri);
                } else {
                    ver = (*store)->put(*uri, bytes_of(data));
                }
                if (!ver) return failed("put " + key, ver.error());
                log_line(fd, "P " + key + " " + std::to_string(size) + " " + std::to_string(*ver));
            }
            if (poison) log_line(fd, "IX " + key);  // may be dead-lettered before its acknowledgement
            const std::string uri_s = uri->to_string(), ver_s = std::to_string(poison ? 1 : *ver),
                              ts_s = std::to_string(wall_now_ns());
            const MessageHeader headers[] = {{kHeaderVersion, ver_s}, {kHeaderPutTime, ts_s}};
            // `skipped`: the claim was turned into a skip record while we were stopped past the
            // claim timeout (or judged dead); the message was not delivered, so sending it again
            // is exactly-once, as the error says.
            Result<SendResult> sent = make_error(Errc::skipped, "not sent yet");
            for (int attempt = 0; attempt < 8; ++attempt) {
                beat();
                sent = producer->send_keyed(bytes_of(key), bytes_of(uri_s), headers);
                if (sent || sent.code() != Errc::skipped) break;
                log_line(fd, "RS " + key + " " + sent.error().message);
            }
            if (!sent) return failed("send " + key, sent.error());
            log_line(fd, std::string(poison ? "X " : "N ") + key + " " + std::to_string(sent->partition) + " " +
                             std::to_string(sent->offset));
        }
        ::usleep(useconds_t(500 + rng.below(2000)));  // leave CPU to the workers (2 vCPUs)
    }
    ::close(fd);
    return 0;
}

// ---- ops: a side pool's whole life, again and again ----------------------------------------------

std::string tiered_content(const std::string& key, uint64_t size) { return content("tiered/" + key, 1, size); }

namespace {

/// A failure of the ops child: failing closed because the side pool's leases ran out or it
/// was removed or re-created under us (the harness stalls us past its short TTL on purpose)
/// is expected; anything else is a violation.
bool fails_closed(Errc code) {
    switch (code) {
        case Errc::lease_expired:
        case Errc::stale_generation:
        case Errc::not_found:
        case Errc::not_ready:
        case Errc::already_exists:
        case Errc::stale_epoch:
            return true;
        default:
            return false;
    }
}

}  // namespace

int ops_child(const OpsArgs& a) {
    install_stop_handler();
    const int fd = ::open(a.log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (fd < 0) return 2;
    Rng rng(a.seed);
    const uint64_t ttl = a.ttl_ms * kNsPerMs;
    uint64_t tiered_keys = 0;
    int rc = 0;
    // One failed call ends the round: "L" when it failed closed, "E" (and exit 1) otherwise.
    auto failed = [&](const std::string& what, const Error& e) {
        const bool closed = fails_closed(e.code);
        log_line(fd, std::string(closed ? "L " : "E ") + what + " " + std::string(errc_name(e.code)) + ": " + e.message);
        if (!closed) rc = 1;
    };
    for (uint64_t round = 0; round < a.rounds && !g_stop && rc == 0; ++round) {
        OpenOptions oo;
        oo.create_if_missing = true;
        oo.create.size_bytes = 8ull << 20;
        oo.create.ttl = ns_duration(ttl);
        auto pool = Pool::open(a.pool, oo);
        if (!pool) {
            // A remover held (stopped) in the middle of removing the side pool keeps it
            // "removing" while it is held, and a stopped process is never judged dead: open
            // waits a while, then says busy, and the next round tries again.
            if (pool.code() == Errc::busy) log_line(fd, "L open busy: " + pool.error().message);
            else failed("open", pool.error());
            sleep_ms(50);
            continue;
        }
        log_line(fd, std::string("O ") + (pool->created() ? "created" : "attached"));
        RenewalManager renewals(*pool);
        RenewalPolicy quick;
        quick.min_renew = Duration::zero();  // the TTL is shorter than the default rate limit
        (void)renewals.register_lease(pool->pool_lease_id(), quick);
        [&] {
            // The default store: a put, a pinned read, an overwrite (frees the pinned block
            // only after the unpin), a remove.
            StoreConfig sc;
            sc.heap_bytes = 1ull << 20;
            sc.table_entries = 256;
            auto store = MemObjectStore::open(*pool, sc);
            if (!store) return failed("store", store.error());
            for (uint64_t id : (*store)->lease_ids()) (void)renewals.register_lease(id, quick);
            auto uri = FabricUri::make(pool->name(), "side", a.prefix + "-" + std::to_string(round));
            const std::string data = content(uri->key(), 1, 1 + rng.below(3000));
            if (auto v = (*store)->put(*uri, bytes_of(data)); !v) return failed("put", v.error());
            {
                auto pinned = (*store)->pin(*uri);
                if (!pinned) return failed("pin", pinned.error());
                if (*pinned && (*pinned)->verify() && std::string_view(reinterpret_cast<const char*>((*pinned)->bytes().data()),
                                                                      (*pinned)->bytes().size()) != data)
                    return failed("pin", make_error(Errc::corrupt, "pinned bytes differ from the put"));
                if (auto v = (*store)->put(*uri, bytes_of(data.substr(0, data.size() / 2))); !v)
                    return failed("overwrite", v.error());
            }
            if (auto r = (*store)->remove(*uri); !r) return failed("remove", r.error());

            // The tiered store over the shared cold directory: puts that demote (two hot at
            // most), reads, and a checkpoint with the hot objects, after which they are durable.
            TieredConfig tc;
            tc.cold_dir = a.cold_dir;
            tc.max_hot = 2;
            tc.fsync = FsyncPolicy::never;  // a process crash never loses a completed write (page cache)
            tc.hot.heap_bytes = 1ull << 20;
            tc.hot.table_entries = 256;
            auto tiered = TieredObjectStore::open(*pool, tc);
            if (!tiered) return failed("tiered open", tiered.error());
            for (uint64_t id : (*tiered)->hot().lease_ids()) (void)renewals.register_lease(id, quick);
            std::vector<std::pair<std::string, uint64_t>> mine;
            for (int i = 0; i < 4 && !g_stop; ++i) {
                const std::string key = a.prefix + "-" + std::to_string(tiered_keys++);
                const uint64_t size = rng.below(8192);
                auto u = FabricUri::make(pool->name(), kTieredBucket, key);
                if (auto v = (*tiered)->put(*u, bytes_of(tiered_content(key, size))); !v)
                    return failed("tiered put " + key, v.error());
                log_line(fd, "TP " + key + " " + std::to_string(size));
                mine.emplace_back(key, size);
            }
            for (const auto& [key, size] : mine) {
                auto u = FabricUri::make(pool->name(), kTieredBucket, key);
                auto g = (*tiered)->get(*u);
                if (!g) return failed("tiered get " + key, g.error());
                if (!*g || std::string((*g)->data.begin(), (*g)->data.end()) != tiered_content(key, size))
                    return failed("tiered get " + key,
                                  make_error(Errc::corrupt, *g ? "bytes differ from the put" : "absent after its put"));
            }
            if (Status st = (*tiered)->checkpoint(true); !st) return failed("checkpoint", st.error());
            log_line(fd, "TC " + std::to_string(mine.size()));

            // A topic with a short-lived group: renewed by polls, then left to expire, then
            // registered again (which expires the old registration first).
            TopicManager tm(*pool);
            TopicConfig cfg;
            cfg.num_partitions = 1;
            cfg.partition_capacity = 16;
            cfg.ttl = ns_duration(ttl);
            if (Status st = tm.create("side", cfg); !st && st.code() != Errc::already_exists)
                return failed("topic", st.error());
            ConsumerOptions co;
            co.group.ttl = std::chrono::milliseconds(300);
            {
                auto consumer = Consumer::open(*pool, "side", "g", co);
                if (!consumer) return failed("consumer", consumer.error());
                MessageBatch batch;
                for (int i = 0; i < 6 && !g_stop; ++i) {
                    if (auto n = consumer->poll(batch, 4, std::chrono::milliseconds(50)); !n) return failed("poll", n.error());
                    sleep_ms(30);
                }
            }
            sleep_ms(350);  // the group's lease runs out
            if (Status st = tm.register_group("side", "g", co.group); !st && st.code() != Errc::already_exists)
                return failed("register group", st.error());
            // Renew the pool's and the regions' leases once (at 3/4 of the TTL).
            const uint64_t until = mono_now_ns() + ttl * 9 / 10;
            while (mono_now_ns() < until && !g_stop) {
                TickSummary t = renewals.tick(MonoClock::now());
                for (const RenewalOutcome& o : t.outcomes)
                    if (o.kind == RenewalOutcomeKind::dropped) return failed("renew", o.error);
                sleep_ms(20);
            }
        }();
        if (rc != 0) break;
        // Every handle is closed: let every lease run out, then reap the side pool (reclaims
        // the regions and removes the pool, which the next round creates again).
        sleep_ms(a.ttl_ms + 100);
        const ReapReport rep = pool->reap(MonoClock::now());
        log_line(fd, "RP " + std::to_string(rep.reclaimed_regions) + " " + (rep.pool_removed ? "removed" : "kept"));
    }
    ::close(fd);
    return rc;
}

}  // namespace fabric_shm::torture
