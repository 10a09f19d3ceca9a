"""`agentfactory ci check` on real Git repositories with a few commits: what changed, the verdicts,
the GitHub job summary, annotations and outputs, and the refusals (unknown base, shallow clone)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT
from runtime_helpers import OK_WAT, wat_manifest
from sarif_helpers import github_problems, validator

from pipelines.ci.check import CheckReport, TemplateCheck
from pipelines.ci.github import Annotation, _cap, annotations_of, markdown

AF = str(Path(sys.executable).parent / "agentfactory")

DEPS = """  dependencies:
    - name: lodash
      version: {version}
      purl: pkg:npm/lodash@{version}
      license: {license}
      path: vendor/lodash
      sha256: {sha}
"""


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


NO_TESTS = '  tests:\n    none: "a stand-in agent of the ci check tests"\n'


def write(repo: Path, name: str, *, version: str = "1.0.0", wat: str = OK_WAT, deps: str = "") -> None:
    folder = repo / "templates" / name
    (folder / "src").mkdir(parents=True, exist_ok=True)
    (folder / "src/main.wat").write_text(wat)
    manifest = re.sub(r"(?m)^  tests:\n    none: .*\n", "", wat_manifest(name))  # ours, below
    (folder / "agent.yaml").write_text(manifest.replace("version: 1.0.0", f"version: {version}") + NO_TESTS + deps)


def step_outputs(path: Path) -> dict[str, str]:
    """$GITHUB_OUTPUT as the runner reads it: `name<<DELIMITER` blocks (and plain `name=value` lines)."""
    values: dict[str, str] = {}
    lines = iter(path.read_text().split("\n"))
    for line in lines:
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            body = []
            for inner in lines:
                if inner == delimiter:
                    break
                body.append(inner)
            else:
                raise AssertionError(f"output {name!r}: no closing delimiter")
            values[name] = "\n".join(body)
        elif "=" in line:
            name, value = line.split("=", 1)
            values[name] = value
    return values


def vendored(repo: Path, name: str, version: str, license: str) -> str:
    vendor = repo / "templates" / name / "vendor/lodash"
    vendor.mkdir(parents=True, exist_ok=True)
    (vendor / "lodash.js").write_text(f"/* stand-in for lodash {version} */\n")
    sha = subprocess.run([AF, "template", "hash", str(vendor)], check=True, capture_output=True, text=True).stdout
    return DEPS.format(version=version, license=license, sha=sha.strip())


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "ci@example.com")
    git(root, "config", "user.name", "CI")
    (root / "policies").mkdir()
    for f in (ROOT / "policies").glob("*"):
        (root / "policies" / f.name).write_bytes(f.read_bytes())
    write(root, "alpha")
    write(root, "beta")
    write(root, "gamma", deps=vendored(root, "gamma", "4.17.21", "MIT"))
    git(root, "add", "-A")
    git(root, "commit", "-qm", "base")
    git(root, "checkout", "-qb", "feature")
    return root


def run(repo: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("GITHUB_")}
    full.update({"AGENTFACTORY_HOME": str(repo.parent / "home"), **(env or {})})
    return subprocess.run([AF, "ci", "check", *args], cwd=repo, env=full, capture_output=True, text=True)


def test_only_changed_templates_are_checked_and_reported(repo: Path) -> None:
    write(repo, "alpha", version="1.1.0", wat=OK_WAT.replace("ok\\n", "hi\\n"))
    git(repo, "commit", "-qam", "alpha 1.1.0")
    done = run(repo, "--base", "main", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert [(t["name"], t["status"], t["baseVersion"], t["version"]) for t in report["templates"]] == [
        ("alpha", "passed", "1.0.0", "1.1.0")]
    assert report["summary"] == {"checked": 1, "passed": 1, "failed": 0, "removed": 0}


def test_a_vulnerable_dependency_and_an_unbumped_version_fail_with_annotations_and_summary(repo: Path) -> None:
    write(repo, "gamma", version="1.1.0", deps=vendored(repo, "gamma", "4.17.20", "MIT"))
    write(repo, "beta", wat=OK_WAT.replace("ok\\n", "no\\n"))  # changed without a version bump
    git(repo, "commit", "-qam", "downgrade lodash; touch beta")
    summary, outputs = repo.parent / "summary.md", repo.parent / "outputs.txt"
    done = run(repo, "--base", "main", env={"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary),
                                             "GITHUB_OUTPUT": str(outputs)})
    assert done.returncode == 1, done.stdout + done.stderr
    text = summary.read_text()
    assert "2 template(s) checked, 2 failed" in text
    assert "| GHSA-35jh-r3h4-6jhm | HIGH | `pkg:npm/lodash@4.17.20` | open; fix: upgrade to 4.17.21 |" in text
    assert "changed lodash: version 4.17.21 → 4.17.20, purl pkg:npm/lodash@4.17.21 → pkg:npm/lodash@4.17.20" in text
    assert "bump metadata.version above 1.0.0" in text
    lines = step_outputs(outputs)
    assert lines["checked"] == "2" and lines["failed"] == "2" and set(lines["failed-templates"].split(",")) == {
        "beta", "gamma"}
    commands = [line for line in done.stdout.splitlines() if line.startswith("::error ")]
    assert any(c.startswith("::error file=templates/beta/agent.yaml,title=agentfactory ci check::") for c in commands)
    assert any("file=templates/gamma/agent.yaml" in c and "GHSA-35jh-r3h4-6jhm" in c for c in commands)


def test_a_policy_change_rechecks_every_template(repo: Path) -> None:
    data = repo / "policies/data.json"
    data.write_text(data.read_text().replace('"MIT",\n', ""))  # MIT leaves the licence allowlist
    git(repo, "commit", "-qam", "stricter licences")
    done = run(repo, "--base", "main", "--json")
    report = json.loads(done.stdout)
    assert report["policiesChanged"] is True
    by_name = {t["name"]: t for t in report["templates"]}
    assert set(by_name) == {"alpha", "beta", "gamma"} and all(t["reason"] == "policies changed"
                                                             for t in by_name.values())
    assert by_name["gamma"]["status"] == "failed" and by_name["alpha"]["status"] == "passed"
    assert any("not on the licence allowlist" in e for e in by_name["gamma"]["errors"])
    assert done.returncode == 1


def test_deleted_and_renamed_templates(repo: Path) -> None:
    git(repo, "rm", "-rq", "templates/beta")
    git(repo, "mv", "templates/alpha", "templates/delta")
    manifest = repo / "templates/delta/agent.yaml"
    manifest.write_text(manifest.read_text().replace("name: alpha", "name: delta"))
    git(repo, "commit", "-qam", "remove beta, rename alpha")
    done = run(repo, "--base", "main")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "| `beta` | 1.0.0 | 🗑️ removed | removed in this change |" in done.stdout
    assert "| `delta` | 1.0.0 | ✅ passed | renamed from alpha |" in done.stdout


def test_no_change_nothing_to_check(repo: Path) -> None:
    done = run(repo, "--base", "main")
    assert done.returncode == 0 and "nothing to check" in done.stdout


def test_bad_bases_and_shallow_clones(repo: Path, tmp_path: Path) -> None:
    done = run(repo, "--base", "no-such-branch")
    assert done.returncode == 2 and "--base no-such-branch: no such commit" in done.stderr
    write(repo, "alpha", version="1.2.0")
    git(repo, "commit", "-qam", "one")
    write(repo, "alpha", version="1.3.0")
    git(repo, "commit", "-qam", "two")
    shallow = tmp_path / "shallow"
    subprocess.run(["git", "clone", "-q", "--depth", "1", "--branch", "feature", f"file://{repo}", str(shallow)],
                   check=True)
    done = run(shallow, "--base", "origin/main")
    assert done.returncode == 2
    assert "shallow" in done.stderr and "fetch-depth: 0" in done.stderr, done.stderr
    missing_db = run(repo, "--base", "main", env={"AGENTFACTORY_OSV_DB": str(tmp_path / "none")})
    assert missing_db.returncode == 2 and "agentfactory osv import" in missing_db.stderr


def test_summary_over_the_limit_is_truncated_with_a_note() -> None:
    big = TemplateCheck("templates/x", "x", "failed", version="1.0.0",
                        errors=[f"templates/x/agent.yaml:{i}: problem {'y' * 200}" for i in range(8000)])
    text = markdown(CheckReport("main", "a" * 40, "b" * 40, [big]))
    assert len(text.encode()) < 1024 * 1024 and "**Truncated:**" in text and "--json" in text
    assert _cap("short") == "short"


def test_annotation_escaping_and_locations() -> None:
    t = TemplateCheck("templates/x", "x", "failed", errors=[
        "templates/x/agent.yaml:7:3: spec.limits: 100% wrong\nsecond line",
        "templates/x/src/main.c: a source, no line",
        "build failed: no file named here"])
    found = annotations_of(CheckReport("main", "a" * 40, "b" * 40, [t]))
    assert found[0] == Annotation("templates/x/agent.yaml", 7, "spec.limits: 100% wrong\nsecond line")
    assert found[0].command() == ("::error file=templates/x/agent.yaml,line=7,title=agentfactory ci check::"
                                  "spec.limits: 100%25 wrong%0Asecond line")
    assert found[1] == Annotation("templates/x/src/main.c", None, "a source, no line")
    assert found[2].file == "templates/x/agent.yaml" and found[2].line is None


def test_sarif_and_junit_for_code_scanning_and_dashboards(repo: Path) -> None:
    write(repo, "gamma", version="1.1.0", deps=vendored(repo, "gamma", "4.17.20", "MIT"))
    write(repo, "beta", wat=OK_WAT.replace("ok\\n", "no\\n"))  # changed without a version bump
    git(repo, "commit", "-qam", "downgrade lodash; touch beta")
    junit_file = repo.parent / "junit.xml"
    done = run(repo, "--base", "main", "--format", "sarif", env={"AGENTFACTORY_CI_JUNIT": str(junit_file)})
    assert done.returncode == 1, done.stderr
    log = json.loads(done.stdout)
    assert list(validator().iter_errors(log)) == [] and github_problems(log) == []
    results = log["runs"][0]["results"]
    files = {r["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] for r in results}
    assert files == {"templates/beta/agent.yaml", "templates/gamma/agent.yaml"}
    vulnerability = next(r for r in results if r["ruleId"] == "GHSA-35jh-r3h4-6jhm")
    assert vulnerability["level"] == "error" and "upgrade to 4.17.21" in vulnerability["message"]["text"]
    assert any("bump metadata.version" in r["message"]["text"] for r in results)
    xml = junit_file.read_text()
    assert xml.startswith('<?xml version="1.0" encoding="UTF-8"?>') and xml.count("<failure ") == 2
    both = run(repo, "--base", "main", "--json", "--format", "junit")
    assert both.returncode == 2 and "give one" in both.stderr
