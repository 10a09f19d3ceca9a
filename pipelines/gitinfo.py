"""What Git knows about a template: the commit, its time, and what changed since a ref.

Through gitpython. A templates folder outside any Git repository still builds: it gets
SOURCE_DATE_EPOCH from the environment (or 0) and no commit.

Every list of paths is read NUL-separated (`-z`): without it Git quotes a path holding a non-ASCII
byte, a quote, a backslash or a control character (`"templates/x/konfig\\303\\274.h"`), and a parser
that splits lines would never match it to its template. Paths are decoded as the file system names
them (`os.fsdecode`), so a name that is not UTF-8 still names its file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agentfactory.errors import ConfigError

if TYPE_CHECKING:
    import git


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


def diff_changes(repo: git.Repo, ref: str) -> list[Change]:
    """Every change since `ref`: committed, staged and unstaged (renames and copies detected), then
    the untracked files as additions."""
    raw = repo.git.diff("--name-status", "-z", "-M", "-C", "--no-ext-diff", "--no-textconv", ref, "--",
                        stdout_as_string=False, strip_newline_in_stdout=False)
    return parse_name_status_z(raw) + [Change("A", p) for p in untracked(repo)]


def literal(path: str) -> str:
    """A pathspec that names exactly `path`: no `:(magic)`, no glob characters."""
    return f":(literal){path}"


def untracked(repo: git.Repo) -> list[str]:
    """Untracked files not ignored, NUL-separated (gitpython's `untracked_files` parses quoted output)."""
    return split_z(repo.git.ls_files("-z", "--others", "--exclude-standard", stdout_as_string=False,
                                     strip_newline_in_stdout=False))


@dataclass(frozen=True)
class Origin:
    """Where a template came from, for the build record and provenance."""

    repository: str | None
    commit: str | None  # HEAD: what the pipeline ran at
    template_commit: str | None  # the last commit that touched the template folder
    path: str  # the template folder, relative to the repository root when there is one
    dirty: bool
    epoch: int


class GitView:
    """One repository, opened once per pipeline run."""

    def __init__(self, start: Path) -> None:
        import git

        self._git = git
        try:
            self.repo: git.Repo | None = git.Repo(start, search_parent_directories=True)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError):
            self.repo = None
        self.root = Path(self.repo.working_tree_dir).resolve() if self.repo and self.repo.working_tree_dir \
            else None
        self._head: str | None = None
        if self.repo is not None:
            try:
                self._head = self.repo.head.commit.hexsha
            except ValueError:  # no commits yet
                self._head = None

    def _rel(self, path: Path) -> str:
        assert self.root is not None
        return path.resolve().relative_to(self.root).as_posix()

    def origin(self, folder: Path) -> Origin:
        """Commit, epoch and cleanliness of one template folder."""
        env_epoch = int(os.environ.get("SOURCE_DATE_EPOCH", "0") or 0)
        if self.repo is None or self.root is None or not folder.resolve().is_relative_to(self.root):
            return Origin(None, None, None, folder.name, dirty=True, epoch=env_epoch)
        rel = self._rel(folder)
        epoch, last = env_epoch, None
        if self._head:
            out = self.repo.git.log("-1", "--format=%H %ct", "--", literal(rel)).split()
            if len(out) == 2:
                last, epoch = out[0], int(out[1])
        dirty = bool(self.repo.git.status("--porcelain", "-z", "--", literal(rel)).strip())
        remote = None
        if self.repo.remotes:
            try:
                remote = next(iter(self.repo.remotes[0].urls), None)
            except self._git.GitCommandError:
                remote = None
        return Origin(remote or self.root.as_uri(), self._head, last, rel, dirty, epoch)

    def changed_since(self, ref: str, folders: list[Path]) -> set[Path]:
        """The template folders with any change (committed, staged, unstaged or untracked) since `ref`."""
        if self.repo is None or self.root is None:
            raise ConfigError("--changed-since needs the templates folder to be inside a Git repository")
        try:
            self.repo.git.rev_parse("--verify", "--quiet", f"{ref}^{{commit}}")
        except self._git.GitCommandError:
            raise ConfigError(f"--changed-since {ref}: not a commit in {self.root}") from None
        changed = {p for c in diff_changes(self.repo, ref) for p in c.paths()}
        out = set()
        for folder in folders:
            rel = self._rel(folder) + "/"
            if any(c.startswith(rel) for c in changed):
                out.add(folder)
        return out

    def version_at(self, ref: str, folder: Path) -> str | None:
        """`metadata.version` of the template's agent.yaml at `ref`, or None when it did not exist."""
        if self.repo is None or self.root is None or not folder.resolve().is_relative_to(self.root):
            return None
        try:
            text = self.repo.git.show(f"{ref}:{self._rel(folder)}/agent.yaml")
        except self._git.GitCommandError:
            return None
        import yaml

        try:
            doc = yaml.safe_load(text[:65536])
            version = doc["metadata"]["version"]
        except (yaml.YAMLError, KeyError, TypeError):
            return None
        return str(version)
