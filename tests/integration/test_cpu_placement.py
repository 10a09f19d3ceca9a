"""CPU placement of the services (agentfactory/cpuplace.py, sandbox-runtime/cpu_home.py): their threads on one
home CPU, and for the node runtime, long guests on any CPU.

`runtime serve` keeps its threads on one CPU, because its host work hands the GIL from thread to thread
dozens of times per invocation and each hand-off across CPUs costs a wake-up of the other CPU (3-6x the CPU
per trivial invocation, benchmarks/results/runtime.md). What must still hold, checked here on the real
server through /proc: every thread is at home while the node idles; a guest that runs long is let onto every
CPU the node may use (two compute-bound agents use two cores, and a spinner does not sit on the CPU the node
answers on) and comes home when it returns, trapped or not; a compile child gets every CPU; and a CPU the
process may not use is refused at start, naming the flag. `tlog serve` keeps its event loop and commit thread
on one CPU the same way (they hand every batch to each other).
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from admission_helpers import review, wasm_agent
from child_process import first_line
from runtime_helpers import (
    OK_WAT,
    Signed,
    publish,
    serve_process,
    sign_raw,
    signed_store,
    slow_to_compile,
    wait_until_ready,
    wat_manifest,
)

from agentfactory.errors import ConfigError
from sandbox_runtime.cpu_home import CpuHome

CPUS = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
needs_two = pytest.mark.skipif(len(CPUS) < 2 or not Path("/proc/self/task").is_dir(),
                               reason="CPU placement needs Linux and two CPUs or more")
SPIN = """(module
  (memory (export "memory") 1)
  (func (export "_start") (loop $forever (br $forever))))"""
BUDGET = {"AGENTFACTORY_COMPILE_SECONDS": "60", "AGENTFACTORY_COMPILE_MIB": "1024"}


def _cpus_of(pid: int) -> dict[int, frozenset[int]]:
    """Each thread of `pid` and the CPUs it may run on (/proc/PID/task/TID/status, Cpus_allowed_list)."""
    out: dict[int, frozenset[int]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            status = (task / "status").read_text()
        except (FileNotFoundError, ProcessLookupError):
            continue
        for line in status.splitlines():
            if line.startswith("Cpus_allowed_list:"):
                out[int(task.name)] = frozenset(_cpu_list(line.split(":", 1)[1].strip()))
    return out


class _BrokenPlacement(CpuHome):
    """A placement whose every sweep fails, as if /proc or the kernel refused it."""

    def __init__(self) -> None:
        super().__init__(None, frozenset())
        self.sweeps = 0

    def sweep(self) -> None:
        self.sweeps += 1
        raise OSError("no /proc here")


@pytest.mark.toolchain
def test_a_failing_placement_never_stops_the_deadlines(tmp_path: Path) -> None:
    """The epoch ticker also sweeps placement; were a sweep's error to end the ticker, no deadline would
    fire again and a spinning guest would hold its worker for good."""
    from sandbox_runtime.runtime import Runtime, RuntimeConfig
    from sandbox_runtime.sandbox import Invocation

    signed = signed_store(tmp_path / "home")
    publish(signed, tmp_path / "t", {"spin": (wat_manifest("spin", timeout_ms=200), {"src/main.wat": SPIN})})
    broken = _BrokenPlacement()
    rt = Runtime(signed.store, signed.trust, signed.engine, RuntimeConfig(cpu=broken))
    outcomes: list[str] = []

    def spin_twice() -> None:
        for _ in range(2):
            outcomes.append(rt.invoke("spin", Invocation()).execution.outcome)

    try:  # in a thread: without deadlines the guest would spin for good, and the test must fail, not hang
        runner = threading.Thread(target=spin_twice, daemon=True)
        runner.start()
        runner.join(timeout=60)
        assert outcomes == ["timeout", "timeout"], f"the guests were not stopped at their deadline: {outcomes}"
        assert broken.sweeps > 10 and rt.engines._thread.is_alive()
    finally:
        if not runner.is_alive():
            rt.close()


def _compile_children(pid: int, seen: list[frozenset[int]]) -> bool:
    """Record the CPUs of each compile child `pid` has now; whether there was one."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            children = (task / "children").read_text().split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        for child in children:
            try:
                if b"agentfactory.wasmcompile" in Path(f"/proc/{child}/cmdline").read_bytes():
                    seen.extend(_cpus_of(int(child)).values())
            except (FileNotFoundError, ProcessLookupError):
                continue
    return bool(seen)


def _cpu_list(text: str) -> set[int]:
    cpus: set[int] = set()
    for part in text.split(","):
        low, _, high = part.partition("-")
        cpus.update(range(int(low), int(high or low) + 1))
    return cpus


def _invoke(url: str, agent: str, conn: http.client.HTTPConnection | None = None) -> int:
    """POST an invocation; on `conn` (kept open, so the server's thread for it lives on) when given."""
    own = conn is None
    conn = conn or http.client.HTTPConnection(urlsplit(url).netloc, timeout=60)
    try:
        conn.request("POST", f"/v1/agents/{agent}/invoke", body=b"")
        reply = conn.getresponse()
        reply.read()
        return reply.status
    finally:
        if own:
            conn.close()


def _answers(netloc: str) -> bool:
    try:
        conn = http.client.HTTPConnection(netloc, timeout=5)
        conn.request("GET", "/healthz")
        return conn.getresponse().status == 200
    except OSError:
        return False


def _wait_for(condition: object, what: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return
        time.sleep(0.01)
    raise AssertionError(f"never saw {what}")


@pytest.mark.toolchain
@needs_two
def test_host_threads_stay_home_and_a_long_guest_may_use_every_cpu(tmp_path: Path) -> None:
    signed: Signed = signed_store(tmp_path / "home")
    publish(signed, tmp_path / "t", {"spin": (wat_manifest("spin", timeout_ms=1500), {"src/main.wat": SPIN}),
                                     "ok": (wat_manifest("ok"), {"src/main.wat": OK_WAT})})
    sign_raw(signed, tmp_path / "raw", "slow", slow_to_compile(400, 40), wat_manifest("slow"))
    with serve_process(signed, tmp_path, env=BUDGET, wait_ready=False) as node:
        started = json.loads(node.stderr[0])
        home, every = frozenset(started["hostCpu"]), frozenset(started["guestCpus"])
        assert len(home) == 1 and every == frozenset(CPUS), started
        compiling: list[frozenset[int]] = []  # the warm pool's compile children, seen while they run
        _wait_for(lambda: _compile_children(node.proc.pid, compiling), "a compile child of the node")
        assert compiling and all(cpus == every for cpus in compiling), compiling
        wait_until_ready(node.url, node.proc)
        assert _invoke(node.url, "ok") == 200  # wasmtime's own worker threads exist by now
        placed = _cpus_of(node.proc.pid)
        assert len(placed) > 3 and set(placed.values()) == {home}, placed

        answers: list[int] = []
        kept = http.client.HTTPConnection(urlsplit(node.url).netloc, timeout=60)  # its server thread stays
        spinner = threading.Thread(target=lambda: answers.append(_invoke(node.url, "spin", kept)))
        spinner.start()
        _wait_for(lambda: every in _cpus_of(node.proc.pid).values(), "the spinning guest's thread let out")
        assert sum(1 for cpus in _cpus_of(node.proc.pid).values() if cpus != home) == 1  # that thread only
        assert _invoke(node.url, "ok") == 200  # the node answers beside it
        spinner.join(timeout=60)
        assert answers == [422]  # stopped at its deadline: a trap, and the thread still comes home
        assert set(_cpus_of(node.proc.pid).values()) == {home}  # that thread, alive for the next request, too
        assert _invoke(node.url, "ok", kept) == 200
        kept.close()


@needs_two
def test_a_compile_child_gets_every_cpu_and_off_moves_nothing(tmp_path: Path) -> None:
    """In a child interpreter, so the test process itself is never pinned."""
    script = """
import json, os, subprocess, sys
from sandbox_runtime.cpu_home import CpuHome
off = CpuHome.choose("off")
off.pin_process()
before = sorted(os.sched_getaffinity(0))
cpu = CpuHome.choose("auto")
moved = cpu.pin_process()
probe = [sys.executable, "-c", "import os; print(sorted(os.sched_getaffinity(0)))"]
with cpu.unpinned():
    child = json.loads(subprocess.run(probe, capture_output=True, text=True, check=True).stdout)
plain = json.loads(subprocess.run(probe, capture_output=True, text=True, check=True).stdout)
now = sorted(os.sched_getaffinity(0))
# a thread started from a let-out thread inherits every CPU: the periodic sweep brings it home, and leaves
# alone a thread that is let out on purpose (inside `unpinned`)
import threading, time
ready, done = threading.Event(), threading.Event()
def stray():
    os.sched_setaffinity(0, cpu.allowed)
    ready.set()
    done.wait()
t = threading.Thread(target=stray)
t.start()
ready.wait()
stray_before = sorted(os.sched_getaffinity(t.native_id))
with cpu.unpinned():
    cpu._next_repin = 0.0
    cpu.sweep()
    starter = sorted(os.sched_getaffinity(0))
stray_after = sorted(os.sched_getaffinity(t.native_id))
done.set()
t.join()
cpu.unpin_process()
print(json.dumps({"before": before, "moved": moved, "child": child, "plain": plain,
                  "home": sorted(cpu.home), "now": now, "unpinned": sorted(os.sched_getaffinity(0)),
                  "stray_before": stray_before, "stray_after": stray_after, "starter": starter,
                  "strays": cpu.strays_repinned}))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    doc = json.loads(out.stdout)
    assert doc["before"] == CPUS  # "off" left the process alone
    assert doc["moved"] >= 1 and len(doc["home"]) == 1 and doc["home"][0] in CPUS
    assert doc["child"] == CPUS  # started inside `unpinned`: every CPU, as a compile child must have
    assert doc["plain"] == doc["home"] == doc["now"]  # anything else inherits the home CPU
    assert doc["unpinned"] == CPUS
    assert doc["stray_before"] == CPUS and doc["stray_after"] == doc["home"] and doc["strays"] == 1
    assert doc["starter"] == CPUS  # let out on purpose: not brought home by the sweep


@needs_two
@pytest.mark.skipif(shutil.which("taskset") is None, reason="needs taskset (util-linux)")
def test_auto_keeps_a_process_on_the_cpu_it_started_on() -> None:
    """Not the same CPU for every service: several nodes or logs on one machine, each allowed every CPU, stay
    where the scheduler started them (current_cpu reads it from /proc, checked here on each CPU in turn)."""
    probe = "from agentfactory.cpuplace import current_cpu; print(current_cpu())"
    for cpu in CPUS:
        out = subprocess.run(["taskset", "-c", str(cpu), sys.executable, "-c", probe], capture_output=True,
                             text=True, check=True)
        assert out.stdout.strip() == str(cpu)


def test_a_cpu_setting_is_checked() -> None:
    assert not CpuHome.choose("off").active
    for bad in ("two", "-1", "1.5", "٣", "", "1\n2", "x" * 100_000):
        with pytest.raises(ConfigError, match="--host-cpu") as refused:
            CpuHome.choose(bad)
        assert len(str(refused.value)) < 200  # a hostile value is named, not echoed whole
    if CPUS:
        with pytest.raises(ConfigError, match=f"--host-cpu {max(CPUS) + 1}: this process may run only on CPUs"):
            CpuHome.choose(str(max(CPUS) + 1))


@needs_two
def test_serve_refuses_a_cpu_it_may_not_use(tmp_path: Path) -> None:
    exe = str(Path(sys.executable).with_name("agentfactory"))
    done = subprocess.run([exe, "runtime", "serve", "--listen", "127.0.0.1:0", "--store",
                           f"oci-layout:{tmp_path / 'store'}", "--host-cpu", str(max(CPUS) + 1)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert f"--host-cpu {max(CPUS) + 1}" in done.stderr


def _hashedrekord() -> bytes:
    """A distinct, validly signed hashedrekord proposal: what makes the log start its commit thread."""
    import base64
    import hashlib

    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    digest = hashlib.sha256(os.urandom(16)).digest()
    signature = key.sign(digest, ec.ECDSA(Prehashed(hashes.SHA256())))
    return json.dumps({"apiVersion": "0.0.1", "kind": "hashedrekord", "spec": {
        "data": {"hash": {"algorithm": "sha256", "value": digest.hex()}},
        "signature": {"content": base64.b64encode(signature).decode(),
                      "publicKey": {"content": base64.b64encode(pem).decode()}}}}).encode()


def _started_at_home(argv: list[str], env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], str,
                                                                                  frozenset[int]]:
    """A service started with `argv`: the process, its listening address and the one home CPU its start line
    names (checked to be one this process may use)."""
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        assert proc.stderr is not None
        started = json.loads(first_line(proc))
        home = frozenset(started["hostCpu"])
        assert len(home) == 1 and home <= set(CPUS), started
        return proc, urlsplit(started["listening"]).netloc, home
    except BaseException:
        proc.kill()
        proc.wait(timeout=30)
        raise


@needs_two
def test_tlog_serve_keeps_its_threads_home_and_refuses_a_cpu_it_may_not_use(tmp_path: Path) -> None:
    exe = str(Path(sys.executable).with_name("agentfactory"))
    proc, netloc, home = _started_at_home([exe, "tlog", "serve", "--listen", "127.0.0.1:0", "--dir",
                                           str(tmp_path / "log")])
    try:
        _wait_for(lambda: _answers(netloc), "tlog serve answering /healthz")
        conn = http.client.HTTPConnection(netloc, timeout=30)
        conn.request("POST", "/api/v1/log/entries", body=_hashedrekord(), headers={"content-type": "application/json"})
        reply = conn.getresponse()
        assert reply.status == 201, reply.read()
        reply.read()
        conn.close()
        placed = _cpus_of(proc.pid)
        assert len(placed) >= 2 and set(placed.values()) == {home}, placed  # the commit thread among them
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    refused = subprocess.run([exe, "tlog", "serve", "--listen", "127.0.0.1:0", "--dir", str(tmp_path / "log"),
                              "--host-cpu", str(max(CPUS) + 1)], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and f"--host-cpu {max(CPUS) + 1}" in refused.stderr, refused.stderr


@needs_two
def test_admission_serve_keeps_its_threads_home_and_refuses_a_cpu_it_may_not_use(tmp_path: Path) -> None:
    """The webhook's event loop and the worker threads that judge a review not memoised hand each review to
    each other: on one CPU (benchmarks/results/admission.md), the worker threads started after the start line
    included."""
    exe = str(Path(sys.executable).with_name("agentfactory"))
    env = {**os.environ, "AGENTFACTORY_HOME": str(tmp_path / "home")}
    subprocess.run([exe, "admission", "certs", "--out", str(tmp_path / "tls")], check=True, capture_output=True,
                   env=env, timeout=120)
    argv = [exe, "admission", "serve", "--listen", "127.0.0.1:0", "--tls-cert", str(tmp_path / "tls/tls.crt"),
            "--tls-key", str(tmp_path / "tls/tls.key")]
    proc, netloc, home = _started_at_home(argv, env)
    try:
        import ssl

        trust = ssl.create_default_context(cafile=str(tmp_path / "tls/ca.crt"))

        # a digest never seen: verified in a worker thread (and denied: the store does not hold it)
        body = json.dumps(review(wasm_agent("wordstats@sha256:" + "0" * 64), group="agentfactory.dev",
                                 version="v1alpha1", kind="WasmAgent")).encode()

        def answers() -> bool:
            try:
                conn = http.client.HTTPSConnection(netloc, timeout=5, context=trust)
                conn.request("POST", "/validate", body=body, headers={"content-type": "application/json"})
                answer = json.loads(conn.getresponse().read())
                conn.close()
                return answer["response"]["allowed"] is False
            except OSError:
                return False

        _wait_for(answers, "admission serve answering /validate")
        placed = _cpus_of(proc.pid)
        assert len(placed) >= 3 and set(placed.values()) == {home}, placed  # the loop, tls-reload, workers
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    refused = subprocess.run([*argv, "--host-cpu", str(max(CPUS) + 1)], capture_output=True, text=True, timeout=120,
                             env=env)
    assert refused.returncode == 2 and f"--host-cpu {max(CPUS) + 1}" in refused.stderr, refused.stderr
    off = subprocess.Popen([*argv, "--host-cpu", "off"], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, env=env)
    try:
        assert off.stderr is not None and json.loads(first_line(off))["hostCpu"] == "off"
        assert set(_cpus_of(off.pid).values()) == {frozenset(CPUS)}
    finally:
        off.terminate()
        off.wait(timeout=30)
