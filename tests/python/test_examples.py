# SPDX-License-Identifier: MIT
# The examples in examples/ run as documented.
import subprocess
import sys

from conftest import SOURCE_DIR, python_env


def test_asyncio_example_receives_every_message_of_two_topics_through_one_fd(pool_name):
    out = subprocess.run([sys.executable, str(SOURCE_DIR / "examples" / "asyncio_topics.py"), pool_name, "20"],
                         env=python_env(), capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[-1] == "received: {'orders': 20, 'payments': 20}"
    assert sum(1 for line in out.stdout.splitlines() if line.startswith("orders[")) == 20
