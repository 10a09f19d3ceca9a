"""The HTTPS service: `POST /validate` (enforce), `POST /validate/warn`, `/healthz`, `/readyz`, `/metrics`.

Fail closed without ever answering 500: a body that is too large, slow, malformed or not a review, an
internal error and the internal deadline (below the webhook's timeoutSeconds) each answer an
AdmissionReview with `allowed: false` and the reason, so the API server shows the user why.

The two review routes are served by `WebhookApp` straight from ASGI: every review the API server sends goes
through them, and FastAPI's router, middleware stack, Request and Response objects cost about as much CPU as
judging a cached review (profiled under load). Everything else (health, readiness, metrics, a wrong method)
is FastAPI's.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

from fastapi import FastAPI
from fastapi.responses import PlainTextResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.concurrency import run_in_threadpool

from agentfactory.audit import AuditError
from agentfactory.errors import InputError
from agentfactory.httpserve import BodyTooLarge, Receive, Scope, Send, read_asgi_body, route_path, send_body
from agentfactory.metrics import CONTROL_PLANE_LATENCY, CONTROL_PLANE_REQUESTS, LabelCache

from .decide import Admitter, Answer, NotCached, Reach
from .review import parse_review, response, uid_of

_DECISIONS = LabelCache(CONTROL_PLANE_REQUESTS)  # the children by decision, not labels() on every review


# One encoder for every answer: json.dumps with options builds a new encoder per call, on the request path.
_ENCODE = json.JSONEncoder(separators=(",", ":")).encode
_MODES = {"/validate": "enforce", "/validate/warn": "warn"}


class WebhookApp:
    """The ASGI app `admission serve` runs: POST /validate and /validate/warn here, everything else by `api`."""

    def __init__(self, admitter: Admitter, api: FastAPI, inline_decisions: bool) -> None:
        self.admitter = admitter
        self.api = api
        self.fast = Reach.NO_IO if inline_decisions else Reach.MEMOISED
        self.deadline = admitter.config.deadline_ms / 1000

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        mode = _MODES.get(route_path(scope)) if scope["type"] == "http" else None
        if mode is None:
            await self.api(scope, receive, send)
        elif scope["method"] != "POST":
            await send_body(send, 405, b'{"detail":"Method Not Allowed"}', [(b"allow", b"POST")])
        elif (doc := await self._validate(scope, receive, mode)) is not None:
            await send_body(send, 200, _ENCODE(doc).encode())

    async def _validate(self, scope: Scope, receive: Receive, mode: str) -> dict[str, Any] | None:
        """The AdmissionReview answer for one request; None when the client went away before sending it all."""
        started = time.perf_counter()
        config = self.admitter.config
        body = b""
        try:
            async with asyncio.timeout(self.deadline):
                received = await read_asgi_body(scope, receive, config.max_request_bytes)
            if received is None:
                return None
            body = received
            review = parse_review(body)
        except BodyTooLarge:
            return _deny("error", started, "", 413, f"the review is larger than {config.max_request_bytes} bytes "
                         "(config maxRequestBytes); denied")
        except TimeoutError:
            return _deny("error", started, "", 408, f"the review body did not arrive within {config.deadline_ms} ms; "
                         "denied")
        except InputError as exc:
            return _deny("error", started, uid_of(body), 400, f"not a valid AdmissionReview: {exc}; denied")
        try:
            try:  # answered here, on the event loop, when it needs no I/O: no thread hand-off (~0.1 ms, and jitter)
                answer: Answer = self.admitter.judge(review, mode, reach=self.fast)
            except NotCached:
                async with asyncio.timeout(self.deadline):
                    answer = await run_in_threadpool(self.admitter.judge, review, mode)
        except TimeoutError:  # the judgement goes on in its thread and fills the caches; it records nothing
            answer = Answer(False, 504, f"verification did not finish within the webhook's internal deadline of "
                            f"{config.deadline_ms} ms (config deadlineMs); denied (fail closed) — retry: the verdict "
                            "is being cached", decision="denied")
        except Exception as exc:  # fail closed on the unforeseen, with the reason
            answer = Answer(False, 500, f"internal error while judging: {type(exc).__name__}: {exc}; denied (fail "
                            "closed)", decision="denied")
        try:  # the record of the answer actually sent: a judgement that outlived the deadline is not it
            client = scope.get("client")
            self.admitter.record(review, mode, answer, peer=str(client[0]) if client else "")
        except AuditError as exc:
            return _deny("denied", started, review.uid, 503, f"the audit trail cannot be written, so nothing is "
                         f"admitted: {exc}")
        if not answer.allowed and answer.code in (500, 504):
            return _deny(answer.decision, started, review.uid, answer.code, answer.message)
        _DECISIONS.get(answer.decision).inc()
        CONTROL_PLANE_LATENCY.observe(time.perf_counter() - started)
        return response(review.uid, answer.allowed, code=answer.code if not answer.allowed else None,
                        message=answer.message if not answer.allowed else "", warnings=answer.warnings)


def _deny(decision: str, started: float, uid: str, code: int, message: str) -> dict[str, Any]:
    _DECISIONS.get(decision).inc()
    CONTROL_PLANE_LATENCY.observe(time.perf_counter() - started)
    return response(uid, False, code=code, message=message)


def _registry() -> CollectorRegistry:
    """What /metrics reports: this process's metrics, or under `serve --workers` (PROMETHEUS_MULTIPROC_DIR set
    by the supervisor) every worker's, summed, whichever worker the scrape reaches."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry


def create_app(admitter: Admitter, *, inline_decisions: bool = False) -> WebhookApp:
    """The webhook app. What needs no I/O is answered on the event loop: cache hits always, and with
    `inline_decisions` also an admission.rego evaluation whose verdict is cached (`admission serve` sets it when
    its threads share one CPU, where a worker thread would add a hop and no parallelism). Everything else runs
    in a worker thread under the deadline."""
    app = FastAPI(title="agentfactory admission", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.ready = True

    @app.get("/healthz")
    async def healthz() -> PlainTextResponse:
        return PlainTextResponse("ok\n")

    @app.get("/readyz")
    async def readyz() -> PlainTextResponse:
        ok = bool(app.state.ready) and not admitter.engine_broken()
        return PlainTextResponse("ready\n" if ok else "policies do not load\n", status_code=200 if ok else 503)

    registry = _registry()

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return WebhookApp(admitter, app, inline_decisions)
