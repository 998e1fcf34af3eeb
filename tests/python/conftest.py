# SPDX-License-Identifier: MIT
# Fixtures of the Python package's tests: a unique pool per test (fabric-shm.t-py-<pid>-<n>,
# removed afterwards), the build's tools, and a helper to read a pool through fabric-shm-dump.
import itertools
import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import fabric_shm as fs

BUILD_DIR = pathlib.Path(os.environ.get("FABRIC_SHM_TEST_BUILD_DIR", pathlib.Path(__file__).parents[2] / "build"))
SOURCE_DIR = pathlib.Path(os.environ.get("FABRIC_SHM_SOURCE_DIR", pathlib.Path(__file__).parents[2]))
CLI = BUILD_DIR / "tools" / "fabric-shm"
DUMP = BUILD_DIR / "tools" / "dump" / "fabric-shm-dump"
PRODUCER = BUILD_DIR / "workers" / "fabric-shm-producer"
WORKER = BUILD_DIR / "workers" / "fabric-shm-worker"
PYTHON = sys.executable

_counter = itertools.count()


def unique_pool_name():
    return f"t-py-{os.getpid()}-{next(_counter)}"


@pytest.fixture
def pool_name():
    name = unique_pool_name()
    yield name
    # Whatever the test left: the segment goes (tests leave nothing in /dev/shm).
    try:
        fs.Pool.remove(name, force=True)
    except fs.NotFound:
        pass


@pytest.fixture
def pool(pool_name):
    p = fs.Pool.create(pool_name, size="16M", ttl=120)
    yield p
    p.close()


def dump_json(name):
    out = subprocess.run([str(DUMP), "--pool", name, "--json"], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def pool_mapping(name):
    """(start, end) of this process's mappings of the pool's segment."""
    path = fs.Pool.segment_path(name)
    ranges = []
    with open("/proc/self/maps") as maps:
        for line in maps:
            if line.rstrip().endswith(path):
                lo, hi = line.split()[0].split("-")
                ranges.append((int(lo, 16), int(hi, 16)))
    return ranges


def python_env():
    """The environment a child Python needs to import the uninstalled package."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p and "fabric_shm" not in p and os.path.isdir(p))
    return env


def child_stopped_at(point, script, what):
    """A child Python running `script` with the pause point `point` armed: returned once it has
    stopped itself there (SIGSTOP; state 'T'), within 10 s. `what` names it in the failure."""
    env = python_env()
    env["FABRIC_SHM_PAUSE_POINT"] = point
    child = subprocess.Popen([sys.executable, "-c", script], env=env)
    for _ in range(1000):  # bounded: 10 s
        with open(f"/proc/{child.pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "T":
                return child
        time.sleep(0.01)
    child.kill()
    child.wait()
    raise AssertionError(f"{what} never stopped at {point}")


def child_blocked_then_interrupted(pool_name, body):
    """Runs `body` (blocking) in a child Python, SIGINTs it once it says 'ready', and returns the
    seconds from the signal to the KeyboardInterrupt the child observed."""
    script = textwrap.dedent(f"""
        import sys, time
        import fabric_shm as fs
        pool = fs.Pool.open({pool_name!r})
        {textwrap.indent(textwrap.dedent(body), '        ').strip()}
        print("ready", flush=True)
        try:
            block()
            print("returned", flush=True)
        except KeyboardInterrupt:
            print("interrupted", time.monotonic(), flush=True)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=python_env())
    try:
        assert child.stdout.readline().strip() == "ready"
        time.sleep(0.2)  # well inside the blocking call
        sent = time.monotonic()
        child.send_signal(signal.SIGINT)
        line = child.stdout.readline().split()
        assert child.wait(timeout=10) == 0
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert line and line[0] == "interrupted", line
    return float(line[1]) - sent
