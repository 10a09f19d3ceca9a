"""Benchmarks cannot rot: every benchmarks/bench_*.py runs in smoke mode, and every results page judges its targets.

A benchmark that only `make bench` runs breaks silently (a policy change denies its input, a template rule its
agents, a helper changes shape) and is found broken months later. So each script is run here with
AGENTFACTORY_BENCH_SMOKE=1 (benchmarks/README.md: small sizes and durations, no thresholds, results in a
folder of the test's own): it must exit 0 and write its page and JSON there, never into benchmarks/results.
The list is the folder's, so a new benchmark is covered the day it is added. The committed pages must say
pass or fail for every target they state (or say, on a line opening with "No target:", that they only compare),
and `write_results` refuses to write a page that does not, so a re-run cannot drop a verdict either.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import ROOT

if str(ROOT) not in sys.path:  # `benchmarks` is not an installed package; the benchmark scripts do the same
    sys.path.append(str(ROOT))

from benchmarks.common import NO_TARGET, RESULTS, RESULTS_ENV, SMOKE_ENV, missing_verdicts

BENCHMARKS = sorted((ROOT / "benchmarks").glob("bench_*.py"))
PAGES = sorted(RESULTS.glob("*.md"))


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Each file's (mtime_ns, size): what a run that wrote into the folder would change."""
    return {p.name: (p.stat().st_mtime_ns, p.stat().st_size) for p in folder.iterdir() if p.is_file()}


def bench_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (SMOKE_ENV, RESULTS_ENV)}
    return {**env, **extra}


def run_common(code: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`code` in a fresh interpreter that imports benchmarks/common.py as the scripts do."""
    return subprocess.run([sys.executable, "-c", "import common\n" + code], cwd=ROOT / "benchmarks", env=env,
                          capture_output=True, text=True, check=False)


def bench_recipe() -> list[str]:
    """The lines of the Makefile's `bench` recipe."""
    lines = (ROOT / "Makefile").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("bench:"))
    recipe = []
    for line in lines[start + 1:]:
        if not line.startswith("\t"):
            break
        recipe.append(line)
    return recipe


def test_make_bench_runs_every_benchmark() -> None:
    """`make bench` runs the folder's scripts (by the same glob, or each by name): none is left out of it."""
    assert BENCHMARKS, "no benchmarks/bench_*.py found"
    recipe = bench_recipe()
    if any("benchmarks/bench_*.py" in line for line in recipe):
        return
    named = {word.removeprefix("benchmarks/") for line in recipe for word in line.split()
             if word.startswith("benchmarks/bench_")}
    names = {p.name for p in BENCHMARKS}
    assert named <= names, f"make bench runs scripts that do not exist: {sorted(named - names)}"
    assert names <= named, f"make bench does not run: {sorted(names - named)}"


@pytest.mark.toolchain
@pytest.mark.parametrize("script", BENCHMARKS, ids=[p.stem for p in BENCHMARKS])
def test_benchmark_smoke_run(script: Path, tmp_path: Path) -> None:
    """The script works end to end at smoke sizes and reports into the given folder, not the committed one."""
    out = tmp_path / "results"
    before = snapshot(RESULTS)
    proc = subprocess.run([sys.executable, str(script)], cwd=ROOT, env=bench_env(**{SMOKE_ENV: "1",
                                                                                    RESULTS_ENV: str(out)}),
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, (f"{script.name} failed in smoke mode (exit {proc.returncode}):\n"
                                  f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    pages = sorted(out.glob("*.md")) if out.is_dir() else []
    assert pages, f"{script.name} wrote no results page into {RESULTS_ENV}={out}:\n{proc.stdout[-2000:]}"
    for page in pages:
        data = json.loads(page.with_suffix(".json").read_text())
        assert data.get("smoke") is True, f"{page.with_suffix('.json')}: not marked as a smoke run"
        lines = page.read_text().splitlines()
        assert lines[0].startswith("> Smoke run"), f"{page}: no smoke banner on its first line"
        assert missing_verdicts(lines) == [], f"{page}: {missing_verdicts(lines)}"
    after = snapshot(RESULTS)
    touched = [name for name in after if before.get(name) != after[name]
               and Path(name).stem in {p.stem for p in pages}]
    assert not touched, f"{script.name} wrote the committed results in smoke mode: {touched}"


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_committed_results_judge_their_targets(page: Path) -> None:
    assert missing_verdicts(page.read_text().splitlines()) == []


# -- the rules themselves -------------------------------------------------------------------------------
@pytest.mark.parametrize(("lines", "why"), [
    (["# x", "", "Target ≤ 1 ms p50: measured 2 ms."], "a target without pass/fail"),
    (["- goal: at most 20 % lost (kept 60 %)", "Other: **pass**"], "a target without pass/fail"),
    (["| case | p50 | target |", "| --- | ---: | ---: |", "| a | 1 ms | ≤ 1 ms: **pass** |", "| b | 3 ms | ≤ 1 ms |"],
     "a row of a table with a target column"),
    (["| measure | seconds |", "| --- | --- |", "| scan (target ≤ 1 s) | 0.03 |", "", "x: **pass**"],
     "a target without pass/fail"),
    (["# A comparison", "", "| a | b |", "| --- | --- |", "| 1 | 2 |"], "no pass/fail anywhere"),
    (["# x", "", f"  {NO_TARGET} not at the start of the line"], "no pass/fail anywhere"),
])
def test_missing_verdicts_finds(lines: list[str], why: str) -> None:
    problems = missing_verdicts(lines)
    assert problems and any(why in p for p in problems), problems


@pytest.mark.parametrize("lines", [
    ["# x", "", "Target ≤ 1 ms p50: **FAIL**."],
    ["Throughput kept: 68 % (goal: at most 20 % lost: **fail**)."],
    ["| case | p50 | target (p50) |", "| --- | ---: | ---: |", "| a | 1 ms | ≤ 1 ms: **pass** |", "",
     "Below the table a line without a verdict."],
    ["# A comparison", "", "| a | b |", "| --- | --- |", "| 1 | 2 |", "", f"{NO_TARGET} a comparison."],
])
def test_missing_verdicts_accepts(lines: list[str]) -> None:
    assert missing_verdicts(lines) == []


def test_smoke_refuses_the_committed_results_folder() -> None:
    before = snapshot(RESULTS)
    proc = run_common("common.write_results('smoke-guard', {}, ['No target: a test.'])",
                      bench_env(**{SMOKE_ENV: "1", RESULTS_ENV: str(RESULTS)}))
    assert proc.returncode != 0
    assert "must not replace the committed results" in proc.stderr
    assert snapshot(RESULTS) == before
    assert not (RESULTS / "smoke-guard.md").exists()


def test_smoke_without_a_folder_writes_to_a_new_temporary_one() -> None:
    proc = run_common("common.write_results('smoke-temp', {}, ['No target: a test.'])", bench_env(**{SMOKE_ENV: "1"}))
    assert proc.returncode == 0, proc.stderr
    written = Path(proc.stdout.strip().splitlines()[-1].removeprefix("results: ").removesuffix(".{json,md}"))
    try:
        assert written.parent != RESULTS and written.with_suffix(".md").is_file()
    finally:
        for suffix in (".md", ".json"):
            written.with_suffix(suffix).unlink(missing_ok=True)
        written.parent.rmdir()


def test_smoke_variable_must_be_0_or_1() -> None:
    proc = run_common("pass", bench_env(**{SMOKE_ENV: "yes"}))
    assert proc.returncode != 0 and f"{SMOKE_ENV}='yes'" in proc.stderr


def test_a_page_without_verdicts_is_written_then_fails(tmp_path: Path) -> None:
    """A full run keeps its figures but fails: the script's report lost a verdict."""
    proc = run_common("common.write_results('no-verdict', {'x': 1}, ['Target ≤ 1 ms: measured 2 ms.'])",
                      bench_env(**{RESULTS_ENV: str(tmp_path)}))
    assert proc.returncode != 0 and "a target without pass/fail" in proc.stderr
    assert (tmp_path / "no-verdict.md").is_file() and json.loads((tmp_path / "no-verdict.json").read_text()) == {"x": 1}


@pytest.mark.parametrize("payload", [b"", b"REGOBUND", b"REGOBUND\x01\x02" + bytes(10), b"NOTABUND" + bytes(12)],
                         ids=["empty", "magic only", "another binary version", "another magic"])
def test_bundle_locals_reads_only_a_whole_rego_cpp_header(payload: bytes) -> None:
    """bench_policy prices a bundle's locals from its header; a short or foreign header is "not measured", never a
    crash or a number read from the wrong bytes."""
    from benchmarks.bench_policy import bundle_locals

    assert bundle_locals(payload) is None
    assert bundle_locals(b"REGOBUND\x01\x01\x02" + bytes(5) + (2294).to_bytes(4, "little")) == 2294
