"""The agent as an OCI artifact, following the CNCF TAG Runtime wasm OCI artifact layout.

Manifest: OCI image manifest, config media type `application/vnd.wasm.config.v0+json`,
one layer `application/wasm` holding the module bytes. The config and annotations are
derived only from the build's inputs (the `created` time is SOURCE_DATE_EPOCH), so the same
build always gives the same manifest digest.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .digest import digest_of, parse_digest
from .errors import InputError
from .jsonsafe import load_json_object

MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
WASM_CONFIG_MEDIA_TYPE = "application/vnd.wasm.config.v0+json"
WASM_LAYER_MEDIA_TYPE = "application/wasm"
MAX_MANIFEST_BYTES = 4 * 1024 * 1024  # what distribution registries accept

ANN_TITLE = "org.opencontainers.image.title"
ANN_VERSION = "org.opencontainers.image.version"
ANN_CREATED = "org.opencontainers.image.created"
ANN_DESCRIPTION = "org.opencontainers.image.description"
ANN_REVISION = "org.opencontainers.image.revision"
ANN_SOURCE = "org.opencontainers.image.source"
ANN_AUTHORS = "org.opencontainers.image.authors"
ANN_REF_NAME = "org.opencontainers.image.ref.name"
ANN_AGENT = "dev.agentfactory.agent.name"
ANN_ARTIFACT_DIGEST = "dev.agentfactory.artifact.digest"


def canonical_json(value: Any) -> bytes:
    """Deterministic JSON bytes: sorted keys, no spaces, UTF-8."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def rfc3339(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Blob:
    media_type: str
    data: bytes

    @property
    def digest(self) -> str:
        return digest_of(self.data)

    def descriptor(self) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": len(self.data)}


@dataclass(frozen=True)
class AgentArtifact:
    """The three blobs that make one agent: config, wasm layer, manifest."""

    config: Blob
    layer: Blob
    manifest: Blob

    @property
    def digest(self) -> str:
        """The artifact's identity: the digest of the wasm bytes."""
        return self.layer.digest


def build_agent_artifact(wasm: bytes, *, name: str, version: str, created_epoch: int,
                         annotations: dict[str, str] | None = None) -> AgentArtifact:
    """Wrap module bytes into a wasm OCI artifact; same inputs, same digests."""
    layer = Blob(WASM_LAYER_MEDIA_TYPE, wasm)
    created = rfc3339(created_epoch)
    config = Blob(WASM_CONFIG_MEDIA_TYPE, canonical_json({
        "created": created,
        "architecture": "wasm",
        "os": "wasip1",
        "layerDigests": [layer.digest],
    }))
    ann = {ANN_TITLE: name, ANN_VERSION: version, ANN_CREATED: created, ANN_AGENT: name}
    ann.update(annotations or {})
    manifest = Blob(MANIFEST_MEDIA_TYPE, canonical_json({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "artifactType": WASM_CONFIG_MEDIA_TYPE,
        "config": config.descriptor(),
        "layers": [layer.descriptor()],
        "annotations": ann,
    }))
    return AgentArtifact(config=config, layer=layer, manifest=manifest)


@dataclass(frozen=True)
class AgentManifest:
    """A parsed, checked agent manifest."""

    digest: str
    layer_digest: str
    layer_size: int
    config_digest: str
    annotations: dict[str, str]

    @property
    def name(self) -> str:
        return self.annotations.get(ANN_AGENT) or self.annotations.get(ANN_TITLE, "")

    @property
    def version(self) -> str:
        return self.annotations.get(ANN_VERSION, "")


def parse_agent_manifest(data: bytes, digest: str, where: str) -> AgentManifest:
    """Check that `data` is a wasm agent manifest; raise naming `where` and the field if not."""
    doc = load_json_object(data, where, max_bytes=MAX_MANIFEST_BYTES, what="manifest")
    if doc.get("schemaVersion") != 2 or doc.get("mediaType") != MANIFEST_MEDIA_TYPE:
        raise InputError(where, f"mediaType {doc.get('mediaType')!r}: not an OCI image manifest")
    config = doc.get("config")
    if not isinstance(config, dict) or config.get("mediaType") != WASM_CONFIG_MEDIA_TYPE:
        raise InputError(where, f"config.mediaType must be {WASM_CONFIG_MEDIA_TYPE}")
    layers = doc.get("layers")
    if not isinstance(layers, list) or len(layers) != 1 or not isinstance(layers[0], dict):
        raise InputError(where, "layers must hold exactly one application/wasm layer")
    layer = layers[0]
    if layer.get("mediaType") != WASM_LAYER_MEDIA_TYPE:
        raise InputError(where, f"layers[0].mediaType {layer.get('mediaType')!r} is not {WASM_LAYER_MEDIA_TYPE}")
    size = layer.get("size")
    if not isinstance(size, int) or size < 0:
        raise InputError(where, "layers[0].size must be a non-negative integer")
    annotations = doc.get("annotations") or {}
    if not isinstance(annotations, dict) or not all(isinstance(v, str) for v in annotations.values()):
        raise InputError(where, "annotations must map strings to strings")
    return AgentManifest(
        digest=digest,
        layer_digest=parse_digest(str(layer.get("digest")), f"{where}: layers[0].digest"),
        layer_size=size,
        config_digest=parse_digest(str(config.get("digest")), f"{where}: config.digest"),
        annotations=annotations,
    )
