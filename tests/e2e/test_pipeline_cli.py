"""The `agentfactory` command as a user runs it, in a Git repository of templates."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import EXAMPLES, git, hello_manifest, write_template

pytestmark = pytest.mark.toolchain


def af(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("agentfactory")
    return subprocess.run([str(exe), *args], cwd=cwd, capture_output=True, text=True, env=os.environ.copy(),
                          timeout=600)


def run_json(cwd: Path, *args: str) -> tuple[int, dict]:
    proc = af(cwd, "pipeline", "run", "--json", *args)
    try:
        return proc.returncode, json.loads(proc.stdout)
    except ValueError:
        raise AssertionError(f"not JSON (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}") from None


def by_name(report: dict) -> dict[str, dict]:
    return {t["name"]: t for t in report["templates"]}


def test_build_then_unchanged(repo: Path) -> None:
    code, report = run_json(repo)
    assert code == 0, report
    rows = by_name(report)
    assert sorted(rows) == EXAMPLES
    for name, row in rows.items():
        assert set(row) >= {"name", "version", "digest", "ref", "status", "errors"}
        assert row["status"] == "built" and row["errors"] == []
        assert row["digest"].startswith("sha256:") and row["ref"] == f"{name}:{row['version']}@{row['digest']}"
        assert row["build"]["templateCommit"] and row["build"]["sourceDateEpoch"] == 1767323045
    code, again = run_json(repo)
    assert code == 0
    assert {t["status"] for t in again["templates"]} == {"unchanged"}
    assert {t["name"]: t["digest"] for t in again["templates"]} == {n: r["digest"] for n, r in rows.items()}

    listing = json.loads(af(repo, "store", "ls", "--json").stdout)
    assert sorted((a["name"], a["digest"]) for a in listing["agents"]) == \
        sorted((n, r["digest"]) for n, r in rows.items())


def test_human_output_has_a_summary_table(repo: Path) -> None:
    proc = af(repo, "pipeline", "run")
    assert proc.returncode == 0, proc.stderr
    assert "pipeline summary" in proc.stdout
    for name in EXAMPLES:
        assert name in proc.stdout
    assert "built" in proc.stdout and "failed 0" in proc.stdout
    ls = af(repo, "store", "ls")
    assert all(name in ls.stdout for name in EXAMPLES) and "sha256:" in ls.stdout


def test_bad_templates_fail_alone_and_leave_nothing_behind(repo: Path) -> None:
    t = repo / "templates"
    write_template(t, "broken-yaml", manifest="apiVersion: [\n")
    write_template(t, "bad-field", manifest=hello_manifest("bad-field", extra_spec="  shell: true\n"))
    write_template(t, "bad-compile", manifest=hello_manifest("bad-compile"),
                   files={"src/main.c": "int main(void) { return nope; }\n"})
    write_template(t, "escape", manifest=hello_manifest("escape", sources="[src/main.c, ../wordstats/src/main.c]"))
    code, report = run_json(repo)
    assert code == 1
    rows = {r["path"].split("/")[-1]: r for r in report["templates"]}
    for name in EXAMPLES:
        assert rows[name]["status"] == "built"
    assert "templates/broken-yaml/agent.yaml:2:1: YAML syntax error" in rows["broken-yaml"]["errors"][0]
    assert "templates/bad-field/agent.yaml:14: spec.shell: unknown field 'shell'" in rows["bad-field"]["errors"]
    assert "use of undeclared identifier 'nope'" in rows["bad-compile"]["errors"][0]
    assert "spec.sources[1]" in rows["escape"]["errors"][0]
    for name in ("broken-yaml", "bad-field", "bad-compile", "escape"):
        assert rows[name]["status"] == "failed" and rows[name]["digest"] is None
    listing = json.loads(af(repo, "store", "ls", "--json").stdout)
    assert sorted(a["name"] for a in listing["agents"]) == EXAMPLES
    store = repo / ".agentfactory" / "store"
    assert not list(store.rglob("*.tmp")) if store.exists() else True


def test_duplicate_names(repo: Path) -> None:
    shutil.copytree(repo / "templates" / EXAMPLES[0], repo / "templates" / "copy")
    code, report = run_json(repo)
    assert code == 1
    dupes = [r for r in report["templates"] if r["name"] == EXAMPLES[0]]
    assert len(dupes) == 2 and all(r["status"] == "failed" for r in dupes)
    assert any("is also declared by templates/copy/agent.yaml" in e for e in dupes[0]["errors"] + dupes[1]["errors"])


def test_changed_since(repo: Path) -> None:
    code, _ = run_json(repo)
    assert code == 0
    target = repo / "templates" / EXAMPLES[0] / "README.md"
    target.write_text(target.read_text() + "\nMore words.\n")
    code, report = run_json(repo, "--changed-since", "HEAD")
    assert code == 1, "a changed template must bump its version (template policy T10)"
    assert [t["name"] for t in report["templates"]] == [EXAMPLES[0]]
    assert any("version" in e and "1.0.0" in e for e in report["templates"][0]["errors"])
    assert len(report["skipped"]) == len(EXAMPLES) - 1
    manifest = repo / "templates" / EXAMPLES[0] / "agent.yaml"
    manifest.write_text(manifest.read_text().replace("version: 1.0.0", "version: 1.0.1"))
    code, report = run_json(repo, "--changed-since", "HEAD")
    assert code == 0, report
    assert report["templates"][0]["version"] == "1.0.1"
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "docs")
    code, report = run_json(repo, "--changed-since", "HEAD~1")
    assert [t["name"] for t in report["templates"]] == [EXAMPLES[0]]
    proc = af(repo, "pipeline", "run", "--changed-since", "no-such-ref")
    assert proc.returncode == 2 and "--changed-since no-such-ref: not a commit" in proc.stderr


def test_missing_templates_folder_is_a_usage_error(tmp_path: Path) -> None:
    proc = af(tmp_path, "pipeline", "run", "--templates", "nowhere")
    assert proc.returncode == 2 and "nowhere: templates folder not found" in proc.stderr


def test_template_validate_and_hash(repo: Path) -> None:
    ok = af(repo, "template", "validate", f"templates/{EXAMPLES[0]}")
    assert ok.returncode == 0 and "✓" in ok.stdout
    write_template(repo / "templates", "bad", manifest=hello_manifest("bad", version="1.0"))
    bad = af(repo, "template", "validate", "templates/bad")
    assert bad.returncode == 1 and "metadata.version" in bad.stderr
    h = af(repo, "template", "hash", f"templates/{EXAMPLES[0]}/src")
    assert h.returncode == 0 and len(h.stdout.strip()) == 64


def test_store_get_writes_verified_bytes(repo: Path, tmp_path: Path) -> None:
    _, report = run_json(repo)
    row = report["templates"][0]
    out = tmp_path / "agent.wasm"
    proc = af(repo, "store", "get", f"{row['name']}:{row['version']}", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    import hashlib

    assert "sha256:" + hashlib.sha256(out.read_bytes()).hexdigest() == row["digest"]
    assert af(repo, "store", "get", "nope", "-o", str(out)).returncode == 2
