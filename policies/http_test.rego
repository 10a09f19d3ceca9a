# Unit tests of the template policy's http.fetch rules (http.rego, H1..H6).
#
# Inputs are set field by field (`with input.template as …`): regopy crashes on `with input as`.
package agentfactory.template_http_test

import rego.v1

node_http := {
	"allow_plain_http": false, "allow_loopback": false, "allow_private": false,
	"max_requests": 32, "max_response_kib": 4096, "max_request_kib": 1024, "max_timeout_ms": 30000,
}

good := {
	"apiVersion": "agentfactory.dev/v1alpha1",
	"kind": "AgentTemplate",
	"metadata": {
		"name": "triage", "version": "1.0.0", "description": "Calls an API.",
		"owners": ["@example/team"],
	},
	"spec": {
		"language": "wat", "sources": ["src/main.wat"], "entrypoint": "_start",
		"tools": ["http.fetch"],
		"capabilities": {"wasi": {"preopens": [], "env": []}},
		"limits": {"memoryMiB": 4, "timeoutMs": 2000, "maxOutputKiB": 64},
		"http": {
			"allow": [
				{"url": "https://api.example.com/v1/*", "methods": ["GET", "POST"]},
				{"url": "https://*.cdn.example.net/assets/*"},
			],
			"limits": {"maxRequests": 4, "maxResponseKiB": 128, "timeoutMs": 3000},
		},
		"secrets": [{"name": "api-key", "header": "Authorization", "format": "Bearer {value}", "hosts": ["api.example.com"]}],
	},
}

patched(path, value) := json.patch(good, [{"op": "add", "path": substring(path, 0, -1), "value": value}])

without(path) := json.patch(good, [{"op": "remove", "path": substring(path, 0, -1)}])

with_url(u) := patched("/spec/http/allow/0/url", u)

denies_with(tpl, cfg) := d if {
	d := data.agentfactory.template.deny with input.template as tpl
		with input.path as "templates/triage"
		with input.module as null
		with input.base as null
		with input.findings as []
		with data.agentfactory.config as http_config(cfg)
}

# http_config(cfg): the policy data's config with node.http replaced as a whole (OPA merges an object
# given to `with data.agentfactory.config.node.http as {…}` into the one in data.json; docs/policy.md).
http_config(cfg) := object.union(
	object.remove(data.agentfactory.config, ["node"]),
	{"node": object.union(object.remove(data.agentfactory.config.node, ["http"]), {"http": cfg})},
)

denies(tpl) := denies_with(tpl, node_http)

# the one message about url 0, or the set of all when there are several
has(d, fragment) if {
	some m in d
	contains(m, fragment)
}

test_good_http_template_allowed if {
	denies(good) == set()
}

test_template_without_http_needs_no_http_config if {
	plain := json.patch(good, [
		{"op": "remove", "path": "/spec/http"}, {"op": "remove", "path": "/spec/secrets"},
		{"op": "replace", "path": "/spec/tools", "value": []},
	])
	d := data.agentfactory.template.deny with input.template as plain
		with input.path as "templates/triage"
		with input.module as null
		with input.base as null
		with input.findings as []
		with data.agentfactory.config.node as {"max_output_kib": 16384, "memory_budget_mib": 768, "invocation_overhead_kib": 1040, "default_output_kib": 1024}
	d == set()
}

# --- H1 ---------------------------------------------------------------------------------------

test_h1_http_without_tool_denied if {
	d := denies(patched("/spec/tools", []))
	d == {"spec.http: declared, but spec.tools does not list http.fetch; add http.fetch to spec.tools (or remove spec.http)"}
}

test_h1_tool_without_http_denied if {
	d := denies(json.patch(good, [{"op": "remove", "path": "/spec/http"}, {"op": "remove", "path": "/spec/secrets"}]))
	d == {"spec.tools lists http.fetch but there is no spec.http: declare the URL patterns it may reach in spec.http.allow"}
}

test_h1_secrets_without_http_denied if {
	d := denies(without("/spec/http"))
	has(d, "spec.secrets: declared without spec.http")
}

# --- H2 plain http ------------------------------------------------------------------------------

test_h2_plain_http_denied if {
	denies(with_url("http://api.example.com/v1/*")) == {`spec.http.allow[0].url "http://api.example.com/v1/*" is plain http, which the node refuses (config node.http.allow_plain_http, the runtime's --http-allow-plain-http); use https`, `spec.secrets[0].hosts[0]: secret "api-key" is bound to host api.example.com, which an allow pattern reaches over plain http; secrets are sent over https only`}
}

test_h2_plain_http_allowed_by_node_but_never_with_a_secret if {
	d := denies_with(with_url("http://api.example.com/v1/*"), object.union(node_http, {"allow_plain_http": true}))
	d == {`spec.secrets[0].hosts[0]: secret "api-key" is bound to host api.example.com, which an allow pattern reaches over plain http; secrets are sent over https only`}
	denies_with(patched("/spec/http/allow/1/url", "http://*.cdn.example.net/assets/*"), object.union(node_http, {"allow_plain_http": true})) == set()
}

test_h2_other_scheme_denied if {
	has(denies(with_url("ftp://api.example.com/v1/*")), "the scheme must be https")
}

# --- H3 addresses -------------------------------------------------------------------------------

test_h3_loopback_names_and_literals_denied if {
	every u in ["https://localhost/x", "https://api.localhost/x", "https://127.0.0.1/x", "https://127.1.2.3:8443/x", "https://LOCALHOST./x"] {
		d := denies(patched("/spec/http/allow/1/url", u))
		has(d, "is a loopback host, which the node refuses (config node.http.allow_loopback, the runtime's --http-allow-loopback)")
	}
}

test_h3_loopback_allowed_when_the_node_allows_it if {
	denies_with(patched("/spec/http/allow/1/url", "https://127.0.0.1:8443/*"), object.union(node_http, {"allow_loopback": true})) == set()
}

test_h3_private_denied if {
	every u in ["https://10.1.2.3/x", "https://172.16.0.1/x", "https://172.31.255.255/x", "https://192.168.1.1/x", "https://100.64.0.1/x", "https://db/x", "https://vault.internal/x", "https://printer.local/x"] {
		has(denies(patched("/spec/http/allow/1/url", u)), "is a private host, which the node refuses (config node.http.allow_private")
	}
	not has(denies(patched("/spec/http/allow/1/url", "https://172.32.0.1/x")), "private")
}

test_h3_private_allowed_when_the_node_allows_it if {
	denies_with(patched("/spec/http/allow/1/url", "https://10.1.2.3/x"), object.union(node_http, {"allow_private": true})) == set()
}

test_h3_metadata_and_link_local_never if {
	everything := object.union(node_http, {"allow_plain_http": true, "allow_loopback": true, "allow_private": true})
	d := denies_with(patched("/spec/http/allow/1/url", "http://169.254.169.254/latest/meta-data/*"), everything)
	d == {`spec.http.allow[1].url "http://169.254.169.254/latest/meta-data/*": host 169.254.169.254 is a metadata host, which the node refuses (agents may never reach it)`}
	has(denies_with(patched("/spec/http/allow/1/url", "https://metadata.google.internal/x"), everything), "is a metadata host")
	has(denies_with(patched("/spec/http/allow/1/url", "https://100.100.100.200/x"), everything), "is a metadata host")
	has(denies_with(patched("/spec/http/allow/1/url", "https://169.254.1.1/x"), everything), "is a link-local host")
	has(denies_with(patched("/spec/http/allow/1/url", "https://0.0.0.0/x"), everything), "is a unspecified host")
	has(denies_with(patched("/spec/http/allow/1/url", "https://203.0.113.9/x"), everything), "is a reserved host")
}

test_h3_public_literal_allowed if {
	denies(patched("/spec/http/allow/1/url", "https://93.184.216.34/x")) == set()
}

test_h3_non_canonical_numbers_denied if {
	every u in ["https://2130706433/x", "https://127.1/x", "https://0x7f.0.0.1/x", "https://0177.0.0.1/x", "https://1.2.3.256/x"] {
		has(denies(patched("/spec/http/allow/1/url", u)), "is a numeric address in a non-canonical form")
	}
}

test_h3_ipv6_and_userinfo_denied if {
	has(denies(patched("/spec/http/allow/1/url", "https://[::1]/x")), "IPv6 literals are not accepted")
	has(denies(patched("/spec/http/allow/1/url", "https://user@api.example.com/x")), "user info (user@host) is not allowed")
}

# --- H4 secrets ---------------------------------------------------------------------------------

test_h4_secret_for_unlisted_host_denied if {
	denies(patched("/spec/secrets/0/hosts", ["api.example.com", "evil.example.org"])) == {`spec.secrets[0].hosts[1]: secret "api-key" is bound to host evil.example.org, which no spec.http.allow pattern names; a secret goes only to hosts the agent may call (add the host to spec.http.allow or remove it here)`}
}

test_h4_secret_under_a_wildcard_pattern_allowed if {
	denies(patched("/spec/secrets/0/hosts", ["img.cdn.example.net"])) == set()
	denies(patched("/spec/secrets/0/hosts", ["*.cdn.example.net"])) == set()
	has(denies(patched("/spec/secrets/0/hosts", ["cdn.example.net"])), "which no spec.http.allow pattern names")
}

test_h4_reserved_header_denied if {
	denies(patched("/spec/secrets/0/header", "Host")) == {`spec.secrets[0].header "Host" is set by the host only; choose another header (e.g. Authorization or X-Api-Key)`}
}

test_h4_format_needs_one_value if {
	has(denies(patched("/spec/secrets/0/format", "Bearer")), "must hold {value} exactly once")
	has(denies(patched("/spec/secrets/0/format", "{value}{value}")), "must hold {value} exactly once")
}

test_h4_duplicate_secret_denied if {
	two := patched("/spec/secrets/1", {"name": "api-key", "header": "X-Key", "hosts": ["api.example.com"]})
	denies(two) == {`spec.secrets[1].name "api-key" is declared twice; each secret once, with all its hosts`}
}

# --- H5 limits ----------------------------------------------------------------------------------

test_h5_limits_over_ceilings_denied if {
	d := denies_with(good, object.union(node_http, {"max_requests": 2, "max_response_kib": 64}))
	d == {
		"spec.http.limits.maxRequests is 4, above the node ceiling of 2 (config node.http.max_requests, the runtime's --http-max-requests); lower it to at most 2",
		"spec.http.limits.maxResponseKiB is 128, above the node ceiling of 64 (config node.http.max_response_kib, the runtime's --http-max-response-kib); lower it to at most 64",
	}
}

test_h5_default_limits_judged_too if {
	d := denies_with(without("/spec/http/limits"), object.union(node_http, {"max_requests": 4}))
	d == {"spec.http.limits.maxRequests is 8, above the node ceiling of 4 (config node.http.max_requests, the runtime's --http-max-requests); lower it to at most 4"}
}

# --- H6 missing config --------------------------------------------------------------------------

test_h6_missing_http_config_denies_http_templates if {
	d := denies_with(good, {})
	count(d) == 4
	has(d, "config node.http.max_requests is missing or not a number")
	# and plain http, loopback and private stay refused (absent booleans are false)
	has(denies_with(with_url("http://api.example.com/v1/*"), {}), "is plain http, which the node refuses")
}
