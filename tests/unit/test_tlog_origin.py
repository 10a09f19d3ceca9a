"""The checkpoint origin is Rekor's `<name> - <decimal tree id>` (cosign reads no other shape as Rekor v1's);
logs and monitor states from before 0.3 carry `<name> - <16 hex digits>` and keep working for the same key,
while any other origin change is still an alarm."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest

from agentfactory.evidence import ArtifactSignature, proposed_for_signature
from agentfactory.keys.local import LocalKeyring
from agentfactory.tlog import note
from agentfactory.tlog.audit import ALARM, monitor
from agentfactory.tlog.log import EmbeddedLog


def _add(log: EmbeddedLog, ring: LocalKeyring, pem: bytes, n: int) -> None:
    digest = hashlib.sha256(b"o%d" % n).digest()
    log.add(proposed_for_signature(ArtifactSignature.from_signature("sha256:" + digest.hex(),
                                                                    ring.sign_digest(digest)), pem))


def test_the_origin_is_rekors_shape_with_the_decimal_tree_id(tmp_path: Path) -> None:
    with EmbeddedLog(tmp_path / "log") as log:
        assert re.fullmatch(r"agentfactory\.dev/tlog - [0-9]+", log.key.origin)
        assert log.key.origin.endswith(" - " + log.tree_id)  # what rekor-cli's treeID and the entry IDs say
        assert note.is_origin_upgrade(log.key.legacy_origin, log.key.origin, log.key.log_id)
        assert not note.is_origin_upgrade("elsewhere - " + log.key.log_id[:16], log.key.origin, log.key.log_id)
        assert not note.is_origin_upgrade(log.key.legacy_origin, "agentfactory.dev/tlog - 1", log.key.log_id)


def test_a_log_and_a_monitor_from_before_keep_working(tmp_path: Path, ring: LocalKeyring, pem: bytes,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "state.json"
    with monkeypatch.context() as old_code:  # the log and the monitor as 0.2 wrote them
        old_code.setattr(note.LogKey, "origin", property(lambda self: self.legacy_origin))
        with EmbeddedLog(tmp_path / "log") as log:
            _add(log, ring, pem, 0)
            assert monitor(log, log.key.public_key, state, init=True).ok
    with EmbeddedLog(tmp_path / "log") as log:  # 0.3 opens the same folder
        assert log.latest_checkpoint() is not None and log.latest_checkpoint().size == 1  # type: ignore[union-attr]
        _add(log, ring, pem, 1)
        moved = monitor(log, log.key.public_key, state)
        assert moved.ok and moved.new_size == 2, moved.message


def test_any_other_origin_change_is_still_an_alarm(tmp_path: Path, ring: LocalKeyring, pem: bytes,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "state.json"
    with EmbeddedLog(tmp_path / "log") as log:
        _add(log, ring, pem, 0)
        assert monitor(log, log.key.public_key, state, init=True).ok
    monkeypatch.setattr(note.LogKey, "origin", property(lambda self: f"{self.name} - 42"))
    with EmbeddedLog(tmp_path / "log") as log:
        _add(log, ring, pem, 1)
        alarm = monitor(log, log.key.public_key, state)
        assert not alarm.ok and alarm.message.startswith(ALARM) and "origin changed" in alarm.message
