# Unit tests of the artifact policy (artifact.rego), A1..A4.
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

decide(stage, verdict, sbom, scan) := d if {
	d := data.agentfactory.artifact.deny with input.artifact as {"name": "wordstats", "version": "1.0.0", "digest": "sha256:0000"}
		with input.stage as stage
		with input.verdict as verdict
		with input.sbom as sbom
		with input.scan as scan
}

allowed(stage, verdict, sbom, scan) := a if {
	a := data.agentfactory.artifact.allow with input.artifact as {"name": "wordstats", "version": "1.0.0", "digest": "sha256:0000"}
		with input.stage as stage
		with input.verdict as verdict
		with input.sbom as sbom
		with input.scan as scan
}

# The good verdict with the check `name` replaced by `replacement` (or dropped when null).
checks_with(name, replacement) := [c |
	some c0 in good_checks
	c := pick(c0, name, replacement)
]

pick(c0, name, replacement) := c0 if c0.name != name

pick(c0, name, replacement) := replacement if {
	c0.name == name
	replacement != null
}

sbom_of(licenses) := {"components": [{"name": "dep", "version": "2.1.0", "purl": "pkg:generic/x/dep@2.1.0", "licenses": licenses}]}

# --- the good case ----------------------------------------------------------------------------

test_good_artifact_allowed_in_every_stage if {
	every stage in ["dev", "canary", "prod"] {
		decide(stage, good_verdict, good_sbom, null) == set()
		allowed(stage, good_verdict, good_sbom, null) == true
	}
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
	d := decide("qa", {"score": 9.5, "checks": good_checks}, good_sbom, null) with data.agentfactory.config.min_score as {"default": 8.0, "qa": 10.0}
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
	decide("prod", good_verdict, good_sbom, {"findings": []}) == set()
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
	d := decide_agent(object.union(good_agent, {"tools": ["clock.now_ms", "shell.exec"]}))
	d == {`agent.tools[1]: "shell.exec" is a dangerous tool (config dangerous_tools) and is never granted; rebuild the agent without it`}
}

test_a5_writable_preopen_denied if {
	caps := {"wasi": {"preopens": [{"guestPath": "/data", "hostPath": "/srv/x", "readOnly": false}], "env": []}}
	d := decide_agent(object.union(good_agent, {"capabilities": caps}))
	d == {"agent.capabilities.wasi.preopens[0].readOnly is not true: agents get read-only folders only; rebuild with readOnly: true"}
}

test_a5_sensitive_or_root_host_path_denied if {
	every hp in ["/", "/etc", "/etc/ssl", "/proc/self", "/run/"] {
		caps := {"wasi": {"preopens": [{"guestPath": "/data", "hostPath": hp}], "env": []}}
		count(decide_agent(object.union(good_agent, {"capabilities": caps}))) > 0
	}
	caps := {"wasi": {"preopens": [{"guestPath": "/data", "hostPath": "/etcetera"}], "env": []}}
	decide_agent(object.union(good_agent, {"capabilities": caps})) == set()
}

test_a5_limits_over_ceiling_denied if {
	d := decide_agent(object.union(good_agent, {"limits": {"memoryMiB": 4096, "timeoutMs": 600000}}))
	count(d) == 2
}

test_a5_malformed_agent_denied if {
	"agent: must be null (no attested run contract) or an object with tools, capabilities and limits" in decide_agent("x")
}
