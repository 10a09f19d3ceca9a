"""The policy-engine port and its embedded backend: Rego evaluated in-process with regopy.

Policies are the Rego v1 files in `policies/` (the same files work with OPA 1.x) plus their data
(`policies/data.json`). They are compiled once and reused. A decision is `allow` plus the `deny`
messages; only an `allow` that is exactly true with no deny message allows. A policy that does
not compile refuses everything until it is fixed, and says where it is broken; an undefined
decision, an evaluation error, an unexpected result shape, or an input the boundary refuses
(agentfactory/policy_input.py) denies with the reason.

A decision is never read from text. rego-cpp 1.5 writes input strings into its JSON output without
escaping `"`, so the text of a result that echoes input can be made to say anything (a second
`"bindings": {"allow": true}` that json.loads would keep). The engine reads the result as typed
nodes instead: `allow` must be a boolean node that is true, `deny` a set node whose size is the
number of denials; the messages are only read for display, and cannot change either.

regopy facts this module is built around (rego-cpp 1.5): an undefined result has a root node of
kind Undefined, and asking such an output for a binding aborts the process, as does asking any
output for a name it does not bind, so the root's kind is checked first and bindings are found by
walking the result's nodes; `Output` (what `query_bundle` returns) parses the output text with json.loads in
its constructor, so bundle queries call regopy's library directly (`_Native`) and read nodes by index; a
string node's value is sometimes the raw text and sometimes the text inside `"…"` (literals,
upper/concat results); builtin errors are made strict (the query answers `<error>`); syntax
errors raise at `add_module`; `with input as …` on rules built from partial sets crashes the
process, so the project's policies compute `deny := violations(input)` and tests call the functions.
"""

from __future__ import annotations

import abc
import contextlib
import hashlib
import json
import os
import queue
import re
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, final

from . import policy_cache
from .errors import AgentFactoryError
from .policy_cache import PolicyCache
from .policy_input import MAX_INPUT_BYTES, MAX_INPUT_DEPTH, CheckedInput, PolicyInputError, check_input

POLICIES_ENV = "AGENTFACTORY_POLICIES"
POLICY_NAMES = ("template", "artifact", "admission")
WARN_POLICIES = ("admission",)  # policies that also answer `warn`: messages that allow but tell
__all__ = ["MAX_INPUT_BYTES", "MAX_INPUT_DEPTH", "Decision", "PolicyEngine", "PolicyError", "PolicyInputError",
           "RegoEngine", "plain_text", "template_input"]
MAX_POLICY_BYTES = 1024 * 1024
_TEST_RULE = re.compile(r"^(test_[A-Za-z0-9_]+)\b", re.M)
_PACKAGE = re.compile(r"^package\s+([A-Za-z0-9_.]+)", re.M)


class PolicyError(AgentFactoryError):
    """The policies cannot be loaded (a syntax error, a missing folder, bad data)."""


class RegoCallError(Exception):
    """A call into rego-cpp failed for one decision (that decision is refused; the engine stays usable)."""


@dataclass(frozen=True)
class Decision:
    policy: str
    allow: bool
    deny: tuple[str, ...]
    warn: tuple[str, ...] = ()
    refused: bool = False  # nothing was judged (the input boundary or the engine refused): it denies

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"policy": self.policy, "allow": self.allow, "deny": list(self.deny)}
        if self.policy in WARN_POLICIES:
            doc["warn"] = list(self.warn)
        return doc


@dataclass
class TestResult:
    package: str
    name: str
    ok: bool
    detail: str = ""


@dataclass
class TestReport:
    results: list[TestResult] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors and bool(self.results) and all(r.ok for r in self.results)


class PolicyEngine(abc.ABC):
    """Judges inputs against named policies (`template`, `artifact`, `admission`).

    `decide` is the port every plane calls; it passes the input through the one boundary
    (policy_input.check_input) and only then asks the engine (`judge`), so no engine and no plane
    can skip it. Engines implement `judge`, never `decide`.
    """

    # The policy data the engine judges with (data.json with the config overrides applied): the planes read
    # their own settings from it (the stages, the namespace map, the scan gate), so that they and the
    # policies agree.
    data: dict[str, Any]

    @final
    def decide(self, policy: str, document: dict[str, Any]) -> Decision:
        try:
            checked = check_input(document)
        except PolicyInputError as exc:
            return Decision(policy, False, (str(exc),), refused=True)
        return self.judge_checked(policy, document, checked)

    def judge_checked(self, policy: str, document: dict[str, Any], checked: CheckedInput) -> Decision:
        """`judge` for an input that passed the boundary, with what the boundary's one walk found (an engine
        that would walk the input again for it overrides this; the others need nothing more)."""
        return self.judge(policy, document)

    @abc.abstractmethod
    def judge(self, policy: str, document: dict[str, Any]) -> Decision:
        """The decision for an input that passed the boundary; any failure must deny, with a reason."""

    def warm_up(self, *policies: str) -> None:  # noqa: B027 - optional: engines without set-up need nothing
        """Do the one-time work (compiling) now, so that a service's first decision is not slow."""

    @abc.abstractmethod
    def run_tests(self) -> TestReport: ...


def refused_up_front(policy: str, broken: str | None) -> Decision | None:
    """The refusal every engine gives before judging: policies that do not load, or a policy of no known name."""
    if broken:
        return Decision(policy, False, (broken,), refused=True)
    if policy not in POLICY_NAMES:
        return Decision(policy, False, (f"unknown policy {policy!r} (known: {', '.join(POLICY_NAMES)})",),
                        refused=True)
    return None


def load_policy_data(folder: Path, overrides: dict[str, Any], default: Any) -> Any:
    """`folder`/data.json (or `default` when absent) with `overrides` applied to agentfactory.config: the
    same data for every engine (the OPA engine checks that its server holds exactly this config)."""
    data = default
    data_path = folder / "data.json"
    if data_path.exists():
        try:
            data = json.loads(data_path.read_text("utf-8"))
        except ValueError as exc:
            raise PolicyError(f"{data_path}: not valid JSON ({exc})") from None
    if overrides:
        root = data.setdefault("agentfactory", {}) if isinstance(data, dict) else None
        config = root.setdefault("config", {}) if isinstance(root, dict) else None
        if not isinstance(config, dict):
            raise PolicyError(f"{data_path}: agentfactory.config is not an object")
        config.update(overrides)
    return data


def default_policy_dir() -> Path:
    """`$AGENTFACTORY_POLICIES`, else `./policies`, else the policies beside this checkout."""
    if os.environ.get(POLICIES_ENV):
        return Path(os.environ[POLICIES_ENV]).expanduser()
    here = Path.cwd() / "policies"
    if (here / "data.json").exists():
        return here
    return Path(__file__).resolve().parent.parent / "policies"


def _value(output: Any) -> Any:
    """The value of a regopy query result, or None when undefined (never `expressions()`).

    With strict builtin errors, a failing builtin (1/0, to_number("x")) makes the whole query an
    `<error>` instead of silently skipping the rule that would have denied: raise, so it denies.
    """
    text = str(output).strip()
    if text.startswith("<error"):
        raise PolicyError(f"evaluation error ({text[:200]})")
    if text == "undefined" or not text:
        return None
    doc = json.loads(text)
    expressions = doc.get("expressions") if isinstance(doc, dict) else None
    value = expressions[0] if expressions else None
    return None if value == "undefined" else value


class _Shape(Exception):
    """The result is not the shape a decision has: the decision denies, with this reason."""


def _read_decision(n: _Native, output: Any,
                   names: tuple[str, ...]) -> tuple[Any, tuple[str, ...], tuple[str, ...]] | str:
    """`(allow, deny messages, warn messages)` from a rego-cpp output, read as typed nodes; or why not.

    `allow` is True only when its node is the boolean true (anything else is returned as its
    kind, for the message). `deny` and `warn` must be sets; each member counts, whatever it is:
    its text is only for people to read.
    """
    if not n.regoOutputOk(output):
        return f"policy evaluation failed: a rule raised an error ({_error_text(n, output)}); the decision is refused"
    root = n.regoOutputNode(output)
    kind = n.kind(root)
    if kind == n.UNDEFINED:  # the only safe test: asking it for a binding aborts the process
        return f"{' or .'.join(names)} is undefined for this input (a rule failed to evaluate)"
    if kind in n.ERRORS:
        return f"policy evaluation failed: the engine could not evaluate this input ({_error_text(n, output)}); " \
               "the decision is refused"
    if kind != n.RESULTS or n.regoNodeSize(root) != 1 or n.kind(n.regoNodeGet(root, 0)) != n.RESULT:
        return f"the result is not one set of bindings (root node {n.kind_name(kind)}); the decision is refused"
    try:
        nodes = _bindings(n, n.regoNodeGet(root, 0), names)
        allow_kind = n.kind(nodes["allow"])
        allow: Any = n.value(nodes["allow"]) == "true" if allow_kind in n.BOOLEANS else f"a {n.kind_name(allow_kind)}"
        deny = _messages(n, nodes["deny"], "deny")
        warn = _messages(n, nodes["warn"], "warn") if "warn" in nodes else ()
    except _Shape as exc:
        return str(exc)
    return allow, deny, warn


def _bindings(n: _Native, result: Any, names: tuple[str, ...]) -> dict[str, Any]:
    """The value nodes bound to `names`, walked from the result node: regopy's binding lookup aborts the
    process (std::invalid_argument) when a name is not bound, so it is never called."""
    found: dict[str, Any] = {}
    for i in range(n.regoNodeSize(result)):
        group = n.regoNodeGet(result, i)
        if n.kind(group) != n.BINDINGS:
            continue
        for j in range(n.regoNodeSize(group)):
            binding = n.regoNodeGet(group, j)
            if n.kind(binding) != n.BINDING or n.regoNodeSize(binding) != 2:
                raise _Shape("a binding of an unexpected shape; the decision is refused")
            name = n.value(n.regoNodeGet(binding, 0))
            if name in found:
                raise _Shape(f"{name} is bound twice; the decision is refused")
            found[name] = _unwrap(n, n.regoNodeGet(binding, 1))
    missing = [name for name in names if name not in found]
    if missing:
        raise _Shape(f"{', '.join(missing)} not bound in the result; the decision is refused")
    return found


def _unwrap(n: _Native, node: Any) -> Any:
    """The value inside Term/Scalar wrappers."""
    for _ in range(8):
        if n.kind(node) not in n.WRAPPERS or n.regoNodeSize(node) != 1:
            return node
        node = n.regoNodeGet(node, 0)
    raise _Shape("a value nested in more wrappers than a decision has; the decision is refused")


def _messages(n: _Native, node: Any, name: str) -> tuple[str, ...]:
    """The members of a set of messages, by index (regopy's Node keys a set by its members' JSON text)."""
    kind = n.kind(node)
    if kind != n.SET:
        raise _Shape(f"{name} is a {n.kind_name(kind)}, not a set of messages; the decision is refused")
    return tuple(sorted(_text(n, _unwrap(n, n.regoNodeGet(node, i))) for i in range(n.regoNodeSize(node))))


def _text(n: _Native, node: Any) -> str:
    """A message, for people to read (the decision is already made: this cannot change it).

    rego-cpp keeps the literal parts of a string JSON-escaped (a format's `"` as `\\"`), sometimes
    inside `"…"`, and copies the input into it raw, unescaped: `spec.agent: \\"q"q\\" is not pinned`.
    So every JSON escape sequence is decoded and every other character kept as it is, which gives
    OPA's text exactly unless an input string copied into the message holds a backslash (then its
    `\\n` or `\\"` reads as an escape: docs/policy.md, OPA and regopy).
    """
    try:
        if n.kind(node) != n.STRING:
            return n.json(node)
        text = n.value(node)
    except (UnicodeDecodeError, ValueError, RegoCallError):
        return "(a message that cannot be read)"
    if len(text) >= 2 and text[0] == text[-1] == '"':
        text = text[1:-1]
    return _ESCAPE.sub(_unescape, text) if "\\" in text else text


_ESCAPE = re.compile(r'\\(?:u[0-9a-fA-F]{4}(?:\\u[0-9a-fA-F]{4})?|["\\/bfnrt])')


def _unescape(match: re.Match[str]) -> str:
    """One JSON escape sequence decoded (a lone or mismatched surrogate is kept as written)."""
    try:
        decoded = json.loads(f'"{match.group(0)}"')
        decoded.encode("utf-8")
    except (ValueError, UnicodeEncodeError):
        return match.group(0)
    return str(decoded)


def _error_text(n: _Native, output: Any) -> str:
    """rego-cpp's error message(s), e.g. "Invalid escape sequence" (for people: nothing is decided from it)."""
    try:
        text = n.output_json(output)
    except (UnicodeDecodeError, RegoCallError):
        return "<error>"
    messages = list(dict.fromkeys(re.findall(r"\(errormsg \d+:([^)]*)\)", text)))
    return "; ".join(m.strip() for m in messages)[:300] if messages else text[:200]


def _locate(exc: Exception, sources: dict[str, str]) -> str:
    """Turn rego-cpp's `(error N:file|offset|len … (errormsg N:message))` into `file:line: message`."""
    text = str(exc)
    found = re.search(r"\(error \d+:([^|]+)\|(\d+)\|", text)
    message = re.search(r"\(errormsg \d+:([^)]*)\)", text)
    msg = message.group(1).strip() if message else text.strip().splitlines()[0]
    if found and found.group(1) in sources:
        name, offset = found.group(1), int(found.group(2))
        line = sources[name][:offset].count("\n") + 1
        return f"{name}:{line}: {msg}"
    return msg


class RegoEngine(PolicyEngine):
    """regopy (rego-cpp) in-process: policies and data loaded once, a pool of interpreters reused.

    Each policy is compiled to a bundle from its own package's modules only (rego-cpp's evaluation slows
    with everything the bundle holds, reached or not: the admission policy runs in about half the time
    without the template's modules). Each worker of the pool (`AGENTFACTORY_POLICY_WORKERS`, one per CPU by
    default) owns an interpreter and its own copy of each bundle, loaded from the same verified bytes, so
    decisions in several threads run in parallel (the query runs without the GIL; the short calls around it
    keep it: `_Native`) and never share a rego-cpp object. Each bundle holds the config with the keys its
    policy names first (`config_read_first`).
    """

    def __init__(self, folder: Path | None = None, *, config: dict[str, Any] | None = None,
                 workers: int | None = None) -> None:
        """`config` overrides keys of data.agentfactory.config (e.g. the gate's blocking_severities
        from `--fail-on`), so a command-line threshold is the policy's, not a second gate beside it.
        `workers` (else $AGENTFACTORY_POLICY_WORKERS, else the CPU count) is how many decisions may run at once."""
        self.folder = folder or default_policy_dir()
        self.overrides = dict(config or {})
        self._build_lock = threading.Lock()  # the compilers and the bundle bytes: built once, by one thread
        self.sources: dict[str, str] = {}
        self.tests: dict[str, str] = {}
        self.data: dict[str, Any] = {}
        self.broken: str | None = None
        self._plans: dict[str, bytes] = {}  # policy -> its compiled bundle, rego-cpp's binary format
        self._compiler: Any = None
        self._compilers: dict[tuple[str, ...], Any] = {}
        self._cache: PolicyCache | None = None
        self._pool: _Pool | None = None
        try:
            self._pool = _Pool(workers if workers is not None else pool_size())
            self._load()
            regopy = _import_regopy()
            if policy_cache.enabled():
                self._cache = PolicyCache(policy_cache.cache_key(self.sources, self.data, regopy.__version__))
            if self._cache is None or not self._cache.compiled():
                self._compiler = self._interpreter_with(self.sources)  # a broken policy is found now
                if self._cache is not None:
                    self._cache.mark_compiled()
        except PolicyError as exc:
            self.broken = str(exc)

    @property
    def workers(self) -> int:
        """How many decisions may run at once (one interpreter each)."""
        return self._pool.size if self._pool is not None else 0

    @property
    def _interpreter(self) -> Any:
        """The interpreter with every module, built on first need: with every bundle in the compiled-policy
        cache (agentfactory/policy_cache.py) a process never parses the policies."""
        if self._compiler is None:
            self._compiler = self._interpreter_with(self.sources)
        return self._compiler

    def _load(self) -> None:
        if not self.folder.is_dir():
            raise PolicyError(f"{self.folder}: policies folder not found (set {POLICIES_ENV})")
        for path in sorted(self.folder.glob("*.rego")):
            if path.stat().st_size > MAX_POLICY_BYTES:
                raise PolicyError(f"{path}: larger than {MAX_POLICY_BYTES} bytes")
            text = path.read_text("utf-8")
            (self.tests if path.name.endswith("_test.rego") else self.sources)[str(path)] = text
        if not self.sources:
            raise PolicyError(f"{self.folder}: no .rego policies")
        self.data = load_policy_data(self.folder, self.overrides, self.data)

    def _interpreter_with(self, modules: dict[str, str], *, check: bool = True) -> Any:
        """An interpreter holding `modules` and the data; `check` compiles them now (see below)."""
        import regopy

        interpreter = regopy.Interpreter()
        interpreter.strict_built_in_errors = True  # an erroring rule must not silently fail to deny
        for name, text in modules.items():
            try:
                interpreter.add_module(name, text)
            except regopy.RegoError as exc:
                raise PolicyError(f"Rego syntax error: {_locate(exc, modules)}; every decision is refused "
                                  "until it is fixed") from None
        interpreter.add_data(config_read_first(self.data, modules))
        if not check:
            return interpreter
        # Some errors (unification cycles, unsafe variables) only appear when rules are compiled at
        # the first query, as a bare `<error>` (rego-cpp prints its report on its own output). Compile
        # now, at load time, so that a broken policy refuses everything from the start.
        if str(interpreter.query("1 == 1")).strip().startswith("<error"):  # compiles, evaluates no rule
            raise PolicyError(f"Rego compile error in {self.folder}: the policies parse but do not compile "
                              "(rego-cpp printed the location on its output); every decision is refused until "
                              "it is fixed")
        return interpreter

    def judge(self, policy: str, document: dict[str, Any]) -> Decision:
        return self._judge(policy, document, quoted_string(document))

    def judge_checked(self, policy: str, document: dict[str, Any], checked: CheckedInput) -> Decision:
        """No second walk for the quoted strings rego-cpp misreads unless the boundary saw a candidate."""
        return self._judge(policy, document, quoted_string(document) if checked.maybe_quoted else "")

    def _judge(self, policy: str, document: dict[str, Any], quoted: str) -> Decision:
        if self.broken or self._pool is None:
            return Decision(policy, False, (self.broken or "the policy engine is not set up",), refused=True)
        up_front = refused_up_front(policy, None)
        if up_front is not None:
            return up_front
        if quoted:
            return Decision(policy, False, (quoted,), refused=True)
        names = ("allow", "deny", "warn") if policy in WARN_POLICIES else ("allow", "deny")
        try:
            with self._pool.worker() as worker:
                read = worker.decide(self._worker_bundle(worker, policy), document, names)
        except PolicyError as exc:  # the policies were compiled lazily (cache) and do not compile now
            self.broken = str(exc)
            return Decision(policy, False, (self.broken,), refused=True)
        except Exception as exc:  # fail closed: an evaluation or reading error denies
            return Decision(policy, False, (f"policy evaluation failed: {type(exc).__name__}: {exc}",), refused=True)
        if isinstance(read, str):
            return Decision(policy, False, (f"data.agentfactory.{policy}: {read}",), refused=True)
        allow, deny, warn = read
        messages = list(deny)
        if allow is not True and not messages:
            messages.append(f"data.agentfactory.{policy}.allow is {allow}, not true")
        return Decision(policy, allow is True and not messages, tuple(messages), warn)

    def warm_up(self, *policies: str) -> None:
        """Compile the bundles and load them into every worker, so no decision pays for either."""
        if self.broken or self._pool is None:
            return
        try:
            with self._pool.every() as workers:
                for worker in workers:
                    for policy in policies or POLICY_NAMES:
                        self._worker_bundle(worker, policy)
        except PolicyError as exc:
            self.broken = str(exc)
        except policy_cache.PolicyCacheError as exc:
            self.broken = f"the compiled policies do not load: {exc}"

    def _worker_bundle(self, worker: _Worker, policy: str) -> Any:
        """`policy`'s bundle in `worker`'s interpreter, loaded on first need from the one compiled copy."""
        bundle = worker.bundles.get(policy)
        if bundle is None:
            bundle = worker.bundles[policy] = policy_cache.load_bytes(worker.runner, self._plan_bytes(policy))
        return bundle

    def _plan_bytes(self, policy: str) -> bytes:
        """The policy compiled to a plan once (rego-cpp's bundles, binary), from the cache or compiled now."""
        with self._build_lock:
            if policy in self._plans:
                return self._plans[policy]
            modules = self._modules_for(policy)
            query = f"deny = data.agentfactory.{policy}.deny; allow = data.agentfactory.{policy}.allow"
            entrypoints = [f"agentfactory/{policy}/deny", f"agentfactory/{policy}/allow"]
            if policy in WARN_POLICIES:
                query += f"; warn = data.agentfactory.{policy}.warn"
                entrypoints.append(f"agentfactory/{policy}/warn")
            plan = json.dumps([query, entrypoints, sorted(Path(m).name for m in modules)]).encode()
            name = f"{policy}-{hashlib.sha256(plan).hexdigest()[:16]}.rbb"
            payload = self._cache.read(name) if self._cache is not None else None
            if payload is not None and not self._loads(name, payload):
                payload = None
            if payload is None:
                compiler = self._compiler_for(modules)
                try:
                    payload = policy_cache.bundle_bytes(compiler, compiler.build(query, entrypoints))
                except policy_cache.PolicyCacheError as exc:
                    raise PolicyError(f"the {policy} policy cannot be compiled: {exc}") from None
                if self._cache is not None:
                    self._cache.write(name, payload)
            self._plans[policy] = payload
            return payload

    def _loads(self, name: str, payload: bytes) -> bool:
        """Whether rego-cpp loads these authentic bytes; a cache entry it refuses is deleted and rebuilt."""
        import regopy

        try:
            policy_cache.load_bytes(regopy.Interpreter(), payload)
        except policy_cache.PolicyCacheError as exc:
            assert self._cache is not None
            self._cache._refuse(name, f"authentic but not loadable ({exc}): rebuilt from the policies")
            return False
        return True

    def _compiler_for(self, modules: dict[str, str]) -> Any:
        """An interpreter holding exactly `modules` (every module: the one that checked they compile)."""
        if len(modules) == len(self.sources):
            return self._interpreter
        key = tuple(sorted(modules))
        if key not in self._compilers:
            self._compilers[key] = self._interpreter_with(modules)
        return self._compilers[key]

    def _modules_for(self, policy: str) -> dict[str, str]:
        """The modules `data.agentfactory.<policy>` can depend on (policy_modules)."""
        return policy_modules(self.sources, f"agentfactory.{policy}")

    def run_tests(self) -> TestReport:
        report = TestReport()
        if self.broken:
            report.errors.append(self.broken)
            return report
        if not self.tests:
            report.errors.append(f"{self.folder}: no *_test.rego files")
            return report
        try:  # the policies alone, as the engine loads them (compiled already, or once here when every bundle
            # came from the cache): one that does not parse fails the run even where no package's tests read it
            self._interpreter  # noqa: B018 - built for its check
        except PolicyError as exc:
            report.errors.append(str(exc))
            return report
        by_package: dict[str, list[str]] = {}
        for path, text in self.tests.items():
            found = _PACKAGE.search(text)
            if not found:
                report.errors.append(f"{path}: no package declaration")
                continue
            by_package.setdefault(found.group(1), []).extend(_TEST_RULE.findall(text))
        if not any(by_package.values()):
            report.errors.append(f"{self.folder}: no test_* rules in the *_test.rego files")
            return report
        modules = {**self.sources, **self.tests}
        # Packages compile and run in parallel threads, each with interpreters of its own: rego-cpp works without
        # the GIL (ctypes releases it), and `policy test` on policies/ took 19 s one package after another and
        # about 11 s on 2 CPUs. Each package reports into its own report; they are joined in package order.
        from concurrent.futures import ThreadPoolExecutor  # here: not an import of every command's start-up

        parts = {package: TestReport() for package in by_package}
        workers = max(1, min(len(parts), len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1))
        with ThreadPoolExecutor(workers, thread_name_prefix="policy-test") as pool:
            # the largest packages first, so the last to start is a small one
            list(pool.map(lambda package: self._run_package_tests(parts[package], modules, package,
                                                                  list(dict.fromkeys(by_package[package]))),
                          sorted(by_package, key=lambda package: -len(by_package[package]))))
        for part in parts.values():
            report.results.extend(part.results)
            report.errors.extend(part.errors)
        return report

    def _run_package_tests(self, report: TestReport, modules: dict[str, str], package: str, names: list[str]) -> None:
        """One package's tests, compiled into one bundle (every test an entrypoint: compiling per query would take
        minutes) with only the modules the package can read (`policy_modules`): rego-cpp's compile grows faster
        than the modules it is given, and `policy test` on policies/ took 39 s with the folder compiled whole
        and takes 19 s package by package. A test that does not compile, or evaluates to anything but true,
        fails (the report is then not ok)."""
        entrypoints = {name: f"{package.replace('.', '/')}/{name}" for name in names}
        try:
            interpreter = self._interpreter_with(policy_modules(modules, package), check=False)
            bundle = interpreter.build(None, list(entrypoints.values()))
        except PolicyError as exc:
            report.errors.append(f"{package}: {exc}")
            return
        except Exception as exc:
            report.errors.append(f"{package}: the tests do not compile: {exc}")
            return
        for name, entrypoint in entrypoints.items():
            try:
                value = _value(interpreter.query_bundle_entrypoint(bundle, entrypoint))
            except Exception as exc:
                report.results.append(TestResult(package, name, False, f"error: {exc}"))
                continue
            report.results.append(TestResult(package, name, value is True,
                                             "" if value is True else f"evaluated to {value!r}"))


def _import_regopy() -> Any:
    """regopy, imported without the `uname -p` child process its import would start.

    regopy's loader reads `platform.uname()[0]` (to look for Windows), and indexing that result computes its
    `processor` field, which Python gets on Linux by running `uname -p`: 7 ms of every CLI start-up
    (benchmarks/results/cli-startup.md). For the import only, the field is set to "" (regopy never reads
    it); then it is forgotten again, so anyone asking platform for the processor later gets the real answer.
    """
    if "regopy" in sys.modules:
        return sys.modules["regopy"]
    import platform

    fields = platform.uname().__dict__  # `processor` is a functools.cached_property kept here
    primed = "processor" not in fields
    if primed:
        fields["processor"] = ""
    try:
        import regopy
    finally:
        if primed:
            fields.pop("processor", None)
    return regopy


WORKERS_ENV = "AGENTFACTORY_POLICY_WORKERS"
MAX_WORKERS = 64
_DATA_REF = re.compile(r"\bdata((?:\.[A-Za-z_][A-Za-z0-9_]*)+)")


def pool_size() -> int:
    """$AGENTFACTORY_POLICY_WORKERS, else one worker per CPU this process may use; a bad value is an error."""
    raw = os.environ.get(WORKERS_ENV, "").strip()
    if not raw:
        try:
            return max(1, min(MAX_WORKERS, len(os.sched_getaffinity(0))))
        except (AttributeError, OSError):
            return max(1, min(MAX_WORKERS, os.cpu_count() or 1))
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_WORKERS:
        raise PolicyError(f"{WORKERS_ENV}={raw[:20]!r}: must be a whole number from 1 to {MAX_WORKERS} (how many "
                          "policy decisions may run at once); every decision is refused until it is fixed")
    return int(raw)


def config_read_first(data: Any, modules: dict[str, str]) -> Any:
    """`data` with the keys of data.agentfactory.config ordered by how often `modules` name them, most first.

    rego-cpp finds a key of an object by comparing it, as text, with each member in turn, at about half a
    microsecond a member: a policy that reads its keys of the config first spends 3-5 % less per decision
    (the admission policy's one key was the config's last). Objects are unordered in Rego (and in OPA):
    only the time changes. Anything but an object at that place is returned as it is."""
    root = data.get("agentfactory") if isinstance(data, dict) else None
    config = root.get("config") if isinstance(root, dict) else None
    if not isinstance(root, dict) or not isinstance(config, dict):
        return data
    text = "\n".join(modules.values())
    uses = {key: len(re.findall(rf"\b{re.escape(key)}\b", text)) for key in config}
    ordered = {key: config[key] for key in sorted(config, key=lambda k: -uses[k])}  # stable: ties keep their order
    return {**data, "agentfactory": {**root, "config": ordered}}


def policy_modules(sources: dict[str, str], package: str) -> dict[str, str]:
    """The modules a rule of `package` can depend on: those of the package, its sub-packages and the packages
    above it (which may define rules under it), then, until nothing changes, every module whose package one of
    them reads through `data.` (by a prefix of it or inside it). A module without a package line, or one that
    reads data by a computed key (`data[...]`), makes it every module: never fewer than needed."""
    packages: dict[str, str] = {}
    for name, text in sources.items():
        found = _PACKAGE.search(text)
        if not found or re.search(r"\bdata\s*\[", text):
            return dict(sources)
        packages[name] = found.group(1)

    def related(a: str, b: str) -> bool:
        return a == b or a.startswith(b + ".") or b.startswith(a + ".")

    chosen = {n for n, pkg in packages.items() if related(pkg, package)}
    while True:
        refs = {m.group(1)[1:] for n in chosen for m in _DATA_REF.finditer(sources[n])}
        more = {n for n, pkg in packages.items() if n not in chosen and any(related(pkg, r) for r in refs)}
        if not more:
            return {n: sources[n] for n in sources if n in chosen}
        chosen |= more


class _Native:
    """rego-cpp's C functions for the short calls of a decision, through a `ctypes.PyDLL` handle on regopy's own
    library: building the input, setting it, reading the result and freeing it.

    regopy binds the library with `ctypes.CDLL`, which lets go of the GIL at every call and takes it back
    after. A decision makes a few hundred such calls of a microsecond each; with two threads deciding, every
    one of them is a chance for the other thread to take the GIL, and the two hand it back and forth (CPU per
    decision rose by a third from one thread to two). Through PyDLL these calls keep the GIL (they are short,
    and never block), so a decision lets go of it only for the query (`query`, the same function through a
    CDLL handle), the one call that runs long. Pointers come back as `_Ptr` objects, which ctypes passes back
    as they are (no argtypes: no conversion per call); every other argument is passed as bytes or a ctypes
    value, so no Python int is ever read as a 32-bit C int.
    """

    def __init__(self) -> None:
        import ctypes

        from regopy import rego_shared

        class _Ptr(ctypes.c_void_p):
            """A rego-cpp pointer: a subclass of c_void_p is returned as itself, not converted to an int."""

        lib = ctypes.PyDLL(rego_shared.path)
        for name in ("regoNewInput", "regoOutputNode", "regoNodeGet"):
            getattr(lib, name).restype = _Ptr
        self.query = ctypes.CDLL(rego_shared.path).regoBundleQuery  # lets go of the GIL while it runs
        self.query.restype = _Ptr
        self.pointer = ctypes.c_void_p
        for name in ("regoInputString", "regoInputObjectItem", "regoInputObject", "regoInputArray",
                     "regoInputBoolean", "regoInputNull", "regoInputInt", "regoInputFloat", "regoSetInput",
                     "regoNodeType", "regoNodeSize", "regoNodeValueSize", "regoNodeValue", "regoNodeJSONSize",
                     "regoNodeJSON", "regoOutputJSONSize", "regoOutputJSON"):
            getattr(lib, name).restype = ctypes.c_uint32
        lib.regoOutputOk.restype = ctypes.c_bool
        lib.regoFreeInput.restype = lib.regoFreeOutput.restype = None
        self.ctypes = ctypes
        self.lib = lib
        self.regoNewInput, self.regoFreeInput, self.regoSetInput = lib.regoNewInput, lib.regoFreeInput, lib.regoSetInput
        self.regoInputString, self.regoInputObjectItem = lib.regoInputString, lib.regoInputObjectItem
        self.regoInputObject, self.regoInputArray = lib.regoInputObject, lib.regoInputArray
        self.regoOutputOk, self.regoOutputNode = lib.regoOutputOk, lib.regoOutputNode
        self.regoFreeOutput = lib.regoFreeOutput
        self.regoNodeType, self.regoNodeSize, self.regoNodeGet = lib.regoNodeType, lib.regoNodeSize, lib.regoNodeGet
        kinds = rego_shared.NodeKind
        self.kind_names = {int(k): k.name for k in kinds}
        self.UNDEFINED, self.RESULTS, self.RESULT = int(kinds.Undefined), int(kinds.Results), int(kinds.Result)
        self.BINDINGS, self.BINDING = int(kinds.Bindings), int(kinds.Binding)
        self.SET, self.STRING = int(kinds.Set), int(kinds.String)
        self.BOOLEANS = frozenset((int(kinds.True_), int(kinds.False_)))
        self.WRAPPERS = frozenset((int(kinds.Term), int(kinds.Scalar)))
        self.ERRORS = frozenset(int(kinds[k]) for k in ("Error", "ErrorSeq", "ErrorMessage", "ErrorAst", "ErrorCode"))

    def kind(self, node: Any) -> int:
        return int(self.regoNodeType(node))

    def kind_name(self, kind: int) -> str:
        return "Boolean" if kind in self.BOOLEANS else self.kind_names.get(kind, f"kind {kind}")

    def value(self, node: Any) -> str:
        return self._text(self.lib.regoNodeValueSize, self.lib.regoNodeValue, node)

    def json(self, node: Any) -> str:
        return self._text(self.lib.regoNodeJSONSize, self.lib.regoNodeJSON, node)

    def output_json(self, output: Any) -> str:
        return self._text(self.lib.regoOutputJSONSize, self.lib.regoOutputJSON, output)

    def _text(self, size_of: Any, read: Any, pointer: Any) -> str:
        """Text rego-cpp writes into a buffer of the size it names (NUL included); a failure raises."""
        size = int(size_of(pointer))
        buf = self.ctypes.create_string_buffer(size)
        if read(pointer, buf, self.ctypes.c_uint32(size)) != 0:
            raise RegoCallError("rego-cpp could not write a value of the result")
        return str(buf.value.decode("utf-8"))

    def input(self, document: dict[str, Any]) -> Any:
        """A rego-cpp input built from `document` with one C call per value (regopy's Input adds a Python wrapper
        and a buffer copy per call). The document passed check_input: plain JSON types only. Any call that fails
        raises, and the half-built input is freed. Each call's return code (0 = done) is OR-ed into the one
        returned by `add`: one check at the end instead of one per call (about a fifth of the building time)."""
        handle = self.regoNewInput()
        if not handle.value:
            raise RegoCallError("rego-cpp could not allocate an input")
        ctypes, lib = self.ctypes, self.lib
        string, item_done = self.regoInputString, self.regoInputObjectItem
        obj, arr = self.regoInputObject, self.regoInputArray
        # Counts are passed as Python ints (a C int; the input is bounded far below 2**31 by check_input).

        def add(value: Any) -> Any:  # the OR of the calls' return codes (ints; 0 = done)
            kind = type(value)
            if kind is str:
                return string(handle, value.encode())
            if kind is dict:
                code = 0
                for key, item in value.items():
                    code |= string(handle, key.encode())
                    code |= string(handle, item.encode()) if type(item) is str else add(item)
                    code |= item_done(handle)
                return code | obj(handle, len(value))
            if kind is list:
                code = 0
                for item in value:
                    code |= add(item)
                return code | arr(handle, len(value))
            return other(value)

        def other(value: Any) -> Any:
            """Every value that is not a plain str, dict or list (bool before int: a bool is an int)."""
            if isinstance(value, str):
                return add(str(value))
            if isinstance(value, dict):
                return add(dict(value))
            if isinstance(value, (list, tuple)):
                return add(list(value))
            if isinstance(value, bool):
                return lib.regoInputBoolean(handle, ctypes.c_uint8(value))
            if value is None:
                return lib.regoInputNull(handle)
            if isinstance(value, int):
                return lib.regoInputInt(handle, ctypes.c_int64(value))
            if isinstance(value, float):
                return lib.regoInputFloat(handle, ctypes.c_double(value))
            raise RegoCallError(f"a value of type {type(value).__name__} in the input, which is not JSON")

        try:
            if add(document) != 0:
                raise RegoCallError("rego-cpp refused to build the input")
        except BaseException:
            self.regoFreeInput(handle)
            raise
        return handle


_NATIVE: list[_Native] = []
_NATIVE_LOCK = threading.Lock()


def _native() -> _Native:
    """The one _Native of the process, made on first need (regopy is imported only by a process that decides)."""
    if not _NATIVE:
        with _NATIVE_LOCK:
            if not _NATIVE:
                _NATIVE.append(_Native())
    return _NATIVE[0]


class _Worker:
    """One rego-cpp interpreter and its own copy of each policy's bundle; used by one thread at a time."""

    def __init__(self) -> None:
        import regopy

        self.runner = regopy.Interpreter()
        self.runner.strict_built_in_errors = True
        self.bundles: dict[str, Any] = {}
        self._native = _native()
        self._impl = self._native.pointer(self.runner._impl)

    def decide(self, bundle: Any, document: dict[str, Any], names: tuple[str, ...]) -> Any:
        """Set `document` as the input, run the bundle's query, read the decision (see _read_decision)."""
        n = self._native
        handle = n.input(document)
        try:
            if n.regoSetInput(self._impl, handle) != 0:
                raise RegoCallError("rego-cpp refused the input")
        finally:
            n.regoFreeInput(handle)
        output = n.query(self._impl, n.pointer(bundle._impl))  # the one call that runs long: without the GIL
        if not output.value:
            raise RegoCallError("rego-cpp returned no result for the query")
        try:
            return _read_decision(n, output, names)
        finally:
            n.regoFreeOutput(output)


class _Pool:
    """Up to `size` workers, made on first need; a decision takes a free one or waits for one."""

    def __init__(self, size: int) -> None:
        if not 1 <= size <= MAX_WORKERS:
            raise PolicyError(f"{size} policy workers: must be from 1 to {MAX_WORKERS}")
        self.size = size
        self._free: queue.LifoQueue[_Worker] = queue.LifoQueue()  # the most recently used first: warm caches
        self._made = 0
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def worker(self) -> Iterator[_Worker]:
        try:
            worker = self._free.get_nowait()
        except queue.Empty:
            worker = self._make() or self._free.get()
        try:
            yield worker
        finally:
            self._free.put(worker)

    def _make(self) -> _Worker | None:
        with self._lock:
            if self._made >= self.size:
                return None
            self._made += 1
        try:
            return _Worker()
        except BaseException:
            with self._lock:
                self._made -= 1
            raise

    @contextlib.contextmanager
    def every(self) -> Iterator[list[_Worker]]:
        """Every worker, made now if need be, held until the block ends (warm_up loads each one's bundles)."""
        while (worker := self._make()) is not None:
            self._free.put(worker)
        held = [self._free.get() for _ in range(self.size)]
        try:
            yield held
        finally:
            for worker in held:
                self._free.put(worker)


def quoted_string(document: Any) -> str:
    """Why rego-cpp cannot judge `document`, when a string in it (or a key) is itself a JSON string literal,
    quotes included (`"CREATE"`, `""`); else "".

    rego-cpp takes such a string for the JSON text of the string inside the quotes: the operation
    `"CREATE"` (eight characters) equals CREATE, the licence `"MIT"` is on the allowlist, `""` is
    empty, where OPA compares the characters as they are. RegoEngine refuses the decision rather
    than judge something else than the plane will use; OPA judges it (docs/policy.md, OPA and regopy).
    A string that only starts and ends with `"` (`"]},"z":["`, not a JSON literal) is judged: its
    inside cannot equal a word of the policies, and only its echo in a message loses the quotes.
    """
    stack: list[tuple[Any, str]] = [(document, "input")]
    while stack:
        value, where = stack.pop()
        if isinstance(value, dict):
            for key, item in value.items():
                here = f"{where}.{key}" if isinstance(key, str) else f"{where}[{key!r}]"
                if isinstance(key, str) and _json_literal(key):
                    return _quoted(f"{where} has the key {key[:60]!r}")
                stack.append((item, here))
        elif isinstance(value, list):
            stack.extend((item, f"{where}[{i}]") for i, item in enumerate(value))
        elif isinstance(value, str) and _json_literal(value):
            return _quoted(f"{where} is {value[:60]!r}{'…' if len(value) > 60 else ''}")
    return ""


def _json_literal(text: str) -> bool:
    """Whether `text` is a whole JSON string literal, its quotes included."""
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        return False
    try:
        return isinstance(json.loads(text), str)
    except ValueError:
        return False


def _quoted(what: str) -> str:
    return (f"{what}: a string that is a JSON string literal, quotes included, which the embedded policy "
            "engine (rego-cpp) would read as the string inside the quotes; the decision is refused: remove the "
            "quotes, or judge with --policy-engine opa")


def plain_text(text: Any) -> str:
    """Free text as one readable line for a deny message: quotes become `'`, backslashes `/`, control
    characters spaces. Cosmetic only: decisions are read as typed values, so no text can rewrite one,
    and every input passes policy_input.check_input whether or not this was applied."""
    out = str(text).replace('"', "'").replace("\\", "/")
    return "".join(" " if ord(c) < 0x20 else c for c in out)


def template_input(template: Any, findings: list[dict[str, Any]], module: Any | None,
                   base: dict[str, Any] | None, path: str = "") -> dict[str, Any]:
    """The template policy's input (docs/policy-inputs.md) from a loaded Template and a ModuleInfo."""
    module_doc = None
    if module is not None:
        module_doc = {"imports": [{"module": i.module, "name": i.name, "kind": i.kind} for i in module.imports],
                      "exports": [{"name": e.name, "kind": e.kind} for e in module.exports],
                      "initialMemoryBytes": module.initial_memory_bytes}
    safe = [{**f, "message": plain_text(f.get("message", ""))} for f in findings]
    return {"template": template.raw, "path": path or str(template.folder), "findings": safe,
            "module": module_doc, "base": base}
