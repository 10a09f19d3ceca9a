"""The real rekor-cli (v1.5.4, installed by `make tools`) against `agentfactory tlog serve` on loopback.

Every command an operator runs against a Rekor — `loginfo`, `upload` of a hashedrekord, `get` by index and by
UUID, `verify`, `search` — works against our log, and rekor-cli's own checks (signed checkpoint, consistency
with the state it keeps in ~/.rekor, inclusion proof, SET) refuse a log signed by another key, a forked history
and an entry altered in storage. Each test has its own HOME, so rekor-cli's state never leaks between tests.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from child_process import first_line
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from peer_tools import require

from agentfactory.dsse import INTOTO_PAYLOAD_TYPE, Envelope, EnvelopeSignature, pae
from agentfactory.errors import InputError
from agentfactory.intoto import make_statement
from agentfactory.tlog.entries import canonical, entry_uuid, hashedrekord_body, parse_log_entry, tree_id_hex
from agentfactory.tlog.log import KEY_FILE, PUBLIC_KEY_FILE, EmbeddedLog

ENTRIES = "/api/v1/log/entries"


@dataclass
class Signer:
    """A P-256 key as an operator keeps it for rekor-cli: the public key PEM in a file."""

    key: ec.EllipticCurvePrivateKey
    pem: bytes
    pem_file: Path

    def sign_file(self, folder: Path, name: str, content: bytes) -> tuple[Path, Path, str]:
        """Write `content` and its detached signature; returns (artifact, signature, sha256 hex)."""
        artifact, sig = folder / name, folder / f"{name}.sig"
        artifact.write_bytes(content)
        sig.write_bytes(self.key.sign(content, ec.ECDSA(hashes.SHA256())))
        return artifact, sig, hashlib.sha256(content).hexdigest()

    def proposal(self, content: bytes) -> dict[str, Any]:
        """A hashedrekord proposal for `content`, as a Rekor client POSTs it."""
        digest = hashlib.sha256(content).hexdigest()
        return {"apiVersion": "0.0.1", "kind": "hashedrekord", "spec": {
            "data": {"hash": {"algorithm": "sha256", "value": digest}},
            "signature": {"content": base64.b64encode(self.key.sign(content, ec.ECDSA(hashes.SHA256()))).decode(),
                          "publicKey": {"content": base64.b64encode(self.pem).decode()}}}}

    def uuid_of(self, sig_file: Path, digest: str) -> str:
        """The UUID (leaf hash) the log must give the hashedrekord of this signature, computed here."""
        return entry_uuid(canonical(hashedrekord_body(digest, sig_file.read_bytes(), self.pem)))


def new_signer(folder: Path, name: str = "signer") -> Signer:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    path = folder / f"{name}.pub.pem"
    path.write_bytes(pem)
    return Signer(key, pem, path)


@dataclass
class Served:
    url: str
    folder: Path
    tree_id: str  # decimal, as /api/v1/log says
    log_id: str

    @property
    def tree_hex(self) -> str:
        return tree_id_hex(self.tree_id)


@contextmanager
def serve(folder: Path) -> Iterator[Served]:
    """`agentfactory tlog serve --dir folder` on a free loopback port, stopped (SIGTERM) afterwards."""
    exe = Path(sys.executable).with_name("agentfactory")
    proc = subprocess.Popen([str(exe), "tlog", "serve", "--listen", "127.0.0.1:0", "--dir", str(folder)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        assert proc.stderr is not None
        line = first_line(proc)
        assert line, "tlog serve exited before listening: " + proc.stderr.read().decode()
        url = json.loads(line)["listening"]
        while True:  # the socket is bound before the line is written: connections queue until uvicorn accepts
            try:
                info = httpx.get(url + "/api/v1/log", timeout=10).json()
                break
            except httpx.TransportError:
                assert proc.poll() is None, "tlog serve exited"
                time.sleep(0.02)
        yield Served(url, folder, info["treeID"], json.loads(line)["logID"])
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class RekorCli:
    """rekor-cli with its own HOME (its ~/.rekor/state.json) and no REKOR_* settings but those given."""

    def __init__(self, home: Path) -> None:
        self.exe = require("rekor-cli")
        self.home = home
        home.mkdir(parents=True, exist_ok=True)

    def run(self, server: Served, *args: str, pinned_key: bytes | None = None) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("REKOR_")}
        env["HOME"] = str(self.home)
        if pinned_key is not None:  # viper: REKOR_ + the config key rekor_server_public_key
            env["REKOR_REKOR_SERVER_PUBLIC_KEY"] = pinned_key.decode()
        return subprocess.run([str(self.exe), *args, "--rekor_server", server.url], env=env, capture_output=True,
                              text=True, check=False)

    def ok(self, server: Served, *args: str, pinned_key: bytes | None = None) -> Any:
        """The JSON output of a command that must succeed."""
        done = self.run(server, *args, "--format", "json", pinned_key=pinned_key)
        assert done.returncode == 0, f"rekor-cli {' '.join(args)}: {done.stderr}{done.stdout}"
        return json.loads(done.stdout)

    def fails(self, server: Served, *args: str, pinned_key: bytes | None = None) -> str:
        """stderr of a command that must fail (rekor-cli exits 1 and prints the reason)."""
        done = self.run(server, *args, pinned_key=pinned_key)
        assert done.returncode != 0, f"rekor-cli {' '.join(args)} passed: {done.stdout}"
        assert "Verification Successful" not in done.stdout
        return done.stderr

    def state(self) -> dict[str, str]:
        state: dict[str, str] = json.loads((self.home / ".rekor" / "state.json").read_text())
        return state


def dsse_proposal(signer: Signer, subject: str) -> dict[str, Any]:
    payload = make_statement("agent", f"sha256:{subject}", "https://example.com/predicate", {})
    sig = signer.key.sign(pae(INTOTO_PAYLOAD_TYPE, payload), ec.ECDSA(hashes.SHA256()))
    envelope = Envelope(INTOTO_PAYLOAD_TYPE, payload, (EnvelopeSignature("", sig),))
    return {"apiVersion": "0.0.1", "kind": "dsse", "spec": {"proposedContent": {
        "envelope": envelope.to_json().decode(), "verifiers": [base64.b64encode(signer.pem).decode()]}}}


@pytest.fixture
def cli(tmp_path: Path) -> RekorCli:
    return RekorCli(tmp_path / "home")


# --- every command works ------------------------------------------------------------------------------


def test_rekor_cli_commands_against_our_log(tmp_path: Path, cli: RekorCli) -> None:
    signer = new_signer(tmp_path)
    a1, s1, d1 = signer.sign_file(tmp_path, "one.txt", b"the first artifact\n")
    a2, s2, d2 = signer.sign_file(tmp_path, "two.txt", b"the second artifact\n")
    a3, s3, d3 = signer.sign_file(tmp_path, "three.txt", b"the third artifact\n")
    with serve(tmp_path / "log") as log:
        served_key = httpx.get(f"{log.url}/api/v1/log/publicKey", params={"treeID": log.tree_id}).content
        assert served_key == (log.folder / PUBLIC_KEY_FILE).read_bytes()

        # loginfo: the signed checkpoint verifies with the log's key; an empty log has no state to keep
        info = cli.ok(log, "loginfo")
        assert info == {"ActiveTreeSize": 0, "TotalTreeSize": 0, "TreeID": log.tree_id,
                        "RootHash": hashlib.sha256(b"").hexdigest()}

        # upload: the default type (hashedrekord, x509 keys), then --artifact-hash without the artifact
        up = cli.ok(log, "upload", "--artifact", str(a1), "--signature", str(s1), "--public-key", str(signer.pem_file),
                    "--pki-format", "x509")
        id1 = log.tree_hex + signer.uuid_of(s1, d1)
        assert up == {"AlreadyExists": False, "Index": 0, "Location": f"{ENTRIES}/{id1}"}
        up = cli.ok(log, "upload", "--type", "hashedrekord", "--artifact-hash", d2, "--signature", str(s2),
                    "--public-key", str(signer.pem_file))
        id2 = log.tree_hex + signer.uuid_of(s2, d2)
        assert (up["Index"], up["Location"]) == (1, f"{ENTRIES}/{id2}")
        again = cli.ok(log, "upload", "--artifact", str(a1), "--signature", str(s1), "--public-key",
                       str(signer.pem_file))
        assert again["AlreadyExists"] is True and again["Location"].endswith(f"{ENTRIES}/{id1}")

        # loginfo keeps the checkpoint in ~/.rekor; the next one proves consistency from it
        assert cli.ok(log, "loginfo")["ActiveTreeSize"] == 2
        assert cli.state()[log.tree_id].split("\n")[1] == "2"
        id3 = log.tree_hex + signer.uuid_of(s3, d3)
        assert cli.ok(log, "upload", "--artifact", str(a3), "--signature", str(s3), "--public-key",
                      str(signer.pem_file))["Location"] == f"{ENTRIES}/{id3}"
        grown = cli.run(log, "loginfo", "--format", "json")
        assert grown.returncode == 0, grown.stderr
        assert "No previous log state stored" not in grown.stderr  # it had one, and the proof verified
        assert json.loads(grown.stdout)["ActiveTreeSize"] == 3 and cli.state()[log.tree_id].split("\n")[1] == "3"

        # get: by index, by entry ID and by plain UUID; each verified (inclusion proof, checkpoint, SET)
        got = cli.ok(log, "get", "--log-index", "0")
        assert (got["UUID"], got["LogIndex"], got["LogID"]) == (id1, 0, log.log_id)
        assert got["Body"]["HashedRekordObj"]["data"]["hash"]["value"] == d1
        assert cli.ok(log, "get", "--uuid", id2)["LogIndex"] == 1
        assert cli.ok(log, "get", "--uuid", id2[16:])["UUID"] == id2
        tle = cli.run(log, "get", "--log-index", "2", "--format", "tle")
        assert tle.returncode == 0, tle.stderr
        assert json.loads(tle.stdout)["kindVersion"] == {"kind": "hashedrekord", "version": "0.0.1"}

        # verify: by entry ID, by index, and by the artifact itself (the log finds the entry it canonicalises)
        root = httpx.get(f"{log.url}/api/v1/log").json()["rootHash"]
        for args, index, entry_id in ((("--uuid", id1), 0, id1), (("--uuid", id1[16:]), 0, id1),
                                      (("--log-index", "1"), 1, id2),
                                      (("--artifact", str(a3), "--signature", str(s3), "--public-key",
                                        str(signer.pem_file)), 2, id3),
                                      (("--type", "hashedrekord", "--artifact-hash", d2, "--signature", str(s2),
                                        "--public-key", str(signer.pem_file)), 1, id2)):
            proof = cli.ok(log, "verify", *args)
            assert (proof["EntryUUID"], proof["Index"], proof["Size"], proof["RootHash"]) == (entry_id, index, 3,
                                                                                              root), args

        # search: by digest (bare or prefixed), by artifact, by key; 'and' is our default, 'or' when asked
        assert cli.ok(log, "search", "--sha", d1) == {"UUIDs": [id1]}
        assert cli.ok(log, "search", "--sha", f"sha256:{d2}") == {"UUIDs": [id2]}
        assert cli.ok(log, "search", "--artifact", str(a2)) == {"UUIDs": [id2]}
        everything = cli.ok(log, "search", "--public-key", str(signer.pem_file), "--pki-format", "x509")["UUIDs"]
        assert everything == [id1, id2, id3]
        both = ("search", "--sha", d1, "--public-key", str(signer.pem_file))
        assert cli.ok(log, *both, "--operator", "and") == cli.ok(log, *both) == {"UUIDs": [id1]}
        assert sorted(cli.ok(log, *both, "--operator", "or")["UUIDs"]) == sorted(everything)

        # a dsse entry (what the pipeline logs for attestations) reads and verifies too
        subject = hashlib.sha256(b"an agent").hexdigest()
        created = httpx.post(log.url + ENTRIES, json=dsse_proposal(signer, subject))
        assert created.status_code == 201, created.text
        ((dsse_id, _),) = created.json().items()
        assert cli.ok(log, "get", "--uuid", dsse_id)["LogIndex"] == 3
        assert cli.ok(log, "verify", "--uuid", dsse_id)["Size"] == 4
        assert cli.ok(log, "search", "--sha", subject) == {"UUIDs": [dsse_id]}

        # pinning the log's key (REKOR_REKOR_SERVER_PUBLIC_KEY) instead of fetching it works the same
        pinned = (log.folder / PUBLIC_KEY_FILE).read_bytes()
        assert cli.ok(log, "loginfo", pinned_key=pinned)["ActiveTreeSize"] == 4
        assert cli.ok(log, "get", "--log-index", "3", pinned_key=pinned)["UUID"] == dsse_id


# --- and refuses what it must ------------------------------------------------------------------------


def test_rekor_cli_refuses_a_log_signed_by_another_key(tmp_path: Path, cli: RekorCli) -> None:
    signer = new_signer(tmp_path)
    artifact, sig, _ = signer.sign_file(tmp_path, "a.txt", b"artifact\n")
    with serve(tmp_path / "log") as log:
        cli.ok(log, "upload", "--artifact", str(artifact), "--signature", str(sig), "--public-key",
               str(signer.pem_file))
        other = new_signer(tmp_path, "impostor").pem
        assert "signature on tree head did not verify" in cli.fails(log, "loginfo", pinned_key=other)
        assert "signature on checkpoint did not verify" in cli.fails(log, "get", "--log-index", "0",
                                                                     pinned_key=other)
        assert "signature on checkpoint did not verify" in cli.fails(log, "verify", "--log-index", "0",
                                                                     pinned_key=other)
        # and the log serves no key for a tree that is not its own
        wrong = httpx.get(f"{log.url}/api/v1/log/publicKey", params={"treeID": "1"})
        assert wrong.status_code == 400 and log.tree_id in wrong.json()["message"]
        wrong = httpx.get(f"{log.url}/api/v1/log/proof", params={"firstSize": 1, "lastSize": 1, "treeID": "7"})
        assert wrong.status_code == 400 and wrong.json()["code"] == 400


def test_rekor_cli_detects_a_forked_history(tmp_path: Path, cli: RekorCli) -> None:
    """The log's key signs another history (a copied key, or an operator rewriting the tree): rekor-cli's saved
    checkpoint and the consistency proof expose it, whether the fork has as many entries or more."""
    signer = new_signer(tmp_path)
    honest, forked = tmp_path / "log", tmp_path / "fork"
    with EmbeddedLog(honest) as embedded:
        for i in range(2):
            embedded.add(signer.proposal(b"honest %d" % i))
    forked.mkdir(mode=0o700)
    for name in (KEY_FILE, PUBLIC_KEY_FILE):
        shutil.copy2(honest / name, forked / name)
    with EmbeddedLog(forked) as embedded:
        for i in range(2):
            embedded.add(signer.proposal(b"rewritten %d" % i))
    with serve(honest) as log:
        assert cli.ok(log, "loginfo")["ActiveTreeSize"] == 2
        saved = cli.state()[log.tree_id]
    with serve(forked) as log:
        assert cli.state().get(log.tree_id) == saved  # same key, same tree id: the state applies
        assert "old root hash does not match STH hash" in cli.fails(log, "loginfo")
        assert httpx.post(log.url + ENTRIES, json=signer.proposal(b"rewritten 2")).status_code == 201
        assert "does not match expected root" in cli.fails(log, "loginfo")  # the consistency proof 2 -> 3
    assert cli.state()[log.tree_id] == saved  # a refused checkpoint is never saved


def test_rekor_cli_refuses_an_entry_altered_in_storage(tmp_path: Path, cli: RekorCli) -> None:
    """Whoever can write tree.db changes a logged body: the log still signs what it serves (its SETs are made
    on read), but the inclusion proof and the entry ID no longer match, and rekor-cli says so."""
    signer = new_signer(tmp_path)
    artifact, sig, digest = signer.sign_file(tmp_path, "a.txt", b"artifact\n")
    _, sig2, digest2 = signer.sign_file(tmp_path, "b.txt", b"another\n")
    folder = tmp_path / "log"
    with serve(folder) as log:
        cli.ok(log, "upload", "--artifact", str(artifact), "--signature", str(sig), "--public-key",
               str(signer.pem_file))
        cli.ok(log, "upload", "--type", "hashedrekord", "--artifact-hash", digest2, "--signature", str(sig2),
               "--public-key", str(signer.pem_file))
        entry_id = log.tree_hex + signer.uuid_of(sig, digest)
    evil = hashlib.sha256(b"the thief's artifact").hexdigest()
    with sqlite3.connect(folder / "tree.db") as db:
        (body,) = db.execute("SELECT body FROM leaves WHERE idx = 0").fetchone()
        db.execute("UPDATE leaves SET body = ? WHERE idx = 0", (bytes(body).replace(digest.encode(), evil.encode()),))
    db.close()
    with serve(folder) as log:
        refused = cli.fails(log, "get", "--log-index", "0")  # the altered body's leaf is not under the root
        assert "unable to verify entry was added to log" in refused and "does not match expected root" in refused
        for command in ("get", "verify"):  # the entry served under that ID is not the one it names
            assert "unexpected entry returned from rekor server" in cli.fails(log, command, "--uuid", entry_id)
        assert cli.ok(log, "get", "--log-index", "1")["LogIndex"] == 1  # the untouched entry still verifies


def test_the_log_refuses_what_rekor_cli_does_not_check(tmp_path: Path, cli: RekorCli) -> None:
    """`upload --entry` sends a prepared entry unchecked: the log checks the signature itself. Unknown
    entries, another tree's entry IDs and searches this log does not offer are errors that say so."""
    signer = new_signer(tmp_path)
    artifact, sig, digest = signer.sign_file(tmp_path, "a.txt", b"artifact\n")
    forged = signer.proposal(b"something else")
    forged["spec"]["data"]["hash"]["value"] = digest  # a signature over other bytes
    entry = tmp_path / "forged.json"
    entry.write_text(json.dumps(forged))
    with serve(tmp_path / "log") as log:
        refused = cli.fails(log, "upload", "--entry", str(entry))
        assert "[400]" in refused and "signature does not verify" in refused
        assert httpx.get(f"{log.url}/api/v1/log").json()["treeSize"] == 0
        cli.ok(log, "upload", "--artifact", str(artifact), "--signature", str(sig), "--public-key",
               str(signer.pem_file))
        uuid = signer.uuid_of(sig, digest)
        other_tree = f"{int(log.tree_hex, 16) ^ 1:016x}" + uuid
        assert "[404]" in cli.fails(log, "get", "--uuid", other_tree)
        assert "[404]" in cli.fails(log, "get", "--uuid", "ab" * 32)
        assert "[404]" in cli.fails(log, "get", "--log-index", "1")
        assert "entry in log cannot be located" in cli.fails(log, "verify", "--uuid", other_tree)
        assert "no matching entries found" in cli.fails(log, "search", "--sha", "0" * 64)
        assert "not by email" in cli.fails(log, "search", "--email", "someone@example.com")
        assert cli.ok(log, "get", "--uuid", log.tree_hex + uuid)["LogIndex"] == 0
        # our own parser reads the entry-ID key too, and still ties the UUID part to the body
        answer = httpx.get(f"{log.url}{ENTRIES}/{uuid}").json()
        assert list(answer) == [log.tree_hex + uuid] and parse_log_entry(answer, "answer").uuid == uuid
        with pytest.raises(InputError, match="uuid is not the leaf hash of the body"):
            parse_log_entry({log.tree_hex + "ab" * 32: answer[log.tree_hex + uuid]}, "answer")
