"""Invariant 7: the same template at the same commit gives the same digest on any machine."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import EXAMPLES, PYTHON_EXAMPLE, git

pytestmark = pytest.mark.toolchain


def test_two_clones_at_different_paths_give_identical_digests(repo: Path, tmp_path: Path) -> None:
    shutil.copytree(PYTHON_EXAMPLE, repo / "templates" / PYTHON_EXAMPLE.name)  # a Python agent (componentize-py) too
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "the Python example")
    a = tmp_path / "a" / "clone"
    b = tmp_path / "somewhere" / "much" / "deeper" / "other-clone"
    b.parent.mkdir(parents=True)
    git(tmp_path, "clone", "-q", str(repo), str(a))
    git(tmp_path, "clone", "-q", str(repo), str(b))
    exe = Path(sys.executable).with_name("agentfactory")
    results = []
    # Separate state and separate compiler caches, as on two machines: the first has built before (the
    # session's cache, warmed by earlier tests at other paths), the second builds wasi-libc from nothing.
    caches = {a: os.environ["AGENTFACTORY_TOOLCHAIN_CACHE"], b: str(b.parent / f"{b.name}-zig")}
    for clone in (a, b):
        env = {**os.environ, "AGENTFACTORY_HOME": str(clone / ".state"),
               "AGENTFACTORY_TOOLCHAIN_CACHE": caches[clone], "TZ": "Asia/Tokyo"}
        proc = subprocess.run([str(exe), "pipeline", "run", "--json"], cwd=clone, env=env, capture_output=True,
                              text=True, timeout=900)
        assert proc.returncode == 0, proc.stderr
        report = json.loads(proc.stdout)
        listing = json.loads(subprocess.run([str(exe), "store", "ls", "--json"], cwd=clone, env=env,
                                            capture_output=True, text=True, check=True).stdout)
        results.append(({t["name"]: t["digest"] for t in report["templates"]},
                        {x["name"]: x["manifest"] for x in listing["agents"]}))
    (digests_a, manifests_a), (digests_b, manifests_b) = results
    assert sorted(digests_a) == sorted([*EXAMPLES, PYTHON_EXAMPLE.name])
    assert digests_a == digests_b
    assert manifests_a == manifests_b  # the OCI manifests too, not only the wasm bytes
