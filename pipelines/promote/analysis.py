"""Canary analysis: does the digest in the source stage behave well enough to be promoted?

Requests and errors come from the runtime's counter
`agent_factory_wasi_agent_executions_total{agent,digest,stage,namespace,result}` (every result but `ok`
is an error, refusals included); latency from the histogram
`agent_factory_wasi_execution_duration_seconds{agent,digest,stage,namespace}`. Both are selected by
agent, digest *and stage*: right after dev -> canary, dev runs the same digest, and its traffic must not
dilute (or condemn) the canary's. A series of the agent and digest without a stage label (a runtime too
old to say where it runs) makes the metrics unavailable rather than counted.

Two sources answer the same question: `RuntimeMetrics` scrapes the nodes' own /metrics before and
after a window it waits through (no Prometheus needed), `PrometheusMetrics` asks a Prometheus about a
window that has already passed. Anything unclear on the way (unreachable, slow, oversized, malformed,
an error answer) is `MetricsUnavailable`, and the caller fails closed: no promotion.
"""

from __future__ import annotations

import abc
import json
import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx
from prometheus_client.parser import text_string_to_metric_families

from agentfactory.errors import AgentFactoryError, ConfigError, InputError

EXECUTIONS = "agent_factory_wasi_agent_executions"  # the counter's family name (samples end in _total)
DURATION = "agent_factory_wasi_execution_duration_seconds"
OK = "ok"
QUANTILE = 0.95
MAX_RESPONSE = 8 * 1024 * 1024
# How far before the window PrometheusMetrics looks for a counter's last value; a series with no
# sample there was born inside the window (a new digest) and counts from zero.
BASELINE_LOOKBACK_SECONDS = 3600.0

_AGENT = re.compile(r"^[a-z0-9][a-z0-9._-]{0,127}$")
_STAGE = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
_WINDOW = re.compile(r"^(?:(\d{1,6})h)?(?:(\d{1,6})m)?(?:(\d{1,6})s)?$")
VERDICTS = ("pass", "fail", "inconclusive")


class MetricsUnavailable(AgentFactoryError):
    """The metrics could not be read or trusted (unreachable, timeout, bad answer): do not promote."""


@dataclass(frozen=True)
class Thresholds:
    """What a canary must stay within; fewer than `min_requests` requests is too little to judge."""

    max_error_ratio: float = 0.05
    max_p95_seconds: float | None = None
    min_requests: int = 20

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_error_ratio <= 1.0:
            raise InputError("max_error_ratio", f"{self.max_error_ratio}: must be from 0 to 1")
        if self.max_p95_seconds is not None and not (self.max_p95_seconds > 0 and math.isfinite(self.max_p95_seconds)):
            raise InputError("max_p95_seconds", f"{self.max_p95_seconds}: must be a positive number of seconds")
        if isinstance(self.min_requests, bool) or not isinstance(self.min_requests, int) or self.min_requests < 1:
            raise InputError("min_requests", f"{self.min_requests!r}: must be a positive integer")

    def to_json(self) -> dict[str, Any]:
        return {"maxErrorRatio": self.max_error_ratio, "maxP95Seconds": self.max_p95_seconds,
                "minRequests": self.min_requests}


@dataclass(frozen=True)
class Measurement:
    """What one agent digest did during one window, summed over every node."""

    requests: float  # floats: Prometheus answers in floats, and a sum over nodes need not be small
    errors: float
    p95_seconds: float | None  # None: no latency observation in the window
    source: str
    window_seconds: float
    by_result: dict[str, float] = field(default_factory=dict)

    @property
    def error_ratio(self) -> float | None:
        """Errors per request; None without requests (nothing to divide, nothing to judge)."""
        return self.errors / self.requests if self.requests > 0 else None

    def to_json(self) -> dict[str, Any]:
        return {"source": self.source, "windowSeconds": self.window_seconds, "requests": self.requests,
                "errors": self.errors, "errorRatio": self.error_ratio, "p95Seconds": self.p95_seconds,
                "byResult": dict(self.by_result)}


@dataclass(frozen=True)
class Analysis:
    """The verdict: pass (promote), fail (roll back) or inconclusive (too little traffic: neither)."""

    verdict: str
    measurement: Measurement
    thresholds: Thresholds
    reasons: list[str]  # one line per threshold: measured value against its limit

    def to_json(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "reasons": list(self.reasons), "measurement": self.measurement.to_json(),
                "thresholds": self.thresholds.to_json()}


class MetricsSource(abc.ABC):
    """Where measurements come from; `name` says which kind in reports."""

    name: str

    @abc.abstractmethod
    def measure(self, agent: str, digest: str, window_seconds: float, stage: str) -> Measurement:
        """Requests, errors and p95 of `agent`@`digest` on the nodes of `stage` over `window_seconds`;
        MetricsUnavailable if unsure."""


def analyze(source: MetricsSource, agent: str, digest: str, window_seconds: float,
            thresholds: Thresholds, *, stage: str) -> Analysis:
    """Measure `agent`@`digest` in `stage` only, then judge against every threshold, so that a report
    names each limit and its value."""
    _check_target(agent, digest, window_seconds, stage)
    m = source.measure(agent, digest, window_seconds, stage)
    reasons: list[str] = []
    enough = m.requests >= thresholds.min_requests
    reasons.append(f"requests: {_num(m.requests)} in {_num(m.window_seconds)} s"
                   + (f" (at least {thresholds.min_requests} needed)" if enough else
                      f", fewer than the {thresholds.min_requests} needed to judge"))
    ratio = m.error_ratio
    breakdown = ", ".join(f"{k}={_num(v)}" for k, v in sorted(m.by_result.items()) if k != OK and v > 0)
    failed = False
    if ratio is None:
        reasons.append(f"error ratio: no requests (limit {_pct(thresholds.max_error_ratio)})")
    else:
        over = ratio > thresholds.max_error_ratio
        failed |= over
        reasons.append(f"error ratio: {_pct(ratio)} ({_num(m.errors)} of {_num(m.requests)}"
                       f"{': ' + breakdown if breakdown else ''}) {'>' if over else '<='} "
                       f"limit {_pct(thresholds.max_error_ratio)}")
    latency_unknown = False
    if thresholds.max_p95_seconds is not None:
        if m.p95_seconds is None:
            latency_unknown = True
            reasons.append(f"p95 latency: no observations (limit {_num(thresholds.max_p95_seconds)} s)")
        else:
            over = m.p95_seconds > thresholds.max_p95_seconds
            failed |= over
            reasons.append(f"p95 latency: {_num(m.p95_seconds)} s {'>' if over else '<='} "
                           f"limit {_num(thresholds.max_p95_seconds)} s")
    if not enough:
        verdict = "inconclusive"  # a handful of requests can neither condemn nor clear a digest
    elif failed:
        verdict = "fail"
    elif latency_unknown:
        verdict = "inconclusive"  # a latency limit nobody measured is not met
    else:
        verdict = "pass"
    return Analysis(verdict, m, thresholds, reasons)


def parse_window(text: str) -> float:
    """'30s', '5m', '1h', '1h30m' to seconds: the one spelling of durations in flags and stages.yaml."""
    match = _WINDOW.match(text) if isinstance(text, str) else None
    if not text or match is None:
        raise InputError("window", f"{text!r}: write a duration such as 30s, 5m, 1h or 1h30m")
    h, m, s = (int(g) if g else 0 for g in match.groups())
    return float(h * 3600 + m * 60 + s)


# -- the runtime's own /metrics -----------------------------------------------------------------------
@dataclass
class _Snapshot:
    """One scrape of one node: the target's counters and the agent's latency buckets, with their birth times."""

    started: float | None  # process_start_time_seconds: a new value means the node restarted
    counts: dict[str, tuple[float, float | None]]  # result -> (value, created)
    buckets: dict[float, float]  # le -> cumulative count
    buckets_created: float | None


class RuntimeMetrics(MetricsSource):
    """Scrape every node at the start and at the end of a window and take the difference.

    Needs nothing but the nodes, and measures the future: `measure` waits `window_seconds`. A
    counter that went down, or was born again, belongs to a restarted node and counts from zero.
    """

    name = "runtime"

    def __init__(self, urls: list[str], *, timeout: float = 5.0,
                 sleep: Callable[[float], None] = time.sleep,
                 progress: Callable[[Measurement, float], None] | None = None, progress_every: float = 1.0) -> None:
        """`progress(so_far, seconds_left)`, when given, is told what the window has seen every
        `progress_every` seconds (one more scrape of every node each time), for a person watching."""
        if not urls:
            raise ConfigError("runtime metrics: give at least one node URL (http://NODE:PORT)")
        self.urls = [_metrics_url(u) for u in urls]
        self.timeout = timeout
        self.sleep = sleep
        self.progress = progress
        self.progress_every = progress_every

    def measure(self, agent: str, digest: str, window_seconds: float, stage: str) -> Measurement:
        _check_target(agent, digest, window_seconds, stage)
        source = f"runtime /metrics of {', '.join(self.urls)} (stage {stage})"
        with _client(self.timeout) as client:
            before = [self._scrape(client, url, agent, digest, stage) for url in self.urls]
            if self.progress is None:
                self.sleep(window_seconds)
            else:
                end = time.monotonic() + window_seconds
                while (left := end - time.monotonic()) > 0:
                    self.sleep(min(self.progress_every, left))
                    now = [self._scrape(client, url, agent, digest, stage) for url in self.urls]
                    self.progress(self._difference(before, now, source, window_seconds),
                                  max(0.0, end - time.monotonic()))
            after = [self._scrape(client, url, agent, digest, stage) for url in self.urls]
        return self._difference(before, after, source, window_seconds)

    @staticmethod
    def _difference(before: list[_Snapshot], after: list[_Snapshot], source: str, window_seconds: float) -> Measurement:
        """What every node counted between two scrapes (a restarted node from zero)."""
        by_result: dict[str, float] = {}
        buckets: dict[float, float] = {}
        for old, new in zip(before, after, strict=True):
            restarted = old.started is not None and new.started is not None and new.started != old.started
            for result, (value, created) in new.counts.items():
                prev = old.counts.get(result)
                delta = _delta(prev[0] if prev else 0.0, value,
                               restarted or (prev is not None and prev[1] != created))
                by_result[result] = by_result.get(result, 0.0) + delta
            reborn = restarted or old.buckets_created != new.buckets_created
            for le, value in new.buckets.items():
                buckets[le] = buckets.get(le, 0.0) + _delta(old.buckets.get(le, 0.0), value, reborn)
        return _measurement(by_result, quantile(QUANTILE, buckets), source, window_seconds)

    def _scrape(self, client: httpx.Client, url: str, agent: str, digest: str, stage: str) -> _Snapshot:
        _, body = _get(client, url, {}, self.timeout)
        try:
            text = body.decode("utf-8")
            families = list(text_string_to_metric_families(text))
        except Exception as exc:  # the parser raises what it likes on hostile text; all of it means "bad answer"
            raise MetricsUnavailable(f"{url}: not Prometheus text exposition: {type(exc).__name__}: {exc}") from None
        names = {f.name for f in families}
        for needed in (EXECUTIONS, DURATION):
            if needed not in names:
                raise MetricsUnavailable(f"{url}: no {needed} metric: not an Agent Factory runtime, or one too "
                                         "old for canary analysis")
        snap = _Snapshot(None, {}, {}, None)
        created: dict[str, float] = {}
        for family in families:
            for s in family.samples:
                labels = s.labels
                if family.name == "process_start_time_seconds":
                    snap.started = s.value
                elif family.name in (EXECUTIONS, DURATION) and labels.get("agent") == agent \
                        and labels.get("digest") in (digest, None):
                    if "stage" not in labels or "digest" not in labels:
                        raise MetricsUnavailable(f"{url}: {s.name} of {agent} has no stage or digest label: a "
                                                 "runtime too old for canary analysis (its traffic could be any "
                                                 "stage's)")
                    if labels["stage"] != stage:
                        continue  # another stage's traffic with the same digest: not the canary's
                    if family.name == EXECUTIONS:
                        result = labels.get("result", "")
                        if s.name.endswith("_created"):
                            created[result] = created.get(result, s.value)
                        elif s.name.endswith("_total"):
                            prev = snap.counts.get(result, (0.0, None))[0]
                            snap.counts[result] = (prev + _finite(s.value, url, s.name), None)
                    elif s.name.endswith("_bucket"):
                        le = _le(labels.get("le"), url)
                        snap.buckets[le] = snap.buckets.get(le, 0.0) + _finite(s.value, url, s.name)
                    elif s.name.endswith("_created"):
                        snap.buckets_created = s.value
        snap.counts = {r: (v, created.get(r)) for r, (v, _) in snap.counts.items()}
        return snap


# -- Prometheus ---------------------------------------------------------------------------------------
class PrometheusMetrics(MetricsSource):
    """Ask a Prometheus that scrapes the nodes about the window that just ended: no waiting.

    Counts are exact: the raw counter samples of the window, continued from each series' last value
    before it (none: a series born in the window, counted from zero), resets counted from zero, with
    no extrapolation (`increase()` would scale them to the window's edges and miss a new digest's
    first sample). The p95 is Prometheus' own `histogram_quantile` over `increase()` of the buckets.
    Raw samples cost one per scrape per node and result: a window so long for the scrape interval that
    the answer passes 8 MiB is MetricsUnavailable (shorten the window).
    """

    name = "prometheus"

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            raise ConfigError(f"prometheus URL {url!r}: write http(s)://HOST:PORT[/PREFIX]")
        self.url = url.rstrip("/")
        self.timeout = timeout

    def measure(self, agent: str, digest: str, window_seconds: float, stage: str) -> Measurement:
        _check_target(agent, digest, window_seconds, stage)
        at = time.time()
        window = _duration(window_seconds)
        selector = f"agent={_quote(agent)},digest={_quote(digest)},stage={_quote(stage)}"
        counter = f'{EXECUTIONS}_total{{{selector}}}'
        with _client(self.timeout) as client:
            samples = self.query(f"{counter}[{window}]", at=at, kind="matrix", client=client)
            baseline = self.query(f"last_over_time({counter}[{_duration(BASELINE_LOOKBACK_SECONDS)}] "
                                  f"offset {window})", at=at, client=client)
            p95 = self.query(f"histogram_quantile({QUANTILE}, sum by (le) "
                             f"(increase({DURATION}_bucket{{{selector}}}[{window}])))", at=at,
                             client=client)
        name = f"{EXECUTIONS}_total"
        before = {_series_key(r["metric"]): _finite(_sample(r.get("value"), self.url)[1], self.url, name)
                  for r in baseline}
        by_result: dict[str, float] = {}
        for r in samples:
            result = r["metric"].get("result", "")
            values = [_finite(_sample(p, self.url)[1], self.url, name)
                      for p in _list(r.get("values"), self.url, "values")]
            prev = before.get(_series_key(r["metric"]), 0.0)
            total = 0.0
            for v in values:
                total += _delta(prev, v, False)
                prev = v
            by_result[result] = by_result.get(result, 0.0) + total
        latency = None
        if p95:
            value = _sample(p95[0].get("value"), self.url)[1]
            latency = value if math.isfinite(value) else None  # NaN: no observations in the window
        return _measurement(by_result, latency, f"prometheus {self.url} (stage {stage})", window_seconds)

    def query(self, expr: str, *, at: float, kind: str = "vector",
              client: httpx.Client | None = None) -> list[dict[str, Any]]:
        """The result list of an instant query at `at`; MetricsUnavailable unless it is of type `kind`."""
        if client is None:
            with _client(self.timeout) as own:
                return self.query(expr, at=at, kind=kind, client=own)
        url = f"{self.url}/api/v1/query"
        status, body = _get(client, url, {"query": expr, "time": f"{at:.3f}"}, self.timeout, error_ok=True)
        http = f"HTTP {status}, " if status != 200 else ""
        try:
            doc = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise MetricsUnavailable(f"{url}: not a Prometheus API answer ({http}not JSON: {exc})") from None
        if not isinstance(doc, dict) or doc.get("status") not in ("success", "error"):
            raise MetricsUnavailable(f"{url}: not a Prometheus API answer ({http}no status)")
        if doc["status"] == "error":
            raise MetricsUnavailable(f"{url}: query {expr!r} failed: {doc.get('errorType', 'error')}: "
                                     f"{doc.get('error', '(no message)')}")
        data = doc.get("data")
        if not isinstance(data, dict) or data.get("resultType") != kind:
            got = data.get("resultType") if isinstance(data, dict) else None
            raise MetricsUnavailable(f"{url}: query {expr!r} answered {got!r} data, not a {kind}")
        results = _list(data.get("result"), url, "result")
        for r in results:
            if not isinstance(r, dict) or not isinstance(r.get("metric"), dict) or \
                    not all(isinstance(k, str) and isinstance(v, str) for k, v in r["metric"].items()):
                raise MetricsUnavailable(f"{url}: query {expr!r}: a result without a proper metric label set")
        return results


# -- shared helpers -----------------------------------------------------------------------------------
def quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """`histogram_quantile` as Prometheus computes it: linear interpolation inside the bucket holding
    rank q·count (the lowest bucket starts at 0; rank in +Inf answers the highest finite bound).
    None without observations or without a +Inf bucket."""
    if math.inf not in buckets or len(buckets) < 2:
        return None
    bounds = sorted(buckets)
    counts: list[float] = []
    for le in bounds:  # Prometheus forces cumulative counts to be monotonic (scrape skew across nodes)
        counts.append(max(buckets[le], counts[-1] if counts else 0.0))
    total = counts[-1]
    if total <= 0:
        return None
    rank = q * total
    b = next(i for i, c in enumerate(counts) if c >= rank)
    if b == len(bounds) - 1:
        return bounds[-2]
    if b == 0 and bounds[0] <= 0:
        return bounds[0]
    start, below = (0.0, 0.0) if b == 0 else (bounds[b - 1], counts[b - 1])
    return start + (bounds[b] - start) * ((rank - below) / (counts[b] - below))


def _measurement(by_result: dict[str, float], p95: float | None, source: str, window: float) -> Measurement:
    kept = {k: v for k, v in sorted(by_result.items()) if v > 0}
    requests = sum(kept.values())
    errors = sum(v for k, v in kept.items() if k != OK)
    return Measurement(requests, errors, p95, source, window, kept)


def _delta(before: float, after: float, reset: bool) -> float:
    """A counter's increase; when it restarted (or went down, which only a restart does) from zero."""
    return after if reset or after < before else after - before


def _check_target(agent: str, digest: str, window_seconds: float, stage: str) -> None:
    if not isinstance(stage, str) or not _STAGE.match(stage):
        raise InputError("stage", f"{stage!r}: not a stage name (the analysis reads one stage's traffic only)")
    if not isinstance(agent, str) or not _AGENT.match(agent):
        raise InputError("agent", f"{agent!r}: not an agent name")
    if not isinstance(digest, str) or not _DIGEST.match(digest):
        raise InputError("digest", f"{digest!r}: write sha256:<64 hex digits>")
    if not (window_seconds > 0 and math.isfinite(window_seconds)):
        raise InputError("window", f"{window_seconds}: the analysis window must be a positive number of seconds")


def _client(timeout: float) -> httpx.Client:
    return httpx.Client(timeout=timeout, follow_redirects=False)


def _get(client: httpx.Client, url: str, params: dict[str, str], timeout: float, *,
         error_ok: bool = False) -> tuple[int, bytes]:
    """Status and body of GET `url`: at most MAX_RESPONSE bytes, within `timeout` in all (not per read).
    Anything but 200 is MetricsUnavailable, unless `error_ok` and the answer is JSON (an API error)."""
    deadline = time.monotonic() + timeout
    try:
        with client.stream("GET", url, params=params) as response:
            # Prometheus answers its errors as JSON with 4xx/5xx: the caller reads the message.
            if response.status_code != 200 and not (error_ok and response.headers.get("content-type", "")
                                                    .startswith("application/json")):
                raise MetricsUnavailable(f"{url}: HTTP {response.status_code} {response.reason_phrase}")
            declared = response.headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > MAX_RESPONSE:
                raise MetricsUnavailable(f"{url}: answer of {declared} bytes, more than the "
                                         f"{MAX_RESPONSE // (1024 * 1024)} MiB limit")
            chunks: list[bytes] = []
            size = 0
            for chunk in response.iter_bytes():
                size += len(chunk)
                if size > MAX_RESPONSE:
                    raise MetricsUnavailable(f"{url}: answer larger than the {MAX_RESPONSE // (1024 * 1024)} MiB "
                                             "limit")
                if time.monotonic() > deadline:
                    raise MetricsUnavailable(f"{url}: no complete answer within {timeout:g} s")
                chunks.append(chunk)
            return response.status_code, b"".join(chunks)
    except httpx.TimeoutException:
        raise MetricsUnavailable(f"{url}: no answer within {timeout:g} s") from None
    except httpx.HTTPError as exc:
        raise MetricsUnavailable(f"{url}: unreachable: {type(exc).__name__}: {exc}") from None


def _metrics_url(url: str) -> str:
    """A node's base URL (or its /metrics URL) as the /metrics URL."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise ConfigError(f"runtime metrics URL {url!r}: write http(s)://HOST:PORT")
    return url if parts.path.rstrip("/").endswith("/metrics") else url.rstrip("/") + "/metrics"


def _finite(value: float, url: str, name: str) -> float:
    if not math.isfinite(value) or value < 0:
        raise MetricsUnavailable(f"{url}: {name} is {value}, not a count")
    return value


def _le(text: str | None, url: str) -> float:
    try:
        bound = float(text)  # type: ignore[arg-type]  # None is caught below, with the message for it
    except (TypeError, ValueError):
        raise MetricsUnavailable(f"{url}: bucket bound le={text!r} is not a number") from None
    if math.isnan(bound):
        raise MetricsUnavailable(f"{url}: bucket bound le={text!r} is not a number")
    return bound


def _list(value: Any, url: str, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise MetricsUnavailable(f"{url}: {what} is not a list")
    return value


def _sample(pair: Any, url: str) -> tuple[float, float]:
    """A Prometheus API [timestamp, "value"] pair, strictly."""
    if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[0], int | float)
            and not isinstance(pair[0], bool) and isinstance(pair[1], str)):
        raise MetricsUnavailable(f"{url}: sample {pair!r} is not [timestamp, \"value\"]")
    try:
        return float(pair[0]), float(pair[1])
    except ValueError:
        raise MetricsUnavailable(f"{url}: sample value {pair[1]!r} is not a number") from None


def _series_key(metric: Mapping[str, str]) -> frozenset[tuple[str, str]]:
    return frozenset((k, v) for k, v in metric.items() if k != "__name__")


def _quote(value: str) -> str:
    """A PromQL string literal (the inputs are validated already; this keeps it true if that changes)."""
    return json.dumps(value)


def _duration(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:.4g}"


def _pct(ratio: float) -> str:
    return f"{ratio * 100:.2f}%"
