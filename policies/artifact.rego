# Artifact policy: may this artifact be promoted to / admitted / run in `input.stage`?
#
# Input (docs/policy-inputs.md): {"artifact": {"name", "version", "digest"}, "stage": "dev" |
# "canary" | "prod" | <any stage named in config>, "verdict": {"score", "checks": [{"name", "ok",
# "reason"}]}, "sbom": null | {"components": [{"name", "version", "purl", "licenses": [...]}]},
# "scan": null | {"findings": [{"id", "severity", "package", "fixAvailable", "fixedVersions", "suppressed", …}]}}.
# Tunables: data.agentfactory.config (policies/data.json).
#
# Every deny message names the field it is about and says what to change. Rule ids: A1..A5.
# rego-cpp compatibility: see the notes at the top of template.rego (no %q; txt() around every
# string argument of sprintf).
package agentfactory.artifact

import rego.v1

default allow := false

allow if count(deny) == 0

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

verdict := obj(object.get(input, "verdict", null))

checks := arr(object.get(verdict, "checks", null))

stage := s if {
	s := input.stage
	is_string(s)
} else := "default"

# --- A1: complete evidence: every required check is present and passed ------------------------

deny contains msg if {
	some name in cfg.required_checks
	not reported(name)
	msg := sprintf(`verdict.checks: the required check "%s" is missing (config required_checks); the verifier must report it: publish the evidence it needs for this digest and verify again`, [txt(name)])
}

deny contains msg if {
	some name in cfg.required_checks
	some c in checks
	object.get(obj(c), "name", null) == name
	object.get(c, "ok", false) != true
	msg := sprintf(`verdict.checks: the required check "%s" failed: %s; fix what it reports and verify again`, [txt(name), txt(object.get(c, "reason", "no reason given"))])
}

reported(name) if {
	some c in checks
	object.get(obj(c), "name", null) == name
}

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
	not is_number(object.get(verdict, "score", null))
	msg := "verdict.score is missing or not a number: the verifier must score the evidence before the policy can judge it"
}

deny contains msg if {
	score := verdict.score
	is_number(score)
	score < min_score
	msg := sprintf(`verdict.score %v is below the minimum %v for stage "%s" (config min_score); complete the missing or failed evidence (signature, SBOM, provenance, builder, source) to raise it`, [score, min_score, txt(stage)])
}

# --- A3: licence allowlist ---------------------------------------------------------------------
#
# A licence is a plain SPDX id or an SPDX expression. An expression is allowed only when every
# id in it is on config license_allowlist (split on AND, OR, WITH and parentheses): simple and
# conservative, so "MIT OR GPL-3.0-only" is refused although MIT alone would be fine. Ids are
# compared case-insensitively, as SPDX specifies. A component without a licence is refused
# (its licence is unknown). sbom null: nothing to check here; A1 reports the missing SBOM.

components := arr(object.get(obj(input.sbom), "components", null))

allowed_ids := {lower(id) | some id in cfg.license_allowlist}

operators := {"AND", "OR", "WITH", "and", "or", "with"}

# license_ids(expr): the licence ids (and exception ids) an expression names.
license_ids(expr) := [id |
	some id in regex.split(`[\s()]+`, expr)
	id != ""
	not id in operators
]

component_label(c) := sprintf("%s %s", [txt(object.get(c, "name", "?")), txt(object.get(c, "version", "?"))])

deny contains msg if {
	some i, entry in components
	c := obj(entry)
	count(usable_licenses(c)) == 0
	msg := sprintf(`sbom.components[%d] (%s): no licence is declared; set the dependency's SPDX licence (spec.dependencies[].license in agent.yaml) and rebuild`, [i, component_label(c)])
}

usable_licenses(c) := [lic |
	some lic in arr(object.get(c, "licenses", null))
	is_string(lic)
	count(license_ids(lic)) > 0
]

deny contains msg if {
	some i, entry in components
	c := obj(entry)
	some j, lic in arr(object.get(c, "licenses", null))
	not is_string(lic)
	msg := sprintf(`sbom.components[%d].licenses[%d] (%s) is not a string: licences must be SPDX ids or expressions`, [i, j, component_label(c)])
}

deny contains msg if {
	some i, entry in components
	c := obj(entry)
	some j, lic in arr(object.get(c, "licenses", null))
	is_string(lic)
	ids := license_ids(lic)
	count(ids) == 1
	not lower(ids[0]) in allowed_ids
	msg := sprintf(`sbom.components[%d].licenses[%d] (%s): licence "%s" is not on the licence allowlist (config license_allowlist); replace the dependency or have the licence approved and added to the allowlist`, [i, j, component_label(c), txt(lic)])
}

deny contains msg if {
	some i, entry in components
	c := obj(entry)
	some j, lic in arr(object.get(c, "licenses", null))
	is_string(lic)
	ids := license_ids(lic)
	count(ids) > 1
	refused := [id | some id in ids; not lower(id) in allowed_ids]
	count(refused) > 0
	msg := sprintf(`sbom.components[%d].licenses[%d] (%s): licence expression "%s" names %s, not on the licence allowlist (config license_allowlist); every id in an expression must be allowed: declare only an allowed choice (e.g. MIT instead of MIT OR GPL-3.0-only) or replace the dependency`, [i, j, component_label(c), txt(lic), txt(concat(", ", refused))])
}

deny contains msg if {
	s := object.get(input, "sbom", null)
	s != null
	not is_object(s)
	msg := "sbom: must be null (no verified SBOM) or an object with components"
}

# --- A4: vulnerability gate --------------------------------------------------------------------
#
# input.scan is the verified scan attestation (docs/scanning.md). A finding blocks when its
# severity is in config blocking_severities and no VEX statement suppressed it. With config
# ignore_unfixed true, a finding no fixed version exists for does not block (Trivy's
# --ignore-unfixed); the default false blocks it, because unfixable is not harmless.
# scan null: no verified scan; A1 reports the missing "scan" check.

scan_findings := arr(object.get(obj(input.scan), "findings", null))

ignore_unfixed := object.get(cfg, "ignore_unfixed", false) == true

deny contains msg if {
	some i, entry in scan_findings
	f := obj(entry)
	sev := lower(txt(object.get(f, "severity", "")))
	sev in cfg.blocking_severities
	object.get(f, "suppressed", false) != true
	not unfixed_ignored(f)
	msg := sprintf(`scan.findings[%d]: %s (severity %s%s) is not suppressed by any VEX statement; %s, or publish a signed VEX statement saying why it does not apply`, [i, txt(object.get(f, "id", "?")), txt(sev), txt(affected(f)), txt(remedy(f))])
}

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
	s := object.get(input, "scan", null)
	s != null
	not is_object(s)
	msg := "scan: must be null (not scanned) or an object with findings"
}

# --- A5: the run contract (input.agent), judged again where the agent is promoted, admitted or run
#
# input.agent is what the template declared, read back from the verified provenance: tools,
# WASI capabilities and limits. The template policy judged the template at build time; the node
# judges the signed contract again with its own configuration, so a build that skipped the
# template policy, or a tighter config since, still stops a dangerous grant. agent null: no
# contract was attested (the runtime refuses to run such an artifact; promotion may still verify it).

agent := obj(object.get(input, "agent", null))

agent_preopens := arr(object.get(obj(object.get(obj(object.get(agent, "capabilities", null)), "wasi", null)), "preopens", null))

agent_limits := obj(object.get(agent, "limits", null))

deny contains msg if {
	some i, tool in arr(object.get(agent, "tools", null))
	tool in cfg.dangerous_tools
	msg := sprintf(`agent.tools[%d]: "%s" is a dangerous tool (config dangerous_tools) and is never granted; rebuild the agent without it`, [i, txt(tool)])
}

deny contains msg if {
	some i, p in agent_preopens
	object.get(obj(p), "readOnly", true) != true
	msg := sprintf("agent.capabilities.wasi.preopens[%d].readOnly is not true: agents get read-only folders only; rebuild with readOnly: true", [i])
}

deny contains msg if {
	some i, p in agent_preopens
	hp := object.get(obj(p), "hostPath", "")
	is_string(hp)
	some s in array.concat(["/"], cfg.sensitive_host_paths)
	host_under(hp, s)
	msg := sprintf(`agent.capabilities.wasi.preopens[%d].hostPath "%s" is the host root or the sensitive host path %s or below it (config sensitive_host_paths); map a dedicated data folder instead`, [i, txt(hp), txt(s)])
}

host_under(hp, "/") if trim_right(hp, "/") == ""

host_under(hp, s) if {
	s != "/"
	trim_right(hp, "/") == s
}

host_under(hp, s) if {
	s != "/"
	startswith(hp, concat("", [s, "/"]))
}

deny contains msg if {
	m := object.get(agent_limits, "memoryMiB", 0)
	is_number(m)
	m > cfg.max_memory_mib
	msg := sprintf("agent.limits.memoryMiB is %v, above the ceiling of %v MiB (config max_memory_mib); rebuild with a lower spec.limits.memoryMiB", [m, cfg.max_memory_mib])
}

deny contains msg if {
	t := object.get(agent_limits, "timeoutMs", 0)
	is_number(t)
	t > cfg.max_timeout_ms
	msg := sprintf("agent.limits.timeoutMs is %v, above the ceiling of %v ms (config max_timeout_ms); rebuild with a lower spec.limits.timeoutMs", [t, cfg.max_timeout_ms])
}

deny contains msg if {
	a := object.get(input, "agent", null)
	a != null
	not is_object(a)
	msg := "agent: must be null (no attested run contract) or an object with tools, capabilities and limits"
}
