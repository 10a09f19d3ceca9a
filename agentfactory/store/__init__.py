"""Artifact stores, chosen by one URL used by every plane.

- `oci-layout:PATH` (or a plain path): an OCI image-layout folder, the embedded default;
- `oci://HOST[:PORT]/PREFIX[?plain-http=true&ca=PATH]`: an OCI distribution registry, one
  repository per agent (`PREFIX/<name>`), tagged with its version.
"""

from __future__ import annotations

from pathlib import Path

from ..config import default_store_url
from ..errors import ConfigError
from .base import ArtifactStore, IndexEntry, StoredAgent
from .oci_layout import OCILayoutStore

__all__ = ["ArtifactStore", "IndexEntry", "OCILayoutStore", "StoredAgent", "open_store", "split_reference"]


def split_reference(ref: str) -> tuple[str | None, str]:
    """Split a full registry reference into (store URL, agent reference); other refs pass through.

    `oci://host:5000/agents/wordstats@sha256:…` → (`oci://host:5000/agents`, `wordstats@sha256:…`);
    `oci://host/agents/wordstats:1.0.0` → (`oci://host/agents`, `wordstats:1.0.0`).
    """
    if not ref.startswith("oci://"):
        return None, ref
    body, _, query = ref.removeprefix("oci://").partition("?")
    host, _, path = body.partition("/")
    if not path:
        raise ConfigError(f"{ref}: name the agent, e.g. oci://{host}/agents/NAME@sha256:…")
    parent, _, last = path.rpartition("/")
    name, at, digest = last.partition("@")
    agent_ref = f"{name}@{digest}" if at else name
    store = f"oci://{host}/{parent}" if parent else f"oci://{host}"
    return (f"{store}?{query}" if query else store), agent_ref


def open_store(url: str | None = None) -> ArtifactStore:
    """Open the store named by `url` (default: `$AGENTFACTORY_STORE` or the local layout)."""
    url = url or default_store_url()
    if url.startswith("oci-layout:"):
        path = url.removeprefix("oci-layout:")
        if not path:
            raise ConfigError(f"store URL {url!r}: give a folder, e.g. oci-layout:./store")
        return OCILayoutStore(Path(path).expanduser().resolve())
    if url.startswith("oci://"):
        from .registry import RegistryStore  # httpx only when a registry is used

        return RegistryStore(url)
    if "://" in url:
        raise ConfigError(f"store URL {url!r}: unknown scheme; use oci-layout:PATH or oci://HOST/REPO")
    return OCILayoutStore(Path(url).expanduser().resolve())
