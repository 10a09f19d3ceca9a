"""Attack: a Python agent reaches for an interface or a tool its template did not declare.

At build, the pipeline reads the sources before componentize-py runs and refuses the import or the call,
naming the file and line; the template policy refuses a component importing a WASI interface or an
undeclared tool by name. At the node, a signed component (an insider's build, bypassing the pipeline)
that imports a WASI interface or a tool its signed contract does not declare is refused naming the
import, before anything is compiled.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from component_helpers import ECHO, LOG, NOW_MS, TOOLS, component, manifest, python_manifest
from helpers import ROOT, write_template
from runtime_helpers import Signed, sign_raw, signed_store

from agentfactory.policy import RegoEngine, template_input
from agentfactory.store import open_store
from agentfactory.template import load_template
from agentfactory.wasm import inspect_component
from agentfactory.wit import as_module
from pipelines.run import run_pipeline
from sandbox_runtime.runtime import Refused, Runtime, RuntimeConfig
from sandbox_runtime.sandbox import Invocation

PY_MANIFEST = python_manifest("sneaky")

WASI_IMPORT = """import wit_world
from wit_world.imports import environment


class WitWorld(wit_world.WitWorld):
    def run(self, input: str) -> str:
        return str(environment.get_environment())
"""

UNDECLARED_CALL = """import wit_world
from wit_world.imports import tools


class WitWorld(wit_world.WitWorld):
    def run(self, input: str) -> str:
        tools.log("fetching")
        return str(tools.http_fetch(None))
"""


@pytest.mark.parametrize(("source", "line", "message"), [
    (WASI_IMPORT, 2, "imports the WIT interface 'environment', which is not in the world agentfactory:agent@0.1.0"),
    (UNDECLARED_CALL, 8, "calls tools.http_fetch, the tool 'http.fetch', which spec.tools does not declare"),
])
def test_the_pipeline_refuses_it_naming_file_and_line(tmp_path: Path, source: str, line: int, message: str) -> None:
    write_template(tmp_path / "templates", "sneaky", manifest=PY_MANIFEST, files={"src/agent.py": source})
    store = open_store(f"oci-layout:{tmp_path}/store")
    report = run_pipeline(tmp_path / "templates", store)
    [result] = report.templates
    assert result.status == "failed" and result.digest is None
    assert any(f"sneaky/src/agent.py:{line}" in e and message in e for e in result.errors), result.errors
    assert store.entries() == []


def test_the_template_policy_refuses_the_component_naming_the_import(tmp_path: Path) -> None:
    folder = write_template(tmp_path, "sneaky", manifest=PY_MANIFEST, files={"src/agent.py": WASI_IMPORT})
    t = load_template(folder)
    wasi = '(import "wasi:cli/environment@0.2.0" (instance (export "get-arguments" (func (result (list string))))))'
    undeclared = f'(import "{TOOLS}" (instance {LOG} {NOW_MS}))'
    engine = RegoEngine(ROOT / "policies")
    for imports, expected in ((wasi, 'the component imports the WASI interface "wasi:cli/environment@0.2.0"'),
                              (undeclared, 'imports host tool "clock.now_ms" from "agentfactory" but spec.tools '
                                           "does not declare it")):
        module = as_module(inspect_component(component(ECHO, imports=imports)))
        decision = engine.decide("template", template_input(t, [], module, None, path="templates/sneaky"))
        assert not decision.allow
        assert any(expected in m for m in decision.deny), decision.deny


@pytest.fixture
def signed(af_home: Path) -> Signed:
    return signed_store(af_home)


@pytest.mark.parametrize(("imports", "named"), [
    ('(import "wasi:cli/environment@0.2.0" (instance (export "get-arguments" (func (result (list string))))))',
     "import 'wasi:cli/environment@0.2.0': a WASI interface"),
    ('(import "wasi:filesystem/preopens@0.2.0" (instance))', "import 'wasi:filesystem/preopens@0.2.0'"),
    (f'(import "{TOOLS}" (instance {LOG} {NOW_MS}))',
     "the component imports the tool 'now-ms' (clock.now_ms), which spec.tools does not declare"),
    (f'(import "{TOOLS}" (instance {LOG} (export "exec" (func (param "cmd" string)))))',
     "'exec' is not a tool of the world agentfactory:agent@0.1.0"),
    ('(import "host:shell/run@1.0.0" (instance))', "not an interface of the world agentfactory:agent@0.1.0"),
])
def test_the_node_refuses_it_before_compiling(signed: Signed, tmp_path: Path, imports: str, named: str) -> None:
    sign_raw(signed, tmp_path / "forged", "sneaky", component(ECHO, imports=imports), manifest("sneaky"))
    rt = Runtime(signed.store, signed.trust, signed.engine, RuntimeConfig(audit_log=tmp_path / "audit.jsonl"))
    try:
        with pytest.raises(Refused) as refused:
            rt.invoke("sneaky", Invocation(stdin=b"x"))
        assert refused.value.reason == "undeclared-tool"
        assert named in str(refused.value) and "refusing to compile it" in str(refused.value)
        assert rt.modules.pool.compiles == 0  # judged on the bounded reading: nothing was compiled
    finally:
        rt.close()
    assert "sneaky" in (tmp_path / "audit.jsonl").read_text()
