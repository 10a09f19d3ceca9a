"""Attack: a withdrawn promotion brought back by logging a copy of it, or by removing the withdrawal.

The attacker writes to the artifact store and can POST to the transparency log (anyone can, as to public
Rekor); they hold no key. greeter 1.1.0 was promoted to canary (log index P), then withdrawn (index W > P).
They re-encode the genuine promotion envelope (its one signature listed twice: the same signed statement in
new bytes), log the copy (index R > W) and attach it. Ordered by the entry of the envelope bytes, the copy
was the newest canary record and 1.1.0 was promoted again. A record is its signed statement, placed at the
statement's first entry: from the store's records alone when they hold the original, and from the log when
the trust policy gives its URL (agentfactory/promotion_log.py), which also finds a withdrawal removed from
the store.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import time
from pathlib import Path

import pytest
import yaml
from promotion_helpers import Flow, promotion_flow
from tlog_attack_helpers import tlog_server

from agentfactory.dsse import Envelope, parse_envelope
from agentfactory.evidence import Evidence, collect, proposed_for_envelope
from agentfactory.intoto import SLSA_VSA_V1, parse_statement
from agentfactory.promotion import parse_predicate, promoter_keyring
from agentfactory.tlog.bundle import parse_record
from agentfactory.tlog.log import EmbeddedLog
from agentfactory.trust import TrustPolicy, load_trust_policy
from agentfactory.verifier import Verdict, verify

pytestmark = pytest.mark.toolchain


@dataclasses.dataclass
class Replayed:
    flow: Flow
    evidence: Evidence  # the store's evidence as the flow left it
    original: bytes  # the genuine "promote 1.1.0 to canary" envelope
    withdrawal: bytes
    copy: bytes  # the same statement, re-encoded
    copy_record: bytes  # its entry, logged after the withdrawal
    original_index: int
    copy_index: int


@pytest.fixture
def replayed(af_home: Path, tmp_path: Path) -> Replayed:
    flow = promotion_flow(af_home, tmp_path)
    agent = flow.signed.store.resolve("greeter:1.1.0")
    evidence = collect(flow.signed.store, agent)
    found: dict[str, bytes] = {}
    for where, doc in evidence.attestations:
        statement = parse_statement(parse_envelope(doc, where).payload, where)
        if statement.predicate_type == SLSA_VSA_V1:
            claim = parse_predicate(statement.predicate, where)
            found[f"{claim.action} {claim.stage}"] = doc
    original, withdrawal = found["promote canary"], found["withdraw canary"]
    env = parse_envelope(original, "original")
    copy = Envelope(env.payload_type, env.payload, (env.signatures[0], env.signatures[0])).to_json()
    assert copy != original
    pem = {k.key_id: k.pem for k in promoter_keyring().public_keys()}[env.signatures[0].keyid]
    time.sleep(1.1)  # a later integrated time than the withdrawal's, not only a higher index
    with EmbeddedLog() as log:  # what POST /api/v1/log/entries does
        added = log.add(proposed_for_envelope(copy, pem))
        original_index = next(parse_record(d, w).entry.log_index for w, d in evidence.tlog
                              if _logs(d, original, log))
    return Replayed(flow, evidence, original, withdrawal, copy, added.entry.to_json(), original_index,
                    added.entry.log_index)


def _logs(record: bytes, envelope: bytes, log: EmbeddedLog) -> bool:
    body = json.loads(base64.b64decode(parse_record(record, "record").entry.body_b64))
    return bool(body.get("spec", {}).get("envelopeHash", {}).get("value") == hashlib.sha256(envelope).hexdigest())


def _canary(r: Replayed, evidence: Evidence, policy: TrustPolicy | None = None) -> Verdict:
    s = r.flow.signed
    agent = s.store.resolve("greeter:1.1.0")
    data = s.store.get_blob(agent.digest, 1 << 30, name=agent.name)
    return verify(agent.digest, data, evidence, policy or r.flow.ctx.trust, engine=s.engine, stage="canary",
                  name=agent.name, version=agent.version)


def _promotion(verdict: Verdict) -> tuple[bool, str]:
    (check,) = [c for c in verdict.checks if c.name == "promotion"]
    return check.ok, check.reason


def _with(evidence: Evidence, *, drop: tuple[bytes, ...] = (), add: tuple[bytes, ...] = (),
          records: tuple[bytes, ...] = (), drop_records_of: tuple[bytes, ...] = ()) -> Evidence:
    """The evidence as a store writer leaves it: envelopes dropped or added, log records added or dropped."""
    with EmbeddedLog() as log:
        tlog = [(w, d) for w, d in evidence.tlog if not any(_logs(d, e, log) for e in drop_records_of)]
    attestations = [(w, d) for w, d in evidence.attestations if d not in drop]
    return dataclasses.replace(evidence, attestations=attestations + [(f"attacker {i}", d) for i, d in enumerate(add)],
                               tlog=tlog + [(f"record {i}", d) for i, d in enumerate(records)])


def _policy_with_url(r: Replayed, url: str) -> TrustPolicy:
    doc = yaml.safe_load(r.flow.trust_file.read_text())
    doc["spec"]["transparencyLogs"][0]["url"] = url
    path = r.flow.trust_file.with_name("trust-url.yaml")
    path.write_text(yaml.safe_dump(doc))
    return load_trust_policy(path)


def test_a_copy_logged_after_the_withdrawal_does_not_promote_again(replayed: Replayed) -> None:
    """Store records only (no log URL): the store holds the original promotion's record, so the copy is placed at
    the original's entry, before the withdrawal."""
    r = replayed
    assert _promotion(_canary(r, r.evidence))[0] is False
    attacked = _with(r.evidence, add=(r.copy,), records=(r.copy_record,))
    ok, reason = _promotion(_canary(r, attacked))
    assert not ok and "withdrawn from canary" in reason, reason
    alone = _with(r.evidence, drop=(r.original,), add=(r.copy,), records=(r.copy_record,))  # the copy in its place
    ok, reason = _promotion(_canary(r, alone))
    assert not ok and "withdrawn from canary" in reason, reason


def test_the_log_places_a_lone_copy_and_finds_a_removed_withdrawal(replayed: Replayed) -> None:
    """With the log's URL in the trust policy the log is asked: a copy whose original (envelope and record) the
    store no longer holds is placed at the original's entry, and a withdrawal removed from the store is found."""
    r = replayed
    lone = _with(r.evidence, drop=(r.original,), add=(r.copy,), records=(r.copy_record,),
                 drop_records_of=(r.original,))
    ok, reason = _promotion(_canary(r, lone))
    assert ok, "without the log, the store's records alone place the lone copy after the withdrawal: " + reason
    no_withdrawal = _with(r.evidence, drop=(r.withdrawal,), drop_records_of=(r.withdrawal,))
    assert _promotion(_canary(r, no_withdrawal))[0], "without the log a removed withdrawal goes unseen"
    with EmbeddedLog() as log:
        folder = log.folder
    with tlog_server(folder) as url:
        policy = _policy_with_url(r, url)
        ok, reason = _promotion(_canary(r, lone, policy))
        assert not ok and "withdrawn from canary" in reason, reason
        ok, reason = _promotion(_canary(r, no_withdrawal, policy))
        assert not ok and "is missing from the store: it may be a withdrawal" in reason, reason
        both = _with(r.evidence, drop=(r.withdrawal,), add=(r.copy,), records=(r.copy_record,),
                     drop_records_of=(r.withdrawal,))
        assert not _promotion(_canary(r, both, policy))[0]
        # the honest store: the same answer as without the log, and 1.0.0 still promoted to prod
        ok, reason = _promotion(_canary(r, r.evidence, policy))
        assert not ok and "withdrawn from canary" in reason, reason
        s = r.flow.signed
        v1 = s.store.resolve("greeter:1.0.0")
        prod = verify(v1.digest, s.store.get_blob(v1.digest, 1 << 30, name=v1.name), collect(s.store, v1), policy,
                      engine=s.engine, stage="prod", name=v1.name, version=v1.version)
        assert _promotion(prod)[0] and prod.allowed, [c for c in prod.checks if not c.ok]
    with tlog_server(folder) as url:
        pass  # the server stopped: asking a log that does not answer fails closed
    ok, reason = _promotion(_canary(r, r.evidence, _policy_with_url(r, url)))
    assert not ok and "could not be asked for promotion records" in reason, reason


def test_a_decoy_of_the_same_bytes_does_not_let_a_rollback_skip_its_withdrawal(af_home: Path, tmp_path: Path) -> None:
    """A store writer pushes an unsigned `greeter 9.9.9` of 1.1.0's bytes, so `greeter@<digest>` names two versions.
    The rollback resolved the withdrawn digest that way, took the ambiguity for "not in the store", and committed
    the rollback without signing a withdrawal: 1.1.0 stayed promoted to canary. The withdrawal is now signed about
    the name, version and digest the standing promotion names, or the rollback is refused."""
    from agentfactory.artifact import build_agent_artifact
    from agentfactory.fetchverify import verify_stored
    from pipelines.promote.promote import promote, rollback

    flow = promotion_flow(af_home, tmp_path)
    s = flow.signed
    assert promote(flow.ctx, "greeter", "canary").action == "promoted"  # dev runs 1.1.0
    v2 = s.store.resolve("greeter:1.1.0")
    decoy = build_agent_artifact(s.store.get_blob(v2.digest, 1 << 30, name="greeter"), name="greeter",
                                 version="9.9.9", created_epoch=0)
    s.store.push_agent(decoy, name="greeter", version="9.9.9")
    with pytest.raises(Exception, match="ambiguous|identical bytes|2 agent versions"):
        s.store.resolve(f"greeter@{v2.digest}")
    head = flow.ctx.env.head()
    back = rollback(flow.ctx, "greeter", "canary", reason="canary analysis failed")
    assert back.action == "rolled-back" and flow.ctx.env.head() != head
    verdict, _ = verify_stored(s.store, v2, flow.ctx.trust, engine=s.engine, stage="canary")
    ok, reason = _promotion(verdict)
    assert not ok and "withdrawn from canary" in reason, reason
