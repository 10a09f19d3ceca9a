"""`agentfactory template`: check templates and hash vendored sources, without building."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from ..digest import tree_sha256
from ..errors import AgentFactoryError, ValidationFailed
from ..policy_select import policy_engine_options
from ..template import MANIFEST, folder_name_problem, load_template
from .common import EXIT_PROBLEMS, SuggestingGroup, err, handle_errors, json_option, out, policies_option, print_json


@click.group(cls=SuggestingGroup)
def template() -> None:
    """Validate templates and compute vendored-source hashes."""


@template.command("validate")
@click.argument("folders", nargs=-1, required=True, type=click.Path(file_okay=False, path_type=Path))
@policies_option
@policy_engine_options
@json_option
@handle_errors
def validate(folders: tuple[Path, ...], policies_dir: Path | None, as_json: bool) -> None:
    """Check each template FOLDER without building it: the schema, the source rules, the static
    security checks and the template policy."""
    from ..policy import template_input
    from ..policy_select import open_engine
    from ..sourcescan import scan_template

    engine = open_engine(policies_dir)
    report = []
    for folder in folders:
        try:
            where = f"{folder}/{MANIFEST}"
            t = load_template(folder, where)
            misnamed = folder_name_problem(t, where)
            findings = [f.to_json() for f in scan_template(t)]
            decision = engine.decide("template", template_input(t, findings, None, None, path=str(folder)))
            report.append({"path": str(folder), "name": t.name, "version": t.version, "findings": findings,
                           "errors": ([str(misnamed)] if misnamed else [])
                                     + [f"{where}: policy: {m}" for m in decision.deny]})
        except ValidationFailed as exc:
            report.append({"path": str(folder), "errors": [str(p) for p in exc.problems]})
        except AgentFactoryError as exc:
            report.append({"path": str(folder), "errors": [str(exc)]})
    if as_json:
        print_json({"templates": report})
    else:
        for r in report:
            if r["errors"]:
                for e in r["errors"]:
                    err.print(f"[red]✗[/red] {e}", highlight=False)
            else:
                out.print(f"[green]✓[/green] {r['path']}: {r['name']} {r['version']}")
    if any(r["errors"] for r in report):
        sys.exit(EXIT_PROBLEMS)


@template.command("hash")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@json_option
@handle_errors
def hash_(path: Path, as_json: bool) -> None:
    """Print the source hash of a vendored file or folder (the `sha256` of a dependency)."""
    digest = tree_sha256(path)
    if as_json:
        print_json({"path": str(path), "sha256": digest})
    else:
        out.print(digest, markup=False)
