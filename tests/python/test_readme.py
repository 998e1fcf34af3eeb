# SPDX-License-Identifier: MIT
# The README's Python recipe, cut out of the README between its markers and run as a user runs it.
import os
import re
import subprocess
import sys

import fabric_shm as fs
from conftest import SOURCE_DIR, python_env


def readme_block():
    text = (SOURCE_DIR / "README.md").read_text()
    m = re.search(r"<!-- readme-example:python begin -->\n```python\n(.*?)```\n<!-- readme-example:python end -->",
                  text, re.S)
    assert m, "README.md lost its python example markers"
    return m.group(1)


def test_the_readme_python_recipe_runs_as_written(pool_name):
    env = python_env()
    env["FABRIC_SHM_POOL"] = pool_name
    out = subprocess.run([sys.executable, "-c", readme_block()], env=env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "['uploads/img-042.png', 'uploads/img-043.png']"
    assert lines[1] == "True b'2 chunks'"
    assert re.fullmatch(r"pool lease: \d+ s left", lines[2])
    with fs.Pool.open(pool_name) as pool:
        store = pool.store()
        assert store.get_bytes(f"fabric://{pool_name}/results/uploads/img-042.png") == b"IMAGE BYTES OF IMG-042.PNG"
        assert store.list("audit") == ["img-042.png", "img-043.png"]
