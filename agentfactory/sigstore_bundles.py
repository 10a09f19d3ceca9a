"""Sigstore bundles verified offline, for the identities a trust policy names (keyless signing).

A keyless signature is a Sigstore bundle: a short-lived Fulcio certificate naming the signer's OIDC
identity (a GitHub Actions workflow, an e-mail address), the signature over the artifact's SHA-256
digest (or a DSSE envelope of an in-toto statement), and the Rekor entry that logged it with its
inclusion proof, checkpoint and signed timestamps. sigstore-python checks all of that against a
Sigstore trusted root; this module adds what a verifier plane needs around it: strict size limits,
no network and no writes, and a reason that names the identity expected and the one found.

The trusted root is the one shipped inside sigstore-python for the instance (production or staging),
or one the trust policy pins (`trustedRootFile`). sigstore-python's `Verifier.production(offline=True)`
is deliberately not used: it reads an *unverified* copy from the user's cache folder
(~/.cache/sigstore-python), creating that folder first, which fails on a read-only root file system
(the webhook, the runtime) and would let whoever can write that folder choose the roots of trust.

sigstore (≈0.35 s of imports) is imported only when a bundle is verified or signed.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote

from .digest import DIGEST_RE
from .dsse import MAX_ENVELOPE_BYTES
from .jsonsafe import no_duplicate_keys

if TYPE_CHECKING:
    from cryptography.x509 import Certificate
    from sigstore.models import Bundle
    from sigstore.verify import Verifier

Instance = Literal["production", "staging"]
INSTANCES: tuple[Instance, ...] = ("production", "staging")
TUF_URLS: dict[str, str] = {"production": "https://tuf-repo-cdn.sigstore.dev",
                            "staging": "https://tuf-repo-cdn.sigstage.dev"}

# OCI referrers holding a bundle. Cosign attaches its v0.3 bundles with the first; the others are the
# media types older bundles declare inside themselves, accepted as referrer types too.
BUNDLE_ARTIFACT_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
BUNDLE_ARTIFACT_TYPES = frozenset({BUNDLE_ARTIFACT_TYPE,
                                   "application/vnd.dev.sigstore.bundle+json;version=0.3",
                                   "application/vnd.dev.sigstore.bundle+json;version=0.2",
                                   "application/vnd.dev.sigstore.bundle+json;version=0.1"})

# A signature bundle is a certificate, a signature, a log entry with its proof and timestamps: a few
# KiB (the fixture is 7 KiB). A DSSE bundle also carries its statement: as large as an envelope.
MAX_SIGNATURE_BUNDLE_BYTES = 256 * 1024
MAX_DSSE_BUNDLE_BYTES = MAX_ENVELOPE_BYTES
MAX_TRUSTED_ROOT_BYTES = 1024 * 1024
_OIDC_ISSUER_V1 = "1.3.6.1.4.1.57264.1.1"
_OIDC_ISSUER_V2 = "1.3.6.1.4.1.57264.1.8"
_SIGSTORE_OTHERNAME = "1.3.6.1.4.1.57264.1.7"


@dataclass(frozen=True)
class KeylessIdentity:
    """An identity a trust policy allows: the certificate's OIDC issuer and its subject (SAN), exactly.

    For a GitHub Actions workflow: issuer https://token.actions.githubusercontent.com, subject
    https://github.com/OWNER/REPO/.github/workflows/FILE.yml@REF. sigstore-python 4.5 matches
    subjects exactly (no regular expressions): list each ref that may sign.
    """

    issuer: str
    subject: str

    def __str__(self) -> str:
        return f"{self.subject} (issuer {self.issuer})"


@dataclass(frozen=True)
class KeylessPolicy:
    """The `keyless` section of a trust policy. No identities: keyless signatures are not trusted."""

    identities: tuple[KeylessIdentity, ...] = ()
    instance: Instance = "production"
    trusted_root: bytes | None = field(default=None, repr=False)  # a pinned trusted_root.json; None: sigstore's
    trusted_root_source: str = ""  # where the pinned root came from, for messages

    @property
    def root_name(self) -> str:
        return self.trusted_root_source or f"the Sigstore {self.instance} trusted root shipped with sigstore-python"


@dataclass(frozen=True)
class KeylessSignature:
    """A bundle that verified: a signature over `digest` by `identity`, logged in Rekor at `log_index`."""

    identity: KeylessIdentity
    digest: str
    log_index: int | None
    not_before: datetime
    not_after: datetime


@dataclass(frozen=True)
class KeylessAttestation:
    """A DSSE bundle that verified: `payload` of `payload_type`, signed by `identity`."""

    identity: KeylessIdentity
    payload_type: str
    payload: bytes
    log_index: int | None


# ---------------------------------------------------------------------------------------------- parsing


@dataclass(frozen=True)
class _Parsed:
    bundle: Bundle
    doc: dict[str, Any]

    @property
    def is_dsse(self) -> bool:
        return "dsseEnvelope" in self.doc

    @property
    def log_index(self) -> int | None:
        try:
            return int(self.doc["verificationMaterial"]["tlogEntries"][0]["logIndex"])
        except (KeyError, IndexError, TypeError, ValueError):
            return None


def bundle_kind(bundle_json: bytes) -> Literal["signature", "dsse"] | None:
    """What a bundle holds, read without verifying (None: not a JSON object); never raises."""
    if len(bundle_json) > MAX_DSSE_BUNDLE_BYTES:
        return None
    try:
        doc = json.loads(bundle_json)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    if not isinstance(doc, dict):
        return None
    return "dsse" if "dsseEnvelope" in doc else "signature"


def unverified_dsse_payload(bundle_json: bytes) -> tuple[str, bytes] | None:
    """The DSSE payload type and payload a bundle carries, NOT verified: only to pick which bundles to
    verify (as the verifier reads an envelope's statement before its signature); never raises."""
    if len(bundle_json) > MAX_DSSE_BUNDLE_BYTES:
        return None
    try:
        envelope = json.loads(bundle_json).get("dsseEnvelope")
        payload_type, payload = envelope["payloadType"], envelope["payload"]
        if not isinstance(payload_type, str) or not isinstance(payload, str):
            return None
        return payload_type, base64.b64decode(payload, validate=True)
    except (ValueError, UnicodeDecodeError, RecursionError, AttributeError, KeyError, TypeError, binascii.Error):
        return None


def _parse(bundle_json: bytes, where: str, max_bytes: int) -> _Parsed | str:
    if len(bundle_json) > max_bytes:
        return f"{where}: the Sigstore bundle is {len(bundle_json)} bytes; the limit is {max_bytes}"
    try:  # duplicate keys refused: sigstore-python's parser and this one must see the same document
        doc = json.loads(bundle_json, object_pairs_hook=no_duplicate_keys)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        return f"{where}: the Sigstore bundle is not JSON ({exc})"
    if not isinstance(doc, dict):
        return f"{where}: the Sigstore bundle is not a JSON object"
    try:
        from sigstore.models import Bundle
    except ImportError:
        return _NO_SIGSTORE
    try:
        bundle = Bundle.from_json(bundle_json)
    except Exception as exc:  # untrusted input into a third-party parser: any failure is a refusal
        return f"{where}: not a valid Sigstore bundle ({_text(exc)})"
    problem = _proof_against_checkpoint(doc)
    if problem is not None:
        return f"{where}: {problem}"
    return _Parsed(bundle, doc)



def _proof_against_checkpoint(doc: dict[str, Any]) -> str | None:
    """The inclusion proof must be for the tree its signed checkpoint describes. sigstore-python 4.5
    compares their root hashes but not their sizes, and for some sizes a proof re-labelled with another
    tree size still computes the same root: checked here, as the embedded log's records are."""
    try:
        proof = doc["verificationMaterial"]["tlogEntries"][0]["inclusionProof"]
        envelope = proof["checkpoint"]["envelope"]
        tree_size = str(proof["treeSize"])
    except (KeyError, IndexError, TypeError):
        return None  # no checkpoint (a v0.1 bundle): sigstore-python decides what that bundle needs
    lines = envelope.split("\n") if isinstance(envelope, str) else []
    if len(lines) < 3 or lines[1] != tree_size:
        found = lines[1] if len(lines) >= 3 else "(unreadable)"
        return (f"the bundle's inclusion proof is for a tree of {tree_size} entries, but its signed checkpoint "
                f"is for {found}")
    return None


_NO_SIGSTORE = ("keyless verification needs sigstore-python (pip install 'sigstore==4.5.1'), "
                "which is not installed here")


def _text(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text[:300] + "…" if len(text) > 300 else text) or type(exc).__name__


# ----------------------------------------------------------------------------------------- trust roots


def embedded_trusted_root(instance: str) -> bytes:
    """The trusted_root.json sigstore-python ships for `instance` (read-only package data)."""
    url = TUF_URLS[instance]
    return resources.files("sigstore._store").joinpath(quote(url, safe=""), "trusted_root.json").read_bytes()


def check_trusted_root(data: bytes, where: str) -> str | None:
    """None when `data` is a Sigstore trusted root sigstore-python can use; else why not."""
    if len(data) > MAX_TRUSTED_ROOT_BYTES:
        return f"{where}: the trusted root is {len(data)} bytes; the limit is {MAX_TRUSTED_ROOT_BYTES}"
    try:
        _verifier_for(data)
    except ImportError:
        return _NO_SIGSTORE
    except Exception as exc:  # a malformed root: say what sigstore-python found
        return f"{where}: not a usable Sigstore trusted root ({_text(exc)})"
    return None


@functools.lru_cache(maxsize=8)
def _verifier_for(trusted_root: bytes) -> Verifier:
    # TrustedRoot.from_file does exactly this with a file's bytes; the roots here are bytes already
    # (sigstore's package data, or a file the trust policy pinned and read once).
    from sigstore.models import TrustedRoot
    from sigstore.verify import Verifier
    from sigstore_models.trustroot import v1 as trustroot_v1

    root = TrustedRoot(trustroot_v1.TrustedRoot.from_json(trusted_root))
    return Verifier(trusted_root=root)


def _verifier(policy: KeylessPolicy) -> Verifier:
    return _verifier_for(policy.trusted_root if policy.trusted_root is not None
                         else embedded_trusted_root(policy.instance))


# ------------------------------------------------------------------------------------------ identities


def certificate_identity(cert: Certificate) -> tuple[list[str], str | None]:
    """The subjects (SANs: e-mail, URI, Sigstore other-name) and the OIDC issuer a certificate names."""
    from cryptography import x509

    sans: list[str] = []
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        sans += san.get_values_for_type(x509.RFC822Name)
        sans += san.get_values_for_type(x509.UniformResourceIdentifier)
        sans += [o.value.decode(errors="replace") for o in san.get_values_for_type(x509.OtherName)
                 if o.type_id.dotted_string == _SIGSTORE_OTHERNAME]
    except (x509.ExtensionNotFound, ValueError):
        pass
    return sans, _issuer_of(cert)


def _issuer_of(cert: Certificate) -> str | None:
    from cryptography import x509

    for oid in (_OIDC_ISSUER_V1, _OIDC_ISSUER_V2):
        try:
            raw = cert.extensions.get_extension_for_oid(x509.ObjectIdentifier(oid)).value
        except (x509.ExtensionNotFound, ValueError):
            continue
        value = getattr(raw, "value", b"")
        if oid == _OIDC_ISSUER_V2 and len(value) >= 2 and value[0] == 0x0C and value[1] < 0x80:
            value = value[2:2 + value[1]]  # DER UTF8String, short form (an issuer URL is short)
        return bytes(value).decode(errors="replace")
    return None


def _found(cert: Certificate) -> str:
    sans, issuer = certificate_identity(cert)
    return (f"the certificate names {', '.join(sans) or 'no subject'} "
            f"(issuer {issuer or 'not stated'})")


def _expected(identities: tuple[KeylessIdentity, ...] | list[KeylessIdentity]) -> str:
    if not identities:
        return "the trust policy allows no keyless identity"
    return "expected " + ("" if len(identities) == 1 else "one of ") + "; ".join(map(str, identities))


def _matching(cert: Certificate, identities: tuple[KeylessIdentity, ...]) -> list[KeylessIdentity]:
    """The allowed identities this certificate claims (sigstore's own Identity policy decides)."""
    from sigstore.errors import VerificationError
    from sigstore.verify.policy import Identity

    out = []
    for ident in identities:
        try:
            Identity(identity=ident.subject, issuer=ident.issuer).verify(cert)
        except VerificationError:
            continue
        except Exception:  # a certificate sigstore cannot read claims nothing
            continue
        out.append(ident)
    return out


def _policy_for(identities: tuple[KeylessIdentity, ...]) -> Any:
    from sigstore.verify.policy import AnyOf, Identity

    return AnyOf([Identity(identity=i.subject, issuer=i.issuer) for i in identities])


# ----------------------------------------------------------------------------------------- verifying


def verify_artifact_bundle(bundle_json: bytes, digest: str, policy: KeylessPolicy | list[KeylessIdentity],
                           *, where: str, instance: Instance | None = None) -> KeylessSignature | str:
    """Verify a bundle signing the artifact named by `digest` (sha256:<hex>), offline.

    Returns what verified (the identity, the Rekor log index), or the reason it did not: the
    identities expected and what the bundle's certificate names, or sigstore's own finding.
    """
    pol = _as_policy(policy, instance)
    if not DIGEST_RE.match(digest):
        return f"{where}: {digest!r} is not a sha256 digest"
    parsed = _parse(bundle_json, where, MAX_SIGNATURE_BUNDLE_BYTES)
    if isinstance(parsed, str):
        return parsed
    if parsed.is_dsse:
        return f"{where}: the Sigstore bundle holds a DSSE attestation, not a signature over an artifact digest"
    cert = parsed.bundle.signing_certificate
    allowed = _matching(cert, pol.identities)
    if not allowed:
        return (f"{where}: keyless signature by an identity the trust policy does not allow: "
                f"{_expected(pol.identities)}; {_found(cert)}")
    signed = _signed_digest(parsed.doc)
    if signed is not None and signed != digest:
        return f"{where}: the Sigstore bundle signs {signed}, not {digest} (another artifact, or modified bytes)"
    from sigstore.hashes import Hashed
    from sigstore_models.common.v1 import HashAlgorithm

    hashed = Hashed(algorithm=HashAlgorithm.SHA2_256, digest=bytes.fromhex(digest.split(":", 1)[1]))
    try:
        _verifier(pol).verify_artifact(hashed, parsed.bundle, _policy_for(tuple(allowed)))
    except ImportError:
        return _NO_SIGSTORE
    except Exception as exc:  # VerificationError, or anything a hostile bundle provokes: refuse, saying why
        return (f"{where}: the keyless signature by {allowed[0]} does not verify against {pol.root_name}: "
                f"{_text(exc)}")
    return KeylessSignature(allowed[0], digest, parsed.log_index, cert.not_valid_before_utc,
                            cert.not_valid_after_utc)


def verify_dsse_bundle(bundle_json: bytes, policy: KeylessPolicy | list[KeylessIdentity], *, where: str,
                       instance: Instance | None = None) -> KeylessAttestation | str:
    """Verify a bundle holding a DSSE envelope (a keyless attestation), offline; its payload when it holds.

    The payload's type and content are the caller's to check (an in-toto statement, its subject).
    """
    pol = _as_policy(policy, instance)
    parsed = _parse(bundle_json, where, MAX_DSSE_BUNDLE_BYTES)
    if isinstance(parsed, str):
        return parsed
    if not parsed.is_dsse:
        return f"{where}: the Sigstore bundle holds a signature over an artifact digest, not a DSSE attestation"
    cert = parsed.bundle.signing_certificate
    allowed = _matching(cert, pol.identities)
    if not allowed:
        return (f"{where}: keyless attestation by an identity the trust policy does not allow: "
                f"{_expected(pol.identities)}; {_found(cert)}")
    try:
        payload_type, payload = _verifier(pol).verify_dsse(parsed.bundle, _policy_for(tuple(allowed)))
    except ImportError:
        return _NO_SIGSTORE
    except Exception as exc:  # VerificationError, or anything a hostile bundle provokes: refuse, saying why
        return (f"{where}: the keyless attestation by {allowed[0]} does not verify against {pol.root_name}: "
                f"{_text(exc)}")
    return KeylessAttestation(allowed[0], payload_type, payload, parsed.log_index)


def _as_policy(policy: KeylessPolicy | list[KeylessIdentity], instance: Instance | None) -> KeylessPolicy:
    if isinstance(policy, KeylessPolicy):
        if instance is not None and instance != policy.instance:
            return KeylessPolicy(policy.identities, instance, policy.trusted_root, policy.trusted_root_source)
        return policy
    return KeylessPolicy(tuple(policy), instance or "production")


def _signed_digest(doc: dict[str, Any]) -> str | None:
    """The digest a signature bundle says it signs (sigstore also checks it against the signature)."""
    signature = doc.get("messageSignature")
    md = signature.get("messageDigest") if isinstance(signature, dict) else None
    if not isinstance(md, dict) or md.get("algorithm") != "SHA2_256" or not isinstance(md.get("digest"), str):
        return None
    try:
        raw = base64.b64decode(md["digest"], validate=True)
    except (binascii.Error, ValueError):
        return None
    return "sha256:" + raw.hex() if len(raw) == hashlib.sha256().digest_size else None


def describe_identity(cert: Certificate) -> KeylessIdentity | None:
    """The identity a certificate names (its first subject and its issuer), as a trust policy lists it."""
    sans, issuer = certificate_identity(cert)
    return KeylessIdentity(issuer, sans[0]) if sans and issuer else None
