// SPDX-License-Identifier: MIT
// `fabric-shm group describe|reset|skip|rm` and the fabric-shm-dump "groups" section, run as
// the built binaries on a pool this test creates.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>
#include <string>

#include "../mq/mq_test_util.h"
#include "fabric_shm/consumer_group.h"
#include "fabric_shm/topic.h"

using namespace fabric_shm;
using namespace mqtest;

namespace {

struct Run {
    int rc = 0;
    std::string out;
};

Run tool(const std::string& bin, const std::string& args) {
    Run r;
    r.rc = test::run_command(test::build_path(bin) + " " + args + " 2>/dev/null", &r.out);
    return r;
}

}  // namespace

TEST_CASE("group cli: describe shows members and owners; reset refuses live members; skip and rm work") {
    TestPool tp("grp-cli");
    const std::string name = tp.cleanup.name();
    TopicManager mgr(tp.pool);
    REQUIRE(mgr.create("t", config(2, 16)).ok());
    {
        auto pr = Producer::open(tp.pool, "t");
        REQUIRE(pr.ok());
        for (int i = 0; i < 6; ++i) REQUIRE(pr->send_to(0, OutgoingMessage{bytes("x"), {}, {}}).ok());
    }
    auto g = ConsumerGroup::open(tp.pool, "t", "g", 2);
    REQUIRE(g.ok());
    REQUIRE(g->join("worker-1").ok());

    Run d = tool("tools/fabric-shm", "group describe g --topic t --pool " + name + " --json");
    REQUIRE_MESSAGE(d.rc == 0, d.out);
    auto doc = nlohmann::json::parse(d.out);
    CHECK(doc["group"] == "g");
    REQUIRE(doc["members"].size() == 1);
    CHECK(doc["members"][0]["id"] == "worker-1");
    CHECK(doc["members"][0]["alive"] == true);
    CHECK(doc["partitions"][0]["owner"] == "worker-1");
    CHECK(doc["partitions"][0]["lag"] == 6);

    Run busy = tool("tools/fabric-shm", "group reset g --topic t --to latest --pool " + name + " --json");
    CHECK(busy.rc == 1);
    CHECK(busy.out.find("busy") != std::string::npos);
    CHECK(busy.out.find("worker-1") != std::string::npos);

    REQUIRE(g->leave("worker-1").ok());
    Run skip_wrong = tool("tools/fabric-shm", "group skip g --topic t --partition 0 --offset 3 --pool " + name);
    CHECK(skip_wrong.rc == 1);  // committed is 0, not 3
    Run skip = tool("tools/fabric-shm", "group skip g --topic t --partition 0 --offset 0 --pool " + name + " --json");
    REQUIRE_MESSAGE(skip.rc == 0, skip.out);
    CHECK(nlohmann::json::parse(skip.out)["group"]["partitions"][0]["committed"] == 1);
    Run reset = tool("tools/fabric-shm", "group reset g --topic t --to latest --pool " + name + " --json");
    REQUIRE_MESSAGE(reset.rc == 0, reset.out);
    CHECK(nlohmann::json::parse(reset.out)["group"]["partitions"][0]["committed"] == 6);
    CHECK(tool("tools/fabric-shm", "group reset g --topic t --to sideways --pool " + name).rc == 2);
    // A sign, a value past 2^64 or a negative partition is refused, not read as "the earliest
    // offset" or "every partition": the group stays where it was.
    for (const char* bad : {"--to -5", "--to 18446744073709551616", "--to latest --partition -5"}) {
        CAPTURE(bad);
        Run refused = tool("tools/fabric-shm", std::string("group reset g --topic t ") + bad + " --pool " + name);
        CHECK(refused.rc == 2);
    }
    auto after = describe_consumer_group(tp.pool, "t", "g");
    REQUIRE(after.ok());
    CHECK(after->partitions[0].committed == 6);

    Run dump = tool("tools/dump/fabric-shm-dump", "--pool " + name + " --json");
    REQUIRE_MESSAGE(dump.rc == 0, dump.out);
    auto dd = nlohmann::json::parse(dump.out);
    REQUIRE(dd.contains("groups"));
    REQUIRE(dd["groups"]["groups"].size() == 1);
    CHECK(dd["groups"]["groups"][0]["group"] == "g");
    CHECK(dd["groups"]["groups"][0]["partitions"][0]["lag"] == 0);

    REQUIRE(tool("tools/fabric-shm", "group rm g --topic t --pool " + name).rc == 0);
    CHECK(tool("tools/fabric-shm", "group describe g --topic t --pool " + name + " --json").rc == 1);
}
