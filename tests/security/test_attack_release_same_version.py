"""Attack: a template changes on `main` without a new version (the pull-request check was blinded or
bypassed), and the release, which builds without a base, publishes `alpha:1.0.0` again with other
bytes: the tag moves under everyone who pinned that version.

`pipelines.publishguard.refuse_republish` refuses a name and version the store already holds as
another artifact (tagged or not), and lets the same artifact through (a re-run). Tried against a real
OCI-layout store filled by the real pipeline.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from prcheck_fixtures import write_template
from runtime_helpers import OK_WAT

from agentfactory.artifact import build_agent_artifact
from agentfactory.errors import AgentFactoryError, InputError
from agentfactory.store import OCILayoutStore
from pipelines.publishguard import refuse_republish
from pipelines.run import run_pipeline

WHERE = "templates/alpha/agent.yaml"


def _build(templates: Path, store_dir: Path) -> str:
    """The digest the real pipeline publishes for templates/alpha into the store at `store_dir`."""
    report = run_pipeline(templates, OCILayoutStore(store_dir))
    [t] = [t for t in report.templates if t.name == "alpha"]
    assert t.status == "built" and t.digest, t.errors
    return t.digest


@pytest.fixture
def released(tmp_path: Path) -> tuple[OCILayoutStore, str, str]:
    """The store after releasing alpha 1.0.0, and the digest of alpha changed without a version bump
    (built into a scratch store)."""
    templates = tmp_path / "templates"
    write_template(tmp_path, "alpha")
    first = _build(templates, tmp_path / "store")
    # New bytes, the same output and the same version:
    write_template(tmp_path, "alpha", wat=OK_WAT.replace("i32.const 64", "i32.const 128"))
    second = _build(templates, tmp_path / "scratch")
    assert first != second
    return OCILayoutStore(tmp_path / "store"), first, second


def test_new_bytes_under_a_published_version_are_refused(released: tuple[OCILayoutStore, str, str]) -> None:
    store, first, second = released
    with pytest.raises(InputError) as caught:
        refuse_republish(store, "alpha", "1.0.0", second, WHERE)
    message = str(caught.value)
    assert message.startswith(f"{WHERE}: metadata.version: alpha:1.0.0 is already published")
    assert first in message and second in message and "bump metadata.version above 1.0.0" in message
    assert isinstance(caught.value, AgentFactoryError)


def test_the_same_bytes_again_a_new_version_or_a_new_agent_pass(released: tuple[OCILayoutStore, str, str]) -> None:
    store, first, second = released
    refuse_republish(store, "alpha", "1.0.0", first, WHERE)   # a re-run of the same release
    refuse_republish(store, "alpha", "1.0.1", second, WHERE)  # the change with its new version
    refuse_republish(store, "beta", "1.0.0", second, "templates/beta/agent.yaml")  # a first publication
    refuse_republish(OCILayoutStore(store.root.parent / "empty"), "alpha", "1.0.0", second, WHERE)  # empty store


def test_a_moved_tag_does_not_launder_the_version(tmp_path: Path, released: tuple[OCILayoutStore, str, str]) -> None:
    """Once the tag has been moved (by an unguarded release), the old manifest is still in the store
    under that version: new bytes stay refused, both ways round."""
    store, first, second = released
    wasm = OCILayoutStore(tmp_path / "scratch").fetch_wasm(f"alpha@{second}")[1]
    # an unguarded publisher: alpha:1.0.0 now tags the second build
    store.push_agent(build_agent_artifact(wasm, name="alpha", version="1.0.0", created_epoch=0), name="alpha",
                     version="1.0.0")
    assert store.resolve("alpha:1.0.0").digest == second
    for digest, other in ((first, second), (second, first)):
        with pytest.raises(InputError, match="already published") as caught:
            refuse_republish(store, "alpha", "1.0.0", digest, WHERE)
        assert other in str(caught.value)


def test_the_release_refuses_new_bytes_under_a_published_version(tmp_path: Path) -> None:
    """The pipeline asks the guard before signing and publishing: the tag stays on the first build."""
    templates, store = tmp_path / "templates", OCILayoutStore(tmp_path / "store")
    write_template(tmp_path, "alpha")
    first = _build(templates, tmp_path / "store")
    write_template(tmp_path, "alpha", wat=OK_WAT.replace("i32.const 64", "i32.const 128"))
    [t] = run_pipeline(templates, store).templates
    assert t.status == "failed" and any("is already published" in e for e in t.errors), t.errors
    assert store.resolve("alpha:1.0.0").digest == first
    manifest = templates / "alpha/agent.yaml"
    manifest.write_text(manifest.read_text().replace("version: 1.0.0", "version: 1.0.1"))
    [t] = run_pipeline(templates, store).templates
    assert t.status == "built" and store.resolve("alpha:1.0.1").digest == t.digest != first
