"""A Rekor v1 API client: the public instance, a private one, or `agentfactory tlog serve`.

Everything a log sends is untrusted until checked against its pinned key (see `bundle.py`), so this
client only makes answers well-formed: bounded reads (a log cannot make us buffer more than
`max_response_bytes`), timeouts, strict parsing that names the URL and field, TLS verified by
default, and no redirects to another origin (a log cannot send our entries elsewhere).
"""

from __future__ import annotations

import base64
import json
import re
import ssl
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx

from ..errors import InputError, NotFoundError
from ..jsonsafe import load_json_object
from .base import Added, EntryRejected, LogError, LogInfo, TransparencyLog
from .bundle import dsse_check, hashedrekord_check
from .entries import (
    MAX_PROOF_HASHES,
    LogEntry,
    canonical,
    entry_uuid,
    parse_log_entry,
    parse_proposed_entry,
)
from .note import MAX_KEY_PEM_BYTES, MAX_NOTE_BYTES, MAX_TREE_SIZE, load_log_public_key

ENTRIES = "/api/v1/log/entries"
MAX_RESPONSE_BYTES = 8 * 1024 * 1024
MAX_REDIRECTS = 3
MAX_SEARCH_RESULTS = 100_000
DEFAULT_TIMEOUT = httpx.Timeout(30.0, connect=5.0)
_UUID = re.compile(r"(?:[0-9a-f]{16})?([0-9a-f]{64})")  # Rekor prefixes a 16-hex tree id on sharded logs
_HEX64 = re.compile(r"[0-9a-f]{64}")


class RekorClient(TransparencyLog):
    """`TransparencyLog` over HTTP(S)."""

    def __init__(self, url: str, *, ca_file: Path | None = None, timeout: httpx.Timeout = DEFAULT_TIMEOUT,
                 max_response_bytes: int = MAX_RESPONSE_BYTES) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
            raise InputError("transparency log URL", f"{url!r} must be an http(s) URL without query or fragment")
        self.url = url.rstrip("/")
        self.max_response_bytes = max_response_bytes
        verify: ssl.SSLContext | bool = True
        if ca_file is not None:
            try:
                verify = ssl.create_default_context(cafile=str(ca_file))
            except (OSError, ssl.SSLError) as exc:
                raise InputError(str(ca_file), f"cannot load the CA file ({exc})") from None
        self._http = httpx.Client(verify=verify, timeout=timeout, follow_redirects=False,
                                  headers={"Accept": "application/json", "User-Agent": "agentfactory-tlog"})

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> RekorClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- HTTP ----------------------------------------------------------------------------------------------

    def _request(self, method: str, path: str, *, params: dict[str, int] | None = None,
                 body: Any = None) -> tuple[int, bytes, httpx.Headers, str]:
        """(status, body, headers, URL) after following same-origin redirects; reads are bounded."""
        url = self.url + path
        origin = urlsplit(self.url)[:2]
        for _ in range(MAX_REDIRECTS + 1):
            try:
                with self._http.stream(method, url, params=params, json=body) as resp:
                    shown = str(resp.url)
                    if resp.is_redirect:
                        target = urljoin(shown, resp.headers.get("location", ""))
                        if urlsplit(target)[:2] != origin:
                            raise LogError(f"{shown}: the log redirected to {target}, another origin: refused")
                        url, params = target, None
                        continue
                    declared = resp.headers.get("content-length", "")
                    if declared.isdigit() and int(declared) > self.max_response_bytes:
                        raise LogError(f"{shown}: the response is {declared} bytes; the limit is "
                                       f"{self.max_response_bytes}")
                    chunks, size = [], 0
                    for chunk in resp.iter_bytes():
                        size += len(chunk)
                        if size > self.max_response_bytes:
                            raise LogError(f"{shown}: the response is larger than {self.max_response_bytes} "
                                           "bytes: refused")
                        chunks.append(chunk)
                    return resp.status_code, b"".join(chunks), resp.headers, shown
            except httpx.HTTPError as exc:
                raise LogError(f"{url}: {type(exc).__name__}: {exc or 'no answer'}") from None
        raise LogError(f"{url}: more than {MAX_REDIRECTS} redirects")

    def _expect(self, method: str, path: str, ok: int = 200, *, params: dict[str, int] | None = None,
                body: Any = None, not_found: str | None = None) -> tuple[bytes, str]:
        status, data, _, url = self._request(method, path, params=params, body=body)
        if status == 404 and not_found is not None:
            raise NotFoundError(f"{url}: {not_found}")
        if status != ok:
            raise LogError(f"{url}: HTTP {status}: {_message(data)}")
        return data, url

    def _object(self, data: bytes, url: str, what: str) -> dict[str, Any]:
        try:
            return load_json_object(data, url, max_bytes=self.max_response_bytes, what=what)
        except InputError as exc:
            raise LogError(str(exc)) from None

    def _entry(self, data: bytes, url: str) -> LogEntry:
        doc = self._object(data, url, "log entry response")
        if len(doc) == 1:
            ((key, value),) = doc.items()
            m = _UUID.fullmatch(key) if isinstance(key, str) else None
            if m is not None:
                doc = {m.group(1): value}
        try:
            return parse_log_entry(doc, url)
        except InputError as exc:
            raise LogError(f"the log sent a malformed entry: {exc}") from None

    # -- the port ------------------------------------------------------------------------------------------

    def add(self, proposed: dict[str, Any]) -> Added:
        try:
            parsed = parse_proposed_entry(proposed, "proposed entry")
            expected_uuid = entry_uuid(canonical(parsed.body()))
        except (InputError, ValueError) as exc:
            raise EntryRejected(str(exc)) from None
        status, data, headers, url = self._request("POST", ENTRIES, body=proposed)
        if status == 201:
            entry = self._entry(data, url)
            existed = False
        elif status == 409:
            location = headers.get("location", "")
            m = _UUID.fullmatch(location.rstrip("/").rsplit("/", 1)[-1])
            entry = self.entry(m.group(1) if m else expected_uuid)
            existed = True
        elif status == 400:
            raise EntryRejected(f"{url}: {_message(data)}")
        else:
            raise LogError(f"{url}: HTTP {status}: {_message(data)}")
        check = (hashedrekord_check(parsed.digest_hex, parsed.signature, parsed.public_key_pem)
                 if parsed.kind == "hashedrekord" else dsse_check(parsed.envelope_json, parsed.public_key_pem))
        try:
            body = json.loads(entry.body)
        except ValueError:
            body = None
        problem = check(body) if isinstance(body, dict) else "the body is not a JSON object"
        if problem is not None:
            raise LogError(f"{url}: the log answered with an entry that is not the one proposed: {problem}")
        return Added(entry, existed)

    def entry(self, uuid: str) -> LogEntry:
        m = _UUID.fullmatch(uuid)
        if m is None:
            raise InputError("entry uuid", f"{uuid!r} must be 64 lowercase hex digits (or 80 with a tree id)")
        data, url = self._expect("GET", f"{ENTRIES}/{uuid}", not_found=f"no entry with UUID {uuid}")
        entry = self._entry(data, url)
        if entry.uuid != m.group(1):
            raise LogError(f"{url}: the log answered with entry {entry.uuid}, not {m.group(1)}")
        return entry

    def entry_at(self, index: int) -> LogEntry:
        if not 0 <= index <= MAX_TREE_SIZE:
            raise InputError("logIndex", f"{index} is out of range")
        data, url = self._expect("GET", ENTRIES, params={"logIndex": index}, not_found=f"no entry at {index}")
        entry = self._entry(data, url)
        if entry.log_index != index:
            raise LogError(f"{url}: the log answered with the entry at {entry.log_index}, not {index}")
        return entry

    def search(self, *, sha256: str | None = None, public_key_pem: bytes | None = None) -> list[str]:
        query: dict[str, Any] = {}
        if sha256 is not None:
            query["hash"] = sha256 if sha256.startswith("sha256:") else f"sha256:{sha256}"
        if public_key_pem is not None:
            query["publicKey"] = {"format": "x509", "content": base64.b64encode(public_key_pem).decode()}
        if not query:
            raise InputError("search", "give a sha256 digest, a public key or both")
        if len(query) == 2:
            query["operator"] = "and"  # what the port promises; a Rekor server's default is "or"
        data, url = self._expect("POST", "/api/v1/index/retrieve", body=query)
        try:
            found = json.loads(data)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise LogError(f"{url}: the search answer is not JSON") from None
        if found is None:
            return []
        if not isinstance(found, list) or len(found) > MAX_SEARCH_RESULTS:
            raise LogError(f"{url}: the search answer is not a list of at most {MAX_SEARCH_RESULTS} UUIDs")
        uuids = []
        for item in found:
            m = _UUID.fullmatch(item) if isinstance(item, str) else None
            if m is None:
                raise LogError(f"{url}: the search answer holds {str(item)[:100]!r}, not an entry UUID")
            uuids.append(m.group(1))
        return list(dict.fromkeys(uuids))

    def info(self) -> LogInfo:
        data, url = self._expect("GET", "/api/v1/log")
        doc = self._object(data, url, "log info")
        size, root, sth, tree_id = (doc.get(k) for k in ("treeSize", "rootHash", "signedTreeHead", "treeID"))
        if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_TREE_SIZE:
            raise LogError(f"{url}: treeSize must be an integer from 0 to {MAX_TREE_SIZE}")
        if not isinstance(root, str) or not _HEX64.fullmatch(root):
            raise LogError(f"{url}: rootHash must be 64 lowercase hex digits")
        if not isinstance(sth, str) or not sth or len(sth.encode()) > MAX_NOTE_BYTES:
            raise LogError(f"{url}: signedTreeHead must be a signed note of at most {MAX_NOTE_BYTES} bytes")
        if tree_id is not None and not isinstance(tree_id, str):
            raise LogError(f"{url}: treeID must be a string")
        return LogInfo(size, root, sth, tree_id or "")

    def consistency(self, first_size: int, last_size: int) -> list[str]:
        data, url = self._expect("GET", "/api/v1/log/proof", params={"firstSize": first_size,
                                                                     "lastSize": last_size})
        hashes = self._object(data, url, "consistency proof").get("hashes")
        if not isinstance(hashes, list) or len(hashes) > 2 * MAX_PROOF_HASHES or not all(
                isinstance(h, str) and _HEX64.fullmatch(h) for h in hashes):
            raise LogError(f"{url}: hashes must be a list of 64-hex-digit hashes")
        return list(hashes)

    def public_key_pem(self) -> bytes:
        data, url = self._expect("GET", "/api/v1/log/publicKey")
        if len(data) > MAX_KEY_PEM_BYTES:
            raise LogError(f"{url}: the public key is {len(data)} bytes; the limit is {MAX_KEY_PEM_BYTES}")
        try:
            load_log_public_key(data, url)
        except InputError as exc:
            raise LogError(str(exc)) from None
        return data


def _message(data: bytes) -> str:
    """Rekor's error body `{"code", "message"}`, else a bounded, printable excerpt of what came back."""
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError):
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("message"), str):
        text = doc["message"]
    else:
        text = data[:200].decode("utf-8", "replace") or "(empty body)"
    return "".join(c if c.isprintable() else " " for c in text)[:500]
