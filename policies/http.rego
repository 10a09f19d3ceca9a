# Template policy, http.fetch part (H1..H6): where may the agent's outbound requests go, with which secrets?
#
# Same package as template.rego (its helpers obj, arr, txt, spec, tools and node_config are shared);
# docs/templates.md (http, secrets) and docs/runtime.md (http.fetch) describe the fields and the tool.
#
# Config: data.agentfactory.config.node.http, the node's settings (the runtime passes its own, see
# sandbox-runtime/cli.py `_node_config`; policies/data.json holds the defaults):
#   allow_plain_http, allow_loopback, allow_private (booleans: absent is false, fail closed),
#   max_requests, max_response_kib, max_request_kib, max_timeout_ms (ceilings over spec.http.limits;
#   a template that declares http is refused while they are missing).
#
# The policy judges names and literal addresses as written: it cannot resolve them, so a name that
# resolves to a refused address passes here and is refused by the node, which judges the resolved
# address of every request (sandbox-runtime/http_resolve.py). What it refuses by name: localhost and
# *.localhost (loopback), single-label names and internal suffixes (private), cloud metadata names
# (never), IPv4 literals by their range, numeric hosts in any other form and IPv6 literals.
package agentfactory.template

import rego.v1

# The parts read, as rules without a function call (rego-cpp evaluates a function again at every call;
# template.rego, the input's parts). http_declared has a default so that it is evaluated once.
default http_declared := false

http_declared if is_object(spec.http)

http_spec := x if {
	http_declared
	x := spec.http
} else := {}

http_secrets := x if {
	x := spec.secrets
	is_array(x)
} else := []

http_allow := x if {
	x := http_spec.allow
	is_array(x)
} else := []

http_limits := x if {
	x := http_spec.limits
	is_object(x)
} else := {}

http_cfg := x if {
	x := node_config.http
	is_object(x)
} else := {}

http_flag(name) if http_cfg[name] == true

# http_flag_at(_, name): http_flag(name), for a rule's loop. rego-cpp evaluates each expression of a
# rule as soon as its variables are bound, so `not http_flag("allow_plain_http")` (no variable) ran
# before the loop over spec.http.allow, at every decision; an argument bound by the loop keeps it there.
http_flag_at(_, name) if http_flag(name)

# http.fetch is in spec.tools (a loop, not `in`: one builtin call less per decision).
default fetch_tool := false

fetch_tool if {
	some t in tools
	t == "http.fetch"
}

# --- H1: spec.http and the http.fetch tool go together ----------------------------------------

deny contains msg if {
	http_declared
	not fetch_tool
	msg := "spec.http: declared, but spec.tools does not list http.fetch; add http.fetch to spec.tools (or remove spec.http)"
}

deny contains msg if {
	fetch_tool
	not http_declared
	msg := "spec.tools lists http.fetch but there is no spec.http: declare the URL patterns it may reach in spec.http.allow"
}

deny contains msg if {
	not http_secrets == []
	not http_declared
	msg := "spec.secrets: declared without spec.http, so no request could carry them; declare the hosts in spec.http.allow"
}

# --- the parts of a URL pattern, read as written (the schema and the loader check the grammar) ----

url_of(rule) := u if {
	u := object.get(obj(rule), "url", null)
	is_string(u)
}

url_scheme(u) := lower(substring(u, 0, indexof(u, "://")))

url_authority(u) := split(split(split(substring(u, indexof(u, "://") + 3, -1), "/")[0], "?")[0], "#")[0]

# host without port or trailing dot, lower-case ("" for an IPv6 literal: H3 reports those)
url_host(u) := h if {
	a := url_authority(u)
	not startswith(a, "[")
	h := trim_suffix(lower(split(a, ":")[0]), ".")
} else := ""

# --- H2: plain http only where the node allows it --------------------------------------------

deny contains msg if {
	some i, rule in http_allow
	u := url_of(rule)
	url_scheme(u) == "http"
	not http_flag_at(u, "allow_plain_http")
	msg := sprintf(`spec.http.allow[%d].url "%s" is plain http, which the node refuses (config node.http.allow_plain_http, the runtime's --http-allow-plain-http); use https`, [i, txt(u)])
}

deny contains msg if {
	some i, rule in http_allow
	u := url_of(rule)
	not url_scheme(u) in {"http", "https"}
	msg := sprintf(`spec.http.allow[%d].url "%s": the scheme must be https (or http where the node allows it)`, [i, txt(u)])
}

deny contains msg if {
	some i, rule in http_allow
	not url_of(rule)
	msg := sprintf("spec.http.allow[%d].url is missing or not a string: write the URL pattern, e.g. https://api.example.com/v1/*", [at(i, rule)])
}

# --- H3: no loopback, private, link-local or metadata hosts unless the node allows them ---------

http_loopback_names := {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}

http_metadata_names := {"metadata", "metadata.google.internal", "metadata.goog", "instance-data", "instance-data.ec2.internal"}

http_private_suffixes := [".internal", ".local", ".lan", ".home.arpa", ".intranet", ".corp", ".private", ".localdomain"]

ipv4_pattern := `^(0|[1-9][0-9]{0,2})\.(0|[1-9][0-9]{0,2})\.(0|[1-9][0-9]{0,2})\.(0|[1-9][0-9]{0,2})$`

ipv4(h) := [to_number(x) | some x in split(h, ".")] if {
	regex.match(ipv4_pattern, h)
	every x in split(h, ".") {
		to_number(x) < 256
	}
}

# a host a resolver may read as an address although it is not a canonical dotted quad: 127.1,
# 2130706433, 0x7f.0.0.1, 0177.0.0.1 (the last label is numeric or hex; no TLD is)
numeric_host(h) if {
	labels := split(trim_prefix(h, "*."), ".")
	regex.match(`^([0-9]+|0x[0-9a-f]*)$`, labels[count(labels) - 1])
	not ipv4(h)
}

in_net(o, a, bits) if {
	n := ((((o[0] * 256) + o[1]) * 256) + o[2]) * 256 + o[3]
	m := ((((a[0] * 256) + a[1]) * 256) + a[2]) * 256 + a[3]
	size := block_size[bits]
	floor(n / size) == floor(m / size)
}

# 2^(32 - prefix length), for the prefix lengths used below (Rego has no power function)
block_size := {4: 268435456, 8: 16777216, 10: 4194304, 12: 1048576, 15: 131072, 16: 65536, 24: 256}

ipv4_metadata := [[169, 254, 169, 254], [169, 254, 170, 2], [169, 254, 169, 253], [100, 100, 100, 200], [168, 63, 129, 16]]

# class of an IPv4 literal, most specific first
ipv4_class(o) := "metadata" if {
	o in ipv4_metadata
} else := "loopback" if {
	in_net(o, [127, 0, 0, 0], 8)
} else := "link-local" if {
	in_net(o, [169, 254, 0, 0], 16)
} else := "unspecified" if {
	in_net(o, [0, 0, 0, 0], 8)
} else := "private" if {
	some net in [[[10, 0, 0, 0], 8], [[172, 16, 0, 0], 12], [[192, 168, 0, 0], 16], [[100, 64, 0, 0], 10]]
	in_net(o, net[0], net[1])
} else := "multicast" if {
	in_net(o, [224, 0, 0, 0], 4)
} else := "reserved" if {
	some net in [[[240, 0, 0, 0], 4], [[192, 0, 0, 0], 24], [[192, 0, 2, 0], 24], [[198, 51, 100, 0], 24], [[203, 0, 113, 0], 24], [[198, 18, 0, 0], 15]]
	in_net(o, net[0], net[1])
} else := "global"

host_class(h) := c if {
	o := ipv4(h)
	c := ipv4_class(o)
} else := "loopback" if {
	h in http_loopback_names
} else := "loopback" if {
	endswith(h, ".localhost")
} else := "metadata" if {
	h in http_metadata_names
} else := "private" if {
	some suffix in http_private_suffixes
	endswith(h, suffix)
} else := "private" if {
	not contains(trim_prefix(h, "*."), ".")
} else := "global"

host_allowed("global") := true

host_allowed("loopback") := true if http_flag("allow_loopback")

host_allowed("private") := true if http_flag("allow_private")

host_setting := {"loopback": "config node.http.allow_loopback, the runtime's --http-allow-loopback", "private": "config node.http.allow_private, the runtime's --http-allow-private"}

deny contains msg if {
	some i, rule in http_allow
	u := url_of(rule)
	h := url_host(u)
	h != ""
	not numeric_host(h)
	c := host_class(h)
	not host_allowed(c)
	why := object.get(host_setting, c, "agents may never reach it")
	msg := sprintf(`spec.http.allow[%d].url "%s": host %s is a %s host, which the node refuses (%s)`, [i, txt(u), txt(h), txt(c), txt(why)])
}

deny contains msg if {
	some i, rule in http_allow
	u := url_of(rule)
	h := url_host(u)
	numeric_host(h)
	msg := sprintf(`spec.http.allow[%d].url "%s": host %s is a numeric address in a non-canonical form (resolvers read it as an address); write a dotted-quad IPv4 address or a host name`, [i, txt(u), txt(h)])
}

deny contains msg if {
	some i, rule in http_allow
	u := url_of(rule)
	startswith(url_authority(u), "[")
	msg := sprintf(`spec.http.allow[%d].url "%s": IPv6 literals are not accepted; use a host name (the node judges every address it resolves to)`, [i, txt(u)])
}

deny contains msg if {
	some i, rule in http_allow
	u := url_of(rule)
	contains(url_authority(u), "@")
	msg := sprintf(`spec.http.allow[%d].url "%s": user info (user@host) is not allowed in a URL pattern`, [i, txt(u)])
}

# --- H4: secrets go only to hosts the agent may call, over https, in a header the host does not own ----

reserved_headers := {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "te", "trailer", "proxy-authorization", "proxy-authenticate", "proxy-connection", "expect", "accept-encoding"}

# (scheme, host[:port]) of every allow pattern, as written
allow_hosts contains [url_scheme(u), lower(url_authority(u))] if {
	some rule in http_allow
	u := url_of(rule)
}

binding_host(b) := lower(trim_suffix(b, "."))

# an allow pattern's authority reaches binding host b: the same host (a binding without port: any port
# of it), or a concrete host under the pattern's wildcard
reaches(authority, b) if authority == b

reaches(authority, b) if {
	not contains(b, ":")
	split(authority, ":")[0] == b
}

reaches(authority, b) if {
	host := split(authority, ":")[0]
	startswith(host, "*.")
	not startswith(b, "*.")
	bh := split(b, ":")[0]
	endswith(bh, substring(host, 1, -1))
	bh != substring(host, 2, -1)
}

deny contains msg if {
	http_declared
	some i, s in http_secrets
	some j, raw in arr(object.get(obj(s), "hosts", null))
	b := binding_host(txt(raw))
	not any_reaches(b)
	msg := sprintf(`spec.secrets[%d].hosts[%d]: secret "%s" is bound to host %s, which no spec.http.allow pattern names; a secret goes only to hosts the agent may call (add the host to spec.http.allow or remove it here)`, [i, j, txt(object.get(obj(s), "name", "?")), txt(raw)])
}

any_reaches(b) if {
	some pair in allow_hosts
	reaches(pair[1], b)
}

deny contains msg if {
	some i, s in http_secrets
	some j, raw in arr(object.get(obj(s), "hosts", null))
	b := binding_host(txt(raw))
	some pair in allow_hosts
	pair[0] != "https"
	reaches(pair[1], b)
	msg := sprintf(`spec.secrets[%d].hosts[%d]: secret "%s" is bound to host %s, which an allow pattern reaches over plain http; secrets are sent over https only`, [i, j, txt(object.get(obj(s), "name", "?")), txt(raw)])
}

deny contains msg if {
	some i, s in http_secrets
	header := object.get(obj(s), "header", "")
	lower(txt(header)) in reserved_headers
	msg := sprintf(`spec.secrets[%d].header "%s" is set by the host only; choose another header (e.g. Authorization or X-Api-Key)`, [i, txt(header)])
}

deny contains msg if {
	some i, s in http_secrets
	f := object.get(obj(s), "format", "{value}")
	not count(split(txt(f), "{value}")) == 2
	msg := sprintf(`spec.secrets[%d].format "%s" must hold {value} exactly once (e.g. "Bearer {value}")`, [i, txt(f)])
}

deny contains msg if {
	some i, s in http_secrets
	n := object.get(obj(s), "name", null)
	some k, t in http_secrets
	k < i
	object.get(obj(t), "name", null) == n
	msg := sprintf(`spec.secrets[%d].name "%s" is declared twice; each secret once, with all its hosts`, [i, txt(n)])
}

# --- H5: limits under the node's ceilings -----------------------------------------------------

http_limit_fields := [
	["maxRequests", "max_requests", 8, "--http-max-requests"],
	["maxResponseKiB", "max_response_kib", 256, "--http-max-response-kib"],
	["maxRequestKiB", "max_request_kib", 64, "--http-max-request-kib"],
	["timeoutMs", "max_timeout_ms", 5000, "--http-max-timeout-ms"],
]

deny contains msg if {
	http_declared
	some f in http_limit_fields
	ceiling := object.get(http_cfg, f[1], null)
	is_number(ceiling)
	value := object.get(http_limits, f[0], f[2])
	is_number(value)
	value > ceiling
	msg := sprintf("spec.http.limits.%s is %v, above the node ceiling of %v (config node.http.%s, the runtime's %s); lower it to at most %v", [f[0], value, ceiling, f[1], f[3], ceiling])
}

# --- H6: the node's http settings must be there to judge a template that uses http ----------------

deny contains msg if {
	http_declared
	some f in http_limit_fields
	not is_number(object.get(http_cfg, f[1], null))
	msg := sprintf("config node.http.%s is missing or not a number (policies/data.json, or the runtime's node config): a template that declares spec.http cannot be judged without it", [f[1]])
}
