"""Attack: rewrite a policy decision with an input string, end to end (issue 16, part 1, as reported).

(a) admission: a Pod in namespace `prod` on the wasmtime runtime class, image
    `evil.example.com/miner:latest`, with the payload in the `agentfactory.dev/stage` annotation
    (and in every other leaf an attacker writes: the image, the agent annotation, the namespace)
    is refused by `agentfactory admission review` and by POST /validate over TLS to a real
    `agentfactory admission serve`. The stage's source may change (it should come from the namespace):
    these tests assert the denial, whatever the reason.
(b) template: a template asking for shell.exec, 4 GiB, a 600 s deadline and AWS_SECRET_ACCESS_KEY,
    with the payload in the name of a source file that T11 echoes, is refused by
    `agentfactory template validate`.
(c) artifact: hostile SBOM licence strings (A3 echoes them) do not let an artifact with an
    unsuppressed High advisory through the artifact policy, through `agentfactory policy eval` on the
    input the verifier builds.
Each has a control that is allowed, so a harness that could only say "denied" would fail.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from child_process import first_line
from policy_injection_cases import PAYLOADS, artifact_bases, review

ROOT = Path(__file__).resolve().parents[2]
EXE = str(Path(sys.executable).with_name("agentfactory"))
EVIL = "evil.example.com/miner:latest"
PINNED = "evil.example.com/miner@sha256:" + "ab" * 32


def af(cwd: Path, *args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ, "AGENTFACTORY_POLICIES": str(ROOT / "policies")}
    return subprocess.run([EXE, *args], cwd=cwd, input=stdin, capture_output=True, env=env, timeout=300)


def attack_reviews() -> list[tuple[str, dict[str, Any]]]:
    """(what, review): the reported attack and the payload in each other leaf an object author writes."""
    out = []
    for i, payload in enumerate(PAYLOADS):
        out.append((f"stage-annotation-{i}", review("prod", EVIL, {"agentfactory.dev/stage": payload})))
    payload = PAYLOADS[0]
    out += [
        ("stage-annotation-and-pinned-image", review("prod", PINNED, {"agentfactory.dev/stage": payload})),
        ("image", review("prod", f"evil.example.com/miner{payload}:latest", {"agentfactory.dev/stage": "prod"})),
        ("image-digest", review("prod", f"{PINNED}{payload}", {})),
        ("agent-annotation", review("prod", EVIL, {"agentfactory.dev/agent": f"miner{payload}",
                                                   "agentfactory.dev/stage": payload})),
        ("agent-annotation-pinned", review("prod", EVIL, {"agentfactory.dev/agent": f"{PINNED},{payload}"})),
        ("namespace", review(f"prod{payload}", EVIL, {"agentfactory.dev/stage": payload})),
        ("namespace-prod-glob", review(f"prod-{payload}", PINNED, {})),
    ]
    return out


ATTACKS = attack_reviews()
CONTROL = review("prod", EVIL, {})  # not on a wasm runtime class below: not an agent workload, admitted
CONTROL["request"]["object"]["spec"]["runtimeClassName"] = "runc"


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with an (empty) local store, the webhook's config and its TLS material."""
    root = tmp_path_factory.mktemp("admission")
    (root / "admission.yaml").write_text("deadlineMs: 5000\n")
    assert af(root, "admission", "certs", "--out", "tls").returncode == 0
    return root


def test_admission_review_cli_denies_every_injection(workdir: Path) -> None:
    proc = af(workdir, "admission", "review", "-", "--config", "admission.yaml", stdin=json.dumps(CONTROL).encode())
    assert proc.returncode == 0 and json.loads(proc.stdout)["response"]["allowed"] is True, proc.stderr
    for what, body in ATTACKS:
        proc = af(workdir, "admission", "review", "-", "--config", "admission.yaml", stdin=json.dumps(body).encode())
        assert proc.returncode in (1, 2), (what, proc.stdout, proc.stderr)
        assert b"Traceback" not in proc.stderr, what
        if proc.returncode == 1:
            response = json.loads(proc.stdout)["response"]
            assert response["allowed"] is False, what
            assert response["status"]["message"], what


def test_admission_webhook_over_tls_denies_every_injection(workdir: Path) -> None:
    server = subprocess.Popen([EXE, "admission", "serve", "--listen", "127.0.0.1:0", "--tls-cert", "tls/tls.crt",
                               "--tls-key", "tls/tls.key", "--config", "admission.yaml"], cwd=workdir,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              env={**os.environ, "AGENTFACTORY_POLICIES": str(ROOT / "policies")})
    try:
        assert server.stderr is not None
        url = json.loads(first_line(server))["listening"]
        trust = ssl.create_default_context(cafile=str(workdir / "tls" / "ca.crt"))
        with httpx.Client(base_url=url, verify=trust, timeout=30) as client:
            for _ in range(200):
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
            assert client.post("/validate", json=CONTROL).json()["response"]["allowed"] is True
            for what, body in ATTACKS:
                answer = client.post("/validate", json=body)
                assert answer.status_code == 200, (what, answer.text)
                response = answer.json()["response"]
                assert response["allowed"] is False, (what, response)
                assert response["status"]["code"] != 500 and response["status"]["message"], (what, response)
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def dangerous_template(root: Path, source_name: str) -> Path:
    """The issue's template: shell.exec, 4 GiB, 600 s, AWS_SECRET_ACCESS_KEY; a finding in `source_name`."""
    folder = root / "miner"
    shutil.copytree(ROOT / "tests/fixtures/policy-templates/good", folder)
    manifest = (folder / "agent.yaml").read_text()
    manifest = manifest.replace("name: good", "name: miner").replace("tools: []", "tools: [shell.exec]")
    manifest = manifest.replace("memoryMiB: 4", "memoryMiB: 4096").replace("timeoutMs: 2000", "timeoutMs: 600000")
    manifest = manifest.replace("env: [LANG, TZ]", "env: [LANG, AWS_SECRET_ACCESS_KEY]")
    (folder / "agent.yaml").write_text(manifest)
    shutil.copy(ROOT / "tests/fixtures/policy-templates/t11-static-finding/src/main.c", folder / "src" / source_name)
    return folder


@pytest.mark.parametrize("payload", PAYLOADS[:4], ids=lambda p: f"payload{PAYLOADS.index(p)}")
def test_template_validate_refuses_a_dangerous_template_whose_file_name_carries_the_payload(
        tmp_path: Path, payload: str) -> None:
    folder = dangerous_template(tmp_path, f"x{payload}.c")
    proc = af(tmp_path, "template", "validate", str(folder), "--json")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    (report,) = json.loads(proc.stdout)["templates"]
    errors = "\n".join(report["errors"])
    for needle in ("shell.exec", "memoryMiB", "timeoutMs", "AWS_SECRET_ACCESS_KEY", payload):
        assert needle in errors, (needle, errors)


def test_template_validate_control_passes(tmp_path: Path) -> None:
    folder = tmp_path / "good"
    shutil.copytree(ROOT / "tests/fixtures/policy-templates/good", folder)
    proc = af(tmp_path, "template", "validate", str(folder), "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def eval_artifact(tmp_path: Path, document: dict[str, Any]) -> dict[str, Any]:
    path = tmp_path / "input.json"
    path.write_text(json.dumps(document))
    proc = af(tmp_path, "policy", "eval", "--input", str(path), "--policy", "artifact", "--json")
    assert proc.returncode in (0, 1), proc.stderr
    decision: dict[str, Any] = json.loads(proc.stdout)
    assert (proc.returncode == 0) == decision["allow"]
    return decision


def test_hostile_licences_do_not_let_a_high_advisory_through_the_artifact_policy(tmp_path: Path) -> None:
    clean, vulnerable = artifact_bases()
    assert eval_artifact(tmp_path, clean.document)["allow"] is True  # control
    assert not eval_artifact(tmp_path, vulnerable.document)["allow"]
    for payload in [*PAYLOADS, 'MIT"]}', "MIT\\", "MIT OR \"]},"]:
        components = [{**c, "licenses": [payload]} for c in vulnerable.document["sbom"]["components"]]
        decision = eval_artifact(tmp_path, {**vulnerable.document, "sbom": {"components": components}})
        assert decision["allow"] is False, (payload, decision)
        assert any("scan.findings[0]" in m for m in decision["deny"]) or \
            any("evaluation failed" in m for m in decision["deny"]), decision
