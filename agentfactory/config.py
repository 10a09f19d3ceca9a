"""Where the embedded backends keep their state, and the settings that choose backends."""

from __future__ import annotations

import os
from pathlib import Path

HOME_ENV = "AGENTFACTORY_HOME"
STORE_ENV = "AGENTFACTORY_STORE"


def home() -> Path:
    """The state folder: `$AGENTFACTORY_HOME`, else `.agentfactory/` in the working directory.

    Deleting it resets the local chain; nothing else is written outside the repository.
    """
    value = os.environ.get(HOME_ENV)
    return Path(value).expanduser().resolve() if value else (Path.cwd() / ".agentfactory").resolve()


def default_store_url() -> str:
    """The store every command uses unless told otherwise: `$AGENTFACTORY_STORE` or the local layout."""
    return os.environ.get(STORE_ENV) or f"oci-layout:{home() / 'store'}"


def cache_dir(*parts: str) -> Path:
    """A cache folder under the state folder (created on demand by the caller)."""
    return home().joinpath("cache", *parts)


TOOLCHAIN_CACHE_ENV = "AGENTFACTORY_TOOLCHAIN_CACHE"


def toolchain_cache() -> Path:
    """Compiler caches (zig's prebuilt wasi-libc): `$AGENTFACTORY_TOOLCHAIN_CACHE` or under home.

    Shareable between state folders and CI runs: it holds only toolchain outputs, never agents.
    """
    value = os.environ.get(TOOLCHAIN_CACHE_ENV)
    return Path(value).expanduser().resolve() if value else cache_dir("toolchain")
