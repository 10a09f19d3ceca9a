"""Vault / OpenBao Transit as the signing-key provider: the private key never leaves the server.

One Transit key (type `rsa-2048`, auto-rotated) signs; each of its versions is one Agent Factory
key, named by the key id of that version's public key. Vault signs the SHA-256 digest we computed
(`prehashed`, PKCS#1 v1.5), which is exactly what cosign does with `hashivault://`.

Settings come from the environment, overridable by constructor arguments:

| variable | default | meaning |
| --- | --- | --- |
| `VAULT_ADDR` | (required) | server URL |
| `VAULT_TOKEN` | | a token; wins over AppRole when both are set |
| `VAULT_ROLE_ID`, `VAULT_SECRET_ID` | | AppRole login, used when there is no token |
| `VAULT_APPROLE_MOUNT` | `approle` | where the AppRole auth method is mounted |
| `VAULT_NAMESPACE` | | Vault Enterprise / OpenBao namespace |
| `VAULT_CACERT` | system CAs | CA bundle that signed the server certificate |
| `AGENTFACTORY_TRANSIT_MOUNT` | `transit` | Transit mount path |
| `AGENTFACTORY_TRANSIT_KEY` | `agentfactory` | Transit key name |
| `AGENTFACTORY_TRANSIT_ROTATE_PERIOD` | `24h` | `auto_rotate_period` of a key we create (`0` disables) |
| `AGENTFACTORY_TRANSIT_AUTO_CREATE` | `true` | create the key on first signature if it is missing |
| `AGENTFACTORY_VAULT_TIMEOUT` | `10` | seconds, for every request |

Vault's read-key endpoint stops returning the public keys of versions below
`min_decryption_version` once they are revoked, so public keys seen earlier are kept: in memory,
and in `$AGENTFACTORY_HOME/cache/transit/` (public material only). That cache only ever adds
*revoked* entries; the status of every version Vault still returns comes from Vault.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import hvac
import hvac.exceptions
import requests
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

from .. import config
from ..errors import ConfigError, KeyProviderError
from ..fsutil import atomic_write
from ..metrics import VAULT_ROTATIONS
from .base import KeyProvider, KeyStatus, PublicKey, Signature
from .base import key_id as compute_key_id

T = TypeVar("T")

KEY_TYPE = "rsa-2048"
DEFAULT_MOUNT = "transit"
DEFAULT_KEY = "agentfactory"
DEFAULT_ROTATE_PERIOD = "24h"
DEFAULT_TIMEOUT = 10.0
MAX_CACHE_BYTES = 1 << 20
_SIGNATURE = re.compile(r"^vault:v([1-9][0-9]{0,9}):([A-Za-z0-9+/=]+)$")
_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_PATH_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$")
_KEY_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def signer_policy(mount: str = DEFAULT_MOUNT, key: str = DEFAULT_KEY) -> str:
    """The least-privilege policy of the pipeline: sign, and read the public keys. Nothing else.

    docs/keys.md prints it for the defaults; the integration tests log in with exactly this.
    """
    return (f'# sign_digest: sign a prehashed SHA-256 digest with the key\n'
            f'path "{mount}/sign/{key}" {{\n  capabilities = ["update"]\n}}\n\n'
            f'# sign_digest and public_keys: the public key of every version, the key type,\n'
            f'# latest_version and min_decryption_version\n'
            f'path "{mount}/keys/{key}" {{\n  capabilities = ["read"]\n}}\n')


def key_admin_policy(mount: str = DEFAULT_MOUNT, key: str = DEFAULT_KEY) -> str:
    """The policy of whoever creates, rotates and revokes the key (not the pipeline)."""
    return (f'# create a new rsa-2048 key with auto_rotate_period (OpenBao authorises creating as "update";\n'
            f'# a create request on an existing key changes nothing), and read it back\n'
            f'path "{mount}/keys/{key}" {{\n  capabilities = ["create", "update", "read"]\n}}\n\n'
            f'# rotate: a new key version\n'
            f'path "{mount}/keys/{key}/rotate" {{\n  capabilities = ["update"]\n}}\n\n'
            f'# revoke: raise min_decryption_version\n'
            f'path "{mount}/keys/{key}/config" {{\n  capabilities = ["update"]\n}}\n')


def parse_duration(value: str, setting: str) -> int:
    """Seconds in a Vault duration such as `24h`, `90m`, `1h30m`, `86400` or `0` (disabled)."""
    text = value.strip()
    if text.isdigit():
        seconds = int(text)
    else:
        match = _DURATION.match(text)
        if not text or not match:
            raise ConfigError(f"{setting}={value!r}: not a duration; write e.g. 24h, 90m or 0 to disable")
        h, m, s = (int(g) if g else 0 for g in match.groups())
        seconds = h * 3600 + m * 60 + s
    if 0 < seconds < 3600:
        raise ConfigError(f"{setting}={value!r}: Vault rotates keys at most hourly; use at least 1h, or 0 to disable")
    return seconds


def _env_flag(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    if value.lower() in ("1", "true", "yes", "on"):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={value!r}: use true or false")


def _vault_message(exc: Exception) -> str:
    """Vault's own error text without hvac's decoration ("1 error occurred: * …, on post URL")."""
    errors = getattr(exc, "errors", None)
    listed = errors if isinstance(errors, list) else []
    text = "; ".join(str(e) for e in listed) if listed else str(exc).split(", on ")[0]
    text = re.sub(r"\d+ errors? occurred:\s*", "", text).replace("\t* ", "").replace("* ", "")
    return " ".join(text.split()) or type(exc).__name__


def _rfc3339_seconds(value: Any) -> str | None:
    if not isinstance(value, str) or not value:
        return None
    return re.sub(r"\.\d+(?=Z|[+-]\d\d:\d\d$)", "", value)


@dataclass(frozen=True)
class _Op:
    """One Vault request, described well enough to explain a refusal."""

    what: str  # "sign", "read the key", …
    path: str  # API path without /v1, e.g. transit/sign/agentfactory
    capability: str  # the policy capability it needs
    policy: str  # which documented policy grants it: "signer" or "key-admin"


@dataclass(frozen=True)
class _KeyInfo:
    """What one read of the Transit key said: its versions' public keys and the two bounds."""

    latest: int
    min_decryption: int
    listed: dict[int, tuple[bytes, str | None]]  # version -> (public key PEM, created)


class _KeyMissing(Exception):
    """Internal: the Transit key does not exist (404 on the key, "key not found" on sign)."""


class TransitKeyProvider(KeyProvider):
    """RSA-2048 keys in Vault / OpenBao Transit, one key version per Agent Factory key id."""

    name = "vault"

    def __init__(
        self,
        addr: str | None = None,
        *,
        token: str | None = None,
        role_id: str | None = None,
        secret_id: str | None = None,
        approle_mount: str | None = None,
        namespace: str | None = None,
        cacert: str | Path | None = None,
        mount: str | None = None,
        key: str | None = None,
        rotate_period: str | None = None,
        auto_create: bool | None = None,
        timeout: float | None = None,
        cache_folder: Path | None = None,
    ) -> None:
        env = os.environ.get
        addr = (addr or env("VAULT_ADDR") or "").strip().rstrip("/")
        if not addr:
            raise ConfigError("VAULT_ADDR is not set: point it at the Vault or OpenBao server, "
                              "e.g. VAULT_ADDR=https://vault.example.com:8200")
        if not re.match(r"^https?://[^/\s]+$", addr):
            raise ConfigError(f"VAULT_ADDR={addr!r}: expected http(s)://HOST[:PORT]")
        self.addr = addr
        # Explicit arguments beat the environment; a token beats AppRole.
        if token is None and role_id is None:
            token = env("VAULT_TOKEN") or None
            if token is None:
                role_id, secret_id = env("VAULT_ROLE_ID") or None, env("VAULT_SECRET_ID") or None
        if token is None and role_id is None:
            raise ConfigError(f"no credentials for {addr}: set VAULT_TOKEN, or VAULT_ROLE_ID and VAULT_SECRET_ID "
                              "for an AppRole login")
        if role_id is not None and not secret_id:
            raise ConfigError("VAULT_ROLE_ID is set but VAULT_SECRET_ID is not: an AppRole login needs both")
        self._token, self._role_id, self._secret_id = token, role_id, secret_id
        self.approle_mount = (approle_mount or env("VAULT_APPROLE_MOUNT") or "approle").strip("/")
        self.namespace = namespace or env("VAULT_NAMESPACE") or None
        cacert = cacert or env("VAULT_CACERT") or None
        if cacert is not None and not Path(cacert).is_file():
            raise ConfigError(f"VAULT_CACERT={str(cacert)!r}: no such file; give the PEM bundle of the CA that "
                              f"signed the certificate of {addr}")
        self.cacert = str(cacert) if cacert is not None else None
        self.mount = (mount or env("AGENTFACTORY_TRANSIT_MOUNT") or DEFAULT_MOUNT).strip("/")
        self.key = key or env("AGENTFACTORY_TRANSIT_KEY") or DEFAULT_KEY
        if not _PATH_PART.match(self.mount) or ".." in self.mount:
            raise ConfigError(f"AGENTFACTORY_TRANSIT_MOUNT={self.mount!r}: not a mount path")
        if not _PATH_PART.match(self.approle_mount) or ".." in self.approle_mount:
            raise ConfigError(f"VAULT_APPROLE_MOUNT={self.approle_mount!r}: not a mount path")
        if not _KEY_NAME.match(self.key):
            raise ConfigError(f"AGENTFACTORY_TRANSIT_KEY={self.key!r}: not a Transit key name")
        self.rotate_period = rotate_period or env("AGENTFACTORY_TRANSIT_ROTATE_PERIOD") or DEFAULT_ROTATE_PERIOD
        self.rotate_seconds = parse_duration(self.rotate_period, "AGENTFACTORY_TRANSIT_ROTATE_PERIOD")
        self.auto_create = auto_create if auto_create is not None else _env_flag(
            "AGENTFACTORY_TRANSIT_AUTO_CREATE", True)
        if timeout is None:
            raw = env("AGENTFACTORY_VAULT_TIMEOUT") or str(DEFAULT_TIMEOUT)
            try:
                timeout = float(raw)
            except ValueError:
                raise ConfigError(f"AGENTFACTORY_VAULT_TIMEOUT={raw!r}: give seconds, e.g. 10") from None
        if not 0 < timeout <= 300:
            raise ConfigError(f"Vault timeout {timeout!r} s: give between 0 and 300 seconds")
        self.timeout = timeout
        self._client = hvac.Client(url=addr, token=token, verify=self.cacert or True, timeout=timeout,
                                   namespace=self.namespace)
        self._logged_in = token is not None
        self._lock = threading.Lock()
        # version -> (SubjectPublicKeyInfo PEM, created). Versions are immutable, so both are caches:
        # _pems holds what Vault answered in this process (sign_digest trusts only that);
        # _remembered adds what earlier processes saw, used only to list revoked versions.
        self._pems: dict[int, tuple[bytes, str | None]] = {}
        self._remembered: dict[int, tuple[bytes, str | None]] = {}
        where = json.dumps([addr, self.namespace, self.mount, self.key]).encode()
        folder = cache_folder if cache_folder is not None else config.cache_dir("transit")
        self._cache_path = folder / f"{hashlib.sha256(where).hexdigest()[:32]}.json"
        self._load_cache()

    # ------------------------------------------------------------------ paths

    @property
    def key_path(self) -> str:
        return f"{self.mount}/keys/{self.key}"

    @property
    def where(self) -> str:
        ns = f" (namespace {self.namespace})" if self.namespace else ""
        return f"{self.addr}{ns}"

    def _identity(self) -> str:
        if self._token is not None:
            return "the Vault token (VAULT_TOKEN)"
        return f"the AppRole identity (role id {str(self._role_id)[:8]}…, auth mount {self.approle_mount}/)"

    # ------------------------------------------------------------------ requests and their errors

    def _login(self) -> None:
        """AppRole login: exchanges role id and secret id for a token (again when it expired)."""
        op = _Op("log in with AppRole", f"auth/{self.approle_mount}/login", "update", "approle")
        try:
            self._client.auth.approle.login(role_id=self._role_id, secret_id=self._secret_id,
                                            mount_point=self.approle_mount)
        except (hvac.exceptions.InvalidRequest, hvac.exceptions.Forbidden, hvac.exceptions.Unauthorized) as exc:
            raise KeyProviderError(
                f"AppRole login at {self.where}/v1/auth/{self.approle_mount}/login was refused: "
                f"{_vault_message(exc)}. Check VAULT_ROLE_ID and VAULT_SECRET_ID (a secret id may be used up "
                f"or expired) and VAULT_APPROLE_MOUNT") from None
        except hvac.exceptions.InvalidPath:
            raise KeyProviderError(
                f"no AppRole auth method is mounted at auth/{self.approle_mount}/ on {self.where}: enable it "
                f"(`bao auth enable approle`) or set VAULT_APPROLE_MOUNT") from None
        except Exception as exc:
            raise self._transport_error(op, exc) from None
        self._logged_in = True

    def _transport_error(self, op: _Op, exc: Exception) -> Exception:
        """Connection, TLS and timeout failures, and statuses that say nothing about policy."""
        url = f"{self.where} ({op.path})"
        if isinstance(exc, requests.exceptions.SSLError):
            return KeyProviderError(
                f"TLS to {url} failed: {exc}. Set VAULT_CACERT to the CA bundle that signed the server "
                f"certificate")
        if isinstance(exc, requests.exceptions.Timeout):
            return KeyProviderError(f"Vault at {url} did not answer within {self.timeout:g} s: check that the "
                                    f"server is up and unsealed, or raise AGENTFACTORY_VAULT_TIMEOUT")
        if isinstance(exc, requests.exceptions.ConnectionError):
            reason = "connection refused" if "refused" in str(exc).lower() else type(exc).__name__
            return KeyProviderError(f"cannot reach Vault at {self.addr} to {op.what} ({reason}): check VAULT_ADDR "
                                    f"and that the server is running and reachable from here")
        if isinstance(exc, requests.exceptions.RequestException):
            return KeyProviderError(f"request to {url} failed: {exc}")
        if isinstance(exc, hvac.exceptions.VaultDown):
            return KeyProviderError(f"Vault at {self.where} is sealed or down: unseal it, then retry")
        if isinstance(exc, hvac.exceptions.RateLimitExceeded):
            return KeyProviderError(f"Vault at {self.where} rate-limited the request to {op.what}: retry later")
        if isinstance(exc, hvac.exceptions.VaultError):
            return KeyProviderError(f"Vault at {self.where} refused to {op.what} ({op.path}): {_vault_message(exc)}")
        return exc

    def _forbidden(self, op: _Op) -> KeyProviderError:
        grant = f'path "{op.path}" {{ capabilities = ["{op.capability}"] }}'
        hint = (f"the {op.policy} policy in docs/keys.md grants it" if op.policy in ("signer", "key-admin")
                else "see docs/keys.md")
        if self._token is not None:
            # A refused token may be a valid token without the policy, or no valid token at all.
            try:
                self._client.auth.token.lookup_self()
            except Exception:
                return KeyProviderError(
                    f"permission denied to {op.what} at {self.where}: `{op.path}` needs {op.capability!r}, and the "
                    f"token (VAULT_TOKEN) cannot even look itself up, so it is invalid, expired or revoked: "
                    f"get a new token")
        return KeyProviderError(
            f"permission denied: {self._identity()} may not {op.what} at {self.where}. The request needs "
            f"capability {op.capability!r} on `{op.path}`; add {grant} to its policy ({hint})")

    def _call(self, op: _Op, fn: Callable[[], T]) -> T:
        """Run one request with bounded time, mapping every failure to a clear KeyProviderError."""
        if not self._logged_in:
            self._login()
        for attempt in (1, 2):
            try:
                return fn()
            except hvac.exceptions.Forbidden:
                if self._role_id is not None and attempt == 1:
                    self._login()  # the AppRole token may have expired: log in once more
                    continue
                raise self._forbidden(op) from None
            except hvac.exceptions.InvalidPath as exc:
                if "no handler for route" in str(exc):
                    raise KeyProviderError(
                        f"no Transit engine is mounted at {self.mount}/ on {self.where} ({op.path}): enable it "
                        f"(`bao secrets enable -path={self.mount} transit`) or set AGENTFACTORY_TRANSIT_MOUNT"
                    ) from None
                raise _KeyMissing() from None
            except hvac.exceptions.InvalidRequest as exc:
                message = _vault_message(exc)
                if re.search(r"\bkey not found\b|no existing key named", message):
                    raise _KeyMissing() from None
                if "does not support signing" in message or "key type" in message:
                    raise self._wrong_type(message) from None
                raise KeyProviderError(f"Vault at {self.where} refused to {op.what} ({op.path}): {message}") from None
            except Exception as exc:
                raise self._transport_error(op, exc) from None
        raise AssertionError("unreachable")

    def _wrong_type(self, detail: str) -> KeyProviderError:
        return KeyProviderError(
            f"Transit key `{self.key_path}` on {self.where} is not an {KEY_TYPE} key ({detail}): Agent Factory "
            f"signs with RSA-2048 PKCS#1 v1.5 only. Point AGENTFACTORY_TRANSIT_KEY at an {KEY_TYPE} key, or "
            f"create one with `agentfactory keys create --provider vault`")

    def _missing(self, action: str) -> KeyProviderError:
        return KeyProviderError(
            f"Transit key `{self.key_path}` does not exist on {self.where}, so it cannot {action}: create it "
            f"with `agentfactory keys create --provider vault` (needs the key-admin policy), or set "
            f"AGENTFACTORY_TRANSIT_KEY to an existing key")

    # ------------------------------------------------------------------ public-key cache

    def _load_cache(self) -> None:
        """Public keys seen earlier, to label revoked versions (public material; damage just empties it)."""
        try:
            raw = self._cache_path.read_bytes()[: MAX_CACHE_BYTES + 1]
            doc = json.loads(raw) if len(raw) <= MAX_CACHE_BYTES else {}
            for version, item in doc.get("versions", {}).items():
                pem = item["pem"].encode()
                serialization.load_pem_public_key(pem)
                created = item.get("created")
                self._remembered[int(version)] = (pem, created if isinstance(created, str) else None)
        except (OSError, ValueError, TypeError, KeyError, AttributeError):
            self._remembered.clear()

    def _save_cache(self) -> None:
        with self._lock:
            versions = {str(v): {"pem": pem.decode(), "created": created}
                        for v, (pem, created) in sorted(self._remembered.items())}
        doc = {"addr": self.addr, "namespace": self.namespace, "mount": self.mount, "key": self.key,
               "versions": versions}
        # A cache that cannot be written costs only the labels of revoked versions.
        with contextlib.suppress(OSError):
            atomic_write(self._cache_path, (json.dumps(doc, indent=1) + "\n").encode())

    # ------------------------------------------------------------------ reading the key

    def _read_key(self) -> _KeyInfo:
        """GET <mount>/keys/<key>; checks the type and learns the public key of every version listed."""
        op = _Op("read the key", self.key_path, "read", "signer")
        response = self._call(op, lambda: self._client.secrets.transit.read_key(self.key, mount_point=self.mount))
        data = response.get("data") if isinstance(response, dict) else None
        if not isinstance(data, dict):
            raise KeyProviderError(f"Vault at {self.where} answered {self.key_path} without key data")
        if data.get("type") != KEY_TYPE:
            raise self._wrong_type(f"its type is {data.get('type')!r}")
        versions: dict[int, tuple[bytes, str | None]] = {}
        for version, item in (data.get("keys") or {}).items():
            if not isinstance(item, dict) or not isinstance(item.get("public_key"), str):
                raise KeyProviderError(f"Vault at {self.where}: version {version} of {self.key_path} has no public key")
            pem = item["public_key"].encode()
            self._check_public(pem, int(version))
            versions[int(version)] = (pem, _rfc3339_seconds(item.get("creation_time")))
        with self._lock:
            # A key deleted and created again reuses version numbers: what was remembered is stale.
            if any(v in self._remembered and self._remembered[v][0] != pem for v, (pem, _) in versions.items()):
                self._remembered.clear()
                self._pems.clear()
            learned = any(self._remembered.get(v) != entry for v, entry in versions.items())
            self._pems.update(versions)
            self._remembered.update(versions)
        if learned:
            self._save_cache()
        return _KeyInfo(latest=int(data.get("latest_version") or 0),
                        min_decryption=int(data.get("min_decryption_version") or 1), listed=versions)

    def _check_public(self, pem: bytes, version: int) -> rsa.RSAPublicKey:
        try:
            public = serialization.load_pem_public_key(pem)
        except ValueError as exc:
            raise KeyProviderError(f"version {version} of {self.key_path}: unreadable public key ({exc})") from None
        if not isinstance(public, rsa.RSAPublicKey) or public.key_size != 2048:
            raise self._wrong_type(f"version {version} is not an RSA-2048 public key")
        return public

    def _keys_from(self, info: _KeyInfo) -> list[PublicKey]:
        """Versions Vault just listed, with their status, plus revoked versions seen before."""
        latest, min_decryption, listed = info.latest, info.min_decryption, info.listed
        with self._lock:
            known = dict(self._remembered)
            known.update(self._pems)
        result = []
        for version in sorted(set(known) | set(listed)):
            if version > latest:
                continue  # remembered from an earlier incarnation of a key of the same name
            if version >= min_decryption and version not in listed:
                continue  # not revoked, so only Vault's current answer may vouch for it
            pem, created = listed.get(version) or known[version]
            status: KeyStatus = ("revoked" if version < min_decryption else
                                 "active" if version == latest else "enabled")
            public = self._check_public(pem, version)
            result.append(PublicKey(key_id=compute_key_id(public), pem=pem, status=status, provider=self.name,
                                    name=self.key, version=version, created=created))
        return result

    # ------------------------------------------------------------------ KeyProvider

    def sign_digest(self, sha256_digest: bytes) -> Signature:
        """Transit signs the digest (prehashed, PKCS#1 v1.5); we check the answer before returning it.

        A missing key is created first when auto-create is on and the identity may create keys;
        the signer policy deliberately cannot, and then the error says who must create it.
        """
        if not isinstance(sha256_digest, bytes) or len(sha256_digest) != 32:
            raise KeyProviderError("sign_digest needs the 32-byte SHA-256 digest of what is signed, "
                                   f"got {len(sha256_digest) if isinstance(sha256_digest, bytes) else 'no'} bytes")
        op = _Op("sign with the key", f"{self.mount}/sign/{self.key}", "update", "signer")
        encoded = base64.b64encode(sha256_digest).decode()

        def sign() -> Any:
            return self._client.secrets.transit.sign_data(
                self.key, hash_input=encoded, hash_algorithm="sha2-256", signature_algorithm="pkcs1v15",
                prehashed=True, mount_point=self.mount)

        try:
            response = self._call(op, sign)
        except _KeyMissing:
            if not self.auto_create:
                raise self._missing("sign (AGENTFACTORY_TRANSIT_AUTO_CREATE is off)") from None
            self._create_for_first_signature()
            try:
                response = self._call(op, sign)
            except _KeyMissing:
                raise self._missing("sign") from None
        text = (response.get("data") or {}).get("signature") if isinstance(response, dict) else None
        match = _SIGNATURE.match(text or "")
        if not match:
            raise KeyProviderError(f"Vault at {self.where} returned no signature of the form vault:vN:<base64> "
                                   f"for {op.path}")
        version = int(match.group(1))
        try:
            raw = base64.b64decode(match.group(2), validate=True)
        except binascii.Error:
            raise KeyProviderError(f"Vault at {self.where} returned a signature that is not base64") from None
        # Verify against the version's public key: a signature we cannot attribute is not returned.
        for refresh in (False, True):
            if refresh or version not in self._pems:
                try:
                    self._read_key()
                except _KeyMissing:
                    raise self._missing("publish the public key of the signature") from None
            if version not in self._pems:
                raise KeyProviderError(f"Vault at {self.where} signed with version {version} of {self.key_path}, "
                                       f"but reading the key does not list that version")
            public = self._check_public(self._pems[version][0], version)
            try:
                public.verify(raw, sha256_digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
            except InvalidSignature:
                continue
            return Signature(key_id=compute_key_id(public), signature=raw, provider=self.name, version=version)
        raise KeyProviderError(f"the signature Vault at {self.where} returned does not verify with the public key "
                               f"of version {version} of {self.key_path}: refusing it")

    def _create_for_first_signature(self) -> None:
        try:
            self.create()
        except KeyProviderError as exc:
            if "permission denied" not in str(exc):
                raise
            raise KeyProviderError(
                f"Transit key `{self.key_path}` does not exist on {self.where}, and {self._identity()} may not "
                f"create it: the signer policy grants only sign and read, on purpose, so that a pipeline cannot "
                f"mint keys. Create the key once with the key-admin policy (`agentfactory keys create "
                f"--provider vault`), or check AGENTFACTORY_TRANSIT_KEY") from None

    def public_keys(self) -> list[PublicKey]:
        """Every version: `active` (latest), `enabled`, or `revoked` (below min_decryption_version).

        Vault hides the public keys of revoked versions, so those are listed only when this machine
        saw them before the revocation (memory or the public-key cache). No key yet: empty list.
        """
        try:
            info = self._read_key()
        except _KeyMissing:
            return []
        return self._keys_from(info)

    def create(self) -> PublicKey:
        """Create the Transit key (`rsa-2048`, `auto_rotate_period`) if missing; return its latest version.

        Idempotent: an existing key of the right type is left as it is (its rotation period too).
        """
        try:
            info = self._read_key()
        except _KeyMissing:
            op = _Op("create the key", self.key_path, "update", "key-admin")
            try:
                self._call(op, lambda: self._client.secrets.transit.create_key(
                    self.key, key_type=KEY_TYPE, auto_rotate_period=f"{self.rotate_seconds}s", mount_point=self.mount))
                info = self._read_key()
            except _KeyMissing:
                raise KeyProviderError(f"Vault at {self.where} accepted creating {self.key_path} but does not "
                                       f"return it") from None
        return self._latest(info)

    def _latest(self, info: _KeyInfo) -> PublicKey:
        keys = self._keys_from(info)
        if not keys or keys[-1].status != "active":
            raise KeyProviderError(f"Vault at {self.where}: {self.key_path} lists no latest version")
        return keys[-1]

    def rotate(self) -> PublicKey:
        """A new key version becomes active; older versions stay enabled. Counted in VAULT_ROTATIONS."""
        op = _Op("rotate the key", f"{self.key_path}/rotate", "update", "key-admin")
        try:
            self._call(op, lambda: self._client.secrets.transit.rotate_key(self.key, mount_point=self.mount))
            info = self._read_key()
        except _KeyMissing:
            raise self._missing("rotate") from None
        VAULT_ROTATIONS.labels(key=self.key).inc()
        return self._latest(info)

    def revoke(self, key_id: str) -> PublicKey:
        """Revoke the version with this key id by setting `min_decryption_version = version + 1`.

        Transit has no per-version revocation: this revokes that version AND EVERY OLDER VERSION.
        The latest (active) version is refused: rotate first. Revoking a revoked key is a no-op.
        """
        try:
            before = self._keys_from(self._read_key())
        except _KeyMissing:
            raise self._missing("revoke a version") from None
        target = next((k for k in before if k.key_id == key_id), None)
        if target is None or target.version is None:
            raise KeyProviderError(f"unknown key id {key_id} for Transit key `{self.key_path}` on {self.where}: "
                                   f"`agentfactory keys list --provider vault` shows the versions and their ids")
        if target.status == "revoked":
            return target
        if target.status == "active":
            raise KeyProviderError(
                f"key {key_id} is version {target.version}, the latest (active) version of `{self.key_path}`: run "
                f"`agentfactory keys rotate --provider vault` first so that a new version signs, then revoke it")
        version = target.version
        op = _Op("revoke key versions", f"{self.key_path}/config", "update", "key-admin")
        try:
            self._call(op, lambda: self._client.secrets.transit.update_key_configuration(
                self.key, min_decryption_version=version + 1, mount_point=self.mount))
            after = self._keys_from(self._read_key())
        except _KeyMissing:
            raise self._missing("revoke a version") from None
        revoked = next((k for k in after if k.key_id == key_id), None)
        if revoked is None or revoked.status != "revoked":
            raise KeyProviderError(f"Vault at {self.where} accepted min_decryption_version={version + 1} for "
                                   f"{self.key_path}, but version {version} is not revoked")
        return revoked
