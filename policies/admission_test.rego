# Unit tests of the admission policy (admission.rego), AD1..AD5 and the warnings.
#
# The input is set field by field (`with input.request as …`, `with input.agent as …`), never as a
# whole (`with input as …`), which crashes regopy 1.5.2 (see template_test.rego). OPA runs these
# tests unchanged. Two more regopy 1.5.2 quirks shape this file:
# - the value after `with … as` is a literal or a local variable, never a rule of this package
#   (`with input.request as good_request` leaves input.request unset in a compiled bundle): bind
#   the rule to a local first (`r := good_request`);
# - a function named like one in another test package (artifact_test's `decide`, `allowed`) breaks
#   the compilation of both ("Unable to unify due to cycle"): the helpers here are admission_*.
package agentfactory.admission_test

import rego.v1

digest := "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

pinned_ref := "wordstats@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

good_request := {"operation": "CREATE", "namespace": "team-a", "kind": "WasmAgent", "dryRun": false, "mode": "enforce"}

good_agent := {"ref": pinned_ref, "field": "spec.agent", "pinned": true, "name": "wordstats", "digest": digest, "stage": "prod"}

check(name) := {"name": name, "ok": true, "reason": "verified"}

good_checks := [
	check("digest"), check("signature"), check("key-status"), check("sbom"),
	check("provenance"), check("builder"), check("source"), check("policy"),
]

good_verdict := {"allowed": true, "score": 10.0, "checks": good_checks}

admission_deny(request, agent, verdict) := d if {
	d := data.agentfactory.admission.deny with input.request as request
		with input.agent as agent
		with input.verdict as verdict
}

admission_warn(request, agent, verdict) := w if {
	w := data.agentfactory.admission.warn with input.request as request
		with input.agent as agent
		with input.verdict as verdict
}

admission_allow(request, agent, verdict) := a if {
	a := data.agentfactory.admission.allow with input.request as request
		with input.agent as agent
		with input.verdict as verdict
}

# stages_config(key, value): the policy data's config with admission.<key> replaced as a whole. OPA
# merges an object given to `with data.agentfactory.config.admission.namespace_stages as {…}` into
# the one it replaces when a rule reads data.agentfactory.config (rego-cpp replaces it): the tests
# replace the whole config, which both engines read the same way (docs/policy.md, OPA and regopy).
stages_config(key, value) := object.union(
	object.remove(data.agentfactory.config, ["admission"]),
	{"admission": object.union(object.remove(data.agentfactory.config.admission, [key]), {key: value})},
)

req(changes) := object.union(good_request, changes)

ag(changes) := object.union(good_agent, changes)

# An unpinned reference, as the webhook passes it (no digest, no verdict).
unpinned := ag({"ref": "wordstats:1.1.0", "pinned": false, "digest": null})

# --- the good case ----------------------------------------------------------------------------

test_good_reference_admitted if {
	admission_deny(good_request, good_agent, good_verdict) == set()
	admission_warn(good_request, good_agent, good_verdict) == set()
	admission_allow(good_request, good_agent, good_verdict) == true
}

# The decision document the OPA engine asks a server for: allow, deny and warn, as the rules say.
test_decision_document if {
	r := good_request
	a := good_agent
	v := {"allowed": true, "score": 9.0, "checks": good_checks}
	d := data.agentfactory.admission.decision with input.request as r
		with input.agent as a
		with input.verdict as v
	d.allow == true
	d.deny == set()
	count(d.warn) == 1
	u := unpinned
	d2 := data.agentfactory.admission.decision with input.request as r
		with input.agent as u
		with input.verdict as null
	d2 == {"allow": false, "deny": admission_deny(r, u, null), "warn": set()}
}

test_good_reference_admitted_on_update_and_in_every_stage if {
	every stage in ["dev", "canary", "prod"] {
		admission_deny(req({"operation": "UPDATE"}), ag({"stage": stage}), good_verdict) == set()
	}
}

test_any_deny_means_not_allowed if {
	admission_allow(good_request, unpinned, null) == false
}

test_warn_mode_judged_the_same if {
	# The webhook turns the denies into warnings itself; the policy still reports them as denies.
	admission_deny(req({"mode": "warn"}), unpinned, null) == admission_deny(good_request, unpinned, null)
	count(admission_deny(req({"mode": "warn"}), unpinned, null)) == 1
}

# --- malformed input --------------------------------------------------------------------------

test_missing_agent_denied if {
	r := good_request
	d := data.agentfactory.admission.deny with input.request as r with input.verdict as null
	d == {"agent: missing or not an object; the webhook must pass the agent reference it found (ref, field, pinned, name, digest, stage)"}
	not data.agentfactory.admission.allow with input.request as r with input.verdict as null
}

test_missing_request_denied if {
	a := good_agent
	v := good_verdict
	d := data.agentfactory.admission.deny with input.agent as a with input.verdict as v
	d == {"request: missing or not an object; the webhook must pass the admission request (operation, namespace, kind, dryRun, mode)"}
	data.agentfactory.admission.warn == set() with input.agent as a with input.verdict as v
}

test_non_object_request_and_agent_denied if {
	d := admission_deny("CREATE", ["wordstats"], good_verdict)
	"request: missing or not an object; the webhook must pass the admission request (operation, namespace, kind, dryRun, mode)" in d
	"agent: missing or not an object; the webhook must pass the agent reference it found (ref, field, pinned, name, digest, stage)" in d
}

test_malformed_fields_denied if {
	"verdict: must be null (the artifact was not verified) or an object with allowed, score and checks" in admission_deny(good_request, good_agent, "ok")
	"agent.ref is null, not a non-empty string; the webhook must pass the agent reference as written in spec.agent" in admission_deny(good_request, ag({"ref": null}), good_verdict)
	admission_deny(req({"namespace": 7}), good_agent, good_verdict) == {"request.namespace is 7, not a string; the webhook must pass the namespace of the object (empty for a cluster-scoped one)"}
	admission_deny(req({"mode": "audit"}), good_agent, good_verdict) == {`request.mode "audit" is unknown; the webhook must pass "enforce" or "warn"`}
}

test_missing_field_named_by_input_path if {
	a := object.remove(unpinned, ["field"])
	admission_deny(good_request, a, null) == {`agent.ref: "wordstats:1.1.0" is not pinned by digest; agents are admitted by digest only: write it as wordstats@sha256:<digest> (agentfactory store ls shows the digests)`}
}

# --- AD1 digest pinning -----------------------------------------------------------------------

test_ad1_unpinned_denied if {
	admission_deny(good_request, unpinned, null) == {`spec.agent: "wordstats:1.1.0" is not pinned by digest; agents are admitted by digest only: write it as wordstats@sha256:<digest> (agentfactory store ls shows the digests)`}
}

test_ad1_message_names_the_field if {
	a := object.union(unpinned, {"ref": "registry.example/agents/wordstats:1.1.0", "field": "spec.template.spec.containers[1].image"})
	admission_deny(good_request, a, null) == {`spec.template.spec.containers[1].image: "registry.example/agents/wordstats:1.1.0" is not pinned by digest; agents are admitted by digest only: write it as wordstats@sha256:<digest> (agentfactory store ls shows the digests)`}
}

test_ad1_pinned_missing_or_not_true_denied if {
	every a in [object.remove(unpinned, ["pinned"]), object.union(unpinned, {"pinned": "true"}), object.union(unpinned, {"pinned": null})] {
		some msg in admission_deny(good_request, a, null)
		contains(msg, "is not pinned by digest")
	}
}

test_ad1_unknown_name_left_as_placeholder if {
	a := object.union(unpinned, {"name": null, "field": `metadata.annotations["agentfactory.dev/agent"]`})
	admission_deny(good_request, a, null) == {`metadata.annotations["agentfactory.dev/agent"]: "wordstats:1.1.0" is not pinned by digest; agents are admitted by digest only: write it as <name>@sha256:<digest> (agentfactory store ls shows the digests)`}
}

test_ad1_pinned_without_valid_digest_denied if {
	admission_deny(good_request, ag({"digest": null}), good_verdict) == {`spec.agent: "wordstats@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" is marked pinned but agent.digest is null, not sha256:<64 lowercase hex digits>; the webhook must pass the digest named in the reference`}
	count(admission_deny(good_request, ag({"digest": "sha256:ABCD"}), good_verdict)) == 1
}

# --- AD2 verified -----------------------------------------------------------------------------

test_ad2_failed_checks_denied_one_message_each if {
	v := {"allowed": false, "score": 4.0, "checks": [
		{"name": "digest", "ok": true, "reason": "matches"},
		{"name": "signature", "ok": false, "reason": "signed by key 3f2a, which the trust policy does not list"},
		{"name": "provenance", "ok": false, "reason": "no provenance attestation for this digest"},
	]}
	admission_deny(good_request, good_agent, v) == {
		`spec.agent: "wordstats@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" does not verify: signature: signed by key 3f2a, which the trust policy does not list`,
		`spec.agent: "wordstats@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" does not verify: provenance: no provenance attestation for this digest`,
	}
	admission_warn(good_request, good_agent, v) == set()
}

test_ad2_refused_without_failed_check_denied if {
	v := {"allowed": false, "score": 10.0, "checks": good_checks}
	admission_deny(good_request, good_agent, v) == {`spec.agent: "wordstats@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" does not verify: the verifier refused it without naming a failed check (verdict.allowed is false); run agentfactory verify on the reference to see why, and fix the evidence it reports`}
	some msg in admission_deny(good_request, good_agent, {"score": 10.0, "checks": []})
	contains(msg, "(verdict.allowed is null)")
}

test_ad2_check_without_ok_or_reason_denied if {
	v := {"allowed": false, "score": 8.0, "checks": [{"name": "sbom"}]}
	admission_deny(good_request, good_agent, v) == {`spec.agent: "wordstats@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" does not verify: sbom: no reason given`}
}

test_ad2_no_verdict_denied if {
	admission_deny(good_request, good_agent, null) == {`spec.agent: "wordstats@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" was not verified (no verdict); it is refused until the verifier judges it: make sure the digest is published in the store the webhook verifies against`}
	r := good_request
	a := good_agent
	d := data.agentfactory.admission.deny with input.request as r with input.agent as a
	count(d) == 1
}

# --- AD3 known stage --------------------------------------------------------------------------

# admission_txt(x): a string argument of sprintf as plain text (rego-cpp keeps its JSON quotes otherwise; see txt() in template.rego)
admission_txt(x) := substring(x, 0, -1)

ad3_unknown(stage) := sprintf(`agent.stage "%s" is not a known stage (config admission.stages: dev, canary, prod); the webhook judges an agent at its namespace's stage (config admission.namespace_stages, else its defaultStage): make both name known stages`, [admission_txt(stage)])

test_ad3_unknown_stage_denied if {
	admission_deny(good_request, ag({"stage": "staging"}), good_verdict) == {ad3_unknown("staging")}
}

test_ad3_missing_stage_denied if {
	admission_deny(good_request, object.remove(good_agent, ["stage"]), good_verdict) == {ad3_unknown("null")}
}

test_ad3_follows_config if {
	admission_deny(good_request, ag({"stage": "staging"}), good_verdict) == set() with data.agentfactory.config.admission.stages as ["dev", "staging", "prod"]
	count(admission_deny(good_request, good_agent, good_verdict)) == 1 with data.agentfactory.config.admission.stages as ["dev"]
}

test_ad3_unknown_requested_stage_denied if {
	d := admission_deny(good_request, ag({"requested_stage": "qa", "requested_stage_field": "spec.stage"}), good_verdict)
	d == {`spec.stage: "qa" is not a known stage (config admission.stages: dev, canary, prod); ask for the namespace's stage or a lower one, or name none`}
	some msg in admission_deny(good_request, ag({"requested_stage": 7}), good_verdict)
	startswith(msg, `agent.requested_stage: "7" is not a known stage`)
	some m in admission_deny(good_request, ag({"requested_stage": ["prod"]}), good_verdict)
	startswith(m, `agent.requested_stage: "[`)
}

# --- AD4 the namespace's stage ----------------------------------------------------------------

ad4_mismatch(ns, required, stage) := sprintf(`request.namespace "%s" is at stage "%s" (config admission.namespace_stages), but the agent was judged at agent.stage "%s"; the webhook must verify an agent at its namespace's stage`, [admission_txt(ns), admission_txt(required), admission_txt(stage)])

ad4_higher(field, asked, stage, ns) := sprintf(`%s: asks for stage "%s", higher than stage "%s" of request.namespace "%s"; an object may ask only for its namespace's stage or a lower one: deploy it to a namespace of stage %s (config admission.namespace_stages), once it is promoted there`, [admission_txt(field), admission_txt(asked), admission_txt(stage), admission_txt(ns), admission_txt(asked)])

test_ad4_prod_namespace_judged_at_prod if {
	admission_deny(req({"namespace": "prod"}), ag({"stage": "canary"}), good_verdict) == {ad4_mismatch("prod", "prod", "canary")}
	admission_deny(req({"namespace": "prod"}), good_agent, good_verdict) == set()
}

test_ad4_glob_matches_by_prefix if {
	admission_deny(req({"namespace": "prod-eu"}), ag({"stage": "dev"}), good_verdict) == {ad4_mismatch("prod-eu", "prod", "dev")}
	admission_deny(req({"namespace": "canary-1"}), ag({"stage": "dev"}), good_verdict) == {ad4_mismatch("canary-1", "canary", "dev")}
	admission_deny(req({"namespace": "canary-1"}), ag({"stage": "canary"}), good_verdict) == set()
}

test_ad4_unmatched_namespace_any_known_stage if {
	# the webhook passes its defaultStage for these; the policy has no default of its own to compare with
	every ns in ["team-a", "production", "prod2", "canary", ""] {
		admission_deny(req({"namespace": ns}), ag({"stage": "dev"}), good_verdict) == set()
	}
	admission_deny(object.remove(good_request, ["namespace"]), ag({"stage": "dev"}), good_verdict) == set()
}

test_ad4_exact_name_wins_over_glob if {
	c := stages_config("namespace_stages", {"prod-eu": "canary", "prod-*": "prod", "prod-eu-*": "dev", "*": "canary"})
	d := admission_deny(req({"namespace": "prod-eu"}), ag({"stage": "prod"}), good_verdict) with data.agentfactory.config as c
	d == {ad4_mismatch("prod-eu", "canary", "prod")}
}

test_ad4_longest_glob_wins if {
	c := stages_config("namespace_stages", {"prod-*": "prod", "prod-eu-*": "dev", "*": "canary", "prod-e*": "canary"})
	d := admission_deny(req({"namespace": "prod-eu-2"}), ag({"stage": "prod"}), good_verdict) with data.agentfactory.config as c
	d == {ad4_mismatch("prod-eu-2", "dev", "prod")}
	admission_deny(req({"namespace": "prod-us"}), ag({"stage": "prod"}), good_verdict) == set() with data.agentfactory.config as c
	admission_deny(req({"namespace": "prod-es"}), ag({"stage": "canary"}), good_verdict) == set() with data.agentfactory.config as c
	admission_deny(req({"namespace": "team-a"}), ag({"stage": "canary"}), good_verdict) == set() with data.agentfactory.config as c
}

test_ad4_follows_config if {
	c := stages_config("namespace_stages", {"team-*": "dev"})
	empty := stages_config("namespace_stages", {})
	count(admission_deny(good_request, good_agent, good_verdict)) == 1 with data.agentfactory.config as c
	admission_deny(req({"namespace": "prod"}), ag({"stage": "dev"}), good_verdict) == set() with data.agentfactory.config as c
	admission_deny(req({"namespace": "prod"}), ag({"stage": "dev"}), good_verdict) == set() with data.agentfactory.config as empty
}

test_ad4_object_may_ask_for_its_namespace_stage_or_a_lower_one if {
	every asked in ["dev", "canary", "prod"] {
		admission_deny(req({"namespace": "prod"}), ag({"requested_stage": asked, "requested_stage_field": "spec.stage"}), good_verdict) == set()
	}
	admission_deny(req({"namespace": "canary-1"}), ag({"stage": "canary", "requested_stage": "dev"}), good_verdict) == set()
	admission_deny(good_request, ag({"stage": "dev", "requested_stage": null}), good_verdict) == set()
}

test_ad4_object_asking_for_a_higher_stage_denied_naming_both if {
	field := `metadata.annotations['agentfactory.dev/stage']`
	d := admission_deny(good_request, ag({"stage": "dev", "requested_stage": "prod", "requested_stage_field": field}), good_verdict)
	d == {ad4_higher(field, "prod", "dev", "team-a")}
	d2 := admission_deny(req({"namespace": "canary-1"}), ag({"stage": "canary", "requested_stage": "prod", "requested_stage_field": "spec.stage"}), good_verdict)
	d2 == {ad4_higher("spec.stage", "prod", "canary", "canary-1")}
	count(admission_deny(good_request, ag({"stage": "dev", "requested_stage": "canary"}), good_verdict)) == 1
}

test_ad4_stage_order_follows_config if {
	a := ag({"stage": "dev", "requested_stage": "prod"})
	admission_deny(good_request, a, good_verdict) == set() with data.agentfactory.config.admission.stages as ["prod", "canary", "dev"]
	count(admission_deny(good_request, a, good_verdict)) == 1 with data.agentfactory.config.admission.stages as ["dev", "canary", "prod"]
}

test_ad4_bad_glob_in_config_denied if {
	c := stages_config("namespace_stages", {"prod-*-eu": "prod"})
	d := admission_deny(good_request, good_agent, good_verdict) with data.agentfactory.config as c
	d == {`config admission.namespace_stages: the key "prod-*-eu" has a * elsewhere than at its end; only a namespace name or a prefix glob with a single trailing * (e.g. prod-*) is supported: fix policies/data.json`}
}

# --- AD5 operations ---------------------------------------------------------------------------

test_ad5_unexpected_operation_denied if {
	admission_deny(req({"operation": "CONNECT"}), good_agent, good_verdict) == {`request.operation "CONNECT" is unexpected: agents are admitted on CREATE and UPDATE only; register the webhook for CREATE and UPDATE`}
	count(admission_deny(req({"operation": "create"}), good_agent, good_verdict)) == 1
	admission_deny(req({"operation": null}), good_agent, good_verdict) == {"request.operation is null, not a string: unexpected operation; the webhook must pass CREATE or UPDATE"}
}

test_ad5_delete_allowed if {
	admission_deny(req({"operation": "DELETE", "namespace": "prod"}), ag({"stage": "nope"}), good_verdict) == set()
	admission_deny(req({"operation": "DELETE"}), unpinned, null) == set()
	admission_allow(req({"operation": "DELETE"}), unpinned, null) == true
	admission_warn(req({"operation": "DELETE"}), good_agent, {"allowed": true, "score": 8.0, "checks": good_checks}) == set()
	r := req({"operation": "DELETE"})
	d := data.agentfactory.admission.deny with input.request as r
	d == set()
}

# --- warnings ---------------------------------------------------------------------------------

test_warn_low_score_names_failed_checks if {
	v := {"allowed": true, "score": 8.5, "checks": array.concat(good_checks, [
		{"name": "builder", "ok": false, "reason": "builder not trusted"},
		{"name": "source", "ok": false, "reason": "no source"},
	])}
	admission_deny(good_request, good_agent, v) == set()
	admission_allow(good_request, good_agent, v) == true
	admission_warn(good_request, good_agent, v) == {`spec.agent: "wordstats@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" is admitted with security score 8.5/10: builder, source did not pass; complete that evidence and verify again to raise the score`}
}

test_warn_low_score_without_failed_check if {
	v := {"allowed": true, "score": 9.5, "checks": good_checks}
	admission_warn(good_request, good_agent, v) == {`spec.agent: "wordstats@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" is admitted with security score 9.5/10; add the missing optional evidence (trusted builder, source) and verify again to raise the score`}
}

test_warn_dry_run if {
	admission_warn(req({"dryRun": true}), good_agent, good_verdict) == {"request.dryRun: dry run: nothing is admitted for real"}
	admission_deny(req({"dryRun": true}), good_agent, good_verdict) == set()
	admission_allow(req({"dryRun": true}), good_agent, good_verdict) == true
}

test_warn_always_defined if {
	admission_warn(good_request, unpinned, null) == set()
	r := good_request
	data.agentfactory.admission.warn == set() with input.request as r
}
