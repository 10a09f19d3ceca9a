"""Shared fixtures: an isolated state folder per test, one toolchain cache per session."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import EXAMPLE_OSV, TEMPLATES, git

from agentfactory.keys.local import LocalKeyring
from agentfactory.policy_cache import CACHE_ENV as POLICY_CACHE_ENV

# The pipeline scans every SBOM: the committed example database (real OSV records) stands in for an
# imported one, for module-scoped fixtures and CLI subprocesses too. Tests of the database point elsewhere.
os.environ["AGENTFACTORY_OSV_DB"] = str(EXAMPLE_OSV)


@pytest.fixture(scope="session")
def toolchain_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # zig builds wasi-libc once (~20 s); every test in the session reuses it.
    return Path(os.environ.get("AGENTFACTORY_TEST_TOOLCHAIN_CACHE") or tmp_path_factory.mktemp("toolchain"))


@pytest.fixture(scope="session", autouse=True)
def shared_policy_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """One compiled-policy cache for the session, as a CI machine keeps one (AGENTFACTORY_POLICY_CACHE): every
    test has a state folder of its own, and compiling the policies again in each cost the suite minutes.
    Set before module-scoped fixtures and inherited by CLI subprocesses; the cache's own tests use their
    state folder's (tests/security/test_attack_policy_cache_tamper.py)."""
    folder = tmp_path_factory.mktemp("policy-cache")
    previous = os.environ.get(POLICY_CACHE_ENV)
    os.environ[POLICY_CACHE_ENV] = str(folder)
    yield folder
    if previous is None:
        os.environ.pop(POLICY_CACHE_ENV, None)
    else:
        os.environ[POLICY_CACHE_ENV] = previous


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
