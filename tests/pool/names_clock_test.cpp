// SPDX-License-Identifier: MIT
#include <doctest/doctest.h>
#include <signal.h>

#include "fabric_shm/clock.h"
#include "fabric_shm/names.h"

using namespace fabric_shm;

TEST_CASE("names: accepts the documented alphabet up to 64 characters") {
    CHECK(validate_name("pool", "default"));
    CHECK(validate_name("pool", "a.b_c-D9"));
    CHECK(validate_name("pool", std::string(64, 'x')));
}

TEST_CASE("names: rejects empty, long, leading dot or dash, slash, dot-dot and NUL with the rule in the message") {
    for (std::string bad : {std::string(""), std::string(65, 'x'), std::string(".hidden"), std::string("-x"),
                            std::string("a/b"), std::string(".."), std::string("a\0b", 3), std::string("sp ace")}) {
        auto s = validate_name("pool", bad);
        CHECK_FALSE(s);
        CHECK(s.code() == Errc::invalid_name);
        CHECK(s.error().message.find("rule") != std::string::npos);
    }
}

TEST_CASE("durations: parse every documented unit and reject unknown ones") {
    CHECK(parse_duration_ns("500ms").value() == 500 * kNsPerMs);
    CHECK(parse_duration_ns("30s").value() == 30 * kNsPerSec);
    CHECK(parse_duration_ns("5m").value() == 300 * kNsPerSec);
    CHECK(parse_duration_ns("1h").value() == 3600 * kNsPerSec);
    CHECK(parse_duration_ns("10us").value() == 10 * kNsPerUs);
    CHECK(parse_duration_ns("7").value() == 7 * kNsPerSec);
    CHECK(parse_duration_ns("1.5s").value() == 1500 * kNsPerMs);
    for (const char* bad : {"", "s", "5x", "-1s", "1e400h", "abc"}) {
        auto r = parse_duration_ns(bad);
        CHECK_FALSE(r);
        CHECK(r.code() == Errc::invalid_argument);
    }
}

TEST_CASE("sizes: parse binary multiples and reject garbage") {
    CHECK(parse_size_bytes("4096").value() == 4096);
    CHECK(parse_size_bytes("64M").value() == 64ull << 20);
    CHECK(parse_size_bytes("1G").value() == 1ull << 30);
    CHECK(parse_size_bytes("512KiB").value() == 512ull << 10);
    CHECK_FALSE(parse_size_bytes("12Q"));
    CHECK_FALSE(parse_size_bytes("M"));
}

TEST_CASE("clock: monotonic time never goes back and wall conversion is near now") {
    const uint64_t a = mono_now_ns();
    const uint64_t b = mono_now_ns();
    CHECK(b >= a);
    const uint64_t wall = mono_to_wall_ns(mono_now_ns() + 10 * kNsPerSec);
    CHECK(wall > wall_now_ns() + 9 * kNsPerSec);
    CHECK(format_duration_ns(1500 * kNsPerMs) == "1.5s");
    CHECK(format_duration_ns(3725 * kNsPerSec) == "1h2m");
}
