"""The node runtime's Kubernetes manifests (deploy/runtime): security settings, wiring, and the kustomization."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from helpers import ROOT
from manifest_helpers import mount_in, only_container, volumes_of

from agentfactory.trust import load_trust_policy

RUNTIME = ROOT / "deploy" / "runtime"
NAMESPACE = "agentfactory-system"
IMAGE = "ghcr.io/agentfactory/agentfactory:0.1.0"
UID = 65532
# The options of `agentfactory runtime serve`: the command may pass nothing else.
OPTIONS = {"--listen", "--store", "--policy", "--key-provider", "--policies", "--stage", "--cache-dir", "--node-key",
           "--audit-log", "--allow-host-path", "--workers"}
# --key-provider: the keys are inline in the mounted trust policy; --allow-host-path: no host folder.
REQUIRED_OPTIONS = OPTIONS - {"--key-provider", "--allow-host-path"}
# The only writable mounts: mount path -> what the volume must be. No hostPath: the pod meets `restricted`.
WRITABLE = {
    "/var/lib/agentfactory": {"emptyDir": {"sizeLimit": "512Mi"}},
    "/var/cache/agentfactory": {"emptyDir": {"sizeLimit": "1Gi"}},
    "/run/agentfactory/key": {"emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}},
}
# The volume types Pod Security `restricted` allows (of those a pod spec can name).
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected",
                      "secret"}
GENERATOR = re.compile(r"^# >>> policies-generator\n(.*?)^# <<< policies-generator$", re.M | re.S)


def manifest_files() -> list[str]:
    return sorted(p.name for p in RUNTIME.glob("*.yaml") if p.name != "kustomization.yaml")


def kustomization() -> dict[str, Any]:
    k: dict[str, Any] = yaml.safe_load((RUNTIME / "kustomization.yaml").read_text())
    return k


def documents() -> list[dict[str, Any]]:
    docs = []
    for name in manifest_files():
        docs += [d for d in yaml.safe_load_all((RUNTIME / name).read_text()) if d is not None]
    return docs


def the(kind: str) -> dict[str, Any]:
    found = [d for d in documents() if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    doc: dict[str, Any] = found[0]
    return doc


def pod() -> dict[str, Any]:
    spec: dict[str, Any] = the("DaemonSet")["spec"]["template"]["spec"]
    return spec


def runtime_container() -> dict[str, Any]:
    return only_container(pod(), "runtime")


def volumes() -> dict[str, dict[str, Any]]:
    return volumes_of(pod())


def mount_of(volume: str) -> str:
    return mount_in(pod(), "runtime", volume)


def options() -> dict[str, list[str]]:
    """The `--option value` / `--option=value` pairs of the runtime's command line (command then args)."""
    c = runtime_container()
    argv = [*c["command"], *c.get("args", [])]
    assert argv[:3] == ["agentfactory", "runtime", "serve"]
    found: dict[str, list[str]] = {}
    rest = argv[3:]
    while rest:
        item = rest.pop(0)
        assert item.startswith("--"), f"stray argument {item!r}"
        name, eq, value = item.partition("=")
        if not eq:
            assert rest and not rest[0].startswith("--"), f"{name} without a value"
            value = rest.pop(0)
        found.setdefault(name, []).append(value)
    return found


def port_number(port: int | str) -> int:
    if isinstance(port, int):
        return port
    numbers = [p["containerPort"] for p in runtime_container()["ports"] if p["name"] == port]
    assert numbers, f"no container port named {port}"
    return int(numbers[0])


def effective(container: dict[str, Any], field: str) -> Any:
    """A security setting as the kubelet applies it: the container's, else the pod's."""
    ctx = container.get("securityContext", {})
    return ctx[field] if field in ctx else pod().get("securityContext", {}).get(field)


# --- the folder and the kustomization ------------------------------------------------------------------------------

def test_kustomization_lists_every_manifest_and_nothing_else() -> None:
    k = kustomization()
    assert k["kind"] == "Kustomization"
    assert k["namespace"] == NAMESPACE
    assert sorted(k["resources"]) == manifest_files()
    assert len(k["resources"]) == len(set(k["resources"]))
    assert {"namespace.yaml", "serviceaccount.yaml", "configmap.yaml", "daemonset.yaml", "service.yaml",
            "networkpolicy.yaml"} <= set(manifest_files())
    assert not list(RUNTIME.glob("*.yml")), "use .yaml: files named .yml are not checked"


def test_every_document_is_a_named_object_in_the_namespace() -> None:
    docs = documents()
    assert {d["kind"] for d in docs} == {"Namespace", "ServiceAccount", "ConfigMap", "DaemonSet", "Service",
                                         "NetworkPolicy"}
    for d in docs:
        assert d["apiVersion"] and d["metadata"]["name"]
        assert d["metadata"].get("namespace", NAMESPACE) == NAMESPACE
    assert the("Namespace")["metadata"]["name"] == NAMESPACE


def test_namespace_enforces_pod_security_restricted() -> None:
    labels = the("Namespace")["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    assert labels["pod-security.kubernetes.io/enforce-version"] == "latest"
    assert labels["pod-security.kubernetes.io/audit"] == "restricted"
    assert labels["pod-security.kubernetes.io/warn"] == "restricted"


# --- pod and container security ------------------------------------------------------------------------------------

def test_pod_runs_as_non_root_with_seccomp_and_no_host_namespaces() -> None:
    spec = pod()
    ctx = spec["securityContext"]
    assert ctx["runAsNonRoot"] is True
    assert ctx["runAsUser"] == ctx["runAsGroup"] == ctx["fsGroup"] == UID
    assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
    for host in ("hostNetwork", "hostPID", "hostIPC"):
        assert spec.get(host) in (None, False), f"{host} must be off"
    assert "priorityClassName" not in spec
    assert "tolerations" not in spec
    assert spec["terminationGracePeriodSeconds"] == 30


def test_runtime_container_is_locked_down() -> None:
    c = runtime_container()
    ctx = c["securityContext"]
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx.get("privileged") in (None, False)
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    assert effective(c, "runAsNonRoot") is True
    assert effective(c, "runAsUser") == UID and effective(c, "runAsGroup") == UID
    assert effective(c, "seccompProfile") == {"type": "RuntimeDefault"}
    assert c["image"] == IMAGE and c["imagePullPolicy"] == "IfNotPresent"


def test_no_init_container_and_every_container_meets_restricted() -> None:
    spec = pod()
    assert not spec.get("initContainers"), "no init container: nothing runs as root, not even briefly"
    assert not spec.get("ephemeralContainers")
    for c in [*spec.get("initContainers", []), *spec["containers"]]:
        ctx = c.get("securityContext", {})
        assert effective(c, "runAsNonRoot") is True, c["name"]
        assert effective(c, "runAsUser") == UID, c["name"]
        assert ctx["allowPrivilegeEscalation"] is False, c["name"]
        assert ctx.get("privileged") in (None, False), c["name"]
        assert ctx["capabilities"] == {"drop": ["ALL"]}, c["name"]
        assert ctx["readOnlyRootFilesystem"] is True, c["name"]
        assert effective(c, "seccompProfile") == {"type": "RuntimeDefault"}, c["name"]
        assert all("hostPort" not in p for p in c.get("ports", [])), f"{c['name']}: no hostPort"


def test_service_account_has_no_token() -> None:
    sa = the("ServiceAccount")
    assert sa["automountServiceAccountToken"] is False
    assert pod()["serviceAccountName"] == sa["metadata"]["name"]
    assert pod()["automountServiceAccountToken"] is False


# --- volumes -------------------------------------------------------------------------------------------------------

def test_writable_mounts_are_only_the_declared_ones() -> None:
    vols = volumes()
    containers = [*pod().get("initContainers", []), *pod()["containers"]]
    writable_seen = set()
    for c in containers:
        for m in c["volumeMounts"]:
            vol = vols[m["name"]]
            source = {k: v for k, v in vol.items() if k != "name"}
            if "configMap" in source or "secret" in source or "projected" in source:
                assert m.get("readOnly") is True, f"{c['name']}: {m['name']} must be mounted readOnly"
            if m.get("readOnly"):
                continue
            assert m["mountPath"] in WRITABLE, f"{c['name']}: undeclared writable mount {m['mountPath']}"
            assert source == WRITABLE[m["mountPath"]], f"{m['mountPath']} is backed by {source}"
            assert "subPath" not in m and "subPathExpr" not in m
            writable_seen.add(m["mountPath"])
    assert {m["mountPath"] for m in runtime_container()["volumeMounts"] if not m.get("readOnly")} == set(WRITABLE)
    assert writable_seen == set(WRITABLE)


def test_volume_kinds_and_no_host_path() -> None:
    vols = volumes()
    assert set(vols) == {"home", "cache", "node-key", "trust-policy", "policies"}
    for name, vol in vols.items():
        kinds = set(vol) - {"name"}
        assert len(kinds) == 1 and kinds <= {"emptyDir", "configMap"}, f"volume {name}: {kinds}"
        assert kinds <= RESTRICTED_VOLUMES, f"volume {name}: Pod Security `restricted` forbids {kinds}"
        assert "hostPath" not in vol, f"volume {name} is a hostPath"
    assert vols["cache"]["emptyDir"] == {"sizeLimit": "1Gi"}
    assert vols["node-key"]["emptyDir"]["medium"] == "Memory"
    assert "medium" not in vols["home"]["emptyDir"]
    assert "medium" not in vols["cache"]["emptyDir"]


def test_config_maps_are_mounted_read_only() -> None:
    vols = volumes()
    config = the("ConfigMap")
    assert config["metadata"]["name"] == "agentfactory-runtime-config"
    assert vols["trust-policy"]["configMap"]["name"] == "agentfactory-runtime-config"
    assert vols["trust-policy"]["configMap"]["items"] == [{"key": "trust.yaml", "path": "trust.yaml"}]
    assert vols["policies"]["configMap"]["name"] == "agentfactory-runtime-policies"
    for name in ("trust-policy", "policies"):
        assert vols[name]["configMap"]["defaultMode"] == 0o444
        assert vols[name]["configMap"].get("optional") in (None, False), "refuse to start without it"
        mounts = [m for m in runtime_container()["volumeMounts"] if m["name"] == name]
        assert mounts and all(m["readOnly"] is True for m in mounts)


# --- command line, environment, probes -----------------------------------------------------------------------------

def test_command_passes_only_runtime_options() -> None:
    opts = options()
    assert set(opts) <= OPTIONS, f"unknown options: {set(opts) - OPTIONS}"
    assert set(opts) >= REQUIRED_OPTIONS, f"missing options: {REQUIRED_OPTIONS - set(opts)}"
    for name, values in opts.items():
        assert name == "--allow-host-path" or len(values) == 1, f"{name} given {len(values)} times"
    assert "--allow-host-path" not in opts, "no host folder is preopened by default"
    assert int(opts["--workers"][0]) >= 1


def test_every_option_passed_is_accepted_by_the_real_cli() -> None:
    from sandbox_runtime.cli import runtime

    result = CliRunner().invoke(runtime, ["serve", "--help"])
    assert result.exit_code == 0, result.output
    accepted = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", result.output))
    for name in options():
        assert name in accepted, f"`agentfactory runtime serve` has no {name}"
    assert accepted >= OPTIONS, f"OPTIONS lists what the CLI lacks: {OPTIONS - accepted}"


def test_command_paths_match_the_mounts() -> None:
    opts = {k: v[0] for k, v in options().items()}
    c = runtime_container()
    host, _, port = opts["--listen"].rpartition(":")
    assert host == "0.0.0.0"
    assert int(port) == port_number("http") == 8080
    assert opts["--cache-dir"] == mount_of("cache")
    assert "emptyDir" in volumes()["cache"]
    assert Path(opts["--node-key"]).parent == Path(mount_of("node-key"))
    assert opts["--audit-log"] == "-", "the audit trail goes to stdout, which the node's log shipper collects"
    assert Path(opts["--policy"]) == Path(mount_of("trust-policy")) / "trust.yaml"
    assert opts["--policies"] == mount_of("policies")
    # store and stage come from the operator's ConfigMap, through the environment
    env = {e["name"]: e for e in c["env"]}
    config = the("ConfigMap")
    for option, var, key in (("--store", "AGENTFACTORY_STORE", "store"), ("--stage", "AGENTFACTORY_STAGE", "stage")):
        assert opts[option] == f"$({var})"
        ref = env[var]["valueFrom"]["configMapKeyRef"]
        assert ref == {"name": config["metadata"]["name"], "key": key}
        assert config["data"][key]
    assert config["data"]["stage"] in {"dev", "canary", "prod"}
    assert config["data"]["store"].startswith("oci://")
    # the namespace label of the metrics is the pod's own, from the downward API
    assert env["AGENTFACTORY_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}


def test_home_and_temporary_files_go_to_the_home_emptydir() -> None:
    env = {e["name"]: e.get("value") for e in runtime_container()["env"]}
    home = mount_of("home")
    assert env["AGENTFACTORY_HOME"] == env["HOME"] == env["TMPDIR"] == home == "/var/lib/agentfactory"


def test_probes_hit_healthz_and_readyz_on_the_container_port() -> None:
    c = runtime_container()
    expected = {"livenessProbe": "/healthz", "readinessProbe": "/readyz", "startupProbe": "/healthz"}
    for probe, path in expected.items():
        if probe == "startupProbe" and probe not in c:
            continue
        get = c[probe]["httpGet"]
        assert get["path"] == path
        assert port_number(get["port"]) == 8080
        assert get.get("scheme", "HTTP") == "HTTP"
    assert "livenessProbe" in c and "readinessProbe" in c


def test_resources_scrape_annotations_and_rollout() -> None:
    ds = the("DaemonSet")
    c = runtime_container()
    for section in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(c["resources"][section])
    annotations = ds["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert port_number(int(annotations["prometheus.io/port"])) == 8080
    assert annotations["prometheus.io/path"] == "/metrics"
    assert ds["spec"]["updateStrategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}}
    labels = ds["spec"]["template"]["metadata"]["labels"]
    assert ds["spec"]["selector"]["matchLabels"].items() <= labels.items()


# --- service and network policy -----------------------------------------------------------------------------------

def test_service_keeps_traffic_on_the_node() -> None:
    svc = the("Service")["spec"]
    assert svc.get("type", "ClusterIP") == "ClusterIP"
    assert svc["internalTrafficPolicy"] == "Local"
    assert svc["selector"].items() <= the("DaemonSet")["spec"]["template"]["metadata"]["labels"].items()
    assert [(p["port"], port_number(p["targetPort"])) for p in svc["ports"]] == [(8080, 8080)]


def test_network_policy_allows_only_the_port_dns_and_the_registry() -> None:
    np = the("NetworkPolicy")["spec"]
    labels = the("DaemonSet")["spec"]["template"]["metadata"]["labels"]
    assert np["podSelector"]["matchLabels"].items() <= labels.items()
    assert sorted(np["policyTypes"]) == ["Egress", "Ingress"]
    ingress = [(p.get("protocol", "TCP"), p["port"]) for rule in np["ingress"] for p in rule["ports"]]
    assert all(rule.get("ports") for rule in np["ingress"]), "an ingress rule without ports opens every port"
    assert ingress == [("TCP", 8080)]
    assert all(rule.get("ports") for rule in np["egress"]), "an egress rule without ports opens every port"
    egress = {(p.get("protocol", "TCP"), p["port"]) for rule in np["egress"] for p in rule["ports"]}
    assert egress == {("UDP", 53), ("TCP", 53), ("TCP", 5000)}


# --- configuration content -----------------------------------------------------------------------------------------

def test_placeholder_trust_policy_loads_and_trusts_no_key(tmp_path: Path) -> None:
    text = the("ConfigMap")["data"]["trust.yaml"]
    assert "PLACEHOLDER" in text and "agentfactory trust init" in text
    path = tmp_path / "trust.yaml"
    path.write_text(text)
    policy = load_trust_policy(path)
    assert policy.keys == {}, "the shipped placeholder must trust nothing"
    assert policy.repositories == ()


def policies_generator() -> dict[str, Any]:
    match = GENERATOR.search((RUNTIME / "kustomization.yaml").read_text())
    assert match, "kustomization.yaml lost its commented policies generator"
    lines = [re.sub(r"^# ?", "", line) for line in match.group(1).splitlines()]
    block: dict[str, Any] = yaml.safe_load("\n".join(lines))
    return block


def test_commented_policies_generator_matches_the_policies_folder() -> None:
    generators = policies_generator()["configMapGenerator"]
    assert [g["name"] for g in generators] == [volumes()["policies"]["configMap"]["name"]]
    files = generators[0]["files"]
    assert all(f.startswith("../../policies/") for f in files)
    wanted = sorted(p.name for p in (ROOT / "policies").glob("*.rego") if not p.name.endswith("_test.rego"))
    assert sorted(Path(f).name for f in files) == sorted([*wanted, "data.json"])
    assert all((RUNTIME / f).resolve().is_file() for f in files)
    assert "configMapGenerator" not in kustomization(), "the default build must not load files outside the folder"


# --- kustomize itself, when kubectl is installed -------------------------------------------------------------------

KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")


def kustomize(folder: Path, *flags: str) -> list[dict[str, Any]]:
    assert KUBECTL
    out = subprocess.run([KUBECTL, "kustomize", *flags, str(folder)], check=True, capture_output=True, text=True,
                         timeout=60).stdout
    return [d for d in yaml.safe_load_all(out) if d]


@needs_kubectl
def test_kustomize_build() -> None:
    built = kustomize(RUNTIME)
    assert sorted((d["kind"], d["metadata"]["name"]) for d in built) == sorted(
        (d["kind"], d["metadata"]["name"]) for d in documents())
    for d in built:
        if d["kind"] != "Namespace":
            assert d["metadata"]["namespace"] == NAMESPACE
        assert d["metadata"]["labels"]["app.kubernetes.io/part-of"] == "agentfactory"
    ds = next(d for d in built if d["kind"] == "DaemonSet")
    # labels are not added to selectors: the DaemonSet's selector stays as written (it is immutable)
    assert ds["spec"]["selector"] == the("DaemonSet")["spec"]["selector"]


@needs_kubectl
def test_kustomize_build_with_the_policies_generator(tmp_path: Path) -> None:
    shutil.copytree(ROOT / "policies", tmp_path / "policies")
    copy = tmp_path / "deploy" / "runtime"
    shutil.copytree(RUNTIME, copy)
    text = (copy / "kustomization.yaml").read_text()
    text = GENERATOR.sub(lambda m: re.sub(r"(?m)^# ?", "", m.group(1)), text)
    (copy / "kustomization.yaml").write_text(text)
    with pytest.raises(subprocess.CalledProcessError):
        kustomize(copy)  # the default load restrictor refuses ../../policies, hence the comment
    built = kustomize(copy, "--load-restrictor", "LoadRestrictionsNone")
    maps = {d["metadata"]["name"]: d for d in built if d["kind"] == "ConfigMap"}
    generated = [n for n in maps if n.startswith("agentfactory-runtime-policies-")]
    assert len(generated) == 1
    data = maps[generated[0]]["data"]
    assert data["data.json"] == (ROOT / "policies" / "data.json").read_text()
    assert set(data) == {Path(f).name for f in policies_generator()["configMapGenerator"][0]["files"]}
    ds = next(d for d in built if d["kind"] == "DaemonSet")
    vols = {v["name"]: v for v in ds["spec"]["template"]["spec"]["volumes"]}
    assert vols["policies"]["configMap"]["name"] == generated[0]
