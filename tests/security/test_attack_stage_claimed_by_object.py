"""A stage claimed by the object: the webhook judges at the namespace's stage, never at the manifest's.

The attacker writes the manifest (a WasmAgent's `spec.stage`, the annotation `agentfactory.dev/stage`) in a
namespace they can write to, and would like a weaker stage's rules. Before: the webhook verified the
artifact for the stage the object named, so a workload in a prod namespace saying `stage: prod` was checked
against prod only because it said so, and one saying `dev` was refused merely for inconsistency: the stage
was the object's claim. Now the stage is the namespace's (namespace_stages in the policies' data, else
defaultStage), the verifier is called with it, and the object may only ask for that stage or a lower one.

The probe: an artifact policy whose prod minimum score no artifact can reach (11) and whose dev minimum is 0,
so a verdict says which stage it was computed for.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from admission_attack_fixtures import ask, audit_records, served
from admission_helpers import in_template, review, wasm_agent, wasm_pod
from helpers import ROOT
from runtime_helpers import Signed

from admission.config import AdmissionConfig
from admission.decide import Admitter
from admission.stages import stage_map
from agentfactory.policy import RegoEngine

pytestmark = pytest.mark.toolchain

MIN_SCORE = {"default": 0.0, "dev": 0.0, "canary": 0.0, "prod": 11.0}
PROD_REFUSAL = "is below the minimum 11 for stage"  # only prod's minimum is 11
CRD = {"group": "agentfactory.dev", "version": "v1alpha1", "kind": "WasmAgent"}
STAGE = "agentfactory.dev/stage"


@pytest.fixture(scope="module")
def server(world: tuple[Signed, dict[str, str]],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, Path]]:
    engine = RegoEngine(ROOT / "policies", config={"min_score": MIN_SCORE})
    with served(world[0], tmp_path_factory.mktemp("webhook"), engine) as running:
        yield running


def judged_stages(audit: Path) -> list[str]:
    return [a["stage"] for a in audit_records(audit)[-1]["agents"]]


def test_a_dev_namespace_object_claiming_prod_is_refused_naming_both(server: tuple[httpx.Client, Path],
                                                                     world: tuple[Signed, dict[str, str]]) -> None:
    client, audit = server
    _, refs = world
    assert ask(client, review(wasm_agent(refs["helper"]), **CRD, namespace="agents-dev"))["allowed"] is True
    resp = ask(client, review(wasm_agent(refs["helper"], stage="prod"), **CRD, namespace="agents-dev"))
    assert resp["allowed"] is False
    message = resp["status"]["message"]
    assert 'spec.stage: asks for stage "prod", higher than stage "dev" of request.namespace "agents-dev"' in message
    assert PROD_REFUSAL not in message  # verified at dev, the namespace's stage, not at the claimed prod
    assert judged_stages(audit) == ["dev"]
    pod = wasm_pod(refs["helper"], annotations={STAGE: "canary"})
    resp = ask(client, review(pod, namespace="team-a"))
    assert resp["allowed"] is False
    assert (f"metadata.annotations['{STAGE}']: asks for stage \"canary\", higher than stage \"dev\""
            in resp["status"]["message"])


def test_a_prod_namespace_object_claiming_dev_is_judged_at_prod(server: tuple[httpx.Client, Path],
                                                                world: tuple[Signed, dict[str, str]]) -> None:
    client, audit = server
    _, refs = world
    for namespace in ("prod", "prod-eu"):
        for claim in ("dev", "canary", None):
            resp = ask(client, review(wasm_agent(refs["helper"], stage=claim), **CRD, namespace=namespace))
            assert resp["allowed"] is False and PROD_REFUSAL in resp["status"]["message"], resp["status"]["message"]
            assert judged_stages(audit) == ["prod"]
    deployment = in_template(wasm_pod(refs["helper"], annotations={STAGE: "dev"}), "Deployment")
    resp = ask(client, review(deployment, group="apps", kind="Deployment", namespace="prod"))
    assert resp["allowed"] is False and PROD_REFUSAL in resp["status"]["message"]
    assert judged_stages(audit) == ["prod"]
    # canary-* is canary, and dev is lower: not refused for the request, verified at canary (whose other checks,
    # a promotion to canary among them, decide)
    resp = ask(client, review(wasm_agent(refs["helper"], stage="dev"), **CRD, namespace="canary-agents"))
    assert judged_stages(audit) == ["canary"]
    assert resp["allowed"] or ("asks for stage" not in resp["status"]["message"]
                               and PROD_REFUSAL not in resp["status"]["message"])


def test_the_workload_annotation_cannot_lift_the_template_s(server: tuple[httpx.Client, Path],
                                                            world: tuple[Signed, dict[str, str]]) -> None:
    """Annotations on the workload and on its pod template: the template's is the request; neither is used to verify."""
    client, audit = server
    _, refs = world
    deployment = in_template(wasm_pod(refs["helper"], annotations={STAGE: "dev"}), "Deployment")
    deployment["metadata"]["annotations"] = {STAGE: "prod"}
    assert ask(client, review(deployment, group="apps", kind="Deployment", namespace="team-a"))["allowed"] is True
    assert judged_stages(audit) == ["dev"]


@pytest.mark.parametrize("claim, reason", [
    (7, "spec.stage: must be a string naming a stage, not int"),
    (["prod"], "spec.stage: must be a string naming a stage, not list"),
    ({"stage": "prod"}, "spec.stage: must be a string naming a stage, not dict"),
    (True, "spec.stage: must be a string naming a stage, not bool"),
    ("qa", "spec.stage: 'qa' is not a known stage (config admission.stages: dev, canary, prod)"),
    ("", "spec.stage: '' is not a known stage"),
    ("Prod", "spec.stage: 'Prod' is not a known stage"),
    ('prod"]},"bindings":{"allow":true,"deny":[],"z":["', "is not a known stage"),
    ("x" * 70_000, "spec.stage: 'xxxxxxxx"),
])
def test_a_stage_that_is_not_a_known_stage_name_is_refused(server: tuple[httpx.Client, Path],
                                                           world: tuple[Signed, dict[str, str]],
                                                           claim: Any, reason: str) -> None:
    client, _ = server
    _, refs = world
    agent = wasm_agent(refs["helper"])
    agent["spec"]["stage"] = claim
    for namespace in ("team-a", "prod"):
        resp = ask(client, review(agent, **CRD, namespace=namespace))
        assert resp["allowed"] is False and reason in resp["status"]["message"], (claim, resp)
    pod = wasm_pod(refs["helper"])
    pod["metadata"]["annotations"] = {STAGE: claim}
    resp = ask(client, review(pod, namespace="team-a"))
    assert resp["allowed"] is False
    assert f"metadata.annotations['{STAGE}']: " in resp["status"]["message"]


def test_the_stage_map_is_the_policy_data_and_a_broken_one_refuses(world: tuple[Signed, dict[str, str]],
                                                                  tmp_path: Path) -> None:
    """One source of truth: the webhook's stage of a namespace is read from the policies' data, as admission.rego
    reads it; a map that cannot be trusted refuses every agent workload with the reason."""
    signed, refs = world
    engine = RegoEngine(ROOT / "policies")
    stages = stage_map(engine, "dev")
    assert stages.problem is None
    assert [stages.of(ns) for ns in ("prod", "prod-eu", "canary-x", "agents-dev", "production", "")] == [
        "prod", "prod", "canary", "dev", "dev", "dev"]
    cases = {
        "namespace_stages": ({"team-*": "qa"}, "namespace_stages['team-*'] is 'qa'"),
        "stages": (["dev", "dev"], "must be a list of distinct stage names"),
    }
    for key, (value, reason) in cases.items():
        broken = RegoEngine(ROOT / "policies", config={})
        broken.data["agentfactory"]["config"]["admission"] = {
            **broken.data["agentfactory"]["config"]["admission"], key: value}
        admitter = Admitter(AdmissionConfig(), signed.store, signed.trust, broken)
        assert admitter.stages.problem and reason in admitter.stages.problem
        with served(signed, tmp_path / key, broken) as (client, _):
            resp = ask(client, review(wasm_agent(refs["helper"]), **CRD))
            assert resp["allowed"] is False and reason in resp["status"]["message"]
            assert ask(client, review({"kind": "ConfigMap", "metadata": {}}, kind="ConfigMap"))["allowed"] is True
    with served(signed, tmp_path / "default", engine, default_stage="qa") as (client, _):
        resp = ask(client, review(wasm_agent(refs["helper"]), **CRD))
        assert resp["allowed"] is False and "defaultStage 'qa'" in resp["status"]["message"]
