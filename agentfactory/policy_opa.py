"""The policy-engine port backed by an OPA server: decisions through OPA's REST API, failing closed.

Operators who already run OPA load the policies into it as a bundle (agentfactory/policy_bundle.py,
`opa run --server bundle.tar.gz`) and point the planes at it (`--policy-engine opa --opa-url URL`).
A decision is one `POST {url}/v1/data/agentfactory/<policy>/decision` with `{"input": …}` (the
`decision` rule of each policy: allow, deny and, for admission, warn), asking for the bundle's
provenance and strict builtin errors, as RegoEngine evaluates.

The answer is read as strictly as RegoEngine reads rego-cpp's: `allow` must be the JSON `true`,
`deny` (and `warn`) arrays of strings, nothing else in the document, no key twice, no NaN; and it
must come from the bundle this engine expects. Anything else denies, saying why: the server down,
slow (a total deadline per request, headers and body included), a status other than 200, a body
that is not JSON or larger than `max_answer_bytes`, an undefined decision, or another revision.

What "the bundle this engine expects" means: the revision of the local policies folder
(policy_bundle.policy_revision: the policies and data.json), and a server whose data.agentfactory
.config equals the local one with this engine's `config` overrides applied. The overrides are never
sent: an OPA server is shared, so a per-command setting pushed into its data would change every
client's decisions, and one passed in the input would let whoever builds an input relax the gate.
A command whose overrides (`--fail-on`, a node's own limits) differ from the server's data is
refused, naming the setting, until the bundle's data.json holds it (docs/policy.md).
"""

from __future__ import annotations

import http.client
import io
import json
import math
import os
import socket
import ssl
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .policy import (
    WARN_POLICIES,
    Decision,
    PolicyEngine,
    PolicyError,
    TestReport,
    TestResult,
    default_policy_dir,
    load_policy_data,
    refused_up_front,
)
from .policy_bundle import BUNDLE_ROOT, policy_revision

DEFAULT_OPA_URL = "http://localhost:8181"
DEFAULT_TIMEOUT_S = 5.0
MAX_ANSWER_BYTES = 16 * 1024 * 1024
_READ_CHUNK = 64 * 1024


class OPAAnswerError(Exception):
    """The server's answer cannot be trusted as a decision; the message says why (it denies)."""


class _Deadline:
    """One request's time budget: every connect, send and receive gets only what is left of it."""

    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds
        self.seconds = seconds

    def left(self) -> float:
        remaining = self.end - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no answer within {self.seconds:g} s")
        return remaining


class _DeadlineReader(io.RawIOBase):
    """The socket's receiving side, each read bounded by the request's deadline (a server that sends
    one byte a second cannot stretch a request past it, as a per-read socket timeout would let it)."""

    def __init__(self, sock: socket.socket, conn: _Connection) -> None:
        self._sock, self._conn = sock, conn

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        self._sock.settimeout(self._conn.deadline.left())
        return self._sock.recv_into(buffer)


class _Socket:
    """A connected socket whose sends and reads keep to the connection's current deadline."""

    def __init__(self, sock: socket.socket, conn: _Connection) -> None:
        self._sock, self._conn = sock, conn

    def sendall(self, data: bytes) -> None:
        self._sock.settimeout(self._conn.deadline.left())
        self._sock.sendall(data)

    def makefile(self, mode: str, *args: Any, **kwargs: Any) -> io.BufferedReader:
        return io.BufferedReader(_DeadlineReader(self._sock, self._conn))

    def close(self) -> None:
        self._sock.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


class _Connection(http.client.HTTPConnection):
    deadline: _Deadline  # set before every request

    def connect(self) -> None:
        self.timeout = self.deadline.left()
        super().connect()
        self.sock = _Socket(self.sock, self)


class _TLSConnection(http.client.HTTPSConnection):
    deadline: _Deadline  # set before every request

    def connect(self) -> None:
        self.timeout = self.deadline.left()
        super().connect()
        self.sock = _Socket(self.sock, self)  # type: ignore[arg-type]


def parse_opa_url(url: str) -> urllib.parse.SplitResult:
    """The server's URL, checked: http(s), a host, no credentials, query or fragment (ConfigError otherwise)."""
    parts = urllib.parse.urlsplit(url.strip())
    problem = ""
    if parts.scheme not in ("http", "https"):
        problem = "must start with http:// or https://"
    elif not parts.hostname:
        problem = "names no host"
    elif parts.username or parts.password:
        problem = "must not hold credentials (give a bearer token with AGENTFACTORY_OPA_TOKEN)"
    elif parts.query or parts.fragment:
        problem = "must not have a query or a fragment"
    else:
        try:
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError:
            problem = "has an invalid port"
    if problem:
        raise ConfigError(f"--opa-url {url!r} {problem}; e.g. {DEFAULT_OPA_URL}")
    return parts


def _strict_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(set(keys)) != len(keys):
        twice = sorted({k for k in keys if keys.count(k) > 1})
        raise OPAAnswerError(f"the answer names {', '.join(repr(k[:40]) for k in twice)} twice")
    return dict(pairs)


def _no_constant(name: str) -> Any:
    raise OPAAnswerError(f"the answer holds {name}, which is not JSON")


def strict_json(body: bytes) -> Any:
    """The answer's JSON, refusing what json.loads would quietly accept (a key twice: the last wins)."""
    try:
        return json.loads(body.decode("utf-8"), object_pairs_hook=_strict_object, parse_constant=_no_constant)
    except UnicodeDecodeError:
        raise OPAAnswerError("the answer is not UTF-8") from None
    except ValueError as exc:
        raise OPAAnswerError(f"the answer is not JSON ({exc})") from None


def read_decision(policy: str, body: bytes) -> tuple[bool, tuple[str, ...], tuple[str, ...], dict[str, Any]]:
    """(allow, deny, warn, provenance) from the body of a decision answer; OPAAnswerError when it is not one."""
    doc = strict_json(body)
    if not isinstance(doc, dict):
        raise OPAAnswerError(f"the answer is a JSON {type(doc).__name__}, not an object")
    provenance = doc.get("provenance")
    if "result" not in doc:
        raise OPAAnswerError(f"data.{BUNDLE_ROOT}.{policy}.decision is undefined on the server (is the bundle of "
                             "policies/ loaded?)")
    allow, deny, warn = decision_fields(policy, doc["result"])
    return allow, deny, warn, provenance if isinstance(provenance, dict) else {}


def read_result(policy: str, body: bytes) -> tuple[bool, tuple[str, ...], tuple[str, ...]]:
    """(allow, deny, warn) from an OPA Wasm module's result set (`[{"result": decision}]`, `[]` when undefined),
    read as strictly as a server's answer."""
    doc = strict_json(body)
    if doc == []:
        raise OPAAnswerError(f"data.{BUNDLE_ROOT}.{policy}.decision is undefined")
    if not (isinstance(doc, list) and len(doc) == 1 and isinstance(doc[0], dict) and set(doc[0]) == {"result"}):
        raise OPAAnswerError(f"the result set is not one result ({json.dumps(doc)[:80]})")
    return decision_fields(policy, doc[0]["result"])


def decision_fields(policy: str, result: Any) -> tuple[bool, tuple[str, ...], tuple[str, ...]]:
    """(allow, deny, warn) of a decision document: exactly allow (a boolean), deny (and warn for admission)
    (arrays of strings), nothing else; OPAAnswerError otherwise. The one reader of OPA's decisions."""
    names = ("allow", "deny", "warn") if policy in WARN_POLICIES else ("allow", "deny")
    if not isinstance(result, dict):
        raise OPAAnswerError(f"the decision is a JSON {type(result).__name__}, not an object with {', '.join(names)}")
    unexpected = sorted(set(result) - set(names))
    missing = [n for n in names if n not in result]
    if missing or unexpected:
        raise OPAAnswerError(f"the decision has {'no ' + ', '.join(missing) if missing else ''}"
                             f"{'; ' if missing and unexpected else ''}"
                             f"{'unexpected ' + ', '.join(repr(k[:40]) for k in unexpected) if unexpected else ''}")
    allow = result["allow"]
    if not isinstance(allow, bool):
        raise OPAAnswerError(f"allow is a JSON {type(allow).__name__} ({json.dumps(allow)[:40]}), not a boolean")
    deny = _messages(result["deny"], "deny")
    warn = _messages(result["warn"], "warn") if "warn" in names else ()
    return allow, deny, warn


def _messages(value: Any, name: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise OPAAnswerError(f"{name} is a JSON {type(value).__name__}, not an array of messages")
    bad = [i for i, m in enumerate(value) if not isinstance(m, str)]
    if bad:
        raise OPAAnswerError(f"{name}[{bad[0]}] is a JSON {type(value[bad[0]]).__name__}, not a string")
    return tuple(sorted(value))


def _roots_overlap(roots: Any) -> bool:
    """Whether a bundle with these manifest roots may hold data.agentfactory (root "" owns everything)."""
    if not isinstance(roots, list):
        return True  # no roots: OPA gives the bundle the whole tree
    return any(isinstance(r, str) and (r.strip("/") == "" or r.strip("/") == BUNDLE_ROOT
                                       or r.startswith(BUNDLE_ROOT + "/")) for r in roots)


class OPAEngine(PolicyEngine):
    """Decisions from an OPA server that runs the bundle of the local policies folder."""

    def __init__(self, url: str = DEFAULT_OPA_URL, folder: Path | None = None, *,
                 config: dict[str, Any] | None = None, timeout: float = DEFAULT_TIMEOUT_S,
                 max_answer_bytes: int = MAX_ANSWER_BYTES, token: str | None = None) -> None:
        """`config` overrides keys of data.agentfactory.config as RegoEngine's do; the server must already
        evaluate with them (see the module). A malformed `url` is a ConfigError; an unreachable server
        is not (it may start later): each decision says why it cannot be made until it answers."""
        self.url = url.strip().rstrip("/")
        parts = parse_opa_url(self.url)
        if not (timeout > 0 and math.isfinite(timeout)):
            raise ConfigError(f"OPA timeout {timeout!r}: must be a positive number of seconds")
        self._parts = parts
        self.folder = folder or default_policy_dir()
        self.overrides = dict(config or {})
        self.timeout = timeout
        self.max_answer_bytes = max_answer_bytes
        self._token = token
        self.data: dict[str, Any] = {}
        self.broken: str | None = None
        self.revision = ""
        self._bundle: str | None = None  # the server's bundle name, once its revision and data were checked
        self._check_lock = threading.Lock()
        self._local = threading.local()
        try:
            self._load()
        except PolicyError as exc:
            self.broken = str(exc)

    def _load(self) -> None:
        self.revision = policy_revision(self.folder)
        self.data = load_policy_data(self.folder, self.overrides, self.data)

    # --- HTTP ------------------------------------------------------------------------------------

    def _connection(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            host, port = self._parts.hostname or "", self._parts.port
            if self._parts.scheme == "https":
                conn = _TLSConnection(host, port, context=ssl.create_default_context())
            else:
                conn = _Connection(host, port)
            self._local.conn = conn
        return conn

    def _drop(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            conn.close()

    def _request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        """(status, body) within the deadline and the size limit; OSError/HTTPException/OPAAnswerError otherwise."""
        headers = {"Accept": "application/json", "Accept-Encoding": "identity"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        target = self._parts.path.rstrip("/") + path
        deadline = _Deadline(self.timeout)
        for attempt in (0, 1):
            conn = self._connection()
            reused = conn.sock is not None
            conn.deadline = deadline  # type: ignore[attr-defined]
            try:
                conn.request(method, target, body, headers)
                response = conn.getresponse()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self._drop()
                if reused and attempt == 0:  # a keep-alive connection the server had closed: once more
                    continue
                raise
            except BaseException:
                self._drop()
                raise
            try:
                return response.status, self._body(response)
            except BaseException:
                self._drop()
                raise
        raise ConnectionError("the connection was closed twice")  # not reached: the loop returns or raises

    def _body(self, response: http.client.HTTPResponse) -> bytes:
        length = response.getheader("Content-Length")
        if length is not None and length.strip().isdigit() and int(length) > self.max_answer_bytes:
            raise OPAAnswerError(f"the answer is {int(length)} bytes, more than the limit of {self.max_answer_bytes}")
        if (response.getheader("Content-Encoding") or "identity").lower() != "identity":
            raise OPAAnswerError(f"the answer is {response.getheader('Content-Encoding')}-encoded; asked for identity")
        chunks: list[bytes] = []
        size = 0
        while True:
            chunk = response.read(_READ_CHUNK)
            if not chunk:
                break
            size += len(chunk)
            if size > self.max_answer_bytes:
                raise OPAAnswerError(f"the answer is more than the limit of {self.max_answer_bytes} bytes")
            chunks.append(chunk)
        if response.will_close:
            self._drop()
        return b"".join(chunks)

    def _get_result(self, path: str) -> Any:
        """The `result` of a GET of the Data API (None when undefined)."""
        status, body = self._request("GET", path)
        if status != 200:
            raise OPAAnswerError(f"GET {path} answered HTTP {status}{_server_message(body)}")
        doc = strict_json(body)
        if not isinstance(doc, dict):
            raise OPAAnswerError(f"GET {path} answered a JSON {type(doc).__name__}, not an object")
        return doc.get("result")

    # --- the bundle check ------------------------------------------------------------------------

    def _check_server(self) -> str:
        """The name of the server's bundle for data.agentfactory, once it is the expected revision with
        the expected config; OPAAnswerError (or a connection error) saying what differs otherwise."""
        with self._check_lock:
            if self._bundle is not None:
                return self._bundle
            bundles = self._get_result("/v1/data/system/bundles")
            if not isinstance(bundles, dict) or not bundles:
                raise OPAAnswerError("the server runs no bundle: load the bundle of policies/ "
                                     "(python -m agentfactory.policy_bundle -o bundle.tar.gz; opa run --server "
                                     "bundle.tar.gz)")
            ours = {name: b for name, b in bundles.items()
                    if _roots_overlap((b.get("manifest") or {}).get("roots") if isinstance(b, dict) else None)}
            if len(ours) != 1:
                raise OPAAnswerError(f"{len(ours)} bundles of the server hold data.{BUNDLE_ROOT} "
                                     f"({', '.join(sorted(ours)) or 'none of ' + ', '.join(sorted(bundles))}); "
                                     "expected exactly one, the bundle of policies/")
            (name, bundle), = ours.items()
            revision = ((bundle.get("manifest") or {}) if isinstance(bundle, dict) else {}).get("revision")
            if revision != self.revision:
                raise OPAAnswerError(f"the server's bundle {name!r} is revision {str(revision)[:80]!r}, not "
                                     f"{self.revision} (the policies in {self.folder}): load the bundle built from "
                                     "them, or point --policies at the policies the server runs")
            served = self._get_result(f"/v1/data/{BUNDLE_ROOT}/config")
            local = (self.data.get(BUNDLE_ROOT) or {}).get("config") if isinstance(self.data, dict) else None
            if served != local:
                raise OPAAnswerError(self._config_difference(served, local))
            self._bundle = str(name)
            return self._bundle

    def _config_difference(self, served: Any, local: Any) -> str:
        """Why the server's config is not this command's: the keys that differ, those this command set."""
        if isinstance(served, dict) and isinstance(local, dict):
            differ = [k for k in sorted(set(served) | set(local)) if served.get(k) != local.get(k)]
        else:
            differ = ["(the whole config)"]
        asked = [k for k in differ if k in self.overrides]
        by_us = f" (set by this command: {', '.join(asked)})" if asked else ""
        return (f"the server evaluates with other data.{BUNDLE_ROOT}.config than this command: "
                f"{', '.join(differ[:6])} differ{by_us}; an OPA server's data comes from its bundle only: put the "
                "setting in policies/data.json, rebuild and load the bundle, or use --policy-engine rego")

    # --- the port --------------------------------------------------------------------------------

    def judge(self, policy: str, document: dict[str, Any]) -> Decision:
        up_front = refused_up_front(policy, self.broken)
        if up_front is not None:
            return up_front
        where = f"OPA at {self.url}"
        try:
            bundle = self._check_server()
            body = json.dumps({"input": document}, ensure_ascii=False, allow_nan=False).encode("utf-8")
            path = f"/v1/data/{BUNDLE_ROOT}/{policy}/decision?provenance=true&strict-builtin-errors=true"
            status, answer = self._request("POST", path, body)
            if status != 200:
                raise OPAAnswerError(f"HTTP {status}{_server_message(answer)}")
            allow, deny, warn, provenance = read_decision(policy, answer)
            answered = _served_revision(provenance, bundle)
            if answered != self.revision:
                self._bundle = None  # the server changed bundles: check it again before the next decision
                raise OPAAnswerError(f"the answer comes from bundle revision {str(answered)[:80]!r}, not "
                                     f"{self.revision} (the server's bundle changed, or it reports no provenance)")
        except OPAAnswerError as exc:
            return Decision(policy, False, (f"{where}: {exc}; the decision is refused",), refused=True)
        except TimeoutError:  # the deadline, or a socket timeout set from what was left of it
            return Decision(policy, False, (f"{where}: no answer within {self.timeout:g} s; the decision is refused",),
                            refused=True)
        except OSError as exc:
            return Decision(policy, False, (f"{where} cannot be reached ({type(exc).__name__}: {exc}); "
                                            "the decision is refused",), refused=True)
        except http.client.HTTPException as exc:
            return Decision(policy, False, (f"{where} answered something that is not HTTP ({type(exc).__name__}: "
                                            f"{str(exc)[:200]}); the decision is refused",), refused=True)
        except Exception as exc:  # fail closed: whatever went wrong denies
            return Decision(policy, False, (f"{where}: {type(exc).__name__}: {exc}; the decision is refused",),
                            refused=True)
        messages = list(deny)
        if allow is not True and not messages:
            messages.append(f"data.{BUNDLE_ROOT}.{policy}.allow is false, with no deny message")
        return Decision(policy, allow is True and not messages, tuple(messages), warn)

    def warm_up(self, *policies: str) -> None:
        """Check the server's bundle now (a failure is not raised: each decision says it until fixed)."""
        if self.broken:
            return
        try:
            self._check_server()
        except Exception:  # reported by the decisions themselves, each saying why it is refused
            return

    def close(self) -> None:
        """Close this thread's connection (others close with their threads)."""
        self._drop()

    def run_tests(self) -> TestReport:
        """The Rego unit tests, run by the local OPA binary (`opa test`): a server does not run tests."""
        return opa_test_report(self.folder, self.broken)


def opa_test_report(folder: Path, broken: str | None = None) -> TestReport:
    """The Rego unit tests of `folder`, run by the local OPA binary (`opa test`), as a TestReport."""
    from .peertools import find

    report = TestReport()
    if broken:
        report.errors.append(broken)
        return report
    try:
        proc = subprocess.run([str(find("opa")), "test", "--format=json", str(folder)], capture_output=True,
                              timeout=600, check=False)
    except (ConfigError, OSError, subprocess.TimeoutExpired) as exc:
        report.errors.append(f"opa test could not run: {exc}")
        return report
    try:
        results = json.loads(proc.stdout or b"null")
    except ValueError:
        results = None
    if not isinstance(results, list):
        report.errors.append(f"opa test exited {proc.returncode}: {(proc.stderr or proc.stdout)[:2000]!r}")
        return report
    for r in results:
        package = str(r.get("package", "")).removeprefix("data.")
        failed = bool(r.get("fail")) or bool(r.get("error"))
        detail = str(r.get("error") or ("failed" if failed else ""))[:500]
        report.results.append(TestResult(package, str(r.get("name", "")), not failed and not r.get("skip"), detail))
    if proc.returncode not in (0, 2) or (proc.returncode == 2 and all(t.ok for t in report.results)):
        report.errors.append(f"opa test exited {proc.returncode}: {proc.stderr[:2000]!r}")
    return report


def _served_revision(provenance: dict[str, Any], bundle: str) -> Any:
    """The revision the answer's provenance reports for `bundle` (None when it reports none)."""
    bundles = provenance.get("bundles")
    served = bundles.get(bundle) if isinstance(bundles, dict) else None
    return served.get("revision") if isinstance(served, dict) else None


def _server_message(body: bytes) -> str:
    """OPA's own error message from an error answer (code and message), shortened, for the reason."""
    try:
        doc = json.loads(body.decode("utf-8", "replace"))
    except ValueError:
        return f" ({len(body)} bytes that are not JSON)" if body else ""
    if isinstance(doc, dict) and ("message" in doc or "code" in doc):
        errors = doc.get("errors")
        first = errors[0] if isinstance(errors, list) and errors and isinstance(errors[0], dict) else {}
        detail = f": {str(first.get('message', ''))[:300]}" if first.get("message") else ""
        return f" ({str(doc.get('code', ''))[:40]}: {str(doc.get('message', ''))[:300]}{detail})"
    return ""


def token_from_env() -> str | None:
    """The bearer token for an OPA server run with --authentication=token ($AGENTFACTORY_OPA_TOKEN)."""
    return os.environ.get("AGENTFACTORY_OPA_TOKEN") or None
