"""Attack: replace the log's key. `log-public-key.pem`, the key audits pinned by default, was rewritten from the
private key every time the log opened: whoever could write the log's folder swapped `log-key.pem` for their own,
rewrote the history, and every audit then checked the forged log against the forger's key — and passed.

Now audits pin the log's key from the trust policy (or an explicit --tlog-key), never from the log's folder or
API; `log-public-key.pem` is an export written once, and a log whose private key no longer matches it refuses
to open. The forged log is also served by the real `tlog serve` and audited over HTTP.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from runtime_helpers import Signed
from tlog_attack_helpers import audit, keys_report, pin_log, publish_logged, tlog_server

from agentfactory.cli import cli
from agentfactory.errors import StoreError
from agentfactory.evidence import ArtifactSignature, proposed_for_signature
from agentfactory.tlog.log import EmbeddedLog

pytestmark = pytest.mark.toolchain


@pytest.fixture
def world(af_home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Signed:
    s = publish_logged(af_home, tmp_path / "t", ["pinned"])
    policy = pin_log(af_home / "tlog", s.keyring.public_keys(), tmp_path / "trust.yaml")
    monkeypatch.setenv("AGENTFACTORY_TRUST_POLICY", str(policy))
    assert audit("monitor", "--init").exit_code == 0
    return s


def forge(s: Signed, folder: Path, tmp_path: Path) -> None:
    """The forger's log in the same folder: their own key, and a history of their choosing."""
    forged = tmp_path / "forged"
    with EmbeddedLog(forged) as log:
        for i in range(6):
            digest = hashlib.sha256(b"forged %d" % i).digest()
            art = ArtifactSignature.from_signature("sha256:" + digest.hex(), s.keyring.sign_digest(digest))
            log.add(proposed_for_signature(art, s.keyring.public_keys()[0].pem))
    shutil.rmtree(folder)
    shutil.copytree(forged, folder)  # log-key.pem and log-public-key.pem: both the forger's


def test_a_replaced_log_key_fails_every_audit(af_home: Path, tmp_path: Path, world: Signed) -> None:
    forge(world, af_home / "tlog", tmp_path)
    key_id = world.keyring.public_keys()[0].key_id
    search = audit("search", "--key", key_id[:12])
    assert search.exit_code == 1 and "✗" in search.output and "✓" not in search.output
    monitor = audit("monitor")
    assert monitor.exit_code == 1 and "ALARM" in monitor.output
    verify = audit("verify")
    assert verify.exit_code == 1 and "the log key was replaced" in verify.output
    code, report = keys_report()
    assert code == 1 and len(report["failed"]) == 6
    with tlog_server(af_home / "tlog") as url:  # the same over the Rekor API
        remote = audit("search", "--key", key_id[:12], "--tlog", url)
        assert remote.exit_code == 1 and "✓" not in remote.output
        assert audit("monitor", "--tlog", url).exit_code == 1


def test_the_pinned_key_never_comes_from_the_logs_folder(af_home: Path, monkeypatch: pytest.MonkeyPatch,
                                                        world: Signed) -> None:
    monkeypatch.delenv("AGENTFACTORY_TRUST_POLICY")
    for command in (["search", "--digest", world.store.resolve("pinned").digest], ["monitor"], ["keys"], ["verify"]):
        result = audit(*command)
        assert result.exit_code == 2 and "pin the log's public key" in result.output, (command, result.output)
    # An explicit key is the auditor's choice, and is used.
    exported = af_home / "tlog" / "log-public-key.pem"
    pinned_copy = af_home / "pinned-log-key.pem"
    shutil.copy(exported, pinned_copy)
    assert audit("verify", "--tlog-key", str(pinned_copy)).exit_code == 0


def test_the_exported_key_is_written_once_and_a_swapped_private_key_is_refused(af_home: Path, tmp_path: Path,
                                                                               world: Signed) -> None:
    folder = af_home / "tlog"
    exported = (folder / "log-public-key.pem").read_bytes()
    other = tmp_path / "other"
    EmbeddedLog(other).close()
    shutil.copy(other / "log-key.pem", folder / "log-key.pem")  # only the private key is swapped
    with pytest.raises(StoreError, match="log-key.pem does not match log-public-key.pem"):
        EmbeddedLog(folder)
    assert (folder / "log-public-key.pem").read_bytes() == exported  # not rewritten from the new key
    info = CliRunner().invoke(cli, ["tlog", "info"], catch_exceptions=False)
    assert info.exit_code != 0 and "the log key was replaced" in info.output
    exe = Path(sys.executable).with_name("agentfactory")
    serve = subprocess.run([str(exe), "tlog", "serve", "--listen", "127.0.0.1:0", "--dir", str(folder)],
                           capture_output=True, text=True, timeout=60)
    assert serve.returncode != 0 and "the log key was replaced" in serve.stderr


def test_the_pipeline_refuses_an_embedded_log_that_signs_with_another_key(af_home: Path, tmp_path: Path,
                                                                          world: Signed) -> None:
    """`pipeline run --tlog embedded --tlog-key PINNED`: a log whose key is not the pinned one is refused."""
    from agentfactory.errors import ConfigError
    from agentfactory.tlog.connect import open_tlog

    pinned = tmp_path / "pinned.pem"
    shutil.copy(af_home / "tlog" / "log-public-key.pem", pinned)
    log, pem = open_tlog("embedded", pinned)
    assert log is not None and pem == pinned.read_bytes()
    log.close()  # type: ignore[attr-defined]
    forge(world, af_home / "tlog", tmp_path)
    with pytest.raises(ConfigError, match="signs with another key"):
        open_tlog("embedded", pinned)
