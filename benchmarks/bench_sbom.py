"""SBOM benchmarks: build and validate the CycloneDX SBOM of each example, and of 1000 dependencies.

cyclonedx-python-lib validation is known to be slow on large BOMs (FIELD.md: #862, #1006), so it is
measured on a synthetic template with 1000 vendored dependencies beside the real examples. The
one-off costs are measured apart, each in a fresh interpreter: importing jsonschema (its format
extras, pulled in by cyclonedx-python-lib[json-validation], build a grammar at import) and the
validator's first use (it loads and compiles the schema).
Writes benchmarks/results/sbom.json and sbom.md.
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import NO_TARGET, sized, write_results  # noqa: E402

from agentfactory.errors import InputError  # noqa: E402
from agentfactory.template import Dependency, Template, load_template  # noqa: E402
from pipelines import sbom  # noqa: E402
from pipelines.toolchain import identity  # noqa: E402

REPEAT = sized(9, 1)
REPEAT_LARGE = sized(5, 1)
SYNTHETIC = sized((100, 1000), (10, 50))  # vendored dependencies of the synthetic templates
FRESH_RUNS = sized(3, 1)  # fresh interpreters per one-off cost
DIGEST = "sha256:" + "ab" * 32
EPOCH = 1_700_000_000
COMMIT = "0123456789abcdef0123456789abcdef01234567"
LICENCES = ("MIT", "Apache-2.0", "BSD-3-Clause", "MIT OR Apache-2.0", "Apache-2.0 WITH LLVM-exception")


def median_s(fn: Callable[[], object], repeat: int) -> tuple[float, float]:
    """Median and minimum seconds of `repeat` calls, after one warm-up call."""
    fn()
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        runs.append(time.perf_counter() - start)
    return statistics.median(runs), min(runs)


def synthetic(base: Template, count: int) -> Template:
    """`base` with `count` vendored dependencies: distinct purls, a mix of licence ids and expressions."""
    deps = tuple(Dependency(name=f"dep{i:04d}", version=f"1.{i}.0", purl=f"pkg:generic/acme/dep{i:04d}@1.{i}.0",
                            license=LICENCES[i % len(LICENCES)], path=f"vendor/dep{i:04d}",
                            sha256=f"{i:064x}") for i in range(count))
    return dataclasses.replace(base, name=f"synthetic-{count}", dependencies=deps)


def bench_template(label: str, t: Template) -> dict[str, Any]:
    tool = identity(t.language)

    def build() -> bytes:
        return sbom.build_sbom(t, digest=DIGEST, toolchain=tool, epoch=EPOCH, commit=COMMIT)

    data = build()
    assert data == build(), "build_sbom is not deterministic"
    sbom.validate_sbom(data, label)
    repeat = REPEAT_LARGE if len(t.dependencies) >= 100 else REPEAT
    build_med, build_min = median_s(build, repeat)
    validate_med, validate_min = median_s(lambda: sbom.validate_sbom(data, label), repeat)
    subject_med, _ = median_s(lambda: sbom.sbom_subject(data, label), repeat)
    return {"template": label, "dependencies": len(t.dependencies), "bytes": len(data),
            "build_s": build_med, "build_min_s": build_min,
            "validate_s": validate_med, "validate_min_s": validate_min, "subject_s": subject_med}


def bench_hostile() -> dict[str, Any]:
    """Worst case the array bound admits (one array of tiny objects at the limit), and a refusal."""
    def doc(count: int) -> bytes:
        components = [{"type": "library", "name": f"c{i}"} for i in range(count)]
        return json.dumps({"bomFormat": "CycloneDX", "specVersion": "1.6", "version": 1,
                           "components": components}).encode()

    # the worst case takes seconds to validate: a smoke run validates a small array, and refuses a real oversized one
    admitted = sized(sbom.MAX_ARRAY_ITEMS, 100)
    at_limit, over = doc(admitted), doc(2 * sbom.MAX_ARRAY_ITEMS)

    def refuse() -> None:
        try:
            sbom.validate_sbom(over, "over")
        except InputError:
            return
        raise AssertionError("an SBOM over the array bound was accepted")

    limit_med, _ = median_s(lambda: sbom.validate_sbom(at_limit, "at-limit"), REPEAT_LARGE)
    refuse_med, _ = median_s(refuse, REPEAT)
    return {"max_array_items": sbom.MAX_ARRAY_ITEMS, "at_limit_items": admitted, "at_limit_bytes": len(at_limit),
            "at_limit_validate_s": limit_med,
            "over_limit_bytes": len(over), "over_limit_refuse_s": refuse_med}


def fresh_interpreter_s(code: str, env: dict[str, str] | None = None) -> float:
    """Median wall time of `code` in a fresh interpreter, minus a bare interpreter's start-up."""
    def run(src: str) -> float:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", src], cwd=ROOT, check=True, env={**os.environ, **(env or {})})
        return time.perf_counter() - start

    runs = [run(code) - run("pass") for _ in range(FRESH_RUNS)]
    return max(0.0, statistics.median(runs))


def one_off_costs() -> dict[str, float]:
    no_grammar = "import sys; sys.modules['rfc3987_syntax'] = None; "
    first_use = ("from pipelines import sbom; import time; data = open({path!r}, 'rb').read(); "
                 "t = time.perf_counter(); sbom.validate_sbom(data, 'x'); print(time.perf_counter() - t)")
    sample = ROOT / "tests" / "fixtures" / "cyclonedx" / "valid-minimal-viable-1.6.json"
    out = subprocess.run([sys.executable, "-c", first_use.format(path=str(sample))], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    return {
        "import_jsonschema_s": fresh_interpreter_s("import jsonschema"),
        "import_jsonschema_without_rfc3987_syntax_s": fresh_interpreter_s(no_grammar + "import jsonschema"),
        "import_pipelines_sbom_s": fresh_interpreter_s("import pipelines.sbom"),
        "validator_first_use_s": float(out.strip()),
    }


def main() -> None:
    examples = sorted(p for p in (ROOT / "templates").iterdir() if (p / "agent.yaml").is_file())
    rows = [bench_template(p.name, load_template(p)) for p in examples]
    wordstats = load_template(ROOT / "templates" / "wordstats")
    rows += [bench_template(f"synthetic, {n} deps", synthetic(wordstats, n)) for n in SYNTHETIC]
    hostile = bench_hostile()
    once = one_off_costs()
    result = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "cyclonedx_python_lib": _version("cyclonedx-python-lib"),
        "jsonschema": _version("jsonschema"),
        "repeat": REPEAT, "repeat_large": REPEAT_LARGE,
        "templates": rows,
        "hostile": hostile,
        "one_off": once,
    }
    small, large = rows[-2], rows[-1]
    lines = [
        "# SBOM benchmark",
        "",
        f"Machine: {os.cpu_count()} CPUs, Python {platform.python_version()}, cyclonedx-python-lib "
        f"{result['cyclonedx_python_lib']}, jsonschema {result['jsonschema']}. In-process, median of {REPEAT} runs "
        f"({REPEAT_LARGE} for the synthetic templates) after a warm-up; the validator is already compiled.",
        "",
        "| template | deps | SBOM size | build_sbom | validate_sbom | sbom_subject |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        *(f"| {r['template']} | {r['dependencies']} | {r['bytes'] / 1024:.1f} KiB | {ms(r['build_s'])} | "
          f"{ms(r['validate_s'])} | {ms(r['subject_s'])} |" for r in rows),
        "",
        f"- {large['dependencies']} dependencies: build {ms(large['build_s'])}, strict schema validation "
        f"{ms(large['validate_s'])} ({large['validate_s'] / large['build_s']:.1f}x the build); from "
        f"{small['dependencies']} to {large['dependencies']} dependencies validation grows "
        f"{large['validate_s'] / small['validate_s']:.0f}x: the schema's uniqueItems compares array objects pairwise.",
        f"- Hence the bound in `validate_sbom` ({hostile['max_array_items']} objects per array): the worst document "
        f"it admits ({hostile['at_limit_items']} tiny components, {hostile['at_limit_bytes'] / 1024:.0f} KiB) "
        f"validates in {ms(hostile['at_limit_validate_s'])}; twice as many are refused in "
        f"{ms(hostile['over_limit_refuse_s'])} (unbounded, 4000 took 11 s and 16 MiB would take days).",
        f"- One-off, per process: the validator's first use (schema load + compile) "
        f"{ms(once['validator_first_use_s'])}; `import jsonschema` {ms(once['import_jsonschema_s'])} "
        f"({ms(once['import_jsonschema_without_rfc3987_syntax_s'])} with `rfc3987_syntax` blocked: when that "
        "package is installed, by cyclonedx-python-lib's [json-validation] extra, it builds a grammar at import "
        "and costs about 1 s, which is why the project depends on the library without that extra); "
        f"`import pipelines.sbom` {ms(once['import_pipelines_sbom_s'])} (it imports agentfactory.template, "
        "hence jsonschema).",
        "",
        f"{NO_TARGET} these figures size the SBOM step and explain the array bound; nothing here is judged.",
        "",
    ]
    write_results("sbom", result, lines)


def ms(seconds: float) -> str:
    """A duration for the table, in the unit that keeps it readable."""
    if seconds < 1e-3:
        return f"{seconds * 1e6:.0f} µs"
    return f"{seconds * 1000:.1f} ms" if seconds < 1 else f"{seconds:.2f} s"


def _version(dist: str) -> str:
    from importlib.metadata import version

    return version(dist)


if __name__ == "__main__":
    main()
