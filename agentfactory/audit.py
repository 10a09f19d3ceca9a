"""The audit trail: JSON Lines, append-only, one record per decision and per execution.

Every record carries the SHA-256 of the line before it (`prev`), so a deleted, reordered or edited
line breaks the chain and `verify_chain` names the first line that does not follow. The file is
opened with O_APPEND and each record is one write() under a lock; a record that cannot be written
is an error the caller must treat as a refusal (fail closed: nothing runs unrecorded).

Refusals (`decision` records with `allowed: false`) are what any client can cause at will (a 404
per unknown name), so their volume is bounded: per reason, at most `REFUSAL_BURST` full records
per second, each with fields cut to `REFUSAL_FIELD_CHARS` and at most `REFUSAL_RECORD_BYTES`; the
rest of that second is one `decision-summary` record with the count and the most frequent agent
names, written with the next record (or at close). Allowed decisions and executions are never
summarized: they are bounded by the node's capacity, not by a client's request rate.

A trail opened with `shared=True` may be appended to by several processes at once (the admission
webhook's worker processes write one trail): each record is written under an exclusive flock on the
file, and when another writer appended since this one's last write, the chain continues from the
file's last line rather than from the hash held in memory.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .errors import AgentFactoryError, InputError

MAX_RECORD_BYTES = 64 * 1024
MAX_ITEMS = 100  # items of a list (or keys of an object) a record keeps
MAX_FIELD_CHARS = 2000
GENESIS = "0" * 64
REFUSAL_BURST = 10  # full refusal records per reason per window
REFUSAL_WINDOW_SECONDS = 1.0
REFUSAL_FIELD_CHARS = 256
REFUSAL_RECORD_BYTES = 4096
# One encoder for every record: json.dumps with options builds a new encoder per call, on the request path.
_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
REFUSAL_REASONS = 32  # distinct reason keys tracked; any further reason is counted as "other"
SUMMARY_AGENTS = 10  # agent names named in a summary (the most frequent), each cut to 64 characters


class AuditError(AgentFactoryError):
    """The audit trail could not be written: the decision it should record must not take effect."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


_KEPT = frozenset({int, float, bool, type(None)})  # values _clip returns as they are


def _clip(value: Any, chars: int = MAX_FIELD_CHARS, items: int = MAX_ITEMS) -> Any:
    """Keep records bounded: long strings (a guest's error text) are cut, structures walked."""
    if isinstance(value, str):
        return value if len(value) <= chars else value[:chars] + "…"
    if isinstance(value, dict):  # a record's fields: short strings and numbers kept without a call each
        return {str(k)[:chars]: v if type(v) in _KEPT or (type(v) is str and len(v) <= chars)
                else _clip(v, chars, items) for k, v in list(value.items())[:items]}
    if isinstance(value, (list, tuple)):
        return [_clip(v, chars, items) for v in value[:items]]
    return value


@dataclass
class _Window:
    """One reason's refusals in the current window: how many were written, how many only counted."""

    started: float
    started_at: str
    written: int = 0
    suppressed: int = 0
    agents: Counter[str] = field(default_factory=Counter)


class AuditLog:
    """An append-only JSON Lines file shared by the threads of one process.

    The path `-` is standard output (in a container: the log the node's shipper collects); its
    chain starts from `GENESIS`, as nothing before it can be read back.

    With `shared=True` other processes (and other AuditLog objects) may append to the same file: the
    in-memory `prev` alone would then link a record to the wrong predecessor, so each `record` and
    `close` holds an exclusive flock while it writes and first re-reads the last line's hash if the
    file's size is not where this object's last write left it. The default (one writer per file)
    costs no extra system call.
    """

    def __init__(self, path: Path, *, clock: Callable[[], float] = time.monotonic, shared: bool = False) -> None:
        self.path = path
        self._clock = clock  # the refusal windows' clock (monotonic seconds)
        self._lock = threading.Lock()
        self._windows: dict[str, _Window] = {}
        self._shared = shared
        if str(path) == "-":
            if shared:
                raise AuditError("-: a hash-chained audit trail on standard output cannot be shared by several "
                                 "processes (their lines would not link to each other): give a file path instead")
            self._fd = os.dup(1)
            self._prev = GENESIS
            return
        # Shared: read-write, so the last line is read back through this descriptor (the file written to).
        access = os.O_RDWR if shared else os.O_WRONLY
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(path, access | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        except OSError as exc:
            raise AuditError(f"{path}: cannot open the audit trail for appending: {exc.strerror}") from None
        if not shared:
            self._prev = _last_hash(path)
            return
        try:
            self._end = os.fstat(self._fd).st_size  # where this object's last write left the file (shared only)
            self._prev = _tail_hash(self._fd, self._end)
        except OSError as exc:
            os.close(self._fd)
            raise AuditError(f"{path}: cannot read the audit trail's last record: {exc.strerror}") from None

    def _lock_file(self) -> None:
        """Shared: take the file's flock and continue the chain from its last line if another writer
        appended since this object's last write. On an error the flock is not held."""
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX)
        except OSError as exc:
            raise AuditError(f"{self.path}: cannot lock the shared audit trail: {exc.strerror}") from None
        try:
            size = os.fstat(self._fd).st_size
            if size != self._end:
                self._prev = _tail_hash(self._fd, size)
                self._end = size
        except OSError as exc:
            self._unlock_file()
            raise AuditError(f"{self.path}: cannot read the shared audit trail's last record: {exc.strerror}") from None

    def _unlock_file(self) -> None:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        except OSError as exc:
            raise AuditError(f"{self.path}: cannot unlock the shared audit trail: {exc.strerror}") from None

    def record(self, event: str, **fields: Any) -> dict[str, Any]:
        """Append one record (`time`, `event`, the fields, `prev`) and return it.

        A refusal past its reason's burst is only counted (see the module docstring); the returned
        document then has `"suppressed": true` and nothing is written for it now.
        """
        with self._lock:
            if self._shared:  # before any record's `prev` is composed (a summary may be written first)
                self._lock_file()
            try:
                now = self._clock()
                self._flush_windows(now, force=False)
                if event == "decision" and fields.get("allowed") is False:
                    return self._refusal(now, event, fields)
                # a list cut to its first 100 items says how many it had: the 101st agent of a review is not
                # silently absent from the record
                counts = {f"{k}Count": len(v) for k, v in fields.items()
                          if isinstance(v, (list, tuple)) and len(v) > MAX_ITEMS}
                doc = {"time": _now(), "event": event, **_clip(fields), **counts, "prev": self._prev}
                return self._write(doc, fields, MAX_RECORD_BYTES)
            finally:
                if self._shared:
                    self._unlock_file()

    def _refusal(self, now: float, event: str, fields: dict[str, Any]) -> dict[str, Any]:
        reason = str(fields.get("reason") or "unknown")[:64]
        if reason not in self._windows and len(self._windows) >= REFUSAL_REASONS:
            reason = "other"
        window = self._windows.get(reason)
        if window is None:
            window = self._windows[reason] = _Window(now, _now())
        if window.written >= REFUSAL_BURST:
            window.suppressed += 1
            agent = str(fields.get("agent") or "")[:64]
            if agent in window.agents or len(window.agents) < 4 * SUMMARY_AGENTS:
                window.agents[agent] += 1
            return {"event": event, "reason": reason, "allowed": False, "suppressed": True}
        window.written += 1
        doc = {"time": _now(), "event": event, **_clip(fields, REFUSAL_FIELD_CHARS, 20), "prev": self._prev}
        return self._write(doc, fields, REFUSAL_RECORD_BYTES)

    def _flush_windows(self, now: float, *, force: bool) -> None:
        """Close the windows that are over (all of them with `force`): a summary for each that counted."""
        for reason, window in list(self._windows.items()):
            if not force and now - window.started < REFUSAL_WINDOW_SECONDS:
                continue
            del self._windows[reason]
            if window.suppressed:
                doc = {"time": _now(), "event": "decision-summary", "allowed": False, "reason": reason,
                       "suppressed": window.suppressed, "written": window.written, "from": window.started_at,
                       "agents": dict(window.agents.most_common(SUMMARY_AGENTS)), "prev": self._prev}
                self._write(doc, {}, REFUSAL_RECORD_BYTES)

    def _write(self, doc: dict[str, Any], fields: dict[str, Any], limit: int) -> dict[str, Any]:
        line = _ENCODE(doc).encode() + b"\n"
        if len(line) > limit:
            # Every plain field kept (strings clipped), and how many items each list or object had: a stub that
            # kept a fixed list of the runtime's keys left an admission record with `allowed` alone, no uid, no
            # namespace, no decision, when 40 long references filled it.
            doc = {"time": doc["time"], "event": doc["event"], "truncated": True, "prev": self._prev,
                   **{k: _clip(v, REFUSAL_FIELD_CHARS) for k, v in fields.items()
                      if type(v) in _KEPT or isinstance(v, str)},
                   **{f"{k}Count": len(v) for k, v in fields.items() if isinstance(v, (list, tuple, dict))}}
            line = json.dumps(doc, separators=(",", ":")).encode() + b"\n"
        try:
            written = os.write(self._fd, line)
        except OSError as exc:
            raise AuditError(f"{self.path}: cannot append to the audit trail: {exc.strerror}") from None
        if written != len(line):
            raise AuditError(f"{self.path}: short write to the audit trail ({written} of {len(line)} bytes)")
        self._prev = hashlib.sha256(line.rstrip(b"\n")).hexdigest()
        if self._shared:
            self._end += written
        return doc

    def close(self) -> None:
        """Write the pending refusal summaries, then close (a summary that cannot be written is lost)."""
        with self._lock:
            try:
                with contextlib.suppress(AuditError):
                    if self._shared:
                        self._lock_file()
                    self._flush_windows(self._clock(), force=True)
            finally:
                if self._shared:
                    with contextlib.suppress(OSError):  # closing the descriptor releases it anyway
                        fcntl.flock(self._fd, fcntl.LOCK_UN)
                os.close(self._fd)


def _last_hash(path: Path) -> str:
    """The hash of the file's last line (the chain continues across restarts)."""
    size = path.stat().st_size
    if size == 0:
        return GENESIS
    with path.open("rb") as f:
        f.seek(max(0, size - MAX_RECORD_BYTES - 1))
        tail = f.read().rstrip(b"\n")
    return hashlib.sha256(tail.rsplit(b"\n", 1)[-1]).hexdigest()


def _tail_hash(fd: int, size: int) -> str:
    """`_last_hash` read through a shared trail's descriptor, up to `size` (the file's size under the flock).

    Read on nearly every record when workers take turns, so it reads a 4 KiB tail first (an admission record is
    about 1 KiB) and a larger one only when the last line started before it, up to MAX_RECORD_BYTES + 1 as
    `_last_hash` reads. Reading the whole 64 KiB each time cost a cached review about a tenth of its CPU."""
    if size == 0:
        return GENESIS
    window = 4096
    while True:
        window = min(window, MAX_RECORD_BYTES + 1)
        start = max(0, size - window)
        body = _pread_all(fd, start, size).rstrip(b"\n")
        cut = body.rfind(b"\n")
        if cut >= 0 or start == 0 or window == MAX_RECORD_BYTES + 1:
            return hashlib.sha256(body[cut + 1:]).hexdigest()
        window *= 4


def _pread_all(fd: int, start: int, end: int) -> bytes:
    chunks: list[bytes] = []
    at = start
    while at < end:
        chunk = os.pread(fd, end - at, at)
        if not chunk:
            break
        chunks.append(chunk)
        at += len(chunk)
    return b"".join(chunks)


def verify_chain(path: Path) -> int:
    """Check that every line links to the one before; return the number of records.

    InputError names the first line that is not valid JSON or does not follow its predecessor.
    """
    prev = GENESIS
    count = 0
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            line = raw.rstrip(b"\n")
            try:
                doc = json.loads(line)
            except ValueError:
                raise InputError(f"{path}:{number}", "not a JSON record: the trail was edited or truncated") from None
            if not isinstance(doc, dict) or doc.get("prev") != prev:
                raise InputError(f"{path}:{number}", "does not follow the line before it (prev hash differs): a "
                                                    "record was removed, reordered or edited")
            prev = hashlib.sha256(line).hexdigest()
            count += 1
    return count
