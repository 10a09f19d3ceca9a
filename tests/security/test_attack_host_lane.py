"""Attack: a signed agent's guest code holds the node's sandbox-creation lane, so no other agent can start.

Sandbox creation and teardown run one thread at a time (sandbox.HOST_LANE) so that worker threads do not
hand the GIL to each other at every wasmtime call. Guest code must never run inside that lane: a guest
spinning until its deadline there would stall every other invocation on the node for that long. Guest code
runs in two places, the entrypoint and a module's start function (run while it is instantiated), so a
module with a start section is instantiated outside the lane, and only a module whose bytes were read and
hold no start section is instantiated inside it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from runtime_helpers import OK_WAT, Signed, publish, signed_store, wat_manifest

from agentfactory.wasm import ModuleInfo, inspect_any
from sandbox_runtime.runtime import Runtime, RuntimeConfig
from sandbox_runtime.sandbox import Invocation

pytestmark = pytest.mark.toolchain

SPIN_IN_START = """(module
  (memory (export "memory") 1)
  (func $spin (loop $forever (br $forever)))
  (start $spin)
  (func (export "_start")))"""
SPIN_IN_ENTRY = """(module
  (memory (export "memory") 1)
  (func (export "_start") (loop $forever (br $forever))))"""


@pytest.fixture
def signed(af_home: Path) -> Signed:
    return signed_store(af_home)


@pytest.fixture
def runtime(signed: Signed) -> Iterator[Runtime]:
    rt = Runtime(signed.store, signed.trust, signed.engine, RuntimeConfig())
    yield rt
    rt.close()


def test_a_start_section_is_read_and_keeps_instantiation_out_of_the_lane(signed: Signed, runtime: Runtime,
                                                                          tmp_path: Path) -> None:
    publish(signed, tmp_path / "t", {"starter": (wat_manifest("starter"), {"src/main.wat": SPIN_IN_START}),
                                     "ok": (wat_manifest("ok"), {"src/main.wat": OK_WAT})})
    starter, ok = runtime.prepare("starter"), runtime.prepare("ok")
    assert starter.linked.starts and not ok.linked.starts
    for name, want in (("starter", True), ("ok", False)):
        _, data = signed.store.fetch_wasm(name)
        info = inspect_any(data, name)
        assert isinstance(info, ModuleInfo) and info.start is want


@pytest.mark.parametrize("wat", [SPIN_IN_START, SPIN_IN_ENTRY], ids=["start-function", "entrypoint"])
def test_a_guest_spinning_to_its_deadline_never_stalls_another_agent(signed: Signed, runtime: Runtime,
                                                                    tmp_path: Path, wat: str) -> None:
    publish(signed, tmp_path / "t", {"spinner": (wat_manifest("spinner", timeout_ms=2000), {"src/main.wat": wat}),
                                     "ok": (wat_manifest("ok"), {"src/main.wat": OK_WAT})})
    runtime.prepare("spinner")
    runtime.prepare("ok")
    outcome: list[str] = []
    spinner = threading.Thread(target=lambda: outcome.append(runtime.invoke("spinner", Invocation())
                                                             .execution.outcome))
    spinner.start()
    time.sleep(0.3)  # the spinner is in its guest code now (its deadline is 2 s away)
    assert spinner.is_alive()
    for _ in range(5):
        ex = runtime.invoke("ok", Invocation()).execution
        assert (ex.outcome, ex.stdout) == ("ok", b"ok\n"), ex
    assert spinner.is_alive(), "the other agent's invocations waited for the spinner's deadline"
    spinner.join()
    assert outcome == ["timeout"]
