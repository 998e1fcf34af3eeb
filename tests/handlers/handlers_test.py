#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""fabric-shm-worker --handler end to end: handlers in each helper language (Python, C, the
shell line adapter), a handler crashing mid-object, hanging, writing garbage, SIGKILL of the
worker with handlers in flight (no orphan left), SIGTERM drain, 1 MiB objects. Each case uses
its own pool and removes it. Barriers are files the handlers write, not sleeps.

usage: handlers_test.py BUILD_DIR SOURCE_DIR"""
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import unittest

BUILD, SOURCE = sys.argv[1], sys.argv[2]
WORKER = os.path.join(BUILD, "workers", "fabric-shm-worker")
PRODUCER = os.path.join(BUILD, "workers", "fabric-shm-producer")
CLI = os.path.join(BUILD, "tools", "fabric-shm")
C_HANDLER = os.path.join(BUILD, "examples", "upper_handler")
ENV = dict(os.environ, PYTHONPATH=os.path.join(SOURCE, "python"))
_counter = [0]


def wait_for(pred, timeout=20.0):
    end = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > end:
            return False
        time.sleep(0.01)
    return True


def stopped(pid):
    """Whether `pid` is stopped (SIGSTOP, as a pause point leaves it)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(") ")[1][0] == "T"
    except OSError:
        return False


def start_time(pid):
    """The start time of process `pid` (/proc/<pid>/stat field 22, clock ticks since boot), or
    None when there is none: with the pid, it names one process, never a later one given the
    same pid."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return int(f.read().rsplit(") ", 1)[1].split()[19])  # field 3 is the first after ") "
    except (OSError, IndexError, ValueError):
        return None


def kill_if_alive(pid, started):
    """SIGKILLs `pid` if it is still the process that started at `started` (start_time when its
    pid was learnt): a cleanup that runs after the process was reaped must not kill another
    process that got its pid on a busy host."""
    if started is None or start_time(pid) != started:
        return
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie of ours is not running
        with open("/proc/%d/stat" % pid) as f:
            return f.read().split(") ")[1][0] != "Z"
    except OSError:
        return False


# The protocol's framing for a raw handler (one written without the helper library): whole
# reads from stdin (end of input: exit), length-prefixed frames, whole writes to stdout.
RAW_FRAMING = """
def read_exact(n):
    b = b""
    while len(b) < n:
        c = os.read(0, n - len(b))
        if not c:
            sys.exit(0)
        b += c
    return b
def frame():
    (n,) = struct.unpack("<I", read_exact(4))
    return read_exact(n)
def write_all(b):
    v = memoryview(b)
    while v:
        v = v[os.write(1, v):]
"""


class HandlerCase(unittest.TestCase):
    def setUp(self):
        _counter[0] += 1
        self.pool = "t-handlers-%d-%d" % (os.getpid(), _counter[0])
        self.dir = tempfile.mkdtemp(prefix="fabric-handlers-")
        self.procs = []
        subprocess.run([CLI, "pool", "create", "--pool", self.pool, "--size", "64M"], check=True,
                       stdout=subprocess.DEVNULL, env=ENV)
        subprocess.run([CLI, "topic", "create", "t", "--pool", self.pool, "--partitions", "2"], check=True,
                       stdout=subprocess.DEVNULL, env=ENV)

    def tearDown(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        subprocess.run([CLI, "pool", "rm", "--pool", self.pool, "--force"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, env=ENV)
        subprocess.run(["rm", "-rf", self.dir])

    def script(self, name, body):
        path = os.path.join(self.dir, name)
        with open(path, "w") as f:
            f.write(body)
        return path

    def large_reply_handler(self, name, mib, pause_s=0.0):
        """A raw handler (no helper) that answers each request with a result of `mib` MiB,
        written in 1 MiB pieces `pause_s` apart (the handler itself stays small), then marks
        written-<request id> in the test's directory."""
        return self.script(name, """
import os, struct, sys, time
""" + RAW_FRAMING + """frame()  # the worker's hello
write_all(struct.pack("<IB4sHH", 9, ord("h"), b"FSHM", 1, 0))
BIG = %d << 20
piece = bytes(1 << 20)
while True:
    (rid,) = struct.unpack_from("<Q", frame(), 1)
    write_all(struct.pack("<IBQBI", 1 + 13 + BIG, ord("R"), rid, 0, BIG))
    for _ in range(BIG // len(piece)):
        write_all(piece)
        time.sleep(%r)
    open(%r + "/written-%%d" %% rid, "w").close()
""" % (mib, pause_s, self.dir))

    def put(self, objects):
        """objects: {name: bytes}; notified keyed by name."""
        src = os.path.join(self.dir, "in-%d" % len(os.listdir(self.dir)))
        os.mkdir(src)
        for name, data in objects.items():
            with open(os.path.join(src, name), "wb") as f:
                f.write(data)
        subprocess.run([PRODUCER, "--pool", self.pool, "--topic", "t", "--bucket", "in", "--no-create", src],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=ENV)

    def worker(self, handler, *args, idle="1s", env=None):
        cmd = [WORKER, "--pool", self.pool, "--no-create", "--topic", "t", "--group", "g", "--handler", handler,
               "--json", "--backoff", "10ms"] + list(args)
        if idle:
            cmd += ["--exit-when-idle", idle]
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env or ENV)
        self.procs.append(p)
        return p

    def finish(self, p, timeout=60):
        out, err = p.communicate(timeout=timeout)
        self.assertEqual(p.returncode, 0, err.decode())
        return json.loads(out), err.decode()

    def result(self, name):
        r = subprocess.run([CLI, "get", "--pool", self.pool, "fabric://%s/results/in/%s" % (self.pool, name)],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
        return r.stdout if r.returncode == 0 else None

    def dead_letters(self):
        r = subprocess.run([CLI, "dlq", "ls", "t", "--pool", self.pool, "--json"], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, env=ENV)
        if r.returncode != 0:
            return []
        d = json.loads(r.stdout)
        return d["dead_letters"] if isinstance(d, dict) else d

    # ---- handlers in each helper language ------------------------------------------------

    def check_upper(self, handler, n=40, **kw):
        objs = {"o%03d" % i: b"object %d" % i for i in range(n)}
        p = self.worker(handler, "--concurrency", "2", "--max-inflight", "8")
        self.put(objs)
        stats, err = self.finish(p)
        self.assertEqual(stats["processed"], n, err)
        for name, data in objs.items():
            self.assertEqual(self.result(name), data.upper(), name)

    def test_python_helper_handler(self):
        self.check_upper("python3 %s/examples/handlers/upper.py" % SOURCE)

    def test_c_helper_handler(self):
        self.check_upper(C_HANDLER)

    def test_shell_line_helper_handler(self):
        self.check_upper("sh %s/examples/handlers/upper.sh" % SOURCE)

    def test_the_most_handlers_a_worker_records_all_start_and_one_more_is_refused_naming_the_limit(self):
        objs = {"o%03d" % i: b"object %d" % i for i in range(64)}
        p = self.worker(C_HANDLER, "--concurrency", "32", "--max-inflight", "2")
        self.put(objs)
        stats, err = self.finish(p)
        self.assertEqual(stats["processed"], 64, err)
        for name, data in objs.items():
            self.assertEqual(self.result(name), data.upper(), name)
        r = subprocess.run([WORKER, "--pool", self.pool, "--no-create", "--topic", "t", "--group", "g", "--handler",
                            C_HANDLER, "--concurrency", "33"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           env=ENV, timeout=30)
        self.assertEqual(r.returncode, 2, r.stderr.decode())
        self.assertIn("--concurrency 33 is not within 1..32", r.stderr.decode())
        self.assertIn("records at most 32", r.stderr.decode())

    # ---- failures ------------------------------------------------------------------------

    def test_handler_crash_mid_object_is_retried_then_dead_lettered_nothing_lost_or_duplicated(self):
        h = self.script("crash.py", """
import os
from fabric_shm.handler import run
def handle(r):
    if r.data == b"poison":
        os._exit(7)
    with open(%r + "/" + r.uri.rsplit("/", 1)[1] + ".%%d" %% r.version, "ab") as f:
        f.write(b"x")  # one line per processing: a duplicate would show
    return r.data.upper()
run(handle)
""" % self.dir)
        objs = {"a%02d" % i: b"fine %d" % i for i in range(10)}
        objs["poison"] = b"poison"
        p = self.worker("python3 " + h, "--concurrency", "1", "--max-attempts", "2")
        self.put(objs)
        stats, err = self.finish(p)
        self.assertEqual(stats["processed"], 10, err)
        self.assertEqual(stats["dead_lettered"], 1, err)
        self.assertIn("exit status 7", err)
        dl = self.dead_letters()
        self.assertEqual(len(dl), 1, dl)
        self.assertIn("exit status 7", json.dumps(dl))
        for name, data in objs.items():
            if name != "poison":
                self.assertEqual(self.result(name), data.upper())
        self.assertIsNone(self.result("poison"))
        # Both crashes were counted in the pool (the worker's shard, folded into the totals at exit).
        self.assertEqual(self.dump()["counters"]["worker_handler_restarts"], 2)

    def dump(self):
        out = subprocess.run([os.path.join(BUILD, "tools", "dump", "fabric-shm-dump"), "--pool", self.pool, "--json"],
                             stdout=subprocess.PIPE, check=True, env=ENV)
        return json.loads(out.stdout)

    def test_a_handler_that_keeps_dying_is_restarted_with_backoff_and_the_dump_shows_it(self):
        p = self.worker("exit 3", "--concurrency", "1", idle=None)

        def restarts():
            return [pr.get("handler_restarts", 0) for pr in self.dump()["processes"] if pr["pid"] == p.pid]
        self.assertTrue(wait_for(lambda: restarts() and restarts()[0] >= 3), restarts())
        text = subprocess.run([os.path.join(BUILD, "tools", "dump", "fabric-shm-dump"), "--pool", self.pool],
                              stdout=subprocess.PIPE, text=True, check=True, env=ENV).stdout
        self.assertRegex(text, r"handler restarts .*\n  pid %d \(fabric-shm-work[^)]*\): \d+ handler restart" % p.pid)
        p.send_signal(signal.SIGTERM)
        stats, err = self.finish(p)
        # The backoff doubles while it keeps dying (50 ms, 100 ms, 200 ms, ...), and the log says so.
        self.assertIn("exit status 3", err)
        self.assertIn("restarting in 50.0ms (restart 1)", err)
        self.assertIn("restarting in 100.0ms (restart 2)", err)

    def test_handler_that_hangs_is_killed_with_its_group_after_the_timeout_and_restarted(self):
        h = self.script("hang.py", """
import os, time
from fabric_shm.handler import run
def handle(r):
    if r.data == b"hang":
        with open(%r + "/hung-pid", "w") as f:
            f.write(str(os.getpid()))
        time.sleep(3600)
    return r.data.upper()
run(handle)
""" % self.dir)
        # Its neighbours in flight at the same handler are charged one attempt by the kill and
        # then run one at a time: with 2 attempts they pass, the hung object is dead-lettered.
        p = self.worker("python3 " + h, "--concurrency", "1", "--max-attempts", "2", "--exec-timeout", "500ms")
        self.put({"hang": b"hang", "ok1": b"ok one", "ok2": b"ok two"})
        stats, err = self.finish(p)
        self.assertEqual(stats["processed"], 2, err)
        self.assertEqual(stats["dead_lettered"], 1, err)
        self.assertIn("timed out", err)
        self.assertIn("restarting", err)
        with open(os.path.join(self.dir, "hung-pid")) as f:
            pid = int(f.read())
        self.assertFalse(alive(pid), "the hung handler still runs")

    def test_garbage_on_stdout_is_a_protocol_error_handler_restarted_object_retried(self):
        h = self.script("garbage.py", """
import os, sys
from fabric_shm.handler import run
flag = %r + "/garbled"
def handle(r):
    if r.data == b"bad" and not os.path.exists(flag):
        open(flag, "w").close()
        os.write(3, b"this is not a frame\\n")  # the protocol's stdout, duplicated by run()
    return r.data.upper()
os.dup2(1, 3)
run(handle)
""" % self.dir)
        p = self.worker("python3 " + h, "--concurrency", "1", "--max-attempts", "3")
        self.put({"bad": b"bad", "good": b"good"})
        stats, err = self.finish(p)
        self.assertIn("protocol error", err)
        self.assertEqual(stats["dead_lettered"], 0, err)
        self.assertEqual(self.result("bad"), b"BAD")  # retried after the restart
        self.assertEqual(self.result("good"), b"GOOD")

    def answer_then_die(self, after_reply=b""):
        """The first handler process answers request "a", writes `after_reply` and SIGKILLs
        itself, while the worker stands paused (a pause point) handing out "b". Resumed, the
        worker writes "b" to the dead handler's stdin (EPIPE) before it has read "a"'s reply:
        that reply is in the pipe, complete, and must count. Only "b", which no handler ever
        read, is charged an attempt; "a" is processed once. Returns the worker's stats and log."""
        with open(os.path.join(self.dir, "after-reply"), "wb") as f:
            f.write(after_reply)
        h = self.script("answer_then_die.py", """
import os, signal, struct, sys, time
d = sys.argv[1]
""" + RAW_FRAMING + """def request():
    body = frame()
    rid, attempt = struct.unpack_from("<QI", body, 1)
    pos, fields = 1 + 8 + 4 + 4 + 8 + 8, []
    for width in ("<H", "<H", "<H", "<I"):  # URI, key, topic, object
        (n,) = struct.unpack_from(width, body, pos)
        pos += struct.calcsize(width)
        fields.append(body[pos:pos + n])
        pos += n
    return rid, attempt, fields[0].decode().rsplit("/", 1)[1], fields[3]
def answer(rid, name, attempt, data):
    with open(d + "/processed-" + name, "a") as f:
        f.write("%d\\n" % attempt)
    write_all(struct.pack("<IBQBI", 1 + 13 + len(data), ord("R"), rid, 0, len(data)) + data)
frame()  # the worker's hello
write_all(struct.pack("<IB4sHH", 9, ord("h"), b"FSHM", 1, 0))
try:
    os.close(os.open(d + "/first-handler", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    first = True
except FileExistsError:
    first = False
if first:
    rid, attempt, name, data = request()
    with open(d + "/got.tmp", "w") as f:
        f.write(str(os.getpid()))
    os.rename(d + "/got.tmp", d + "/got-" + name)
    end = time.monotonic() + 60
    while not os.path.exists(d + "/answer") and time.monotonic() < end:
        time.sleep(0.005)
    answer(rid, name, attempt, data.upper())
    with open(d + "/after-reply", "rb") as f:
        write_all(f.read())
    os.kill(os.getpid(), signal.SIGKILL)
while True:
    rid, attempt, name, data = request()
    answer(rid, name, attempt, data.upper())
""")
        env = dict(ENV, FABRIC_SHM_PAUSE_POINT="worker.acquire.handed_out:2")  # "b"'s hand-out
        p = self.worker("exec python3 %s %s" % (h, self.dir), "--concurrency", "1", "--max-inflight", "2",
                        env=env)
        self.put({"a": b"a"})
        got = os.path.join(self.dir, "got-a")
        self.assertTrue(wait_for(lambda: os.path.exists(got)), "the first handler never got request a")
        with open(got) as f:
            first_handler = int(f.read())
        self.addCleanup(kill_if_alive, first_handler, start_time(first_handler))
        self.put({"b": b"b"})
        self.assertTrue(wait_for(lambda: stopped(p.pid)), "the worker did not pause handing out b")
        open(os.path.join(self.dir, "answer"), "w").close()
        self.assertTrue(wait_for(lambda: not alive(first_handler)), "the first handler did not die")
        os.kill(p.pid, signal.SIGCONT)
        stats, err = self.finish(p)
        self.assertIn("killed by signal 9", err)
        self.assertEqual(self.result("a"), b"A")
        self.assertEqual(self.result("b"), b"B")
        self.assertEqual(stats["processed"], 2, err)
        self.assertEqual(stats["dead_lettered"], 0, err)

        def attempts(name):
            with open(os.path.join(self.dir, "processed-" + name)) as f:
                return f.read().split()
        # "a" was processed once, at its first attempt: its reply was taken, not thrown away
        # with the handler (which ran "a" again as attempt 2 and counted a failed attempt).
        self.assertEqual(attempts("a"), ["1"], err)
        self.assertEqual(attempts("b"), ["2"], err)
        self.assertEqual(stats["failed_attempts"], 1, err)
        return stats, err

    def test_a_reply_written_just_before_its_handler_died_is_taken_not_charged_as_a_failure(self):
        self.answer_then_die()

    def test_a_protocol_error_in_what_a_dead_handler_left_is_the_reason_its_requests_fail(self):
        # Garbage after "a"'s reply: "a" is still taken, and "b" fails with the protocol error
        # named, not only with the write that found the handler's stdin closed.
        stats, err = self.answer_then_die(b"this is not a frame\n")
        self.assertIn("closed its stdin", err)
        self.assertIn("then a protocol error in the output it left: ", err)

    def test_sigkill_of_the_worker_with_handlers_in_flight_leaves_no_orphan_and_every_result_once(self):
        h = self.script("slow.py", """
import os, time
from fabric_shm.handler import run
d = %r
def handle(r):
    name = r.uri.rsplit("/", 1)[1]
    if not os.path.exists(d + "/resume"):
        open(d + "/pid-%%d" %% os.getpid(), "w").close()
        while not os.path.exists(d + "/resume"):
            time.sleep(0.01)
    return r.data.upper()
run(handle)
""" % self.dir)
        objs = {"k%02d" % i: b"v %d" % i for i in range(12)}
        p = self.worker("python3 " + h, "--concurrency", "3", "--max-inflight", "4", "--session-timeout", "1s",
                        idle=None)
        self.put(objs)
        self.assertTrue(wait_for(lambda: len([f for f in os.listdir(self.dir) if f.startswith("pid-")]) == 3))
        pids = [int(f[4:]) for f in os.listdir(self.dir) if f.startswith("pid-")]
        os.kill(p.pid, signal.SIGKILL)
        p.wait()
        # A survivor takes the partitions over: evicting the dead member kills its handlers'
        # process groups (recorded in the pool), then it processes everything.
        open(os.path.join(self.dir, "resume-later"), "w").close()
        q = self.worker("python3 %s/examples/handlers/upper.py" % SOURCE, "--concurrency", "1",
                        "--session-timeout", "1s", idle="1500ms")
        self.assertTrue(wait_for(lambda: not any(alive(pid) for pid in pids)),
                        "handlers of the SIGKILLed worker still run")
        stats, err = self.finish(q)
        for name, data in objs.items():
            self.assertEqual(self.result(name), data.upper(), name)
        self.assertEqual(self.dead_letters(), [])

    def test_sigterm_drains_requests_in_flight_then_closes_the_handlers(self):
        h = self.script("gate.py", """
import os, time
from fabric_shm.handler import run
d = %r
def handle(r):
    open(d + "/started-" + r.uri.rsplit("/", 1)[1], "w").close()
    while not os.path.exists(d + "/go"):
        time.sleep(0.01)
    return r.data.upper()
run(handle)
""" % self.dir)
        p = self.worker("python3 " + h, "--concurrency", "1", "--max-inflight", "4", idle=None)
        self.put({"x": b"x", "y": b"y"})
        self.assertTrue(wait_for(lambda: any(f.startswith("started-") for f in os.listdir(self.dir))))
        p.send_signal(signal.SIGTERM)
        time.sleep(0.2)  # the worker drains: it must not exit while a request is in flight
        self.assertIsNone(p.poll())
        open(os.path.join(self.dir, "go"), "w").close()
        stats, err = self.finish(p)
        self.assertIn("draining", err)
        done = [n for n in ("x", "y") if self.result(n) is not None]
        self.assertGreaterEqual(len(done), 1)
        for n in done:
            self.assertEqual(self.result(n), n.upper().encode())

    def test_a_worker_ended_by_an_error_closes_its_handlers_then_kills_their_groups(self):
        # `pool rm --force` under a running worker: its loop fails (stale_generation) and it
        # exits 1, as before. Its two handlers each started a helper into their process group;
        # one is stuck in a request, the other idle at its read. The idle one must get its end
        # of input and exit by itself, the stuck one be killed after the grace, and neither
        # they nor their helpers outlive the worker. (Without the close, the pool's registry
        # killed both groups when the worker exited: no end of input, nothing in the log.)
        h = self.script("stuck.py", """
import os, subprocess, sys, time
from fabric_shm.handler import run
d, me = sys.argv[1], os.getpid()
helper = subprocess.Popen(["sleep", "3600"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
with open(d + "/helper-%d" % me, "w") as f:
    f.write(str(helper.pid))
def handle(r):
    open(d + "/stuck-%d" % me, "w").close()
    while True:
        time.sleep(3600)
open(d + "/up-%d" % me, "w").close()
run(handle)
open(d + "/eof-%d" % me, "w").close()  # its stdin closed: it ends by itself
""")

        def marked(prefix):
            return [int(f[len(prefix):]) for f in os.listdir(self.dir) if f.startswith(prefix)]
        p = self.worker("exec python3 %s %s" % (h, self.dir), "--concurrency", "2", idle=None)
        self.assertTrue(wait_for(lambda: len(marked("up-")) == 2), "the handlers did not start")
        handlers = marked("up-")
        helpers = []
        for pid in handlers:
            with open(os.path.join(self.dir, "helper-%d" % pid)) as f:
                helpers.append(int(f.read()))
        for pid in handlers + helpers:
            self.addCleanup(kill_if_alive, pid, start_time(pid))
        self.put({"x": b"x"})
        self.assertTrue(wait_for(lambda: len(marked("stuck-")) == 1), "no handler got the request")
        [stuck] = marked("stuck-")
        [idle] = [pid for pid in handlers if pid != stuck]
        subprocess.run([CLI, "pool", "rm", "--pool", self.pool, "--force"], check=True, stdout=subprocess.DEVNULL,
                       env=ENV)
        out, err = p.communicate(timeout=60)
        err = err.decode()
        self.assertEqual(p.returncode, 1, err)
        self.assertEqual(json.loads(out)["error"]["code"], "stale_generation", out)
        self.assertTrue(os.path.exists(os.path.join(self.dir, "eof-%d" % idle)),
                        "the idle handler never got its end of input: %s" % err)
        self.assertFalse(os.path.exists(os.path.join(self.dir, "eof-%d" % stuck)), err)
        self.assertIn("did not exit after its stdin closed: killed", err)
        # Killed before the worker exited; a moment for the kernel to finish the helpers' kill.
        self.assertTrue(wait_for(lambda: not any(alive(pid) for pid in handlers + helpers), timeout=5),
                        "outlived the worker: %s" % [pid for pid in handlers + helpers if alive(pid)])

    def test_a_reply_larger_than_max_result_size_is_dead_lettered_without_the_worker_holding_it(self):
        h = self.large_reply_handler("huge.py", 256)
        p = self.worker("python3 " + h, "--concurrency", "1", "--max-result-size", "1M", idle=None)
        self.put({"big": b"small input"})
        self.assertTrue(wait_for(lambda: len(self.dead_letters()) == 1, timeout=60), self.dead_letters())
        # The worker answers from the reply's first bytes and drops the rest as it comes: the
        # handler gets to write all of it (then it is idle, and a drain closes it at once).
        self.assertTrue(wait_for(lambda: any(f.startswith("written-") for f in os.listdir(self.dir)), timeout=60))
        with open("/proc/%d/status" % p.pid) as f:
            peak_kib = int([l for l in f if l.startswith("VmHWM:")][0].split()[1])
        p.send_signal(signal.SIGTERM)
        stats, err = self.finish(p)
        self.assertNotIn("did not exit", err)
        self.assertIn("larger than --max-result-size", json.dumps(self.dead_letters()))
        self.assertIsNone(self.result("big"))
        # The worker's peak resident size stays far below the result it refused (it would hold
        # all of it if it buffered the frame before judging its size).
        self.assertLess(peak_kib, 128 << 10, "worker peak RSS %d KiB" % peak_kib)

    def test_a_worker_stopped_while_a_too_large_reply_is_still_coming_waits_for_the_handler_not_its_kill(self):
        # The handler writes its 64 MiB result slowly; the worker answers the request from the
        # reply's first bytes and is told to stop before the rest has come. Its handler must
        # still reach its end of input and exit (the worker drops what it writes meanwhile),
        # not sit blocked on a full pipe until the worker's grace runs out and it is killed.
        h = self.large_reply_handler("slow_huge.py", 64, pause_s=0.02)
        p = self.worker("python3 " + h, "--concurrency", "1", "--max-result-size", "1M", idle=None)
        self.put({"big": b"small input"})
        self.assertTrue(wait_for(lambda: len(self.dead_letters()) == 1, timeout=60), self.dead_letters())
        start = time.monotonic()
        p.send_signal(signal.SIGTERM)
        stats, err = self.finish(p)
        self.assertNotIn("did not exit", err)
        # The rest of the reply takes ~1.3 s to come; the worker's grace before a kill is 10 s.
        self.assertLess(time.monotonic() - start, 8.0, err)

    def test_one_mib_objects_pass_the_protocol_without_deadlock(self):
        objs = {"big%d" % i: bytes([97 + i]) * (1 << 20) for i in range(4)}
        p = self.worker("python3 %s/examples/handlers/upper.py" % SOURCE, "--concurrency", "2",
                        "--max-inflight", "4")
        self.put(objs)
        stats, err = self.finish(p)
        self.assertEqual(stats["processed"], 4, err)
        for name, data in objs.items():
            self.assertEqual(self.result(name), data.upper(), name)


if __name__ == "__main__":
    unittest.main(argv=[sys.argv[0], "-v"] + sys.argv[3:])
