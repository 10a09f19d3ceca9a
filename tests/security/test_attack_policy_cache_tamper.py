"""Attacks on the compiled-policy cache (agentfactory/policy_cache.py): a flipped, truncated, swapped or
forged bundle file is refused (deleted, rebuilt from the policies, never loaded), so a decision made with a
cached bundle is always the decision the policies on disk make."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from policy_texts import MINI_TEMPLATE_POLICY

from agentfactory import policy_cache
from agentfactory.policy import RegoEngine

POLICY = MINI_TEMPLATE_POLICY
STRICT = {"agentfactory": {"config": {"dangerous_tools": ["shell.exec"]}}}
LAX: dict[str, object] = {"agentfactory": {"config": {"dangerous_tools": []}}}
SHELL = {"template": {"spec": {"tools": ["shell.exec"]}}}


@pytest.fixture(autouse=True)
def home_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    """The cache in each test's own state folder (the default), not the session's shared one (conftest)."""
    monkeypatch.delenv(policy_cache.CACHE_ENV, raising=False)


def test_the_cache_folder_can_be_named(tmp_path: Path, af_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """AGENTFACTORY_POLICY_CACHE=<folder>: the cache (key and bundles) there, none under the state folder."""
    shared = tmp_path / "shared-cache"
    monkeypatch.setenv(policy_cache.CACHE_ENV, str(shared))
    folder = policies(tmp_path / "strict")
    assert not RegoEngine(folder).decide("template", SHELL).allow
    assert sorted(shared.glob("*/template-*.rbb")) and (shared / "hmac.key").is_file()
    assert cached(af_home) == []
    assert not RegoEngine(folder).decide("template", SHELL).allow  # read back from there
    for on in ("1", "on", ""):
        monkeypatch.setenv(policy_cache.CACHE_ENV, on)
        assert policy_cache.cache_root() == af_home.resolve() / "cache" / "policy"


def policies(where: Path, data: object = STRICT, text: str = POLICY) -> Path:
    where.mkdir(parents=True, exist_ok=True)
    (where / "template.rego").write_text(text)
    (where / "data.json").write_text(json.dumps(data))
    return where


def cached(af_home: Path) -> list[Path]:
    return sorted((af_home / "cache" / "policy").glob("*/template-*.rbb"))


def strict_engine_with_cache(tmp_path: Path, af_home: Path) -> tuple[Path, Path]:
    folder = policies(tmp_path / "strict")
    first = RegoEngine(folder)
    assert not first.decide("template", SHELL).allow
    [bundle] = cached(af_home)
    return folder, bundle


def assert_refused_and_rebuilt(folder: Path, bundle: Path) -> None:
    engine = RegoEngine(folder)
    decision = engine.decide("template", SHELL)
    assert not decision.allow and decision.deny == ("spec.tools: 'shell.exec' is not allowed",)
    assert engine._cache is not None and any("HMAC does not match" in r for r in engine._cache.refused)
    # rebuilt: the next process loads it without refusing anything
    again = RegoEngine(folder)
    assert not again.decide("template", SHELL).allow
    assert again._cache is not None and again._cache.refused == [] and bundle.exists()


def test_a_warm_cache_is_used_and_decides_the_same(tmp_path: Path, af_home: Path) -> None:
    folder, _ = strict_engine_with_cache(tmp_path, af_home)
    engine = RegoEngine(folder)
    assert engine._compiler is None  # the policies were not compiled again: the bundle came from the cache
    assert engine.decide("template", SHELL).deny == ("spec.tools: 'shell.exec' is not allowed",)
    assert engine.decide("template", {"template": {"spec": {"tools": []}}}).allow
    assert engine._cache is not None and engine._cache.refused == []


def test_a_flipped_byte_is_refused_and_rebuilt(tmp_path: Path, af_home: Path) -> None:
    folder, bundle = strict_engine_with_cache(tmp_path, af_home)
    raw = bytearray(bundle.read_bytes())
    raw[len(raw) // 2] ^= 1
    bundle.write_bytes(bytes(raw))
    assert_refused_and_rebuilt(folder, bundle)


def test_a_truncated_bundle_is_refused_and_rebuilt(tmp_path: Path, af_home: Path) -> None:
    folder, bundle = strict_engine_with_cache(tmp_path, af_home)
    bundle.write_bytes(bundle.read_bytes()[: bundle.stat().st_size // 3])
    assert_refused_and_rebuilt(folder, bundle)


def test_a_permissive_bundle_swapped_in_is_refused(tmp_path: Path, af_home: Path) -> None:
    """The lax policy's bundle (same query, same file name, valid tag for its own entry) copied over the strict
    one, tag included: the tag binds the bytes to the cache key, so it is refused and shell.exec stays denied."""
    folder, bundle = strict_engine_with_cache(tmp_path, af_home)
    lax = RegoEngine(policies(tmp_path / "lax", LAX))
    assert lax.decide("template", SHELL).allow
    [lax_bundle] = [b for b in cached(af_home) if b != bundle]
    assert lax_bundle.name == bundle.name and lax_bundle.parent != bundle.parent
    shutil.copyfile(lax_bundle, bundle)
    assert_refused_and_rebuilt(folder, bundle)


def test_a_tag_made_without_the_key_is_refused(tmp_path: Path, af_home: Path) -> None:
    """Someone who can write the cache but not read its 0600 key cannot make a valid tag (here: a plain
    SHA-256 of the file, and an HMAC under another key)."""
    import hashlib
    import hmac

    folder, bundle = strict_engine_with_cache(tmp_path, af_home)
    assert (af_home / "cache" / "policy" / "hmac.key").stat().st_mode & 0o777 == 0o600
    payload = bundle.read_bytes().partition(b"\n")[2]
    for forged in (hashlib.sha256(payload).hexdigest(), hmac.new(b"k" * 32, payload, hashlib.sha256).hexdigest()):
        bundle.write_bytes(forged.encode() + b"\n" + payload)
        assert_refused_and_rebuilt(folder, bundle)


def test_a_bundle_without_its_tag_is_refused(tmp_path: Path, af_home: Path) -> None:
    folder, bundle = strict_engine_with_cache(tmp_path, af_home)
    bundle.write_bytes(bundle.read_bytes().partition(b"\n")[2])  # the bare rego-cpp bundle, no tag line
    assert_refused_and_rebuilt(folder, bundle)


def test_an_edited_policy_never_meets_the_old_bundle(tmp_path: Path, af_home: Path) -> None:
    folder, _ = strict_engine_with_cache(tmp_path, af_home)
    policies(folder, STRICT, POLICY.replace("is not allowed", "is forbidden"))
    decision = RegoEngine(folder).decide("template", SHELL)
    assert decision.deny == ("spec.tools: 'shell.exec' is forbidden",)
    assert len(cached(af_home)) == 2  # a new key: the old entry is untouched and unused


def test_a_config_override_is_part_of_the_key(tmp_path: Path, af_home: Path) -> None:
    folder, _ = strict_engine_with_cache(tmp_path, af_home)
    assert RegoEngine(folder, config={"dangerous_tools": []}).decide("template", SHELL).allow
    assert not RegoEngine(folder).decide("template", SHELL).allow


def test_a_forged_compiled_stamp_does_not_hide_a_broken_policy(tmp_path: Path, af_home: Path) -> None:
    """The stamp that lets a process skip compiling is tagged with its key: copied into the entry of a
    policy that does not compile, it is refused and the policy is found broken."""
    good = RegoEngine(policies(tmp_path / "good"))
    assert good._cache is not None and good._cache.compiled()
    broken_folder = policies(tmp_path / "broken", STRICT, POLICY + "\nallow if {\n")
    probe = RegoEngine(broken_folder)
    assert probe.broken
    assert probe._cache is not None
    probe._cache.folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(good._cache.folder / "compiled", probe._cache.folder / "compiled")
    engine = RegoEngine(broken_folder)
    assert engine.broken and "syntax error" in engine.broken
    decision = engine.decide("template", {"template": {"spec": {"tools": []}}})
    assert not decision.allow and decision.refused


def test_an_unwritable_cache_costs_only_a_compile(tmp_path: Path, af_home: Path) -> None:
    if os.geteuid() == 0:
        (af_home / "cache").mkdir(parents=True)
        (af_home / "cache" / "policy").write_text("a file where the cache folder belongs")
    else:
        (af_home / "cache" / "policy").mkdir(parents=True)
        (af_home / "cache" / "policy").chmod(0o500)
    folder = policies(tmp_path / "p")
    for _ in range(2):
        decision = RegoEngine(folder).decide("template", SHELL)
        assert decision.deny == ("spec.tools: 'shell.exec' is not allowed",)


def test_the_cache_can_be_turned_off(tmp_path: Path, af_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(policy_cache.CACHE_ENV, "off")
    engine = RegoEngine(policies(tmp_path / "p"))
    assert not engine.decide("template", SHELL).allow
    assert engine._cache is None and not (af_home / "cache" / "policy").exists()


def test_an_emptied_key_is_replaced_not_used(tmp_path: Path, af_home: Path) -> None:
    """An empty key file (a truncated write, or someone who wants tags anyone can compute) is replaced by a
    new random key: the entries tagged under the old key are refused and rebuilt."""
    folder, bundle = strict_engine_with_cache(tmp_path, af_home)
    key = af_home / "cache" / "policy" / "hmac.key"
    key.write_bytes(b"")
    assert_refused_and_rebuilt(folder, bundle)
    assert len(key.read_bytes()) == 32
