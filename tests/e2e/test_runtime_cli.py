"""`agentfactory run` and `agentfactory runtime serve|audit` as a user runs them: exit codes, signals, the trail."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from child_process import first_line
from helpers import write_template
from runtime_helpers import OK_WAT, readyz, wait_until_ready, wat_manifest

pytestmark = pytest.mark.toolchain
EXE = str(Path(sys.executable).with_name("agentfactory"))


def af(cwd: Path, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([EXE, *args], cwd=cwd, input=stdin, capture_output=True, env=os.environ.copy(), timeout=300)


@pytest.fixture
def built(repo: Path) -> Path:
    """The example templates plus a spinning agent, signed; and an unsigned agent in the same store."""
    write_template(repo / "templates", "spin", manifest=wat_manifest("spin", timeout_ms=100),
                   files={"src/main.wat": '(module (func (export "_start") (loop $l (br $l))))'})
    proc = af(repo, "pipeline", "run", "--no-tests")
    assert proc.returncode == 0, proc.stderr.decode()
    write_template(repo / "unsigned", "plain", manifest=wat_manifest("plain"), files={"src/main.wat": OK_WAT})
    proc = af(repo, "pipeline", "run", "--templates", "unsigned", "--no-sign")
    assert proc.returncode == 0, proc.stderr.decode()
    return repo


def test_run_exit_codes(built: Path) -> None:
    (built / "in.txt").write_text("one two three\n")
    proc = af(built, "run", "wordstats", "--stdin", "in.txt")
    assert proc.returncode == 0 and json.loads(proc.stdout)["words"] == 3
    proc = af(built, "run", "base64", "--arg", "-d", "--stdin", "-", stdin=b"aGk=")
    assert (proc.returncode, proc.stdout) == (0, b"hi")
    proc = af(built, "run", "jsonfmt", "--stdin", "-", stdin=b"[1,")  # the agent's own exit code
    assert proc.returncode == 1 and b"jsonfmt: error" in proc.stderr
    proc = af(built, "run", "spin")
    assert proc.returncode == 124 and b"deadline exceeded" in proc.stderr
    proc = af(built, "run", "plain")
    assert proc.returncode == 125 and b"refused:" in proc.stderr and b"no signature" in proc.stderr
    proc = af(built, "run", "nosuch")
    assert proc.returncode == 125
    proc = af(built, "run", "wordstats", "--env", "NOEQUALS")
    assert proc.returncode == 2 and b"write NAME=VALUE" in proc.stderr
    proc = af(built, "run", "plain", "--json")
    doc = json.loads(proc.stdout)
    assert doc["refused"] is True and doc["reason"] == "unverified" and doc["verdict"]["allowed"] is False


def test_serve_invoke_sigterm_and_audit(built: Path) -> None:
    audit = built / "audit.jsonl"
    server = subprocess.Popen([EXE, "runtime", "serve", "--listen", "127.0.0.1:0", "--audit-log", str(audit)],
                              cwd=built, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=os.environ.copy())
    try:
        assert server.stderr is not None
        first = first_line(server).decode()
        url = json.loads(first)["listening"]
        with httpx.Client(base_url=url, timeout=30) as client:
            assert client.get("/healthz").status_code == 200
            # Ready once the warm pool compiled every agent it may run (or refused it): what Kubernetes waits for.
            status = wait_until_ready(url, server)
            assert status["warm"]["compiled"] >= 4 and status["warm"]["refused"] >= 1, status  # type: ignore[index]
            assert readyz(url)[0] == 200
            assert client.post("/v1/agents/base64/invoke", content=b"hi").content == b"aGk=\n"
            assert client.post("/v1/agents/plain/invoke").status_code == 403
        server.send_signal(signal.SIGTERM)
        assert server.wait(timeout=30) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    lines = audit.read_text().splitlines()
    events = [json.loads(line)["event"] for line in lines]
    assert [e for e in events if e != "compile"] == ["decision", "execution", "decision"], events
    assert events.count("compile") >= 4  # one per module the warm pool compiled, before any request
    proc = af(built, "runtime", "audit", str(audit), "--json")
    assert proc.returncode == 0 and json.loads(proc.stdout) == {"path": str(audit), "records": len(lines),
                                                                "intact": True}
    audit.write_text("\n".join([lines[0], lines[2]]) + "\n")  # a record removed
    proc = af(built, "runtime", "audit", str(audit))
    assert proc.returncode == 1 and b":2: does not follow the line before it" in proc.stderr
