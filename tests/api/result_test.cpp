// SPDX-License-Identifier: MIT
// Result<T>: checked access (value() on an error aborts with its message instead of reading a
// union member that is not there), value_or, and_then, transform, FABRIC_TRY_ASSIGN.
#include <doctest/doctest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <fcntl.h>

#include <csignal>
#include <cstdio>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "../support/test_support.h"
#include "fabric_shm/result.h"

using namespace fabric_shm;

namespace {

Result<int> parse_positive(int v) {
    if (v <= 0) return make_error(Errc::invalid_argument, "value " + std::to_string(v) + " must be > 0");
    return v;
}

Result<std::string> describe(int v) {
    FABRIC_TRY_ASSIGN(int checked, parse_positive(v));
    FABRIC_TRY_ASSIGN(auto doubled, parse_positive(checked * 2));
    return "value " + std::to_string(doubled);
}

Status assign_existing(int v, int& out) {
    FABRIC_TRY_ASSIGN(out, parse_positive(v));
    return {};
}

/// Runs fn in a child whose stderr goes to a file; returns (exit status, stderr text).
std::pair<int, std::string> run_in_child(const std::function<void()>& fn) {
    char path[] = "/tmp/fabric-result-test-XXXXXX";
    const int fd = mkstemp(path);
    REQUIRE(fd >= 0);
    const pid_t pid = test::fork_child([&] {
        dup2(fd, 2);
        std::signal(SIGABRT, SIG_DFL);  // the test framework's crash report is not what is checked
        fn();
        return 0;
    });
    const int status = test::wait_child(pid);
    std::string text;
    lseek(fd, 0, SEEK_SET);
    char buf[512];
    for (ssize_t n; (n = read(fd, buf, sizeof buf)) > 0;) text.append(buf, size_t(n));
    close(fd);
    unlink(path);
    return {status, text};
}

}  // namespace

TEST_CASE("result: value() of an error aborts and prints the error's code and message") {
    auto [status, err] = run_in_child([] {
        Result<int> r = parse_positive(-3);
        std::printf("%d\n", r.value());  // must never print
    });
    CHECK(status == 128 + SIGABRT);
    CHECK(err.find("value() of a failed Result: invalid_argument: value -3 must be > 0") != std::string::npos);
}

TEST_CASE("result: operator* and operator-> of an error abort as value() does") {
    auto [s1, e1] = run_in_child([] {
        Result<std::string> r = make_error(Errc::not_found, "object fabric://p/b/k not found");
        std::printf("%zu\n", (*r).size());
    });
    CHECK(s1 == 128 + SIGABRT);
    CHECK(e1.find("not_found: object fabric://p/b/k not found") != std::string::npos);
    auto [s2, e2] = run_in_child([] {
        Result<std::string> r = make_error(Errc::closed, "pool 'x' was closed");
        std::printf("%zu\n", r->size());
    });
    CHECK(s2 == 128 + SIGABRT);
    CHECK(e2.find("closed: pool 'x' was closed") != std::string::npos);
}

TEST_CASE("result: a failed Status checked with value() aborts; error() of a success aborts") {
    auto [s1, e1] = run_in_child([] {
        Status st = make_error(Errc::busy, "lock held by pid 42");
        st.value();
    });
    CHECK(s1 == 128 + SIGABRT);
    CHECK(e1.find("busy: lock held by pid 42") != std::string::npos);
    auto [s2, e2] = run_in_child([] {
        Result<int> r = 5;
        std::printf("%s\n", r.error().message.c_str());
    });
    CHECK(s2 == 128 + SIGABRT);
    CHECK(e2.find("error() of a successful Result") != std::string::npos);
}

TEST_CASE("result: value_or returns the value or the fallback") {
    CHECK(parse_positive(4).value_or(-1) == 4);
    CHECK(parse_positive(0).value_or(-1) == -1);
    Result<std::string> s = make_error(Errc::not_found, "x");
    CHECK(s.value_or("none") == "none");
    CHECK(Result<std::string>(std::string("yes")).value_or("none") == "yes");
}

TEST_CASE("result: and_then chains fallible steps and passes the first error through") {
    auto ok = parse_positive(3).and_then([](int v) { return parse_positive(v - 1); });
    REQUIRE(ok);
    CHECK(*ok == 2);
    int called = 0;
    auto failed = parse_positive(-1).and_then([&](int v) {
        ++called;
        return parse_positive(v);
    });
    CHECK(called == 0);
    CHECK(failed.code() == Errc::invalid_argument);
    CHECK(failed.error().message == "value -1 must be > 0");
    auto second = parse_positive(1).and_then([](int v) { return parse_positive(v - 1); });
    CHECK(second.error().message == "value 0 must be > 0");
    Status st;
    auto from_status = st.and_then([] { return parse_positive(7); });
    CHECK(*from_status == 7);
}

TEST_CASE("result: transform maps the value, keeps the error, and works with move-only values") {
    auto s = parse_positive(21).transform([](int v) { return std::to_string(v * 2); });
    static_assert(std::is_same_v<decltype(s), Result<std::string>>);
    CHECK(*s == "42");
    CHECK(parse_positive(-2).transform([](int v) { return v; }).code() == Errc::invalid_argument);
    Result<std::unique_ptr<int>> owned = std::make_unique<int>(9);
    auto moved = std::move(owned).transform([](std::unique_ptr<int> p) { return *p + 1; });
    CHECK(*moved == 10);
    int seen = 0;
    Result<void> done = parse_positive(5).transform([&](int v) { seen = v; });
    CHECK(done.ok());
    CHECK(seen == 5);
}

TEST_CASE("result: FABRIC_TRY_ASSIGN binds a value or returns the error") {
    auto ok = describe(5);
    REQUIRE(ok);
    CHECK(*ok == "value 10");
    auto bad = describe(-5);
    CHECK(bad.code() == Errc::invalid_argument);
    CHECK(bad.error().message == "value -5 must be > 0");
    int out = 0;
    CHECK(assign_existing(8, out).ok());
    CHECK(out == 8);
    CHECK(assign_existing(0, out).code() == Errc::invalid_argument);
    CHECK(out == 8);
}

TEST_CASE("result: value() of a temporary is a value, safe to iterate") {
    auto make = []() -> Result<std::vector<int>> { return std::vector<int>{1, 2, 3}; };
    int sum = 0;
    for (int v : make().value()) sum += v;  // would read a destroyed vector if value() && returned T&&
    for (int v : *make()) sum += v;
    CHECK(sum == 12);
}

TEST_CASE("result: closed has a stable name") { CHECK(errc_name(Errc::closed) == "closed"); }
