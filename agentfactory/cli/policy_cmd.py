"""`agentfactory policy`: run the Rego unit tests, and evaluate a policy on an input document."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..errors import InputError
from ..jsonsafe import load_json_object
from ..policy import POLICY_NAMES
from ..policy_select import open_engine, policy_engine_options
from ..yamlsafe import load_yaml
from .common import (
    EXIT_OK,
    EXIT_PROBLEMS,
    SuggestingGroup,
    err,
    handle_errors,
    json_option,
    out,
    policies_option,
    print_json,
)

MAX_INPUT_FILE_BYTES = 4 * 1024 * 1024


@click.group(cls=SuggestingGroup)
def policy() -> None:
    """Rego policies: unit tests and decisions."""


@policy.command("test")
@policies_option
@policy_engine_options
@json_option
@handle_errors
def test(policies_dir: Path | None, as_json: bool) -> None:
    """Run the Rego unit tests (test_* rules in *_test.rego). Exit 1 if any fails."""
    report = open_engine(policies_dir).run_tests()
    if as_json:
        print_json({"ok": report.ok, "errors": report.errors,
                    "results": [r.__dict__ for r in report.results]})
    else:
        for e in report.errors:
            err.print(f"[red]error:[/red] {e}", highlight=False)
        for r in report.results:
            mark = "[green]PASS[/green]" if r.ok else "[red]FAIL[/red]"
            out.print(f"{mark} data.{r.package}.{r.name}" + (f"  ({r.detail})" if r.detail else ""), highlight=False)
        passed = sum(r.ok for r in report.results)
        out.print(f"{passed} passed, {len(report.results) - passed} failed", highlight=False)
    sys.exit(EXIT_OK if report.ok else EXIT_PROBLEMS)


@policy.command("eval")
@click.option("--input", "input_path", type=click.Path(dir_okay=False, exists=True, path_type=Path), required=True,
              help="The input document (JSON or YAML).")
@click.option("--policy", "policy_name", type=click.Choice(POLICY_NAMES), default="template", show_default=True)
@policies_option
@policy_engine_options
@json_option
@handle_errors
def evaluate(input_path: Path, policy_name: str, policies_dir: Path | None, as_json: bool) -> None:
    """Print the decision of a policy on an input document. Exit 0 when allowed, 1 when denied."""
    size = input_path.stat().st_size
    if size > MAX_INPUT_FILE_BYTES:
        raise InputError(str(input_path), f"{size} bytes; the limit is {MAX_INPUT_FILE_BYTES}")
    raw = input_path.read_bytes()
    if input_path.suffix == ".json":
        document = load_json_object(raw, str(input_path), max_bytes=MAX_INPUT_FILE_BYTES, what="input")
    else:
        document = load_yaml(raw, str(input_path)).data
    if not isinstance(document, dict):
        raise InputError(str(input_path), "the input must be a mapping (JSON object)")
    decision = open_engine(policies_dir).decide(policy_name, document)
    if as_json:
        print_json(decision.to_json())
    else:
        out.print(("[green]allow[/green]" if decision.allow else "[red]deny[/red]") + f"  ({policy_name} policy)")
        for message in decision.deny:
            out.print(f"  - {message}", highlight=False)
    sys.exit(EXIT_OK if decision.allow else EXIT_PROBLEMS)


@policy.command("bundle")
@click.option("--output", "-o", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Where to write the bundle (.tar.gz) for `opa run --server --bundle FILE`.")
@policies_option
@json_option
@handle_errors
def bundle(output: Path, policies_dir: Path | None, as_json: bool) -> None:
    """Build the OPA bundle of the policies (its revision is their digest, checked by --policy-engine opa)."""
    from ..policy import default_policy_dir
    from ..policy_bundle import build_bundle

    revision = build_bundle(policies_dir or default_policy_dir(), output)
    if as_json:
        print_json({"bundle": str(output), "revision": revision})
    else:
        out.print(f"{output}  revision {revision}", highlight=False)
