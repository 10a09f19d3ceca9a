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


def open_store(url: str | None = None, *, existing: bool = False) -> ArtifactStore:
    """Open the store named by `url` (default: `$AGENTFACTORY_STORE` or the local layout).

    `existing=True` is for commands that only read: a layout folder named by the user that holds no
    layout is a typo, not an empty store (the default store, not yet created, is just empty). The
    pipeline, which creates the store, passes False. A file where the folder belongs is refused always.
    """
    given = url is not None
    url = url or default_store_url()
    if url.startswith("oci-layout:"):
        path = url.removeprefix("oci-layout:")
        if not path:
            raise ConfigError(f"store URL {url!r}: give a folder, e.g. oci-layout:./store")
        return _layout(url, Path(path), existing=existing and given)
    if url.startswith("oci://"):
        from .registry import RegistryStore  # httpx only when a registry is used

        return RegistryStore(url)
    if "://" in url:
        raise ConfigError(f"store URL {url!r}: unknown scheme; use oci-layout:PATH or oci://HOST/REPO")
    return _layout(url, Path(url), existing=existing and given)


def _layout(url: str, path: Path, *, existing: bool) -> OCILayoutStore:
    """The layout store at `path`, after the checks that turn a wrong path into a clear message (exit 2)."""
    root = path.expanduser().resolve()
    try:
        is_dir = root.is_dir()
        present = root.exists()
        has_layout = is_dir and ((root / "oci-layout").is_file() or (root / "index.json").is_file())
    except OSError as e:  # EACCES on a parent, a loop of symbolic links
        raise ConfigError(f"store {url!r}: {root}: {e.strerror or e}") from e
    if present and not is_dir:
        raise ConfigError(f"store {url!r}: {root} is a file, not a folder; an OCI layout store is a folder "
                          "(oci-layout:PATH)")
    if existing and not has_layout:
        raise ConfigError(f"store {url!r}: no OCI layout at {root}; create it with a pipeline run "
                          "(agentfactory pipeline run --store …) or check the path")
    return OCILayoutStore(root)
