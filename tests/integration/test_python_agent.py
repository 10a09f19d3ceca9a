"""The example Python agent (examples/python/ticket-triage) through the whole chain, for real: componentize-py builds
it, the test stage runs its cases, the pipeline signs, scans and logs its evidence, and the node verifies,
compiles (once, then from its HMAC-checked cache) and runs it.

The build takes ~40 s and the first compile ~12 s of CPU, so the module builds once and its tests share it.
`test_node_figures` prints the first-compile, cached-load and warm-invocation times (pytest -s shows them).
"""

from __future__ import annotations

import base64
import json
import shutil
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import PYTHON_EXAMPLE, git
from runtime_helpers import Signed, signed_store

from agentfactory import evidence, wit
from agentfactory.intoto import CYCLONEDX_BOM, SLSA_PROVENANCE_V1
from agentfactory.wasm import inspect_component
from pipelines.run import PipelineReport, Signing, TemplateResult, run_pipeline
from sandbox_runtime.runtime import Compiling, Runtime, RuntimeConfig
from sandbox_runtime.sandbox import Invocation

pytestmark = pytest.mark.toolchain

TICKET = b'{"subject": "Site down", "body": "The dashboard is not loading, 503 for everyone."}'


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, toolchain_cache: Path) -> Iterator[tuple[Signed, TemplateResult]]:
    root = tmp_path_factory.mktemp("python-agent")
    shutil.copytree(PYTHON_EXAMPLE, root / "templates" / "ticket-triage")
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "ticket-triage")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AGENTFACTORY_HOME", str(root / "home"))
        mp.setenv("AGENTFACTORY_TOOLCHAIN_CACHE", str(toolchain_cache))
        signed = signed_store(root / "home")
        report: PipelineReport = run_pipeline(root / "templates", signed.store, signing=Signing(signed.keyring),
                                              engine=signed.engine)
        [result] = report.templates
        assert result.status == "built", result.errors
        yield signed, result


def test_the_pipeline_builds_tests_and_signs_it(built: tuple[Signed, TemplateResult]) -> None:
    _, result = built
    assert result.tests == {"passed": 10, "total": 10}
    assert result.evidence["signed"] is True and result.evidence["score"] == 10.0
    toolchain = result.build["toolchain"]
    assert toolchain["name"] == "componentize-py" and toolchain["version"] == "0.25.1"
    assert toolchain["world"] == wit.WORLD_ID and toolchain["stubWasi"] is True
    assert toolchain["reproducibility"]["reproducible"] is True
    assert result.build["compile"]["componentModel"] is True
    assert result.build["compile"]["budget"]["seconds"] == 60.0
    assert {"src/triage.py", "vendor/triagerules/__init__.py"} <= set(result.build["inputs"])
    assert result.build["agent"]["entrypoint"] == "run" and result.build["agent"]["tools"] == ["log.write"]


def test_the_sbom_lists_the_vendored_python_package(built: tuple[Signed, TemplateResult]) -> None:
    signed, result = built
    stored = signed.store.resolve(f"ticket-triage@{result.digest}")
    statements = [json.loads(base64.b64decode(json.loads(doc)["payload"]))
                  for _, doc in evidence.collect(signed.store, stored).attestations]
    [bom] = [s["predicate"] for s in statements if s["predicateType"] == CYCLONEDX_BOM]
    purls = {c.get("purl") for c in bom["components"]}
    assert "pkg:generic/agentfactory/triagerules@1.0.0" in purls
    [provenance] = [s["predicate"] for s in statements if s["predicateType"] == SLSA_PROVENANCE_V1]
    assert "componentize-py" in json.dumps(provenance) and '"reproducible": true' in json.dumps(provenance)


def test_the_published_component_imports_only_its_declared_tool(built: tuple[Signed, TemplateResult]) -> None:
    signed, result = built
    _, data = signed.store.fetch_wasm(f"ticket-triage@{result.digest}")
    info = inspect_component(data, "ticket-triage")
    assert [(i.name, i.functions()) for i in info.imports] == [(wit.TOOLS_IMPORT, {"log": "func(msg: string)"})]
    assert wit.world_problems(info, ["log.write"]) == []
    assert wit.world_problems(info, []) != []  # the same bytes under a contract without log.write: refused


def test_node_figures(built: tuple[Signed, TemplateResult], tmp_path: Path) -> None:
    signed, _ = built
    config = RuntimeConfig(cache_dir=tmp_path / "cache", audit_log=tmp_path / "audit.jsonl")
    first = Runtime(signed.store, signed.trust, signed.engine, config)
    try:
        started = time.perf_counter()
        assert first.prepare("ticket-triage").module_source == "compiled"
        compile_s = time.perf_counter() - started
    finally:
        first.close()
    second = Runtime(signed.store, signed.trust, signed.engine, config)
    try:
        started = time.perf_counter()
        assert second.prepare("ticket-triage").module_source == "disk"
        cached_s = time.perf_counter() - started
        result = second.invoke("ticket-triage", Invocation(stdin=TICKET))
        ex = result.execution
        assert ex.outcome == "ok" and json.loads(ex.stdout) == {
            "category": "outage", "matched": ["down", "503", "not loading"], "priority": "high",
            "urgent": ["everyone"]}
        assert ex.tool_log == b"triaged as outage/high\n"
        warm = [second.invoke("ticket-triage", Invocation(stdin=TICKET)).seconds for _ in range(20)]
        broken = second.invoke("ticket-triage", Invocation(stdin=b'{"subject": ')).execution
        assert (broken.outcome, broken.exit_code) == ("error", 1) and b"not valid JSON" in broken.stderr
    finally:
        second.close()
    print(f"\nticket-triage on this node: first compile {compile_s:.2f} s, cached load {cached_s * 1000:.0f} ms, "
          f"warm invocation p50 {statistics.median(warm) * 1000:.2f} ms (max {max(warm) * 1000:.2f} ms)")
    events = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [e["outcome"] for e in events if e["event"] == "execution"][:2] == ["ok", "ok"]


def test_a_request_never_waits_for_the_compile(built: tuple[Signed, TemplateResult], tmp_path: Path) -> None:
    signed, _ = built
    rt = Runtime(signed.store, signed.trust, signed.engine,
                 RuntimeConfig(cache_dir=tmp_path / "cache", background_compile=True))
    try:
        with pytest.raises(Compiling) as first:
            rt.invoke("ticket-triage", Invocation(stdin=TICKET))
        assert "ticket-triage@sha256:" in str(first.value) and "retry" in str(first.value)
        assert rt.compiler is not None and rt.compiler.active(first.value.job.key) is not None  # answered mid-compile
        while True:  # the compile finishes in the background, under its own CPU budget
            try:
                assert rt.invoke("ticket-triage", Invocation(stdin=TICKET)).execution.outcome == "ok"
                break
            except Compiling:
                time.sleep(0.2)
    finally:
        rt.close()
