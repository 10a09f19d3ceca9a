"""Shared fixtures: an isolated state folder per test, one toolchain cache per session."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import EXAMPLE_OSV, TEMPLATES, git

from agentfactory.keys.local import LocalKeyring

# The pipeline scans every SBOM: the committed example database (real OSV records) stands in for an
# imported one, for module-scoped fixtures and CLI subprocesses too. Tests of the database point elsewhere.
os.environ["AGENTFACTORY_OSV_DB"] = str(EXAMPLE_OSV)


@pytest.fixture(scope="session")
def toolchain_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # zig builds wasi-libc once (~20 s); every test in the session reuses it.
    return Path(os.environ.get("AGENTFACTORY_TEST_TOOLCHAIN_CACHE") or tmp_path_factory.mktemp("toolchain"))


@pytest.fixture(autouse=True)
def af_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, toolchain_cache: Path) -> Path:
    home = tmp_path / "af-home"
    monkeypatch.setenv("AGENTFACTORY_HOME", str(home))
    monkeypatch.setenv("AGENTFACTORY_TOOLCHAIN_CACHE", str(toolchain_cache))
    monkeypatch.delenv("AGENTFACTORY_STORE", raising=False)
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    return home


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[Path]:
    """A Git repository holding a copy of the example templates, committed."""
    root = tmp_path / "repo"
    shutil.copytree(TEMPLATES, root / "templates", symlinks=True,
                    ignore=shutil.ignore_patterns("agent-template.schema.json"))
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "templates")
    yield root


@pytest.fixture(scope="module")
def ring(tmp_path_factory: pytest.TempPathFactory) -> LocalKeyring:
    """A local keyring with one key, shared by a test module (signing material for log entries)."""
    r = LocalKeyring(tmp_path_factory.mktemp("keys"))
    r.create()
    return r


@pytest.fixture(scope="module")
def pem(ring: LocalKeyring) -> bytes:
    """The public key (PEM) of `ring`'s key."""
    return ring.public_keys()[0].pem
