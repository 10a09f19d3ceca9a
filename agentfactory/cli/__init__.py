"""`agentfactory`: one command, with subcommands contributed by each plane.

The trust core owns `store`, `template`, `keys`, `trust` and `verify`; `pipelines`, `admission` and `sandbox_runtime`
register theirs through the `agentfactory.cli` entry-point group, so that this package never
imports them (dependencies point inwards).
"""

from __future__ import annotations

import sys
from importlib.metadata import entry_points

import click

from .. import __version__
from .common import EXIT_INTERNAL, err
from .keys_cmd import keys
from .store_cmd import store
from .template_cmd import template
from .verify_cmd import trust, verify_cmd


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="agentfactory")
def cli() -> None:
    """Agent Factory: a supply chain for WebAssembly (WASI) agents.

    State of the embedded backends lives in $AGENTFACTORY_HOME (default: ./.agentfactory).
    """


cli.add_command(store)
cli.add_command(template)
cli.add_command(keys)
cli.add_command(verify_cmd)
cli.add_command(trust)


def _load_plugins() -> None:
    for ep in entry_points(group="agentfactory.cli"):
        if ep.name in cli.commands:
            continue
        try:
            cli.add_command(ep.load(), ep.name)
        except Exception as exc:  # a broken plane must not take the others down
            err.print(f"warning: subcommand {ep.name!r} unavailable: {type(exc).__name__}: {exc}",
                      markup=False)


def main() -> None:
    _load_plugins()
    try:
        cli(standalone_mode=True)
    except Exception as exc:  # pragma: no cover - handle_errors catches ours
        err.print(f"internal error: {exc}", markup=False)
        sys.exit(EXIT_INTERNAL)
