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


def tlog_options(func: F) -> F:
    func = click.option("--policy", "policy_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
                        envvar="AGENTFACTORY_TRUST_POLICY",
                        help="TrustPolicy whose transparencyLogs pin the log's key ($AGENTFACTORY_TRUST_POLICY).")(func)
    func = click.option("--tlog-key", "tlog_key", type=click.Path(dir_okay=False, exists=True, path_type=Path),
                        default=None, help="The log's public key (PEM), pinned, instead of a trust policy.")(func)
    return click.option("--tlog", "tlog_url", default="embedded", show_default=True, metavar="embedded|URL",
                        help="The transparency log: the embedded one ($AGENTFACTORY_HOME/tlog) or a Rekor URL.")(func)


def _pinned_key(log: TransparencyLog, tlog_key: Path | None, policy_path: Path | None) -> ec.EllipticCurvePublicKey:
    """The log's key as the auditor pins it: --tlog-key, or the trust policy's transparencyLogs entry for this
    log. Never the log's own folder or API: whoever can replace the log's key could then sign anything."""
    from ..tlog.log import EmbeddedLog
    from ..tlog.note import load_log_public_key, log_id_of
    from ..trust import load_trust_policy

    if tlog_key is not None:
        return load_log_public_key(tlog_key.read_bytes()[:65536], str(tlog_key))
    if policy_path is None:
        raise ConfigError("pin the log's public key: --policy TRUST.yaml (its transparencyLogs; or "
                          "$AGENTFACTORY_TRUST_POLICY) or --tlog-key FILE. The log's own folder is not a trust anchor")
    logs = load_trust_policy(policy_path).logs
    if not logs:
        raise ConfigError(f"{policy_path}: the trust policy lists no transparencyLogs to pin the log's key")
    if len(logs) == 1:  # the key comes from the policy; a log signing with another key fails every check
        return next(iter(logs.values()))
    # Several logs: the log's own key only says which entry to use; the key itself comes from the policy.
    log_id = log.log_id if isinstance(log, EmbeddedLog) else log_id_of(
        load_log_public_key(log.public_key_pem(), f"{log.url} publicKey"))
    if log_id not in logs:
        raise ConfigError(f"{policy_path}: the log {log.url} signs with key {log_id[:16]}…, which the trust policy's "
                          "transparencyLogs do not list (the log's key was replaced, or the policy names another log)")
    return logs[log_id]


def _open_log(tlog_url: str, tlog_key: Path | None,
              policy_path: Path | None) -> tuple[TransparencyLog, ec.EllipticCurvePublicKey]:
    """The log, and its key pinned by the auditor (`_pinned_key`)."""
    from ..tlog.log import EmbeddedLog, default_tlog_dir

    log: TransparencyLog
    if tlog_url == "embedded":
        log = EmbeddedLog(default_tlog_dir())
    else:
        from ..tlog.client import RekorClient

        log = RekorClient(tlog_url)
    return log, _pinned_key(log, tlog_key, policy_path)


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
           policy_path: Path | None, as_json: bool) -> None:
    """Find entries and verify each (SET, inclusion proof, checkpoint, signature). Exit 1 if any fails.

    The criteria combine as an intersection; --agent resolves the agent's versions in the store (their
    digests, and the log records attached to them), because a dsse body keeps only hashes.
    """
    from ..store import open_store
    from ..tlog.audit import audit_range, audit_uuids, gather_store, uuids_by_keys
    from ..tlog.log import normalise_sha256

    if key_id and key_file:
        raise ConfigError("--key and --key-file are alternatives")
    if first is not None and last is None:
        last = 2**62  # to the end of the tree
    if last is not None and first is None:
        first = 0
    if not any((digest, key_id, key_file, agent, first is not None, last is not None)):
        raise ConfigError("say what to search for: --digest, --key/--key-file, --agent or --from/--to")
    log, log_key = _open_log(tlog_url, tlog_key, policy_path)
    store = open_store(store_url, existing=True)
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
    index_problems: list[str] = []
    if pem is not None:
        sets.append(set(uuids_by_keys(log, [pem], index_problems, [], scan=False)))
    if agent is not None:
        if not evidence.digests:
            raise InputError("--agent", f"{agent!r}: no such agent in {store.url}")
        by_agent = set(evidence.record_uuids)
        for d in sorted(evidence.digests):
            by_agent |= set(log.search(sha256=d))
        sets.append(by_agent)
    if sets:
        uuids = set.intersection(*sets)
        entries = audit_uuids(log, sorted(uuids), log_key, evidence)
        if first is not None and last is not None:
            entries = [e for e in entries if first <= e.index <= last]
    else:
        assert first is not None and last is not None
        entries = audit_range(log, first, last, log_key, evidence)
    failed = [e for e in entries if not e.ok]
    if as_json:
        print_json({"log": log.url, "entries": [e.to_json() for e in entries], "failed": len(failed),
                    "problems": index_problems})
    else:
        _print_entries(entries)
        for line in index_problems:
            out.print(line, markup=False)
        if failed:
            out.print(f"{len(failed)} of {len(entries)} entries failed verification", markup=False)
    if failed or index_problems:
        sys.exit(EXIT_PROBLEMS)


@audit.command("monitor")
@click.option("--state", "state_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The last verified checkpoint, kept outside the log's folder (default: "
                   "$AGENTFACTORY_TLOG_MONITOR_STATE, else $AGENTFACTORY_HOME/tlog-monitor.json).")
@click.option("--init", "init", is_flag=True, help="When there is no state yet, trust the current checkpoint "
                                                   "(once, knowingly). Never resets an existing state.")
@tlog_options
@json_option
@handle_errors
def monitor_cmd(state_file: Path | None, init: bool, tlog_url: str, tlog_key: Path | None, policy_path: Path | None,
                as_json: bool) -> None:
    """Prove the current checkpoint extends the last verified one; ALARM (exit 1) on a fork or rewrite.

    A missing state is an alarm too, unless --init. On an alarm the state is kept.
    """
    from ..tlog.audit import monitor
    from ..tlog.witness import default_state_path

    log, log_key = _open_log(tlog_url, tlog_key, policy_path)
    result = monitor(log, log_key, state_file or default_state_path(), init=init)
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
@click.option("--signing-record", "record_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The pipeline's signing record (default: $AGENTFACTORY_SIGNING_RECORD, else "
                   "$AGENTFACTORY_HOME/signing-record.jsonl).")
@click.option("--index-only", is_flag=True, help="A remote log: trust its search index instead of reading every "
                                                 "entry (faster; entries the index omits are not seen).")
@store_option
@tlog_options
@json_option
@handle_errors
def keys_cmd(key_provider: str | None, record_path: Path | None, index_only: bool, store_url: str | None,
             tlog_url: str, tlog_key: Path | None, policy_path: Path | None, as_json: bool) -> None:
    """Every log entry by our keys must be a signature the pipeline recorded and the store holds, attached to
    the agent it is about; every store signature must be logged. UNACCOUNTED (a stolen key at work?),
    UNLOGGED or MISATTACHED entries, or a search index that hides entries, exit 1. A recorded signature
    for another store (SIGNED FOR …) or one logged by a run that never published (INTERRUPTED) is listed,
    not alarmed."""
    from ..keys import open_provider
    from ..store import open_store
    from ..tlog.audit import audit_keys
    from ..tlog.signing_record import SigningRecord, load_record

    log, log_key = _open_log(tlog_url, tlog_key, policy_path)
    record: SigningRecord | None = None
    problem = ""
    try:
        record = load_record(record_path)
    except InputError as exc:
        problem = str(exc)
    store = open_store(store_url, existing=True)
    report = audit_keys(log, log_key, open_provider(key_provider).public_keys(), store, record,
                        record_problem=problem, scan=not index_only)
    if as_json:
        print_json({"log": log.url, **report.to_json()})
    else:
        _print_entries(report.entries)
        for line in report.unaccounted + report.unlogged + report.misattached + report.failed + report.problems:
            out.print(line, markup=False)
        for line in report.elsewhere + report.interrupted:  # the pipeline's own, recorded: said, not alarmed
            out.print(line, markup=False)
        for line in report.notes:
            out.print(f"note: {line}", markup=False)
        out.print("every signature by our keys is accounted for and logged" if report.ok
                  else "the audit found problems", markup=False)
    if not report.ok:
        sys.exit(EXIT_PROBLEMS)


@audit.command("verify")
@click.option("--state", "state_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="The monitor's state: the tree must still hold the checkpoint the monitor last verified.")
@tlog_options
@json_option
@handle_errors
def verify_cmd(state_file: Path | None, tlog_url: str, tlog_key: Path | None, policy_path: Path | None,
               as_json: bool) -> None:
    """Audit the embedded log's storage: every stored hash recomputed (an edited row is named), the search index
    against the leaves, the log's key against the pinned one, and the tree against the largest checkpoint the
    log signed and the one the monitor last verified (a truncated or rewritten tree). Exit 1 on any problem."""
    from ..tlog.log import EmbeddedLog, default_tlog_dir
    from ..tlog.note import log_id_of
    from ..tlog.witness import MissingState, default_state_path, load_state

    if tlog_url != "embedded":
        raise click.UsageError("audit verify checks the embedded log's storage; a remote log's storage is not "
                               "reachable (use `audit monitor` for it)")
    log, log_key = _open_log(tlog_url, tlog_key, policy_path)
    assert isinstance(log, EmbeddedLog)
    with log:
        problems = []
        if log.log_id != log_id_of(log_key):
            problems.append(f"{default_tlog_dir()}: the log signs with key {log.log_id[:16]}…, not the pinned "
                            f"{log_id_of(log_key)[:16]}…: the log key was replaced")
        problems += log.check(full=True)
        state = state_file or default_state_path()
        try:
            witness = load_state(state, log_key)
            problems += log.check_against(witness.checkpoint, f"the checkpoint the monitor verified ({state})")
        except MissingState as exc:
            problems.append(str(exc))
        except InputError as exc:
            problems.append(f"{exc} (the monitor's state does not verify with the pinned key)")
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
