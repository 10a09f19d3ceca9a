"""`--key-provider cosign`: signing through the real cosign binary, with a cosign key file and with
OpenBao Transit through cosign's `hashivault://` KMS (a real `bao server -dev`, see conftest.py).

A team's existing cosign key signs a pipeline run; `agentfactory verify` accepts it with that key in
the trust policy, and cosign itself accepts the signatures. Every way the key can be unusable (wrong
password, no password, missing file, ECDSA key, Vault down, no permission, missing Transit key)
fails closed with a message that names the key and the fix.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bao_server import OpenBao
from click.testing import CliRunner
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils
from helpers import EXAMPLES_SCANNING, write_template
from peer_tools import require
from runtime_helpers import OK_WAT, wat_manifest

from agentfactory.cli.keys_cmd import keys as keys_group
from agentfactory.cli.scan_cmd import vex as vex_group
from agentfactory.dsse import pae, parse_envelope
from agentfactory.errors import ConfigError, KeyProviderError
from agentfactory.keys import PublicKey, key_id, open_provider
from agentfactory.keys.cosign import CosignKeyProvider
from agentfactory.keys.vault import TransitKeyProvider
from agentfactory.tlog.log import PUBLIC_KEY_FILE, default_tlog_dir
from agentfactory.trust import to_yaml

PASSWORD = "correct horse battery staple"
DATA = b"an agent's wasm bytes"


def cosign(*args: str, env: dict[str, str] | None = None, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([str(require("cosign")), *args], input=stdin, capture_output=True,
                          env=env if env is not None else os.environ.copy(), timeout=300, check=False)


def check_rsa(public: PublicKey, signature: bytes, data: bytes = DATA) -> None:
    """RSA PKCS#1 v1.5 over SHA-256 of `data`: exactly what the verifier checks."""
    key = serialization.load_pem_public_key(public.pem)
    assert isinstance(key, rsa.RSAPublicKey)
    key.verify(signature, hashlib.sha256(data).digest(), padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def cosign_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No setting of the developer's shell leaks in; loopback never goes through a proxy."""
    for name in list(os.environ):
        if name.startswith(("VAULT_", "BAO_", "COSIGN_", "AGENTFACTORY_COSIGN_", "AGENTFACTORY_TRANSIT_")) or name in (
                "AGENTFACTORY_KEY_PROVIDER", "TRANSIT_SECRET_ENGINE_PATH"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
def team_key(tmp_path: Path, cosign_env: None, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A team's cosign key: an RSA-2048 PEM imported with `cosign import-key-pair` (team.key, team.pub)."""
    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    plain = tmp_path / "rsa.pem"
    plain.write_bytes(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                            serialization.NoEncryption()))
    monkeypatch.setenv("COSIGN_PASSWORD", PASSWORD)
    done = cosign("import-key-pair", "--key", str(plain), "--output-key-prefix", str(tmp_path / "team"), "--yes")
    assert done.returncode == 0, done.stderr.decode()
    plain.unlink()
    return tmp_path / "team.key"


# --------------------------------------------------------------------------- a cosign key file


def test_a_cosign_key_file_signs_what_cosign_and_the_verifier_accept(team_key: Path, tmp_path: Path) -> None:
    provider = CosignKeyProvider(str(team_key))
    (public,) = provider.public_keys()
    cosign_pub = serialization.load_pem_public_key((tmp_path / "team.pub").read_bytes())
    assert isinstance(cosign_pub, rsa.RSAPublicKey)
    assert public.key_id == key_id(cosign_pub), "the key id is the one of the public key cosign wrote"
    assert (public.status, public.provider, public.name) == ("active", "cosign", str(team_key))

    sig = provider.sign(DATA)
    assert (sig.key_id, sig.provider) == (public.key_id, "cosign")
    check_rsa(public, sig.signature)
    # cosign itself accepts the signature with the team's public key, without any transparency log.
    blob, sig_file = tmp_path / "blob", tmp_path / "blob.sig"
    blob.write_bytes(DATA)
    sig_file.write_text(base64.b64encode(sig.signature).decode())
    ok = cosign("verify-blob", "--key", str(tmp_path / "team.pub"), "--signature", str(sig_file),
                "--insecure-ignore-tlog=true", "--use-signed-timestamps=false", str(blob))
    assert ok.returncode == 0, ok.stderr.decode()
    blob.write_bytes(DATA + b"!")
    refused = cosign("verify-blob", "--key", str(tmp_path / "team.pub"), "--signature", str(sig_file),
                     "--insecure-ignore-tlog=true", "--use-signed-timestamps=false", str(blob))
    assert refused.returncode != 0


def test_the_key_comes_from_the_environment_and_open_provider(team_key: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="no cosign key: pass --cosign-key REF or set AGENTFACTORY_COSIGN_KEY"):
        open_provider("cosign")
    monkeypatch.setenv("AGENTFACTORY_COSIGN_KEY", str(team_key))
    provider = open_provider("cosign")
    assert isinstance(provider, CosignKeyProvider) and provider.key_file == team_key
    with pytest.raises(ConfigError, match="--cosign-key .* but the key provider is 'local'"):
        open_provider("local", cosign_key=str(team_key))


def test_a_digest_alone_is_refused_because_cosign_hashes_what_it_signs(team_key: Path) -> None:
    with pytest.raises(KeyProviderError, match="signs bytes, not a precomputed digest: `cosign sign-blob` hashes"):
        CosignKeyProvider(str(team_key)).sign_digest(hashlib.sha256(DATA).digest())


def test_a_wrong_or_missing_password_fails_closed(team_key: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COSIGN_PASSWORD", "not the password")
    with pytest.raises(KeyProviderError, match=f"cannot decrypt cosign key file {team_key}: the password in "
                                               "COSIGN_PASSWORD is wrong"):
        CosignKeyProvider(str(team_key)).sign(DATA)
    monkeypatch.delenv("COSIGN_PASSWORD")
    with pytest.raises(KeyProviderError, match="COSIGN_PASSWORD is not set"):
        CosignKeyProvider(str(team_key)).public_keys()


def test_a_missing_or_unsafe_key_file_fails_closed(team_key: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.key"
    with pytest.raises(KeyProviderError, match=f"cosign key file {missing} does not exist: .*keys create "
                                               "--key-provider cosign"):
        CosignKeyProvider(str(missing)).sign(DATA)
    team_key.chmod(0o666)
    with pytest.raises(KeyProviderError, match="writable by group or others .* `chmod 600 "):
        CosignKeyProvider(str(team_key)).sign(DATA)
    team_key.chmod(0o600)
    plain = tmp_path / "plain.key"
    plain.write_text("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n")
    plain.chmod(0o600)
    with pytest.raises(KeyProviderError, match="is not a cosign key file .*cosign import-key-pair"):
        CosignKeyProvider(str(plain)).public_keys()
    with pytest.raises(ConfigError, match="with a key file or hashivault://.*not supported here"):
        CosignKeyProvider("awskms:///alias/team")


def test_an_ecdsa_cosign_key_is_refused_before_signing(tmp_path: Path, cosign_env: None,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COSIGN_PASSWORD", PASSWORD)
    done = cosign("generate-key-pair", "--output-key-prefix", str(tmp_path / "ec"))  # cosign's default: P-256
    assert done.returncode == 0, done.stderr.decode()
    provider = CosignKeyProvider(str(tmp_path / "ec.key"))
    for attempt in (provider.public_keys, lambda: provider.sign(DATA)):
        with pytest.raises(KeyProviderError, match=r"is an ECDSA \(secp256r1\) key .* accept only RSA keys of at "
                                                   "least 2048 bits"):
            attempt()


def test_a_missing_binary_names_make_tools(team_key: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AGENTFACTORY_TOOLS_BIN", str(tmp_path / "no-tools"))
    monkeypatch.setenv("PATH", str(tmp_path / "no-path"))
    with pytest.raises(ConfigError, match="cosign is not installed: run `make tools`"):
        CosignKeyProvider(str(team_key)).sign(DATA)


def test_keys_commands_on_a_cosign_key_file(tmp_path: Path, cosign_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    runner = CliRunner()
    path = tmp_path / "made.key"
    base = ["--key-provider", "cosign", "--cosign-key", str(path)]
    no_password = runner.invoke(keys_group, ["create", *base])
    assert no_password.exit_code == 2 and "set COSIGN_PASSWORD before creating" in no_password.output
    assert not path.exists()
    monkeypatch.setenv("COSIGN_PASSWORD", PASSWORD)
    created = runner.invoke(keys_group, ["create", *base, "--json"])
    assert created.exit_code == 0, created.output
    made = json.loads(created.output)
    assert made["status"] == "active" and made["provider"] == "cosign"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    assert "ENCRYPTED SIGSTORE PRIVATE KEY" in path.read_text(), "cosign wrote its own encrypted key file"
    assert made["keyId"] == key_id(serialization.load_pem_public_key(  # type: ignore[arg-type]
        (tmp_path / "made.pub").read_bytes()))
    again = runner.invoke(keys_group, ["create", *base, "--json"])
    assert again.exit_code == 0 and json.loads(again.output)["keyId"] == made["keyId"], "never overwritten"

    listed = runner.invoke(keys_group, ["list", *base, "--json"])
    assert [k["keyId"] for k in json.loads(listed.output)["keys"]] == [made["keyId"]]
    exported = runner.invoke(keys_group, ["export", *base])
    assert exported.exit_code == 0 and exported.output == made["publicKey"]
    rotate = runner.invoke(keys_group, ["rotate", *base])
    assert rotate.exit_code == 2 and "a cosign key file holds one key" in rotate.output
    revoke = runner.invoke(keys_group, ["revoke", made["keyId"][:12], *base])
    assert revoke.exit_code == 2 and "cosign keeps no key status" in revoke.output
    named = runner.invoke(keys_group, ["create", "--name", "x", *base])
    assert named.exit_code == 2 and "--name applies to the local keyring only" in named.output
    # The signature of a key made this way is checked like any other.
    provider = CosignKeyProvider(str(path))
    check_rsa(provider.public_keys()[0], provider.sign(DATA).signature)


def test_vex_sign_through_cosign_is_a_dsse_envelope_by_the_cosign_key(team_key: Path, tmp_path: Path) -> None:
    document = tmp_path / "htmlpage.openvex.json"
    document.write_bytes((EXAMPLES_SCANNING / "vex" / "htmlpage.openvex.json").read_bytes())
    runner = CliRunner()
    done = runner.invoke(vex_group, ["sign", str(document), "--key-provider", "cosign", "--cosign-key", str(team_key),
                                     "--json"])
    assert done.exit_code == 0, done.output
    public = CosignKeyProvider(str(team_key)).public_keys()[0]
    signed = parse_envelope((tmp_path / "htmlpage.openvex.dsse.json").read_bytes(), "vex")
    assert signed.signatures[0].keyid == public.key_id
    check_rsa(public, signed.signatures[0].sig, pae(signed.payload_type, signed.payload))
    refused = runner.invoke(vex_group, ["sign", str(document), "--key-provider", "local", "--cosign-key",
                                        str(team_key)])
    assert refused.exit_code == 2 and "add --key-provider cosign" in refused.output


# --------------------------------------------------------------------------- Transit through hashivault://


@pytest.fixture
def vault_env(openbao: OpenBao, transit_mount: str, cosign_env: None, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """cosign's settings for this test's Transit mount: VAULT_ADDR, VAULT_TOKEN, TRANSIT_SECRET_ENGINE_PATH."""
    monkeypatch.setenv("VAULT_ADDR", openbao.addr)
    monkeypatch.setenv("VAULT_TOKEN", openbao.root_token)
    monkeypatch.setenv("TRANSIT_SECRET_ENGINE_PATH", transit_mount)
    yield transit_mount


def test_transit_through_hashivault_signs_as_the_vault_provider_names_the_key(
        vault_env: str, root_client: Any, openbao: OpenBao) -> None:
    root_client.secrets.transit.create_key("team", key_type="rsa-2048", mount_point=vault_env)
    provider = CosignKeyProvider("hashivault://team")
    (public,) = provider.public_keys()
    sig = provider.sign(DATA)
    check_rsa(public, sig.signature)
    # The same Transit key seen by the Vault provider has the same key id: one key, two ways in.
    transit = TransitKeyProvider(openbao.addr, token=openbao.root_token, mount=vault_env, key="team", timeout=10)
    assert [k.key_id for k in transit.public_keys()] == [sig.key_id]
    # After a rotation in Vault, cosign signs with the latest version and the provider follows.
    transit.rotate()
    rotated = provider.sign(DATA)
    assert rotated.key_id != sig.key_id and rotated.key_id == transit.public_keys()[-1].key_id
    assert provider.public_keys()[0].key_id == rotated.key_id
    # Creating a key that exists returns it; rotating or revoking through cosign is refused, saying where.
    assert provider.create().key_id == rotated.key_id
    with pytest.raises(KeyProviderError, match=f"cannot rotate hashivault://team: .*{vault_env}/keys/team/rotate"):
        provider.rotate()
    with pytest.raises(KeyProviderError, match="cosign keeps no key status"):
        provider.revoke(rotated.key_id)


def test_transit_problems_fail_closed_with_the_fix(vault_env: str, root_client: Any, openbao: OpenBao,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(KeyProviderError, match=f"Transit key {vault_env}/keys/absent on .* does not exist .*"
                                               f"bao write -f {vault_env}/keys/absent type=rsa-2048"):
        CosignKeyProvider("hashivault://absent").sign(DATA)
    with pytest.raises(KeyProviderError, match="cannot create hashivault://absent through cosign: .*ecdsa-p256"):
        CosignKeyProvider("hashivault://absent").create()

    root_client.secrets.transit.create_key("ec", key_type="ecdsa-p256", mount_point=vault_env)
    with pytest.raises(KeyProviderError, match=r"is an ECDSA \(secp256r1\) key .*type=rsa-2048"):
        CosignKeyProvider("hashivault://ec").sign(DATA)

    root_client.secrets.transit.create_key("team", key_type="rsa-2048", mount_point=vault_env)
    read_only = f'path "{vault_env}/keys/team" {{\n  capabilities = ["read"]\n}}\n'
    root_client.sys.create_or_update_policy("cosign-read-only", read_only)
    token = root_client.auth.token.create(policies=["cosign-read-only"], ttl="10m")["auth"]["client_token"]
    monkeypatch.setenv("VAULT_TOKEN", token)
    with pytest.raises(KeyProviderError, match=f"permission denied. The token .* `update` on {vault_env}/sign/team/"
                                               "sha2-256"):
        CosignKeyProvider("hashivault://team").sign(DATA)
    signer = (f'path "{vault_env}/keys/team" {{\n  capabilities = ["read"]\n}}\n'
              f'path "{vault_env}/sign/team/sha2-256" {{\n  capabilities = ["update"]\n}}\n')
    root_client.sys.create_or_update_policy("cosign-signer", signer)
    token = root_client.auth.token.create(policies=["cosign-signer"], ttl="10m")["auth"]["client_token"]
    monkeypatch.setenv("VAULT_TOKEN", token)
    check_rsa(CosignKeyProvider("hashivault://team").public_keys()[0],
              CosignKeyProvider("hashivault://team").sign(DATA).signature)  # the documented policy is enough

    monkeypatch.setenv("VAULT_ADDR", f"http://127.0.0.1:{free_port()}")  # nothing listens there
    with pytest.raises(KeyProviderError, match="cannot reach the Vault/OpenBao server .*connection refused"):
        CosignKeyProvider("hashivault://team").sign(DATA)
    monkeypatch.delenv("VAULT_ADDR")
    with pytest.raises(ConfigError, match="VAULT_ADDR \\(or BAO_ADDR\\) is not set"):
        CosignKeyProvider("hashivault://team").sign(DATA)


# --------------------------------------------------------------------------- a pipeline run, verified


def af(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("agentfactory")
    return subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True, timeout=600, env=env, check=False)


def run_and_verify(tmp_path: Path, cosign_key: str, public: PublicKey) -> None:
    """`pipeline run --key-provider cosign` then `agentfactory verify` with a trust policy naming `public`."""
    write_template(tmp_path / "templates", "signed", manifest=wat_manifest("signed"), files={"src/main.wat": OK_WAT})
    env = os.environ.copy()
    store = f"oci-layout:{tmp_path / 'store'}"
    built = af("pipeline", "run", "--templates", "templates", "--no-tests", "--key-provider", "cosign",
               "--cosign-key", cosign_key, "--store", store, "--json", cwd=tmp_path, env=env)
    assert built.returncode == 0, built.stderr + built.stdout
    (row,) = json.loads(built.stdout)["templates"]
    assert row["evidence"]["provider"] == "cosign" and row["evidence"]["keyId"] == public.key_id
    assert len(row["evidence"]["tlog"]["indexes"]) >= 4  # our own log holds the signature and the attestations
    log_pem = (default_tlog_dir() / PUBLIC_KEY_FILE).read_bytes()
    trusted, untrusted = tmp_path / "trust.yaml", tmp_path / "other.yaml"
    trusted.write_text(to_yaml([public], log_keys=[log_pem]))
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    other = PublicKey(key_id(stranger), stranger.public_bytes(serialization.Encoding.PEM,
                                                              serialization.PublicFormat.SubjectPublicKeyInfo),
                      "active", "local", "stranger")
    untrusted.write_text(to_yaml([other], log_keys=[log_pem]))
    ref = f"signed@{row['digest']}"
    ok = af("verify", ref, "--policy", str(trusted), "--store", store, "--json", cwd=tmp_path, env=env)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    verdict = json.loads(ok.stdout)
    assert verdict["allowed"] and all(c["ok"] for c in verdict["checks"]), verdict
    refused = af("verify", ref, "--policy", str(untrusted), "--store", store, "--json", cwd=tmp_path, env=env)
    assert refused.returncode == 1 and not json.loads(refused.stdout)["allowed"]


@pytest.mark.toolchain
def test_a_pipeline_run_signed_with_a_cosign_key_file_verifies(team_key: Path, tmp_path: Path) -> None:
    run_and_verify(tmp_path, str(team_key), CosignKeyProvider(str(team_key)).public_keys()[0])


@pytest.mark.toolchain
def test_a_pipeline_run_signed_through_hashivault_verifies(vault_env: str, root_client: Any, tmp_path: Path) -> None:
    root_client.secrets.transit.create_key("team", key_type="rsa-2048", mount_point=vault_env)
    run_and_verify(tmp_path, "hashivault://team", CosignKeyProvider("hashivault://team").public_keys()[0])


@pytest.mark.toolchain
def test_a_pipeline_with_an_unusable_cosign_key_builds_and_publishes_nothing(
        team_key: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_template(tmp_path / "templates", "never", manifest=wat_manifest("never"), files={"src/main.wat": OK_WAT})
    monkeypatch.setenv("COSIGN_PASSWORD", "wrong")
    store = tmp_path / "store"
    done = af("pipeline", "run", "--templates", "templates", "--no-tests", "--key-provider", "cosign",
              "--cosign-key", str(team_key), "--store", f"oci-layout:{store}", cwd=tmp_path, env=os.environ.copy())
    assert done.returncode == 2, done.stdout + done.stderr
    assert "the password in COSIGN_PASSWORD is wrong" in done.stderr
    assert not (store / "index.json").exists() or "never" not in (store / "index.json").read_text()
