"""What every subcommand shares: exit codes, consoles, error handling, the --store option.

Exit codes (documented in docs/cli.md):
  0  success
  1  the command ran and found problems (a template failed, a check denied)
  2  usage, configuration or input error (bad flag, store URL, reference, file)
  70 internal error (a bug: please report it)
"""

from __future__ import annotations

import difflib
import errno
import functools
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console
from rich.markup import escape

from ..errors import AgentFactoryError

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE, EXIT_INTERNAL = 0, 1, 2, 70
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for a command stopped by Ctrl-C

# Off a terminal (CI logs, pipes) there is no width to respect: keep digests whole.
out = Console(highlight=False, emoji=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, emoji=False, soft_wrap=True, width=None if sys.stderr.isatty() else 200)

F = TypeVar("F", bound=Callable[..., Any])


def os_error_message(exc: OSError) -> str | None:
    """`PATH: reason` for an OSError about a path (a file or folder the user named, or one under a folder they
    named), None for the others. Permissions, missing files, a file where a folder belongs and a read-only file
    system are input or configuration problems (exit 2), not bugs (exit 70)."""
    if exc.filename is None:
        return None
    where = os.fsdecode(exc.filename)
    if exc.filename2 is not None:
        where += f" → {os.fsdecode(exc.filename2)}"
    reason = exc.strerror or (errno.errorcode.get(exc.errno, "") if exc.errno else "") or str(exc)
    hint = {errno.EROFS: "the file system is read-only",
            errno.EACCES: "check the permissions or give another path",
            errno.EPERM: "check the permissions or give another path",
            errno.ENOTDIR: "a file is where a folder belongs: check the path",
            errno.ENOENT: "check the path",
            errno.ENOSPC: "free some space"}.get(exc.errno or 0)
    if exc.errno == errno.EEXIST and exc.filename2 is None and os.path.lexists(where) and not os.path.isdir(where):
        hint = "a file is where a folder belongs: check the path"  # mkdir(parents=True) meeting a file
    return f"{where}: {reason}" + (f" ({hint})" if hint else "")


def handle_errors(func: F) -> F:
    """Turn our errors into one clear line on stderr and a documented exit code.

    An OSError naming a path is an input or configuration error (exit 2), never an internal one (70).
    """

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except AgentFactoryError as exc:
            err.print(f"[red]error:[/red] {escape(str(exc))}", markup=True, highlight=False)
            sys.exit(EXIT_USAGE)
        except (click.exceptions.Exit, click.ClickException, KeyboardInterrupt, SystemExit):
            raise
        except OSError as exc:
            if exc.errno == errno.EPIPE:  # stdout's reader went away: the console script ends quietly
                raise
            message = os_error_message(exc)
            if message is None:
                err.print(f"internal error: {type(exc).__name__}: {exc}", markup=False)
                sys.exit(EXIT_INTERNAL)
            err.print(f"[red]error:[/red] {escape(message)}", markup=True, highlight=False)
            sys.exit(EXIT_USAGE)
        except Exception as exc:
            err.print(f"internal error: {type(exc).__name__}: {exc}", markup=False)
            sys.exit(EXIT_INTERNAL)

    return wrapper  # type: ignore[return-value]


class SuggestingGroup(click.Group):
    """A group that answers a mistyped subcommand with the closest names ("did you mean …?")."""

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[str | None, click.Command | None,
                                                                              list[str]]:
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as exc:
            name = click.utils.make_str(args[0]) if args else ""
            if not name or name.startswith("-"):
                raise
            others = [c for c in self.list_commands(ctx) if c != name]  # a plane that failed to load is not a typo
            close = difflib.get_close_matches(name, others, n=2, cutoff=0.75)
            if not close:
                raise
            choices = " or ".join(repr(c) for c in close)
            raise click.UsageError(f"No such command {name!r}. Did you mean {choices}?", ctx) from exc


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=False) + "\n")


store_option = click.option(
    "--store", "store_url", metavar="URL", envvar="AGENTFACTORY_STORE", default=None,
    help="Artifact store: oci-layout:PATH (default: $AGENTFACTORY_HOME/store) or oci://HOST/REPO.")
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document for machines.")
policies_option = click.option(
    "--policies", "policies_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
    envvar="AGENTFACTORY_POLICIES", help="Rego policies folder (default: ./policies).")
