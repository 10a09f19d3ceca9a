"""What Git knows about a template: the commit, its time, and what changed since a ref.

Through `git` plumbing run as a subprocess: importing GitPython cost ~50 ms of every `pipeline run`,
more than the few Git commands a run needs. A templates folder outside any Git repository still
builds: it gets SOURCE_DATE_EPOCH from the environment (or 0) and no commit.

Every list of paths is read NUL-separated (`-z`): without it Git quotes a path holding a non-ASCII
byte, a quote, a backslash or a control character (`"templates/x/konfig\\303\\274.h"`), and a parser
that splits lines would never match it to its template. Paths are decoded as the file system names
them (`os.fsdecode`), so a name that is not UTF-8 still names its file.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agentfactory.errors import ConfigError

if TYPE_CHECKING:
    import git

_NOT_A_REPOSITORY = "not a git repository"


class GitFailed(ConfigError):
    """A `git` command exited non-zero; the message carries its stderr."""


def run_git(cwd: Path, *args: str) -> bytes:
    """Stdout of `git ARGS` run in `cwd`; GitFailed with Git's own message when it fails.

    Messages are in English (LC_ALL=C) so that callers may recognise them, as GitPython did.
    """
    env = {**os.environ, "LC_ALL": "C", "LANGUAGE": "C"}
    try:
        proc = subprocess.run(["git", *args], cwd=cwd, env=env, capture_output=True, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        raise ConfigError("git is not installed (or not on PATH), but the templates are in a Git repository: "
                          "install git (Debian: apt-get install git)") from None
    if proc.returncode != 0:
        message = proc.stderr.decode(errors="replace").strip() or f"exit status {proc.returncode}"
        raise GitFailed(f"git {' '.join(args[:2])} in {cwd}: {message}")
    return proc.stdout


def work_tree_of(repo: git.Repo | Path) -> Path:
    """The folder Git commands run in: a GitPython Repo's work tree, or a path inside the work tree."""
    if isinstance(repo, Path):
        return repo
    if repo.working_tree_dir is None:
        raise ConfigError(f"{repo.git_dir}: a bare repository has no work tree to compare")
    return Path(repo.working_tree_dir)


@dataclass(frozen=True)
class Change:
    """One entry of `git diff --name-status`: the status letter, the path, and for a rename or copy
    (R, C) the path it came from. Both sides of a rename are changes to their folders."""

    status: str
    path: str
    source: str | None = None

    def paths(self) -> tuple[str, ...]:
        return (self.path,) if self.source is None else (self.source, self.path)


def split_z(data: bytes) -> list[str]:
    """The fields of Git's `-z` output, decoded as file names."""
    fields = data.split(b"\0")
    if fields and fields[-1] == b"":
        fields.pop()
    return [os.fsdecode(f) for f in fields]


def parse_name_status_z(data: bytes) -> list[Change]:
    """`git diff --name-status -z` output: `X\\0path\\0`, or `R100\\0old\\0new\\0` for renames and copies."""
    fields, out, i = split_z(data), [], 0
    while i < len(fields):
        status = fields[i][:1]
        if status in ("R", "C"):
            if i + 2 >= len(fields):
                raise ConfigError(f"git diff --name-status -z: a {status} entry without two paths")
            out.append(Change(status, fields[i + 2], fields[i + 1]))
            i += 3
        else:
            if i + 1 >= len(fields) or not status:
                raise ConfigError("git diff --name-status -z: an entry without a path")
            out.append(Change(status, fields[i + 1]))
            i += 2
    return out


def diff_changes(repo: git.Repo | Path, ref: str) -> list[Change]:
    """Every change since `ref`: committed, staged and unstaged (renames and copies detected), then
    the untracked files as additions. `repo` is a GitPython Repo or its work tree."""
    raw = run_git(work_tree_of(repo), "diff", "--name-status", "-z", "-M", "-C", "--no-ext-diff", "--no-textconv",
                  ref, "--")
    return parse_name_status_z(raw) + [Change("A", p) for p in untracked(repo)]


def literal(path: str) -> str:
    """A pathspec that names exactly `path`: no `:(magic)`, no glob characters."""
    return f":(literal){path}"


def untracked(repo: git.Repo | Path) -> list[str]:
    """Untracked files not ignored, NUL-separated (gitpython's `untracked_files` parses quoted output).

    Paths are relative to the work tree's root, whichever folder of it `repo` names."""
    return split_z(run_git(work_tree_of(repo), "ls-files", "-z", "--others", "--exclude-standard", "--full-name",
                           ":/"))


@dataclass(frozen=True)
class Origin:
    """Where a template came from, for the build record and provenance."""

    repository: str | None
    commit: str | None  # HEAD: what the pipeline ran at
    template_commit: str | None  # the last commit that touched the template folder
    path: str  # the template folder, relative to the repository root when there is one
    dirty: bool
    epoch: int


def _inside_a_repository(start: Path) -> bool:
    """Whether `start` or a parent holds `.git`: asked only when git itself cannot be run."""
    return any((folder / ".git").exists() for folder in (start, *start.parents))


def _find_root(start: Path) -> Path | None:
    """The work tree `start` lies in, or None outside any repository (or for a path that does not exist)."""
    if not start.is_dir():
        return None
    try:
        out = run_git(start, "rev-parse", "--show-toplevel")
    except GitFailed as exc:
        if _NOT_A_REPOSITORY in str(exc):
            return None
        raise
    except ConfigError:  # git is not installed: fine outside a repository, refused inside one
        if _inside_a_repository(start.resolve()):
            raise
        return None
    top = os.fsdecode(out.rstrip(b"\n"))
    if not top:  # inside .git itself, or a bare repository: no work tree
        return None
    return Path(top).resolve()


class GitView:
    """One repository, opened once per pipeline run."""

    def __init__(self, start: Path) -> None:
        self.root = _find_root(Path(start))
        self._head: str | None = None
        if self.root is not None:
            try:
                self._head = self._git("rev-parse", "--verify", "--quiet", "HEAD^{commit}").decode().strip() or None
            except GitFailed:  # no commits yet
                self._head = None

    def _git(self, *args: str) -> bytes:
        assert self.root is not None
        return run_git(self.root, *args)

    def _rel(self, path: Path) -> str:
        assert self.root is not None
        return path.resolve().relative_to(self.root).as_posix()

    def _remote_url(self) -> str | None:
        """The first URL of the first remote in the configuration (as GitPython's `remotes[0].urls`)."""
        try:
            names = self._git("config", "--local", "--null", "--get-regexp", r"^remote\..*\.url$")
        except GitFailed:  # exit 1: no remote configured
            return None
        first = names.split(b"\0", 1)[0].split(b"\n", 1)[0].decode(errors="replace")  # "remote.NAME.url"
        name = first.removeprefix("remote.").removesuffix(".url")
        try:
            urls = self._git("remote", "get-url", "--all", name).decode(errors="replace").split()
        except GitFailed:
            return None
        return urls[0] if urls else None

    def origin(self, folder: Path) -> Origin:
        """Commit, epoch and cleanliness of one template folder."""
        env_epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "0") or 0)
        if self.root is None or not folder.resolve().is_relative_to(self.root):
            return Origin(None, None, None, folder.name, dirty=True, epoch=env_epoch)
        rel = self._rel(folder)
        epoch, last = env_epoch, None
        if self._head:
            out = self._git("log", "-1", "--format=%H %ct", "--", literal(rel)).decode().split()
            if len(out) == 2:
                last, epoch = out[0], int(out[1])
        dirty = bool(self._git("status", "--porcelain", "-z", "--", literal(rel)).strip())
        remote = self._remote_url()
        return Origin(remote or self.root.as_uri(), self._head, last, rel, dirty, epoch)

    def changed_since(self, ref: str, folders: list[Path]) -> set[Path]:
        """The template folders with any change (committed, staged, unstaged or untracked) since `ref`."""
        if self.root is None:
            raise ConfigError("--changed-since needs the templates folder to be inside a Git repository")
        try:
            self._git("rev-parse", "--verify", "--quiet", f"{ref}^{{commit}}")
        except GitFailed:
            raise ConfigError(f"--changed-since {ref}: not a commit in {self.root}") from None
        changed = {p for c in diff_changes(self.root, ref) for p in c.paths()}
        out = set()
        for folder in folders:
            rel = self._rel(folder) + "/"
            if any(c.startswith(rel) for c in changed):
                out.add(folder)
        return out

    def version_at(self, ref: str, folder: Path) -> str | None:
        """`metadata.version` of the template's agent.yaml at `ref`, or None when it did not exist."""
        if self.root is None or not folder.resolve().is_relative_to(self.root):
            return None
        try:
            text = self._git("show", f"{ref}:{self._rel(folder)}/agent.yaml").decode(errors="replace")
        except GitFailed:
            return None
        import yaml

        try:
            doc = yaml.safe_load(text[:65536])
            version = doc["metadata"]["version"]
        except (yaml.YAMLError, KeyError, TypeError):
            return None
        return str(version)
