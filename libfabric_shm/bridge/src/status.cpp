// SPDX-License-Identifier: MIT
// The bridge status region: created (or taken over from a dead owner) by the bridge process,
// written with relaxed single-cell stores, read by fabric-shm-dump on a read-only mapping.
#include "fabric_shm_bridge/status.h"

#include <unistd.h>

#include <algorithm>
#include <cstring>

#include "fabric_shm/clock.h"
#include "fabric_shm/registry.h"
#include "status_layout.h"

namespace fabric_shm::bridge {

namespace L = layout;

namespace {

constexpr std::string_view kCounterNames[] = {"messages", "bytes",       "objects",    "acked",   "duplicates",
                                              "dead_lettered", "redeliveries", "retries", "reconnects",
                                              "disconnects", "errors", "chunks", "pool_recoveries"};
static_assert(std::size(kCounterNames) == size_t(StatusCounter::count_), "one name per public counter");
static_assert(uint32_t(StatusCounter::count_) == L::kCounterCount, "public counter ids mirror the layout's cells");
static_assert(uint32_t(StatusGauge::count_) == L::kGaugeCount, "public gauge ids mirror the layout's cells");

L::BridgeStatusRegion* cells_of(void* p) { return static_cast<L::BridgeStatusRegion*>(p); }

template <size_t N>
void store_text(L::Text<N>& t, std::string_view s) {
    for (size_t w = 0; w < N; ++w) {
        uint64_t v = 0;
        for (size_t b = 0; b < 8; ++b) {
            const size_t i = w * 8 + b;
            if (i < s.size() && i < N * 8 - 1) v |= uint64_t(uint8_t(s[i])) << (8 * b);
        }
        // relaxed: identity text is written before the region is published (init) or right after
        // a takeover CAS; readers tolerate a mixed copy of a field being rewritten (display only).
        t.words[w].store(v, std::memory_order_relaxed);
    }
}

template <size_t N>
std::string load_words(const std::atomic<uint64_t> (&words)[N]) {
    std::string s;
    for (size_t w = 0; w < N; ++w) {
        const uint64_t v = words[w].load(std::memory_order_relaxed);  // see store_text
        for (size_t b = 0; b < 8; ++b) {
            const char c = char((v >> (8 * b)) & 0xff);
            if (c == '\0') return s;
            s += c;
        }
    }
    return s;
}

template <size_t N>
std::string load_text(const L::Text<N>& t) {
    return load_words(t.words);
}

template <size_t N>
void store_seq_text(L::SeqText<N>& t, std::string_view s) {
    // Single writer. seq odd: readers retry; the release fence orders the odd store before the
    // word stores (pairs with the reader's acquire fence before its second seq load).
    const uint64_t seq = t.seq.load(std::memory_order_relaxed);
    t.seq.store(seq + 1, std::memory_order_relaxed);
    std::atomic_thread_fence(std::memory_order_release);
    for (size_t w = 0; w < N; ++w) {
        uint64_t v = 0;
        for (size_t b = 0; b < 8; ++b) {
            const size_t i = w * 8 + b;
            if (i < s.size() && i < N * 8 - 1) v |= uint64_t(uint8_t(s[i])) << (8 * b);
        }
        t.words[w].store(v, std::memory_order_relaxed);
    }
    t.seq.store(seq + 2, std::memory_order_release);  // pairs with the reader's acquire load of seq
}

template <size_t N>
std::string load_seq_text(const L::SeqText<N>& t) {
    for (int attempt = 0; attempt < 64; ++attempt) {
        const uint64_t s1 = t.seq.load(std::memory_order_acquire);  // pairs with the writer's release store
        if (s1 & 1) continue;
        std::string s = load_words(t.words);
        std::atomic_thread_fence(std::memory_order_acquire);  // pairs with the writer's release fence
        if (t.seq.load(std::memory_order_relaxed) == s1) return s;
    }
    return "(being written)";
}

uint64_t pack_owner(OwnerToken token) { return (uint64_t(uint32_t(getpid())) << 32) | token; }

void write_identity(L::BridgeStatusRegion& r, const StatusIdentity& id) {
    store_text(r.topic, id.topic);
    store_text(r.group, id.group);
    store_text(r.stream, id.stream);
    store_text(r.member, id.member);
    store_text(r.servers, id.servers);
}

/// Validates a mapped region before anything in it is trusted.
Status check_header(const Region& region, const std::string& name) {
    if (region.length() < sizeof(L::BridgeStatusRegion))
        return make_error(Errc::corrupt, "bridge region '" + name + "' is " + std::to_string(region.length()) +
                                             " bytes, the status needs " + std::to_string(sizeof(L::BridgeStatusRegion)));
    const auto* r = reinterpret_cast<const L::BridgeStatusRegion*>(region.data());
    if (r->magic != L::kStatusMagic)
        return make_error(Errc::corrupt, "bridge region '" + name + "' has magic " + std::to_string(r->magic) +
                                             ", not a bridge status");
    if (r->version != L::kStatusVersion)
        return make_error(Errc::version_mismatch, "bridge region '" + name + "' has status version " +
                                                      std::to_string(r->version) + ", this build reads " +
                                                      std::to_string(L::kStatusVersion));
    if (r->role != L::kRoleExport && r->role != L::kRoleImport)
        return make_error(Errc::corrupt, "bridge region '" + name + "' has role " + std::to_string(r->role));
    return {};
}

}  // namespace

std::string_view role_name(Role role) noexcept { return role == Role::exporter ? "export" : "import"; }

std::string_view connection_state_name(ConnectionState state) noexcept {
    switch (state) {
        case ConnectionState::connecting: return "connecting";
        case ConnectionState::connected: return "connected";
        case ConnectionState::reconnecting: return "reconnecting";
        case ConnectionState::closed: return "closed";
    }
    return "unknown";
}

std::string_view status_counter_name(StatusCounter c) noexcept {
    return uint32_t(c) < uint32_t(StatusCounter::count_) ? kCounterNames[uint32_t(c)] : "?";
}

std::string status_region_name(Role role, std::string_view member) {
    return "bridge-" + std::string(role_name(role)) + "-" + std::string(member);
}

Result<StatusWriter> StatusWriter::open(Pool& pool, const StatusIdentity& identity, uint64_t ttl_ns) {
    const std::string name = status_region_name(identity.role, identity.member);
    StatusWriter w;
    for (int attempt = 0; attempt < 3; ++attempt) {
        RegionSpec spec;
        spec.kind = RegionKind::bridge;
        spec.name = name;
        spec.length = L::kStatusRegionBytes;
        spec.ttl = ns_duration(ttl_ns);
        const OwnerToken self = pool.self();
        spec.init = [&](std::byte* data, uint64_t length) -> Status {
            if (length < sizeof(L::BridgeStatusRegion))
                return make_error(Errc::invalid_argument, "bridge status region too small");
            auto* r = reinterpret_cast<L::BridgeStatusRegion*>(data);  // zeroed by create_region
            r->magic = L::kStatusMagic;
            r->version = L::kStatusVersion;
            r->role = identity.role == Role::exporter ? L::kRoleExport : L::kRoleImport;
            r->created_wall_ns = wall_now_ns();
            write_identity(*r, identity);
            r->owner.store(pack_owner(self), std::memory_order_relaxed);  // published by the region's release
            return {};
        };
        auto created = pool.create_region(spec);
        if (created) {
            w.region_ = std::move(created.value());
            w.cells_ = w.region_.data();
            return w;
        }
        if (created.code() != Errc::already_exists) return std::move(created).error();
        // A region of that name exists: take it over if its owner is certainly dead.
        auto opened = pool.open_region(RegionKind::bridge, name);
        if (!opened) {
            if (opened.code() == Errc::lease_expired) {
                // Left by a process that died long enough ago for its lease to run out, not yet
                // reaped: remove it (nobody renews it; a live holder keeps the memory) and create anew.
                for (const RegionInfo& info : pool.regions())
                    if (info.kind == uint32_t(RegionKind::bridge) && info.name == name) (void)pool.remove_region(info.ref);
                continue;
            }
            if (opened.code() == Errc::not_found || opened.code() == Errc::stale_generation) continue;  // gone meanwhile
            return std::move(opened).error();
        }
        FABRIC_TRY(check_header(*opened, name));
        auto* r = reinterpret_cast<L::BridgeStatusRegion*>(opened->data());
        const uint64_t expected = r->owner.load(std::memory_order_acquire);  // pairs with the previous taker's CAS
        std::string why;
        if (pool.registry().liveness(OwnerToken(uint32_t(expected)), MonoClock::now(), &why) != Liveness::certainly_dead)
            return make_error(Errc::already_exists, "bridge process '" + name + "' is running (pid " +
                                                        std::to_string(expected >> 32) +
                                                        "); give this one another --id");
        uint64_t seen = expected;
        // acq_rel: the identity rewrite below happens after we own it; a racing taker loses here.
        if (!r->owner.compare_exchange_strong(seen, pack_owner(self), std::memory_order_acq_rel))
            return make_error(Errc::already_exists, "bridge region '" + name + "' was taken over by pid " +
                                                        std::to_string(seen >> 32) + " meanwhile");
        if (r->role != (identity.role == Role::exporter ? L::kRoleExport : L::kRoleImport))
            return make_error(Errc::corrupt, "bridge region '" + name + "' has another role");
        write_identity(*r, identity);
        if (auto renewed = pool.renew_lease(opened->lease_id(), MonoClock::now()); !renewed)
            return std::move(renewed).error();
        w.region_ = std::move(opened.value());
        w.cells_ = w.region_.data();
        return w;
    }
    return make_error(Errc::busy, "bridge region '" + name + "' kept changing while opening it");
}

void StatusWriter::add(StatusCounter c, uint64_t n) noexcept {
    if (cells_ && uint32_t(c) < L::kCounterCells)
        cells_of(cells_)->counters[uint32_t(c)].fetch_add(n, std::memory_order_relaxed);  // statistics
}

void StatusWriter::set(StatusGauge g, uint64_t value) noexcept {
    if (cells_ && uint32_t(g) < L::kGaugeCells)
        cells_of(cells_)->gauges[uint32_t(g)].store(value, std::memory_order_relaxed);  // display only
}

void StatusWriter::heartbeat(uint64_t wall_ns) noexcept {
    if (cells_) cells_of(cells_)->heartbeat_wall_ns.store(wall_ns, std::memory_order_relaxed);  // display only
}

void StatusWriter::connection(ConnectionState state, uint64_t wall_ns) noexcept {
    if (!cells_) return;
    // relaxed: display only; the two cells may be seen from different updates for an instant.
    cells_of(cells_)->connection.store(uint64_t(state), std::memory_order_relaxed);
    cells_of(cells_)->connection_since_wall_ns.store(wall_ns, std::memory_order_relaxed);
}

void StatusWriter::stream_config(uint64_t replicas, bool memory_storage) noexcept {
    if (!cells_) return;
    cells_of(cells_)->stream_replicas.store(replicas, std::memory_order_relaxed);  // display only
    cells_of(cells_)->stream_storage.store(memory_storage ? 2 : 1, std::memory_order_relaxed);
}

void StatusWriter::server_url(std::string_view url) noexcept {
    if (cells_) store_seq_text(cells_of(cells_)->server_url, url);
}

void StatusWriter::error(std::string_view text, uint64_t wall_ns) noexcept {
    if (!cells_) return;
    store_seq_text(cells_of(cells_)->last_error, text);
    set(StatusGauge::last_error_wall_ns, wall_ns);
    add(StatusCounter::errors);
}

std::vector<BridgeStatus> read_bridge_status(const Pool& pool, std::vector<std::string>* violations) {
    std::vector<BridgeStatus> out;
    const uint64_t now = mono_now_ns();
    for (const RegionInfo& info : pool.regions()) {
        if (info.kind != uint32_t(RegionKind::bridge) || info.state != "live") continue;
        auto region = pool.open_region(info.ref);
        if (!region) continue;  // reclaimed or expired since regions() (the reaper's business)
        if (Status st = check_header(*region, info.name); !st) {
            if (violations) violations->push_back(st.error().message);
            continue;
        }
        const auto& r = *reinterpret_cast<const L::BridgeStatusRegion*>(region->data());
        BridgeStatus s;
        s.region = info.ref;
        s.region_name = info.name;
        s.role = r.role == L::kRoleExport ? Role::exporter : Role::importer;
        s.topic = load_text(r.topic);
        s.group = load_text(r.group);
        s.stream = load_text(r.stream);
        s.member = load_text(r.member);
        s.servers = load_text(r.servers);
        const uint64_t owner = r.owner.load(std::memory_order_relaxed);  // display; liveness judged below
        s.pid = uint32_t(owner >> 32);
        s.owner = OwnerToken(uint32_t(owner));
        s.owner_alive = pool.registry().liveness(s.owner, MonoClock::from_ns(now), &s.dead_reason) != Liveness::certainly_dead;
        s.created_wall_ns = r.created_wall_ns;
        // relaxed: a racy snapshot of single-writer cells, as the pool counters.
        s.heartbeat_wall_ns = r.heartbeat_wall_ns.load(std::memory_order_relaxed);
        const uint64_t conn = r.connection.load(std::memory_order_relaxed);
        s.connection = conn <= L::kClosed ? ConnectionState(conn) : ConnectionState::closed;
        s.connection_since_wall_ns = r.connection_since_wall_ns.load(std::memory_order_relaxed);
        s.stream_replicas = r.stream_replicas.load(std::memory_order_relaxed);
        const uint64_t storage = r.stream_storage.load(std::memory_order_relaxed);
        s.stream_storage = storage == 1 ? "file" : storage == 2 ? "memory" : "";
        for (uint32_t i = 0; i < uint32_t(StatusCounter::count_); ++i)
            s.counters[i] = r.counters[i].load(std::memory_order_relaxed);
        for (uint32_t i = 0; i < uint32_t(StatusGauge::count_); ++i)
            s.gauges[i] = r.gauges[i].load(std::memory_order_relaxed);
        s.last_error = load_seq_text(r.last_error);
        s.server_url = load_seq_text(r.server_url);
        out.push_back(std::move(s));
    }
    std::sort(out.begin(), out.end(), [](const BridgeStatus& a, const BridgeStatus& b) { return a.region_name < b.region_name; });
    return out;
}

}  // namespace fabric_shm::bridge
