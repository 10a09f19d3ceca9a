"""Prometheus metrics (`agent_factory_*`), defined once so that every plane counts the same way.

Services expose them on /metrics; commands count into the default registry too, which costs
nothing when nobody scrapes it.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge

SIGNATURES = Counter(
    "agent_factory_security_signatures_total",
    "Signatures made, by key provider and what was signed.",
    ["provider", "kind"],
)
VALIDATIONS = Counter(
    "agent_factory_security_validations_total",
    "Verifier decisions, by result (allowed or denied).",
    ["result"],
)
VAULT_ROTATIONS = Counter(
    "agent_factory_security_vault_rotations_total",
    "Transit key rotations performed through Agent Factory.",
    ["key"],
)
OPA_BLOCKS = Counter(
    "agent_factory_security_opa_blocks_total",
    "Policy decisions that refused something, by policy (template, artifact).",
    ["policy"],
)
VIOLATIONS = Counter(
    "agent_factory_security_violations_total",
    "Individual policy violations (deny messages), by policy.",
    ["policy"],
)
SCORE = Gauge(
    "agent_factory_security_score",
    "The last security score (out of 10) computed for an agent.",
    ["agent"],
)
