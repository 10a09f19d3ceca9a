"""Trust policies: which keys, keyless identities, builders, source repositories and transparency logs the
verifier trusts.

A policy file is YAML (bounded, validated); a policy that does not load refuses everything
(the verifier reports why). Without a file, the embedded default trusts the configured key
provider's keys, the local pipeline builder and any repository — fine on a laptop, and what
`agentfactory trust init` writes down as a starting point for production.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from .errors import InputError, ValidationFailed
from .keys.base import PublicKey, key_id
from .provenance import DEFAULT_BUILDER_ID
from .sigstore_bundles import INSTANCES, MAX_TRUSTED_ROOT_BYTES, KeylessIdentity, KeylessPolicy, check_trusted_root
from .tlog.note import load_log_public_key, log_id_of
from .yamlsafe import Located, load_yaml

MAX_POLICY_BYTES = 1024 * 1024
POLICY_SCHEMA: dict[str, Any] = {
    "$defs": {"key": {
        "type": "object",
        "additionalProperties": False,
        "properties": {
            "keyId": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
            "name": {"type": "string"},
            "publicKey": {"type": "string", "maxLength": 16384},
            "publicKeyFile": {"type": "string"},
            "revoked": {"type": "boolean"},
        },
        "oneOf": [{"required": ["publicKey"]}, {"required": ["publicKeyFile"]}],
    }},
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "spec"],
    "properties": {
        "apiVersion": {"const": "agentfactory.dev/v1alpha1"},
        "kind": {"const": "TrustPolicy"},
        "metadata": {"type": "object"},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["keys"],
            "properties": {
                "keys": {"type": "array", "maxItems": 256, "items": {"$ref": "#/$defs/key"}},
                # Who may promote (sign promotion attestations, docs/promotion.md): never a build key.
                "promoters": {"type": "array", "maxItems": 64, "items": {"$ref": "#/$defs/key"}},
                # The environment whose promotions count here (docs/promotion.md): promote writes it into
                # every attestation it signs, and a promotion made for another environment proves nothing.
                "environment": {"type": "string", "pattern": "^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$"},
                "builders": {"type": "array", "items": {"type": "string", "minLength": 1}},
                "repositories": {"type": "array", "items": {"type": "string", "minLength": 1}},
                "transparencyLogs": {"type": "array", "maxItems": 16, "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "logId": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                        "name": {"type": "string"},
                        "publicKey": {"type": "string", "maxLength": 16384},
                        "publicKeyFile": {"type": "string"},
                        # where the verifier asks for logged scans the store no longer holds
                        "url": {"type": "string", "pattern": "^https?://[^\\s]+$", "maxLength": 2048},
                        # our own witness: records must be consistent with the monitor's latest checkpoint
                        "witnessStateFile": {"type": "string", "minLength": 1},
                    },
                    "oneOf": [{"required": ["publicKey"]}, {"required": ["publicKeyFile"]}],
                }},
                # Keyless (Sigstore) signatures: whose certificates are trusted, by which instance's roots.
                "keyless": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["identities"],
                    "properties": {
                        "instance": {"enum": list(INSTANCES)},
                        "trustedRootFile": {"type": "string", "minLength": 1},
                        "identities": {"type": "array", "minItems": 1, "maxItems": 64, "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["issuer", "subject"],
                            "properties": {
                                "issuer": {"type": "string", "pattern": "^https://[^\\s]+$", "maxLength": 1024},
                                "subject": {"type": "string", "pattern": "^[^\\s]+$", "maxLength": 2048},
                            },
                        }},
                    },
                },
            },
        },
    },
}


@dataclass(frozen=True)
class TrustedKey:
    key_id: str
    public_key: rsa.RSAPublicKey
    revoked: bool = False
    name: str = ""


@dataclass(frozen=True)
class TrustPolicy:
    keys: dict[str, TrustedKey]
    builders: tuple[str, ...] = (DEFAULT_BUILDER_ID,)
    repositories: tuple[str, ...] = ("*",)
    source: str = "embedded default"
    fingerprint: str = field(default="", compare=False)
    # Transparency logs (log id -> ECDSA P-256 key): when any is listed, the verifier requires every
    # signature and attestation to be in one of them (the `tlog` check); none listed, no such check.
    logs: dict[str, ec.EllipticCurvePublicKey] = field(default_factory=dict)
    # Keyless (Sigstore) identities whose bundles count as signatures and attestations; none listed
    # (the default, and every policy written before keyless signing), bundles are not trusted.
    keyless: KeylessPolicy = field(default_factory=KeylessPolicy)
    # Promoter keys: only their signatures prove a promotion (docs/promotion.md). Disjoint from `keys`,
    # so a build key alone can never promote.
    promoters: dict[str, TrustedKey] = field(default_factory=dict)
    # Log id -> the log's URL, when the policy gives one: the verifier then also asks the log for
    # logged scan attestations the store no longer holds (agentfactory/scan/logged.py).
    log_urls: dict[str, str] = field(default_factory=dict)
    # Log id -> the state file of `agentfactory audit monitor` (a witness of our own): when given, a
    # record counts only if its checkpoint is part of the history the monitor verified.
    witnesses: dict[str, Path] = field(default_factory=dict)
    # The environment whose promotions count ("": any, as before environments were named): promote signs it
    # into each promotion, and the verifier counts only promotions made for it (docs/promotion.md).
    environment: str = ""

    def trusts_builder(self, builder: str) -> bool:
        return builder in self.builders

    def trusts_repository(self, repository: str | None) -> bool:
        return any(fnmatch.fnmatchcase(repository or "", pattern) for pattern in self.repositories)


def load_public_key(pem: bytes, where: str) -> rsa.RSAPublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError):
        raise InputError(where, "not a PEM SubjectPublicKeyInfo public key") from None
    if not isinstance(key, rsa.RSAPublicKey) or key.key_size < 2048:
        raise InputError(where, "only RSA keys of at least 2048 bits are accepted")
    return key


def from_public_keys(keys: list[PublicKey], *, builders: tuple[str, ...] = (DEFAULT_BUILDER_ID,),
                     repositories: tuple[str, ...] = ("*",), source: str = "embedded default",
                     log_keys: list[bytes] | None = None, keyless: KeylessPolicy | None = None,
                     promoters: list[PublicKey] | None = None) -> TrustPolicy:
    """A policy trusting `keys` (the transparency logs whose PEM public keys are `log_keys`, the
    keyless identities of `keyless`, and the promoter keys `promoters`, which may not be build keys)."""
    trusted = _trusted(keys)
    promoting = _trusted(promoters or [])
    both = sorted(set(trusted) & set(promoting))
    if both:
        raise InputError(source, f"key {both[0][:16]}… is both a build key and a promoter: a build key alone "
                                 "must not be able to promote (use a separate promoter key)")
    return TrustPolicy(trusted, builders, repositories, source, logs=trusted_logs(log_keys or []),
                       keyless=keyless or KeylessPolicy(), promoters=promoting)


def _trusted(keys: list[PublicKey]) -> dict[str, TrustedKey]:
    return {k.key_id: TrustedKey(k.key_id, load_public_key(k.pem, f"{k.provider} key {k.key_id}"),
                                 revoked=k.status == "revoked", name=k.name) for k in keys}


def trusted_logs(pems: list[bytes], where: str = "transparency log key") -> dict[str, ec.EllipticCurvePublicKey]:
    """Log public keys by their Rekor log id."""
    logs = {}
    for pem in pems:
        key = load_log_public_key(pem, where)
        logs[log_id_of(key)] = key
    return logs


def load_trust_policy(path: Path) -> TrustPolicy:
    """Read a TrustPolicy file; raise ValidationFailed naming the file, line and field."""
    where = str(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ValidationFailed([InputError(where, f"cannot read the trust policy ({exc.strerror})")]) from None
    if size > MAX_POLICY_BYTES:
        raise ValidationFailed([InputError(where, f"trust policy is {size} bytes; the limit is {MAX_POLICY_BYTES}")])
    try:
        doc = load_yaml(path.read_bytes(), where)
    except InputError as exc:
        raise ValidationFailed([exc]) from None
    import jsonschema  # here, not at the top: ~60 ms of every `verify` that reads no trust-policy file

    problems = [InputError(f"{where}:{doc.line_of(tuple(e.absolute_path))}",
                           f"{'.'.join(map(str, e.absolute_path)) or '(document)'}: {e.message}")
                for e in jsonschema.Draft202012Validator(POLICY_SCHEMA).iter_errors(doc.data)]
    if problems:
        raise ValidationFailed(problems)
    spec = doc.data["spec"]
    seen: dict[str, str] = {}  # key id -> the entry that listed it first
    keys = _load_keys(path, doc, "keys", spec["keys"], seen, problems)
    promoters = _load_keys(path, doc, "promoters", spec.get("promoters", []), seen, problems)
    log_urls: dict[str, str] = {}
    witnesses: dict[str, Path] = {}
    logs = _load_logs(path, doc, spec.get("transparencyLogs", []), problems, log_urls, witnesses)
    keyless = _load_keyless(path, doc, spec.get("keyless"), problems)
    if problems:
        raise ValidationFailed(problems)
    return TrustPolicy(keys, tuple(spec.get("builders", [DEFAULT_BUILDER_ID])),
                       tuple(spec.get("repositories", ["*"])), source=where, logs=logs, keyless=keyless,
                       promoters=promoters, log_urls=log_urls, witnesses=witnesses,
                       environment=str(spec.get("environment", "")))


def _load_keys(path: Path, doc: Located, section: str, entries: list[dict[str, Any]], seen: dict[str, str],
               problems: list[InputError]) -> dict[str, TrustedKey]:
    """`spec.keys` or `spec.promoters`. A key listed twice (in one section or in both) is refused, naming
    both entries: which entry would win (revoked or not, build key or promoter) must never be a guess."""
    keys: dict[str, TrustedKey] = {}
    for i, k in enumerate(entries):
        entry = f"spec.{section}[{i}] (line {doc.line_of(('spec', section, i))})"
        loc = f"{path}:{doc.line_of(('spec', section, i))}"
        public = _read_key(path, k, loc, load_public_key, problems)
        if public is None:
            continue
        kid = key_id(public)
        if k.get("keyId") and k["keyId"] != kid:
            problems.append(InputError(loc, f"keyId {k['keyId']} does not match the public key (its id is {kid})"))
            continue
        if kid in seen:
            problems.append(InputError(loc, f"{entry} lists key {kid[:16]}…, already listed by {seen[kid]}: list each "
                                            "key once (revoked: true to revoke it; a build key may not also be a "
                                            "promoter)"))
            continue
        seen[kid] = entry
        keys[kid] = TrustedKey(kid, public, revoked=bool(k.get("revoked", False)), name=str(k.get("name", "")))
    return keys


def _pem_of(policy_path: Path, entry: dict[str, Any]) -> bytes:
    """An entry's PEM: `publicKey` inline, or `publicKeyFile` relative to the policy file (OSError if unreadable)."""
    if "publicKeyFile" in entry:
        return (policy_path.parent / str(entry["publicKeyFile"])).read_bytes()[:16384]
    return str(entry["publicKey"]).encode()


K = TypeVar("K")


def _read_key(path: Path, entry: dict[str, Any], loc: str, load: Callable[[bytes, str], K],
              problems: list[InputError]) -> K | None:
    """The entry's key through `load`, or None with the problem recorded (an unreadable file, a bad key)."""
    try:
        return load(_pem_of(path, entry), loc)
    except OSError as exc:
        problems.append(InputError(loc, f"publicKeyFile: {exc.strerror}"))
    except InputError as exc:
        problems.append(exc)
    return None


def _load_logs(path: Path, doc: Located, entries: list[dict[str, Any]], problems: list[InputError],
               urls: dict[str, str], witnesses: dict[str, Path]) -> dict[str, ec.EllipticCurvePublicKey]:
    logs: dict[str, ec.EllipticCurvePublicKey] = {}
    for i, entry in enumerate(entries):
        loc = f"{path}:{doc.line_of(('spec', 'transparencyLogs', i))}"
        key = _read_key(path, entry, loc, load_log_public_key, problems)
        if key is None:
            continue
        log_id = log_id_of(key)
        if entry.get("logId") and entry["logId"] != log_id:
            problems.append(InputError(loc, f"logId {entry['logId']} does not match the public key "
                                            f"(its id is {log_id})"))
            continue
        logs[log_id] = key
        if entry.get("url"):
            urls[log_id] = str(entry["url"])
        if entry.get("witnessStateFile"):
            witnesses[log_id] = path.parent / str(entry["witnessStateFile"])
    return logs


def _load_keyless(path: Path, doc: Located, section: dict[str, Any] | None,
                  problems: list[InputError]) -> KeylessPolicy:
    """The `keyless` section (already schema-checked): identities, instance and a pinned trusted root."""
    if section is None:
        return KeylessPolicy()
    for i, entry in enumerate(section["identities"]):
        if "*" in entry["subject"]:
            problems.append(InputError(f"{path}:{doc.line_of(('spec', 'keyless', 'identities', i, 'subject'))}",
                                       f"spec.keyless.identities.{i}.subject: {entry['subject']!r}: subjects are "
                                       "matched exactly (sigstore-python has no patterns); list each workflow ref"))
    identities = tuple(dict.fromkeys(KeylessIdentity(str(i["issuer"]), str(i["subject"]))
                                     for i in section["identities"]))
    instance = section.get("instance", "production")
    root: bytes | None = None
    source = ""
    if "trustedRootFile" in section:
        loc = f"{path}:{doc.line_of(('spec', 'keyless', 'trustedRootFile'))}"
        root_path = path.parent / str(section["trustedRootFile"])
        try:
            with root_path.open("rb") as f:
                root = f.read(MAX_TRUSTED_ROOT_BYTES + 1)
        except OSError as exc:
            problems.append(InputError(loc, f"spec.keyless.trustedRootFile: {root_path}: {exc.strerror}"))
            return KeylessPolicy()
        problem = check_trusted_root(root, f"spec.keyless.trustedRootFile {root_path}")
        if problem is not None:
            problems.append(InputError(loc, problem))
            return KeylessPolicy()
        source = f"the trusted root {root_path}"
    return KeylessPolicy(identities, instance, root, source)


def to_yaml(keys: list[PublicKey], builders: tuple[str, ...] = (DEFAULT_BUILDER_ID,),
            repositories: tuple[str, ...] = ("*",), log_keys: list[bytes] | None = None,
            keyless: KeylessPolicy | None = None, promoters: list[PublicKey] | None = None) -> str:
    """A policy file trusting `keys` (revoked ones listed as revoked), the promoter keys `promoters`, the
    logs of `log_keys` (PEM) and the keyless identities of `keyless` (a pinned trusted root is not
    written: add trustedRootFile)."""
    def entries(of: list[PublicKey]) -> list[dict[str, Any]]:
        return [{"keyId": k.key_id, "name": f"{k.provider}:{k.name}" + (f"@v{k.version}" if k.version else ""),
                 "revoked": k.status == "revoked", "publicKey": k.pem.decode()} for k in of]

    spec: dict[str, Any] = {"keys": entries(keys)}
    if promoters:
        spec["promoters"] = entries(promoters)
    spec.update({"builders": list(builders), "repositories": list(repositories)})
    if log_keys:
        spec["transparencyLogs"] = [{"logId": log_id, "publicKey": _pem(key)}
                                    for log_id, key in trusted_logs(log_keys).items()]
    if keyless is not None and keyless.identities:
        spec["keyless"] = {"instance": keyless.instance,
                           "identities": [{"issuer": i.issuer, "subject": i.subject} for i in keyless.identities]}
    doc = {"apiVersion": "agentfactory.dev/v1alpha1", "kind": "TrustPolicy", "metadata": {"name": "default"},
           "spec": spec}
    return yaml.safe_dump(doc, sort_keys=False, width=1000)


def _pem(key: ec.EllipticCurvePublicKey) -> str:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
