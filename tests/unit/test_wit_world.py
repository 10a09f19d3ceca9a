"""The project's WIT world (agentfactory.wit): the shipped file, the per-template cut, and judging components."""

from __future__ import annotations

import re

from component_helpers import ECHO, LOG, NOW_MS, TOOLS, component
from helpers import ROOT

from agentfactory import wit
from agentfactory.wasm import inspect_component


def test_the_shipped_world_is_the_one_the_code_describes() -> None:
    shipped = wit.shipped().read_text("utf-8")
    assert shipped == wit.world_text()
    assert "package agentfactory:agent@0.1.0;" in shipped
    assert "http-fetch: func(req: request) -> result<response, string>;" in shipped
    assert "export run: func(input: string) -> result<string, string>;" in shipped
    for field in ("method: string", "url: string", "headers: list<tuple<string, string>>", "body: option<list<u8>>",
                  "status: u16", "body: list<u8>"):
        assert field in shipped


def test_a_template_is_built_against_only_its_declared_tools() -> None:
    only_log = wit.world_text(["log.write", "shell.exec"])
    assert "log: func(msg: string);" in only_log
    assert "now-ms" not in only_log and "http-fetch" not in only_log and "record request" not in only_log
    with_fetch = wit.world_text(["http.fetch"])
    assert "record request" in with_fetch and "record response" in with_fetch and "log:" not in with_fetch
    none = wit.world_text([])
    assert "interface" not in none and "import" not in none and "export run" in none


def test_the_component_policy_lists_the_worlds_tools() -> None:
    rego = (ROOT / "policies" / "component.rego").read_text()
    listed = re.search(r"component_world_tools := \{([^}]*)\}", rego)
    assert listed is not None
    assert {t.strip().strip('"') for t in listed.group(1).split(",")} == set(wit.BY_TOOL)
    assert f'component_world := "{wit.WORLD_ID}"' in rego


def test_a_component_that_fits_has_no_problems_and_looks_like_a_module_to_policy() -> None:
    info = inspect_component(component(ECHO))
    assert wit.world_problems(info, ["log.write"]) == []
    module = wit.as_module(info)
    assert [(i.module, i.name) for i in module.imports] == [("agentfactory", "log.write")]
    assert module.exported("run")


def test_an_undeclared_tool_is_named() -> None:
    info = inspect_component(component(ECHO, imports=f'(import "{TOOLS}" (instance {LOG} {NOW_MS}))'))
    problems = wit.world_problems(info, ["log.write"])
    assert problems == [f"import {TOOLS}: the component imports the tool 'now-ms' (clock.now_ms), which spec.tools "
                        "does not declare"]


def test_a_wasi_interface_is_named() -> None:
    wasi = '(import "wasi:cli/environment@0.2.0" (instance (export "get-arguments" (func (result (list string))))))'
    info = inspect_component(component(ECHO, imports=wasi))
    [problem] = wit.world_problems(info, [])
    assert problem.startswith("import 'wasi:cli/environment@0.2.0': a WASI interface")
    assert [(i.module, i.name) for i in wit.as_module(info).imports] == [("wasi:cli/environment@0.2.0",
                                                                          "get-arguments")]


def test_another_version_of_the_world_is_a_mismatch() -> None:
    info = inspect_component(component(ECHO, imports=f'(import "agentfactory:agent/tools@0.2.0" (instance {LOG}))'))
    [problem] = wit.world_problems(info, ["log.write"])
    assert "agentfactory:agent/tools@0.2.0" in problem and "another world" in problem


def test_a_tool_with_another_signature_is_a_mismatch() -> None:
    log_u32 = f'(import "{TOOLS}" (instance (export "log" (func (param "msg" u32)))))'
    info = inspect_component(component(ECHO, imports=log_u32))
    [problem] = wit.world_problems(info, ["log.write"])
    assert problem == (f"import {TOOLS}: log is func(msg: u32), not the world's func(msg: string): built against "
                       "another world")


def test_a_run_of_another_type_or_no_run_is_a_mismatch() -> None:
    other = component(ECHO, run_type='(func (param "input" string) (result (result string (error u32))))')
    [problem] = wit.world_problems(inspect_component(other), ["log.write"])
    assert problem.startswith("export 'run' is func(input: string) -> result<string, u32>, not the world's")
    renamed = component(ECHO, export="main")
    [problem] = wit.world_problems(inspect_component(renamed), ["log.write"])
    assert problem.startswith("the component does not export 'run'")
