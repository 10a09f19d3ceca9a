"""Keyless signing with Sigstore, for CI: no key to hold, rotate or revoke.

The runner's ambient OIDC identity (in GitHub Actions, the workflow's token, requested through
ACTIONS_ID_TOKEN_REQUEST_URL/TOKEN when the job has `permissions: id-token: write`) is exchanged at
Fulcio for a certificate valid ten minutes naming that identity; an ephemeral ECDSA P-256 key signs
the artifact's SHA-256 digest and each in-toto statement (as a DSSE envelope); every signature is
logged in the instance's Rekor, and each comes back as a Sigstore bundle (certificate, signature,
log entry with its inclusion proof) that anyone verifies offline (`agentfactory/sigstore_bundles.py`).

This is not a `KeyProvider`: there is no key to list, create, rotate or revoke, and what it makes is
a bundle, not an RSA signature. The pipeline uses it through `Signing.keyless` (`--key-provider sigstore`).
Signing needs the network (Fulcio, Rekor, the instance's TUF repository); verifying does not.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..digest import DIGEST_RE
from ..errors import AgentFactoryError, ConfigError
from ..sigstore_bundles import INSTANCES, Instance, KeylessIdentity, describe_identity

if TYPE_CHECKING:
    from sigstore.oidc import IdentityToken
    from sigstore.sign import SigningContext

KEYLESS_PROVIDER = "sigstore"
NO_AMBIENT_IDENTITY = ("no ambient OIDC identity: keyless signing runs in GitHub Actions with "
                       "`permissions: id-token: write` (sigstore-python also finds the OIDC tokens of GitLab CI, "
                       "Buildkite, CircleCI and Google Cloud)")


class KeylessSigningError(AgentFactoryError):
    """Fulcio, Rekor or the instance's TUF repository refused or could not be reached."""


@dataclass(frozen=True)
class KeylessBundles:
    """What one signing made: (None, the bundle over the digest), then (predicate type, the DSSE bundle)
    for each statement, all under one short-lived certificate naming `identity`."""

    bundles: list[tuple[str | None, bytes]]
    identity: KeylessIdentity
    log_indexes: list[int]


def ambient_token() -> str | None:
    """The CI's OIDC token for the audience `sigstore`, or None outside a CI that offers one."""
    from sigstore.oidc import IdentityError, detect_credential

    try:
        return detect_credential()
    except IdentityError as exc:  # in GitHub Actions without id-token: write, for instance
        raise ConfigError(f"{NO_AMBIENT_IDENTITY}; the CI refused the token: {' '.join(str(exc).split())}") from None


class KeylessSigner:
    """Signs with the ambient OIDC identity. The token is read when the signer is made, so a job that
    cannot sign fails before it builds; it is read again when it has expired (long pipelines)."""

    name = KEYLESS_PROVIDER

    def __init__(self, instance: Instance = "production", *,
                 token_source: Callable[[], str | None] = ambient_token) -> None:
        if instance not in INSTANCES:
            raise ConfigError(f"Sigstore instance {instance!r}: use one of {', '.join(INSTANCES)}")
        try:
            import sigstore  # noqa: F401
        except ImportError:
            raise ConfigError("keyless signing needs sigstore-python: pip install 'sigstore==4.5.1'") from None
        self.instance: Instance = instance
        self._token_source = token_source
        self._lock = threading.Lock()
        self._context: SigningContext | None = None
        self._token = self._fresh_token()

    @property
    def token_identity(self) -> str:
        """The identity claim of the token (for a GitHub workflow: its job_workflow_ref)."""
        return self._token.identity

    @property
    def token_issuer(self) -> str:
        return self._token.issuer

    def _fresh_token(self) -> IdentityToken:
        from sigstore.oidc import IdentityError, IdentityToken

        raw = self._token_source()
        if not raw:
            raise ConfigError(NO_AMBIENT_IDENTITY)
        try:
            return IdentityToken(raw)
        except IdentityError as exc:
            raise ConfigError(f"the ambient OIDC token cannot be used with Sigstore: {exc}") from None

    def _signing_context(self) -> SigningContext:
        if self._context is None:
            from sigstore.models import ClientTrustConfig
            from sigstore.sign import SigningContext

            config = ClientTrustConfig.production() if self.instance == "production" else ClientTrustConfig.staging()
            self._context = SigningContext.from_trust_config(config)
        return self._context

    def sign(self, digest: str, statements: list[tuple[str, bytes]]) -> KeylessBundles:
        """Sign the artifact `digest` (sha256:<hex>) and each (predicate type, in-toto statement JSON)."""
        if not DIGEST_RE.match(digest):
            raise ConfigError(f"{digest!r} is not a sha256 digest")
        from sigstore.dsse import Statement
        from sigstore.hashes import Hashed
        from sigstore_models.common.v1 import HashAlgorithm

        hashed = Hashed(algorithm=HashAlgorithm.SHA2_256, digest=bytes.fromhex(digest.split(":", 1)[1]))
        with self._lock:  # one signing at a time: the Fulcio and Rekor clients are shared
            try:
                if not self._token.in_validity_period():
                    self._token = self._fresh_token()
                with self._signing_context().signer(self._token) as signer:  # one certificate per artifact
                    made: list[tuple[str | None, Any]] = [(None, signer.sign_artifact(hashed))]
                    made += [(p, signer.sign_dsse(Statement(s))) for p, s in statements]
            except AgentFactoryError:
                raise
            except Exception as exc:  # network, Fulcio or Rekor refusals: say which instance, and why
                raise KeylessSigningError(f"keyless signing with the Sigstore {self.instance} instance failed "
                                          f"(it needs Fulcio, Rekor and the instance's TUF repository): "
                                          f"{_why(exc)}") from None
        identity = describe_identity(made[0][1].signing_certificate)
        if identity is None:
            raise KeylessSigningError("Fulcio issued a certificate that names no identity or issuer")
        bundles = [(p, b.to_json().encode()) for p, b in made]
        return KeylessBundles(bundles, identity, [i for _, b in bundles if (i := _log_index(b)) is not None])


    def sign_statement(self, statement: bytes) -> bytes:
        """One in-toto statement as a Sigstore DSSE bundle (a signed VEX document, for instance)."""
        from sigstore.dsse import Statement

        with self._lock:
            try:
                if not self._token.in_validity_period():
                    self._token = self._fresh_token()
                with self._signing_context().signer(self._token) as signer:
                    bundle = signer.sign_dsse(Statement(statement))
            except AgentFactoryError:
                raise
            except Exception as exc:
                raise KeylessSigningError(f"keyless signing with the Sigstore {self.instance} instance failed "
                                          f"(it needs Fulcio, Rekor and the instance's TUF repository): "
                                          f"{_why(exc)}") from None
        return bundle.to_json().encode()


def _why(exc: BaseException) -> str:
    """The error and what caused it (sigstore wraps network failures: "Failed to refresh TUF metadata")."""
    parts: list[str] = []
    seen: BaseException | None = exc
    while seen is not None and len(parts) < 3:
        parts.append(f"{type(seen).__name__}: {' '.join(str(seen).split())[:300]}")
        seen = seen.__cause__ or seen.__context__
    return "; caused by ".join(parts)


def _log_index(bundle_json: bytes) -> int | None:
    try:
        return int(json.loads(bundle_json)["verificationMaterial"]["tlogEntries"][0]["logIndex"])
    except (ValueError, KeyError, IndexError, TypeError):
        return None
