"""The `agentfactory` group loads what a command needs and no more (issue 23, start-up).

`--help` lists the core commands from CORE_HELP without importing them; the planes' commands are
found in the installed distributions' entry_points.txt without importlib.metadata; each checked
here against what click and importlib.metadata themselves give.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import zipfile
from importlib.metadata import entry_points
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from agentfactory.cli import CORE_COMMANDS, CORE_HELP, cli
from agentfactory.cli.plugins import GROUP, find_commands, parse_group


def load(target: str) -> click.Command:
    module, _, attr = target.partition(":")
    command = getattr(importlib.import_module(module), attr)
    assert isinstance(command, click.Command)
    return command


@pytest.mark.parametrize("name", sorted(CORE_COMMANDS))
def test_core_help_is_the_first_paragraph_of_the_commands_own_help(name: str) -> None:
    command = load(CORE_COMMANDS[name])
    assert not command.hidden and not command.deprecated and command.short_help is None
    first = (command.help or "").split("\n\n")[0]
    assert CORE_HELP[name] == " ".join(first.split())


def test_help_lists_what_click_lists_with_every_command_imported() -> None:
    lazy = CliRunner().invoke(cli, ["--help"], terminal_width=100)
    assert lazy.exit_code == 0, lazy.output
    eager = click.Group(cli.name, help=cli.help, context_settings=cli.context_settings, params=cli.params)
    for name in cli.list_commands(click.Context(cli)):
        command = cli.get_command(click.Context(cli), name)
        assert command is not None, name
        eager.add_command(command, name)
    expected = CliRunner().invoke(eager, ["--help"], terminal_width=100)
    assert lazy.output == expected.output
    assert "verify     May REF run?" in lazy.output and "pipeline   Build, test and publish" in lazy.output


PROBE = """
import json, sys
from agentfactory.cli import CORE_COMMANDS, cli, plugins
if "--no-planes" in sys.argv:  # the planes' modules import core ones of their own: leave them out
    sys.argv.remove("--no-planes")
    plugins.find_commands = lambda: {}
try:
    cli.main(sys.argv[1:], prog_name="agentfactory", standalone_mode=False)
except SystemExit:
    pass
core = {t.partition(":")[0] for t in CORE_COMMANDS.values()}
print(json.dumps(sorted(m for m in sys.modules if m in core)))
"""


def core_modules_loaded_by(*args: str) -> list[str]:
    proc = subprocess.run([sys.executable, "-c", PROBE, "--no-planes", *args], capture_output=True, text=True,
                          check=True)
    return json.loads(proc.stdout.splitlines()[-1])  # type: ignore[no-any-return]


def test_help_imports_no_core_command_module() -> None:
    assert core_modules_loaded_by("--help") == []


def test_a_core_command_imports_only_its_own_module() -> None:
    assert core_modules_loaded_by("policy", "--help") == ["agentfactory.cli.policy_cmd"]


def test_the_planes_commands_are_found_without_importlib_metadata() -> None:
    probe = ("import sys; from agentfactory.cli import cli; cli._find_plugins(); "
             "print(sorted(cli.lazy)); print('importlib.metadata' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    names, metadata_loaded = proc.stdout.splitlines()
    assert "'pipeline'" in names and "'verify'" in names
    assert metadata_loaded == "False"


def test_the_installed_entry_points_are_found_as_importlib_metadata_finds_them() -> None:
    expected = {ep.name: ep.value for ep in entry_points(group=GROUP)}
    assert expected.get("pipeline") == "pipelines.cli:pipeline"
    assert find_commands() == expected


def test_parse_group_reads_one_section() -> None:
    text = """
# a comment (and trailing blanks below, which the value does not keep)
[console_scripts]
pipeline = elsewhere:main

[agentfactory.cli]
 pipeline=pipelines.cli:pipeline
; another comment
ci = pipelines.ci.cli:ci{blanks}
ci = shadowed:ci

[agentfactory.other]
runtime = x:y
""".format(blanks=" \t ")
    assert parse_group(text) == {"pipeline": "pipelines.cli:pipeline", "ci": "pipelines.ci.cli:ci"}


def dist(folder: Path, name: str, body: str | None) -> None:
    meta = folder / name
    meta.mkdir(parents=True)
    if body is not None:
        (meta / "entry_points.txt").write_text(body)


def test_the_first_distribution_of_a_name_on_the_path_wins(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    dist(first, "Agent_Plane-1.0.dist-info", "[agentfactory.cli]\nrun = first.cli:run\n")
    dist(second, "agent.plane-2.0.dist-info", "[agentfactory.cli]\nrun = second.cli:run\nextra = second.cli:x\n")
    dist(second, "other-1.0.egg-info", "[agentfactory.cli]\nother = other.cli:o\n")
    dist(second, "plain-1.0.dist-info", None)  # no entry points at all
    path = [str(first), str(tmp_path / "missing"), str(second)]
    # "agent.plane" in `second` is "Agent_Plane" of `first` (PEP 503 names): shadowed, as importlib.metadata does.
    assert find_commands(path) == {"run": "first.cli:run", "other": "other.cli:o"}
    assert find_commands(path[::-1]) == {"run": "second.cli:run", "extra": "second.cli:x", "other": "other.cli:o"}


def test_a_zip_on_the_path_is_read_by_importlib_metadata(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = tmp_path / "plane.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("zipped_plane-1.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: zipped-plane\nVersion: 1.0\n")
        z.writestr("zipped_plane-1.0.dist-info/entry_points.txt", "[agentfactory.cli]\nzipped = zp.cli:z\n")
    monkeypatch.syspath_prepend(str(archive))
    found = find_commands()
    assert found["zipped"] == "zp.cli:z"
    assert found["pipeline"] == "pipelines.cli:pipeline"
