"""Fetch an agent's bytes and evidence from a store and run the verifier on them.

What `agentfactory verify`, the node runtime and the admission webhook do with a store reference.
The bytes are hashed on the way in (the store checks them against the digest), and a mismatch is
not an exception here but the verdict's failed `digest` check: tampering denies with its reason.
"""

from __future__ import annotations

from .errors import DigestMismatchError
from .evidence import collect
from .policy import PolicyEngine
from .store import ArtifactStore, StoredAgent
from .store.base import MAX_WASM_BYTES
from .trust import TrustPolicy
from .verifier import Verdict, verify


def verify_stored(store: ArtifactStore, agent: StoredAgent, policy: TrustPolicy, *,
                  engine: PolicyEngine | None = None, stage: str = "dev") -> tuple[Verdict, bytes | None]:
    """The verdict on a stored agent, and its bytes when they match the digest."""
    data: bytes | None = None
    problem: str | None = None
    try:
        data = store.get_blob(agent.digest, MAX_WASM_BYTES, name=agent.name)
    except DigestMismatchError as exc:
        problem = str(exc)
    verdict = verify(agent.digest, data, collect(store, agent), policy, artifact_problem=problem, engine=engine,
                     stage=stage, name=agent.name, version=agent.version)
    return verdict, data
