"""Component agents through the real node runtime: verify, check against the world, compile (cached with an
HMAC), run under the contract's limits, count and audit; the same path as modules.

The components are small hand-written ones (tests/component_helpers.py), signed as an insider would with a
real keyring into a real OCI layout (runtime_helpers.sign_raw): the runtime must hold whatever was signed.
The real Python agent is in test_python_agent.py.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from component_helpers import ECHO, ERR, GROW, LOOP, big, component, log_then, manifest
from runtime_helpers import Signed, sign_raw, signed_store

from agentfactory.errors import InputError
from agentfactory.metrics import WASI_VIOLATIONS
from sandbox_runtime.runtime import Compiling, Refused, Runtime, RuntimeConfig
from sandbox_runtime.sandbox import Invocation


@pytest.fixture
def signed(af_home: Path) -> Signed:
    return signed_store(af_home)


@pytest.fixture
def runtime(signed: Signed, tmp_path: Path) -> Iterator[Runtime]:
    rt = Runtime(signed.store, signed.trust, signed.engine,
                 RuntimeConfig(cache_dir=tmp_path / "cache", audit_log=tmp_path / "audit.jsonl"))
    yield rt
    rt.close()


def _sign(signed: Signed, tmp_path: Path, name: str, data: bytes, **contract: object) -> str:
    return sign_raw(signed, tmp_path / "templates", name, data, manifest(name, **contract))  # type: ignore[arg-type]


def _audit(tmp_path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]


def test_a_component_runs_like_a_module(signed: Signed, runtime: Runtime, tmp_path: Path) -> None:
    _sign(signed, tmp_path, "echo", component(log_then(ECHO), uses_log=True))
    _sign(signed, tmp_path, "fails", component(ERR))
    result = runtime.invoke("echo", Invocation(stdin="héllo 😀".encode()))
    ex = result.execution
    assert (ex.outcome, ex.exit_code, ex.stdout, ex.stderr) == ("ok", 0, "héllo 😀".encode(), b"")
    assert ex.tool_log == "héllo 😀\n".encode()
    failed = runtime.invoke("fails", Invocation(stdin=b"no such ticket")).execution
    assert (failed.outcome, failed.exit_code, failed.stderr, failed.stdout) == ("error", 1, b"no such ticket", b"")
    events = [e for e in _audit(tmp_path) if e["event"] == "execution"]
    assert [(e["agent"], e["outcome"]) for e in events] == [("echo", "ok"), ("fails", "error")]


def test_limits_of_the_contract_hold_for_components(signed: Signed, runtime: Runtime, tmp_path: Path) -> None:
    _sign(signed, tmp_path, "spin", component(LOOP), timeout_ms=200)
    _sign(signed, tmp_path, "grow", component(GROW), memory_mib=2)
    _sign(signed, tmp_path, "flood", component(big(200_000), pages=5), output_kib=64)
    before = WASI_VIOLATIONS.labels(reason="timeout")._value.get()
    spin = runtime.invoke("spin", Invocation()).execution
    assert spin.outcome == "timeout" and "200 ms" in spin.reason and spin.limits_hit == ("timeout",)
    assert WASI_VIOLATIONS.labels(reason="timeout")._value.get() == before + 1
    grown = runtime.invoke("grow", Invocation()).execution
    assert grown.outcome == "ok" and int(grown.stdout) * 65536 <= 2 * 1024 * 1024  # memory.grow failed at 2 MiB
    flood = runtime.invoke("flood", Invocation()).execution
    assert flood.outcome == "output" and len(flood.stdout) == 64 * 1024 and "maxOutputKiB" in flood.reason


def test_a_component_takes_one_utf8_input(signed: Signed, runtime: Runtime, tmp_path: Path) -> None:
    _sign(signed, tmp_path, "echo", component(ECHO))
    with pytest.raises(InputError, match="takes no arguments"):
        runtime.invoke("echo", Invocation(args=("-d",)))
    with pytest.raises(InputError, match="UTF-8"):
        runtime.invoke("echo", Invocation(stdin=b"\xff\xfe"))


def test_compiled_components_are_cached_with_an_hmac(signed: Signed, tmp_path: Path) -> None:
    _sign(signed, tmp_path, "echo", component(ECHO))
    config = RuntimeConfig(cache_dir=tmp_path / "cache", audit_log=tmp_path / "audit.jsonl")
    first = Runtime(signed.store, signed.trust, signed.engine, config)
    assert first.prepare("echo").module_source == "compiled"
    first.close()
    [entry] = (tmp_path / "cache").glob("*.cwasm")
    second = Runtime(signed.store, signed.trust, signed.engine, config)
    try:
        assert second.prepare("echo").module_source == "disk"
        assert second.invoke("echo", Invocation(stdin=b"again")).execution.stdout == b"again"
    finally:
        second.close()
    data = bytearray(entry.read_bytes())
    data[-64] ^= 0xFF
    entry.write_bytes(bytes(data))
    before = WASI_VIOLATIONS.labels(reason="cache-tampered")._value.get()
    third = Runtime(signed.store, signed.trust, signed.engine, config)
    try:
        assert third.prepare("echo").module_source == "compiled"
    finally:
        third.close()
    assert WASI_VIOLATIONS.labels(reason="cache-tampered")._value.get() == before + 1


def test_a_component_compiles_off_the_request_path(signed: Signed, tmp_path: Path) -> None:
    _sign(signed, tmp_path, "echo", component(ECHO))
    rt = Runtime(signed.store, signed.trust, signed.engine,
                 RuntimeConfig(cache_dir=tmp_path / "cache", background_compile=True))
    try:
        with pytest.raises(Compiling) as first:
            rt.invoke("echo", Invocation(stdin=b"x"))
        assert first.value.reason == "compiling" and "echo@sha256:" in str(first.value)
        for _ in range(600):  # the background compile of a small component takes well under a second
            try:
                result = rt.invoke("echo", Invocation(stdin=b"x"))
                break
            except Compiling:
                time.sleep(0.05)
        else:
            pytest.fail("the component never finished compiling")
        assert result.execution.stdout == b"x"
    finally:
        rt.close()


def test_a_contract_for_modules_does_not_run_a_component(signed: Signed, runtime: Runtime, tmp_path: Path) -> None:
    _sign(signed, tmp_path, "started", component(ECHO), entrypoint="_start")
    with pytest.raises(Refused) as info:
        runtime.prepare("started")
    assert info.value.reason == "world-mismatch" and "entrypoint is '_start'" in str(info.value)
