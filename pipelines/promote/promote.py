"""Promotion, rollback, status and history: the decisions, with every refusal saying why.

A promotion moves the digest that is in the source stage (never a tag, never a digest that skipped
it) into the target stage, after the target's gates: the verifier with the target's artifact
policy, the soak time in the source stage, manual approval, and canary analysis. Canary analysis
runs before the environment lock is taken (it waits for its window); the decision is then made
again under the lock on the current HEAD, so a canary that changed meanwhile is not promoted on
someone else's metrics.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from agentfactory.errors import AgentFactoryError, NotFoundError
from agentfactory.fetchverify import verify_stored
from agentfactory.policy import PolicyEngine
from agentfactory.store import ArtifactStore, StoredAgent
from agentfactory.trust import TrustPolicy
from agentfactory.verifier import Verdict

from .analysis import Analysis, MetricsSource, MetricsUnavailable, analyze
from .envrepo import EnvRepo, Event, wasm_agent
from .stages import Stage, StageGraph


class Refused(AgentFactoryError):
    """The promotion or rollback was refused; `reasons` says every why."""

    def __init__(self, what: str, reasons: list[str]) -> None:
        super().__init__(f"{what}: " + "; ".join(reasons))
        self.what = what
        self.reasons = reasons


@dataclass
class Context:
    graph: StageGraph
    env: EnvRepo
    store: ArtifactStore
    trust: TrustPolicy
    engine: PolicyEngine
    now: Callable[[], float] = time.time
    branch: str | None = None  # commit on a new branch (a pull request) instead of the current one
    push: bool = False


@dataclass
class Outcome:
    action: str  # promoted | rolled-back | inconclusive | unchanged
    agent: str
    stage: str
    digest: str | None
    commit: str | None = None
    branch: str | None = None
    reasons: list[str] = field(default_factory=list)
    analysis: Analysis | None = None
    rollback: Outcome | None = None

    def to_json(self) -> dict[str, Any]:
        return {"action": self.action, "agent": self.agent, "stage": self.stage, "digest": self.digest,
                "commit": self.commit, "branch": self.branch, "reasons": self.reasons,
                "analysis": self.analysis.to_json() if self.analysis else None,
                "rollback": self.rollback.to_json() if self.rollback else None}


@dataclass(frozen=True)
class _Decision:
    stage: Stage
    stored: StoredAgent
    verdict: Verdict | None
    head: str | None


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return (f"{h}h" if h else "") + (f"{m}m" if m else "") + (f"{s}s" if s or not (h or m) else "")


def _verdict_text(v: Verdict | None, stage: str) -> str:
    if v is None:
        return "not checked (gates.policy: false)"
    return f"{'allowed' if v.allowed else 'denied'} score={v.score:.1f} stage={stage}"


def _decide(ctx: Context, agent: str, to: str, digest: str | None, approved_by: str | None,
            analysis_window: float | None, metrics: MetricsSource | None) -> _Decision:
    """Every gate but the analysis itself; raise Refused with all the reasons at once."""
    stage = ctx.graph.stage(to)
    env = ctx.env
    reasons: list[str] = []
    agent, _, version = agent.partition(":")
    if stage.source is None:
        ref = f"{agent}@{digest}" if digest else f"{agent}:{version}" if version else agent
        try:
            stored = ctx.store.resolve(ref)
        except NotFoundError as exc:
            raise Refused(f"promote {agent} to {to}", [str(exc)]) from None
    else:
        if version:
            raise Refused(f"promote {agent}:{version} to {to}", [
                f"a version picks what enters {ctx.graph.stages[0].name} only; {to} takes the digest "
                f"{stage.source} runs: promote {agent} (no version)"])
        src = env.placement(stage.source, agent)
        record = env.history(agent=agent, stage=stage.source)
        if digest is None:
            if src is None:
                ever = "was removed from" if record else "has never been promoted to"
                raise Refused(f"promote {agent} to {to}", [
                    f"{agent} {ever} {stage.source}, and {to} is promoted from {stage.source} (stages.yaml): "
                    f"promote it to {stage.source} first; stages are never skipped"])
            digest = src.digest
        elif src is None or src.digest != digest:
            passed = any(e.trailers.get("Digest") == digest for e in record)
            why = ("was in it once but is not now" if passed else "never passed it")
            raise Refused(f"promote {agent}@{digest} to {to}", [
                f"{digest} is not the digest of {agent} in {stage.source} (it {why}); {to} takes only what "
                f"{stage.source} runs now ({src.digest if src else 'nothing'})"])
        entered = next((e for e in record if e.trailers.get("Digest") == digest), None)
        soak = stage.gates.soak_seconds
        if soak and entered is None:
            reasons.append(f"soak: no promotion record says when {digest[:19]}… entered {stage.source} (a hand "
                           f"edit?), so its {_duration(soak)} soak cannot be proven")
        elif soak and entered is not None:
            spent = ctx.now() - entered.epoch
            if spent < soak:
                reasons.append(f"soak: {agent}@{digest[:19]}… has been in {stage.source} for {_duration(spent)} "
                               f"(since {entered.time}); {to} requires {_duration(soak)} there (stages.yaml "
                               f"gates.soak): promote again after {_duration(soak - spent)}")
        try:
            stored = ctx.store.resolve(f"{agent}@{digest}")
        except NotFoundError as exc:
            raise Refused(f"promote {agent} to {to}", [f"{digest} is in {stage.source} but not in the "
                                                       f"artifact store: {exc}"]) from None
    current = env.placement(to, agent)
    if current is not None and current.digest == stored.digest:
        raise _Unchanged(stored)
    verdict = None
    if stage.gates.policy:
        verdict, _ = verify_stored(ctx.store, stored, ctx.trust, engine=ctx.engine, stage=to)
        if not verdict.allowed:
            reasons.extend(f"verify ({to}): {r}" for r in verdict.reasons)
    if stage.gates.approval and not approved_by:
        reasons.append(f"approval: {to} requires a named approver (stages.yaml gates.approval): --approved-by NAME")
    if stage.gates.analysis is not None:
        if analysis_window is None:
            reasons.append(f"analysis: {to} requires canary analysis of {stage.source} (stages.yaml gates.analysis): "
                           "--analyze WINDOW, e.g. --analyze 5m")
        elif metrics is None:
            reasons.append("analysis: no metrics source: give --prometheus URL or --runtime-metrics URL")
    if reasons:
        raise Refused(f"promote {agent}@{stored.digest} to {to}", reasons)
    return _Decision(stage, stored, verdict, env.head())


class _Unchanged(Exception):  # control flow, not an error
    def __init__(self, stored: StoredAgent) -> None:
        self.stored = stored


def promote(ctx: Context, agent: str, to: str, *, digest: str | None = None, approved_by: str | None = None,
            analysis_window: float | None = None, metrics: MetricsSource | None = None) -> Outcome:
    """Promote `agent` (NAME, or NAME:VERSION into the entry stage) into stage `to`; with analysis, a
    failing canary is rolled back instead."""
    full = agent
    agent = agent.partition(":")[0]
    try:
        first = _decide(ctx, full, to, digest, approved_by, analysis_window, metrics)
    except _Unchanged as u:
        return Outcome("unchanged", agent, to, u.stored.digest, reasons=[f"{agent}@{u.stored.digest} is already "
                                                                         f"in {to}"])
    result: Analysis | None = None
    thresholds = first.stage.gates.analysis
    if thresholds is not None and analysis_window is not None and metrics is not None:
        source = first.stage.source or to
        try:
            result = analyze(metrics, agent, first.stored.digest, analysis_window, thresholds)
        except MetricsUnavailable as exc:
            raise Refused(f"promote {agent} to {to}", [f"analysis: metrics unavailable ({exc}); nothing was "
                                                       "promoted or rolled back (fail closed)"]) from None
        if result.verdict == "inconclusive":
            return Outcome("inconclusive", agent, to, first.stored.digest, reasons=result.reasons, analysis=result)
        if result.verdict == "fail":
            back = rollback(ctx, agent, source, reason=f"canary analysis failed: {'; '.join(result.reasons)}",
                            analysis=result)
            return Outcome("rolled-back", agent, to, first.stored.digest, reasons=result.reasons, analysis=result,
                           rollback=back)
    with ctx.env.locked():
        if ctx.push:
            ctx.env.fetch()
        ctx.env.check_clean()
        ctx.env.check_not_diverged()
        try:
            decision = _decide(ctx, full, to, digest, approved_by, analysis_window, metrics)
        except _Unchanged as u:
            return Outcome("unchanged", agent, to, u.stored.digest, reasons=[f"{agent}@{u.stored.digest} is "
                                                                             f"already in {to}"])
        if decision.stored.digest != first.stored.digest:
            raise Refused(f"promote {agent} to {to}", [
                f"{decision.stage.source} changed to {decision.stored.digest} while the canary analysis of "
                f"{first.stored.digest} ran; analyse the new canary"])
        s = decision.stored
        trailers = {"Agent": agent, "Version": s.version or "", "Digest": s.digest, "Stage": to,
                    "From-Stage": decision.stage.source or "store", "Action": "promote",
                    "Verdict": _verdict_text(decision.verdict, to), "Approved-By": approved_by or "",
                    "Analysis": _analysis_text(result)}
        branch = ctx.branch or None
        commit = ctx.env.commit_placement(
            to, agent, wasm_agent(agent, _ref(ctx.store, s), to, s.version or "", decision.stage.source),
            subject=f"promote {agent} {s.version or ''} to {to}".replace("  ", " "), trailers=trailers,
            expected_head=decision.head, branch=branch)
        if ctx.push:
            ctx.env.push(branch)
    return Outcome("promoted", agent, to, s.digest, commit=commit, branch=branch, analysis=result)


def _analysis_text(a: Analysis | None) -> str:
    if a is None:
        return ""
    m = a.measurement
    ratio = f"{m.error_ratio:.4f}" if m.error_ratio is not None else "n/a"
    p95 = f"{m.p95_seconds:.4f}s" if m.p95_seconds is not None else "n/a"
    return f"{a.verdict} requests={m.requests:.0f} errors={m.errors:.0f} error_ratio={ratio} p95={p95} " \
           f"window={_duration(m.window_seconds)} source={m.source}"


def _ref(store: ArtifactStore, s: StoredAgent) -> str:
    """spec.agent as the webhook reads it: the bare name in its own store, the full reference in a registry."""
    url = store.url
    if url.startswith("oci://"):
        return f"{url.removeprefix('oci://').rstrip('/')}/{s.name}@{s.digest}"
    return f"{s.name}@{s.digest}"


def _stack(events: list[Event]) -> list[str]:
    """The digests a stage has held, replayed oldest first: a promotion pushes, a rollback pops."""
    stack: list[str] = []
    for e in reversed(events):
        d = e.trailers.get("Digest", "")
        if e.trailers.get("Action") == "rollback":
            if stack:
                stack.pop()
            if d and d != "none" and (not stack or stack[-1] != d):
                stack.append(d)
        elif d:
            stack.append(d)
    return stack


def rollback(ctx: Context, agent: str, stage: str, *, reason: str = "manual rollback",
             analysis: Analysis | None = None) -> Outcome:
    """A new commit putting back the digest the stage held before the current one (or removing the
    agent from the stage when it held none). Never rewrites history."""
    ctx.graph.stage(stage)
    with ctx.env.locked():
        if ctx.push:
            ctx.env.fetch()
        ctx.env.check_clean()
        ctx.env.check_not_diverged()
        head = ctx.env.head()
        current = ctx.env.placement(stage, agent)
        if current is None:
            raise Refused(f"rollback {agent} in {stage}", [f"{agent} is not in {stage}: nothing to roll back"])
        stack = _stack(ctx.env.history(agent=agent, stage=stage))
        previous = stack[-2] if len(stack) >= 2 and stack[-1] == current.digest else None
        trailers = {"Agent": agent, "Digest": previous or "none", "Stage": stage, "From-Stage": stage,
                    "Action": "rollback", "Reason": reason, "Analysis": _analysis_text(analysis)}
        if previous is None:
            commit = ctx.env.commit_placement(stage, agent, None, subject=f"rollback {agent} in {stage}: remove "
                                              f"{current.digest[:19]}… (no earlier digest)", trailers=trailers,
                                              expected_head=head, branch=ctx.branch)
        else:
            stored = ctx.store.resolve(f"{agent}@{previous}")
            verdict, _ = verify_stored(ctx.store, stored, ctx.trust, engine=ctx.engine, stage=stage)
            if not verdict.allowed:
                raise Refused(f"rollback {agent} in {stage} to {previous}", [
                    f"the previous digest no longer verifies for {stage}: {r}" for r in verdict.reasons])
            trailers["Version"] = stored.version or ""
            trailers["Verdict"] = _verdict_text(verdict, stage)
            commit = ctx.env.commit_placement(
                stage, agent, wasm_agent(agent, _ref(ctx.store, stored), stage, stored.version or "", None),
                subject=f"rollback {agent} in {stage} to {stored.version or previous[:19]}", trailers=trailers,
                expected_head=head, branch=ctx.branch)
        if ctx.push:
            ctx.env.push(ctx.branch)
    return Outcome("rolled-back", agent, stage, previous, commit=commit, branch=ctx.branch, reasons=[reason],
                   analysis=analysis)


def status(ctx: Context, *, verify: bool = True) -> list[dict[str, Any]]:
    """Agents by stages: version, digest, since when, and the verdict now (with the stage's policy)."""
    rows = []
    for stage in ctx.graph.stages:
        for p in ctx.env.placements(stage.name):
            verdict = None
            if verify:
                try:
                    stored = ctx.store.resolve(f"{p.agent}@{p.digest}")
                    verdict = verify_stored(ctx.store, stored, ctx.trust, engine=ctx.engine, stage=stage.name)[0]
                    text = _verdict_text(verdict, stage.name)
                except AgentFactoryError as exc:
                    text = f"denied: {exc}"
            else:
                text = "not checked"
            rows.append({"agent": p.agent, "stage": stage.name, "version": p.version, "digest": p.digest,
                         "since": p.since, "commit": p.commit, "verdict": text,
                         "allowed": verdict.allowed if verdict else None,
                         "reasons": verdict.reasons if verdict else []})
    return rows
