// SPDX-License-Identifier: MIT
// PlacementHint: a put says where its object went, the notification carries it, and a reader
// prefetches the object's lines before its lookup. The hint names the object's block; any hint
// (stale, forged, foreign, empty) leaves every read exactly as it is without one.
#include <doctest/doctest.h>

#include <cctype>
#include <cstdlib>
#include <cstring>
#include <random>
#include <optional>
#include <string>
#include <vector>

#include "../support/test_support.h"
#include "fabric_shm/consumer.h"
#include "fabric_shm/ingest.h"
#include "fabric_shm/mem_object_store.h"
#include "fabric_shm/placement_hint.h"
#include "fabric_shm/pool.h"
#include "fabric_shm/topic.h"
#include "store/store_core.h"

using namespace fabric_shm;
using test::pattern;

namespace {

struct PlacementFixture {
    explicit PlacementFixture(const std::string& tag, uint64_t pool_size = 32 << 20)
        : cleanup(test::unique_pool_name(tag)) {
        auto p = Pool::create({cleanup.name(), pool_size});
        REQUIRE_MESSAGE(p, p.error().message);
        pool.emplace(std::move(*p));
        auto s = MemObjectStore::open(*pool);
        REQUIRE_MESSAGE(s, s.error().message);
        store = std::move(*s);
        auto root = pool->open_region(RegionKind::store, "default");
        REQUIRE_MESSAGE(root, root.error().message);
        auto bound = detail::bind_store_regions(*pool, std::move(*root));
        REQUIRE_MESSAGE(bound, bound.error().message);
        memory.emplace(std::move(*bound));
    }
    FabricUri at(const std::string& key) const { return FabricUri::make(cleanup.name(), "in", key).value(); }
    /// The block the store's table links under `key` now.
    uint32_t block_of(const std::string& key) const {
        auto k = detail::make_store_key(at(key));
        REQUIRE(k);
        auto f = memory->core->lookup(*k);
        REQUIRE(f);
        REQUIRE(f->has_value());
        return (*f)->block;
    }
    /// pin() after prefetch(hint): the object's bytes as a reader gets them.
    std::optional<std::vector<uint8_t>> read_after(PlacementHint hint, const std::string& key) const {
        store->prefetch(hint);
        auto p = store->pin(at(key));
        REQUIRE_MESSAGE(p, p.error().message);
        if (!p->has_value()) return std::nullopt;
        REQUIRE((**p).verify());
        return std::vector<uint8_t>((**p).bytes().begin(), (**p).bytes().end());
    }
    test::PoolCleanup cleanup;
    std::optional<Pool> pool;
    std::unique_ptr<MemObjectStore> store;
    std::optional<detail::BoundStore> memory;
};

}  // namespace

TEST_CASE("placement hint: its header text is 16 hexadecimal digits that parse back; any other text is no hint") {
    for (const uint64_t bits : {uint64_t(1), uint64_t(0x0000002a00000400), uint64_t(0xfedcba9876543210), ~uint64_t(0)}) {
        const PlacementHint h(bits);
        const PlacementHint::Text t = h.text();
        const std::string_view text(t.data(), t.size());
        CHECK(text.find_first_not_of("0123456789abcdef") == std::string_view::npos);
        CHECK(PlacementHint::parse(text) == h);
    }
    CHECK(std::string_view(PlacementHint(0x2a00000400).text().data(), 16) == "0000002a00000400");
    CHECK(PlacementHint::parse("0000002A00000400").bits() == 0x2a00000400);  // either case
    for (const char* bad : {"", "0000002a0000040", "0000002a000004000", "0000002a0000040g", "0x00002a00000400",
                            " 000002a00000400", "0000002a-0000400"})
        CHECK_MESSAGE(PlacementHint::parse(bad).empty(), bad);
    CHECK(PlacementHint().empty());
    CHECK(PlacementHint::parse(std::string_view(PlacementHint().text().data(), 16)).empty());
}

TEST_CASE("placement hint: the text of any value parses back in either case; one byte that is not a hex digit makes it no hint") {
    std::mt19937_64 rng(20261205);
    for (int i = 0; i < 20000; ++i) {
        const PlacementHint h(rng());
        const PlacementHint::Text t = h.text();
        std::string text(t.data(), t.size());
        CHECK(std::strtoull(text.c_str(), nullptr, 16) == h.bits());
        CHECK(PlacementHint::parse(text) == h);
        for (char& c : text) c = char(std::toupper(static_cast<unsigned char>(c)));
        CHECK(PlacementHint::parse(text) == h);
    }
    const PlacementHint::Text base = PlacementHint(0x0123456789abcdefULL).text();
    for (size_t at = 0; at < base.size(); ++at) {
        for (int c = 0; c < 256; ++c) {
            std::string text(base.data(), base.size());
            text[at] = char(c);
            const bool hex = std::isxdigit(c) != 0;
            const uint64_t expect = hex ? std::strtoull(text.c_str(), nullptr, 16) : 0;
            CHECK_MESSAGE(PlacementHint::parse(text).bits() == expect, "byte ", c, " at ", at);
        }
    }
}

TEST_CASE("placement hint: put, put_many and a loan each name the block their object was published in") {
    PlacementFixture f("placed");
    const auto small = pattern(100, 1), kib = pattern(1024, 2), big = pattern(200 << 10, 3);

    PlacementHint placed;
    REQUIRE(f.store->put(f.at("one").view(), kib, {}, placed));
    REQUIRE_FALSE(placed.empty());
    CHECK(detail::placement_block(placed) == f.block_of("one"));
    CHECK(detail::placement_size(placed) == kib.size());
    CHECK(f.read_after(placed, "one") == kib);

    // An overwrite goes to a new block, and its hint follows it.
    PlacementHint again;
    REQUIRE(f.store->put(f.at("one").view(), big, {}, again));
    CHECK(detail::placement_block(again) == f.block_of("one"));
    CHECK(detail::placement_size(again) == big.size());
    CHECK(again != placed);

    // put_many: one per request, the failed one (too large) without one.
    const auto too_large = std::vector<uint8_t>(f.store->config().max_object_bytes + 1);
    const std::vector<FabricUri> uris = {f.at("a"), f.at("b"), f.at("c")};
    const PutRequest requests[] = {{uris[0].view(), small}, {uris[1].view(), too_large}, {uris[2].view(), kib}};
    std::vector<BatchStatus> statuses(3);
    std::vector<PlacementHint> hints(3, PlacementHint(~uint64_t(0)));
    REQUIRE(f.store->put_many(requests, statuses, hints));
    CHECK(statuses[0].ok());
    CHECK(statuses[1].code == Errc::object_too_large);
    CHECK(statuses[2].ok());
    CHECK(detail::placement_block(hints[0]) == f.block_of("a"));
    CHECK(hints[1].empty());
    CHECK(detail::placement_block(hints[2]) == f.block_of("c"));
    CHECK(f.read_after(hints[2], "c") == kib);

    // A loan's placement is where commit() publishes it.
    auto loan = f.store->loan(f.at("loaned"), small.size());
    REQUIRE(loan);
    std::memcpy(loan->bytes().data(), small.data(), small.size());
    const PlacementHint loaned = loan->placement();
    REQUIRE(loan->commit());
    CHECK(detail::placement_block(loaned) == f.block_of("loaned"));
    CHECK(f.read_after(loaned, "loaned") == small);
    CHECK(ObjectLoan().placement().empty());
}

TEST_CASE("placement hint: put_many with a hint span of another size stores nothing and names both sizes") {
    PlacementFixture f("placed-many");
    const auto one = pattern(10, 4);
    const FabricUri u = f.at("x");
    const PutRequest requests[] = {{u.view(), one}, {u.view(), one}};
    std::vector<BatchStatus> statuses(2);
    std::vector<PlacementHint> hints(3);
    const Status s = f.store->put_many(requests, statuses, hints);
    REQUIRE_FALSE(s);
    CHECK(s.code() == Errc::invalid_argument);
    CHECK(s.error().message.find("3 placement hints for 2 requests") != std::string::npos);
    CHECK_FALSE(f.store->pin(u).value().has_value());
}

TEST_CASE("placement hint: a stale, forged, foreign or empty hint changes no read") {
    PlacementFixture f("placed-any");
    PlacementFixture other("placed-other", 8 << 20);
    const auto first = pattern(1024, 5), second = pattern(300, 6), third = pattern(5000, 7);

    PlacementHint stale;
    REQUIRE(f.store->put(f.at("k").view(), first, {}, stale));
    REQUIRE(f.store->put(f.at("k").view(), second));
    // The old block is free again; another key takes blocks of its class.
    for (int i = 0; i < 8; ++i) REQUIRE(f.store->put(f.at("filler-" + std::to_string(i)), first));
    CHECK(f.read_after(stale, "k") == second);

    PlacementHint foreign;
    REQUIRE(other.store->put(other.at("k").view(), third, {}, foreign));
    CHECK(f.read_after(foreign, "k") == second);

    // A run of superblocks (an object larger than a quarter of one): a hint may name a block
    // inside it that is not its head.
    PlacementHint run;
    REQUIRE(f.store->put(f.at("run").view(), pattern(f.memory->core->sb_bytes() + 10, 9), {}, run));
    const uint64_t blocks = f.memory->core->block_count();
    const uint64_t upper_half = ~uint64_t(0xffffffff);
    for (const uint64_t bits : {uint64_t(0), ~uint64_t(0), uint64_t(1),                     // none; past the heap; no block
                                (uint64_t(1) << 32) | 1,                                    // block 0, 1 byte
                                (uint64_t(blocks) << 32) | 64,                              // the last block
                                (uint64_t(blocks + 1) << 32) | 64,                          // one past it
                                (stale.bits() & upper_half) | 0xffffffff,                   // a size past the block
                                (run.bits() & upper_half) | 0xffffffff,                     // past a run's end
                                (run.bits() & upper_half) + (uint64_t(1) << 32),            // inside a run
                                uint64_t(0xffffffff) << 32})                                // the largest index
        CHECK_MESSAGE(f.read_after(PlacementHint(bits), "k") == second, bits);
    CHECK_FALSE(f.read_after(stale, "absent").has_value());
}

TEST_CASE("put_and_notify: the notification says where the object went, where the hint fits the topic's slot") {
    PlacementFixture f("placed-ingest");
    TopicManager topics(*f.pool);
    TopicConfig roomy{1, 16};
    REQUIRE(topics.create("roomy", roomy).ok());
    auto producer = Producer::open(*f.pool, "roomy");
    REQUIRE(producer);
    Producer* producers[] = {&*producer};
    const auto image = pattern(2000, 8);
    REQUIRE(put_and_notify(*f.store, producers, f.at("img"), image));
    auto consumer = Consumer::open(*f.pool, "roomy", "");
    REQUIRE(consumer);
    REQUIRE(consumer->assign_all());
    REQUIRE(consumer->seek(SeekPolicy::Earliest()));
    MessageBatch batch;
    REQUIRE(consumer->poll(batch, 4, std::chrono::seconds(0)).value() == 1);
    const PlacementHint carried = PlacementHint::parse(batch[0].header(kHeaderPlacement));
    CHECK(detail::placement_block(carried) == f.block_of("img"));
    CHECK(detail::placement_size(carried) == image.size());
    CHECK(f.read_after(carried, "img") == image);

    // A key so long that its notification (the key, the URI "fabric://POOL/in/KEY", the
    // version header of 4 + 14 + 1..2 bytes and the time header of 4 + 13 + 19) fills a 512-byte
    // slot (480 bytes after the envelope) to within 28 bytes, less than the hint's 4 + 9 + 16:
    // the notification goes without the hint.
    TopicConfig tight{1, 16};
    tight.partition_stride = 512;
    REQUIRE(topics.create("tight", tight).ok());
    auto tight_producer = Producer::open(*f.pool, "tight");
    REQUIRE(tight_producer);
    Producer* tight_producers[] = {&*tight_producer};
    const std::string long_key((411 - f.cleanup.name().size()) / 2, 'k');
    auto sent = put_and_notify(*f.store, tight_producers, f.at(long_key), image);
    REQUIRE_MESSAGE(sent, sent.error().message);
    REQUIRE_MESSAGE(sent->all_notified(), sent->notified[0].error().message);
    auto tight_consumer = Consumer::open(*f.pool, "tight", "");
    REQUIRE(tight_consumer);
    REQUIRE(tight_consumer->assign_all());
    REQUIRE(tight_consumer->seek(SeekPolicy::Earliest()));
    REQUIRE(tight_consumer->poll(batch, 4, std::chrono::seconds(0)).value() == 1);
    CHECK(batch[0].header(kHeaderPlacement).empty());
    CHECK(batch[0].header(kHeaderVersion) == std::to_string(sent->version));
}

TEST_CASE("producer: fits says exactly which messages a send refuses as too large") {
    PlacementFixture f("placed-fits");
    TopicManager topics(*f.pool);
    TopicConfig tc{1, 16};
    tc.partition_stride = 128;  // 96 bytes of key, encoded headers and value
    REQUIRE(topics.create("t", tc).ok());
    auto producer = Producer::open(*f.pool, "t");
    REQUIRE(producer);
    const MessageHeader header{"h", "vv"};  // 4 + 1 + 2 = 7 encoded bytes
    for (const size_t value_bytes : {size_t(0), size_t(88), size_t(89), size_t(90), size_t(200)}) {
        const std::string value(value_bytes, 'v');
        const OutgoingMessage m{value, std::string_view("k"), std::span(&header, 1)};
        const bool fits = producer->fits(m);
        CHECK_MESSAGE(fits == (1 + 7 + value_bytes <= 96), value_bytes);
        auto sent = producer->send_to(0, m);
        CHECK_MESSAGE(sent.ok() == fits, value_bytes);
        if (!fits) CHECK(sent.code() == Errc::message_too_large);
    }
}
