"""The sign stage records every signature in the transparency log, before anything is published."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from helpers import write_template
from runtime_helpers import OK_WAT, signed_store, wat_manifest

from agentfactory.evidence import collect
from agentfactory.tlog.client import RekorClient
from agentfactory.tlog.log import EmbeddedLog
from agentfactory.trust import from_public_keys
from agentfactory.verifier import verify
from pipelines.run import Signing, run_pipeline

pytestmark = pytest.mark.toolchain


def test_every_signature_is_logged_and_verified_offline(af_home: Path, tmp_path: Path) -> None:
    s = signed_store(af_home)
    for name, text in (("one", OK_WAT), ("two", OK_WAT.replace("ok", "OK"))):  # two different modules
        write_template(tmp_path / "t", name, manifest=wat_manifest(name), files={"src/main.wat": text})
    log = EmbeddedLog(tmp_path / "tlog")
    pem = log.public_key_pem()
    report = run_pipeline(tmp_path / "t", s.store, run_tests=False, engine=s.engine,
                          signing=Signing(s.keyring, tlog=log, tlog_key_pem=pem))
    assert report.ok, [t.errors for t in report.templates]
    assert log.info().tree_size == 10  # two agents: a signature, three attestations and an image signature each
    trust = from_public_keys(s.keyring.public_keys(), log_keys=[pem])
    for t in report.templates:
        assert len(t.evidence["tlog"]["indexes"]) == 5
        agent = s.store.resolve(t.name)
        found = collect(s.store, agent)
        assert len(found.tlog) == 5  # one entry inside each bundle
        wasm = s.store.fetch_wasm(t.name)[1]
        verdict = verify(agent.digest, wasm, found, trust, engine=s.engine, name=agent.name, version=agent.version)
        assert verdict.allowed, verdict.reasons
        tlog = next(c for c in verdict.checks if c.name == "tlog")
        assert tlog.ok
        other = from_public_keys(s.keyring.public_keys(), log_keys=[EmbeddedLog(tmp_path / "other").public_key_pem()])
        denied = verify(agent.digest, wasm, found, other, name=agent.name)
        assert not denied.allowed and "tlog" in " ".join(denied.reasons)


def test_a_log_that_cannot_be_reached_publishes_nothing(af_home: Path, tmp_path: Path) -> None:
    s = signed_store(af_home)
    write_template(tmp_path / "t", "lonely", manifest=wat_manifest("lonely"), files={"src/main.wat": OK_WAT})
    with socket.socket() as sock:  # a port with nothing listening on it
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    down = RekorClient(f"http://127.0.0.1:{port}")
    pem = EmbeddedLog(tmp_path / "key-only").public_key_pem()
    report = run_pipeline(tmp_path / "t", s.store, run_tests=False,
                          signing=Signing(s.keyring, tlog=down, tlog_key_pem=pem))
    assert not report.ok
    assert "the transparency log http://127.0.0.1:" in report.templates[0].errors[0]
    assert not any(True for _ in s.store.entries("lonely"))
