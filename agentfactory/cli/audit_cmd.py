"""`agentfactory audit search|monitor|keys|verify`: what an auditor asks the transparency log.

Every answer is checked against the log's pinned public key (`--tlog-key`), never trusted because of where
it came from; see `agentfactory.tlog.audit` for what each check proves.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ..errors import ConfigError, InputError
from .common import EXIT_PROBLEMS, err, handle_errors, json_option, out, print_json, store_option

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric import ec

    from ..tlog.audit import AuditedEntry
    from ..tlog.base import TransparencyLog

F = TypeVar("F", bound=Callable[..., Any])
PUBLIC_KEY_FILE = "log-public-key.pem"


def tlog_options(func: F) -> F:
    func = click.option("--tlog-key", "tlog_key", type=click.Path(dir_okay=False, exists=True, path_type=Path),
                        default=None, help="The log's public key (PEM), pinned. Default for the embedded log: "
                                           "its log-public-key.pem; required with a URL.")(func)
    return click.option("--tlog", "tlog_url", default="embedded", show_default=True, metavar="embedded|URL",
                        help="The transparency log: the embedded one ($AGENTFACTORY_HOME/tlog) or a Rekor URL.")(func)


def _open_log(tlog_url: str, tlog_key: Path | None) -> tuple[TransparencyLog, ec.EllipticCurvePublicKey]:
    """The log and its pinned key: the embedded log's own public-key file, or the one given for a URL."""
    from ..tlog.log import EmbeddedLog, default_tlog_dir
    from ..tlog.note import load_log_public_key

    log: TransparencyLog
    if tlog_url == "embedded":
        log = EmbeddedLog(default_tlog_dir())
        key_path = tlog_key or default_tlog_dir() / PUBLIC_KEY_FILE
    else:
        from ..tlog.client import RekorClient

        if tlog_key is None:
            raise ConfigError(f"--tlog {tlog_url}: pin the log's public key with --tlog-key FILE")
        log, key_path = RekorClient(tlog_url), tlog_key
    return log, load_log_public_key(key_path.read_bytes(), str(key_path))


@click.group("audit")
def audit() -> None:
    """Audit the transparency log: search and verify entries, monitor its history, account for our keys."""


def _print_entries(entries: list[AuditedEntry]) -> None:
    out.print(f"{'INDEX':>6}  {'UUID':<12}  {'KIND':<12}  {'DIGEST/SUBJECT':<23}  {'KEY':<12}  "
              f"{'INTEGRATED':<20}  VERIFIED", markup=False)
    for e in entries:
        mark = "✓" if e.ok else "✗"
        reason = f" {e.reason}" if e.reason else ""
        out.print(f"{e.index:>6}  {e.uuid[:12]:<12}  {e.kind:<12}  {e.subject[:23]:<23}  {e.key_id[:12]:<12}  "
                  f"{e.time_iso:<20}  {mark}{reason}", markup=False)
    if not entries:
        out.print("no entries", markup=False)


@audit.command("search")
@click.option("--digest", default=None, metavar="sha256:HEX", help="Entries about this artifact digest.")
@click.option("--key", "key_id", default=None, metavar="KEYID", help="Entries signed by this key of ours "
                                                                     "(key id or a unique prefix).")
@click.option("--key-file", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="Entries signed by this public key (PEM).")
@click.option("--agent", default=None, metavar="NAME", help="Entries about this agent's versions (through the store).")
@click.option("--from", "first", type=click.IntRange(min=0), default=None, help="First log index of a range.")
@click.option("--to", "last", type=click.IntRange(min=0), default=None, help="Last log index of a range (inclusive).")
@click.option("--key-provider", default=None, help="Where --key ids are looked up: local or vault.")
@store_option
@tlog_options
@json_option
@handle_errors
def search(digest: str | None, key_id: str | None, key_file: Path | None, agent: str | None, first: int | None,
           last: int | None, key_provider: str | None, store_url: str | None, tlog_url: str, tlog_key: Path | None,
           as_json: bool) -> None:
    """Find entries and verify each (SET, inclusion proof, checkpoint, signature). Exit 1 if any fails.

    The criteria combine as an intersection; --agent resolves the agent's versions in the store (their
    digests, and the log records attached to them), because a dsse body keeps only hashes.
    """
    from ..store import open_store
    from ..tlog.audit import audit_range, audit_uuids, gather_store
    from ..tlog.log import normalise_sha256

    if key_id and key_file:
        raise ConfigError("--key and --key-file are alternatives")
    if first is not None and last is None:
        last = 2**62  # to the end of the tree
    if last is not None and first is None:
        first = 0
    if not any((digest, key_id, key_file, agent, first is not None, last is not None)):
        raise ConfigError("say what to search for: --digest, --key/--key-file, --agent or --from/--to")
    log, log_key = _open_log(tlog_url, tlog_key)
    store = open_store(store_url)
    try:
        evidence = gather_store(store, agent)
    except Exception as exc:  # the store is a help (envelopes for dsse checks) unless --agent needs it
        if agent:
            raise
        err.print(f"warning: the store could not be read ({exc}); dsse signatures are not checked", markup=False)
        from ..tlog.audit import StoreEvidence

        evidence = StoreEvidence()
    pem: bytes | None = None
    if key_file is not None:
        pem = key_file.read_bytes()
    elif key_id is not None:
        from ..keys import open_provider

        matches = [k for k in open_provider(key_provider).public_keys() if k.key_id.startswith(key_id.lower())]
        if len(matches) != 1:
            raise InputError("--key", f"{key_id!r} matches {len(matches)} of our keys; give a unique key id")
        pem = matches[0].pem
    sets: list[set[str]] = []
    if digest is not None:
        sets.append(set(log.search(sha256=normalise_sha256(digest))))
    if pem is not None:
        sets.append(set(log.search(public_key_pem=pem)))
    if agent is not None:
        if not evidence.digests:
            raise InputError("--agent", f"{agent!r}: no such agent in {store.url}")
        by_agent = set(evidence.record_uuids)
        for d in sorted(evidence.digests):
            by_agent |= set(log.search(sha256=d))
        sets.append(by_agent)
    if sets:
        uuids = set.intersection(*sets)
        entries = audit_uuids(log, sorted(uuids), log_key, evidence.envelopes)
        if first is not None and last is not None:
            entries = [e for e in entries if first <= e.index <= last]
    else:
        assert first is not None and last is not None
        entries = audit_range(log, first, last, log_key, evidence.envelopes)
    failed = [e for e in entries if not e.ok]
    if as_json:
        print_json({"log": log.url, "entries": [e.to_json() for e in entries], "failed": len(failed)})
    else:
        _print_entries(entries)
        if failed:
            out.print(f"{len(failed)} of {len(entries)} entries failed verification", markup=False)
    if failed:
        sys.exit(EXIT_PROBLEMS)


@audit.command("monitor")
@click.option("--state", "state_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The last verified checkpoint (default: $AGENTFACTORY_HOME/tlog-monitor.json).")
@tlog_options
@json_option
@handle_errors
def monitor_cmd(state_file: Path | None, tlog_url: str, tlog_key: Path | None, as_json: bool) -> None:
    """Prove the current checkpoint extends the last verified one; ALARM (exit 1) on a fork or rewrite.

    The first run trusts the current checkpoint (trust on first use). On an alarm the state is kept.
    """
    from ..config import home
    from ..tlog.audit import monitor

    log, log_key = _open_log(tlog_url, tlog_key)
    result = monitor(log, log_key, state_file or home() / "tlog-monitor.json")
    if as_json:
        print_json({"log": log.url, **result.to_json()})
    elif result.ok:
        out.print(result.message, markup=False)
    else:
        err.print(result.message, markup=False)
    if not result.ok:
        sys.exit(EXIT_PROBLEMS)


@audit.command("keys")
@click.option("--key-provider", default=None, help="Our signing keys: local (default) or vault.")
@store_option
@tlog_options
@json_option
@handle_errors
def keys_cmd(key_provider: str | None, store_url: str | None, tlog_url: str, tlog_key: Path | None,
             as_json: bool) -> None:
    """Every log entry by our keys must be a signature the store holds, and every store signature must be
    logged: UNACCOUNTED (a stolen key at work?) or UNLOGGED entries exit 1."""
    from ..keys import open_provider
    from ..store import open_store
    from ..tlog.audit import audit_keys

    log, log_key = _open_log(tlog_url, tlog_key)
    report = audit_keys(log, log_key, open_provider(key_provider).public_keys(), open_store(store_url))
    if as_json:
        print_json({"log": log.url, **report.to_json()})
    else:
        _print_entries(report.entries)
        for line in report.unaccounted + report.unlogged + report.failed + report.problems:
            out.print(line, markup=False)
        out.print("every signature by our keys is accounted for and logged" if report.ok
                  else "the audit found problems", markup=False)
    if not report.ok:
        sys.exit(EXIT_PROBLEMS)


@audit.command("verify")
@tlog_options
@json_option
@handle_errors
def verify_cmd(tlog_url: str, tlog_key: Path | None, as_json: bool) -> None:
    """Recompute every stored hash of the embedded log (an edited row is named); exit 1 on any problem."""
    from ..tlog.log import EmbeddedLog, default_tlog_dir

    if tlog_url != "embedded":
        raise click.UsageError("audit verify checks the embedded log's storage; a remote log's storage is not "
                               "reachable (use `audit monitor` for it)")
    with EmbeddedLog(default_tlog_dir()) as log:
        problems = log.check(full=True)
        size = log.info().tree_size
    if as_json:
        print_json({"log": log.url, "treeSize": size, "problems": problems})
    else:
        for p in problems:
            out.print(p, markup=False)
        out.print(f"{size} entries checked: " + ("no problems" if not problems else f"{len(problems)} problems"),
                  markup=False)
    if problems:
        sys.exit(EXIT_PROBLEMS)
