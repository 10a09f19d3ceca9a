"""Shared fixtures: an isolated state folder per test, one toolchain cache per session."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "templates"
EXAMPLES = sorted(p.name for p in TEMPLATES.iterdir() if (p / "agent.yaml").is_file())


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


def git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com",
           "GIT_AUTHOR_DATE": "2026-01-02T03:04:05Z", "GIT_COMMITTER_DATE": "2026-01-02T03:04:05Z"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


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


HELLO_C = '#include <stdio.h>\nint main(void) { puts("hello"); return 0; }\n'


def write_template(root: Path, name: str = "hello", *, manifest: str | None = None,
                   files: dict[str, str | bytes] | None = None) -> Path:
    """Write a small C template (or the given manifest and files) under root/name."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    files = {"src/main.c": HELLO_C} if files is None else files
    for rel, content in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
    (folder / "agent.yaml").write_text(manifest if manifest is not None else hello_manifest(name))
    return folder


def hello_manifest(name: str = "hello", version: str = "1.0.0", sources: str = "[src/main.c]",
                   extra_spec: str = "", language: str = "c") -> str:
    return f"""apiVersion: agentfactory.dev/v1alpha1
kind: AgentTemplate
metadata:
  name: {name}
  version: {version}
  description: Says hello.
  owners: ["@example/team"]
spec:
  language: {language}
  sources: {sources}
  limits:
    memoryMiB: 8
    timeoutMs: 2000
{extra_spec}"""
