// SPDX-License-Identifier: MIT
// Peer: Redis 7 (hiredis, TCP 127.0.0.1), the same two jobs as fabric-shm:
//  - pipeline (object 1 KiB): producer process: SET obj:<n> <1 KiB> + XADD <stream> * k obj:<n>
//    m <stamp>; worker process: XREADGROUP GROUP g w COUNT c BLOCK 1000 STREAMS <stream> >,
//    GET the object, CRC-32 it (ISA-L crc32_gzip_refl: the standard gzip/zlib CRC-32, the one
//    fabric-shm uses), SET res:<n> <4-byte crc>, XACK. Latency = producer's stamp taken
//    before the SET -> worker's XACK reply received (end to end, per object).
//    Variants: unpipelined (one command per round trip) and pipelined batch 100 (producer
//    sends 100 SET+XADD pairs per write; worker reads COUNT 100, pipelines 100 GETs, then
//    100 SETs + one XACK of 100 ids).
//  - notify (64 B): XADD <stream> * m <64 B> -> XREADGROUP (+ XACK). Latency = producer's
//    stamp before XADD -> XREADGROUP reply received.
// Runs with window 1 (one object in flight: unloaded latency) and window 1000 (throughput).
// NEEDS A DEDICATED SERVER: it FLUSHDBs database 0 before each run. Server from env
// PEER_REDIS_HOST (default 127.0.0.1) and PEER_REDIS_PORT (required).
// Usage: peer_redis [--seconds S] [--window W (throughput runs)] [--only NAME]
#include "../floor/common.h"

#include <hiredis/hiredis.h>
#include <isa-l/crc.h>

#include <vector>

using namespace floorbench;

namespace {

std::string g_host = "127.0.0.1";
int g_port = 0;
constexpr int kBatch = 100;

redisContext* connect_or_die() {
    redisContext* c = redisConnect(g_host.c_str(), g_port);
    if (!c || c->err) {
        std::fprintf(stderr, "redis connect %s:%d: %s\n", g_host.c_str(), g_port, c ? c->errstr : "alloc");
        std::exit(2);
    }
    return c;
}
redisReply* cmd_or_die(redisContext* c, redisReply* r) {
    if (!r) { std::fprintf(stderr, "redis: %s\n", c->errstr); _exit(2); }
    if (r->type == REDIS_REPLY_ERROR) { std::fprintf(stderr, "redis error: %s\n", r->str); _exit(2); }
    return r;
}
void get_reply_or_die(redisContext* c) {
    void* r = nullptr;
    if (redisGetReply(c, &r) != REDIS_OK) { std::fprintf(stderr, "redis: %s\n", c->errstr); _exit(2); }
    cmd_or_die(c, static_cast<redisReply*>(r));
    freeReplyObject(r);
}

struct Entry { std::string id; std::string key; Msg64 m; };

/// Parses an XREADGROUP reply: [[stream, [[id, [f, v, ...]], ...]]]. nil (timeout) -> empty.
void parse_entries(redisReply* r, std::vector<Entry>& out) {
    out.clear();
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 1) return;
    redisReply* s = r->element[0];
    if (s->type != REDIS_REPLY_ARRAY || s->elements < 2) return;
    redisReply* list = s->element[1];
    for (size_t i = 0; i < list->elements; ++i) {
        redisReply* e = list->element[i];
        Entry en{};
        en.id.assign(e->element[0]->str, e->element[0]->len);
        redisReply* f = e->element[1];
        for (size_t j = 0; j + 1 < f->elements; j += 2) {
            const std::string name(f->element[j]->str, f->element[j]->len);
            redisReply* v = f->element[j + 1];
            if (name == "k") en.key.assign(v->str, v->len);
            else if (name == "m" && v->len == sizeof(Msg64)) std::memcpy(&en.m, v->str, sizeof(Msg64));
        }
        out.push_back(std::move(en));
    }
}

struct RunCfg {
    const char* scenario;  // "pipeline" or "notify"
    bool pipelined;
    uint64_t window;
    uint64_t object_size;
};

int run(const Opts& o, const RunCfg& cfg) {
    const std::string stream = "fsb:stream";
    {
        redisContext* c = connect_or_die();
        freeReplyObject(cmd_or_die(c, static_cast<redisReply*>(redisCommand(c, "FLUSHDB"))));
        freeReplyObject(cmd_or_die(c, static_cast<redisReply*>(
            redisCommand(c, "XGROUP CREATE %s g 0 MKSTREAM", stream.c_str()))));
        redisFree(c);
    }
    const bool pipeline = std::string(cfg.scenario) == "pipeline";
    const int batch = cfg.pipelined ? kBatch : 1;
    std::string variant = std::string(cfg.pipelined ? "pipelined100" : "unpipelined") + "_window" +
                          std::to_string(cfg.window);
    auto* ctl = new (shared_page()) Ctl{};

    const pid_t child = fork_child([&]() -> int {
        pin(o.cpu_b);
        redisContext* c = connect_or_die();
        ctl_set_ready(ctl);
        const uint64_t cpu0 = cpu_ns_self();
        Meter meter;
        std::vector<Entry> entries;
        uint64_t n = 0, crc_xor = 0;
        for (;;) {
            redisReply* r = cmd_or_die(c, static_cast<redisReply*>(redisCommand(
                c, "XREADGROUP GROUP g w COUNT %d BLOCK 1000 STREAMS %s >", batch, stream.c_str())));
            parse_entries(r, entries);
            freeReplyObject(r);
            if (entries.empty()) continue;
            bool stop = false;
            if (pipeline) {
                // GET every object (pipelined when batching), CRC, SET results, XACK.
                std::vector<uint32_t> crcs(entries.size());
                for (auto& e : entries)
                    if (e.m.seq != kStopSeq) redisAppendCommand(c, "GET %b", e.key.data(), e.key.size());
                for (size_t i = 0; i < entries.size(); ++i) {
                    if (entries[i].m.seq == kStopSeq) continue;
                    void* rv = nullptr;
                    if (redisGetReply(c, &rv) != REDIS_OK) { std::fprintf(stderr, "GET: %s\n", c->errstr); return 2; }
                    auto* g = static_cast<redisReply*>(rv);
                    if (g->type != REDIS_REPLY_STRING || g->len != cfg.object_size) {
                        std::fprintf(stderr, "GET %s: unexpected reply\n", entries[i].key.c_str());
                        return 5;
                    }
                    crcs[i] = crc32_gzip_refl(0, reinterpret_cast<const unsigned char*>(g->str), g->len);
                    crc_xor ^= crcs[i];
                    freeReplyObject(g);
                }
                size_t pending = 0;
                for (size_t i = 0; i < entries.size(); ++i) {
                    if (entries[i].m.seq == kStopSeq) continue;
                    const std::string res = "res:" + entries[i].key.substr(4);
                    redisAppendCommand(c, "SET %b %b", res.data(), res.size(), &crcs[i], sizeof(uint32_t));
                    ++pending;
                }
                std::vector<const char*> argv{"XACK", stream.c_str(), "g"};
                std::vector<size_t> lens{4, stream.size(), 1};
                for (auto& e : entries) { argv.push_back(e.id.c_str()); lens.push_back(e.id.size()); }
                redisAppendCommandArgv(c, int(argv.size()), argv.data(), lens.data());
                ++pending;
                for (size_t i = 0; i < pending; ++i) get_reply_or_die(c);
            } else {
                std::vector<const char*> argv{"XACK", stream.c_str(), "g"};
                std::vector<size_t> lens{4, stream.size(), 1};
                for (auto& e : entries) { argv.push_back(e.id.c_str()); lens.push_back(e.id.size()); }
                // notify: the hand-off is complete when XREADGROUP returns; XACK is bookkeeping.
                const uint64_t t = now_ns();
                for (auto& e : entries) {
                    if (e.m.seq == kStopSeq) { stop = true; continue; }
                    meter.sample(ctl, e.m.ts_ns, t);
                    ++n;
                }
                freeReplyObject(cmd_or_die(c, static_cast<redisReply*>(
                    redisCommandArgv(c, int(argv.size()), argv.data(), lens.data()))));
                ctl_done(ctl, n);
                if (stop) break;
                continue;
            }
            const uint64_t t = now_ns();
            for (auto& e : entries) {
                if (e.m.seq == kStopSeq) { stop = true; continue; }
                meter.sample(ctl, e.m.ts_ns, t);
                ++n;
            }
            ctl_done(ctl, n);
            if (stop) break;
        }
        redisFree(c);
        const uint64_t cpu = cpu_ns_self() - cpu0;
        Json j;
        j.s("system", "redis").s("scenario", cfg.scenario).s("variant", variant).s("mode", "parked")
            .u("size", pipeline ? cfg.object_size : 64).u("count", meter.measured).d("seconds", meter.seconds())
            .d("throughput", meter.rate()).s("unit", pipeline ? "objects/s" : "msg/s").hist(meter.hist)
            .s("latency", pipeline ? "end_to_end_put_start_to_xack_reply" : "one_way_xadd_start_to_xreadgroup_reply")
            .u("window", cfg.window).u("batch", uint64_t(batch)).u("received", n).u("sent", ctl->total.load()).cpu(ctl, cpu, n);
        if (pipeline) j.s("crc", "crc32_gzip_refl(isa-l)");
        j.print();
        (void)crc_xor;
        return n == ctl->total.load() ? 0 : 4;
    });

    pin(o.cpu_a);
    redisContext* c = connect_or_die();
    ctl_wait_ready(ctl);
    std::string object(cfg.object_size, 'x');
    for (size_t i = 0; i < object.size(); ++i) object[i] = char('a' + i % 26);
    const uint64_t cpu0 = cpu_ns_self();
    Clock clk(o, ctl);
    uint64_t sent = 0;
    Msg64 m{};
    char key[32];
    for (bool over = false; !over;) {
        ctl_wait_window(ctl, sent + uint64_t(batch) - 1, cfg.window, false);
        for (int b = 0; b < batch; ++b) {
            m.seq = sent;
            m.ts_ns = now_ns();
            const int kl = std::snprintf(key, sizeof key, "obj:%llu", static_cast<unsigned long long>(sent));
            if (pipeline) {
                object[0] = char('a' + sent % 26);
                redisAppendCommand(c, "SET %b %b", key, size_t(kl), object.data(), object.size());
                redisAppendCommand(c, "XADD %s * k %b m %b", stream.c_str(), key, size_t(kl), &m, sizeof m);
            } else {
                redisAppendCommand(c, "XADD %s * m %b", stream.c_str(), &m, sizeof m);
            }
            ++sent;
            if (!cfg.pipelined) {  // unpipelined: wait for each reply before the next command
                get_reply_or_die(c);
                if (pipeline) get_reply_or_die(c);
            }
        }
        if (cfg.pipelined)
            for (int b = 0; b < batch * (pipeline ? 2 : 1); ++b) get_reply_or_die(c);
        over = clk.over(now_ns());
    }
    ctl->total.store(sent, std::memory_order_relaxed);
    ctl->producer_cpu_ns.store(cpu_ns_self() - cpu0, std::memory_order_relaxed);
    m.seq = kStopSeq;
    freeReplyObject(cmd_or_die(c, static_cast<redisReply*>(
        redisCommand(c, "XADD %s * k stop m %b", stream.c_str(), &m, sizeof m))));
    const int rc = wait_child(child);
    freeReplyObject(cmd_or_die(c, static_cast<redisReply*>(redisCommand(c, "FLUSHDB"))));
    redisFree(c);
    if (rc != 0) std::fprintf(stderr, "redis %s %s: worker exited with %d\n", cfg.scenario, variant.c_str(), rc);
    return rc;
}

}  // namespace

int main(int argc, char** argv) {
    const Opts o = parse_opts(argc, argv);
    if (const char* h = std::getenv("PEER_REDIS_HOST")) g_host = h;
    if (const char* p = std::getenv("PEER_REDIS_PORT")) g_port = std::atoi(p);
    if (g_port <= 0) {
        std::fprintf(stderr, "set PEER_REDIS_PORT to a dedicated redis-server (it is FLUSHDBed)\n");
        return 2;
    }
    const uint64_t w = o.window ? o.window : 1000;
    const uint64_t size = o.size ? o.size : 1024;
    int rc = 0;
    const RunCfg runs[] = {
        {"pipeline", false, 1, size}, {"pipeline", false, w, size}, {"pipeline", true, w, size},
        {"notify", false, 1, 64},     {"notify", false, w, 64},     {"notify", true, w, 64},
    };
    for (const RunCfg& r : runs) {
        const std::string name = std::string(r.scenario) + (r.pipelined ? "_pipelined" : "_unpipelined") +
                                 "_window" + std::to_string(r.window);
        if (wanted(o, name)) rc |= run(o, r);
    }
    return rc;
}
