# SPDX-License-Identifier: MIT
"""Python threads cannot crash the process: threads hammer one handle (store, producer, consumer,
group consumer, DLQ router, renewal manager, waiter, worker) while another thread closes it or
its pool. Every call returns or raises fabric_shm.Closed; after close() every call raises it;
nothing hangs. Each scenario runs in a child process (threads_child.py), so that a segfault
fails its test with the signal instead of killing pytest."""
import pathlib
import signal
import subprocess
import sys

import pytest

from conftest import python_env, unique_pool_name

import fabric_shm as fs

CHILD = pathlib.Path(__file__).with_name("threads_child.py")

# Rounds per scenario, cut short after BUDGET_S seconds (at least 3 rounds): the unfixed bindings
# crashed in the first rounds (docs/python.md, "Threads and close()"), and the file stays at a
# few seconds on a loaded machine.
ROUNDS = {
    "store_close": 30,
    "store_pool_close": 30,
    "producer_close": 30,
    "producer_pool_close": 30,
    "consumer_close": 30,
    "consumer_pool_close": 30,
    "group_consumer_close": 30,
    "dlq_close": 30,
    "renewals_pool_close": 30,
    "waiter_consumer_close": 30,
    "worker_close": 6,
    "blocked_calls_close": 2,
    "nested_calls": 3,
}
BUDGET_S = 0.3
TIMEOUT_S = 30


def run_child(scenario):
    name = unique_pool_name()
    try:
        child = subprocess.run([sys.executable, str(CHILD), scenario, name, str(ROUNDS[scenario]), str(BUDGET_S)],
                               capture_output=True, text=True, env=python_env(), timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        pytest.fail(f"{scenario}: the child hung (no exit in {TIMEOUT_S} s): {e.stderr}")
    finally:
        try:
            fs.Pool.remove(name, force=True)
        except fs.NotFound:
            pass
    return child


@pytest.mark.parametrize("scenario", list(ROUNDS))
def test_calls_racing_close_return_or_raise_closed_and_never_crash(scenario):
    child = run_child(scenario)
    if child.returncode < 0:
        pytest.fail(f"{scenario}: the child was killed by {signal.Signals(-child.returncode).name}\n{child.stderr}")
    assert child.returncode == 0, f"{scenario}: exit {child.returncode}\n{child.stdout}\n{child.stderr}"
