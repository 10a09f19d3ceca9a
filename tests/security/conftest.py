"""Fixtures shared by the attack tests: a signed world and the real webhook over TLS, one per module
(tests/security/admission_attack_fixtures.py builds them). A module that needs another `world` or
`server` defines its own, which takes precedence."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from admission_attack_fixtures import admission_world, served
from http_fetch_helpers import Ca, Server, dns_serving, make_ca, serving
from runtime_helpers import Signed


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> tuple[Signed, dict[str, str]]:
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AGENTFACTORY_HOME", str(home))
        return admission_world(home)


@pytest.fixture(scope="module")
def server(world: tuple[Signed, dict[str, str]],
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[httpx.Client, Path]]:
    with served(world[0], tmp_path_factory.mktemp("webhook")) as running:
        yield running


# http.fetch attacks (test_attack_http_fetch_*.py): a CA, an HTTPS and a plain HTTP server on loopback, and a
# DNS server answering api.test and other.test with loopback (each test module gets its own).
@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> Ca:
    return make_ca(tmp_path_factory.mktemp("ca"))


@pytest.fixture(scope="module")
def https(ca: Ca) -> Iterator[Server]:
    with serving(ca) as server:
        yield server


@pytest.fixture(scope="module")
def plain() -> Iterator[Server]:
    with serving(None) as server:
        yield server


@pytest.fixture(scope="module")
def dns() -> Iterator[int]:
    with dns_serving({"api.test": [["127.0.0.1"]], "other.test": [["127.0.0.1"]]}) as server:
        yield server.port
