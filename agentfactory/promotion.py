"""Promotion evidence: a signed, logged SLSA Verification Summary Attestation per digest and stage.

A stage is something an artifact has been *promoted* to, never something a tag or a workload claims.
Each successful `agentfactory promote` signs, with a promoter key (never a build key), an in-toto
Statement about the digest whose predicate is a SLSA VSA (`https://slsa.dev/verification_summary/v1`)
plus an extension object, `agentfactoryPromotion`, that says which stage, which action (`promote`, or
`withdraw` for a rollback), the gates passed with their figures, the previous stage's attestation and
who approved. It goes to the transparency log and is attached as a referrer like the rest of the
evidence. Readers order promotions by the log (integrated time, then log index), never by a time the
signer wrote: `timeVerified` is informational.

The embedded default promoter is a local keyring of its own, `$AGENTFACTORY_HOME/promoter-keys`
(or `$AGENTFACTORY_PROMOTER_KEYS`), created on first use and kept apart from the build keyring.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import __version__, config
from .dsse import INTOTO_PAYLOAD_TYPE, Envelope, sign_envelope
from .errors import ConfigError, InputError
from .intoto import SLSA_VSA_V1
from .keys.base import KeyProvider
from .keys.local import LocalKeyring

PROMOTION_VSA = SLSA_VSA_V1
EXTENSION = "agentfactoryPromotion"
EXTENSION_TYPE = "https://agentfactory.dev/promotion/v1"
VERIFIER_ID = "https://agentfactory.dev/promoter/v1"
ACTIONS = ("promote", "withdraw")
RESULTS = {"promote": "PASSED", "withdraw": "FAILED"}
PROMOTER_KEYS_ENV = "AGENTFACTORY_PROMOTER_KEYS"
DEFAULT_ENTRY_STAGE = "dev"
_STAGE = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")
MAX_TEXT = 4096


def promoter_keys_folder() -> Path:
    """`$AGENTFACTORY_PROMOTER_KEYS`, else `$AGENTFACTORY_HOME/promoter-keys`: apart from the build keys."""
    value = os.environ.get(PROMOTER_KEYS_ENV)
    return Path(value).expanduser().resolve() if value else config.home() / "promoter-keys"


def promoter_keyring(*, create: bool = False) -> LocalKeyring:
    """The embedded promoter keyring; with `create`, its first key is made when it has none."""
    ring = LocalKeyring(promoter_keys_folder())
    if create:
        ring.ensure_first("promoter")
    return ring


@dataclass(frozen=True)
class Previous:
    """The attestation that put the digest into the stage promoted from (the chain of custody)."""

    stage: str
    sha256: str  # hex SHA-256 of the DSSE envelope bytes as stored and logged
    log_index: int | None


@dataclass(frozen=True)
class Claim:
    """What one promotion attestation says (parsed strictly; trusted only once its signer and log entry are)."""

    stage: str
    action: str  # promote | withdraw
    name: str
    version: str
    from_stage: str | None
    previous: Previous | None
    approved_by: str | None
    reason: str | None
    gates: dict[str, Any]
    environment: str | None = None  # the environment it was made for (trust policy spec.environment)


def predicate(*, name: str, version: str, digest: str, stage: str, action: str, resource_uri: str,
              gates: dict[str, Any], from_stage: str | None = None, previous: Previous | None = None,
              approved_by: str | None = None, reason: str | None = None, policy_uri: str = "",
              now: datetime | None = None, environment: str = "") -> dict[str, Any]:
    """A SLSA VSA v1 predicate with the `agentfactoryPromotion` extension."""
    if action not in ACTIONS:
        raise InputError("promotion", f"action must be one of {', '.join(ACTIONS)}, not {action!r}")
    when = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    inputs = [] if previous is None else [{"uri": f"{resource_uri}#promotion/{previous.stage}",
                                           "digest": {"sha256": previous.sha256}}]
    return {
        "verifier": {"id": VERIFIER_ID, "version": {"agentfactory": __version__}},
        "timeVerified": when,
        "resourceUri": resource_uri,
        "policy": {"uri": policy_uri or f"https://agentfactory.dev/stages/{stage}"},
        "inputAttestations": inputs,
        "verificationResult": RESULTS[action],
        "verifiedLevels": [f"AGENTFACTORY_STAGE_{stage.upper().replace('-', '_')}"] if action == "promote" else [],
        EXTENSION: {
            "type": EXTENSION_TYPE,
            "stage": stage,
            "action": action,
            "agent": {"name": name, "version": version, "digest": digest},
            "fromStage": from_stage,
            "previousAttestation": None if previous is None else {
                "stage": previous.stage, "sha256": previous.sha256, "logIndex": previous.log_index},
            "approvedBy": approved_by,
            "reason": reason,
            "gates": gates,
            **({"environment": environment} if environment else {}),
        },
    }


def _text(value: Any, field: str, where: str, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or len(value) > MAX_TEXT or "\0" in value:
        raise InputError(where, f"{field} must be a string of at most {MAX_TEXT} characters")
    return value


def parse_predicate(pred: Any, where: str) -> Claim:
    """The claim of a promotion VSA; InputError naming the field when it is malformed or inconsistent."""
    if not isinstance(pred, dict):
        raise InputError(where, "the promotion predicate is not an object")
    ext = pred.get(EXTENSION)
    if not isinstance(ext, dict) or ext.get("type") != EXTENSION_TYPE:
        raise InputError(where, f"the VSA has no {EXTENSION} object of type {EXTENSION_TYPE}")
    stage = ext.get("stage")
    if not isinstance(stage, str) or not _STAGE.match(stage):
        raise InputError(where, f"{EXTENSION}.stage must match {_STAGE.pattern}")
    action = ext.get("action")
    if action not in ACTIONS:
        raise InputError(where, f"{EXTENSION}.action must be one of {', '.join(ACTIONS)}")
    if pred.get("verificationResult") != RESULTS[str(action)]:
        raise InputError(where, f"verificationResult must be {RESULTS[str(action)]} for action {action}")
    agent = ext.get("agent")
    if not isinstance(agent, dict):
        raise InputError(where, f"{EXTENSION}.agent must be an object")
    name = _text(agent.get("name"), f"{EXTENSION}.agent.name", where) or ""
    version = _text(agent.get("version"), f"{EXTENSION}.agent.version", where) or ""
    from_stage = _text(ext.get("fromStage"), f"{EXTENSION}.fromStage", where, optional=True)
    prev = ext.get("previousAttestation")
    previous = None
    if prev is not None:
        if not isinstance(prev, dict) or not isinstance(prev.get("sha256"), str) \
                or not _SHA256.match(prev["sha256"]) or not isinstance(prev.get("stage"), str):
            raise InputError(where, f"{EXTENSION}.previousAttestation needs stage and a sha256 hex digest")
        index = prev.get("logIndex")
        previous = Previous(prev["stage"], prev["sha256"], index if isinstance(index, int) else None)
    gates = ext.get("gates")
    if not isinstance(gates, dict):
        raise InputError(where, f"{EXTENSION}.gates must be an object")
    return Claim(stage=stage, action=str(action), name=name, version=version, from_stage=from_stage,
                 previous=previous,
                 approved_by=_text(ext.get("approvedBy"), f"{EXTENSION}.approvedBy", where, optional=True),
                 reason=_text(ext.get("reason"), f"{EXTENSION}.reason", where, optional=True), gates=gates,
                 environment=_text(ext.get("environment"), f"{EXTENSION}.environment", where, optional=True))


@dataclass(frozen=True)
class Signed:
    """A promotion attestation just signed, logged and attached."""

    envelope: Envelope
    sha256: str  # of the envelope bytes as stored and logged
    key_id: str
    log_index: int | None


def sign_and_attach(store: Any, agent: Any, pred: dict[str, Any], signer: KeyProvider, log: Any) -> Signed:
    """Sign the statement with the promoter key, log it (required: an unlogged promotion proves nothing)
    and attach the envelope and its log record to the agent. Nothing is attached when logging fails."""
    from .evidence import agent_statement, attach_attestations, proposed_for_envelope

    if log is None:
        raise ConfigError("a promotion must be recorded in a transparency log (its order is the log's): "
                          "give --tlog embedded or a Rekor URL, not none")
    # About the wasm digest and the OCI manifest: `cosign verify-attestation --type` finds it on the image.
    statement = agent_statement(agent.name, agent.digest, PROMOTION_VSA, pred, getattr(agent, "manifest_digest", None))
    envelope = sign_envelope(INTOTO_PAYLOAD_TYPE, statement, signer)
    key_id = envelope.signatures[0].keyid
    pem = {k.key_id: k.pem for k in signer.public_keys()}[key_id]
    data = envelope.to_json()
    added = log.add(proposed_for_envelope(data, pem))  # LogError: nothing is attached
    attach_attestations(store, agent, [(PROMOTION_VSA, envelope)], [added.entry.to_json()])
    return Signed(envelope, hashlib.sha256(data).hexdigest(), key_id, added.entry.log_index)
