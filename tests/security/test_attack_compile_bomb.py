"""Attack: a small module that is expensive, or impossible, to compile.

Cranelift's time and memory grow much faster than a function's size (many locals live across many
nested loops), `wat2wasm` does not validate, and nothing was remembered: a signed compile bomb held
a worker (and every core) per request for a minute, and an ill-typed module cost a compile on every
request before it was refused. Now the pipeline validates and compiles every module once under the
compile budget before signing (refusing with the numbers, recording them in the provenance), and a
node compiles in a bounded child process and remembers a refusal per digest.

The bomb below is about 8 KB and takes tens of seconds to compile; the tests set a 1 s budget.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import wasmtime
from helpers import write_template
from runtime_helpers import OK_WAT, Signed, publish, sign_raw, signed_store, wat_manifest

from agentfactory.dsse import parse_envelope
from agentfactory.evidence import collect
from agentfactory.intoto import SLSA_PROVENANCE_V1
from agentfactory.provenance import builder_and_source
from agentfactory.runspec import from_provenance
from agentfactory.store import OCILayoutStore
from pipelines.run import run_pipeline
from sandbox_runtime.runtime import Refused, Runtime, RuntimeConfig
from sandbox_runtime.sandbox import Invocation

pytestmark = pytest.mark.toolchain

SLACK = 1.5  # seconds for the compile child to start and be stopped, on a busy 2-core machine


def compile_bomb(locals_: int = 700, depth: int = 140) -> str:
    """One function: `locals_` i64 locals, all live across `depth` nested loops."""
    body = "".join(f"(local.set {i} (i64.add (local.get {i}) (local.get {(i + 1) % locals_})))"
                   for i in range(locals_))
    for j in range(depth):
        body = f"(loop $l{j} {body} (br_if $l{j} (i64.eqz (local.get {j % locals_}))))"
    return (f'(module (memory (export "memory") 1) (func $f (local {" ".join(["i64"] * locals_)}) {body}) '
            '(func (export "_start") (call $f)))')


ILL_TYPED = """(module (memory (export "memory") 1)
  (func $bad (result i32) (i64.const 1))
  (func (export "_start") (drop (call $bad))))"""
EXCEPTIONS = """(module (memory (export "memory") 1) (tag $oops)
  (func (export "_start") (throw $oops)))"""


@pytest.fixture
def budget_1s(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTFACTORY_COMPILE_SECONDS", "1")
    monkeypatch.setenv("AGENTFACTORY_COMPILE_MIB", "512")


def _pipeline(tmp_path: Path, name: str, source: str) -> tuple[object, OCILayoutStore, float]:
    write_template(tmp_path / "t", name, manifest=wat_manifest(name), files={"src/main.wat": source})
    store = OCILayoutStore(tmp_path / "store")
    started = time.monotonic()
    (result,) = run_pipeline(tmp_path / "t", store, jobs=1, run_tests=False).templates
    return result, store, time.monotonic() - started


def test_the_pipeline_refuses_a_compile_bomb_with_the_numbers(tmp_path: Path, budget_1s: None) -> None:
    r, store, took = _pipeline(tmp_path, "bomb", compile_bomb())
    assert r.status == "failed" and r.digest is None  # type: ignore[attr-defined]
    (error,) = r.errors  # type: ignore[attr-defined]
    assert "bomb (built module): compile check: compiling took more than its budget of 1 s" in error
    assert "MiB in use" in error and "the module is not signed or published" in error
    assert took < 1 + SLACK + 2, took  # the build itself is wat2wasm: fast
    assert store.list_agents() == []  # refused before signing and publication


def test_the_pipeline_refuses_a_module_over_its_memory_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTFACTORY_COMPILE_SECONDS", "60")
    monkeypatch.setenv("AGENTFACTORY_COMPILE_MIB", "40")
    r, _store, took = _pipeline(tmp_path, "bomb", compile_bomb())
    (error,) = r.errors  # type: ignore[attr-defined]
    assert "compile check: compiling needed more than its budget of 40 MiB of memory" in error
    assert took < 10, took


@pytest.mark.parametrize(("source", "why"), [
    (ILL_TYPED, "type mismatch: expected i32, found i64"),
    (EXCEPTIONS, "exceptions proposal not enabled"),
])
def test_the_pipeline_validates_every_module(tmp_path: Path, source: str, why: str) -> None:
    r, _store, _took = _pipeline(tmp_path, "invalid", source)
    (error,) = r.errors  # type: ignore[attr-defined]
    assert "invalid (built module): compile check: not a valid WebAssembly module for this platform:" in error
    assert why in error


def test_the_provenance_records_what_compiling_cost(signed: Signed, tmp_path: Path) -> None:
    publish(signed, tmp_path / "t", {"ok": (wat_manifest("ok"), {"src/main.wat": OK_WAT})})
    agent = signed.store.resolve("ok")
    statements = [json.loads(parse_envelope(doc, where).payload)
                  for where, doc in collect(signed.store, agent).attestations]
    (predicate,) = [s["predicate"] for s in statements if s["predicateType"] == SLSA_PROVENANCE_V1]
    record = predicate["buildDefinition"]["internalParameters"]["compile"]
    assert record["validated"] is True and record["budget"] == {"seconds": 10.0, "memoryMiB": 1024}
    assert 0 < record["seconds"] < 10 and 0 <= record["memoryMiB"] < 1024 and record["peakRssMiB"] > 0
    assert "exceptions" not in record["proposals"] and "simd" in record["proposals"]
    assert builder_and_source(predicate, "p")[0]  # the verifier's readers still read it
    assert from_provenance(predicate).limits.timeout_ms == 1000


@pytest.fixture
def signed(af_home: Path) -> Signed:
    return signed_store(af_home)


@pytest.fixture
def runtime(signed: Signed, budget_1s: None) -> Iterator[Runtime]:
    rt = Runtime(signed.store, signed.trust, signed.engine, RuntimeConfig())
    yield rt
    rt.close()


def test_the_node_stops_a_signed_compile_bomb_once_and_remembers(signed: Signed, runtime: Runtime,
                                                                 tmp_path: Path) -> None:
    sign_raw(signed, tmp_path / "forged", "bomb", wasmtime.wat2wasm(compile_bomb()), wat_manifest("bomb"))
    publish(signed, tmp_path / "t", {"ok": (wat_manifest("ok"), {"src/main.wat": OK_WAT})})
    runtime.modules.pool.nice = 0  # the verdict, not the priority (test_a_busy_node_... below): same on a busy CI
    started = time.monotonic()
    with pytest.raises(Refused) as first:
        runtime.invoke("bomb", Invocation())
    took = time.monotonic() - started
    assert first.value.reason == "compile-budget"
    assert "compiling took more than its budget of 1 s" in str(first.value)
    assert "AGENTFACTORY_COMPILE_SECONDS" in str(first.value)
    assert took < 1 + SLACK, took
    compiles = runtime.modules.pool.compiles

    started = time.monotonic()
    with pytest.raises(Refused) as again:
        runtime.invoke("bomb", Invocation())
    assert time.monotonic() - started < 0.5  # no compile: the verdict and the refusal are remembered
    assert again.value.reason == "compile-budget" and "not compiled again" in str(again.value)
    assert runtime.modules.pool.compiles == compiles
    assert runtime.invoke("ok", Invocation()).execution.outcome == "ok"  # the node is fine


def test_the_node_refuses_an_ill_typed_module_once(signed: Signed, runtime: Runtime, tmp_path: Path) -> None:
    sign_raw(signed, tmp_path / "forged", "bad", wasmtime.wat2wasm(ILL_TYPED), wat_manifest("bad"))
    for attempt in range(3):
        with pytest.raises(Refused) as refused:
            runtime.invoke("bad", Invocation())
        assert refused.value.reason == "bad-module"
        assert "type mismatch: expected i32, found i64" in str(refused.value)
        assert ("not compiled again" in str(refused.value)) == (attempt > 0)
    assert runtime.modules.pool.compiles == 0  # refused by the validator, before any compile child


def test_a_node_compiles_at_background_priority(monkeypatch: pytest.MonkeyPatch) -> None:
    """The node's compile children are niced: a bomb gets only the CPU the invocations leave idle."""
    import subprocess

    from agentfactory import wasmcompile

    seen: list[list[str]] = []
    real = subprocess.Popen

    def spy(argv: list[str], **kw: object) -> subprocess.Popen[bytes]:
        seen.append(list(argv))
        return real(argv, **kw)  # type: ignore[call-overload, no-any-return]

    monkeypatch.setattr(wasmcompile.subprocess, "Popen", spy)
    from sandbox_runtime.compilepool import BACKGROUND_NICE, CompilePool
    from sandbox_runtime.engine import Engines

    pool = CompilePool(Engines(), wasmcompile.CompileBudget(5.0, 256))
    pool.compile("sha256:" + "0" * 64, "s", wasmtime.wat2wasm(OK_WAT), fuel=False)
    assert BACKGROUND_NICE > 0 and seen[-1][-1] == str(BACKGROUND_NICE)
    payload, _ = wasmcompile.compile_bounded(wasmtime.wat2wasm(OK_WAT), False, wasmcompile.CompileBudget(5.0, 256))
    assert payload and seen[-1][-1] == "0"  # the pipeline's compile check is not niced


def test_a_busy_node_retries_a_starved_compile_instead_of_condemning_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Wall clock running out before the CPU budget is the node's load: "unavailable", never remembered."""
    from agentfactory import wasmcompile

    monkeypatch.setattr(wasmcompile, "NICE_WALL_FACTOR", 0.2)  # 0.2 s of wall clock for a 1 s CPU budget
    bomb = wasmtime.wat2wasm(compile_bomb())
    with pytest.raises(wasmcompile.CompileRefused) as starved:
        wasmcompile.compile_bounded(bomb, False, wasmcompile.CompileBudget(1.0, 1024), nice=5)
    assert starved.value.reason == "unavailable", starved.value
    assert "too busy to finish compiling" in str(starved.value) and "of its 1 s budget" in str(starved.value)
    with pytest.raises(wasmcompile.CompileRefused) as spent:  # the same bomb given its wall clock: the verdict
        monkeypatch.setattr(wasmcompile, "NICE_WALL_FACTOR", 30.0)
        wasmcompile.compile_bounded(bomb, False, wasmcompile.CompileBudget(1.0, 1024), nice=5)
    assert spent.value.reason == "over-budget", spent.value
