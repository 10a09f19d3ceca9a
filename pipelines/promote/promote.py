"""Promotion, rollback, status and history: the decisions, with every refusal saying why.

A promotion moves the digest that is in the source stage (never a tag, never a digest that skipped
it) into the target stage, after the target's gates: the verifier with the target's artifact
policy, the soak time in the source stage, manual approval, and canary analysis. Canary analysis
runs before the environment lock is taken (it waits for its window); the decision is then made
again under the lock on the current HEAD, so a canary that changed meanwhile is not promoted on
someone else's metrics.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from agentfactory.errors import AgentFactoryError, InputError, NotFoundError
from agentfactory.evidence import collect
from agentfactory.fetchverify import verify_stored
from agentfactory.keys.base import KeyProvider
from agentfactory.policy import PolicyEngine
from agentfactory.promotion import Previous, predicate, promoter_keyring, sign_and_attach
from agentfactory.store import ArtifactStore, StoredAgent
from agentfactory.tlog.base import TransparencyLog
from agentfactory.trust import TrustPolicy
from agentfactory.verifier import PromotionState, Verdict, promotion_records, promotion_state

from .analysis import Analysis, MetricsSource, MetricsUnavailable, analyze
from .attested import Attested, Ledger, unattested_reason
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
    # Who signs the promotion attestations (default: the embedded promoter keyring, never the build keys)
    # and the transparency log they go to (default: the embedded log). docs/promotion.md
    promoter: KeyProvider | None = None
    tlog: TransparencyLog | None = None

    def signer(self) -> KeyProvider:
        return self.promoter if self.promoter is not None else promoter_keyring(create=True)

    def log(self) -> TransparencyLog:
        if self.tlog is None:
            from agentfactory.tlog.log import EmbeddedLog

            self.tlog = EmbeddedLog()
        return self.tlog

    @property
    def entry_stage(self) -> str:
        return self.graph.stages[[s.source for s in self.graph.stages].index(None)].name


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
    source: PromotionState | None = None  # the digest's standing in the stage promoted from
    soak: dict[str, Any] | None = None  # the soak gate's figures


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
    source_state: PromotionState | None = None
    soak_figures: dict[str, Any] | None = None
    # What the stages hold is proven by promotion attestations; a stage file no attestation backs is
    # never built on (a hand edit, or a commit with forged trailers).
    ledger = Ledger.load(ctx.store, ctx.trust, agent)
    current = env.placement(to, agent)
    if current is not None and ledger.matching(agent, to, current.digest) is None:
        raise Refused(f"promote {agent} to {to}", [
            unattested_reason(_where(env, to, agent), to, current.digest) + "; promote refuses to build on it"])
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
        if src is not None and ledger.matching(agent, stage.source, src.digest) is None:
            raise Refused(f"promote {agent} to {to}", [
                unattested_reason(_where(env, stage.source, agent), stage.source, src.digest)
                + "; promote refuses to build on it"])
        record = ledger.of(agent, stage.source)
        if digest is None:
            if src is None:
                ever = "was removed from" if record else "has never been promoted to"
                raise Refused(f"promote {agent} to {to}", [
                    f"{agent} {ever} {stage.source}, and {to} is promoted from {stage.source} (stages.yaml): "
                    f"promote it to {stage.source} first; stages are never skipped"])
            digest = src.digest
        elif src is None or src.digest != digest:
            passed = any(e.digest == digest and e.action == "promote" for e in record)
            why = ("was in it once but is not now" if passed else "never passed it")
            raise Refused(f"promote {agent}@{digest} to {to}", [
                f"{digest} is not the digest of {agent} in {stage.source} (it {why}); {to} takes only what "
                f"{stage.source} runs now ({src.digest if src else 'nothing'})"])
        try:
            stored = ctx.store.resolve(f"{agent}@{digest}")
        except NotFoundError as exc:
            raise Refused(f"promote {agent} to {to}", [f"{digest} is in {stage.source} but not in the "
                                                       f"artifact store: {exc}"]) from None
        # The stage promoted from is proven by signed, logged promotion evidence, and the soak time is
        # counted from the log's integrated time of that promotion: never from Git, which a writer controls.
        source_state = _standing(ctx, stored, stage.source)
        if not source_state.promoted:
            reasons.append(f"promotion ({stage.source}): {source_state.reason}")
        soak = stage.gates.soak_seconds
        record_now = source_state.current
        entered = record_now.integrated_time if record_now is not None and record_now.claim.action == "promote" \
            else None
        if soak and (entered is None or not source_state.promoted):
            reasons.append(f"soak: no logged promotion attestation says when {digest[:19]}… entered {stage.source} "
                           f"(a hand edit?), so its {_duration(soak)} soak cannot be proven")
        elif entered is not None:
            spent = ctx.now() - entered
            soak_figures = {"requiredSeconds": soak, "spentSeconds": round(spent, 3), "since": _iso(entered)}
            if soak and spent < soak:
                reasons.append(f"soak: {agent}@{digest[:19]}… has been in {stage.source} for {_duration(spent)} "
                               f"(since {_iso(entered)}, the transparency log's time); {to} requires "
                               f"{_duration(soak)} there (stages.yaml gates.soak): promote again after "
                               f"{_duration(soak - spent)}")
    if current is not None and current.digest == stored.digest:
        raise _Unchanged(stored)
    verdict = None
    if stage.gates.policy:
        # The target's artifact policy; the promotion proven is the source stage's (the target's comes next).
        verdict, _ = verify_stored(ctx.store, stored, ctx.trust, engine=ctx.engine, stage=to,
                                   promotion_stage=stage.source or to, entry_stage=ctx.entry_stage)
        if not verdict.allowed:
            reasons.extend(f"verify ({to}): {r}" for r in verdict.reasons
                           if not (r.startswith("promotion:") and source_state is not None))
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
    return _Decision(stage, stored, verdict, env.head(), source_state, soak_figures)


def _standing(ctx: Context, stored: StoredAgent, stage: str) -> PromotionState:
    """Where `stored` stands in `stage`, from its verified promotion attestations."""
    records, problems = promotion_records(stored.digest, collect(ctx.store, stored), ctx.trust)
    return promotion_state(stored.digest, stage, records, problems, name=stored.name, version=stored.version,
                           entry_stage=ctx.entry_stage, policy=ctx.trust)


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _attest(ctx: Context, s: StoredAgent, stage: str, action: str, *, gates: dict[str, Any],
            from_stage: str | None = None, source: PromotionState | None = None, approved_by: str | None = None,
            reason: str | None = None) -> dict[str, str]:
    """Sign, log and attach the promotion (or withdrawal) attestation; the trailers that name it."""
    current = source.current if source is not None else None
    previous = Previous(current.claim.stage, current.sha256, current.log_index) if current is not None else None
    pred = predicate(name=s.name, version=s.version or "", digest=s.digest, stage=stage, action=action,
                     resource_uri=f"{ctx.store.url}#{s.name}@{s.digest}", gates=gates, from_stage=from_stage,
                     previous=previous, approved_by=approved_by, reason=reason,
                     policy_uri=f"{ctx.graph.where}#{stage}", now=datetime.fromtimestamp(ctx.now(), UTC),
                     environment=ctx.trust.environment)
    signed = sign_and_attach(ctx.store, s, pred, ctx.signer(), ctx.log())
    index = f" (log index {signed.log_index})" if signed.log_index is not None else ""
    return {"Promotion-Attestation": f"sha256:{signed.sha256}{index}", "Promoter-Key": signed.key_id[:16]}


def _gates(d: _Decision, approved_by: str | None, result: Analysis | None) -> dict[str, Any]:
    """The gates passed, with their figures, as the attestation records them."""
    v = d.verdict
    gates: dict[str, Any] = {
        "policy": {"checked": v is not None, "allowed": v.allowed if v else None, "score": v.score if v else None},
        "approval": {"required": d.stage.gates.approval, "approvedBy": approved_by},
        "soak": d.soak or {"requiredSeconds": d.stage.gates.soak_seconds, "spentSeconds": None, "since": None},
        "analysis": None,
    }
    if result is not None:
        m = result.measurement
        gates["analysis"] = {"verdict": result.verdict, "requests": m.requests, "errors": m.errors,
                             "errorRatio": m.error_ratio, "p95Seconds": m.p95_seconds,
                             "windowSeconds": m.window_seconds, "source": m.source}
    return gates


class _Unchanged(Exception):  # control flow, not an error
    def __init__(self, stored: StoredAgent) -> None:
        self.stored = stored


def promote(ctx: Context, agent: str, to: str, *, digest: str | None = None, approved_by: str | None = None,
            analysis_window: float | None = None, metrics: MetricsSource | None = None) -> Outcome:
    """Promote `agent` (NAME, or NAME:VERSION into the entry stage) into stage `to`; with analysis, a
    failing canary is rolled back instead."""
    full = agent
    agent = agent.partition(":")[0]
    result: Analysis | None = None
    first: _Decision | None = None
    thresholds = ctx.graph.stage(to).gates.analysis
    if thresholds is not None and analysis_window is not None and metrics is not None:
        # Every decision is made under the environment's lock, this one too (the analysis after it runs
        # without). A concurrent promotion logs its attestation, then commits: read outside the lock, the
        # attestations can be loaded before it logs and the stage file read after it commits, and the
        # stage file would look unattested (a forgery) when it is not.
        with ctx.env.locked():
            try:
                first = _decide(ctx, full, to, digest, approved_by, analysis_window, metrics)
            except _Unchanged as u:
                return Outcome("unchanged", agent, to, u.stored.digest,
                               reasons=[f"{agent}@{u.stored.digest} is already in {to}"])
        source = first.stage.source or to
        try:
            result = analyze(metrics, agent, first.stored.digest, analysis_window, thresholds, stage=source)
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
        if first is not None and decision.stored.digest != first.stored.digest:
            raise Refused(f"promote {agent} to {to}", [
                f"{decision.stage.source} changed to {decision.stored.digest} while the canary analysis of "
                f"{first.stored.digest} ran; analyse the new canary"])
        s = decision.stored
        trailers = {"Agent": agent, "Version": s.version or "", "Digest": s.digest, "Stage": to,
                    "From-Stage": decision.stage.source or "store", "Action": "promote",
                    "Verdict": _verdict_text(decision.verdict, to), "Approved-By": approved_by or "",
                    "Analysis": _analysis_text(result)}
        # Signed and logged before the commit: a promotion without its attestation never reaches Git.
        trailers.update(_attest(ctx, s, to, "promote", gates=_gates(decision, approved_by, result),
                                from_stage=decision.stage.source, source=decision.source, approved_by=approved_by))
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


def _where(env: EnvRepo, stage: str, agent: str) -> str:
    return str(env.agent_file(stage, agent).relative_to(env.root))


def _exactly(store: ArtifactStore, agent: str, version: str, digest: str) -> StoredAgent:
    """The stored `agent` `version`, which must be `digest`: by name and version, never by digest alone, which
    anyone who can push names twice by pushing the same bytes as another version."""
    stored = store.resolve(f"{agent}:{version}")
    if stored.digest != digest:
        raise InputError(f"{agent}:{version}", f"the store now holds {stored.digest} under this version, not {digest}")
    return stored


def rollback(ctx: Context, agent: str, stage: str, *, reason: str = "manual rollback",
             analysis: Analysis | None = None) -> Outcome:
    """A new commit putting back the previous *attested* digest of the stage: the newest earlier promotion
    to it that still stands (not withdrawn), from the signed, logged attestations, never from commit
    messages; or removing the agent from the stage when there is none. Never rewrites history."""
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
        ledger = Ledger.load(ctx.store, ctx.trust, agent)
        standing = ledger.matching(agent, stage, current.digest)
        if standing is None:
            raise Refused(f"rollback {agent} in {stage}", [
                unattested_reason(_where(ctx.env, stage, agent), stage, current.digest)
                + "; rollback refuses to build on it"])
        before = ledger.previous(agent, stage, current.digest)
        previous = before.digest if before is not None else None
        trailers = {"Agent": agent, "Digest": previous or "none", "Stage": stage, "From-Stage": stage,
                    "Action": "rollback", "Reason": reason, "Analysis": _analysis_text(analysis)}
        # The withdrawal is signed about exactly what the standing attestation names (name, version, digest):
        # a rollback that cannot sign it leaves the digest promoted, so it is refused, never committed without
        # it (a store writer's decoy manifest of the same bytes made `agent@digest` ambiguous, and the rollback
        # went ahead unsigned while the promotion kept standing).
        try:
            withdrawn = _exactly(ctx.store, agent, standing.version, current.digest)
        except AgentFactoryError as exc:
            raise Refused(f"rollback {agent} in {stage}", [
                f"the withdrawal of {agent} {standing.version} ({current.digest}) cannot be signed: {exc}; "
                "without it the promotion keeps standing, so nothing was committed"]) from None
        stored_prev: StoredAgent | None = None
        if previous is not None:
            assert before is not None
            stored_prev = _exactly(ctx.store, agent, before.version, previous)
            verdict, _ = verify_stored(ctx.store, stored_prev, ctx.trust, engine=ctx.engine, stage=stage,
                                       entry_stage=ctx.entry_stage)
            if not verdict.allowed:
                raise Refused(f"rollback {agent} in {stage} to {previous}", [
                    f"the previous digest no longer verifies for {stage}: {r}" for r in verdict.reasons])
            trailers["Version"] = stored_prev.version or ""
            trailers["Verdict"] = _verdict_text(verdict, stage)
        # signed and logged before the commit, like a promotion
        gates: dict[str, Any] = {"analysis": None}
        if analysis is not None:
            m = analysis.measurement
            gates["analysis"] = {"verdict": analysis.verdict, "requests": m.requests, "errors": m.errors,
                                 "errorRatio": m.error_ratio, "p95Seconds": m.p95_seconds,
                                 "windowSeconds": m.window_seconds, "source": m.source}
        trailers.update(_attest(ctx, withdrawn, stage, "withdraw", gates=gates,
                                source=_standing(ctx, withdrawn, stage), reason=reason))
        if previous is None:
            commit = ctx.env.commit_placement(stage, agent, None, subject=f"rollback {agent} in {stage}: remove "
                                              f"{current.digest[:19]}… (no earlier digest)", trailers=trailers,
                                              expected_head=head, branch=ctx.branch)
        else:
            assert stored_prev is not None
            stored = stored_prev
            commit = ctx.env.commit_placement(
                stage, agent, wasm_agent(agent, _ref(ctx.store, stored), stage, stored.version or "", None),
                subject=f"rollback {agent} in {stage} to {stored.version or previous[:19]}", trailers=trailers,
                expected_head=head, branch=ctx.branch)
        if ctx.push:
            ctx.env.push(ctx.branch)
    return Outcome("rolled-back", agent, stage, previous, commit=commit, branch=ctx.branch, reasons=[reason],
                   analysis=analysis)


def status(ctx: Context, *, verify: bool = True) -> list[dict[str, Any]]:
    """Agents by stages: version, digest, since when (the transparency log's time of the standing
    promotion), and the verdict now (with the stage's policy). A stage file that no standing promotion
    attestation backs is reported as unattested and not allowed, checked or not."""
    ledger, carriers, placed = ctx.env.settled(lambda: (
        Ledger.load(ctx.store, ctx.trust), _carriers(ctx.env),
        [(stage, ctx.env.placements(stage.name), ctx.env.kustomization_problem(stage.name))
         for stage in ctx.graph.stages]))
    rows: list[dict[str, Any]] = []
    for stage, placements, problem in placed:
        if problem is not None:  # what Argo CD deploys there is not what the stage files say: the stage is refused
            rows.append({"agent": "*", "stage": stage.name, "version": "", "digest": "", "since": "",
                         "attestation": None, "log_index": None, "commit": "", "verdict": "unattested: " + problem,
                         "allowed": False, "reasons": [problem]})
        for p in placements:
            attested = ledger.matching(p.agent, stage.name, p.digest)
            verdict = None
            reasons: list[str] = []
            if attested is None:
                reasons = [unattested_reason(_where(ctx.env, stage.name, p.agent), stage.name, p.digest)]
                text = "unattested: " + reasons[0]
            elif verify:
                try:
                    stored = ctx.store.resolve(f"{p.agent}@{p.digest}")
                    verdict = verify_stored(ctx.store, stored, ctx.trust, engine=ctx.engine, stage=stage.name,
                                            entry_stage=ctx.entry_stage)[0]
                    text = _verdict_text(verdict, stage.name)
                    reasons = verdict.reasons
                except AgentFactoryError as exc:
                    text = f"denied: {exc}"
                    reasons = [str(exc)]
            else:
                text = "not checked"
            allowed: bool | None = None  # not checked
            if attested is None or verify:
                allowed = attested is not None and verdict is not None and verdict.allowed
            rows.append({"agent": p.agent, "stage": stage.name, "version": attested.version if attested else p.version,
                         "digest": p.digest, "since": attested.time if attested else "",
                         "attestation": f"sha256:{attested.record.sha256}" if attested else None,
                         "log_index": attested.record.log_index if attested else None,
                         "commit": carriers.get(attested.record.sha256, "") if attested else "",
                         "verdict": text, "allowed": allowed, "reasons": reasons})
    return rows


def _carriers(env: EnvRepo) -> dict[str, str]:
    """attestation sha256 -> the first commit that names it in its trailers (a copy, for people)."""
    out: dict[str, str] = {}
    for e in reversed(env.history()):
        sha = _attestation_sha(e)
        if sha and sha not in out:
            out[sha] = e.commit
    return out


_ATTESTATION_TRAILER = re.compile(r"sha256:([0-9a-f]{64})(?: \(log index [0-9]{1,19}\))?")


def _attestation_sha(e: Event) -> str | None:
    """The attestation a commit's `Promotion-Attestation` trailer names; None for anything else (a commit whose
    trailer is malformed is as unattested as one without: an environment-repository writer writes trailers)."""
    found = _ATTESTATION_TRAILER.fullmatch(e.trailers.get("Promotion-Attestation", "").strip())
    return found.group(1) if found else None


_ACTION_OF = {"promote": "promote", "rollback": "withdraw"}


def history(ctx: Context, agent: str | None = None, stage: str | None = None) -> dict[str, Any]:
    """The promotion record, newest first, as the signed, logged attestations say it (time: the log's),
    each with the commit that carries it; and every commit in the stage folders that no attestation backs
    (forged or hand-written trailers, hand edits), flagged `unattested` with why."""
    ledger, changes = ctx.env.settled(lambda: (Ledger.load(ctx.store, ctx.trust, agent),
                                               ctx.env.changes(agent=agent, stage=stage)))
    by_sha = {e.record.sha256: e for e in ledger.entries}
    claimed: dict[str, str] = {}
    unattested: list[dict[str, Any]] = []
    for e in reversed(changes):  # oldest first: the first carrier wins
        problem = _unbacked(e, by_sha, claimed)
        if problem is None:
            sha = _attestation_sha(e)
            assert sha is not None
            claimed[sha] = e.commit
        else:
            unattested.append({**e.to_json(), "unattested": problem})
    events = []
    for a in reversed(ledger.of(agent, stage)):
        events.append({**a.to_json(), "commit": claimed.get(a.record.sha256)})
    unattested.reverse()
    return {"events": events, "unattested": unattested, "problems": ledger.problems}


def _unbacked(e: Event, by_sha: dict[str, Attested], claimed: dict[str, str]) -> str | None:
    """Why commit `e` is not a copy of a promotion attestation, or None when it is."""
    t = e.trailers
    if not t.get("Agent") or not t.get("Stage"):
        return f"changes {', '.join(e.paths) or 'a stage folder'} with no promotion record (a hand edit?)"
    sha = _attestation_sha(e)
    a = by_sha.get(sha) if sha else None
    if a is None:
        return ("its trailers claim a " + (t.get("Action") or "change") + f" of {t.get('Agent')} in {t.get('Stage')}"
                " that no trusted, logged promotion attestation backs")
    if sha in claimed:
        return f"names the attestation of commit {claimed[sha][:12]} again (a replayed record)"
    expected = _ACTION_OF.get(t.get("Action", ""))
    if (a.agent, a.stage, a.action) != (t["Agent"], t["Stage"], expected) or \
            (a.action == "promote" and t.get("Digest") != a.digest):
        return (f"its trailers ({t.get('Action')} {t['Agent']} {t.get('Digest', '')} in {t['Stage']}) do not say what "
                f"the attestation it names says ({a.action} {a.agent} {a.digest} in {a.stage})")
    return None
