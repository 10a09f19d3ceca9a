"""`agentfactory ci check`: what a pull request does to the supply chain, decided before it merges.

The templates changed since the merge base with `--base` (committed, staged, unstaged or untracked)
go through the whole pipeline (validate, build, test, SBOM, scan, sign with a throwaway key, the
artifact policy) into a throwaway store: nothing is published. A change to what judges or builds
every template (`policies/`, the pipeline and the toolchain pins in `pipelines/`, the template schema
and the verifier in `agentfactory/`, `pyproject.toml`) re-checks every template, because it can break
templates nobody touched. Both sides of a rename or copy count as changed (a file moved out of a
template changes that template). Removed and renamed templates are reported, and each checked
template's dependencies are compared with the base (the SBOM diff reviewers need).

Paths come from Git NUL-separated (pipelines/gitinfo.py): a quoted path is never missed. A template
folder whose name is not a DNS label is refused before anything else, since its name reaches the job
log, the summary and the step outputs.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentfactory.errors import ConfigError
from agentfactory.template import MANIFEST

from ..gitinfo import Change, diff_changes

POLICY_PATHS = ("policies/",)
# What every template's verdict depends on besides its own folder: a change here re-checks them all.
RECHECK_ALL_PATHS = (*POLICY_PATHS, "pipelines/", "agentfactory/", "pyproject.toml")
DNS_LABEL = re.compile(r"[a-z]([a-z0-9-]{0,61}[a-z0-9])?")


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
    recheck_paths: list[str] = field(default_factory=list)  # the changed paths that re-check every template

    @property
    def failed(self) -> list[TemplateCheck]:
        return [t for t in self.templates if t.status == "failed"]

    def to_json(self) -> dict[str, Any]:
        return {"base": self.base, "mergeBase": self.merge_base, "head": self.head,
                "policiesChanged": self.policies_changed, "recheckAll": self.recheck_paths,
                "templates": [t.to_json() for t in self.templates],
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

    def changes(self, merge_base: str) -> list[Change]:
        """Every change since the merge base, working tree and untracked files included."""
        return diff_changes(self.repo, merge_base)

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


def rechecks_all(path: str) -> bool:
    """A path whose change can alter the verdict of every template (RECHECK_ALL_PATHS)."""
    return any(path == p or (p.endswith("/") and path.startswith(p)) for p in RECHECK_ALL_PATHS)


def folder_name_problem(templates_rel: str, name: str) -> str | None:
    """A template folder whose name is not a DNS label, described with every odd character escaped."""
    if DNS_LABEL.fullmatch(name):
        return None
    return (f"{templates_rel}{name!r}: a template folder name must be a DNS label (lower-case letters, digits "
            "and '-', starting with a letter, at most 63 characters): it names the agent, and it reaches the job "
            "log, the summary and the step outputs; rename the folder")


def _template_folders(templates_dir: Path) -> set[str]:
    """The folders the pipeline's discovery treats as templates (agentfactory.template.discover), read here
    without its refusals so that every odd name can be reported at once."""
    if not templates_dir.is_dir():
        return set()
    return {p.name for p in templates_dir.iterdir() if not p.name.startswith((".", "_")) and p.is_dir()
            and not p.is_symlink() and ((p / MANIFEST).exists() or (p / MANIFEST).is_symlink())}


def _untested(templates_dir: Path, templates_rel: str, name: str) -> str | None:
    """The missing-tests refusal (agentfactory.template.untested_problem) for a template that validates."""
    from agentfactory.errors import InputError
    from agentfactory.template import read_manifest, untested_problem
    from agentfactory.yamlsafe import load_yaml

    where = f"{templates_rel}{name}/{MANIFEST}"
    try:
        doc = load_yaml(read_manifest(templates_dir / name, where)[0], where)
    except InputError:
        return None  # the pipeline reports the manifest itself
    problem = untested_problem(templates_dir / name, doc.data if isinstance(doc.data, dict) else {}, where)
    return str(problem) if problem else None


def check(templates_dir: Path, base: str, *, policies_dir: Path | None = None, osv_db: Path | None = None,
          jobs: int | None = None) -> CheckReport:
    """Run the pipeline on what changed since `base`, without publishing, and compare with the base."""
    from agentfactory.keys.local import LocalKeyring
    from agentfactory.policy_select import open_engine
    from agentfactory.store.oci_layout import OCILayoutStore

    from ..run import Scanning, Signing, TemplateResult, run_pipeline

    repo = _Repo(templates_dir)
    base_commit = repo.resolve(base)
    head = repo.repo.head.commit.hexsha
    mb = repo.merge_base(base_commit, head)
    templates_rel = templates_dir.resolve().relative_to(repo.root).as_posix().rstrip("/") + "/"
    changes = repo.changes(mb)
    paths = [p for c in changes for p in c.paths()]
    policies_changed = any(p.startswith(POLICY_PATHS) for p in paths)
    recheck = sorted({p for p in paths if rechecks_all(p)})

    def folder_of(path: str | None) -> str | None:
        if path is None or not path.startswith(templates_rel):
            return None
        rest = path[len(templates_rel):]
        name = rest.split("/", 1)[0] if "/" in rest else None
        return None if name is None or name.startswith((".", "_")) else name  # discover() skips those

    touched: dict[str, str] = {}  # folder name -> reason
    renamed: dict[str, str] = {}
    removed: set[str] = set()
    for c in changes:
        name, old_name = folder_of(c.path), folder_of(c.source)
        if c.status == "R" and old_name and name and old_name != name:
            renamed[name] = old_name
        gone = c.source if c.status == "R" else c.path if c.status == "D" else None  # a manifest deleted or moved
        gone_name = folder_of(gone)
        if gone_name and gone == f"{templates_rel}{gone_name}/{MANIFEST}":
            removed.add(gone_name)
        for n in (old_name, name):  # both sides of a rename or copy: a file moved out changes its template
            if n:
                touched.setdefault(n, "changed")
    for name, old_name in renamed.items():
        touched[name] = f"renamed from {old_name}"
        if not (repo.root / templates_rel / old_name).exists():
            removed.discard(old_name)
            touched.pop(old_name, None)
    report = CheckReport(base, mb, head, [], policies_changed, recheck)
    for name in sorted(removed):
        if not (repo.root / templates_rel / name / MANIFEST).exists():
            touched.pop(name, None)
            report.templates.append(TemplateCheck(f"{templates_rel}{name}", name, "removed",
                                                  base_version=_version_of(repo.show(mb, f"{templates_rel}{name}/"
                                                                                       f"{MANIFEST}")),
                                                  reason="removed in this change"))
    existing = _template_folders(templates_dir)
    refused = {n: m for n in sorted(existing | set(touched)) if (m := folder_name_problem(templates_rel, n))}
    for name, message in refused.items():
        report.templates.append(TemplateCheck(f"{templates_rel}{name}", name, "failed", errors=[message],
                                              reason="folder name refused"))
    if refused:  # the pipeline's discovery refuses the whole folder: fix the names first
        return report
    changed = {n for n in touched if n in existing}
    selected = existing if recheck else changed
    if not selected:
        return report
    from agentfactory.scan.base import OsvScanner

    OsvScanner(osv_db)  # no database is a set-up error (exit 2), not a failure of every template
    results: dict[str, TemplateResult] = {}
    with tempfile.TemporaryDirectory(prefix="af-ci-") as tmp:
        store = OCILayoutStore(Path(tmp) / "store")
        signing = Signing(LocalKeyring(Path(tmp) / "keys"), tlog=None, scanning=Scanning(osv_db=osv_db))
        engine = open_engine(policies_dir)
        if recheck:  # every template, without a base: their versions need not change
            results.update((Path(t.path).name, t) for t in run_pipeline(templates_dir, store, jobs=jobs,
                                                                         signing=signing, engine=engine).templates)
        if changed:  # the changed ones against the merge base, which drives the version rules (T10)
            results.update((Path(t.path).name, t) for t in run_pipeline(templates_dir, store, changed_since=mb,
                                                                         jobs=jobs, signing=signing,
                                                                         engine=engine).templates)
    for name in sorted(selected):
        t = results.get(name)
        manifest = f"{templates_rel}{name}/{MANIFEST}"
        old = renamed.get(name)
        reason = touched.get(name) or ("policies changed" if policies_changed else
                                       f"{', '.join(recheck[:3])}{' …' if len(recheck) > 3 else ''} changed")
        if t is None:  # fail closed: a selected template the pipeline did not run
            report.templates.append(TemplateCheck(f"{templates_rel}{name}", name, "failed", reason=reason, errors=[
                f"{manifest}: the pipeline did not run this template; nothing is known about it"]))
            continue
        errors = list(t.errors)
        if (problem := _untested(templates_dir, templates_rel, name)) and problem not in errors:  # once
            errors.append(problem)
        before_data = repo.show(mb, f"{templates_rel}{old}/{MANIFEST}" if old else manifest)
        after = _dependencies_at((repo.root / manifest).read_bytes() if (repo.root / manifest).is_file() else None,
                                 manifest)
        report.templates.append(TemplateCheck(
            t.path, t.name, "failed" if t.status == "failed" or errors else "passed", version=t.version,
            base_version=_version_of(before_data), digest=t.digest, errors=errors, scan=t.scan,
            dependencies=dependency_diff(_dependencies_at(before_data, f"{mb[:12]}:{manifest}"), after),
            renamed_from=f"{templates_rel}{old}" if old else None, reason=reason))
    return report
