// SPDX-License-Identifier: MIT
// The shared-memory layout, printed and checked against the table in layout_table.txt: the
// size and alignment of every struct placed in a pool, and every field's offset and size.
// A changed line means another build reads those bytes differently, so a change here is a
// decision: bump kLayoutMajor (libfabric_shm/src/layout/pool_layout.h) when old pools must be
// refused, update docs/ARCHITECTURE.md, and regenerate the table:
//     build/tests/layout/layout_table > tests/layout/layout_table.txt
// Usage: layout_table [--check TABLE]   (prints the table; with --check, compares instead)
#include <cstddef>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "layout/fingerprint.h"
#include "layout/metrics_layout.h"
#include "layout/pool_layout.h"
#include "mq/topic_layout.h"
#include "status_layout.h"
#include "store/store_layout.h"

namespace {

struct Field {
    const char* name;
    size_t offset, size, align;
};
struct Struct {
    const char* name;
    size_t size, align;
    std::vector<Field> fields;
};

#define FIELD(S, f) Field{#f, offsetof(S, f), sizeof(S::f), alignof(decltype(S::f))}
#define STRUCT(S, ...) Struct{#S, sizeof(S), alignof(S), __VA_ARGS__}

const std::vector<Struct>& shared_structs() {
    static const std::vector<Struct> all = {
    STRUCT(fabric_shm::layout::LeaseHeader, {
        FIELD(fabric_shm::layout::LeaseHeader, lease_id),
        FIELD(fabric_shm::layout::LeaseHeader, created_ns),
        FIELD(fabric_shm::layout::LeaseHeader, expires_ns),
        FIELD(fabric_shm::layout::LeaseHeader, ttl),
        FIELD(fabric_shm::layout::LeaseHeader, renewed),
        FIELD(fabric_shm::layout::LeaseHeader, state),
        FIELD(fabric_shm::layout::LeaseHeader, last_renewer),
        FIELD(fabric_shm::layout::LeaseHeader, renew_count),
    }),
    STRUCT(fabric_shm::layout::ProcessSlot, {
        FIELD(fabric_shm::layout::ProcessSlot, word),
        FIELD(fabric_shm::layout::ProcessSlot, start_time),
        FIELD(fabric_shm::layout::ProcessSlot, pidns),
        FIELD(fabric_shm::layout::ProcessSlot, heartbeat_ns),
        FIELD(fabric_shm::layout::ProcessSlot, timeout_ns),
        FIELD(fabric_shm::layout::ProcessSlot, registered_ns),
        FIELD(fabric_shm::layout::ProcessSlot, comm),
        FIELD(fabric_shm::layout::ProcessSlot, retirer),
        FIELD(fabric_shm::layout::ProcessSlot, reserved0),
        FIELD(fabric_shm::layout::ProcessSlot, attached),
        FIELD(fabric_shm::layout::ProcessSlot, counters),
        FIELD(fabric_shm::layout::ProcessSlot, child_groups),
    }),
    STRUCT(fabric_shm::layout::RegionEntry, {
        FIELD(fabric_shm::layout::RegionEntry, word),
        FIELD(fabric_shm::layout::RegionEntry, offset),
        FIELD(fabric_shm::layout::RegionEntry, length),
        FIELD(fabric_shm::layout::RegionEntry, kind),
        FIELD(fabric_shm::layout::RegionEntry, flags),
        FIELD(fabric_shm::layout::RegionEntry, parent),
        FIELD(fabric_shm::layout::RegionEntry, created_wall_ns),
        FIELD(fabric_shm::layout::RegionEntry, params),
        FIELD(fabric_shm::layout::RegionEntry, name),
        FIELD(fabric_shm::layout::RegionEntry, lease),
        FIELD(fabric_shm::layout::RegionEntry, reserved),
    }),
    STRUCT(fabric_shm::layout::PoolHeader, {
        FIELD(fabric_shm::layout::PoolHeader, magic),
        FIELD(fabric_shm::layout::PoolHeader, version_major),
        FIELD(fabric_shm::layout::PoolHeader, version_minor),
        FIELD(fabric_shm::layout::PoolHeader, header_size),
        FIELD(fabric_shm::layout::PoolHeader, fingerprint),
        FIELD(fabric_shm::layout::PoolHeader, pool_size),
        FIELD(fabric_shm::layout::PoolHeader, registry_offset),
        FIELD(fabric_shm::layout::PoolHeader, registry_slots),
        FIELD(fabric_shm::layout::PoolHeader, registry_slot_size),
        FIELD(fabric_shm::layout::PoolHeader, directory_offset),
        FIELD(fabric_shm::layout::PoolHeader, directory_entries),
        FIELD(fabric_shm::layout::PoolHeader, directory_entry_size),
        FIELD(fabric_shm::layout::PoolHeader, data_offset),
        FIELD(fabric_shm::layout::PoolHeader, data_size),
        FIELD(fabric_shm::layout::PoolHeader, incarnation),
        FIELD(fabric_shm::layout::PoolHeader, creator_pid),
        FIELD(fabric_shm::layout::PoolHeader, mode),
        FIELD(fabric_shm::layout::PoolHeader, creator_start_time),
        FIELD(fabric_shm::layout::PoolHeader, creator_pidns),
        FIELD(fabric_shm::layout::PoolHeader, created_wall_ns),
        FIELD(fabric_shm::layout::PoolHeader, created_mono_ns),
        FIELD(fabric_shm::layout::PoolHeader, default_ttl_ns),
        FIELD(fabric_shm::layout::PoolHeader, numa_node),
        FIELD(fabric_shm::layout::PoolHeader, flags),
        FIELD(fabric_shm::layout::PoolHeader, name),
        FIELD(fabric_shm::layout::PoolHeader, reserved_immutable),
        FIELD(fabric_shm::layout::PoolHeader, lifecycle),
        FIELD(fabric_shm::layout::PoolHeader, meta_lock),
        FIELD(fabric_shm::layout::PoolHeader, reaped_processes),
        FIELD(fabric_shm::layout::PoolHeader, reclaimed_regions),
        FIELD(fabric_shm::layout::PoolHeader, stolen_locks),
        FIELD(fabric_shm::layout::PoolHeader, repaired_entries),
        FIELD(fabric_shm::layout::PoolHeader, fence_floor),
        FIELD(fabric_shm::layout::PoolHeader, killed_child_groups),
        FIELD(fabric_shm::layout::PoolHeader, registrations_ended),
        FIELD(fabric_shm::layout::PoolHeader, scanned_through),
        FIELD(fabric_shm::layout::PoolHeader, reserved_mutable),
        FIELD(fabric_shm::layout::PoolHeader, lease),
        FIELD(fabric_shm::layout::PoolHeader, retired_counters),
    }),
    STRUCT(fabric_shm::layout::LatencyCells, {
        FIELD(fabric_shm::layout::LatencyCells, sum_ns),
        FIELD(fabric_shm::layout::LatencyCells, max_ns),
        FIELD(fabric_shm::layout::LatencyCells, reserved),
        FIELD(fabric_shm::layout::LatencyCells, buckets),
    }),
    STRUCT(fabric_shm::layout::MetricsKey, {
        FIELD(fabric_shm::layout::MetricsKey, word),
        FIELD(fabric_shm::layout::MetricsKey, reserved0),
        FIELD(fabric_shm::layout::MetricsKey, name),
        FIELD(fabric_shm::layout::MetricsKey, aggregate),
    }),
    STRUCT(fabric_shm::layout::LatencyShard, {
        FIELD(fabric_shm::layout::LatencyShard, word),
        FIELD(fabric_shm::layout::LatencyShard, reserved0),
        FIELD(fabric_shm::layout::LatencyShard, cells),
    }),
    STRUCT(fabric_shm::layout::MetricsHeader, {
        FIELD(fabric_shm::layout::MetricsHeader, magic),
        FIELD(fabric_shm::layout::MetricsHeader, version),
        FIELD(fabric_shm::layout::MetricsHeader, buckets),
        FIELD(fabric_shm::layout::MetricsHeader, keys),
        FIELD(fabric_shm::layout::MetricsHeader, shards),
        FIELD(fabric_shm::layout::MetricsHeader, keys_offset),
        FIELD(fabric_shm::layout::MetricsHeader, shards_offset),
        FIELD(fabric_shm::layout::MetricsHeader, reserved),
    }),
    STRUCT(fabric_shm::store_layout::StripeLock, {
        FIELD(fabric_shm::store_layout::StripeLock, holder),
        FIELD(fabric_shm::store_layout::StripeLock, intent),
    }),
    STRUCT(fabric_shm::store_layout::Bucket, {
        FIELD(fabric_shm::store_layout::Bucket, slots),
        FIELD(fabric_shm::store_layout::Bucket, overflow),
    }),
    STRUCT(fabric_shm::store_layout::StoreHeader, {
        FIELD(fabric_shm::store_layout::StoreHeader, magic),
        FIELD(fabric_shm::store_layout::StoreHeader, layout_version),
        FIELD(fabric_shm::store_layout::StoreHeader, header_size),
        FIELD(fabric_shm::store_layout::StoreHeader, bucket_count),
        FIELD(fabric_shm::store_layout::StoreHeader, sb_bytes),
        FIELD(fabric_shm::store_layout::StoreHeader, sb_count),
        FIELD(fabric_shm::store_layout::StoreHeader, words_per_sb),
        FIELD(fabric_shm::store_layout::StoreHeader, heap_bytes),
        FIELD(fabric_shm::store_layout::StoreHeader, max_object_bytes),
        FIELD(fabric_shm::store_layout::StoreHeader, pin_slots),
        FIELD(fabric_shm::store_layout::StoreHeader, class_count),
        FIELD(fabric_shm::store_layout::StoreHeader, buckets_offset),
        FIELD(fabric_shm::store_layout::StoreHeader, desc_offset),
        FIELD(fabric_shm::store_layout::StoreHeader, used_offset),
        FIELD(fabric_shm::store_layout::StoreHeader, words_offset),
        FIELD(fabric_shm::store_layout::StoreHeader, pins_offset),
        FIELD(fabric_shm::store_layout::StoreHeader, root_bytes),
        FIELD(fabric_shm::store_layout::StoreHeader, created_wall_ns),
        FIELD(fabric_shm::store_layout::StoreHeader, reserved0),
        FIELD(fabric_shm::store_layout::StoreHeader, heap_ref),
        FIELD(fabric_shm::store_layout::StoreHeader, reserved1),
        FIELD(fabric_shm::store_layout::StoreHeader, version_counter),
        FIELD(fabric_shm::store_layout::StoreHeader, reserved2),
        FIELD(fabric_shm::store_layout::StoreHeader, class_cursor),
        FIELD(fabric_shm::store_layout::StoreHeader, pin_high_water),
        FIELD(fabric_shm::store_layout::StoreHeader, reserved3),
        FIELD(fabric_shm::store_layout::StoreHeader, stripes),
        FIELD(fabric_shm::store_layout::StoreHeader, class_spare),
    }),
    STRUCT(fabric_shm::store_layout::ObjectHeader, {
        FIELD(fabric_shm::store_layout::ObjectHeader, magic),
        FIELD(fabric_shm::store_layout::ObjectHeader, crc32),
        FIELD(fabric_shm::store_layout::ObjectHeader, size),
        FIELD(fabric_shm::store_layout::ObjectHeader, version),
        FIELD(fabric_shm::store_layout::ObjectHeader, fence_token),
        FIELD(fabric_shm::store_layout::ObjectHeader, created_wall_ns),
        FIELD(fabric_shm::store_layout::ObjectHeader, expires_mono_ns),
        FIELD(fabric_shm::store_layout::ObjectHeader, replaces),
        FIELD(fabric_shm::store_layout::ObjectHeader, key_len),
        FIELD(fabric_shm::store_layout::ObjectHeader, ctype_len),
        FIELD(fabric_shm::store_layout::ObjectHeader, meta_pairs),
        FIELD(fabric_shm::store_layout::ObjectHeader, meta_len),
        FIELD(fabric_shm::store_layout::ObjectHeader, reserved),
    }),
    STRUCT(fabric_shm::mq::SlotHeader, {
        FIELD(fabric_shm::mq::SlotHeader, state),
        FIELD(fabric_shm::mq::SlotHeader, offset),
        FIELD(fabric_shm::mq::SlotHeader, timestamp_ns),
        FIELD(fabric_shm::mq::SlotHeader, value_len),
        FIELD(fabric_shm::mq::SlotHeader, key_len),
        FIELD(fabric_shm::mq::SlotHeader, headers_len),
    }),
    STRUCT(fabric_shm::mq::PartitionHeader, {
        FIELD(fabric_shm::mq::PartitionHeader, magic),
        FIELD(fabric_shm::mq::PartitionHeader, version),
        FIELD(fabric_shm::mq::PartitionHeader, index),
        FIELD(fabric_shm::mq::PartitionHeader, capacity),
        FIELD(fabric_shm::mq::PartitionHeader, capacity_log2),
        FIELD(fabric_shm::mq::PartitionHeader, on_full),
        FIELD(fabric_shm::mq::PartitionHeader, stride),
        FIELD(fabric_shm::mq::PartitionHeader, slots_offset),
        FIELD(fabric_shm::mq::PartitionHeader, base_offset),
        FIELD(fabric_shm::mq::PartitionHeader, incarnation),
        FIELD(fabric_shm::mq::PartitionHeader, reserved0),
        FIELD(fabric_shm::mq::PartitionHeader, tail),
        FIELD(fabric_shm::mq::PartitionHeader, pad_tail),
        FIELD(fabric_shm::mq::PartitionHeader, head),
        FIELD(fabric_shm::mq::PartitionHeader, pad_head),
        FIELD(fabric_shm::mq::PartitionHeader, skipped_claims),
        FIELD(fabric_shm::mq::PartitionHeader, quarantined),
        FIELD(fabric_shm::mq::PartitionHeader, reserved1),
        FIELD(fabric_shm::mq::PartitionHeader, waiters),
        FIELD(fabric_shm::mq::PartitionHeader, pad_waiters),
        FIELD(fabric_shm::mq::PartitionHeader, reserved2),
    }),
    STRUCT(fabric_shm::mq::GroupPartition, {
        FIELD(fabric_shm::mq::GroupPartition, committed),
        FIELD(fabric_shm::mq::GroupPartition, commit_epoch),
        FIELD(fabric_shm::mq::GroupPartition, owner),
        FIELD(fabric_shm::mq::GroupPartition, reserved_attempts),
        FIELD(fabric_shm::mq::GroupPartition, commits),
        FIELD(fabric_shm::mq::GroupPartition, dead_letter_offset),
        FIELD(fabric_shm::mq::GroupPartition, dead_letter_epoch),
        FIELD(fabric_shm::mq::GroupPartition, attempt_window),
    }),
    STRUCT(fabric_shm::mq::GroupMember, {
        FIELD(fabric_shm::mq::GroupMember, word),
        FIELD(fabric_shm::mq::GroupMember, id),
        FIELD(fabric_shm::mq::GroupMember, heartbeat_ns),
        FIELD(fabric_shm::mq::GroupMember, epoch),
        FIELD(fabric_shm::mq::GroupMember, reserved),
    }),
    STRUCT(fabric_shm::mq::GroupSlot, {
        FIELD(fabric_shm::mq::GroupSlot, word),
        FIELD(fabric_shm::mq::GroupSlot, name),
        FIELD(fabric_shm::mq::GroupSlot, lease_expires_ns),
        FIELD(fabric_shm::mq::GroupSlot, lease_ttl_ns),
        FIELD(fabric_shm::mq::GroupSlot, registered_ns),
        FIELD(fabric_shm::mq::GroupSlot, lock),
        FIELD(fabric_shm::mq::GroupSlot, epoch),
        FIELD(fabric_shm::mq::GroupSlot, flags),
        FIELD(fabric_shm::mq::GroupSlot, era),
        FIELD(fabric_shm::mq::GroupSlot, results_seq),
        FIELD(fabric_shm::mq::GroupSlot, results_flags),
        FIELD(fabric_shm::mq::GroupSlot, results_bucket),
        FIELD(fabric_shm::mq::GroupSlot, reserved),
        FIELD(fabric_shm::mq::GroupSlot, members),
        FIELD(fabric_shm::mq::GroupSlot, parts),
    }),
    STRUCT(fabric_shm::mq::TopicHeader, {
        FIELD(fabric_shm::mq::TopicHeader, magic),
        FIELD(fabric_shm::mq::TopicHeader, version),
        FIELD(fabric_shm::mq::TopicHeader, header_size),
        FIELD(fabric_shm::mq::TopicHeader, incarnation),
        FIELD(fabric_shm::mq::TopicHeader, num_partitions),
        FIELD(fabric_shm::mq::TopicHeader, on_full),
        FIELD(fabric_shm::mq::TopicHeader, capacity),
        FIELD(fabric_shm::mq::TopicHeader, stride),
        FIELD(fabric_shm::mq::TopicHeader, created_wall_ns),
        FIELD(fabric_shm::mq::TopicHeader, layout_fingerprint),
        FIELD(fabric_shm::mq::TopicHeader, reserved0),
        FIELD(fabric_shm::mq::TopicHeader, partition_refs),
        FIELD(fabric_shm::mq::TopicHeader, reserved_wake),
        FIELD(fabric_shm::mq::TopicHeader, space_seq),
        FIELD(fabric_shm::mq::TopicHeader, space_waiters),
        FIELD(fabric_shm::mq::TopicHeader, space_parked_ns),
        FIELD(fabric_shm::mq::TopicHeader, pad_space),
        FIELD(fabric_shm::mq::TopicHeader, groups_lock),
        FIELD(fabric_shm::mq::TopicHeader, reserved1),
    }),
    STRUCT(fabric_shm::mq::WaiterSlot, {
        FIELD(fabric_shm::mq::WaiterSlot, word),
        FIELD(fabric_shm::mq::WaiterSlot, wake_seq),
        FIELD(fabric_shm::mq::WaiterSlot, pad0),
        FIELD(fabric_shm::mq::WaiterSlot, reserved),
    }),
    STRUCT(fabric_shm::bridge::layout::BridgeStatusRegion, {
        FIELD(fabric_shm::bridge::layout::BridgeStatusRegion, magic),
        FIELD(fabric_shm::bridge::layout::BridgeStatusRegion, version),
        FIELD(fabric_shm::bridge::layout::BridgeStatusRegion, role),
        FIELD(fabric_shm::bridge::layout::BridgeStatusRegion, created_wall_ns),
        FIELD(fabric_shm::bridge::layout::BridgeStatusRegion, reserved0),
        FIELD(fabric_shm::bridge::layout::BridgeStatusRegion, topic),
        FIELD(fabric_shm::bridge::layout::BridgeStatusRegion, group),
        FIELD(fabric_shm::bridge::layout::BridgeStatusRegion, stream),
        FIELD(fabric_shm::bridge::layout::BridgeStatusRegion, member),
        FIELD(fabric_shm::bridge::layout::BridgeStatusRegion, servers),
        FIELD(fabric_shm::bridge::layout::BridgeStatusRegion, owner),
        FIELD(fabric_shm::bridge::layout::BridgeStatusRegion, heartbeat_wall_ns),
        FIELD(fabric_shm::bridge::layout::BridgeStatusRegion, connection),
        FIELD(fabric_shm::bridge::layout::BridgeStatusRegion, connection_since_wall_ns),
        FIELD(fabric_shm::bridge::layout::BridgeStatusRegion, stream_replicas),
        FIELD(fabric_shm::bridge::layout::BridgeStatusRegion, stream_storage),
        FIELD(fabric_shm::bridge::layout::BridgeStatusRegion, counters),
        FIELD(fabric_shm::bridge::layout::BridgeStatusRegion, gauges),
        FIELD(fabric_shm::bridge::layout::BridgeStatusRegion, last_error),
        FIELD(fabric_shm::bridge::layout::BridgeStatusRegion, server_url),
    }),
    };
    return all;
}

#undef FIELD
#undef STRUCT

/// Whether `gap` padding bytes before a field at `offset` of alignment `align` can come from
/// alignment: the field type's own, or an alignas(64) or alignas(128) on the member (which
/// the type does not show; the layouts align members to cache lines and nothing else).
bool alignment_gap(size_t gap, size_t offset, size_t align) {
    return gap < align || (offset % 64 == 0 && gap < 64) || (offset % 128 == 0 && gap < 128);
}

/// Fields listed in offset order, without overlaps, and with no gap that alignment does not
/// explain: a field added to a struct but not to the list above leaves a gap and fails here.
std::vector<std::string> listing_errors() {
    std::vector<std::string> errors;
    for (const Struct& s : shared_structs()) {
        size_t end = 0;
        for (const Field& f : s.fields) {
            if (f.offset < end)
                errors.push_back(std::string(s.name) + "::" + f.name + " is listed out of offset order or overlaps");
            else if (!alignment_gap(f.offset - end, f.offset, f.align))
                errors.push_back(std::string(s.name) + ": " + std::to_string(f.offset - end) + " bytes before " +
                                 f.name + " are not in the list (a field missing from layout_test.cpp?)");
            end = f.offset + f.size;
        }
        if (s.size < end || s.size - end >= s.align)
            errors.push_back(std::string(s.name) + ": " + std::to_string(s.size - end) +
                             " bytes after the last listed field (a field missing from layout_test.cpp?)");
    }
    return errors;
}

std::string table() {
    std::ostringstream out;
    out << "# Shared-memory layout (tests/layout/layout_test.cpp): struct size align, then field offset size.\n";
    out << "layout_major " << fabric_shm::layout::kLayoutMajor << "\n";
    for (const Struct& s : shared_structs()) {
        out << s.name << " " << s.size << " " << s.align << "\n";
        for (const Field& f : s.fields) out << "  " << f.name << " " << f.offset << " " << f.size << "\n";
    }
    return out.str();
}

std::vector<std::string> lines_of(const std::string& text) {
    std::vector<std::string> lines;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    return lines;
}

}  // namespace

int main(int argc, char** argv) {
    const std::vector<std::string> errors = listing_errors();
    for (const std::string& e : errors) std::cerr << "layout_table: " << e << "\n";
    const std::string current = table();
    if (argc == 1) {
        std::cout << current;
        return errors.empty() ? 0 : 1;
    }
    if (argc != 3 || std::string(argv[1]) != "--check") {
        std::cerr << "usage: layout_table [--check TABLE]\n";
        return 2;
    }
    std::ifstream file(argv[2]);
    if (!file) {
        std::cerr << "layout_table: cannot read " << argv[2] << "\n";
        return 2;
    }
    std::stringstream checked_in;
    checked_in << file.rdbuf();
    std::cout << current;  // the log shows the whole table
    const std::vector<std::string> want = lines_of(checked_in.str()), have = lines_of(current);
    int differences = 0;
    const std::string* struct_name = nullptr;
    for (size_t i = 0; i < std::max(want.size(), have.size()); ++i) {
        const std::string w = i < want.size() ? want[i] : "(nothing)";
        const std::string h = i < have.size() ? have[i] : "(nothing)";
        if (i < have.size() && !have[i].empty() && have[i][0] != ' ') struct_name = &have[i];
        if (w == h) continue;
        if (++differences > 20) continue;
        std::cerr << "layout_table: line " << i + 1 << (struct_name ? " (in " + *struct_name + ")" : std::string())
                  << ": the table says '" << w << "', this build has '" << h << "'\n";
    }
    if (differences)
        std::cerr << "layout_table: " << differences << " line(s) differ from " << argv[2]
                  << ". A shared struct changed shape: if that is intended, bump kLayoutMajor in "
                     "libfabric_shm/src/layout/pool_layout.h (old pools must be refused), update "
                     "docs/ARCHITECTURE.md, and regenerate the table with `build/tests/layout/layout_table > "
                     "tests/layout/layout_table.txt`.\n";
    return differences == 0 && errors.empty() ? 0 : 1;
}
