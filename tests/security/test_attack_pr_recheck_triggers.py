"""Attack: a pull request changes what judges or builds every template (the toolchain pins or the
compiler flags, the template schema, the verifier, pyproject.toml, the pipeline) without touching a
template: only a `policies/` change re-checked every template, so such a change was "nothing to check",
and pr.yml did not even run for agentfactory/ or pyproject.toml.

Now each of those paths re-checks every template (and a template changed in the same pull request is
still held to the version rule against the base), pr.yml and release.yml trigger on all of them, and
CODEOWNERS guards the code the required check runs.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from helpers import ROOT
from prcheck_fixtures import checked, ci_json, git, make_repo

from pipelines.ci.check import RECHECK_ALL_PATHS, rechecks_all

TRIGGERS = ["pipelines/toolchain.py", "agentfactory/schemas/agent-template.schema.json", "pyproject.toml",
            "pipelines/run.py", "agentfactory/verifier.py", "policies/notes.md"]
NOT_TRIGGERS = ["docs/ci.md", "deploy/envs/dev/kustomization.yaml", "README.md", "pyproject.toml.orig",
                "pipelinesx/a.py"]


def _touch(repo: Path, rel: str) -> None:
    path = repo / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text((path.read_text() if path.exists() else "") + "# changed by the pull request\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", f"change {rel}")


@pytest.mark.parametrize("rel", TRIGGERS)
def test_a_change_to_what_builds_or_judges_every_template_rechecks_them_all(tmp_path: Path, rel: str) -> None:
    repo = make_repo(tmp_path / "repo")
    _touch(repo, rel)
    rc, report = ci_json(repo)
    assert set(checked(report)) == {"alpha", "beta"}, report
    assert report["recheckAll"] == [rel]
    expected = "policies changed" if rel.startswith("policies/") else f"{rel} changed"
    assert all(t["reason"] == expected for t in report["templates"])
    assert rc == 0


@pytest.mark.parametrize("rel", NOT_TRIGGERS)
def test_other_paths_check_nothing(rel: str) -> None:
    assert not rechecks_all(rel)


def test_a_template_changed_alongside_still_needs_a_new_version(tmp_path: Path) -> None:
    """Before: with a re-check of everything, no template had a base, so the version rule (T10) was off
    for the template the pull request changed too."""
    repo = make_repo(tmp_path / "repo")
    (repo / "templates/alpha/src/main.wat").write_text(
        (repo / "templates/alpha/src/main.wat").read_text().replace("i32.const 64", "i32.const 128"))
    _touch(repo, "pipelines/toolchain.py")
    rc, report = ci_json(repo)
    by_name = checked(report)
    assert rc == 1 and by_name["alpha"]["status"] == "failed" and by_name["beta"]["status"] == "passed", report
    assert by_name["alpha"]["reason"] == "changed"
    assert any("bump metadata.version above 1.0.0" in e for e in by_name["alpha"]["errors"])


def _github_glob(pattern: str) -> re.Pattern[str]:
    """GitHub's path filters: `**` any characters, `*` any but `/`, `?` one character."""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def _triggers(workflow: str, event: str, path: str) -> bool:
    doc = yaml.safe_load((ROOT / ".github/workflows" / workflow).read_text())
    on = doc.get("on", doc.get(True))
    return any(_github_glob(p).fullmatch(path) for p in on[event]["paths"])


@pytest.mark.parametrize(("workflow", "event"), [("pr.yml", "pull_request"), ("release.yml", "push")])
@pytest.mark.parametrize("rel", [*TRIGGERS, "templates/wordstats/src/konfigü.h"])
def test_the_workflows_run_on_every_path_that_rechecks(workflow: str, event: str, rel: str) -> None:
    assert rechecks_all(rel) or rel.startswith("templates/")
    assert _triggers(workflow, event, rel), f"{workflow} does not run when {rel} changes"


def test_every_recheck_path_is_a_workflow_trigger() -> None:
    for prefix in RECHECK_ALL_PATHS:
        sample = prefix + "x/y.py" if prefix.endswith("/") else prefix
        assert _triggers("pr.yml", "pull_request", sample), prefix


def _owners(path: str) -> list[str]:
    """GitHub CODEOWNERS: the last matching line wins; `/dir/` matches everything below it."""
    owners: list[str] = []
    for line in (ROOT / ".github/CODEOWNERS").read_text().splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        pattern, *who = line.split()
        assert pattern.startswith("/"), f"CODEOWNERS: anchor {pattern} at the root"
        anchored = pattern[1:]
        if (anchored.endswith("/") and path.startswith(anchored)) or path == anchored:
            owners = who
    return owners


@pytest.mark.parametrize("path", ["agentfactory/verifier.py", "agentfactory/schemas/agent-template.schema.json",
                                  "pipelines/toolchain.py", "pipelines/ci/check.py", "pyproject.toml",
                                  ".github/workflows/pr.yml", ".github/CODEOWNERS", "policies/artifact.rego",
                                  "deploy/argocd/projects.yaml"])
def test_codeowners_guard_the_code_the_required_check_runs(path: str) -> None:
    assert _owners(path), f"{path} has no code owner"


def test_the_docs_say_the_check_runs_the_pull_requests_code() -> None:
    text = " ".join((ROOT / "docs/ci.md").read_text().split())
    assert "runs the pull request's own code" in text and ".github/CODEOWNERS" in text
