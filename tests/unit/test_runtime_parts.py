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
    assert doc["checksCount"] == 500 and doc["message"].startswith("m")
    # An admission record filled by 40 long references keeps what identifies it, not `allowed` alone.
    doc = log.record("admission", plane="admission", uid="u-1", operation="CREATE", namespace="team-a",
                     kind="/Pod", name="web", dryRun=False, mode="warn", allowed=True, decision="warned",
                     message="would be denied", code=200, agents=[{"ref": "helper:" + "t" * 1900}] * 40)
    assert doc["truncated"] is True and doc["agentsCount"] == 40 and "agents" not in doc
    assert {k: doc[k] for k in ("uid", "namespace", "kind", "name", "operation", "decision", "allowed", "code",
                                "mode")} == {"uid": "u-1", "namespace": "team-a", "kind": "/Pod", "name": "web",
                                             "operation": "CREATE", "decision": "warned", "allowed": True,
                                             "code": 200, "mode": "warn"}
    doc = log.record("decision", agent="x", message="m" * 100_000, checks=[{"reason": "r"}] * 500)
    log.close()
    assert len(doc["message"]) <= 2001 and len(doc["checks"]) == 100 and doc["checksCount"] == 500
    assert verify_chain(tmp_path / "a.jsonl") == 3
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


def test_engine_proposals_are_the_documented_set() -> None:
    import wasmtime

    from agentfactory.wasmconfig import PROPOSALS_OFF, PROPOSALS_ON

    engine = Engines(tick_seconds=1)
    try:
        for wat, why in (("(module (tag $t) (func (throw $t)))", "exceptions proposal not enabled"),
                         ("(module (func $f (return_call $f)))", "tail calls support is not enabled"),
                         ("(module (memory 1 1 shared))", "threads must be enabled")):
            with pytest.raises(wasmtime.WasmtimeError, match=why):
                wasmtime.Module.validate(engine.get(False), wasmtime.wat2wasm(wat))
        for wat in ("(module (memory 1) (func (memory.fill (i32.const 0) (i32.const 0) (i32.const 0))))",
                    "(module (func (result i32 i32) (i32.const 1) (i32.const 2)))",
                    "(module (func (drop (v128.const i64x2 0 0))))"):
            wasmtime.Module.validate(engine.get(True), wasmtime.wat2wasm(wat))
    finally:
        engine.close()
    assert set(PROPOSALS_ON).isdisjoint(PROPOSALS_OFF) and "exceptions" in PROPOSALS_OFF


def test_blocking_entries_under_a_preopen_are_found(tmp_path: Path) -> None:
    import os

    from agentfactory.wasihost import blocking_entry

    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "file").write_text("x")
    (tmp_path / "a" / "link").symlink_to(tmp_path / "a" / "b")  # a link to a folder: judged, not followed
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    assert blocking_entry(tmp_path) is None
    os.mkfifo(tmp_path / "a" / "b" / "pipe")
    assert blocking_entry(tmp_path) == (f"{tmp_path}/a/b/pipe is a FIFO: opening or reading it can block past "
                                        "any deadline")
    (tmp_path / "a" / "b" / "pipe").unlink()
    (tmp_path / "tty").symlink_to("/dev/null")
    assert "tty is a character device" in (blocking_entry(tmp_path) or "")
    (tmp_path / "tty").unlink()
    assert blocking_entry(tmp_path, limit=3) == (f"{tmp_path}: more than 3 entries; the node checks every entry "
                                                 "a preopen grants")


def test_tools_and_clocks_refuse_to_run_past_the_deadline() -> None:
    import wasmtime

    from agentfactory import wasihost
    from sandbox_runtime import tools

    engine = wasmtime.Engine()
    linker = wasmtime.Linker(engine)
    tools.define(linker, ["clock.now_ms"])
    module = wasmtime.Module(engine, """(module (import "agentfactory" "clock.now_ms" (func $now (result i64)))
      (func (export "f") (result i64) (call $now)))""")
    store = wasmtime.Store(engine)
    f = linker.instantiate(store, module).exports(store)["f"]
    assert isinstance(f, wasmtime.Func)
    live = wasihost.Deadline(60)
    wasihost.bind(live)
    try:
        assert f(store) > 1_700_000_000_000 and not live.hit
        gone = wasihost.Deadline(-0.001)
        wasihost.bind(gone)
        with pytest.raises(wasmtime.Trap, match="deadline exceeded during a host call"):
            f(store)
        assert gone.hit
        wasihost.bind(None)  # no invocation bound: host calls fail closed
        with pytest.raises(wasmtime.Trap):
            f(store)
    finally:
        wasihost.bind(None)


POLL_PROBE = """(module
  (import "wasi_snapshot_preview1" "poll_oneoff" (func $poll (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "poll") (param i32 i32 i32 i32) (result i32)
    (call $poll (local.get 0) (local.get 1) (local.get 2) (local.get 3))))"""


def test_poll_oneoff_answers_fds_at_once_and_checks_its_arguments() -> None:
    import struct
    import time

    import wasmtime

    from agentfactory import wasihost

    engine = wasmtime.Engine()
    linker = wasmtime.Linker(engine)
    wasihost.define_wasi(linker)
    store = wasmtime.Store(engine)
    store.set_wasi(wasmtime.WasiConfig())
    exports = linker.instantiate(store, wasmtime.Module(engine, POLL_PROBE)).exports(store)
    poll, memory = exports["poll"], exports["memory"]
    assert isinstance(poll, wasmtime.Func) and isinstance(memory, wasmtime.Memory)
    clock = struct.pack("<QB7xI4xQQH6x", 7, 0, 1, 30 * 10**9, 0, 0)  # 30 s relative, monotonic
    stdin = struct.pack("<QB7xI28x", 8, 1, 0)  # fd_read on fd 0
    memory.write(store, clock + stdin, 0)
    wasihost.bind(wasihost.Deadline(60))
    try:
        started = time.monotonic()
        assert poll(store, 0, 1024, 2, 2048) == 0
        assert time.monotonic() - started < 1  # an fd is ready: the clock does not make it wait
        assert struct.unpack_from("<I", memory.read(store, 2048, 2052))[0] == 1
        userdata, error, kind = struct.unpack_from("<QHB", memory.read(store, 1024, 1040))
        assert (userdata, error, kind) == (8, 0, 1)
        assert poll(store, 0, 1024, 0, 2048) == 28  # no subscriptions: EINVAL
        assert poll(store, 65536 - 40, 1024, 1, 2048) == 21  # subscription past the memory: EFAULT
        assert poll(store, 0, 1024, wasihost.MAX_SUBSCRIPTIONS + 1, 2048) == 28
    finally:
        wasihost.bind(None)
