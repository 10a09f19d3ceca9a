"""Hostile guests against the real runtime: each is stopped with its reason, and the runtime stays healthy.

Agents are built by the real pipeline (wat2wasm, zig) and signed by a real keyring into a real OCI
layout; the template policy is skipped on purpose, so the runtime is the only line of defence.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from runtime_helpers import OK_WAT, WASI_WRITE, Signed, publish, sign_raw, signed_store, wat_manifest

from agentfactory.audit import verify_chain
from agentfactory.errors import InputError
from agentfactory.metrics import WASI_VIOLATIONS
from sandbox_runtime.runtime import Refused, Runtime, RuntimeConfig
from sandbox_runtime.sandbox import Invocation

pytestmark = pytest.mark.toolchain

LOOP_START = """(module (memory (export "memory") 1) (func (export "_start") (loop $l (br $l))))"""
LOOP_START_FN = """(module (memory (export "memory") 1)
  (func $spin (loop $l (br $l))) (start $spin) (func (export "_start")))"""
GROW_BOMB = """(module (memory (export "memory") 1)
  (func (export "_start")
    (loop $l (br_if $l (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))
    unreachable))"""
GROW_QUIET = """(module (memory (export "memory") 1)
  (func (export "_start") (loop $l (br_if $l (i32.ne (memory.grow (i32.const 1)) (i32.const -1))))))"""
RECURSE = """(module (memory (export "memory") 1)
  (func $down (param i64) (call $down (i64.add (local.get 0) (i64.const 1))))
  (func (export "_start") (call $down (i64.const 0))))"""
FLOOD = f"""(module {WASI_WRITE}
  (memory (export "memory") 2)
  (func (export "_start") (local $i i32)
    (loop $l
      (call $print (i32.const 1024) (i32.const 65536))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $l (i32.lt_u (local.get $i) (i32.const 100))))))"""
UNDECLARED_TOOL = """(module
  (import "agentfactory" "log.write" (func $log (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "_start") (drop (call $log (i32.const 0) (i32.const 4)))))"""
UNKNOWN_MODULE = """(module (import "env" "system" (func $system (param i32) (result i32)))
  (memory (export "memory") 1) (func (export "_start") (drop (call $system (i32.const 0)))))"""
DECLARED_TOOL = """(module
  (import "agentfactory" "log.write" (func $log (param i32 i32) (result i32)))
  (import "agentfactory" "clock.now_ms" (func $now (result i64)))
  (memory (export "memory") 1)
  (data (i32.const 64) "hello from the guest")
  (func (export "_start")
    (drop (call $log (i32.const 64) (i32.const 20)))
    (if (i64.lt_s (call $now) (i64.const 1700000000000)) (then unreachable))))"""
BURN_FUEL = """(module (memory (export "memory") 1)
  (func (export "_start") (local $i i64)
    (loop $l (local.set $i (i64.add (local.get $i) (i64.const 1))) (br $l))))"""

# A C guest that tries every way out of its read-only preopen and reports what happened.
ESCAPE_C = r"""
#include <errno.h>
#include <stdio.h>
#include <string.h>

static void try_read(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) { printf("read %s: denied (%s)\n", path, strerror(errno)); return; }
    char buf[64] = {0};
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    printf("read %s: OK %zu bytes: %.19s\n", path, n, buf);
}

static void try_write(const char *path) {
    FILE *f = fopen(path, "w");
    if (!f) { printf("write %s: denied (%s)\n", path, strerror(errno)); return; }
    int ok = fputs("owned", f) >= 0;
    ok = (fclose(f) == 0) && ok;
    printf("write %s: %s\n", path, ok ? "OK" : "failed");
}

int main(void) {
    try_read("/data/hello.txt");
    try_read("/data/../../etc/passwd");
    try_read("../../etc/passwd");
    try_read("/etc/passwd");
    try_read("/data/escape");
    try_write("/data/hello.txt");
    try_write("/data/new.txt");
    return 0;
}
"""


@pytest.fixture
def signed(af_home: Path) -> Signed:
    return signed_store(af_home)


@pytest.fixture
def runtime(signed: Signed, tmp_path: Path) -> Iterator[Runtime]:
    rt = Runtime(signed.store, signed.trust, signed.engine,
                 RuntimeConfig(cache_dir=tmp_path / "cache", audit_log=tmp_path / "audit.jsonl"))
    yield rt
    rt.close()


def _publish(signed: Signed, tmp_path: Path, **agents: tuple[str, str]) -> None:
    """Publish WAT agents {name: (manifest, source)}."""
    publish(signed, tmp_path / "templates", {n: (m, {"src/main.wat": src}) for n, (m, src) in agents.items()})


def _violations(reason: str) -> float:
    return WASI_VIOLATIONS.labels(reason=reason)._value.get()


def _still_healthy(rt: Runtime) -> None:
    result = rt.invoke("ok", Invocation())
    assert (result.execution.outcome, result.execution.stdout) == ("ok", b"ok\n")


def test_hostile_guests_are_stopped_with_their_reason(signed: Signed, runtime: Runtime, tmp_path: Path) -> None:
    _publish(signed, tmp_path,
             ok=(wat_manifest("ok"), OK_WAT),
             loop=(wat_manifest("loop", timeout_ms=150), LOOP_START),
             loopstart=(wat_manifest("loopstart", timeout_ms=150), LOOP_START_FN),
             bomb=(wat_manifest("bomb", memory_mib=4), GROW_BOMB),
             grower=(wat_manifest("grower", memory_mib=4), GROW_QUIET),
             recurse=(wat_manifest("recurse"), RECURSE),
             flood=(wat_manifest("flood", output_kib=64, timeout_ms=2000), FLOOD))
    before = _violations("timeout")
    cases = {
        "loop": ("timeout", "deadline exceeded: stopped after 150 ms (spec.limits.timeoutMs)"),
        "loopstart": ("timeout", "deadline exceeded"),
        "bomb": ("memory", "memory limit reached (4 MiB, spec.limits.memoryMiB)"),
        "recurse": ("stack", "call stack exhausted"),
        "flood": ("output", "wrote more than 64 KiB to stdout or stderr"),
    }
    for name, (outcome, reason) in cases.items():
        ex = runtime.invoke(name, Invocation()).execution
        assert ex.outcome == outcome, (name, ex)
        assert reason in ex.reason, (name, ex.reason)
        assert ex.exit_code is None or outcome == "output"
        _still_healthy(runtime)
    assert _violations("timeout") == before + 2

    flood = runtime.invoke("flood", Invocation()).execution
    assert len(flood.stdout) == 64 * 1024 and flood.limits_hit == ("output",)
    quiet = runtime.invoke("grower", Invocation()).execution  # memory.grow fails, the guest exits normally
    assert quiet.outcome == "ok" and "memory" in quiet.limits_hit

    records = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    stopped = [r for r in records if r["event"] == "execution" and r["outcome"] != "ok"]
    assert {r["agent"] for r in stopped} == set(cases)
    assert all(r["limitsHit"] or r["outcome"] == "stack" for r in stopped)
    assert verify_chain(tmp_path / "audit.jsonl") == len(records)


def test_fuel_budget_stops_a_busy_guest(signed: Signed, runtime: Runtime, tmp_path: Path) -> None:
    _publish(signed, tmp_path, ok=(wat_manifest("ok"), OK_WAT),
             burner=(wat_manifest("burner", fuel=100_000, timeout_ms=5000), BURN_FUEL))
    ex = runtime.invoke("burner", Invocation()).execution
    assert ex.outcome == "fuel" and "used its 100000 units (spec.limits.fuel)" in ex.reason
    assert ex.guest_seconds < 1  # stopped by fuel long before the 5 s deadline
    _still_healthy(runtime)


def test_undeclared_tools_and_unknown_imports_refuse_to_instantiate(signed: Signed, runtime: Runtime,
                                                                    tmp_path: Path) -> None:
    _publish(signed, tmp_path, ok=(wat_manifest("ok"), OK_WAT),
             sneaky=(wat_manifest("sneaky"), UNDECLARED_TOOL),
             native=(wat_manifest("native"), UNKNOWN_MODULE),
             tooled=(wat_manifest("tooled", tools='["log.write", "clock.now_ms"]'), DECLARED_TOOL))
    with pytest.raises(Refused) as refused:
        runtime.invoke("sneaky", Invocation())
    assert refused.value.reason == "undeclared-tool"
    assert "imports tool 'log.write' from 'agentfactory', which its signed run contract does not declare" in str(
        refused.value)
    with pytest.raises(Refused, match=r"imports env\.system from unknown module 'env'"):
        runtime.invoke("native", Invocation())
    result = runtime.invoke("tooled", Invocation())  # declared and provided: linked, and it works
    assert result.execution.outcome == "ok" and result.execution.tool_log == b"hello from the guest"
    _still_healthy(runtime)


def test_a_declared_tool_the_node_does_not_provide_is_refused(signed: Signed, runtime: Runtime,
                                                              tmp_path: Path) -> None:
    wat = """(module (import "agentfactory" "kv.get" (func $get (param i32) (result i32)))
      (memory (export "memory") 1) (func (export "_start") (drop (call $get (i32.const 0)))))"""
    _publish(signed, tmp_path, wants=(wat_manifest("wants", tools='["kv.get"]'), wat))
    with pytest.raises(Refused, match=r"declares tool 'kv.get', which this node does not provide"):
        runtime.invoke("wants", Invocation())


def test_dangerous_tool_in_the_signed_contract_is_denied_by_policy(signed: Signed, runtime: Runtime,
                                                                    tmp_path: Path) -> None:
    wat = """(module (import "agentfactory" "shell.exec" (func $sh (param i32) (result i32)))
      (memory (export "memory") 1) (func (export "_start") (drop (call $sh (i32.const 0)))))"""
    _publish(signed, tmp_path, shell=(wat_manifest("shell", tools='["shell.exec"]'), wat))
    with pytest.raises(Refused) as refused:
        runtime.invoke("shell", Invocation())
    assert refused.value.reason == "unverified"
    assert '"shell.exec" is a dangerous tool' in str(refused.value)


def test_preopens_are_read_only_and_cannot_be_escaped(signed: Signed, tmp_path: Path) -> None:
    data = tmp_path / "agent-data"
    data.mkdir()
    (data / "hello.txt").write_text("hello from the host\n")
    (data / "escape").symlink_to("/etc/passwd")
    preopens = f'[{{"guestPath": "/data", "hostPath": "{data}", "readOnly": true}}]'
    manifest = wat_manifest("escaper", language="c", sources="[src/main.c]", memory_mib=8, preopens=preopens)
    publish(signed, tmp_path / "templates", {"escaper": (manifest, {"src/main.c": ESCAPE_C})})

    refusing = Runtime(signed.store, signed.trust, signed.engine, RuntimeConfig())
    try:
        with pytest.raises(Refused, match=r"does not let agents see .*agent-data.*allowed host folders: none"):
            refusing.invoke("escaper", Invocation())
    finally:
        refusing.close()

    rt = Runtime(signed.store, signed.trust, signed.engine, RuntimeConfig(host_roots=(tmp_path.resolve(),)))
    try:
        ex = rt.invoke("escaper", Invocation()).execution
    finally:
        rt.close()
    lines = ex.stdout.decode().splitlines()
    assert ex.outcome == "ok", ex
    assert len(lines) == 7, ex
    assert lines[0] == "read /data/hello.txt: OK 20 bytes: hello from the host"
    for line in lines[1:5]:  # .., relative, absolute outside, a symlink pointing out: all refused
        assert ": denied (" in line, line
    assert lines[5].startswith("write /data/hello.txt: denied")
    assert lines[6].startswith("write /data/new.txt: denied")
    assert (data / "hello.txt").read_text() == "hello from the host\n"
    assert not (data / "new.txt").exists()


def test_garbage_signed_as_wasm_is_refused_before_the_compiler(signed: Signed, runtime: Runtime,
                                                              tmp_path: Path) -> None:
    sign_raw(signed, tmp_path / "forged", "garbage", os.urandom(4096), wat_manifest("garbage"))
    with pytest.raises(Refused) as refused:
        runtime.invoke("garbage", Invocation())
    assert refused.value.reason == "bad-module"
    assert "not a valid WebAssembly module" in str(refused.value)
    assert refused.value.verdict is not None and refused.value.verdict.allowed  # the evidence itself was fine


def test_no_attested_run_contract_is_refused(signed: Signed, runtime: Runtime, tmp_path: Path) -> None:
    import wasmtime

    sign_raw(signed, tmp_path / "old", "old", wasmtime.wat2wasm(OK_WAT), wat_manifest("old"), contract=False)
    with pytest.raises(Refused) as refused:
        runtime.invoke("old", Invocation())
    assert refused.value.reason == "unverified"
    assert "has no attested run contract" in str(refused.value)
    assert "externalParameters.agent is missing" in str(refused.value)


def test_unsigned_and_tampered_modules_are_refused(signed: Signed, runtime: Runtime, tmp_path: Path) -> None:
    publish(signed, tmp_path / "unsigned", {"plain": (wat_manifest("plain"), {"src/main.wat": OK_WAT})}, sign=False)
    with pytest.raises(Refused) as refused:
        runtime.invoke("plain", Invocation())
    assert refused.value.reason == "unverified" and "signature: no signature for sha256:" in str(refused.value)

    _publish(signed, tmp_path, ok=(wat_manifest("ok"), OK_WAT))
    digest = signed.store.resolve("ok").digest
    blob = Path(signed.store.url.removeprefix("oci-layout:")) / "blobs" / "sha256" / digest.split(":")[1]
    blob.chmod(0o644)
    blob.write_bytes(blob.read_bytes().replace(b"ok\n", b"pwn"))
    with pytest.raises(Refused) as refused:
        runtime.invoke("ok", Invocation())
    assert refused.value.reason == "tampered"
    assert "digest:" in str(refused.value)
    records = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    denied = [r for r in records if r["event"] == "decision" and not r["allowed"]]
    assert [r["reason"] for r in denied] == ["unverified", "tampered"]


def test_tampered_cache_entry_is_rejected_and_recompiled(signed: Signed, tmp_path: Path) -> None:
    _publish(signed, tmp_path, ok=(wat_manifest("ok"), OK_WAT), loop=(wat_manifest("loop", timeout_ms=100), LOOP_START))
    config = RuntimeConfig(cache_dir=tmp_path / "cache", audit_log=tmp_path / "audit.jsonl")
    first = Runtime(signed.store, signed.trust, signed.engine, config)
    assert first.prepare("ok").module_source == "compiled"
    assert first.prepare("loop").module_source == "compiled"
    first.close()
    entries = {p.name.split("-")[0]: p for p in (tmp_path / "cache").glob("*.cwasm")}
    assert len(entries) == 2
    key = tmp_path / "cache" / "node.key"
    assert key.stat().st_mode & 0o777 == 0o600

    second = Runtime(signed.store, signed.trust, signed.engine, config)  # a restart: entries load from disk
    assert second.prepare("ok").module_source == "disk"
    second.close()

    ok_hex, loop_hex = (signed.store.resolve(n).digest.split(":")[1] for n in ("ok", "loop"))
    entry = entries[ok_hex]
    data = bytearray(entry.read_bytes())
    data[-100] ^= 0xFF  # native code changed on disk
    entry.write_bytes(bytes(data))
    before = _violations("cache-tampered")
    third = Runtime(signed.store, signed.trust, signed.engine, config)
    try:
        prepared = third.prepare("ok")
        assert prepared.module_source == "compiled"
        assert third.invoke("ok", Invocation()).execution.stdout == b"ok\n"
    finally:
        third.close()
    assert _violations("cache-tampered") == before + 1
    events = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert any(e["event"] == "cache" and "the HMAC does not match" in e["message"] for e in events)

    # A valid entry of another agent swapped in under this digest is bound to the wrong digest: rejected.
    entries[ok_hex].write_bytes(entries[loop_hex].read_bytes())
    fourth = Runtime(signed.store, signed.trust, signed.engine, config)
    try:
        assert fourth.prepare("ok").module_source == "compiled"
        assert fourth.invoke("ok", Invocation()).execution.stdout == b"ok\n"
    finally:
        fourth.close()
    assert _violations("cache-tampered") == before + 2


def test_env_allowlist_and_args(signed: Signed, runtime: Runtime, tmp_path: Path) -> None:
    env_c = ('#include <stdio.h>\n#include <stdlib.h>\nint main(int argc, char **argv) {\n'
             '  const char *v = getenv("GREETING"); const char *h = getenv("HOME");\n'
             '  printf("%s %s %d %s\\n", v ? v : "-", h ? h : "-", argc, argc > 1 ? argv[1] : "-");\n'
             '  return argc > 2 ? 3 : 0;\n}\n')
    manifest = wat_manifest("envy", language="c", sources="[src/main.c]", memory_mib=8, env='["GREETING"]')
    publish(signed, tmp_path / "templates", {"envy": (manifest, {"src/main.c": env_c})})
    ex = runtime.invoke("envy", Invocation(args=("one",), env={"GREETING": "hi"})).execution
    assert ex.stdout == b"hi - 2 one\n"  # HOME of this process is not passed
    assert runtime.invoke("envy", Invocation(args=("a", "b"))).execution.exit_code == 3
    with pytest.raises(InputError, match=r"HOME: not in the agent's environment allowlist \(GREETING"):
        runtime.invoke("envy", Invocation(env={"HOME": "/root"}))


def test_revoked_trust_is_enforced_when_the_verdict_expires(signed: Signed, tmp_path: Path) -> None:
    _publish(signed, tmp_path, ok=(wat_manifest("ok"), OK_WAT))
    rt = Runtime(signed.store, signed.trust, signed.engine, RuntimeConfig(verdict_ttl=0.0))
    try:
        assert rt.invoke("ok", Invocation()).execution.outcome == "ok"
        rt.trust = signed_store(tmp_path / "other-home").trust  # the node now trusts another key only
        with pytest.raises(Refused, match="which the trust policy does not list"):
            rt.invoke("ok", Invocation())
    finally:
        rt.close()
