"""What a new user trips on (issue 19, the rest), through the real `agentfactory` command: `verify` of an
unknown agent or stage is exit 2 with a did-you-mean, `scan --format sarif` for GitHub code scanning, `vex sign
--json`, the revocation runbook of docs/keys.md (rotate, revoke, re-sign, verify, audit) with `pipeline run`
re-signing what a revoked key signed, one folder-name check for `template validate` and `pipeline run`, and a
read-only state folder named read-only instead of "not a transparency log database"."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import ROOT, write_template
from runtime_helpers import OK_WAT, wat_manifest
from sarif_helpers import github_problems, validator

from agentfactory.cli.common import EXIT_PROBLEMS, EXIT_USAGE

AF = str(Path(sys.executable).with_name("agentfactory"))
GHSA = "GHSA-35jh-r3h4-6jhm"
LODASH = ROOT / "examples" / "scanning" / "templates" / "htmlpage" / "vendor"
VULNERABLE_DEPENDENCY = """  dependencies:
    - name: lodash
      version: 4.17.20
      purl: pkg:npm/lodash@4.17.20
      license: MIT
      path: vendor/lodash
      sha256: e6eb402571b8d3f9fc70b00902fac108d4426e9c8d4977a503eafafb9c522151
"""


def af(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([AF, *args], cwd=cwd, capture_output=True, text=True, env=os.environ.copy())


def agent(root: Path, name: str, *, vulnerable: bool = False) -> Path:
    """A small WAT agent with a module of its own; `vulnerable` vendors lodash 4.17.20 (a High advisory)."""
    manifest = wat_manifest(name)
    if vulnerable:
        manifest = manifest.replace("  tests:\n", VULNERABLE_DEPENDENCY + "  tests:\n")
    folder = write_template(root, name, manifest=manifest, files={"src/main.wat": OK_WAT.replace('"ok', f'"{name}')})
    if vulnerable:
        shutil.copytree(LODASH, folder / "vendor")
    return folder


def run(*args: str, cwd: Path = ROOT) -> dict[str, Any]:
    done = af("pipeline", "run", "--no-tests", "--json", *args, cwd=cwd)
    assert done.returncode == 0, done.stdout + done.stderr
    report: dict[str, Any] = json.loads(done.stdout)
    return report


@pytest.fixture
def published(af_home: Path, tmp_path: Path) -> Path:
    """`alpha` built, signed, logged and published to the default store; returns the templates folder."""
    agent(tmp_path / "templates", "alpha")
    run("--templates", str(tmp_path / "templates"))
    return tmp_path / "templates"


# --- verify: exit codes as docs/cli.md says, and no stage nobody knows ---------------------------------------

def test_verify_of_an_unknown_agent_prints_the_verdict_and_exits_2(published: Path) -> None:
    done = af("verify", "nosuch:1.0.0", "--json")
    assert done.returncode == EXIT_USAGE, done.stderr  # was 1, as if something that exists had been denied
    verdict = json.loads(done.stdout)
    assert not verdict["allowed"] and "no such agent" in verdict["checks"][0]["reason"]
    human = af("verify", "nosuch")
    assert human.returncode == EXIT_USAGE and "DENIED" in human.stdout
    # An agent that exists but was never promoted to prod is a denial (1), not a reference error.
    prod = af("verify", "alpha", "--stage", "prod", "--json")
    assert prod.returncode == EXIT_PROBLEMS and "no version is promoted to prod" in prod.stdout, prod.stdout
    assert af("verify", "alpha:1.0.0").returncode == 0


@pytest.mark.parametrize(("option", "typo", "hint"), [("--stage", "prdo", "Did you mean 'prod'?"),
                                                      ("--stage", "canery", "Did you mean 'canary'?"),
                                                      ("--entry-stage", "deev", "Did you mean 'dev'?"),
                                                      ("--stage", "staging", "")])
def test_verify_refuses_a_stage_the_policies_do_not_know(published: Path, option: str, typo: str,
                                                         hint: str) -> None:
    done = af("verify", "alpha:1.0.0", option, typo, "--json")
    assert done.returncode == EXIT_USAGE and done.stdout == ""
    assert f"error: {option} {typo!r}: unknown stage; the policies know dev, canary, prod." in done.stderr
    assert hint in done.stderr and "Traceback" not in done.stderr


def test_verify_reads_the_stages_from_the_policies_data(published: Path, tmp_path: Path) -> None:
    """The stage list is data.agentfactory.config.admission.stages, the one the webhook and Rego read."""
    policies = tmp_path / "policies"
    shutil.copytree(ROOT / "policies", policies)
    data = json.loads((policies / "data.json").read_text())
    data["agentfactory"]["config"]["admission"]["stages"] = ["dev", "qa", "prod"]
    (policies / "data.json").write_text(json.dumps(data))
    done = af("verify", "alpha:1.0.0", "--stage", "canary", "--policies", str(policies))
    assert done.returncode == EXIT_USAGE and "the policies know dev, qa, prod" in done.stderr
    assert af("verify", "alpha:1.0.0", "--stage", "qa", "--policies", str(policies)).returncode == EXIT_PROBLEMS


def test_verify_refuses_a_store_that_is_a_typo(published: Path, tmp_path: Path) -> None:
    done = af("verify", "alpha:1.0.0", "--store", f"oci-layout:{tmp_path / 'no-such-store'}")
    assert done.returncode == EXIT_USAGE and "no OCI layout at" in done.stderr


# --- scan --format sarif, vex sign --json -------------------------------------------------------------------

def _sarif(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    log: dict[str, Any] = json.loads(done.stdout)
    errors = sorted(validator().iter_errors(log), key=str)
    assert not errors, [e.message for e in errors]
    assert github_problems(log) == []
    return log


def test_scan_writes_sarif_on_the_sbom_file(af_home: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    agent(repo / "templates", "gamma", vulnerable=True)
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    run("--templates", "templates", "--sbom-root", ".", "--fail-on", "critical", cwd=repo)  # published anyway
    sbom = repo / "sbom" / "gamma" / "1.0.0.cdx.json"

    for target, where in ((str(sbom), "sbom/gamma/1.0.0.cdx.json"),  # relative to the repository root
                          ("gamma:1.0.0", "sbom/gamma/1.0.0.cdx.json")):  # a stored agent: where --sbom-root puts it
        done = af("scan", target, "--format", "sarif", cwd=tmp_path)
        assert done.returncode == EXIT_PROBLEMS, done.stderr  # the gate's exit code, whatever the format
        log = _sarif(done)
        [result] = log["runs"][0]["results"]
        assert result["ruleId"] == GHSA and result["level"] == "error"
        assert result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == where
        message = result["message"]["text"]
        assert "in pkg:npm/lodash@4.17.20" in message and "fix: upgrade to 4.17.21" in message
        [rule] = log["runs"][0]["tool"]["driver"]["rules"]
        assert rule["id"] == GHSA and float(rule["properties"]["security-severity"]) >= 7.0

    outside = tmp_path / "elsewhere" / "gamma.cdx.json"
    outside.parent.mkdir()
    shutil.copy(sbom, outside)
    log = _sarif(af("scan", str(outside), "--format", "sarif", cwd=tmp_path))
    assert log["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] == \
        "gamma.cdx.json"

    vex = tmp_path / "gamma.openvex.json"  # the example's statement, about gamma: the finding is answered
    example = ROOT / "examples" / "scanning" / "vex" / "htmlpage.openvex.json"
    vex.write_text(example.read_text().replace("pkg:oci/htmlpage", "pkg:oci/gamma"))
    suppressed = af("scan", str(sbom), "--vex", str(vex), "--format", "sarif", cwd=tmp_path)
    assert suppressed.returncode == 0, suppressed.stderr
    assert _sarif(suppressed)["runs"][0]["results"] == []

    both = af("scan", str(sbom), "--json", "--format", "sarif")
    assert both.returncode == EXIT_USAGE and "ask for two outputs" in both.stderr


def test_vex_sign_json(af_home: Path, tmp_path: Path) -> None:
    example = ROOT / "examples" / "scanning" / "vex" / "htmlpage.openvex.json"
    out = tmp_path / "signed.dsse.json"
    done = af("vex", "sign", str(example), "-o", str(out), "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert set(doc) == {"output", "keyId", "provider", "predicateType", "subjects"}
    assert doc["output"] == str(out) and out.is_file() and doc["provider"] == "local"
    assert doc["keyId"] == json.loads(out.read_text())["signatures"][0]["keyid"]
    assert doc["predicateType"].startswith("https://openvex.dev/ns")
    [subject] = doc["subjects"]
    assert subject["name"] == "https://agentfactory.dev/examples/vex/htmlpage-2026-001"
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", subject["digest"])
    # Every signature by the build keys is in the signing record (audit keys accounts by it).
    lines = [json.loads(x) for x in (af_home / "signing-record.jsonl").read_text().splitlines()]
    assert [(x["store"], x["kind"], x["keyId"]) for x in lines] == [("", "dsse", doc["keyId"])]


# --- the revocation runbook (docs/keys.md): rotate, revoke, re-sign, verify, audit --------------------------

RUNBOOK = ROOT / "docs" / "keys.md"


def _runbook_commands() -> list[str]:
    text = RUNBOOK.read_text()
    section = text.split("## Runbook: a key is compromised", 1)[1].split("\n## ", 1)[0]
    block = section.split("```", 2)[1]
    return [line.split("#", 1)[0].strip() for line in block.splitlines() if line.startswith("agentfactory ")]


def test_the_revocation_runbook(af_home: Path, published: Path, tmp_path: Path) -> None:
    commands = _runbook_commands()
    side = f"oci-layout:{tmp_path / 'side'}"
    run("--templates", str(published), "--store", side)  # a second store the old key signed into
    [old] = [k["keyId"] for k in json.loads(af("keys", "list", "--json").stdout)["keys"]]
    log_key = tmp_path / "log-key.pem"
    shutil.copy(af_home / "tlog" / "log-public-key.pem", log_key)

    def step(command: str, **values: str) -> subprocess.CompletedProcess[str]:
        assert command in commands, f"{command!r} is not a step of the runbook in {RUNBOOK}: {commands}"
        args = command.split()[1:]
        return af(*[values.get(a, a) for a in args], cwd=published.parent)  # ./templates is `published`

    assert step("agentfactory keys list").returncode == 0
    assert step("agentfactory keys rotate").returncode == 0
    assert step("agentfactory keys revoke KEY_ID", KEY_ID=old).returncode == 0
    assert af("verify", "alpha:1.0.0").returncode == EXIT_PROBLEMS  # DENIED: its key is revoked

    resigned = step("agentfactory pipeline run")
    assert resigned.returncode == 0, resigned.stderr
    assert f"unchanged, signed again (key {old[:16]} is revoked)" in resigned.stdout
    assert "re-signed" in resigned.stdout and "built 0, unchanged 1" in resigned.stdout
    assert step("agentfactory verify NAME:VERSION", **{"NAME:VERSION": "alpha:1.0.0"}).returncode == 0
    assert af("verify", "alpha:1.0.0", "--store", side).returncode == EXIT_PROBLEMS  # not yet in the side store
    side_run = af("pipeline", "run", "--no-tests", "--json", "--templates", str(published), "--store", side)
    [row] = json.loads(side_run.stdout)["templates"]
    assert row["status"] == "unchanged" and row["evidence"]["resigned"] == f"key {old[:16]} is revoked"
    assert af("verify", "alpha:1.0.0", "--store", side).returncode == 0

    again = run("--templates", str(published))  # nothing to do now: the new key signed it
    assert again["templates"][0]["evidence"] == {"signed": True, "reused": True}
    forced = run("--templates", str(published), "--resign")
    new_key = forced["templates"][0]["evidence"]["keyId"]
    assert forced["templates"][0]["evidence"]["resigned"] == "--resign" and new_key != old
    assert len(forced["templates"][0]["evidence"]["tlog"]["indexes"]) == 5  # signature, 3 attestations, image

    assert af("audit", "monitor", "--init", "--tlog-key", str(log_key)).returncode == 0
    audited = step("agentfactory audit keys --tlog-key LOG_KEY.pem", **{"LOG_KEY.pem": str(log_key)})
    assert audited.returncode == 0, audited.stdout
    assert "every signature by our keys is accounted for and logged" in audited.stdout
    assert "agentfactory trust init -o trust.yaml" in commands
    assert "agentfactory pipeline run --resign" in commands and "agentfactory pipeline run --store URL" in commands


def test_rotation_alone_re_signs_with_the_active_key(published: Path) -> None:
    assert af("keys", "rotate").returncode == 0
    [row] = run("--templates", str(published))["templates"]
    assert row["status"] == "unchanged" and row["evidence"]["resigned"].endswith("is no longer the active key")
    assert af("verify", "alpha:1.0.0").returncode == 0
    [row] = run("--templates", str(published))["templates"]
    assert row["evidence"] == {"signed": True, "reused": True}


def test_resign_and_no_sign_contradict(published: Path) -> None:
    done = af("pipeline", "run", "--templates", str(published), "--resign", "--no-sign")
    assert done.returncode == EXIT_USAGE and "--resign and --no-sign" in done.stderr


# --- one folder-name check ------------------------------------------------------------------------------------

def test_pipeline_and_validate_say_the_same_about_a_folder_name(af_home: Path, tmp_path: Path) -> None:
    folder = agent(tmp_path / "templates", "delta")
    folder.rename(tmp_path / "templates" / "other")
    validated = af("template", "validate", str(tmp_path / "templates" / "other"))
    ran = af("pipeline", "run", "--no-tests", "--templates", str(tmp_path / "templates"))
    assert validated.returncode == 1 and ran.returncode == 1
    message = "metadata.name: 'delta' differs from the folder name 'other'; rename one so they match"
    assert message in validated.stderr and message in ran.stderr


# --- a read-only, populated state folder -----------------------------------------------------------------------

def _can_mount_read_only() -> bool:
    probe = subprocess.run(["unshare", "-m", "sh", "-c", "mount --bind /tmp /tmp && mount -o remount,bind,ro /tmp"],
                           capture_output=True) if shutil.which("unshare") else None
    return probe is not None and probe.returncode == 0


@pytest.mark.skipif(not _can_mount_read_only(), reason="needs a mount namespace (unshare -m) to make a read-only "
                                                       "file system: root permissions ignore chmod")
def test_pipeline_run_in_a_read_only_home_says_read_only(af_home: Path, published: Path, tmp_path: Path) -> None:
    agent(published, "epsilon")  # something to sign and log: the log must be written
    script = f'mount --bind "{af_home}" "{af_home}" && mount -o remount,bind,ro "{af_home}" && exec "$@"'
    done = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", AF, "pipeline", "run", "--no-tests",
                           "--templates", str(published)], capture_output=True, text=True, cwd=ROOT,
                          env=os.environ.copy())
    assert done.returncode == EXIT_USAGE, done.stdout + done.stderr
    assert f"error: {af_home}/tlog/tree.db: the transparency log is read-only" in done.stderr, done.stderr
    assert "not a transparency log database" not in done.stderr and "internal error" not in done.stderr
