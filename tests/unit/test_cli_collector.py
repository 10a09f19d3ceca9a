"""The console script pauses Python's collector only while a command is found and imported (collector.py).

The class of bug: a start-up speed-up that leaves a command, a long-running server above all, running
with the collector off (cycles never freed), or that changes the collector of a process that merely
imports `agentfactory.cli`. Each case runs `main()` in a fresh interpreter, as the console script does.
"""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap

from click.testing import CliRunner

from agentfactory.cli import cli, collector

# A command that reports what the collector looks like from inside it, registered the way a plane is.
PROBE = textwrap.dedent("""
    import gc, sys
    import click
    from agentfactory.cli import cli, main

    def report():
        print(f"enabled={gc.isenabled()} frozen={gc.get_freeze_count() > 0}")

    cli.add_command(click.Command("probe", callback=report))
    group = click.Group("plain")  # a third-party group: not one of ours
    group.add_command(click.Command("probe", callback=report))
    cli.add_command(group)
    sys.argv = ["agentfactory", *sys.argv[1:]]
    try:
        main()
    except SystemExit as exc:
        print(f"exit={exc.code} after: enabled={gc.isenabled()}")
""")


def _run(*args: str) -> str:
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_a_command_runs_with_the_collector_on_and_start_up_objects_frozen() -> None:
    out = _run("probe")
    assert "enabled=True frozen=True" in out
    assert "exit=0 after: enabled=True" in out


def test_a_command_of_a_plain_click_group_runs_with_the_collector_on() -> None:
    assert "enabled=True frozen=True" in _run("plain", "probe")


def test_a_run_that_reaches_no_command_turns_the_collector_back_on() -> None:
    assert "after: enabled=True" in _run("--help")
    assert "exit=2 after: enabled=True" in _run("no-such-command")


def test_importing_and_invoking_the_cli_in_process_leaves_the_collector_alone() -> None:
    frozen = gc.get_freeze_count()
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0, result.output
    assert gc.isenabled()
    assert gc.get_freeze_count() == frozen


def test_a_collector_the_caller_turned_off_stays_off() -> None:
    gc.disable()
    try:
        collector.pause()
        collector.resume()
        assert not gc.isenabled()
    finally:
        gc.enable()
