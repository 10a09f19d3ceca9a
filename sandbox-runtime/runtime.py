"""The node runtime: resolve, fetch, verify, then compile, link and run — in that order, always.

`prepare` turns a reference into a linked, verified module. Nothing is compiled or deserialized
before the verifier (and the artifact policy for this node's stage) allowed the exact bytes, and
the run contract comes only from the verified provenance. Verdicts are kept for `verdict_ttl`
seconds, then the evidence is read and judged again (a revoked key stops an agent within the TTL).
Every decision and every execution is audited and counted.

With `background_compile` (the node's service) nothing is compiled on the caller's thread: a module
not in the cache is queued on the background compiler (warmpool.py) and `Compiling` (503, retry) is
raised at once; the warm pool's scans call `warm`, which verifies quietly and queues the compile.
`agentfactory run` (one invocation) compiles on the spot.

Components (Python agents) take the same path: read by the bounded reader, held to the WIT world and
the run contract before anything is compiled (component_sandbox.check), compiled in the background
under the components' ceiling, cached with an HMAC, run under the same limits, counted and audited.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentfactory.audit import AuditLog
from agentfactory.digest import DIGEST_RE
from agentfactory.errors import AgentFactoryError, InputError, NotFoundError
from agentfactory.fetchverify import is_bare_name, resolve_in_stage, verify_stored
from agentfactory.metrics import (
    WASI_AGENT_EXECUTIONS,
    WASI_DURATION,
    WASI_EXECUTIONS,
    WASI_OVERHEAD,
    WASI_VIOLATIONS,
    LabelCache,
    node_namespace,
)
from agentfactory.policy import PolicyEngine
from agentfactory.promotion import DEFAULT_ENTRY_STAGE
from agentfactory.semver import is_semver
from agentfactory.store import ArtifactStore, StoredAgent
from agentfactory.store.base import MislabelledAgent
from agentfactory.trust import TrustPolicy
from agentfactory.verifier import Verdict, refuse
from agentfactory.wasm import ComponentInfo, ModuleInfo, inspect_any

from . import component_sandbox, sandbox
from .cpu_home import CpuHome
from .engine import Engines
from .http_fetch import HttpNode
from .modcache import CacheEvent, ModuleCache, load_node_key
from .sandbox import Execution, Invocation, Linked, SandboxRefusal
from .warmpool import BackgroundCompiler, Job, JobKey

MAX_STDIN = 16 * 1024 * 1024
MAX_ARGS = 256
MAX_ARG_CHARS = 4096
MAX_NAMES = 1024  # resolved references kept (least recently used evicted): callers choose the strings
MAX_PREPARED = 256  # verified, linked agents kept (least recently used evicted)
MAX_REF_CHARS = 256
# Each invocation counts into these children (by outcome; by agent, digest, stage, namespace and outcome).
_EXECUTIONS = LabelCache(WASI_EXECUTIONS)
_AGENT_EXECUTIONS = LabelCache(WASI_AGENT_EXECUTIONS)
_DURATION = LabelCache(WASI_DURATION)
_VIOLATIONS = LabelCache(WASI_VIOLATIONS)


@dataclass(frozen=True)
class RuntimeConfig:
    stage: str = "dev"
    entry_stage: str = DEFAULT_ENTRY_STAGE  # the stage fed from the store: needs no promotion
    cache_dir: Path | None = None  # on-disk compiled-module cache; None: memory only
    node_key: Path | None = None  # default <cache_dir>/node.key
    host_roots: tuple[Path, ...] = ()  # host folders agents may preopen (read-only)
    verdict_ttl: float = 30.0
    audit_log: Path | None = None
    # The node's service: a module not compiled yet is compiled in the background (warmpool.py) and the
    # request answered 503 `compiling`; False (`agentfactory run`, one invocation): compile on the caller.
    background_compile: bool = False
    http: HttpNode | None = None  # the node's http.fetch (settings, secrets); None: the refusing defaults
    cpu: CpuHome | None = None  # `runtime serve`: its threads on one home CPU (cpu_home.py); None: left alone


class Refused(AgentFactoryError):
    """The runtime will not run this agent; `reason` is the metric label, `verdict` the verifier's."""

    def __init__(self, reason: str, message: str, verdict: Verdict | None = None, agent: StoredAgent | None = None):
        super().__init__(message)
        self.reason = reason
        self.verdict = verdict
        self.agent = agent


class Compiling(Refused):
    """Not refused, not yet: the agent's module is queued or compiling off the request path (retry)."""

    def __init__(self, job: Job, verdict: Verdict | None = None, agent: StoredAgent | None = None) -> None:
        super().__init__("compiling", job.describe(), verdict, agent)
        self.job = job


def _unreported(_reason: str, _name: str, _agent: StoredAgent | None, _message: str,
                _verdict: Verdict | None) -> None:
    """A warm-up scan's refusals are not requests: neither audited nor counted."""


Report = Callable[[str, str, "StoredAgent | None", str, "Verdict | None"], None]


@dataclass
class Prepared:
    agent: StoredAgent
    verdict: Verdict
    linked: Linked
    module_source: str  # memory | disk | compiled
    verified_at: float = field(default_factory=time.monotonic)


@dataclass
class Result:
    prepared: Prepared
    execution: Execution
    seconds: float

    def to_json(self) -> dict[str, Any]:
        a = self.prepared.agent
        return {"agent": a.name, "version": a.version, "digest": a.digest, **self.execution.to_json(),
                "durationMs": round(self.seconds * 1000, 3), "score": self.prepared.verdict.score}


class Runtime:
    """Verified execution of agents from one store, under one trust policy and one stage."""

    def __init__(self, store: ArtifactStore, trust: TrustPolicy, engine: PolicyEngine,
                 config: RuntimeConfig | None = None) -> None:
        self.store = store
        self.trust = trust
        self.policy = engine
        self.config = config or RuntimeConfig()
        self.engines = Engines(cpu=self.config.cpu)
        self.audit = AuditLog(self.config.audit_log) if self.config.audit_log else None
        node = self.config.http or HttpNode()
        # every outbound request is a record in this node's trail (a copy of a node given without a sink)
        self.http = node if node.audit is not None else node.with_audit(self._audit)
        key = None
        if self.config.cache_dir is not None:
            key = load_node_key(self.config.node_key or self.config.cache_dir / "node.key")
        self.modules = ModuleCache(self.engines, self.config.cache_dir, key, on_event=self._cache_event)
        # By manifest digest, not wasm digest: two published versions with identical bytes may carry
        # different run contracts, and each gets its own.
        self._prepared: OrderedDict[str, Prepared] = OrderedDict()
        self._names: OrderedDict[str, tuple[StoredAgent, float]] = OrderedDict()  # ref -> (agent, resolved at)
        self._lock = threading.Lock()
        self._digest_locks: dict[str, threading.Lock] = {}
        self.compiler = (BackgroundCompiler(self.modules, on_done=self._compiled) if self.config.background_compile
                         else None)
        self._pending: OrderedDict[str, JobKey] = OrderedDict()  # manifest digest -> its compile job

    # -- decisions -------------------------------------------------------------------------------
    def prepare(self, ref: str, *, quiet: bool = False) -> Prepared:
        """A verified, linked agent for `ref`; Refused (audited, counted) when it may not run, Compiling (a
        Refused, neither audited nor counted) while its module compiles in the background. `quiet` (the warm
        pool's scans): refusals are not audited or counted, and nothing is kept for requests."""
        report: Report = _unreported if quiet else self._refused
        agent = self._resolve(ref, report)
        key = agent.manifest_digest
        now = time.monotonic()
        with self._lock:
            hit = self._prepared.get(key)
            pending = self._pending.get(key)
        if hit is not None and now - hit.verified_at < self.config.verdict_ttl:
            return hit
        if pending is not None and self.compiler is not None:
            job = self.compiler.active(pending)
            if job is not None:  # still compiling: answered at once, no verification, no lock
                raise Compiling(job, agent=agent)
        with self._lock:
            digest_lock = self._digest_locks.setdefault(key, threading.Lock())
        with digest_lock:  # one verification per agent at a time, not a stampede; other agents go on
            with self._lock:
                hit = self._prepared.get(key)
                self._pending.pop(key, None)
            if hit is not None and time.monotonic() - hit.verified_at < self.config.verdict_ttl:
                return hit
            try:
                prepared = self._verify_and_link(agent, report, audit_allowed=not quiet)
            except Compiling as exc:
                with self._lock:
                    self._pending[key] = exc.job.key
                    while len(self._pending) > MAX_PREPARED:
                        self._pending.popitem(last=False)
                raise
            if quiet:  # a scan warms the module cache; the first request makes (and audits) its own decision
                return prepared
            with self._lock:
                self._prepared[key] = prepared
                self._prepared.move_to_end(key)
                while len(self._prepared) > MAX_PREPARED:
                    old, _ = self._prepared.popitem(last=False)
                    self._digest_locks.pop(old, None)
            return prepared

    def compiling(self, ref: str) -> Compiling | None:
        """The answer for `ref` while its module compiles in the background, from memory alone (no store read,
        no verification: the service asks before it takes a worker); None when it is not known to be compiling."""
        if self.compiler is None:
            return None
        with self._lock:
            cached = self._names.get(ref)
            if cached is None or time.monotonic() - cached[1] >= self.config.verdict_ttl:
                return None
            pending = self._pending.get(cached[0].manifest_digest)
        job = self.compiler.active(pending) if pending is not None else None
        return Compiling(job, agent=cached[0]) if job is not None else None

    def _resolve(self, ref: str, report: Report | None = None) -> StoredAgent:
        """The stored agent `ref` names: validated before any use; beyond the entry stage a bare name is
        the version promoted to this node's stage (never the highest tag)."""
        report = report or self._refused
        check_ref(ref)
        now = time.monotonic()
        with self._lock:
            cached = self._names.get(ref)
            if cached is not None:
                self._names.move_to_end(ref)
        if cached is not None and now - cached[1] < self.config.verdict_ttl:
            return cached[0]
        stage, entry = self.config.stage, self.config.entry_stage
        try:
            if is_bare_name(ref) and stage != entry:
                agent = resolve_in_stage(self.store, ref, self.trust, stage, entry)
            else:
                agent = self.store.resolve(ref)
        except NotFoundError as exc:
            report("not-found", ref, None, str(exc), None)
            raise Refused("not-found", str(exc)) from None
        except MislabelledAgent as exc:
            report("unverified", ref, None, str(exc), None)
            raise Refused("unverified", str(exc)) from None
        with self._lock:
            self._names[ref] = (agent, now)
            self._names.move_to_end(ref)
            while len(self._names) > MAX_NAMES:
                self._names.popitem(last=False)
        return agent

    def _verify_and_link(self, agent: StoredAgent, report: Report, *, audit_allowed: bool = True) -> Prepared:
        try:
            verdict, data = verify_stored(self.store, agent, self.trust, engine=self.policy, stage=self.config.stage,
                                          entry_stage=self.config.entry_stage)
        except AgentFactoryError as exc:
            verdict, data = refuse(agent.digest, "verifier", str(exc)), None
        promotion = verdict.promotion
        if promotion is not None and not promotion.promoted and any(c.name == "promotion" for c in verdict.checks):
            where = promotion.promoted_stages
            message = (f"{agent.name} {agent.version} ({agent.digest}) is "
                       + (f"promoted to {', '.join(where)} only" if where else "not promoted to any stage")
                       + f"; this node runs {self.config.stage}: {promotion.reason}")
            others = [r for r in verdict.reasons if not r.startswith("promotion:")]
            if others:
                message += "; also: " + "; ".join(others)
            report("not-promoted", agent.name, agent, message, verdict)
            raise Refused("not-promoted", message, verdict, agent)
        if not verdict.allowed or data is None:
            reason = "tampered" if any(c.name == "digest" and not c.ok for c in verdict.checks) else "unverified"
            message = f"{agent.name}@{agent.digest} refused by the verifier: " + "; ".join(verdict.reasons)
            report(reason, agent.name, agent, message, verdict)
            raise Refused(reason, message, verdict, agent)
        if verdict.runspec is None:
            message = (f"{agent.name}@{agent.digest} has no attested run contract, so nothing can be granted to it: "
                       f"{verdict.runspec_problem}")
            report("unverified", agent.name, agent, message, verdict)
            raise Refused("unverified", message, verdict, agent)
        try:
            info = inspect_any(data, f"{agent.name}@{agent.digest}")  # bounded parse: a clear error before the compiler
            component = isinstance(info, ComponentInfo)
            if isinstance(info, ComponentInfo):
                component_sandbox.check(info, verdict.runspec)  # the world and the contract, before compiling
            module, source = self._module(agent, verdict, data, component)
            linked = sandbox.link(self.engines, module, verdict.runspec, self.config.host_roots,
                                  info if isinstance(info, ComponentInfo) else None, agent.name, http=self.http,
                                  starts=not isinstance(info, ModuleInfo) or info.start)
        except InputError as exc:
            report("bad-module", agent.name, agent, f"not a valid WebAssembly module: {exc}", verdict)
            raise Refused("bad-module", f"not a valid WebAssembly module: {exc}", verdict, agent) from None
        except SandboxRefusal as exc:
            message = f"{agent.name}@{agent.digest}: {exc}"
            report(exc.reason, agent.name, agent, message, verdict)
            raise Refused(exc.reason, message, verdict, agent) from None
        if audit_allowed:
            self._audit("decision", agent=agent.name, version=agent.version, digest=agent.digest, allowed=True,
                        score=verdict.score, stage=self.config.stage, module=source)
        return Prepared(agent=agent, verdict=verdict, linked=linked, module_source=source)

    def _module(self, agent: StoredAgent, verdict: Verdict, data: bytes, component: bool = False) -> tuple[Any, str]:
        """The compiled module: compiled here (no background compiler), or from the caches; else its compile
        is queued (or already running) off the request path and Compiling is raised. A remembered compile
        refusal is a SandboxRefusal (403 at once)."""
        assert verdict.runspec is not None
        fuel = verdict.runspec.limits.fuel is not None
        if self.compiler is None:
            return self.modules.module(agent.digest, data, fuel, component)
        found = self.modules.cached(agent.digest, fuel, component)
        if found is not None:
            return found
        raise Compiling(self.compiler.submit(agent.name, agent.digest, data, fuel, component), verdict, agent)

    def warm(self, ref: str) -> tuple[str, JobKey | None]:
        """Verify `ref` and start its compile in the background, quietly (the warm pool's scan): ready,
        compiling (and its job), refused:<reason>, or error (the store could not be read)."""
        try:
            self.prepare(ref, quiet=True)
        except Compiling as exc:
            return "compiling", exc.job.key
        except Refused as exc:
            return f"refused:{exc.reason}", None
        except AgentFactoryError:
            return "error", None
        return "ready", None

    def _compiled(self, job: Job, seconds: float, refusal: SandboxRefusal | None) -> None:
        """A background compile finished: one audit record per compile (a refusal is remembered, so once)."""
        self._audit("compile", agent=job.name, digest=job.digest, fuel=job.fuel, seconds=round(seconds, 3),
                    queuedMs=round(((job.started_at or job.queued_at) - job.queued_at) * 1000, 1),
                    outcome="compiled" if refusal is None else refusal.reason,
                    message=None if refusal is None else str(refusal))

    def _refused(self, reason: str, name: str, agent: StoredAgent | None, message: str,
                 verdict: Verdict | None) -> None:
        WASI_VIOLATIONS.labels(reason=reason).inc()
        WASI_EXECUTIONS.labels(result="refused").inc()
        if agent is not None:  # a known agent: its canary analysis counts the refusal as an error
            WASI_AGENT_EXECUTIONS.labels(agent=agent.name, digest=agent.digest, stage=self.config.stage,
                                         namespace=node_namespace(), result="refused").inc()
        self._audit("decision", agent=name, version=agent.version if agent else None,
                    digest=agent.digest if agent else None, allowed=False, reason=reason, message=message,
                    stage=self.config.stage, score=verdict.score if verdict else None,
                    checks=[c.to_json() for c in verdict.checks if not c.ok] if verdict else [])

    def _cache_event(self, event: CacheEvent) -> None:
        self._audit("cache", path=str(event.path), message=event.reason, violation="cache-tampered")

    def _audit(self, event: str, **fields: Any) -> None:
        if self.audit is not None:
            self.audit.record(event, plane="runtime", **fields)

    # -- executions ------------------------------------------------------------------------------
    def invoke(self, ref: str, invocation: Invocation, prepared: Prepared | None = None) -> Result:
        """Verify (or reuse a fresh verdict), then run once; Refused when it may not run. `prepared`: what
        `prepare(ref)` has just returned to this caller (the service prepares before it admits the request),
        so that it is not looked up twice."""
        _check_invocation(invocation)
        started = time.perf_counter()
        if prepared is None:
            prepared = self.prepare(ref)
        if prepared.linked.component is not None:
            check_component_invocation(invocation)
        extra = sorted(set(invocation.env) - set(prepared.linked.runspec.env))
        if extra:
            allowed = ", ".join(prepared.linked.runspec.env) or "empty"
            raise InputError("env", f"{', '.join(extra)}: not in the agent's environment allowlist "
                                    f"({allowed}; spec.capabilities.wasi.env)")
        execution = sandbox.run(self.engines, prepared.linked, prepared.agent.name, invocation)
        seconds = time.perf_counter() - started
        a, outcome, namespace = prepared.agent, execution.outcome, node_namespace()
        _EXECUTIONS.get(outcome).inc()
        _AGENT_EXECUTIONS.get(a.name, a.digest, self.config.stage, namespace, outcome).inc()
        if outcome in ("timeout", "fuel", "memory", "stack", "output"):
            _VIOLATIONS.get(outcome).inc()
        WASI_OVERHEAD.observe(max(0.0, seconds - execution.guest_seconds))
        _DURATION.get(a.name, a.digest, self.config.stage, namespace).observe(seconds)
        self._audit("execution", agent=a.name, version=a.version, digest=a.digest, outcome=execution.outcome,
                    exitCode=execution.exit_code, durationMs=round(seconds * 1000, 3),
                    limitsHit=list(execution.limits_hit), reason=execution.reason)
        return Result(prepared, execution, seconds)

    def close(self) -> None:
        if self.compiler is not None:
            self.compiler.close()
        self.engines.close()
        if self.audit is not None:
            self.audit.close()


def check_ref(ref: str) -> None:
    """Refuse a malformed reference before it is cached, logged or looked up: bounded, printable, a
    semantic version after ':' and a sha256 digest after '@'."""
    if not isinstance(ref, str) or not ref or len(ref) > MAX_REF_CHARS or not ref.isprintable() or " " in ref:
        raise InputError("reference", f"a reference is 1 to {MAX_REF_CHARS} printable characters without spaces "
                                      "(name, name:version, name@sha256:…)")
    head, at, pinned = ref.partition("@")
    if at and not DIGEST_RE.match(pinned):
        raise InputError(ref[:80], "digest must be sha256:<64 lower-case hex>")
    if DIGEST_RE.match(head):
        return
    _, colon, version = head.partition(":")
    if colon and not is_semver(version):
        raise InputError(ref[:80], f"version {version[:64]!r} is not a semantic version (MAJOR.MINOR.PATCH)")


def check_component_invocation(inv: Invocation) -> None:
    """A component agent's input is one UTF-8 string (stdin) given to `run`: no arguments, no environment."""
    if inv.args:
        raise InputError("args", "a component agent takes no arguments: its input is stdin, given to run")
    if inv.env:
        raise InputError("env", "a component agent gets no environment variables")
    try:
        inv.stdin.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError("stdin", f"a component agent's input is UTF-8 text (invalid byte at {exc.start})") from None


def _check_invocation(inv: Invocation) -> None:
    if len(inv.stdin) > MAX_STDIN:
        raise InputError("stdin", f"{len(inv.stdin)} bytes, more than the {MAX_STDIN}-byte limit")
    if len(inv.args) > MAX_ARGS or any(len(a) > MAX_ARG_CHARS or "\0" in a for a in inv.args):
        raise InputError("args", f"at most {MAX_ARGS} arguments of at most {MAX_ARG_CHARS} characters, without NUL")
    for k, v in inv.env.items():
        if "\0" in k or "\0" in v or "=" in k:
            raise InputError("env", f"{k!r}: names may not contain '=' or NUL, values may not contain NUL")
