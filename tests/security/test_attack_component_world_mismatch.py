"""Attack: a component built against another WIT world than the one the runtime provides.

Another version of the world's interface, a tool of another signature, a `run` of another type or none
at all: the pipeline refuses the built component naming the import or export (and refuses, before any
build, the componentize-py.toml through which a template could bring a world of its own); a node refuses
a signed one naming it, as a world mismatch, before compiling it.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from component_helpers import ECHO, LOG, component, manifest, python_manifest
from helpers import write_template
from runtime_helpers import Signed, sign_raw, signed_store

from agentfactory.store import open_store
from pipelines.run import run_pipeline
from sandbox_runtime.runtime import Refused, Runtime, RuntimeConfig
from sandbox_runtime.sandbox import Invocation

PY_MANIFEST = python_manifest("sneaky")
AGENT = """import wit_world


class WitWorld(wit_world.WitWorld):
    def run(self, input: str) -> str:
        return input
"""

OTHER_WORLD = """package evil:world@1.0.0;
interface shell { exec: func(cmd: string) -> string; }
world agent { import shell; export run: func(input: string) -> result<string, string>; }
"""

MISMATCHES = [
    ({"imports": f'(import "agentfactory:agent/tools@0.2.0" (instance {LOG}))'},
     "import 'agentfactory:agent/tools@0.2.0': not this world's interface agentfactory:agent/tools@0.1.0"),
    ({"imports": '(import "agentfactory:agent/tools@0.1.0" (instance (export "log" (func (param "msg" u32)))))'},
     "log is func(msg: u32), not the world's func(msg: string)"),
    ({"run_type": '(func (param "input" string) (result (result string (error u32))))'},
     "export 'run' is func(input: string) -> result<string, u32>, not the world's"),
    ({"export": "main"}, "the component does not export 'run'"),
]


def test_the_pipeline_refuses_a_world_of_the_templates_own(tmp_path: Path) -> None:
    sources = "[src/agent.py, src/evil/__init__.py]"
    write_template(tmp_path / "templates", "sneaky", manifest=python_manifest("sneaky", tools="[]", sources=sources),
                   files={"src/agent.py": AGENT, "src/evil/componentize-py.toml": "wit_directory = 'wit'\n",
                          "src/evil/wit/world.wit": OTHER_WORLD, "src/evil/__init__.py": ""})
    store = open_store(f"oci-layout:{tmp_path}/store")
    [result] = run_pipeline(tmp_path / "templates", store).templates
    assert result.status == "failed" and store.entries() == []
    assert any("src/evil/componentize-py.toml: componentize-py reads it to add WIT worlds" in e
               for e in result.errors), result.errors


@pytest.mark.parametrize(("shape", "named"), MISMATCHES)
def test_the_build_refuses_a_component_of_another_world(tmp_path: Path, shape: dict[str, str], named: str) -> None:
    from agentfactory.errors import BuildError
    from agentfactory.template import load_template
    from pipelines.pybuild import judge_component

    folder = write_template(tmp_path, "sneaky", manifest=PY_MANIFEST, files={"src/agent.py": AGENT})
    with pytest.raises(BuildError) as refused:
        judge_component(load_template(folder), component(ECHO, **shape), "sneaky (built component)")
    assert named in str(refused.value) and "does not fit the world agentfactory:agent@0.1.0" in str(refused.value)


@pytest.fixture
def signed(af_home: Path) -> Signed:
    return signed_store(af_home)


@pytest.mark.parametrize(("shape", "named"), MISMATCHES)
def test_the_node_refuses_it_as_a_world_mismatch(signed: Signed, tmp_path: Path, shape: dict[str, str],
                                                 named: str) -> None:
    sign_raw(signed, tmp_path / "forged", "other", component(ECHO, **shape), manifest("other"))
    rt = Runtime(signed.store, signed.trust, signed.engine, RuntimeConfig())
    try:
        with pytest.raises(Refused) as refused:
            rt.invoke("other", Invocation(stdin=b"x"))
        assert refused.value.reason == "world-mismatch"
        assert named in str(refused.value) and "refusing to compile it" in str(refused.value)
        assert rt.modules.pool.compiles == 0
    finally:
        rt.close()
