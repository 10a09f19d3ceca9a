# Admission policy: may this agent reference, found in a Kubernetes object, be admitted?
#
# The admission webhook calls it once per agent reference it finds in a WasmAgent, a Pod with a
# wasm runtime class, an annotated object or a workload's pod template, after the trust core's
# verifier has judged the artifact (the verdict includes the artifact policy for the agent's stage).
#
# Input (docs/policy-inputs.md): {"request": {"operation", "namespace", "kind", "dryRun",
# "mode"}, "agent": {"ref", "field", "pinned", "name", "digest", "stage", "requested_stage",
# "requested_stage_field"}, "verdict": null | {"allowed", "score", "checks": [{"name", "ok", "reason"}]}}.
# agent.stage is the stage the webhook verified the agent at: its namespace's (from namespace_stages
# below, read by the webhook from this same data; else the webhook's defaultStage), never one the
# object claims. agent.requested_stage is what the object asks for (spec.stage, the
# agentfactory.dev/stage annotation) or null: it may be the namespace's stage or a lower one (AD4).
# Tunables: data.agentfactory.config.admission (policies/data.json): stages (in promotion order),
# namespace_stages.
#
# Decision: `deny` (refuse), `warn` (admitted, with a warning shown to the client) and `allow`.
# `warn` is always defined (a partial set: empty when no rule matches). request.mode ("enforce" or
# "warn") is not treated specially: in warn mode the webhook turns the denies into warnings itself.
# DELETE is allowed whatever the agent (the webhook does not even ask; if it does, nothing denies),
# so that a bad object can always be removed.
#
# Every message names the field it is about and says what to change. Rule ids: AD1..AD5.
# rego-cpp compatibility: see the notes at the top of template.rego (no %q; txt() around every
# string argument of sprintf; no (?i) in regular expressions).
package agentfactory.admission

import rego.v1

default allow := false

allow if deny == set()

# The whole decision as one document: what the OPA engine asks an OPA server for (POST
# /v1/data/agentfactory/admission/decision, agentfactory/policy_opa.py). One query evaluates only the
# rules it needs and answers with the messages alone, where the package's document would also
# evaluate and return every helper rule (the input's parts, the config).
decision := {"allow": allow, "deny": deny, "warn": warn}

# The config and the input's parts are rules written without a function call: rego-cpp evaluates a
# function again at every call and copies its arguments (obj(data.agentfactory.config) copied the
# whole config at every decision); see artifact.rego, Cost. Each type test of an input part is a rule
# of its own with a default (`request_given`): it is evaluated once per decision and the rules read
# it, where `not is_object(object.get(input, "request", null))` in each rule cost two builtin calls
# each time (rego-cpp caches a rule only once it has a value, hence the defaults).
cfg := c if {
	c := data.agentfactory.config.admission
	is_object(c)
} else := {}

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

default request_given := false

request_given if is_object(input.request)

default agent_given := false

agent_given if is_object(input.agent)

default verdict_given := false

verdict_given if is_object(input.verdict)

request := x if {
	request_given
	x := input.request
} else := {}

agent := x if {
	agent_given
	x := input.agent
} else := {}

raw_verdict := x if {
	x := input.verdict
} else := null

verdict := x if {
	verdict_given
	x := input.verdict
} else := {}

operation := x if {
	x := request.operation
} else := null

default operation_is_string := false

operation_is_string if is_string(operation)

# Nothing is denied on DELETE (see the header).
judged if not operation == "DELETE"

# Where the reference was found (spec.agent, spec.containers[0].image, …), for the messages.
field := f if {
	f := agent.field
	is_string(f)
	f != ""
} else := "agent.ref"

ref := txt(object.get(agent, "ref", ""))

default namespace_is_string := false

namespace_is_string if is_string(request.namespace)

namespace := ns if {
	namespace_is_string
	ns := request.namespace
} else := ""

# --- malformed input -----------------------------------------------------------------------------

deny contains msg if {
	not request_given
	msg := "request: missing or not an object; the webhook must pass the admission request (operation, namespace, kind, dryRun, mode)"
}

deny contains msg if {
	judged
	not agent_given
	msg := "agent: missing or not an object; the webhook must pass the agent reference it found (ref, field, pinned, name, digest, stage)"
}

deny contains msg if {
	judged
	agent_given
	not ref_given
	r := object.get(agent, "ref", null)
	msg := sprintf("agent.ref is %s, not a non-empty string; the webhook must pass the agent reference as written in %s", [txt(r), txt(field)])
}

default ref_given := false

ref_given if non_empty_string(agent.ref)

deny contains msg if {
	judged
	not verdict_given
	not raw_verdict == null
	msg := "verdict: must be null (the artifact was not verified) or an object with allowed, score and checks"
}

deny contains msg if {
	not namespace_is_string
	ns := request.namespace
	not ns == null
	msg := sprintf("request.namespace is %s, not a string; the webhook must pass the namespace of the object (empty for a cluster-scoped one)", [txt(ns)])
}

deny contains msg if {
	m := request.mode
	not m == null
	not m == "enforce"
	not m == "warn"
	msg := sprintf(`request.mode "%s" is unknown; the webhook must pass "enforce" or "warn"`, [txt(m)])
}

non_empty_string(x) if {
	is_string(x)
	not x == ""
}

# --- AD1: digest pinning -------------------------------------------------------------------------
#
# Agents are admitted by digest only: a tag or version can be moved to other bytes after the
# verification, a digest cannot.

deny contains msg if {
	judged
	agent_given
	not agent.pinned == true
	msg := sprintf(`%s: "%s" is not pinned by digest; agents are admitted by digest only: write it as %s@sha256:<digest> (agentfactory store ls shows the digests)`, [txt(field), ref, txt(agent_name)])
}

agent_name := n if {
	n := agent.name
	non_empty_string(n)
} else := "<name>"

deny contains msg if {
	judged
	agent.pinned == true
	not valid_digest(agent_digest)
	d := agent_digest
	msg := sprintf(`%s: "%s" is marked pinned but agent.digest is %s, not sha256:<64 lowercase hex digits>; the webhook must pass the digest named in the reference`, [txt(field), ref, txt(d)])
}

valid_digest(d) if {
	is_string(d)
	regex.match(`^sha256:[0-9a-f]{64}$`, d)
}

agent_digest := d if {
	d := agent.digest
} else := null

# --- AD2: verified -------------------------------------------------------------------------------
#
# The verifier's verdict (signature, evidence, artifact policy for the stage) must allow the
# digest. No verdict for a pinned reference: fail closed.

failed_checks := [c |
	some entry in arr(object.get(verdict, "checks", null))
	c := obj(entry)
	not c.ok == true
]

check_name(c) := txt(object.get(c, "name", "unnamed check"))

deny contains msg if {
	judged
	verdict_given
	not verdict.allowed == true
	some c in failed_checks
	msg := sprintf(`%s: "%s" does not verify: %s: %s`, [txt(field), ref, check_name(c), txt(object.get(c, "reason", "no reason given"))])
}

deny contains msg if {
	judged
	verdict_given
	not verdict.allowed == true
	failed_checks == []
	msg := sprintf(`%s: "%s" does not verify: the verifier refused it without naming a failed check (verdict.allowed is %s); run agentfactory verify on the reference to see why, and fix the evidence it reports`, [txt(field), ref, txt(object.get(verdict, "allowed", null))])
}

deny contains msg if {
	judged
	agent.pinned == true
	not verdict_given
	raw_verdict == null
	msg := sprintf(`%s: "%s" was not verified (no verdict); it is refused until the verifier judges it: make sure the digest is published in the store the webhook verifies against`, [txt(field), ref])
}

# --- AD3: known stage ----------------------------------------------------------------------------
#
# The stage the agent was verified at, and the one the object asks for (if any), are stages of the
# config, so that the order below means something.

known_stages := x if {
	x := cfg.stages
	is_array(x)
} else := []

agent_stage := s if {
	s := agent.stage
} else := null

requested_stage := s if {
	s := agent.requested_stage
} else := null

# known_stage(s): s is one of known_stages (`s in known_stages` is a builtin call; this is a scan).
known_stage(s) if {
	some known in known_stages
	known == s
}

requested_field := f if {
	f := agent.requested_stage_field
	non_empty_string(f)
} else := "agent.requested_stage"

deny contains msg if {
	judged
	agent_given
	not known_stage(agent_stage)
	msg := sprintf(`agent.stage "%s" is not a known stage (config admission.stages: %s); the webhook judges an agent at its namespace's stage (config admission.namespace_stages, else its defaultStage): make both name known stages`, [txt(agent_stage), txt(concat(", ", [txt(s) | some s in known_stages]))])
}

deny contains msg if {
	judged
	not requested_stage == null
	not known_stage(requested_stage)
	msg := sprintf(`%s: "%s" is not a known stage (config admission.stages: %s); ask for the namespace's stage or a lower one, or name none`, [txt(requested_field), txt(requested_stage), txt(concat(", ", [txt(s) | some s in known_stages]))])
}

# --- AD4: the namespace's stage ------------------------------------------------------------------
#
# A stage is the namespace's, never the object's. config admission.namespace_stages maps a namespace
# name, or a glob with a single trailing `*` ("prod-*"), to its stage. An exact name wins over a glob;
# among the globs that match, the longest prefix wins; a namespace matching no entry is at the
# webhook's defaultStage. The webhook reads this same map to choose the stage it verifies at, so
# agent.stage must be the namespace's (a mismatch means the two disagree: refused). The object may
# ask for the namespace's stage or a lower one (a prod namespace may run an agent whose manifest
# says dev: it is judged as prod); asking for a higher one is refused, naming both.

namespace_stages := x if {
	x := cfg.namespace_stages
	is_object(x)
} else := {}

# glob_prefix(k): the prefix of a glob key ("prod-*" -> "prod-"); undefined for an exact name.
glob_prefix(k) := p if {
	endswith(k, "*")
	p := trim_suffix(k, "*")
	not contains(p, "*")
}

# The keys with a `*` and the prefix of each glob among them, computed once per decision for the
# match below and the rule that refuses a misplaced `*` (each key is looked at once, not per rule).
star_keys := {k |
	some k
	namespace_stages[k]
	contains(k, "*")
}

glob_prefixes := {k: p |
	some k in star_keys
	p := glob_prefix(k)
}

matching_prefixes := {p |
	some p in glob_prefixes
	startswith(namespace, p)
}

required_stage := s if {
	s := namespace_stages[namespace]
} else := s if {
	not matching_prefixes == set()
	longest := max({count(p) | some p in matching_prefixes})
	some p in matching_prefixes
	count(p) == longest
	s := namespace_stages[concat("", [p, "*"])]
}

# stage_rank(s): the position of stage s in config admission.stages (the promotion order).
stage_rank(s) := i if {
	some i, known in known_stages
	known == s
}

deny contains msg if {
	judged
	required := required_stage
	is_string(agent_stage)
	agent_stage != required
	msg := sprintf(`request.namespace "%s" is at stage "%s" (config admission.namespace_stages), but the agent was judged at agent.stage "%s"; the webhook must verify an agent at its namespace's stage`, [txt(namespace), txt(required), txt(agent_stage)])
}

deny contains msg if {
	judged
	stage_rank(requested_stage) > stage_rank(agent_stage)
	msg := sprintf(`%s: asks for stage "%s", higher than stage "%s" of request.namespace "%s"; an object may ask only for its namespace's stage or a lower one: deploy it to a namespace of stage %s (config admission.namespace_stages), once it is promoted there`, [txt(requested_field), txt(requested_stage), txt(agent_stage), txt(namespace), txt(requested_stage)])
}

# A key with a `*` elsewhere than at its end would silently match nothing: refuse (fail closed).
deny contains msg if {
	some k in star_keys
	not glob_prefixes[k]
	msg := sprintf(`config admission.namespace_stages: the key "%s" has a * elsewhere than at its end; only a namespace name or a prefix glob with a single trailing * (e.g. prod-*) is supported: fix policies/data.json`, [txt(k)])
}

# --- AD5: operations -----------------------------------------------------------------------------
#
# The webhook is registered for CREATE and UPDATE; it allows DELETE itself (allowed here as well).

deny contains msg if {
	operation_is_string
	not operation == "CREATE"
	not operation == "UPDATE"
	not operation == "DELETE"
	msg := sprintf(`request.operation "%s" is unexpected: agents are admitted on CREATE and UPDATE only; register the webhook for CREATE and UPDATE`, [txt(operation)])
}

deny contains msg if {
	request_given
	not operation_is_string
	msg := sprintf("request.operation is %s, not a string: unexpected operation; the webhook must pass CREATE or UPDATE", [txt(operation)])
}

# --- warnings (admitted, with a message to the client) ---------------------------------------------

# score_below_ten: evaluated once for both warnings (a rule with a default is cached).
default score_below_ten := false

score_below_ten if {
	score := verdict.score
	is_number(score)
	score < 10
}

warn contains msg if {
	judged
	verdict.allowed == true
	score_below_ten
	score := verdict.score
	not failed_checks == []
	names := concat(", ", [check_name(c) | some c in failed_checks])
	msg := sprintf(`%s: "%s" is admitted with security score %v/10: %s did not pass; complete that evidence and verify again to raise the score`, [txt(field), ref, score, txt(names)])
}

warn contains msg if {
	judged
	verdict.allowed == true
	score_below_ten
	score := verdict.score
	failed_checks == []
	msg := sprintf(`%s: "%s" is admitted with security score %v/10; add the missing optional evidence (trusted builder, source) and verify again to raise the score`, [txt(field), ref, score])
}

warn contains msg if {
	request.dryRun == true
	msg := "request.dryRun: dry run: nothing is admitted for real"
}
