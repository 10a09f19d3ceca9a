"""Dependencies point inwards (DESIGN.md): checked on the source, and on what a plane really loads."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

from helpers import ROOT

PLANES = {"agentfactory": ROOT / "agentfactory", "pipelines": ROOT / "pipelines",
          "admission": ROOT / "admission", "sandbox_runtime": ROOT / "sandbox-runtime"}
FORBIDDEN = {
    "agentfactory": {"pipelines", "admission", "sandbox_runtime"},
    "pipelines": {"admission", "sandbox_runtime"},
    "admission": {"pipelines", "sandbox_runtime", "ziglang"},
    "sandbox_runtime": {"pipelines", "admission", "ziglang"},
}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_no_plane_imports_outwards_or_sideways() -> None:
    problems = []
    for plane, folder in PLANES.items():
        for path in sorted(folder.rglob("*.py")):
            bad = _imports(path) & FORBIDDEN[plane]
            if bad:
                problems.append(f"{path.relative_to(ROOT)} imports {', '.join(sorted(bad))}")
    assert problems == []


def test_the_webhook_and_the_runtime_load_no_build_tooling() -> None:
    code = ("import json, sys; import admission.app, admission.cli, sandbox_runtime.runtime, sandbox_runtime.server, "
            "sandbox_runtime.cli; print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('pipelines', 'ziglang', 'git'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == []
