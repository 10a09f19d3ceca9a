"""`agentfactory ci check`: the pull-request check, for GitHub Actions or a terminal.

Exit codes: 0 every changed template passes, 1 one fails (each reason is printed, annotated on its
file inside Actions), 2 bad input (an unknown base, a shallow clone without it, no OSV database).
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from agentfactory.cli.common import (
    EXIT_OK,
    EXIT_PROBLEMS,
    SuggestingGroup,
    handle_errors,
    json_option,
    out,
    policies_option,
    print_json,
)
from agentfactory.fsutil import atomic_write
from agentfactory.policy_select import policy_engine_options
from agentfactory.scan.base import OSV_DB_ENV


@click.group("ci", cls=SuggestingGroup)
def ci() -> None:
    """Checks for pull requests and CI jobs."""


@ci.command("check")
@click.option("--base", default=None, envvar="AGENTFACTORY_CI_BASE", metavar="REF",
              help="Compare with this ref (default: origin/$GITHUB_BASE_REF in a pull request, else origin/main).")
@click.option("--templates", "templates_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("templates"), show_default=True, help="Folder holding one folder per template.")
@click.option("--osv-db", type=click.Path(file_okay=False, path_type=Path), default=None,
              help=f"OSV database folder (default: ${OSV_DB_ENV}, else $AGENTFACTORY_HOME/osv).")
@click.option("--jobs", "-j", type=click.IntRange(1, 64), default=None, help="Parallel builds (default: CPUs).")
@policies_option
@policy_engine_options
@json_option
@click.option("--format", "fmt", type=click.Choice(["text", "json", "sarif", "junit"]), default=None,
              help="What to print: the summary (text, default), the JSON report, SARIF 2.1.0 (GitHub code scanning) "
                   "or JUnit XML.")
@click.option("--sarif", "sarif_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              envvar="AGENTFACTORY_CI_SARIF", help="Also write the SARIF 2.1.0 report to FILE.")
@click.option("--junit", "junit_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              envvar="AGENTFACTORY_CI_JUNIT", help="Also write the JUnit XML report to FILE.")
@handle_errors
def check_cmd(base: str | None, templates_dir: Path, osv_db: Path | None, jobs: int | None,
              policies_dir: Path | None, as_json: bool, fmt: str | None, sarif_file: Path | None,
              junit_file: Path | None) -> None:
    """Run the pipeline, without publishing, on the templates changed since BASE (every template when
    policies/ changed), and report verdicts, policy messages, vulnerabilities and dependency changes.

    Inside GitHub Actions: a Markdown job summary, `::error` annotations on the template files and
    step outputs (checked, passed, failed, removed, failed-templates). Elsewhere: the same summary here.
    """
    import os

    from .check import check
    from .github import annotations_of, in_actions, log_text, markdown, publish, scrub

    if base is None:
        target = os.environ.get("GITHUB_BASE_REF")
        base = f"origin/{target}" if target else "origin/main"
    from agentfactory.sarif import dumps

    from .formats import junit, sarif

    if as_json and fmt not in (None, "json"):
        raise click.UsageError(f"--json and --format {fmt} ask for two outputs: give one")
    fmt = "json" if as_json else fmt or "text"
    report = check(templates_dir, base, policies_dir=policies_dir, osv_db=osv_db, jobs=jobs)
    if sarif_file is not None:
        atomic_write(sarif_file, dumps(sarif(report)).encode())
    if junit_file is not None:
        atomic_write(junit_file, junit(report).encode())
    if fmt == "sarif":
        sys.stdout.write(dumps(sarif(report)))
    elif fmt == "junit":
        sys.stdout.write(junit(report))
    elif fmt == "json":
        print_json(report.to_json())
    elif in_actions():
        publish(report)
        sys.stdout.write(log_text(markdown(report)))  # the pull request's text, with workflow commands stopped
    else:
        sys.stdout.write(markdown(report))
        for a in annotations_of(report):
            out.print(f"error: {scrub(a.file)}{':' + str(a.line) if a.line else ''}: {scrub(a.message)}",
                      markup=False, highlight=False)
    sys.exit(EXIT_PROBLEMS if report.failed else EXIT_OK)
