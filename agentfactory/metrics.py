"""Prometheus metrics (`agent_factory_*`), defined once so that every plane counts the same way.

Services expose them on /metrics; commands count into the default registry too, which costs
nothing when nobody scrapes it.
"""

from __future__ import annotations

import os
from typing import Generic, TypeVar

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

M = TypeVar("M", bound=MetricWrapperBase)


class LabelCache(Generic[M]):
    """One labelled metric's children by label values, for a request path.

    `metric.labels(...)` checks the names, converts every value and takes the metric's lock on each call
    (about 5 µs); the node runtime asks for the same few children several times per invocation. The
    metric keeps every child it ever made, so a cached child is always the one `labels` would return;
    the cache is bounded anyway (cleared when full) since label values can come from agents' names.
    """

    MAX = 4096

    def __init__(self, metric: M) -> None:
        self.metric = metric
        self._children: dict[tuple[str, ...], M] = {}

    def get(self, *values: str) -> M:
        """The child for `values`, in the metric's label order."""
        child = self._children.get(values)
        if child is None:
            child = self.metric.labels(*values)
            if len(self._children) >= self.MAX:
                self._children.clear()
            self._children[values] = child
        return child

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
    multiprocess_mode="mostrecent",  # several worker processes (admission serve --workers): the latest wins
)

# -- the node runtime ------------------------------------------------------------------------------
_FAST = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

WASI_EXECUTIONS = Counter(
    "agent_factory_wasi_executions_total",
    "Agent invocations by result: ok, error (non-zero exit), timeout, memory, stack, output, fuel, trap, refused.",
    ["result"],
)
# The node's stage and namespace are labels of what canary analysis reads: a digest runs in dev and in
# canary at once right after a promotion, and only the canary's traffic may judge the canary.
NAMESPACE_ENV = "AGENTFACTORY_NAMESPACE"


def node_namespace() -> str:
    """The namespace this node serves (`$AGENTFACTORY_NAMESPACE`, set from the pod's namespace by the
    downward API in deploy/runtime/daemonset.yaml); empty outside Kubernetes."""
    return os.environ.get(NAMESPACE_ENV, "")


WASI_AGENT_EXECUTIONS = Counter(
    "agent_factory_wasi_agent_executions_total",
    "Agent invocations by agent, digest, the node's stage and namespace, and result (what canary analysis reads).",
    ["agent", "digest", "stage", "namespace", "result"],
)
WASI_VIOLATIONS = Counter(
    "agent_factory_wasi_security_violations_total",
    "What the runtime stopped or refused, by reason (unverified, bad-module, undeclared-tool, host-path, "
    "timeout, memory, stack, output, fuel, cache-tampered).",
    ["reason"],
)
WASI_OVERHEAD = Histogram(
    "agent_factory_wasi_sandbox_overhead",
    "Seconds spent outside the guest per invocation (resolve, verify, sandbox set-up, output).",
    buckets=_FAST,
)
WASI_DURATION = Histogram(
    "agent_factory_wasi_execution_duration_seconds",
    "Wall-clock seconds per invocation, guest and sandbox together, by agent, digest, the node's stage and "
    "namespace.",
    ["agent", "digest", "stage", "namespace"],
    buckets=_FAST,
)
WASI_HTTP_REQUESTS = Counter(
    "agent_factory_wasi_http_requests_total",
    "Outbound requests agents made through the host's http.fetch tool (each redirect hop counts), by agent, host "
    "(the matched allow pattern's host, '-' when none matched: bounded by the run contracts, never the URL) and "
    "code (the HTTP status, or the refusal reason: not-allowed, address, plain-http, too-large, …).",
    ["agent", "host", "code"],
)
RUNTIME_REQUESTS = Counter(
    "agent_factory_runtime_requests_total",
    "Data-plane HTTP requests to the node runtime, by endpoint and status code.",
    ["endpoint", "code"],
)
MODULE_CACHE = Counter(
    "agent_factory_wasi_module_cache_total",
    "Compiled-module lookups by where the module came from: memory, disk or compiled (a miss).",
    ["source"],
)

# -- the admission webhook -------------------------------------------------------------------------
CONTROL_PLANE_REQUESTS = Counter(
    "agent_factory_control_plane_requests_total",
    "Admission reviews answered, by decision: allowed, denied, warned (allowed with warnings), skipped "
    "(not an agent, exempt namespace, DELETE), error (a malformed review).",
    ["decision"],
)
CONTROL_PLANE_LATENCY = Histogram(
    "agent_factory_control_plane_request_duration_seconds",
    "Seconds to answer one admission review, from the body read to the response.",
    buckets=_FAST,
)
ADMISSION_CACHE = Counter(
    "agent_factory_control_plane_verdict_cache_total",
    "Verdict lookups by the webhook: hit, negative-hit (a cached refusal), miss, coalesced (waited for an "
    "identical verification already running).",
    ["result"],
)
