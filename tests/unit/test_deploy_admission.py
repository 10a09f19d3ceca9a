"""The admission webhook's Kubernetes manifests (deploy/admission, the WasmAgent CRD in deploy/crds), and every
deploy/ manifest validated against the Kubernetes API schemas (kubernetes-validate), the runtime's included."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from helpers import EXAMPLES, ROOT
from manifest_helpers import kustomization, load, manifest_files, mount_in, only_container, volumes_of

DEPLOY = ROOT / "deploy"
ADMISSION = DEPLOY / "admission"
BASE = ADMISSION / "base"
NO_CERT_MANAGER = ADMISSION / "no-cert-manager"
EXAMPLES_DIR = ADMISSION / "examples"
CRDS = DEPLOY / "crds"
RUNTIME = DEPLOY / "runtime"

NAMESPACE = "agentfactory-system"
NAME = "agentfactory-admission"
IMAGE = "ghcr.io/agentfactory/agentfactory:0.1.0"
UID = 65532
PORT = 8443
EXEMPT = ["kube-system", "agentfactory-system"]
MODE_LABEL = "agentfactory.dev/admission"
PLACEHOLDER_DIGEST = "sha256:" + "0" * 64
CERT_MANAGER_GROUP = "cert-manager.io"
# The oldest Kubernetes the manifests target, and the newest kubernetes-validate ships schemas for (the package is
# pinned in pyproject.toml, so this moves only when the pin does).
KUBERNETES_VERSIONS = ("1.30", kubernetes_validate.latest_version())

ARGV = ["agentfactory", "admission", "serve", f"--listen=0.0.0.0:{PORT}", "--tls-cert=/etc/agentfactory/tls/tls.crt",
        "--tls-key=/etc/agentfactory/tls/tls.key", "--config=/etc/agentfactory/admission/config.yaml"]
CONFIG = {
    "store": "oci://registry.agentfactory.svc:5000/agents",
    "trustPolicy": "/etc/agentfactory/trust/trust.yaml",
    "policies": "/etc/agentfactory/policies",
    "defaultStage": "dev",
    "exemptNamespaces": EXEMPT,
    "runtimeClasses": ["wasmtime", "spin", "wasmedge", "wasm"],
    "deadlineMs": 2500,
    "cacheTtlSeconds": 60,
    "negativeCacheTtlSeconds": 10,
    "cacheMaxEntries": 10000,
    "maxRequestBytes": 3145728,
    "maxReferences": 256,
    "auditLog": "-",
}
RULES = [
    {"apiGroups": ["agentfactory.dev"], "apiVersions": ["v1alpha1"], "resources": ["wasmagents"]},
    {"apiGroups": [""], "apiVersions": ["v1"],
     "resources": ["pods", "pods/ephemeralcontainers", "replicationcontrollers", "podtemplates"]},
    {"apiGroups": ["apps"], "apiVersions": ["v1"],
     "resources": ["deployments", "replicasets", "statefulsets", "daemonsets"]},
    {"apiGroups": ["batch"], "apiVersions": ["v1"], "resources": ["jobs", "cronjobs"]},
]
WEBHOOKS = {"enforce.admission.agentfactory.dev": "/validate", "warn.admission.agentfactory.dev": "/validate/warn"}
# The only writable mount, and what backs it. Everything else is a read-only ConfigMap or Secret.
HOME = "/var/lib/agentfactory"


# --- loading -------------------------------------------------------------------------------------------------------

def documents() -> list[dict[str, Any]]:
    """What `kubectl apply -k deploy/admission` applies, as written (before kustomize)."""
    docs = []
    for name in manifest_files(BASE):
        docs += load(BASE / name)
    for name in manifest_files(ADMISSION):
        docs += load(ADMISSION / name)
    return docs


def the(kind: str, name: str = NAME) -> dict[str, Any]:
    found = [d for d in documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    doc: dict[str, Any] = found[0]
    return doc


def pod() -> dict[str, Any]:
    spec: dict[str, Any] = the("Deployment")["spec"]["template"]["spec"]
    return spec


def pod_labels() -> dict[str, str]:
    labels: dict[str, str] = the("Deployment")["spec"]["template"]["metadata"]["labels"]
    return labels


def container() -> dict[str, Any]:
    return only_container(pod(), "admission")


def volumes() -> dict[str, dict[str, Any]]:
    return volumes_of(pod())


def mount_of(volume: str) -> str:
    return mount_in(pod(), "admission", volume)


def effective(c: dict[str, Any], field: str) -> Any:
    """A security setting as the kubelet applies it: the container's, else the pod's."""
    ctx = c.get("securityContext", {})
    return ctx[field] if field in ctx else pod().get("securityContext", {}).get(field)


def option(name: str) -> str:
    values = [a.partition("=")[2] for a in container()["command"] if a.partition("=")[0] == name]
    assert len(values) == 1, f"{name} given {len(values)} times"
    return values[0]


def config() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(the("ConfigMap", "agentfactory-admission-config")["data"]["config.yaml"])
    return data


def webhooks() -> dict[str, dict[str, Any]]:
    return {w["name"]: w for w in the("ValidatingWebhookConfiguration")["webhooks"]}


def selected(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Does a label selector (matchLabels and In / NotIn / Exists / DoesNotExist) select these labels?"""
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for e in selector.get("matchExpressions", []):
        key, op, values = e["key"], e["operator"], e.get("values", [])
        ok = {"In": key in labels and labels[key] in values,
              "NotIn": key not in labels or labels[key] not in values,
              "Exists": key in labels, "DoesNotExist": key not in labels}[op]
        if not ok:
            return False
    return True


def crd() -> dict[str, Any]:
    docs = load(CRDS / "wasmagents.yaml")
    assert [d["kind"] for d in docs] == ["CustomResourceDefinition"]
    return docs[0]


def crd_version() -> dict[str, Any]:
    versions = crd()["spec"]["versions"]
    assert [v["name"] for v in versions] == ["v1alpha1"]
    v: dict[str, Any] = versions[0]
    return v


def crd_schema() -> dict[str, Any]:
    schema: dict[str, Any] = crd_version()["schema"]["openAPIV3Schema"]
    return schema


def strict(schema: dict[str, Any]) -> dict[str, Any]:
    """The CRD schema with unknown fields refused, as the API server's strict field validation does (its
    structural schema would prune them): a misspelt field in an example must fail, not vanish."""
    out = copy.deepcopy(schema)

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "object" and "properties" in node:
                node.setdefault("additionalProperties", False)
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(out)
    return out


def example_validator() -> jsonschema.protocols.Validator:
    schema = strict(crd_schema())
    cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
    cls.check_schema(schema)
    validator: jsonschema.protocols.Validator = cls(schema)
    return validator


def k8s_validate(obj: dict[str, Any]) -> None:
    """Validate one object against the Kubernetes API schemas of every version in KUBERNETES_VERSIONS, strictly
    (an unknown field fails). Raises on any error, including a kind kubernetes-validate has no schema for."""
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path)
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} against Kubernetes {version}: {path}: {e.message}")
        except kubernetes_validate.SchemaNotFoundError as e:
            pytest.fail(e.message)


def is_cert_manager(obj: dict[str, Any]) -> bool:
    return str(obj["apiVersion"]).split("/")[0] == CERT_MANAGER_GROUP


# --- folders and kustomizations -----------------------------------------------------------------------------------

def test_every_yaml_parses() -> None:
    files = [*ADMISSION.rglob("*.yaml"), *CRDS.glob("*.yaml")]
    assert len(files) >= 15
    for path in files:
        docs = load(path)
        assert docs, f"{path}: empty"
        for d in docs:
            assert isinstance(d, dict) and d.get("apiVersion") and d.get("kind"), f"{path}: not an object"
            if d["kind"] not in ("Kustomization",):
                assert d["metadata"]["name"], f"{path}: unnamed {d['kind']}"
    assert not [*ADMISSION.rglob("*.yml"), *CRDS.glob("*.yml")], "use .yaml: files named .yml are not checked"


def test_kustomizations_list_every_file_and_nothing_else() -> None:
    base = kustomization(BASE)
    assert base["namespace"] == NAMESPACE
    assert sorted(base["resources"]) == manifest_files(BASE)
    assert len(base["resources"]) == len(set(base["resources"]))
    assert set(manifest_files(BASE)) == {"serviceaccount.yaml", "configmap.yaml", "deployment.yaml",
                                         "poddisruptionbudget.yaml", "service.yaml", "networkpolicy.yaml",
                                         "validatingwebhookconfiguration.yaml"}
    top = kustomization(ADMISSION)
    assert top["namespace"] == NAMESPACE
    assert sorted(top["resources"]) == sorted(["base", *manifest_files(ADMISSION)])
    assert manifest_files(ADMISSION) == ["certificate.yaml"]
    assert kustomization(NO_CERT_MANAGER)["resources"] == ["../base"]
    assert manifest_files(NO_CERT_MANAGER) == []
    # the examples need the CRD first and have placeholder digests: in no kustomization
    assert sorted(p.name for p in ADMISSION.iterdir() if p.is_dir()) == ["base", "examples", "no-cert-manager"]
    assert not (EXAMPLES_DIR / "kustomization.yaml").exists()
    crds = kustomization(CRDS)
    assert sorted(crds["resources"]) == manifest_files(CRDS) == ["wasmagents.yaml"]
    for k in (base, top, kustomization(NO_CERT_MANAGER), crds):
        assert k["kind"] == "Kustomization"
        assert "configMapGenerator" not in k, "the policies ConfigMap is the runtime's, not generated here"


def test_namespace_is_the_runtimes_and_not_redefined() -> None:
    assert [d["metadata"]["name"] for d in load(RUNTIME / "namespace.yaml") if d["kind"] == "Namespace"] == [NAMESPACE]
    docs = documents()
    assert "Namespace" not in {d["kind"] for d in docs}
    assert "Namespace" not in {d["kind"] for d in load(CRDS / "wasmagents.yaml")}
    assert {d["kind"] for d in docs} == {"ServiceAccount", "ConfigMap", "Deployment", "PodDisruptionBudget",
                                         "Service", "NetworkPolicy", "ValidatingWebhookConfiguration", "Issuer",
                                         "Certificate"}
    for d in docs:
        assert d["metadata"].get("namespace", NAMESPACE) == NAMESPACE
    for hook in webhooks().values():
        assert hook["clientConfig"]["service"]["namespace"] == NAMESPACE
    # no Role, RoleBinding or ClusterRole: the webhook reads nothing from the API server
    assert not {d["kind"] for d in docs} & {"Role", "RoleBinding", "ClusterRole", "ClusterRoleBinding"}


# --- pod and container security ------------------------------------------------------------------------------------

def test_pod_runs_as_non_root_with_seccomp_and_no_api_token() -> None:
    spec = pod()
    ctx = spec["securityContext"]
    assert ctx["runAsNonRoot"] is True
    assert ctx["runAsUser"] == ctx["runAsGroup"] == ctx["fsGroup"] == UID
    assert ctx["seccompProfile"] == {"type": "RuntimeDefault"}
    for host in ("hostNetwork", "hostPID", "hostIPC"):
        assert spec.get(host) in (None, False), f"{host} must be off"
    assert spec["automountServiceAccountToken"] is False
    assert spec["enableServiceLinks"] is False
    sa = the("ServiceAccount")
    assert sa["automountServiceAccountToken"] is False
    assert spec["serviceAccountName"] == sa["metadata"]["name"]
    assert not spec.get("initContainers") and not spec.get("ephemeralContainers")


def test_container_is_locked_down() -> None:
    c = container()
    ctx = c["securityContext"]
    assert ctx["readOnlyRootFilesystem"] is True
    assert ctx["allowPrivilegeEscalation"] is False
    assert ctx.get("privileged") in (None, False)
    assert ctx["capabilities"] == {"drop": ["ALL"]}
    assert effective(c, "runAsNonRoot") is True
    assert effective(c, "runAsUser") == UID and effective(c, "runAsGroup") == UID
    assert effective(c, "seccompProfile") == {"type": "RuntimeDefault"}
    assert c["image"] == IMAGE and c["imagePullPolicy"] == "IfNotPresent"
    assert all("hostPort" not in p for p in c["ports"])
    for section in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(c["resources"][section])


def test_only_the_home_emptydir_is_writable() -> None:
    vols = volumes()
    assert set(vols) == {"home", "tls", "config", "trust-policy", "policies"}
    for m in container()["volumeMounts"]:
        source = {k: v for k, v in vols[m["name"]].items() if k != "name"}
        assert "hostPath" not in source
        if m["name"] == "home":
            assert m["mountPath"] == HOME and not m.get("readOnly")
            assert set(source) == {"emptyDir"} and "medium" not in source["emptyDir"]
        else:
            assert m.get("readOnly") is True, f"{m['name']} must be mounted readOnly"
            assert set(source) <= {"configMap", "secret"}, f"{m['name']}: {source}"
            assert source[next(iter(source))].get("optional") in (None, False), "refuse to start without it"
        assert "subPath" not in m
    env = {e["name"]: e.get("value") for e in container()["env"]}
    assert env["AGENTFACTORY_HOME"] == env["HOME"] == env["TMPDIR"] == mount_of("home") == HOME


# --- command line, configuration, shared ConfigMaps ---------------------------------------------------------------

def test_command_line() -> None:
    c = container()
    assert c["command"] == ARGV
    assert "args" not in c
    assert [(p["name"], p["containerPort"], p.get("protocol", "TCP")) for p in c["ports"]] == [("https", PORT, "TCP")]
    assert Path(option("--tls-cert")).parent == Path(option("--tls-key")).parent == Path(mount_of("tls"))
    assert Path(option("--config")) == Path(mount_of("config")) / "config.yaml"
    assert volumes()["config"]["configMap"]["items"] == [{"key": "config.yaml", "path": "config.yaml"}]


def test_config_yaml_has_every_key_with_its_value() -> None:
    assert config() == CONFIG
    assert Path(config()["trustPolicy"]) == Path(mount_of("trust-policy")) / "trust.yaml"
    assert config()["policies"] == mount_of("policies")
    assert config()["deadlineMs"] < min(w["timeoutSeconds"] for w in webhooks().values()) * 1000


def test_tls_secret_is_the_certificates_and_private() -> None:
    tls = volumes()["tls"]["secret"]
    assert tls["secretName"] == the("Certificate")["spec"]["secretName"] == "agentfactory-admission-tls"
    assert tls["items"] == [{"key": "tls.crt", "path": "tls.crt"}, {"key": "tls.key", "path": "tls.key"}]
    assert tls["defaultMode"] & 0o007 == 0, "the key is not world-readable"
    assert tls["defaultMode"] & 0o222 == 0


def test_trust_policy_and_policies_are_the_runtimes() -> None:
    runtime_config = next(d for d in load(RUNTIME / "configmap.yaml") if d["kind"] == "ConfigMap")
    runtime_volumes = {v["name"]: v for v in next(d for d in load(RUNTIME / "daemonset.yaml"))["spec"]["template"]
                       ["spec"]["volumes"]}
    trust = volumes()["trust-policy"]["configMap"]
    assert trust["name"] == runtime_config["metadata"]["name"] == "agentfactory-runtime-config"
    assert trust["items"] == [{"key": "trust.yaml", "path": "trust.yaml"}]
    assert "trust.yaml" in runtime_config["data"]
    assert trust == runtime_volumes["trust-policy"]["configMap"]
    policies = volumes()["policies"]["configMap"]
    assert policies["name"] == runtime_volumes["policies"]["configMap"]["name"] == "agentfactory-runtime-policies"
    for name in ("config", "trust-policy", "policies"):
        assert volumes()[name]["configMap"]["defaultMode"] == 0o444


# --- availability --------------------------------------------------------------------------------------------------

def test_three_replicas_spread_over_nodes() -> None:
    spec = the("Deployment")["spec"]
    assert spec["replicas"] == 3
    assert spec["selector"]["matchLabels"].items() <= pod_labels().items()
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 1}}
    anti = pod()["affinity"]["podAntiAffinity"]
    assert "requiredDuringSchedulingIgnoredDuringExecution" not in anti, "preferred: a small cluster still runs 3"
    terms = anti["preferredDuringSchedulingIgnoredDuringExecution"]
    assert any(t["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
               and selected(t["podAffinityTerm"]["labelSelector"], pod_labels()) for t in terms)
    for constraint in pod().get("topologySpreadConstraints", []):
        assert constraint["whenUnsatisfiable"] == "ScheduleAnyway"
        assert selected(constraint["labelSelector"], pod_labels())


def test_pod_disruption_budget_keeps_two() -> None:
    pdb = the("PodDisruptionBudget")["spec"]
    assert pdb["minAvailable"] == 2
    assert "maxUnavailable" not in pdb
    assert selected(pdb["selector"], pod_labels())
    assert pdb["minAvailable"] < the("Deployment")["spec"]["replicas"], "a drain must be able to evict one"


def test_probes_are_https_on_the_webhook_port() -> None:
    c = container()
    for probe, path in {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}.items():
        get = c[probe]["httpGet"]
        assert get["scheme"] == "HTTPS", probe
        assert get["path"] == path, probe
        assert get["port"] in (PORT, "https"), probe


def test_prometheus_scrapes_over_https() -> None:
    annotations = the("Deployment")["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {"prometheus.io/scrape": "true", "prometheus.io/scheme": "https",
                           "prometheus.io/port": str(PORT), "prometheus.io/path": "/metrics"}


# --- service and network policy ------------------------------------------------------------------------------------

def test_service_443_to_8443() -> None:
    svc = the("Service")["spec"]
    assert svc.get("type", "ClusterIP") == "ClusterIP"
    assert selected({"matchLabels": svc["selector"]}, pod_labels())
    [port] = svc["ports"]
    assert port["port"] == 443
    assert port["targetPort"] in (PORT, "https") and container()["ports"][0]["containerPort"] == PORT


def test_network_policy_allows_only_the_port_dns_and_the_registry() -> None:
    np = the("NetworkPolicy")["spec"]
    assert selected(np["podSelector"], pod_labels())
    assert sorted(np["policyTypes"]) == ["Egress", "Ingress"]
    assert all(rule.get("ports") for rule in np["ingress"] + np["egress"]), "a rule without ports opens every port"
    assert [(p.get("protocol", "TCP"), p["port"]) for rule in np["ingress"] for p in rule["ports"]] == [("TCP", PORT)]
    assert all("from" not in rule for rule in np["ingress"]), "the API servers' addresses are not known in advance"
    egress = {(p.get("protocol", "TCP"), p["port"]) for rule in np["egress"] for p in rule["ports"]}
    assert egress == {("UDP", 53), ("TCP", 53), ("TCP", 5000)}


# --- the webhook configuration -------------------------------------------------------------------------------------

def test_webhooks_fail_closed_and_call_the_service() -> None:
    vwc = the("ValidatingWebhookConfiguration")
    assert vwc["apiVersion"] == "admissionregistration.k8s.io/v1"
    assert [w["name"] for w in vwc["webhooks"]] == list(WEBHOOKS)
    for name, hook in webhooks().items():
        assert hook["clientConfig"]["service"] == {"name": the("Service")["metadata"]["name"],
                                                   "namespace": NAMESPACE, "path": WEBHOOKS[name], "port": 443}
        assert "url" not in hook["clientConfig"]
        assert "caBundle" not in hook["clientConfig"], "injected by cert-manager, or patched in by hand"
        assert hook["failurePolicy"] == "Fail"
        assert hook["sideEffects"] == "None"
        assert hook["timeoutSeconds"] == 5
        assert hook["admissionReviewVersions"] == ["v1"]
        assert hook["matchPolicy"] == "Equivalent"
        assert "objectSelector" not in hook


def test_webhook_rules() -> None:
    for name, hook in webhooks().items():
        assert len(hook["rules"]) == len(RULES), name
        for rule, expected in zip(hook["rules"], RULES, strict=True):
            assert rule == {**expected, "operations": ["CREATE", "UPDATE"], "scope": "Namespaced"}, name


def test_namespace_selectors() -> None:
    hooks = webhooks()
    enforce = hooks["enforce.admission.agentfactory.dev"]["namespaceSelector"]
    warn = hooks["warn.admission.agentfactory.dev"]["namespaceSelector"]
    exempt_expression = {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": EXEMPT}
    assert enforce == {"matchExpressions": [{"key": MODE_LABEL, "operator": "NotIn", "values": ["warn", "exempt"]},
                                            exempt_expression]}
    assert warn == {"matchExpressions": [{"key": MODE_LABEL, "operator": "In", "values": ["warn"]},
                                         exempt_expression]}
    assert config()["exemptNamespaces"] == EXEMPT

    def judged_by(name: str, mode: str | None) -> list[str]:
        labels = {"kubernetes.io/metadata.name": name, **({MODE_LABEL: mode} if mode is not None else {})}
        return [hook for hook, sel in (("enforce", enforce), ("warn", warn)) if selected(sel, labels)]

    assert judged_by("team-a", None) == ["enforce"]
    assert judged_by("team-a", "enforce") == ["enforce"]
    assert judged_by("team-a", "warn") == ["warn"]
    assert judged_by("team-a", "exempt") == []
    for name in EXEMPT:
        for mode in (None, "warn", "enforce"):
            assert judged_by(name, mode) == [], f"{name} must never wait on the webhook"


def test_cert_manager_issues_the_serving_certificate() -> None:
    vwc = the("ValidatingWebhookConfiguration")
    leaf = the("Certificate")
    assert vwc["metadata"]["annotations"] == {"cert-manager.io/inject-ca-from": f"{NAMESPACE}/{NAME}"}
    service = the("Service")["metadata"]["name"]
    assert leaf["spec"]["dnsNames"] == [f"{service}.{NAMESPACE}.svc", f"{service}.{NAMESPACE}.svc.cluster.local"]
    assert "server auth" in leaf["spec"]["usages"]
    assert leaf["spec"].get("isCA") in (None, False)
    # self-signed Issuer -> CA Certificate -> CA Issuer -> serving Certificate
    ca_issuer = the("Issuer", leaf["spec"]["issuerRef"]["name"])
    assert leaf["spec"]["issuerRef"]["kind"] == "Issuer"
    ca = next(d for d in documents() if d["kind"] == "Certificate"
              and d["spec"]["secretName"] == ca_issuer["spec"]["ca"]["secretName"])
    assert ca["spec"]["isCA"] is True
    root = the("Issuer", ca["spec"]["issuerRef"]["name"])
    assert root["spec"] == {"selfSigned": {}}
    assert {d["apiVersion"] for d in documents() if d["kind"] in ("Issuer", "Certificate")} == {"cert-manager.io/v1"}
    assert len([d for d in documents() if is_cert_manager(d)]) == 4


# --- the WasmAgent CRD ---------------------------------------------------------------------------------------------

def test_crd_names_scope_and_version() -> None:
    spec = crd()["spec"]
    assert crd()["metadata"]["name"] == "wasmagents.agentfactory.dev"
    assert spec["group"] == "agentfactory.dev"
    assert spec["scope"] == "Namespaced"
    names = spec["names"]
    assert (names["kind"], names["plural"], names["singular"], names["shortNames"]) == (
        "WasmAgent", "wasmagents", "wasmagent", ["wa"])
    v = crd_version()
    assert v["served"] is True and v["storage"] is True
    assert v["subresources"] == {"status": {}}
    assert [(c["name"], c["jsonPath"]) for c in v["additionalPrinterColumns"]] == [
        ("Agent", ".spec.agent"), ("Stage", ".spec.stage"), ("Age", ".metadata.creationTimestamp")]


def test_crd_schema_fields() -> None:
    schema = crd_schema()
    spec = schema["properties"]["spec"]
    assert spec["required"] == ["agent"]
    p = spec["properties"]
    assert p["agent"]["type"] == "string" and p["agent"]["maxLength"] == 512
    assert p["stage"] == {**p["stage"], "type": "string", "pattern": "^[a-z][a-z0-9-]{0,31}$"}
    assert (p["replicas"]["type"], p["replicas"]["minimum"], p["replicas"]["maximum"], p["replicas"]["default"]) == (
        "integer", 0, 1000, 1)
    assert p["args"]["type"] == "array" and p["args"]["maxItems"] == 256 and p["args"]["items"]["type"] == "string"
    env = p["env"]["items"]
    assert p["env"]["type"] == "array" and env["type"] == "object"
    assert set(env["properties"]) == {"name", "value"} and env["required"] == ["name"]
    limits = p["resources"]["properties"]["limits"]["properties"]
    assert (limits["memoryMiB"]["type"], limits["memoryMiB"]["minimum"], limits["memoryMiB"]["maximum"]) == (
        "integer", 1, 4096)
    assert (limits["timeoutMs"]["type"], limits["timeoutMs"]["minimum"], limits["timeoutMs"]["maximum"]) == (
        "integer", 1, 600000)
    status = schema["properties"]["status"]["properties"]
    assert status["observedDigest"]["type"] == "string"
    condition = status["conditions"]["items"]
    assert set(condition["required"]) == {"type", "status", "lastTransitionTime", "reason", "message"}
    assert condition["properties"]["status"]["enum"] == ["True", "False", "Unknown"]
    assert status["conditions"]["x-kubernetes-list-map-keys"] == ["type"]


ZEROS = "0" * 64
DIGEST = "sha256:" + "0123456789abcdef" * 4
ACCEPTED = [
    f"wordstats@{DIGEST}",
    f"registry.agentfactory.svc:5000/agents/wordstats@{DIGEST}",
    f"ghcr.io/example/agents/word-stats_2@{DIGEST}",
    f"oci://registry.agentfactory.svc:5000/agents/wordstats@{DIGEST}",
    f"wordstats:1.0.0@{DIGEST}",
    # tags pass the schema: the webhook refuses them with "pin the digest"
    "wordstats:1.0.0",
    "wordstats",
    "oci://registry.example.com/agents/wordstats:1.0.0-rc.1+build.5",
]
REFUSED = [
    "",
    "Wordstats@" + DIGEST,                # repository names are lower case
    "wordstats@sha256:" + ZEROS[:63],     # 63 hex
    "wordstats@sha256:" + "A" * 64,       # upper-case hex
    "wordstats@sha512:" + ZEROS,
    "wordstats@" + ZEROS,
    "word stats@" + DIGEST,
    "https://registry.example.com/agents/wordstats@" + DIGEST,
    "oci://",
    "registry.example.com/agents/",
    "wordstats:@" + DIGEST,
    "wordstats@" + DIGEST + "x",
    "a" * 500 + "@" + DIGEST,             # over 512 characters
]


@pytest.mark.parametrize("ref", ACCEPTED)
def test_crd_agent_pattern_accepts(ref: str) -> None:
    agent = crd_schema()["properties"]["spec"]["properties"]["agent"]
    assert re.search(agent["pattern"], ref), ref
    assert len(ref) <= agent["maxLength"]
    example_validator().validate({"apiVersion": "agentfactory.dev/v1alpha1", "kind": "WasmAgent",
                                  "metadata": {"name": "x"}, "spec": {"agent": ref}})


@pytest.mark.parametrize("ref", REFUSED)
def test_crd_agent_pattern_refuses(ref: str) -> None:
    obj = {"apiVersion": "agentfactory.dev/v1alpha1", "kind": "WasmAgent", "metadata": {"name": "x"},
           "spec": {"agent": ref}}
    with pytest.raises(jsonschema.ValidationError):
        example_validator().validate(obj)


def test_crd_patterns_are_re2_compatible() -> None:
    """The API server compiles patterns with Go's RE2: no lookaround, backreferences or possessive quantifiers."""
    patterns = re.findall(r"pattern: '([^']*)'", (CRDS / "wasmagents.yaml").read_text())
    assert len(patterns) >= 6
    for p in patterns:
        re.compile(p)
        assert p.startswith("^") and p.endswith("$"), p
        assert not re.search(r"\(\?[=!<]|\\[1-9]|[*+?}]\+", p), p


# --- the examples --------------------------------------------------------------------------------------------------

def examples() -> dict[str, dict[str, Any]]:
    found = {}
    for path in sorted(EXAMPLES_DIR.glob("*.yaml")):
        [doc] = load(path)
        found[path.stem] = doc
    return found


def test_one_example_per_example_agent_with_a_placeholder_digest() -> None:
    found = examples()
    assert sorted(found) == sorted(EXAMPLES) == ["base64", "jsonfmt", "sha256sum", "wordstats"]
    for name, doc in found.items():
        assert (doc["apiVersion"], doc["kind"], doc["metadata"]["name"]) == ("agentfactory.dev/v1alpha1", "WasmAgent",
                                                                             name)
        assert "namespace" not in doc["metadata"]
        assert doc["spec"]["agent"] == f"{name}@{PLACEHOLDER_DIGEST}"
        text = (EXAMPLES_DIR / f"{name}.yaml").read_text()
        assert "PLACEHOLDER DIGEST" in text and "make demo" in text
        template = yaml.safe_load((ROOT / "templates" / name / "agent.yaml").read_text())["spec"]["limits"]
        limits = doc["spec"]["resources"]["limits"]
        assert limits["memoryMiB"] <= template["memoryMiB"] and limits["timeoutMs"] <= template["timeoutMs"]
        assert not doc["spec"].get("env"), "the example templates allow no environment variable"


def test_examples_validate_against_the_crd_schema() -> None:
    validator = example_validator()
    for name, doc in examples().items():
        errors = [e.message for e in validator.iter_errors(doc)]
        assert not errors, f"{name}: {errors}"


@pytest.mark.parametrize(("change", "value"), [
    (("spec", "agentt"), "x"),                              # unknown field
    (("spec", "stage"), "Prod"),
    (("spec", "stage"), "a" * 33),
    (("spec", "replicas"), 1001),
    (("spec", "replicas"), -1),
    (("spec", "args"), ["x"] * 257),
    (("spec", "env"), [{"name": "lang", "value": "C"}]),
    (("spec", "env"), [{"value": "C"}]),
    (("spec", "resources"), {"limits": {"memoryMiB": 0}}),
    (("spec", "resources"), {"limits": {"memoryMiB": 4097}}),
    (("spec", "resources"), {"limits": {"timeoutMs": 600001}}),
    (("spec", "resources"), {"limits": {"cpu": "1"}}),
    (("spec",), {"stage": "dev"}),                          # no agent
    (("status",), {"observedDigest": "sha256:abc"}),
    (("status",), {"conditions": [{"type": "Ready", "status": "Yes", "reason": "R", "message": "",
                                   "lastTransitionTime": "2026-01-02T03:04:05Z"}]}),
])
def test_crd_schema_refuses(change: tuple[str, ...], value: Any) -> None:
    doc = copy.deepcopy(examples()["wordstats"])
    node = doc
    for key in change[:-1]:
        node = node[key]
    node[change[-1]] = value
    with pytest.raises(jsonschema.ValidationError):
        example_validator().validate(doc)


# --- Kubernetes API schemas (kubernetes-validate), without kubectl ---------------------------------------------------

def test_the_kubernetes_validator_refuses_mistakes() -> None:
    """The validation below can fail: a wrong type and an unknown field are caught."""
    wrong_type = copy.deepcopy(the("Deployment"))
    wrong_type["spec"]["replicas"] = "3"
    unknown = copy.deepcopy(the("ValidatingWebhookConfiguration"))
    unknown["webhooks"][0]["timeoutSecond"] = 5
    for obj in (wrong_type, unknown):
        for version in KUBERNETES_VERSIONS:
            with pytest.raises(kubernetes_validate.ValidationError):
                kubernetes_validate.validate(obj, version, strict=True)
    with pytest.raises(kubernetes_validate.SchemaNotFoundError):  # hence cert-manager's kinds are skipped
        kubernetes_validate.validate(the("Certificate"), KUBERNETES_VERSIONS[0], strict=True)


@pytest.mark.parametrize("folder", [BASE, CRDS, RUNTIME], ids=lambda p: str(p.relative_to(ROOT)))
def test_manifests_as_written_validate(folder: Path) -> None:
    docs = [d for name in manifest_files(folder) for d in load(folder / name)]
    assert docs
    for d in docs:
        k8s_validate(d)


# --- kustomize itself, when kubectl is installed -------------------------------------------------------------------

KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")


def kustomize(folder: Path) -> list[dict[str, Any]]:
    assert KUBECTL
    out = subprocess.run([KUBECTL, "kustomize", str(folder)], check=True, capture_output=True, text=True,
                         timeout=60).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def key(d: dict[str, Any]) -> tuple[str, str]:
    return d["kind"], d["metadata"]["name"]


@needs_kubectl
def test_kustomize_build_and_validate_admission() -> None:
    built = kustomize(ADMISSION)
    assert sorted(map(key, built)) == sorted(map(key, documents()))
    skipped = []
    for d in built:
        assert d["metadata"]["labels"]["app.kubernetes.io/part-of"] == "agentfactory"
        if d["kind"] != "ValidatingWebhookConfiguration":
            assert d["metadata"]["namespace"] == NAMESPACE
        # cert-manager's Issuer and Certificate are CRDs of cert-manager, not Kubernetes API kinds:
        # kubernetes-validate has no schema for them. Their fields are checked by
        # test_cert_manager_issues_the_serving_certificate instead.
        if is_cert_manager(d):
            skipped.append(key(d))
            continue
        k8s_validate(d)
    assert sorted(skipped) == [("Certificate", NAME), ("Certificate", "agentfactory-admission-ca"),
                               ("Issuer", "agentfactory-admission-ca"), ("Issuer", "agentfactory-admission-selfsigned")]
    vwc = next(d for d in built if d["kind"] == "ValidatingWebhookConfiguration")
    assert "namespace" not in vwc["metadata"]
    assert vwc["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == f"{NAMESPACE}/{NAME}"
    deployment = next(d for d in built if d["kind"] == "Deployment")
    assert deployment["spec"]["selector"] == the("Deployment")["spec"]["selector"], "labels must not reach selectors"


@needs_kubectl
def test_kustomize_build_and_validate_without_cert_manager() -> None:
    with_cm = {key(d): d for d in kustomize(ADMISSION)}
    built = kustomize(NO_CERT_MANAGER)
    assert not [d for d in built if is_cert_manager(d)]
    assert sorted(map(key, built)) == sorted(k for k, d in with_cm.items() if not is_cert_manager(d))
    for d in built:
        k8s_validate(d)
        expected = copy.deepcopy(with_cm[key(d)])
        if d["kind"] == "ValidatingWebhookConfiguration":
            assert "annotations" not in d["metadata"] or "cert-manager.io/inject-ca-from" not in d["metadata"][
                "annotations"]
            expected["metadata"].pop("annotations")
            d = {**d, "metadata": {k: v for k, v in d["metadata"].items() if k != "annotations"}}
        assert d == expected, f"{key(d)} differs from deploy/admission's"


@needs_kubectl
def test_kustomize_build_and_validate_crds() -> None:
    built = kustomize(CRDS)
    assert list(map(key, built)) == [("CustomResourceDefinition", "wasmagents.agentfactory.dev")]
    assert "namespace" not in built[0]["metadata"]
    for d in built:
        k8s_validate(d)


@needs_kubectl
def test_kustomize_build_and_validate_runtime() -> None:
    built = kustomize(RUNTIME)
    assert {d["kind"] for d in built} >= {"Namespace", "DaemonSet", "Service", "NetworkPolicy", "ConfigMap"}
    for d in built:
        k8s_validate(d)


# --- against the webhook's own code --------------------------------------------------------------------------------

def test_config_yaml_loads_with_the_webhooks_loader(tmp_path: Path) -> None:
    from admission.config import AdmissionConfig, load_config

    path = tmp_path / "config.yaml"
    path.write_text(the("ConfigMap", "agentfactory-admission-config")["data"]["config.yaml"])
    loaded = load_config(path)  # refuses unknown keys and wrong types
    assert loaded.store == CONFIG["store"]
    assert loaded.trust_policy == Path(CONFIG["trustPolicy"]) and loaded.policies == Path(CONFIG["policies"])
    assert loaded.audit_log == Path("-")
    assert loaded.exempt_namespaces == tuple(EXEMPT)
    # the tuning values shipped are the built-in defaults (README.md says so)
    defaults = AdmissionConfig()
    for name in ("default_stage", "exempt_namespaces", "runtime_classes", "deadline_ms", "cache_ttl",
                 "negative_cache_ttl", "cache_max_entries", "max_request_bytes", "max_references"):
        assert getattr(loaded, name) == getattr(defaults, name), name


def test_every_option_passed_is_accepted_by_the_real_cli() -> None:
    from click.testing import CliRunner

    from admission.cli import admission

    result = CliRunner().invoke(admission, ["serve", "--help"])
    assert result.exit_code == 0, result.output
    accepted = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", result.output))
    passed = {a.partition("=")[0] for a in ARGV[3:]}
    assert passed <= accepted, f"`agentfactory admission serve` has no {passed - accepted}"


def test_readme_creates_the_policies_configmap_with_every_policy() -> None:
    """The webhook evaluates admission.rego from the shared policies ConfigMap: the command must not forget it."""
    readme = (ADMISSION / "README.md").read_text()
    command = re.search(r"create configmap agentfactory-runtime-policies(.*?)\| kubectl apply -f -", readme, re.S)
    assert command, "README.md lost its `kubectl create configmap agentfactory-runtime-policies` command"
    files = re.findall(r"--from-file=policies/([\w.-]+)", command.group(1))
    wanted = sorted(p.name for p in (ROOT / "policies").glob("*.rego") if not p.name.endswith("_test.rego"))
    assert "admission.rego" in wanted
    assert sorted(files) == sorted([*wanted, "data.json"])
