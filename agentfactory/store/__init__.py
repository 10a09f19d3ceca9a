"""Artifact stores, chosen by one URL used by every plane.

- `oci-layout:PATH` (or a plain path): an OCI image-layout folder, the embedded default;
- `oci://HOST[:PORT]/REPO`: an OCI distribution registry.
"""

from __future__ import annotations

from pathlib import Path

from ..config import default_store_url
from ..errors import ConfigError
from .base import ArtifactStore, IndexEntry, StoredAgent
from .oci_layout import OCILayoutStore

__all__ = ["ArtifactStore", "IndexEntry", "OCILayoutStore", "StoredAgent", "open_store"]


def open_store(url: str | None = None) -> ArtifactStore:
    """Open the store named by `url` (default: `$AGENTFACTORY_STORE` or the local layout)."""
    url = url or default_store_url()
    if url.startswith("oci-layout:"):
        path = url.removeprefix("oci-layout:")
        if not path:
            raise ConfigError(f"store URL {url!r}: give a folder, e.g. oci-layout:./store")
        return OCILayoutStore(Path(path).expanduser().resolve())
    if url.startswith("oci://"):
        raise ConfigError(f"store URL {url!r}: the OCI registry backend is not available in this "
                          "version; use oci-layout:PATH")
    if "://" in url:
        raise ConfigError(f"store URL {url!r}: unknown scheme; use oci-layout:PATH or oci://HOST/REPO")
    return OCILayoutStore(Path(url).expanduser().resolve())
