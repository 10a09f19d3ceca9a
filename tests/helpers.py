"""Helpers shared by the tests: the example templates, Git, and small templates written on the fly."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TEMPLATES = ROOT / "templates"
EXAMPLE_OSV = ROOT / "examples" / "scanning" / "osv"
EXAMPLES_SCANNING = ROOT / "examples" / "scanning"
# The Python example: outside templates/, so the many tests that build templates/ do not pay its ~25 s build
PYTHON_EXAMPLE = ROOT / "examples" / "python" / "ticket-triage"
EXAMPLES = sorted(p.name for p in TEMPLATES.iterdir() if (p / "agent.yaml").is_file())


def git(cwd: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com",
           "GIT_AUTHOR_DATE": "2026-01-02T03:04:05Z", "GIT_COMMITTER_DATE": "2026-01-02T03:04:05Z"}
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


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
{extra_spec}  tests:
    none: "a test agent: the test suite runs it"
"""


def dependency_yaml(sha: str, path: str = "vendor/lib", *, include_dirs: bool = False) -> str:
    """A `spec.dependencies` block (and optionally `includeDirs`) for one vendored library."""
    head = "  includeDirs: [vendor/lib]\n" if include_dirs else ""
    return head + f"""  dependencies:
    - name: lib
      version: 1.0.0
      purl: pkg:generic/example/lib@1.0.0
      license: MIT
      path: {path}
      sha256: {sha}
"""


def load_example_module(path: Path) -> Any:
    """The Python file `path` (an example's script, outside any package) imported as a module of its own name."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module
