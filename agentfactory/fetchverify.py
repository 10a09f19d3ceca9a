"""Fetch an agent's bytes and evidence from a store and run the verifier on them.

What `agentfactory verify`, the node runtime and the admission webhook do with a store reference.
The bytes are hashed on the way in (the store checks them against the digest), and a mismatch is
not an exception here but the verdict's failed `digest` check: tampering denies with its reason.

Beyond the entry stage a bare name means "what is promoted here": `resolve_in_stage` picks the
digest whose newest verified promotion to the stage is the newest of all, never the highest tag.
"""

from __future__ import annotations

from datetime import datetime

from .digest import DIGEST_RE
from .errors import DigestMismatchError, NotFoundError
from .evidence import collect
from .policy import PolicyEngine
from .promotion import DEFAULT_ENTRY_STAGE
from .store import ArtifactStore, StoredAgent
from .store.base import MAX_WASM_BYTES
from .trust import TrustPolicy
from .verifier import PromotionRecord, Verdict, promotion_records, promotion_state, verify


def verify_stored(store: ArtifactStore, agent: StoredAgent, policy: TrustPolicy, *,
                  engine: PolicyEngine | None = None, stage: str = "dev", promotion_stage: str | None = None,
                  entry_stage: str = DEFAULT_ENTRY_STAGE, now: datetime | None = None) -> tuple[Verdict, bytes | None]:
    """The verdict on a stored agent, and its bytes when they match the digest."""
    data: bytes | None = None
    problem: str | None = None
    try:
        data = store.get_blob(agent.digest, MAX_WASM_BYTES, name=agent.name)
    except DigestMismatchError as exc:
        problem = str(exc)
    verdict = verify(agent.digest, data, collect(store, agent), policy, artifact_problem=problem, engine=engine,
                     stage=stage, name=agent.name, version=agent.version, promotion_stage=promotion_stage,
                     entry_stage=entry_stage, now=now)
    return verdict, data


def is_bare_name(ref: str) -> bool:
    """`name` alone: no version, no digest."""
    return ":" not in ref and "@" not in ref and not DIGEST_RE.match(ref)


def resolve_in_stage(store: ArtifactStore, name: str, policy: TrustPolicy, stage: str,
                     entry_stage: str = DEFAULT_ENTRY_STAGE) -> StoredAgent:
    """The version of `name` whose standing promotion to `stage` is the newest (by the transparency log);
    NotFoundError naming the stage when none is promoted there. In the entry stage: the highest version."""
    if stage == entry_stage:
        return store.resolve(name)
    best: tuple[tuple[int, int], StoredAgent] | None = None
    seen: set[str] = set()
    for entry in store.entries(name):
        if entry.name != name or entry.manifest_digest in seen:
            continue
        seen.add(entry.manifest_digest)
        agent = store.resolve(f"{name}@{entry.manifest_digest}")
        records, problems = promotion_records(agent.digest, collect(store, agent), policy)
        state = promotion_state(agent.digest, stage, records, problems, name=name, version=agent.version,
                                entry_stage=entry_stage, policy=policy)
        current: PromotionRecord | None = state.current
        if state.promoted and current is not None and (best is None or current.order > best[0]):
            best = (current.order, agent)
    if best is None:
        raise NotFoundError(f"{name}: no version is promoted to {stage} in {store.url} (a stage is proven by signed "
                            "promotion evidence: `agentfactory promote`)")
    return best[1]
