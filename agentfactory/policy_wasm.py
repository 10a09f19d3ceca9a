"""The policy-engine port backed by OPA's own Wasm compilation, evaluated in this process by wasmtime.

The policies are compiled by the real OPA (`opa build -t wasm`, the binary `make tools` builds) into one
Wasm module with an entrypoint per policy (`agentfactory/<policy>/decision`). The module is evaluated here
through OPA's Wasm ABI (1.2+: one `opa_eval` call per decision), with the policy data (data.json and the
command's config overrides) parsed into the instance once. A decision costs about a fifth of regopy's
(benchmarks/results/policy.md), and its semantics are OPA's: the planner and the value library are OPA's
code, and the differential test holds it to `opa eval` on the whole corpus.

What the host supplies: OPA leaves a few builtins to the embedder. This engine implements those the
policies use, as OPA's Go implementation behaves (`sprintf` by agentfactory.gofmt; `regex.split` and
`regex.replace` with RE2 itself, as Go's regexp: the same syntax and classes, and linear time whatever the
input). A module that needs any other host builtin is refused when it is loaded, naming it, instead of
failing later at a decision.

The module's machine code (wasmtime's serialization, which is only loaded from a trusted source) is cached
like regopy's bundles (policy_cache: HMAC-tagged, refused and rebuilt when tampered), keyed by the OPA
version, the policy files, the entrypoints, wasmtime's version and the host; the data is not compiled in,
so config overrides never need a compile. Decisions fail closed: a module that does not load, a trap, a
builtin error, memory past MAX_MEMORY_BYTES, an undefined or misshapen decision all deny with the reason,
and the instance is rebuilt after any failure. Each thread evaluates in its own instance (a wasmtime
store is single-threaded); the module's machine code is shared.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import hashlib
import json
import os
import subprocess
import tarfile
import tempfile
import threading
from pathlib import Path
from typing import Any, cast

from .distversion import installed_version
from .errors import ConfigError
from .gofmt import FormatError, loads_numbers_as_text, sprintf
from .policy import (
    POLICY_NAMES,
    Decision,
    PolicyEngine,
    PolicyError,
    TestReport,
    default_policy_dir,
    load_policy_data,
    refused_up_front,
)
from .policy_bundle import BUNDLE_ROOT, bundle_files, policy_revision
from .policy_cache import PolicyCache, cache_root, enabled

ENTRYPOINTS = tuple(f"{BUNDLE_ROOT}/{p}/decision" for p in POLICY_NAMES)
WASM_FORMAT = "agentfactory-opa-wasm/1"
MAX_MODULE_BYTES = 32 * 1024 * 1024
MAX_MEMORY_BYTES = 256 * 1024 * 1024  # an instance's linear memory: the heap of one decision and the data
COMPILE_TIMEOUT_S = 120
_PAGE = 65536
_ABI = (1, 2)  # opa_eval (one call per decision) came with ABI 1.2
_EXPORTS = ("opa_eval", "opa_malloc", "opa_json_parse", "opa_json_dump", "opa_heap_ptr_get", "builtins",
            "entrypoints")
_libc = ctypes.CDLL(None)
_strnlen = _libc.strnlen
_strnlen.argtypes = (ctypes.c_void_p, ctypes.c_size_t)
_strnlen.restype = ctypes.c_size_t


class WasmPolicyError(Exception):
    """One decision could not be evaluated (it is refused; the engine stays usable)."""


@functools.lru_cache(maxsize=256)
def re2_pattern(pattern: str) -> Any:
    """A policy's pattern compiled by RE2 (google-re2), the engine Go's regexp and so OPA's regex builtins use.

    Not Python's `re`: it reads `\\s`, `\\d`, `\\w` as Unicode (U+2028 is a space to it, not to RE2), and it
    backtracks, so `/+$` against 64 KiB of `/` took 9 s (quadratic) where RE2 takes microseconds. A pattern
    RE2 does not accept is an error, so the decision is refused.
    """
    import re2

    options = re2.Options()
    options.log_errors = False  # the error is raised (and reported by the decision), not printed
    try:
        return re2.compile(pattern, options)
    except re2.error as exc:
        raise WasmPolicyError(f"pattern {pattern[:60]!r} is not a regular expression RE2 accepts: {exc}") from None


def _regex_split(pattern: str, text: str) -> list[str]:
    """Go's regexp.Split(text, -1), which OPA's regex.split is: Python's re.split would also return what
    capturing groups matched, and keeps empty matches that Go drops."""
    compiled = re2_pattern(pattern)
    if pattern and not text:
        return [""]
    pieces: list[str] = []
    begin = end = 0
    previous_end = -1
    for match in compiled.finditer(text):
        start, stop = match.span()
        if start == stop and start == previous_end:  # an empty match abutting the previous match: Go skips it
            continue
        previous_end = stop
        end = start
        if stop != 0:
            pieces.append(text[begin:end])
        begin = stop
    if end != len(text):
        pieces.append(text[begin:])
    return pieces


def _regex_replace(text: str, pattern: str, value: str) -> str:
    if "$" in value or "\\" in value:  # Go's $1 expansion and Python's \1 differ: not reproduced
        raise WasmPolicyError(f"regex.replace with a replacement holding $ or \\ ({value[:40]!r}) is not supported "
                              "by this engine")
    return str(re2_pattern(pattern).sub(lambda _m: value, text))


def _sprintf(template: str, args: Any) -> str:
    if not isinstance(template, str) or not isinstance(args, list):
        raise WasmPolicyError("sprintf needs a string and an array")
    return sprintf(template, args)


# name -> (arity, implementation taking the arguments as JSON values with numbers kept as text)
HOST_BUILTINS: dict[str, tuple[int, Any]] = {
    "sprintf": (2, _sprintf),
    "regex.split": (2, _regex_split),
    "regex.replace": (3, _regex_replace),
}


def opa_version(opa: Path) -> str:
    proc = subprocess.run([str(opa), "version"], capture_output=True, text=True, timeout=60, check=False)
    first = (proc.stdout or "").splitlines()[:1]
    if proc.returncode != 0 or not first or not first[0].startswith("Version: "):
        raise PolicyError(f"{opa} version: exit {proc.returncode}: {(proc.stderr or proc.stdout)[:300]!r}")
    return first[0].removeprefix("Version: ").strip()


def compile_key(folder: Path, version: str) -> str:
    """What the module and its machine code are compiled from: OPA's version, each policy file (not data.json),
    the entrypoints, and the wasmtime and host the machine code is for."""
    host = os.uname()
    parts = {"format": WASM_FORMAT, "opa": version, "entrypoints": list(ENTRYPOINTS),
             "wasmtime": installed_version("wasmtime"), "machine": host.machine, "system": host.sysname,
             "sources": [(p.name, hashlib.sha256(p.read_bytes()).hexdigest()) for p in bundle_files(folder)
                         if p.suffix == ".rego"]}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def compile_policies(folder: Path, opa: Path) -> bytes:
    """policy.wasm of `opa build -t wasm` over the folder's policies (their tests and data.json left out)."""
    sources = [str(p) for p in bundle_files(folder) if p.suffix == ".rego"]
    with tempfile.TemporaryDirectory(prefix="agentfactory-opa-wasm-") as tmp:
        out = Path(tmp) / "bundle.tar.gz"
        cmd = [str(opa), "build", "-t", "wasm", *(a for e in ENTRYPOINTS for a in ("-e", e)), "-o", str(out),
               *sources]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=COMPILE_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            raise PolicyError(f"opa build -t wasm of {folder} did not finish within {COMPILE_TIMEOUT_S} s") from None
        if proc.returncode != 0:
            raise PolicyError(f"opa build -t wasm of {folder} failed (exit {proc.returncode}): "
                              f"{(proc.stderr or proc.stdout).strip()[:2000]}")
        return _policy_wasm(out)


def _policy_wasm(bundle: Path) -> bytes:
    """The /policy.wasm member of an OPA bundle, bounded in size."""
    with tarfile.open(bundle, "r:gz") as tar:
        for member in tar:
            if member.name.lstrip("/") == "policy.wasm" and member.isfile():
                if member.size > MAX_MODULE_BYTES:
                    raise PolicyError(f"{bundle}: policy.wasm is {member.size} bytes, more than {MAX_MODULE_BYTES}")
                f = tar.extractfile(member)
                if f is not None:
                    return f.read()
    raise PolicyError(f"{bundle}: opa build wrote no policy.wasm")


class _Native:
    """The C calls of a decision, bound once more through a `ctypes.PyDLL` handle that keeps the GIL.

    wasmtime-py releases the GIL around every C call, and a decision made through its `Func.__call__` is some
    thirty of them (the function's type, each parameter's, the memory's address and size): with two threads
    deciding, each release hands the GIL to the other thread, and the CPU per decision doubled (benchmarks/
    results/policy.md). Here the short calls keep it; `opa_eval`, the evaluation, is called through wasmtime-py's
    own handle, which releases it, so another thread's Python runs meanwhile; the ABI's short functions that
    the host builtins call (a few µs each) keep it. The signatures are wasmtime-py's.
    """

    def __init__(self) -> None:
        from wasmtime import _bindings, _ffi

        keep = ctypes.PyDLL(_ffi.dll._name)

        def bound(name: str) -> Any:
            function = getattr(keep, name)
            declared = getattr(_bindings, "_" + name)
            function.argtypes, function.restype = declared.argtypes, declared.restype
            return function

        self.memory_data = bound("wasmtime_memory_data")
        self.memory_data_size = bound("wasmtime_memory_data_size")
        self.func_call = _bindings._wasmtime_func_call  # releases the GIL: the evaluation itself
        self.func_call_short = bound("wasmtime_func_call")  # keeps it: opa_malloc, opa_json_parse and _dump
        self.val_array = _ffi.wasmtime_val_t * 7
        self.result_array = _ffi.wasmtime_val_t * 1
        self.trap_pointer = ctypes.POINTER(_ffi.wasm_trap_t)


@functools.lru_cache(maxsize=1)
def _native() -> _Native:
    return _Native()


class _Instance:
    """One wasmtime store with the policy module instantiated and the data parsed: one thread's evaluator."""

    def __init__(self, engine: OPAWasmEngine) -> None:
        import wasmtime

        self.engine = engine
        self.store = store = wasmtime.Store(engine.wasm_engine)
        store.set_limits(memory_size=MAX_MEMORY_BYTES)
        memory_type = next((i.type for i in engine.module.imports if i.name == "memory"), None)
        if not isinstance(memory_type, wasmtime.MemoryType):
            raise PolicyError("the policy module imports no memory (not an OPA Wasm module?)")
        pages = wasmtime.Limits(memory_type.limits.min, MAX_MEMORY_BYTES // _PAGE)
        self.memory = wasmtime.Memory(store, wasmtime.MemoryType(pages))
        self.failure: BaseException | None = None
        self.raised: BaseException | None = None
        self._n = _native()
        self._context = store._context()
        self._memory_ref = ctypes.byref(self.memory._memory)
        externs: list[Any] = []
        i32 = wasmtime.ValType.i32()
        for imp in engine.module.imports:
            name = imp.name or ""
            if name == "memory":
                externs.append(self.memory)
            elif name == "opa_abort":
                externs.append(wasmtime.Func(store, wasmtime.FuncType([i32], []), self._abort))
            elif name.startswith("opa_builtin") and name[-1].isdigit():
                arity = int(name[-1])
                externs.append(wasmtime.Func(store, wasmtime.FuncType([i32] * (2 + arity), [i32]), self._builtin))
            elif name == "opa_println":
                externs.append(wasmtime.Func(store, wasmtime.FuncType([i32], []), lambda _a: None))
            else:
                raise PolicyError(f"the policy module imports {imp.module}.{imp.name}, which this engine does not "
                                  "provide")
        instance = wasmtime.Instance(store, engine.module, externs)
        exports = self.exports = cast(Any, instance.exports(store))  # the ABI's functions: checked by name below
        missing = [n for n in _EXPORTS if n not in exports]
        if missing:
            raise PolicyError(f"the policy module does not export {', '.join(missing)} (not an OPA Wasm module?)")
        self._eval = exports["opa_eval"]
        self._malloc = exports["opa_malloc"]
        self._parse = exports["opa_json_parse"]
        self._dump = exports["opa_json_dump"]
        self.builtins = self._json(exports["builtins"](store))
        self.entrypoints = self._json(exports["entrypoints"](store))
        raw = json.dumps(engine.data, ensure_ascii=False, allow_nan=False).encode("utf-8")
        self.data = self._value(raw)
        self.base = exports["opa_heap_ptr_get"](store)
        self.builtin_names = {v: k for k, v in self.builtins.items()}

    # --- memory ----------------------------------------------------------------------------------

    def _address(self) -> int:
        return ctypes.cast(self._n.memory_data(self._context, self._memory_ref), ctypes.c_void_p).value or 0

    def _size(self) -> int:
        return int(self._n.memory_data_size(self._context, self._memory_ref))

    def _text(self, addr: int) -> bytes:
        """The NUL-terminated string at `addr`, which must end inside the memory."""
        size = self._size()
        if not 0 <= addr < size:
            raise WasmPolicyError(f"the module returned address {addr}, outside its {size}-byte memory")
        start = self._address() + addr
        n = _strnlen(start, size - addr)
        if n == size - addr:
            raise WasmPolicyError("the module returned a string without its end inside its memory")
        return ctypes.string_at(start, n)

    def _write(self, addr: int, raw: bytes) -> None:
        need = addr + len(raw) + _PAGE
        size = self._size()
        if need > size:
            pages = -(-(need - size) // _PAGE)
            if size + pages * _PAGE > MAX_MEMORY_BYTES:
                raise WasmPolicyError(f"the input ({len(raw)} bytes) does not fit the evaluator's "
                                      f"{MAX_MEMORY_BYTES // (1024 * 1024)} MiB memory")
            self.memory.grow(self.store, pages)
        ctypes.memmove(self._address() + addr, raw, len(raw))

    def _value(self, raw: bytes) -> int:
        addr = self._call(self._malloc, len(raw))
        self._write(addr, raw)
        value = self._call(self._parse, addr, len(raw))
        if not value:
            raise PolicyError("the policy module could not parse the policy data")
        return int(value)

    def _json(self, value_addr: int) -> Any:
        return json.loads(self._text(self._call(self._dump, value_addr)))

    # --- imports ---------------------------------------------------------------------------------

    def _abort(self, addr: int) -> None:
        try:
            why = self._text(addr).decode("utf-8", "replace")
        except WasmPolicyError as exc:
            why = str(exc)
        self.failure = self.raised = WasmPolicyError(f"opa_abort: {why[:300]}")  # out of memory, a bad value
        raise self.raised

    def _builtin(self, builtin_id: int, _ctx: int, *args: int) -> int:
        name = self.builtin_names.get(builtin_id, f"#{builtin_id}")
        try:
            arity, implementation = HOST_BUILTINS[name]
            if len(args) != arity:
                raise WasmPolicyError(f"{name} called with {len(args)} arguments, not {arity}")
            values = [loads_numbers_as_text(self._text(self._call(self._dump, a)).decode("utf-8")) for a in args]
            if name != "sprintf" and not all(isinstance(v, str) for v in values):  # regex builtins: strings
                raise WasmPolicyError(f"{name} takes strings")
            result = implementation(*values)
            raw = json.dumps(result, ensure_ascii=False).encode("utf-8")
            addr = self._call(self._malloc, len(raw))
            self._write(addr, raw)
            return self._call(self._parse, addr, len(raw))
        except (WasmPolicyError, FormatError, ValueError, KeyError) as exc:
            self.failure = exc  # the trap's own message is wasmtime's: keep ours for the decision
            self.raised = WasmPolicyError(f"builtin {name}: {exc}")
            raise self.raised from None

    # --- a decision ------------------------------------------------------------------------------

    def _call(self, func: Any, *args: int, long: bool = False) -> int:
        """An exported function of i32s returning one i32, called through the C API: `long` (the evaluation)
        without the GIL, the short ABI functions with it. A trap or error raises WasmPolicyError with it."""
        import wasmtime
        import wasmtime._func as wasmtime_func

        n = self._n
        params = n.val_array()
        for i, value in enumerate(args):
            param: Any = params[i]
            param.kind = 0  # WASMTIME_I32
            param.of.i32 = value
        results = n.result_array()
        trap = n.trap_pointer()
        call = n.func_call if long else n.func_call_short
        error = call(self._context, ctypes.byref(func._func), params, len(args), results, 1, ctypes.byref(trap))
        if error or trap:
            message = str(wasmtime.WasmtimeError._from_ptr(error) if error else wasmtime.Trap._from_ptr(trap))
            if self.raised is not None and wasmtime_func.LAST_EXCEPTION is self.raised:
                wasmtime_func.LAST_EXCEPTION = None  # ours, kept in self.failure: not for wasmtime-py to raise later
            raise WasmPolicyError(f"{'trapped' if trap else 'failed'}: {message[:300]}")
        return int(results[0].of.i32) & 0xFFFFFFFF

    def evaluate(self, entrypoint: int, raw_input: bytes) -> bytes:
        """opa_eval(0, entrypoint, data, input, length, heap, JSON): the result set's JSON text."""
        self.failure = self.raised = None
        self._write(self.base, raw_input)
        try:
            result = self._call(self._eval, 0, entrypoint, self.data, self.base, len(raw_input),
                                self.base + len(raw_input), 0, long=True)
        except WasmPolicyError as exc:
            raise WasmPolicyError(f"opa_eval {exc}") from None
        return self._text(result)


class OPAWasmEngine(PolicyEngine):
    """Decisions by the policies compiled to Wasm by OPA, evaluated in this process (see the module)."""

    def __init__(self, folder: Path | None = None, *, config: dict[str, Any] | None = None,
                 opa: Path | None = None, use_cache: bool | None = None) -> None:
        """`opa` is the OPA binary that compiles (default: peertools.find("opa"), what `make tools` builds);
        it is only run when the compiled module is not cached. A broken setup (no opa, a policy that does
        not compile, a module this engine cannot run) is not raised: every decision denies, saying why."""
        self.folder = folder or default_policy_dir()
        self.overrides = dict(config or {})
        self.data: dict[str, Any] = {}
        self.broken: str | None = None
        self.revision = ""
        self.compiled_from_cache = False
        self._opa = opa
        self._use_cache = enabled() if use_cache is None else use_cache
        self._local = threading.local()
        try:
            self._load()
        except (PolicyError, ConfigError, OSError) as exc:
            self.broken = str(exc)
        except subprocess.TimeoutExpired as exc:  # `opa version` hung
            self.broken = f"{exc.cmd[0]} did not answer `version` within {exc.timeout:g} s"
        except Exception as exc:  # fail closed on the unforeseen (a wasmtime error, a module that will not load)
            self.broken = f"the opa-wasm engine could not start: {type(exc).__name__}: {str(exc)[:500]}"

    def _load(self) -> None:
        import wasmtime

        from .peertools import find

        self.revision = policy_revision(self.folder)
        self.data = load_policy_data(self.folder, self.overrides, self.data)
        opa = self._opa or find("opa")
        key = compile_key(self.folder, opa_version(opa))
        cache = PolicyCache(key, cache_root()) if self._use_cache else None
        self.wasm_engine = wasmtime.Engine()
        machine_code = cache.read("policy.cwasm") if cache else None  # authenticated by the cache's HMAC
        self.compiled_from_cache = machine_code is not None
        wasm = b""
        if machine_code is not None:
            self.module = wasmtime.Module.deserialize(self.wasm_engine, machine_code)
        else:
            wasm = compile_policies(self.folder, opa)
            try:
                self.module = wasmtime.Module(self.wasm_engine, wasm)
            except wasmtime.WasmtimeError as exc:
                raise PolicyError(f"the policy module compiled by {opa} is not valid Wasm: {str(exc)[:300]}") from None
        probe = _Instance(self)  # checks the ABI, the builtins and the data once, before any decision
        version = (self._global(probe, "opa_wasm_abi_version"), self._global(probe, "opa_wasm_abi_minor_version"))
        if version < _ABI:
            raise PolicyError(f"the policy module has OPA Wasm ABI {version[0]}.{version[1]}; this engine needs "
                              f"{_ABI[0]}.{_ABI[1]} or later (a newer opa)")
        unknown = sorted(set(probe.builtins) - set(HOST_BUILTINS))
        if unknown:
            raise PolicyError(f"the policies use {', '.join(unknown)}, which OPA's Wasm target leaves to the host and "
                              f"this engine does not implement (it does: {', '.join(sorted(HOST_BUILTINS))}); judge "
                              "with --policy-engine rego or opa")
        absent = [e for e in ENTRYPOINTS if e not in probe.entrypoints]
        if absent:
            raise PolicyError(f"the policy module has no entrypoint {', '.join(absent)}")
        self._entrypoints: dict[str, int] = {e: int(probe.entrypoints[e]) for e in ENTRYPOINTS}
        self._local.instance = probe
        if cache is not None and not self.compiled_from_cache:
            cache.write("policy.cwasm", bytes(self.module.serialize()))

    @staticmethod
    def _global(instance: _Instance, name: str) -> int:
        import wasmtime

        glob = instance.exports.get(name)
        if not isinstance(glob, wasmtime.Global):
            raise PolicyError(f"the policy module does not export {name} (not an OPA Wasm module?)")
        return int(glob.value(instance.store))

    def _instance(self) -> _Instance:
        instance: _Instance | None = getattr(self._local, "instance", None)
        if instance is None:
            instance = self._local.instance = _Instance(self)
        return instance

    # --- the port --------------------------------------------------------------------------------

    def judge(self, policy: str, document: dict[str, Any]) -> Decision:
        from .policy_opa import OPAAnswerError, read_result

        up_front = refused_up_front(policy, self.broken)
        if up_front is not None:
            return up_front
        where = "the OPA Wasm policy module"
        instance: _Instance | None = None
        try:
            instance = self._instance()
            raw = json.dumps(document, ensure_ascii=False, allow_nan=False).encode("utf-8")
            answer = instance.evaluate(self._entrypoints[f"{BUNDLE_ROOT}/{policy}/decision"], raw)
            allow, deny, warn = read_result(policy, answer)
        except OPAAnswerError as exc:
            return Decision(policy, False, (f"{where}: {exc}; the decision is refused",), refused=True)
        except Exception as exc:  # fail closed: a trap, a builtin error, memory: this instance is not reused
            why = instance.failure if instance is not None and instance.failure is not None else exc
            self._local.instance = None
            return Decision(policy, False, (f"{where}: {type(why).__name__}: {str(why)[:500]}; the decision is "
                                            "refused",), refused=True)
        messages = list(deny)
        if allow is not True and not messages:
            messages.append(f"data.{BUNDLE_ROOT}.{policy}.allow is false, with no deny message")
        return Decision(policy, allow is True and not messages, tuple(messages), warn)

    def warm_up(self, *policies: str) -> None:
        """Instantiate this thread's evaluator now (the module is compiled when the engine is made)."""
        if not self.broken:
            with contextlib.suppress(Exception):
                self._instance()

    def run_tests(self) -> TestReport:
        """The Rego unit tests, run by the OPA binary (`opa test`), as the OPA engine runs them."""
        from .policy_opa import opa_test_report

        return opa_test_report(self.folder, self.broken)

