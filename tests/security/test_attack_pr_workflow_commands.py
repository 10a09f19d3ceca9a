"""Attack: inside Actions, `ci check` printed the summary to the job log and wrote `failed-templates`
to $GITHUB_OUTPUT unescaped. A template folder named `x\\n::error …\\n::stop-commands::zz` put workflow
commands at the start of a log line (fake annotations, commands switched off for the rest of the job),
and a `failed=0` line in a value could overwrite the real output that later steps trust.

Every value from the pull request is now scrubbed of control characters before it reaches the log,
the summary or the outputs; the summary in the log runs inside `::stop-commands::<random>`; outputs use
the `name<<DELIMITER` syntax with a random delimiter; folder names that are not DNS labels are refused.
The runner is modelled as GitHub documents it: a line is a command when, after leading white space,
it starts with `::` (or holds the legacy `##[`), and nothing is a command between `::stop-commands::T`
and `::T::`.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from prcheck_fixtures import ci_check, git, make_repo, step_outputs

from pipelines.ci.check import CheckReport, DepChange, TemplateCheck
from pipelines.ci.github import log_text, markdown, output_lines, outputs, scrub

EVIL = "x\n::error title=pwned::owned\n::stop-commands::zz\n##[error]legacy"
EVIL_OLD = "old\n::error title=renamed::pwned\n::add-mask::ok"
EVIL_GONE = "gone\r::warning title=removed::pwned"
COMMAND = re.compile(r"::(?P<name>[^\s:]+)(?: (?P<props>[^:]*))?::(?P<data>.*)")


def runner_commands(text: str) -> list[str]:
    """The workflow commands the Actions runner would execute from this log text."""
    found, stop = [], None
    for line in re.split(r"\r\n|\r|\n", text):
        if stop is not None:
            if line.strip() == f"::{stop}::":
                stop = None
            continue
        stripped = line.lstrip()
        m = COMMAND.match(stripped) if stripped.startswith("::") else None
        if m and m.group("name") == "stop-commands":
            stop = m.group("data")
            continue
        if stripped.startswith("::") or "##[" in line:
            found.append(stripped)
    return found


def _manifest(name: str) -> str:
    return ("apiVersion: agentfactory.dev/v1alpha1\nkind: AgentTemplate\nmetadata:\n  name: " + name + "\n"
            "  version: 1.0.0\n  description: d\n  owners: [\"@example/team\"]\nspec:\n  language: wat\n"
            "  sources: [src/main.wat]\n  limits: {memoryMiB: 1, timeoutMs: 1000}\n")


def _odd_template(repo: Path, folder: str, name: str) -> None:
    path = repo / "templates" / folder
    (path / "src").mkdir(parents=True)
    (path / "src/main.wat").write_text(f";; {name}\n(module)\n")
    (path / "agent.yaml").write_text(_manifest(name))


@pytest.fixture
def hostile(tmp_path: Path) -> Path:
    """main holds two odd folders (from before folder names were checked); the pull request renames one,
    deletes the other, adds a third, and bumps alpha. The new odd name stops the check before any build."""
    repo = make_repo(tmp_path / "repo")
    _odd_template(repo, EVIL_OLD, "gamma")
    _odd_template(repo, EVIL_GONE, "gone")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "odd folders on main")
    git(repo, "branch", "-f", "main", "HEAD")
    git(repo, "mv", "--", f"templates/{EVIL_OLD}", "templates/gamma")
    git(repo, "rm", "-rq", "--", f"templates/{EVIL_GONE}")
    (repo / "templates" / EVIL).mkdir()
    (repo / "templates" / EVIL / "notes.txt").write_text("not even a template: its name alone is the attack\n")
    alpha = repo / "templates/alpha/agent.yaml"
    alpha.write_text(alpha.read_text().replace("version: 1.0.0", "version: 1.0.1"))
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "the attack")
    return repo


def test_no_text_from_the_pull_request_becomes_a_workflow_command(hostile: Path, tmp_path: Path) -> None:
    summary, output = tmp_path / "summary.md", tmp_path / "output.txt"
    done = ci_check(hostile, env={"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary),
                                  "GITHUB_OUTPUT": str(output)})
    assert done.returncode == 1, done.stdout + done.stderr
    commands = runner_commands(done.stdout) + runner_commands(done.stderr)
    assert commands, "the check's own annotations are missing"
    for c in commands:  # only the check's own annotations, each on a file of the pull request
        m = COMMAND.match(c)
        assert m and m.group("name") == "error", c
        assert m.group("props").startswith("file=templates/") and m.group("props").endswith(
            ",title=agentfactory ci check"), c
    # the refused folder is named, with its odd characters visible
    assert "must be a DNS label" in done.stdout and "'x\\n::error title=pwned" in done.stdout

    values = step_outputs(output.read_text())
    assert set(values) == {"checked", "passed", "failed", "removed", "failed-templates"}
    assert values["failed"] == "1" and values["removed"] == "1" and "\n" not in values["failed-templates"]
    assert values["failed-templates"].startswith("x\\x0a::error"), values  # nothing is built until it is renamed

    text = summary.read_text()
    assert not runner_commands(text) and not re.search("[\x00-\x09\x0b-\x1f\x7f-\x9f]", text)
    assert "`gone\\x0d::warning title=removed::pwned`" in text, text


def test_a_renamed_odd_folder_is_shown_inert(tmp_path: Path) -> None:
    """The name a template had on the base (from before names were checked) is text from Git too."""
    repo = make_repo(tmp_path / "repo")
    _odd_template(repo, EVIL_OLD, "gamma")
    (repo / "templates" / EVIL_OLD / "tests").mkdir()
    (repo / "templates" / EVIL_OLD / "tests/cases.yaml").write_text("cases: []\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "an odd folder on main")
    git(repo, "branch", "-f", "main", "HEAD")
    git(repo, "mv", "--", f"templates/{EVIL_OLD}", "templates/gamma")
    git(repo, "commit", "-qm", "rename it")
    summary = tmp_path / "summary.md"
    done = ci_check(repo, env={"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary),
                               "GITHUB_OUTPUT": str(tmp_path / "out")})
    assert done.returncode == 1, done.stdout + done.stderr  # the stand-in module exports no _start
    assert [c.split("::", 2)[1] for c in runner_commands(done.stdout + done.stderr)] == [
        "error file=templates/gamma/agent.yaml,title=agentfactory ci check"]
    text = summary.read_text()
    assert "renamed from old\\x0a::error title=renamed::pwned\\x0a::add-mask::ok" in text, text
    assert not runner_commands(text) and not re.search("[\x00-\x09\x0b-\x1f\x7f-\x9f]", text)


def test_values_that_try_to_break_out_are_scrubbed_or_refused() -> None:
    for evil in ("a\nb", "a\rb", "a\x85b", "a\u2028b", "a\x1b[31mb", "a##[error]b", "\ufeff::error::x"):
        clean = scrub(evil)
        assert not re.search("[\x00-\x1f\x7f-\x9f\u2028\u2029\ufeff]", clean) and "##[" not in clean, clean
    with pytest.raises(ValueError):
        output_lines({"failed-templates": "a\nfailed=0"})
    text = output_lines({"failed": "1", "failed-templates": "a,b"})
    delimiter = text.split("\n", 1)[0].split("<<", 1)[1]
    assert re.fullmatch(r"ghadelimiter_[0-9a-f]{32}", delimiter)
    assert step_outputs(text) == {"failed": "1", "failed-templates": "a,b"}
    assert output_lines({"a": "1"}) != output_lines({"a": "1"})  # a new delimiter every time


def test_every_field_of_the_report_is_scrubbed_in_the_summary_and_outputs() -> None:
    bad = "v\n::error::injected"
    t = TemplateCheck(f"templates/{bad}", bad, "failed", version=bad, base_version=bad, digest=bad,
                      errors=[bad, f"templates/{bad}/agent.yaml:3: {bad}"],
                      scan={"findings": [{"id": bad, "severity": bad, "package": bad, "fixedVersions": [bad]}],
                            "unscanned": [{"component": bad}]},
                      dependencies=[DepChange(bad, "added", None, {"version": bad, "license": bad})],
                      renamed_from=bad, reason=bad)
    report = CheckReport(bad, "a" * 40, "b" * 40, [t], recheck_paths=[bad])
    text = markdown(report)
    assert not runner_commands(text) and text.count("\n") == markdown(
        CheckReport("main", "a" * 40, "b" * 40, [TemplateCheck("t", "t", "failed", version="1", base_version="1",
                                                               digest="d", errors=["e", "f"], scan=t.scan,
                                                               dependencies=t.dependencies, renamed_from="r",
                                                               reason="r")], recheck_paths=["p"])).count("\n")
    assert "\n" not in outputs(report)["failed-templates"]
    wrapped = log_text(text)
    assert wrapped.startswith("::stop-commands::") and not runner_commands(wrapped)
    assert log_text("x") != log_text("x")  # a fresh token each time


def test_the_pipeline_refuses_an_odd_template_folder(tmp_path: Path) -> None:
    """The release's discovery refuses the folder too, naming it escaped (a message on stderr is read
    by the runner as well)."""
    from agentfactory.errors import InputError
    from agentfactory.template import discover

    (tmp_path / "templates").mkdir()
    _odd_template(tmp_path, EVIL, "evil")
    with pytest.raises(InputError, match="must be a DNS label") as caught:
        discover(tmp_path / "templates")
    assert "\n" not in str(caught.value) and "'x\\n::error title=pwned" in str(caught.value)
