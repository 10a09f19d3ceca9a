"""The environment repository: one kustomize folder of digest-pinned WasmAgents per stage, in Git.

Every change is a commit (gitpython) with a structured message whose trailers (Agent, Digest,
Stage, From-Stage, Verdict, Action, Promotion-Attestation) are a human-readable copy of the promotion
record. They are never trusted: anyone who can push here can write them, and backdate the commit. The
record is the signed, logged promotion attestations (`attested.py`); `history` reads commits only to
show which one carries which attestation and to flag those that no attestation backs. History is
never rewritten: a rollback is a new commit.

Writes are serialised by a lock file in the Git directory and checked against the HEAD the caller
read (compare-and-swap), so two promotions racing cannot both decide on the same state: the second
one waits for the lock, then sees the first one's commit.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from agentfactory.errors import AgentFactoryError, ConfigError, InputError

from .stages import StageGraph

TRAILER_KEYS = ("Agent", "Version", "Digest", "Stage", "From-Stage", "Action", "Verdict", "Approved-By",
                "Analysis", "Reason", "Promotion-Attestation", "Promoter-Key")
LOCK_NAME = "agentfactory-promote.lock"
MAX_STAGE_FILE_BYTES = 64 * 1024  # one WasmAgent object; promote writes well under 1 KiB
AGENT_FILE_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")  # a DNS label, as metadata.name
LOCK_WAIT_S = 30.0
LOCK_UNNAMED_S = 5.0  # a lock file without a pid for longer than this is stale
T = TypeVar("T")
MARK = "# Written by `agentfactory promote`: do not edit by hand; promote or roll back instead (docs/promotion.md)."


class PromotionConflict(AgentFactoryError):
    """Another promotion changed the environment repository first, or holds its lock."""


@dataclass(frozen=True)
class Placement:
    """An agent in a stage, as the stage's folder says at HEAD."""

    agent: str
    stage: str
    ref: str  # spec.agent: NAME@sha256:… (or a registry reference)
    digest: str
    version: str  # the file's annotation: a claim like any other; the attestations say what it is


@dataclass(frozen=True)
class Event:
    """One promotion-record commit."""

    commit: str
    time: str
    epoch: int
    author: str
    subject: str
    trailers: dict[str, str] = field(default_factory=dict)
    paths: tuple[str, ...] = ()  # the stage-folder files it changed (filled by `changes`)

    def to_json(self) -> dict[str, Any]:
        return {"commit": self.commit, "commit_time": self.time, "author": self.author, "subject": self.subject,
                "paths": list(self.paths), "trailers": dict(self.trailers)}


def _iso(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def parse_trailers(message: str) -> dict[str, str]:
    """The `Key: value` lines of the message's last paragraph, for the keys we write."""
    paragraphs = [p for p in message.strip().split("\n\n") if p.strip()]
    if len(paragraphs) < 2:
        return {}
    out: dict[str, str] = {}
    for line in paragraphs[-1].splitlines():
        key, sep, value = line.partition(": ")
        if sep and key in TRAILER_KEYS:
            out[key] = value.strip()
    return out


class EnvRepo:
    """A working copy of the environment repository, and the stage folders in it."""

    def __init__(self, root: Path, graph: StageGraph) -> None:
        import git

        self._git = git
        try:
            self.repo = git.Repo(root, search_parent_directories=True)
        except (git.InvalidGitRepositoryError, git.NoSuchPathError):
            raise ConfigError(f"{root}: not inside a Git repository; the environment repository must be a Git "
                              "working copy (clone it, or `git init`), given with --env-repo") from None
        if self.repo.bare or not self.repo.working_tree_dir:
            raise ConfigError(f"{root}: a bare repository; give a working copy with --env-repo")
        self.root = Path(self.repo.working_tree_dir).resolve()
        self.graph = graph

    # -- reading -----------------------------------------------------------------------------------
    def folder(self, stage: str) -> Path:
        return self.root / self.graph.folder(stage)

    def agent_file(self, stage: str, agent: str) -> Path:
        return self.folder(stage) / "agents" / f"{agent}.yaml"

    def head(self) -> str | None:
        try:
            return self.repo.head.commit.hexsha
        except ValueError:  # no commit yet
            return None

    def placements(self, stage: str) -> list[Placement]:
        folder = self.folder(stage) / "agents"
        if not folder.is_dir():
            return []
        out = []
        for path in sorted(folder.glob("*.yaml")):
            out.append(self._read(stage, path))
        return out

    def placement(self, stage: str, agent: str) -> Placement | None:
        path = self.agent_file(stage, agent)
        return self._read(stage, path) if path.exists() or path.is_symlink() else None

    def _read(self, stage: str, path: Path) -> Placement:
        """The placement a stage file pins. The file is the agent: its stem is the agent's name, and the
        object's `metadata.name` and `spec.agent` must name the same agent (a second file naming `greeter`
        was reported as greeter.yaml's; `metadata.name: /x` crashed `status`). It must be a regular file of
        at most MAX_STAGE_FILE_BYTES inside the repository (a symlink to /dev/zero was read without end)."""
        from agentfactory.digest import DIGEST_RE
        from agentfactory.yamlsafe import load_yaml

        where = str(path.relative_to(self.root))
        agent = path.stem
        if not AGENT_FILE_NAME.fullmatch(agent):
            raise InputError(where, "the file's name is not an agent name (lowercase letters, digits and '-', "
                                    "at most 63) followed by .yaml")
        doc = load_yaml(self._bounded(path, where), where).data
        spec = doc.get("spec") if isinstance(doc, dict) else None
        meta = doc.get("metadata") if isinstance(doc, dict) else None
        ref = spec.get("agent") if isinstance(spec, dict) else None
        if not isinstance(ref, str) or "@" not in ref or not isinstance(meta, dict):
            raise InputError(where, "not a WasmAgent pinned by digest (spec.agent: NAME@sha256:…)")
        name, digest = ref.rsplit("@", 1)
        if not DIGEST_RE.match(digest):
            raise InputError(where, f"spec.agent {ref!r} is not pinned by a sha256 digest")
        if meta.get("name", agent) != agent or name.rsplit("/", 1)[-1] != agent:
            raise InputError(where, f"the file is agent {agent!r} but metadata.name is {str(meta.get('name'))[:80]!r} "
                                    f"and spec.agent names {name[-80:]!r}: one file per agent, named after it")
        found = meta.get("annotations")
        annotations = found if isinstance(found, dict) else {}
        return Placement(agent, stage, ref, digest, str(annotations.get("agentfactory.dev/version", "")))

    def _bounded(self, path: Path, where: str) -> bytes:
        """The bytes of a stage file: a regular file inside the repository, at most MAX_STAGE_FILE_BYTES."""
        try:
            real = path.resolve(strict=True)
        except (OSError, RuntimeError) as exc:
            raise InputError(where, f"cannot be read: {exc}") from None
        if not real.is_relative_to(self.root):
            raise InputError(where, f"a link out of the repository (to {str(real)[:200]}); stage files are files")
        try:
            fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
        except OSError as exc:
            raise InputError(where, f"cannot be read: {exc.strerror}") from None
        with os.fdopen(fd, "rb") as f:
            info = os.fstat(f.fileno())
            if not stat.S_ISREG(info.st_mode):
                raise InputError(where, "not a regular file (a device, a FIFO or a socket); stage files are files")
            data = f.read(MAX_STAGE_FILE_BYTES + 1)
        if len(data) > MAX_STAGE_FILE_BYTES:
            raise InputError(where, f"larger than {MAX_STAGE_FILE_BYTES} bytes; a stage file is one small object")
        return data

    def history(self, agent: str | None = None, stage: str | None = None) -> list[Event]:
        """Promotion-record commits, newest first, optionally for one agent and/or stage (the whole history)."""
        if self.head() is None:
            return []
        paths = [self.graph.folder(s.name) for s in self.graph.stages] if stage is None else [self.graph.folder(stage)]
        events = []
        for c in self.repo.iter_commits(paths=paths):
            message = c.message if isinstance(c.message, str) else c.message.decode("utf-8", "replace")
            trailers = parse_trailers(message)
            if not trailers.get("Agent") or not trailers.get("Stage"):
                continue
            if agent is not None and trailers["Agent"] != agent:
                continue
            if stage is not None and trailers["Stage"] != stage:
                continue
            events.append(Event(c.hexsha, _iso(c.committed_date), c.committed_date, str(c.author),
                                message.splitlines()[0] if message else "", trailers))
        return events

    def changes(self, agent: str | None = None, stage: str | None = None) -> list[Event]:
        """Every commit that changed a stage folder or whose trailers claim a promotion record (an empty
        commit can claim one too), newest first, with the stage files it changed; for one agent and/or
        stage by its trailers or by the files it touched. The whole history, never the newest N commits
        (1,000 empty commits on top hid a hand edit). A merge's files are those it changed against every
        parent (`--cc`): a clean merge of a promotion branch changes none, an "evil merge" its own edits."""
        if self.head() is None:
            return []
        stages = [s.name for s in self.graph.stages] if stage is None else [stage]
        folders = [self.graph.folder(s).rstrip("/") + "/" for s in stages]
        touched = self._files_by_commit()
        events = []
        for c in self.repo.iter_commits():
            message = c.message if isinstance(c.message, str) else c.message.decode("utf-8", "replace")
            trailers = parse_trailers(message)
            paths = tuple(sorted({f for f in touched.get(c.hexsha, ()) if any(f.startswith(d) for d in folders)}))
            claims = bool(trailers.get("Agent")) and (trailers.get("Stage") in stages)
            if not paths and not claims:
                continue
            if agent is not None and trailers.get("Agent") != agent and not any(
                    f.endswith(f"/agents/{agent}.yaml") for f in paths):
                continue
            events.append(Event(c.hexsha, _iso(c.committed_date), c.committed_date, str(c.author),
                                message.splitlines()[0] if message else "", trailers, paths))
        return events

    def _files_by_commit(self) -> dict[str, tuple[str, ...]]:
        """commit -> the files it changed, for the whole history in one `git log` (a merge: `--cc`).

        One line per path, not `-z`: git C-quotes any name holding a control character (a newline, \\x01) and
        leaves others as they are (core.quotePath=false), so a raw line starting with \\x01 can only be the
        commit marker. With `-z` a name holding the marker cut its commit's later paths off (a file
        `aaa\\x01zzz` hid the stage file changed beside it)."""
        raw = self.repo.git.execute(["git", "-c", "core.quotePath=false", "log", "--cc", "--name-only",
                                     "--no-renames", "--format=%x01%H"], strip_newline_in_stdout=False)
        out: dict[str, list[str]] = {}
        names: list[str] = []
        for line in str(raw).split("\n"):
            if line.startswith("\x01"):
                names = out.setdefault(line[1:], [])
            elif line:
                names.append(_unquoted(line))
        return {commit: tuple(found) for commit, found in out.items()}

    # -- preconditions -----------------------------------------------------------------------------
    def check_clean(self) -> None:
        """Refuse to commit over someone's work: staged changes, or edits in a stage folder."""
        if self.head() is not None and self.repo.index.diff("HEAD"):
            raise ConfigError(f"{self.root}: the index has staged changes; commit or unstage them before "
                              "promoting (a promotion commits only its own files)")
        folders = [self.graph.folder(s.name) for s in self.graph.stages]
        dirty = self.repo.git.status("--porcelain", "--", *folders).strip()
        if dirty:
            first = dirty.splitlines()[0]
            raise ConfigError(f"{self.root}: uncommitted changes in the stage folders ({first.strip()}…); the "
                              "environment is what Git says, so commit or discard them first")

    def check_not_diverged(self) -> None:
        """Refuse when the branch's upstream has commits this clone lacks (as of the last fetch)."""
        try:
            branch = self.repo.active_branch
        except TypeError:
            raise ConfigError(f"{self.root}: HEAD is detached; check out the environment branch first") from None
        upstream = branch.tracking_branch()
        if upstream is None or not upstream.is_valid():
            return
        behind = sum(1 for _ in self.repo.iter_commits(f"{branch.name}..{upstream.name}"))
        ahead = sum(1 for _ in self.repo.iter_commits(f"{upstream.name}..{branch.name}"))
        if behind:
            state = f"diverged from {upstream.name} ({ahead} ahead, {behind} behind)" if ahead else \
                f"{behind} commit(s) behind {upstream.name}"
            raise ConfigError(f"{self.root}: the environment branch {branch.name} is {state}; pull (rebase) "
                              "first, so the promotion is decided on what the cluster will sync")

    def fetch(self) -> None:
        try:
            upstream = self.repo.active_branch.tracking_branch()
        except TypeError:
            return
        if upstream is not None:
            try:
                self.repo.remote(upstream.remote_name).fetch()
            except self._git.GitCommandError as exc:
                raise ConfigError(f"cannot fetch {upstream.remote_name}: {exc.stderr.strip() or exc}") from None

    @contextlib.contextmanager
    def locked(self, wait: float = LOCK_WAIT_S) -> Iterator[None]:
        """One promotion at a time in this clone: a lock file in the Git directory (stale locks of dead
        processes are taken over). Waits up to `wait` seconds, then gives up naming the holder."""
        path = Path(self.repo.git_dir) / LOCK_NAME
        deadline = time.monotonic() + wait
        while True:
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
                os.write(fd, f"{os.getpid()}\n".encode())
                os.close(fd)
                break
            except FileExistsError:
                holder = _live_holder(path)
                if holder is None:  # gone, or left by a dead process
                    with contextlib.suppress(FileNotFoundError):
                        path.unlink()
                    continue
                if time.monotonic() >= deadline:
                    raise PromotionConflict(f"another promotion ({_named(holder)}) holds {path}; try again when "
                                            "it has finished") from None
                time.sleep(0.05)
        try:
            yield
        finally:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def settled(self, read: Callable[[], T], wait: float = LOCK_WAIT_S) -> T:
        """`read()` of the stage files and the attestations as no promotion is half way through, without
        taking the lock (a reader may have no right to write here).

        A promotion logs its attestation, then commits, under the lock: a reader that loads the attestations
        before one and reads the stage files after it would see them unattested (or, for a rollback, the
        other way round). So: wait while a live process holds the lock, read, and read again when a
        promotion took the lock or moved HEAD meanwhile. Gives up after `wait` seconds, naming the holder."""
        path = Path(self.repo.git_dir) / LOCK_NAME
        deadline = time.monotonic() + wait
        while True:
            holder = _live_holder(path)
            if holder is None:
                head = self.head()
                result = read()
                if _live_holder(path) is None and self.head() == head:
                    return result
            if time.monotonic() >= deadline:
                raise PromotionConflict(f"another promotion ({_named(holder or _live_holder(path))}) keeps "
                                        f"changing or holding {path}; try again when it has finished")
            time.sleep(0.05)

    # -- writing -----------------------------------------------------------------------------------
    def commit_placement(self, stage: str, agent: str, placement: dict[str, Any] | None, *, subject: str,
                         trailers: dict[str, str], expected_head: str | None, branch: str | None = None) -> str:
        """Write (or, with None, remove) the agent's WasmAgent in the stage and commit; return the commit.

        `expected_head` is the HEAD the decision was made on: if it moved, nothing is written.
        With `branch`, the commit goes on that new branch (for a pull request) and HEAD stays put.
        """
        if self.head() != expected_head:
            raise PromotionConflict(f"the environment repository moved from {(expected_head or 'nothing')[:12]} to "
                                    f"{(self.head() or 'nothing')[:12]} while this promotion was being decided; "
                                    "run it again")
        previous = None
        if branch is not None:
            previous = self.repo.active_branch
            if branch in self.repo.heads:
                raise ConfigError(f"branch {branch!r} already exists in the environment repository")
            self.repo.create_head(branch).checkout()
        try:
            files = self._write(stage, agent, placement)
            rels = [str(f.relative_to(self.root)) for f in files]
            existing = [r for r in rels if (self.root / r).exists()]
            removed = [r for r in rels if not (self.root / r).exists()]
            if existing:
                self.repo.index.add(existing)
            if removed:
                self.repo.index.remove(removed, working_tree=False)
            body = "\n".join(f"{k}: {v}" for k, v in trailers.items() if v)
            commit = self.repo.index.commit(f"{subject}\n\n{body}\n")
            return commit.hexsha
        finally:
            if previous is not None:
                previous.checkout()

    def _write(self, stage: str, agent: str, placement: dict[str, Any] | None) -> list[Path]:
        import yaml

        from agentfactory.fsutil import atomic_write

        path = self.agent_file(stage, agent)
        touched = [path]
        if placement is None:
            path.unlink(missing_ok=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, (MARK + "\n" + yaml.safe_dump(placement, sort_keys=False)).encode())
        kustomization = self.folder(stage) / "kustomization.yaml"
        atomic_write(kustomization, (MARK + f"\n# Stage {stage}: Argo CD syncs this folder (deploy/argocd).\n"
                                     + yaml.safe_dump(self._kustomization(stage), sort_keys=False)).encode())
        touched.append(kustomization)
        return touched

    def _kustomization(self, stage: str) -> dict[str, Any]:
        """The kustomization promote writes for `stage`: its namespace and its agent files, nothing else."""
        agents = sorted(p.name for p in (self.folder(stage) / "agents").glob("*.yaml")) \
            if (self.folder(stage) / "agents").is_dir() else []
        return {"apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
                "namespace": self.graph.stage(stage).namespace, "resources": [f"agents/{a}" for a in agents]}

    def kustomization_problem(self, stage: str) -> str | None:
        """Why `stage`'s kustomization.yaml is not what promote writes, or None. What Argo CD applies is what the
        kustomization says: a `patches:` entry (or another resource, image or namespace) deploys a digest no stage
        file pins and no attestation backs, which `status` reading the stage files alone never reported. Comments
        and formatting are free; the content must be exactly promote's."""
        from agentfactory.yamlsafe import load_yaml

        path = self.folder(stage) / "kustomization.yaml"
        where = str(path.relative_to(self.root))
        expected = self._kustomization(stage)
        if not (path.exists() or path.is_symlink()):
            return None if not expected["resources"] else f"{where} is missing: Argo CD would deploy nothing here"
        try:
            found = load_yaml(self._bounded(path, where), where).data
        except InputError as exc:
            return str(exc)
        if found == expected:
            return None
        extra = sorted(set(found) - set(expected)) if isinstance(found, dict) else []
        return (f"{where} is not what promote writes" + (f" (it adds {', '.join(map(str, extra))})" if extra else
                " (its namespace or resources differ from the stage's agent files)")
                + ": what Argo CD deploys from it is not what the stage files and their attestations say; "
                "remove the hand edit (promote and rollback write this file)")

    def push(self, branch: str | None = None) -> None:
        """Push the branch to its remote; a rejection (someone pushed first) is a conflict, not a crash."""
        try:
            name = branch or self.repo.active_branch.name
            tracking = self.repo.heads[name].tracking_branch()
            remote = self.repo.remote(tracking.remote_name if tracking else "origin")
            results = remote.push(f"{name}:{name}")
        except (self._git.GitCommandError, ValueError) as exc:
            raise PromotionConflict(f"push failed: {exc}") from None
        for r in results:
            if r.flags & r.ERROR or r.flags & r.REJECTED or r.flags & r.REMOTE_REJECTED:
                raise PromotionConflict(f"the remote refused the push of {name} ({r.summary.strip()}): someone "
                                        "promoted first; pull and run again")


def _holder(path: Path) -> int | None:
    """The pid a lock file names, or None: empty, not a positive whole number (`-1` would make os.kill ask
    about every process), or longer than any pid."""
    try:
        with path.open("rb") as f:
            text = f.read(32).strip()
        pid = int(text) if text.isdigit() else 0
    except (OSError, ValueError):
        return None
    return pid if pid > 0 else None


def _live_holder(path: Path) -> int | None:
    """The pid holding the lock at `path`, 0 while a new lock file has no pid yet; None when the lock is free:
    no file, a dead process's, or one with no pid that is older than LOCK_UNNAMED_S (its writer died between
    creating it and writing its pid, or someone wrote something else there)."""
    try:
        age = time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return None
    holder = _holder(path)
    if holder is None:
        return 0 if age < LOCK_UNNAMED_S else None
    return holder if _alive(holder) else None


def _named(holder: int | None) -> str:
    return f"pid {holder}" if holder else "a process still writing its pid"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):  # no such process; no pid is that large
        return False
    except PermissionError:
        return True
    return True


def _unquoted(path: str) -> str:
    """A path as `git log` printed it: as it is, or C-quoted ("a\\001b", "caf\\303\\251") when it holds a
    control character, a quote or a backslash."""
    if len(path) < 2 or not (path.startswith('"') and path.endswith('"')):
        return path
    import codecs

    raw: bytes = codecs.escape_decode(path[1:-1].encode("utf-8", "surrogateescape"))[0]
    return raw.decode("utf-8", "surrogateescape")


def wasm_agent(name: str, ref: str, stage: str, version: str, from_stage: str | None) -> dict[str, Any]:
    """The WasmAgent object a promotion writes (deploy/crds/wasmagents.yaml)."""
    annotations = {"agentfactory.dev/version": version}
    if from_stage:
        annotations["agentfactory.dev/promoted-from"] = from_stage
    return {"apiVersion": "agentfactory.dev/v1alpha1", "kind": "WasmAgent",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/name": name,
                                                  "app.kubernetes.io/part-of": "agentfactory",
                                                  "agentfactory.dev/stage": stage},
                         "annotations": annotations},
            "spec": {"agent": ref, "stage": stage}}
