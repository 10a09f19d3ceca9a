"""Attack: idle and crawling connections take a uvicorn service away from everyone (`tlog serve`, `admission serve`).

uvicorn times a connection out only between requests. 1,000 connections that open and never send a request (or
send one byte now and then) were kept for ever, and at `limit_concurrency` every request of every client was
answered 503: the webhook refused the API server (every workload create in the cluster, with failurePolicy Fail)
and the log its clients, until the attacker let go. agentfactory/httpguard.py: a request is read whole within
$AGENTFACTORY_HTTP_REQUEST_TIMEOUT_S of the connection opening or of its first byte, and one client address holds
at most $AGENTFACTORY_HTTP_CONNECTIONS_PER_CLIENT connections.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from admission_attack_fixtures import admission_world
from admission_helpers import webhook
from runtime_helpers import connect_from
from tlog_attack_helpers import tlog_server

from admission.config import AdmissionConfig
from admission.decide import Admitter
from agentfactory.tlog.log import EmbeddedLog

SHARE = 8  # connections per client address, for the test
TIMEOUT_S = 1.5


def _closed(sock: socket.socket, wait: float) -> bool:
    """Whether the server closed `sock` within `wait` seconds (EOF or reset), having sent nothing."""
    sock.settimeout(wait)
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, ssl.SSLError):
        return True
    except TimeoutError:
        return False


def _get(port: int, source: str, tls: ssl.SSLContext | None, path: str = "/healthz") -> int:
    with contextlib.closing(connect_from(source, port)) as raw:
        sock = tls.wrap_socket(raw, server_hostname="127.0.0.1") if tls else raw
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
        return int(reply.split(b" ", 2)[1])


def _attack(port: int, tls: ssl.SSLContext | None) -> None:
    """Fill one address's share with idle connections and one more, crawl a request on another, then check the
    other clients are served throughout and the attacker's connections are closed."""
    idle = []
    for _ in range(SHARE):
        raw = connect_from("127.0.0.3", port)
        idle.append(tls.wrap_socket(raw, server_hostname="127.0.0.1") if tls else raw)  # handshake done, then idle
    assert _get(port, "127.0.0.2", tls) == 200  # another client is served beside a full share
    over = connect_from("127.0.0.3", port)  # over TLS uvicorn sees a connection once its handshake is done
    with contextlib.suppress(OSError):
        over = tls.wrap_socket(over, server_hostname="127.0.0.1") if tls else over
    assert _closed(over, 2.0), "a connection past the address's share is closed at once"
    crawl = connect_from("127.0.0.4", port)
    crawl = tls.wrap_socket(crawl, server_hostname="127.0.0.1") if tls else crawl
    start = time.monotonic()
    crawl.sendall(b"GET /healthz HTTP/1.1\r\n")
    for _ in range(4):  # one header line now and then: never a whole request
        time.sleep(TIMEOUT_S / 3)
        with contextlib.suppress(OSError):
            crawl.sendall(b"X-A: b\r\n")
    assert _closed(crawl, TIMEOUT_S * 3), "a request still unread after the timeout closes its connection"
    assert time.monotonic() - start < TIMEOUT_S * 4
    assert all(_closed(s, TIMEOUT_S * 3) for s in idle), "connections that send no request are closed"
    assert _get(port, "127.0.0.3", tls) == 200  # the attacker's address, once its connections are gone
    assert _get(port, "127.0.0.2", tls) == 200


@pytest.fixture
def guard_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTFACTORY_HTTP_REQUEST_TIMEOUT_S", str(TIMEOUT_S))
    monkeypatch.setenv("AGENTFACTORY_HTTP_CONNECTIONS_PER_CLIENT", str(SHARE))


def test_tlog_serve_outlives_idle_and_crawling_connections(tmp_path: Path, guard_env: None) -> None:
    EmbeddedLog(tmp_path / "tlog").close()
    with tlog_server(tmp_path / "tlog") as url:
        _attack(urlsplit(url).port or 0, None)


@pytest.mark.toolchain
def test_admission_serve_outlives_idle_and_crawling_connections(tmp_path: Path, guard_env: None,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTFACTORY_HOME", str(tmp_path / "home"))
    signed, _ = admission_world(tmp_path / "home")
    admitter = Admitter(AdmissionConfig(audit_log=tmp_path / "audit.jsonl", deadline_ms=5000), signed.store,
                        signed.trust, signed.engine, None)
    with webhook(admitter, tmp_path / "tls") as (url, _client):
        tls = ssl.create_default_context(cafile=str(tmp_path / "tls" / "ca.crt"))
        tls.check_hostname = False
        _attack(urlsplit(url).port or 0, tls)


def test_a_bad_setting_is_refused_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    from agentfactory.errors import ConfigError
    from agentfactory.httpguard import guarded_http

    for name, value in (("AGENTFACTORY_HTTP_REQUEST_TIMEOUT_S", "0"), ("AGENTFACTORY_HTTP_REQUEST_TIMEOUT_S", "nan"),
                        ("AGENTFACTORY_HTTP_CONNECTIONS_PER_CLIENT", "-1"),
                        ("AGENTFACTORY_HTTP_CONNECTIONS_PER_CLIENT", "1.5")):
        with monkeypatch.context() as m:
            m.setenv(name, value)
            with pytest.raises(ConfigError, match=name):
                guarded_http()

