"""What every subcommand shares: exit codes, consoles, error handling, the --store option.

Exit codes (documented in docs/cli.md):
  0  success
  1  the command ran and found problems (a template failed, a check denied)
  2  usage, configuration or input error (bad flag, store URL, reference, file)
  70 internal error (a bug: please report it)
"""

from __future__ import annotations

import functools
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.markup import escape

from ..errors import AgentFactoryError

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 70

# Off a terminal (CI logs, pipes) there is no width to respect: keep digests whole.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, soft_wrap=True, width=None if sys.stderr.isatty() else 200)

F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(func: F) -> F:
    """Turn our errors into one clear line on stderr and a documented exit code."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except AgentFactoryError as exc:
            err.print(f"[red]error:[/red] {escape(str(exc))}", markup=True, highlight=False)
            sys.exit(EXIT_USAGE)
        except (click.exceptions.Exit, click.ClickException, KeyboardInterrupt, SystemExit):
            raise
        except Exception as exc:
            err.print(f"internal error: {type(exc).__name__}: {exc}", markup=False)
            sys.exit(EXIT_INTERNAL)

    return wrapper  # type: ignore[return-value]


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=False) + "\n")


store_option = click.option(
    "--store", "store_url", metavar="URL", envvar="AGENTFACTORY_STORE", default=None,
    help="Artifact store: oci-layout:PATH (default: $AGENTFACTORY_HOME/store) or oci://HOST/REPO.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document for machines.")
policies_option = click.option(
    "--policies", "policies_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    envvar="AGENTFACTORY_POLICIES", help="Rego policies folder (default: ./policies).")
