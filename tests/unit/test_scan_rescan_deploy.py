"""The scheduled re-scan's manifests (deploy/rescan): least privilege, wiring to the real CLI, and its
script run against a stand-in agentfactory (every agent attested; a scan that could not run fails)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import ROOT
from manifest_helpers import kustomization, load, manifest_files, mount_in, only_container, volumes_of

RESCAN = ROOT / "deploy" / "rescan"
NAMESPACE = "agentfactory-system"
KUBECTL = shutil.which("kubectl")
EXE = Path(sys.executable).with_name("agentfactory")
RESTRICTED_VOLUMES = {"configMap", "emptyDir", "persistentVolumeClaim", "projected", "secret"}


def documents() -> list[dict[str, Any]]:
    return [d for name in manifest_files(RESCAN) for d in load(RESCAN / name)]


def the(kind: str) -> dict[str, Any]:
    found = [d for d in documents() if d["kind"] == kind]
    assert len(found) == 1, kind
    return found[0]


def pod() -> dict[str, Any]:
    spec: dict[str, Any] = the("CronJob")["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return spec


def container() -> dict[str, Any]:
    return only_container(pod(), "rescan")


def env() -> dict[str, Any]:
    return {e["name"]: e for e in container()["env"]}


def script() -> str:
    c = container()
    assert c["command"] == ["/bin/sh", "-c"] and len(c["args"]) == 1
    text: str = c["args"][0]
    return text


def test_kustomization_lists_every_manifest() -> None:
    k = kustomization(RESCAN)
    assert k["namespace"] == NAMESPACE
    assert sorted(k["resources"]) == manifest_files(RESCAN)


def test_the_schedule_keeps_prod_scans_fresh() -> None:
    spec = the("CronJob")["spec"]
    assert spec["schedule"] == "23 */6 * * *" and spec["timeZone"] == "Etc/UTC"
    assert spec["concurrencyPolicy"] == "Forbid"
    data = json.loads((ROOT / "policies" / "data.json").read_text())["agentfactory"]["config"]
    assert data["scan_max_age_hours"]["prod"] > 6 * 2  # two runs may fail before a prod scan is too old
    job = spec["jobTemplate"]["spec"]
    assert job["backoffLimit"] == 1 and job["activeDeadlineSeconds"] < 6 * 3600


def test_the_pod_meets_restricted_and_has_no_token() -> None:
    p, c = pod(), container()
    assert p["automountServiceAccountToken"] is False and p["serviceAccountName"] == "agentfactory-rescan"
    assert the("ServiceAccount")["automountServiceAccountToken"] is False
    assert not any(d["kind"] in ("Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding") for d in documents())
    assert not any(p.get(k) for k in ("hostNetwork", "hostPID", "hostIPC"))
    assert p["securityContext"]["runAsNonRoot"] is True and p["securityContext"]["runAsUser"] == 65532
    ctx = c["securityContext"]
    assert ctx["readOnlyRootFilesystem"] is True and ctx["allowPrivilegeEscalation"] is False
    assert ctx["capabilities"] == {"drop": ["ALL"]} and ctx["seccompProfile"] == {"type": "RuntimeDefault"}
    assert ctx["runAsNonRoot"] is True and ctx["privileged"] is False
    assert "initContainers" not in p


def test_only_the_scratch_folder_is_writable() -> None:
    volumes = volumes_of(pod())
    assert {next(k for k in v if k != "name") for v in volumes.values()} <= RESTRICTED_VOLUMES
    writable = [m for m in container()["volumeMounts"] if not m.get("readOnly")]
    assert [(m["name"], m["mountPath"]) for m in writable] == [("home", "/var/lib/agentfactory")]
    assert "emptyDir" in volumes["home"]
    assert volumes["osv-export"]["persistentVolumeClaim"]["readOnly"] is True
    e = env()
    for name in ("AGENTFACTORY_HOME", "HOME", "TMPDIR"):
        assert e[name]["value"] == "/var/lib/agentfactory"
    assert e["AGENTFACTORY_OSV_DB"]["value"].startswith("/var/lib/agentfactory/")


def test_configuration_comes_from_the_runtime_and_rescan_config_maps() -> None:
    e = env()
    assert e["AGENTFACTORY_STORE"]["valueFrom"]["configMapKeyRef"] == {"name": "agentfactory-runtime-config",
                                                                      "key": "store"}
    assert e["AGENTFACTORY_TRUST_POLICY"]["value"] == mount_in(pod(), "rescan", "trust-policy") + "/trust.yaml"
    assert e["AGENTFACTORY_TLOG_KEY"]["value"] == mount_in(pod(), "rescan", "tlog-key") + "/tlog-key.pem"
    assert e["VAULT_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "agentfactory-rescan-vault", "key": "token"}
    config = the("ConfigMap")["data"]
    for name, key in (("AGENTFACTORY_TLOG", "tlog"), ("VAULT_ADDR", "vault-addr")):
        ref = e[name]["valueFrom"]["configMapKeyRef"]
        assert ref == {"name": "agentfactory-rescan-config", "key": key} and key in config
    assert "/var/lib/agentfactory-osv-export" in script()
    assert mount_in(pod(), "rescan", "osv-export") == "/var/lib/agentfactory-osv-export"


def test_every_variable_is_read_by_the_real_cli() -> None:
    """The environment variables the CLI reads for the options the script leaves out."""
    scan_help = subprocess.run([str(EXE), "scan", "--help"], capture_output=True, text=True, check=True).stdout
    assert "--attest" in scan_help and "--json" in scan_help
    from agentfactory.cli.scan_cmd import scan_cmd

    envvars = {p.envvar for p in scan_cmd.params if getattr(p, "envvar", None)}
    assert {"AGENTFACTORY_STORE", "AGENTFACTORY_TRUST_POLICY", "AGENTFACTORY_TLOG", "AGENTFACTORY_TLOG_KEY",
            "AGENTFACTORY_KEY_PROVIDER"} <= envvars
    assert env()["AGENTFACTORY_KEY_PROVIDER"]["value"] == "vault"


def test_network_policy_has_no_ingress_and_named_egress_ports() -> None:
    spec = the("NetworkPolicy")["spec"]
    assert spec["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "agentfactory-rescan"}
    assert spec["ingress"] == [] and set(spec["policyTypes"]) == {"Ingress", "Egress"}
    ports = {(p["protocol"], p["port"]) for rule in spec["egress"] for p in rule["ports"]}
    assert ports == {("UDP", 53), ("TCP", 53), ("TCP", 5000), ("TCP", 3000), ("TCP", 8200)}


@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")
def test_kustomize_build() -> None:
    assert KUBECTL
    out = subprocess.run([KUBECTL, "kustomize", str(RESCAN)], check=True, capture_output=True, text=True,
                         timeout=60).stdout
    built = [d for d in yaml.safe_load_all(out) if d]
    assert sorted((d["kind"], d["metadata"]["name"]) for d in built) == sorted(
        (d["kind"], d["metadata"]["name"]) for d in documents())
    assert all(d["metadata"]["namespace"] == NAMESPACE for d in built)


# --- the script, against a stand-in agentfactory -------------------------------------------------------

STUB = """#!/bin/sh
echo "$*" >> "$STUBS/calls.log"
case "$1" in
  osv) exit "$(cat "$STUBS/osv.rc" 2> /dev/null || echo 0)" ;;
  store) cat "$STUBS/store.json" ;;
  scan) agent="${2%%@*}"; echo '{}'; exit "$(cat "$STUBS/scan-$agent.rc" 2> /dev/null || echo 0)" ;;
esac
"""


def run_script(tmp_path: Path) -> tuple[int, str, list[str]]:
    stubs = tmp_path / "stubs"
    (stubs / "bin").mkdir(parents=True, exist_ok=True)
    (stubs / "bin" / "agentfactory").write_text(STUB)
    (stubs / "bin" / "agentfactory").chmod(0o755)
    if not (stubs / "bin" / "python3").exists():
        (stubs / "bin" / "python3").symlink_to(sys.executable)
    (stubs / "calls.log").write_text("")
    run_env = {"PATH": f"{stubs / 'bin'}{os.pathsep}/usr/bin:/bin", "STUBS": str(stubs), "TMPDIR": str(tmp_path)}
    done = subprocess.run(["/bin/sh", "-c", script()], env=run_env, capture_output=True, text=True, timeout=60)
    return done.returncode, done.stderr, (stubs / "calls.log").read_text().splitlines()


@pytest.fixture
def store_json(tmp_path: Path) -> Path:
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    (stubs / "store.json").write_text(json.dumps({"store": "oci://r/agents", "agents": [
        {"name": "wordstats", "version": "1.0.0", "digest": "sha256:aa"},
        {"name": "htmlpage", "version": "1.0.0", "digest": "sha256:bb"}]}))
    return stubs


def test_every_agent_is_rescanned_and_attested(tmp_path: Path, store_json: Path) -> None:
    (store_json / "scan-htmlpage.rc").write_text("1")  # blocked: attested all the same, not a failure
    code, log, calls = run_script(tmp_path)
    assert code == 0, log
    assert calls == ["osv import /var/lib/agentfactory-osv-export", "store ls --json",
                     "scan wordstats@sha256:aa --attest --json", "scan htmlpage@sha256:bb --attest --json"]
    assert "rescan: htmlpage@sha256:bb: blocked, attested" in log


def test_a_scan_that_could_not_run_fails_the_job_after_the_others(tmp_path: Path, store_json: Path) -> None:
    (store_json / "scan-wordstats.rc").write_text("2")
    code, log, calls = run_script(tmp_path)
    assert code == 1 and "rescan: wordstats@sha256:aa: the re-scan could not run (exit 2)" in log
    assert calls[-1] == "scan htmlpage@sha256:bb --attest --json"  # the others are still re-scanned


def test_an_unusable_osv_export_stops_the_run_before_any_scan(tmp_path: Path, store_json: Path) -> None:
    (store_json / "osv.rc").write_text("2")
    code, _, calls = run_script(tmp_path)
    assert code == 2 and calls == ["osv import /var/lib/agentfactory-osv-export"]
