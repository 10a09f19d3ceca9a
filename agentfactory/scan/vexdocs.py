"""VEX documents as files: plain, signed in a DSSE envelope (as `vexctl attest` and
`agentfactory vex sign` write them) or in a Sigstore bundle (keyless, `vex sign --key-provider
sigstore` in GitHub Actions), and which ones a gate may believe.

A VEX statement turns a blocking finding into an allowed one, so it is as powerful as a key: the
pipeline accepts only signed VEX whose signer the trust policy lists (a plain document is refused
there, naming the file), while `agentfactory scan` on a workstation also reads plain documents.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ..dsse import INTOTO_PAYLOAD_TYPE, parse_envelope, sign_envelope
from ..errors import InputError
from ..intoto import make_statement, parse_statement
from ..keys.base import KeyProvider
from ..trust import TrustPolicy
from .attestation import canonical_json
from .report import VexSource
from .vex import MAX_VEX_BYTES, VexStatement, parse_cyclonedx_vex, parse_openvex, parse_vex

OPENVEX_PREDICATE = "https://openvex.dev/ns/v0.2.0"
SIGSTORE_BUNDLE = "application/vnd.dev.sigstore.bundle"
MAX_VEX_FILES = 1000


def vex_files(paths: list[Path]) -> list[Path]:
    """Each path as given, or the *.json files of a folder (sorted): VEX kept next to a template."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out.extend(sorted(q for q in p.glob("*.json") if q.is_file()))
        elif p.is_file():
            out.append(p)
        else:
            raise InputError(str(p), "no such VEX file or folder")
        if len(out) > MAX_VEX_FILES:
            raise InputError(str(p), f"more than {MAX_VEX_FILES} VEX files")
    return out


def _read(path: Path) -> bytes:
    size = path.stat().st_size
    if size > MAX_VEX_BYTES:
        raise InputError(str(path), f"the VEX file is {size} bytes; the limit is {MAX_VEX_BYTES}")
    return path.read_bytes()


def _statements_of(predicate: Any, where: str) -> list[VexStatement]:
    if not isinstance(predicate, dict):
        raise InputError(where, "the signed statement's predicate is not a VEX document")
    if "@context" in predicate:
        return parse_openvex(predicate, where)
    if "bomFormat" in predicate:
        return parse_cyclonedx_vex(predicate, where)
    raise InputError(where, "the signed statement's predicate is neither OpenVEX nor CycloneDX VEX")


def load_vex(paths: list[Path], *, trust: TrustPolicy | None,
             require_signed: bool) -> list[tuple[VexSource, list[VexStatement]]]:
    """Read every VEX document; a signed one must verify under `trust`, an unsigned one is refused
    when `require_signed`. Any problem raises `InputError` naming the file: nothing is half-applied."""
    from ..verifier import envelope_signer

    loaded = []
    for path in vex_files(paths):
        where = str(path)
        data = _read(path)
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        try:
            head = json.loads(data)
        except ValueError:
            head = None
        if isinstance(head, dict) and str(head.get("mediaType", "")).startswith(SIGSTORE_BUNDLE):
            statements, signer = _keyless(data, where, trust)
            loaded.append((VexSource(where, digest, len(statements), signed_by=signer), statements))
        elif isinstance(head, dict) and "payloadType" in head:
            envelope = parse_envelope(data, where)
            if envelope.payload_type != INTOTO_PAYLOAD_TYPE:
                raise InputError(where, f"payloadType {envelope.payload_type!r} is not an in-toto statement")
            statement = parse_statement(envelope.payload, where)
            _check_predicate_type(statement.predicate_type, where)
            if trust is None:
                raise InputError(where, "a signed VEX document needs a trust policy to check its signer")
            problem, key = envelope_signer(envelope, trust)
            if problem is not None or key is None:
                raise InputError(where, f"the VEX signature is not trusted: {problem}")
            statements = _statements_of(statement.predicate, where)
            loaded.append((VexSource(where, digest, len(statements), signed_by=key.key_id), statements))
        else:
            if require_signed:
                raise InputError(where, "this VEX document is not signed; the gate accepts only signed VEX "
                                        "(sign it with `agentfactory vex sign`, or `vexctl attest --sign`)")
            statements = parse_vex(data, where)
            loaded.append((VexSource(where, digest, len(statements)), statements))
    return loaded


def _keyless(data: bytes, where: str, trust: TrustPolicy | None) -> tuple[list[VexStatement], str]:
    """A VEX statement in a Sigstore DSSE bundle (signed keylessly, e.g. in GitHub Actions), verified
    offline for an identity the trust policy's `keyless` section names."""
    from ..sigstore_bundles import verify_dsse_bundle

    if trust is None or not trust.keyless.identities:
        raise InputError(where, "a keyless (Sigstore) VEX bundle needs keyless identities in the trust policy "
                                "(spec.keyless; `agentfactory trust init --keyless-identity ISSUER=SUBJECT`)")
    verified = verify_dsse_bundle(data, trust.keyless, where=where)
    if isinstance(verified, str):
        raise InputError(where, f"the VEX bundle is not trusted: {verified}")
    if verified.payload_type != INTOTO_PAYLOAD_TYPE:
        raise InputError(where, f"payloadType {verified.payload_type!r} is not an in-toto statement")
    statement = parse_statement(verified.payload, where)
    _check_predicate_type(statement.predicate_type, where)
    return _statements_of(statement.predicate, where), f"{verified.identity.subject} ({verified.identity.issuer})"


def _check_predicate_type(predicate_type: str, where: str) -> None:
    if not predicate_type.startswith(("https://openvex.dev/ns", "https://cyclonedx.org/vex")):
        raise InputError(where, f"the signed statement's predicateType {predicate_type!r} is not OpenVEX or "
                                "CycloneDX VEX")


def vex_statement(data: bytes, where: str) -> bytes:
    """The in-toto statement a signed VEX document is: the document as predicate, checked first."""
    statements = parse_vex(data, where)
    if not statements:
        raise InputError(where, "the VEX document has no statements")
    doc = json.loads(data)
    predicate_type = OPENVEX_PREDICATE if "@context" in doc else "https://cyclonedx.org/vex"
    name = str(doc.get("@id") or doc.get("serialNumber") or Path(where).name)
    return make_statement(name, "sha256:" + hashlib.sha256(canonical_json(doc)).hexdigest(), predicate_type, doc)


def sign_vex(data: bytes, where: str, provider: KeyProvider) -> bytes:
    """A DSSE envelope of an in-toto statement whose predicate is the VEX document (checked first)."""
    return sign_envelope(INTOTO_PAYLOAD_TYPE, vex_statement(data, where), provider).to_json()
