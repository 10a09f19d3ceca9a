"""The Rekor v1 HTTP API over an `EmbeddedLog`, so cosign, rekor-cli, sigstore clients and our own client can use it.

Shapes and status codes follow Rekor's openapi.yaml and what rekor-cli v1.5.4 checks. Every error is JSON
`{"code", "message"}` as Rekor's are (FastAPI's own 404/405/422 bodies included), and a 500 never carries a
traceback. Bodies are read with a cap before any parsing, so an oversized request costs at most the cap.

Entries are keyed, located and searched by Rekor's entry ID: the log's tree id in 16 hex digits, then the
64-hex UUID (the leaf hash). rekor-cli refuses an answer keyed by a plain UUID ("cannot get treeID from plain
UUID"), and asks for the log's key by that tree id. Both forms are accepted in requests; an entry ID naming
another tree is not found here, as on a sharded Rekor. The `treeID` parameters of the proof and public-key
routes must name this log's tree when given.

The hot route, POST /api/v1/log/entries, is answered by `TlogApp` directly on the ASGI interface, without
FastAPI's routing, request and response objects (which cost more CPU than the add itself); every other route
goes to the FastAPI app. The entry is checked on the event loop (`EmbeddedLog.prepare`, CPU only), then
committed by `_Committer`: whatever arrived while the previous commit ran goes in one call to a commit
thread (one thread hop per batch, not per request). The answers (proof, checkpoint, SET, the 201's body) are
made back on the loop while the commit thread waits for its fsync, and sent once the commit returned and
`EmbeddedLog.answer` found each one says what it made durable. The body cap, error bodies and status codes
are those of every other route.

One deliberate difference: an index query giving both a hash and a public key without `operator` intersects
them (`and`), as this log always has; Rekor's default is `or`, which is answered when asked for.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..dsse import b64decode_strict
from ..errors import ConfigError, InputError, NotFoundError
from ..httpserve import BodyTooLarge, Receive, Scope, Send, read_asgi_body, read_body, route_path, send_body
from ..jsonsafe import load_json_object
from .base import Added, EntryRejected, LogError
from .entries import (
    MAX_ENTRY_BYTES,
    MAX_PUBLIC_KEY_BYTES,
    LogEntry,
    canonical,
    parse_proposed_entry,
    split_entry_id,
    tree_id_hex,
)
from .log import MAX_BATCH, MAX_SEARCH_RESULTS, EmbeddedLog, PreparedEntry
from .merkle import leaf_hash
from .note import MAX_TREE_SIZE

ENTRIES = "/api/v1/log/entries"
MAX_QUERY_BYTES = 64 * 1024  # retrieve and index queries: uuids, indices, one public key
MAX_RETRIEVE = 10  # Rekor's maxItems for each of entryUUIDs, logIndexes and entries
# Bytes of proposed entries being received or parsed at once, all connections together (a 32 MiB entry costs
# about 30 MiB of server memory while it is parsed: 40 half-sent ones held 1.3 GB); past it, 503.
MAX_BODIES_IN_FLIGHT = 256 * 1024 * 1024
ON_LOOP_ENTRY_BYTES = 256 * 1024  # larger entries are parsed and checked off the event loop
_DECIMAL = re.compile(r"-?[0-9]{1,19}")  # ASCII digits only: str.isdigit() also takes '²' and '٣'


class _BadRequest(Exception):
    def __init__(self, message: str, code: int = 400) -> None:
        super().__init__(message)
        self.code = code
        self.message = message



def _json(doc: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(doc, separators=(",", ":")).encode(), status_code=status, headers=headers,
                    media_type="application/json")


def _error(code: int, message: str, headers: dict[str, str] | None = None) -> Response:
    return _json({"code": code, "message": message}, code, headers)


def _int_param(request: Request, name: str, default: int | None = None, low: int = 0) -> int:
    """A decimal query parameter from `low` to MAX_TREE_SIZE (int64, as Rekor's); 400 naming it otherwise."""
    values = request.query_params.getlist(name)
    if not values:
        if default is None:
            raise _BadRequest(f"query parameter {name} is required")
        return default
    if len(values) > 1:
        raise _BadRequest(f"query parameter {name} is given {len(values)} times; give it once")
    return _bounded(values[0], name, low)


def _bounded(raw: Any, name: str, low: int = 0) -> int:
    """`raw` (a decimal string, or an integer from a JSON body) when it is an integer in [low, MAX_TREE_SIZE]."""
    if isinstance(raw, str):
        if not _DECIMAL.fullmatch(raw):
            raise _BadRequest(f"{name} must be a decimal integer from {low} to {MAX_TREE_SIZE}, got {raw[:40]!r}")
        raw = int(raw)
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise _BadRequest(f"{name} must be an integer from {low} to {MAX_TREE_SIZE}, got {type(raw).__name__}")
    if not low <= raw <= MAX_TREE_SIZE:
        shown = str(raw) if len(str(raw)) <= 40 else str(raw)[:40] + "…"
        raise _BadRequest(f"{name} must be {low} or more and at most {MAX_TREE_SIZE}, got {shown}")
    return raw


async def _query(request: Request) -> dict[str, Any]:
    try:
        body = await read_body(request, MAX_QUERY_BYTES)
    except BodyTooLarge:
        raise _BadRequest(f"the query is larger than {MAX_QUERY_BYTES} bytes", 413) from None
    try:
        return load_json_object(body, "query", max_bytes=MAX_QUERY_BYTES, what="query")
    except InputError as e:
        raise _BadRequest(str(e)) from None


def _list(doc: dict[str, Any], field: str) -> list[Any]:
    value = doc.get(field)
    if value is None:
        return []
    if not isinstance(value, list):
        raise _BadRequest(f"{field} must be a list")
    if len(value) > MAX_RETRIEVE:
        raise _BadRequest(f"{field} lists {len(value)} items; the limit is {MAX_RETRIEVE}")
    return value


def _tree_param(request: Request, tree_id: str) -> None:
    """A `treeID` query parameter (rekor-cli always sends one) must be this log's decimal tree id; 400 otherwise,
    as Rekor answers for a tree it does not serve. Serving our key for any tree would vouch for a log we are not."""
    values = request.query_params.getlist("treeID")
    if len(values) > 1:
        raise _BadRequest(f"query parameter treeID is given {len(values)} times; give it once")
    if values and values[0] != tree_id:
        raise _BadRequest(f"treeID {values[0][:40]!r} is not a tree of this log; its tree id is {tree_id}")


BATCH_WAIT_S = 0.002  # how long a commit may wait for the entries it expects (`tlog serve --batch-wait-ms`)
MAX_BATCH_WAIT_S = 0.1


def batch_wait_seconds(ms: float, where: str) -> float:
    """`ms` milliseconds of batch wait as seconds; ConfigError naming `where` unless it is from 0 to 100 (NaN and
    infinities included: a wait that never ends would hold every entry, one below 0 means nothing)."""
    if not 0 <= ms <= MAX_BATCH_WAIT_S * 1000:  # NaN fails both comparisons
        raise ConfigError(f"{where} {ms}: must be from 0 to {MAX_BATCH_WAIT_S * 1000:g} (milliseconds)")
    return ms / 1000


class _Committer:
    """Group commit seen from one event loop: entries that arrive while a commit runs wait, and go together in
    the next `EmbeddedLog.commit` call (in a thread: it blocks on the fsync), so the loop keeps reading and
    checking requests meanwhile and pays one thread hop per batch. Every entry's future resolves only after
    the call that committed (or failed) it returned.

    A commit costs far more than an entry (about 0.7 ms of CPU against 0.34 ms, measured on 2 CPUs), so a batch
    should carry everything that will come soon. Clients that were just answered are the ones about to send
    again: a batch is expected to be as large as the last one plus what was already waiting when it ended. While
    fewer entries wait, the commit waits for them, at most `batch_wait_s` from the first (PostgreSQL's
    commit_delay, sized by the load itself rather than a siblings setting). One client never waits: it expects
    one entry. Clients that stop sending cost one wait, after which the expectation is the smaller batch. With 4
    clients the batches went from alternating 1 and 3 entries to 4 (benchmarks/results/tlog.md)."""

    def __init__(self, log: EmbeddedLog, batch_wait_s: float = BATCH_WAIT_S,
                 render: Callable[[Added], bytes] | None = None) -> None:
        self._log = log
        self._render = render
        # What `_early` made during a commit's fsync, by entry: its answer and that answer's body (see `answer`).
        self._bodies: weakref.WeakKeyDictionary[PreparedEntry, tuple[Added, bytes]] = weakref.WeakKeyDictionary()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tlog-commit")
        self._waiting: list[tuple[PreparedEntry, asyncio.Future[None]]] = []
        self._running = False  # a commit call is in the thread, or about to start (see _soon)
        self._batch_wait_s = batch_wait_s
        self._expect = 0  # entries the next batch is expected to carry (see the class docstring)
        self._timer: asyncio.TimerHandle | None = None  # the end of the current wait, when one runs

    async def commit(self, pending: PreparedEntry) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.append((pending, future))
        if not self._running:
            self._gather()
        await future

    def _gather(self) -> None:
        """Start the next commit when the entries it expects are here; else wait for them, but not past the wait."""
        if len(self._waiting) >= self._expect or self._batch_wait_s <= 0:
            self._soon()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self._batch_wait_s, self._waited)

    def _waited(self) -> None:
        self._timer = None
        if not self._running and self._waiting:
            self._soon()

    def _soon(self) -> None:
        """Start the next commit once the loop has run what is ready now: requests that arrived together are
        read and checked first, and go in one batch (one fsync) instead of the first alone."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._running = True
        asyncio.get_running_loop().call_soon(self._start)

    def _start(self) -> None:
        """Hand the batch to the commit thread. This runs as a loop callback, where an exception would only be
        logged and leave `_running` set, so that every later entry waited for ever: a batch that cannot even be
        handed over fails with the reason instead (a 500 for each of its requests), and the next one is tried."""
        batch, self._waiting = self._waiting, []
        loop = asyncio.get_running_loop()

        def early(pendings: list[PreparedEntry]) -> None:  # in the commit thread, before its fsync
            loop.call_soon_threadsafe(self._early, pendings)

        try:
            call = loop.run_in_executor(self._pool, self._log.commit, [p for p, _ in batch], early)
        except Exception as exc:  # the executor is shut down (the server is stopping), or the loop is closing
            self._finished(batch, exc)
            return
        call.add_done_callback(lambda done: self._finished(batch, None if done.cancelled() else done.exception()))

    def _early(self, pendings: list[PreparedEntry]) -> None:
        """On the loop, while the commit thread waits for its fsync (the GIL is free): make the batch's answers and
        their bodies, so that once the commit is durable each request only sends. Nothing made here is sent unless
        `answer` returns that very answer: the commit made the entry durable where it was placed."""
        with contextlib.suppress(Exception):  # an optimisation only: `answer` then makes it after the commit
            self._log.answer_early(pendings)
            if self._render is not None:
                for p in pendings:
                    if p.early is not None:
                        self._bodies[p] = (p.early, self._render(p.early))

    def answer(self, pending: PreparedEntry) -> tuple[Added, bytes | None]:
        """`pending`'s answer once its commit returned (`EmbeddedLog.answer`: raises when it was not logged), with
        its body when `_early` made it for that same answer, else None."""
        made = self._bodies.pop(pending, None)
        added = self._log.answer(pending)
        return added, made[1] if made is not None and made[0] is added else None

    def _finished(self, batch: list[tuple[PreparedEntry, asyncio.Future[None]]], error: BaseException | None) -> None:
        self._running = False
        self._expect = min(len(batch) + len(self._waiting), MAX_BATCH)
        for _, future in batch:
            if not future.done():
                if error is None:
                    future.set_result(None)
                else:
                    future.set_exception(error)
        if self._waiting:
            self._gather()


class TlogApp:
    """The ASGI app `tlog serve` runs: POST /api/v1/log/entries here, everything else by `api` (FastAPI)."""

    def __init__(self, log: EmbeddedLog, api: FastAPI, batch_wait_s: float = BATCH_WAIT_S) -> None:
        self.log = log
        self.api = api
        self.batch_wait_s = batch_wait_s
        self._tree_hex = tree_id_hex(log.tree_id)
        self.in_flight = 0  # bytes of proposed entries being received (their declared length), on the loop only
        self._committers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Committer] = \
            weakref.WeakKeyDictionary()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and route_path(scope) == ENTRIES:
            await self._create_entry(scope, receive, send)
        else:
            await self.api(scope, receive, send)

    def _committer(self) -> _Committer:
        loop = asyncio.get_running_loop()
        committer = self._committers.get(loop)
        if committer is None:
            committer = self._committers[loop] = _Committer(self.log, self.batch_wait_s,
                                                            lambda added: added.entry.to_json(self._tree_hex))
        return committer

    async def _create_entry(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Rekor's createLogEntry: 201 with the entry, 409 naming the existing one, 400 refused, 413 too big, 503
        while the entries being received already hold MAX_BODIES_IN_FLIGHT bytes."""
        declared = _content_length(scope)
        if declared is not None and declared > MAX_ENTRY_BYTES:
            return await _send_error(send, 413, f"the proposed entry is larger than {MAX_ENTRY_BYTES} bytes")
        held = declared if declared is not None else MAX_ENTRY_BYTES  # unknown length: the most it may be
        if self.in_flight + held > MAX_BODIES_IN_FLIGHT:
            return await _send_error(send, 503, f"the log is receiving {self.in_flight} bytes of entries already (at "
                                     f"most {MAX_BODIES_IN_FLIGHT} at once); retry later", [(b"retry-after", b"1")])
        self.in_flight += held
        try:
            await self._receive_entry(scope, receive, send)
        finally:
            self.in_flight -= held

    def _prepare(self, body: bytes) -> Any:
        doc = load_json_object(body, "proposed entry", max_bytes=MAX_ENTRY_BYTES, what="proposed entry")
        return self.log.prepare(doc)

    async def _receive_entry(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            body = await read_asgi_body(scope, receive, MAX_ENTRY_BYTES)
        except BodyTooLarge:
            return await _send_error(send, 413, f"the proposed entry is larger than {MAX_ENTRY_BYTES} bytes")
        if body is None:
            return  # the client went away before sending its entry: nobody to answer
        try:
            try:
                if len(body) > ON_LOOP_ENTRY_BYTES:  # parsing a 32 MiB entry takes about 1 s: not on the loop
                    pending = await run_in_threadpool(self._prepare, body)
                else:
                    pending = self._prepare(body)
            except (InputError, EntryRejected) as e:
                return await _send_error(send, 400, str(e))
            committer = self._committer()
            await committer.commit(pending)
            body = None
            if pending.error is None and pending.placed is not None and pending.placed.existed:
                added = await run_in_threadpool(self.log.answer, pending)  # reads the existing entry
            else:
                added, body = committer.answer(pending)
            entry_id = self._tree_hex + added.entry.uuid
            location = f"{ENTRIES}/{entry_id}"
            if added.existed:
                return await _send_error(
                    send, 409, f"an equivalent entry already exists in the transparency log with UUID {entry_id}",
                    [(b"location", location.encode())])
            await send_body(send, 201, body if body is not None else added.entry.to_json(self._tree_hex),
                        [(b"location", location.encode()), (b"etag", entry_id.encode())])
        except Exception as exc:  # as FastAPI's handler: a JSON 500 naming the type, then raise for the log
            await _send_error(send, 500, f"internal error: {type(exc).__name__}")
            raise


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and len(value) <= 12:
            return int(value)
    return None


async def _send_error(send: Send, code: int, message: str, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    await send_body(send, code, json.dumps({"code": code, "message": message}, separators=(",", ":")).encode(), headers)


def create_app(log: EmbeddedLog, batch_wait_s: float = BATCH_WAIT_S) -> TlogApp:
    """The Rekor v1 app over `log`; `batch_wait_s`: how long a commit may wait for the entries it expects."""
    batch_wait_s = batch_wait_seconds(batch_wait_s * 1000, "batch_wait_s")
    app = FastAPI(title="agentfactory tlog", docs_url=None, redoc_url=None, openapi_url=None)
    tree_hex = tree_id_hex(log.tree_id)

    def _entry_id(entry: LogEntry) -> str:
        return tree_hex + entry.uuid

    def _entry_response(entry: LogEntry, status: int = 200, headers: dict[str, str] | None = None) -> Response:
        return Response(entry.to_json(tree_hex), status_code=status, headers=headers, media_type="application/json")

    def _find(raw: str, where: str) -> LogEntry:
        """The entry a UUID or entry ID names; _BadRequest when malformed, NotFoundError when not here."""
        try:
            tree, uuid = split_entry_id(raw, where)
        except InputError as e:
            raise _BadRequest(str(e)) from None
        if tree and tree != tree_hex:
            raise NotFoundError(f"no entry with UUID {raw}: tree {tree} is not this log's ({tree_hex})")
        return log.entry(uuid)

    @app.exception_handler(_BadRequest)
    async def bad_request(_request: Request, exc: _BadRequest) -> Response:
        return _error(exc.code, exc.message)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> Response:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def internal(_request: Request, exc: Exception) -> Response:
        return _error(500, f"internal error: {type(exc).__name__}")

    @app.get(ENTRIES)
    def entry_by_index(request: Request) -> Response:
        index = _int_param(request, "logIndex")
        try:
            return _entry_response(log.entry_at(index))
        except NotFoundError:
            return _error(404, f"no entry at logIndex {index}")

    @app.get(ENTRIES + "/{uuid}")
    def entry_by_uuid(uuid: str) -> Response:
        try:
            return _entry_response(_find(uuid, "entryUUID"))
        except NotFoundError as e:
            return _error(404, str(e) if len(uuid) > 64 else f"no entry with UUID {uuid}")

    def _retrieve(doc: dict[str, Any]) -> list[dict[str, Any]]:
        found: list[LogEntry] = []
        for i, uuid in enumerate(_list(doc, "entryUUIDs")):
            if not isinstance(uuid, str):
                raise _BadRequest("entryUUIDs must be strings")
            try:
                found.append(_find(uuid, f"entryUUIDs[{i}]"))
            except NotFoundError:
                continue  # as Rekor: unknown entries are left out, not an error
        for i, raw in enumerate(_list(doc, "logIndexes")):
            if not isinstance(raw, int):  # Rekor's logIndexes are JSON integers, never strings
                raise _BadRequest(f"logIndexes[{i}] must be an integer from 0 to {MAX_TREE_SIZE}")
            index = _bounded(raw, f"logIndexes[{i}]")
            try:
                found.append(log.entry_at(index))
            except NotFoundError:
                continue
        for i, proposed in enumerate(_list(doc, "entries")):
            try:
                body = canonical(parse_proposed_entry(proposed, f"entries[{i}]").body())
            except (InputError, ValueError) as e:
                raise _BadRequest(str(e)) from None
            try:
                found.append(log.entry(leaf_hash(body).hex()))
            except NotFoundError:
                continue
        return [e.to_dict(tree_hex) for e in found]

    @app.post(ENTRIES + "/retrieve")
    async def retrieve(request: Request) -> Response:
        doc = await _query(request)
        return _json(await run_in_threadpool(_retrieve, doc))

    def _search(doc: dict[str, Any]) -> list[str]:
        unsupported = sorted(k for k in ("email", "subject") if doc.get(k) not in (None, ""))
        if unsupported:
            raise _BadRequest(f"this log searches by hash and publicKey only, not by {', '.join(unsupported)}")
        operator = doc.get("operator") or "and"  # Rekor's default is "or": see the module docstring
        if operator not in ("and", "or"):
            raise _BadRequest(f"operator must be 'and' or 'or', got {str(operator)[:40]!r}")
        sha = doc.get("hash")
        if sha is not None and not isinstance(sha, str):
            raise _BadRequest("hash must be a string sha256:<hex>")
        pem: bytes | None = None
        key = doc.get("publicKey")
        if key is not None:
            if not isinstance(key, dict) or key.get("format") != "x509" or key.get("url"):
                raise _BadRequest("publicKey must be {\"format\": \"x509\", \"content\": <base64 PEM>}")
            try:
                pem = b64decode_strict(key.get("content"), "publicKey.content")
            except InputError as e:
                raise _BadRequest(str(e)) from None
            if len(pem) > MAX_PUBLIC_KEY_BYTES:
                raise _BadRequest(f"publicKey is larger than {MAX_PUBLIC_KEY_BYTES} bytes")
        if sha is None and pem is None:
            raise _BadRequest("give a hash, a publicKey or both")
        try:
            if operator == "or" and sha is not None and pem is not None:
                found = list(dict.fromkeys(log.search(sha256=sha) + log.search(public_key_pem=pem)))
            else:
                found = log.search(sha256=sha, public_key_pem=pem)
        except LogError as e:
            raise _BadRequest(str(e)) from None
        if len(found) > MAX_SEARCH_RESULTS:  # say so: a silently shortened answer hides entries from audits
            raise _BadRequest(f"the search matches {len(found)} entries, more than this log answers at once "
                              f"({MAX_SEARCH_RESULTS}); read the log by index range instead", 422)
        return [tree_hex + uuid for uuid in found]

    @app.post("/api/v1/index/retrieve")
    async def index_retrieve(request: Request) -> Response:
        doc = await _query(request)
        return _json(await run_in_threadpool(_search, doc))

    @app.get("/api/v1/log")
    def log_info() -> Response:
        info = log.info()
        return _json({"rootHash": info.root_hash, "signedTreeHead": info.signed_tree_head,
                      "treeSize": info.tree_size, "treeID": info.tree_id})

    @app.get("/api/v1/log/proof")
    def consistency(request: Request) -> Response:
        _tree_param(request, log.tree_id)
        first = _int_param(request, "firstSize", 1, low=1)
        last = _int_param(request, "lastSize", low=1)
        size = log.info().tree_size
        if first > last:
            return _error(400, f"firstSize ({first}) must not be larger than lastSize ({last})")
        if last > size:
            return _error(400, f"lastSize ({last}) is larger than the tree ({size} entries)")
        hashes = log.consistency(first, last)
        return _json({"rootHash": log.root_at(last).hex(), "hashes": hashes})

    @app.get("/api/v1/log/publicKey")
    def public_key(request: Request) -> Response:
        _tree_param(request, log.tree_id)
        return Response(log.public_key_pem(), media_type="application/x-pem-file")

    @app.get("/healthz")
    def healthz() -> PlainTextResponse:
        return PlainTextResponse("ok\n")

    return TlogApp(log, app, batch_wait_s)

