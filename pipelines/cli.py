"""`agentfactory pipeline run`: the supply-chain pipeline from the command line."""

from __future__ import annotations

import sys
import threading
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.table import Table

from agentfactory.cli.common import (
    EXIT_OK,
    EXIT_PROBLEMS,
    err,
    handle_errors,
    json_option,
    out,
    policies_option,
    print_json,
    store_option,
)
from agentfactory.cli.keys_cmd import cosign_key_context_option, cosign_key_of
from agentfactory.errors import ConfigError
from agentfactory.keys import KEYLESS, LocalKeyring, open_provider
from agentfactory.policy_select import open_engine, policy_engine_options
from agentfactory.provenance import DEFAULT_BUILDER_ID
from agentfactory.scan.base import OSV_DB_ENV, SCANNER_NAMES
from agentfactory.scan.gate import FAIL_ON, Gate
from agentfactory.store import open_store
from agentfactory.tlog.connect import open_tlog

if TYPE_CHECKING:
    from .run import PipelineReport, Scanning, Signing

_STYLE = {"built": "green", "unchanged": "cyan", "failed": "red"}


@click.group()
def pipeline() -> None:
    """Build, test and publish agent templates."""


class _LiveBoard:
    """A live table on stderr: one row per template and the stage it is in."""

    def __init__(self) -> None:
        self.rows: dict[str, str] = {}
        self.lock = threading.Lock()
        from rich.live import Live  # only on a terminal

        self.live = Live(self._render(), console=err, transient=True, refresh_per_second=8)

    def _render(self) -> Table:
        table = Table(show_header=False, box=None, padding=(0, 1))
        for path, stage in self.rows.items():
            style = _STYLE.get(stage, "yellow")
            table.add_row(path, f"[{style}]{stage}…[/{style}]" if stage not in _STYLE else f"[{style}]{stage}")
        return table

    def update(self, path: str, stage: str) -> None:
        with self.lock:
            self.rows[path] = stage
            self.live.update(self._render())


def summary_table(report: PipelineReport) -> Table:
    table = Table(title="pipeline summary", title_justify="left")
    for col in ("template", "version", "digest", "size", "tests", "signed", "result"):
        table.add_column(col, justify="right" if col in ("size", "tests", "signed") else "left",
                         overflow="fold", min_width=None if col == "digest" else len(col))
    for t in report.templates:
        style = _STYLE[t.status]
        tests = f"{t.tests['passed']}/{t.tests['total']}" if t.tests else "-"
        signed = "re-signed" if t.evidence.get("resigned") else "✓" if t.evidence.get("signed") else "-"
        table.add_row(t.name, t.version or "-", t.digest or "-", f"{t.size:,}" if t.size else "-", tests, signed,
                      f"[{style}]{t.status}[/{style}]")
    return table


@pipeline.command("run")
@click.option("--templates", "templates_dir", type=click.Path(file_okay=False, path_type=Path),
              default=Path("templates"), show_default=True, help="Folder holding one folder per template.")
@click.option("--changed-since", metavar="GIT_REF", help="Only templates changed since this Git ref.")
@click.option("--jobs", "-j", type=click.IntRange(1, 64), default=None, help="Parallel builds (default: CPUs).")
@click.option("--no-tests", is_flag=True, help="Skip the templates' tests/cases.yaml.")
@click.option("--key-provider", "provider", type=click.Choice(["local", "vault", "cosign", KEYLESS]), default=None,
              envvar="AGENTFACTORY_KEY_PROVIDER",
              help="Who signs: the local keyring (default), Vault Transit, cosign (the cosign binary with a cosign "
                   "key file or hashivault://NAME: --cosign-key), or sigstore (keyless, with the CI's "
                   "OIDC identity: GitHub Actions with id-token: write).")
@cosign_key_context_option
@click.option("--sigstore-instance", type=click.Choice(["production", "staging"]), default="production",
              envvar="AGENTFACTORY_SIGSTORE_INSTANCE", show_default=True,
              help="The Sigstore instance that certifies and logs keyless signatures.")
@click.option("--builder-id", envvar="AGENTFACTORY_BUILDER_ID", default=DEFAULT_BUILDER_ID, show_default=True,
              help="The builder id written into provenance (trust policies name it).")
@click.option("--sbom-root", "sbom_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also write each SBOM to ROOT/sbom/<agent>/<version>.cdx.json (releases: --sbom-root .).")
@click.option("--no-sign", is_flag=True, help="Publish without SBOM, provenance or signatures (verify will refuse).")
@click.option("--resign", is_flag=True,
              help="Sign unchanged artifacts again: a new signature, attestations and log entries (unchanged "
                   "artifacts are re-signed anyway when their key is revoked or no longer the active key).")
@click.option("--tlog", "tlog_url", envvar="AGENTFACTORY_TLOG", default="embedded", show_default=True,
              metavar="embedded|none|URL",
              help="Transparency log every signature is recorded in: the embedded log ($AGENTFACTORY_HOME/tlog), "
                   "none, or a Rekor v1 URL (then --tlog-key).")
@click.option("--tlog-key", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              envvar="AGENTFACTORY_TLOG_KEY", help="The Rekor log's public key (PEM), pinned: required with a URL.")
@click.option("--scanner", "scanners", multiple=True, type=click.Choice(SCANNER_NAMES),
              help="Scanner to run (repeatable). Default: the embedded OSV matcher, plus grype and trivy when on PATH.")
@click.option("--osv-db", type=click.Path(file_okay=False, path_type=Path), default=None,
              help=f"OSV database folder (default: ${OSV_DB_ENV}, else $AGENTFACTORY_HOME/osv).")
@click.option("--vex", "vex", multiple=True, type=click.Path(exists=True, path_type=Path),
              help="Signed VEX document, or a folder of them (repeatable); signer must be a pipeline key.")
@click.option("--allow-unsigned-vex", is_flag=True, help="Also believe plain (unsigned) VEX documents.")
@click.option("--vex-trust-policy", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              envvar="AGENTFACTORY_TRUST_POLICY",
              help="The TrustPolicy whose keys and keyless identities may sign VEX (default: the signing keys).")
@click.option("--fail-on", type=click.Choice(FAIL_ON), default=None,
              help="Lowest severity that blocks (default: the artifact policy's blocking_severities: high).")
@click.option("--ignore-unfixed", is_flag=True, default=None,
              help="Let findings with no published fix through (the artifact policy's ignore_unfixed).")
@policies_option
@policy_engine_options
@store_option
@json_option
@handle_errors
def run(templates_dir: Path, changed_since: str | None, jobs: int | None, no_tests: bool, provider: str | None,
        sigstore_instance: str, builder_id: str, sbom_dir: Path | None, no_sign: bool, resign: bool, tlog_url: str,
        tlog_key: Path | None, scanners: tuple[str, ...], osv_db: Path | None, vex: tuple[Path, ...],
        allow_unsigned_vex: bool, vex_trust_policy: Path | None, fail_on: str | None, ignore_unfixed: bool | None,
        policies_dir: Path | None, store_url: str | None, as_json: bool) -> None:
    """Discover → validate → build → test → sbom → scan → sign → log → publish every template.

    Exit code 0 when every template built or was unchanged, 1 when any failed.
    """
    if resign and no_sign:
        raise click.UsageError("--resign and --no-sign contradict each other: give one")
    # Here, not at the top: `agentfactory --help` imports this module for its one-line help (issue 23).
    from .run import Scanning, Signing, run_pipeline

    store = open_store(store_url)
    signing = None
    overrides: dict[str, object] = {}
    if fail_on is not None:
        overrides["blocking_severities"] = Gate(fail_on).severities
    if ignore_unfixed:
        overrides["ignore_unfixed"] = True
    # A policy that does not compile refuses every template, saying why.
    engine = open_engine(policies_dir, config=overrides)
    if not no_sign:
        # The human report shows the gate the artifact policy will apply (its config, with the overrides).
        gate = Gate.from_policy(engine.data.get("agentfactory", {}).get("config") if isinstance(engine.data, dict)
                                else None)
        from agentfactory.trust import load_trust_policy

        scanning = Scanning(scanners, osv_db, vex, not allow_unsigned_vex, gate.fail_on, gate.ignore_unfixed,
                            gate.exactly, load_trust_policy(vex_trust_policy) if vex_trust_policy else None)
        if provider == KEYLESS:
            signing = replace(_keyless_signing(sigstore_instance, builder_id, sbom_dir, tlog_url, scanning),
                              resign=resign)
        else:
            tlog, tlog_pem = open_tlog(tlog_url, tlog_key, defer=True)  # opened when something is signed
            keys = open_provider(provider, cosign_key=cosign_key_of())
            if keys.name == "cosign":  # before building: a key cosign cannot use (password, file, Vault, ECDSA)
                keys.public_keys()
            signing = Signing(keys, builder_id, sbom_dir, tlog, tlog_pem, scanning, resign=resign)
    board = _LiveBoard() if not as_json and err.is_terminal else None
    if board:
        with board.live:
            report = run_pipeline(templates_dir, store, changed_since=changed_since, jobs=jobs,
                                  progress=board.update, run_tests=not no_tests, signing=signing,
                                  engine=engine)
    else:
        def plain(path: str, stage: str) -> None:
            if not as_json:
                err.print(f"{path}: {stage}", markup=False, highlight=False)

        report = run_pipeline(templates_dir, store, changed_since=changed_since, jobs=jobs,
                              progress=plain, run_tests=not no_tests, signing=signing, engine=engine)
    if as_json:
        print_json(report.to_json())
    else:
        _print_report(report)
    sys.exit(EXIT_OK if report.ok else EXIT_PROBLEMS)


def _keyless_signing(instance: str, builder_id: str, sbom_dir: Path | None, tlog_url: str,
                     scanning: Scanning) -> Signing:
    """Keyless signing: the ambient OIDC identity is read now, so a job that cannot sign fails before
    building. Every bundle is logged in the instance's Rekor by the signing itself: no --tlog."""
    from agentfactory.keys.sigstore_keyless import KeylessSigner

    from .run import Signing

    source = click.get_current_context().get_parameter_source("tlog_url")
    explicit = (click.core.ParameterSource.COMMANDLINE, click.core.ParameterSource.ENVIRONMENT)
    if source in explicit and tlog_url != "none":
        raise ConfigError(f"--tlog (or AGENTFACTORY_TLOG) {tlog_url}: keyless signatures are logged in the "
                          f"Sigstore {instance} Rekor as they are made (each bundle holds its inclusion proof); "
                          f"with --key-provider {KEYLESS}, pass --tlog none or leave it out")
    signer = KeylessSigner("staging" if instance == "staging" else "production")
    # The local keyring signs nothing here: its public keys (if any) are what signed VEX is checked against.
    return Signing(LocalKeyring(), builder_id, sbom_dir, None, None, scanning, keyless=signer)


def _print_report(report: PipelineReport) -> None:
    out.print(summary_table(report))
    for t in report.templates:
        if t.evidence.get("resigned") and not t.errors:
            out.print(f"{t.path}: unchanged, signed again ({t.evidence['resigned']}): key "
                      f"{str(t.evidence.get('keyId', ''))[:16]}", markup=False)
        if t.scan_lines and (t.status == "failed" or (t.scan and (t.scan["findings"] or t.scan["unscanned"]))):
            out.print(f"{t.path}: vulnerability scan", markup=False)
            for line in t.scan_lines:
                out.print(f"  {line}", markup=False)
        for e in t.errors:
            err.print(f"[red]✗[/red] {e}", highlight=False)
    if report.skipped:
        out.print(f"{len(report.skipped)} template(s) unchanged since the given ref, not run: "
                  + ", ".join(report.skipped))
    if not report.templates:
        out.print("No templates to run.")
    counts = report.to_json()["summary"]
    out.print(f"store: {report.store} — built {counts['built']}, unchanged {counts['unchanged']}, "
              f"failed {counts['failed']}")
