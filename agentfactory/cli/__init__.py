"""`agentfactory`: one command, with subcommands contributed by each plane.

The trust core owns `store`, `template`, `keys`, `trust` and `verify`; `pipelines`, `admission` and `sandbox_runtime`
register theirs through the `agentfactory.cli` entry-point group, so that this package never
imports them (dependencies point inwards).

Start-up is user-visible (issue 23), so a command's module is imported only when that command runs:
`--help` lists the core commands from CORE_HELP, and the planes' entry points are read by
`plugins.find_commands` without importlib.metadata.
"""

from __future__ import annotations

import errno
import importlib
import os
import sys

import click

from .. import __version__
from . import collector
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
# The first paragraph of each core command's help, for `agentfactory --help` without importing them all
# (~0.15 s); tests/unit/test_cli_lazy.py checks it against the commands' own docstrings.
CORE_HELP = {
    "store": "List and fetch agents in the artifact store.",
    "template": "Validate templates and compute vendored-source hashes.",
    "keys": "Signing keys: local keyring (default), Vault/OpenBao Transit, or cosign. See docs/keys.md.",
    "verify": "May REF run? REF: name@sha256:…, name:version, name, a path to a .wasm file, or a full registry "
              "reference oci://HOST/PREFIX/NAME@sha256:….",
    "trust": "Trust policies: which keys, builders and repositories the verifier trusts.",
    "policy": "Rego policies: unit tests and decisions.",
    "tlog": "The embedded transparency log (Rekor v1 compatible).",
    "audit": "Audit the transparency log: search and verify entries, monitor its history, account for our keys.",
    "scan": "Scan TARGET for known vulnerabilities: a CycloneDX SBOM file, or a stored agent (name@sha256:…, "
            "name:version, name), whose signed SBOM is verified first.",
    "osv": "The embedded matcher's offline OSV database.",
    "vex": "VEX documents: say, and sign, why a vulnerability does not affect an agent.",
    "cosign": "Interoperability with cosign and the Sigstore ecosystem (docs/evidence.md).",
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
            from .plugins import find_commands  # only when a plane's command is asked for

            for name, target in find_commands().items():
                self.lazy.setdefault(name, target)

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._find_plugins()
        return sorted(set(super().list_commands(ctx)) | set(self.lazy))

    def resolve_command(self, ctx: click.Context, args: list[str]) -> tuple[str | None, click.Command | None,
                                                                              list[str]]:
        """The subcommand, its module imported: start-up is over, so the collector runs again (collector.py)."""
        try:
            return super().resolve_command(ctx, args)
        finally:
            collector.resume()

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

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list of `--help`: core commands from CORE_HELP, unimported; the planes' commands
        (whose help only their modules hold) are imported, as click does for every command."""
        shown: dict[str, click.Command] = {}
        for name in self.list_commands(ctx):
            if name in CORE_HELP and name not in self.commands:  # a stand-in that only carries the help
                shown[name] = click.Command(name, help=CORE_HELP[name])
                continue
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                shown[name] = command
        if not shown:
            return
        limit = formatter.width - 6 - max(len(name) for name in shown)
        rows = [(name, command.get_short_help_str(limit)) for name, command in shown.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


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
    command alike, including plugin ones and long-running servers.

    The collector is paused until the subcommand is imported (collector.py): a command runs with it on."""
    collector.pause()
    try:
        try:
            rv = cli.main(standalone_mode=False)
        finally:
            collector.resume()  # a run that never reached a subcommand (`--help`, a usage error)
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
