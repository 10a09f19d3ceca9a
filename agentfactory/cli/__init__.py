"""`agentfactory`: one command, with subcommands contributed by each plane.

The trust core owns `store`, `template`, `keys`, `trust` and `verify`; `pipelines`, `admission` and `sandbox_runtime`
register theirs through the `agentfactory.cli` entry-point group, so that this package never
imports them (dependencies point inwards).
"""

from __future__ import annotations

import errno
import importlib
import os
import sys

import click

from .. import __version__
from .common import EXIT_INTERNAL, EXIT_INTERRUPTED, EXIT_PROBLEMS, EXIT_USAGE, SuggestingGroup, err, os_error_message

# Subcommands are imported only when invoked: each brings heavy libraries (cryptography,
# cyclonedx, prometheus) that the others do not need, and start-up time is user-visible.
CORE_COMMANDS = {
    "store": "agentfactory.cli.store_cmd:store",
    "template": "agentfactory.cli.template_cmd:template",
    "keys": "agentfactory.cli.keys_cmd:keys",
    "verify": "agentfactory.cli.verify_cmd:verify_cmd",
    "trust": "agentfactory.cli.verify_cmd:trust",
    "policy": "agentfactory.cli.policy_cmd:policy",
    "tlog": "agentfactory.cli.tlog_cmd:tlog",
    "audit": "agentfactory.cli.audit_cmd:audit",
    "scan": "agentfactory.cli.scan_cmd:scan_cmd",
    "osv": "agentfactory.cli.scan_cmd:osv",
    "vex": "agentfactory.cli.scan_cmd:vex",
    "cosign": "agentfactory.cli.cosign_cmd:cosign",
}


class LazyGroup(SuggestingGroup):
    """A group whose subcommands are "module:attribute" strings, loaded on first use."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.lazy: dict[str, str] = dict(CORE_COMMANDS)
        self._plugins_found = False

    def _find_plugins(self) -> None:
        if not self._plugins_found:
            self._plugins_found = True
            from importlib.metadata import entry_points  # ~30 ms: only when a plane's command is asked for

            for ep in entry_points(group="agentfactory.cli"):
                self.lazy.setdefault(ep.name, ep.value)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._find_plugins()
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.commands:
            return self.commands[name]
        if name not in self.lazy:
            self._find_plugins()
        target = self.lazy.get(name)
        if target is None:
            return None
        module, _, attr = target.partition(":")
        try:
            command = getattr(importlib.import_module(module), attr)
        except Exception as exc:  # a broken plane must not take the others down
            err.print(f"warning: subcommand {name!r} unavailable: {type(exc).__name__}: {exc}", markup=False)
            return None
        self.add_command(command, name)
        return command  # type: ignore[no-any-return]


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="agentfactory")
def cli() -> None:
    """Agent Factory: a supply chain for WebAssembly (WASI) agents.

    State of the embedded backends lives in $AGENTFACTORY_HOME (default: ./.agentfactory).
    """


def _reader_gone() -> None:
    """The reader of stdout went away (`agentfactory … | head`): stop quietly, as click does, without a
    traceback at interpreter shutdown."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    sys.exit(EXIT_PROBLEMS)


def main() -> None:
    """The console script. Click's standalone mode would turn Ctrl-C into `Aborted!` and exit 1, which
    scripts cannot tell from "found problems": an interrupted command exits 130 (128 + SIGINT), every
    command alike, including plugin ones and long-running servers."""
    try:
        try:
            rv = cli.main(standalone_mode=False)
        finally:
            sys.stdout.flush()  # inside the try: a closed pipe is reported here, not at shutdown
    except click.exceptions.Abort as exc:
        if isinstance(exc.__cause__, KeyboardInterrupt):
            sys.stderr.write("interrupted\n")
            sys.exit(EXIT_INTERRUPTED)
        sys.stderr.write("Aborted!\n")  # end of input at a prompt, or a refused confirmation
        sys.exit(EXIT_PROBLEMS)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(EXIT_INTERRUPTED)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except OSError as exc:
        if exc.errno == errno.EPIPE:
            _reader_gone()
        message = os_error_message(exc)
        err.print(f"error: {message}" if message else f"internal error: {type(exc).__name__}: {exc}", markup=False)
        sys.exit(EXIT_USAGE if message else EXIT_INTERNAL)
    except Exception as exc:  # pragma: no cover - handle_errors catches ours
        err.print(f"internal error: {type(exc).__name__}: {exc}", markup=False)
        sys.exit(EXIT_INTERNAL)
    sys.exit(rv if isinstance(rv, int) else 0)
