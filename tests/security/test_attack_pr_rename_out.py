"""Attack: a pull request moves a file out of a template (`git mv templates/alpha/tests/cases.yaml
docs/…`). Git reports a rename whose new path is outside templates/, and only the new side was
marked: the template lost its case tests unchecked, and the release built it untested.

Both sides of a rename or copy now count, in `ci check` and in the release's `changed_since`; and a
template without tests/cases.yaml is refused unless its agent.yaml says why (`spec.tests.none`).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from prcheck_fixtures import checked, ci_json, git, make_repo, write_template

from agentfactory.errors import InputError, ValidationFailed
from agentfactory.template import load_template, untested_problem
from pipelines.gitinfo import Change, GitView, parse_name_status_z

REASON = '  tests:\n    none: "a smoke-test agent: the runtime tests run it"\n'


def test_moving_the_cases_out_of_a_template_is_checked_and_refused(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    (repo / "docs").mkdir()
    git(repo, "mv", "templates/alpha/tests/cases.yaml", "docs/alpha-cases.yaml")
    manifest = repo / "templates/alpha/agent.yaml"
    manifest.write_text(manifest.read_text().replace("version: 1.0.0", "version: 1.0.1"))  # T10 satisfied
    git(repo, "commit", "-qam", "tidy the docs")
    templates = repo / "templates"
    assert GitView(templates).changed_since("main", [templates / "alpha", templates / "beta"]) == {
        templates / "alpha"}  # the release sees it too
    rc, report = ci_json(repo)
    alpha = checked(report)["alpha"]
    assert rc == 1 and alpha["status"] == "failed", report
    [error] = alpha["errors"]
    assert error.startswith("templates/alpha/tests/cases.yaml: not found") and "spec.tests.none" in error


def test_a_file_moved_from_one_template_to_another_checks_both(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    (repo / "templates/alpha/src/extra.wat").write_text(";; a helper\n" * 20)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "helper")
    git(repo, "branch", "-f", "main", "HEAD")
    git(repo, "mv", "templates/alpha/src/extra.wat", "templates/beta/src/extra.wat")
    git(repo, "commit", "-qm", "move the helper")
    _rc, report = ci_json(repo)
    assert set(checked(report)) == {"alpha", "beta"}


def test_a_whole_template_renamed_is_still_reported_as_renamed(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    git(repo, "mv", "templates/alpha", "templates/delta")
    manifest = repo / "templates/delta/agent.yaml"
    manifest.write_text(manifest.read_text().replace("name: alpha", "name: delta"))
    git(repo, "commit", "-qam", "rename")
    rc, report = ci_json(repo)
    delta = checked(report)["delta"]
    assert rc == 0 and delta["status"] == "passed" and delta["reason"] == "renamed from alpha", report
    assert "alpha" not in checked(report)


def test_renames_and_copies_name_both_paths() -> None:
    assert parse_name_status_z(b"C075\0a/x\0b/y\0") == [Change("C", "b/y", "a/x")]
    assert Change("R", "docs/c.yaml", "templates/alpha/tests/cases.yaml").paths() == (
        "templates/alpha/tests/cases.yaml", "docs/c.yaml")


def test_a_template_says_why_it_has_no_tests_or_is_refused(tmp_path: Path) -> None:
    folder = write_template(tmp_path, "solo", cases=False)
    with pytest.raises(ValidationFailed) as caught:  # the release's validation refuses it too
        load_template(folder, "templates/solo/agent.yaml")
    [problem] = caught.value.problems
    assert isinstance(problem, InputError) and problem.where == "templates/solo/tests/cases.yaml"
    assert "spec.tests.none" in problem.message

    (folder / "agent.yaml").write_text((folder / "agent.yaml").read_text() + REASON)
    t = load_template(folder, "templates/solo/agent.yaml")
    assert untested_problem(folder, t.raw, "templates/solo/agent.yaml") is None

    (folder / "tests").mkdir()
    (folder / "tests/cases.yaml").write_text("cases: []\n")
    assert untested_problem(folder, load_template(folder).raw, "templates/solo/agent.yaml") is None


@pytest.mark.parametrize("reason", ['""', '"   "', "{}", '"short"'])
def test_an_empty_or_token_reason_is_refused_by_the_schema(tmp_path: Path, reason: str) -> None:
    folder = write_template(tmp_path, "solo", cases=False)
    (folder / "agent.yaml").write_text((folder / "agent.yaml").read_text() + f"  tests:\n    none: {reason}\n"
                                       if reason != "{}" else (folder / "agent.yaml").read_text() + "  tests: {}\n")
    with pytest.raises(ValidationFailed, match="spec.tests"):
        load_template(folder, "templates/solo/agent.yaml")


def test_ci_check_accepts_a_template_that_says_why(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    folder = write_template(repo, "solo", cases=False)
    (folder / "agent.yaml").write_text((folder / "agent.yaml").read_text() + REASON)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "a template without case tests, and why")
    rc, report = ci_json(repo)
    assert rc == 0 and checked(report)["solo"]["status"] == "passed", report
