"""Transit key provider against a real OpenBao dev server (see conftest.py): no mocks.

Each test has its own Transit mount; the Transit key is the default `agentfactory`, so the
policies of docs/keys.md apply after swapping the mount path.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import socket
import time
from pathlib import Path
from typing import Any

import hvac
import pytest
from bao_server import running_openbao
from click.testing import CliRunner
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils
from prometheus_client import REGISTRY

from agentfactory.cli.keys_cmd import keys as keys_group
from agentfactory.errors import ConfigError, KeyProviderError
from agentfactory.keys import PublicKey, Signature, key_id, open_provider
from agentfactory.keys.vault import TransitKeyProvider, key_admin_policy, signer_policy

DOCS = Path(__file__).resolve().parents[2] / "docs" / "keys.md"
KEY = "agentfactory"
DIGEST = hashlib.sha256(b"an agent's wasm bytes").digest()


def docs_policy(name: str) -> str:
    """The HCL block that docs/keys.md prints after **`name`**: the exact text users copy."""
    match = re.search(rf"\*\*`{name}`\*\*.*?```hcl\n(.*?)```", DOCS.read_text(), re.S)
    assert match, f"no {name} policy in {DOCS}"
    return match.group(1)


def on_mount(policy: str, mount: str) -> str:
    return policy.replace('"transit/', f'"{mount}/')


def verify(public: PublicKey, sig: Signature, digest: bytes = DIGEST) -> None:
    key = serialization.load_pem_public_key(public.pem)
    assert isinstance(key, rsa.RSAPublicKey)
    key.verify(sig.signature, digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))


def by_id(provider: TransitKeyProvider) -> dict[str, PublicKey]:
    return {k.key_id: k for k in provider.public_keys()}


def token_with(root_client: Any, policy_name: str, hcl: str | None) -> str:
    if hcl is not None:
        root_client.sys.create_or_update_policy(policy_name, hcl)
    return str(root_client.auth.token.create(policies=[policy_name], ttl="10m")["auth"]["client_token"])


def rotations(key: str = KEY) -> float:
    return REGISTRY.get_sample_value("agent_factory_security_vault_rotations_total", {"key": key}) or 0.0


# --------------------------------------------------------------------------- signing


def test_sign_creates_key_and_verifies(transit: TransitKeyProvider, root_client: Any, transit_mount: str) -> None:
    sig = transit.sign_digest(DIGEST)
    assert sig.provider == "vault" and sig.version == 1 and len(sig.signature) == 256
    [public] = transit.public_keys()
    assert (public.status, public.version, public.name, public.provider) == ("active", 1, KEY, "vault")
    verify(public, sig)
    # Key id: SHA-256 of the DER SubjectPublicKeyInfo of Transit's public key, read independently.
    pem = root_client.secrets.transit.read_key(KEY, mount_point=transit_mount)["data"]["keys"]["1"]["public_key"]
    der = serialization.load_pem_public_key(pem.encode()).public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert sig.key_id == public.key_id == hashlib.sha256(der).hexdigest()
    # A flipped byte, in the signature or in the digest, does not verify.
    tampered = bytearray(sig.signature)
    tampered[17] ^= 0x01
    with pytest.raises(InvalidSignature):
        verify(public, Signature(sig.key_id, bytes(tampered), "vault", 1))
    with pytest.raises(InvalidSignature):
        verify(public, sig, hashlib.sha256(b"other bytes").digest())
    # sign(data) hashes with SHA-256 itself.
    verify(public, transit.sign(b"payload"), hashlib.sha256(b"payload").digest())


def test_refuses_a_digest_that_is_not_sha256(transit: TransitKeyProvider) -> None:
    with pytest.raises(KeyProviderError, match="32-byte SHA-256 digest"):
        transit.sign_digest(b"short")


def test_create_sets_rsa_2048_and_24h_auto_rotation(transit: TransitKeyProvider, root_client: Any,
                                                   transit_mount: str) -> None:
    created = transit.create()
    data = root_client.secrets.transit.read_key(KEY, mount_point=transit_mount)["data"]
    assert data["type"] == "rsa-2048"
    assert data["auto_rotate_period"] == 24 * 3600
    assert data["exportable"] is False  # the private key never leaves Vault
    assert created.status == "active" and created.version == 1
    assert transit.create() == created  # idempotent: an existing key is left alone


def test_rotate_period_from_environment(openbao: Any, root_client: Any, transit_mount: str,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAULT_ADDR", openbao.addr)
    monkeypatch.setenv("VAULT_TOKEN", openbao.root_token)
    monkeypatch.setenv("AGENTFACTORY_TRANSIT_MOUNT", transit_mount)
    monkeypatch.setenv("AGENTFACTORY_TRANSIT_ROTATE_PERIOD", "48h")
    provider = open_provider("vault")
    assert isinstance(provider, TransitKeyProvider)
    provider.create()
    data = root_client.secrets.transit.read_key(KEY, mount_point=transit_mount)["data"]
    assert data["auto_rotate_period"] == 48 * 3600


def test_rotation_keeps_old_versions_verifying_and_counts(transit: TransitKeyProvider) -> None:
    first = transit.sign_digest(DIGEST)
    before = rotations()
    rotated = transit.rotate()
    assert rotations() == before + 1
    second = transit.sign_digest(DIGEST)
    assert (first.version, second.version, rotated.version) == (1, 2, 2)
    assert second.key_id == rotated.key_id != first.key_id
    listed = by_id(transit)
    assert [(k.version, k.status) for k in transit.public_keys()] == [(1, "enabled"), (2, "active")]
    verify(listed[first.key_id], first)
    verify(listed[second.key_id], second)
    with pytest.raises(InvalidSignature):
        verify(listed[second.key_id], first)  # each version verifies only its own signatures


def test_revoke_sets_min_decryption_version(transit: TransitKeyProvider, root_client: Any,
                                            transit_mount: str, tmp_path: Path) -> None:
    v1 = transit.sign_digest(DIGEST)
    transit.rotate()
    v2 = transit.sign_digest(DIGEST)
    revoked = transit.revoke(v1.key_id)
    assert (revoked.key_id, revoked.status, revoked.version) == (v1.key_id, "revoked", 1)
    data = root_client.secrets.transit.read_key(KEY, mount_point=transit_mount)["data"]
    assert data["min_decryption_version"] == 2
    assert [(k.version, k.status) for k in transit.public_keys()] == [(1, "revoked"), (2, "active")]
    assert transit.revoke(v1.key_id).status == "revoked"  # idempotent
    # Vault no longer returns v1's public key; a new process still lists v1 as revoked.
    assert "1" not in data["keys"]
    fresh = TransitKeyProvider(transit.addr, token=root_client.token, mount=transit_mount)
    assert [(k.key_id, k.status) for k in fresh.public_keys()] == [(v1.key_id, "revoked"), (v2.key_id, "active")]
    # Without that cache the revoked version is unknown, never shown as usable.
    blank = TransitKeyProvider(transit.addr, token=root_client.token, mount=transit_mount,
                               cache_folder=tmp_path / "empty-cache")
    assert [(k.version, k.status) for k in blank.public_keys()] == [(2, "active")]


def test_revoke_refuses_the_latest_version_and_unknown_ids(transit: TransitKeyProvider) -> None:
    latest = transit.sign_digest(DIGEST)
    with pytest.raises(KeyProviderError, match=r"latest \(active\) version.*keys rotate --provider vault"):
        transit.revoke(latest.key_id)
    with pytest.raises(KeyProviderError, match="unknown key id 00000000"):
        transit.revoke("0" * 64)
    assert transit.public_keys()[0].status == "active"


def test_revoking_a_middle_version_revokes_every_older_one(transit: TransitKeyProvider) -> None:
    transit.create()
    transit.rotate()
    transit.rotate()
    v2 = next(k for k in transit.public_keys() if k.version == 2)
    transit.revoke(v2.key_id)
    assert [(k.version, k.status) for k in transit.public_keys()] == [(1, "revoked"), (2, "revoked"), (3, "active")]


# --------------------------------------------------------------------------- policies and identities


def test_docs_print_exactly_the_policies_of_the_code() -> None:
    assert docs_policy("signer") == signer_policy()
    assert docs_policy("key-admin") == key_admin_policy()


def test_approle_login_with_the_signer_policy(openbao: Any, root_client: Any, transit: TransitKeyProvider,
                                              transit_mount: str, monkeypatch: pytest.MonkeyPatch) -> None:
    transit.create()  # done once by the key admin; the signer cannot create keys
    policy = f"signer-{transit_mount}"
    root_client.sys.create_or_update_policy(policy, on_mount(docs_policy("signer"), transit_mount))
    approle = f"approle-{secrets.token_hex(4)}"
    root_client.sys.enable_auth_method("approle", path=approle)
    root_client.auth.approle.create_or_update_approle("pipeline", token_policies=[policy], token_ttl="10m",
                                                      mount_point=approle)
    role_id = root_client.auth.approle.read_role_id("pipeline", mount_point=approle)["data"]["role_id"]
    secret_id = root_client.auth.approle.generate_secret_id("pipeline", mount_point=approle)["data"]["secret_id"]
    monkeypatch.setenv("VAULT_ADDR", openbao.addr)
    monkeypatch.setenv("VAULT_ROLE_ID", role_id)
    monkeypatch.setenv("VAULT_SECRET_ID", secret_id)
    monkeypatch.setenv("VAULT_APPROLE_MOUNT", approle)
    monkeypatch.setenv("AGENTFACTORY_TRANSIT_MOUNT", transit_mount)
    signer = open_provider("vault")
    sig = signer.sign_digest(DIGEST)
    verify(by_id(transit)[sig.key_id], sig)
    assert [k.status for k in signer.public_keys()] == ["active"]
    # Least privilege: the pipeline cannot rotate or revoke.
    with pytest.raises(KeyProviderError, match=rf"permission denied.*AppRole.*`{transit_mount}/keys/{KEY}/rotate`"):
        signer.rotate()
    transit.rotate()
    with pytest.raises(KeyProviderError, match=rf"`{transit_mount}/keys/{KEY}/config`.*key-admin policy"):
        signer.revoke(sig.key_id)


def test_signer_cannot_create_a_missing_key(openbao: Any, root_client: Any, transit_mount: str) -> None:
    token = token_with(root_client, f"signer-{transit_mount}", on_mount(docs_policy("signer"), transit_mount))
    signer = TransitKeyProvider(openbao.addr, token=token, mount=transit_mount)
    with pytest.raises(KeyProviderError, match=r"does not exist.*may not create it.*key-admin policy") as info:
        signer.sign_digest(DIGEST)
    assert f"{transit_mount}/keys/{KEY}" in str(info.value)
    off = TransitKeyProvider(openbao.addr, token=token, mount=transit_mount, auto_create=False)
    with pytest.raises(KeyProviderError, match=r"does not exist.*AUTO_CREATE is off"):
        off.sign_digest(DIGEST)
    assert signer.public_keys() == []


def test_key_admin_policy_creates_rotates_revokes_but_cannot_sign(openbao: Any, root_client: Any,
                                                                 transit_mount: str) -> None:
    token = token_with(root_client, f"key-admin-{transit_mount}",
                       on_mount(docs_policy("key-admin"), transit_mount))
    admin = TransitKeyProvider(openbao.addr, token=token, mount=transit_mount)
    first = admin.create()
    admin.rotate()
    assert admin.revoke(first.key_id).status == "revoked"
    with pytest.raises(KeyProviderError, match=rf"`{transit_mount}/sign/{KEY}`.*signer policy"):
        admin.sign_digest(DIGEST)


def test_signing_without_read_names_the_missing_path(openbao: Any, root_client: Any,
                                                     transit: TransitKeyProvider, transit_mount: str) -> None:
    transit.create()
    sign_only = f'path "{transit_mount}/sign/{KEY}" {{\n  capabilities = ["update"]\n}}\n'
    token = token_with(root_client, f"sign-only-{transit_mount}", sign_only)
    provider = TransitKeyProvider(openbao.addr, token=token, mount=transit_mount)
    with pytest.raises(KeyProviderError, match=rf"""capability 'read' on `{transit_mount}/keys/{KEY}`; add path "{
            transit_mount}/keys/{KEY}" \{{ capabilities = \["read"\] \}}"""):
        provider.sign_digest(DIGEST)


def test_token_without_permission_gets_the_path_and_the_policy(openbao: Any, root_client: Any,
                                                               transit_mount: str) -> None:
    token = token_with(root_client, "default", None)
    provider = TransitKeyProvider(openbao.addr, token=token, mount=transit_mount)
    with pytest.raises(KeyProviderError) as info:
        provider.sign_digest(DIGEST)
    message = str(info.value)
    assert "permission denied" in message and openbao.addr in message
    assert f'path "{transit_mount}/sign/{KEY}" {{ capabilities = ["update"] }}' in message
    assert "signer policy in docs/keys.md" in message


def test_invalid_token_is_named_as_such(openbao: Any, transit_mount: str) -> None:
    provider = TransitKeyProvider(openbao.addr, token="not-a-token", mount=transit_mount)
    with pytest.raises(KeyProviderError, match="invalid, expired or revoked"):
        provider.public_keys()


def test_bad_approle_secret(openbao: Any, root_client: Any, transit_mount: str) -> None:
    approle = f"approle-{secrets.token_hex(4)}"
    root_client.sys.enable_auth_method("approle", path=approle)
    root_client.auth.approle.create_or_update_approle("r", token_policies=["default"], mount_point=approle)
    role_id = root_client.auth.approle.read_role_id("r", mount_point=approle)["data"]["role_id"]
    provider = TransitKeyProvider(openbao.addr, role_id=role_id, secret_id="wrong", approle_mount=approle,
                                  mount=transit_mount)
    with pytest.raises(KeyProviderError, match=rf"AppRole login at .*auth/{approle}/login was refused.*SECRET_ID"):
        provider.sign_digest(DIGEST)


# --------------------------------------------------------------------------- server-side failures


def test_unreachable_address_is_named() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    addr = f"http://127.0.0.1:{port}"  # nothing listens there any more
    provider = TransitKeyProvider(addr, token="t", timeout=5)
    start = time.monotonic()
    with pytest.raises(KeyProviderError, match=rf"cannot reach Vault at {re.escape(addr)} .*check VAULT_ADDR"):
        provider.sign_digest(DIGEST)
    assert time.monotonic() - start < 5


def test_silent_server_times_out(transit_mount: str) -> None:
    with socket.socket() as silent:  # accepts connections (kernel backlog), never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        addr = f"http://127.0.0.1:{silent.getsockname()[1]}"
        provider = TransitKeyProvider(addr, token="t", mount=transit_mount, timeout=0.5)
        start = time.monotonic()
        with pytest.raises(KeyProviderError, match=r"did not answer within 0.5 s.*AGENTFACTORY_VAULT_TIMEOUT"):
            provider.sign_digest(DIGEST)
        assert time.monotonic() - start < 5


def test_transit_not_mounted(openbao: Any, transit_mount: str) -> None:
    provider = TransitKeyProvider(openbao.addr, token=openbao.root_token, mount=f"{transit_mount}-absent")
    with pytest.raises(KeyProviderError, match=rf"no Transit engine is mounted at {transit_mount}-absent/ .*"
                                               rf"bao secrets enable -path={transit_mount}-absent transit"):
        provider.sign_digest(DIGEST)


@pytest.mark.parametrize("key_type", ["aes256-gcm96", "ecdsa-p256", "rsa-4096"])
def test_key_of_the_wrong_type(transit: TransitKeyProvider, root_client: Any, transit_mount: str,
                               key_type: str) -> None:
    root_client.secrets.transit.create_key(KEY, key_type=key_type, mount_point=transit_mount)
    with pytest.raises(KeyProviderError, match=rf"`{transit_mount}/keys/{KEY}` .* is not an rsa-2048 key"):
        transit.sign_digest(DIGEST)
    with pytest.raises(KeyProviderError, match="is not an rsa-2048 key"):
        transit.create()


def test_tls_with_vault_cacert(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    with running_openbao(tmp_path, tls=True) as server:
        assert server.cacert is not None and server.addr.startswith("https://")
        root = hvac.Client(url=server.addr, token=server.root_token, verify=str(server.cacert), timeout=10)
        root.sys.enable_secrets_engine("transit", path="transit")
        monkeypatch.delenv("VAULT_CACERT", raising=False)
        untrusted = TransitKeyProvider(server.addr, token=server.root_token)
        with pytest.raises(KeyProviderError, match="TLS to .* failed.*VAULT_CACERT"):
            untrusted.sign_digest(DIGEST)
        monkeypatch.setenv("VAULT_CACERT", str(server.cacert))
        trusted = TransitKeyProvider(server.addr, token=server.root_token)
        sig = trusted.sign_digest(DIGEST)
        verify(by_id(trusted)[sig.key_id], sig)


# --------------------------------------------------------------------------- settings


def test_settings_errors(monkeypatch: pytest.MonkeyPatch, transit_mount: str) -> None:
    with pytest.raises(ConfigError, match="VAULT_ADDR is not set"):
        open_provider("vault")
    monkeypatch.setenv("VAULT_ADDR", "http://127.0.0.1:8200")
    with pytest.raises(ConfigError, match="set VAULT_TOKEN, or VAULT_ROLE_ID and VAULT_SECRET_ID"):
        open_provider("vault")
    monkeypatch.setenv("VAULT_ROLE_ID", "r")
    with pytest.raises(ConfigError, match="VAULT_SECRET_ID is not"):
        open_provider("vault")
    monkeypatch.setenv("VAULT_TOKEN", "t")
    for period, problem in (("5m", "at least 1h"), ("soon", "not a duration")):
        monkeypatch.setenv("AGENTFACTORY_TRANSIT_ROTATE_PERIOD", period)
        with pytest.raises(ConfigError, match=problem):
            open_provider("vault")
    monkeypatch.setenv("AGENTFACTORY_TRANSIT_ROTATE_PERIOD", "0")
    assert open_provider("vault").rotate_seconds == 0  # type: ignore[attr-defined]
    monkeypatch.setenv("VAULT_CACERT", "/nonexistent/ca.pem")
    with pytest.raises(ConfigError, match="VAULT_CACERT=.*no such file"):
        open_provider("vault")
    with pytest.raises(ConfigError, match="VAULT_ADDR='ftp://x'"):
        TransitKeyProvider("ftp://x", token="t")
    with pytest.raises(ConfigError, match="unknown key provider"):
        open_provider("kms")


# --------------------------------------------------------------------------- CLI


def test_cli_against_openbao(openbao: Any, transit_mount: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAULT_ADDR", openbao.addr)
    monkeypatch.setenv("VAULT_TOKEN", openbao.root_token)
    monkeypatch.setenv("AGENTFACTORY_TRANSIT_MOUNT", transit_mount)
    runner = CliRunner()

    def run(*args: str) -> str:
        result = runner.invoke(keys_group, [*args, "--provider", "vault"])
        assert result.exit_code == 0, result.output + result.stderr
        return result.stdout

    created = json.loads(run("create", "--json"))
    assert (created["status"], created["version"], created["provider"]) == ("active", 1, "vault")
    run("rotate")
    listed = json.loads(run("list", "--json"))["keys"]
    assert [(k["version"], k["status"]) for k in listed] == [(1, "enabled"), (2, "active")]
    table = run("list")
    assert created["keyId"] in table and "enabled" in table
    output = run("revoke", created["keyId"][:12])
    assert "min_decryption_version is now 2" in output and "every older version" in output
    exported = run("export", "--all")  # revoked keys are never exported as usable
    assert exported.count("BEGIN PUBLIC KEY") == 1
    public = serialization.load_pem_public_key(exported.encode())
    assert isinstance(public, rsa.RSAPublicKey) and key_id(public) == listed[1]["keyId"]
    refused = runner.invoke(keys_group, ["revoke", listed[1]["keyId"], "--provider", "vault"])
    assert refused.exit_code == 2 and "rotate" in refused.stderr


def test_create_request_cannot_change_an_existing_key(transit: TransitKeyProvider, root_client: Any,
                                                      transit_mount: str) -> None:
    """Why `update` on <mount>/keys/<key> in the key-admin policy grants nothing beyond creation."""
    transit.create()
    root_client.secrets.transit.create_key(KEY, key_type="aes256-gcm96", exportable=True, auto_rotate_period="48h",
                                           mount_point=transit_mount)
    data = root_client.secrets.transit.read_key(KEY, mount_point=transit_mount)["data"]
    assert (data["type"], data["exportable"], data["auto_rotate_period"]) == ("rsa-2048", False, 24 * 3600)
