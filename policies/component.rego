# Template policy, components: the rules for Python agents (spec.language: python), built with
# componentize-py into WebAssembly components of the project's WIT world, agentfactory:agent@0.1.0
# (agentfactory/wit/agentfactory-agent@0.1.0.wit; docs/templates.md, "Python agents").
#
# The same package as template.rego: the template policy judges a component as it judges a module. The
# pipeline hands policy a component's imports in the modules' form (agentfactory.wit.as_module): each
# tool of the world's `tools` interface as a function of module "agentfactory" under its spec.tools
# name (log.write, clock.now_ms, http.fetch), every other imported function under its interface's
# name; so T3 already refuses an undeclared tool or a foreign interface by name. The rules here add
# what is particular to components:
#
#   C1 a python template may declare only the tools of the WIT world (others cannot be linked);
#   C2 a python template asks for no WASI capability (its component is built with every WASI import
#      stubbed out; there is nothing to grant, and a request for one is a mistake to say out loud);
#   C3 a component importing a WASI interface is refused naming it (the template did not ask for it,
#      and cannot);
#   C4 a component exports `run`, the world's entrypoint (spec.entrypoint, when given, is "run").
#
# The world's tools are listed here, from agentfactory.wit.TOOLS (tests/unit/test_wit_world.py holds
# the two lists equal). Helpers (obj, arr, txt, spec, tools, wasi, module, imports) are template.rego's.
package agentfactory.template

import rego.v1

component_world := "agentfactory:agent@0.1.0"

component_world_tools := {"log.write", "clock.now_ms", "http.fetch"}

default python_template := false

python_template if spec.language == "python"

# --- C1: only the world's tools --------------------------------------------------------------------

deny contains msg if {
	python_template
	some i, tool in tools
	not tool in component_world_tools
	msg := sprintf(`spec.tools[%d]: "%s" is not a tool of the WIT world %s that Python agents are built against (its tools: %s); remove it`, [i, txt(tool), txt(component_world), txt(concat(", ", sort([t | some t in component_world_tools])))])
}

# --- C2: no WASI capabilities for a component -------------------------------------------------------

deny contains msg if {
	python_template
	some key in ["preopens", "env"]
	count(arr(object.get(wasi, key, null))) > 0
	msg := sprintf("spec.capabilities.wasi.%s: a python agent gets no WASI (its component is built with every WASI import stubbed out); remove it and pass what the agent needs as its input, or use a tool", [txt(key)])
}

# --- C3: no WASI interface in a component ----------------------------------------------------------

deny contains msg if {
	python_template
	some i, imp in imports
	mod := object.get(obj(imp), "module", "")
	is_string(mod)
	startswith(mod, "wasi:")
	msg := sprintf(`module.imports[%d]: the component imports the WASI interface "%s" (%s); the template did not ask for it and a python agent cannot: it gets only the tools it declares; remove the code that needs it`, [i, txt(mod), import_name(imp)])
}

# --- C4: the world's entrypoint ----------------------------------------------------------------------

deny contains msg if {
	python_template
	e := object.get(spec, "entrypoint", "run")
	e != "run"
	msg := sprintf(`spec.entrypoint is "%s": a python agent's entrypoint is the WIT world's export "run"; remove spec.entrypoint`, [txt(e)])
}

deny contains msg if {
	python_template
	module_given
	not component_exports_run
	msg := sprintf(`module.exports: the component does not export the function "run" of the WIT world %s; build it against that world (class WitWorld with run(self, input: str) -> str)`, [txt(component_world)])
}

component_exports_run if {
	some e in arr(object.get(module, "exports", null))
	object.get(obj(e), "name", null) == "run"
	object.get(obj(e), "kind", null) == "func"
}
