"""The promotion record that counts: signed, logged promotion attestations, never commit messages.

Anyone with write access to the environment repository can write a commit whose trailers say
`Action: promote`, backdate it with GIT_COMMITTER_DATE, or edit a stage file by hand. So `status`,
`history`, `rollback` and the soak gate read what the promoter signed and the transparency log
ordered (`agentfactory/promotion.py`, verified by `agentfactory.verifier.promotion_records`): the time
of a promotion is the log's integrated time, and a digest is in a stage only while its newest
verified record for that stage is a promotion (not a withdrawal). Commit trailers are a copy for
people; a commit or a stage file that no attestation backs is reported as unattested.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from agentfactory.errors import AgentFactoryError
from agentfactory.evidence import collect
from agentfactory.store import ArtifactStore
from agentfactory.trust import TrustPolicy
from agentfactory.verifier import PromotionRecord, environment_problem, promotion_records


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Attested:
    """One verified promotion (or withdrawal) of an agent's digest to a stage."""

    agent: str
    version: str
    digest: str
    record: PromotionRecord

    @property
    def stage(self) -> str:
        return self.record.claim.stage

    @property
    def action(self) -> str:
        return self.record.claim.action

    @property
    def order(self) -> tuple[int, int]:
        return self.record.order

    @property
    def time(self) -> str:
        return iso(self.record.integrated_time)

    def verdict(self) -> str:
        """The policy gate as the attestation records it (what `Verdict:` trailers only copy)."""
        policy = self.record.claim.gates.get("policy")
        if not isinstance(policy, dict) or not policy.get("checked"):
            return "not checked" if self.action == "promote" else ""
        score = policy.get("score")
        shown = f" score={score:.1f}" if isinstance(score, int | float) else ""
        return f"{'allowed' if policy.get('allowed') else 'denied'}{shown} stage={self.stage}"

    def analysis(self) -> str:
        """The canary analysis as the attestation records it (what `Analysis:` trailers only copy)."""
        a = self.record.claim.gates.get("analysis")
        if not isinstance(a, dict):
            return ""
        ratio, p95 = a.get("errorRatio"), a.get("p95Seconds")
        return (f"{a.get('verdict')} requests={a.get('requests')} errors={a.get('errors')} "
                f"error_ratio={f'{ratio:.4f}' if isinstance(ratio, int | float) else 'n/a'} "
                f"p95={f'{p95:.4f}s' if isinstance(p95, int | float) else 'n/a'} source={a.get('source')}")

    def to_json(self) -> dict[str, Any]:
        c = self.record.claim
        return {"time": self.time, "log_index": self.record.log_index, "agent": self.agent, "stage": self.stage,
                "action": self.action, "version": self.version, "digest": self.digest, "from_stage": c.from_stage,
                "verdict": self.verdict(), "analysis": self.analysis(), "approved_by": c.approved_by,
                "reason": c.reason, "attestation": f"sha256:{self.record.sha256}", "promoter": self.record.signer}


@dataclass
class Ledger:
    """Every verified promotion record of the agents asked about, from the artifact store's evidence."""

    entries: list[Attested] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @classmethod
    def load(cls, store: ArtifactStore, trust: TrustPolicy, agent: str | None = None) -> Ledger:
        ledger = cls()
        for stored in store.list_agents():
            if agent is not None and stored.name != agent:
                continue
            try:
                records, problems = promotion_records(stored.digest, collect(store, stored), trust)
            except AgentFactoryError as exc:
                ledger.problems.append(f"{stored.name} {stored.version}: evidence unreadable: {exc}")
                continue
            ledger.problems.extend(problems)
            for r in records:
                # A record counts only for the agent name and version it names, and in the environment it was
                # made for (as the verifier says).
                elsewhere = environment_problem(r, trust)
                if elsewhere is not None:
                    ledger.problems.append(f"{stored.name} {stored.version}: {elsewhere}")
                elif r.claim.name == stored.name and r.claim.version == stored.version:
                    ledger.entries.append(Attested(stored.name, stored.version, stored.digest, r))
        ledger.entries.sort(key=lambda e: e.order)
        return ledger

    def of(self, agent: str | None = None, stage: str | None = None) -> list[Attested]:
        """Oldest first, by the log."""
        return [e for e in self.entries if (agent is None or e.agent == agent) and (stage is None or e.stage == stage)]

    def standing(self, agent: str, stage: str) -> dict[str, Attested]:
        """digest -> its standing promotion to `stage`: digests whose newest record there is a promotion."""
        newest: dict[str, Attested] = {}
        for e in self.of(agent, stage):
            newest[e.digest] = e
        return {d: e for d, e in newest.items() if e.action == "promote"}

    def matching(self, agent: str, stage: str, digest: str) -> Attested | None:
        """The attestation that backs a stage file pinning `digest`, or None (a hand edit, a forgery)."""
        return self.standing(agent, stage).get(digest)

    def previous(self, agent: str, stage: str, digest: str) -> Attested | None:
        """The newest standing promotion to `stage` of another digest, earlier than `digest`'s own."""
        standing = self.standing(agent, stage)
        mine = standing.get(digest)
        earlier = [e for d, e in standing.items() if d != digest and (mine is None or e.order < mine.order)]
        return max(earlier, key=lambda e: e.order) if earlier else None

    def by_sha256(self, sha: str) -> Attested | None:
        return next((e for e in self.entries if e.record.sha256 == sha), None)


def unattested_reason(where: str, stage: str, digest: str) -> str:
    return (f"{where} pins {digest} but no standing promotion attestation to {stage} backs it (a hand edit or a "
            "forged commit?); revert it, or promote through `agentfactory promote`")
