# Artifact policy: may this artifact be promoted to / admitted / run in `input.stage`?
#
# Input (docs/policy-inputs.md): {"artifact": {"name", "version", "digest"}, "stage": "dev" |
# "canary" | "prod" | <any stage named in config>, "verdict": {"score", "checks": [{"name", "ok",
# "reason"}]}, "sbom": null | {"components": [{"name", "version", "purl", "licenses": [...]}]},
# "scan": null | {"findings": [{"id", "severity", "package", "fixAvailable", "fixedVersions", "suppressed", …}],
# "unscanned": [{"component", "reason"}], "scannedOn"}, "now": RFC 3339 decision time, "times": {<each
# valid RFC 3339 string of now and scannedOn>: <its nanoseconds since the epoch>}, "provenance": null |
# {"dirty", "repository", "builder"}, "trust": {"repositories": [...]}, "promotion": null | {...}}.
# Tunables: data.agentfactory.config (policies/data.json).
#
# Every deny message names the field it is about and says what to change. Rule ids: A1..A8.
# rego-cpp compatibility: see the notes at the top of template.rego (no %q; txt() around every
# string argument of sprintf; a field a negation reads is read with object.get, so that OPA and
# rego-cpp agree when it is missing).
package agentfactory.artifact

import rego.v1

default allow := false

allow if deny == set()

# The whole decision as one document: what the OPA engine asks an OPA server for (POST
# /v1/data/agentfactory/artifact/decision, agentfactory/policy_opa.py). One query evaluates only the
# rules it needs and answers with the messages alone, where the package's document would also
# evaluate and return every helper rule (the input's parts, the config).
decision := {"allow": allow, "deny": deny}

cfg := data.agentfactory.config

obj(x) := x if {
	is_object(x)
} else := {}

arr(x) := x if {
	is_array(x)
} else := []

# txt(x): x as message text (a plain string in rego-cpp as well as OPA; see template.rego).
txt(x) := substring(x, 0, -1) if {
	is_string(x)
} else := sprintf("%v", [x])

# Cost (rego-cpp 1.5.2; docs/policy.md, rego-cpp notes, has the measurements): every builtin call
# copies the interpreter's whole state (~5-10 µs, more in a bigger bundle), a comparison or a lookup
# in an object turns its operands or the object's keys into text, a set is rebuilt at every member
# added, a rule is kept for the rest of the decision only once it has a value (so a rule used as a test
# has a default), a user function is evaluated again at every call, a regular expression is compiled
# again at every match, and an expression runs as soon as its variables are bound (a message that names
# only an index would be built before the test on the element: `at`). So what many rules read is a rule
# of its own (the input's parts typed once, the checks reported, the licence entries split once, the
# stage switches, the two times looked up in input.times), tests use `==` and lookups rather than
# builtins (`not x == null`, not `x != null`; `deny == set()`, not `count(deny) == 0`), and loops call
# no function on the allowed path. Functions (txt, label, component_label, remedy) are left in the
# messages: they run only when a rule denies. benchmarks/bench_policy.py measures it.

verdict := v if {
	v := input.verdict
	is_object(v)
} else := {}

# verdict.score when it is a number, else null (typed once per decision).
verdict_score := s if {
	s := verdict.score
	is_number(s)
} else := null

checks := c if {
	c := input.verdict.checks
	is_array(c)
} else := []

stage := s if {
	s := input.stage
	is_string(s)
} else := "default"

# --- A1: complete evidence: every required check is present and passed ------------------------

deny contains msg if {
	some name in required_checks - reported_names
	msg := sprintf(`verdict.checks: the required check "%s" is missing (config required_checks); the verifier must report it: publish the evidence it needs for this digest and verify again`, [txt(name)])
}

deny contains msg if {
	some c in checks
	not c.ok == true
	name := c.name
	name in required_checks
	msg := sprintf(`verdict.checks: the required check "%s" failed: %s; fix what it reports and verify again`, [txt(name), txt(object.get(c, "reason", "no reason given"))])
}

# Computed once per decision (rules are evaluated once; a function is evaluated at every call, and
# a loop over the checks inside a loop over the required names costs rego-cpp ~1 ms).
reported_names := {name |
	some c in checks
	name := c.name
}

required_checks := {name | some name in cfg.required_checks}

# --- A2: minimum security score for the stage --------------------------------------------------
#
# The verifier scores out of 10 (digest 2, signature 2, key-status 1, sbom 1.5, provenance 1.5,
# builder 1, source 1). The required checks alone make 8.0, the default minimum; prod asks for
# 9.0, i.e. also a trusted builder or source. A stage missing from config min_score gets
# min_score.default.

min_score := m if {
	m := cfg.min_score[stage]
	is_number(m)
} else := cfg.min_score.default

deny contains msg if {
	verdict_score == null
	msg := "verdict.score is missing or not a number: the verifier must score the evidence before the policy can judge it"
}

deny contains msg if {
	not verdict_score == null
	verdict_score < min_score
	score := verdict_score
	msg := sprintf(`verdict.score %v is below the minimum %v for stage "%s" (config min_score); complete the missing or failed evidence (signature, SBOM, provenance, builder, source) to raise it`, [score, min_score, txt(stage)])
}

# --- A3: licence allowlist ---------------------------------------------------------------------
#
# A licence is a plain SPDX id or an SPDX expression. An expression is allowed only when every
# id in it is on config license_allowlist (split on AND, OR, WITH and parentheses): simple and
# conservative, so "MIT OR GPL-3.0-only" is refused although MIT alone would be fine. Ids are
# compared case-insensitively, as SPDX specifies. A component without a licence is refused
# (its licence is unknown). sbom null: nothing to check here; A1 reports the missing SBOM.

components := c if {
	c := input.sbom.components
	is_array(c)
} else := []

# allowed_ids: the allowlist in lower case. Lowered as one string (three builtin calls instead of one
# per entry); when an entry holds the separator the pieces do not match the entries (their count
# differs) and each entry is lowered on its own.
allowed_ids := ids if {
	list := cfg.license_allowlist
	ids := split(lower(concat("\n", list)), "\n")
	count(ids) == count(list)
} else := [lower(id) | some id in cfg.license_allowlist]

# licence_entries: every licence of every component that is an object with a licences array:
# [component index, licence index, licence]. An array, built once: rego-cpp builds a set again at
# every member it adds.
licence_entries := [[i, j, lic] |
	some i in object_indexes
	licenses := components[i].licenses
	is_array(licenses)
	lic := licenses[j]
]

# object_indexes: the indexes of the components that are objects (each component tested once).
object_indexes := [i |
	entry := components[i]
	is_object(entry)
]

# string_licences: every licence string, split once per decision into the licence ids (and
# exception ids) it names: [component index, licence index, licence, ids]. No `==` inside these
# comprehensions: rego-cpp compiles a comparison in a comprehension to a builtin call, where a lookup
# in a set is a plain step (and `id` is never "", so `not words[id]` skips the empty piece).
string_licences := [[e[0], e[1], e[2], ids] |
	some e in licence_entries
	is_string(e[2])
	ids := [id |
		some id in regex.split(`[\s()]+`, e[2])
		not not_an_id[id]
	]
]

# The pieces of a split licence that are not ids: the empty string and the operators.
not_an_id := {"", "AND", "OR", "WITH", "and", "or", "with"}

# licensed: the indexes of the components with at least one licence that names an id.
licensed := {e[0] | some e in string_licences; e[3][0]}

component_label(c) := sprintf("%s %s", [txt(object.get(c, "name", "?")), txt(object.get(c, "version", "?"))])

deny contains msg if {
	some i, entry in components
	not i in licensed
	msg := sprintf(`sbom.components[%d] (%s): no licence is declared; set the dependency's SPDX licence (spec.dependencies[].license in agent.yaml) and rebuild`, [i, component_label(obj(entry))])
}

# An entry that names no id at all ("", " ", "()", a newline) is refused even beside an allowed one:
# it says nothing the allowlist can judge, so it must not ride along unjudged.
deny contains msg if {
	some e in string_licences
	e[3] == []
	e[0] in licensed
	msg := sprintf(`sbom.components[%d].licenses[%d] (%s) names no SPDX licence id; remove the empty entry or declare the dependency's SPDX licence (spec.dependencies[].license in agent.yaml) and rebuild`, [e[0], e[1], component_label(components[e[0]])])
}

# Every licence entry that is not a string (looked for only when some entry is not one).
deny contains msg if {
	not count(string_licences) == count(licence_entries)
	some e in licence_entries
	not is_string(e[2])
	msg := sprintf(`sbom.components[%d].licenses[%d] (%s) is not a string: licences must be SPDX ids or expressions`, [e[0], e[1], component_label(components[e[0]])])
}

# e[3][0] defined and e[3][1] not: one id (a test on the ids, not count: no builtin call).
deny contains msg if {
	some e in string_licences
	e[3][0]
	not e[3][1]
	not lower(e[3][0]) in allowed_ids
	msg := sprintf(`sbom.components[%d].licenses[%d] (%s): licence "%s" is not on the licence allowlist (config license_allowlist); replace the dependency or have the licence approved and added to the allowlist`, [e[0], e[1], component_label(components[e[0]]), txt(e[2])])
}

deny contains msg if {
	some e in string_licences
	e[3][1]
	refused := [id | some id in e[3]; not lower(id) in allowed_ids]
	count(refused) > 0
	msg := sprintf(`sbom.components[%d].licenses[%d] (%s): licence expression "%s" names %s, not on the licence allowlist (config license_allowlist); every id in an expression must be allowed: declare only an allowed choice (e.g. MIT instead of MIT OR GPL-3.0-only) or replace the dependency`, [e[0], e[1], component_label(components[e[0]]), txt(e[2]), txt(concat(", ", refused))])
}

deny contains msg if {
	s := input.sbom
	not is_object(s)
	not s == null
	msg := "sbom: must be null (no verified SBOM) or an object with components"
}

# --- A4: vulnerability gate --------------------------------------------------------------------
#
# input.scan is the verified scan attestation (docs/scanning.md). A finding blocks when its
# severity is in config blocking_severities and no VEX statement suppressed it. With config
# ignore_unfixed true, a finding no fixed version exists for does not block (Trivy's
# --ignore-unfixed); the default false blocks it, because unfixable is not harmless.
# scan null: no verified scan; A1 reports the missing "scan" check.

scan_findings := f if {
	f := input.scan.findings
	is_array(f)
} else := []

ignore_unfixed := object.get(cfg, "ignore_unfixed", false) == true

deny contains msg if {
	some i, entry in scan_findings
	f := obj(entry)
	sev := effective_severity(f)
	sev in cfg.blocking_severities
	object.get(f, "suppressed", false) != true
	not unfixed_ignored(f)
	msg := sprintf(`scan.findings[%d]: %s (severity %s%s) is not suppressed by any VEX statement; %s, or publish a signed VEX statement saying why it does not apply`, [i, txt(object.get(f, "id", "?")), txt(severity_label(f, sev)), txt(affected(f)), txt(remedy(f))])
}

severity_label(f, sev) := "unknown, judged as high for this stage (config unknown_severity_as_high)" if {
	sev != lower(txt(object.get(f, "severity", "")))
} else := sev

# The per-stage booleans of config (config[name][stage], else config[name].default, else false;
# only `true` switches a rule on), one rule each, evaluated once per decision and only where a rule
# asks (the unknown-severity switch only when there is a finding). Cost: every read of the config
# costs rego-cpp ~20-40 µs; the set of all four switches, built for every decision, cost ~0.25 ms.
# (switch[stage] reads the stage's entry of an object, and nothing of another type: a set holds no
# value true, an array has no string index.)
switch_on(switch) if {
	switch[stage] == true
} else if {
	switch["default"] == true
	is_object(switch)
	object.get(switch, stage, null) == null
}

default unknown_severity_as_high := false

unknown_severity_as_high if switch_on(cfg.unknown_severity_as_high)

default fail_on_unscanned := false

fail_on_unscanned if switch_on(cfg.fail_on_unscanned)

default refuse_dirty_provenance := false

refuse_dirty_provenance if switch_on(cfg.refuse_dirty_provenance)

default refuse_any_repository := false

refuse_any_repository if switch_on(cfg.refuse_any_repository)

# An advisory without a severity ("unknown", or none at all) is judged as high where config
# unknown_severity_as_high is on for the stage (on for prod by default): not knowing how bad a
# vulnerability is must not make it harmless.
effective_severity(f) := "high" if {
	unknown_severity_as_high
	lower(txt(object.get(f, "severity", ""))) in {"unknown", ""}
} else := lower(txt(object.get(f, "severity", "")))

unfixed_ignored(f) if {
	ignore_unfixed
	object.get(f, "fixAvailable", false) != true
}

remedy(f) := sprintf("upgrade it to %s", [txt(concat(" or ", [txt(v) | some v in arr(object.get(f, "fixedVersions", null))]))]) if {
	count(arr(object.get(f, "fixedVersions", null))) > 0
} else := "no fixed version is published: remove the dependency"

affected(f) := sprintf(", in %s", [txt(p)]) if {
	p := object.get(f, "package", object.get(f, "component", null))
	is_string(p)
} else := ""

deny contains msg if {
	not scan_present
	s := input.scan
	not s == null
	msg := "scan: must be null (not scanned) or an object with findings"
}

# --- A5: the run contract (input.agent), judged again where the agent is promoted, admitted or run
#
# input.agent is what the template declared, read back from the verified provenance: tools,
# WASI capabilities and limits. The template policy judged the template at build time; the node
# judges the signed contract again with its own configuration, so a build that skipped the
# template policy, or a tighter config since, still stops a dangerous grant. agent null: no
# contract was attested (the runtime refuses to run such an artifact; promotion may still verify it).

agent_preopens := p if {
	p := input.agent.capabilities.wasi.preopens
	is_array(p)
} else := []

agent_limits := l if {
	l := input.agent.limits
	is_object(l)
} else := {}

agent_tools := t if {
	t := input.agent.tools
	is_array(t)
} else := []

deny contains msg if {
	some i, tool in agent_tools
	tool in cfg.dangerous_tools
	msg := sprintf(`agent.tools[%d]: "%s" is a dangerous tool (config dangerous_tools) and is never granted; rebuild the agent without it`, [i, txt(tool)])
}

deny contains msg if {
	some i, p in agent_preopens
	object.get(obj(p), "readOnly", true) != true
	msg := sprintf("agent.capabilities.wasi.preopens[%d].readOnly is not true: agents get read-only folders only; rebuild with readOnly: true", [at(i, p)])
}

# at(i, _): i, in a message about the element `_`. rego-cpp evaluates each expression of a rule as
# soon as its variables are bound: a message that names only the index would be built for every
# element, before the test on the element; naming the element makes it wait for the test.
at(i, _) := i

deny contains msg if {
	some i, p in agent_preopens
	hp := object.get(obj(p), "hostPath", "")
	is_string(hp)
	some s in array.concat(["/"], cfg.sensitive_host_paths)
	host_under(hp, s)
	msg := sprintf(`agent.capabilities.wasi.preopens[%d].hostPath "%s" is the host root or the sensitive host path %s or below it (config sensitive_host_paths); map a dedicated data folder instead`, [i, txt(hp), txt(s)])
}

# Regular expressions, not trim_right(hp, "/"): rego-cpp's trim_* builtins raise an error on a string
# holding a backslash that is not a JSON escape, where OPA trims it (see template.rego, normalised).
host_under(hp, "/") if regex.match(`^/*$`, hp)

host_under(hp, s) if {
	s != "/"
	regex.replace(hp, `/+$`, "") == s
}

host_under(hp, s) if {
	s != "/"
	startswith(hp, concat("", [s, "/"]))
}

# The agent's limits as the rules below read them (0 when absent), each read once per decision.
agent_memory_mib := m if {
	m := agent_limits.memoryMiB
} else := 0

agent_timeout_ms := t if {
	t := agent_limits.timeoutMs
} else := 0

deny contains msg if {
	m := agent_memory_mib
	is_number(m)
	m > cfg.max_memory_mib
	msg := sprintf("agent.limits.memoryMiB is %v, above the ceiling of %v MiB (config max_memory_mib); rebuild with a lower spec.limits.memoryMiB", [m, cfg.max_memory_mib])
}

deny contains msg if {
	t := agent_timeout_ms
	is_number(t)
	t > cfg.max_timeout_ms
	msg := sprintf("agent.limits.timeoutMs is %v, above the ceiling of %v ms (config max_timeout_ms); rebuild with a lower spec.limits.timeoutMs", [t, cfg.max_timeout_ms])
}

# Node ceilings (issue 18; template.rego T12 explains the formula): an output cap over the node's
# ceiling, or memory and output caps that could never fit the node's memory budget, are refused
# where the agent is promoted or admitted, not first by the node at each invocation (403
# node-ceiling). maxOutputKiB absent: the schema default (config node.default_output_kib).

agent_output_kib := k if {
	k := agent_limits.maxOutputKiB
} else := object.get(node_config, "default_output_kib", null)

default agent_output_kib_number := false

agent_output_kib_number if is_number(agent_output_kib)

default agent_given := false

agent_given if is_object(input.agent)

deny contains msg if {
	agent_given
	agent_output_kib_number
	agent_output_kib > cfg.node.max_output_kib
	msg := sprintf("agent.limits.maxOutputKiB is %v, above the node ceiling of %v KiB (config node.max_output_kib, the runtime's AGENTFACTORY_RUNTIME_MAX_OUTPUT_KIB): no node would run it; rebuild with spec.limits.maxOutputKiB at most %v", [agent_output_kib, cfg.node.max_output_kib, cfg.node.max_output_kib])
}

deny contains msg if {
	m := agent_limits.memoryMiB
	is_number(m)
	is_number(agent_output_kib)
	need_kib := ((m * 1024) + (4 * agent_output_kib)) + cfg.node.invocation_overhead_kib
	need_kib > cfg.node.memory_budget_mib * 1024
	msg := sprintf("agent.limits: memoryMiB %v and maxOutputKiB %v need %v MiB of host memory per invocation (memoryMiB + 4 x maxOutputKiB + %v KiB of tool log and store), more than the node's whole memory budget of %v MiB (config node.memory_budget_mib, the runtime's AGENTFACTORY_RUNTIME_MEMORY_BUDGET_MIB): no node could ever run it; rebuild with a lower spec.limits.memoryMiB or spec.limits.maxOutputKiB", [m, agent_output_kib, round((need_kib * 10) / 1024) / 10, cfg.node.invocation_overhead_kib, cfg.node.memory_budget_mib])
}

# maxOutputKiB given (agent_output_kib is then that value) and not a number.
deny contains msg if {
	agent_given
	agent_limits.maxOutputKiB == agent_output_kib
	not agent_output_kib_number
	msg := "agent.limits.maxOutputKiB is not a number: the run contract must state the per-stream output cap in KiB (or leave it out for the default)"
}

node_config := n if {
	n := cfg.node
	is_object(n)
} else := {}

# The four settings read once (four builtin calls), and only where there is an agent; each is named
# only when one is missing. A rule of its own: in a body with a loop (`some key in …`), rego-cpp runs
# the expressions without variables first, in no set order, so `agent_given` there would not keep the
# check from running at every decision.
node_config_complete if {
	is_number(node_config.max_output_kib)
	is_number(node_config.memory_budget_mib)
	is_number(node_config.invocation_overhead_kib)
	is_number(node_config.default_output_kib)
}

node_config_to_name if {
	agent_given
	not node_config_complete
}

deny contains msg if {
	node_config_to_name
	some key in ["max_output_kib", "memory_budget_mib", "invocation_overhead_kib", "default_output_kib"]
	not is_number(object.get(node_config, key, null))
	msg := sprintf("config node.%s is missing or not a number (policies/data.json): the node ceilings of the run contract (A5) cannot be judged without it", [txt(key)])
}

deny contains msg if {
	not agent_given
	a := input.agent
	not a == null
	msg := "agent: must be null (no attested run contract) or an object with tools, capabilities and limits"
}

# --- A6: scan freshness: a maximum scan age per stage --------------------------------------------
#
# Advisories are published after builds, so an old clean scan says little. Config
# scan_max_age_hours maps a stage to the oldest scan (hours, by input.scan.scannedOn, the scan's
# finish time) it accepts, judged against input.now (the decision time, RFC 3339 UTC); a stage
# without an entry has no maximum (dev). Where a maximum applies, a missing or unparsable time
# denies, and so does a scan finished more than scan_clock_skew_seconds after now (a signed claim
# from the future would otherwise stay fresh for ever). Re-scan with `agentfactory scan AGENT
# --attest` (deploy/rescan runs it on a schedule). scan null: A1 reports the missing scan.

max_scan_age_hours := h if {
	h := cfg.scan_max_age_hours[stage]
	is_number(h)
}

# input.times maps each RFC 3339 time string of the input (now, scan.scannedOn) to its nanoseconds
# since the epoch. The input builder parses them (agentfactory/policy_input.py rfc3339_ns: years
# 1970-2261, a day the month has, 29 February in leap years only, hours 00-23, minutes and seconds
# 00-59, offsets up to 23:59) and leaves out a string that is not such a time. The policy looks a
# string up instead of parsing it: the regular expression, substrings and time.parse_rfc3339_ns
# cost rego-cpp ~0.9 ms of a ~3.4 ms decision. Fail closed: a time whose string is not a key of
# input.times, or whose value is not an integral number, is not a time (A6 denies where a maximum
# applies); keyed by the string, a value can never outlive an edit of the string it was parsed from.
times := t if {
	t := input.times
	is_object(t)
} else := {}

# now_ns, scanned_ns: the nanoseconds of input.now and input.scan.scannedOn; undefined when a time
# is not one. Rules, not a function: rego-cpp evaluates a function again at every call.
now_ns := ns if {
	ns := times[input.now]
	is_number(ns)
	round(ns) == ns
}

scanned_ns := ns if {
	ns := times[scanned_on]
	is_number(ns)
	round(ns) == ns
}

# label(x): message text for a value that may be missing.
label(x) := "(none)" if {
	x == null
} else := txt(x)

scanned_on := t if {
	t := input.scan.scannedOn
} else := null

default scan_present := false

scan_present if is_object(input.scan)

scan_unscanned := u if {
	u := input.scan.unscanned
	is_array(u)
} else := []

deny contains msg if {
	scan_present
	max_scan_age_hours
	not now_ns
	msg := sprintf(`now: the decision time %s is missing or not an RFC 3339 time with its value in input.times; stage "%s" has a maximum scan age (config scan_max_age_hours), which cannot be judged without it: the verifier must pass the decision time`, [label(object.get(input, "now", null)), txt(stage)])
}

deny contains msg if {
	scan_present
	max_scan_age_hours
	not scanned_ns
	msg := sprintf(`scan.scannedOn: the scan's finish time %s is missing or not an RFC 3339 time with its value in input.times; stage "%s" accepts scans at most %v hours old (config scan_max_age_hours): re-scan with "agentfactory scan AGENT --attest"`, [label(scanned_on), txt(stage), max_scan_age_hours])
}

deny contains msg if {
	scan_present
	hours := max_scan_age_hours
	age := now_ns - scanned_ns
	age > hours * 3600000000000
	msg := sprintf(`scan.scannedOn: the newest verified scan finished at %s, %v hours before the decision time %s; stage "%s" accepts scans at most %v hours old (config scan_max_age_hours): re-scan with "agentfactory scan AGENT --attest" against today's advisory database`, [txt(scanned_on), round(age / 360000000000) / 10, txt(input.now), txt(stage), hours])
}

deny contains msg if {
	scan_present
	max_scan_age_hours
	scanned_ns - now_ns > clock_skew_seconds * 1000000000
	msg := sprintf(`scan.scannedOn: the scan claims to have finished at %s, after the decision time %s (beyond config scan_clock_skew_seconds): a scan from the future cannot be judged fresh; check the scanner's clock and re-scan`, [txt(scanned_on), txt(input.now)])
}

clock_skew_seconds := s if {
	s := cfg.scan_clock_skew_seconds
} else := 300

# --- A7: scan coverage: a scan that looked at nothing is not a clean scan ----------------------
#
# input.scan.unscanned lists the components the scanners could not judge (no purl, an unknown
# purl type, an unparsable version). When the SBOM lists components that need scanning and every
# one of them is unscanned, nothing was scanned: denied everywhere. Components whose purl starts
# with one of config first_party_purl_prefixes are the project's own vendored code (no advisory
# database knows them; the source validator judges them): they need no scanning, but they do not
# count as scanned either. With config fail_on_unscanned on for the stage, every unscanned
# component denies (`agentfactory scan --fail-on-unscanned` is the same gate by hand).

unscanned_purls := {p |
	some u in scan_unscanned
	p := u.component
	is_string(p)
}

first_party_prefixes := p if {
	p := cfg.first_party_purl_prefixes
	is_array(p)
} else := []

# first_party(p): p is a purl under one of the first-party prefixes.
first_party(p) if {
	is_string(p)
	some prefix in first_party_prefixes
	startswith(p, prefix)
}

# The purl of every component object that needs scanning (null for one without a purl).
object_purls := [p |
	some i in object_indexes
	p := object.get(components[i], "purl", null)
	not first_party(p)
]

# The purl of every component that needs scanning (null for a component without one): a component
# that is not an object has none.
needs_scanning := object_purls if {
	count(object_indexes) == count(components)
} else := array.concat(object_purls, [null | some entry in components; not is_object(entry)])

# A component without a purl cannot have been scanned (no scanner knows what it is).
scanned_purls := [p | some p in needs_scanning; is_string(p)] if {
	unscanned_purls == set()
} else := [p | some p in needs_scanning; is_string(p); not p in unscanned_purls]

deny contains msg if {
	scan_present
	not needs_scanning == []
	scanned_purls == []
	msg := sprintf(`scan.unscanned: nothing was scanned: all %d component(s) of the SBOM that need scanning are unscanned (%s), so the scan found nothing because it looked at nothing; give each dependency a purl an advisory database knows (e.g. pkg:pypi/…, pkg:npm/…, or a generic purl with a vcs_url) and rebuild`, [count(needs_scanning), txt(concat(", ", sort([label(p) | some p in needs_scanning])))])
}

deny contains msg if {
	scan_present
	fail_on_unscanned
	some i, u in scan_unscanned
	msg := sprintf(`scan.unscanned[%d]: %s was not scanned (%s) and stage "%s" refuses unscanned components (config fail_on_unscanned); give it a purl an advisory database knows and rebuild`, [i, txt(object.get(obj(u), "component", "?")), txt(object.get(obj(u), "reason", "no reason given")), txt(stage)])
}

# --- A8: build provenance and trust defaults for the stage ---------------------------------------
#
# input.provenance is what the verified provenance says about the build: dirty (the source tree
# had uncommitted changes; null when the builder did not record it). input.trust.repositories are
# the trust policy's trusted source repository patterns ("*" trusts any). Where config
# refuse_dirty_provenance is on (prod), only a build of a clean, committed tree is accepted; where
# refuse_any_repository is on (prod), a trust policy that trusts every repository is refused,
# because then the source check proves nothing.

provenance := p if {
	p := input.provenance
	is_object(p)
} else := {}

# input.provenance as given (null when absent), whether that is null (compared once: rego-cpp compares
# values as text), and provenance.dirty (null when absent).
raw_provenance := p if {
	p := input.provenance
} else := null

default provenance_absent := false

provenance_absent if raw_provenance == null

provenance_dirty := d if {
	d := provenance.dirty
} else := null

deny contains msg if {
	refuse_dirty_provenance
	provenance_absent
	msg := sprintf(`provenance: there is no verified build provenance, and stage "%s" accepts only builds of a clean, committed tree (config refuse_dirty_provenance); build from a commit with the pipeline, which attests the tree`, [txt(stage)])
}

deny contains msg if {
	refuse_dirty_provenance
	not provenance_absent
	provenance_dirty == true
	msg := sprintf(`provenance.dirty is true: the artifact was built from a tree with uncommitted changes, and stage "%s" accepts only builds of a clean, committed tree (config refuse_dirty_provenance); commit the template and rebuild`, [txt(stage)])
}

deny contains msg if {
	refuse_dirty_provenance
	not provenance_absent
	not provenance_dirty == true
	not provenance_dirty == false
	msg := sprintf(`provenance.dirty is not recorded: whether the tree was committed is unknown, and stage "%s" accepts only builds of a clean, committed tree (config refuse_dirty_provenance); rebuild from a Git commit with the pipeline, which records it`, [txt(stage)])
}

default trusted_repositories_given := false

trusted_repositories_given if is_array(input.trust.repositories)

trusted_repositories := r if {
	trusted_repositories_given
	r := input.trust.repositories
} else := []

deny contains msg if {
	refuse_any_repository
	some i, pattern in trusted_repositories
	is_string(pattern)
	not pattern == ""
	regex.match(`^[*]+$`, pattern) # not trim_left: see host_under
	msg := sprintf(`trust.repositories[%d] is "%s": the trust policy trusts every source repository, and stage "%s" requires it to name the repositories agents may be built from (config refuse_any_repository); list them in spec.repositories of the trust policy (e.g. https://github.com/your-org/agents)`, [i, txt(pattern), txt(stage)])
}

deny contains msg if {
	refuse_any_repository
	not trusted_repositories_given
	msg := sprintf(`trust.repositories is missing: stage "%s" requires the trust policy to name the repositories agents may be built from (config refuse_any_repository); the verifier must pass them`, [txt(stage)])
}
