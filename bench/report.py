#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
# One table from one benchmark run: reads a results folder written by scripts/bench.sh
#   notify.json, pipeline.json, large.json   fabric-shm-bench --json reports (any may be absent)
#   peers.jsonl                              floor + peer JSON lines (scripts/bench-peers.sh)
#   peers-failed.txt                         peers that could not be built, installed or run
# and prints a markdown table (scenario x system: throughput, p50/p99, CPU per message, ratio
# to fabric-shm, ratio to the floor) on stdout. With --plots it also writes gnuplot data and
# scripts and, when gnuplot is installed, PNGs: throughput bars and latency CDFs.
#   bench/report.py RESULTS_DIR [--plots]
import json
import os
import platform
import shutil
import subprocess
import sys


def load_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def ns(v):
    if v is None:
        return "-"
    v = float(v)
    if v >= 1e6:
        return f"{v / 1e6:.2f} ms"
    if v >= 1e3:
        return f"{v / 1e3:.1f} µs"
    return f"{v:.0f} ns"


def rate(v, unit="/s"):
    if not v:
        return "-"
    if unit == "B/s":
        return f"{v / 1e9:.2f} GB/s"
    if v >= 1e6:
        return f"{v / 1e6:.2f} M/s"
    if v >= 1e3:
        return f"{v / 1e3:.1f} k/s"
    return f"{v:.0f}/s"


def ratio(a, b):
    if not a or not b:
        return "-"
    r = a / b
    return f"{r:.3g}×"


def size_text(b):
    if b >= 1 << 20 and b % (1 << 20) == 0:
        return f"{b >> 20} MiB"
    if b >= 1024 and b % 1024 == 0:
        return f"{b >> 10} KiB"
    return f"{b} B"


class Row:
    def __init__(self, **kw):
        self.scenario = kw.get("scenario")  # "notify", "pipeline", "large"
        self.size = kw.get("size")
        self.system = kw.get("system")
        self.variant = kw.get("variant")
        self.mode = kw.get("mode")
        self.thr = kw.get("thr")  # items/s (large: bytes/s)
        self.unit = kw.get("unit", "/s")
        self.p50 = kw.get("p50")
        self.p99 = kw.get("p99")
        self.cpu = kw.get("cpu")  # ns per message
        self.latency_note = kw.get("latency_note", "")
        self.cdf = kw.get("cdf")  # [[percentile, ns], ...]


def fabric_rows(rep):
    """Pairs each closed-loop result with the open-loop result of the same configuration."""
    rows = []
    if not rep:
        return rows
    scen = rep["scenario"]
    res = rep.get("results", [])
    closed = [m for m in res if m.get("kind") == "closed-loop"]
    for c in closed:
        base = c["name"][: -len(" closed-loop")]
        o = next((m for m in res if m.get("kind") == "open-loop" and m["name"].startswith(base + " open-loop")), None)
        lat = (o or {}).get("latency_ns", {})
        variant = c.get("config", "") or c.get("mode")
        runs = c.get("closed_loop_runs_ops_s") or []
        if len(runs) > 1:
            variant += f" (median of {len(runs)} runs, {min(runs) / 1e3:.0f}–{max(runs) / 1e3:.0f} k/s)"
        if o:
            variant += f" (latency: open loop @{o['offered_rate'] / 1e3:.0f} k/s)" if o["offered_rate"] >= 1e3 else \
                f" (latency: open loop @{o['offered_rate']:.0f}/s)"
        rows.append(Row(scenario=scen, size=c.get("size"), system="fabric-shm", variant=variant, mode=c.get("mode"),
                        thr=c.get("throughput_ops_s"), p50=lat.get("p50"), p99=lat.get("p99"),
                        cpu=c.get("cpu_ns_per_op"), cdf=(o or {}).get("latency_cdf_ns"),
                        latency_note="open loop"))
    for m in res:
        if m.get("kind") == "light-load":
            lat = m.get("latency_ns", {})
            rows.append(Row(scenario=scen, size=m.get("size"), system="fabric-shm",
                            variant=(m.get("config") or m.get("mode")) + f" light load @{m['offered_rate']:.0f}/s",
                            mode=m.get("mode"), thr=None, p50=lat.get("p50"), p99=lat.get("p99"),
                            cpu=m.get("cpu_ns_per_op"), cdf=m.get("latency_cdf_ns"), latency_note="light"))
        if m.get("kind") == "ping-pong":
            lat = m.get("latency_ns", {})
            rows.append(Row(scenario=scen, size=m.get("size"), system="fabric-shm",
                            variant="ping-pong, one-way = RTT/2, spin_ns 0", mode="parked",
                            thr=m.get("throughput_ops_s"), p50=lat.get("p50"), p99=lat.get("p99"),
                            cpu=m.get("cpu_ns_per_op"), cdf=m.get("latency_cdf_ns")))
    return rows


def large_rows(rep):
    rows = []
    if not rep:
        return rows
    for m in rep.get("results", []):
        name = m["name"]
        size = m.get("object_bytes") or m.get("bytes_per_op")
        variant = name.rsplit(" ", 1)[0]
        lat = m.get("latency_ns", {})
        rows.append(Row(scenario="large", size=size, system="fabric-shm" if "(floor)" not in name else "floor",
                        variant=variant, mode="cpu", thr=(m.get("bandwidth_gb_s") or 0) * 1e9, unit="B/s",
                        p50=lat.get("p50"), p99=lat.get("p99"), cpu=m.get("cpu_ns_per_op")))
    return rows


def peer_rows(lines):
    rows = []
    for r in lines:
        if r.get("system") == "floor":
            continue
        cdf = [[p, r.get(k)] for p, k in ((50, "p50_ns"), (90, "p90_ns"), (99, "p99_ns"), (99.9, "p999_ns"),
                                           (100, "max_ns")) if r.get(k)]
        rows.append(Row(scenario=r["scenario"], size=r.get("size"), system=r["system"], variant=r.get("variant", ""),
                        mode=r.get("mode"), thr=r.get("throughput"), p50=r.get("p50_ns"), p99=r.get("p99_ns"),
                        cpu=r.get("client_cpu_ns_per_msg"), cdf=cdf or None))
    return rows


def main():
    if len(sys.argv) < 2:
        print(__doc__ or "usage: report.py RESULTS_DIR [--plots]", file=sys.stderr)
        return 2
    d = sys.argv[1]
    plots = "--plots" in sys.argv[2:]
    reps = {s: load_json(os.path.join(d, s + ".json")) for s in ("notify", "pipeline", "large")}
    lines = []
    pj = os.path.join(d, "peers.jsonl")
    if os.path.exists(pj):
        lines = [json.loads(l) for l in open(pj) if l.strip().startswith("{")]
    failed = []
    pf = os.path.join(d, "peers-failed.txt")
    if os.path.exists(pf):
        failed = [l.strip() for l in open(pf) if l.strip()]
    floor = {}
    for r in lines:
        if r.get("system") == "floor":
            floor.setdefault((r["scenario"], r.get("size")), r)
            floor.setdefault(r["scenario"], r)
            floor.setdefault((r["scenario"], r.get("variant")), r)

    rows = fabric_rows(reps["notify"]) + fabric_rows(reps["pipeline"]) + peer_rows(lines)
    big = large_rows(reps["large"])

    # Machine and load, as each report saw it at its end.
    m = next((r["machine"] for r in reps.values() if r), None)
    model = m.get("cpu_model") if m else next(
        (l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    nproc = m.get("nproc") if m else os.cpu_count()
    kernel = m.get("kernel") if m else platform.release()
    print(f"Machine: {nproc} vCPUs, {model}, {kernel}.")
    bt = os.path.join(d, "build.txt")
    if os.path.exists(bt):
        print(f"Build: {open(bt).read().strip()}.")
    loads = [f"{s} {r['machine'].get('loadavg', '?').split()[0:3]}" for s, r in reps.items() if r]
    if loads:
        print("Load average (1/5/15 min) at the end of each fabric-shm-bench scenario: " +
              "; ".join(l.replace("'", "").replace(",", "") for l in loads) + ".")
    pinned = {s: r["config"]["pinned_cpus"] for s, r in reps.items() if r and r.get("config", {}).get("pinned_cpus")}
    if pinned:
        print("Processes pinned (fabric-shm-bench --pin): each run's processes pinned to these CPUs in turn, one each "
              "while there were enough: " +
              "; ".join(f"{s} {v}" for s, v in pinned.items()) + ".")
    else:
        print("fabric-shm-bench's processes not pinned: the scheduler placed them, and on 2 vCPUs the two spinning "
              "sides of a two-process run can share one (CPU/msg's \"CPUs\" figure then reads about 1). "
              "scripts/bench.sh --pin pins them and the floor and peers.")
    if os.path.exists(os.path.join(d, "peers-load.txt")):
        print("Load average around the floor/peer run: " + 
              "; ".join(l.strip() for l in open(os.path.join(d, "peers-load.txt")) if l.strip()) + ".")
    print()

    def floor_lat(r):
        # A light-load row against the same light load over a bare ring (spin_light, one release
        # store per message); every other spin row against the hot spin ping-pong.
        if r.scenario == "notify" and r.mode == "spin" and r.latency_note == "light" and ("spin_light", "store") in floor:
            return floor[("spin_light", "store")].get("p50_ns")
        f = floor.get("spin_pingpong" if r.mode == "spin" else "futex_pingpong")
        return f.get("p50_ns") if f else None

    def floor_thr(r):
        stream = floor.get("spin_stream", {}).get("throughput")
        if r.scenario == "notify":
            return stream
        if r.scenario == "pipeline" and r.size:
            # Physical limit per object: the hand-off (spin_stream), one copy in, one CRC pass;
            # copy and CRC run on different cores.
            cands = [stream] if stream else []
            for s in ("memcpy", "crc32"):
                f = floor.get((s, r.size))
                if f and f.get("throughput"):
                    cands.append(f["throughput"] / r.size)
            return min(cands) if cands else None
        return None

    best = {}
    for r in rows:
        if r.system != "fabric-shm" or "ping-pong" in r.variant:
            continue
        for k in ((r.scenario, r.size, r.mode), (r.scenario, r.size, "*")):
            b = best.setdefault(k, {"thr": 0, "p50": None})
            b["thr"] = max(b["thr"], r.thr or 0)
            if r.p50 and (b["p50"] is None or r.p50 < b["p50"]):
                b["p50"] = r.p50

    print("| scenario | system | variant | mode | throughput | p50 | p99 | CPU/msg | fabric-shm throughput ÷ this "
          "| p50 ÷ fabric-shm p50 | throughput ÷ floor | p50 ÷ floor p50 |")
    print("|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    order = {"fabric-shm": 0}
    rows.sort(key=lambda r: (r.scenario, r.size or 0, order.get(r.system, 1), r.system, r.mode or "", r.variant))
    for r in rows:
        b = best.get((r.scenario, r.size, r.mode)) or best.get((r.scenario, r.size, "*"))
        is_f = r.system == "fabric-shm"
        fthr = ratio(b["thr"], r.thr) if b and not is_f else "-"
        fp50 = ratio(r.p50, b["p50"]) if b and not is_f else "-"
        fl = floor_thr(r)
        cpu = ns(r.cpu)
        if is_f and r.cpu and r.thr and r.latency_note == "open loop":
            # CPU time over wall time of the closed loop, every process of the run together:
            # for a two-process run, about 1 when both took turns on one CPU, up to 2 when each
            # had its own.
            cpu += f" ({r.cpu * r.thr / 1e9:.1f} CPUs)"
        print(f"| {r.scenario} {size_text(r.size or 0)} | {r.system} | {r.variant} | {r.mode} | {rate(r.thr)} | "
              f"{ns(r.p50)} | {ns(r.p99)} | {cpu} | {fthr} | {fp50} | {ratio(r.thr, fl)} | "
              f"{ratio(r.p50, floor_lat(r))} |")
    for f in failed:
        sc = "pipeline 1 KiB" if "redis" in f or "iceoryx" in f else "notify 64 B"
        print(f"| {sc} | {f.split(' ')[0].replace('peer_', '')} | not measured: {f} | | | | | | | | | |")

    if big:
        print("\nLarge objects (one process; ratio to memcpy of the same size in the same run):\n")
        print("| size | path | bandwidth (all ops) | p50 per op | p99 | ÷ memcpy (all ops) | ÷ memcpy (p50) |")
        print("|---:|---|---:|---:|---:|---:|---:|")
        memcpy = {r.size: r for r in big if r.variant.startswith("memcpy")}
        for r in big:
            mc = memcpy.get(r.size)
            print(f"| {size_text(r.size)} | {r.variant} | {rate(r.thr, 'B/s')} | {ns(r.p50)} | {ns(r.p99)} | "
                  f"{ratio(r.thr, mc.thr if mc else None)} | {ratio(mc.p50 if mc else None, r.p50)} |")

    costs = [m for m in (reps["pipeline"] or {}).get("results", []) if m.get("kind") == "cost"]
    if costs:
        print("\nPipeline per-step cost (one process, no hand-off; best of 15 rounds x 4096 objects):\n")
        print("| step | ns per object |")
        print("|---|---:|")
        for m in costs:
            print(f"| {m['name']} | {m['ns_per_op']:.0f} |")
        # The WorkerLoop and batched steps (in_sum false) redo some steps: the library's loop, batches of 16.
        print(f"| sum of the hand-written steps | {sum(m['ns_per_op'] for m in costs if m.get('in_sum', True)):.0f} |")

    print("\nFloor (same run):\n")
    print("| floor | size | throughput | p50 | p99 |")
    print("|---|---:|---:|---:|---:|")
    for r in lines:
        if r.get("system") != "floor":
            continue
        if r["scenario"] in ("memcpy", "crc32", "copy_fold") and r.get("size") not in (1024, 65536, 1048576):
            continue
        one_way = " (one-way = RTT/2)" if r.get("latency") == "one_way=rtt/2" else ""
        if r["scenario"] == "copy_fold":
            one_way = " (copy + the CRC's inner fold, no reduction: what a fused copy + CRC can reach)"
        if r["scenario"] in ("first_touch", "second_touch"):
            what = {"read_written": "a read of a page written before, fault-around on",
                    "write_written": "a write to a page written before",
                    "populated_read": "a read through a MAP_POPULATE mapping",
                    "write_fresh": "a write to a page only allocated (a pool just created)",
                    "read": "the next line of a page already touched"}.get(r.get("variant"), r.get("variant"))
            one_way = (f" ({what}; per page of a fresh mapping of a tmpfs file, "
                       f"{r.get('page_faults', 0)} faults for {r.get('count', 0)} pages)")
        if r["scenario"] == "spsc_pipeline":
            slots = r.get("ring_slots")
            one_way = f" (pipeline job over a bare SPSC ring{f' of {slots} slots' if slots else ''}, closed loop"
            if r.get("client_cpu_ns_per_msg") and r.get("throughput"):
                # Both sides spin: about 2 when each had its own CPU; about 1 when they took turns
                # on one, where the ring fills and drains in whole time slices without a hand-off.
                one_way += f", {r['client_cpu_ns_per_msg'] * r['throughput'] / 1e9:.1f} CPUs"
            one_way += ")"
        if r["scenario"] == "store_pipeline":
            work = (r.get("producer_work_ns", 0), r.get("consumer_work_ns", 0))
            one_way = " (pipeline job in the store's shape: index word, block, key, result object"
            if any(work):
                one_way += f"; plus the library's step costs as private work, producer {work[0]} ns, worker {work[1]} ns"
            else:
                one_way += "; bare"
            if r.get("client_cpu_ns_per_msg") and r.get("throughput"):
                one_way += f", {r['client_cpu_ns_per_msg'] * r['throughput'] / 1e9:.1f} CPUs"
            one_way += ")"
        if r["scenario"] == "spin_light":
            one_way = f" {r.get('variant')} (one-way at a light {r.get('offered_rate', 0):.0f}/s)"
        if r["scenario"] == "claim_stream":
            one_way = f" (topic slot protocol, closed loop, producer work {r.get('producer_work_ns', 0)} ns)"
        lat = r.get("latency") != "none"
        print(f"| {r['scenario']}{one_way} | {size_text(r.get('size', 0))} | "
              f"{rate(r['throughput'], 'B/s' if r.get('unit') == 'B/s' else '/s')} | "
              f"{ns(r.get('p50_ns')) if lat else '-'} | {ns(r.get('p99_ns')) if lat else '-'} |")
    print("\nfabric-shm rows: throughput = closed-loop max (results or messages completed per second); p50/p99 = "
          "open loop at the rate shown, from the scheduled send time (coordinated omission corrected). Peer rows: "
          "window 1 = unloaded latency, window 1000 (iceoryx 256) = closed-loop throughput, its latency includes "
          "queueing. CPU/msg = getrusage of the client processes (servers such as redis-server not included). "
          "Floor: throughput ÷ spin_stream (notify) or ÷ min(spin_stream, memcpy, crc32 rate for the size) "
          "(pipeline); p50 ÷ spin ping-pong one-way (spin rows), ÷ spin_light store (spin light-load rows: "
          "the same light load over a bare ring, one release store per message; spin_light claim_publish adds "
          "the claim and publish CASes a crash-safe ring needs) or ÷ futex ping-pong one-way (parked rows). "
          "Floor spsc_pipeline: the pipeline job (put 1 KiB with its CRC-32, consumer CRC check, 4-byte result) "
          "between two spinning processes over a bare SPSC ring (its slots and CPUs in the row): no store, no "
          "topic, no crash safety (bench/floor/floor_spsc_pipeline.cpp); the physical floor of pipeline 1 KiB "
          "spin-1w. "
          "Floor store_pipeline: the same job in the store's shape (the key's index word names a block; header, "
          "payload and key in the block; the notification carries key and block; the 4-byte result stored as an "
          "object of the worker's own) with no checks, leases, owners or repair (bench/floor/floor_store_pipeline.cpp); "
          "the row with work adds, on each side, the library's one-process cost of its steps (this run's cost "
          "rows, less the 1 KiB CRC the floor does itself; the producer's copy stays counted twice) as work that "
          "shares no cache line: the rate the "
          "library would reach if its own work shared nothing between the cores. "
          "Floor claim_stream: notify's closed loop over a bare ring with the topic's slots and the steps of its "
          "send and poll (claim CAS, tail CAS, envelope, publish CAS; the consumer's seqlock read); with "
          "producer work 80 ns the producer first spends about what the bench's clock read and the library's "
          "send cost in one process, and a consumer that keeps up then waits on the line the producer writes "
          "next (bench/floor/floor_spin_pingpong.cpp).")

    if plots:
        write_plots(d, rows)
    return 0


def write_plots(d, rows):
    pdir = os.path.join(d, "plots")
    os.makedirs(pdir, exist_ok=True)
    scripts = []
    for scen, size in (("notify", 64), ("pipeline", 1024)):
        sel = [r for r in rows if r.scenario == scen and r.size == size and r.thr]
        if not sel:
            continue
        dat = os.path.join(pdir, f"throughput-{scen}.dat")
        with open(dat, "w") as f:
            for i, r in enumerate(sel):
                label = f"{r.system} {r.variant.split(' (')[0]} {r.mode}".replace('"', "'")
                f.write(f'{i} "{label}" {r.thr}\n')
        png = os.path.join(pdir, f"throughput-{scen}.png")
        scripts.append(f"""reset
set terminal pngcairo size 1400,700 noenhanced
set output '{png}'
set title '{scen} {size_text(size)}: throughput (higher is better), one run'
set style fill solid 0.7
set boxwidth 0.7
set logscale y
set ylabel 'messages or objects / s'
set xtics rotate by -35 left font ',9'
set bmargin 14
set grid ytics
plot '{dat}' using 1:3:xtic(2) with boxes notitle
""")
        cdfs = [r for r in sel if r.cdf]
        if cdfs:
            blocks = []
            cdat = os.path.join(pdir, f"latency-{scen}.dat")
            with open(cdat, "w") as f:
                for r in cdfs:
                    f.write(f"# {r.system} {r.variant} {r.mode}\n")
                    for p, v in r.cdf:
                        f.write(f"{max(v, 1)} {p}\n")
                    f.write("\n\n")
                    blocks.append(f"{r.system} {r.variant.split(' (')[0]} {r.mode}".replace("'", ""))
            plot = ", ".join(f"'{cdat}' index {i} using 1:2 with linespoints title '{t}'" for i, t in enumerate(blocks))
            png = os.path.join(pdir, f"latency-{scen}.png")
            scripts.append(f"""reset
set terminal pngcairo size 1400,700 noenhanced
set output '{png}'
set title '{scen} {size_text(size)}: latency CDF (fabric-shm: open loop; peers: p50/p90/p99/p99.9/max)'
set logscale x
set xlabel 'latency, ns'
set ylabel 'percentile'
set yrange [0:100]
set key outside right font ',9'
set grid
plot {plot}
""")
    gp = os.path.join(pdir, "plots.gp")
    with open(gp, "w") as f:
        f.write("\n".join(scripts))
    if shutil.which("gnuplot"):
        r = subprocess.run(["gnuplot", gp], capture_output=True, text=True)
        if r.returncode != 0:
            print(f"report: gnuplot failed: {r.stderr.strip()}", file=sys.stderr)
    else:
        print(f"report: gnuplot not installed: plot scripts in {gp}, no PNGs", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
