"""The policy-engine port and its embedded backend: Rego evaluated in-process with regopy.

Policies are the Rego v1 files in `policies/` (the same files work with OPA 1.x) plus their data
(`policies/data.json`). They are compiled once and reused. A decision is `allow` plus the `deny`
messages; only an `allow` that is exactly true with no deny message allows. A policy that does
not compile refuses everything until it is fixed, and says where it is broken; an undefined
decision, an evaluation error, or an input too large or too deep to judge, denies with the reason.

regopy facts this module is built around (rego-cpp 1.5): an undefined result prints `undefined`,
and asking such an output for its expressions aborts the process, so results are read from
their JSON text; builtin errors are made strict (the query answers `<error>`); syntax errors
raise at `add_module`; `with input as …` on rules built from partial sets crashes the process,
so the project's policies compute `deny := violations(input)` and tests call the functions.
"""

from __future__ import annotations

import abc
import json
import os
import re
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import AgentFactoryError

POLICIES_ENV = "AGENTFACTORY_POLICIES"
POLICY_NAMES = ("template", "artifact", "admission")
WARN_POLICIES = ("admission",)  # policies that also answer `warn`: messages that allow but tell
MAX_INPUT_BYTES = 4 * 1024 * 1024
MAX_INPUT_DEPTH = 64
MAX_POLICY_BYTES = 1024 * 1024
_TEST_RULE = re.compile(r"^(test_[A-Za-z0-9_]+)\b", re.M)
_PACKAGE = re.compile(r"^package\s+([A-Za-z0-9_.]+)", re.M)


class PolicyError(AgentFactoryError):
    """The policies cannot be loaded (a syntax error, a missing folder, bad data)."""


@dataclass(frozen=True)
class Decision:
    policy: str
    allow: bool
    deny: tuple[str, ...]
    warn: tuple[str, ...] = ()

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
    """Judges inputs against named policies (`template`, `artifact`, `admission`)."""

    @abc.abstractmethod
    def decide(self, policy: str, document: dict[str, Any]) -> Decision: ...

    def warm_up(self, *policies: str) -> None:  # noqa: B027 - optional: engines without set-up need nothing
        """Do the one-time work (compiling) now, so that a service's first decision is not slow."""

    @abc.abstractmethod
    def run_tests(self) -> TestReport: ...


def default_policy_dir() -> Path:
    """`$AGENTFACTORY_POLICIES`, else `./policies`, else the policies beside this checkout."""
    if os.environ.get(POLICIES_ENV):
        return Path(os.environ[POLICIES_ENV]).expanduser()
    here = Path.cwd() / "policies"
    if (here / "data.json").exists():
        return here
    return Path(__file__).resolve().parent.parent / "policies"


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of a JSON value, without recursion (stops counting past `limit`)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        v, d = stack.pop()
        deepest = max(deepest, d)
        if deepest > limit:
            return deepest
        if isinstance(v, dict):
            stack.extend((x, d + 1) for x in v.values())
        elif isinstance(v, list):
            stack.extend((x, d + 1) for x in v)
    return deepest


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
    """regopy (rego-cpp) in-process: policies and data loaded once, one interpreter reused."""

    def __init__(self, folder: Path | None = None, *, config: dict[str, Any] | None = None) -> None:
        """`config` overrides keys of data.agentfactory.config (e.g. the gate's blocking_severities
        from `--fail-on`), so a command-line threshold is the policy's, not a second gate beside it."""
        self.folder = folder or default_policy_dir()
        self.overrides = dict(config or {})
        self._lock = threading.Lock()  # one interpreter: inputs and queries must not interleave
        self.sources: dict[str, str] = {}
        self.tests: dict[str, str] = {}
        self.data: dict[str, Any] = {}
        self.broken: str | None = None
        self._bundles: dict[str, Any] = {}
        try:
            self._load()
            self._interpreter = self._interpreter_with(self.sources)
            import regopy

            self._runner = regopy.Interpreter()  # executes compiled bundles: ~0.8 ms, not ~30 ms, a decision
            self._runner.strict_built_in_errors = True
        except PolicyError as exc:
            self.broken = str(exc)

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
        data_path = self.folder / "data.json"
        if data_path.exists():
            try:
                self.data = json.loads(data_path.read_text("utf-8"))
            except ValueError as exc:
                raise PolicyError(f"{data_path}: not valid JSON ({exc})") from None
        if self.overrides:
            root = self.data.setdefault("agentfactory", {}) if isinstance(self.data, dict) else None
            config = root.setdefault("config", {}) if isinstance(root, dict) else None
            if not isinstance(config, dict):
                raise PolicyError(f"{data_path}: agentfactory.config is not an object")
            config.update(self.overrides)

    def _interpreter_with(self, modules: dict[str, str]) -> Any:
        import regopy

        interpreter = regopy.Interpreter()
        interpreter.strict_built_in_errors = True  # an erroring rule must not silently fail to deny
        for name, text in modules.items():
            try:
                interpreter.add_module(name, text)
            except regopy.RegoError as exc:
                raise PolicyError(f"Rego syntax error: {_locate(exc, modules)}; every decision is refused "
                                  "until it is fixed") from None
        interpreter.add_data(self.data)
        # Some errors (unification cycles, unsafe variables) only appear when rules are compiled at
        # the first query, as a bare `<error>` (rego-cpp prints its report on its own output). Compile
        # now, at load time, so that a broken policy refuses everything from the start.
        if str(interpreter.query("1 == 1")).strip().startswith("<error"):  # compiles, evaluates no rule
            raise PolicyError(f"Rego compile error in {self.folder}: the policies parse but do not compile "
                              "(rego-cpp printed the location on its output); every decision is refused until "
                              "it is fixed")
        return interpreter

    def decide(self, policy: str, document: dict[str, Any]) -> Decision:
        if self.broken:
            return Decision(policy, False, (self.broken,))
        if policy not in POLICY_NAMES:
            return Decision(policy, False, (f"unknown policy {policy!r} (known: {', '.join(POLICY_NAMES)})",))
        try:
            size = len(json.dumps(document))
        except (TypeError, ValueError) as exc:
            return Decision(policy, False, (f"the input is not JSON-serialisable: {exc}",))
        if size > MAX_INPUT_BYTES:
            return Decision(policy, False, (f"the input is {size} bytes; the limit is {MAX_INPUT_BYTES}",))
        if _depth(document, MAX_INPUT_DEPTH) > MAX_INPUT_DEPTH:
            return Decision(policy, False, (f"the input nests deeper than {MAX_INPUT_DEPTH} levels",))
        import regopy

        try:
            with self._lock:
                bundle = self._bundle(policy)
                self._runner.set_input(regopy.Input(document))
                text = str(self._runner.query_bundle(bundle)).strip()
        except Exception as exc:  # fail closed: an evaluation error denies
            return Decision(policy, False, (f"policy evaluation failed: {type(exc).__name__}: {exc}",))
        if text.startswith("<error"):
            return Decision(policy, False, (f"policy evaluation failed: a rule raised an error ({text[:200]})",))
        if text == "undefined" or not text:
            return Decision(policy, False, (f"data.agentfactory.{policy}.allow or .deny is undefined for this "
                                            "input (a rule failed to evaluate)",))
        bindings = json.loads(text).get("bindings", {})
        allow, deny = bindings.get("allow"), bindings.get("deny")
        messages = sorted(str(m) for m in deny) if isinstance(deny, list) else \
            [f"data.agentfactory.{policy}.deny is not a set of messages"]
        if allow is not True and not messages:
            messages.append(f"data.agentfactory.{policy}.allow is {allow!r}")
        warn = bindings.get("warn", [])
        warnings = sorted(str(m) for m in warn) if isinstance(warn, list) else []
        if policy in WARN_POLICIES and not isinstance(warn, list):
            messages.append(f"data.agentfactory.{policy}.warn is not a set of messages")
        return Decision(policy, allow is True and not messages, tuple(messages), tuple(warnings))

    def warm_up(self, *policies: str) -> None:
        if self.broken:
            return
        with self._lock:
            for policy in policies or POLICY_NAMES:
                self._bundle(policy)

    def _bundle(self, policy: str) -> Any:
        """The policy compiled to a plan once (rego-cpp's bundles), reused for every decision."""
        if policy not in self._bundles:
            query = f"deny = data.agentfactory.{policy}.deny; allow = data.agentfactory.{policy}.allow"
            entrypoints = [f"agentfactory/{policy}/deny", f"agentfactory/{policy}/allow"]
            if policy in WARN_POLICIES:
                query += f"; warn = data.agentfactory.{policy}.warn"
                entrypoints.append(f"agentfactory/{policy}/warn")
            self._bundles[policy] = self._interpreter.build(query, entrypoints)
        return self._bundles[policy]

    def run_tests(self) -> TestReport:
        report = TestReport()
        if self.broken:
            report.errors.append(self.broken)
            return report
        if not self.tests:
            report.errors.append(f"{self.folder}: no *_test.rego files")
            return report
        try:
            interpreter = self._interpreter_with({**self.sources, **self.tests})
        except PolicyError as exc:
            report.errors.append(str(exc))
            return report
        tests: list[tuple[str, str]] = []
        for path, text in self.tests.items():
            package = _PACKAGE.search(text)
            if not package:
                report.errors.append(f"{path}: no package declaration")
                continue
            tests += [(package.group(1), name) for name in dict.fromkeys(_TEST_RULE.findall(text))]
        if not tests:
            report.errors.append(f"{self.folder}: no test_* rules in the *_test.rego files")
            return report
        # One compiled bundle with every test as an entrypoint: compiling per query would take minutes.
        entrypoints = {t: f"{t[0].replace('.', '/')}/{t[1]}" for t in tests}
        try:
            bundle = interpreter.build(None, list(entrypoints.values()))
        except Exception as exc:
            report.errors.append(f"the tests do not compile: {exc}")
            return report
        for (package_name, name), entrypoint in entrypoints.items():
            try:
                value = _value(interpreter.query_bundle_entrypoint(bundle, entrypoint))
            except Exception as exc:
                report.results.append(TestResult(package_name, name, False, f"error: {exc}"))
                continue
            report.results.append(TestResult(package_name, name, value is True,
                                             "" if value is True else f"evaluated to {value!r}"))
        return report


def plain_text(text: Any) -> str:
    """Free text made safe for rego-cpp: it does not escape `"` or `\\` in input strings that a rule
    echoes into a message, and its own JSON output then breaks (the decision would deny with an
    unreadable reason). Quotes become `'`, backslashes `/`, control characters spaces."""
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
