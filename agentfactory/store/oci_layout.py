"""The embedded store: an OCI image-layout folder (readable by oras, skopeo, crane).

Layout: `oci-layout`, `index.json`, `blobs/sha256/<hex>`. Blobs are written to a temporary
file, checked against their digest and renamed into place; `index.json` is rewritten
atomically under a lock. A crash at any point leaves the previous index intact and at most
an unreferenced blob behind, never a half-written file.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..artifact import (
    ANN_AGENT,
    ANN_ARTIFACT_DIGEST,
    ANN_REF_NAME,
    ANN_VERSION,
    INDEX_MEDIA_TYPE,
    MAX_MANIFEST_BYTES,
    canonical_json,
)
from ..digest import DIGEST_RE, digest_of, parse_digest
from ..errors import DigestMismatchError, NotFoundError, StoreError
from ..fsutil import atomic_write, file_lock
from .base import ArtifactStore, IndexEntry

LAYOUT_VERSION = {"imageLayoutVersion": "1.0.0"}
MAX_INDEX_BYTES = 16 * 1024 * 1024


class OCILayoutStore(ArtifactStore):
    """An OCI image layout on the local filesystem."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = f"oci-layout:{root}"
        self._index_cache: tuple[int, int, list[IndexEntry]] | None = None

    # -- layout ----------------------------------------------------------------------------
    def _ensure(self) -> None:
        if not (self.root / "oci-layout").exists():
            self.root.mkdir(parents=True, exist_ok=True)
            atomic_write(self.root / "oci-layout", canonical_json(LAYOUT_VERSION))
        if not (self.root / "index.json").exists():
            with file_lock(self.root / ".lock"):
                if not (self.root / "index.json").exists():
                    self._write_index({"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": []})

    def _blob_path(self, digest: str) -> Path:
        parse_digest(digest, self.url)
        return self.root / "blobs" / "sha256" / digest.split(":", 1)[1]

    def _read_index(self) -> dict[str, Any]:
        path = self.root / "index.json"
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return {"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": []}
        if size > MAX_INDEX_BYTES:
            raise StoreError(f"{path}: index is {size} bytes; the limit is {MAX_INDEX_BYTES}")
        try:
            doc = json.loads(path.read_bytes())
        except ValueError as exc:
            raise StoreError(f"{path}: not valid JSON ({exc}); the store is corrupt") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("manifests"), list):
            raise StoreError(f"{path}: not an OCI image index (no manifests list)")
        return doc

    def _write_index(self, doc: dict[str, Any]) -> None:
        atomic_write(self.root / "index.json", json.dumps(doc, indent=2, sort_keys=True).encode() + b"\n")

    # -- primitives ------------------------------------------------------------------------
    def tag_for(self, name: str, version: str) -> str:
        return f"{name}:{version}"  # one layout holds every agent: the tag carries the name

    def put_blob(self, data: bytes, digest: str, *, name: str = "") -> None:
        if digest_of(data) != digest:
            raise DigestMismatchError(f"{self.url}: refusing to store bytes that do not hash to {digest}")
        path = self._blob_path(digest)
        if path.exists() and path.stat().st_size == len(data):
            return
        self._ensure()
        atomic_write(path, data)

    def has_blob(self, digest: str, *, name: str = "") -> bool:
        return self._blob_path(digest).is_file()

    def get_blob(self, digest: str, max_bytes: int, *, name: str = "") -> bytes:
        path = self._blob_path(digest)
        try:
            with path.open("rb") as f:
                data = f.read(max_bytes + 1)
        except FileNotFoundError:
            raise NotFoundError(f"{self.url}: blob {digest} not found") from None
        if len(data) > max_bytes:
            raise StoreError(f"{path}: blob is larger than the {max_bytes}-byte limit")
        actual = digest_of(data)
        if actual != digest:
            raise DigestMismatchError(f"{path}: bytes hash to {actual}, not {digest}: "
                                      "the blob was tampered with or corrupted")
        return data

    def put_manifest(self, data: bytes, digest: str, *, name: str = "", media_type: str, tag: str | None,
                     annotations: dict[str, str]) -> None:
        self.put_blob(data, digest)
        artifact_type = json.loads(data).get("artifactType")
        entry_ann = dict(annotations)
        with file_lock(self.root / ".lock"):
            index = self._read_index()
            manifests = index["manifests"]
            if tag:
                for m in manifests:  # a tag names one manifest: move it
                    if m.get("annotations", {}).get(ANN_REF_NAME) == tag and m.get("digest") != digest:
                        m["annotations"].pop(ANN_REF_NAME)
                entry_ann[ANN_REF_NAME] = tag
            existing = next((m for m in manifests if m.get("digest") == digest), None)
            if existing is None:
                entry: dict[str, Any] = {"mediaType": media_type, "digest": digest, "size": len(data)}
                if artifact_type:
                    entry["artifactType"] = artifact_type
                if entry_ann:
                    entry["annotations"] = entry_ann
                manifests.append(entry)
            elif existing.get("annotations") == entry_ann:
                return
            else:
                existing["annotations"] = {**existing.get("annotations", {}), **entry_ann}
            manifests.sort(key=lambda m: (m.get("annotations", {}).get(ANN_AGENT, ""), m["digest"]))
            self._write_index(index)
        self._index_cache = None

    def resolve_tag(self, tag: str) -> str | None:
        for m in self._read_index()["manifests"]:
            if isinstance(m, dict) and (m.get("annotations") or {}).get(ANN_REF_NAME) == tag:
                return str(m.get("digest"))
        return None

    def get_manifest(self, reference: str, *, name: str = "") -> tuple[str, bytes] | None:
        digest = reference if DIGEST_RE.match(reference) else self.resolve_tag(reference)
        if digest is None or not self.has_blob(digest):
            return None
        return digest, self.get_blob(digest, MAX_MANIFEST_BYTES)

    @contextlib.contextmanager
    def _referrers_lock(self) -> Iterator[None]:
        # A lock file of its own: put_manifest takes `.lock` inside this critical section.
        with file_lock(self.root / ".referrers.lock"):
            yield

    def entries(self, name: str | None = None) -> list[IndexEntry]:
        every = self._entries()
        return every if name is None else [e for e in every if e.name == name]

    def _entries(self) -> list[IndexEntry]:
        path = self.root / "index.json"
        try:
            st = path.stat()
        except FileNotFoundError:
            return []
        if self._index_cache and self._index_cache[:2] == (st.st_mtime_ns, st.st_size):
            return self._index_cache[2]
        out = []
        for i, m in enumerate(self._read_index()["manifests"]):
            ann = m.get("annotations") if isinstance(m, dict) else None
            if not isinstance(ann, dict) or ANN_ARTIFACT_DIGEST not in ann:
                continue  # not an agent (another tool's image, or evidence)
            try:
                out.append(IndexEntry(
                    manifest_digest=parse_digest(str(m.get("digest")), f"{path}: manifests[{i}].digest"),
                    name=str(ann.get(ANN_AGENT, "")), version=str(ann.get(ANN_VERSION, "")),
                    artifact_digest=parse_digest(str(ann[ANN_ARTIFACT_DIGEST]),
                                                 f"{path}: manifests[{i}] {ANN_ARTIFACT_DIGEST}"),
                    tag=ann.get(ANN_REF_NAME)))
            except Exception as exc:
                raise StoreError(f"{exc}; the store index is corrupt") from None
        self._index_cache = (st.st_mtime_ns, st.st_size, out)
        return out

    def __repr__(self) -> str:
        return f"OCILayoutStore({os.fspath(self.root)!r})"
