"""The artifact-store port: content-addressed blobs, manifests, and human tags.

Backends implement a handful of primitives; resolving references and pushing or fetching
agents is written once here, on top of them, so every backend behaves the same. Everything
that decides uses digests; tags (`name:version`) are for humans.
"""

from __future__ import annotations

import abc
import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..artifact import (
    ANN_AGENT,
    ANN_ARTIFACT_DIGEST,
    ANN_VERSION,
    INDEX_MEDIA_TYPE,
    MANIFEST_MEDIA_TYPE,
    MAX_MANIFEST_BYTES,
    AgentArtifact,
    AgentManifest,
    Blob,
    canonical_json,
    parse_agent_manifest,
)
from ..digest import DIGEST_RE, digest_of
from ..errors import InputError, NotFoundError, StoreError
from ..semver import sort_key

MAX_WASM_BYTES = 64 * 1024 * 1024
MAX_EVIDENCE_BYTES = 32 * 1024 * 1024
MAX_REFERRERS = 1000
EMPTY_CONFIG = Blob("application/vnd.oci.empty.v1+json", b"{}")


@dataclass(frozen=True)
class Referrer:
    """An artifact attached to a subject manifest (a signature, an attestation)."""

    digest: str  # the referrer's manifest digest
    artifact_type: str
    annotations: dict[str, str] = field(default_factory=dict)


def referrers_tag(subject_digest: str) -> str:
    """The OCI 1.1 referrers tag schema: `sha256-<hex>` names an index of the subject's referrers."""
    return subject_digest.replace(":", "-")


@dataclass(frozen=True)
class IndexEntry:
    """One agent manifest the store holds, with its tag when it has one."""

    manifest_digest: str
    name: str
    version: str
    artifact_digest: str
    tag: str | None


@dataclass(frozen=True)
class StoredAgent:
    """What `store ls` shows and what `resolve` returns."""

    name: str
    version: str
    digest: str  # sha256 of the wasm bytes: the artifact's identity
    manifest_digest: str
    size: int
    tag: str | None

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}@{self.digest}"


class ArtifactStore(abc.ABC):
    """A place agents and their evidence live, addressed by digest."""

    url: str

    # -- primitives each backend provides -------------------------------------------------
    @abc.abstractmethod
    def put_blob(self, data: bytes, digest: str) -> None:
        """Store `data` under `digest` (verified) atomically; a no-op when present."""

    @abc.abstractmethod
    def get_blob(self, digest: str, max_bytes: int) -> bytes:
        """Bytes of `digest`, verified against it, refused past `max_bytes`."""

    @abc.abstractmethod
    def has_blob(self, digest: str) -> bool: ...

    @abc.abstractmethod
    def put_manifest(self, data: bytes, digest: str, *, media_type: str, tag: str | None,
                     annotations: dict[str, str]) -> None:
        """Store a manifest (or index) and record it, moving `tag` to it when given."""

    @abc.abstractmethod
    def resolve_tag(self, tag: str) -> str | None:
        """The manifest digest a tag names, or None."""

    @abc.abstractmethod
    def entries(self) -> list[IndexEntry]:
        """Every agent manifest in the store."""

    @contextlib.contextmanager
    def _referrers_lock(self) -> Iterator[None]:
        """Serialises updates of a referrers index; backends that can lock override this."""
        yield

    # -- agent operations, shared by every backend ------------------------------------------
    def push_agent(self, artifact: AgentArtifact, *, name: str, version: str) -> StoredAgent:
        """Publish an agent (config, layer, manifest) and tag it `name:version`. Idempotent."""
        for blob in (artifact.layer, artifact.config):
            self.put_blob(blob.data, blob.digest)
        self.put_manifest(artifact.manifest.data, artifact.manifest.digest,
                          media_type=artifact.manifest.media_type, tag=f"{name}:{version}",
                          annotations={ANN_AGENT: name, ANN_VERSION: version, ANN_ARTIFACT_DIGEST: artifact.digest})
        return StoredAgent(name=name, version=version, digest=artifact.digest,
                           manifest_digest=artifact.manifest.digest, size=len(artifact.layer.data),
                           tag=f"{name}:{version}")

    def manifest(self, manifest_digest: str) -> AgentManifest:
        data = self.get_blob(manifest_digest, 4 * 1024 * 1024)
        return parse_agent_manifest(data, manifest_digest, f"{self.url}@{manifest_digest}")

    def list_agents(self) -> list[StoredAgent]:
        """Every agent, sorted by name then version (newest last)."""
        agents = []
        for e in self.entries():
            m = self.manifest(e.manifest_digest)
            agents.append(StoredAgent(name=m.name, version=m.version, digest=m.layer_digest,
                                      manifest_digest=e.manifest_digest, size=m.layer_size, tag=e.tag))
        agents.sort(key=lambda a: (a.name, sort_key(a.version), a.digest))
        return agents

    def resolve(self, ref: str) -> StoredAgent:
        """Find an agent by `sha256:…` (wasm or manifest digest), `name@sha256:…`,
        `name:version`, or `name` (its highest semantic version)."""
        name, _, pinned = ref.partition("@")
        if DIGEST_RE.match(name):
            name, pinned = "", name
        if pinned and not DIGEST_RE.match(pinned):
            raise InputError(ref, "digest must be sha256:<64 lower-case hex>")
        entries = self.entries()
        if pinned:
            matches = [e for e in entries if pinned in (e.artifact_digest, e.manifest_digest)
                       and (not name or e.name == name.split(":")[0])]
        elif ":" in name:
            matches = [e for e in entries if e.tag == name]
        else:
            matches = [e for e in entries if e.name == name and e.tag]
            matches.sort(key=lambda e: sort_key(e.version))
            matches = matches[-1:]
        if not matches:
            raise NotFoundError(f"{ref}: no such agent in {self.url} (try `agentfactory store ls`)")
        e = matches[-1]
        m = self.manifest(e.manifest_digest)
        if m.layer_digest != e.artifact_digest:
            raise StoreError(f"{self.url}: index says {e.manifest_digest} holds {e.artifact_digest} "
                             f"but its manifest names {m.layer_digest}: the store is corrupt")
        return StoredAgent(name=m.name, version=m.version, digest=m.layer_digest,
                           manifest_digest=e.manifest_digest, size=m.layer_size, tag=e.tag)

    def fetch_wasm(self, ref: str) -> tuple[StoredAgent, bytes]:
        """Resolve `ref` and return the module bytes, verified against their digest."""
        agent = self.resolve(ref)
        if agent.size > MAX_WASM_BYTES:
            raise StoreError(f"{agent.ref}: module is {agent.size} bytes; the limit is {MAX_WASM_BYTES}")
        return agent, self.get_blob(agent.digest, MAX_WASM_BYTES)

    def has_agent(self, artifact_digest: str) -> bool:
        """True when a manifest for this wasm digest is indexed and its bytes are present."""
        return any(e.artifact_digest == artifact_digest for e in self.entries()) \
            and self.has_blob(artifact_digest)

    # -- evidence: artifacts whose subject is an agent manifest ----------------------------------
    def attach(self, subject_digest: str, *, artifact_type: str, layer: Blob,
               annotations: dict[str, str] | None = None) -> str:
        """Store `layer` as an OCI artifact referring to `subject_digest`; returns its manifest digest."""
        subject = self.get_blob(subject_digest, MAX_MANIFEST_BYTES)
        subject_media = json.loads(subject).get("mediaType", MANIFEST_MEDIA_TYPE)
        self.put_blob(layer.data, layer.digest)
        self.put_blob(EMPTY_CONFIG.data, EMPTY_CONFIG.digest)
        manifest: dict[str, Any] = {
            "schemaVersion": 2, "mediaType": MANIFEST_MEDIA_TYPE, "artifactType": artifact_type,
            "config": EMPTY_CONFIG.descriptor(), "layers": [layer.descriptor()],
            "subject": {"mediaType": subject_media, "digest": subject_digest, "size": len(subject)},
        }
        if annotations:
            manifest["annotations"] = annotations
        data = canonical_json(manifest)
        digest = digest_of(data)
        self.put_manifest(data, digest, media_type=MANIFEST_MEDIA_TYPE, tag=None, annotations={})
        descriptor = {"mediaType": MANIFEST_MEDIA_TYPE, "digest": digest, "size": len(data),
                      "artifactType": artifact_type, **({"annotations": annotations} if annotations else {})}
        with self._referrers_lock():
            index = self._referrers_index(subject_digest)
            if not any(m.get("digest") == digest for m in index["manifests"]):
                index["manifests"].append(descriptor)
                index_data = canonical_json(index)
                self.put_manifest(index_data, digest_of(index_data), media_type=INDEX_MEDIA_TYPE,
                                  tag=referrers_tag(subject_digest), annotations={})
        return digest

    def _referrers_index(self, subject_digest: str) -> dict[str, Any]:
        tagged = self.resolve_tag(referrers_tag(subject_digest))
        if tagged is None:
            return {"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": []}
        where = f"{self.url}: referrers of {subject_digest}"
        try:
            index = json.loads(self.get_blob(tagged, MAX_MANIFEST_BYTES))
        except ValueError:
            raise StoreError(f"{where}: the referrers index is not JSON") from None
        if not isinstance(index, dict) or index.get("mediaType") != INDEX_MEDIA_TYPE \
                or not isinstance(index.get("manifests"), list):
            raise StoreError(f"{where}: the referrers tag does not name an OCI image index")
        if len(index["manifests"]) > MAX_REFERRERS:
            raise StoreError(f"{where}: more than {MAX_REFERRERS} referrers")
        return index

    def referrers(self, subject_digest: str, artifact_type: str | None = None) -> list[Referrer]:
        """Artifacts attached to `subject_digest`, optionally of one type."""
        out = []
        for m in self._referrers_index(subject_digest)["manifests"]:
            if not isinstance(m, dict) or not DIGEST_RE.match(str(m.get("digest"))):
                raise StoreError(f"{self.url}: malformed entry in the referrers of {subject_digest}")
            if artifact_type is None or m.get("artifactType") == artifact_type:
                raw = m.get("annotations")
                ann: dict[str, str] = {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}
                out.append(Referrer(m["digest"], str(m.get("artifactType", "")), ann))
        return out

    def referrer_payload(self, subject_digest: str, referrer: Referrer) -> bytes:
        """The single layer of a referrer, after checking that it really refers to `subject_digest`."""
        where = f"{self.url}@{referrer.digest}"
        try:
            doc = json.loads(self.get_blob(referrer.digest, MAX_MANIFEST_BYTES))
            subject = doc["subject"]["digest"]
            (layer,) = doc["layers"]
            layer_digest, size = layer["digest"], layer["size"]
        except (ValueError, KeyError, TypeError):
            raise StoreError(f"{where}: not an artifact manifest with a subject and one layer") from None
        if subject != subject_digest:
            raise StoreError(f"{where}: listed as a referrer of {subject_digest} but its subject is {subject}")
        if not isinstance(size, int) or size > MAX_EVIDENCE_BYTES:
            raise StoreError(f"{where}: evidence layer larger than {MAX_EVIDENCE_BYTES} bytes")
        return self.get_blob(str(layer_digest), MAX_EVIDENCE_BYTES)
