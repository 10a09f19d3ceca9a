"""A real Git repository of wat templates (with case tests) and the policies, for the pull-request
attack tests, and `agentfactory ci check` run on it as Actions or a terminal would."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from helpers import ROOT
from runtime_helpers import OK_WAT, wat_manifest

AF = str(Path(sys.executable).parent / "agentfactory")
CASES = "cases:\n  - name: says ok\n    stdout: \"ok\\n\"\n"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, text=True).stdout


def write_template(repo: Path, name: str, *, version: str = "1.0.0", wat: str = OK_WAT, cases: bool = True) -> Path:
    folder = repo / "templates" / name
    (folder / "src").mkdir(parents=True, exist_ok=True)
    (folder / "src/main.wat").write_text(wat)
    # generous timeout: the machine may be busy; no `spec.tests` of the helper's: each test says
    manifest = re.sub(r"(?m)^  tests:\n    none: .*\n", "", wat_manifest(name, timeout_ms=20000))
    (folder / "agent.yaml").write_text(manifest.replace("version: 1.0.0", f"version: {version}"))
    if cases:
        (folder / "tests").mkdir(exist_ok=True)
        (folder / "tests/cases.yaml").write_text(CASES)
    return folder


def make_repo(root: Path, names: tuple[str, ...] = ("alpha", "beta")) -> Path:
    """`main` with the templates and the policies, and a branch `feature` checked out."""
    root.mkdir(parents=True)
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "ci@example.com")
    git(root, "config", "user.name", "CI")
    git(root, "config", "core.quotePath", "true")  # Git's default, stated: quoted output is the attack
    (root / "policies").mkdir()
    for f in (ROOT / "policies").glob("*"):
        if f.is_file():
            (root / "policies" / f.name).write_bytes(f.read_bytes())
    for name in names:
        write_template(root, name)
    git(root, "add", "-A")
    git(root, "commit", "-qm", "base")
    git(root, "checkout", "-qb", "feature")
    return root


def ci_check(repo: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("GITHUB_")}
    full.update({"AGENTFACTORY_HOME": str(repo.parent / "home"), **(env or {})})
    return subprocess.run([AF, "ci", "check", "--base", "main", *args], cwd=repo, env=full, capture_output=True,
                          text=True)


def ci_json(repo: Path) -> tuple[int, dict[str, Any]]:
    done = ci_check(repo, "--json")
    assert done.stdout, done.stderr
    return done.returncode, json.loads(done.stdout)


def checked(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in report["templates"]}


def step_outputs(text: str) -> dict[str, str]:
    """$GITHUB_OUTPUT as the runner reads it: `name<<DELIMITER` blocks and `name=value` lines."""
    values: dict[str, str] = {}
    lines = iter(text.split("\n"))
    for line in lines:
        if "<<" in line and ("=" not in line or line.index("<<") < line.index("=")):
            name, delimiter = line.split("<<", 1)
            body = []
            for inner in lines:
                if inner == delimiter:
                    break
                body.append(inner)
            else:
                raise AssertionError(f"output {name!r}: no closing delimiter")
            values[name] = "\n".join(body)
        elif "=" in line:
            name, value = line.split("=", 1)
            values[name] = value
    return values
