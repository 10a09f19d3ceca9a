# Unit tests of the template policy (template.rego), T1..T12.
#
# The input is always set field by field (`with input.template as …`, `with input.module as …`),
# never as a whole (`with input as …`): regopy 1.5.2 (rego-cpp) crashes the process when a rule
# evaluated under `with input as` calls a builtin. OPA runs these tests unchanged.
package agentfactory.template_test

import rego.v1

# --- fixtures ---------------------------------------------------------------------------------

good := {
	"apiVersion": "agentfactory.dev/v1alpha1",
	"kind": "AgentTemplate",
	"metadata": {
		"name": "wordstats",
		"version": "1.1.0",
		"description": "Line, word, byte and UTF-8 character statistics of a text, as JSON.",
		"owners": ["@agentfactory/text-tools", "text-tools@example.com"],
	},
	"spec": {
		"language": "c",
		"sources": ["src/main.c"],
		"entrypoint": "_start",
		"tools": [],
		"capabilities": {"wasi": {
			"preopens": [{"guestPath": "/data", "hostPath": "/srv/data", "readOnly": true}],
			"env": ["LANG"],
		}},
		"limits": {"memoryMiB": 4, "timeoutMs": 2000, "maxOutputKiB": 64},
	},
}

imp(m, n) := {"module": m, "name": n, "kind": "func"}

# What the example templates import (8 imports: a 9th one has index 8).
good_imports := [
	imp("wasi_snapshot_preview1", "fd_read"),
	imp("wasi_snapshot_preview1", "fd_write"),
	imp("wasi_snapshot_preview1", "fd_close"),
	imp("wasi_snapshot_preview1", "fd_seek"),
	imp("wasi_snapshot_preview1", "fd_fdstat_get"),
	imp("wasi_snapshot_preview1", "proc_exit"),
	imp("wasi_snapshot_preview1", "args_get"),
	imp("wasi_snapshot_preview1", "args_sizes_get"),
]

good_module := {"imports": good_imports, "exports": [{"name": "_start", "kind": "func"}], "initialMemoryBytes": 131072}

module_with(m, n) := {"imports": array.concat(good_imports, [imp(m, n)]), "exports": good_module.exports, "initialMemoryBytes": 131072}

# good with the value at JSON pointer `path` replaced (or added). substring(path, 0, -1): rego-cpp
# 1.5 hands json.patch a string bound to a variable with its JSON quotes; this yields a plain one.
patched(path, value) := json.patch(good, [{"op": "add", "path": substring(path, 0, -1), "value": value}])

without(path) := json.patch(good, [{"op": "remove", "path": substring(path, 0, -1)}])

deny_for(tpl, mod, base, findings) := d if {
	d := data.agentfactory.template.deny with input.template as tpl
		with input.path as "templates/wordstats"
		with input.module as mod
		with input.base as base
		with input.findings as findings
}

allow_for(tpl, mod, base, findings) := a if {
	a := data.agentfactory.template.allow with input.template as tpl
		with input.path as "templates/wordstats"
		with input.module as mod
		with input.base as base
		with input.findings as findings
}

# Before the build: no module, no base, no findings.
denies(tpl) := deny_for(tpl, null, null, [])

# After the build.
denies_module(tpl, mod) := deny_for(tpl, mod, null, [])

example(name) := t if {
	name == "wordstats"
	t := json.patch(good, [
		{"op": "replace", "path": "/metadata/version", "value": "1.0.0"},
		{"op": "replace", "path": "/spec/sources", "value": ["src/main.c", "vendor/utf8/utf8.c"]},
		{"op": "add", "path": "/spec/includeDirs", "value": ["vendor/utf8"]},
		{"op": "replace", "path": "/spec/capabilities", "value": {"wasi": {"preopens": [], "env": []}}},
		{"op": "add", "path": "/spec/dependencies", "value": [{
			"name": "utf8", "version": "1.0.0", "purl": "pkg:generic/agentfactory/utf8@1.0.0",
			"license": "Apache-2.0", "path": "vendor/utf8",
			"sha256": "1f7a70dd2a303abb8519c63baba1b423e763ad71c88573a71be9dac0d36998f0",
		}]},
	])
}

example(name) := t if {
	name == "base64"
	t := {
		"apiVersion": "agentfactory.dev/v1alpha1",
		"kind": "AgentTemplate",
		"metadata": {
			"name": "base64", "version": "1.0.0",
			"description": "Streaming RFC 4648 base64 encoder and strict decoder.",
			"owners": ["@agentfactory/text-tools", "text-tools@example.com"],
		},
		"spec": {
			"language": "wat", "sources": ["src/base64.wat"], "entrypoint": "_start", "tools": [],
			"capabilities": {"wasi": {"preopens": [], "env": []}},
			"limits": {"memoryMiB": 1, "timeoutMs": 5000, "maxOutputKiB": 16384},
			"dependencies": [],
		},
	}
}

# --- the good case ----------------------------------------------------------------------------

test_good_template_allowed_before_build if {
	denies(good) == set()
	allow_for(good, null, null, []) == true
}

# The decision document the OPA engine asks a server for: allow and deny, as the rules say.
test_decision_document if {
	tpl := good
	d := data.agentfactory.template.decision with input.template as tpl
		with input.path as "templates/wordstats"
		with input.module as null
		with input.base as null
		with input.findings as []
	d == {"allow": true, "deny": set()}
	bad := patched("/spec/tools", ["shell.exec"])
	d2 := data.agentfactory.template.decision with input.template as bad
		with input.path as "templates/wordstats"
		with input.module as null
		with input.base as null
		with input.findings as []
	d2.allow == false
	d2.deny == denies(bad)
	count(d2.deny) == 1
}

test_good_template_allowed_after_build if {
	denies_module(good, good_module) == set()
	allow_for(good, good_module, null, []) == true
}

test_example_templates_allowed if {
	every name in ["wordstats", "base64"] {
		deny_for(example(name), null, null, []) == set()
		deny_for(example(name), good_module, null, []) == set()
		allow_for(example(name), good_module, null, []) == true
	}
}

test_low_and_medium_findings_allowed if {
	findings := [
		{"file": "src/main.c", "line": 3, "class": "suspicious-url", "severity": "low", "message": "a URL"},
		{"file": "src/main.c", "line": 9, "class": "encoded-blob", "severity": "medium", "message": "a blob"},
	]
	deny_for(good, good_module, null, findings) == set()
}

test_missing_template_denied if {
	d := data.agentfactory.template.deny with input.findings as []
	"input.template: the template document is missing or not an object; the engine must pass the parsed agent.yaml" in d
	not data.agentfactory.template.allow with input.findings as []
}

test_malformed_module_denied if {
	deny_for(good, "a wasm file", null, []) == {"input.module: must be null (before the build) or the module's imports and exports"}
}

test_any_deny_means_not_allowed if {
	allow_for(patched("/spec/tools", ["shell.exec"]), null, null, []) == false
}

# --- T1 dangerous tools -----------------------------------------------------------------------

test_t1_dangerous_tool_denied if {
	denies(patched("/spec/tools", ["text.lookup", "shell.exec"])) == {`spec.tools[1]: "shell.exec" is a dangerous tool (config dangerous_tools) and is never granted to an agent; remove it from spec.tools and do the work inside the agent`}
}

test_t1_every_dangerous_tool_denied if {
	count(data.agentfactory.config.dangerous_tools) == 10
	every tool in data.agentfactory.config.dangerous_tools {
		some msg in denies(patched("/spec/tools", [tool]))
		startswith(msg, "spec.tools[0]: ")
		contains(msg, "is a dangerous tool")
	}
}

test_t1_ordinary_tool_allowed if {
	denies(patched("/spec/tools", ["text.lookup", "kv.get"])) == set()
}

test_t1_follows_config if {
	d := deny_for(patched("/spec/tools", ["kv.get"]), null, null, []) with data.agentfactory.config.dangerous_tools as ["kv.get"]
	count(d) == 1
}

# --- T2 blocked import modules ----------------------------------------------------------------

test_t2_blocked_module_denied if {
	denies_module(good, module_with("wasix_32v1", "sock_open")) == {`module.imports[8]: the module imports wasix_32v1.sock_open; module "wasix_32v1" is a blocked host API (config blocked_import_modules); build for plain wasm32-wasi (wasi_snapshot_preview1) and remove the code that needs it`}
}

test_t2_every_blocked_module_denied if {
	count(data.agentfactory.config.blocked_import_modules) == 6
	every m in data.agentfactory.config.blocked_import_modules {
		d := denies_module(good, module_with(m, "anything"))
		count(d) == 1
		some msg in d
		contains(msg, "is a blocked host API")
	}
}

test_t2_not_checked_before_build if {
	denies(good) == set()
	denies_module(good, null) == set()
}

test_t2_standard_wasi_allowed if {
	denies_module(good, module_with("wasi_snapshot_preview1", "clock_time_get")) == set()
}

# --- T3 imports: allowed WASI functions, declared tools, known modules -------------------------

test_t3_unlisted_wasi_function_denied if {
	denies_module(good, module_with("wasi_snapshot_preview1", "sock_accept")) == {"module.imports[8]: wasi_snapshot_preview1.sock_accept is not an allowed WASI function (config allowed_wasi_functions: stdio, clocks, randomness and read-only files; no sockets, file changes or signals); remove the code that calls it"}
}

test_t3_writes_and_signals_denied if {
	every name in ["fd_pwrite", "path_unlink_file", "path_rename", "path_create_directory", "proc_raise", "sock_send", "fd_renumber"] {
		d := denies_module(good, module_with("wasi_snapshot_preview1", name))
		count(d) == 1
		some msg in d
		contains(msg, "is not an allowed WASI function")
	}
}

test_t3_allowed_wasi_functions_pass if {
	imports := [imp("wasi_snapshot_preview1", n) | some n in data.agentfactory.config.allowed_wasi_functions]
	denies_module(good, {"imports": imports, "exports": [], "initialMemoryBytes": 65536}) == set()
}

test_t3_undeclared_tool_denied if {
	denies_module(good, module_with("agentfactory", "undeclared_tool")) == {`module.imports[8]: the module imports host tool "undeclared_tool" from "agentfactory" but spec.tools does not declare it; add "undeclared_tool" to spec.tools (the policy decides whether it is allowed) or remove the call`}
}

test_t3_declared_tool_allowed if {
	denies_module(patched("/spec/tools", ["kv.get"]), module_with("agentfactory", "kv.get")) == set()
}

test_t3_unknown_module_denied if {
	denies_module(good, module_with("env", "host_log")) == {`module.imports[8]: the module imports env.host_log from unknown module "env"; agents may import only wasi_snapshot_preview1 functions and declared tools from "agentfactory"; remove the import`}
}

# An import without a name or a module still denies (a missing field must not leave the rule, or its
# message, undefined; OPA and rego-cpp agree on this only when the field is read with object.get).
test_t3_import_without_name_or_module_denied if {
	nameless := {"module": "wasi_snapshot_preview1", "kind": "func"}
	mod := {"imports": array.concat(good_imports, [nameless]), "exports": good_module.exports, "initialMemoryBytes": 131072}
	denies_module(good, mod) == {"module.imports[8]: wasi_snapshot_preview1.null is not an allowed WASI function (config allowed_wasi_functions: stdio, clocks, randomness and read-only files; no sockets, file changes or signals); remove the code that calls it"}
	tool := {"module": "agentfactory", "kind": "func"}
	count(denies_module(good, {"imports": [tool], "exports": [], "initialMemoryBytes": 0})) == 1
	no_module := {"name": "fd_read", "kind": "func"}
	some msg in denies_module(good, {"imports": [no_module], "exports": [], "initialMemoryBytes": 0})
	contains(msg, "from unknown module")
}

# --- T4 memory ceiling ------------------------------------------------------------------------

test_t4_memory_over_ceiling_denied if {
	denies(patched("/spec/limits/memoryMiB", 512)) == {"spec.limits.memoryMiB is 512, above the ceiling of 256 MiB (config max_memory_mib); lower spec.limits.memoryMiB to at most 256"}
}

test_t4_memory_at_ceiling_allowed if {
	denies(patched("/spec/limits/memoryMiB", 256)) == set()
}

test_t4_memory_missing_denied if {
	denies(without("/spec/limits/memoryMiB")) == {"spec.limits.memoryMiB is missing or not a number: set the agent's memory ceiling in MiB (at most 256)"}
}

test_t4_follows_config if {
	d := denies(patched("/spec/limits/memoryMiB", 128)) with data.agentfactory.config.max_memory_mib as 64
	d == {"spec.limits.memoryMiB is 128, above the ceiling of 64 MiB (config max_memory_mib); lower spec.limits.memoryMiB to at most 64"}
}

test_t4_module_initial_memory_over_limit_denied if {
	mod := {"imports": good_imports, "exports": good_module.exports, "initialMemoryBytes": 8388608}
	denies_module(good, mod) == {"module.initialMemoryBytes: the module asks for 8388608 bytes of memory at start, more than spec.limits.memoryMiB (4 MiB); raise spec.limits.memoryMiB or make the module smaller (static data, stack)"}
}

test_t4_module_initial_memory_within_limit_allowed if {
	mod := {"imports": good_imports, "exports": good_module.exports, "initialMemoryBytes": 4194304}
	denies_module(good, mod) == set()
}

# --- T12 node ceilings (output cap, the node's memory budget) ---------------------------------

test_t12_output_over_node_ceiling_denied if {
	denies(patched("/spec/limits/maxOutputKiB", 16385)) == {"spec.limits.maxOutputKiB is 16385, above the node ceiling of 16384 KiB (config node.max_output_kib, the runtime's AGENTFACTORY_RUNTIME_MAX_OUTPUT_KIB): no node would run it; lower spec.limits.maxOutputKiB to at most 16384"}
}

test_t12_output_at_node_ceiling_allowed if {
	denies(patched("/spec/limits/maxOutputKiB", 16384)) == set()
}

test_t12_output_absent_is_the_schema_default if {
	d := denies(without("/spec/limits/maxOutputKiB")) with data.agentfactory.config.node.max_output_kib as 1000
	d == {"spec.limits.maxOutputKiB is 1024, above the node ceiling of 1000 KiB (config node.max_output_kib, the runtime's AGENTFACTORY_RUNTIME_MAX_OUTPUT_KIB): no node would run it; lower spec.limits.maxOutputKiB to at most 1000"}
	denies(without("/spec/limits/maxOutputKiB")) == set()
}

test_t12_output_not_a_number_denied if {
	some msg in denies(patched("/spec/limits/maxOutputKiB", "64"))
	startswith(msg, "spec.limits.maxOutputKiB is not a number")
}

test_t12_output_follows_config if {
	d := denies(good) with data.agentfactory.config.node.max_output_kib as 32
	d == {"spec.limits.maxOutputKiB is 64, above the node ceiling of 32 KiB (config node.max_output_kib, the runtime's AGENTFACTORY_RUNTIME_MAX_OUTPUT_KIB): no node would run it; lower spec.limits.maxOutputKiB to at most 32"}
}

# memoryMiB 100 and maxOutputKiB 1000 need 102400 + 4000 + 1040 = 107440 KiB (104.9 MiB): they fit
# a budget of 105 MiB (107520 KiB), not one of 104 MiB.
budget_template := json.patch(good, [
	{"op": "add", "path": "/spec/limits/memoryMiB", "value": 100},
	{"op": "add", "path": "/spec/limits/maxOutputKiB", "value": 1000},
])

test_t12_caps_over_the_node_memory_budget_denied if {
	d := denies(budget_template) with data.agentfactory.config.node.memory_budget_mib as 104
	d == {"spec.limits: memoryMiB 100 and maxOutputKiB 1000 need 104.9 MiB of host memory per invocation (memoryMiB + 4 x maxOutputKiB + 1040 KiB of tool log and store), more than the node's whole memory budget of 104 MiB (config node.memory_budget_mib, the runtime's AGENTFACTORY_RUNTIME_MEMORY_BUDGET_MIB): no node could ever run it; lower spec.limits.memoryMiB or spec.limits.maxOutputKiB"}
}

test_t12_caps_within_the_node_memory_budget_allowed if {
	denies(budget_template) == set() with data.agentfactory.config.node.memory_budget_mib as 105
}

test_t12_defaults_fit_the_default_budget if {
	# the largest agent the defaults allow (256 MiB, 16384 KiB of output) fits the 768 MiB budget
	t := json.patch(good, [
		{"op": "add", "path": "/spec/limits/memoryMiB", "value": 256},
		{"op": "add", "path": "/spec/limits/maxOutputKiB", "value": 16384},
	])
	denies(t) == set()
}

test_t12_missing_node_config_denied if {
	d := denies(good) with data.agentfactory.config.node as null
	d == {
		"config node.max_output_kib is missing or not a number (policies/data.json): the node ceilings (T12) cannot be judged without it",
		"config node.memory_budget_mib is missing or not a number (policies/data.json): the node ceilings (T12) cannot be judged without it",
		"config node.invocation_overhead_kib is missing or not a number (policies/data.json): the node ceilings (T12) cannot be judged without it",
		"config node.default_output_kib is missing or not a number (policies/data.json): the node ceilings (T12) cannot be judged without it",
	}
}

# --- T5 time ceiling --------------------------------------------------------------------------

test_t5_timeout_over_ceiling_denied if {
	denies(patched("/spec/limits/timeoutMs", 60000)) == {"spec.limits.timeoutMs is 60000, above the ceiling of 30000 ms (config max_timeout_ms); lower spec.limits.timeoutMs to at most 30000"}
}

test_t5_timeout_at_ceiling_allowed if {
	denies(patched("/spec/limits/timeoutMs", 30000)) == set()
}

test_t5_timeout_missing_denied if {
	some msg in denies(without("/spec/limits/timeoutMs"))
	startswith(msg, "spec.limits.timeoutMs is missing or not a number")
}

# --- T6 read-only preopens --------------------------------------------------------------------

test_t6_writable_preopen_denied if {
	tpl := patched("/spec/capabilities/wasi/preopens", [{"guestPath": "/data", "hostPath": "/srv/data", "readOnly": false}])
	denies(tpl) == {"spec.capabilities.wasi.preopens[0].readOnly is false: agents get read-only folders only; set readOnly: true (or leave it out, it defaults to true)"}
}

test_t6_read_only_absent_means_true if {
	denies(patched("/spec/capabilities/wasi/preopens", [{"guestPath": "/data", "hostPath": "/srv/data"}])) == set()
}

test_t6_read_only_true_allowed if {
	denies(good) == set()
}

# --- T7 host paths ----------------------------------------------------------------------------

preopen_at(host) := patched("/spec/capabilities/wasi/preopens", [
	{"guestPath": "/data", "hostPath": "/srv/data"},
	{"guestPath": "/host", "hostPath": host},
])

test_t7_root_denied if {
	denies(preopen_at("/")) == {`spec.capabilities.wasi.preopens[1].hostPath "/" maps the host's root folder; map only the data folder the agent needs (e.g. /srv/data)`}
}

test_t7_sensitive_path_denied if {
	denies(preopen_at("/etc")) == {`spec.capabilities.wasi.preopens[1].hostPath "/etc" is the sensitive host path /etc or below it (config sensitive_host_paths); map a dedicated data folder instead`}
}

test_t7_below_sensitive_path_denied if {
	every host in ["/etc/ssl", "/proc/self", "/sys/kernel", "/dev/shm", "/root/.ssh", "/boot/efi", "/var/run/docker.sock", "/run/secrets", "/etc/"] {
		some msg in denies(preopen_at(host))
		contains(msg, "is the sensitive host path")
	}
}

test_t7_parent_of_sensitive_path_denied if {
	denies(preopen_at("/var")) == {`spec.capabilities.wasi.preopens[1].hostPath "/var" contains the sensitive host path /var/run (config sensitive_host_paths); map a narrower, dedicated data folder instead`}
}

test_t7_similar_names_allowed if {
	every host in ["/etcetera", "/srv/etc", "/devices", "/running", "/var/runtime", "/srv/data/"] {
		denies(preopen_at(host)) == set()
	}
}

test_t7_missing_host_path_denied if {
	tpl := patched("/spec/capabilities/wasi/preopens", [{"guestPath": "/data"}])
	denies(tpl) == {"spec.capabilities.wasi.preopens[0].hostPath is missing or not a string: set the absolute host folder to map"}
}

test_t7_dot_segments_denied if {
	denies(preopen_at("/srv/../etc")) == {`spec.capabilities.wasi.preopens[1].hostPath "/srv/../etc" is not a plain absolute path; write it without ".", ".." or empty segments (e.g. /srv/data)`}
	some msg in denies(preopen_at("/srv//data"))
	contains(msg, "is not a plain absolute path")
}

# --- T8 env allowlist -------------------------------------------------------------------------

test_t8_wildcard_denied if {
	denies(patched("/spec/capabilities/wasi/env", ["LANG", "*"])) == {`spec.capabilities.wasi.env[1] is "*": the environment is an allowlist; name each variable the agent needs instead of a wildcard`}
}

test_t8_secret_name_denied if {
	denies(patched("/spec/capabilities/wasi/env", ["VAULT_ADDR"])) == {`spec.capabilities.wasi.env[0] is "VAULT_ADDR", which looks like a secret (matches ^VAULT_ in config secret_env_patterns); remove it from spec.capabilities.wasi.env: secrets are never passed to agents`}
}

test_t8_secret_like_names_denied if {
	every name in ["GITHUB_TOKEN", "DB_PASSWORD", "MY_PASSWD", "AWS_REGION", "OPENAI_API_KEY", "TLS_PRIVATE_KEY", "client_secret", "CREDENTIALS_FILE"] {
		some msg in denies(patched("/spec/capabilities/wasi/env", [name]))
		contains(msg, "which looks like a secret")
	}
}

test_t8_ordinary_names_allowed if {
	denies(patched("/spec/capabilities/wasi/env", ["LANG", "LC_ALL", "TZ", "HOME", "TERM", "NO_COLOR"])) == set()
}

test_t8_invalid_config_pattern_denied if {
	d := denies(good) with data.agentfactory.config.secret_env_patterns as ["^OK_", "(unclosed"]
	d == {`config secret_env_patterns[1] "(unclosed" is not a regular expression this policy engine accepts (no inline flags such as (?i)); fix policies/data.json`}
}

# --- T9 owners --------------------------------------------------------------------------------

test_t9_empty_owners_denied if {
	denies(patched("/metadata/owners", [])) == {"metadata.owners is missing or empty: list at least one owner who answers for this agent (a GitHub @user or @org/team handle, or an e-mail address)"}
}

test_t9_missing_owners_denied if {
	some msg in denies(without("/metadata/owners"))
	startswith(msg, "metadata.owners is missing or empty")
}

test_t9_blank_owner_denied if {
	some msg in denies(patched("/metadata/owners", ["  "]))
	startswith(msg, "metadata.owners is missing or empty")
}

test_t9_one_owner_allowed if {
	denies(patched("/metadata/owners", ["dev@example.com"])) == set()
}

# --- T10 version bump -------------------------------------------------------------------------

at_1_0_0 := patched("/metadata/version", "1.0.0")

test_t10_same_version_changed_denied if {
	deny_for(at_1_0_0, null, {"version": "1.0.0", "changed": true}, []) == {"metadata.version 1.0.0 does not increase the base branch's version 1.0.0, but the template changed; bump metadata.version above 1.0.0"}
}

test_t10_lower_version_denied if {
	some msg in deny_for(at_1_0_0, null, {"version": "1.2.0", "changed": true}, [])
	contains(msg, "does not increase the base branch's version 1.2.0")
}

test_t10_prerelease_of_same_version_denied if {
	some msg in deny_for(patched("/metadata/version", "1.0.0-rc.1"), null, {"version": "1.0.0", "changed": true}, [])
	contains(msg, "does not increase the base branch's version 1.0.0")
}

test_t10_bumped_version_allowed if {
	deny_for(patched("/metadata/version", "1.0.1"), null, {"version": "1.0.0", "changed": true}, []) == set()
	deny_for(patched("/metadata/version", "2.0.0-beta.1"), null, {"version": "1.9.9", "changed": true}, []) == set()
}

test_t10_unchanged_template_allowed if {
	deny_for(at_1_0_0, null, {"version": "1.0.0", "changed": false}, []) == set()
}

test_t10_new_template_allowed if {
	deny_for(at_1_0_0, null, null, []) == set()
}

test_t10_invalid_version_denied if {
	deny_for(patched("/metadata/version", "v1.0"), null, {"version": "1.0.0", "changed": true}, []) == {`metadata.version "v1.0" is not a semantic version (MAJOR.MINOR.PATCH, no leading "v"); write e.g. 1.0.0`}
}

test_t10_invalid_base_version_denied if {
	deny_for(at_1_0_0, null, {"version": "one", "changed": true}, []) == {`metadata.version: the base branch's version "one" is not a semantic version, so the bump cannot be checked; fix the version on the base branch first`}
}

# --- T11 static findings ----------------------------------------------------------------------

test_t11_high_finding_denied if {
	findings := [{"file": "src/main.c", "line": 12, "class": "process-exec", "severity": "high", "message": "system() runs a shell command"}]
	deny_for(good, null, null, findings) == {"src/main.c:12: process-exec: system() runs a shell command (severity high; remove or rewrite this code)"}
}

test_t11_critical_and_upper_case_denied if {
	findings := [
		{"file": "src/a.c", "line": 1, "class": "embedded-secret", "severity": "critical", "message": "a private key"},
		{"file": "src/b.c", "line": 2, "class": "inline-asm", "severity": "HIGH", "message": "inline assembly"},
	]
	d := deny_for(good, null, null, findings)
	"src/a.c:1: embedded-secret: a private key (severity critical; remove or rewrite this code)" in d
	"src/b.c:2: inline-asm: inline assembly (severity high; remove or rewrite this code)" in d
	count(d) == 2
}

test_t11_unknown_severity_denied if {
	findings := [{"file": "src/main.c", "line": 5, "class": "obfuscation", "severity": "severe", "message": "x"}]
	deny_for(good, null, null, findings) == {`src/main.c:5: obfuscation: finding with unknown severity "severe" (expected one of low, medium, high, critical); the static validator and the policy disagree, fix one of them`}
}

test_t11_follows_config if {
	findings := [{"file": "src/main.c", "line": 7, "class": "socket", "severity": "medium", "message": "socket()"}]
	d := deny_for(good, null, null, findings) with data.agentfactory.config.blocking_severities as ["medium", "high", "critical"]
	d == {"src/main.c:7: socket: socket() (severity medium; remove or rewrite this code)"}
}

# SemVer 2.0.0 precedence (section 11), which T10 implements itself (see template.rego).
ascending := [
	"1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2", "1.0.0-beta.11",
	"1.0.0-rc.1", "1.0.0", "1.0.1", "1.1.0", "1.10.0", "2.0.0-beta.1", "2.0.0", "10.0.0",
]

test_t10_semver_precedence if {
	every i in numbers.range(0, count(ascending) - 2) {
		data.agentfactory.template.semver_cmp(ascending[i], ascending[i + 1]) == -1
		data.agentfactory.template.semver_cmp(ascending[i + 1], ascending[i]) == 1
		data.agentfactory.template.semver_cmp(ascending[i], ascending[i]) == 0
	}
	data.agentfactory.template.semver_cmp("1.0.0+build.2", "1.0.0+build.1") == 0
}

test_t10_semver_validity if {
	every v in ["0.0.0", "1.0.0", "1.0.0-rc.1+build.5", "1.0.0-x-y.0", "1.2.3+20240101"] {
		data.agentfactory.template.valid_semver(v)
	}
	every v in ["1.0", "v1.0.0", "01.0.0", "1.0.0-01", "1.0.0-", "1.0.0+", "", "1.0.0 "] {
		not data.agentfactory.template.valid_semver(v)
	}
}

test_t10_build_metadata_is_not_a_bump if {
	some msg in deny_for(patched("/metadata/version", "1.0.0+build.2"), null, {"version": "1.0.0+build.1", "changed": true}, [])
	contains(msg, "does not increase the base branch's version 1.0.0+build.1")
}
