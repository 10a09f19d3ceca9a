"""The CycloneDX SBOM: valid, reproducible to the byte, about the right artifact, strict on input."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from packageurl import PackageURL

from agentfactory import __version__
from agentfactory.digest import sha256_file
from agentfactory.errors import InputError
from agentfactory.template import Dependency, Template, load_template
from pipelines import toolchain
from pipelines.sbom import (
    MAX_ARRAY_ITEMS,
    MAX_SBOM_BYTES,
    SOURCE_HASH_METHOD,
    build_sbom,
    release_path,
    sbom_subject,
    validate_sbom,
)

ROOT = Path(__file__).resolve().parents[2]
TEMPLATES = ROOT / "templates"
EXAMPLES = sorted(p.name for p in TEMPLATES.iterdir() if (p / "agent.yaml").is_file())
CONFORMANCE = Path(__file__).resolve().parents[1] / "fixtures" / "cyclonedx"  # see tests/fixtures/SOURCES.md
DIGEST = "sha256:" + "ab" * 32
OTHER_DIGEST = "sha256:" + "cd" * 32
EPOCH = 1_700_000_000
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def template(name: str) -> Template:
    return load_template(TEMPLATES / name)


def sbom(t: Template, digest: str = DIGEST, commit: str | None = COMMIT, epoch: int = EPOCH) -> bytes:
    return build_sbom(t, digest=digest, toolchain=toolchain.identity(t.language), epoch=epoch, commit=commit)


def parsed(data: bytes) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(data)
    return doc


def tools(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in doc["metadata"]["tools"]["components"]}


def with_deps(t: Template, *deps: Dependency) -> Template:
    return dataclasses.replace(t, dependencies=tuple(deps))


def dep(name: str, purl: str, license: str = "MIT") -> Dependency:
    return Dependency(name=name, version="2.0.0", purl=purl, license=license, path=f"vendor/{name}",
                      sha256="0" * 64)


# --- building -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", EXAMPLES)
def test_examples_validate_and_name_their_artifact(name: str) -> None:
    t = template(name)
    data = sbom(t)
    validate_sbom(data, f"{name}.cdx.json")
    assert sbom_subject(data) == (t.name, t.version, DIGEST)


@pytest.mark.parametrize("name", EXAMPLES)
def test_identical_inputs_give_identical_bytes(name: str) -> None:
    assert sbom(template(name)) == sbom(template(name))


def test_identical_bytes_across_processes_and_hash_seeds() -> None:
    """Set iteration order changes with PYTHONHASHSEED: the document must not."""
    code = ("import sys; from pathlib import Path; from agentfactory.template import load_template; "
            "from pipelines.sbom import build_sbom; from pipelines.toolchain import identity; "
            "t = load_template(Path('templates/wordstats')); "
            f"sys.stdout.buffer.write(build_sbom(t, digest={DIGEST!r}, toolchain=identity('c'), epoch={EPOCH}, "
            f"commit={COMMIT!r}))")
    seed = "2" if os.environ.get("PYTHONHASHSEED") == "1" else "1"  # differs from this process's
    other = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": seed}).stdout
    assert other == sbom(template("wordstats"))


def test_no_random_refs_and_no_wall_clock() -> None:
    text = sbom(template("wordstats")).decode()
    assert "BomRef" not in text  # the library's name for refs it invents at random
    doc = parsed(text.encode())
    stamp = datetime.fromisoformat(doc["metadata"]["timestamp"])
    assert stamp == datetime.fromtimestamp(EPOCH, UTC)
    assert parsed(sbom(template("wordstats"), epoch=EPOCH + 60))["metadata"]["timestamp"] != \
        doc["metadata"]["timestamp"]


def test_serial_follows_digest_and_commit() -> None:
    t = template("wordstats")
    base = parsed(sbom(t))["serialNumber"]
    assert base.startswith("urn:uuid:")
    other_digest = sbom(t, digest=OTHER_DIGEST)
    assert other_digest != sbom(t)
    assert parsed(other_digest)["serialNumber"] != base
    assert parsed(sbom(t, commit="f" * 40))["serialNumber"] != base
    assert parsed(sbom(t, commit=None))["serialNumber"] != base
    assert parsed(sbom(t, epoch=EPOCH + 1))["serialNumber"] == base  # same artifact, same commit


def test_metadata_component_is_the_agent() -> None:
    t = template("wordstats")
    root = parsed(sbom(t))["metadata"]["component"]
    assert (root["type"], root["name"], root["version"]) == ("application", "wordstats", t.version)
    assert root["description"] == t.description
    assert root["bom-ref"] == root["purl"]
    purl = PackageURL.from_string(root["purl"])
    assert (purl.type, purl.namespace, purl.name, purl.version) == ("oci", None, "wordstats", DIGEST)
    assert purl.qualifiers == {"tag": t.version}
    assert root["hashes"] == [{"alg": "SHA-256", "content": DIGEST.removeprefix("sha256:")}]
    assert {a.get("name") or a.get("email") for a in root["authors"]} == set(t.owners)
    props = {p["name"]: p["value"] for p in root["properties"]}
    assert props == {"agentfactory:language": "c", "agentfactory:commit": COMMIT}


def test_vendored_dependency_component() -> None:
    t = template("wordstats")
    (d,) = t.dependencies
    (c,) = parsed(sbom(t))["components"]
    assert (c["type"], c["name"], c["version"]) == ("library", d.name, d.version)
    assert c["purl"] == c["bom-ref"] == PackageURL.from_string(d.purl).to_string()
    assert c["licenses"] == [{"license": {"id": "Apache-2.0"}}]
    assert c["hashes"] == [{"alg": "SHA-256", "content": d.sha256}]
    props = {p["name"]: p["value"] for p in c["properties"]}
    assert props["agentfactory:source-hash"] == SOURCE_HASH_METHOD == "tree-sha256-v1"
    assert props["agentfactory:vendored-path"] == d.path


def test_licence_id_expression_and_name() -> None:
    t = with_deps(template("wordstats"), dep("a", "pkg:generic/x/a@2.0.0", "MIT"),
                  dep("b", "pkg:generic/x/b@2.0.0", "MIT OR Apache-2.0"),
                  dep("c", "pkg:generic/x/c@2.0.0", "Apache-2.0 WITH LLVM-exception"))
    data = sbom(t)
    validate_sbom(data, "x")
    licences = {c["name"]: c["licenses"] for c in parsed(data)["components"]}
    assert licences["a"] == [{"license": {"id": "MIT"}}]
    assert licences["b"] == [{"expression": "MIT OR Apache-2.0"}]
    assert licences["c"] == [{"expression": "Apache-2.0 WITH LLVM-exception"}]


def test_dependency_graph_root_depends_on_every_vendored_dependency() -> None:
    t = with_deps(template("wordstats"), *template("wordstats").dependencies,
                  *template("sha256sum").dependencies, dep("z", "pkg:github/acme/z@2.0.0"))
    doc = parsed(sbom(t))
    refs = sorted(c["bom-ref"] for c in doc["components"])
    graph = {d["ref"]: d.get("dependsOn", []) for d in doc["dependencies"]}
    root = doc["metadata"]["component"]["bom-ref"]
    assert sorted(graph[root]) == refs and len(refs) == 3
    assert all(graph[r] == [] for r in refs)
    assert set(graph) == {root, *refs}


def test_no_dependencies_still_has_the_root_in_the_graph() -> None:
    doc = parsed(sbom(template("base64")))
    assert doc.get("components", []) == []
    assert doc["dependencies"] == [{"ref": doc["metadata"]["component"]["bom-ref"]}]


def test_duplicate_purls_get_distinct_fixed_refs() -> None:
    t = with_deps(template("wordstats"), dep("one", "pkg:generic/x/same@2.0.0"),
                  dep("two", "pkg:generic/x/same@2.0.0"))
    data = sbom(t)
    assert data == sbom(t)
    validate_sbom(data, "x")
    refs = sorted(c["bom-ref"] for c in parsed(data)["components"])
    assert refs == ["agentfactory:dependency/two", "pkg:generic/x/same@2.0.0"]


def test_tools_for_c() -> None:
    found = tools(parsed(sbom(template("wordstats"))))
    zig = toolchain.zig_version()
    assert set(found) == {"agentfactory", "zig", "wasi-libc", "agentfactory-libc/memcmp.c"}
    assert found["zig"]["version"] == found["wasi-libc"]["version"] == zig
    assert found["zig"]["purl"] == f"pkg:pypi/ziglang@{zig}"
    assert found["agentfactory"]["version"] == __version__
    # the pipeline's own libc functions are named with the digest of what was linked
    supplement = found["agentfactory-libc/memcmp.c"]
    assert supplement["hashes"] == [{"alg": "SHA-256", "content": sha256_file(toolchain.LIBC_DIR / "memcmp.c")}]


@pytest.mark.parametrize("bad", [["memcmp.c"], {"../../etc/passwd": "0" * 64}, {"pipelines/libc/memcmp.c": "nothex"},
                                 {"pipelines/libc/memcmp.c": 5}, "x"])
def test_a_malformed_libc_supplement_record_is_refused(bad: Any) -> None:
    record = {**toolchain.identity("c"), "libcSupplement": bad}
    with pytest.raises(InputError, match="toolchain.libcSupplement"):
        build_sbom(template("wordstats"), digest=DIGEST, toolchain=record, epoch=EPOCH, commit=COMMIT)


def test_tools_for_wat() -> None:
    found = tools(parsed(sbom(template("base64"))))
    assert set(found) == {"agentfactory", "wat2wasm"}
    assert found["wat2wasm"]["version"] == toolchain.wasmtime_version()
    assert found["wat2wasm"]["purl"] == f"pkg:pypi/wasmtime@{toolchain.wasmtime_version()}"


def test_refuses_malformed_digest_and_purl() -> None:
    with pytest.raises(InputError, match="not a digest"):
        sbom(template("wordstats"), digest="sha256:abc")
    with pytest.raises(InputError, match="purl 'nonsense' is malformed"):
        sbom(with_deps(template("wordstats"), dep("bad", "nonsense")))


# --- validating -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["valid-minimal-viable-1.6.json", "valid-vulnerability-1.6.json"])
def test_accepts_conformance_examples(name: str) -> None:
    validate_sbom((CONFORMANCE / name).read_bytes(), name)


@pytest.mark.parametrize(("name", "where"), [("invalid-bomformat-1.6.json", r"\$\.bomFormat"),
                                             ("invalid-serialnumber-1.6.json", r"\$\.serialNumber")])
def test_refuses_invalid_conformance_examples(name: str, where: str) -> None:
    with pytest.raises(InputError, match=where) as info:
        validate_sbom((CONFORMANCE / name).read_bytes(), name)
    assert info.value.where == name


def test_refuses_truncated_json() -> None:
    data = sbom(template("wordstats"))
    with pytest.raises(InputError, match="not JSON"):
        validate_sbom(data[: len(data) // 2], "cut.json")


def test_refuses_oversized_input_before_parsing() -> None:
    with pytest.raises(InputError, match=f"the limit is {MAX_SBOM_BYTES}"):
        validate_sbom(b" " * (MAX_SBOM_BYTES + 1), "big.json")


@pytest.mark.parametrize(("data", "message"), [
    (b"[]", "JSON list, not an object"),
    (b'"bom"', "JSON str, not an object"),
    (b"\xff\xfe{}", "not UTF-8"),
    (b'{"bomFormat": "CycloneDX", "bomFormat": "CycloneDX"}', "duplicate key 'bomFormat'"),
    (b'{"version": NaN}', "NaN is not JSON"),
    (b"[" * 100_000, "not JSON|nested too deeply"),
    (b'{"bomFormat": "CycloneDX", "specVersion": "1.4"}', r"'1.4' is not supported"),
    (b'{"bomFormat": "CycloneDX"}', r"\$\.specVersion: None is not supported"),
])
def test_refuses_bad_documents(data: bytes, message: str) -> None:
    with pytest.raises(InputError, match=message):
        validate_sbom(data, "doc.json")


def test_refuses_arrays_that_would_make_validation_quadratic() -> None:
    """uniqueItems compares objects pairwise: 4000 tiny components (150 KB) would take seconds."""
    components = [{"type": "library", "name": f"c{i}"} for i in range(2 * MAX_ARRAY_ITEMS)]
    doc = {"bomFormat": "CycloneDX", "specVersion": "1.6", "version": 1, "components": components}
    with pytest.raises(InputError, match=rf"\$\.components has {2 * MAX_ARRAY_ITEMS} items"):
        validate_sbom(json.dumps(doc).encode(), "wide.json")


def test_many_dependencies_still_validate() -> None:
    deps = [dep(f"d{i:03d}", f"pkg:generic/x/d{i:03d}@2.0.0", ("MIT", "MIT OR Apache-2.0")[i % 2]) for i in range(300)]
    data = sbom(with_deps(template("wordstats"), *deps))
    validate_sbom(data, "many.json")
    assert len(parsed(data)["components"]) == 300


def test_refuses_unknown_fields_and_names_the_path() -> None:
    doc = parsed(sbom(template("wordstats")))
    doc["components"][0]["hashes"][0]["content"] = "not-hex"
    doc["metadata"]["component"]["colour"] = "blue"
    with pytest.raises(InputError) as info:
        validate_sbom(json.dumps(doc).encode(), "tampered.json")
    message = str(info.value)
    assert "$.components[0].hashes[0].content" in message
    assert "$.metadata.component" in message and "'colour' was unexpected" in message


# --- subject and path -----------------------------------------------------------------------------

def test_subject_requires_metadata_component() -> None:
    with pytest.raises(InputError, match=r"\$\.metadata\.component is missing"):
        sbom_subject((CONFORMANCE / "valid-minimal-viable-1.6.json").read_bytes())


@pytest.mark.parametrize("change", [
    lambda c: c.pop("hashes"),
    lambda c: c.update(hashes=[{"alg": "SHA-256", "content": "ab" * 32}, {"alg": "SHA-256", "content": "cd" * 32}]),
    lambda c: c.update(hashes=[{"alg": "SHA-256", "content": "AB" * 32}]),
    lambda c: c.pop("version"),
])
def test_subject_refuses_ambiguous_or_missing_identity(change: Any) -> None:
    doc = parsed(sbom(template("wordstats")))
    change(doc["metadata"]["component"])
    with pytest.raises(InputError):
        sbom_subject(json.dumps(doc).encode(), "s.json")


def test_subject_refuses_purl_naming_another_digest() -> None:
    doc = parsed(sbom(template("wordstats")))
    doc["metadata"]["component"]["purl"] = f"pkg:oci/wordstats@{OTHER_DIGEST}?tag=1.0.0"
    with pytest.raises(InputError, match="ambiguous"):
        sbom_subject(json.dumps(doc).encode(), "s.json")
    doc["metadata"]["component"]["purl"] = f"pkg:oci/wordstats@{OTHER_DIGEST.replace(':', '%3A')}"
    with pytest.raises(InputError, match="ambiguous"):  # the percent-encoded form means the same
        sbom_subject(json.dumps(doc).encode(), "s.json")
    doc["metadata"]["component"]["purl"] = f"pkg:oci/wordstats@{DIGEST.replace(':', '%3A')}"
    assert sbom_subject(json.dumps(doc).encode())[2] == DIGEST


def test_subject_is_bounded() -> None:
    with pytest.raises(InputError, match="the limit is"):
        sbom_subject(b" " * (MAX_SBOM_BYTES + 1))


def test_release_path(tmp_path: Path) -> None:
    assert release_path(tmp_path, "wordstats", "1.2.3") == tmp_path / "sbom" / "wordstats" / "1.2.3.cdx.json"


@pytest.mark.parametrize(("name", "version"), [("../x", "1.0.0"), ("x", "../../1"), ("", "1.0.0"), ("a/b", "1"),
                                               ("x", ".hidden")])
def test_release_path_stays_in_its_folder(tmp_path: Path, name: str, version: str) -> None:
    with pytest.raises(InputError, match="cannot be used in a file name"):
        release_path(tmp_path, name, version)
