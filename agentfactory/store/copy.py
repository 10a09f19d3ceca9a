"""Copy agents and all their evidence between stores (`agentfactory store copy`).

Every step is idempotent, so an interrupted copy is resumed by running it again: blobs the
destination already has are skipped, manifests are put by digest. Every byte read is checked
against its digest before it is written, and the copy is checked by resolving it back.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from ..artifact import ANN_AGENT, ANN_ARTIFACT_DIGEST, ANN_VERSION, MANIFEST_MEDIA_TYPE
from ..errors import StoreError
from .base import MAX_EVIDENCE_BYTES, MAX_WASM_BYTES, ArtifactStore, StoredAgent


@dataclass
class CopyReport:
    agent: str
    digest: str
    blobs_copied: int = 0
    blobs_present: int = 0
    referrers: int = 0
    errors: list[str] = field(default_factory=list)


def _copy_blobs(src: ArtifactStore, dst: ArtifactStore, name: str, manifest: bytes, limit: int,
                report: CopyReport) -> None:
    doc = json.loads(manifest)
    for desc in [doc.get("config"), *doc.get("layers", [])]:
        if not isinstance(desc, dict):
            raise StoreError(f"{src.url}: malformed descriptor in a manifest of {name!r}")
        digest = str(desc.get("digest"))
        if dst.has_blob(digest, name=name):
            report.blobs_present += 1
            continue
        dst.put_blob(src.get_blob(digest, limit, name=name), digest, name=name)
        report.blobs_copied += 1


def copy_agent(src: ArtifactStore, dst: ArtifactStore, agent: StoredAgent) -> CopyReport:
    """Copy one agent version (config, module, manifest, tag) and every referrer of it."""
    report = CopyReport(agent=agent.ref, digest=agent.digest)
    found = src.get_manifest(agent.manifest_digest, name=agent.name)
    if found is None:
        raise StoreError(f"{src.url}: manifest of {agent.ref} disappeared during the copy")
    manifest = found[1]
    _copy_blobs(src, dst, agent.name, manifest, MAX_WASM_BYTES, report)
    dst.put_manifest(manifest, agent.manifest_digest, name=agent.name, media_type=MANIFEST_MEDIA_TYPE,
                     tag=dst.tag_for(agent.name, agent.version),
                     annotations={ANN_AGENT: agent.name, ANN_VERSION: agent.version, ANN_ARTIFACT_DIGEST: agent.digest})
    copied = dst.resolve(f"{agent.name}@{agent.digest}")
    if copied.manifest_digest != agent.manifest_digest:
        raise StoreError(f"{dst.url}: {agent.ref} resolves to manifest {copied.manifest_digest} after the copy, "
                         f"not {agent.manifest_digest}")
    for ref in src.referrers(agent):
        found = src.get_manifest(ref.digest, name=agent.name)
        if found is None:
            report.errors.append(f"{src.url}: referrer {ref.digest} of {agent.ref} is listed but missing")
            continue
        _copy_blobs(src, dst, agent.name, found[1], MAX_EVIDENCE_BYTES, report)
        dst.add_referrer(copied, found[1])
        report.referrers += 1
    return report
