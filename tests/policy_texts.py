"""Small Rego policies shared by the policy-engine tests: the smallest template policy that reads data."""

MINI_TEMPLATE_POLICY = """package agentfactory.template
import rego.v1
default allow := false
allow if count(deny) == 0
deny := violations(input)
violations(inp) := {msg |
    some tool in inp.template.spec.tools
    tool in data.agentfactory.config.dangerous_tools
    msg := sprintf("spec.tools: '%s' is not allowed", [tool])
}
"""
