"""cosign as the signing-key provider: a team that standardised on cosign keeps its keys.

Every signature is made by the real `cosign` binary (`make tools`), with one of the two kinds of key
cosign itself understands:

- a file, e.g. `cosign.key`: a cosign key file (encrypted PKCS#8); cosign reads its password
  from `COSIGN_PASSWORD`;
- `hashivault://NAME` (or `openbao://NAME`): a Vault / OpenBao Transit key that never leaves the
  server; cosign reads `VAULT_ADDR` (`BAO_ADDR`), `VAULT_TOKEN` (`BAO_TOKEN`) and
  `TRANSIT_SECRET_ENGINE_PATH` (the mount, default `transit`).

The reference comes from `--cosign-key` or `$AGENTFACTORY_COSIGN_KEY`.

Signing is `cosign sign-blob --tlog-upload=false` over the exact bytes our pipeline signs (the
artifact, or a DSSE envelope's PAE encoding): cosign hashes them with SHA-256 and signs with RSA
PKCS#1 v1.5 (`pkcs1v15`, `prehashed` in Transit), which is the signature every other provider makes
over the same digest. cosign has no mode that signs a digest computed elsewhere, so this provider
signs bytes (`sign`), never a bare digest (`sign_digest` refuses): the caller passes what is signed.
Nothing goes to a Rekor instance from here: our pipeline logs the signature in its own log.

Only RSA keys (>= 2048 bits) are accepted: the verifier, trust policies and evidence of Agent Factory
are RSA PKCS#1 v1.5 / SHA-256, so an ECDSA signature (cosign's default key type) could not be verified
downstream and is refused here, before anything is signed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import re
import stat
import subprocess
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa, utils

from ..errors import ConfigError, KeyProviderError
from ..peertools import find
from .base import KeyProvider, PublicKey, Signature
from .base import key_id as compute_key_id

KEY_ENV = "AGENTFACTORY_COSIGN_KEY"  # keys.COSIGN_KEY_ENV
TIMEOUT_ENV = "AGENTFACTORY_COSIGN_TIMEOUT"
DEFAULT_TIMEOUT = 120.0  # seconds for one cosign run: a Transit round trip or an scrypt key decryption
MIN_RSA_BITS = 2048
MAX_KEY_FILE_BYTES = 64 << 10
MAX_OUTPUT_BYTES = 1 << 20
KEY_FILE_TYPES = ("ENCRYPTED SIGSTORE PRIVATE KEY", "ENCRYPTED COSIGN PRIVATE KEY")
_KMS = re.compile(r"^(hashivault|openbao)://(.*)$")
_KMS_NAME = re.compile(r"^\w(?:[\w.-]*\w)?$")  # what cosign's hashivault provider accepts
_OTHER_SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*://|^pkcs11:")
_CREATE_FILE = ("create an RSA key file: `agentfactory keys create --key-provider cosign --cosign-key FILE.key`, or "
                "import one: `openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out rsa.pem && cosign "
                "import-key-pair --key rsa.pem`")


@dataclass(frozen=True)
class _Run:
    """One finished cosign run: what it printed, for parsing or for explaining a refusal."""

    returncode: int
    stdout: bytes
    stderr: str


class CosignKeyProvider(KeyProvider):
    """One cosign key (a key file or a Transit key through `hashivault://`), used through the cosign binary."""

    name = "cosign"

    def __init__(self, key: str | None = None, *, binary: Path | None = None, timeout: float | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        self._env = dict(os.environ if env is None else env)
        ref = (key if key is not None else self._env.get(KEY_ENV, "")).strip()
        if not ref:
            raise ConfigError(f"no cosign key: pass --cosign-key REF or set {KEY_ENV}, REF being a cosign key file "
                              "(cosign.key, password in COSIGN_PASSWORD) or hashivault://NAME (a Vault/OpenBao "
                              "Transit key; VAULT_ADDR and VAULT_TOKEN as cosign reads them)")
        self.timeout = timeout if timeout is not None else _timeout(self._env.get(TIMEOUT_ENV))
        kms = _KMS.match(ref)
        self.transit_key: str | None = None
        self.key_file: Path | None = None
        if kms:
            if not _KMS_NAME.match(kms.group(2)):
                raise ConfigError(f"cosign key {ref!r}: {kms.group(1)}:// needs a Transit key name of letters, "
                                  f"digits, '_', '-' and '.', e.g. hashivault://agentfactory")
            self.transit_key = kms.group(2)
            self.ref = ref
        elif _OTHER_SCHEME.match(ref):
            raise ConfigError(f"cosign key {ref!r}: Agent Factory signs through cosign with a key file or "
                              "hashivault:// (openbao://) only; cosign's other key references (awskms://, gcpkms://, "
                              "azurekms://, k8s://, env://, pkcs11:) are not supported here")
        else:
            self.key_file = Path(ref).expanduser().absolute()
            self.ref = str(self.key_file)
        self._binary = binary
        self._lock = threading.Lock()
        self._public: tuple[object, PublicKey] | None = None  # (what it was read from, the key)

    # ------------------------------------------------------------------ where and how

    @property
    def where(self) -> str:
        """The key as people name it in messages: the key file, or the reference and its server."""
        if self.transit_key is None:
            return f"cosign key file {self.ref}"
        addr = self._env.get("VAULT_ADDR") or self._env.get("BAO_ADDR") or "(VAULT_ADDR not set)"
        mount = self._env.get("TRANSIT_SECRET_ENGINE_PATH") or "transit"
        return f"cosign key {self.ref} (Transit key {mount}/keys/{self.transit_key} on {addr})"

    def binary(self) -> Path:
        """The cosign executable: ConfigError naming `make tools` when it is not installed."""
        if self._binary is None:
            self._binary = find("cosign")
        return self._binary

    def _check_reference(self) -> object:
        """Refuse a key that cannot sign before cosign runs; return what identifies the key's current state."""
        if self.transit_key is not None:
            if not (self._env.get("VAULT_ADDR") or self._env.get("BAO_ADDR")):
                raise ConfigError(f"{self.ref}: VAULT_ADDR (or BAO_ADDR) is not set: cosign's hashivault:// "
                                  f"provider needs the server URL, e.g. VAULT_ADDR=https://vault.example.com:8200")
            return None  # Transit can rotate at any time: nothing on this side says which version is latest
        assert self.key_file is not None
        path = self.key_file
        try:
            st = os.stat(path)
        except FileNotFoundError:
            raise KeyProviderError(f"cosign key file {path} does not exist: check --cosign-key / {KEY_ENV}, or "
                                   f"{_CREATE_FILE}") from None
        except OSError as exc:
            raise KeyProviderError(f"cannot read cosign key file {path}: {exc.strerror}") from None
        if not stat.S_ISREG(st.st_mode):
            raise KeyProviderError(f"cosign key file {path} is not a regular file")
        if st.st_mode & 0o022:
            raise KeyProviderError(f"cosign key file {path} is writable by group or others "
                                   f"(mode {stat.S_IMODE(st.st_mode):04o}), so anyone could swap the key: "
                                   f"run `chmod 600 {path}`")
        if st.st_size > MAX_KEY_FILE_BYTES:
            raise KeyProviderError(f"cosign key file {path} is larger than {MAX_KEY_FILE_BYTES:,} bytes: "
                                   f"not a cosign key")
        try:
            head = path.read_bytes()[:200].decode("ascii", "replace")
        except OSError as exc:
            raise KeyProviderError(f"cannot read cosign key file {path}: {exc.strerror}") from None
        if not any(f"-----BEGIN {t}-----" in head for t in KEY_FILE_TYPES):
            raise KeyProviderError(f"{path} is not a cosign key file (expected a PEM block "
                                   f"'{KEY_FILE_TYPES[0]}', as cosign generate-key-pair and import-key-pair write): "
                                   f"convert a plain PEM private key with `cosign import-key-pair --key {path}`")
        return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)

    def _run(self, args: Sequence[str], what: str, stdin: bytes | None = None) -> _Run:
        """Run cosign with our environment; a timeout or a missing binary fails closed with its reason."""
        cmd = [str(self.binary()), *args]
        try:
            proc = subprocess.run(cmd, input=stdin if stdin is not None else b"", capture_output=True,
                                  env=self._env, timeout=self.timeout, check=False)
        except subprocess.TimeoutExpired:
            raise KeyProviderError(f"cosign did not finish {what} with {self.where} within {self.timeout:g} s "
                                   f"({TIMEOUT_ENV}): is the server slow or unreachable?") from None
        except OSError as exc:
            raise KeyProviderError(f"cannot run {cmd[0]}: {exc.strerror}: run `make tools`") from None
        return _Run(proc.returncode, proc.stdout[:MAX_OUTPUT_BYTES],
                    proc.stderr[:MAX_OUTPUT_BYTES].decode("utf-8", "replace"))

    def _refused(self, run: _Run, what: str) -> KeyProviderError:
        """cosign's own reason, in terms of the setting to fix."""
        text = _last_error(run.stderr)
        low = run.stderr.lower()
        if "decryption failed" in low or "inappropriate ioctl" in low:
            hint = ("COSIGN_PASSWORD is not set (cosign then reads an empty password)" if "COSIGN_PASSWORD" not in
                    self._env else "the password in COSIGN_PASSWORD is wrong")
            return KeyProviderError(f"cosign cannot decrypt {self.where}: {hint}. Set COSIGN_PASSWORD to the "
                                    f"password the key was created or imported with")
        if self.transit_key is not None:
            if any(s in low for s in ("connection refused", "no such host", "i/o timeout", "dial tcp",
                                      "connection reset", "tls:", "x509:")):
                return KeyProviderError(f"cosign cannot reach the Vault/OpenBao server for {self.where}: {text}. "
                                        f"Check VAULT_ADDR (and VAULT_CACERT for TLS)")
            if "permission denied" in low or "code: 403" in low:
                return KeyProviderError(f"Vault refused cosign ({what}) for {self.where}: permission denied. The "
                                        f"token (VAULT_TOKEN) needs `update` on {self._mount()}/sign/"
                                        f"{self.transit_key}/sha2-256 and `read` on {self._mount()}/keys/"
                                        f"{self.transit_key} (docs/keys.md, cosign keys)")
            if "no vault token" in low or "missing client token" in low or "vault-token" in low:
                return KeyProviderError(f"cosign has no Vault token for {self.where}: set VAULT_TOKEN (or BAO_TOKEN)")
            if "could not read data from transit key path" in low or "no existing key" in low or \
                    "key not found" in low:
                return KeyProviderError(f"{self.where} does not exist (or TRANSIT_SECRET_ENGINE_PATH names the "
                                        f"wrong mount): {self._create_hint()}")
        return KeyProviderError(f"cosign failed to {what} with {self.where} (exit {run.returncode}): "
                                f"{text or 'no error message'}")

    def _mount(self) -> str:
        return self._env.get("TRANSIT_SECRET_ENGINE_PATH") or "transit"

    def _create_hint(self) -> str:
        if self.transit_key is None:
            return _CREATE_FILE
        return (f"create an RSA Transit key: `bao write -f {self._mount()}/keys/{self.transit_key} type=rsa-2048` "
                f"(`vault write` alike), or `agentfactory keys create --key-provider vault` with "
                f"AGENTFACTORY_TRANSIT_MOUNT={self._mount()} AGENTFACTORY_TRANSIT_KEY={self.transit_key}")

    # ------------------------------------------------------------------ the public key

    def _public_key(self, refresh: bool = False) -> PublicKey:
        """`cosign public-key --key REF`, checked to be RSA >= 2048; cached while the key file is unchanged."""
        state = self._check_reference()
        with self._lock:
            cached = self._public
        if cached is not None and not refresh and (self.transit_key is not None or cached[0] == state):
            return cached[1]
        run = self._run(["public-key", "--key", self.ref], "read the public key")
        if run.returncode != 0:
            raise self._refused(run, "read the public key")
        pem = run.stdout.strip() + b"\n"
        try:
            public = serialization.load_pem_public_key(pem)
        except ValueError:
            raise KeyProviderError(f"`cosign public-key` for {self.where} did not print a PEM public key: "
                                   f"{run.stdout[:200]!r}") from None
        if isinstance(public, ec.EllipticCurvePublicKey):
            raise KeyProviderError(
                f"{self.where} is an ECDSA ({public.curve.name}) key (cosign's default key type): Agent Factory signs "
                f"with RSA PKCS#1 v1.5 / SHA-256 and its verifier, trust policies and evidence accept only RSA keys "
                f"of at least {MIN_RSA_BITS} bits, so nothing this key signed could be verified: "
                f"{self._create_hint()}")
        if not isinstance(public, rsa.RSAPublicKey):
            raise KeyProviderError(f"{self.where} is a {type(public).__name__.lstrip('_')} key, not RSA: Agent Factory "
                                   f"verifies RSA keys of at least {MIN_RSA_BITS} bits only; {self._create_hint()}")
        if public.key_size < MIN_RSA_BITS:
            raise KeyProviderError(f"{self.where} is RSA-{public.key_size}: at least {MIN_RSA_BITS} bits are needed")
        spki = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        key = PublicKey(key_id=compute_key_id(public), pem=spki, status="active", provider=self.name, name=self.ref)
        with self._lock:
            self._public = (state, key)
        return key

    # ------------------------------------------------------------------ KeyProvider

    def sign(self, data: bytes) -> Signature:
        """`cosign sign-blob` over `data`; the signature is checked against the key before it is returned."""
        if not isinstance(data, bytes):
            raise KeyProviderError("the cosign provider signs bytes")
        public = self._public_key()
        digest = hashlib.sha256(data).digest()
        with tempfile.TemporaryDirectory(prefix="agentfactory-cosign-") as tmp:
            blob, bundle = Path(tmp) / "blob", Path(tmp) / "bundle.json"
            blob.write_bytes(data)
            run = self._run(["sign-blob", "--key", self.ref, "--tlog-upload=false", "--use-signing-config=false",
                             "--bundle", str(bundle), "--yes", str(blob)], "sign")
            if run.returncode != 0:
                raise self._refused(run, "sign")
            try:
                raw_bundle = bundle.read_bytes()[:MAX_OUTPUT_BYTES]
            except OSError:
                raise KeyProviderError(f"cosign sign-blob with {self.where} exited 0 but wrote no bundle: "
                                       f"{_last_error(run.stderr) or 'no message'}") from None
        signature = self._signature_of(raw_bundle, digest)
        for refresh in (False, True):
            if refresh:  # a Transit key rotated between reading its public key and signing
                public = self._public_key(refresh=True)
            key = serialization.load_pem_public_key(public.pem)
            assert isinstance(key, rsa.RSAPublicKey)
            try:
                key.verify(signature, digest, padding.PKCS1v15(), utils.Prehashed(hashes.SHA256()))
            except InvalidSignature:
                continue
            return Signature(key_id=public.key_id, signature=signature, provider=self.name)
        raise KeyProviderError(f"the signature cosign made with {self.where} is not an RSA PKCS#1 v1.5 / SHA-256 "
                               f"signature by its public key (`cosign public-key`): refusing it")

    def _signature_of(self, raw: bytes, digest: bytes) -> bytes:
        """The signature in cosign's bundle, after checking that it signs the digest of what we gave."""
        def bad(problem: str) -> KeyProviderError:
            return KeyProviderError(f"unexpected output from cosign sign-blob with {self.where}: {problem}")

        try:
            doc = json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise bad("the bundle is not JSON") from None
        message = doc.get("messageSignature") if isinstance(doc, dict) else None
        if not isinstance(message, dict):
            raise bad("the bundle has no messageSignature")
        stated = message.get("messageDigest")
        if not isinstance(stated, dict) or stated.get("algorithm") != "SHA2_256":
            raise bad("the bundle's messageDigest is not SHA2_256")
        try:
            signed_digest = base64.b64decode(str(stated.get("digest", "")), validate=True)
            signature = base64.b64decode(str(message.get("signature", "")), validate=True)
        except binascii.Error:
            raise bad("the bundle's digest or signature is not base64") from None
        if signed_digest != digest:
            raise bad("the bundle signs another digest than the SHA-256 of the bytes given")
        if not signature:
            raise bad("the bundle holds an empty signature")
        return signature

    def sign_digest(self, sha256_digest: bytes) -> Signature:
        """Refused: cosign hashes what it signs itself and cannot sign a digest computed elsewhere."""
        raise KeyProviderError(
            "the cosign key provider signs bytes, not a precomputed digest: `cosign sign-blob` hashes the blob "
            "itself (SHA-256) and has no prehashed mode, so the caller must pass what is signed "
            "(KeyProvider.sign(data)), which yields the same RSA PKCS#1 v1.5 signature over the same digest")

    def public_keys(self) -> list[PublicKey]:
        """The one key this reference names, `active`. For Transit that is its latest version only."""
        return [self._public_key()]

    def create(self) -> PublicKey:
        """A key file: an RSA-2048 key imported through `cosign import-key-pair`. Transit: refused.

        cosign's own generate-key-pair makes ECDSA P-256 keys only (with `--kms hashivault://`, an
        ecdsa-p256 Transit key), which the verifier cannot use. An existing key file is never
        overwritten: creating again returns its key, as a Transit create does.
        """
        if self.transit_key is not None:
            try:
                return self._public_key(refresh=True)
            except KeyProviderError as exc:
                if "does not exist" not in str(exc):
                    raise
            raise KeyProviderError(
                f"cannot create {self.ref} through cosign: `cosign generate-key-pair --kms {self.ref}` creates an "
                f"ecdsa-p256 Transit key, which Agent Factory cannot verify. Create an rsa-2048 key instead: "
                f"`bao write -f {self._mount()}/keys/{self.transit_key} type=rsa-2048` (or `agentfactory keys create "
                f"--key-provider vault` with AGENTFACTORY_TRANSIT_KEY={self.transit_key}, which also sets "
                f"auto-rotation)")
        assert self.key_file is not None
        if self.key_file.exists() or self.key_file.is_symlink():
            return self._public_key(refresh=True)
        password = self._env.get("COSIGN_PASSWORD")
        if not password:
            raise ConfigError(f"set COSIGN_PASSWORD before creating {self.key_file}: cosign encrypts the key file "
                              f"with it, and an empty password would leave the key readable by anyone who can "
                              f"read the file")
        if not self.key_file.name.endswith(".key"):
            raise ConfigError(f"cosign key file {self.key_file}: name it NAME.key (cosign writes NAME.key and "
                              f"NAME.pub)")
        if not self.key_file.parent.is_dir():
            raise KeyProviderError(f"cannot create {self.key_file}: {self.key_file.parent} is not a folder")
        private = rsa.generate_private_key(public_exponent=65537, key_size=MIN_RSA_BITS)
        pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        prefix = str(self.key_file)[: -len(".key")]
        # The plain key reaches cosign through a pipe, never a file; cosign writes it encrypted (0600).
        run = self._run(["import-key-pair", "--key", "/dev/stdin", "--output-key-prefix", prefix, "--yes"],
                        "import a new RSA-2048 key", stdin=pem)
        if run.returncode != 0:
            raise self._refused(run, "import a new RSA-2048 key")
        key = self._public_key(refresh=True)
        if key.key_id != compute_key_id(private.public_key()):
            raise KeyProviderError(f"cosign import-key-pair wrote {self.key_file}, but it does not hold the key "
                                   f"that was imported")
        return key

    def rotate(self) -> PublicKey:
        """Refused: cosign has no rotation; say how to rotate a key file or a Transit key."""
        if self.transit_key is not None:
            raise KeyProviderError(
                f"cosign cannot rotate {self.ref}: rotate the Transit key in Vault (`bao write -f "
                f"{self._mount()}/keys/{self.transit_key}/rotate`, or `agentfactory keys rotate --key-provider vault` "
                f"with AGENTFACTORY_TRANSIT_KEY={self.transit_key}); cosign then signs with the latest version. Keep "
                f"the previous version's public key in the trust policy so that what it signed still verifies")
        raise KeyProviderError(
            f"a cosign key file holds one key, so {self.ref} cannot be rotated: create a new key file (`agentfactory "
            f"keys create --key-provider cosign --cosign-key NEW.key`), point --cosign-key / {KEY_ENV} at it, and keep "
            f"the old public key in the trust policy so that what it signed still verifies")

    def revoke(self, key_id: str) -> PublicKey:
        """Refused: cosign keeps no key status; revocation lives in the trust policy."""
        raise KeyProviderError(
            f"cosign keeps no key status, so {self.ref} cannot be revoked here: mark the key `revoked: true` in the "
            f"trust policy (spec.keys, key id {key_id[:16]}…) or remove it, and stop signing with it")


def _timeout(value: str | None) -> float:
    if value is None or not value.strip():
        return DEFAULT_TIMEOUT
    try:
        seconds = float(value)
    except ValueError:
        raise ConfigError(f"{TIMEOUT_ENV}={value!r}: not a number of seconds") from None
    if not 0 < seconds <= 3600:
        raise ConfigError(f"{TIMEOUT_ENV}={value!r}: give between 0 and 3600 seconds")
    return seconds


def _last_error(stderr: str) -> str:
    """cosign's last error on one line: from its `Error: ` line up to the `error during command execution` echo."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    starts = [i for i, ln in enumerate(lines) if ln.startswith("Error: ")]
    if starts:
        picked = []
        for ln in lines[starts[-1]:]:
            if "error during command execution" in ln:
                break
            picked.append(ln)
        text = " ".join(picked)[len("Error: "):]
    else:
        kept = [ln for ln in lines if "error during command execution" not in ln and not ln.startswith("Flag --")]
        text = kept[-1] if kept else ""
    return " ".join(text.split())[:1000]
