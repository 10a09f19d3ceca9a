"""The runtime's parts on their own: the audit chain, the run contract parser, the node key, the engines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agentfactory.audit import GENESIS, AuditError, AuditLog, verify_chain
from agentfactory.errors import ConfigError, InputError
from agentfactory.runspec import from_provenance, parse_runspec
from sandbox_runtime.engine import Engines, settings_key
from sandbox_runtime.modcache import KEY_BYTES, load_node_key

GOOD = {"entrypoint": "_start", "tools": ["clock.now_ms"],
        "capabilities": {"wasi": {"preopens": [{"guestPath": "/data", "hostPath": "/srv/x"}], "env": ["LANG"]}},
        "limits": {"memoryMiB": 4, "timeoutMs": 100}}


def test_audit_chain_detects_removed_edited_and_reordered_records(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path)
    for i in range(4):
        log.record("execution", agent=f"a{i}", outcome="ok")
    log.close()
    assert verify_chain(path) == 4
    assert json.loads(path.read_text().splitlines()[0])["prev"] == GENESIS
    again = AuditLog(path)  # a restart continues the chain
    again.record("decision", agent="a4", allowed=True)
    again.close()
    assert verify_chain(path) == 5
    lines = path.read_text().splitlines()
    for broken, line in ((lines[:2] + lines[3:], 3), ([lines[1], lines[0], *lines[2:]], 1),
                         ([*lines[:4], lines[4].replace('"a4"', '"a5"')], None)):
        path.write_text("\n".join(broken) + "\n")
        if line is None:  # the last line edited: the chain still links, the content is what it is
            assert verify_chain(path) == 5
            continue
        with pytest.raises(InputError, match=rf"audit.jsonl:{line}"):
            verify_chain(path)
    path.write_text("\n".join(lines[:2]) + "\nnot json\n")
    with pytest.raises(InputError, match="audit.jsonl:3: not a JSON record"):
        verify_chain(path)


def test_audit_records_are_bounded_and_an_unwritable_trail_is_an_error(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "a.jsonl")
    doc = log.record("decision", agent="x", message="m" * 100_000, checks=[{"reason": "r" * 5000}] * 500)
    assert doc["truncated"] is True and doc["agent"] == "x" and "checks" not in doc  # still one bounded record
    doc = log.record("decision", agent="x", message="m" * 100_000, checks=[{"reason": "r"}] * 500)
    log.close()
    assert len(doc["message"]) <= 2001 and len(doc["checks"]) == 100
    assert verify_chain(tmp_path / "a.jsonl") == 2
    assert max(len(line) for line in (tmp_path / "a.jsonl").read_bytes().splitlines()) < 64 * 1024
    (tmp_path / "ro").mkdir(mode=0o500)
    if os.geteuid() != 0:
        with pytest.raises(AuditError, match="cannot open the audit trail"):
            AuditLog(tmp_path / "ro" / "audit.jsonl")


def test_audit_to_stdout() -> None:
    code = ("from pathlib import Path; from agentfactory.audit import AuditLog; "
            "log = AuditLog(Path('-')); log.record('decision', agent='x', allowed=True); log.close()")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out)["agent"] == "x" and json.loads(out)["prev"] == GENESIS


def test_run_contract_parses_and_refuses_what_a_template_could_not_ask_for() -> None:
    spec = parse_runspec(GOOD, "p")
    assert spec.tools == ("clock.now_ms",) and spec.preopens[0].read_only and spec.limits.max_output_kib == 1024
    assert parse_runspec(spec.to_json(), "p") == spec
    bad = [
        ({**GOOD, "limits": {"memoryMiB": 10_000, "timeoutMs": 1}}, "limits.memoryMiB"),
        ({**GOOD, "tools": ["Shell Exec"]}, "tools.0"),
        ({**GOOD, "extra": 1}, "Additional properties"),
        ({k: v for k, v in GOOD.items() if k != "limits"}, "'limits' is a required property"),
        ({**GOOD, "capabilities": {"wasi": {"preopens": [{"guestPath": "data", "hostPath": "/x"}]}}},
         "capabilities.wasi.preopens.0.guestPath"),
        ("a string", "(document)"),
    ]
    for doc, needle in bad:
        with pytest.raises(InputError) as exc:
            parse_runspec(doc, "prov")
        assert needle in str(exc.value), (needle, str(exc.value))
    with pytest.raises(InputError, match="externalParameters.agent is missing"):
        from_provenance({"buildDefinition": {"externalParameters": {}}})


def test_node_key_is_created_private_and_checked(tmp_path: Path) -> None:
    path = tmp_path / "k" / "node.key"
    key = load_node_key(path)
    assert len(key) == KEY_BYTES and path.stat().st_mode & 0o777 == 0o600
    assert load_node_key(path) == key
    path.chmod(0o644)
    with pytest.raises(ConfigError, match="readable by other users; chmod 600"):
        load_node_key(path)
    path.chmod(0o600)
    path.write_bytes(b"short")
    with pytest.raises(ConfigError, match="exactly 32 bytes"):
        load_node_key(path)


def test_engines_deadline_and_settings() -> None:
    engines = Engines(tick_seconds=0.005)
    try:
        assert engines.deadline_ticks(1) == 2 and engines.deadline_ticks(100) == 21
        assert engines.get(True) is not engines.get(False)
    finally:
        engines.close()
    assert settings_key(True) != settings_key(False) and len(settings_key(False)) == 16
