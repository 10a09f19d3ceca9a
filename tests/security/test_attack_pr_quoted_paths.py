"""Attack: a pull request changes a template file whose name Git quotes in its plain output
(non-ASCII, `"`, `\\`, control characters), so a line-based parser of `git diff --name-status` never
matches it to its template: `ci check` said "nothing to check" and the release rebuilt the template
with new bytes under the old version.

Every Git path list is now read NUL-separated (`-z`). Each odd name is tried in every state a change
can be in (committed, staged, unstaged, untracked) against the release's `changed_since`, and through
`agentfactory ci check` end to end (the unbumped template is found and refused by T10).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from prcheck_fixtures import checked, ci_json, git, make_repo

from pipelines.gitinfo import Change, GitView, parse_name_status_z

ODD_NAMES = [
    "konfigü.h",            # non-ASCII: quoted as "konfig\303\274.h"
    'quo"te.h',             # a double quote
    "back\\slash.h",        # a backslash
    "new\nline.h",          # a newline: one path over two lines of plain output
    "tab\there.h",          # a tab: the field separator of --name-status
    "sp ace .h",            # spaces, one trailing
    "-leading-dash.h",      # looks like an option
    "\x01ctl.h",            # another control character
    os.fsdecode(b"\xff-latin1.h"),  # a byte that is not UTF-8
    "star*[ab]?.h",         # pathspec glob characters
    ":(top)magic.h",        # pathspec magic
]
IDS = [repr(n) for n in ODD_NAMES]


def _with_odd_file_on_main(repo: Path, name: str) -> Path:
    """The odd file committed in template alpha and made part of the base (`main`)."""
    odd = repo / "templates/alpha/src" / name
    odd.write_text("/* v1 */\n")
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "an odd file")
    git(repo, "branch", "-f", "main", "HEAD")
    return odd


@pytest.mark.parametrize("name", ODD_NAMES, ids=IDS)
@pytest.mark.parametrize("state", ["committed", "staged", "unstaged", "untracked", "deleted"])
def test_the_release_sees_a_change_to_a_file_with_an_odd_name(tmp_path: Path, name: str, state: str) -> None:
    repo = make_repo(tmp_path / "repo")
    templates = repo / "templates"
    if state == "untracked":
        (templates / "alpha/src" / name).write_text("/* new */\n")
    else:
        odd = _with_odd_file_on_main(repo, name)
        if state == "deleted":
            git(repo, "rm", "-q", "--", str(odd))
        else:
            odd.write_text("/* v2: new bytes */\n")
        if state in ("committed", "staged"):
            git(repo, "add", "-A")
        if state == "committed":
            git(repo, "commit", "-qm", "change it")
    folders = [templates / "alpha", templates / "beta"]
    assert GitView(templates).changed_since("main", folders) == {templates / "alpha"}


def test_name_status_z_keeps_every_byte_and_both_sides_of_a_rename(tmp_path: Path) -> None:
    repo = make_repo(tmp_path / "repo")
    src = repo / "templates/alpha/src"
    for i, name in enumerate(ODD_NAMES):
        (src / name).write_text(f"/* file {i}: long enough to be recognised as renamed */\n" * 4)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "odd files")
    git(repo, "branch", "-f", "main", "HEAD")
    for name in ODD_NAMES:
        git(repo, "mv", "--", f"templates/alpha/src/{name}", f"templates/beta/{name}")
    found = parse_name_status_z(git_bytes(repo, "diff", "--cached", "--name-status", "-z", "-M", "main", "--"))
    assert {(c.status, c.source, c.path) for c in found} == {
        ("R", f"templates/alpha/src/{n}", f"templates/beta/{n}") for n in ODD_NAMES}
    assert all(c.paths() == (c.source, c.path) for c in found)


def git_bytes(repo: Path, *args: str) -> bytes:
    return subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True).stdout


def test_a_truncated_name_status_stream_is_an_error_not_a_silent_skip() -> None:
    from agentfactory.errors import ConfigError

    assert parse_name_status_z(b"M\0a b\0R090\0x\0y\0") == [Change("M", "a b"), Change("R", "y", "x")]
    with pytest.raises(ConfigError, match="without two paths"):
        parse_name_status_z(b"R100\0only-one\0")
    with pytest.raises(ConfigError, match="without a path"):
        parse_name_status_z(b"M\0")


@pytest.mark.parametrize("name", ODD_NAMES, ids=IDS)
def test_ci_check_refuses_an_unbumped_change_hidden_behind_an_odd_name(tmp_path: Path, name: str) -> None:
    repo = make_repo(tmp_path / "repo")
    odd = _with_odd_file_on_main(repo, name)
    odd.write_text("/* v2: new bytes, same version */\n")
    git(repo, "commit", "-qam", "change the header, keep the version")
    rc, report = ci_json(repo)
    by_name = checked(report)
    assert set(by_name) == {"alpha"}, report  # never "nothing to check"
    assert by_name["alpha"]["status"] == "failed" and rc == 1
    assert any("bump metadata.version above 1.0.0" in e for e in by_name["alpha"]["errors"])
