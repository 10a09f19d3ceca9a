"""Attack: a template whose test case floods stdout, to fill the build machine's disk or memory.

The test stage used to write an agent's output to an uncapped temporary file and check the cap
afterwards (an agent with `maxOutputKiB: 64` wrote 2 GB to /tmp in 3 s). Now stdout and stderr are
captured in memory and cut at the cap as they are written: nothing reaches the disk, and what the
host holds never exceeds the cap.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
import threading
from pathlib import Path

import pytest
from helpers import write_template
from runtime_helpers import WASI_WRITE, wat_manifest

from agentfactory.store import OCILayoutStore
from agentfactory.wasihost import CappedOutput
from pipelines.run import run_pipeline

pytestmark = pytest.mark.toolchain

CAP = 64 * 1024
# Writes 64 KiB to stdout 10,000 times (640 MiB), ignoring every error, then exits 0.
FLOOD = f"""(module {WASI_WRITE}
  (memory (export "memory") 2)
  (func (export "_start") (local $i i32)
    (loop $l
      (call $print (i32.const 1024) (i32.const 65536))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const 10000))))))"""


def _bytes_under(folder: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):  # a file removed while we walk
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def test_the_test_stage_caps_output_while_it_is_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    cases = "cases:\n  - name: floods\n    stdout: ok\n"
    write_template(tmp_path / "t", "flood", manifest=wat_manifest("flood", output_kib=64, timeout_ms=5000),
                   files={"src/main.wat": FLOOD, "tests/cases.yaml": cases})
    peak = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.01):
            peak[0] = max(peak[0], _bytes_under(scratch))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        (r,) = run_pipeline(tmp_path / "t", OCILayoutStore(tmp_path / "store"), jobs=1).templates
    finally:
        done.set()
        sampler.join()
    assert r.status == "failed"
    assert r.errors == [f"{tmp_path}/t/flood/tests/cases.yaml: case 'floods': wrote more than the {CAP}-byte "
                        "output limit"], r.errors
    assert peak[0] <= CAP + 64 * 1024, peak[0]  # at most the cap plus one write's buffer ever reached the disk


def test_captured_output_never_exceeds_the_cap() -> None:
    out = CappedOutput(CAP)
    assert out(b"x" * (CAP - 10)) == CAP - 10
    assert out(b"y" * 1000) == -errno.EFBIG  # the guest's write fails: the cap is reached
    for _ in range(1000):
        assert out(b"z" * 65536) == -errno.EFBIG
    assert out.overflow and out.size == CAP and len(out.value()) == CAP
    assert out.value().endswith(b"y" * 10)
