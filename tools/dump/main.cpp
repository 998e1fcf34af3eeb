// SPDX-License-Identifier: MIT
// fabric-shm-dump: maps a pool READ-ONLY and prints its header, process registry, regions
// with their leases, counters and every registered dump section (cli::dump_sections()).
// --check validates every invariant it knows and exits 3 on violations, separating states
// that are merely in progress on a live pool (a creator mid-way, a dead process not yet
// reaped) from real violations. It never crashes on a corrupt, truncated or foreign file:
// the reading code runs under a SIGBUS/SIGSEGV guard and reports Errc::corrupt.
//
// Data structures add a section by appending a tools/dump/section_*.cpp to tools/meson.build
// that registers itself at static-initialisation time:
//   static const bool registered = [] { fabric_shm::cli::dump_sections().push_back({...}); return true; }();
// A section's fill() may add "violations" and "in_progress" arrays of strings to its JSON;
// --check collects them.
#include <signal.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "cli.h"
#include "exposition.h"
#include "fabric_shm/clock.h"
#include "fabric_shm/counters.h"
#include "fabric_shm/pool.h"
#include "fault_guard.h"
#include "layout/fingerprint.h"
#include "layout/pool_layout.h"
#include "pool_impl.h"
#include "tool_support.h"
#include "region_kinds.h"

using namespace fabric_shm;
namespace L = fabric_shm::layout;

namespace {

volatile sig_atomic_t g_stop = 0;

void on_stop(int) { g_stop = 1; }

struct Findings {
    std::vector<std::string> violations;
    std::vector<std::string> in_progress;
};

/// The region kinds' check hooks label their lines themselves ("violation: ...", "in
/// progress: ..."); the dump lists them under its own labels, so the label goes.
std::string without_label(std::string line) {
    for (std::string_view label : {"violation: ", "in progress: "}) {
        if (line.compare(0, label.size(), label) == 0) return line.substr(label.size());
        // A section's own entries come as "<section>: <entry>".
        const size_t colon = line.find(": ");
        if (colon != std::string::npos && line.compare(colon + 2, label.size(), label) == 0)
            return line.erase(colon + 2, label.size());
    }
    return line;
}

std::string lifecycle_name(uint64_t state) {
    switch (state) {
        case L::kPoolLive: return "live";
        case L::kPoolReclaiming: return "reclaiming";
        case L::kPoolGone: return "gone";
        default: return "invalid(" + std::to_string(state) + ")";
    }
}

/// "1234,1240" (child process groups), "-" when none.
std::string child_list(const std::vector<uint32_t>& groups) {
    std::string s;
    for (uint32_t g : groups) s += (s.empty() ? "" : ",") + std::to_string(g);
    return s.empty() ? "-" : s;
}

std::string mode_octal(uint32_t mode) {
    char buf[8];
    std::snprintf(buf, sizeof buf, "0%03o", mode & 0777u);
    return buf;
}

/// Region name from a directory entry: up to the first NUL; unterminated -> violation.
std::string entry_name(const L::RegionEntry& e, bool* terminated) {
    std::string s;
    *terminated = false;
    for (uint32_t w = 0; w < L::kRegionNameBytes / 8; ++w) {
        // relaxed: immutable while the entry is not FREE (the caller checked the word with acquire).
        const uint64_t v = e.name[w].load(std::memory_order_relaxed);
        for (int b = 0; b < 8; ++b) {
            const char c = char((v >> (8 * b)) & 0xff);
            if (c == '\0') {
                *terminated = true;
                return s;
            }
            s += c;
        }
    }
    return s;
}

// ---- header ------------------------------------------------------------------------

nlohmann::json header_json(const Pool& pool, Findings& f, uint64_t now) {
    const L::PoolHeader& h = detail::pool_header(pool);
    // relaxed: diagnostics; the lifecycle and lock words are CAS-only single words.
    const uint64_t lifecycle = h.lifecycle.load(std::memory_order_relaxed);
    const uint64_t meta_lock = h.meta_lock.load(std::memory_order_relaxed);
    const uint64_t magic = h.magic.load(std::memory_order_acquire);  // pairs with the creator's release store of magic
    std::string name(h.name, strnlen(h.name, sizeof h.name));

    auto violation = [&](const std::string& what) { f.violations.push_back("header: " + what); };
    if (magic != L::kPoolMagic) violation("magic " + cli::hex(magic) + " != " + cli::hex(L::kPoolMagic));
    if (h.version_major != L::kLayoutMajor)
        violation("layout major " + std::to_string(h.version_major) + " != " + std::to_string(L::kLayoutMajor));
    if (h.fingerprint != L::kLayoutFingerprint)
        violation("layout fingerprint " + cli::hex(h.fingerprint) + " != this build's " + cli::hex(L::kLayoutFingerprint));
    if (h.header_size != sizeof(L::PoolHeader))
        violation("header_size " + std::to_string(h.header_size) + " != " + std::to_string(sizeof(L::PoolHeader)));
    if (h.pool_size != pool.size())
        violation("pool_size " + std::to_string(h.pool_size) + " != mapped size " + std::to_string(pool.size()));
    if (h.registry_offset != L::kRegistryOffset || h.registry_slots != L::kRegistrySlots ||
        h.registry_slot_size != sizeof(L::ProcessSlot))
        violation("registry at " + std::to_string(h.registry_offset) + " x" + std::to_string(h.registry_slots) + " of " +
                  std::to_string(h.registry_slot_size) + " B, expected " + std::to_string(L::kRegistryOffset) + " x" +
                  std::to_string(L::kRegistrySlots) + " of " + std::to_string(sizeof(L::ProcessSlot)) + " B");
    if (h.directory_offset != L::kDirectoryOffset || h.directory_entries != L::kDirectoryEntries ||
        h.directory_entry_size != sizeof(L::RegionEntry))
        violation("directory at " + std::to_string(h.directory_offset) + " x" + std::to_string(h.directory_entries) +
                  " of " + std::to_string(h.directory_entry_size) + " B, expected " +
                  std::to_string(L::kDirectoryOffset) + " x" + std::to_string(L::kDirectoryEntries) + " of " +
                  std::to_string(sizeof(L::RegionEntry)) + " B");
    if (h.data_offset % L::kPageSize != 0 || h.data_offset < L::kDataOffset || h.data_size > h.pool_size ||
        h.data_offset > h.pool_size - h.data_size)
        violation("data area [" + std::to_string(h.data_offset) + ", +" + std::to_string(h.data_size) +
                  ") is not page aligned inside the " + std::to_string(h.pool_size) + "-byte pool");
    if (name != pool.name()) violation("name '" + name + "' differs from the segment's pool name '" + pool.name() + "'");

    const uint64_t lstate = L::lifecycle_state(lifecycle);
    if (lstate == L::kPoolReclaiming)
        f.in_progress.push_back("pool: being reclaimed by token " + std::to_string(L::lifecycle_owner(lifecycle)));
    else if (lstate == L::kPoolGone)
        f.in_progress.push_back("pool: marked gone, not yet unlinked (the remover was interrupted; the reaper unlinks it)");
    else if (lstate != L::kPoolLive)
        violation("lifecycle word " + cli::hex(lifecycle) + " has no valid state");
    if (meta_lock != 0) {
        std::string reason;
        const OwnerToken holder = OwnerToken(meta_lock);
        if (pool.registry().liveness(holder, MonoClock::from_ns(now), &reason) == Liveness::certainly_dead)
            f.in_progress.push_back("pool: directory lock held by dead token " + std::to_string(holder) + " (" + reason +
                                    "); the next allocator steals it");
        else
            f.in_progress.push_back("pool: directory lock held by token " + std::to_string(holder));
    }

    nlohmann::json doc = {
        {"magic", cli::hex(magic)},
        {"version", std::to_string(h.version_major) + "." + std::to_string(h.version_minor)},
        {"version_major", h.version_major},
        {"version_minor", h.version_minor},
        {"fingerprint", cli::hex(h.fingerprint)},
        {"fingerprint_matches_build", h.fingerprint == L::kLayoutFingerprint},
        {"header_size", h.header_size},
        {"pool_size", h.pool_size},
        {"registry_offset", h.registry_offset},
        {"registry_slots", h.registry_slots},
        {"directory_offset", h.directory_offset},
        {"directory_entries", h.directory_entries},
        {"data_offset", h.data_offset},
        {"data_size", h.data_size},
        {"incarnation", cli::hex(h.incarnation)},
        {"name", name},
        {"creator_pid", h.creator_pid},
        {"creator_start_time", h.creator_start_time},
        {"creator_pidns", h.creator_pidns},
        {"created_wall", format_wall_ns(h.created_wall_ns)},
        {"created_mono_ns", h.created_mono_ns},
        {"default_ttl_ns", h.default_ttl_ns},
        {"default_ttl", format_duration_ns(h.default_ttl_ns)},
        {"mode", mode_octal(h.mode)},
        {"numa_node", h.numa_node},
        {"flags", h.flags},
        {"lifecycle", lifecycle_name(lstate)},
        {"lifecycle_owner", L::lifecycle_owner(lifecycle)},
        {"meta_lock_owner", meta_lock},
        // relaxed: monotonic statistics counters (fetch_add by reapers/stealers).
        {"reaped_processes", h.reaped_processes.load(std::memory_order_relaxed)},
        {"reclaimed_regions", h.reclaimed_regions.load(std::memory_order_relaxed)},
        {"stolen_locks", h.stolen_locks.load(std::memory_order_relaxed)},
        {"repaired_entries", h.repaired_entries.load(std::memory_order_relaxed)},
        {"killed_child_groups", h.killed_child_groups.load(std::memory_order_relaxed)},
    };
    return doc;
}

// ---- directory checks (raw entries: what regions() does not show) --------------------

void check_directory(const Pool& pool, Findings& f, uint64_t now) {
    const L::PoolHeader& h = detail::pool_header(pool);
    const uint64_t data_begin = h.data_offset;
    const uint64_t data_end = h.data_offset + std::min(h.data_size, h.pool_size);
    struct Extent {
        uint64_t begin, end;
        uint32_t index;
    };
    std::vector<Extent> extents;
    std::vector<std::pair<std::string, uint32_t>> live_names;  // "kind/name" -> index

    for (uint32_t i = 0; i < L::kDirectoryEntries; ++i) {
        const auto* e = detail::pool_at<L::RegionEntry>(pool, h.directory_offset + uint64_t(i) * sizeof(L::RegionEntry));
        if (!e) {
            f.violations.push_back("directory: entry " + std::to_string(i) + " lies outside the segment");
            return;
        }
        const uint64_t word = e->word.load(std::memory_order_acquire);  // pairs with the creator's release publish
        const uint64_t state = L::entry_word_state(word);
        if (state == L::kEntryFree) continue;
        const uint32_t gen = L::entry_word_gen(word);
        const OwnerToken owner = L::entry_word_owner(word);
        const std::string where = "region " + std::to_string(i) + " (gen " + std::to_string(gen) + ")";
        if (state > L::kEntryReclaiming) {
            f.violations.push_back(where + ": state word " + cli::hex(word) + " has no valid state");
            continue;
        }
        // relaxed: immutable while the entry is not FREE (read after the acquire above).
        const uint64_t offset = e->offset.load(std::memory_order_relaxed);
        const uint64_t length = e->length.load(std::memory_order_relaxed);
        const uint32_t kind = e->kind.load(std::memory_order_relaxed);
        const uint64_t parent = e->parent.load(std::memory_order_relaxed);
        bool terminated = false;
        const std::string name = entry_name(*e, &terminated);
        const std::string label = where + " " + std::string(region_kind_name(kind)) + "/" + name;
        if (!terminated) f.violations.push_back(label + ": name is not NUL-terminated within 96 bytes");

        if (state == L::kEntryCreating || state == L::kEntryReclaiming) {
            std::string reason;
            const bool dead = pool.registry().liveness(owner, MonoClock::from_ns(now), &reason) == Liveness::certainly_dead;
            const std::string verb = state == L::kEntryCreating ? "being created" : "being reclaimed";
            f.in_progress.push_back(label + ": " + verb + " by token " + std::to_string(owner) +
                                    (dead ? " (dead: " + reason + "; the reaper repairs it)" : ""));
            // A CREATING entry may not have its extent filled in yet: check extents of LIVE/RECLAIMING only.
            if (state == L::kEntryCreating) continue;
        }

        bool extent_ok = true;
        if (length == 0 || offset % L::kPageSize != 0 || length % L::kPageSize != 0) {
            f.violations.push_back(label + ": extent [" + std::to_string(offset) + ", +" + std::to_string(length) +
                                   ") is empty or not page aligned");
            extent_ok = false;
        }
        if (offset < data_begin || offset > data_end || length > data_end - offset) {
            f.violations.push_back(label + ": extent [" + std::to_string(offset) + ", +" + std::to_string(length) +
                                   ") lies outside the data area [" + std::to_string(data_begin) + ", " +
                                   std::to_string(data_end) + ")");
            extent_ok = false;
        }
        if (extent_ok) extents.push_back({offset, offset + length, i});

        const uint64_t lease_id = e->lease.lease_id.load(std::memory_order_relaxed);  // immutable after publish
        if (state == L::kEntryLive) {
            if (lease_id != L::make_lease_id(i + 1, gen))
                f.violations.push_back(label + ": lease id " + cli::hex(lease_id) + " != " +
                                       cli::hex(L::make_lease_id(i + 1, gen)) + " (index + 1, generation)");
            // relaxed: diagnostics of single words; expires only moves forward.
            const uint64_t created = e->lease.created_ns.load(std::memory_order_relaxed);
            const uint64_t expires = e->lease.expires_ns.load(std::memory_order_relaxed);
            const uint32_t lword = e->lease.state.load(std::memory_order_relaxed);
            const uint32_t lstate = L::lease_state_of(lword);
            if (expires < created)
                f.violations.push_back(label + ": lease expires (" + std::to_string(expires) + " ns) before it was created (" +
                                       std::to_string(created) + " ns)");
            if (lstate != L::kLeaseActive && lstate != L::kLeaseRevoked)
                f.violations.push_back(label + ": lease state " + std::to_string(lstate) + " is neither active nor revoked");
            else if (L::lease_state_gen(lword) != gen)
                f.violations.push_back(label + ": lease state of generation " + std::to_string(L::lease_state_gen(lword)) +
                                       " in an entry of generation " + std::to_string(gen));
            else if (lstate == L::kLeaseRevoked || now >= expires)
                f.in_progress.push_back(label + ": lease " + (lstate == L::kLeaseRevoked ? "revoked" : "expired") +
                                        ", memory not yet reclaimed (fabric-shm-reaper reclaims it)");
            const std::string key = std::to_string(kind) + "/" + name;
            for (const auto& [other, index] : live_names)
                if (other == key)
                    f.violations.push_back(label + ": same kind and name as live region " + std::to_string(index));
            live_names.emplace_back(key, i);
        }
        if (parent != 0) {
            const RegionRef pref = RegionRef::unpack(parent);
            bool parent_live = false;
            if (pref.index < L::kDirectoryEntries) {
                const auto* p = detail::pool_at<L::RegionEntry>(pool, h.directory_offset + uint64_t(pref.index) * sizeof(L::RegionEntry));
                const uint64_t pw = p ? p->word.load(std::memory_order_acquire) : 0;  // pairs with the parent's publish
                parent_live = p && L::entry_word_state(pw) != L::kEntryFree && L::entry_word_gen(pw) == pref.generation;
            } else {
                f.violations.push_back(label + ": parent index " + std::to_string(pref.index) + " is past the directory");
            }
            if (!parent_live && pref.index < L::kDirectoryEntries)
                f.in_progress.push_back(label + ": orphan (parent region " + std::to_string(pref.index) + " gen " +
                                        std::to_string(pref.generation) + " is gone; the reaper reclaims it)");
        }
    }
    std::sort(extents.begin(), extents.end(), [](const Extent& a, const Extent& b) { return a.begin < b.begin; });
    for (size_t k = 1; k < extents.size(); ++k)
        if (extents[k].begin < extents[k - 1].end)
            f.violations.push_back("directory: regions " + std::to_string(extents[k - 1].index) + " [" +
                                   std::to_string(extents[k - 1].begin) + ", " + std::to_string(extents[k - 1].end) +
                                   ") and " + std::to_string(extents[k].index) + " [" + std::to_string(extents[k].begin) +
                                   ", " + std::to_string(extents[k].end) + ") overlap");
}

// ---- one pool ----------------------------------------------------------------------

struct PoolDump {
    nlohmann::json doc;
    std::string text;
    Findings findings;
};

Status dump_pool(const std::string& name, bool check, PoolDump& d) {
    Result<Pool> opened = cli::open_read_only(name);
    if (!opened) return opened.error();
    const Pool& pool = opened.value();
    FABRIC_TRY(pool.check_mapping());
    const uint64_t now = mono_now_ns();
    Findings& f = d.findings;

    nlohmann::json& doc = d.doc;
    doc["pool"] = name;
    doc["path"] = Pool::segment_path(name);
    doc["size"] = pool.size();
    doc["header"] = header_json(pool, f, now);
    Result<LeaseInfo> pool_lease = pool.lease(pool.pool_lease_id());
    if (pool_lease) doc["lease"] = cli::lease_json(pool_lease.value(), now);
    else f.violations.push_back("pool lease: " + pool_lease.error().message);
    doc["state"] = pool.wholly_expired(MonoClock::from_ns(now)) ? std::string("expired") : pool.lifecycle();

    // Processes.
    nlohmann::json procs = nlohmann::json::array();
    cli::Table ptable({"SLOT", "TOKEN", "PID", "COMM", "STATE", "HEARTBEAT AGE", "TIMEOUT", "REGISTERED", "PID NS",
                       "CHILD GROUPS"});
    const uint64_t my_pidns = self_pidns();
    std::string restarts_text;  // workers whose long-lived handlers keep dying
    for (const ProcessInfo& p : pool.registry().list(MonoClock::from_ns(now))) {
        procs.push_back(cli::process_json(p, now));
        const uint64_t restarts = counter_of_slot(pool, p.slot, CounterId::worker_handler_restarts);
        procs.back()["handler_restarts"] = restarts;
        if (restarts != 0)
            restarts_text += "  pid " + std::to_string(p.pid) + " (" + p.comm + "): " + std::to_string(restarts) +
                             " handler restart(s) (its log says why: exit status, signal, stderr tail)\n";
        const bool alive = p.liveness == Liveness::maybe_alive;
        std::string state = p.claiming ? "claiming" : alive ? "alive" : "dead (" + p.dead_reason + ")";
        ptable.add({std::to_string(p.slot), std::to_string(p.token), std::to_string(p.pid), p.comm, state,
                    p.heartbeat_ns ? format_duration_ns(now > p.heartbeat_ns ? now - p.heartbeat_ns : 0) : "-",
                    p.timeout_ns ? format_duration_ns(p.timeout_ns) : "pid only",
                    format_duration_ns(now > p.registered_ns ? now - p.registered_ns : 0) + " ago",
                    p.pidns == my_pidns ? "this" : std::to_string(p.pidns), child_list(p.child_groups)});
        if (p.claiming)
            f.in_progress.push_back("process slot " + std::to_string(p.slot) + ": registration in progress (pid " +
                                    std::to_string(p.pid) + ")");
        else if (!alive)
            f.in_progress.push_back("process slot " + std::to_string(p.slot) + ": pid " + std::to_string(p.pid) +
                                    " is dead (" + p.dead_reason + "), not yet reaped");
    }
    doc["processes"] = procs;
    // Pid namespaces: across them only a declared heartbeat timeout tells a dead process
    // (registration refuses the mix; a pool made by a build without that check may have it).
    {
        std::set<uint64_t> namespaces;
        std::string silent;
        for (const ProcessInfo& p : pool.registry().list(MonoClock::from_ns(now))) {
            if (p.claiming || p.fenced || p.pidns == 0) continue;
            namespaces.insert(p.pidns);
            if (p.timeout_ns == 0) silent += (silent.empty() ? "" : ", ") + std::to_string(p.pid) + " (" + p.comm + ")";
        }
        if (namespaces.size() > 1 && !silent.empty())
            f.violations.push_back("processes in " + std::to_string(namespaces.size()) +
                                   " pid namespaces share the pool, and pid(s) " + silent +
                                   " declared no heartbeat timeout: a crash there cannot be detected from the other "
                                   "namespaces (set FABRIC_SHM_HEARTBEAT_TIMEOUT for every process)");
    }

    // Regions.
    const std::vector<RegionInfo> regions = pool.regions();
    nlohmann::json regs = nlohmann::json::array();
    cli::Table rtable({"INDEX", "GEN", "STATE", "KIND", "NAME", "OFFSET", "LENGTH", "LEASE", "TTL LEFT",
                       "EXPIRES (UTC)", "ATTACHED"});
    for (const RegionInfo& r : regions) {
        regs.push_back(cli::region_json(r, now));
        rtable.add({std::to_string(r.ref.index), std::to_string(r.ref.generation), r.state,
                    std::string(region_kind_name(r.kind)), r.name, std::to_string(r.offset), format_bytes(r.length),
                    std::to_string(r.lease.lease_id), cli::ttl_text(r.lease, now),
                    format_wall_ns(mono_to_wall_ns(r.lease.expires_ns)), std::to_string(r.attached_processes)});
    }
    doc["regions"] = regs;

    // Counters.
    nlohmann::json counters = nlohmann::json::object();
    std::string ctext;
    for (uint32_t id = 0; id < uint32_t(CounterId::count_); ++id) {
        const uint64_t v = counter_total(pool, CounterId(id));
        counters[std::string(counter_name(CounterId(id)))] = v;
        ctext += "  " + std::string(counter_name(CounterId(id))) + " " + std::to_string(v) + "\n";
    }
    doc["counters"] = counters;

    // Sections registered by the data structures.
    std::string stext;
    for (const cli::DumpSection& s : cli::dump_sections()) {
        nlohmann::json sec = nlohmann::json::object();
        s.fill(pool, sec);
        for (const char* key : {"violations", "in_progress"}) {
            if (!sec.contains(key) || !sec[key].is_array()) continue;
            for (const auto& item : sec[key])
                (std::strcmp(key, "violations") == 0 ? f.violations : f.in_progress)
                    .push_back(s.name + ": " + (item.is_string() ? item.get<std::string>()
                                                                 : item.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace)));
        }
        stext += s.name + ":\n";
        if (s.render) s.render(sec, stext);
        doc[s.name] = std::move(sec);
    }

    if (check) {
        check_directory(pool, f, now);
        for (const RegionInfo& r : regions) {
            if (r.state != "live") continue;
            const RegionKindOps* ops = region_kind_ops(r.kind);
            if (ops && ops->check) ops->check(pool, r, f.violations, f.in_progress);
        }
        // A truncation while we read would make everything above meaningless.
        FABRIC_TRY(pool.check_mapping());
        for (auto* list : {&f.violations, &f.in_progress})
            for (std::string& line : *list) line = without_label(std::move(line));
        doc["check"] = {{"violations", f.violations}, {"in_progress", f.in_progress}};
    }

    // Text rendering.
    const nlohmann::json& h = doc["header"];
    std::string& t = d.text;
    t += "pool '" + name + "'  " + doc["path"].get<std::string>() + "  " + format_bytes(pool.size()) + "  " +
         doc["state"].get<std::string>() + "  layout " + h["version"].get<std::string>() + " fingerprint " +
         h["fingerprint"].get<std::string>() + (h["fingerprint_matches_build"].get<bool>() ? "" : " (NOT this build)") + "\n";
    t += "  created " + h["created_wall"].get<std::string>() + " by pid " + std::to_string(h["creator_pid"].get<uint32_t>()) +
         ", mode " + h["mode"].get<std::string>() + ", default TTL " + h["default_ttl"].get<std::string>() +
         ", numa node " + std::to_string(h["numa_node"].get<int32_t>()) + "\n";
    if (pool_lease)
        t += "  pool lease " + std::to_string(pool_lease->lease_id) + ": TTL left " + cli::ttl_text(pool_lease.value(), now) +
             ", expires " + format_wall_ns(mono_to_wall_ns(pool_lease->expires_ns)) + ", renewed " +
             std::to_string(pool_lease->renew_count) + " times\n";
    t += "  data area " + std::to_string(detail::pool_header(pool).data_offset) + " +" + format_bytes(detail::pool_header(pool).data_size) +
         "; reaped processes " + std::to_string(h["reaped_processes"].get<uint64_t>()) + ", reclaimed regions " +
         std::to_string(h["reclaimed_regions"].get<uint64_t>()) + ", stolen locks " +
         std::to_string(h["stolen_locks"].get<uint64_t>()) + ", child process groups of dead processes killed " +
         std::to_string(h["killed_child_groups"].get<uint64_t>()) + "\n";
    t += "processes (" + std::to_string(procs.size()) + "):\n";
    if (!ptable.empty()) ptable.render(t, "  ");
    if (!restarts_text.empty()) t += "handler restarts (fabric-shm-worker --handler):\n" + restarts_text;
    t += "regions (" + std::to_string(regions.size()) + "):\n";
    if (!rtable.empty()) rtable.render(t, "  ");
    t += "counters:\n" + ctext + stext;
    if (check) {
        t += "check: " + std::to_string(f.violations.size()) + " violation(s), " + std::to_string(f.in_progress.size()) +
             " in progress\n";
        for (const auto& v : f.violations) t += "  violation: " + v + "\n";
        for (const auto& v : f.in_progress) t += "  in progress: " + v + "\n";
    }
    return {};
}

/// After a fault, what the faulting frame owned is orphaned: leave with _exit() (no
/// destructors of half-written state, no leak report for memory the fault orphaned).
int leave(int code) {
    if (cli::fault_count() == 0) return code;
    std::fflush(stdout);
    std::fflush(stderr);
    _exit(code);
}

}  // namespace

int main(int argc, char** argv) {
    cli::Output out{cli::argv_has_json(argc, argv), "fabric-shm-dump"};
    cxxopts::Options o("fabric-shm-dump",
                       "Prints a pool's header, processes, regions, leases, counters and data structures; maps "
                       "the pool read-only and never creates one");
    o.add_options()("pool", cli::pool_option_help(), cxxopts::value<std::string>())("all", "every pool present")(
        "json", "machine-readable output; errors as {\"error\":{\"code\",\"message\"}}")(
        "check", "validate every known invariant; exit 3 on violations (in-progress states are listed apart)")(
        "prometheus", "every counter and gauge in the Prometheus text format (fabric_shm_* metrics)")(
        "watch", "refresh every DURATION (500ms, 2s, ...) until interrupted: a compact live view (rates, TTLs, "
                 "lag and assignment per group, latency percentiles); with --full, --json or --prometheus, those",
        cxxopts::value<std::string>())("full", "with --watch: re-print the full dump instead of the compact view")(
        "version", "print the version and the pool layout version")("h,help", "show this help");
    cxxopts::ParseResult r;
    int rc = 0;
    if (!cli::parse_options(o, argc, argv, out, r, &rc)) return rc;
    if (r.count("version")) return cli::print_version(out.program);
    if (r.count("help")) {
        std::cout << o.help() << "Exit codes: 0 ok, 1 error, 2 usage error, 3 --check found violations.\n";
        return cli::kExitOk;
    }
    if (!r.unmatched().empty()) return cli::usage(out, "unexpected argument '" + r.unmatched()[0] + "'");
    const bool all = r.count("all") > 0;
    const bool check = r.count("check") > 0;
    const bool prometheus = r.count("prometheus") > 0;
    const bool full = r.count("full") > 0;
    if (prometheus && out.json) return cli::usage(out, "--prometheus and --json are exclusive");
    uint64_t watch_ns = 0;
    if (r.count("watch")) {
        Result<uint64_t> w = cli::parse_duration_option("watch", r["watch"].as<std::string>());
        if (!w) return cli::fail(out, w.error());
        if (w.value() == 0) return cli::fail(out, Errc::invalid_argument, "--watch must be longer than 0");
        watch_ns = w.value();
    }
    // Validated before any syscall on the pool.
    const std::string pool_flag = cli::opt_string(r, "pool");
    if (all && !pool_flag.empty()) return cli::usage(out, "--pool and --all are exclusive");
    if (full && !watch_ns) return cli::usage(out, "--full only applies to --watch");
    if (!all) {
        Result<std::string> name = cli::resolve_pool(pool_flag);
        if (!name) return cli::fail(out, name.error());
    }
    cli::install_fault_guard();
    signal(SIGINT, on_stop);
    signal(SIGTERM, on_stop);

    int exit_code = cli::kExitOk;
    const bool compact = watch_ns && !full && !out.json && !prometheus;
    std::map<std::string, nlohmann::json> previous;  // --watch: last document per pool, for rates
    uint64_t previous_ns = 0;
    for (;;) {
        Result<std::vector<std::string>> pools = cli::select_pools(pool_flag, all);
        if (!pools) return cli::fail(out, pools.error());
        nlohmann::json docs = nlohmann::json::array();
        std::string text;
        bool any_error = false, any_violation = false;
        for (const std::string& name : pools.value()) {
            // On the heap so that a fault can orphan it (siglongjmp skips destructors and may
            // leave it half-written): one PoolDump per fault, in a tool that then leaves with
            // _exit(). A typed error is not a fault: d is intact and freed like on success.
            auto* d = new PoolDump();
            const unsigned faults_before = cli::fault_count();
            Status s = cli::read_guarded([&] { return dump_pool(name, check, *d); }, "pool '" + name + "'");
            if (cli::fault_count() == faults_before && !s) {
                delete d;
                d = nullptr;
            }
            if (!s) {
                if (!all) return leave(cli::fail(out, s.error()));
                any_error = true;
                docs.push_back({{"pool", name},
                                {"error", {{"code", std::string(errc_name(s.code()))}, {"message", s.error().message}}}});
                text += "pool '" + name + "': error: " + s.error().message + "\n";
                continue;  // after a fault d is deliberately leaked (see above)
            }
            any_violation |= !d->findings.violations.empty();
            docs.push_back(std::move(d->doc));
            text += d->text;
            delete d;
        }
        if (out.json) {
            cli::print_json(all ? nlohmann::json{{"pools", docs}} : docs.empty() ? nlohmann::json::object() : docs[0]);
        } else if (prometheus) {
            std::cout << cli::prometheus_text(docs.get<std::vector<nlohmann::json>>()) << std::flush;
        } else if (compact) {
            const uint64_t now = mono_now_ns();
            std::string view;
            for (const auto& doc : docs) {
                const std::string name = doc.value("pool", "");
                auto it = previous.find(name);
                view += cli::watch_text(doc, it == previous.end() ? nlohmann::json() : it->second,
                                        previous_ns ? now - previous_ns : 0);
                previous[name] = doc;
            }
            if (all && docs.empty()) view = "no pools\n";
            previous_ns = now;
            std::cout << cli::terminal_safe_lines(view) << std::flush;
        } else {
            if (all && pools->empty()) text = "no pools\n";
            // Names, keys, URLs and errors that processes wrote into the pool, outside the
            // tables too (which escape their cells already).
            std::cout << cli::terminal_safe_lines(text) << std::flush;
        }
        exit_code = any_error ? cli::kExitRuntime : (check && any_violation) ? cli::kExitViolations : cli::kExitOk;
        if (!watch_ns || g_stop) break;
        struct timespec ts = {time_t(watch_ns / kNsPerSec), long(watch_ns % kNsPerSec)};
        while (nanosleep(&ts, &ts) != 0 && !g_stop) {
        }
        if (g_stop) break;
        if (!out.json && !prometheus) std::cout << "\n";
    }
    return leave(exit_code);
}
