"""The monitor's state as a witness of our own: the latest checkpoint it proved consistent, kept away from the log.

Why: a log whose storage can be edited (a truncated tail, a rewritten history) stays internally consistent,
and a log can show one tree to the pipeline and another to auditors (a split view). Only someone who saw an
earlier checkpoint can tell. `agentfactory audit monitor` proves every checkpoint it sees extends the last one
and records it here; the same record then serves as a witness (in the spirit of C2SP witnesses and
rekor-monitor): `audit verify` checks the stored tree against it, and `check_witnessed` tells a verifier
whether a record's checkpoint belongs to the history the monitor saw.

Besides its latest checkpoint, the state keeps the roots of earlier sizes the monitor proved consistent with
it (every size it passed, on a log that answers roots cheaply), so a record's checkpoint can be judged offline.

The state lives outside the log's folder (`default_state_path`, `AGENTFACTORY_TLOG_MONITOR_STATE`), since
whoever can write the log's files must not be able to reset its witness; a missing state is an error, not a
first use, unless the monitor is run with `--init`. Its checkpoint is re-verified with the pinned log key at
every load: the file is only a file.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from ..config import home
from ..errors import AgentFactoryError, ConfigError, InputError
from ..fsutil import atomic_write
from ..jsonsafe import load_json_object
from . import merkle, note
from .base import TransparencyLog
from .entries import LogEntry

STATE_ENV = "AGENTFACTORY_TLOG_MONITOR_STATE"
MAX_STATE_BYTES = 16 * 1024 * 1024
MAX_HISTORY = 100_000  # verified (size, root) pairs kept, so a record of exactly that size checks offline


class MissingState(ConfigError):
    """No monitor state where one is expected: an error (a deleted state must not mean "start afresh")."""


@dataclass(frozen=True)
class WitnessState:
    """The latest checkpoint the monitor verified (and the (size, root) pairs it verified before)."""

    path: Path
    checkpoint: note.Checkpoint
    checkpoint_text: str
    log_id: str
    history: dict[int, bytes]  # size -> root, including the latest

    @property
    def size(self) -> int:
        return self.checkpoint.size

    @property
    def root_hash(self) -> bytes:
        return self.checkpoint.root_hash


def default_state_path() -> Path:
    """`$AGENTFACTORY_TLOG_MONITOR_STATE`, else `$AGENTFACTORY_HOME/tlog-monitor.json` (beside, not in, tlog/)."""
    configured = os.environ.get(STATE_ENV)
    return Path(configured) if configured else home() / "tlog-monitor.json"


def refuse_inside(state: Path, log_folder: Path | None) -> None:
    """ConfigError when the state would live in the log's own folder, where the log's writer can reset it."""
    if log_folder is None:
        return
    folder = log_folder.resolve()
    where = state.resolve()
    if where == folder or folder in where.parents:
        raise ConfigError(f"{state}: the monitor's state must live outside the log's folder {log_folder} "
                          f"(whoever can write the log could reset it); use --state or ${STATE_ENV}")


def load_state(path: Path, log_key: ec.EllipticCurvePublicKey) -> WitnessState:
    """The state at `path`, its checkpoint verified with `log_key`. MissingState when absent; InputError when
    unreadable or signed by another key."""
    if not path.is_file():
        raise MissingState(f"{path}: no monitor state (the last checkpoint the monitor verified). A deleted state "
                           "must not start a new history unnoticed: run `agentfactory audit monitor --init` once, "
                           "knowingly, to trust the log's current checkpoint")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(str(path), f"cannot read the monitor state ({exc.strerror})") from None
    doc = load_json_object(data, str(path), max_bytes=MAX_STATE_BYTES, what="monitor state")
    text = doc.get("checkpoint")
    if not isinstance(text, str):
        raise InputError(str(path), "the monitor state has no checkpoint")
    checkpoint = note.verify(text, log_key, None, f"{path}: checkpoint")
    history = {checkpoint.size: checkpoint.root_hash}
    for i, item in enumerate(doc.get("history") or []):
        size, root = (item.get("size"), item.get("rootHash")) if isinstance(item, dict) else (None, None)
        if isinstance(size, bool) or not isinstance(size, int) or not isinstance(root, str) or len(root) != 64:
            raise InputError(str(path), f"history[{i}] must be {{size, rootHash}}")
        try:
            history.setdefault(size, bytes.fromhex(root))
        except ValueError:
            raise InputError(str(path), f"history[{i}].rootHash is not hex") from None
    return WitnessState(path, checkpoint, text, note.log_id_of(log_key), history)


def save_state(path: Path, log_url: str, log_key: ec.EllipticCurvePublicKey, checkpoint_text: str,
               previous: WitnessState | None, proven: dict[int, bytes] | None = None) -> None:
    """Record `checkpoint_text` (already verified consistent with `previous`) as the latest, keeping a history:
    the earlier pairs, and `proven` (roots of intermediate sizes, each proven consistent with this checkpoint)."""
    new = note.verify(checkpoint_text, log_key, None, "checkpoint")
    pairs = dict(previous.history) if previous is not None else {}
    pairs.update(proven or {})
    pairs[new.size] = new.root_hash
    kept = sorted(pairs.items())[-MAX_HISTORY:]
    doc: dict[str, Any] = {"log": log_url, "logID": note.log_id_of(log_key), "size": new.size,
                           "rootHash": new.root_hash.hex(), "checkpoint": checkpoint_text,
                           "verifiedAt": datetime.now(UTC).isoformat(),
                           "history": [{"size": s, "rootHash": r.hex()} for s, r in kept]}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(doc, separators=(",", ":")).encode() + b"\n")


def check_witnessed(entry: LogEntry, witness: WitnessState, log: TransparencyLog | None = None,
                    where: str = "transparency-log record") -> None:
    """InputError unless the tree the record's checkpoint commits to is part of the history the monitor saw.

    The caller has verified the record (`bundle.check_record`: SET, checkpoint signature, inclusion proof).
    Accepted: a checkpoint of a size the monitor verified with the same root; or, given `log`, one smaller than
    the monitor's latest with a consistency proof from it to the monitor's checkpoint (fetched from the log and
    verified against both signed roots, so the log cannot lie about it). Refused: another log, another root at
    a size the monitor saw, a tree the monitor has not reached yet (it may be a view shown to one client only:
    run the monitor, then verify again), or a size in between when no log is at hand to prove it.
    """
    proof = entry.inclusion_proof
    if proof is None:
        raise InputError(where, "the record has no inclusion proof, so its checkpoint cannot be witnessed")
    if entry.log_id != witness.log_id:
        raise InputError(where, f"logged by {entry.log_id[:16]}…, but the monitor watches {witness.log_id[:16]}…")
    size, root = proof.tree_size, bytes.fromhex(proof.root_hash)
    seen = witness.history.get(size)
    if seen is not None:
        if seen != root:
            raise InputError(where, f"its checkpoint gives size {size} the root {root.hex()[:16]}…, but the monitor "
                                    f"verified {seen.hex()[:16]}… for that size: a split view (the log showed two "
                                    "histories)")
        return
    if size > witness.size:
        raise InputError(where, f"its checkpoint (size {size}) is newer than the monitor's latest (size "
                                f"{witness.size}, {witness.path}): run `agentfactory audit monitor`, then verify again")
    if log is None:
        raise InputError(where, f"its checkpoint (size {size}) lies between checkpoints the monitor verified; a "
                                "consistency proof from the log is needed to witness it")
    try:
        hashes = [bytes.fromhex(h) for h in log.consistency(size, witness.size)]
        merkle.verify_consistency(size, witness.size, root, witness.root_hash, hashes)
    except (merkle.ProofError, ValueError, AgentFactoryError) as exc:
        raise InputError(where, f"its checkpoint (size {size}) is not consistent with the monitor's latest (size "
                                f"{witness.size}): a split view or a rewritten history: {exc}") from None


__all__ = ["STATE_ENV", "MissingState", "WitnessState", "check_witnessed", "default_state_path", "load_state",
           "refuse_inside", "save_state"]
