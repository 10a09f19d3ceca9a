"""The artifact-store port: content-addressed blobs, manifests, and human tags.

Backends implement a handful of primitives; resolving references and pushing or fetching
agents is written once here, on top of them, so every backend behaves the same. Everything
that decides uses digests; tags (`name:version`) are for humans.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

from ..artifact import (
    ANN_ARTIFACT_DIGEST,
    AgentArtifact,
    AgentManifest,
    parse_agent_manifest,
)
from ..digest import DIGEST_RE
from ..errors import InputError, NotFoundError, StoreError
from ..semver import sort_key

MAX_WASM_BYTES = 64 * 1024 * 1024


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
    def put_manifest(self, data: bytes, digest: str, *, media_type: str, artifact_type: str,
                     tag: str | None, annotations: dict[str, str]) -> None:
        """Store a manifest and record it in the index, moving `tag` to it when given."""

    @abc.abstractmethod
    def entries(self) -> list[IndexEntry]:
        """Every agent manifest in the store."""

    # -- agent operations, shared by every backend ------------------------------------------
    def push_agent(self, artifact: AgentArtifact, *, name: str, version: str) -> StoredAgent:
        """Publish an agent (config, layer, manifest) and tag it `name:version`. Idempotent."""
        for blob in (artifact.layer, artifact.config):
            self.put_blob(blob.data, blob.digest)
        self.put_manifest(artifact.manifest.data, artifact.manifest.digest,
                          media_type=artifact.manifest.media_type,
                          artifact_type=artifact.config.media_type,
                          tag=f"{name}:{version}",
                          annotations={ANN_ARTIFACT_DIGEST: artifact.digest})
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
