"""Registry authentication against the real distribution 2.8 registry (`docker-registry`) on loopback.

One registry per auth mode for the module (plain, htpasswd, token, TLS); tests isolate themselves by
repository name and measure the token server's counters as differences. Where a rule is about what
must NOT leave (Basic over plain HTTP, credentials to a foreign realm), a recording server on
127.0.0.1 or an `httpx.MockTransport` shows exactly what was sent.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import http.server
import json
import os
import secrets
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from registry_server import Registry, RegistryStartError, running_registry

from agentfactory.errors import ConfigError
from agentfactory.store.registry_auth import (
    Credentials,
    RegistryAuth,
    RegistryClient,
    canonical_scope,
    infer_scope,
    is_blob_download,
    make_client,
    parse_www_authenticate,
    resolve_credentials,
)

# --- fixtures ---------------------------------------------------------------------------------------


def _start(factory: pytest.TempPathFactory, name: str, **options: Any) -> Iterator[Registry]:
    stack = contextlib.ExitStack()
    try:
        registry = stack.enter_context(running_registry(factory.mktemp(name), **options))
    except RegistryStartError as exc:
        pytest.fail(str(exc))
    with stack:
        yield registry


@pytest.fixture(scope="module")
def plain_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    yield from _start(tmp_path_factory, "registry-plain")


@pytest.fixture(scope="module")
def htpasswd_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    yield from _start(tmp_path_factory, "registry-htpasswd", auth="htpasswd")


@pytest.fixture(scope="module")
def token_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    yield from _start(tmp_path_factory, "registry-token", auth="token")


@pytest.fixture(scope="module")
def tls_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    yield from _start(tmp_path_factory, "registry-tls", auth="htpasswd", tls=True)


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No credentials of the developer's shell: an empty Docker config folder, no AGENTFACTORY_REGISTRY_*."""
    for name in list(os.environ):
        if name.startswith("AGENTFACTORY_REGISTRY_"):
            monkeypatch.delenv(name)
    docker = tmp_path / "docker"
    docker.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(docker))
    return docker


def client_for(registry: Registry, credentials: Credentials | None = None, *,
               ca: bool = True) -> httpx.Client:
    return make_client(registry.host, plain_http=registry.plain_http, ca_file=registry.ca_file if ca else None,
                       credentials=credentials, timeout=30)


def login(registry: Registry) -> Credentials:
    assert registry.username and registry.password
    return Credentials(registry.username, registry.password)


def repo_name() -> str:
    return f"agents/t-{secrets.token_hex(4)}"


def push_blob(client: httpx.Client, repo: str, data: bytes) -> str:
    """The monolithic upload: POST opens a session, PUT ?digest= closes it with the bytes."""
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    started = client.post(f"/v2/{repo}/blobs/uploads/")
    assert started.status_code == 202, started.text
    # httpx 0.28: `params=` would replace the Location's query (and its `_state`); merge instead.
    location = httpx.URL(started.headers["Location"]).copy_merge_params({"digest": digest})
    done = client.put(location, content=data, headers={"Content-Type": "application/octet-stream"})
    assert done.status_code == 201, done.text
    assert done.headers["Docker-Content-Digest"] == digest
    return digest


def pull_blob(client: httpx.Client, repo: str, digest: str) -> bytes:
    response = client.get(f"/v2/{repo}/blobs/{digest}")
    assert response.status_code == 200, response.text
    return response.content


def count_requests(client: httpx.Client) -> list[tuple[str, str, int]]:
    """Record (method, url, status) of every exchange the client makes, token requests included."""
    seen: list[tuple[str, str, int]] = []

    def record(response: httpx.Response) -> None:
        seen.append((response.request.method, str(response.request.url.copy_with(query=None)),
                     response.status_code))

    client.event_hooks["response"] = [*client.event_hooks["response"], record]
    return seen


# --- anonymous and Basic ----------------------------------------------------------------------------

def test_anonymous_push_and_pull_on_a_plain_registry(plain_registry: Registry) -> None:
    repo, data = repo_name(), secrets.token_bytes(2048)
    with client_for(plain_registry) as client:
        seen = count_requests(client)
        digest = push_blob(client, repo, data)
        assert pull_blob(client, repo, digest) == data
    assert [status for *_, status in seen] == [202, 201, 200]  # nothing asked for credentials


def test_htpasswd_registry_refuses_anonymous_requests(htpasswd_registry: Registry) -> None:
    with client_for(htpasswd_registry) as client:
        response = client.post(f"/v2/{repo_name()}/blobs/uploads/")
    assert response.status_code == 401
    assert parse_www_authenticate(response.headers.get_list("WWW-Authenticate"))[0].scheme == "basic"


def test_htpasswd_registry_accepts_basic_credentials_and_keeps_using_them(htpasswd_registry: Registry) -> None:
    repo, data = repo_name(), b"agent bytes"
    with client_for(htpasswd_registry, login(htpasswd_registry)) as client:
        seen = count_requests(client)
        digest = push_blob(client, repo, data)
        assert pull_blob(client, repo, digest) == data
    # One 401 to learn the scheme; after that, Basic goes out up front.
    assert [status for *_, status in seen] == [401, 202, 201, 200]


def test_htpasswd_registry_refuses_a_wrong_password_without_retrying_forever(htpasswd_registry: Registry) -> None:
    assert htpasswd_registry.username
    with client_for(htpasswd_registry, Credentials(htpasswd_registry.username, "not-the-password")) as client:
        seen = count_requests(client)
        response = client.post(f"/v2/{repo_name()}/blobs/uploads/")
    assert response.status_code == 401
    assert [status for *_, status in seen] == [401, 401]  # anonymous, then once with the password: stop


# --- the token flow ---------------------------------------------------------------------------------

def test_token_flow_pushes_and_pulls_and_caches_tokens_per_scope(token_registry: Registry) -> None:
    server = token_registry.token_server
    assert server is not None
    repo = repo_name()
    before = server.hits
    with client_for(token_registry, login(token_registry)) as client:
        first = push_blob(client, repo, b"one")
        assert pull_blob(client, repo, first) == b"one"
        asked = server.hits - before
        # One token per scope: push (pull,push, for POST and PUT alike) and pull.
        assert asked == 2
        assert {canonical_scope(" ".join(r["scopes"])) for r in server.requests[before:]} == {
            f"repository:{repo}:pull,push", f"repository:{repo}:pull"}
        assert all(r["user"] == token_registry.username for r in server.requests[before:])
        seen = count_requests(client)
        second = push_blob(client, repo, b"two")
        assert pull_blob(client, repo, second) == b"two"
        assert pull_blob(client, repo, first) == b"one"
    assert server.hits - before == 2  # all from the cache
    # ... and sent up front: no 401 round trips once the realm is known.
    assert [status for *_, status in seen] == [202, 201, 200, 200]


def test_token_cache_expires_after_expires_in(token_registry: Registry) -> None:
    server = token_registry.token_server
    assert server is not None
    now = [1000.0]
    repo = repo_name()
    with client_for(token_registry) as client:
        client.auth = RegistryAuth(token_registry.host, login(token_registry), allow_plain_http=True,
                                   clock=lambda: now[0])
        digest = push_blob(client, repo, b"expiring")
        before = server.hits
        assert pull_blob(client, repo, digest) == b"expiring"
        assert server.hits - before == 1
        now[0] += server.expires_in - 20  # still valid (we stop 10% / at most 10 s early)
        assert pull_blob(client, repo, digest) == b"expiring"
        assert server.hits - before == 1
        now[0] += 15
        assert pull_blob(client, repo, digest) == b"expiring"
        assert server.hits - before == 2


def test_token_flow_works_from_an_async_client(token_registry: Registry) -> None:
    repo = repo_name()
    with client_for(token_registry, login(token_registry)) as client:
        digest = push_blob(client, repo, b"async")

    async def pull() -> httpx.Response:
        auth = RegistryAuth(token_registry.host, login(token_registry), allow_plain_http=True)
        async with httpx.AsyncClient(auth=auth, trust_env=False, base_url=token_registry.url) as client:
            return await client.get(f"/v2/{repo}/blobs/{digest}")

    response = asyncio.run(pull())
    assert response.status_code == 200 and response.content == b"async"


def test_token_flow_with_a_wrong_password_is_refused(token_registry: Registry) -> None:
    server = token_registry.token_server
    assert server is not None and token_registry.username
    before = server.hits
    with client_for(token_registry, Credentials(token_registry.username, "wrong")) as client:
        seen = count_requests(client)
        response = client.post(f"/v2/{repo_name()}/blobs/uploads/")
    assert response.status_code == 401
    assert server.hits - before == 1 and server.requests[-1]["status"] == 401
    assert len(seen) == 2  # the registry's 401, the realm's 401: nothing else


def test_token_flow_anonymous_gets_no_access_and_stops(token_registry: Registry) -> None:
    server = token_registry.token_server
    assert server is not None
    before = server.hits
    with client_for(token_registry) as client:
        seen = count_requests(client)
        response = client.post(f"/v2/{repo_name()}/blobs/uploads/")
    assert response.status_code == 401
    assert server.hits - before == 1 and server.requests[-1]["user"] is None
    assert [status for *_, status in seen] == [401, 200, 401]  # anonymous, token (no access), refused: stop


def test_identity_token_from_the_docker_config_uses_the_refresh_grant(token_registry: Registry,
                                                                      clean_env: Path) -> None:
    server = token_registry.token_server
    assert server is not None
    (clean_env / "config.json").write_text(json.dumps(
        {"auths": {token_registry.host: {"auth": "", "identitytoken": server.identity_token}}}))
    credentials = resolve_credentials(token_registry.host)
    assert credentials is not None and credentials.identity_token == server.identity_token
    repo = repo_name()
    before = server.hits
    with client_for(token_registry, credentials) as client:
        digest = push_blob(client, repo, b"refresh")
        assert pull_blob(client, repo, digest) == b"refresh"
    grants = server.requests[before:]
    assert grants and all(r["method"] == "POST" and r["grant_type"] == "refresh_token" for r in grants)


# --- TLS --------------------------------------------------------------------------------------------

def test_tls_registry_with_the_custom_ca(tls_registry: Registry) -> None:
    assert tls_registry.url.startswith("https://") and tls_registry.ca_file is not None
    repo = repo_name()
    with client_for(tls_registry, login(tls_registry)) as client:
        digest = push_blob(client, repo, b"over tls")
        assert pull_blob(client, repo, digest) == b"over tls"


def test_tls_registry_without_the_ca_fails_clearly(tls_registry: Registry) -> None:
    with client_for(tls_registry, login(tls_registry), ca=False) as client, \
            pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        client.get("/v2/")


def test_a_missing_or_bad_ca_file_is_a_config_error_naming_it(tls_registry: Registry, tmp_path: Path) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(ConfigError, match=str(missing)):
        make_client(tls_registry.host, plain_http=False, ca_file=missing, credentials=None, timeout=5)
    bad = tmp_path / "bad.pem"
    bad.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=str(bad)):
        make_client(tls_registry.host, plain_http=False, ca_file=bad, credentials=None, timeout=5)


def test_a_tls_client_refuses_plain_http_urls(tls_registry: Registry) -> None:
    port = tls_registry.host.rsplit(":", 1)[1]
    with client_for(tls_registry, login(tls_registry)) as client, pytest.raises(ConfigError, match="plain-http=true"):
        client.get(f"http://127.0.0.1:{port}/v2/")


# --- where credentials come from --------------------------------------------------------------------

def _config(folder: Path, content: dict[str, Any]) -> Path:
    path = folder / "config.json"
    path.write_text(json.dumps(content))
    return path


def test_docker_config_auth_base64_form(htpasswd_registry: Registry, clean_env: Path) -> None:
    user, password = htpasswd_registry.username, htpasswd_registry.password
    encoded = base64.b64encode(f"{user}:{password}".encode()).decode()
    _config(clean_env, {"auths": {htpasswd_registry.host: {"auth": encoded}}})
    credentials = resolve_credentials(htpasswd_registry.host)
    assert credentials == Credentials(user or "", password or "")
    assert "auths" in credentials.source and str(password) not in repr(credentials)
    repo = repo_name()
    with client_for(htpasswd_registry, credentials) as client:
        assert pull_blob(client, repo, push_blob(client, repo, b"from config.json")) == b"from config.json"


def test_docker_config_username_password_under_an_https_key(htpasswd_registry: Registry, clean_env: Path) -> None:
    _config(clean_env, {"auths": {f"https://{htpasswd_registry.host}/v1/": {
        "username": htpasswd_registry.username, "password": htpasswd_registry.password}}})
    credentials = resolve_credentials(htpasswd_registry.host)
    assert credentials is not None and credentials.username == htpasswd_registry.username
    with client_for(htpasswd_registry, credentials) as client:
        assert client.get("/v2/").status_code == 200


def test_explicit_arguments_then_environment_then_docker_config(clean_env: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    host = "127.0.0.1:5000"
    _config(clean_env, {"auths": {host: {"username": "file", "password": "f"}}})
    assert resolve_credentials(host) == Credentials("file", "f")
    monkeypatch.setenv("AGENTFACTORY_REGISTRY_USERNAME", "env")
    monkeypatch.setenv("AGENTFACTORY_REGISTRY_PASSWORD", "e")
    assert resolve_credentials(host) == Credentials("env", "e")
    assert resolve_credentials(host, username="arg", password="a") == Credentials("arg", "a")
    with pytest.raises(ConfigError, match="go together"):
        resolve_credentials(host, username="arg")
    monkeypatch.delenv("AGENTFACTORY_REGISTRY_PASSWORD")
    with pytest.raises(ConfigError, match="AGENTFACTORY_REGISTRY_PASSWORD"):
        resolve_credentials(host)
    monkeypatch.delenv("AGENTFACTORY_REGISTRY_USERNAME")
    assert resolve_credentials("other.example:5000") is None


def test_docker_hub_entries_are_found_under_the_index_url(clean_env: Path) -> None:
    _config(clean_env, {"auths": {"https://index.docker.io/v1/": {"username": "hub", "password": "h"}}})
    assert resolve_credentials("registry-1.docker.io") == Credentials("hub", "h")
    assert resolve_credentials("docker.io") == Credentials("hub", "h")


def _helper(folder: Path, monkeypatch: pytest.MonkeyPatch, answers: dict[str, tuple[str, str]]) -> Path:
    """`docker-credential-test` on PATH: answers `get` for known servers, logs what it was asked."""
    bin_dir = folder / "bin"
    bin_dir.mkdir(exist_ok=True)
    log = folder / "helper.log"
    cases = "".join(f"  '{server}') printf '%s' '{json.dumps({'ServerURL': server, 'Username': u, 'Secret': s})}' ;;\n"
                    for server, (u, s) in answers.items())
    script = bin_dir / "docker-credential-test"
    script.write_text(f"""#!/bin/sh
[ "$1" = get ] || exit 2
server=$(cat)
printf '%s\\n' "$server" >> '{log}'
case "$server" in
{cases}  *) echo "credentials not found in native keychain"; exit 1 ;;
esac
""")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
    return log


def test_a_credential_helper_from_cred_helpers_is_used(htpasswd_registry: Registry, clean_env: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    assert htpasswd_registry.username and htpasswd_registry.password
    log = _helper(clean_env, monkeypatch,
                  {htpasswd_registry.host: (htpasswd_registry.username, htpasswd_registry.password)})
    _config(clean_env, {"credHelpers": {htpasswd_registry.host: "test"},
                        "auths": {htpasswd_registry.host: {"auth": base64.b64encode(b"stale:entry").decode()}}})
    credentials = resolve_credentials(htpasswd_registry.host)
    assert credentials == login(htpasswd_registry)  # the helper wins over the inline entry
    assert log.read_text().splitlines() == [htpasswd_registry.host]
    repo = repo_name()
    with client_for(htpasswd_registry, credentials) as client:
        assert pull_blob(client, repo, push_blob(client, repo, b"helper")) == b"helper"


def test_creds_store_not_found_falls_back_to_the_inline_entry(clean_env: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    log = _helper(clean_env, monkeypatch, {"127.0.0.1:1": ("u", "p")})
    _config(clean_env, {"credsStore": "test", "auths": {"127.0.0.1:2": {"username": "inline", "password": "i"}}})
    assert resolve_credentials("127.0.0.1:1") == Credentials("u", "p")
    assert resolve_credentials("127.0.0.1:2") == Credentials("inline", "i")
    assert resolve_credentials("127.0.0.1:3") is None
    assert log.read_text().splitlines() == ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]


def test_a_helper_answering_token_user_gives_an_identity_token(clean_env: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    _helper(clean_env, monkeypatch, {"127.0.0.1:1": ("<token>", "refresh-me")})
    _config(clean_env, {"credHelpers": {"127.0.0.1:1": "test"}})
    credentials = resolve_credentials("127.0.0.1:1")
    assert credentials is not None and credentials.identity_token == "refresh-me" and not credentials.password


def test_a_missing_credential_helper_is_named(clean_env: Path) -> None:
    path = _config(clean_env, {"credHelpers": {"127.0.0.1:1": "nope-not-installed"}})
    with pytest.raises(ConfigError, match="docker-credential-nope-not-installed") as caught:
        resolve_credentials("127.0.0.1:1")
    assert str(path) in str(caught.value) and 'credHelpers["127.0.0.1:1"]' in str(caught.value)


def test_a_helper_name_cannot_be_a_path(clean_env: Path) -> None:
    _config(clean_env, {"credsStore": "../../bin/sh"})
    with pytest.raises(ConfigError, match="credsStore"):
        resolve_credentials("127.0.0.1:1")


@pytest.mark.parametrize(("content", "field"), [
    ("{not json", "not valid JSON"),
    ("[]", "must be a JSON object"),
    ('{"auths": []}', "auths"),
    ('{"auths": {"127.0.0.1:1": {"auth": "%%%"}}}', 'auths["127.0.0.1:1"].auth'),
    ('{"auths": {"127.0.0.1:1": {"auth": "bm9jb2xvbg=="}}}', 'auths["127.0.0.1:1"].auth'),
    ('{"auths": {"127.0.0.1:1": {"password": 5}}}', 'auths["127.0.0.1:1"].password'),
    ('{"credHelpers": {"127.0.0.1:1": 3}}', "credHelpers"),
    ('{"credsStore": 1}', "credsStore"),
])
def test_a_malformed_docker_config_is_a_config_error_naming_file_and_field(clean_env: Path, content: str,
                                                                           field: str) -> None:
    path = clean_env / "config.json"
    path.write_text(content)
    with pytest.raises(ConfigError) as caught:
        resolve_credentials("127.0.0.1:1")
    assert str(path) in str(caught.value) and field in str(caught.value)


def test_an_oversized_docker_config_is_refused(clean_env: Path) -> None:
    path = clean_env / "config.json"
    path.write_text('{"auths": {}, "pad": "' + "x" * (5 * 1024 * 1024) + '"}')
    with pytest.raises(ConfigError, match="larger than"):
        resolve_credentials("127.0.0.1:1")


def test_docker_config_argument_accepts_a_file_or_a_folder(tmp_path: Path) -> None:
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    path = _config(folder, {"auths": {"127.0.0.1:1": {"username": "x", "password": "y"}}})
    assert resolve_credentials("127.0.0.1:1", docker_config=folder) == Credentials("x", "y")
    assert resolve_credentials("127.0.0.1:1", docker_config=path) == Credentials("x", "y")


# --- what must never leave --------------------------------------------------------------------------

@contextlib.contextmanager
def recording_server(challenge: str) -> Iterator[tuple[str, list[dict[str, str]]]]:
    """A loopback HTTP server that answers 401 with `challenge` unless Authorization is present."""
    seen: list[dict[str, str]] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            seen.append(dict(self.headers))
            self.send_response(200 if "Authorization" in self.headers else 401)
            self.send_header("WWW-Authenticate", challenge)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_basic_is_never_sent_over_plain_http_unless_allowed() -> None:
    credentials = Credentials("user", "secret")
    with recording_server('Basic realm="r"') as (host, seen):
        auth = RegistryAuth(host, credentials)  # allow_plain_http defaults to False
        with httpx.Client(auth=auth, trust_env=False) as client, pytest.raises(ConfigError, match="plain HTTP"):
            client.get(f"http://{host}/v2/")
        assert len(seen) == 1 and "Authorization" not in seen[0]
        allowed = RegistryAuth(host, credentials, allow_plain_http=True)
        with httpx.Client(auth=allowed, trust_env=False) as client:
            assert client.get(f"http://{host}/v2/").status_code == 200
        assert seen[-1]["Authorization"] == credentials.basic_header()


def test_credentials_go_to_the_registry_host_only() -> None:
    with recording_server('Basic realm="r"') as (host, seen):
        auth = RegistryAuth("127.0.0.1:1", Credentials("user", "secret"), allow_plain_http=True)
        with httpx.Client(auth=auth, trust_env=False) as client:
            assert client.get(f"http://{host}/v2/").status_code == 401  # another port: another host
    assert len(seen) == 1 and "Authorization" not in seen[0]


def _mock_registry(realm: str, tokens: list[httpx.Request]) -> Callable[[httpx.Request], httpx.Response]:
    """A registry at https://registry.test that wants a bearer token from `realm` (never resolved: mock)."""
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path != "/token":
            if request.headers.get("Authorization") == "Bearer t0k3n":
                return httpx.Response(200)
            return httpx.Response(401, headers={"WWW-Authenticate": f'Bearer realm="{realm}",service="reg",'
                                                                   f'scope="repository:a/b:pull"'})
        tokens.append(request)
        return httpx.Response(200, json={"token": "t0k3n", "expires_in": 300})
    return handle


@pytest.mark.parametrize(("realm", "lookup", "expect_basic"), [
    ("https://registry.test:8443/token", None, True),  # same hostname, another port: the registry's operator
    ("https://auth.test/token", None, False),  # another host: anonymous token request
    ("https://auth.test/token", {"auth.test": Credentials("realm-user", "realm-pw")}, True),  # configured for it
])
def test_basic_credentials_reach_a_token_realm_only_when_meant_for_it(
        realm: str, lookup: dict[str, Credentials] | None, expect_basic: bool) -> None:
    tokens: list[httpx.Request] = []
    auth = RegistryAuth("registry.test", Credentials("user", "secret"),
                        realm_credentials=None if lookup is None else lookup.get)
    with httpx.Client(auth=auth, transport=httpx.MockTransport(_mock_registry(realm, tokens))) as client:
        assert client.get("https://registry.test/v2/a/b/manifests/latest").status_code == 200
    assert len(tokens) == 1
    header = tokens[0].headers.get("Authorization")
    if not expect_basic:
        assert header is None
    elif lookup is None:
        assert header == Credentials("user", "secret").basic_header()
    else:
        assert header == Credentials("realm-user", "realm-pw").basic_header()
    assert tokens[0].url.params.get_list("scope") == ["repository:a/b:pull"]
    assert tokens[0].url.params["service"] == "reg"


def test_no_credentials_to_a_plain_http_realm_unless_allowed() -> None:
    tokens: list[httpx.Request] = []
    auth = RegistryAuth("registry.test", Credentials("user", "secret"))
    transport = httpx.MockTransport(_mock_registry("http://registry.test:8080/token", tokens))
    with httpx.Client(auth=auth, transport=transport) as client, pytest.raises(ConfigError, match="plain HTTP"):
        client.get("https://registry.test/v2/a/b/manifests/latest")
    assert tokens == []


def test_loopback_never_goes_through_an_environment_proxy(plain_registry: Registry,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")  # nothing listens there: using it would fail
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    with client_for(plain_registry) as client:
        assert client.get("/v2/").status_code == 200


def test_redirects_are_followed_for_blob_downloads_only() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.host == "storage.test":
            return httpx.Response(200, content=b"blob", headers={"X-Auth": request.headers.get("Authorization", "")})
        return httpx.Response(307, headers={"Location": "https://storage.test/object"})

    with make_client("registry.test", plain_http=False, ca_file=None, credentials=None, timeout=5) as made:
        assert isinstance(made, RegistryClient) and not made.follow_redirects
    with RegistryClient(base_url="https://registry.test", transport=httpx.MockTransport(handle)) as client:
        blob = client.get("/v2/a/blobs/sha256:" + "0" * 64, headers={"Authorization": "Bearer x"})
        assert blob.status_code == 200 and blob.content == b"blob"
        assert blob.headers["X-Auth"] == ""  # httpx drops Authorization on the cross-origin hop
        assert client.get("/v2/a/manifests/latest").status_code == 307
        assert client.put("/v2/a/blobs/uploads/x").status_code == 307
    assert is_blob_download(httpx.Request("HEAD", "https://r/v2/a/b/blobs/sha256:00"))
    assert not is_blob_download(httpx.Request("GET", "https://r/v2/a/b/blobs/uploads/123"))


# --- parsing ----------------------------------------------------------------------------------------

def test_challenges_parse_robustly() -> None:
    [bearer] = parse_www_authenticate(
        'Bearer realm="https://auth.test/token",service="reg",scope="repository:a/b:pull,push",error="x"')
    assert bearer.scheme == "bearer"
    assert bearer.params == {"realm": "https://auth.test/token", "service": "reg",
                             "scope": "repository:a/b:pull,push", "error": "x"}
    basic, other = parse_www_authenticate(['Basic realm="a, \\"quoted\\" realm"', "Bearer Realm = r2 , SERVICE=s"])
    assert basic.params == {"realm": 'a, "quoted" realm'}
    assert other.params == {"realm": "r2", "service": "s"}
    assert [c.scheme for c in parse_www_authenticate('Negotiate, Basic realm="x", Bearer realm="y"')] == [
        "negotiate", "basic", "bearer"]
    assert parse_www_authenticate("") == []


def test_scopes_are_canonical_and_inferred_like_distribution_challenges() -> None:
    assert canonical_scope("repository:a/b:push,pull") == "repository:a/b:pull,push"
    assert infer_scope("POST", "/v2/a/b/blobs/uploads/") == "repository:a/b:pull,push"
    assert infer_scope("PUT", "/v2/a/b/blobs/uploads/u") == "repository:a/b:pull,push"
    assert infer_scope("HEAD", "/v2/a/b/blobs/sha256:00") == "repository:a/b:pull"
    assert infer_scope("DELETE", "/v2/a/b/manifests/sha256:00") == "repository:a/b:delete"
    assert infer_scope("GET", "/v2/_catalog") == "registry:catalog:*"
    assert infer_scope("GET", "/v2/") == ""
