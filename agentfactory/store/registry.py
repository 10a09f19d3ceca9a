"""The OCI distribution registry backend: agents and evidence in the organization's registry.

Store URL: `oci://HOST[:PORT]/PREFIX` — each agent lives in its own repository `PREFIX/<name>`,
tagged with its version, as container images are. Evidence is attached with `subject` and
found through the OCI 1.1 referrers API, or the referrers tag schema where the registry lacks
it (distribution 2.x does). Every pull is bounded (manifest and blob size limits, a timeout)
and verified while it streams; a registry that answers with bytes that do not match their
digest, a manifest of the wrong media type, or referrers of another subject is refused, and
nothing it sent is kept.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

import httpx

from ..artifact import (
    ANN_AGENT,
    ANN_VERSION,
    INDEX_MEDIA_TYPE,
    MANIFEST_MEDIA_TYPE,
    MAX_MANIFEST_BYTES,
    WASM_CONFIG_MEDIA_TYPE,
)
from ..digest import DIGEST_RE, digest_of
from ..errors import ConfigError, DigestMismatchError, NotFoundError, StoreError
from .base import ArtifactStore, IndexEntry, StoredAgent, referrers_tag

ACCEPT_MANIFESTS = f"{MANIFEST_MEDIA_TYPE}, {INDEX_MEDIA_TYPE}"
REFERRERS_TAG_RE = re.compile(r"^sha256-[0-9a-f]{64}$")
MAX_TAGS = 10_000
MAX_REPOSITORIES = 10_000
CHUNK = 1 << 16
PLAIN_HTTP_ENV = "AGENTFACTORY_REGISTRY_PLAIN_HTTP"
CA_ENV = "AGENTFACTORY_REGISTRY_CA"
TIMEOUT_ENV = "AGENTFACTORY_REGISTRY_TIMEOUT"


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def parse_store_url(url: str) -> tuple[str, str, bool, Path | None]:
    """`oci://host[:port]/prefix[?plain-http=true&ca=PATH]` → (host, prefix, plain_http, ca_file)."""
    parts = urlsplit(url)
    if parts.scheme != "oci" or not parts.netloc:
        raise ConfigError(f"store URL {url!r}: expected oci://HOST[:PORT]/PREFIX")
    if parts.username or parts.password:
        raise ConfigError(f"store URL {url!r}: no credentials in URLs; use a Docker config.json or "
                          "AGENTFACTORY_REGISTRY_USERNAME / AGENTFACTORY_REGISTRY_PASSWORD")
    prefix = parts.path.strip("/")
    if prefix and not re.fullmatch(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*",
                                   prefix):
        raise ConfigError(f"store URL {url!r}: {prefix!r} is not a valid repository path "
                          "(lower-case letters, digits, '.', '_', '-', separated by '/')")
    query = parse_qs(parts.query)
    unknown = set(query) - {"plain-http", "ca"}
    if unknown:
        raise ConfigError(f"store URL {url!r}: unknown option(s) {', '.join(sorted(unknown))} (known: plain-http, ca)")
    plain = _truthy(query.get("plain-http", [""])[0]) or _truthy(os.environ.get(PLAIN_HTTP_ENV))
    ca = query.get("ca", [os.environ.get(CA_ENV, "")])[0]
    ca_file = Path(ca).expanduser() if ca else None
    if ca_file is not None and not ca_file.is_file():
        raise ConfigError(f"store URL {url!r}: CA file {ca_file} not found")
    return parts.netloc, prefix, plain, ca_file


class RegistryStore(ArtifactStore):
    """An OCI distribution registry (distribution, Harbor, GHCR, Zot, …)."""

    def __init__(self, url: str, *, client: httpx.Client | None = None) -> None:
        from .registry_auth import make_client, resolve_credentials

        self.host, self.prefix, self.plain_http, self.ca_file = parse_store_url(url)
        self.url = f"oci://{self.host}/{self.prefix}" if self.prefix else f"oci://{self.host}"
        self.base = f"{'http' if self.plain_http else 'https'}://{self.host}/v2"
        timeout = float(os.environ.get(TIMEOUT_ENV, "30"))
        self._has_referrers_api: bool | None = None
        self.client = client or make_client(self.host, plain_http=self.plain_http, ca_file=self.ca_file,
                                            credentials=resolve_credentials(self.host), timeout=timeout)

    # -- HTTP -------------------------------------------------------------------------------------
    def _repo(self, name: str) -> str:
        if not re.fullmatch(r"[a-z0-9]+(?:-[a-z0-9]+)*", name or ""):
            raise StoreError(f"{self.url}: {name!r} is not an agent name")
        return f"{self.prefix}/{name}" if self.prefix else name

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self.client.request(method, f"{self.base}/{path}", **kwargs)
        except httpx.TimeoutException:
            raise StoreError(f"{self.url}: {method} {path} timed out") from None
        except httpx.HTTPError as exc:
            raise StoreError(f"{self.url}: {method} {path} failed: {exc}") from None

    def _fail(self, response: httpx.Response, what: str) -> StoreError:
        detail = ""
        try:
            errors = response.json().get("errors") or []
            detail = "; ".join(f"{e.get('code')}: {e.get('message')}" for e in errors if isinstance(e, dict))
        except (ValueError, AttributeError):
            detail = response.text[:200]
        hint = " (check credentials: Docker config.json or AGENTFACTORY_REGISTRY_USERNAME/PASSWORD)" \
            if response.status_code in (401, 403) else ""
        return StoreError(f"{self.url}: {what}: HTTP {response.status_code} {detail}{hint}".rstrip())

    def _read_bounded(self, method: str, path: str, max_bytes: int, what: str,
                      headers: dict[str, str] | None = None) -> tuple[httpx.Response, bytes] | None:
        """Stream a body, refusing it past `max_bytes`; None on 404."""
        try:
            with self.client.stream(method, f"{self.base}/{path}", headers=headers or {}) as response:
                if response.status_code == 404:
                    return None
                if response.status_code != 200:
                    response.read()
                    raise self._fail(response, what)
                declared = response.headers.get("content-length")
                if declared is not None and declared.isdigit() and int(declared) > max_bytes:
                    raise StoreError(f"{self.url}: {what} is {declared} bytes; the limit is {max_bytes}")
                body = bytearray()
                for chunk in response.iter_bytes(CHUNK):
                    body += chunk
                    if len(body) > max_bytes:
                        raise StoreError(f"{self.url}: {what} is larger than the {max_bytes}-byte limit")
                return response, bytes(body)
        except httpx.TimeoutException:
            raise StoreError(f"{self.url}: {what} timed out") from None
        except httpx.HTTPError as exc:
            raise StoreError(f"{self.url}: {what} failed: {exc}") from None

    # -- primitives ------------------------------------------------------------------------------
    def tag_for(self, name: str, version: str) -> str:
        return version.replace("+", "_")  # '+' (semver build metadata) is not allowed in tags

    def has_blob(self, digest: str, *, name: str) -> bool:
        r = self._request("HEAD", f"{self._repo(name)}/blobs/{digest}")
        if r.status_code in (200, 404):
            return r.status_code == 200
        raise self._fail(r, f"HEAD blob {digest}")

    def put_blob(self, data: bytes, digest: str, *, name: str) -> None:
        if digest_of(data) != digest:
            raise DigestMismatchError(f"{self.url}: refusing to push bytes that do not hash to {digest}")
        if self.has_blob(digest, name=name):
            return
        repo = self._repo(name)
        start = self._request("POST", f"{repo}/blobs/uploads/")
        if start.status_code != 202 or "location" not in start.headers:
            raise self._fail(start, f"start upload of {digest}")
        location = start.headers["location"]
        upload = location if location.startswith("http") else f"{self.base.removesuffix('/v2')}{location}"
        sep = "&" if "?" in upload else "?"
        try:
            done = self.client.put(f"{upload}{sep}digest={quote(digest)}", content=data,
                                   headers={"Content-Type": "application/octet-stream"})
        except httpx.HTTPError as exc:
            raise StoreError(f"{self.url}: upload of {digest} failed: {exc}") from None
        if done.status_code != 201:
            raise self._fail(done, f"upload of {digest}")

    def get_blob(self, digest: str, max_bytes: int, *, name: str) -> bytes:
        found = self._read_bounded("GET", f"{self._repo(name)}/blobs/{digest}", max_bytes, f"blob {digest}")
        if found is None:
            raise NotFoundError(f"{self.url}: blob {digest} of {name!r} not found")
        actual = digest_of(found[1])
        if actual != digest:
            raise DigestMismatchError(f"{self.url}: blob {digest} of {name!r}: the registry sent bytes that hash to "
                                      f"{actual}: refused")
        return found[1]

    def put_manifest(self, data: bytes, digest: str, *, name: str, media_type: str, tag: str | None,
                     annotations: dict[str, str]) -> None:
        reference = tag or digest
        r = self._request("PUT", f"{self._repo(name)}/manifests/{reference}", content=data,
                          headers={"Content-Type": media_type})
        if r.status_code != 201:
            raise self._fail(r, f"PUT manifest {reference}")
        echoed = r.headers.get("docker-content-digest")
        if echoed and echoed != digest:
            raise DigestMismatchError(f"{self.url}: stored manifest {reference} as {echoed}, expected {digest}")

    def get_manifest(self, reference: str, *, name: str) -> tuple[str, bytes] | None:
        found = self._read_bounded("GET", f"{self._repo(name)}/manifests/{reference}", MAX_MANIFEST_BYTES,
                                   f"manifest {reference}", headers={"Accept": ACCEPT_MANIFESTS})
        if found is None:
            return None
        response, data = found
        digest = digest_of(data)
        if DIGEST_RE.match(reference) and digest != reference:
            raise DigestMismatchError(f"{self.url}: manifest {reference} of {name!r}: the registry sent bytes that "
                                      f"hash to {digest}: refused")
        media_type = response.headers.get("content-type", "").split(";")[0].strip()
        if media_type not in (MANIFEST_MEDIA_TYPE, INDEX_MEDIA_TYPE):
            raise StoreError(f"{self.url}: manifest {reference} of {name!r} has media type {media_type!r}, "
                             f"not {MANIFEST_MEDIA_TYPE} or {INDEX_MEDIA_TYPE}: refused")
        try:
            declared = json.loads(data).get("mediaType")
        except (ValueError, AttributeError):
            raise StoreError(f"{self.url}: manifest {reference} of {name!r} is not a JSON object") from None
        if declared != media_type:
            raise StoreError(f"{self.url}: manifest {reference} of {name!r} says mediaType {declared!r} but was "
                             f"served as {media_type!r}: refused")
        return digest, data

    # -- listing ---------------------------------------------------------------------------------
    def _paginate(self, path: str, key: str, limit: int) -> list[str]:
        out: list[str] = []
        url: str | None = f"{path}?n=1000"
        while url is not None:
            r = self._request("GET", url)
            if r.status_code == 404:
                return out
            if r.status_code != 200:
                raise self._fail(r, f"GET {path}")
            try:
                items = r.json().get(key) or []
            except (ValueError, AttributeError):
                raise StoreError(f"{self.url}: {path} did not answer JSON") from None
            out.extend(str(i) for i in items)
            if len(out) > limit:
                raise StoreError(f"{self.url}: {path} lists more than {limit} {key}")
            nxt = r.links.get("next", {}).get("url")
            url = nxt.split("/v2/", 1)[1] if nxt and "/v2/" in nxt else None
        return out

    def entries(self, name: str | None = None) -> list[IndexEntry]:
        if name is not None:
            names = [name]
        else:
            start = f"{self.prefix}/" if self.prefix else ""
            names = [r[len(start):] for r in self._paginate("_catalog", "repositories", MAX_REPOSITORIES)
                     if r.startswith(start) and "/" not in r[len(start):]]
        out: list[IndexEntry] = []
        for agent in names:
            for tag in self._paginate(f"{self._repo(agent)}/tags/list", "tags", MAX_TAGS):
                if REFERRERS_TAG_RE.match(tag):
                    continue
                found = self.get_manifest(tag, name=agent)
                if found is None:
                    continue
                digest, data = found
                doc = json.loads(data)
                if doc.get("config", {}).get("mediaType") != WASM_CONFIG_MEDIA_TYPE or not doc.get("layers"):
                    continue  # another kind of image in the same repository
                ann = doc.get("annotations") or {}
                out.append(IndexEntry(manifest_digest=digest, name=str(ann.get(ANN_AGENT, agent)),
                                      version=str(ann.get(ANN_VERSION, tag)),
                                      artifact_digest=str(doc["layers"][0].get("digest")), tag=tag))
        return out

    # -- referrers: the OCI 1.1 API first, the tag schema where the registry lacks it ---------------
    def referrers_index(self, agent: StoredAgent) -> dict[str, Any]:
        path = f"{self._repo(agent.name)}/referrers/{agent.manifest_digest}"
        found = self._read_bounded("GET", path, MAX_MANIFEST_BYTES, f"referrers of {agent.manifest_digest}",
                                   headers={"Accept": INDEX_MEDIA_TYPE}) if self._referrers_api(agent.name) else None
        if found is not None:
            return self._check_index(found[1], f"{self.url}: referrers of {agent.manifest_digest}")
        return self._referrers_index(agent)

    def _referrers_api(self, name: str) -> bool:
        """Whether the registry serves the referrers API (distribution 2.x answers 404 to it)."""
        if self._has_referrers_api is None:
            probe = self._request("GET", f"{self._repo(name)}/referrers/sha256:{'0' * 64}",
                                  headers={"Accept": INDEX_MEDIA_TYPE})
            self._has_referrers_api = probe.status_code == 200 and \
                probe.headers.get("content-type", "").startswith(INDEX_MEDIA_TYPE)
        return self._has_referrers_api


__all__ = ["RegistryStore", "parse_store_url", "referrers_tag"]
