// SPDX-License-Identifier: MIT
// The region directory: creating, publishing, opening and removing regions, Region handles
// (attach bits, fail-closed checks), and reclaiming an entry (remove_region and the reaper).
#include "fabric_shm/pool.h"

#include <fcntl.h>
#include <linux/falloc.h>

#include <cerrno>
#include <cstring>
#include <mutex>

#include "crash_point.h"
#include "fabric_shm/counters.h"
#include "fabric_shm/names.h"
#include "owner_lock.h"
#include "pool_impl.h"
#include "pool_internal.h"
#include "region_kinds.h"

namespace fabric_shm {

using namespace layout;
using detail::attached_live_processes;
using detail::entry_state_name;
using detail::init_lease;
using detail::lease_info_of;
using detail::next_gen;
using detail::ReclaimContext;
using detail::try_reclaim;

namespace {

constexpr uint64_t kMetaLockTimeoutNs = 10 * kNsPerSec;  ///< longest wait for the directory lock

std::mutex g_attach_mutex;  // guards local attach counts and their registry bits

bool attach_bit(Pool::Impl& impl, uint32_t index) {
    auto* slot = impl.my_slot();
    if (!slot) return false;
    std::lock_guard<std::mutex> lock(g_attach_mutex);
    if (impl.local_attach[index].fetch_add(1, std::memory_order_relaxed) == 0)
        // seq_cst: Dekker pair with try_reclaim (store RECLAIMING; load bits). Either the
        // reclaimer sees this bit, or we see RECLAIMING in our following seq_cst load.
        slot->attached[index / 64].fetch_or(uint64_t(1) << (index % 64), std::memory_order_seq_cst);
    return true;
}

void detach_bit(Pool::Impl& impl, uint32_t index) {
    auto* slot = impl.my_slot();
    if (!slot) return;
    std::lock_guard<std::mutex> lock(g_attach_mutex);
    // In a forked child using its parent's pool handle (a handle it inherited, or one it
    // opened through that pool) the bit is shared with the parent, whose own handles the
    // child's counts do not know: left set (the region is kept while the parent lives, which
    // is the safe side).
    if (impl.local_attach[index].fetch_sub(1, std::memory_order_relaxed) == 1 &&
        impl.opened_in == detail::fork_generation())
        slot->attached[index / 64].fetch_and(~(uint64_t(1) << (index % 64)), std::memory_order_seq_cst);
}

/// From this size a new region's extent is zeroed by giving its pages back and placing them
/// again, not by writing zeros through the mapping.
constexpr uint64_t kZeroByPunchMin = 1 << 20;

/// Makes [offset, offset + length) of the segment read as zeros and every page of it placed,
/// for a region being created there (an extent other regions may have used). Below
/// kZeroByPunchMin: placed (fallocate: a hole left by a creator that died below would make a
/// write SIGBUS on a full /dev/shm), then memset. From it: the pages are punched out of the
/// file and placed again, zeroed by the kernel. A memset faults every page into this process
/// first: 3.2 s for 1 GiB on the 2-vCPU VM (KVM with paravirtual paging) against 0.2 s punched,
/// and on any machine it makes the creator touch a heap that users fill page by page later.
/// The extent is page-aligned (offset: the allocator's cursor; its tail page belongs to no
/// other region). ENOSPC and the like are errors naming the extent, before anything is written.
Status zero_extent(const Pool::Impl& impl, uint64_t offset, uint64_t length) {
    // Never a write outside the mapping, whatever the caller computed: refused, nothing written.
    if (!impl.in_bounds(offset, length))
        return make_error(Errc::corrupt, "pool '" + impl.name + "': a new region's extent (" + std::to_string(length) +
                                             " bytes at offset " + std::to_string(offset) + ") is outside the " +
                                             std::to_string(impl.size) + "-byte mapping");
    const uint64_t end = std::min<uint64_t>((offset + length + kPageSize - 1) & ~(kPageSize - 1), impl.size);
    if (impl.fd < 0 || offset % kPageSize != 0 || end <= offset) {
        std::memset(impl.base + offset, 0, length);
        return {};
    }
    const bool punch = length >= kZeroByPunchMin &&
                       ::fallocate(impl.fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, off_t(offset), off_t(end - offset)) == 0;
    if (punch) {
        FABRIC_CRASH_POINT("region.create.punched");  // holes in an extent only this CREATING entry holds
    }
    if (::fallocate(impl.fd, 0, off_t(offset), off_t(end - offset)) != 0) {
        const int err = errno;
        return make_error(err == ENOSPC ? Errc::no_space : Errc::io_error,
                          "pool '" + impl.name + "': placing the pages of a new region (" + format_bytes(end - offset) +
                              " at offset " + std::to_string(offset) + ") failed: " + std::strerror(err));
    }
    if (!punch) std::memset(impl.base + offset, 0, length);
    return {};
}

}  // namespace

Result<Region> Pool::create_region(const RegionSpec& spec) {
    FABRIC_TRY(check_open());

    if (impl_->read_only || !impl_->self)
        return make_error(Errc::permission_denied, "pool '" + impl_->name + "' is open read-only");
    if (spec.name.empty() || spec.name.size() >= kRegionNameBytes || spec.name.find('\0') != std::string::npos)
        return make_error(Errc::invalid_argument, "region name '" + spec.name + "' must be 1-" +
                                                      std::to_string(kRegionNameBytes - 1) + " bytes");
    const uint64_t length = detail::region_reserved_bytes(spec.length);
    // The region area from the mapping and the layout, never from the header: its fields were
    // validated at open, but any writer may rewrite them since (threat-model.md).
    const uint64_t area_begin = kDataOffset, area_end = impl_->size;
    if (spec.length == 0 || length > area_end - area_begin)
        return make_error(Errc::capacity_exceeded, "region '" + spec.name + "' of " + std::to_string(spec.length) +
                                                       " bytes does not fit the pool's region area of " +
                                                       format_bytes(area_end - area_begin) + " (raise with --size)");
    uint64_t now = mono_now_ns();
    if (lifecycle_state(impl_->header()->lifecycle.load(std::memory_order_acquire)) != kPoolLive)
        return make_error(Errc::stale_generation, "pool '" + impl_->name + "' has been removed");
    const uint64_t ttl = spec.ttl > Duration::zero() ? to_ns(spec.ttl) : impl_->header()->default_ttl_ns;
    PoolHeader& h = *impl_->header();
    RegionEntry* entries = impl_->entries();

    auto locked = detail::owner_lock_acquire(h.meta_lock, *this, impl_->self, kMetaLockTimeoutNs, "directory lock");
    if (!locked) return std::move(locked).error();
    uint32_t index = kDirectoryEntries;
    uint32_t gen = 0;
    uint64_t offset = 0;
    {
        detail::OwnerLockGuard guard(h.meta_lock, impl_->self);
        // Again under the lock: a removal marks the pool RECLAIMING only under it, after judging
        // every lease expired (reap_pass), so a region reserved below is either seen by that
        // judgement (CREATING counts as live) or refused here.
        if (lifecycle_state(h.lifecycle.load(std::memory_order_acquire)) != kPoolLive)
            return make_error(Errc::stale_generation, "pool '" + impl_->name + "' has been removed");
        now = mono_now_ns();
        // Under the lock: repair entries of dead creators, check the name, find space.
        struct Extent {
            uint64_t begin, end;
        };
        std::vector<Extent> used;
        used.reserve(64);
        // A parent entry that is free, re-used, or still CREATING by a dead creator. Dead by
        // pid, as the repair below judges a CREATING entry: a creator fenced while only paused
        // publishes its parent when it resumes, and must find its children's leases intact.
        auto parent_gone = [&](RegionEntry* all, RegionRef ref, uint64_t at) {
            if (ref.index >= kDirectoryEntries) return true;
            const uint64_t pw = all[ref.index].word.load(std::memory_order_acquire);
            if (entry_word_gen(pw) != ref.generation || entry_word_state(pw) == kEntryFree) return true;
            return entry_word_state(pw) == kEntryCreating &&
                   registry().process_liveness(entry_word_owner(pw), MonoClock::from_ns(at)) == Liveness::certainly_dead;
        };
        for (uint32_t i = 0; i < kDirectoryEntries; ++i) {
            RegionEntry& e = entries[i];
            uint64_t w = e.word.load(std::memory_order_acquire);
            const uint64_t state = entry_word_state(w);
            if (state == kEntryFree) {
                if (index == kDirectoryEntries) {
                    index = i;
                    gen = entry_word_gen(w) == 0 ? 1 : entry_word_gen(w);
                }
                continue;
            }
            // By pid only: a creator that was only paused still zeroes the extent and writes
            // the entry's fields when it resumes.
            if (state == kEntryCreating &&
                registry().process_liveness(entry_word_owner(w), MonoClock::from_ns(now)) == Liveness::certainly_dead) {
                // The creator died between reserving and publishing: nobody else can hold it.
                if (e.word.compare_exchange_strong(w, make_entry_word(kEntryFree, next_gen(entry_word_gen(w)), 0),
                                                   std::memory_order_acq_rel)) {
                    h.repaired_entries.fetch_add(1, std::memory_order_relaxed);
                    if (index == kDirectoryEntries) {
                        index = i;
                        gen = next_gen(entry_word_gen(w));
                    }
                    continue;
                }
            }
            const uint64_t off = e.offset.load(std::memory_order_relaxed);
            const uint64_t len = e.length.load(std::memory_order_relaxed);
            if (impl_->in_bounds(off, len)) used.push_back({off, off + len});
            if (e.kind.load(std::memory_order_relaxed) == uint32_t(spec.kind) &&
                detail::load_fixed_string(e.name, kRegionNameBytes / 8) == spec.name &&
                lease_active(e.lease.state.load(std::memory_order_relaxed))) {
                // A child whose parent is gone (a topic's partition whose creator died before
                // publishing the root) keeps its name only until the reaper reclaims it: it
                // must not make the re-creation of its parent fail. Revoked: handles fail closed.
                const uint64_t parent = e.parent.load(std::memory_order_relaxed);
                if (parent != 0 && parent_gone(entries, RegionRef::unpack(parent), now)) {
                    detail::revoke_lease(e.lease, entry_word_gen(w));
                    continue;
                }
                return make_error(Errc::already_exists, std::string(region_kind_name(uint32_t(spec.kind))) + " '" +
                                                            spec.name + "' already exists");
            }
        }
        if (index == kDirectoryEntries)
            return make_error(Errc::capacity_exceeded, "region directory of pool '" + impl_->name + "' is full (" +
                                                           std::to_string(kDirectoryEntries) + " regions)");
        if (spec.parent.valid()) {
            if (spec.parent.index >= kDirectoryEntries)
                return make_error(Errc::invalid_argument, "parent region index out of range");
            const uint64_t pw = entries[spec.parent.index].word.load(std::memory_order_acquire);
            const uint64_t ps = entry_word_state(pw);
            if (entry_word_gen(pw) != spec.parent.generation || (ps != kEntryLive && ps != kEntryCreating))
                return make_error(Errc::stale_generation, "parent region of '" + spec.name + "' no longer exists");
        }
        std::sort(used.begin(), used.end(), [](const Extent& a, const Extent& b) { return a.begin < b.begin; });
        uint64_t cursor = area_begin;
        const uint64_t end = area_end;
        bool found = false;
        uint64_t largest = 0;
        for (const Extent& x : used) {
            if (x.begin > cursor) {
                largest = std::max(largest, x.begin - cursor);
                if (x.begin - cursor >= length) {
                    found = true;
                    break;
                }
            }
            cursor = std::max(cursor, (x.end + kPageSize - 1) & ~(kPageSize - 1));
        }
        if (!found) {
            if (cursor < end) largest = std::max(largest, end - cursor);
            if (cursor >= end || end - cursor < length)
                return make_error(Errc::capacity_exceeded,
                                  "pool '" + impl_->name + "' has no free extent of " + format_bytes(length) + " for " +
                                      std::string(region_kind_name(uint32_t(spec.kind))) + " '" + spec.name +
                                      "' (largest free extent " + format_bytes(largest) + "; raise with --size)");
        }
        offset = cursor;
        RegionEntry& e = entries[index];
        // The entry is FREE: only meta-lock holders write FREE entries, so plain stores suffice.
        e.offset.store(offset, std::memory_order_relaxed);
        e.length.store(length, std::memory_order_relaxed);
        e.kind.store(uint32_t(spec.kind), std::memory_order_relaxed);
        e.flags.store(0, std::memory_order_relaxed);
        e.parent.store(spec.parent.valid() ? spec.parent.packed() : 0, std::memory_order_relaxed);
        e.created_wall_ns.store(wall_now_ns(), std::memory_order_relaxed);
        for (int k = 0; k < 3; ++k) e.params[k].store(spec.params[k], std::memory_order_relaxed);
        detail::store_fixed_string(e.name, kRegionNameBytes / 8, spec.name);
        init_lease(e.lease, make_lease_id(index + 1, gen), now, ttl, impl_->self);
        attach_bit(*impl_, index);
        // Release: the fields above are visible to anyone who acquires a non-FREE word.
        e.word.store(make_entry_word(kEntryCreating, gen, impl_->self), std::memory_order_release);
        FABRIC_CRASH_POINT("region.create.reserved");
    }

    Region region;
    region.pool_ = *this;
    region.ref_ = RegionRef{index, gen};
    region.offset_ = offset;
    region.length_ = length;
    region.data_ = impl_->base + offset;
    auto give_back = [&] {
        uint64_t w = make_entry_word(kEntryCreating, gen, impl_->self);
        entries[index].word.compare_exchange_strong(w, make_entry_word(kEntryFree, next_gen(gen), 0),
                                                    std::memory_order_acq_rel);
    };
    if (Status z = zero_extent(*impl_, offset, length); !z) {
        give_back();
        return std::move(z).error();
    }
    if (spec.init) {
        if (Status s = spec.init(region.data_, length); !s) {
            give_back();
            return std::move(s).error();
        }
    }
    FABRIC_CRASH_POINT("region.create.before_publish");
    if (spec.publish) FABRIC_TRY(region.publish());
    return region;
}

Status Region::publish() {
    if (pool_.closed()) return detail::closed_error(pool_);
    RegionEntry* entry_ = &detail::PoolAccess::entry(*this);
    uint64_t w = make_entry_word(kEntryCreating, ref_.generation, pool_.self());
    // Release: the initialised region memory is visible to whoever acquires LIVE.
    if (entry_->word.compare_exchange_strong(w, make_entry_word(kEntryLive, ref_.generation, pool_.self()),
                                             std::memory_order_acq_rel))
        return {};
    if (entry_word_state(w) == kEntryLive && entry_word_gen(w) == ref_.generation) return {};
    return make_error(Errc::stale_generation, "region '" +
                                                  detail::load_fixed_string(entry_->name, kRegionNameBytes / 8) +
                                                  "' was reclaimed before it was published (creator presumed dead)");
}

Result<Region> Pool::open_region(RegionRef ref) const {
    FABRIC_TRY(check_open());

    if (ref.index >= kDirectoryEntries) return make_error(Errc::invalid_argument, "region index out of range");
    RegionEntry& e = impl_->entries()[ref.index];
    const std::string name = detail::load_fixed_string(e.name, kRegionNameBytes / 8);
    const bool attached = attach_bit(*impl_, ref.index);
    Region region;
    // seq_cst: second half of the Dekker pair (see attach_bit).
    const uint64_t w = e.word.load(std::memory_order_seq_cst);
    if (entry_word_gen(w) != ref.generation || entry_word_state(w) != kEntryLive) {
        if (attached) detach_bit(*impl_, ref.index);
        return make_error(Errc::stale_generation, "region '" + name + "' was reclaimed or re-created (generation " +
                                                      std::to_string(ref.generation) + ", now " +
                                                      std::to_string(entry_word_gen(w)) + ")");
    }
    const uint64_t off = e.offset.load(std::memory_order_relaxed);
    const uint64_t len = e.length.load(std::memory_order_relaxed);
    // Every extent starts on a page (create_region places them so): the structures a region
    // holds are aligned to it (StoreHeader to a page), so a misaligned one is corrupt, not
    // something to read through. The same rule guards the reaper's and --check's hooks.
    if (!detail::region_extent_ok(*this, off, len)) {
        if (attached) detach_bit(*impl_, ref.index);
        return make_error(Errc::corrupt, "region '" + name + "' extent [" + std::to_string(off) + ", +" +
                                             std::to_string(len) + ") " +
                                             (off % kPageSize != 0 ? "starts off a " + std::to_string(kPageSize) +
                                                                         "-byte page"
                                                                   : "is empty or outside the data area [" +
                                                                         std::to_string(kDataOffset) + ", " +
                                                                         std::to_string(size()) + ")"));
    }
    region.pool_ = *this;
    region.ref_ = ref;
    region.offset_ = off;
    region.length_ = len;
    region.data_ = impl_->base + off;
    if (Status s = region.check(MonoClock::now()); !s) return std::move(s).error();
    return region;
}

Result<Region> Pool::open_region(RegionKind kind, std::string_view name) const {
    FABRIC_TRY(check_open());

    RegionEntry* entries = impl_->entries();
    OwnerToken creator = 0;  // of a CREATING entry of that name, if any
    for (uint32_t i = 0; i < kDirectoryEntries; ++i) {
        const uint64_t w = entries[i].word.load(std::memory_order_acquire);
        const uint64_t state = entry_word_state(w);
        if (state != kEntryLive && state != kEntryCreating) continue;
        if (entries[i].kind.load(std::memory_order_relaxed) != uint32_t(kind)) continue;
        if (detail::load_fixed_string(entries[i].name, kRegionNameBytes / 8) != name) continue;
        if (entries[i].word.load(std::memory_order_acquire) != w) continue;  // changed while reading the name
        if (!lease_active(entries[i].lease.state.load(std::memory_order_acquire))) continue;  // removed
        if (state == kEntryCreating) {
            creator = entry_word_owner(w);
            continue;
        }
        return open_region(RegionRef{i, entry_word_gen(w)});
    }
    const std::string what = std::string(region_kind_name(uint32_t(kind))) + " '" + std::string(name) + "'";
    // Being created by a process that may still finish: "not ready", so that openers wait for
    // it instead of reporting it missing (and creators do not race it into already_exists
    // followed by not_found). A dead creator's entry is repaired by the next create. Judged by
    // pid, as that repair is (create_region): a creator fenced while only paused still holds
    // the name there (already_exists) and publishes when it resumes, so it is not ready here.
    if (creator != 0) {
        std::string why;
        if (registry().process_liveness(creator, MonoClock::now(), &why) != Liveness::certainly_dead) {
            const uint64_t sw = impl_->slots()[token_slot(creator)].word.load(std::memory_order_acquire);
            return make_error(Errc::not_ready, what + " is being created in pool '" + impl_->name + "' by pid " +
                                                   std::to_string(slot_word_pid(sw)));
        }
    }
    return make_error(Errc::not_found, what + " does not exist in pool '" + impl_->name + "'");
}

Region::Region(Region&& o) noexcept
    : pool_(std::move(o.pool_)), ref_(o.ref_), offset_(o.offset_), length_(o.length_), data_(o.data_) {}
Region& Region::operator=(Region&& o) noexcept {
    if (this != &o) {
        release();
        pool_ = std::move(o.pool_);  // empties o.pool_
        ref_ = o.ref_;
        offset_ = o.offset_;
        length_ = o.length_;
        data_ = o.data_;
    }
    return *this;
}
Region::~Region() { release(); }
void Region::release() noexcept {
    if (pool_.impl_) detach_bit(*pool_.impl_, ref_.index);
    pool_ = Pool();  // may drop the last handle: unmaps after the detach above
}

uint64_t Region::lease_id() const { return detail::PoolAccess::entry(*this).lease.lease_id.load(std::memory_order_relaxed); }

// Region::check runs before every operation on a region: the passing case is the gate's loads
// and compares alone (detail::LeaseGate); the failing one (below) re-reads them to say which
// failed.
Status Region::check(MonoTime now) const {
    if (pool_.valid() && detail::LeaseGate::of(*this).passes(to_ns(now))) return {};
    return check_failed(now);
}

[[gnu::cold, gnu::noinline]] Status Region::check_failed(MonoTime now) const {
    const uint64_t now_ns = to_ns(now);
    if (!pool_.valid()) return make_error(Errc::invalid_argument, "check of an empty Region handle");
    if (pool_.closed()) return detail::closed_error(pool_);
    RegionEntry* entry_ = &detail::PoolAccess::entry(*this);
    // A removed pool (`pool rm --force` with live processes, or a reaped one): every handle
    // fails closed at its next check. The remover's lifecycle CAS comes before its unlink, so
    // nothing is acknowledged into a segment after its name is gone. Acquire: pairs with it.
    if (lifecycle_state(pool_.impl_->header()->lifecycle.load(std::memory_order_acquire)) != kPoolLive)
        return make_error(Errc::stale_generation, "pool '" + pool_.name() +
                                                      "' was removed (fabric-shm pool rm, or reaped): its regions are gone");
    const uint64_t w = entry_->word.load(std::memory_order_acquire);
    // RECLAIMING with our generation: a reaper is judging the region (try_reclaim). Not yet an
    // end: it keeps the region if a renewal landed or a live process holds it, as this one
    // does. The lease decides below; a live one makes this a retry, not a verdict.
    const bool being_judged = entry_word_gen(w) == ref_.generation && entry_word_state(w) == kEntryReclaiming;
    if (entry_word_gen(w) != ref_.generation ||
        (entry_word_state(w) != kEntryLive && entry_word_state(w) != kEntryCreating && !being_judged))
        return make_error(Errc::stale_generation, "region '" +
                                                      detail::load_fixed_string(entry_->name, kRegionNameBytes / 8) +
                                                      "' was reclaimed (handle generation " +
                                                      std::to_string(ref_.generation) + ")");
    if (!lease_active(entry_->lease.state.load(std::memory_order_acquire)))
        return make_error(Errc::lease_expired, std::string(region_kind_name(entry_->kind.load(std::memory_order_relaxed))) +
                                                   " '" + detail::load_fixed_string(entry_->name, kRegionNameBytes / 8) +
                                                   "' was removed (lease revoked)");
    const uint64_t expires = entry_->lease.expires_ns.load(std::memory_order_acquire);
    if (now_ns >= expires)
        return make_error(Errc::lease_expired, std::string(region_kind_name(entry_->kind.load(std::memory_order_relaxed))) +
                                                   " '" + detail::load_fixed_string(entry_->name, kRegionNameBytes / 8) +
                                                   "' lease expired " + format_duration_ns(now_ns - expires) +
                                                   " ago (renew it with a RenewalManager or `fabric-shm lease renew`)");
    // A reclaimer killed before its second judgement is repaired here, not waited for.
    if (being_judged && !detail::unmark_dead_reclaim(pool_, *entry_, w))
        return make_error(Errc::busy, "region '" + detail::load_fixed_string(entry_->name, kRegionNameBytes / 8) +
                                          "' is being judged by a reaper while its lease is live; it is kept while a "
                                          "live process holds it: retry");
    return {};
}

namespace detail {

uint32_t attached_live_processes(const Pool::Impl& impl, uint32_t index, uint64_t now) {
    uint32_t n = 0;
    const ProcessSlot* slots = impl.slots();
    for (uint32_t s = 0; s < kRegistrySlots; ++s) {
        const ProcessSlot& slot = slots[s];
        // seq_cst: pairs with attach_bit's fetch_or (Dekker).
        if (!(slot.attached[index / 64].load(std::memory_order_seq_cst) & (uint64_t(1) << (index % 64)))) continue;
        const uint64_t w = slot.word.load(std::memory_order_acquire);
        const uint64_t st = slot_word_state(w);
        if (st != kSlotLive && st != kSlotClaiming && st != kSlotFenced) continue;
        // By pid only: a process judged dead by its heartbeat (FENCED included) still maps
        // the region and reads or writes it when it resumes.
        if (detail::slot_process_liveness(impl.header(), slot, w, now, nullptr) == Liveness::certainly_dead) continue;
        ++n;
    }
    return n;
}

bool unmark_dead_reclaim(const Pool& pool, RegionEntry& e, uint64_t w) {
    // A read-only mapping cannot be written (a reap there is a dry run too): busy, as before.
    const Pool::Impl& impl = PoolAccess::impl(pool);
    if (impl.read_only || !impl.self) return false;
    if (pool.registry().process_liveness(entry_word_owner(w), MonoClock::now()) != Liveness::certainly_dead)
        return false;
    // acq_rel, as the reap pass's repair: whoever wins restarts the entry from LIVE. A failed
    // CAS is no repair: the reclaimer may have finished (FREE, a new generation) before it
    // died, or another repairer or marker moved the word; the caller answers busy and the
    // next look sees what it became.
    return e.word.compare_exchange_strong(w, make_entry_word(kEntryLive, entry_word_gen(w), 0),
                                          std::memory_order_acq_rel);
}

void try_reclaim(ReclaimContext& ctx, uint32_t index, uint64_t w, const std::string& why) {
    RegionEntry& e = ctx.impl->entries()[index];
    const std::string name = std::string(region_kind_name(e.kind.load(std::memory_order_relaxed))) + " '" +
                             detail::load_fixed_string(e.name, kRegionNameBytes / 8) + "'";
    const uint64_t len = e.length.load(std::memory_order_relaxed);
    const uint32_t gen = entry_word_gen(w);
    if (ctx.dry_run) {
        const uint32_t attached = attached_live_processes(*ctx.impl, index, ctx.now);
        if (attached) {
            ctx.report->busy_regions++;
            ctx.report->notes.push_back("would keep " + name + " (" + why + ", held by " + std::to_string(attached) +
                                        " live process(es))");
        } else {
            ctx.report->reclaimed_regions++;
            ctx.report->reclaimed_bytes += len;
            ctx.report->notes.push_back("would reclaim " + name + " (" + why + ", " + format_bytes(len) + ")");
        }
        return;
    }
    const uint64_t marked = make_entry_word(kEntryReclaiming, gen, ctx.impl->self);
    // seq_cst: Dekker pair with attach_bit (see there) and with renew_lease (store expiry; load word).
    if (!e.word.compare_exchange_strong(w, marked, std::memory_order_seq_cst)) return;
    FABRIC_CRASH_POINT("region.reclaim.marked");
    const bool still_due = why != "lease expired" || ctx.now >= e.lease.expires_ns.load(std::memory_order_seq_cst);
    const uint32_t attached = attached_live_processes(*ctx.impl, index, ctx.now);
    if (attached || !still_due) {
        uint64_t m = marked;
        e.word.compare_exchange_strong(m, make_entry_word(kEntryLive, gen, entry_word_owner(w)), std::memory_order_acq_rel);
        if (attached) {
            ctx.report->busy_regions++;
            ctx.report->notes.push_back("kept " + name + " (" + why + ", held by " + std::to_string(attached) +
                                        " live process(es))");
        }
        return;
    }
    uint64_t m = marked;
    // Release: FREE(g+1) makes the extent reusable; every old handle now sees StaleGeneration.
    if (e.word.compare_exchange_strong(m, make_entry_word(kEntryFree, next_gen(gen), 0), std::memory_order_acq_rel)) {
        ctx.impl->header()->reclaimed_regions.fetch_add(1, std::memory_order_relaxed);
        ctx.report->reclaimed_regions++;
        ctx.report->reclaimed_bytes += len;
        ctx.report->notes.push_back("reclaimed " + name + " (" + why + ", " + format_bytes(len) + ")");
    }
}

}  // namespace detail

Status Pool::remove_region(RegionRef ref) {
    FABRIC_TRY(check_open());

    if (impl_->read_only || !impl_->self)
        return make_error(Errc::permission_denied, "pool '" + impl_->name + "' is open read-only");
    if (ref.index >= kDirectoryEntries) return make_error(Errc::invalid_argument, "region index out of range");
    RegionEntry* entries = impl_->entries();
    const uint64_t w = entries[ref.index].word.load(std::memory_order_acquire);
    if (entry_word_gen(w) != ref.generation || entry_word_state(w) == kEntryFree)
        return make_error(Errc::stale_generation, "region was already removed");
    FABRIC_PAUSE_POINT("region.remove.checked");
    // Revoke this region and its descendants: accessors fail closed from now on. Each by the
    // generation judged here (the handle's; a child's when it was found under its parent), and
    // reclaimed only while its entry still holds it: a remover that paused may resume after an
    // entry was reclaimed and taken by an unrelated region, which it must leave alone.
    struct Doomed {
        uint32_t index, gen;
    };
    std::vector<Doomed> doomed{{ref.index, ref.generation}};
    for (size_t k = 0; k < doomed.size(); ++k) {
        const Doomed d = doomed[k];
        detail::revoke_lease(entries[d.index].lease, d.gen);
        const uint64_t packed = make_region_ref(d.index, d.gen);
        for (uint32_t c = 0; c < kDirectoryEntries; ++c) {
            const uint64_t cw = entries[c].word.load(std::memory_order_acquire);
            if (entry_word_state(cw) == kEntryFree) continue;
            if (entries[c].parent.load(std::memory_order_relaxed) != packed) continue;
            // The parent field read belongs to the occupant of generation cw (re-checked).
            if (entries[c].word.load(std::memory_order_acquire) != cw) continue;
            const bool known = std::any_of(doomed.begin(), doomed.end(), [c](const Doomed& x) { return x.index == c; });
            if (!known) doomed.push_back({c, entry_word_gen(cw)});
        }
    }
    ReapReport report;
    ReclaimContext ctx{this, impl_.get(), mono_now_ns(), false, &report};
    for (auto it = doomed.rbegin(); it != doomed.rend(); ++it) {
        const uint64_t iw = entries[it->index].word.load(std::memory_order_acquire);
        if (entry_word_state(iw) == kEntryLive && entry_word_gen(iw) == it->gen) try_reclaim(ctx, it->index, iw, "removed");
    }
    return {};
}

std::vector<RegionInfo> Pool::regions() const {
    if (closed()) return {};

    std::vector<RegionInfo> out;
    const uint64_t now = mono_now_ns();
    for (uint32_t i = 0; i < kDirectoryEntries; ++i) {
        const RegionEntry& e = impl_->entries()[i];
        const uint64_t w = e.word.load(std::memory_order_acquire);
        if (entry_word_state(w) == kEntryFree) continue;
        RegionInfo info;
        info.ref = RegionRef{i, entry_word_gen(w)};
        info.state = entry_state_name(entry_word_state(w));
        info.kind = e.kind.load(std::memory_order_relaxed);
        info.name = detail::load_fixed_string(e.name, kRegionNameBytes / 8);
        info.offset = e.offset.load(std::memory_order_relaxed);
        info.length = e.length.load(std::memory_order_relaxed);
        const uint64_t parent = e.parent.load(std::memory_order_relaxed);
        if (parent) info.parent = RegionRef::unpack(parent);
        info.owner = entry_word_owner(w);
        for (int k = 0; k < 3; ++k) info.params[k] = e.params[k].load(std::memory_order_relaxed);
        info.lease = lease_info_of(e.lease);
        info.lease.kind = info.kind;
        info.lease.name = info.name;
        info.lease.region = info.ref;
        info.attached_processes = attached_live_processes(*impl_, i, now);
        out.push_back(std::move(info));
    }
    return out;
}

Result<RegionInfo> Pool::region_info(RegionRef ref) const {
    FABRIC_TRY(check_open());

    for (RegionInfo& info : regions())
        if (info.ref == ref) return std::move(info);
    return make_error(Errc::not_found, "region " + std::to_string(ref.index) + " generation " +
                                           std::to_string(ref.generation) + " does not exist");
}

}  // namespace fabric_shm
