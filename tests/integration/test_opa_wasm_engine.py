"""The opa-wasm engine: the policies compiled by the real OPA to Wasm, evaluated in-process, failing closed.

That it decides exactly as `opa eval` on the whole corpus is tests/integration/test_opa_differential.py.
Here: the host's sprintf against OPA's own on values of every kind, the compiled-module cache (reused,
refused when tampered), config overrides without a compile, and every way the engine can fail: no OPA,
a policy that does not compile, a host builtin it does not implement, a builtin that errors or a trap in
the middle of a decision (refused, and the next decision is judged), threads.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from peer_tools import require

from agentfactory.cli import cli as cli_main
from agentfactory.errors import ConfigError
from agentfactory.gofmt import loads_numbers_as_text, sprintf
from agentfactory.policy_cache import PolicyCache
from agentfactory.policy_select import open_engine
from agentfactory.policy_wasm import OPAWasmEngine, compile_key, opa_version

ROOT = Path(__file__).resolve().parents[2]
POLICIES = ROOT / "policies"
EXAMPLES = ROOT / "examples/inputs/policy"


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "policy-cache"
    monkeypatch.setenv("AGENTFACTORY_POLICY_CACHE", str(cache))
    return cache


@pytest.fixture(scope="module")
def opa() -> Path:
    return require("opa")


def example(name: str) -> dict[str, Any]:
    return json.loads((EXAMPLES / name).read_text())


def policies_with(tmp_path: Path, rule: str) -> Path:
    """A copy of policies/ with `rule` added to the template policy."""
    folder = tmp_path / "policies"
    shutil.copytree(POLICIES, folder, ignore=shutil.ignore_patterns("*_test.rego"))
    with (folder / "template.rego").open("a") as f:
        f.write("\n" + rule + "\n")
    return folder


def refused_then_judged(engine: OPAWasmEngine, flag: str, reason: str) -> None:
    """The template example with `flag` set is refused, naming `reason`; the next decision, without it, allows."""
    assert engine.broken is None, engine.broken
    document = example("template.json")
    bad = engine.decide("template", {**document, flag: True})
    assert bad.refused and not bad.allow and reason in bad.deny[0], bad
    assert engine.decide("template", document).allow


def test_it_decides_the_examples_and_says_why(opa: Path) -> None:
    engine = OPAWasmEngine(POLICIES, opa=opa)
    assert engine.broken is None, engine.broken
    for policy in ("template", "artifact", "admission"):
        allowed = engine.decide(policy, example(f"{policy}.json"))
        denied = engine.decide(policy, example(f"{policy}-denied.json"))
        assert allowed.allow and not allowed.deny and not allowed.refused, allowed
        assert not denied.allow and denied.deny and not denied.refused, denied


# Values of every kind through %s, %v and %d, as OPA's sprintf turns them into text (numbers kept as written).
SPRINTF_CASES: list[tuple[str, str]] = [
    ("%s|%v|%d", '["a\\"b\\\\c", 10, 10]'),
    ("%v %v %v %v", '[10.0, 2.5, 1e21, 0.00001]'),
    ("%v %v %v", '[1000000.5, 123456.0, -0.25]'),
    ("%d %d %s", '[10.0, "x", 3]'),
    ("%v", '[18446744073709551617]'),
    ("%v", '[{"b": [1, true, null], "a": {"z": "\\u2028\\u0007\\n\\u00e9\\ud83d\\ude00"}}]'),
    ("%s and %v", '[[], {}]'),
    ("%v %v", '[true, null]'),
    ("100%% %s", '["sure"]'),
    ("%s %s", '["one"]'),
    ("%s", '["a", "b", 3]'),
    ("%v", '["\\u0000\\u007f\\u0085\\u00a0\\u200b\\ufeff"]'),
]


def test_the_host_sprintf_writes_what_opa_writes(opa: Path, tmp_path: Path) -> None:
    """Each case through `opa eval` (the Go implementation) and through agentfactory.gofmt: the same text."""
    docs = [{"format": f, "args": json.loads(a)} for f, a in SPRINTF_CASES]
    (tmp_path / "input.json").write_text(json.dumps({"cases": docs}))
    proc = subprocess.run([str(opa), "eval", "--format", "json", "-i", str(tmp_path / "input.json"),
                           "[sprintf(c.format, c.args) | some c in input.cases]"], capture_output=True, check=True)
    theirs = json.loads(proc.stdout)["result"][0]["expressions"][0]["value"]
    ours = [sprintf(f, loads_numbers_as_text(a)) for f, a in SPRINTF_CASES]
    assert ours == theirs


SPLIT_CASES: list[tuple[str, str]] = [
    (r"[\s()]+", "(MIT OR Apache-2.0) AND BSD"), (r"[\s()]+", ""), (r"[\s()]+", "\u2028 \v(x)\t"),
    (",", "a,"), ("(,)", "a,b"), ("x*", "abc"), (",", ",a,,b,"), (r"\d+", "a1b22c٣d"), (r"\w+", "é-a_b"),
    (r"[^]\s]+", "a]b c"),
]


def test_the_host_regex_split_splits_as_opa_does(opa: Path, tmp_path: Path) -> None:
    r"""Go's regexp.Split with RE2's ASCII classes (U+2028, \v and Arabic digits are not \s or \d to Go), capture
    groups and empty matches, against `opa eval`."""
    from agentfactory.policy_wasm import HOST_BUILTINS

    (tmp_path / "input.json").write_text(json.dumps({"cases": [{"p": p, "t": t} for p, t in SPLIT_CASES]}))
    proc = subprocess.run([str(opa), "eval", "--format", "json", "-i", str(tmp_path / "input.json"),
                           "[regex.split(c.p, c.t) | some c in input.cases]"], capture_output=True, check=True)
    theirs = json.loads(proc.stdout)["result"][0]["expressions"][0]["value"]
    split = HOST_BUILTINS["regex.split"][1]
    assert [split(p, t) for p, t in SPLIT_CASES] == theirs


def test_the_host_regex_builtins_are_re2_on_inputs_that_make_a_backtracking_engine_quadratic(
        opa: Path, tmp_path: Path) -> None:
    """A template's preopen hostPath reaches `regex.replace(hp, "/+$", "")`. With Python's backtracking `re`, 64 KiB
    of "/" and one "x" took 9 s a decision (quadratic): an input string could stall every thread that judges. The
    builtins are RE2 (Go's engine, linear in the input), and on such inputs they give OPA's results; then the
    whole decision, with that hostPath, is OPA's."""
    from agentfactory.policy_wasm import HOST_BUILTINS, re2_pattern

    assert type(re2_pattern("/+$")).__module__.startswith("re2"), "not RE2: no linear-time guarantee"
    slashes, spaces = "/" * 65536 + "x", " " * 65536 + "x"
    (tmp_path / "input.json").write_text(json.dumps({"slashes": slashes, "spaces": spaces}))
    proc = subprocess.run([str(opa), "eval", "--format", "json", "-i", str(tmp_path / "input.json"),
                           '[regex.replace(input.slashes, "/+$", ""), regex.split(`[\\s()]+`, input.spaces)]'],
                          capture_output=True, check=True)
    theirs = json.loads(proc.stdout)["result"][0]["expressions"][0]["value"]
    ours = [HOST_BUILTINS["regex.replace"][1](slashes, "/+$", ""), HOST_BUILTINS["regex.split"][1](r"[\s()]+", spaces)]
    assert ours == theirs
    document = example("template.json")
    document["template"]["spec"]["capabilities"]["wasi"]["preopens"] = [
        {"hostPath": "/srv" + slashes[:65000] + "x", "guestPath": "/data", "readOnly": True}]  # within the boundary
    (tmp_path / "template.json").write_text(json.dumps(document))
    bundle = tmp_path / "bundle.tar.gz"
    from agentfactory.policy_bundle import build_bundle

    build_bundle(POLICIES, bundle)
    proc = subprocess.run([str(opa), "eval", "--format", "json", "--strict-builtin-errors", "-b", str(bundle), "-i",
                           str(tmp_path / "template.json"), "data.agentfactory.template.decision"],
                          capture_output=True, check=True)
    opa_decision = json.loads(proc.stdout)["result"][0]["expressions"][0]["value"]
    decision = OPAWasmEngine(POLICIES, opa=opa).decide("template", document)
    assert not decision.refused and (decision.allow, list(decision.deny)) == \
        (opa_decision["allow"], sorted(opa_decision["deny"])), decision


def test_the_compiled_module_is_cached_and_a_tampered_one_is_refused(opa: Path, own_cache: Path) -> None:
    first = OPAWasmEngine(POLICIES, opa=opa)
    assert first.broken is None and not first.compiled_from_cache
    second = OPAWasmEngine(POLICIES, opa=opa)
    assert second.broken is None and second.compiled_from_cache
    key = compile_key(POLICIES, opa_version(opa))
    cached = own_cache / key / "policy.cwasm"
    raw = bytearray(cached.read_bytes())
    raw[-100] ^= 0x01  # one bit of the module's code
    cached.write_bytes(bytes(raw))
    third = OPAWasmEngine(POLICIES, opa=opa)
    assert third.broken is None and not third.compiled_from_cache, "the tampered module was loaded"
    assert third.decide("admission", example("admission.json")).allow
    assert PolicyCache(key, own_cache).read("policy.cwasm") is not None, "rebuilt into the cache"


def test_config_overrides_apply_without_a_compile(opa: Path) -> None:
    OPAWasmEngine(POLICIES, opa=opa)
    strict = OPAWasmEngine(POLICIES, opa=opa, config={"max_memory_mib": 1})
    assert strict.compiled_from_cache
    decision = strict.decide("template", example("template.json"))
    assert not decision.allow and any("max_memory_mib" in m for m in decision.deny), decision


def test_without_opa_every_decision_is_refused_naming_it(tmp_path: Path) -> None:
    engine = OPAWasmEngine(POLICIES, opa=tmp_path / "no-opa")
    decision = engine.decide("admission", example("admission.json"))
    assert decision.refused and not decision.allow
    assert "no-opa" in decision.deny[0]


def test_a_policy_that_does_not_compile_refuses_every_decision(opa: Path, tmp_path: Path) -> None:
    engine = OPAWasmEngine(policies_with(tmp_path, "broken if {"), opa=opa)
    decision = engine.decide("template", example("template.json"))
    assert decision.refused and "opa build -t wasm" in decision.deny[0] and "template.rego" in decision.deny[0]


def test_a_host_builtin_it_does_not_implement_is_refused_when_loaded(opa: Path, tmp_path: Path) -> None:
    folder = policies_with(tmp_path, 'deny contains msg if {\n\tmsg := time.format(time.now_ns())\n\tmsg == ""\n}')
    engine = OPAWasmEngine(folder, opa=opa)
    assert engine.broken is not None and "time." in engine.broken and "does not implement" in engine.broken
    assert engine.decide("template", example("template.json")).refused


def test_a_builtin_error_refuses_that_decision_only(opa: Path, tmp_path: Path) -> None:
    """A format the host does not reproduce (%x) errors inside the evaluation: that decision is refused with the
    reason, the instance is replaced, and the next decision is judged."""
    folder = policies_with(tmp_path, 'deny contains msg if {\n\tinput.hex\n\tmsg := sprintf("%x", [255])\n}')
    refused_then_judged(OPAWasmEngine(folder, opa=opa), "hex", "%x")


def test_threads_get_the_same_decisions(opa: Path) -> None:
    engine = OPAWasmEngine(POLICIES, opa=opa)
    inputs = [(p, example(f"{p}{s}.json")) for p in ("template", "artifact", "admission") for s in ("", "-denied")]
    alone = [engine.decide(p, d) for p, d in inputs]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(lambda pd: engine.decide(*pd), inputs * 20))
    assert together == alone * 20


def test_the_engine_is_chosen_by_flag_and_a_url_beside_it_is_refused(opa: Path) -> None:
    assert isinstance(open_engine(POLICIES, engine="opa-wasm"), OPAWasmEngine)
    with pytest.raises(ConfigError, match="opa-wasm"):
        open_engine(POLICIES, engine="opa-wasm", opa_url="http://127.0.0.1:8181")
    result = CliRunner().invoke(cli_main, ["template", "validate", str(ROOT / "templates/wordstats"),
                                           "--policy-engine", "opa-wasm"])
    assert result.exit_code == 0, result.output


def test_an_evaluation_that_exhausts_its_memory_refuses_that_decision_only(opa: Path, tmp_path: Path) -> None:
    """A rule that builds more than the instance's memory allows traps: refused, and the next decision is judged."""
    folder = policies_with(tmp_path, 'deny contains msg if {\n\tinput.huge\n\tcount(numbers.range(1, 100000000)) > 0\n'
                                     '\tmsg := "built"\n}')
    refused_then_judged(OPAWasmEngine(folder, opa=opa), "huge", "opa_abort")


FAKE_OPA = """#!/bin/sh
# An `opa` whose build writes MODULE as policy.wasm: what the engine must refuse when a module is not OPA's.
case "$1" in
  version) echo "Version: 0.0.0-fake" ;;
  build) out=""; while [ $# -gt 0 ]; do [ "$1" = "-o" ] && out="$2"; shift; done
         d=$(mktemp -d); cp "$(dirname "$0")/module.wasm" "$d/policy.wasm"
         tar -czf "$out" -C "$d" policy.wasm ;;
esac
"""


@pytest.mark.parametrize(("wat", "reason"), [
    ('(module (import "env" "memory" (memory 2)))', "does not export opa_eval"),
    ('(module (import "env" "memory" (memory 2)) (import "env" "fetch" (func)))', "imports env.fetch"),
    ("(module)", "imports no memory"),
    ("not wasm at all", "is not valid Wasm"),
])
def test_a_module_that_is_not_opas_refuses_every_decision(tmp_path: Path, wat: str, reason: str) -> None:
    """Whatever `opa build` wrote is checked before any decision: its imports, its exports (a module with neither
    OPA's ABI nor its entrypoints is not evaluated)."""
    import wasmtime

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "module.wasm").write_bytes(wasmtime.wat2wasm(wat) if wat.startswith("(") else wat.encode())
    fake = bin_dir / "opa"
    fake.write_text(FAKE_OPA)
    fake.chmod(0o755)
    engine = OPAWasmEngine(POLICIES, opa=fake)
    assert engine.broken is not None and reason in engine.broken, engine.broken
    decision = engine.decide("admission", example("admission.json"))
    assert decision.refused and not decision.allow and reason in decision.deny[0]
