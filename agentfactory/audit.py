"""The audit trail: JSON Lines, append-only, one record per decision and per execution.

Every record carries the SHA-256 of the line before it (`prev`), so a deleted, reordered or edited
line breaks the chain and `verify_chain` names the first line that does not follow. The file is
opened with O_APPEND and each record is one write() under a lock; a record that cannot be written
is an error the caller must treat as a refusal (fail closed: nothing runs unrecorded).
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .errors import AgentFactoryError, InputError

MAX_RECORD_BYTES = 64 * 1024
MAX_FIELD_CHARS = 2000
GENESIS = "0" * 64


class AuditError(AgentFactoryError):
    """The audit trail could not be written: the decision it should record must not take effect."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _clip(value: Any) -> Any:
    """Keep records bounded: long strings (a guest's error text) are cut, structures walked."""
    if isinstance(value, str):
        return value if len(value) <= MAX_FIELD_CHARS else value[:MAX_FIELD_CHARS] + "…"
    if isinstance(value, dict):
        return {str(k): _clip(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clip(v) for v in value[:100]]
    return value


class AuditLog:
    """An append-only JSON Lines file shared by the threads of one process.

    The path `-` is standard output (in a container: the log the node's shipper collects); its
    chain starts from `GENESIS`, as nothing before it can be read back.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        if str(path) == "-":
            self._fd = os.dup(1)
            self._prev = GENESIS
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o640)
        except OSError as exc:
            raise AuditError(f"{path}: cannot open the audit trail for appending: {exc.strerror}") from None
        self._prev = _last_hash(path)

    def record(self, event: str, **fields: Any) -> dict[str, Any]:
        """Append one record (`time`, `event`, the fields, `prev`) and return it."""
        with self._lock:
            doc = {"time": _now(), "event": event, **_clip(fields), "prev": self._prev}
            line = json.dumps(doc, sort_keys=False, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
            if len(line) > MAX_RECORD_BYTES:
                doc = {"time": doc["time"], "event": event, "truncated": True, "prev": self._prev,
                       **{k: fields[k] for k in ("agent", "digest", "allowed", "outcome") if k in fields}}
                line = json.dumps(doc, separators=(",", ":")).encode() + b"\n"
            try:
                written = os.write(self._fd, line)
            except OSError as exc:
                raise AuditError(f"{self.path}: cannot append to the audit trail: {exc.strerror}") from None
            if written != len(line):
                raise AuditError(f"{self.path}: short write to the audit trail ({written} of {len(line)} bytes)")
            self._prev = hashlib.sha256(line.rstrip(b"\n")).hexdigest()
            return doc

    def close(self) -> None:
        with self._lock:
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
