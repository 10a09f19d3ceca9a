# Unit tests of the artifact policy (artifact.rego), A1..A8.
#
# The input is set field by field (`with input.verdict as …`), never as a whole (`with input as
# …`), which crashes regopy 1.5.2 (see template_test.rego). OPA runs these tests unchanged.
package agentfactory.artifact_test

import rego.v1

check(name) := {"name": name, "ok": true, "reason": "verified"}

good_checks := [
	check("digest"), check("signature"), check("key-status"), check("sbom"),
	check("provenance"), check("scan"), check("builder"), check("source"),
]

good_verdict := {"score": 10.0, "checks": good_checks}

good_sbom := {"components": [
	{"name": "utf8", "version": "1.0.0", "purl": "pkg:generic/agentfactory/utf8@1.0.0", "licenses": ["Apache-2.0"]},
	{"name": "sha256", "version": "1.0.0", "purl": "pkg:generic/agentfactory/sha256@1.0.0", "licenses": ["MIT OR Apache-2.0"]},
]}

# The decision time of every test, and a build of a clean commit under a trust policy that names
# its repositories: what prod requires (A6, A8).
decision_time := "2026-12-06T08:00:00Z"

# input.times as the input builder computes it (agentfactory/policy_input.py rfc3339_ns) for every
# valid time string of these tests; tests/unit/test_policy_times.py checks these values. A string
# missing here is not a time to the policy (A6).
fixture_times := {
	"2020-01-01T00:00:00Z": 1577836800000000000,
	"2026-12-01T00:00:00Z": 1796083200000000000,
	"2026-12-03T07:59:59Z": 1796284799000000000,
	"2026-12-03T08:00:01Z": 1796284801000000000,
	"2026-12-05T07:00:00Z": 1796454000000000000,
	"2026-12-05T08:00:01.500Z": 1796457601500000000,
	"2026-12-05T09:30:00+01:00": 1796459400000000000,
	"2026-12-05T09:30:00+02:00": 1796455800000000000,
	"2026-12-06T06:00:00Z": 1796536800000000000,
	"2026-12-06T07:00:00.123Z": 1796540400123000000,
	"2026-12-06T07:00:00Z": 1796540400000000000,
	"2026-12-06T08:00:00Z": 1796544000000000000,
	"2026-12-06T08:04:00Z": 1796544240000000000,
	"2026-12-06T09:00:00Z": 1796547600000000000,
}

good_provenance := {"dirty": false, "repository": "https://github.com/example/agents", "builder": "https://agentfactory.dev/builders/pipeline@v1"}

good_trust := {"repositories": ["https://github.com/example/*"]}

decide(stage, verdict, sbom, scan) := d if {
	# rego-cpp ignores `with … as <rule>`: the rules' values are bound to variables first
	t := decision_time
	tm := fixture_times
	p := good_provenance
	tr := good_trust
	d := data.agentfactory.artifact.deny with input.artifact as {"name": "wordstats", "version": "1.0.0", "digest": "sha256:0000"}
		with input.stage as stage
		with input.verdict as verdict
		with input.sbom as sbom
		with input.scan as scan
		with input.now as t
		with input.times as tm
		with input.provenance as p
		with input.trust as tr
}

allowed(stage, verdict, sbom, scan) := a if {
	# rego-cpp ignores `with … as <rule>`: the rules' values are bound to variables first
	t := decision_time
	tm := fixture_times
	p := good_provenance
	tr := good_trust
	a := data.agentfactory.artifact.allow with input.artifact as {"name": "wordstats", "version": "1.0.0", "digest": "sha256:0000"}
		with input.stage as stage
		with input.verdict as verdict
		with input.sbom as sbom
		with input.scan as scan
		with input.now as t
		with input.times as tm
		with input.provenance as p
		with input.trust as tr
}

# The good verdict with the check `name` replaced by `replacement` (or dropped when null).
checks_with(name, replacement) := [c |
	some c0 in good_checks
	c := pick(c0, name, replacement)
]

pick(c0, name, _) := c0 if c0.name != name

pick(c0, name, replacement) := replacement if {
	c0.name == name
	replacement != null
}

# config_with(key, value): the policy data's config with `key` replaced as a whole. An object given
# to `with data.agentfactory.config.<key> as {…}` is merged by OPA into the object it replaces
# when a rule reads data.agentfactory.config (rego-cpp replaces it), so a test that overrides an
# object replaces the whole config instead, which both engines read the same way (docs/policy.md,
# OPA and regopy). The value is bound to a local before `with` (see decide).
config_with(key, value) := object.union(object.remove(data.agentfactory.config, [key]), {key: value})

# agent_with(key, value): good_agent with `key` replaced as a whole (OPA's object.union merges nested
# objects, rego-cpp's replaces them: neither is used on a nested value).
agent_with(key, value) := object.union(object.remove(good_agent, [key]), {key: value})

sbom_of(licenses) := {"components": [{"name": "dep", "version": "2.1.0", "purl": "pkg:generic/x/dep@2.1.0", "licenses": licenses}]}

# --- the good case ----------------------------------------------------------------------------

test_good_artifact_allowed_in_every_stage if {
	every stage in ["dev", "canary", "prod"] {
		decide(stage, good_verdict, good_sbom, null) == set()
		allowed(stage, good_verdict, good_sbom, null) == true
	}
}

# The decision document the OPA engine asks a server for: allow and deny, as the rules say.
test_decision_document if {
	v := {"score": 5.0, "checks": good_checks}
	sb := good_sbom
	d := data.agentfactory.artifact.decision with input.stage as "dev"
		with input.verdict as v
		with input.sbom as sb
		with input.scan as null
	d.allow == false
	d.deny == decide("dev", v, good_sbom, null)
	count(d.deny) == 1
	g := good_verdict
	data.agentfactory.artifact.decision.allow with input.stage as "dev"
		with input.verdict as g
		with input.sbom as sb
		with input.scan as null
}

test_missing_input_denied if {
	d := data.agentfactory.artifact.deny with input.stage as "dev"
	count(d) > 0
	not data.agentfactory.artifact.allow with input.stage as "dev"
}

test_any_deny_means_not_allowed if {
	allowed("dev", {"score": 5.0, "checks": good_checks}, good_sbom, null) == false
}

# --- A1 complete evidence ---------------------------------------------------------------------

test_a1_missing_check_denied if {
	v := {"score": 10.0, "checks": checks_with("provenance", null)}
	decide("dev", v, good_sbom, null) == {`verdict.checks: the required check "provenance" is missing (config required_checks); the verifier must report it: publish the evidence it needs for this digest and verify again`}
}

test_a1_failed_check_denied if {
	v := {"score": 10.0, "checks": checks_with("signature", {"name": "signature", "ok": false, "reason": "signed by key 3f2a…, which the trust policy does not list"})}
	decide("dev", v, good_sbom, null) == {`verdict.checks: the required check "signature" failed: signed by key 3f2a…, which the trust policy does not list; fix what it reports and verify again`}
}

test_a1_check_without_ok_denied if {
	v := {"score": 10.0, "checks": checks_with("sbom", {"name": "sbom"})}
	decide("dev", v, good_sbom, null) == {`verdict.checks: the required check "sbom" failed: no reason given; fix what it reports and verify again`}
}

test_a1_every_required_check_needed if {
	count(data.agentfactory.config.required_checks) == 6
	every name in data.agentfactory.config.required_checks {
		some msg in decide("dev", {"score": 10.0, "checks": checks_with(name, null)}, good_sbom, null)
		contains(msg, "is missing (config required_checks)")
	}
}

test_a1_no_checks_at_all_denied if {
	d := decide("dev", {"score": 10.0, "checks": []}, good_sbom, null)
	count([m | some m in d; contains(m, "is missing (config required_checks)")]) == 6
}

test_a1_optional_check_may_be_absent if {
	v := {"score": 10.0, "checks": checks_with("builder", null)}
	decide("dev", v, good_sbom, null) == set()
}

# --- A2 minimum score -------------------------------------------------------------------------

test_a2_low_score_denied if {
	decide("dev", {"score": 7.5, "checks": good_checks}, good_sbom, null) == {`verdict.score 7.5 is below the minimum 8 for stage "dev" (config min_score); complete the missing or failed evidence (signature, SBOM, provenance, builder, source) to raise it`}
}

test_a2_score_at_minimum_allowed if {
	decide("dev", {"score": 8.0, "checks": good_checks}, good_sbom, null) == set()
}

test_a2_prod_needs_more if {
	decide("canary", {"score": 8.5, "checks": good_checks}, good_sbom, null) == set()
	decide("prod", {"score": 8.5, "checks": good_checks}, good_sbom, null) == {`verdict.score 8.5 is below the minimum 9 for stage "prod" (config min_score); complete the missing or failed evidence (signature, SBOM, provenance, builder, source) to raise it`}
	decide("prod", {"score": 9.0, "checks": good_checks}, good_sbom, null) == set()
}

test_a2_unknown_stage_uses_default if {
	some msg in decide("staging", {"score": 7.9, "checks": good_checks}, good_sbom, null)
	contains(msg, `below the minimum 8 for stage "staging"`)
	decide("staging", {"score": 8.0, "checks": good_checks}, good_sbom, null) == set()
}

test_a2_follows_config if {
	c := config_with("min_score", {"default": 8.0, "qa": 10.0})
	d := decide("qa", {"score": 9.5, "checks": good_checks}, good_sbom, null) with data.agentfactory.config as c
	count(d) == 1
}

test_a2_missing_score_denied if {
	decide("dev", {"checks": good_checks}, good_sbom, null) == {"verdict.score is missing or not a number: the verifier must score the evidence before the policy can judge it"}
}

# --- A3 licence allowlist ---------------------------------------------------------------------

test_a3_allowed_licences_pass if {
	every lic in data.agentfactory.config.license_allowlist {
		decide("dev", good_verdict, sbom_of([lic]), null) == set()
	}
}

test_a3_expressions_of_allowed_ids_pass if {
	every lic in ["MIT OR Apache-2.0", "(MIT OR Apache-2.0) AND BSD-3-Clause", "MPL-2.0 AND (ISC OR Zlib)", "mit", "apache-2.0 or mit"] {
		decide("dev", good_verdict, sbom_of([lic]), null) == set()
	}
}

test_a3_disallowed_licence_denied if {
	decide("dev", good_verdict, sbom_of(["GPL-3.0-only"]), null) == {`sbom.components[0].licenses[0] (dep 2.1.0): licence "GPL-3.0-only" is not on the licence allowlist (config license_allowlist); replace the dependency or have the licence approved and added to the allowlist`}
}

test_a3_expression_with_disallowed_id_denied if {
	decide("dev", good_verdict, sbom_of(["MIT", "(MIT OR GPL-2.0-only) AND AGPL-3.0-or-later"]), null) == {`sbom.components[0].licenses[1] (dep 2.1.0): licence expression "(MIT OR GPL-2.0-only) AND AGPL-3.0-or-later" names GPL-2.0-only, AGPL-3.0-or-later, not on the licence allowlist (config license_allowlist); every id in an expression must be allowed: declare only an allowed choice (e.g. MIT instead of MIT OR GPL-3.0-only) or replace the dependency`}
}

test_a3_exception_must_be_allowed_too if {
	some msg in decide("dev", good_verdict, sbom_of(["Apache-2.0 WITH LLVM-exception"]), null)
	contains(msg, "names LLVM-exception, not on the licence allowlist")
}

test_a3_missing_licence_denied if {
	decide("dev", good_verdict, sbom_of([]), null) == {`sbom.components[0] (dep 2.1.0): no licence is declared; set the dependency's SPDX licence (spec.dependencies[].license in agent.yaml) and rebuild`}
	some msg in decide("dev", good_verdict, sbom_of([" ( ) "]), null)
	contains(msg, "no licence is declared")
}

test_a3_non_string_licence_denied if {
	decide("dev", good_verdict, sbom_of(["MIT", {"id": "MIT"}]), null) == {"sbom.components[0].licenses[1] (dep 2.1.0) is not a string: licences must be SPDX ids or expressions"}
}

test_a3_no_sbom_no_licence_check if {
	decide("dev", good_verdict, null, null) == set()
}

test_a3_follows_config if {
	d := decide("dev", good_verdict, sbom_of(["GPL-3.0-only"]), null) with data.agentfactory.config.license_allowlist as ["GPL-3.0-only"]
	d == set()
}

# --- A4 vulnerability gate --------------------------------------------------------------------

test_a4_blocking_finding_denied if {
	scan := {"findings": [{"id": "CVE-2024-0001", "severity": "high", "fixAvailable": true, "fixedVersions": ["1.2.0", "2.0.1"], "suppressed": false, "package": "utf8"}]}
	decide("dev", good_verdict, good_sbom, scan) == {"scan.findings[0]: CVE-2024-0001 (severity high, in utf8) is not suppressed by any VEX statement; upgrade it to 1.2.0 or 2.0.1, or publish a signed VEX statement saying why it does not apply"}
}

test_a4_critical_without_flags_denied if {
	scan := {"findings": [{"id": "GHSA-xxxx", "severity": "CRITICAL"}]}
	decide("dev", good_verdict, good_sbom, scan) == {"scan.findings[0]: GHSA-xxxx (severity critical) is not suppressed by any VEX statement; no fixed version is published: remove the dependency, or publish a signed VEX statement saying why it does not apply"}
}

test_a4_a_published_fix_does_not_make_it_harmless if {
	scan := {"findings": [{"id": "CVE-1", "severity": "critical", "fixAvailable": true, "fixedVersions": ["9"], "suppressed": false}]}
	count(decide("dev", good_verdict, good_sbom, scan)) == 1
}

test_a4_suppressed_or_minor_allowed if {
	scan := {"findings": [
		{"id": "CVE-2", "severity": "high", "suppressed": true, "suppressedBy": {"status": "not_affected"}},
		{"id": "CVE-3", "severity": "medium", "suppressed": false},
		{"id": "CVE-4", "severity": "low"},
		{"id": "CVE-5", "severity": "unknown"},
	]}
	decide("dev", good_verdict, good_sbom, scan) == set()
}

test_a4_ignore_unfixed if {
	scan := {"findings": [
		{"id": "CVE-6", "severity": "high", "fixAvailable": false, "suppressed": false},
		{"id": "CVE-7", "severity": "high", "fixAvailable": true, "fixedVersions": ["2"], "suppressed": false},
	]}
	d := decide("dev", good_verdict, good_sbom, scan) with data.agentfactory.config.ignore_unfixed as true
	d == {"scan.findings[1]: CVE-7 (severity high) is not suppressed by any VEX statement; upgrade it to 2, or publish a signed VEX statement saying why it does not apply"}
	count(decide("dev", good_verdict, good_sbom, scan)) == 2
}

test_a4_no_findings_allowed if {
	decide("prod", good_verdict, good_sbom, {"findings": [], "scannedOn": "2026-12-06T07:00:00.123Z"}) == set()
}

test_a4_follows_config if {
	scan := {"findings": [{"id": "CVE-3", "severity": "medium"}]}
	d := decide("dev", good_verdict, good_sbom, scan) with data.agentfactory.config.blocking_severities as ["medium", "high", "critical"]
	count(d) == 1
}

test_malformed_sbom_and_scan_denied if {
	d := decide("dev", good_verdict, "none", ["x"])
	"sbom: must be null (no verified SBOM) or an object with components" in d
	"scan: must be null (not scanned) or an object with findings" in d
}

# --- A5 the run contract --------------------------------------------------------------------

good_agent := {"entrypoint": "_start", "tools": ["clock.now_ms"],
	"capabilities": {"wasi": {"preopens": [{"guestPath": "/data", "hostPath": "/srv/agent-data", "readOnly": true}], "env": ["LANG"]}},
	"limits": {"memoryMiB": 16, "timeoutMs": 2000, "maxOutputKiB": 64}}

decide_agent(agent) := d if {
	d := decide("dev", good_verdict, good_sbom, null) with input.agent as agent
}

test_a5_good_contract_allowed if {
	decide_agent(good_agent) == set()
	decide_agent(null) == set()
}

test_a5_dangerous_tool_denied if {
	d := decide_agent(agent_with("tools", ["clock.now_ms", "shell.exec"]))
	d == {`agent.tools[1]: "shell.exec" is a dangerous tool (config dangerous_tools) and is never granted; rebuild the agent without it`}
}

test_a5_writable_preopen_denied if {
	caps := {"wasi": {"preopens": [{"guestPath": "/data", "hostPath": "/srv/x", "readOnly": false}], "env": []}}
	d := decide_agent(agent_with("capabilities", caps))
	d == {"agent.capabilities.wasi.preopens[0].readOnly is not true: agents get read-only folders only; rebuild with readOnly: true"}
}

test_a5_sensitive_or_root_host_path_denied if {
	every hp in ["/", "/etc", "/etc/ssl", "/proc/self", "/run/"] {
		caps := {"wasi": {"preopens": [{"guestPath": "/data", "hostPath": hp}], "env": []}}
		count(decide_agent(agent_with("capabilities", caps))) > 0
	}
	caps := {"wasi": {"preopens": [{"guestPath": "/data", "hostPath": "/etcetera"}], "env": []}}
	decide_agent(agent_with("capabilities", caps)) == set()
}

test_a5_limits_over_ceiling_denied if {
	d := decide_agent(agent_with("limits", {"memoryMiB": 4096, "timeoutMs": 600000}))
	# memory and time over the config ceilings; 4096 MiB also cannot fit the node's budget (A5 node ceilings)
	count(d) == 3
	"agent.limits.memoryMiB is 4096, above the ceiling of 256 MiB (config max_memory_mib); rebuild with a lower spec.limits.memoryMiB" in d
	"agent.limits.timeoutMs is 600000, above the ceiling of 30000 ms (config max_timeout_ms); rebuild with a lower spec.limits.timeoutMs" in d
}

test_a5_output_over_node_ceiling_denied if {
	d := decide_agent(agent_with("limits", {"memoryMiB": 16, "timeoutMs": 2000, "maxOutputKiB": 16385}))
	d == {"agent.limits.maxOutputKiB is 16385, above the node ceiling of 16384 KiB (config node.max_output_kib, the runtime's AGENTFACTORY_RUNTIME_MAX_OUTPUT_KIB): no node would run it; rebuild with spec.limits.maxOutputKiB at most 16384"}
	decide_agent(agent_with("limits", {"memoryMiB": 16, "timeoutMs": 2000, "maxOutputKiB": 16384})) == set()
}

test_a5_output_absent_is_the_schema_default if {
	d := decide_agent(agent_with("limits", {"memoryMiB": 16, "timeoutMs": 2000})) with data.agentfactory.config.node.max_output_kib as 1000
	d == {"agent.limits.maxOutputKiB is 1024, above the node ceiling of 1000 KiB (config node.max_output_kib, the runtime's AGENTFACTORY_RUNTIME_MAX_OUTPUT_KIB): no node would run it; rebuild with spec.limits.maxOutputKiB at most 1000"}
}

test_a5_output_not_a_number_denied if {
	d := decide_agent(agent_with("limits", {"memoryMiB": 16, "timeoutMs": 2000, "maxOutputKiB": "64"}))
	d == {"agent.limits.maxOutputKiB is not a number: the run contract must state the per-stream output cap in KiB (or leave it out for the default)"}
}

# memoryMiB 100 and maxOutputKiB 1000 need 107440 KiB (104.9 MiB): they fit 105 MiB, not 104 MiB.
budget_agent := agent_with("limits", {"memoryMiB": 100, "timeoutMs": 2000, "maxOutputKiB": 1000})

test_a5_caps_over_the_node_memory_budget_denied if {
	d := decide_agent(budget_agent) with data.agentfactory.config.node.memory_budget_mib as 104
	d == {"agent.limits: memoryMiB 100 and maxOutputKiB 1000 need 104.9 MiB of host memory per invocation (memoryMiB + 4 x maxOutputKiB + 1040 KiB of tool log and store), more than the node's whole memory budget of 104 MiB (config node.memory_budget_mib, the runtime's AGENTFACTORY_RUNTIME_MEMORY_BUDGET_MIB): no node could ever run it; rebuild with a lower spec.limits.memoryMiB or spec.limits.maxOutputKiB"}
	decide_agent(budget_agent) == set() with data.agentfactory.config.node.memory_budget_mib as 105
}

test_a5_missing_node_config_denied_only_with_a_contract if {
	d := decide_agent(good_agent) with data.agentfactory.config.node as null
	count(d) == 4
	some msg in d
	startswith(msg, "config node.max_output_kib is missing or not a number")
	decide_agent(null) == set() with data.agentfactory.config.node as null
}

test_a5_malformed_agent_denied if {
	"agent: must be null (no attested run contract) or an object with tools, capabilities and limits" in decide_agent("x")
}

# --- A4 unknown severity --------------------------------------------------------------------------

unknown_scan := {"findings": [{"id": "OSV-1", "severity": "unknown", "suppressed": false, "package": "pkg:npm/x@1.0.0"}], "scannedOn": "2026-12-06T07:00:00Z"}

test_a4_unknown_severity_is_high_on_prod if {
	decide("prod", good_verdict, good_sbom, unknown_scan) == {"scan.findings[0]: OSV-1 (severity unknown, judged as high for this stage (config unknown_severity_as_high), in pkg:npm/x@1.0.0) is not suppressed by any VEX statement; no fixed version is published: remove the dependency, or publish a signed VEX statement saying why it does not apply"}
}

test_a4_unknown_severity_passes_dev_by_default if {
	decide("dev", good_verdict, good_sbom, unknown_scan) == set()
}

test_a4_unknown_severity_switch_follows_config if {
	c1 := config_with("unknown_severity_as_high", {"default": true})
	count(decide("dev", good_verdict, good_sbom, unknown_scan)) == 1 with data.agentfactory.config as c1
	count(decide("prod", good_verdict, good_sbom, unknown_scan)) == 1 with data.agentfactory.config as c1
	c2 := config_with("unknown_severity_as_high", {"default": true, "prod": false})
	decide("prod", good_verdict, good_sbom, unknown_scan) == set() with data.agentfactory.config as c2
	decide("prod", good_verdict, good_sbom, unknown_scan) == set() with data.agentfactory.config.unknown_severity_as_high as null
}

test_a4_missing_severity_is_high_on_prod if {
	scan := {"findings": [{"id": "OSV-2", "suppressed": false}], "scannedOn": "2026-12-06T07:00:00Z"}
	count(decide("prod", good_verdict, good_sbom, scan)) == 1
}

test_a4_suppressed_unknown_allowed_on_prod if {
	scan := {"findings": [{"id": "OSV-1", "severity": "unknown", "suppressed": true}], "scannedOn": "2026-12-06T07:00:00Z"}
	decide("prod", good_verdict, good_sbom, scan) == set()
}

# --- A6 scan freshness -------------------------------------------------------------------------

scan_at(t) := {"findings": [], "scannedOn": t}

test_a6_fresh_scan_allowed_on_every_stage if {
	every stage in ["dev", "canary", "prod"] {
		decide(stage, good_verdict, good_sbom, scan_at("2026-12-05T08:00:01.500Z")) == set()
	}
}

test_a6_prod_refuses_a_scan_older_than_24_hours if {
	decide("prod", good_verdict, good_sbom, scan_at("2026-12-05T07:00:00Z")) == {`scan.scannedOn: the newest verified scan finished at 2026-12-05T07:00:00Z, 25 hours before the decision time 2026-12-06T08:00:00Z; stage "prod" accepts scans at most 24 hours old (config scan_max_age_hours): re-scan with "agentfactory scan AGENT --attest" against today's advisory database`}
	decide("canary", good_verdict, good_sbom, scan_at("2026-12-05T07:00:00Z")) == set()
}

test_a6_canary_refuses_a_scan_older_than_72_hours if {
	count(decide("canary", good_verdict, good_sbom, scan_at("2026-12-03T07:59:59Z"))) == 1
	decide("canary", good_verdict, good_sbom, scan_at("2026-12-03T08:00:01Z")) == set()
}

test_a6_dev_has_no_maximum if {
	decide("dev", good_verdict, good_sbom, scan_at("2020-01-01T00:00:00Z")) == set()
	decide("dev", good_verdict, good_sbom, scan_at("")) == set()
	decide("dev", good_verdict, good_sbom, {"findings": []}) == set()
}

test_a6_offsets_are_honoured if {
	# 09:30+02:00 is 07:30Z: 24.5 hours before now
	count(decide("prod", good_verdict, good_sbom, scan_at("2026-12-05T09:30:00+02:00"))) == 1
	decide("prod", good_verdict, good_sbom, scan_at("2026-12-05T09:30:00+01:00")) == set()
}

test_a6_missing_or_unparsable_time_denied_where_a_maximum_applies if {
	every t in ["", "yesterday", "2026-13-05T08:00:00Z", "2026-12-05 08:00:00Z", "2026-12-05T08:00:00", 1765000000, "2026-02-29T08:00:00Z", "2026-04-31T08:00:00Z", "2026-12-05T08:00:00+24:00", "02026-12-05T08:00:00Z"] {
		d := decide("prod", good_verdict, good_sbom, scan_at(t))
		count(d) == 1
		some msg in d
		startswith(msg, "scan.scannedOn: the scan's finish time")
	}
	some msg in decide("prod", good_verdict, good_sbom, {"findings": []})
	contains(msg, `the scan's finish time (none) is missing or not an RFC 3339 time with its value in input.times; stage "prod" accepts scans at most 24 hours old`)
}

# decide_times: decide with input.times replaced (the other parts as in decide).
decide_times(stage, scan, times) := d if {
	t := decision_time
	p := good_provenance
	tr := good_trust
	v := good_verdict
	sb := good_sbom
	d := data.agentfactory.artifact.deny with input.artifact as {"name": "wordstats", "version": "1.0.0", "digest": "sha256:0000"}
		with input.stage as stage
		with input.verdict as v
		with input.sbom as sb
		with input.scan as scan
		with input.now as t
		with input.times as times
		with input.provenance as p
		with input.trust as tr
}

# Fail closed on input.times: a time whose string is not a key, whose value is not an integral
# number, or a times that is not an object, is not a time where a maximum scan age applies.
test_a6_a_time_not_in_input_times_is_denied if {
	scan := scan_at("2026-12-06T07:00:00Z")
	decide_times("prod", scan, {"2026-12-06T08:00:00Z": 1796544000000000000, "2026-12-06T07:00:00Z": 1796540400000000000}) == set()
	some msg in decide_times("prod", scan, {"2026-12-06T08:00:00Z": 1796544000000000000})
	startswith(msg, "scan.scannedOn: the scan's finish time 2026-12-06T07:00:00Z is missing or not an RFC 3339 time")
	some msg2 in decide_times("prod", scan, {"2026-12-06T07:00:00Z": 1796540400000000000})
	startswith(msg2, "now: the decision time 2026-12-06T08:00:00Z is missing or not an RFC 3339 time")
	decide_times("dev", scan, {}) == set()
}

test_a6_a_wrong_typed_time_is_denied if {
	scan := scan_at("2026-12-06T07:00:00Z")
	every bad in ["1796540400000000000", 1.5, null, true, [], {}] {
		d := decide_times("prod", scan, {"2026-12-06T08:00:00Z": 1796544000000000000, "2026-12-06T07:00:00Z": bad})
		count(d) == 1
		some msg in d
		startswith(msg, "scan.scannedOn: the scan's finish time 2026-12-06T07:00:00Z is missing or not an RFC 3339 time")
	}
	every times in [null, [], "x", 7] {
		count(decide_times("prod", scan, times)) == 2
	}
}

test_a6_missing_decision_time_denied_where_a_maximum_applies if {
	v := good_verdict
	sb := good_sbom
	p := good_provenance
	tr := good_trust
	tm := fixture_times
	d := data.agentfactory.artifact.deny with input.stage as "prod"
		with input.verdict as v
		with input.sbom as sb
		with input.scan as {"findings": [], "scannedOn": "2026-12-06T07:00:00Z"}
		with input.times as tm
		with input.provenance as p
		with input.trust as tr
	some msg in d
	startswith(msg, "now: the decision time (none) is missing or not an RFC 3339 time")
}

test_a6_a_scan_from_the_future_denied if {
	some msg in decide("prod", good_verdict, good_sbom, scan_at("9999-12-31T23:59:59.999Z"))
	startswith(msg, "scan.scannedOn:")
	d := decide("prod", good_verdict, good_sbom, scan_at("2026-12-06T09:00:00Z"))
	d == {"scan.scannedOn: the scan claims to have finished at 2026-12-06T09:00:00Z, after the decision time 2026-12-06T08:00:00Z (beyond config scan_clock_skew_seconds): a scan from the future cannot be judged fresh; check the scanner's clock and re-scan"}
	decide("prod", good_verdict, good_sbom, scan_at("2026-12-06T08:04:00Z")) == set()
}

test_a6_follows_config if {
	c1 := config_with("scan_max_age_hours", {"canary": 1})
	decide("prod", good_verdict, good_sbom, scan_at("2026-12-01T00:00:00Z")) == set() with data.agentfactory.config as c1
	c2 := config_with("scan_max_age_hours", {"dev": 1.5})
	count(decide("dev", good_verdict, good_sbom, scan_at("2026-12-06T06:00:00Z"))) == 1 with data.agentfactory.config as c2
}

# --- A7 scan coverage ----------------------------------------------------------------------------

npm_sbom := {"components": [
	{"name": "lodash", "version": "4.17.20", "purl": "pkg:npm/lodash@4.17.20", "licenses": ["MIT"]},
	{"name": "left-pad", "version": "x", "purl": "pkg:npm/left-pad@x", "licenses": ["MIT"]},
	{"name": "utf8", "version": "1.0.0", "purl": "pkg:generic/agentfactory/utf8@1.0.0", "licenses": ["MIT"]},
]}

unscanned(purls) := {"findings": [], "scannedOn": "2026-12-06T07:00:00Z", "unscanned": [{"component": p, "reason": "unknown version"} | some p in purls]}

test_a7_nothing_scanned_denied_on_every_stage if {
	every stage in ["dev", "canary", "prod"] {
		d := decide(stage, good_verdict, npm_sbom, unscanned(["pkg:npm/lodash@4.17.20", "pkg:npm/left-pad@x"]))
		d == {"scan.unscanned: nothing was scanned: all 2 component(s) of the SBOM that need scanning are unscanned (pkg:npm/left-pad@x, pkg:npm/lodash@4.17.20), so the scan found nothing because it looked at nothing; give each dependency a purl an advisory database knows (e.g. pkg:pypi/…, pkg:npm/…, or a generic purl with a vcs_url) and rebuild"}
	}
}

test_a7_some_scanned_allowed_by_default if {
	decide("prod", good_verdict, npm_sbom, unscanned(["pkg:npm/left-pad@x", "pkg:generic/agentfactory/utf8@1.0.0"])) == set()
}

test_a7_first_party_components_need_no_scan if {
	sbom := {"components": [{"name": "utf8", "version": "1.0.0", "purl": "pkg:generic/agentfactory/utf8@1.0.0", "licenses": ["MIT"]}]}
	decide("prod", good_verdict, sbom, unscanned(["pkg:generic/agentfactory/utf8@1.0.0"])) == set()
	decide("prod", good_verdict, {"components": []}, unscanned([])) == set()
	count(decide("prod", good_verdict, sbom, unscanned(["pkg:generic/agentfactory/utf8@1.0.0"]))) == 1 with data.agentfactory.config.first_party_purl_prefixes as []
}

test_a7_a_component_without_purl_needs_scanning if {
	sbom := {"components": [{"name": "blob", "version": "1", "licenses": ["MIT"]}]}
	scan := {"findings": [], "scannedOn": "2026-12-06T07:00:00Z", "unscanned": [{"component": "blob 1", "reason": "no purl"}]}
	count(decide("dev", good_verdict, sbom, scan)) == 1
}

test_a7_fail_on_unscanned_switch if {
	scan := unscanned(["pkg:npm/left-pad@x"])
	decide("dev", good_verdict, npm_sbom, scan) == set()
	c1 := config_with("fail_on_unscanned", {"default": true})
	d := decide("dev", good_verdict, npm_sbom, scan) with data.agentfactory.config as c1
	d == {`scan.unscanned[0]: pkg:npm/left-pad@x was not scanned (unknown version) and stage "dev" refuses unscanned components (config fail_on_unscanned); give it a purl an advisory database knows and rebuild`}
	c2 := config_with("fail_on_unscanned", {"default": true, "dev": false})
	decide("dev", good_verdict, npm_sbom, scan) == set() with data.agentfactory.config as c2
}

# --- A8 build provenance and trust defaults -----------------------------------------------------------

decide_build(stage, provenance, trust) := d if {
	v := good_verdict
	sb := good_sbom
	t := decision_time
	tm := fixture_times
	d := data.agentfactory.artifact.deny with input.artifact as {"name": "wordstats", "version": "1.0.0", "digest": "sha256:0000"}
		with input.stage as stage
		with input.verdict as v
		with input.sbom as sb
		with input.scan as null
		with input.now as t
		with input.times as tm
		with input.provenance as provenance
		with input.trust as trust
}

test_a8_prod_refuses_a_dirty_tree if {
	decide_build("prod", object.union(good_provenance, {"dirty": true}), good_trust) == {`provenance.dirty is true: the artifact was built from a tree with uncommitted changes, and stage "prod" accepts only builds of a clean, committed tree (config refuse_dirty_provenance); commit the template and rebuild`}
}

test_a8_prod_refuses_an_unrecorded_dirty_flag if {
	every p in [object.union(good_provenance, {"dirty": null}), {"repository": "x"}, object.union(good_provenance, {"dirty": "false"})] {
		d := decide_build("prod", p, good_trust)
		count(d) == 1
		some msg in d
		startswith(msg, "provenance.dirty is not recorded")
	}
	some msg in decide_build("prod", null, good_trust)
	startswith(msg, "provenance: there is no verified build provenance")
}

test_a8_prod_refuses_a_trust_policy_trusting_any_repository if {
	decide_build("prod", good_provenance, {"repositories": ["https://github.com/example/*", "*"]}) == {`trust.repositories[1] is "*": the trust policy trusts every source repository, and stage "prod" requires it to name the repositories agents may be built from (config refuse_any_repository); list them in spec.repositories of the trust policy (e.g. https://github.com/your-org/agents)`}
	count(decide_build("prod", good_provenance, {"repositories": ["**"]})) == 1
	some msg in decide_build("prod", good_provenance, null)
	startswith(msg, "trust.repositories is missing")
}

test_a8_dev_and_canary_accept_both if {
	every stage in ["dev", "canary"] {
		decide_build(stage, object.union(good_provenance, {"dirty": true}), {"repositories": ["*"]}) == set()
		decide_build(stage, null, null) == set()
	}
}

test_a8_prod_accepts_a_clean_build_under_named_repositories if {
	decide_build("prod", good_provenance, good_trust) == set()
}

test_a8_follows_config if {
	c1 := object.union(object.remove(data.agentfactory.config, ["refuse_dirty_provenance", "refuse_any_repository"]), {"refuse_dirty_provenance": {"default": false}, "refuse_any_repository": {}})
	decide_build("prod", object.union(good_provenance, {"dirty": true}), {"repositories": ["*"]}) == set() with data.agentfactory.config as c1
	c2 := config_with("refuse_dirty_provenance", {"canary": true})
	count(decide_build("canary", object.union(good_provenance, {"dirty": true}), good_trust)) == 1 with data.agentfactory.config as c2
	decide_build("prod", object.union(good_provenance, {"dirty": true}), good_trust) == set() with data.agentfactory.config as c2
}

# --- A3 a licence entry naming no id ----------------------------------------------------------------

no_id_message := "sbom.components[0].licenses[1] (dep 2.1.0) names no SPDX licence id; remove the empty entry or declare the dependency's SPDX licence (spec.dependencies[].license in agent.yaml) and rebuild"

test_a3_an_entry_naming_no_id_is_refused_beside_an_allowed_one if {
	m := no_id_message
	decide("dev", good_verdict, sbom_of(["Apache-2.0", ""]), null) == {m}
	decide("dev", good_verdict, sbom_of(["Apache-2.0", " "]), null) == {m}
	decide("dev", good_verdict, sbom_of(["Apache-2.0", "()"]), null) == {m}
	# a newline entry: rego-cpp keeps "\n" in a Rego source literal as two characters, so it is tested
	# with a real newline through the engine in tests/security/test_attack_policy_injection.py
	# alone, it is the missing-licence rule that speaks, once
	count(decide("dev", good_verdict, sbom_of([" "]), null)) == 1
}
