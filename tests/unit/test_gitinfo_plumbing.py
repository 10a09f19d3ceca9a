"""pipelines.gitinfo through `git` itself (issue 23: GitPython's import cost every `pipeline run` ~50 ms).

Each answer is checked against a real repository made here and against what `git` (or GitPython,
which `ci check` still hands to diff_changes) says.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import git as gitpython
import pytest

from agentfactory.errors import ConfigError
from pipelines.gitinfo import Change, GitView, diff_changes, untracked

AGENT_YAML = "apiVersion: agentfactory.dev/v1\nkind: AgentTemplate\nmetadata:\n  name: {name}\n  version: {version}\n"


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_DATE": "2026-01-02T03:04:05Z", "GIT_COMMITTER_DATE": "2026-01-02T03:04:05Z"}
    return subprocess.run(["git", *args], cwd=repo, env=env, capture_output=True, text=True, check=True).stdout


def make_repo(root: Path) -> Path:
    root.mkdir(parents=True)
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "dev@example.com")
    git(root, "config", "user.name", "Dev")
    for name in ("alpha", "beta"):
        folder = root / "templates" / name
        folder.mkdir(parents=True)
        (folder / "agent.yaml").write_text(AGENT_YAML.format(name=name, version="1.0.0"))
    git(root, "add", "-A")
    git(root, "commit", "-qm", "two templates")
    return root


def test_origin_in_a_repository(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    (repo / "README").write_text("later\n")
    git(repo, "add", "README")
    git(repo, "-c", "core.hooksPath=/dev/null", "commit", "-qm", "not the templates",
        "--date", "2026-02-01T00:00:00Z")
    git(repo, "remote", "add", "upstream", "https://example.com/z.git")
    git(repo, "remote", "add", "origin", "https://example.com/a.git")
    view = GitView(repo / "templates")
    head = git(repo, "rev-parse", "HEAD").strip()
    alpha_commit, alpha_time = git(repo, "log", "-1", "--format=%H %ct", "--", "templates/alpha").split()
    origin = view.origin(repo / "templates" / "alpha")
    assert view.root == repo.resolve()
    assert (origin.commit, origin.template_commit, origin.epoch) == (head, alpha_commit, int(alpha_time))
    assert origin.template_commit != head and origin.path == "templates/alpha" and not origin.dirty
    # the first remote of .git/config, as GitPython's repo.remotes[0] (not `git remote`'s sorted list)
    assert origin.repository == "https://example.com/z.git"
    assert gitpython.Repo(repo).remotes[0].name == "upstream"

    (repo / "templates/alpha/new.c").write_text("int x;\n")
    assert view.origin(repo / "templates" / "alpha").dirty
    assert not view.origin(repo / "templates" / "beta").dirty


def test_a_repository_without_remote_is_named_by_its_folder(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    assert GitView(repo).origin(repo / "templates/beta").repository == repo.resolve().as_uri()


def test_outside_a_repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    folder = tmp_path / "templates" / "alpha"
    folder.mkdir(parents=True)
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))  # the test's own checkout must not be found
    view = GitView(tmp_path / "templates")
    assert view.root is None
    origin = view.origin(folder)
    assert (origin.repository, origin.commit, origin.template_commit, origin.path) == (None, None, None, "alpha")
    assert origin.dirty and origin.epoch == 1700000000
    assert view.version_at("main", folder) is None
    with pytest.raises(ConfigError, match="--changed-since needs the templates folder to be inside a Git"):
        view.changed_since("main", [folder])
    assert GitView(tmp_path / "no" / "such" / "folder").root is None


def test_a_repository_without_commits(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "templates/alpha").mkdir(parents=True)
    (repo / "templates/alpha/agent.yaml").write_text(AGENT_YAML.format(name="alpha", version="1.0.0"))
    git(repo, "init", "-q")
    origin = GitView(repo).origin(repo / "templates/alpha")
    assert origin.commit is None and origin.template_commit is None and origin.dirty


def test_version_at_and_changed_since(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    alpha = repo / "templates/alpha"
    (alpha / "agent.yaml").write_text(AGENT_YAML.format(name="alpha", version="1.1.0"))
    view = GitView(repo / "templates")
    assert view.version_at("main", alpha) == "1.0.0"
    assert view.version_at("main", repo / "templates/gamma") is None
    assert view.changed_since("main", [alpha, repo / "templates/beta"]) == {alpha}
    with pytest.raises(ConfigError, match="--changed-since nope: not a commit in"):
        view.changed_since("nope", [alpha])


def test_diff_changes_takes_a_gitpython_repo_or_any_folder_of_the_work_tree(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    (repo / "templates/beta/new.c").write_text("int y;\n")
    git(repo, "mv", "templates/alpha/agent.yaml", "templates/beta/moved.yaml")
    expected = [Change("R", "templates/beta/moved.yaml", "templates/alpha/agent.yaml"),
                Change("A", "templates/beta/new.c")]
    for where in (gitpython.Repo(repo), repo, repo / "templates" / "beta"):
        found = diff_changes(where, "main")
        assert [(c.status, c.path, c.source) for c in found] == [(c.status, c.path, c.source) for c in expected]
    assert untracked(repo / "templates") == ["templates/beta/new.c"]


def test_git_missing_is_an_error_only_inside_a_repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = make_repo(tmp_path / "repo")
    outside = tmp_path / "outside"
    outside.mkdir()
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert GitView(outside).root is None  # outside any repository git is not needed
    with pytest.raises(ConfigError, match="git is not installed"):
        GitView(repo / "templates")


def test_building_outside_git_never_imports_gitpython(tmp_path: Path) -> None:
    (tmp_path / "templates").mkdir()
    probe = (f"import sys; from pathlib import Path; from pipelines.gitinfo import GitView; "
             f"GitView(Path({str(tmp_path / 'templates')!r})).origin(Path({str(tmp_path)!r})); "
             "print('git' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "False"
