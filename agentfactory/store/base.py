"""The artifact-store port: content-addressed blobs and manifests, human tags, and referrers.

Backends implement a handful of primitives; pushing agents, resolving references, fetching
verified bytes and attaching evidence are written once here, so every backend behaves the same.
Every primitive takes the agent's name: a registry keeps each agent in a repository of its own
(`<prefix>/<name>`), while an OCI layout folder holds them all and ignores it. Everything that
decides uses digests; tags are for humans.
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
    AgentArtifact,
    AgentManifest,
    Blob,
    canonical_json,
    parse_agent_manifest,
)
from ..digest import DIGEST_RE, digest_of
from ..errors import InputError, NotFoundError, StoreError
from ..semver import is_semver, sort_key

MAX_WASM_BYTES = 64 * 1024 * 1024
MAX_EVIDENCE_BYTES = 32 * 1024 * 1024
MAX_REFERRERS = 1000
EMPTY_CONFIG = Blob("application/vnd.oci.empty.v1+json", b"{}")


class MislabelledAgent(StoreError):
    """The store lists a manifest under a name or version its own manifest does not carry (a re-tag)."""


class AmbiguousReference(InputError):
    """A reference that names more than one published agent version; the message says how to pick one."""


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
    def tag_for(self, name: str, version: str) -> str:
        """The human tag of an agent version in this backend."""

    @abc.abstractmethod
    def put_blob(self, data: bytes, digest: str, *, name: str) -> None:
        """Store `data` under `digest` (verified); a no-op when present."""

    @abc.abstractmethod
    def get_blob(self, digest: str, max_bytes: int, *, name: str) -> bytes:
        """Bytes of `digest`, verified against it, refused past `max_bytes`."""

    @abc.abstractmethod
    def has_blob(self, digest: str, *, name: str) -> bool: ...

    @abc.abstractmethod
    def put_manifest(self, data: bytes, digest: str, *, name: str, media_type: str, tag: str | None,
                     annotations: dict[str, str]) -> None:
        """Store a manifest (or index), moving `tag` to it when given."""

    @abc.abstractmethod
    def get_manifest(self, reference: str, *, name: str) -> tuple[str, bytes] | None:
        """(digest, bytes) of the manifest a tag or digest names, verified and bounded; None if absent."""

    @abc.abstractmethod
    def entries(self, name: str | None = None) -> list[IndexEntry]:
        """Every agent manifest in the store, or those of one agent."""

    @contextlib.contextmanager
    def _referrers_lock(self) -> Iterator[None]:
        """Serialises updates of a referrers index; backends that can lock override this."""
        yield

    # -- agent operations, shared by every backend ------------------------------------------
    def push_agent(self, artifact: AgentArtifact, *, name: str, version: str) -> StoredAgent:
        """Publish an agent (config, layer, manifest) and tag it. Idempotent."""
        for blob in (artifact.layer, artifact.config):
            self.put_blob(blob.data, blob.digest, name=name)
        tag = self.tag_for(name, version)
        self.put_manifest(artifact.manifest.data, artifact.manifest.digest, name=name,
                          media_type=artifact.manifest.media_type, tag=tag,
                          annotations={ANN_AGENT: name, ANN_VERSION: version, ANN_ARTIFACT_DIGEST: artifact.digest})
        return StoredAgent(name=name, version=version, digest=artifact.digest,
                           manifest_digest=artifact.manifest.digest, size=len(artifact.layer.data), tag=tag)

    def manifest(self, manifest_digest: str, *, name: str) -> AgentManifest:
        found = self.get_manifest(manifest_digest, name=name)
        if found is None:
            raise NotFoundError(f"{self.url}: manifest {manifest_digest} of {name!r} not found")
        return parse_agent_manifest(found[1], manifest_digest, f"{self.url}@{manifest_digest}")

    def _agent(self, e: IndexEntry) -> StoredAgent:
        m = self.manifest(e.manifest_digest, name=e.name)
        if m.layer_digest != e.artifact_digest:
            raise StoreError(f"{self.url}: {e.manifest_digest} is listed as {e.artifact_digest} but its manifest "
                             f"names {m.layer_digest}: the store is corrupt")
        if m.name != e.name:
            raise StoreError(f"{self.url}: {e.manifest_digest} is listed as {e.name!r} but its manifest says "
                             f"{m.name!r}: the store is corrupt")
        if e.version and e.version != m.version:
            raise MislabelledAgent(f"{self.url}: {e.manifest_digest} is listed as {e.name} {e.version!r} but its "
                                   f"manifest says version {m.version!r}: a re-tagged agent; refusing it")
        return StoredAgent(name=m.name, version=m.version, digest=m.layer_digest,
                           manifest_digest=e.manifest_digest, size=m.layer_size, tag=e.tag)

    def list_agents(self) -> list[StoredAgent]:
        """Every agent, sorted by name then version (newest last)."""
        agents = [self._agent(e) for e in self.entries()]
        agents.sort(key=lambda a: (a.name, sort_key(a.version), a.digest))
        return agents

    def resolve(self, ref: str) -> StoredAgent:
        """Find an agent by `sha256:…` (wasm or manifest digest), `name@sha256:…`,
        `name:version`, or `name` (its highest semantic version).

        A version must be semver. A wasm digest that several published versions share (identical bytes,
        different templates) is ambiguous: refused, naming the `name:version` references to use. What is
        returned carries the name and version of its own manifest, which must be those asked for; the
        verifier then binds them to the signed provenance (docs/evidence.md)."""
        name, _, pinned = ref.partition("@")
        if DIGEST_RE.match(name):
            name, pinned = "", name
        if pinned and not DIGEST_RE.match(pinned):
            raise InputError(ref, "digest must be sha256:<64 lower-case hex>")
        agent_name, _, version = name.partition(":")
        if version and not is_semver(version):
            raise InputError(ref, f"version {version[:64]!r} is not a semantic version (MAJOR.MINOR.PATCH)")
        entries = self.entries(agent_name or None)
        if pinned:
            matches = [e for e in entries if pinned in (e.artifact_digest, e.manifest_digest)
                       and (not agent_name or e.name == agent_name)]
            labels = sorted({f"{e.name}:{e.version}" for e in matches})
            if len({e.manifest_digest for e in matches}) > 1 and len(labels) > 1:
                raise AmbiguousReference(ref, f"published as {len(labels)} agent versions built to "
                                              f"identical bytes ({', '.join(labels)}), whose run contracts may "
                                              f"differ: ask for one by name:version ({' or '.join(labels)})")
        elif version:
            matches = [e for e in entries if e.name == agent_name and e.version == version and e.tag]
        else:
            matches = sorted((e for e in entries if e.name == agent_name and e.tag), key=lambda e: sort_key(e.version))
            matches = matches[-1:]
        if not matches:
            raise NotFoundError(f"{ref}: no such agent in {self.url} (try `agentfactory store ls`)")
        agent = self._agent(matches[-1])
        if version and agent.version != version:
            raise MislabelledAgent(f"{self.url}: {ref} is listed for the manifest {agent.manifest_digest}, which says "
                             f"version {agent.version!r}: a re-tagged agent; refusing it")
        return agent

    def fetch_wasm(self, ref: str) -> tuple[StoredAgent, bytes]:
        """Resolve `ref` and return the module bytes, verified against their digest."""
        agent = self.resolve(ref)
        if agent.size > MAX_WASM_BYTES:
            raise StoreError(f"{agent.ref}: module is {agent.size} bytes; the limit is {MAX_WASM_BYTES}")
        return agent, self.get_blob(agent.digest, MAX_WASM_BYTES, name=agent.name)

    def has_agent(self, name: str, artifact_digest: str) -> bool:
        """True when a manifest for this wasm digest is listed and its bytes are present."""
        return any(e.artifact_digest == artifact_digest for e in self.entries(name)) \
            and self.has_blob(artifact_digest, name=name)

    # -- evidence: artifacts whose subject is an agent manifest ----------------------------------
    def attach(self, agent: StoredAgent, *, artifact_type: str, layer: Blob,
               annotations: dict[str, str] | None = None) -> str:
        """Store `layer` as an OCI artifact referring to the agent's manifest; returns its manifest digest."""
        name, subject_digest = agent.name, agent.manifest_digest
        found = self.get_manifest(subject_digest, name=name)
        if found is None:
            raise NotFoundError(f"{self.url}: cannot attach to {subject_digest}: no such manifest")
        subject = found[1]
        self.put_blob(layer.data, layer.digest, name=name)
        self.put_blob(EMPTY_CONFIG.data, EMPTY_CONFIG.digest, name=name)
        manifest: dict[str, Any] = {
            "schemaVersion": 2, "mediaType": MANIFEST_MEDIA_TYPE, "artifactType": artifact_type,
            "config": EMPTY_CONFIG.descriptor(), "layers": [layer.descriptor()],
            "subject": {"mediaType": MANIFEST_MEDIA_TYPE, "digest": subject_digest, "size": len(subject)},
        }
        if annotations:
            manifest["annotations"] = annotations
        return self.add_referrer(agent, canonical_json(manifest))

    def add_referrer(self, agent: StoredAgent, manifest: bytes) -> str:
        """Store a referrer manifest as it is (its blobs already pushed) and list it in the referrers index."""
        digest = digest_of(manifest)
        try:
            doc = json.loads(manifest)
            subject, artifact_type = doc["subject"]["digest"], str(doc.get("artifactType", ""))
        except (ValueError, KeyError, TypeError):
            raise StoreError(f"{self.url}: {digest} is not an artifact manifest with a subject") from None
        if subject != agent.manifest_digest:
            raise StoreError(f"{self.url}: {digest} refers to {subject}, not to {agent.ref}")
        self.put_manifest(manifest, digest, name=agent.name, media_type=MANIFEST_MEDIA_TYPE, tag=None,
                          annotations={})
        annotations = doc.get("annotations") if isinstance(doc.get("annotations"), dict) else None
        descriptor = {"mediaType": MANIFEST_MEDIA_TYPE, "digest": digest, "size": len(manifest),
                      "artifactType": artifact_type, **({"annotations": annotations} if annotations else {})}
        with self._referrers_lock():
            index = self._referrers_index(agent)
            if not any(m.get("digest") == digest for m in index["manifests"]):
                index["manifests"].append(descriptor)
                index_data = canonical_json(index)
                self.put_manifest(index_data, digest_of(index_data), name=agent.name, media_type=INDEX_MEDIA_TYPE,
                                  tag=referrers_tag(agent.manifest_digest), annotations={})
        return digest

    def _referrers_index(self, agent: StoredAgent) -> dict[str, Any]:
        """The referrers tag schema's index for `agent` (empty when there is none)."""
        found = self.get_manifest(referrers_tag(agent.manifest_digest), name=agent.name)
        if found is None:
            return {"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": []}
        return self._check_index(found[1], f"{self.url}: referrers of {agent.manifest_digest}")

    def _check_index(self, data: bytes, where: str) -> dict[str, Any]:
        try:
            index = json.loads(data)
        except ValueError:
            raise StoreError(f"{where}: the referrers index is not JSON") from None
        if not isinstance(index, dict) or index.get("mediaType", INDEX_MEDIA_TYPE) != INDEX_MEDIA_TYPE \
                or not isinstance(index.get("manifests"), list):
            raise StoreError(f"{where}: not an OCI image index")
        if len(index["manifests"]) > MAX_REFERRERS:
            raise StoreError(f"{where}: more than {MAX_REFERRERS} referrers")
        return index

    def referrers_index(self, agent: StoredAgent) -> dict[str, Any]:
        """The index listing the agent's referrers; registries with the referrers API override this."""
        return self._referrers_index(agent)

    def referrers(self, agent: StoredAgent, artifact_type: str | None = None) -> list[Referrer]:
        """Artifacts attached to the agent's manifest, optionally of one type."""
        out = []
        for m in self.referrers_index(agent)["manifests"]:
            if not isinstance(m, dict) or not DIGEST_RE.match(str(m.get("digest"))):
                raise StoreError(f"{self.url}: malformed entry in the referrers of {agent.manifest_digest}")
            if artifact_type is None or m.get("artifactType") == artifact_type:
                raw = m.get("annotations")
                ann: dict[str, str] = {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}
                out.append(Referrer(m["digest"], str(m.get("artifactType", "")), ann))
        return out

    def referrer_payload(self, agent: StoredAgent, referrer: Referrer) -> bytes:
        """The single layer of a referrer, after checking that it really refers to the agent."""
        where = f"{self.url}@{referrer.digest}"
        found = self.get_manifest(referrer.digest, name=agent.name)
        if found is None:
            raise StoreError(f"{where}: listed as a referrer of {agent.manifest_digest} but not in the store")
        try:
            doc = json.loads(found[1])
            subject = doc["subject"]["digest"]
            (layer,) = doc["layers"]
            layer_digest, size = layer["digest"], layer["size"]
        except (ValueError, KeyError, TypeError):
            raise StoreError(f"{where}: not an artifact manifest with a subject and one layer") from None
        if subject != agent.manifest_digest:
            raise StoreError(f"{where}: listed as a referrer of {agent.manifest_digest} but its subject is {subject}")
        if not isinstance(size, int) or size > MAX_EVIDENCE_BYTES:
            raise StoreError(f"{where}: evidence layer larger than {MAX_EVIDENCE_BYTES} bytes")
        return self.get_blob(str(layer_digest), MAX_EVIDENCE_BYTES, name=agent.name)
