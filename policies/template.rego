# Template policy: may this agent template be built and published?
#
# Input (docs/policy-inputs.md): {"template": <agent.yaml as written>, "path": "templates/<name>",
# "findings": [<static validator findings>], "module": null | {"imports", "exports",
# "initialMemoryBytes"}, "base": null | {"version", "changed"}}.
# Tunables: data.agentfactory.config (policies/data.json).
#
# Every deny message names the field it is about and says what to change. Rule ids (T1..T12) are
# the ones used by the fixtures in tests/fixtures/policy-templates/.
#
# Fail closed: values that should be there but are not (a missing limit, a non-semver version, a
# config pattern the engine cannot compile) produce a deny of their own rather than silently
# skipping a rule.
#
# rego-cpp (regopy) compatibility notes, kept so that the same file runs under OPA 1.x:
# - no sprintf %q (quotes are written by hand around %s);
# - its regular expressions have no inline flags such as (?i): env names are upper-cased and
#   matched against upper-case patterns instead (see T8);
# - its semver builtins are lax and order pre-releases wrongly: T10 validates and compares
#   versions itself;
# - a string bound to a variable reaches sprintf/json.patch with its JSON quotes: txt() below;
# - OPA (issue open-policy-agent/opa#1877) rewrites `not f(x.y)` to `v := x.y; not f(v)`, so the
#   negation is undefined, not true, when x.y is undefined: a rule that denies on a missing field
#   must read it with object.get(x, "y", null) (rego-cpp negates the whole call; the two agree only
#   when the argument is always defined). tests/integration/test_opa_differential.py holds them to it;
# - a builtin error makes the rule undefined (or, with strict builtin errors as the engine runs it,
#   the whole decision an error), so builtins are only called on values whose type has been
#   checked first (valid_semver before comparing, regex.is_valid before regex.match).
package agentfactory.template

import rego.v1

default allow := false

allow if deny == set()

# The whole decision as one document: what the OPA engine asks an OPA server for (POST
# /v1/data/agentfactory/template/decision, agentfactory/policy_opa.py). One query evaluates only the
# rules it needs and answers with the messages alone, where the package's document would also
# evaluate and return every helper rule (the input's parts, the config).
decision := {"allow": allow, "deny": deny}

cfg := data.agentfactory.config

# --- shape helpers: a wrong type becomes an empty value, never an evaluation error ---------------

obj(x) := x if {
	is_object(x)
} else := {}

arr(x) := x if {
	is_array(x)
} else := []

# at(i, _): i, in a message about the element `_`. rego-cpp evaluates each expression of a rule as
# soon as its variables are bound: a message that names only the index would be built for every
# element, before the test on the element; naming the element makes it wait for the test.
at(i, _) := i

# txt(x): x as message text. Always used for the string arguments of sprintf: rego-cpp 1.5 renders
# a string bound from a literal or returned by lower/upper/concat/replace/object.get with its JSON
# quotes (and unescaped, which breaks the JSON of the decision); substring(x, 0, -1) yields a
# plain string in both engines.
txt(x) := substring(x, 0, -1) if {
	is_string(x)
} else := sprintf("%v", [x])

# The input's parts, each a rule of its own (evaluated once per decision) written without a function
# call (rego-cpp evaluates a function again at every call): the part when it has the right type,
# else an empty one. A rule that is used as a test has a default (`module_given`): rego-cpp keeps a
# rule's value for the rest of the decision only once it has one, and evaluates an undefined rule
# again at every use.
default template_given := false

template_given if is_object(input.template)

template := x if {
	template_given
	x := input.template
} else := {}

metadata := x if {
	x := template.metadata
	is_object(x)
} else := {}

spec := x if {
	x := template.spec
	is_object(x)
} else := {}

limits := x if {
	x := spec.limits
	is_object(x)
} else := {}

wasi := x if {
	x := spec.capabilities.wasi
	is_object(x)
} else := {}

tools := x if {
	x := spec.tools
	is_array(x)
} else := []

preopens := x if {
	x := wasi.preopens
	is_array(x)
} else := []

env_names := x if {
	x := wasi.env
	is_array(x)
} else := []

findings := x if {
	x := input.findings
	is_array(x)
} else := []

# The built module, when there is one (null before the build: then an empty object).
default module_given := false

module_given if is_object(input.module)

module := x if {
	module_given
	x := input.module
} else := {}

imports := x if {
	x := module.imports
	is_array(x)
} else := []

base := x if {
	x := input.base
	is_object(x)
} else := {}

deny contains msg if {
	not template_given
	msg := "input.template: the template document is missing or not an object; the engine must pass the parsed agent.yaml"
}

deny contains msg if {
	not module_given
	m := input.module
	not m == null
	msg := "input.module: must be null (before the build) or the module's imports and exports"
}

# --- the module's imports (T2, T3) ------------------------------------------------------------
#
# Cost: rego-cpp pays ~7 µs for every element a loop visits and reads a field of, so four rules each
# looping over every import cost ~0.5 ms of a template decision. The imports that are plain allowed
# WASI functions cannot be denied by any rule of T2 or T3 (their module is config wasi_module, their
# name is in allowed_wasi_functions, and that module is neither blocked nor the tool module:
# plain_wasi_module); other_imports holds the others, and the rules below visit only those (none for
# a typical agent). Any other import, an entry that is not an object included, is looked at by every
# rule, exactly as before.

plain_wasi_module := m if {
	m := cfg.wasi_module
	not m in cfg.blocked_import_modules
	not m == cfg.tool_module
}

plain_wasi_import(imp) if {
	imp.module == plain_wasi_module
	imp.name in allowed_wasi_functions
}

# Read from the config once: every read of it in a loop costs rego-cpp ~20 µs, a rule's value ~6 µs.
allowed_wasi_functions := cfg.allowed_wasi_functions

# The indexes of the other imports, an array: rego-cpp builds a set again at every member it adds (one
# loop calling a function costs it less here than three loops without one).
other_imports := [i |
	imp := imports[i]
	not plain_wasi_import(imp)
]

# --- T1: dangerous tools ----------------------------------------------------------------------

deny contains msg if {
	some i, tool in tools
	tool in cfg.dangerous_tools
	msg := sprintf(`spec.tools[%d]: "%s" is a dangerous tool (config dangerous_tools) and is never granted to an agent; remove it from spec.tools and do the work inside the agent`, [i, txt(tool)])
}

# --- T2: blocked import modules (non-standard host APIs: WASIX, WasmEdge, pre-preview1 WASI) ----

deny contains msg if {
	some i in other_imports
	imp := imports[i]
	imp.module in cfg.blocked_import_modules
	msg := sprintf(`module.imports[%d]: the module imports %s.%s; module "%s" is a blocked host API (config blocked_import_modules); build for plain wasm32-wasi (%s) and remove the code that needs it`, [i, txt(imp.module), import_name(imp), txt(imp.module), txt(cfg.wasi_module)])
}

# import_name(imp): the import's function name as message text ("null" when it has none: the rule
# must still deny, and a missing field would leave the message, hence the rule, undefined).
import_name(imp) := txt(object.get(obj(imp), "name", null))

# --- T3: imports must be allowed WASI functions or declared tools ---------------------------
#
# config allowed_wasi_functions is what a stdin/stdout agent with read-only preopens needs:
# arguments, environment (already an allowlist, T8), clocks, randomness, poll/yield, exit, reading
# and seeking open files and stdio, writing to stdout/stderr (fd_write), opening, listing and
# stat-ing paths under the preopens (the runtime opens preopens read-only, T6). fd_pread is a
# positional read and is allowed. Not allowed: sockets (sock_*), anything that changes the
# file system (fd_pwrite, fd_allocate, fd_filestat_set_*, fd_sync, fd_datasync,
# path_create_directory, path_remove_directory, path_rename, path_symlink, path_unlink_file,
# path_link, path_filestat_set_times), fd table juggling that agents do not need (fd_renumber,
# fd_fdstat_set_rights) and signals (proc_raise).

deny contains msg if {
	some i in other_imports
	imp := imports[i]
	imp.module == cfg.wasi_module
	not object.get(obj(imp), "name", null) in cfg.allowed_wasi_functions
	msg := sprintf(`module.imports[%d]: %s.%s is not an allowed WASI function (config allowed_wasi_functions: stdio, clocks, randomness and read-only files; no sockets, file changes or signals); remove the code that calls it`, [i, txt(imp.module), import_name(imp)])
}

deny contains msg if {
	some i in other_imports
	imp := imports[i]
	imp.module == cfg.tool_module
	not object.get(obj(imp), "name", null) in tools
	msg := sprintf(`module.imports[%d]: the module imports host tool "%s" from "%s" but spec.tools does not declare it; add "%s" to spec.tools (the policy decides whether it is allowed) or remove the call`, [i, import_name(imp), txt(imp.module), import_name(imp)])
}

deny contains msg if {
	some i in other_imports
	entry := imports[i]
	not object.get(obj(entry), "module", null) in known_modules
	imp := obj(entry)
	mod := object.get(imp, "module", "?")
	msg := sprintf(`module.imports[%d]: the module imports %s.%s from unknown module "%s"; agents may import only %s functions and declared tools from "%s"; remove the import`, [i, txt(mod), txt(object.get(imp, "name", "?")), txt(mod), txt(cfg.wasi_module), txt(cfg.tool_module)])
}

# A set computed once per decision, not a function called per import: rego-cpp evaluates a
# function again at every call (~40 µs each; see artifact.rego, Cost). Blocked modules are known
# here because T2 reports them.
known_modules := (({m | m := cfg.wasi_module} | {m | m := cfg.tool_module}) | {m | some m in cfg.blocked_import_modules})

# --- T4: memory ceiling -----------------------------------------------------------------------
#
# A ceiling is compared on numbers only: OPA orders values of different types (null < booleans <
# numbers < strings, so "x" > 256) where rego-cpp does not; a value that is not a number is denied
# by the rule that says so.

# The limits as numbers, each typed once per decision (null when missing or not a number).
memory_mib := m if {
	m := limits.memoryMiB
	is_number(m)
} else := null

timeout_ms := t if {
	t := limits.timeoutMs
	is_number(t)
} else := null

initial_memory_bytes := b if {
	b := module.initialMemoryBytes
	is_number(b)
} else := null

deny contains msg if {
	memory_mib == null
	msg := sprintf("spec.limits.memoryMiB is missing or not a number: set the agent's memory ceiling in MiB (at most %v)", [cfg.max_memory_mib])
}

deny contains msg if {
	not memory_mib == null
	memory_mib > cfg.max_memory_mib
	msg := sprintf("spec.limits.memoryMiB is %v, above the ceiling of %v MiB (config max_memory_mib); lower spec.limits.memoryMiB to at most %v", [memory_mib, cfg.max_memory_mib, cfg.max_memory_mib])
}

deny contains msg if {
	not memory_mib == null
	not initial_memory_bytes == null
	initial_memory_bytes > memory_mib * 1048576
	wanted := initial_memory_bytes
	msg := sprintf("module.initialMemoryBytes: the module asks for %v bytes of memory at start, more than spec.limits.memoryMiB (%v MiB); raise spec.limits.memoryMiB or make the module smaller (static data, stack)", [wanted, memory_mib])
}

deny contains msg if {
	module_given
	initial_memory_bytes == null
	msg := "module.initialMemoryBytes is missing or not a number: the engine must pass the memory the module asks for at start, in bytes"
}

# --- T5: time ceiling -------------------------------------------------------------------------

deny contains msg if {
	timeout_ms == null
	msg := sprintf("spec.limits.timeoutMs is missing or not a number: set the wall-clock deadline in milliseconds (at most %v)", [cfg.max_timeout_ms])
}

deny contains msg if {
	not timeout_ms == null
	timeout_ms > cfg.max_timeout_ms
	msg := sprintf("spec.limits.timeoutMs is %v, above the ceiling of %v ms (config max_timeout_ms); lower spec.limits.timeoutMs to at most %v", [timeout_ms, cfg.max_timeout_ms, cfg.max_timeout_ms])
}

# --- T12: node ceilings: the output cap and the node's memory budget (issue 18) --------------------
#
# The node service (sandbox-runtime/server.py) refuses at every invocation, as 403 node-ceiling, an
# agent whose maxOutputKiB is over its ceiling (AGENTFACTORY_RUNTIME_MAX_OUTPUT_KIB, default 16384)
# or whose caps could never fit its memory budget (AGENTFACTORY_RUNTIME_MEMORY_BUDGET_MIB, default
# 768): per invocation it reserves memoryMiB + 4 x maxOutputKiB (stdout and stderr, each twice while
# the sandbox joins its parts) + 16 KiB of tool log + 1 MiB of store, plus three times the request
# body. Config node mirrors those defaults (invocation_overhead_kib = 16 + 1024; the body is left
# out: with an empty body the agent still does not fit). Such an agent could never run on a node,
# so it is refused here, where it is built. maxOutputKiB absent: the schema default
# (node.default_output_kib, 1024). output_kib is always defined (null when the config has no
# default: the node config rule below reports that).

output_kib := k if {
	k := limits.maxOutputKiB
} else := object.get(node_config, "default_output_kib", null)

default output_kib_number := false

output_kib_number if is_number(output_kib)

# maxOutputKiB given (output_kib is then that value) and not a number.
deny contains msg if {
	limits.maxOutputKiB == output_kib
	not output_kib_number
	msg := "spec.limits.maxOutputKiB is not a number: set the per-stream output cap in KiB, or leave it out for the default of 1024"
}

deny contains msg if {
	output_kib_number
	output_kib > cfg.node.max_output_kib
	msg := sprintf("spec.limits.maxOutputKiB is %v, above the node ceiling of %v KiB (config node.max_output_kib, the runtime's AGENTFACTORY_RUNTIME_MAX_OUTPUT_KIB): no node would run it; lower spec.limits.maxOutputKiB to at most %v", [output_kib, cfg.node.max_output_kib, cfg.node.max_output_kib])
}

deny contains msg if {
	not memory_mib == null
	output_kib_number
	need_kib := ((memory_mib * 1024) + (4 * output_kib)) + node_config.invocation_overhead_kib
	need_kib > node_config.memory_budget_mib * 1024
	msg := sprintf("spec.limits: memoryMiB %v and maxOutputKiB %v need %v MiB of host memory per invocation (memoryMiB + 4 x maxOutputKiB + %v KiB of tool log and store), more than the node's whole memory budget of %v MiB (config node.memory_budget_mib, the runtime's AGENTFACTORY_RUNTIME_MEMORY_BUDGET_MIB): no node could ever run it; lower spec.limits.memoryMiB or spec.limits.maxOutputKiB", [memory_mib, output_kib, round((need_kib * 10) / 1024) / 10, cfg.node.invocation_overhead_kib, cfg.node.memory_budget_mib])
}

node_config := n if {
	n := cfg.node
	is_object(n)
} else := {}

node_config_complete if {
	is_number(node_config.max_output_kib)
	is_number(node_config.memory_budget_mib)
	is_number(node_config.invocation_overhead_kib)
	is_number(node_config.default_output_kib)
}

deny contains msg if {
	not node_config_complete
	some key in ["max_output_kib", "memory_budget_mib", "invocation_overhead_kib", "default_output_kib"]
	not is_number(object.get(node_config, key, null))
	msg := sprintf("config node.%s is missing or not a number (policies/data.json): the node ceilings (T12) cannot be judged without it", [txt(key)])
}

# --- T6: preopens are read-only (readOnly absent = true, the schema default) --------------------

deny contains msg if {
	some i, p in preopens
	ro := object.get(obj(p), "readOnly", true)
	ro != true
	msg := sprintf("spec.capabilities.wasi.preopens[%d].readOnly is %v: agents get read-only folders only; set readOnly: true (or leave it out, it defaults to true)", [i, ro])
}

# --- T7: no root or sensitive host folder -----------------------------------------------------
#
# A hostPath is refused when it is "/", when it is one of config sensitive_host_paths or below one
# ("/etc", "/etc/ssl"; not "/etcetera"), and also when it contains one ("/var" exposes
# "/var/run"). It must be a plain absolute path: no "." or ".." segments, no "//".

deny contains msg if {
	some i, p in preopens
	hp := object.get(obj(p), "hostPath", null)
	not is_string(hp)
	msg := sprintf("spec.capabilities.wasi.preopens[%d].hostPath is missing or not a string: set the absolute host folder to map", [at(i, hp)])
}

deny contains msg if {
	some i, p in preopens
	hp := host_path(p)
	not plain_absolute(hp)
	msg := sprintf(`spec.capabilities.wasi.preopens[%d].hostPath "%s" is not a plain absolute path; write it without ".", ".." or empty segments (e.g. /srv/data)`, [i, txt(hp)])
}

deny contains msg if {
	some i, p in preopens
	hp := host_path(p)
	normalised(hp) == "/"
	msg := sprintf(`spec.capabilities.wasi.preopens[%d].hostPath "%s" maps the host's root folder; map only the data folder the agent needs (e.g. /srv/data)`, [i, txt(hp)])
}

deny contains msg if {
	some i, p in preopens
	hp := host_path(p)
	some s in cfg.sensitive_host_paths
	under(normalised(hp), s)
	msg := sprintf(`spec.capabilities.wasi.preopens[%d].hostPath "%s" is the sensitive host path %s or below it (config sensitive_host_paths); map a dedicated data folder instead`, [i, txt(hp), txt(s)])
}

deny contains msg if {
	some i, p in preopens
	hp := host_path(p)
	n := normalised(hp)
	n != "/"
	some s in cfg.sensitive_host_paths
	startswith(s, concat("", [n, "/"]))
	msg := sprintf(`spec.capabilities.wasi.preopens[%d].hostPath "%s" contains the sensitive host path %s (config sensitive_host_paths); map a narrower, dedicated data folder instead`, [i, txt(hp), txt(s)])
}

host_path(p) := hp if {
	hp := object.get(obj(p), "hostPath", null)
	is_string(hp)
}

# normalised(hp): hp without its trailing slashes ("/" for the root). A regular expression, not
# trim_right(hp, "/"): rego-cpp's trim_* builtins raise an error on a string holding a backslash
# that is not a JSON escape ("/srv\\a"), where OPA trims it (docs/policy.md, OPA and regopy).
normalised(hp) := "/" if {
	regex.match(`^/*$`, hp)
} else := regex.replace(hp, `/+$`, "")

under(path, s) if path == s

under(path, s) if startswith(path, concat("", [s, "/"]))

plain_absolute(hp) if {
	startswith(hp, "/")
	normalised(hp) == "/"
}

plain_absolute(hp) if {
	startswith(hp, "/")
	n := normalised(hp)
	n != "/"
	parts := split(n, "/")
	every seg in array.slice(parts, 1, count(parts)) {
		seg != ""
		seg != "."
		seg != ".."
	}
}

# --- T8: env is an allowlist of names, never a wildcard, never a secret -----------------------
#
# rego-cpp has no (?i): config secret_env_patterns are written in upper case and matched against
# the upper-cased name (the schema only allows upper-case names anyway).

deny contains msg if {
	some i, name in env_names
	is_string(name)
	contains(name, "*")
	msg := sprintf(`spec.capabilities.wasi.env[%d] is "%s": the environment is an allowlist; name each variable the agent needs instead of a wildcard`, [i, txt(name)])
}

deny contains msg if {
	some i, name in env_names
	is_string(name)
	hits := [pat |
		some pat in cfg.secret_env_patterns
		regex.is_valid(pat)
		regex.match(pat, upper(name))
	]
	count(hits) > 0
	msg := sprintf(`spec.capabilities.wasi.env[%d] is "%s", which looks like a secret (matches %s in config secret_env_patterns); remove it from spec.capabilities.wasi.env: secrets are never passed to agents`, [i, txt(name), txt(concat(", ", hits))])
}

deny contains msg if {
	some i, pat in cfg.secret_env_patterns
	not regex.is_valid(pat)
	msg := sprintf(`config secret_env_patterns[%d] "%s" is not a regular expression this policy engine accepts (no inline flags such as (?i)); fix policies/data.json`, [i, txt(pat)])
}

# --- T9: owners ---------------------------------------------------------------------------

deny contains msg if {
	not has_owner
	msg := "metadata.owners is missing or empty: list at least one owner who answers for this agent (a GitHub @user or @org/team handle, or an e-mail address)"
}

# A backslash is not white space: such an owner is not blank. rego-cpp's trim_space raises an error
# on a backslash that is not a JSON escape, where OPA trims, so it is not called on these; and the
# backslash is found with a regular expression: rego-cpp's contains(o, `\`) looks for two of them
# (a literal's escapes are compared as written). docs/policy.md, OPA and regopy. The bodies are an
# else chain, each evaluated only when the ones before it found no owner (the same result, less work):
# the first owner alone (rego-cpp would otherwise test every owner), then every owner, then every
# owner that holds a backslash.
has_owner if {
	o := owners[0]
	is_string(o)
	not regex.match(`\\`, o)
	not trim_space(o) == ""
} else if {
	some o in owners
	is_string(o)
	not regex.match(`\\`, o)
	not trim_space(o) == ""
} else if {
	some o in owners
	is_string(o)
	regex.match(`\\`, o)
}

owners := x if {
	x := metadata.owners
	is_array(x)
} else := []

# --- T10: the version increases whenever the template changes --------------------------------
#
# Versions are validated and compared here rather than with semver.is_valid / semver.compare:
# rego-cpp 1.5's semver builtins accept "01.0.0" and "1.0.0-01" and order pre-releases wrongly
# ("1.0.0-rc.1" > "1.0.0", "2.0.0-beta.1" < "1.9.9"). This is SemVer 2.0.0 section 11, and the
# same pattern as the template schema.

semver_pattern := `^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-(0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)(\.(0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*))*)?(\+[0-9a-zA-Z-]+(\.[0-9a-zA-Z-]+)*)?$`

# A plain MAJOR.MINOR.PATCH (most versions) is matched by the short core pattern first: rego-cpp
# compiles a pattern again at every match, in time that grows with it (~0.2 ms for the full one).
# The core pattern accepts a subset of what the full one does, so the result is the same.
valid_semver(v) if {
	is_string(v)
	regex.match(semver_core_pattern, v)
} else if {
	is_string(v)
	regex.match(semver_pattern, v)
}

semver_core_pattern := `^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)$`

# semver_cmp(a, b): -1, 0 or 1 as a is lower than, equal to (build metadata ignored) or higher
# than b. Both must be valid.
semver_cmp(a, b) := c if {
	pa := semver_parse(a)
	pb := semver_parse(b)
	diffs := [d | some k in [0, 1, 2]; d := sign(pa.core[k] - pb.core[k]); d != 0]
	count(diffs) > 0
	c := diffs[0]
} else := cmp_prerelease(semver_parse(a).pre, semver_parse(b).pre)

semver_parse(v) := {"core": numbers_of(release), "pre": []} if {
	release := split(v, "+")[0]
	indexof(release, "-") == -1
}

semver_parse(v) := {"core": numbers_of(substring(release, 0, i)), "pre": split(substring(release, i + 1, -1), ".")} if {
	release := split(v, "+")[0]
	i := indexof(release, "-")
	i >= 0
}

numbers_of(core) := [to_number(x) | some x in split(core, ".")]

sign(x) := 1 if {
	x > 0
} else := -1 if {
	x < 0
} else := 0

# A version without pre-release is higher than the same version with one; otherwise the first
# differing identifier decides, then the longer list.
cmp_prerelease(a, b) := 0 if {
	count(a) == 0
	count(b) == 0
} else := 1 if {
	count(a) == 0
} else := -1 if {
	count(b) == 0
} else := c if {
	diffs := [d | some k in numbers.range(0, min([count(a), count(b)]) - 1); d := cmp_identifier(a[k], b[k]); d != 0]
	count(diffs) > 0
	c := diffs[0]
} else := sign(count(a) - count(b))

# Numeric identifiers compare as numbers and are lower than alphanumeric ones, which compare in
# ASCII order.
cmp_identifier(x, y) := sign(to_number(x) - to_number(y)) if {
	numeric(x)
	numeric(y)
} else := -1 if {
	numeric(x)
} else := 1 if {
	numeric(y)
} else := -1 if {
	x < y
} else := 1 if {
	x > y
} else := 0

numeric(s) if regex.match(`^[0-9]+$`, s)

deny contains msg if {
	v := object.get(metadata, "version", null)
	not valid_semver(v)
	msg := sprintf(`metadata.version "%s" is not a semantic version (MAJOR.MINOR.PATCH, no leading "v"); write e.g. 1.0.0`, [txt(v)])
}

deny contains msg if {
	base.changed == true
	bv := object.get(base, "version", null)
	not valid_semver(bv)
	msg := sprintf(`metadata.version: the base branch's version "%s" is not a semantic version, so the bump cannot be checked; fix the version on the base branch first`, [txt(bv)])
}

deny contains msg if {
	base.changed == true
	v := metadata.version
	valid_semver(v)
	valid_semver(base.version)
	semver_cmp(v, base.version) <= 0
	msg := sprintf("metadata.version %s does not increase the base branch's version %s, but the template changed; bump metadata.version above %s", [txt(v), txt(base.version), txt(base.version)])
}

# --- T11: static source findings of a blocking severity ------------------------------------

deny contains msg if {
	some f in findings
	sev := lower(txt(object.get(obj(f), "severity", "")))
	sev in cfg.blocking_severities
	msg := sprintf("%s:%s: %s: %s (severity %s; remove or rewrite this code)", [txt(object.get(f, "file", "?")), txt(object.get(f, "line", 0)), txt(object.get(f, "class", "?")), txt(object.get(f, "message", "")), txt(sev)])
}

deny contains msg if {
	some f in findings
	sev := lower(txt(object.get(obj(f), "severity", "")))
	not sev in cfg.finding_severities
	msg := sprintf(`%s:%s: %s: finding with unknown severity "%s" (expected one of %s); the static validator and the policy disagree, fix one of them`, [txt(object.get(obj(f), "file", "?")), txt(object.get(obj(f), "line", 0)), txt(object.get(obj(f), "class", "?")), txt(sev), txt(concat(", ", cfg.finding_severities))])
}
