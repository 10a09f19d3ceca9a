"""Attack: a stage is claimed, not proven.

The attacker is any caller of a node (a `?version=` or `?digest=` on the runtime's HTTP API, a
reference on `agentfactory run`), a holder of a build key, or a writer of the artifact store. They
want a prod node to run a version that was never promoted to prod (greeter 1.1.0, rolled back from
canary), or to present their own "promotion". A stage is proven only by a promotion attestation
signed by a promoter key (never a build key), recorded in the trusted transparency log and not
withdrawn by a newer one (ordered by the log).
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from promotion_helpers import Flow, agentfactory, promotion_flow, serve_stage_process

from agentfactory.evidence import attach_attestations, collect
from agentfactory.fetchverify import verify_stored
from agentfactory.promotion import Previous, predicate, promoter_keyring, sign_and_attach
from agentfactory.tlog.log import EmbeddedLog

pytestmark = pytest.mark.toolchain


@pytest.fixture
def flow(af_home: Path, tmp_path: Path) -> Flow:
    return promotion_flow(af_home, tmp_path)


def _prod_verdict(flow: Flow, ref: str) -> tuple[bool, str]:
    s = flow.signed
    verdict, _ = verify_stored(s.store, s.store.resolve(ref), flow.ctx.trust, engine=s.engine, stage="prod")
    (check,) = [c for c in verdict.checks if c.name == "promotion"]
    return verdict.allowed and check.ok, check.reason


def _run(flow: Flow, ref: str) -> tuple[int, str, str]:
    done = agentfactory("run", "--store", flow.signed.store.url, "--policy", str(flow.trust_file), "--stage", "prod",
                        ref)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


def test_prod_node_runs_what_prod_was_promoted_and_refuses_the_rest(flow: Flow) -> None:
    code, out, err = _run(flow, "greeter")  # the highest tag is 1.1.0; prod holds 1.0.0
    assert code == 0 and out == "ok\n", err
    for ref in ("greeter:1.1.0", f"greeter@{flow.v2}"):
        code, out, err = _run(flow, ref)
        assert code == 125 and out == "", (ref, err)
        text = " ".join(err.split())
        assert f"greeter 1.1.0 ({flow.v2}) is promoted to dev only; this node runs prod" in text, text
        assert "withdrawn from canary" in text, text
    assert _run(flow, "greeter:1.0.0")[0] == 0


def test_prod_service_refuses_a_version_or_digest_not_promoted_to_prod(flow: Flow) -> None:
    with serve_stage_process(flow, "prod") as url, httpx.Client(base_url=url, timeout=60) as client:
        plain = client.post("/v1/agents/greeter/invoke")
        assert plain.status_code == 200 and plain.text == "ok\n", plain.text
        assert plain.headers["x-agent-version"] == "1.0.0"
        for params in ({"version": "1.1.0"}, {"digest": flow.v2}):
            r = client.post("/v1/agents/greeter/invoke", params=params)
            assert r.status_code == 403, (params, r.text)
            body = r.json()
            assert body["reason"] == "not-promoted"
            assert f"greeter 1.1.0 ({flow.v2}) is promoted to dev only; this node runs prod" in body["error"]
        # A version is checked as semver before it is used at all (cached, looked up, logged).
        bad = client.post("/v1/agents/greeter/invoke", params={"version": "1.1.0\"]},{x"})
        assert bad.status_code == 400 and "not a semantic version" in bad.text
        assert client.post("/v1/agents/greeter/invoke", params={"version": "1.0.0"}).status_code == 200


def test_verify_stage_prod_denies_the_rolled_back_version(flow: Flow) -> None:
    store, policy = flow.signed.store.url, str(flow.trust_file)
    denied = agentfactory("verify", "--store", store, "--policy", policy, "--stage", "prod", "greeter:1.1.0", "--json")
    assert denied.returncode == 1, denied.stderr
    checks = {c["name"]: c for c in json.loads(denied.stdout)["checks"]}
    assert not checks["promotion"]["ok"]
    assert f"greeter 1.1.0 ({flow.v2}) is promoted to dev only (withdrawn from canary), not to prod" \
        in checks["promotion"]["reason"], checks["promotion"]
    allowed = agentfactory("verify", "--store", store, "--policy", policy, "--stage", "prod", "greeter", "--json")
    verdict = json.loads(allowed.stdout)
    assert allowed.returncode == 0 and verdict["digest"] == flow.v1, allowed.stdout
    # canary holds 1.0.0 again: 1.1.0 was withdrawn from it by a newer attestation.
    canary = agentfactory("verify", "--store", store, "--policy", policy, "--stage", "canary", "greeter:1.1.0",
                          "--json")
    reason = {c["name"]: c for c in json.loads(canary.stdout)["checks"]}["promotion"]["reason"]
    assert canary.returncode == 1 and "was withdrawn from canary" in reason, reason


def test_a_promotion_signed_by_a_build_key_is_not_accepted(flow: Flow) -> None:
    s = flow.signed
    v2 = s.store.resolve("greeter:1.1.0")
    forged = predicate(name="greeter", version="1.1.0", digest=v2.digest, stage="prod", action="promote",
                       resource_uri="x", gates={})
    sign_and_attach(s.store, v2, forged, s.keyring, EmbeddedLog())  # signed and logged, by the build key
    ok, reason = _prod_verdict(flow, "greeter:1.1.0")
    assert not ok and "build key" in reason and "cannot promote" in reason, reason
    code, _, err = _run(flow, "greeter:1.1.0")
    assert code == 125 and "this node runs prod" in " ".join(err.split())


def test_a_withdrawn_promotion_denies(flow: Flow) -> None:
    s = flow.signed
    v1 = s.store.resolve("greeter:1.0.0")
    assert _prod_verdict(flow, "greeter:1.0.0")[0]
    withdraw = predicate(name="greeter", version="1.0.0", digest=v1.digest, stage="prod", action="withdraw",
                         resource_uri="x", gates={}, reason="incident 42")
    sign_and_attach(s.store, v1, withdraw, promoter_keyring(), EmbeddedLog())
    ok, reason = _prod_verdict(flow, "greeter:1.0.0")
    assert not ok and "was withdrawn from prod" in reason and "incident 42" in reason, reason
    code, _, err = _run(flow, "greeter")  # nothing is promoted to prod any more
    assert code == 125 and "no version is promoted to prod" in " ".join(err.split()), err
    # The order is the log's: re-promoting later (a newer log entry) makes it count again, whatever
    # time the signer writes into the statement.
    again = predicate(name="greeter", version="1.0.0", digest=v1.digest, stage="prod", action="promote",
                      resource_uri="x", gates={}, previous=Previous("canary", "0" * 64, None))
    sign_and_attach(s.store, v1, again, promoter_keyring(), EmbeddedLog())
    assert _prod_verdict(flow, "greeter:1.0.0")[0]


def test_a_backdated_withdrawal_cannot_hide_behind_the_signers_clock(flow: Flow) -> None:
    from datetime import UTC, datetime

    s = flow.signed
    v1 = s.store.resolve("greeter:1.0.0")
    late = predicate(name="greeter", version="1.0.0", digest=v1.digest, stage="prod", action="withdraw",
                     resource_uri="x", gates={}, now=datetime(2001, 1, 1, tzinfo=UTC))  # "written" long ago
    sign_and_attach(s.store, v1, late, promoter_keyring(), EmbeddedLog())
    ok, reason = _prod_verdict(flow, "greeter:1.0.0")
    assert not ok and "withdrawn" in reason, reason  # the log says it is the newest


def test_a_promotion_not_in_the_log_denies(flow: Flow) -> None:
    from agentfactory.dsse import INTOTO_PAYLOAD_TYPE, sign_envelope
    from agentfactory.intoto import make_statement
    from agentfactory.promotion import PROMOTION_VSA

    s = flow.signed
    v2 = s.store.resolve("greeter:1.1.0")
    claim = predicate(name="greeter", version="1.1.0", digest=v2.digest, stage="prod", action="promote",
                      resource_uri="x", gates={})
    envelope = sign_envelope(INTOTO_PAYLOAD_TYPE, make_statement("greeter", v2.digest, PROMOTION_VSA, claim),
                             promoter_keyring())
    attach_attestations(s.store, v2, [(PROMOTION_VSA, envelope)])  # a real promoter signature, never logged
    ok, reason = _prod_verdict(flow, "greeter:1.1.0")
    assert not ok and "is not in a trusted transparency log" in reason, reason
    # A logged record of another promotion does not vouch for it either.
    assert len(collect(s.store, v2).tlog) > 0


def test_a_promotion_counts_only_in_the_environment_it_was_made_for(flow: Flow) -> None:
    """Environments that share a store, a trust policy's promoters and a log accepted each other's promotions: A's
    `prod` was B's `prod`, whatever B's stage graph asks. A trust policy that names its environment
    (`spec.environment`) counts only promotions made for it; promote signs that name into each one."""
    import dataclasses

    from agentfactory.fetchverify import verify_stored as verify_in

    s = flow.signed
    v1 = s.store.resolve("greeter:1.0.0")
    a = dataclasses.replace(flow.ctx.trust, environment="env-a")
    b = dataclasses.replace(flow.ctx.trust, environment="env-b")

    def prod(policy: object) -> tuple[bool, str]:
        verdict, _ = verify_in(s.store, v1, policy, engine=s.engine, stage="prod")  # type: ignore[arg-type]
        (check,) = [c for c in verdict.checks if c.name == "promotion"]
        return check.ok, check.reason

    assert prod(flow.ctx.trust)[0]  # no environment named: every promotion counts, as before
    ok, reason = prod(a)  # the flow's promotions name no environment: they prove nothing in env-a
    assert not ok and "was made for no environment, not for this trust policy's 'env-a'" in reason, reason
    for stage, source in (("prod", "canary"),):
        made = predicate(name="greeter", version="1.0.0", digest=v1.digest, stage=stage, action="promote",
                         resource_uri="x", gates={}, from_stage=source, environment="env-a")
        sign_and_attach(s.store, v1, made, promoter_keyring(), EmbeddedLog())
    assert prod(a)[0]
    ok, reason = prod(b)
    assert not ok and "was made for environment 'env-a', not for this trust policy's 'env-b'" in reason, reason


def test_promote_signs_the_trust_policys_environment_into_each_promotion(af_home: Path, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The demo's promotions and rollback, made under a trust policy naming env-a: they count in env-a, and not in
    env-b. (Naming an environment makes earlier, unnamed promotions count for nothing: re-promote.)"""
    import dataclasses

    import promotion_helpers

    from agentfactory.fetchverify import verify_stored as verify_in

    named = promotion_helpers.promotion_trust
    monkeypatch.setattr(promotion_helpers, "promotion_trust",
                        lambda signed: dataclasses.replace(named(signed), environment="env-a"))
    flow = promotion_helpers.promotion_flow(af_home, tmp_path)
    s = flow.signed
    a = flow.ctx.trust
    assert a.environment == "env-a"
    v1, v2 = s.store.resolve("greeter:1.0.0"), s.store.resolve("greeter:1.1.0")
    for policy, ok in ((a, True), (dataclasses.replace(a, environment="env-b"), False),
                       (dataclasses.replace(a, environment=""), True)):
        verdict, _ = verify_in(s.store, v1, policy, engine=s.engine, stage="prod")
        assert [c.ok for c in verdict.checks if c.name == "promotion"] == [ok], verdict.checks
    verdict, _ = verify_in(s.store, v2, a, engine=s.engine, stage="canary")  # its withdrawal is env-a's too
    (check,) = [c for c in verdict.checks if c.name == "promotion"]
    assert not check.ok and "withdrawn from canary" in check.reason, check.reason


def test_the_environment_is_read_from_the_trust_policy_and_checked(tmp_path: Path) -> None:
    from agentfactory.errors import ValidationFailed
    from agentfactory.trust import load_trust_policy, to_yaml

    base = to_yaml(promoter_keyring().public_keys(), promoters=promoter_keyring().public_keys()[:0])
    good = tmp_path / "good.yaml"
    good.write_text(base.replace("spec:\n", "spec:\n  environment: env-a\n", 1))
    assert load_trust_policy(good).environment == "env-a"
    bad = tmp_path / "bad.yaml"
    bad.write_text(base.replace("spec:\n", "spec:\n  environment: Env A\n", 1))
    with pytest.raises(ValidationFailed, match="environment"):
        load_trust_policy(bad)
