# Unit tests of the template policy's component rules (component.rego), C1..C4. Inputs are set field
# by field, as in template_test.rego (regopy crashes on `with input as` when a rule calls a builtin).
package agentfactory.template_test

import rego.v1

python_good := {
	"apiVersion": "agentfactory.dev/v1alpha1",
	"kind": "AgentTemplate",
	"metadata": {
		"name": "ticket-triage",
		"version": "1.0.0",
		"description": "Sorts a support ticket into a category and a priority.",
		"owners": ["@agentfactory/support-tools"],
	},
	"spec": {
		"language": "python",
		"sources": ["src/triage.py"],
		"python": {"module": "triage", "paths": ["src", "vendor"]},
		"tools": ["log.write"],
		"limits": {"memoryMiB": 64, "timeoutMs": 2000, "maxOutputKiB": 64},
	},
}

python_patched(path, value) := json.patch(python_good, [{"op": "add", "path": substring(path, 0, -1), "value": value}])

# A component as the pipeline hands it to policy (agentfactory.wit.as_module).
component_module(extra) := {
	"imports": array.concat([imp("agentfactory", "log.write")], extra),
	"exports": [{"name": "exports", "kind": "instance"}, {"name": "run", "kind": "func"}],
	"initialMemoryBytes": 12910592,
}

test_python_template_allowed_before_and_after_the_build if {
	denies(python_good) == set()
	denies_module(python_good, component_module([])) == set()
}

test_c1_a_tool_outside_the_world_is_refused if {
	d := denies(python_patched("/spec/tools", ["log.write", "fs.read"]))
	some msg in d
	contains(msg, `spec.tools[1]: "fs.read" is not a tool of the WIT world agentfactory:agent@0.1.0`)
	contains(msg, "clock.now_ms, http.fetch, log.write")
}

test_c1_every_tool_of_the_world_is_allowed if {
	denies(python_patched("/spec/tools", ["log.write", "clock.now_ms"])) == set()
	d := denies(python_patched("/spec/tools", ["log.write", "clock.now_ms", "http.fetch"]))
	count([msg | some msg in d; contains(msg, "is not a tool of the WIT world")]) == 0
}

test_c1_does_not_apply_to_modules if {
	tpl := patched("/spec/tools", ["fs.read"])
	every msg in denies(tpl) {
		not contains(msg, "WIT world")
	}
}

test_c2_wasi_capabilities_are_refused_for_python if {
	d := denies(python_patched("/spec/capabilities", {"wasi": {"env": ["LANG"], "preopens": []}}))
	some msg in d
	startswith(msg, "spec.capabilities.wasi.env: a python agent gets no WASI")
}

test_c2_empty_capabilities_are_fine if {
	denies(python_patched("/spec/capabilities", {"wasi": {"env": [], "preopens": []}})) == set()
}

test_c3_a_wasi_interface_is_refused_naming_it if {
	d := denies_module(python_good, component_module([imp("wasi:cli/environment@0.2.0", "get-environment")]))
	some msg in d
	contains(msg, `module.imports[1]: the component imports the WASI interface "wasi:cli/environment@0.2.0" (get-environment)`)
}

test_c3_t3_refuses_an_undeclared_tool_of_a_component if {
	d := denies_module(python_good, component_module([imp("agentfactory", "http.fetch")]))
	some msg in d
	contains(msg, `host tool "http.fetch"`)
}

test_c4_an_entrypoint_other_than_run_is_refused if {
	d := denies(python_patched("/spec/entrypoint", "_start"))
	some msg in d
	startswith(msg, `spec.entrypoint is "_start"`)
}

test_c4_a_component_without_run_is_refused if {
	mod := {
		"imports": [imp("agentfactory", "log.write")], "exports": [{"name": "main", "kind": "func"}],
		"initialMemoryBytes": 12910592,
	}
	d := denies_module(python_good, mod)
	some msg in d
	startswith(msg, `module.exports: the component does not export the function "run"`)
}
