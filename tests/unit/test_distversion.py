"""agentfactory.distversion reads a wheel's version from its .dist-info name: it must agree with importlib.metadata
(the versions go into cache keys and provenance), and refuse what is not installed."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

import pytest

from agentfactory.distversion import installed_version


@pytest.mark.parametrize("dist", ["ziglang", "wasmtime", "componentize-py", "componentize_py", "regopy",
                                  "cryptography", "PyYAML"])
def test_it_agrees_with_importlib_metadata(dist: str) -> None:
    assert installed_version(dist) == version(dist)


def test_a_missing_distribution_is_refused() -> None:
    with pytest.raises(PackageNotFoundError):
        installed_version("agentfactory-no-such-distribution")
