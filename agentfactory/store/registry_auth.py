"""Authentication to OCI distribution registries, the way container tools do it.

Requests go out anonymously first. A `401` names what the registry wants in `WWW-Authenticate`:
`Basic` → retry once with the username and password; `Bearer` → the registry token flow
(https://distribution.github.io/distribution/spec/auth/token/): ask the realm for a token for the
challenge's service and scope, retry once with it, and cache it per (realm, service, scope) until
`expires_in` runs out. A second `401` after presenting credentials is the caller's answer: no loops.

Credentials are found by `resolve_credentials` (explicit arguments, then the environment, then the
Docker `config.json` with its credential helpers) and are only ever sent to the host they are for:
the registry host itself, and a token realm on the same hostname (or one configured in the Docker
config for the realm's own host). Basic credentials and identity tokens never travel over plain
HTTP unless the store was explicitly configured for it. `make_client` builds the `httpx.Client`
with these rules, a custom CA, loopback without proxies, and redirects only for blob downloads.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import os
import re
import shutil
import ssl
import subprocess
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import certifi
import httpx

from .. import __version__
from ..errors import ConfigError, StoreError

ENV_USERNAME = "AGENTFACTORY_REGISTRY_USERNAME"
ENV_PASSWORD = "AGENTFACTORY_REGISTRY_PASSWORD"
# Wired by the registry store backend (documented in docs/registry.md), named here so both agree.
ENV_CA = "AGENTFACTORY_REGISTRY_CA"
ENV_PLAIN_HTTP = "AGENTFACTORY_REGISTRY_PLAIN_HTTP"

MAX_DOCKER_CONFIG_BYTES = 4 * 1024 * 1024
MAX_HELPER_OUTPUT_BYTES = 1024 * 1024
MAX_TOKEN_RESPONSE_BYTES = 1024 * 1024
MAX_CA_FILE_BYTES = 4 * 1024 * 1024
MAX_CACHED_TOKENS = 512
HELPER_TIMEOUT_S = 30.0
DEFAULT_TOKEN_LIFETIME_S = 60.0  # the token spec's default when the realm omits `expires_in`
MAX_REDIRECTS = 5

DOCKER_HUB_INDEX = "https://index.docker.io/v1/"
DOCKER_HUB_HOSTS = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
DOCKER_HUB_REALM_HOST = "auth.docker.io"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "[::1]")

USER_AGENT = f"agentfactory/{__version__}"
_HELPER_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_TCHAR = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_REPO_PATH_RE = re.compile(r"^/v2/(?P<name>.+?)/(?P<kind>blobs|manifests|tags|referrers)(?:/|$)")
_BLOB_DOWNLOAD_RE = re.compile(r"^/v2/.+/blobs/(?!uploads(?:/|$))[^/]+$")


class RegistryAuthError(StoreError):
    """The registry's auth machinery answered something unusable (no token, a malformed realm)."""


# --- credentials ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Credentials:
    """What we present to a registry: a username and password, or a token.

    `identity_token` is an OAuth2 refresh token (Docker's `identitytoken`, a helper's `<token>`
    user), exchanged at the token realm; `registry_token` is a bearer token sent as is. Secrets
    stay out of `repr`, so credentials never end up in a log by accident.
    """

    username: str = ""
    password: str = field(default="", repr=False)
    identity_token: str = field(default="", repr=False)
    registry_token: str = field(default="", repr=False)
    source: str = field(default="", compare=False)  # where they were found, for messages

    def __post_init__(self) -> None:
        if not ((self.username and self.password) or self.identity_token or self.registry_token):
            raise ValueError("credentials need a username and password, an identity token or a registry token")

    @property
    def has_password(self) -> bool:
        return bool(self.username and self.password)

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")


def resolve_credentials(host: str, *, username: str | None = None, password: str | None = None,
                        docker_config: Path | None = None) -> Credentials | None:
    """Credentials for registry `host` (`name[:port]`), or None to go anonymous.

    Order: explicit `username`/`password`; then `AGENTFACTORY_REGISTRY_USERNAME`/`_PASSWORD`; then
    the Docker config (`docker_config`, a file or the folder holding `config.json`; else
    `$DOCKER_CONFIG/config.json`; else `~/.docker/config.json`): `credHelpers[host]`, then
    `credsStore`, then the inline `auths` entry. The first source that has something wins.
    """
    host = _normalize_host(host)
    if username or password:
        if not (username and password):
            raise ConfigError("a registry username and password go together: got only the "
                              f"{'username' if username else 'password'}")
        return Credentials(username, password, source="arguments")
    env_user, env_password = os.environ.get(ENV_USERNAME, ""), os.environ.get(ENV_PASSWORD, "")
    if env_user or env_password:
        if not (env_user and env_password):
            missing = ENV_PASSWORD if env_user else ENV_USERNAME
            raise ConfigError(f"{ENV_USERNAME} and {ENV_PASSWORD} go together: {missing} is not set")
        return Credentials(env_user, env_password, source=f"{ENV_USERNAME}/{ENV_PASSWORD}")
    return docker_config_credentials(host, docker_config)


def docker_config_path(docker_config: Path | None = None) -> Path | None:
    """The Docker `config.json` to read: the given file or folder, `$DOCKER_CONFIG`, or `~/.docker`."""
    if docker_config is not None:
        return docker_config / "config.json" if docker_config.is_dir() else docker_config
    if os.environ.get("DOCKER_CONFIG"):
        return Path(os.environ["DOCKER_CONFIG"]) / "config.json"
    try:
        return Path.home() / ".docker" / "config.json"
    except RuntimeError:  # no home folder: nothing to read
        return None


def docker_config_credentials(host: str, docker_config: Path | None = None) -> Credentials | None:
    """Credentials for `host` from the Docker config alone (helpers first, then `auths`)."""
    host = _normalize_host(host)
    path = docker_config_path(docker_config)
    if path is None:
        return None
    config = _load_docker_config(path)
    if config is None:
        return None
    hub = host in DOCKER_HUB_HOSTS
    server = DOCKER_HUB_INDEX if hub else host  # what `docker login` stores, so what helpers know
    helpers = _str_map(config, "credHelpers", path)
    helper_key = _find_key(helpers, host)
    helper, where = None, ""
    if helper_key is not None:
        helper, where = helpers[helper_key], f"credHelpers[{json.dumps(helper_key)}]"
    elif config.get("credsStore") is not None:
        store = config["credsStore"]
        if not isinstance(store, str):
            raise ConfigError(f"{path}: field credsStore must be a string (a credential helper name)")
        helper, where = (store or None), "credsStore"
    if helper is not None:
        found = _run_helper(helper, server, f"{path}: {where}")
        if found is not None:
            return found
    auths = config.get("auths", {})
    if not isinstance(auths, dict):
        raise ConfigError(f"{path}: field auths must be an object of registry → credentials")
    key = _find_key(auths, host)
    return None if key is None else _auth_entry(auths[key], f"{path}: auths[{json.dumps(key)}]")


def _normalize_host(value: str) -> str:
    """`https://Host:5000/v1/` → `host:5000`: config keys and store URLs name hosts in several ways."""
    text = value.strip()
    if "://" in text:
        text = text.split("://", 1)[1]
    text = text.split("/", 1)[0].lower()
    if text.endswith(":443"):
        text = text[:-4]
    return text


def _find_key(entries: dict[str, Any], host: str) -> str | None:
    """The entry for `host`: exact key, `https://host`, then any key naming the same host."""
    candidates = [host, f"https://{host}", f"http://{host}"]
    if host in DOCKER_HUB_HOSTS:
        candidates = [DOCKER_HUB_INDEX, *candidates, *sorted(DOCKER_HUB_HOSTS)]
    for candidate in candidates:
        if candidate in entries:
            return candidate
    for key in sorted(entries):
        normalized = _normalize_host(key)
        if normalized == host or (host in DOCKER_HUB_HOSTS and normalized in DOCKER_HUB_HOSTS):
            return key
    return None


def _load_docker_config(path: Path) -> dict[str, Any] | None:
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_DOCKER_CONFIG_BYTES + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the Docker config: {exc.strerror or exc}") from exc
    if len(data) > MAX_DOCKER_CONFIG_BYTES:
        raise ConfigError(f"{path}: the Docker config is larger than {MAX_DOCKER_CONFIG_BYTES} bytes")
    try:
        config = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: the Docker config is not UTF-8 text") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})") from exc
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: the Docker config must be a JSON object")
    return config


def _str_map(config: dict[str, Any], name: str, path: Path) -> dict[str, str]:
    value = config.get(name, {})
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise ConfigError(f"{path}: field {name} must be an object of registry → helper name")
    return value


def _auth_entry(entry: Any, where: str) -> Credentials | None:
    """One `auths` entry: `auth` (base64 `user:pass`) wins over `username`/`password`, as in Docker."""
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: must be an object")
    for name in ("auth", "username", "password", "identitytoken", "registrytoken"):
        if not isinstance(entry.get(name, ""), str):
            raise ConfigError(f"{where}.{name}: must be a string")
    username, password = entry.get("username", ""), entry.get("password", "")
    if entry.get("auth"):
        try:
            decoded = base64.b64decode(entry["auth"], validate=True).decode("utf-8")
        except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{where}.auth: not base64 of `user:password`") from exc
        username, sep, password = decoded.partition(":")
        if not sep or not username:
            raise ConfigError(f"{where}.auth: not base64 of `user:password` (no ':' or no user)")
    if entry.get("identitytoken"):
        return Credentials(username=username, identity_token=entry["identitytoken"], source=where)
    if entry.get("registrytoken"):
        return Credentials(username=username, registry_token=entry["registrytoken"], source=where)
    if username and password:
        return Credentials(username, password, source=where)
    return None  # `{}` placeholders are what Docker writes when a helper holds the secret


def _run_helper(helper: str, server: str, where: str) -> Credentials | None:
    """`docker-credential-<helper> get` with the server on stdin; None when it holds nothing for it."""
    if not _HELPER_NAME_RE.fullmatch(helper):
        raise ConfigError(f"{where}: {helper!r} is not a credential helper name")
    program = f"docker-credential-{helper}"
    binary = shutil.which(program)
    if binary is None:
        raise ConfigError(f"{where}: the credential helper {program} is not on PATH; install it, "
                          "or remove it from the Docker config")
    try:
        done = subprocess.run([binary, "get"], input=server.encode(), capture_output=True,
                              timeout=HELPER_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ConfigError(f"{where}: {program} get did not answer within {HELPER_TIMEOUT_S:.0f} s") from exc
    except OSError as exc:
        raise ConfigError(f"{where}: cannot run {program}: {exc.strerror or exc}") from exc
    output = done.stdout.decode("utf-8", "replace").strip()
    if done.returncode != 0:
        message = output or done.stderr.decode("utf-8", "replace").strip()
        if "credentials not found" in message.lower():
            return None
        raise ConfigError(f"{where}: {program} get failed (exit {done.returncode}): {message[:300]}")
    if len(done.stdout) > MAX_HELPER_OUTPUT_BYTES:
        raise ConfigError(f"{where}: {program} get answered more than {MAX_HELPER_OUTPUT_BYTES} bytes")
    try:
        answer = json.loads(output)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where}: {program} get did not answer JSON: {exc.msg}") from exc
    user = answer.get("Username") if isinstance(answer, dict) else None
    secret = answer.get("Secret") if isinstance(answer, dict) else None
    if not isinstance(user, str) or not isinstance(secret, str):
        raise ConfigError(f"{where}: {program} get must answer {{\"Username\": …, \"Secret\": …}} strings")
    if not secret:
        return None
    if user == "<token>":  # the helper protocol's marker for an identity token
        return Credentials(identity_token=secret, source=program)
    if not user:
        raise ConfigError(f"{where}: {program} get answered a secret without a Username")
    return Credentials(user, secret, source=program)


# --- WWW-Authenticate -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Challenge:
    """One challenge of a `WWW-Authenticate` header: scheme (lower case) and its parameters."""

    scheme: str
    params: dict[str, str]


def parse_www_authenticate(values: str | Iterable[str]) -> list[Challenge]:
    """Every challenge in one or more `WWW-Authenticate` values (RFC 7235, leniently).

    Quoted values may hold commas and escaped quotes (`scope="repository:x:pull,push"`), several
    challenges may share one header, parameter names are case-insensitive (the first one wins).
    """
    texts = [values] if isinstance(values, str) else list(values)
    challenges: list[Challenge] = []
    for text in texts:
        challenges.extend(_parse_one_header(text))
    return challenges


def _parse_one_header(text: str) -> Iterator[Challenge]:
    # A token followed by '=' is a parameter of the current challenge; any other token starts a new
    # challenge. (token68 forms such as `Negotiate abc==` are not used by registries; they parse into
    # harmless junk parameters of a scheme we ignore.)
    i, n = 0, len(text)
    scheme = ""
    params: dict[str, str] = {}
    while i < n:
        while i < n and text[i] in " \t,":
            i += 1
        start = i
        while i < n and text[i] in _TCHAR:
            i += 1
        name = text[start:i]
        if not name:
            i += 1  # a stray character: skip it rather than give up on the rest
            continue
        j = i
        while j < n and text[j] in " \t":
            j += 1
        if j < n and text[j] == "=":
            i = j + 1
            while i < n and text[i] in " \t":
                i += 1
            chars: list[str] = []
            if i < n and text[i] == '"':
                i += 1
                while i < n and text[i] != '"':
                    if text[i] == "\\" and i + 1 < n:
                        i += 1
                    chars.append(text[i])
                    i += 1
                i += 1  # the closing quote (or past the end when it is missing)
            else:
                while i < n and text[i] not in " \t,":
                    chars.append(text[i])
                    i += 1
            if scheme:
                params.setdefault(name.lower(), "".join(chars))
            continue
        if scheme:
            yield Challenge(scheme, params)
        scheme, params = name.lower(), {}
    if scheme:
        yield Challenge(scheme, params)


def canonical_scope(scope: str) -> str:
    """Scopes sorted, actions sorted and unique: distribution 2.8 names the same scope as
    `pull,push` or `push,pull` from one request to the next (it walks a Go map), and the token
    cache must see one key for both."""
    canonical = set()
    for item in scope.split():
        resource, sep, actions = item.rpartition(":")
        canonical.add(f"{resource}:{','.join(sorted(set(filter(None, actions.split(',')))))}" if sep else item)
    return " ".join(sorted(canonical))


def infer_scope(method: str, path: str) -> str:
    """The scope distribution will challenge a request with, so a cached token can go out first.

    A wrong guess costs one round trip (the 401 then names the real scope), never correctness.
    """
    if path.rstrip("/") == "/v2":
        return ""
    if path == "/v2/_catalog":
        return "registry:catalog:*"
    match = _REPO_PATH_RE.match(path)
    if match is None:
        return ""
    method = method.upper()
    actions = "pull" if method in ("GET", "HEAD") else "delete" if method == "DELETE" else "pull,push"
    return f"repository:{match['name']}:{actions}"


# --- the httpx auth flow ----------------------------------------------------------------------------

class _BoundedStream(httpx.SyncByteStream, httpx.AsyncByteStream):
    """Wraps a token response's body so that a hostile realm cannot make us buffer gigabytes."""

    def __init__(self, inner: httpx.SyncByteStream | httpx.AsyncByteStream, limit: int, where: str) -> None:
        self._inner, self._limit, self._where = inner, limit, where

    def _count(self, total: int) -> None:
        if total > self._limit:
            raise RegistryAuthError(f"{self._where}: the token answer is larger than {self._limit} bytes")

    def __iter__(self) -> Iterator[bytes]:
        assert isinstance(self._inner, httpx.SyncByteStream)
        total = 0
        for chunk in self._inner:
            total += len(chunk)
            self._count(total)
            yield chunk

    async def __aiter__(self) -> AsyncIterator[bytes]:
        assert isinstance(self._inner, httpx.AsyncByteStream)
        total = 0
        async for chunk in self._inner:
            total += len(chunk)
            self._count(total)
            yield chunk

    def close(self) -> None:
        if isinstance(self._inner, httpx.SyncByteStream):
            self._inner.close()

    async def aclose(self) -> None:
        if isinstance(self._inner, httpx.AsyncByteStream):
            await self._inner.aclose()


def _plain_http_refused(host: str, url: httpx.URL, what: str) -> ConfigError:
    return ConfigError(f"refusing to send {what} for {host} over plain HTTP ({url.copy_with(query=None)}): use "
                       f"https, or allow plain HTTP explicitly (plain-http=true in the store URL, or "
                       f"{ENV_PLAIN_HTTP}=1)")


class RegistryAuth(httpx.Auth):
    """`httpx.Auth` for one registry host: anonymous first, then Basic or the bearer-token flow.

    Where credentials go (the rule `docs/registry.md` documents):

    * to the registry only for requests whose host and port are the registry's (`host`);
    * to a token realm when it is on the same hostname as the registry (any port: a token server
      beside its registry is the usual set-up), or is Docker Hub's `auth.docker.io` for Docker
      Hub; for any other realm host only the credentials `realm_credentials(realm_host)` returns
      (`make_client` looks the realm host up in the Docker config), anonymous otherwise;
    * Basic credentials and identity tokens never over plain HTTP unless `allow_plain_http`:
      a `ConfigError` says so instead. Bearer tokens a realm issued for this registry are sent
      to it as they are (short-lived, scoped).

    Retries are bounded: the registry sees a request at most twice (anonymous or with what
    worked before, then once with fresh credentials), the realm at most once; a `401` after
    fresh credentials, or the realm's refusal, is the response the caller gets. Thread-safe:
    the token cache is shared by every request of the client.
    """

    requires_request_body = True  # a retry must be able to send the body again

    def __init__(self, host: str, credentials: Credentials | None = None, *, allow_plain_http: bool = False,
                 realm_credentials: Callable[[str], Credentials | None] | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.host = _normalize_host(host)
        if not self.host:
            raise ConfigError("the registry host is empty")
        self.credentials = credentials
        self.allow_plain_http = allow_plain_http
        self._realm_credentials = realm_credentials
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens: dict[tuple[str, str, str], tuple[str, float]] = {}
        self._bearer_realm: tuple[str, str] | None = None  # (realm, service) last challenged with
        self._basic_works = False  # Basic was accepted once: send it up front from now on
        self.token_requests = 0  # requests made to token realms (for metrics and tests)

    # -- driving the flow: token answers are read (bounded) before the flow looks at them --

    def sync_auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        request.read()
        flow = self._flow(request)
        outgoing = next(flow)
        while True:
            response = yield outgoing
            if outgoing is not request:
                response.stream = _BoundedStream(response.stream, MAX_TOKEN_RESPONSE_BYTES, str(outgoing.url))
                response.read()
            try:
                outgoing = flow.send(response)
            except StopIteration:
                return

    async def async_auth_flow(self, request: httpx.Request) -> AsyncGenerator[httpx.Request, httpx.Response]:
        # The same flow for async clients (the webhook plane); httpx needs both generator kinds.
        await request.aread()
        flow = self._flow(request)
        outgoing = next(flow)
        while True:
            response = yield outgoing
            if outgoing is not request:
                response.stream = _BoundedStream(response.stream, MAX_TOKEN_RESPONSE_BYTES, str(outgoing.url))
                await response.aread()
            try:
                outgoing = flow.send(response)
            except StopIteration:
                return

    # -- the flow itself --

    def _flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if "Authorization" in request.headers or not self._is_registry(request.url):
            yield request  # the caller chose its own header, or the host is not the one we hold keys for
            return
        presented = self._preemptive(request)
        response = yield request
        if response.status_code != 401:
            return
        offered = parse_www_authenticate(response.headers.get_list("WWW-Authenticate"))
        challenges = {c.scheme: c for c in reversed(offered)}  # the first challenge of a scheme wins
        if "bearer" in challenges:
            bearer = challenges["bearer"]
            realm, service = bearer.params.get("realm", ""), bearer.params.get("service", "")
            scope = canonical_scope(bearer.params.get("scope", ""))
            if not realm:
                return
            with self._lock:
                self._bearer_realm = (realm, service)
                if presented is not None and presented.startswith("Bearer "):
                    self._forget(presented[7:])  # revoked or expired early: fetch a fresh one, once
            if self.credentials is not None and self.credentials.registry_token:
                if presented == f"Bearer {self.credentials.registry_token}":
                    return
                token: str | None = self.credentials.registry_token
            else:
                token = yield from self._token(realm, service, scope)
            if token is None:
                return  # the realm refused: its answer is the caller's answer
            request.headers["Authorization"] = f"Bearer {token}"
            response = yield request
            if response.status_code == 401:
                with self._lock:
                    self._forget(token)
            return
        if "basic" in challenges:
            if self.credentials is None or not self.credentials.has_password or (
                    presented is not None and presented.startswith("Basic ")):
                return  # nothing (else) to offer: a 401 after our password is final
            if request.url.scheme != "https" and not self.allow_plain_http:
                raise _plain_http_refused(self.host, request.url, "Basic credentials")
            request.headers["Authorization"] = self.credentials.basic_header()
            response = yield request
            if response.status_code != 401:
                with self._lock:
                    self._basic_works = True

    def _preemptive(self, request: httpx.Request) -> str | None:
        """Attach what worked before (Basic, or a cached token for the scope this request will need)."""
        with self._lock:
            header: str | None = None
            if self._basic_works and self.credentials is not None and self.credentials.has_password and (
                    request.url.scheme == "https" or self.allow_plain_http):
                header = self.credentials.basic_header()
            elif self._bearer_realm is not None:
                realm, service = self._bearer_realm
                cached = self._cached((realm, service, infer_scope(request.method, request.url.path)))
                if cached is not None:
                    header = f"Bearer {cached}"
        if header is not None:
            request.headers["Authorization"] = header
        return header

    def _token(self, realm: str, service: str, scope: str) -> Generator[httpx.Request, httpx.Response, str | None]:
        """A bearer token for (realm, service, scope): from the cache, or asked of the realm."""
        key = (realm, service, scope)
        with self._lock:
            cached = self._cached(key)
        if cached is not None:
            return cached
        try:
            realm_url = httpx.URL(realm)
        except httpx.InvalidURL as exc:
            raise RegistryAuthError(f"{self.host}: the registry named a malformed token realm {realm!r}") from exc
        if realm_url.scheme not in ("http", "https") or not realm_url.host:
            raise RegistryAuthError(f"{self.host}: the token realm {realm!r} is not an http(s) URL")
        credentials = self._for_realm(realm_url)
        scopes = scope.split()
        headers = {"User-Agent": USER_AGENT, "Accept": "application/json", "Accept-Encoding": "identity"}
        if (credentials is not None and (credentials.identity_token or credentials.has_password)
                and realm_url.scheme != "https" and not self.allow_plain_http):
            raise _plain_http_refused(self.host, realm_url, "credentials to the token realm")
        if credentials is not None and credentials.identity_token:
            # The OAuth2 refresh-token grant, as docker does with an `identitytoken`; scopes space-separated.
            form = {"grant_type": "refresh_token", "refresh_token": credentials.identity_token,
                    "client_id": "agentfactory", "service": service}
            if scopes:
                form["scope"] = " ".join(scopes)
            token_request = httpx.Request("POST", realm_url, data=form, headers=headers)
        else:
            params: list[tuple[str, str | int | float | bool | None]] = [("service", service)] if service else []
            params += [("scope", s) for s in scopes]
            if credentials is not None and credentials.has_password:
                params.append(("account", credentials.username))
                headers["Authorization"] = credentials.basic_header()
            token_request = httpx.Request("GET", realm_url.copy_merge_params(params), headers=headers)
        with self._lock:
            self.token_requests += 1
        response = yield token_request
        if response.status_code != 200:
            return None
        try:
            answer = response.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RegistryAuthError(f"{realm}: the token realm did not answer JSON") from exc
        token = answer.get("token") or answer.get("access_token") if isinstance(answer, dict) else None
        if not isinstance(token, str) or not token or any(c in token for c in "\r\n"):
            raise RegistryAuthError(f"{realm}: the token realm's answer holds no token (`token` or `access_token`)")
        lifetime = answer.get("expires_in", DEFAULT_TOKEN_LIFETIME_S)
        if isinstance(lifetime, bool) or not isinstance(lifetime, int | float):
            lifetime = DEFAULT_TOKEN_LIFETIME_S
        lifetime = float(lifetime)
        # Stop using a token a little before the realm does, so it never expires in flight.
        usable = max(0.0, lifetime - min(10.0, lifetime / 10))
        with self._lock:
            self._store(key, token, self._clock() + usable)
        return token

    # -- helpers --

    def _is_registry(self, url: httpx.URL) -> bool:
        if url.scheme not in ("http", "https"):
            return False
        mine = httpx.URL(f"{url.scheme}://{self.host}")
        return (url.host or "").lower() == (mine.host or "").lower() and url.port == mine.port

    def _for_realm(self, realm: httpx.URL) -> Credentials | None:
        """Credentials we may present to this realm (see the class docstring for the rule)."""
        registry_hostname = (httpx.URL(f"https://{self.host}").host or "").lower()
        realm_hostname = (realm.host or "").lower()
        if self.credentials is not None and not self.credentials.registry_token and (
                realm_hostname == registry_hostname
                or (registry_hostname in DOCKER_HUB_HOSTS and realm_hostname == DOCKER_HUB_REALM_HOST)):
            return self.credentials
        if self._realm_credentials is not None:
            realm_host = realm_hostname if realm.port is None else f"{realm_hostname}:{realm.port}"
            return self._realm_credentials(realm_host)
        return None

    def _cached(self, key: tuple[str, str, str]) -> str | None:
        entry = self._tokens.get(key)
        if entry is None:
            return None
        if entry[1] <= self._clock():
            del self._tokens[key]
            return None
        return entry[0]

    def _store(self, key: tuple[str, str, str], token: str, expires_at: float) -> None:
        if expires_at <= self._clock():
            return
        if len(self._tokens) >= MAX_CACHED_TOKENS:
            now = self._clock()
            for stale in [k for k, (_, until) in self._tokens.items() if until <= now]:
                del self._tokens[stale]
            while len(self._tokens) >= MAX_CACHED_TOKENS:
                del self._tokens[next(iter(self._tokens))]  # the oldest entry
        self._tokens[key] = (token, expires_at)

    def _forget(self, token: str) -> None:
        for key in [k for k, (t, _) in self._tokens.items() if t == token]:
            del self._tokens[key]


# --- the client -------------------------------------------------------------------------------------

def ssl_context(ca_file: Path | None) -> ssl.SSLContext:
    """System roots plus certifi's (httpx's own default), plus `ca_file` when given."""
    context = ssl.create_default_context()
    with contextlib.suppress(OSError, ssl.SSLError):
        context.load_verify_locations(cafile=certifi.where())
    if ca_file is not None:
        try:
            size = ca_file.stat().st_size
        except OSError as exc:
            raise ConfigError(f"{ca_file}: cannot read the registry CA file: {exc.strerror or exc}") from exc
        if size > MAX_CA_FILE_BYTES:
            raise ConfigError(f"{ca_file}: the registry CA file is larger than {MAX_CA_FILE_BYTES} bytes")
        try:
            context.load_verify_locations(cafile=str(ca_file))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"{ca_file}: not a PEM file of CA certificates: {exc}") from exc
    return context


def is_blob_download(request: httpx.Request) -> bool:
    """GET/HEAD of `/v2/<name>/blobs/<digest>`: the only requests registries legitimately redirect."""
    return request.method in ("GET", "HEAD") and bool(_BLOB_DOWNLOAD_RE.match(request.url.path))


class RegistryClient(httpx.Client):
    """An `httpx.Client` that follows redirects for blob downloads only, unless told otherwise.

    Registries send blob downloads to storage (S3, a CDN) with a redirect; anything else that
    redirects is unexpected and is better seen by the caller. httpx drops `Authorization` on a
    redirect to another origin, so registry credentials never reach the storage host.
    """

    def send(self, request: httpx.Request, *, stream: bool = False, auth: Any = httpx.USE_CLIENT_DEFAULT,
             follow_redirects: Any = httpx.USE_CLIENT_DEFAULT) -> httpx.Response:
        if follow_redirects is httpx.USE_CLIENT_DEFAULT:
            follow_redirects = is_blob_download(request)
        return super().send(request, stream=stream, auth=auth, follow_redirects=follow_redirects)


def make_client(host: str, *, plain_http: bool, ca_file: Path | None, credentials: Credentials | None,
                timeout: float) -> httpx.Client:
    """An `httpx.Client` for registry `host` (`name[:port]`), with `base_url` set to it.

    * TLS verified against the system roots plus `ca_file` when given; `plain_http=True` is the
      only way to talk plain HTTP, and without it every plain-HTTP request (a token realm, a
      redirect) is refused with a `ConfigError`, so nothing leaves unencrypted by accident.
    * Proxies from the environment apply, except to loopback (127.0.0.1, localhost, [::1]).
    * `timeout` seconds for connect, read, write and pool each.
    * Redirects followed for blob GET/HEAD only (see `RegistryClient`), at most `MAX_REDIRECTS`.
    * Auth by `RegistryAuth`; a token realm on another host gets credentials only from the Docker
      config entry for that realm host.
    """
    normalized = _normalize_host(host)
    if not normalized or any(c in host for c in "/@?# \t\r\n"):
        raise ConfigError(f"registry host {host!r} must be `name[:port]`, without scheme, user or path")
    scheme = "http" if plain_http else "https"
    context = ssl_context(ca_file)

    def refuse_plain_http(request: httpx.Request) -> None:
        if request.url.scheme != "https":
            raise ConfigError(f"refusing a plain-HTTP request to {request.url.copy_with(query=None)} for registry "
                              f"{normalized}: allow plain HTTP explicitly (plain-http=true in the store URL, or "
                              f"{ENV_PLAIN_HTTP}=1)")

    loopback = {f"all://{name}": httpx.HTTPTransport(verify=context, retries=0) for name in LOOPBACK_HOSTS}
    return RegistryClient(
        base_url=f"{scheme}://{normalized}",
        auth=RegistryAuth(normalized, credentials, allow_plain_http=plain_http,
                          realm_credentials=docker_config_credentials),
        verify=context,
        timeout=httpx.Timeout(timeout),
        follow_redirects=False,
        max_redirects=MAX_REDIRECTS,
        trust_env=True,
        mounts=loopback,
        headers={"User-Agent": USER_AGENT},
        event_hooks={"request": [] if plain_http else [refuse_plain_http]},
    )
