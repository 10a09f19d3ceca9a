"""A real OCI registry (distribution 2.8, Debian package `docker-registry`) on loopback.

`running_registry(home, auth=..., tls=...)` writes a distribution config, generates what the auth
mode needs (a bcrypt htpasswd file; a token-signing CA and a small in-process token server), starts
`docker-registry serve` in its own process session and stops everything on exit. Shared by the
integration tests of the registry auth and of the registry store backend.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import http.server
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import bcrypt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

AuthMode = Literal["none", "htpasswd", "token"]

START_TIMEOUT_S = 30.0
TOKEN_SERVICE = "agentfactory-test-registry"
TOKEN_ISSUER = "agentfactory-test-token-server"
TOKEN_EXPIRES_IN = 300


class RegistryStartError(RuntimeError):
    """The registry could not be started; the message says why (missing binary, end of its log)."""


@dataclass
class TokenServer:
    """The in-process token server of `auth="token"`: counts what it was asked, for cache assertions."""

    url: str  # the realm: https?://127.0.0.1:PORT/token
    username: str
    password: str
    identity_token: str  # accepted as an OAuth2 refresh token (POST grant_type=refresh_token)
    expires_in: int = TOKEN_EXPIRES_IN
    hits: int = 0  # every request to the realm, granted or refused
    requests: list[dict[str, Any]] = field(default_factory=list)  # method, user, scopes, status
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, entry: dict[str, Any]) -> None:
        with self._lock:
            self.hits += 1
            self.requests.append(entry)


@dataclass(frozen=True)
class Registry:
    host: str  # 127.0.0.1:PORT, what an image reference names
    url: str  # http(s)://127.0.0.1:PORT
    username: str | None  # None with auth="none"
    password: str | None
    ca_file: Path | None  # with TLS: the CA that signed the server certificate
    auth: AuthMode
    log: Path
    token_server: TokenServer | None = None  # with auth="token"

    @property
    def plain_http(self) -> bool:
        return self.url.startswith("http://")


def registry_binary() -> str | None:
    return shutil.which("docker-registry") or (
        "/usr/bin/docker-registry" if Path("/usr/bin/docker-registry").exists() else None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- certificates -----------------------------------------------------------------------------------

def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _new_ca(common_name: str) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder()
            .subject_name(_name(common_name)).issuer_name(_name(common_name))
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, encipher_only=False,
                                         decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    return key, cert


def _new_leaf(ca_key: rsa.RSAPrivateKey, ca_cert: x509.Certificate, common_name: str, *,
              server: bool) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = dt.datetime.now(dt.UTC)
    builder = (x509.CertificateBuilder()
               .subject_name(_name(common_name)).issuer_name(ca_cert.subject)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
               .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                              critical=False))
    if server:
        builder = (builder
                   .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                                                               x509.DNSName("localhost")]), critical=False)
                   .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]),
                                  critical=False))
    return key, builder.sign(ca_key, hashes.SHA256())


def _write_key(path: Path, key: rsa.RSAPrivateKey) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def _write_cert(path: Path, *certs: x509.Certificate) -> None:
    path.write_bytes(b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs))


# --- the token server -------------------------------------------------------------------------------

def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _parse_scope(scope: str) -> dict[str, Any] | None:
    """`repository:name:pull,push` → an access entry; the name may itself hold ':' (host:port/x)."""
    kind, _, rest = scope.partition(":")
    name, sep, actions = rest.rpartition(":")
    if not kind or not sep or not name:
        return None
    return {"type": kind, "name": name, "actions": [a for a in actions.split(",") if a]}


class _TokenIssuer:
    """Signs registry tokens the way distribution 2.8 verifies them: RS256, x5c chain to rootcertbundle."""

    def __init__(self, key: rsa.RSAPrivateKey, chain: list[x509.Certificate]) -> None:
        self.key = key
        self.x5c = [base64.b64encode(c.public_bytes(serialization.Encoding.DER)).decode("ascii") for c in chain]

    def issue(self, subject: str, scopes: list[str], expires_in: int) -> str:
        now = int(time.time())
        access = [entry for entry in (_parse_scope(s) for s in scopes) if entry is not None]
        header = {"typ": "JWT", "alg": "RS256", "x5c": self.x5c}
        claims = {"iss": TOKEN_ISSUER, "sub": subject, "aud": TOKEN_SERVICE, "exp": now + expires_in,
                  "nbf": now - 1, "iat": now, "jti": secrets.token_hex(12), "access": access}
        signing_input = (_b64url(json.dumps(header, separators=(",", ":")).encode()) + "."
                         + _b64url(json.dumps(claims, separators=(",", ":")).encode()))
        signature = self.key.sign(signing_input.encode("ascii"), padding.PKCS1v15(), hashes.SHA256())
        return signing_input + "." + _b64url(signature)


def _token_handler(state: TokenServer, issuer: _TokenIssuer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet: the tests read `state`
            pass

        def _answer(self, status: int, body: dict[str, Any], entry: dict[str, Any]) -> None:
            entry["status"] = status
            state.record(entry)
            data = json.dumps(body).encode()
            self.send_response(status)
            if status == 401:
                self.send_header("WWW-Authenticate", 'Basic realm="token"')
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _grant(self, subject: str, scopes: list[str], entry: dict[str, Any], *, refresh: bool) -> None:
            # Anonymous callers get a token with no access: the registry then refuses (401), as a real
            # token server does for private repositories.
            granted = scopes if subject else []
            token = issuer.issue(subject, granted, state.expires_in)
            body: dict[str, Any] = {"token": token, "access_token": token, "expires_in": state.expires_in,
                                    "issued_at": dt.datetime.now(dt.UTC).isoformat()}
            if refresh:
                body["refresh_token"] = state.identity_token
            self._answer(200, body, entry)

        def do_GET(self) -> None:
            url = urllib.parse.urlsplit(self.path)
            query = urllib.parse.parse_qs(url.query)
            scopes = [s for value in query.get("scope", []) for s in value.split(" ") if s]
            entry: dict[str, Any] = {"method": "GET", "user": None, "scopes": scopes,
                                     "service": query.get("service", [None])[0]}
            if url.path != "/token" or entry["service"] != TOKEN_SERVICE:
                self._answer(400, {"errors": [{"code": "BAD_REQUEST"}]}, entry)
                return
            header = self.headers.get("Authorization", "")
            subject = ""
            if header:
                scheme, _, value = header.partition(" ")
                try:
                    user, _, password = base64.b64decode(value, validate=True).decode().partition(":")
                except (ValueError, UnicodeDecodeError):
                    user, password = "", ""
                entry["user"] = user
                if scheme.lower() != "basic" or user != state.username or not secrets.compare_digest(
                        password.encode(), state.password.encode()):
                    self._answer(401, {"errors": [{"code": "UNAUTHORIZED"}]}, entry)
                    return
                subject = user
            self._grant(subject, scopes, entry, refresh=False)

        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            form = urllib.parse.parse_qs(self.rfile.read(min(length, 65536)).decode())
            scopes = [s for value in form.get("scope", []) for s in value.split(" ") if s]
            entry: dict[str, Any] = {"method": "POST", "user": None, "scopes": scopes,
                                     "service": form.get("service", [None])[0],
                                     "grant_type": form.get("grant_type", [None])[0]}
            token = form.get("refresh_token", [""])[0]
            if (urllib.parse.urlsplit(self.path).path != "/token" or entry["service"] != TOKEN_SERVICE
                    or entry["grant_type"] != "refresh_token"):
                self._answer(400, {"errors": [{"code": "BAD_REQUEST"}]}, entry)
                return
            if not secrets.compare_digest(token.encode(), state.identity_token.encode()):
                self._answer(401, {"errors": [{"code": "UNAUTHORIZED"}]}, entry)
                return
            entry["user"] = state.username
            self._grant(state.username, scopes, entry, refresh=True)

    return Handler


class _TokenHTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    tls: ssl.SSLContext | None = None

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, addr = super().get_request()
        if self.tls is not None:  # handshake in the handler thread, so a slow client blocks nobody else
            conn = self.tls.wrap_socket(conn, server_side=True, do_handshake_on_connect=False)
        return conn, addr


@contextlib.contextmanager
def _token_server(username: str, password: str, issuer: _TokenIssuer, port: int,
                  tls: ssl.SSLContext | None) -> Iterator[TokenServer]:
    server = _TokenHTTPServer(("127.0.0.1", port), http.server.BaseHTTPRequestHandler)
    server.tls = tls
    state = TokenServer(url=f"{'https' if tls else 'http'}://127.0.0.1:{server.server_address[1]}/token",
                        username=username, password=password, identity_token=secrets.token_urlsafe(24))
    server.RequestHandlerClass = _token_handler(state, issuer)
    thread = threading.Thread(target=server.serve_forever, name="registry-token-server", daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


# --- the registry process ---------------------------------------------------------------------------

def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate the registry (its own session), then reap it."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=10)
            return
        except subprocess.TimeoutExpired:
            continue


def _answers(url: str, ca_file: Path | None) -> bool:
    handlers: list[urllib.request.BaseHandler] = [urllib.request.ProxyHandler({})]  # loopback, never a proxy
    if ca_file is not None:
        handlers.append(urllib.request.HTTPSHandler(context=ssl.create_default_context(cafile=str(ca_file))))
    try:
        with urllib.request.build_opener(*handlers).open(f"{url}/v2/", timeout=1) as response:
            return bool(response.status == 200)
    except urllib.error.HTTPError as exc:
        return exc.code == 401
    except (urllib.error.URLError, OSError, ssl.SSLError):
        return False


def _yaml(value: Any, indent: int = 0) -> str:
    """The config is a few nested maps of scalars: JSON scalars are valid YAML, no PyYAML needed here."""
    pad = "  " * indent
    lines = []
    for key, item in value.items():
        if isinstance(item, dict):
            lines.append(f"{pad}{key}:\n{_yaml(item, indent + 1)}")
        else:
            lines.append(f"{pad}{key}: {json.dumps(item)}")
    return "\n".join(lines)


@contextlib.contextmanager
def running_registry(home: Path, *, auth: AuthMode = "none", tls: bool = False) -> Iterator[Registry]:
    """Start `docker-registry serve` on 127.0.0.1 with filesystem storage under `home`; stop it on exit."""
    binary = registry_binary()
    if binary is None:
        raise RegistryStartError("the `docker-registry` binary (distribution 2.8) is missing: "
                                 "apt-get install docker-registry (the Makefile installs it)")
    if auth not in ("none", "htpasswd", "token"):
        raise ValueError(f"unknown auth mode {auth!r}")
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    scheme = "https" if tls else "http"
    url = f"{scheme}://127.0.0.1:{port}"
    log = home / "registry.log"
    config: dict[str, Any] = {
        "version": 0.1,
        "log": {"level": "warn", "accesslog": {"disabled": True}},
        "storage": {"filesystem": {"rootdirectory": str(home / "storage")}, "delete": {"enabled": True},
                    "maintenance": {"uploadpurging": {"enabled": False}}},
        "http": {"addr": f"127.0.0.1:{port}", "secret": secrets.token_hex(16)},
        "health": {"storagedriver": {"enabled": False}},
    }
    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None
    server_tls: ssl.SSLContext | None = None
    if tls:
        ca_key, ca_cert = _new_ca("agentfactory test CA")
        key, cert = _new_leaf(ca_key, ca_cert, "127.0.0.1", server=True)
        ca_file = home / "ca.pem"
        _write_cert(ca_file, ca_cert)
        _write_key(home / "server.key", key)
        _write_cert(home / "server.pem", cert)
        config["http"]["tls"] = {"certificate": str(home / "server.pem"), "key": str(home / "server.key")}
        server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        server_tls.load_cert_chain(home / "server.pem", home / "server.key")
    if auth != "none":
        username, password = "agent", secrets.token_urlsafe(16)
    stack = contextlib.ExitStack()
    with stack:
        token_state: TokenServer | None = None
        if auth == "htpasswd":
            assert username is not None and password is not None
            htpasswd = home / "htpasswd"
            hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()
            htpasswd.write_text(f"{username}:{hashed}\n")
            config["auth"] = {"htpasswd": {"realm": "agentfactory-test", "path": str(htpasswd)}}
        elif auth == "token":
            assert username is not None and password is not None
            signing_ca_key, signing_ca = _new_ca("agentfactory test token CA")
            signing_key, signing_cert = _new_leaf(signing_ca_key, signing_ca, "token signer", server=False)
            bundle = home / "token-ca.pem"
            _write_cert(bundle, signing_ca)
            token_state = stack.enter_context(_token_server(
                username, password, _TokenIssuer(signing_key, [signing_cert]), free_port(), server_tls))
            config["auth"] = {"token": {"realm": token_state.url, "service": TOKEN_SERVICE,
                                        "issuer": TOKEN_ISSUER, "rootcertbundle": str(bundle)}}
        config_file = home / "config.yml"
        config_file.write_text(_yaml(config) + "\n")
        # REGISTRY_* variables override the config file in distribution: none of the caller's may leak in.
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        with open(log, "wb") as log_file:
            proc = subprocess.Popen([binary, "serve", str(config_file)], stdout=log_file, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=env, cwd=home, start_new_session=True)
        stack.callback(_stop, proc)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not _answers(url, ca_file):
            if proc.poll() is not None:
                raise RegistryStartError(f"docker-registry exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RegistryStartError(
                    f"docker-registry not answering after {START_TIMEOUT_S:.0f} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.05)  # bounded polling for server start
        yield Registry(host=f"127.0.0.1:{port}", url=url, username=username, password=password, ca_file=ca_file,
                       auth=auth, log=log, token_server=token_state)
