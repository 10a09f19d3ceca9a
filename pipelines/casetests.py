"""Template test cases: `templates/<name>/tests/cases.yaml`, run against the built module.

A template whose cases fail is not published. Each case runs in a fresh wasmtime store of the
module the compile stage compiled under budget (compilecheck.py), on the node's engine settings,
with the template's memory limit and fuel, a wall-clock deadline (epoch interruption driven by a
timer, since signals cannot interrupt wasm, and the same deadline-aware WASI host calls as a node:
agentfactory.wasihost), and stdout/stderr captured in memory and capped as they are written. No
case touches the disk, and all the cases of a template share one time budget (MAX_TEST_SECONDS),
so a broken or hostile template cannot hang, fill or flood the build machine.

A component (a Python agent) is run the way a node runs it (agentfactory.wit.host): a fresh store per
case with the template's limits, the declared tools of the world that the test stage provides (log.write,
clock.now_ms, and http.fetch answered from the case's `http` list, never the network: casehttp.py),
`run(stdin)`; its ok text is the case's stdout (exit code 0) and its err text the stderr
(exit code 1). A component takes no arguments.
"""

from __future__ import annotations

import base64
import binascii
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from agentfactory import wasihost
from agentfactory.digest import sha256_file
from agentfactory.errors import InputError
from agentfactory.template import Template
from agentfactory.yamlsafe import load_yaml

from .casehttp import FIXTURE_SCHEMA, CaseHttp, check_fixtures

if TYPE_CHECKING:
    from .compilecheck import Compiled

CASES_FILE = "tests/cases.yaml"
MAX_TEST_SECONDS = 120.0  # wall clock for all the cases of one template
MIN_CASE_SECONDS = 0.05  # less left than this: the budget is spent
MAX_CASES_BYTES = 1024 * 1024
CASES_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["cases"],
    "properties": {"cases": {"type": "array", "maxItems": 500, "items": {
        "type": "object",
        "additionalProperties": False,
        "required": ["name"],
        "properties": {
            "name": {"type": "string", "minLength": 1},
            "stdin": {"type": "string"},
            "stdinBase64": {"type": "string", "contentEncoding": "base64"},
            "args": {"type": "array", "items": {"type": "string"}},
            "stdout": {"type": "string"},
            "stdoutContains": {"type": "array", "items": {"type": "string"}},
            "stderrContains": {"type": "array", "items": {"type": "string"}},
            "exitCode": {"type": "integer", "minimum": 0, "maximum": 255},
            "http": FIXTURE_SCHEMA,
        },
    }}},
}


@dataclass(frozen=True)
class CaseResult:
    name: str
    ok: bool
    reason: str = ""


def cases_sha(template: Template) -> str | None:
    path = template.folder / CASES_FILE
    return sha256_file(path) if path.is_file() else None


def load_cases(template: Template, display: str) -> list[dict[str, Any]]:
    path = template.folder / CASES_FILE
    if not path.exists():
        return []
    where = f"{display}/{CASES_FILE}"
    if path.is_symlink() or not path.is_file():
        raise InputError(where, "must be a regular file")
    if path.stat().st_size > MAX_CASES_BYTES:
        raise InputError(where, f"larger than {MAX_CASES_BYTES} bytes")
    doc = load_yaml(path.read_bytes(), where)
    import jsonschema  # here, not at the top: ~55 ms of every `pipeline run`, which reads cases only to build

    for err in jsonschema.Draft202012Validator(CASES_SCHEMA).iter_errors(doc.data):
        line = doc.line_of(tuple(err.absolute_path))
        raise InputError(f"{where}:{line}", err.message)
    for i, case in enumerate(doc.data["cases"]):
        if "stdin" in case and "stdinBase64" in case:
            raise InputError(f"{where}:{doc.line_of(('cases', i))}", "give stdin or stdinBase64, not both")
        try:
            _stdin(case)
        except (binascii.Error, ValueError):
            raise InputError(f"{where}:{doc.line_of(('cases', i, 'stdinBase64'))}",
                             "stdinBase64 is not valid base64") from None
        if "http" in case:
            if template.language != "python":
                raise InputError(f"{where}:{doc.line_of(('cases', i, 'http'))}", "http: the test stage answers "
                                 "http.fetch for component agents (language python); test a module's requests on "
                                 "a node")
            check_fixtures(template.http, case["http"], f"{where}:{doc.line_of(('cases', i, 'http'))}")
    names = [c["name"] for c in doc.data["cases"]]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        raise InputError(where, f"duplicate case names: {', '.join(sorted(dupes))}")
    cases: list[dict[str, Any]] = doc.data["cases"]
    return cases


class _Deadline:
    """Interrupts running wasm after `seconds` by bumping the engine's epoch."""

    def __init__(self, engine: Any, seconds: float) -> None:
        self._timer = threading.Timer(seconds, engine.increment_epoch)
        self._timer.daemon = True

    def __enter__(self) -> _Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._timer.cancel()


def run_cases(template: Template, compiled: Compiled, cases: list[dict[str, Any]],
              budget_seconds: float = MAX_TEST_SECONDS) -> list[CaseResult]:
    """Run every case; a failure says what differed. Cases past the template's time budget fail."""
    import wasmtime

    if compiled.component:
        return _run_component_cases(template, compiled, cases, budget_seconds)
    engine, module = compiled.engine, compiled.module
    linker = wasmtime.Linker(engine)
    wasihost.define_wasi(linker)
    cap = template.limits.max_output_kib * 1024
    ends = time.monotonic() + budget_seconds
    results = []
    for case in cases:
        left = ends - time.monotonic()
        if left < MIN_CASE_SECONDS:  # a case with only milliseconds left could never finish
            results.append(_spent(case, budget_seconds))
            continue
        seconds = min(template.limits.timeout_ms / 1000, left)
        out, err = wasihost.CappedOutput(cap), wasihost.CappedOutput(cap)
        wasi = wasmtime.WasiConfig()
        wasi.argv = [template.name, *case.get("args", [])]
        wasihost.stdin_bytes(wasi, _stdin(case))
        wasi.stdout_custom = out
        wasi.stderr_custom = err
        store = wasmtime.Store(engine)
        store.set_limits(memory_size=template.limits.memory_mib * 1024 * 1024, instances=1, tables=4, memories=1,
                         table_elements=100_000)  # as on a node (sandbox.run)
        if template.limits.fuel is not None:
            store.set_fuel(template.limits.fuel)
        store.set_epoch_deadline(1)
        store.set_wasi(wasi)
        deadline = wasihost.Deadline(seconds)
        wasihost.bind(deadline, (out, err))
        code, trap = 0, ""
        with _Deadline(engine, seconds):
            try:
                instance = linker.instantiate(store, module)
                start = instance.exports(store).get(template.entrypoint)
                if not isinstance(start, wasmtime.Func):
                    raise InputError(template.name, f"module does not export {template.entrypoint!r}")
                start(store)
            except wasmtime.ExitTrap as exc:
                code = exc.code
            except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
                trap = _trap_reason(exc, template, deadline.hit, seconds)
            finally:
                wasihost.bind(None)
        overflow = out.overflow or err.overflow
        results.append(_judge(case, code, trap, None if overflow else out.value(), None if overflow else err.value(),
                              cap))
        del store
    return results


def _spent(case: dict[str, Any], budget_seconds: float) -> CaseResult:
    return CaseResult(case["name"], False, f"not run: the test stage's budget of {budget_seconds:g} s for this "
                      "template's cases is spent")


def _run_component_cases(template: Template, compiled: Compiled, cases: list[dict[str, Any]],
                         budget_seconds: float) -> list[CaseResult]:
    """Each case in a fresh store of the component, `run(stdin)` under the template's limits."""
    import wasmtime

    from agentfactory.wit import host

    assert compiled.info is not None
    cap = template.limits.max_output_kib * 1024
    ends = time.monotonic() + budget_seconds
    results = []
    for case in cases:
        left = ends - time.monotonic()
        if left < MIN_CASE_SECONDS:  # a case with only milliseconds left could never finish
            results.append(_spent(case, budget_seconds))
            continue
        if case.get("args"):
            results.append(CaseResult(case["name"], False, "args: a component agent takes no arguments (its input "
                                      "is stdin, given to run)"))
            continue
        try:
            text = _stdin(case).decode("utf-8")
        except UnicodeDecodeError as exc:
            results.append(CaseResult(case["name"], False, f"stdin is not UTF-8 (byte {exc.start}): a component "
                                      "agent's input is a string"))
            continue
        log = host.CappedLog()
        http = CaseHttp(template.http, case.get("http", [])) if template.http is not None else None
        provided = {"log": host.log_tool(log.append), "now-ms": host.now_ms_tool()}
        if http is not None:
            provided["http-fetch"] = _http_tool(http)
        functions = {name: fn for name, fn in provided.items() if name in {t.wit_name for t in _world_tools(template)}}
        linker = host.make_linker(compiled.engine, functions)
        seconds = min(template.limits.timeout_ms / 1000, left)
        store = wasmtime.Store(compiled.engine)
        store.set_limits(**host.store_limits(compiled.info, template.limits.memory_mib))
        if template.limits.fuel is not None:
            store.set_fuel(template.limits.fuel)
        store.set_epoch_deadline(1)
        deadline = wasihost.Deadline(seconds)
        wasihost.bind(deadline)
        code, trap, out, err = 0, "", b"", b""
        with _Deadline(compiled.engine, seconds):
            try:
                tag, payload = host.call_run(linker, compiled.module, store, text)
                if tag == "ok":
                    out = payload.encode("utf-8")
                else:
                    code, err = 1, payload.encode("utf-8")
            except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
                trap = _component_trap_reason(exc, template, deadline.hit, seconds)
            except RuntimeError as exc:
                trap = str(exc)
            finally:
                wasihost.bind(None)
        overflow = len(out) > cap or len(err) > cap
        result = _judge(case, code, trap, None if overflow else out, None if overflow else err, cap)
        unused = http.unused() if http is not None else []
        if result.ok and unused:
            result = CaseResult(case["name"], False, f"http: the agent never requested {', '.join(unused)}")
        results.append(result)
        del store
    return results


def _http_tool(http: CaseHttp) -> Any:
    """The WIT `http-fetch` of the test stage: the case's answers (casehttp.py) as `response` records."""
    from agentfactory.wit import host

    def http_fetch(_store: Any, req: Any) -> Any:
        try:
            status, headers, body = http.fetch(str(req.method), str(req.url),
                                               [(str(n), str(v)) for n, v in req.headers],
                                               bytes(req.body) if req.body is not None else None)
        except ValueError as exc:
            return str(exc)
        return host.response_record(status, headers, body)
    return http_fetch


def _component_trap_reason(exc: Exception, template: Template, deadline_hit: bool, seconds: float) -> str:
    """As _trap_reason, for a trap inside a component call (which wasmtime reports without a trap code)."""
    from agentfactory.wit import host

    kind = host.trap_kind(exc)
    if deadline_hit or kind == "interrupt":
        if seconds < template.limits.timeout_ms / 1000:
            return f"deadline exceeded (the test stage's budget left {seconds:.1f} s for this case)"
        return f"deadline exceeded (spec.limits.timeoutMs = {template.limits.timeout_ms})"
    if kind == "fuel":
        return f"out of fuel (spec.limits.fuel = {template.limits.fuel})"
    return _trap_reason(exc, template, False, seconds)


def _world_tools(template: Template) -> tuple[Any, ...]:
    from agentfactory import wit

    return wit.tools_for(template.tools)


def _stdin(case: dict[str, Any]) -> bytes:
    """`stdin` as UTF-8 text, or `stdinBase64` for bytes YAML cannot carry (invalid UTF-8)."""
    if "stdinBase64" in case:
        return base64.b64decode(case["stdinBase64"], validate=True)
    return str(case.get("stdin", "")).encode()


def _trap_reason(exc: Exception, template: Template, deadline_hit: bool, seconds: float) -> str:
    """Say why the guest stopped, in the template's terms where we can."""
    import wasmtime

    code = getattr(exc, "trap_code", None)
    if deadline_hit or code == wasmtime.TrapCode.INTERRUPT:
        if seconds < template.limits.timeout_ms / 1000:
            return f"deadline exceeded (the test stage's budget left {seconds:.1f} s for this case)"
        return f"deadline exceeded (spec.limits.timeoutMs = {template.limits.timeout_ms})"
    if code == wasmtime.TrapCode.OUT_OF_FUEL:
        return f"out of fuel (spec.limits.fuel = {template.limits.fuel})"
    if code is not None:
        return f"wasm trap {code.name.lower()}"
    lines = [line for line in str(exc).splitlines() if line.strip()]
    return lines[-1].strip() if lines else type(exc).__name__


def _judge(case: dict[str, Any], code: int, trap: str, out: bytes | None, err: bytes | None,
           cap: int) -> CaseResult:
    name = case["name"]
    if trap:
        return CaseResult(name, False, f"trapped: {trap}")
    if out is None or err is None:
        return CaseResult(name, False, f"wrote more than the {cap}-byte output limit")
    stdout, stderr = out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
    want_code = case.get("exitCode", 0)
    if code != want_code:
        return CaseResult(name, False, f"exit code {code}, expected {want_code}; stderr: {stderr[:200]!r}")
    if "stdout" in case and stdout != case["stdout"]:
        return CaseResult(name, False, f"stdout {_clip(stdout)}, expected {_clip(case['stdout'])}")
    for needle in case.get("stdoutContains", []):
        if needle not in stdout:
            return CaseResult(name, False, f"stdout {_clip(stdout)} does not contain {needle!r}")
    for needle in case.get("stderrContains", []):
        if needle not in stderr:
            return CaseResult(name, False, f"stderr {_clip(stderr)} does not contain {needle!r}")
    return CaseResult(name, True)


def _clip(text: str, n: int = 120) -> str:
    return repr(text if len(text) <= n else text[:n] + "…")
