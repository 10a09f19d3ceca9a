"""Attack: growing the node runtime's name cache without bound.

The attacker is any caller of the runtime's HTTP API. Every distinct reference string
(`?version=`, `?digest=`, the name) used to be kept forever in the runtime's name-resolution cache,
so unique strings grew the node's memory until it died; and a version string was used (cached,
looked up, logged) before anyone checked it was a version at all. What stops it: a reference is
validated (bounded, printable, semver after ':', a sha256 digest after '@') before any use, and the
cache holds at most MAX_NAMES entries, least recently used evicted (the verified-agent cache too).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from runtime_helpers import OK_WAT, publish, signed_store, wat_manifest

from agentfactory.errors import InputError

pytestmark = pytest.mark.toolchain


def test_the_name_cache_is_bounded_and_refs_are_checked_first(af_home: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import sandbox_runtime.runtime as runtime_module
    from sandbox_runtime.runtime import Runtime, RuntimeConfig

    s = signed_store(af_home)
    publish(s, tmp_path / "t", {f"a{i}": (wat_manifest(f"a{i}"), {"src/main.wat": OK_WAT.replace("ok", f"o{i}")})
                                for i in range(4)})
    monkeypatch.setattr(runtime_module, "MAX_NAMES", 3)
    rt = Runtime(s.store, s.trust, s.engine, RuntimeConfig())
    try:
        refs = [f"a{i}" for i in range(4)] + [f"a{i}:1.0.0" for i in range(4)]
        refs += [f"a0@{s.store.resolve('a0').digest}", s.store.resolve("a1").digest]
        for ref in refs:
            rt._resolve(ref)
            assert len(rt._names) <= 3
        assert list(rt._names) == refs[-3:]  # the least recently used went first
        for bad in ("a0:1.0", "a0:1.0.0\"]},", "a0@sha256:xyz", "a0:" + "1" * 300, "a\x000", "a b"):
            with pytest.raises(InputError):
                rt._resolve(bad)
        assert list(rt._names) == refs[-3:]  # nothing bad was cached
    finally:
        rt.close()
