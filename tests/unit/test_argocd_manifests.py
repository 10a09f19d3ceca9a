"""The Argo CD manifests (deploy/argocd) and the stage folders they sync (deploy/envs): the app-of-apps and its
sync waves, the projects' permissions, the repository placeholder, the sync policies, and the health checks."""

from __future__ import annotations

import copy
import functools
import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from helpers import ROOT
from manifest_helpers import kustomization, load, manifest_files

DEPLOY = ROOT / "deploy"
ARGOCD = DEPLOY / "argocd"
APPS = ARGOCD / "apps"
NAMESPACES_DIR = ARGOCD / "namespaces"
CM_PATCH = ARGOCD / "argocd-cm-wasmagent-health.yaml"
ENVS = DEPLOY / "envs"
CRD = DEPLOY / "crds" / "wasmagents.yaml"

REPO_URL = "https://github.com/example/agent-factory.git"   # the one placeholder users replace
REPO_MARK = "REPO URL PLACEHOLDER"
REVISION = "main"
IN_CLUSTER = "https://kubernetes.default.svc"
ARGO_NAMESPACE = "argocd"
PLATFORM_NAMESPACE = "agentfactory-system"
PLATFORM_PROJECT = "agentfactory-platform"
STAGES = {"dev": "agents-dev", "canary": "canary-agents", "prod": "prod-agents"}
STAGE_PROJECTS = {s: f"agentfactory-{s}" for s in STAGES}  # one per stage: its namespace only
ROOT_APP = "agentfactory"
# The child Applications of the root: source path, destination namespace, sync wave.
PLATFORM_APPS = {
    "agentfactory-crds": ("deploy/crds", PLATFORM_NAMESPACE, -3),
    "agentfactory-namespaces": ("deploy/argocd/namespaces", PLATFORM_NAMESPACE, -3),
    "agentfactory-runtime": ("deploy/runtime", PLATFORM_NAMESPACE, -2),
    "agentfactory-admission": ("deploy/admission", PLATFORM_NAMESPACE, -1),
    "agentfactory-rescan": ("deploy/rescan", PLATFORM_NAMESPACE, -1),
}
STAGE_APPS = {f"agentfactory-{s}": (f"deploy/envs/{s}", ns, 0) for s, ns in STAGES.items()}
CHILDREN = {**PLATFORM_APPS, **STAGE_APPS}
RETRY = {"limit": 10, "backoff": {"duration": "10s", "factor": 2, "maxDuration": "5m"}}
STAGE_SYNC_OPTIONS = ["ApplyOutOfSyncOnly=true", "PruneLast=true", "FailOnSharedResource=true"]
WAVE = "argocd.argoproj.io/sync-wave"
SYNC_OPTIONS = "argocd.argoproj.io/sync-options"
NEVER_DELETE = "Prune=false,Delete=false"
ADMISSION_LABEL = "agentfactory.dev/admission"
WASMAGENT = ("agentfactory.dev", "WasmAgent")
DIGEST = "sha256:" + "0123456789abcdef" * 4
OTHER_DIGEST = "sha256:" + "fedcba9876543210" * 4
# Kinds that are cluster-scoped, among those the platform could render (everything else is namespaced).
CLUSTER_SCOPED = {("", "Namespace"), ("apiextensions.k8s.io", "CustomResourceDefinition"),
                  ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration"),
                  ("admissionregistration.k8s.io", "MutatingWebhookConfiguration"),
                  ("rbac.authorization.k8s.io", "ClusterRole"), ("rbac.authorization.k8s.io", "ClusterRoleBinding"),
                  ("scheduling.k8s.io", "PriorityClass"), ("node.k8s.io", "RuntimeClass")}
KUBERNETES_VERSIONS = ("1.30", kubernetes_validate.latest_version())


# --- loading -------------------------------------------------------------------------------------------------------

def argo_documents() -> list[dict[str, Any]]:
    """Every Argo CD object as written (before kustomize): the bootstrap's and the root's children."""
    return [d for folder in (ARGOCD, APPS) for name in kustomization(folder)["resources"] for d in load(folder / name)]


def applications() -> dict[str, dict[str, Any]]:
    apps = [d for d in argo_documents() if d["kind"] == "Application"]
    found = {a["metadata"]["name"]: a for a in apps}
    assert len(found) == len(apps), "two Applications with one name"
    return found


def projects() -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in argo_documents() if d["kind"] == "AppProject"}


def wave(app: dict[str, Any]) -> int:
    return int(app["metadata"].get("annotations", {}).get(WAVE, "0"))


def group_kind(obj: dict[str, Any]) -> tuple[str, str]:
    api = str(obj["apiVersion"])
    return (api.split("/")[0] if "/" in api else "", str(obj["kind"]))


def allows_namespace(project: dict[str, Any], server: str, namespace: str) -> bool:
    return any(d["server"] == server and d["namespace"] == namespace for d in project["spec"]["destinations"])


def stage_of_namespace(namespace: str, rules: dict[str, str]) -> str | None:
    """The stage the webhook's policy requires in a namespace (policies/admission.rego, AD4): an exact name
    wins, then the longest matching `prefix*` glob; None when no entry matches (any known stage)."""
    if namespace in rules:
        return rules[namespace]
    globs = [k[:-1] for k in rules if k.endswith("*") and namespace.startswith(k[:-1])]
    return rules[max(globs, key=len) + "*"] if globs else None


# --- kustomize, when kubectl is installed ---------------------------------------------------------------------------

KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed: no kustomize renders")


@functools.cache
def _render(folder: str) -> str:
    assert KUBECTL
    done = subprocess.run([KUBECTL, "kustomize", folder], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"kubectl kustomize {folder}: {done.stderr.strip()}"
    return done.stdout


def kustomize(folder: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(_render(str(folder))) if d]


def rendered_tree() -> dict[str, dict[str, Any]]:
    """Every Application reachable from `kubectl kustomize deploy/argocd`, following each Application's source
    (the root's renders the children), as Argo CD would."""
    seen: dict[str, dict[str, Any]] = {}
    queue = [d for d in kustomize(ARGOCD) if d["kind"] == "Application"]
    while queue:
        app = queue.pop(0)
        name = app["metadata"]["name"]
        assert name not in seen, f"Application {name} is reached twice"
        seen[name] = app
        queue += [d for d in kustomize(ROOT / app["spec"]["source"]["path"]) if d["kind"] == "Application"]
    return seen


# --- structural schemas of Argo CD's kinds ----------------------------------------------------------------------
# kubernetes-validate has schemas for Kubernetes' own kinds only, not for Argo CD's CRDs: Applications and
# AppProjects are checked against these instead. They describe the fields these manifests use, under Argo CD's
# field names, and refuse any other (a misspelt field would otherwise be dropped by the API server's pruning).

def _strict(properties: dict[str, Any], required: list[str] | None = None) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "required": required or [], "properties": properties}


STRING = {"type": "string", "minLength": 1}
STRING_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
DNS_NAME = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"}
DURATION = {"type": "string", "pattern": r"^([0-9]+(ms|s|m|h))+$"}
KNOWN_SYNC_OPTIONS = ("ApplyOutOfSyncOnly", "CreateNamespace", "FailOnSharedResource", "PruneLast",
                      "PrunePropagationPolicy", "Replace", "RespectIgnoreDifferences", "ServerSideApply",
                      "SkipDryRunOnMissingResource", "Validate")
SYNC_OPTION = {"type": "string",
               "pattern": rf"^({'|'.join(KNOWN_SYNC_OPTIONS)})=(true|false|foreground|background|orphan)$"}
GROUP_KIND = _strict({"group": {"type": "string"}, "kind": STRING}, ["group", "kind"])
METADATA = {"type": "object", "required": ["name"], "additionalProperties": False,
            "properties": {"name": DNS_NAME, "namespace": DNS_NAME, "labels": STRING_MAP,
                           "annotations": STRING_MAP}}
APPLICATION = _strict({
    "apiVersion": {"const": "argoproj.io/v1alpha1"},
    "kind": {"const": "Application"},
    "metadata": METADATA,
    "spec": _strict({
        "project": DNS_NAME,
        "source": _strict({
            "repoURL": STRING, "targetRevision": STRING, "path": STRING,
            "kustomize": _strict({"commonAnnotations": STRING_MAP, "commonLabels": STRING_MAP}),
        }, ["repoURL", "targetRevision", "path"]),
        "destination": _strict({"server": STRING, "namespace": DNS_NAME}, ["server", "namespace"]),
        "syncPolicy": _strict({
            "automated": _strict({"prune": {"type": "boolean"}, "selfHeal": {"type": "boolean"},
                                  "allowEmpty": {"type": "boolean"}}),
            "syncOptions": {"type": "array", "items": SYNC_OPTION, "uniqueItems": True},
            "retry": _strict({"limit": {"type": "integer", "minimum": 1},
                              "backoff": _strict({"duration": DURATION, "factor": {"type": "integer", "minimum": 1},
                                                  "maxDuration": DURATION}, ["duration", "factor", "maxDuration"])},
                             ["limit", "backoff"]),
        }),
    }, ["project", "source", "destination", "syncPolicy"]),
}, ["apiVersion", "kind", "metadata", "spec"])
APPPROJECT = _strict({
    "apiVersion": {"const": "argoproj.io/v1alpha1"},
    "kind": {"const": "AppProject"},
    "metadata": METADATA,
    "spec": _strict({
        "description": STRING,
        "sourceRepos": {"type": "array", "items": STRING, "minItems": 1},
        "destinations": {"type": "array", "minItems": 1,
                         "items": _strict({"server": STRING, "namespace": DNS_NAME}, ["server", "namespace"])},
        "clusterResourceWhitelist": {"type": "array", "items": GROUP_KIND},
        "namespaceResourceWhitelist": {"type": "array", "items": GROUP_KIND, "minItems": 1},
        "orphanedResources": _strict({"warn": {"type": "boolean"},
                                      "ignore": {"type": "array", "items": _strict(
                                          {"group": {"type": "string"}, "kind": STRING, "name": STRING},
                                          ["kind"])}}),
    }, ["sourceRepos", "destinations", "clusterResourceWhitelist", "namespaceResourceWhitelist"]),
}, ["apiVersion", "kind", "metadata", "spec"])
SCHEMAS = {"Application": APPLICATION, "AppProject": APPPROJECT}


def structural_errors(obj: dict[str, Any]) -> list[str]:
    schema = SCHEMAS.get(str(obj.get("kind")))
    if schema is None:
        return [f"not an Argo CD kind: {obj.get('kind')}"]
    jsonschema.Draft7Validator.check_schema(schema)
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
              for e in jsonschema.Draft7Validator(schema).iter_errors(obj)]
    annotations = obj.get("metadata", {}).get("annotations", {})
    if WAVE in annotations and not re.fullmatch(r"-?[0-9]+", annotations[WAVE]):
        errors.append(f"{WAVE}: {annotations[WAVE]!r} is not an integer")
    return errors


# --- files and kustomizations ------------------------------------------------------------------------------------

def test_every_yaml_parses() -> None:
    files = [*ARGOCD.rglob("*.yaml"), *ENVS.rglob("*.yaml")]
    assert len(files) >= 16
    for path in files:
        docs = load(path)
        assert docs, f"{path}: empty"
        for d in docs:
            assert isinstance(d, dict) and d.get("apiVersion") and d.get("kind"), f"{path}: not an object"
            if d["kind"] != "Kustomization":
                assert d["metadata"]["name"], f"{path}: unnamed {d['kind']}"
    assert not [*ARGOCD.rglob("*.yml"), *ENVS.rglob("*.yml")], "use .yaml: files named .yml are not checked"


def test_kustomizations_list_every_file_and_nothing_else() -> None:
    top = kustomization(ARGOCD)
    assert top["namespace"] == ARGO_NAMESPACE
    assert top["resources"] == ["projects.yaml", "root-application.yaml"]
    # the argocd-cm patch belongs to the Argo CD installation: in no kustomization
    assert manifest_files(ARGOCD) == sorted([*top["resources"], CM_PATCH.name])
    assert sorted(p.name for p in ARGOCD.iterdir() if p.is_dir()) == ["apps", "namespaces"]
    apps = kustomization(APPS)
    assert apps["namespace"] == ARGO_NAMESPACE
    assert sorted(apps["resources"]) == manifest_files(APPS)
    namespaces = kustomization(NAMESPACES_DIR)
    assert namespaces["resources"] == manifest_files(NAMESPACES_DIR) == ["namespaces.yaml"]
    assert "namespace" not in namespaces, "Namespaces are cluster-scoped"
    for k in (top, apps, namespaces):
        assert k["kind"] == "Kustomization" and k["apiVersion"] == "kustomize.config.k8s.io/v1beta1"
        assert k["labels"] == [{"pairs": {"app.kubernetes.io/part-of": "agentfactory"}}]
    assert {d["kind"] for d in argo_documents()} == {"Application", "AppProject"}


# --- Argo CD objects, structurally -------------------------------------------------------------------------------

def test_argo_cd_objects_are_structurally_valid() -> None:
    docs = argo_documents()
    assert len(docs) == 1 + len(STAGE_PROJECTS) + 1 + len(CHILDREN)
    for d in docs:
        errors = structural_errors(d)
        assert not errors, f"{d['kind']}/{d['metadata']['name']}: {errors}"


@pytest.mark.parametrize(("kind", "path", "value"), [
    ("Application", ("spec", "syncPolicy", "automated", "selfheal"), True),     # misspelt
    ("Application", ("spec", "source", "targetRevison"), "main"),               # misspelt
    ("Application", ("spec", "syncPolicy", "syncOptions"), ["ServerSideAply=true"]),
    ("Application", ("spec", "syncPolicy", "retry", "backoff", "duration"), "10 seconds"),
    ("Application", ("spec", "destination", "namespace"), "Prod_Agents"),
    ("Application", ("metadata", "annotations", WAVE), "first"),
    ("Application", ("spec", "project"), None),                                 # removed: required
    ("AppProject", ("spec", "destinations"), [{"server": IN_CLUSTER}]),
    ("AppProject", ("spec", "clusterResourceWhitelist"), [{"kind": "Namespace"}]),
    ("AppProject", ("spec", "sourceRepo"), ["*"]),
])
def test_the_structural_check_refuses_mistakes(kind: str, path: tuple[str, ...], value: Any) -> None:
    doc = copy.deepcopy(next(d for d in argo_documents() if d["kind"] == kind))
    assert not structural_errors(doc)
    node = doc
    for key in path[:-1]:
        node = node.setdefault(key, {})
    if value is None:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    assert structural_errors(doc)


# --- the app-of-apps and its waves ------------------------------------------------------------------------------

def test_the_bootstrap_is_the_projects_and_the_root_only() -> None:
    """The children are created by the root, wave by wave; applied by kubectl they would all sync at once."""
    top = [d for name in kustomization(ARGOCD)["resources"] for d in load(ARGOCD / name)]
    assert sorted((d["kind"], d["metadata"]["name"]) for d in top) == [
        *sorted(("AppProject", p) for p in (PLATFORM_PROJECT, *STAGE_PROJECTS.values())), ("Application", ROOT_APP)]
    root = applications()[ROOT_APP]
    assert root["spec"]["source"]["path"] == "deploy/argocd/apps"
    assert root["spec"]["project"] == PLATFORM_PROJECT
    assert root["spec"]["destination"] == {"server": IN_CLUSTER, "namespace": ARGO_NAMESPACE}
    assert WAVE not in root["metadata"].get("annotations", {})
    children = [d for name in kustomization(APPS)["resources"] for d in load(APPS / name)]
    assert sorted(d["metadata"]["name"] for d in children) == sorted(CHILDREN)
    assert all(d["kind"] == "Application" for d in children)


def test_sync_waves_order_crds_runtime_admission_then_stages() -> None:
    apps = applications()
    assert {name: wave(apps[name]) for name in CHILDREN} == {name: w for name, (_, _, w) in CHILDREN.items()}
    for name in CHILDREN:
        assert WAVE in apps[name]["metadata"]["annotations"], f"{name}: the wave is explicit"
    crds, namespaces = wave(apps["agentfactory-crds"]), wave(apps["agentfactory-namespaces"])
    runtime, admission = wave(apps["agentfactory-runtime"]), wave(apps["agentfactory-admission"])
    stages = {wave(apps[name]) for name in STAGE_APPS}
    # the runtime defines the namespace and the trust policy the webhook mounts (deploy/admission/README.md),
    # and the webhook, which fails closed, must answer before any WasmAgent is created
    assert crds < runtime < admission < min(stages)
    assert namespaces < min(stages)
    assert len(stages) == 1, "the stages are promoted by commits, not ordered by waves"


def test_platform_apps_sync_the_platform_folders() -> None:
    apps = applications()
    for name, (path, namespace, _) in PLATFORM_APPS.items():
        spec = apps[name]["spec"]
        assert spec["project"] == PLATFORM_PROJECT, name
        assert spec["source"]["path"] == path, name
        assert spec["destination"] == {"server": IN_CLUSTER, "namespace": namespace}, name
        assert (ROOT / path / "kustomization.yaml").is_file(), f"{name}: {path} is no kustomization"


def test_stage_apps_sync_their_env_folder_into_their_namespace() -> None:
    apps = applications()
    for stage, namespace in STAGES.items():
        spec = apps[f"agentfactory-{stage}"]["spec"]
        assert spec["project"] == STAGE_PROJECTS[stage]
        assert spec["source"]["path"] == f"deploy/envs/{stage}"
        assert spec["destination"] == {"server": IN_CLUSTER, "namespace": namespace}
        assert kustomization(ENVS / stage)["namespace"] == namespace
    assert sorted(p.name for p in ENVS.iterdir() if p.is_dir()) == sorted(STAGES)


def test_every_application_uses_its_project() -> None:
    names = set(projects())
    assert names == {PLATFORM_PROJECT, *STAGE_PROJECTS.values()}
    for name, app in applications().items():
        expected = STAGE_PROJECTS[name.removeprefix("agentfactory-")] if name in STAGE_APPS else PLATFORM_PROJECT
        assert app["spec"]["project"] == expected, name


def test_stages_match_the_stage_graph() -> None:
    """pipelines/stages.yaml, which `agentfactory promote` reads: the same stages, folders and namespaces."""
    path = ROOT / "pipelines" / "stages.yaml"
    if not path.is_file():
        pytest.skip("pipelines/stages.yaml is not there")
    graph = yaml.safe_load(path.read_text())
    folder = graph.get("environments", {}).get("path", "deploy/envs/{stage}")
    declared = {s["name"]: s.get("namespace", f"agents-{s['name']}") for s in graph["stages"]}
    assert declared == STAGES
    for stage in STAGES:
        assert folder.format(stage=stage) == f"deploy/envs/{stage}"


def test_stage_namespaces_run_their_stage_under_the_webhooks_policy() -> None:
    """policies/data.json (namespace_stages): canary-agents runs canary agents only, prod-agents prod agents only;
    agents-dev matches no entry (the WasmAgent's own stage, dev)."""
    config = json.loads((ROOT / "policies" / "data.json").read_text())["agentfactory"]["config"]["admission"]
    rules = config["namespace_stages"]
    assert stage_of_namespace("canary-agents", rules) == "canary"
    assert stage_of_namespace("prod-agents", rules) == "prod"
    assert stage_of_namespace("agents-dev", rules) is None
    assert set(STAGES) <= set(config["stages"])


# --- projects ---------------------------------------------------------------------------------------------------

def test_projects_allow_exactly_the_destinations_used() -> None:
    apps, projs = applications(), projects()
    for name, app in apps.items():
        dest = app["spec"]["destination"]
        assert allows_namespace(projs[app["spec"]["project"]], dest["server"], dest["namespace"]), name
    for pname, project in projs.items():
        used = {(a["spec"]["destination"]["server"], a["spec"]["destination"]["namespace"])
                for a in apps.values() if a["spec"]["project"] == pname}
        allowed = [(d["server"], d["namespace"]) for d in project["spec"]["destinations"]]
        assert len(allowed) == len(set(allowed))
        assert set(allowed) == used, f"{pname}: allows {set(allowed) - used} that no Application uses"
    for stage, namespace in STAGES.items():  # each stage's project: its own namespace, no other stage's
        assert projs[STAGE_PROJECTS[stage]]["spec"]["destinations"] == [{"server": IN_CLUSTER, "namespace": namespace}]


def test_projects_allow_nothing_broader_than_named() -> None:
    for name, project in projects().items():
        text = json.dumps(project["spec"])
        assert "*" not in text, f"{name}: no wildcard (namespace, server, kind or repository)"
        assert project["spec"]["sourceRepos"] == [REPO_URL], name
        for entry in project["spec"]["destinations"]:
            assert entry["server"] == IN_CLUSTER, name
    for pname in STAGE_PROJECTS.values():
        stage = projects()[pname]["spec"]
        assert stage["clusterResourceWhitelist"] == [], "a commit to deploy/envs may create no cluster-scoped object"
        assert [(g["group"], g["kind"]) for g in stage["namespaceResourceWhitelist"]] == [WASMAGENT]
        assert stage["orphanedResources"]["warn"] is True
        assert "sourceNamespaces" not in stage, "Applications outside argocd's namespace may not use it"
    platform = projects()[PLATFORM_PROJECT]["spec"]
    assert ("argoproj.io", "AppProject") not in {(g["group"], g["kind"]) for g in
                                                 platform["namespaceResourceWhitelist"]}, "no project may edit one"


@needs_kubectl
def test_projects_allow_exactly_the_kinds_rendered() -> None:
    """Render every Application's source; each project's whitelists are exactly the kinds its Applications render
    (the stages render nothing until a promotion, so theirs is WasmAgent by design)."""
    tree, projs = rendered_tree(), projects()
    used: dict[str, dict[str, set[tuple[str, str]]]] = {p: {"cluster": set(), "namespaced": set()} for p in projs}
    for name, app in tree.items():
        pname, dest = app["spec"]["project"], app["spec"]["destination"]
        for obj in kustomize(ROOT / app["spec"]["source"]["path"]):
            gk = group_kind(obj)
            if gk in CLUSTER_SCOPED:
                assert "namespace" not in obj["metadata"], f"{name}: {gk} is cluster-scoped"
                used[pname]["cluster"].add(gk)
            else:
                assert obj["metadata"].get("namespace", dest["namespace"]) == dest["namespace"], (
                    f"{name}: {gk} {obj['metadata']['name']} lands outside {dest['namespace']}")
                used[pname]["namespaced"].add(gk)
    for pname, project in projs.items():
        cluster = {(g["group"], g["kind"]) for g in project["spec"]["clusterResourceWhitelist"]}
        namespaced = {(g["group"], g["kind"]) for g in project["spec"]["namespaceResourceWhitelist"]}
        assert len(cluster) == len(project["spec"]["clusterResourceWhitelist"])
        assert len(namespaced) == len(project["spec"]["namespaceResourceWhitelist"])
        assert used[pname]["cluster"] == cluster, pname
        if pname in STAGE_PROJECTS.values():
            assert used[pname]["namespaced"] <= namespaced == {WASMAGENT}
        else:
            assert used[pname]["namespaced"] == namespaced, pname


# --- the rendered tree ------------------------------------------------------------------------------------------

@needs_kubectl
def test_kustomize_renders_the_bootstrap() -> None:
    built = kustomize(ARGOCD)
    assert sorted((d["kind"], d["metadata"]["name"]) for d in built) == [
        *sorted(("AppProject", p) for p in (PLATFORM_PROJECT, *STAGE_PROJECTS.values())), ("Application", ROOT_APP)]
    for d in built:
        assert d["metadata"]["namespace"] == ARGO_NAMESPACE
        assert d["metadata"]["labels"]["app.kubernetes.io/part-of"] == "agentfactory"
        assert not structural_errors(d), d["metadata"]["name"]


@needs_kubectl
def test_every_application_source_exists_and_renders() -> None:
    tree = rendered_tree()
    assert set(tree) == {ROOT_APP, *CHILDREN}
    for name, app in tree.items():
        assert not structural_errors(app), name
        assert app["metadata"]["namespace"] == ARGO_NAMESPACE, name
        path = ROOT / app["spec"]["source"]["path"]
        assert (path / "kustomization.yaml").is_file(), f"{name}: {path} does not exist in the repository"
        kustomize(path)   # renders, or fails naming the folder
    assert {name: wave(app) for name, app in tree.items() if name != ROOT_APP} == {
        name: w for name, (_, _, w) in CHILDREN.items()}


@needs_kubectl
def test_platform_sources_validate_against_the_kubernetes_schemas() -> None:
    """Only the namespaces are new here; the CRD, runtime and webhook are validated by their own tests too."""
    for obj in kustomize(NAMESPACES_DIR):
        k8s_validate(obj)


# --- the repository placeholder ---------------------------------------------------------------------------------

def test_one_repository_placeholder_and_branch_main() -> None:
    for name, app in applications().items():
        source = app["spec"]["source"]
        assert source["repoURL"] == REPO_URL, name
        assert source["targetRevision"] == REVISION, name
    for name, project in projects().items():
        assert project["spec"]["sourceRepos"] == [REPO_URL], name
    for path in [*ARGOCD.rglob("*.yaml"), *ENVS.rglob("*.yaml")]:
        text = path.read_text()
        urls = set(re.findall(r"https?://[^\s\"'#)]+", text))
        assert urls <= {REPO_URL, IN_CLUSTER}, f"{path}: {urls - {REPO_URL, IN_CLUSTER}}"
        assert not re.search(r"\bHEAD\b", text), f"{path}: track main, not HEAD"
        for line in text.splitlines():
            if REPO_URL in line and not line.lstrip().startswith("#"):
                assert REPO_MARK in line, f"{path}: mark the placeholder: {line.strip()}"


def test_the_documented_sed_replaces_every_placeholder(tmp_path: Path) -> None:
    readme = (ARGOCD / "README.md").read_text()
    block = re.search(r"```sh\n(REPO=\S+\n(?:grep|.*\| xargs sed).*?)\n(?:git|```)", readme, re.S)
    assert block, "README.md lost its REPO=... / sed command"
    commands = block.group(1)
    new = re.match(r"REPO=(\S+)", commands)
    assert new
    shutil.copytree(ARGOCD, tmp_path / "deploy" / "argocd")
    subprocess.run(["bash", "-euo", "pipefail", "-c", commands], cwd=tmp_path, check=True, timeout=30)
    copied = tmp_path / "deploy" / "argocd"
    for path in copied.rglob("*.yaml"):
        assert REPO_URL not in path.read_text(), f"{path.name} still has the placeholder"
    assert REPO_URL in (copied / "README.md").read_text(), "the documentation is not rewritten"
    docs = [d for folder in (copied, copied / "apps") for name in kustomization(folder)["resources"]
            for d in load(folder / name)]
    assert {d["spec"]["source"]["repoURL"] for d in docs if d["kind"] == "Application"} == {new.group(1)}
    assert {r for d in docs if d["kind"] == "AppProject" for r in d["spec"]["sourceRepos"]} == {new.group(1)}


# --- sync policies ----------------------------------------------------------------------------------------------

def test_sync_policies() -> None:
    apps = applications()
    for name, app in apps.items():
        spec, policy = app["spec"], app["spec"]["syncPolicy"]
        assert policy["retry"] == RETRY, name
        assert policy["automated"]["selfHeal"] is True, f"{name}: automated, prod included"
        assert policy["automated"]["prune"] is (name != "agentfactory-crds"), name
        assert "ignoreDifferences" not in spec, f"{name}: nothing set behind Git's back needs ignoring"
        assert "finalizers" not in app["metadata"], f"{name}: deleting an Application never cascades"
        assert not any(o.startswith("CreateNamespace") for o in policy.get("syncOptions", [])), (
            f"{name}: the namespaces are the platform's")
    for name in STAGE_APPS:
        policy = apps[name]["spec"]["syncPolicy"]
        assert policy["automated"] == {"prune": True, "selfHeal": True, "allowEmpty": True}, name
        assert policy["syncOptions"] == STAGE_SYNC_OPTIONS, name
    for name in ("agentfactory-namespaces", "agentfactory-runtime", "agentfactory-admission", ROOT_APP):
        assert apps[name]["spec"]["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}, name
        assert "syncOptions" not in apps[name]["spec"]["syncPolicy"], name
        assert "kustomize" not in apps[name]["spec"]["source"], name
    crds = apps["agentfactory-crds"]["spec"]
    assert crds["syncPolicy"]["syncOptions"] == ["ServerSideApply=true"]
    assert crds["source"]["kustomize"] == {"commonAnnotations": {SYNC_OPTIONS: NEVER_DELETE}}


def test_prod_documents_how_to_switch_to_manual_sync() -> None:
    text = (APPS / "stage-prod.yaml").read_text()
    assert "delete the automated: block" in text and "Manual sync for prod" in text
    readme = (ARGOCD / "README.md").read_text()
    assert "## Manual sync for prod" in readme
    assert "argocd app sync agentfactory-prod" in readme


# --- the stage namespaces ---------------------------------------------------------------------------------------

def k8s_validate(obj: dict[str, Any]) -> None:
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} against Kubernetes {version}: {e.message}")


def test_stage_namespaces() -> None:
    docs = load(NAMESPACES_DIR / "namespaces.yaml")
    assert [(d["kind"], d["metadata"]["name"]) for d in docs] == [("Namespace", ns) for ns in STAGES.values()]
    for (stage, namespace), d in zip(STAGES.items(), docs, strict=True):
        labels = d["metadata"]["labels"]
        assert labels["agentfactory.dev/stage"] == stage
        assert ADMISSION_LABEL not in labels, f"{namespace}: the webhook enforces there, never warn or exempt"
        assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
        assert d["metadata"]["annotations"] == {SYNC_OPTIONS: NEVER_DELETE}, "a sync never deletes a stage"
        k8s_validate(d)


# --- deploy/envs ------------------------------------------------------------------------------------------------

def test_env_folders_are_what_promote_writes() -> None:
    """Each stage's kustomization lists exactly the files of its agents/ folder (none before the first promotion),
    with the keys `agentfactory promote` writes; each listed agent is a WasmAgent of that stage, pinned by digest."""
    for stage, namespace in STAGES.items():
        folder = ENVS / stage
        k = kustomization(folder)
        assert set(k) == {"apiVersion", "kind", "namespace", "resources"}
        assert (k["apiVersion"], k["kind"], k["namespace"]) == (
            "kustomize.config.k8s.io/v1beta1", "Kustomization", namespace)
        agents = sorted(f"agents/{p.name}" for p in (folder / "agents").glob("*.yaml"))
        assert k["resources"] == agents, f"{stage}: resources must list agents/ exactly"
        for rel in agents:
            [doc] = load(folder / rel)
            assert group_kind(doc) == WASMAGENT and doc["spec"]["stage"] == stage
            assert re.search(r"@sha256:[0-9a-f]{64}$", doc["spec"]["agent"]), f"{stage}/{rel}: pin the digest"
        assert sorted(p.name for p in folder.iterdir()) == (["agents", "kustomization.yaml"] if agents else
                                                            ["kustomization.yaml"])
        if not agents:   # the placeholder's comment (the tool rewrites the file, comments and all)
            text = (folder / "kustomization.yaml").read_text()
            assert "agentfactory promote" in text and "agents/AGENT.yaml" in text and "resources" in text
            assert k["resources"] == []
    assert (ENVS / "README.md").is_file()


@needs_kubectl
@pytest.mark.parametrize("stage", list(STAGES))
def test_kustomize_renders_each_stage(stage: str) -> None:
    for obj in kustomize(ENVS / stage):
        assert group_kind(obj) == WASMAGENT
        assert obj["metadata"]["namespace"] == STAGES[stage]


def wasm_agent(name: str, stage: str) -> dict[str, Any]:
    """A WasmAgent as `agentfactory promote` writes it (deploy/envs/README.md)."""
    return {"apiVersion": "agentfactory.dev/v1alpha1", "kind": "WasmAgent",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/name": name,
                                                  "app.kubernetes.io/part-of": "agentfactory",
                                                  "agentfactory.dev/stage": stage},
                         "annotations": {"agentfactory.dev/version": "1.0.0"}},
            "spec": {"agent": f"{name}@{DIGEST}", "stage": stage}}


def crd_validator() -> jsonschema.protocols.Validator:
    [crd] = load(CRD)
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    validator: jsonschema.protocols.Validator = jsonschema.Draft7Validator(schema)
    return validator


@needs_kubectl
@pytest.mark.parametrize("stage", list(STAGES))
def test_a_promoted_agent_renders_into_the_stage_namespace(tmp_path: Path, stage: str) -> None:
    """What the folder becomes after a promotion: the WasmAgent lands in the stage's namespace, whatever the file
    says, and is valid for the CRD."""
    folder = tmp_path / stage
    shutil.copytree(ENVS / stage, folder)
    (folder / "agents").mkdir()
    agent = wasm_agent("wordstats", stage)
    (folder / "agents" / "wordstats.yaml").write_text(yaml.safe_dump(agent, sort_keys=False))
    k = kustomization(folder)
    k["resources"] = ["agents/wordstats.yaml"]
    (folder / "kustomization.yaml").write_text(yaml.safe_dump(k, sort_keys=False))
    [built] = kustomize(folder)
    assert built["metadata"]["namespace"] == STAGES[stage]
    assert built["spec"] == agent["spec"]
    crd_validator().validate(built)


# --- the health checks (argocd-cm) ------------------------------------------------------------------------------

WASMAGENT_KEY = "resource.customizations.health.agentfactory.dev_WasmAgent"
APPLICATION_KEY = "resource.customizations.health.argoproj.io_Application"
LUA = next((p for p in (shutil.which(n) for n in ("lua5.4", "lua", "luajit", "lua5.3", "lua5.1")) if p), None)
LUAC = next((p for p in (shutil.which(n) for n in ("luac5.4", "luac", "luac5.3", "luac5.1")) if p), None)
needs_lua = pytest.mark.skipif(LUA is None, reason="no Lua interpreter (lua5.4, lua, luajit): scripts not run")


def cm_patch() -> dict[str, Any]:
    [doc] = load(CM_PATCH)
    return doc


def script(key: str) -> str:
    return str(cm_patch()["data"][key])


def test_health_patch_is_an_argocd_cm_patch() -> None:
    doc = cm_patch()
    assert (doc["apiVersion"], doc["kind"]) == ("v1", "ConfigMap")
    assert (doc["metadata"]["name"], doc["metadata"]["namespace"]) == ("argocd-cm", ARGO_NAMESPACE)
    # the labels of Argo CD's own argocd-cm, kept if the patch is ever applied rather than merged
    assert doc["metadata"]["labels"] == {"app.kubernetes.io/name": "argocd-cm", "app.kubernetes.io/part-of": "argocd"}
    assert set(doc["data"]) == {WASMAGENT_KEY, APPLICATION_KEY}
    wasm = script(WASMAGENT_KEY)
    for word in ('"Ready"', "conditions", "observedGeneration", "observedDigest", "spec.agent", '"Healthy"',
                 '"Progressing"', '"Degraded"', '"True"', '"False"'):
        assert word in wasm, word
    for text in (wasm, script(APPLICATION_KEY)):
        assert text.rstrip().endswith("return hs")
        # Argo CD runs Lua 5.1 (gopher-lua): nothing newer
        assert not re.search(r"\bgoto\b|//|<const>|<close>|&|~(?!=)|<<|>>|\butf8\.|\bmath\.type\b", text)
    header = CM_PATCH.read_text().split("apiVersion:")[0]
    command = "kubectl -n argocd patch configmap argocd-cm --type merge"
    assert command in header and command in (ARGOCD / "README.md").read_text()


@needs_kubectl
def test_health_patch_merges_into_an_existing_argocd_cm(tmp_path: Path) -> None:
    assert KUBECTL
    base = tmp_path / "argocd-cm.yaml"
    base.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap",
                                    "metadata": {"name": "argocd-cm", "namespace": "argocd",
                                                 "labels": {"app.kubernetes.io/part-of": "argocd"}},
                                    "data": {"url": "https://argocd.example.com"}}))
    out = subprocess.run([KUBECTL, "patch", "--local", "-f", str(base), "--type", "merge", "--patch-file",
                          str(CM_PATCH), "-o", "yaml"], check=True, capture_output=True, text=True, timeout=60).stdout
    merged = yaml.safe_load(out)
    assert merged["data"]["url"] == "https://argocd.example.com", "the installation's settings are kept"
    assert merged["data"][WASMAGENT_KEY] == script(WASMAGENT_KEY)
    assert merged["data"][APPLICATION_KEY] == script(APPLICATION_KEY)


def test_health_scripts_parse_as_lua(tmp_path: Path) -> None:
    if LUAC is None and LUA is None:
        pytest.skip("neither luac nor lua is installed: structure checked only (test_health_patch_...)")
    for key in (WASMAGENT_KEY, APPLICATION_KEY):
        path = tmp_path / "health.lua"
        path.write_text(script(key))
        argv = [LUAC, "-p", str(path)] if LUAC else [str(LUA), "-e", f"assert(loadfile({lua(str(path))}))"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, f"{key}: {done.stderr}"


def lua(value: Any) -> str:
    """A Lua literal of a JSON-like value, as Argo CD hands the live object to its scripts."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(value, list):
        return "{" + ", ".join(lua(v) for v in value) + "}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"[{lua(k)}] = {lua(v)}" for k, v in value.items()) + "}"
    raise TypeError(type(value))


def run_health(key: str, obj: dict[str, Any], tmp_path: Path) -> tuple[str, str]:
    assert LUA
    check = tmp_path / "health.lua"
    check.write_text(script(key))
    harness = tmp_path / "harness.lua"
    harness.write_text(f"obj = {lua(obj)}\nlocal hs = assert(loadfile({lua(str(check))}))()\n"
                       'io.write(tostring(hs.status), "\\n", tostring(hs.message), "\\n")\n')
    done = subprocess.run([LUA, str(harness)], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    status, _, message = done.stdout.partition("\n")
    return status, message.rstrip("\n")


def condition(status: str, reason: str = "Running", message: str = "", generation: int | None = 1) -> dict[str, Any]:
    c: dict[str, Any] = {"type": "Ready", "status": status, "reason": reason, "message": message,
                         "lastTransitionTime": "2026-01-02T03:04:05Z"}
    if generation is not None:
        c["observedGeneration"] = generation
    return c


def agent_with(status: dict[str, Any] | None, generation: int | None = 1, ref: str = f"wordstats@{DIGEST}",
               ) -> dict[str, Any]:
    obj = wasm_agent("wordstats", "prod")
    obj["metadata"]["namespace"] = "prod-agents"
    obj["spec"]["agent"] = ref
    if generation is not None:
        obj["metadata"]["generation"] = generation
    if status is not None:
        obj["status"] = status
    return obj


HEALTH_CASES = [
    ("no status yet", agent_with(None), "Progressing", "Ready condition"),
    ("no condition yet", agent_with({"conditions": []}), "Progressing", "Ready condition"),
    ("no Ready condition", agent_with({"conditions": [{**condition("True"), "type": "Verified"}]}),
     "Progressing", "Ready condition"),
    ("ready, promoted digest running", agent_with({"observedGeneration": 1, "observedDigest": DIGEST,
                                                   "conditions": [condition("True", message="serving")]}),
     "Healthy", "Running: serving"),
    ("ready, nothing else reported", agent_with({"conditions": [condition("True", generation=None)]},
                                                generation=None), "Healthy", "Running"),
    ("ready, through a registry reference", agent_with(
        {"observedDigest": DIGEST, "conditions": [condition("True")]},
        ref=f"oci://registry.agentfactory.svc:5000/agents/wordstats@{DIGEST}"), "Healthy", "Running"),
    ("ready, a tag (no digest to compare)", agent_with({"observedDigest": OTHER_DIGEST,
                                                        "conditions": [condition("True")]}, ref="wordstats:1.0.0"),
     "Healthy", "Running"),
    ("new spec not observed (condition)", agent_with({"conditions": [condition("True", generation=1)]}, generation=2),
     "Progressing", "generation 2"),
    ("new spec not observed (status)", agent_with({"observedGeneration": 1,
                                                   "conditions": [condition("True", generation=None)]}, generation=2),
     "Progressing", "generation 2"),
    ("refused", agent_with({"conditions": [condition("False", "VerificationFailed", "no trusted signature")]}),
     "Degraded", "VerificationFailed: no trusted signature"),
    ("refused, without a message", agent_with({"conditions": [condition("False", "PolicyDenied")]}),
     "Degraded", "PolicyDenied"),
    ("refusal of the previous spec", agent_with({"conditions": [condition("False", "PolicyDenied", generation=1)]},
                                                generation=2), "Progressing", "generation 2"),
    ("unknown", agent_with({"conditions": [condition("Unknown", "Fetching", "pulling the module")]}),
     "Progressing", "Fetching: pulling the module"),
    ("previous digest still running", agent_with({"observedDigest": OTHER_DIGEST, "conditions": [condition("True")]}),
     "Progressing", f"Running {OTHER_DIGEST}, waiting for {DIGEST}"),
]


def test_health_samples_are_valid_wasmagents() -> None:
    """The samples' statuses are ones the CRD accepts (conditions with reason, message, lastTransitionTime)."""
    validator = crd_validator()
    for name, obj, _, _ in HEALTH_CASES:
        errors = [e.message for e in validator.iter_errors(obj)]
        assert not errors, f"{name}: {errors}"


@needs_lua
@pytest.mark.parametrize(("obj", "status", "message"), [c[1:] for c in HEALTH_CASES], ids=[c[0] for c in HEALTH_CASES])
def test_wasmagent_health(tmp_path: Path, obj: dict[str, Any], status: str, message: str) -> None:
    got_status, got_message = run_health(WASMAGENT_KEY, obj, tmp_path)
    assert got_status == status, got_message
    assert message in got_message


@needs_lua
@pytest.mark.parametrize(("obj", "status", "message"), [
    ({"metadata": {"name": "agentfactory-prod"}}, "Progressing", ""),
    ({"metadata": {"name": "a"}, "status": {"sync": {"status": "Synced"}}}, "Progressing", ""),
    ({"metadata": {"name": "a"}, "status": {"health": {"status": "Healthy"}}}, "Healthy", ""),
    ({"metadata": {"name": "a"}, "status": {"health": {"status": "Degraded", "message": "wordstats: refused"}}},
     "Degraded", "wordstats: refused"),
    ({"metadata": {"name": "a"}, "status": {"health": {"status": "Missing"}}}, "Missing", ""),
], ids=["no status", "no health", "healthy", "degraded", "missing"])
def test_application_health(tmp_path: Path, obj: dict[str, Any], status: str, message: str) -> None:
    assert run_health(APPLICATION_KEY, obj, tmp_path) == (status, message)


# --- documentation ----------------------------------------------------------------------------------------------

def test_readme_documents_bootstrap_promotion_and_rollback() -> None:
    readme = (ARGOCD / "README.md").read_text()
    for text in ("kubectl apply -k deploy/argocd", "agentfactory promote", "agentfactory rollback",
                 "argocd app rollback", f"kubectl label namespace argocd {ADMISSION_LABEL}=exempt",
                 "deploy/envs/STAGE/agents/AGENT.yaml", "ApplicationSet", "## Health checks", REPO_URL):
        assert text in readme, text
    deploy_readme = (DEPLOY / "README.md").read_text()
    assert "(argocd/README.md)" in deploy_readme and "(envs/README.md)" in deploy_readme
    envs_readme = (ENVS / "README.md").read_text()
    for stage, namespace in STAGES.items():
        assert f"`{stage}/` | {stage} | `{namespace}` | `agentfactory-{stage}`" in envs_readme


def test_readme_creates_the_policies_configmap_with_every_policy() -> None:
    """The bootstrap creates the policies ConfigMap the runtime and the webhook mount: every policy, no more."""
    readme = (ARGOCD / "README.md").read_text()
    command = re.search(r"create configmap agentfactory-runtime-policies(.*?)\| kubectl apply -f -", readme, re.S)
    assert command, "README.md lost its `kubectl create configmap agentfactory-runtime-policies` command"
    files = re.findall(r"--from-file=policies/([\w.-]+)", command.group(1))
    wanted = sorted(p.name for p in (ROOT / "policies").glob("*.rego") if not p.name.endswith("_test.rego"))
    assert sorted(files) == sorted([*wanted, "data.json"])
