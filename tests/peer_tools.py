"""The real peers for tests: a missing tool fails the test (never skips), naming `make tools`."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentfactory.errors import ConfigError
from agentfactory.peertools import find


def require(name: str) -> Path:
    """The path of `name` as `make tools` installed it; the test fails with the install hint otherwise."""
    try:
        return find(name)
    except ConfigError as exc:
        pytest.fail(str(exc), pytrace=False)
