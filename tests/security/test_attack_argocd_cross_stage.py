"""Attack: someone who can commit to deploy/envs/dev (where `agentfactory promote --to dev` writes, and
where promotion pull requests merge with the lightest review) makes dev's Application create a
WasmAgent in prod-agents: a WasmAgent that names `namespace: prod-agents` with the folder's
`namespace:` line removed, or a nested kustomization with its own namespace. The single `agentfactory`
AppProject allowed all three stage namespaces to every stage Application, so Argo CD synced it: a
digest in prod that never went through canary.

Now each stage has its own AppProject, whose only destination is its own namespace. The test renders
hostile deploy/envs/dev folders with `kubectl kustomize`, as Argo CD's repo server does, and judges
each rendered object with Argo CD's project rules (docs: "Projects"; the controller checks every
managed resource, not only the Application's destination):

- the Application's source repository must match one of `sourceRepos`, and its destination one of
  `destinations`;
- each namespaced object lands in its own `metadata.namespace`, else in the Application's destination
  namespace, and that (server, namespace) must be permitted by `destinations` ("namespace X is not
  permitted in project P"); globs match, and an entry starting with `!` denies;
- a namespaced kind must be in `namespaceResourceWhitelist` (all kinds when the list is absent) and
  not in `namespaceResourceBlacklist`; a cluster-scoped kind must be in `clusterResourceWhitelist`.
"""

from __future__ import annotations

import fnmatch
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import ROOT

ARGOCD = ROOT / "deploy/argocd"
ENVS = ROOT / "deploy/envs"
KUBECTL = shutil.which("kubectl")
pytestmark = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed: no kustomize renders")
CLUSTER_SCOPED = {("", "Namespace"), ("apiextensions.k8s.io", "CustomResourceDefinition"),
                  ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration"),
                  ("rbac.authorization.k8s.io", "ClusterRole"), ("rbac.authorization.k8s.io", "ClusterRoleBinding")}
DIGEST = "sha256:" + "ab" * 32


# --- Argo CD's project rules ---------------------------------------------------------------------------

def _glob(pattern: str, value: str) -> bool:
    """Argo CD's glob match, with `!pattern` meaning "not matching pattern"."""
    if pattern.startswith("!"):
        return not fnmatch.fnmatchcase(value, pattern[1:])
    return fnmatch.fnmatchcase(value, pattern)


def destination_permitted(project: dict[str, Any], server: str, namespace: str) -> bool:
    """AppProject.IsDestinationPermitted: some entry matches server and namespace, and no deny entry
    (`!`) excludes them."""
    permitted = False
    for d in project["spec"].get("destinations", []):
        server_ok, namespace_ok = _glob(d.get("server", ""), server), _glob(d.get("namespace", ""), namespace)
        if server_ok and namespace_ok:
            permitted = True
        elif (d.get("server", "").startswith("!") and not server_ok and namespace_ok) or (
                d.get("namespace", "").startswith("!") and not namespace_ok and server_ok):
            return False
    return permitted


def source_permitted(project: dict[str, Any], repo_url: str) -> bool:
    repos = project["spec"].get("sourceRepos", [])
    if any(r.startswith("!") and not _glob(r, repo_url) for r in repos):
        return False
    return any(not r.startswith("!") and _glob(r, repo_url) for r in repos)


def _listed(group_kind: tuple[str, str], entries: list[dict[str, str]] | None) -> bool:
    return any(_glob(e.get("group", ""), group_kind[0]) and _glob(e.get("kind", ""), group_kind[1])
               for e in entries or [])


def kind_permitted(project: dict[str, Any], group_kind: tuple[str, str], namespaced: bool) -> bool:
    spec = project["spec"]
    if namespaced:
        white = spec.get("namespaceResourceWhitelist")
        return (white is None or _listed(group_kind, white)) and not _listed(
            group_kind, spec.get("namespaceResourceBlacklist"))
    return _listed(group_kind, spec.get("clusterResourceWhitelist")) and not _listed(
        group_kind, spec.get("clusterResourceBlacklist"))


def refusals(project: dict[str, Any], app: dict[str, Any], rendered: list[dict[str, Any]]) -> list[str]:
    """What Argo CD refuses when `app` (of `project`) syncs `rendered`: nothing means the sync goes through."""
    pname, spec = project["metadata"]["name"], app["spec"]
    dest, out = spec["destination"], []
    if not source_permitted(project, spec["source"]["repoURL"]):
        out.append(f"application repo {spec['source']['repoURL']} is not permitted in project '{pname}'")
    if not destination_permitted(project, dest["server"], dest["namespace"]):
        out.append(f"application destination {dest} is not permitted in project '{pname}'")
    for obj in rendered:
        api = str(obj["apiVersion"])
        gk = (api.split("/")[0] if "/" in api else "", str(obj["kind"]))
        namespaced = gk not in CLUSTER_SCOPED
        namespace = (obj["metadata"].get("namespace") or dest["namespace"]) if namespaced else ""
        if namespaced and not destination_permitted(project, dest["server"], namespace):
            out.append(f"namespace {namespace} is not permitted in project '{pname}'")
        if not kind_permitted(project, gk, namespaced):
            out.append(f"resource {gk[0]}:{gk[1]} is not permitted in project '{pname}'")
    return out


# --- the manifests ---------------------------------------------------------------------------------------

def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def projects() -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in _docs(ARGOCD / "projects.yaml")}


def stage_app(stage: str) -> dict[str, Any]:
    [app] = _docs(ARGOCD / "apps" / f"stage-{stage}.yaml")
    return app


def render(folder: Path) -> list[dict[str, Any]]:
    assert KUBECTL
    done = subprocess.run([KUBECTL, "kustomize", str(folder)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return [d for d in yaml.safe_load_all(done.stdout) if d]


def wasm_agent(name: str, namespace: str | None = None) -> str:
    meta = {"name": name, **({"namespace": namespace} if namespace else {})}
    return yaml.safe_dump({"apiVersion": "agentfactory.dev/v1alpha1", "kind": "WasmAgent", "metadata": meta,
                           "spec": {"agent": name, "version": "1.0.0", "digest": DIGEST}})


def kustomization(resources: list[str], namespace: str | None) -> str:
    doc: dict[str, Any] = {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization"}
    if namespace:
        doc["namespace"] = namespace
    doc["resources"] = resources
    return yaml.safe_dump(doc)


def dev_folder(tmp_path: Path, files: dict[str, str]) -> Path:
    """A copy of deploy/envs/dev with `files` written over it (relative paths)."""
    folder = tmp_path / "dev"
    shutil.copytree(ENVS / "dev", folder)
    for rel, text in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / rel).write_text(text)
    return folder


HOSTILE = {
    "namespace line removed, WasmAgent names prod-agents": {
        "kustomization.yaml": kustomization(["agents/evil.yaml"], None),
        "agents/evil.yaml": wasm_agent("evil", "prod-agents")},
    "nested kustomization with its own namespace": {
        "kustomization.yaml": kustomization(["agents/ok.yaml", "sneak"], None),
        "agents/ok.yaml": wasm_agent("ok", "agents-dev"),
        "sneak/kustomization.yaml": kustomization(["evil.yaml"], "prod-agents"),
        "sneak/evil.yaml": wasm_agent("evil")},
    "a WasmAgent into canary": {
        "kustomization.yaml": kustomization(["agents/evil.yaml"], None),
        "agents/evil.yaml": wasm_agent("evil", "canary-agents")},
    "a namespace relabelled to escape the webhook": {
        "kustomization.yaml": kustomization(["ns.yaml"], "agents-dev"),
        "ns.yaml": yaml.safe_dump({"apiVersion": "v1", "kind": "Namespace", "metadata": {
            "name": "prod-agents", "labels": {"agentfactory.dev/admission": "exempt"}}})},
    "a Deployment beside the agents": {
        "kustomization.yaml": kustomization(["d.yaml"], "agents-dev"),
        "d.yaml": yaml.safe_dump({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "miner"},
                                  "spec": {}})},
}


@pytest.mark.parametrize("attack", list(HOSTILE))
def test_dev_cannot_reach_outside_its_namespace(tmp_path: Path, attack: str) -> None:
    app = stage_app("dev")
    project = projects()[app["spec"]["project"]]
    rendered = render(dev_folder(tmp_path, HOSTILE[attack]))
    assert rendered, "the hostile folder renders"
    assert refusals(project, app, rendered), f"{attack}: Argo CD would sync it with project {project['metadata']}"


def test_the_single_shared_project_let_the_cross_stage_commits_through(tmp_path: Path) -> None:
    """The rules above are what tell the projects apart: under the old single project (every stage
    namespace allowed to every stage), the namespace attacks pass."""
    old = {"metadata": {"name": "agentfactory"}, "spec": {
        "sourceRepos": [stage_app("dev")["spec"]["source"]["repoURL"]],
        "destinations": [{"server": "https://kubernetes.default.svc", "namespace": ns}
                         for ns in ("agents-dev", "canary-agents", "prod-agents")],
        "clusterResourceWhitelist": [],
        "namespaceResourceWhitelist": [{"group": "agentfactory.dev", "kind": "WasmAgent"}]}}
    for attack in ("namespace line removed, WasmAgent names prod-agents", "nested kustomization with its own namespace",
                   "a WasmAgent into canary"):
        rendered = render(dev_folder(tmp_path / attack.replace(" ", "-"), HOSTILE[attack]))
        assert not refusals(old, stage_app("dev"), rendered), attack


@pytest.mark.parametrize("stage", ["dev", "canary", "prod"])
def test_what_promote_writes_syncs_and_other_stages_namespaces_do_not(tmp_path: Path, stage: str) -> None:
    app = stage_app(stage)
    project = projects()[app["spec"]["project"]]
    own = app["spec"]["destination"]["namespace"]
    folder = tmp_path / stage
    shutil.copytree(ENVS / stage, folder)
    honest = yaml.safe_load((folder / "kustomization.yaml").read_text())
    (folder / "agents").mkdir()
    (folder / "agents/good.yaml").write_text(wasm_agent("good"))
    honest["resources"] = ["agents/good.yaml"]
    (folder / "kustomization.yaml").write_text(yaml.safe_dump(honest))
    rendered = render(folder)
    assert [o["metadata"]["namespace"] for o in rendered] == [own]
    assert refusals(project, app, rendered) == []
    others = {stage_app(s)["spec"]["destination"]["namespace"] for s in ("dev", "canary", "prod")} - {own}
    for namespace in others:
        moved = [{**o, "metadata": {**o["metadata"], "namespace": namespace}} for o in rendered]
        assert refusals(project, app, moved) == [f"namespace {namespace} is not permitted in project "
                                                 f"'{project['metadata']['name']}'"]


def test_each_stage_has_a_project_of_its_own() -> None:
    names = [stage_app(s)["spec"]["project"] for s in ("dev", "canary", "prod")]
    assert len(set(names)) == 3, names
    for stage, name in zip(("dev", "canary", "prod"), names, strict=True):
        project = projects()[name]
        assert [d["namespace"] for d in project["spec"]["destinations"]] == [
            stage_app(stage)["spec"]["destination"]["namespace"]]
        assert "sourceNamespaces" not in project["spec"]


def test_the_rules_model_deny_entries_and_globs() -> None:
    p = {"metadata": {"name": "p"}, "spec": {"sourceRepos": ["https://git.example/*", "!https://git.example/evil"],
                                             "destinations": [{"server": "*", "namespace": "team-*"},
                                                              {"server": "*", "namespace": "!team-prod"}]}}
    assert destination_permitted(p, "https://k", "team-dev")
    assert not destination_permitted(p, "https://k", "team-prod")
    assert destination_permitted(p, "https://k", "x")  # a `!` entry matches every other namespace (Argo CD docs)
    assert source_permitted(p, "https://git.example/good") and not source_permitted(p, "https://git.example/evil")
    assert kind_permitted(p, ("apps", "Deployment"), namespaced=True)  # no namespaced whitelist: all kinds
    assert not kind_permitted(p, ("", "Namespace"), namespaced=False)  # no cluster whitelist: none
