"""Attack: something other than a cache entry planted at a compiled-module cache path.

Only `is_symlink` was checked before reading an entry: a FIFO at the path hung the load (and the
worker) for ever. Now an entry is opened with O_NOFOLLOW|O_NONBLOCK, must be a regular file
(fstat), and anything else is rejected, deleted, audited and the module compiled again from the
verified bytes.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

import pytest
from runtime_helpers import OK_WAT, Signed, publish, signed_store, wat_manifest

from sandbox_runtime.runtime import Prepared, Runtime, RuntimeConfig
from sandbox_runtime.sandbox import Invocation

pytestmark = pytest.mark.toolchain


def _plant(entry: Path, kind: str, tmp_path: Path) -> None:
    entry.unlink()
    if kind == "fifo":
        os.mkfifo(entry)
    else:
        os.mkfifo(tmp_path / "elsewhere")
        entry.symlink_to(tmp_path / "elsewhere")


@pytest.mark.parametrize("kind", ["fifo", "symlink-to-fifo"])
def test_a_fifo_at_a_cache_path_is_rejected_without_blocking(af_home: Path, tmp_path: Path, kind: str) -> None:
    signed: Signed = signed_store(af_home)
    publish(signed, tmp_path / "t", {"ok": (wat_manifest("ok"), {"src/main.wat": OK_WAT})})
    config = RuntimeConfig(cache_dir=tmp_path / "cache", audit_log=tmp_path / "audit.jsonl")
    first = Runtime(signed.store, signed.trust, signed.engine, config)
    assert first.prepare("ok").module_source == "compiled"
    first.close()
    (entry,) = (tmp_path / "cache").glob("*.cwasm")
    _plant(entry, kind, tmp_path)

    second = Runtime(signed.store, signed.trust, signed.engine, config)
    got: list[Prepared | BaseException] = []

    def prepare() -> None:
        try:
            got.append(second.prepare("ok"))
        except BaseException as exc:  # handed to the test thread
            got.append(exc)

    worker = threading.Thread(target=prepare, daemon=True)
    worker.start()
    worker.join(timeout=10)  # on main the load blocks on the FIFO for ever: fail instead of hanging
    assert not worker.is_alive(), "loading the cache entry blocked"
    try:
        (prepared,) = got
        assert isinstance(prepared, Prepared), prepared
        assert prepared.module_source == "compiled"
        assert second.invoke("ok", Invocation()).execution.stdout == b"ok\n"
    finally:
        second.close()
    assert entry.is_file() and not entry.is_symlink()  # replaced by a real entry
    events = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    why = "a symbolic link, not a regular file" if kind != "fifo" else "not a regular file (a FIFO, device or folder)"
    assert any(e["event"] == "cache" and why in e["message"] for e in events), events
