"""AdmissionReview `admission.k8s.io/v1`: the request read with limits, the response built to spec.

The API server sends `{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
"request": {...}}` and expects the same apiVersion and kind back with `response.uid` equal to
`request.uid`, `allowed`, and optionally `status` (`code`, `message`) and `warnings`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from agentfactory.errors import InputError

API_VERSION = "admission.k8s.io/v1"
KIND = "AdmissionReview"
MAX_WARNINGS = 20
MAX_WARNING_CHARS = 512  # the API server truncates longer warnings; keep each one readable
MAX_MESSAGE_CHARS = 4096


@dataclass(frozen=True)
class Review:
    uid: str
    operation: str
    namespace: str
    group: str
    version: str
    kind: str
    name: str
    dry_run: bool
    object: dict[str, Any] | None
    old_object: dict[str, Any] | None
    sub_resource: str = ""  # request.subResource: "" for the resource itself, "ephemeralcontainers", …


def parse_review(body: bytes) -> Review:
    """The request of an AdmissionReview; InputError naming the field when it is not one."""
    try:
        doc = json.loads(body)
    except RecursionError:  # the C decoder guards its recursion: a hostile nesting is refused, not a crash
        raise InputError("body", "nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise InputError("body", f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InputError("body", "not a JSON object")
    if doc.get("apiVersion") != API_VERSION or doc.get("kind") != KIND:
        raise InputError("body", f"apiVersion/kind {doc.get('apiVersion')!r}/{doc.get('kind')!r}: expected "
                                 f"{API_VERSION} {KIND} (admissionReviewVersions: [v1])")
    request = doc.get("request")
    if not isinstance(request, dict):
        raise InputError("request", "missing: an AdmissionReview must carry a request")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid or len(uid) > 128:
        raise InputError("request.uid", "missing or not a string of at most 128 characters")
    kind = request.get("kind")
    if not isinstance(kind, dict) or not isinstance(kind.get("kind"), str):
        raise InputError("request.kind", "missing: expected {group, version, kind}")
    operation = request.get("operation")
    if operation not in ("CREATE", "UPDATE", "DELETE", "CONNECT"):
        raise InputError("request.operation", f"{operation!r} is not CREATE, UPDATE, DELETE or CONNECT")
    sub_resource = request.get("subResource")
    if sub_resource is None:
        sub_resource = ""
    if not isinstance(sub_resource, str) or len(sub_resource) > 64:
        raise InputError("request.subResource", "not a string of at most 64 characters")
    obj, old = request.get("object"), request.get("oldObject")
    for name, value in (("request.object", obj), ("request.oldObject", old)):
        if value is not None and not isinstance(value, dict):
            raise InputError(name, "not an object")
    return Review(uid=uid, operation=operation, namespace=str(request.get("namespace") or ""),
                  group=str(kind.get("group") or ""), version=str(kind.get("version") or ""),
                  kind=kind["kind"], name=str(request.get("name") or ""),
                  dry_run=request.get("dryRun") is True, object=obj, old_object=old, sub_resource=sub_resource)


def uid_of(body: bytes) -> str:
    """The request uid of a body that did not parse as a review, when it can be found, else ""."""
    try:
        doc = json.loads(body)
        uid = doc["request"]["uid"]
        return uid if isinstance(uid, str) and len(uid) <= 128 else ""
    except Exception:
        return ""


_REASONS = {400: "BadRequest", 403: "Forbidden", 413: "RequestEntityTooLarge", 422: "Invalid",
            429: "TooManyRequests", 500: "InternalError", 503: "ServiceUnavailable"}  # metav1.StatusReason


def response(uid: str, allowed: bool, *, code: int | None = None, message: str = "",
             warnings: list[str] | None = None) -> dict[str, Any]:
    """The AdmissionReview to send back."""
    resp: dict[str, Any] = {"uid": uid, "allowed": allowed}
    if code is not None or message:
        status: dict[str, Any] = {"code": code or (200 if allowed else 403)}
        reason = _REASONS.get(status["code"])
        if reason and not allowed:  # kubectl prints "(Forbidden)"; clients' IsForbidden() reads it
            status["reason"] = reason
        if message:
            status["message"] = message if len(message) <= MAX_MESSAGE_CHARS else message[:MAX_MESSAGE_CHARS] + "…"
        resp["status"] = status
    if warnings:
        resp["warnings"] = [w if len(w) <= MAX_WARNING_CHARS else w[:MAX_WARNING_CHARS - 1] + "…"
                            for w in warnings[:MAX_WARNINGS]]
    return {"apiVersion": API_VERSION, "kind": KIND, "response": resp}
