"""`pipeline run` opens the embedded transparency log only when something is signed (issue 23: an unchanged
template's run neither imports nor opens it), and a log that cannot be opened still publishes nothing.

Against the real CLI: a first run builds, signs and logs; the log's database is then replaced by garbage.
An unchanged run must pass (it logs nothing, so it never opens the log); a changed template must fail,
naming the log, with nothing published (fail closed, as when the log was opened before building); once the
database is back, the same run publishes and logs it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import hello_manifest, write_template

from agentfactory.tlog.connect import DeferredLog, open_tlog
from agentfactory.tlog.log import EmbeddedLog

pytestmark = pytest.mark.toolchain


def af(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("agentfactory")
    return subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True, env=os.environ.copy(),
                          timeout=600)


def _report(proc: subprocess.CompletedProcess[str]) -> dict[str, object]:
    try:
        return json.loads(proc.stdout)
    except ValueError:
        raise AssertionError(f"not JSON (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}") from None


def test_an_unchanged_run_never_opens_the_log_and_a_log_that_cannot_open_publishes_nothing(
        tmp_path: Path, af_home: Path) -> None:
    write_template(tmp_path / "templates", "hello", manifest=hello_manifest("hello", "1.0.0"))
    first = af(tmp_path, "pipeline", "run", "--json", "-j", "1")
    assert first.returncode == 0, first.stderr
    with EmbeddedLog(af_home / "tlog") as log:
        logged = log.info().tree_size
    assert logged >= 1

    db = af_home / "tlog" / "tree.db"
    shutil.move(db, tmp_path / "tree.db")
    for side in ("tree.db-wal", "tree.db-shm"):
        (af_home / "tlog" / side).unlink(missing_ok=True)
    db.write_bytes(b"not a database, not even close" * 100)

    unchanged = af(tmp_path, "pipeline", "run", "--json", "-j", "1")
    assert unchanged.returncode == 0, unchanged.stderr
    assert [t["status"] for t in _report(unchanged)["templates"]] == ["unchanged"]  # type: ignore[union-attr,index]

    (tmp_path / "templates" / "hello" / "agent.yaml").write_text(hello_manifest("hello", "1.0.1"))
    refused = af(tmp_path, "pipeline", "run", "--json", "-j", "1")
    assert refused.returncode == 1
    errors = [e for t in _report(refused)["templates"] for e in t["errors"]]  # type: ignore[union-attr,index]
    assert any("the transparency log cannot be opened, so nothing is published" in e and str(db) in e
               for e in errors), errors
    listing = json.loads(af(tmp_path, "store", "ls", "--json").stdout)
    assert [a["version"] for a in listing["agents"]] == ["1.0.0"]

    db.unlink()
    shutil.move(tmp_path / "tree.db", db)
    published = af(tmp_path, "pipeline", "run", "--json", "-j", "1")
    assert published.returncode == 0, published.stderr
    with EmbeddedLog(af_home / "tlog") as log:
        assert log.info().tree_size > logged
    assert af(tmp_path, "verify", "hello:1.0.1").returncode == 0


def test_a_deferred_log_opens_once_on_first_use_and_a_failed_open_is_tried_again(af_home: Path) -> None:
    calls: list[int] = []
    failing = [True]

    def opener() -> EmbeddedLog:
        calls.append(1)
        if failing[0]:
            from agentfactory.errors import StoreError

            raise StoreError("the log is not there yet")
        return EmbeddedLog(af_home / "tlog")

    log = DeferredLog(opener)
    assert not log.opened and calls == []  # made, not opened
    with pytest.raises(Exception, match="not there yet"):
        log.info()
    failing[0] = False
    assert log.info().tree_size == 0 and log.opened
    assert log.public_key_pem().startswith(b"-----BEGIN PUBLIC KEY-----")
    log.info()
    assert len(calls) == 2  # the failed open, then one open for every later use
    log.close()
    assert not log.opened

    deferred, pem = open_tlog("embedded", None, defer=True)
    assert isinstance(deferred, DeferredLog) and pem is None and not deferred.opened
    eager, eager_pem = open_tlog("embedded", None)
    assert not isinstance(eager, DeferredLog) and eager_pem == deferred.public_key_pem()
