"""Attack: ship to prod what was built from an uncommitted tree, or under a trust policy that trusts
every source repository.

The attacker is a developer (or a compromised workstation) who runs the pipeline on a working copy
with changes nobody reviewed, with the team's signing key; or an operator whose trust policy says
`repositories: ["*"]`, so the `source` check proves nothing. Until now an uncommitted template was
allowed 10/10 for `--stage prod`.

What stops it: the artifact policy (A8) refuses, where config refuse_dirty_provenance and
refuse_any_repository are on (prod by default), a provenance whose `dirty` flag is true or not
recorded, and a trust policy with a "*" repository; dev and canary are unchanged. Judged by the real
Rego engine on the input the verifier builds (`artifact_input`), and end to end on the real
pipeline's provenance through the verifier.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
from helpers import ROOT, git, write_template

from agentfactory.fetchverify import verify_stored
from agentfactory.keys.local import LocalKeyring
from agentfactory.policy import RegoEngine
from agentfactory.store import ArtifactStore, open_store
from agentfactory.trust import from_public_keys
from agentfactory.verifier import Check, Verdict, artifact_input
from pipelines.run import Signing, run_pipeline

DIGEST = "sha256:" + "34" * 32
CHECKS = ["digest", "signature", "key-status", "sbom", "provenance", "scan", "builder", "source"]
REPO = "https://github.com/example/agents"
CLEAN = {"dirty": False, "repository": REPO, "builder": "https://agentfactory.dev/builders/pipeline@v1"}
NAMED = {"repositories": ["https://github.com/example/*"]}
DIRTY_MESSAGE = ('provenance.dirty is true: the artifact was built from a tree with uncommitted changes, and stage '
                 '"prod" accepts only builds of a clean, committed tree (config refuse_dirty_provenance); commit the '
                 'template and rebuild')


@pytest.fixture(scope="module")
def engine() -> RegoEngine:
    return RegoEngine(ROOT / "policies")


def decide(engine: RegoEngine, stage: str, provenance: dict[str, Any] | None,
           trust: dict[str, Any]) -> tuple[bool, tuple[str, ...]]:
    """The artifact policy on the verifier's own input for an otherwise perfect artifact."""
    document = artifact_input("hello", "1.0.0", DIGEST, stage, [Check(n, True, "verified") for n in CHECKS], 10.0,
                              {"components": []}, None,
                              {"findings": [], "unscanned": [], "scanners": ["agentfactory-osv"],
                               "scannedOn": "2099-01-01T00:00:00Z"},
                              provenance=provenance, trust=trust)
    document["scan"]["scannedOn"] = document["now"]  # a scan that just finished
    decision = engine.decide("artifact", document)
    return decision.allow, decision.deny


def test_a_clean_build_under_named_repositories_is_allowed_everywhere(engine: RegoEngine) -> None:
    for stage in ("dev", "canary", "prod"):
        assert decide(engine, stage, CLEAN, NAMED) == (True, ()), stage


def test_a_dirty_tree_is_refused_for_prod_only(engine: RegoEngine) -> None:
    dirty = {**CLEAN, "dirty": True}
    assert decide(engine, "prod", dirty, NAMED) == (False, (DIRTY_MESSAGE,))
    assert decide(engine, "dev", dirty, NAMED) == (True, ())
    assert decide(engine, "canary", dirty, NAMED) == (True, ())


@pytest.mark.parametrize("provenance", [{**CLEAN, "dirty": None}, None])
def test_an_unrecorded_dirty_flag_or_no_provenance_is_refused_for_prod(engine: RegoEngine,
                                                                       provenance: dict[str, Any] | None) -> None:
    allowed, deny = decide(engine, "prod", provenance, NAMED)
    assert not allowed and len(deny) == 1
    assert deny[0].startswith("provenance.dirty is not recorded" if provenance else
                              "provenance: there is no verified build provenance"), deny
    assert decide(engine, "dev", provenance, NAMED) == (True, ())


@pytest.mark.parametrize("patterns", [["*"], [REPO, "*"], ["**"]])
def test_a_trust_policy_trusting_any_repository_is_refused_for_prod(engine: RegoEngine, patterns: list[str]) -> None:
    allowed, deny = decide(engine, "prod", CLEAN, {"repositories": patterns})
    assert not allowed and len(deny) == 1
    i = next(i for i, p in enumerate(patterns) if set(p) == {"*"})
    assert deny[0].startswith(f'trust.repositories[{i}] is "{patterns[i]}": the trust policy trusts every source '
                              'repository, and stage "prod" requires it to name the repositories'), deny
    assert decide(engine, "dev", CLEAN, {"repositories": patterns}) == (True, ())


# --- end to end: the real pipeline's provenance, through the verifier ---------------------------------

def build(folder: Path, store: ArtifactStore, keyring: LocalKeyring, engine: RegoEngine) -> None:
    report = run_pipeline(folder, store, engine=engine, signing=Signing(keyring))
    assert report.ok, [e for t in report.templates for e in t.errors]


def policy_check(verdict: Verdict) -> Check:
    (check,) = [c for c in verdict.checks if c.name == "policy"]
    return check


@pytest.mark.toolchain
def test_an_uncommitted_template_is_refused_for_prod(tmp_path: Path, af_home: Path, engine: RegoEngine) -> None:
    """Built from a working copy with a change nobody committed: judged as the entry stage so that
    no promotion is needed, only the policy stands between it and prod."""
    root = tmp_path / "repo"
    write_template(root / "templates")
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "hello")
    (root / "templates" / "hello" / "src" / "main.c").write_text(
        '#include <stdio.h>\nint main(void) { puts("not reviewed"); return 0; }\n')
    keyring = LocalKeyring(af_home / "keys")
    keyring.create()
    store = open_store(f"oci-layout:{tmp_path}/store")
    build(root / "templates", store, keyring, engine)
    agent = store.resolve("hello")
    named = from_public_keys(keyring.public_keys(), repositories=(root.as_uri(), "https://github.com/example/*"))

    prod, _ = verify_stored(store, agent, named, engine=engine, stage="prod", entry_stage="prod")
    assert not prod.allowed
    assert [c.name for c in prod.checks if not c.ok] == ["policy"]  # every other check holds: 10/10 before
    assert DIRTY_MESSAGE in policy_check(prod).reason

    star, _ = verify_stored(store, agent, from_public_keys(keyring.public_keys()), engine=engine, stage="prod",
                            entry_stage="prod")
    assert 'trust.repositories[0] is "*"' in policy_check(star).reason

    dev, _ = verify_stored(store, agent, from_public_keys(keyring.public_keys()), engine=engine, stage="dev")
    assert dev.allowed, [c for c in dev.checks if not c.ok]


@pytest.mark.toolchain
def test_a_committed_template_under_named_repositories_is_allowed_for_prod(tmp_path: Path, af_home: Path,
                                                                          engine: RegoEngine) -> None:
    root = tmp_path / "repo"
    write_template(root / "templates")
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "hello")
    keyring = LocalKeyring(af_home / "keys")
    keyring.create()
    store = open_store(f"oci-layout:{tmp_path}/store")
    build(root / "templates", store, keyring, engine)
    named = from_public_keys(keyring.public_keys(), repositories=(root.as_uri(),))
    prod, _ = verify_stored(store, store.resolve("hello"), named, engine=engine, stage="prod", entry_stage="prod")
    assert prod.allowed, [c for c in prod.checks if not c.ok]
    shutil.rmtree(root)
