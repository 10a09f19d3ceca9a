"""Python templates: what agent.yaml must say (agentfactory.template) and what may be on an agent's import path
(pipelines.pybuild's checks, which run before componentize-py and need no build)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers import PYTHON_EXAMPLE, write_template

from agentfactory.errors import BuildError, ValidationFailed
from agentfactory.template import Template, load_template
from pipelines.pybuild import check_import_path, check_sources, judge_component

AGENT = """import wit_world
from wit_world.imports import tools


class WitWorld(wit_world.WitWorld):
    def run(self, input: str) -> str:
        tools.log(input)
        return input
"""


def manifest(extra: str = "", tools: str = "[log.write]", python: str = "{module: agent}",
             sources: str = "[src/agent.py]") -> str:
    return f"""apiVersion: agentfactory.dev/v1alpha1
kind: AgentTemplate
metadata:
  name: pyagent
  version: 1.0.0
  description: A Python test agent.
  owners: ["@example/team"]
spec:
  language: python
  sources: {sources}
  python: {python}
  tools: {tools}
  limits:
    memoryMiB: 64
    timeoutMs: 2000
{extra}  tests:
    none: "a test agent: the test suite runs it"
"""


def problems(folder: Path) -> list[str]:
    with pytest.raises(ValidationFailed) as info:
        load_template(folder, "pyagent/agent.yaml")
    return [str(p) for p in info.value.problems]


def test_the_example_python_template_is_valid() -> None:
    t = load_template(PYTHON_EXAMPLE, "ticket-triage/agent.yaml")
    assert t.language == "python" and t.entrypoint == "run" and t.python_module == "triage"
    assert t.python_paths == ("src", "vendor") and t.tools == ("log.write", "http.fetch")
    assert [d.purl for d in t.dependencies] == ["pkg:generic/agentfactory/triagerules@1.0.0"]
    assert t.http is not None and [r.pattern.text for r in t.http.rules] == ["https://models.example.com/v1/*"]
    assert [(s.name, s.hosts) for s in t.http.secrets] == [("model-api-key", ("models.example.com",))]


def test_a_minimal_python_template(tmp_path: Path) -> None:
    t = load_template(write_template(tmp_path, "pyagent", manifest=manifest(), files={"src/agent.py": AGENT}))
    assert t.python_paths == ("src",) and t.entrypoint == "run"


def test_python_needs_its_module_among_the_sources(tmp_path: Path) -> None:
    folder = write_template(tmp_path, "pyagent", manifest=manifest(python="{module: other}"),
                            files={"src/agent.py": AGENT})
    assert any("spec.python.module 'other': none of src/other.py is listed in spec.sources" in p
               for p in problems(folder))


def test_python_gets_no_wasi_and_no_other_entrypoint(tmp_path: Path) -> None:
    extra = "  entrypoint: _start\n  capabilities:\n    wasi:\n      env: [LANG]\n      preopens: []\n"
    folder = write_template(tmp_path, "pyagent", manifest=manifest(extra=extra), files={"src/agent.py": AGENT})
    found = problems(folder)
    assert any("spec.entrypoint: a python agent exports 'run'" in p for p in found)
    assert any("spec.capabilities.wasi.env: a python agent gets no WASI" in p for p in found)


def test_python_section_required_and_only_for_python(tmp_path: Path) -> None:
    no_section = manifest().replace("  python: {module: agent}\n", "")
    folder = write_template(tmp_path, "pyagent", manifest=no_section, files={"src/agent.py": AGENT})
    assert any("spec.python is required for a python template" in p for p in problems(folder))
    c = manifest(sources="[src/main.c]").replace("language: python", "language: c")
    folder = write_template(tmp_path / "c", "pyagent", manifest=c, files={"src/main.c": "int main(void){return 0;}"})
    assert any("spec.python is only for python templates" in p for p in problems(folder))


def test_python_sources_must_be_python(tmp_path: Path) -> None:
    folder = write_template(tmp_path, "pyagent", manifest=manifest(sources="[src/agent.py, src/x.c]"),
                            files={"src/agent.py": AGENT, "src/x.c": ""})
    assert any("a python template takes .py files" in p for p in problems(folder))


def staged(tmp_path: Path, files: dict[str, str | bytes], **kw: str) -> tuple[Template, Path]:
    folder = write_template(tmp_path / "t", "pyagent", manifest=manifest(**kw), files={"src/agent.py": AGENT, **files})
    t = load_template(folder)
    copy = tmp_path / "staged"
    shutil.copytree(folder, copy)
    return t, copy


@pytest.mark.parametrize(("path", "content", "message"), [
    ("src/componentize-py.toml", "bindings = 'x'", "componentize-py reads it to add WIT worlds"),
    ("src/evil.cpython-314-wasm32-wasi.so", b"\x00asm", "compiled code on the agent's import path"),
    ("src/helper.pyc", b"\x00", "compiled code on the agent's import path"),
    ("src/__pycache__/agent.cpython-314.pyc", b"\x00", "compiled bytecode on the agent's import path"),
    ("src/sneaky.py", "print('not reviewed')", "neither in spec.sources nor inside a vendored dependency"),
])
def test_what_may_not_be_on_the_import_path(tmp_path: Path, path: str, content: str | bytes, message: str) -> None:
    t, copy = staged(tmp_path, {path: content})
    with pytest.raises(BuildError, match=message):
        check_import_path(t, copy)


def test_the_import_path_is_hashed(tmp_path: Path) -> None:
    t, copy = staged(tmp_path, {"src/data.json": "{}"})
    inputs = check_import_path(t, copy)
    assert sorted(inputs) == ["src/agent.py", "src/data.json"]


@pytest.mark.parametrize(("source", "tools", "message"), [
    ("from wit_world.imports import environment\n", "[log.write]",
     "imports the WIT interface 'environment', which is not in the world agentfactory:agent@0.1.0"),
    ("import wit_world.imports.http\n", "[log.write]", "imports the WIT interface 'http'"),
    ("from wit_world.imports import tools\ntools.http_fetch(None)\n", "[log.write]",
     "calls tools.http_fetch, the tool 'http.fetch', which spec.tools does not declare"),
    ("from wit_world.imports import tools as t\nt.spawn()\n", "[log.write]",
     "tools.spawn is not a tool of the WIT world"),
    ("from wit_world.imports import tools\n", "[]", "spec.tools declares no tool of the WIT world"),
    ("def broken(:\n", "[log.write]", "not valid Python"),
])
def test_sources_that_reach_outside_the_declared_tools(tmp_path: Path, source: str, tools: str, message: str) -> None:
    t, copy = staged(tmp_path, {"src/agent.py": source}, tools=tools)
    with pytest.raises(BuildError, match=message) as info:
        check_sources(t, copy)
    assert "src/agent.py:" in info.value.where


def test_a_component_of_another_world_is_refused_at_build(tmp_path: Path) -> None:
    from component_helpers import ECHO, LOG, component

    t, _ = staged(tmp_path, {})
    other = component(ECHO, imports=f'(import "agentfactory:agent/tools@0.2.0" (instance {LOG}))')
    with pytest.raises(BuildError, match="does not fit the world agentfactory:agent@0.1.0: import "
                                         "'agentfactory:agent/tools@0.2.0'"):
        judge_component(t, other, "pyagent (built component)")
    assert judge_component(t, component(ECHO), "x").exported("run")
