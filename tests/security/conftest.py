"""Fixtures shared by the attack tests: a signed world and the real webhook over TLS, one per module
(tests/security/admission_attack_fixtures.py builds them). A module that needs another `world` or
`server` defines its own, which takes precedence."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from admission_attack_fixtures import admission_world, served
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
