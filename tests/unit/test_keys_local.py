"""The local keyring: first use, rotation, revocation, and the attacks it must refuse."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from agentfactory.cli.keys_cmd import keys as keys_group
from agentfactory.errors import ConfigError, KeyProviderError
from agentfactory.keys import LocalKeyring, PublicKey, Signature, key_id, open_provider
from agentfactory.promotion import promoter_keyring

DIGEST = hashlib.sha256(b"an agent's wasm bytes").digest()


@pytest.fixture
def ring(af_home: Path) -> LocalKeyring:
    return LocalKeyring()


def verify(public: PublicKey, sig: Signature, digest: bytes = DIGEST) -> None:
    key = serialization.load_pem_public_key(public.pem)
    assert isinstance(key, rsa.RSAPublicKey)
    key.verify(sig.signature, digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))


def by_id(ring: LocalKeyring) -> dict[str, PublicKey]:
    return {k.key_id: k for k in ring.public_keys()}


def metadata(ring: LocalKeyring) -> dict[str, object]:
    return json.loads(ring.keyring_path.read_text())  # type: ignore[no-any-return]


def write_metadata(ring: LocalKeyring, doc: object) -> None:
    ring.keyring_path.write_text(json.dumps(doc))


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --------------------------------------------------------------------------- normal use


def test_first_use_creates_a_key_that_verifies(ring: LocalKeyring, af_home: Path) -> None:
    assert ring.folder == af_home / "keys" and not ring.folder.exists()
    sig = ring.sign_digest(DIGEST)
    assert mode(ring.folder) == 0o700
    pem = ring.pem_path(sig.key_id)
    assert mode(pem) == 0o600
    [public] = ring.public_keys()
    assert (public.key_id, public.status, public.provider, public.name) == (sig.key_id, "active", "local", "key-1")
    assert public.created and public.created.endswith("Z")
    verify(public, sig)
    # The key id is the SHA-256 of the DER SubjectPublicKeyInfo.
    loaded = serialization.load_pem_public_key(public.pem)
    der = loaded.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert sig.key_id == hashlib.sha256(der).hexdigest() == pem.stem
    # The private key file is PKCS#8 and RSA-2048.
    assert pem.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert metadata(ring) == {"active": sig.key_id, "keys": [
        {"keyId": sig.key_id, "name": "key-1", "status": "active", "created": public.created}]}


def test_flipped_byte_does_not_verify(ring: LocalKeyring) -> None:
    sig = ring.sign_digest(DIGEST)
    [public] = ring.public_keys()
    tampered = bytearray(sig.signature)
    tampered[100] ^= 0x80
    with pytest.raises(InvalidSignature):
        verify(public, Signature(sig.key_id, bytes(tampered), "local"))
    with pytest.raises(InvalidSignature):
        verify(public, sig, hashlib.sha256(b"other bytes").digest())


def test_sign_hashes_data_with_sha256(ring: LocalKeyring) -> None:
    sig = ring.sign(b"payload")
    verify(ring.public_keys()[0], sig, hashlib.sha256(b"payload").digest())
    assert ring.sign(b"payload").key_id == sig.key_id  # the same key, not a new one per call


def test_refuses_a_digest_that_is_not_sha256(ring: LocalKeyring) -> None:
    with pytest.raises(KeyProviderError, match="32-byte SHA-256 digest"):
        ring.sign_digest(b"x" * 20)


def test_rotation_keeps_old_keys_verifying(ring: LocalKeyring) -> None:
    old = ring.sign_digest(DIGEST)
    new_key = ring.rotate()
    new = ring.sign_digest(DIGEST)
    assert new.key_id == new_key.key_id != old.key_id
    keys = by_id(ring)
    assert (keys[old.key_id].status, keys[new.key_id].status) == ("enabled", "active")
    verify(keys[old.key_id], old)
    verify(keys[new.key_id], new)
    with pytest.raises(InvalidSignature):
        verify(keys[new.key_id], old)
    assert metadata(ring)["active"] == new.key_id


def test_rotate_on_an_empty_keyring_creates_the_active_key(ring: LocalKeyring) -> None:
    created = ring.rotate()
    assert created.status == "active" and ring.sign_digest(DIGEST).key_id == created.key_id


def test_create_stages_an_enabled_key_once_one_is_active(ring: LocalKeyring) -> None:
    first = ring.create()
    staged = ring.create("release-2027")
    assert (first.status, staged.status, staged.name) == ("active", "enabled", "release-2027")
    assert ring.sign_digest(DIGEST).key_id == first.key_id
    with pytest.raises(KeyProviderError, match="already used"):
        ring.create("release-2027")
    with pytest.raises(KeyProviderError, match="key name"):
        ring.create("../evil")


def test_revoke_marks_status_and_refuses_the_active_key(ring: LocalKeyring) -> None:
    old = ring.sign_digest(DIGEST)
    with pytest.raises(KeyProviderError, match=r"is the active key .*keys rotate"):
        ring.revoke(old.key_id)
    ring.rotate()
    revoked = ring.revoke(old.key_id)
    assert revoked.status == "revoked" and by_id(ring)[old.key_id].status == "revoked"
    assert ring.revoke(old.key_id).status == "revoked"  # idempotent
    assert ring.sign_digest(DIGEST).key_id != old.key_id
    with pytest.raises(KeyProviderError, match=r"unknown key id 0{64} in .*keyring.json"):
        ring.revoke("0" * 64)


def test_concurrent_first_use_creates_one_key(af_home: Path) -> None:
    results: list[str] = []
    errors: list[BaseException] = []

    def sign() -> None:
        try:
            results.append(LocalKeyring().sign_digest(DIGEST).key_id)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=sign) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors and len(results) == 6 and len(set(results)) == 1
    assert len(LocalKeyring().public_keys()) == 1


def test_processes_starting_together_make_one_first_promoter_key(af_home: Path) -> None:
    """`admission serve --workers 2` on a fresh home: each worker's default trust policy makes the promoter key
    on first use. Checked outside the keyring's lock, the second failed ("key name 'promoter' is already used")
    and stopped the webhook; the check and the make are one step under the lock now (also across processes)."""
    script = ("import sys, time\n"
              "from pathlib import Path\n"
              "from agentfactory.promotion import promoter_keyring\n"
              "Path(sys.argv[1] + '.' + sys.argv[2]).touch()\n"  # imported: ready
              "while not Path(sys.argv[1]).exists(): time.sleep(0.0005)\n"  # released together
              "print(promoter_keyring(create=True).public_keys()[0].key_id)\n")
    go = af_home.parent / "go"  # beside the home, which the first key makes
    procs = [subprocess.Popen([sys.executable, "-c", script, str(go), str(n)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for n in range(4)]
    deadline = time.monotonic() + 120
    while not all(go.with_name(f"go.{n}").exists() for n in range(4)) and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outs]
    assert len({out.strip() for out, _ in outs}) == 1
    assert [k.name for k in promoter_keyring().public_keys()] == ["promoter"]


def test_open_provider(af_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENTFACTORY_KEY_PROVIDER", raising=False)
    assert isinstance(open_provider(), LocalKeyring)
    monkeypatch.setenv("AGENTFACTORY_KEY_PROVIDER", "local")
    assert isinstance(open_provider(), LocalKeyring)
    monkeypatch.setenv("AGENTFACTORY_KEY_PROVIDER", "hsm")
    with pytest.raises(ConfigError, match="PROVIDER='hsm': unknown key provider; use one of local, vault"):
        open_provider()
    with pytest.raises(ConfigError, match="--provider='gpg'"):
        open_provider("gpg")


# --------------------------------------------------------------------------- attacks and corruption


def test_tampered_keyring_json_is_refused(ring: LocalKeyring) -> None:
    sig = ring.sign_digest(DIGEST)
    ring.keyring_path.write_text('{"active": ')
    with pytest.raises(KeyProviderError, match=rf"corrupt keyring {ring.keyring_path}: not valid JSON"):
        ring.sign_digest(DIGEST)
    write_metadata(ring, {"active": "f" * 64, "keys": [
        {"keyId": sig.key_id, "name": "key-1", "status": "active", "created": "2026-01-01T00:00:00Z"}]})
    with pytest.raises(KeyProviderError, match=r'"active" names f{64}, but the keys with status "active" are'):
        ring.sign_digest(DIGEST)
    write_metadata(ring, {"active": sig.key_id, "keys": [
        {"keyId": sig.key_id, "name": "key-1", "status": "trusted", "created": "2026-01-01T00:00:00Z"}]})
    with pytest.raises(KeyProviderError, match=r"keys\[0\]\.status: 'trusted' is not one of"):
        ring.public_keys()
    write_metadata(ring, {"active": sig.key_id, "keys": [], "extra": 1})
    with pytest.raises(KeyProviderError, match='exactly the fields "active" and "keys"'):
        ring.sign_digest(DIGEST)
    write_metadata(ring, {"active": "../../etc/passwd", "keys": [
        {"keyId": "../../etc/passwd", "name": "key-1", "status": "active", "created": "x"}]})
    with pytest.raises(KeyProviderError, match=r"keys\[0\]\.keyId: not a key id"):
        ring.sign_digest(DIGEST)
    entry = {"keyId": sig.key_id, "name": "key-1", "status": "active", "created": "x"}
    write_metadata(ring, {"active": sig.key_id, "keys": [entry, entry]})
    with pytest.raises(KeyProviderError, match="listed twice"):
        ring.sign_digest(DIGEST)


def test_oversized_keyring_json_is_refused(ring: LocalKeyring) -> None:
    ring.sign_digest(DIGEST)
    ring.keyring_path.write_bytes(b" " * (1 << 20) + b"{}")
    with pytest.raises(KeyProviderError, match="larger than the 1,048,576-byte limit"):
        ring.sign_digest(DIGEST)


def test_missing_keyring_json_beside_keys_is_refused(ring: LocalKeyring) -> None:
    ring.sign_digest(DIGEST)
    ring.keyring_path.unlink()
    with pytest.raises(KeyProviderError, match=r"keyring .*keyring.json is missing but 1 private key\(s\)"):
        ring.sign_digest(DIGEST)


def test_missing_pem_is_refused(ring: LocalKeyring) -> None:
    sig = ring.sign_digest(DIGEST)
    ring.pem_path(sig.key_id).unlink()
    with pytest.raises(KeyProviderError, match=rf"private key {ring.pem_path(sig.key_id)} is missing"):
        ring.sign_digest(DIGEST)


def test_swapped_pem_is_refused(ring: LocalKeyring) -> None:
    old = ring.sign_digest(DIGEST)
    new = ring.rotate()
    # An attacker puts the old key's file in place of the active one.
    ring.pem_path(new.key_id).write_bytes(ring.pem_path(old.key_id).read_bytes())
    with pytest.raises(KeyProviderError) as info:
        ring.sign_digest(DIGEST)
    message = str(info.value)
    assert f"{ring.pem_path(new.key_id)} holds key {old.key_id}" in message
    assert f"say {new.key_id}" in message and "tampering" in message
    with pytest.raises(KeyProviderError, match="replaced or swapped"):
        ring.public_keys()


def test_replaced_pem_is_refused_even_when_cached(ring: LocalKeyring) -> None:
    """The in-memory cache of parsed keys must not hide a file replaced after first use."""
    sig = ring.sign_digest(DIGEST)
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = ring.pem_path(sig.key_id)
    path.write_bytes(other.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()) + b"\n")
    with pytest.raises(KeyProviderError, match=rf"holds key {key_id(other.public_key())}"):
        ring.sign_digest(DIGEST)


def test_world_readable_key_is_refused(ring: LocalKeyring) -> None:
    sig = ring.sign_digest(DIGEST)
    path = ring.pem_path(sig.key_id)
    os.chmod(path, 0o644)
    with pytest.raises(KeyProviderError, match=rf"accessible by group or others \(mode 0644\): run `chmod 600 {path}`"):
        ring.sign_digest(DIGEST)
    os.chmod(path, 0o640)
    with pytest.raises(KeyProviderError, match=rf"chmod 600 {path}"):
        ring.public_keys()
    os.chmod(path, 0o600)
    verify(ring.public_keys()[0], ring.sign_digest(DIGEST))


def test_group_writable_folder_is_refused(ring: LocalKeyring) -> None:
    ring.sign_digest(DIGEST)
    os.chmod(ring.folder, 0o777)
    with pytest.raises(KeyProviderError, match=rf"writable by group or others .*chmod 700 {ring.folder}"):
        ring.sign_digest(DIGEST)


def test_symlinked_pem_is_refused(ring: LocalKeyring, tmp_path: Path) -> None:
    sig = ring.sign_digest(DIGEST)
    path = ring.pem_path(sig.key_id)
    target = tmp_path / "elsewhere.pem"
    target.write_bytes(path.read_bytes())
    os.chmod(target, 0o600)
    path.unlink()
    path.symlink_to(target)
    with pytest.raises(KeyProviderError, match="is a symbolic link"):
        ring.sign_digest(DIGEST)


def plant(ring: LocalKeyring, private_pem: bytes, public_der_key: object) -> str:
    """Install a foreign private key under its own key id, as if keyring.json listed it as active."""
    kid = hashlib.sha256(public_der_key.public_bytes(  # type: ignore[attr-defined]
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).hexdigest()
    ring.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    path = ring.pem_path(kid)
    path.write_bytes(private_pem)
    os.chmod(path, 0o600)
    write_metadata(ring, {"active": kid, "keys": [
        {"keyId": kid, "name": "key-1", "status": "active", "created": "2026-01-01T00:00:00Z"}]})
    return kid


def test_non_rsa_key_is_refused(ring: LocalKeyring) -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    kid = plant(ring, pem, private.public_key())
    with pytest.raises(KeyProviderError, match=rf"{kid}.pem is a ECPrivateKey key, not RSA: .*RSA-2048 only"):
        ring.sign_digest(DIGEST)


def test_rsa_of_another_size_is_refused(ring: LocalKeyring) -> None:
    private = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    plant(ring, pem, private.public_key())
    with pytest.raises(KeyProviderError, match="is RSA-1024, not RSA-2048"):
        ring.sign_digest(DIGEST)


def test_garbage_pem_is_refused(ring: LocalKeyring) -> None:
    sig = ring.sign_digest(DIGEST)
    path = ring.pem_path(sig.key_id)
    path.write_bytes(b"-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n")
    with pytest.raises(KeyProviderError, match="is not an unencrypted PKCS#8 PEM private key"):
        ring.sign_digest(DIGEST)
    path.write_bytes(b"A" * (64 << 10))
    with pytest.raises(KeyProviderError, match="larger than 16,384 bytes"):
        ring.sign_digest(DIGEST)


# --------------------------------------------------------------------------- CLI


def test_cli_create_list_export_rotate_revoke(af_home: Path, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENTFACTORY_KEY_PROVIDER", raising=False)
    runner = CliRunner()

    def run(*args: str, code: int = 0) -> str:
        result = runner.invoke(keys_group, list(args))
        assert result.exit_code == code, result.output + result.stderr
        return result.stdout if code == 0 else result.stderr

    assert "No local keys yet" in run("list")
    first = json.loads(run("create", "--json"))
    assert first["status"] == "active" and first["publicKey"].startswith("-----BEGIN PUBLIC KEY-----")
    exported = run("export")
    public = serialization.load_pem_public_key(exported.encode())
    assert isinstance(public, rsa.RSAPublicKey) and key_id(public) == first["keyId"]
    assert "is now the active key" in run("rotate", "--provider", "local")
    listed = json.loads(run("list", "--json"))
    assert listed["provider"] == "local"
    assert [k["status"] for k in listed["keys"]] == ["enabled", "active"]
    table = run("list")
    for col in ("key id", "status", "provider", "name", "version", "created"):
        assert col in table
    assert "rotate" in run("revoke", listed["keys"][1]["keyId"], code=2)
    assert "give the full id or at least 8" in run("revoke", "abc", code=2)
    assert f"revoked {first['keyId']}" in run("revoke", first["keyId"][:10])
    assert "already revoked" in run("revoke", first["keyId"])
    out_file = tmp_path / "trusted.pem"
    run("export", "--all", "-o", str(out_file))
    assert out_file.read_text().count("BEGIN PUBLIC KEY") == 1  # the revoked key is not exported
    assert run("export", first["keyId"]).startswith("-----BEGIN PUBLIC KEY-----")
    assert "KEY_ID or --all" in run("export", first["keyId"], "--all", code=2)
    assert "--name applies to the local keyring only" in runner.invoke(
        keys_group, ["create", "--name", "x", "--provider", "vault"],
        env={"VAULT_ADDR": "http://127.0.0.1:1", "VAULT_TOKEN": "t"}).stderr
    bad = runner.invoke(keys_group, ["list", "--provider", "kms"])
    assert bad.exit_code == 2


def test_cli_reports_a_tampered_keyring(af_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AGENTFACTORY_KEY_PROVIDER", raising=False)
    ring = LocalKeyring()
    ring.sign_digest(DIGEST)
    ring.keyring_path.write_text("[]")
    result = CliRunner().invoke(keys_group, ["list"])
    assert result.exit_code == 2
    assert "corrupt keyring" in result.stderr and "keyring.json" in result.stderr
