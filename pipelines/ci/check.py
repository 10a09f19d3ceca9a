"""`agentfactory ci check`: what a pull request does to the supply chain, decided before it merges.

The templates changed since the merge base with `--base` (committed, staged, unstaged or untracked)
go through the whole pipeline (validate, build, test, SBOM, scan, sign with a throwaway key, the
artifact policy) into a throwaway store: nothing is published. A change under `policies/` re-checks
every template, because a policy change can break templates nobody touched. Removed and renamed
templates are reported, and each checked template's dependencies are compared with the base (the
SBOM diff reviewers need: what was added, removed or changed, and under which licence).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentfactory.errors import ConfigError
from agentfactory.template import MANIFEST

POLICY_PATHS = ("policies/",)


@dataclass(frozen=True)
class DepChange:
    name: str
    kind: str  # added | removed | changed
    before: dict[str, str] | None
    after: dict[str, str] | None

    def describe(self) -> str:
        def show(d: dict[str, str] | None) -> str:
            return f"{d.get('version', '?')} ({d.get('license', 'no licence')})" if d else ""
        if self.kind == "added":
            return f"added {self.name} {show(self.after)}"
        if self.kind == "removed":
            return f"removed {self.name} {show(self.before)}"
        assert self.before is not None and self.after is not None
        changes = [f"{k} {self.before.get(k, '∅')} → {self.after.get(k, '∅')}" for k in ("version", "license", "purl")
                   if self.before.get(k) != self.after.get(k)]
        return f"changed {self.name}: " + ", ".join(changes)


@dataclass
class TemplateCheck:
    path: str
    name: str
    status: str  # passed | failed | removed
    version: str | None = None
    base_version: str | None = None
    digest: str | None = None
    errors: list[str] = field(default_factory=list)
    scan: dict[str, Any] | None = None
    dependencies: list[DepChange] = field(default_factory=list)
    renamed_from: str | None = None
    reason: str = ""  # why it was checked: changed, renamed, policies changed

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "name": self.name, "status": self.status, "version": self.version,
                "baseVersion": self.base_version, "digest": self.digest, "errors": self.errors,
                "renamedFrom": self.renamed_from, "reason": self.reason,
                "vulnerabilities": (self.scan or {}).get("findings", []),
                "dependencies": [{"name": d.name, "change": d.kind, "before": d.before, "after": d.after}
                                 for d in self.dependencies]}


@dataclass
class CheckReport:
    base: str
    merge_base: str
    head: str
    templates: list[TemplateCheck]
    policies_changed: bool = False

    @property
    def failed(self) -> list[TemplateCheck]:
        return [t for t in self.templates if t.status == "failed"]

    def to_json(self) -> dict[str, Any]:
        return {"base": self.base, "mergeBase": self.merge_base, "head": self.head,
                "policiesChanged": self.policies_changed, "templates": [t.to_json() for t in self.templates],
                "summary": {"checked": sum(t.status != "removed" for t in self.templates),
                            "passed": sum(t.status == "passed" for t in self.templates),
                            "failed": len(self.failed),
                            "removed": sum(t.status == "removed" for t in self.templates)}}


class _Repo:
    """The Git questions `ci check` asks, with answers that say how to fix a shallow clone."""

    def __init__(self, start: Path) -> None:
        import git

        self._git = git
        try:
            self.repo = git.Repo(start, search_parent_directories=True)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError):
            raise ConfigError(f"{start}: not inside a Git repository; `ci check` compares with a base commit") from None
        assert self.repo.working_tree_dir is not None
        self.root = Path(self.repo.working_tree_dir).resolve()

    def shallow(self) -> bool:
        return bool(self.repo.git.rev_parse("--is-shallow-repository").strip() == "true")

    def resolve(self, ref: str) -> str:
        try:
            return str(self.repo.git.rev_parse("--verify", "--quiet", f"{ref}^{{commit}}")).strip()
        except self._git.GitCommandError:
            if self.shallow():
                raise ConfigError(
                    f"--base {ref}: not in this clone, which is shallow; fetch the base and enough history: "
                    f"`git fetch --deepen=100 origin {ref.removeprefix('origin/')}` (or `git fetch --unshallow`), "
                    "or check out with actions/checkout `fetch-depth: 0`") from None
            raise ConfigError(f"--base {ref}: no such commit, branch or tag in {self.root} (did you mean "
                              f"origin/{ref}? `git fetch origin` first)") from None

    def merge_base(self, base: str, head: str) -> str:
        try:
            return str(self.repo.git.merge_base(base, head)).strip()
        except self._git.GitCommandError:
            hint = (" The clone is shallow: the common ancestor is not fetched; use `fetch-depth: 0` or "
                    "`git fetch --deepen=100`." if self.shallow() else "")
            raise ConfigError(f"--base: {base[:12]} and HEAD have no common ancestor.{hint}") from None

    def name_status(self, merge_base: str) -> list[tuple[str, str, str | None]]:
        """(status letter, path, renamed-from) for every change since the merge base, working tree included."""
        out: list[tuple[str, str, str | None]] = []
        for line in self.repo.git.diff("--name-status", "-M", merge_base, "--").splitlines():
            parts = line.split("\t")
            if parts[0].startswith("R") and len(parts) == 3:
                out.append(("R", parts[2], parts[1]))
            elif len(parts) >= 2:
                out.append((parts[0][:1], parts[1], None))
        out.extend(("A", path, None) for path in self.repo.untracked_files)
        return out

    def show(self, ref: str, path: str) -> bytes | None:
        try:
            return bytes(self.repo.git.show(f"{ref}:{path}", stdout_as_string=False))
        except self._git.GitCommandError:
            return None


def _dependencies_at(data: bytes | None, where: str) -> dict[str, dict[str, str]]:
    if data is None:
        return {}
    from agentfactory.errors import InputError
    from agentfactory.yamlsafe import load_yaml

    try:
        doc = load_yaml(data, where).data
    except InputError:
        return {}
    deps = (doc.get("spec") or {}).get("dependencies") if isinstance(doc, dict) else None
    out = {}
    for d in deps if isinstance(deps, list) else []:
        if isinstance(d, dict) and isinstance(d.get("name"), str):
            out[d["name"]] = {k: str(d[k]) for k in ("version", "purl", "license") if k in d}
    return out


def dependency_diff(before: dict[str, dict[str, str]], after: dict[str, dict[str, str]]) -> list[DepChange]:
    changes = [DepChange(n, "added", None, after[n]) for n in sorted(set(after) - set(before))]
    changes += [DepChange(n, "removed", before[n], None) for n in sorted(set(before) - set(after))]
    changes += [DepChange(n, "changed", before[n], after[n]) for n in sorted(set(before) & set(after))
                if before[n] != after[n]]
    return changes


def _version_of(data: bytes | None) -> str | None:
    import yaml

    if data is None:
        return None
    try:
        doc = yaml.safe_load(data[:65536])
        return str(doc["metadata"]["version"])
    except (yaml.YAMLError, KeyError, TypeError):
        return None


def check(templates_dir: Path, base: str, *, policies_dir: Path | None = None, osv_db: Path | None = None,
          jobs: int | None = None) -> CheckReport:
    """Run the pipeline on what changed since `base`, without publishing, and compare with the base."""
    from agentfactory.keys.local import LocalKeyring
    from agentfactory.policy import RegoEngine
    from agentfactory.store.oci_layout import OCILayoutStore

    from ..run import Scanning, Signing, run_pipeline

    repo = _Repo(templates_dir)
    base_commit = repo.resolve(base)
    head = repo.repo.head.commit.hexsha
    mb = repo.merge_base(base_commit, head)
    templates_rel = templates_dir.resolve().relative_to(repo.root).as_posix().rstrip("/") + "/"
    changes = repo.name_status(mb)
    policies_changed = any(p.startswith(POLICY_PATHS) for _, p, _ in changes)

    def folder_of(path: str) -> str | None:
        if not path.startswith(templates_rel):
            return None
        rest = path[len(templates_rel):]
        return rest.split("/", 1)[0] if "/" in rest else None

    touched: dict[str, str] = {}  # folder name -> reason
    renamed: dict[str, str] = {}
    removed: set[str] = set()
    for status, path, old in changes:
        name = folder_of(path)
        old_name = folder_of(old) if old else None
        if status == "R" and old_name and name and old_name != name:
            renamed[name] = old_name
        if status == "D" and name and path == f"{templates_rel}{name}/{MANIFEST}":
            removed.add(name)
        if name:
            touched.setdefault(name, "changed")
    for name, old_name in renamed.items():
        touched[name] = f"renamed from {old_name}"
        if not (repo.root / templates_rel / old_name).exists():
            removed.discard(old_name)
            touched.pop(old_name, None)
    report = CheckReport(base, mb, head, [], policies_changed)
    for name in sorted(removed):
        if not (repo.root / templates_rel / name / MANIFEST).exists():
            touched.pop(name, None)
            report.templates.append(TemplateCheck(f"{templates_rel}{name}", name, "removed",
                                                  base_version=_version_of(repo.show(mb, f"{templates_rel}{name}/"
                                                                                       f"{MANIFEST}")),
                                                  reason="removed in this change"))
    existing = {p.name for p in templates_dir.iterdir() if (p / MANIFEST).is_file()} \
        if templates_dir.is_dir() else set()
    selected = existing if policies_changed else {n for n in touched if n in existing}
    if not selected:
        return report
    from agentfactory.scan.base import OsvScanner

    OsvScanner(osv_db)  # no database is a set-up error (exit 2), not a failure of every template
    with tempfile.TemporaryDirectory(prefix="af-ci-") as tmp:
        store = OCILayoutStore(Path(tmp) / "store")
        signing = Signing(LocalKeyring(Path(tmp) / "keys"), tlog=None, scanning=Scanning(osv_db=osv_db))
        engine = RegoEngine(policies_dir)
        # Every selected template runs; the merge base drives the template policy's version rules.
        result = run_pipeline(templates_dir, store, changed_since=None if policies_changed else mb, jobs=jobs,
                              signing=signing, engine=engine)
    for t in result.templates:
        name = Path(t.path).name
        if name not in selected:
            continue
        manifest = f"{templates_rel}{name}/{MANIFEST}"
        old = renamed.get(name)
        before_data = repo.show(mb, f"{templates_rel}{old}/{MANIFEST}" if old else manifest)
        after = _dependencies_at((repo.root / manifest).read_bytes() if (repo.root / manifest).is_file() else None,
                                 manifest)
        reason = touched.get(name, "policies changed")
        report.templates.append(TemplateCheck(
            t.path, t.name, "failed" if t.status == "failed" else "passed", version=t.version,
            base_version=_version_of(before_data), digest=t.digest, errors=list(t.errors), scan=t.scan,
            dependencies=dependency_diff(_dependencies_at(before_data, f"{mb[:12]}:{manifest}"), after),
            renamed_from=f"{templates_rel}{old}" if old else None, reason=reason))
    return report
