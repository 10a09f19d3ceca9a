"""Template validation: every bad input is refused with the file and the line or field."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from helpers import EXAMPLES, TEMPLATES, dependency_yaml, hello_manifest, write_template

from agentfactory.digest import tree_sha256
from agentfactory.errors import TemplateError, ValidationFailed
from agentfactory.template import MAX_SOURCE_BYTES, discover, folder_name_problem, load_template, schema


def problems(folder: Path) -> str:
    with pytest.raises(ValidationFailed) as info:
        load_template(folder, f"{folder.name}/agent.yaml")
    return str(info.value)


@pytest.mark.parametrize("name", EXAMPLES)
def test_examples_are_valid(name: str) -> None:
    t = load_template(TEMPLATES / name)
    assert t.name == name
    assert t.sources and all(len(s.sha256) == 64 for s in t.sources)


def test_schema_beside_templates_is_the_shipped_one() -> None:
    assert json.loads((TEMPLATES / "agent-template.schema.json").read_text()) == schema()


def test_valid_template_fields(tmp_path: Path) -> None:
    extra = """  tools: [log]
  capabilities:
    wasi:
      preopens: [{guestPath: /data, hostPath: /srv/data}]
      env: [LANG]
"""
    t = load_template(write_template(tmp_path, manifest=hello_manifest(extra_spec=extra)))
    assert (t.name, t.version, t.language, t.entrypoint) == ("hello", "1.0.0", "c", "_start")
    assert t.preopens[0].read_only is True
    assert t.env == ("LANG",) and t.tools == ("log",)
    assert t.limits.memory_mib == 8 and t.limits.fuel is None


def test_yaml_syntax_error(tmp_path: Path) -> None:
    folder = write_template(tmp_path, manifest="apiVersion: x\nmetadata: [a,\n")
    assert "hello/agent.yaml:3" in problems(folder) and "YAML syntax error" in problems(folder)


def test_unknown_field_names_field_and_line(tmp_path: Path) -> None:
    folder = write_template(tmp_path, manifest=hello_manifest(extra_spec="  networking: true\n"))
    msg = problems(folder)
    assert "hello/agent.yaml:14: spec.networking: unknown field 'networking'" in msg


def test_wrong_semver(tmp_path: Path) -> None:
    folder = write_template(tmp_path, manifest=hello_manifest(version="v1.2"))
    assert "hello/agent.yaml:5: metadata.version: 'v1.2' is not a semantic version" in problems(folder)


@pytest.mark.parametrize(("written", "read_as"), [("1.0", "1.0 is read by YAML as a number"),
                                                   ("2", "2 is read by YAML as a number"),
                                                   ("yes", "True is read by YAML as a boolean"),
                                                   ("", "an empty value is read by YAML as null")])
def test_an_unquoted_version_says_to_quote_a_semantic_version(tmp_path: Path, written: str, read_as: str) -> None:
    msg = problems(write_template(tmp_path, manifest=hello_manifest(version=written)))
    assert f'hello/agent.yaml:5: metadata.version: {read_as}, not a string: write a quoted semantic version like ' \
           '"1.0.0"' in msg
    assert "is not of type" not in msg


def test_any_unquoted_string_field_says_to_quote_it(tmp_path: Path) -> None:
    manifest = hello_manifest().replace("  description: Says hello.", "  description: 42")
    msg = problems(write_template(tmp_path, manifest=manifest))
    assert "metadata.description: 42 is read by YAML as a number, not a string: put the value in quotes" in msg


def test_the_folder_name_check_shared_with_the_pipeline(tmp_path: Path) -> None:
    good = load_template(write_template(tmp_path, "hello"))
    assert folder_name_problem(good, "hello/agent.yaml") is None
    other = tmp_path / "other"
    (tmp_path / "hello").rename(other)
    problem = folder_name_problem(load_template(other), "other/agent.yaml")
    assert problem is not None and str(problem) == ("other/agent.yaml: metadata.name: 'hello' differs from the folder "
                                                    "name 'other'; rename one so they match")


def test_schema_violation_says_which_field_and_why(tmp_path: Path) -> None:
    manifest = hello_manifest().replace("memoryMiB: 8", "memoryMiB: 100000").replace(
        'owners: ["@example/team"]', "owners: []")
    msg = problems(write_template(tmp_path, manifest=manifest))
    assert "metadata.owners: [] should be non-empty" in msg
    assert "spec.limits.memoryMiB: 100000 is greater than the maximum of 4096" in msg
    assert "agent.yaml:7: metadata.owners" in msg and "agent.yaml:12: spec.limits.memoryMiB" in msg


def test_missing_required_field(tmp_path: Path) -> None:
    manifest = hello_manifest().replace("  description: Says hello.\n", "")
    assert "metadata: 'description' is required" in problems(write_template(tmp_path, manifest=manifest))


def test_missing_source(tmp_path: Path) -> None:
    folder = write_template(tmp_path, manifest=hello_manifest(sources="[src/main.c, src/gone.c]"))
    assert "hello/agent.yaml:10: source 'src/gone.c' does not exist" in problems(folder)


@pytest.mark.parametrize("source", ["../other/main.c", "/etc/passwd", "src/../../x.c"])
def test_sources_outside_the_folder_are_refused_by_schema(tmp_path: Path, source: str) -> None:
    folder = write_template(tmp_path, manifest=hello_manifest(sources=f"[{source}]"))
    assert "spec.sources[0]" in problems(folder)


def test_symlink_escaping_the_folder(tmp_path: Path) -> None:
    (tmp_path / "secret.c").write_text("int x;\n")
    folder = write_template(tmp_path, manifest=hello_manifest(sources="[src/main.c, src/link.c]"))
    os.symlink(tmp_path / "secret.c", folder / "src" / "link.c")
    assert "source 'src/link.c' resolves outside the template folder" in problems(folder)


def test_symlink_inside_the_folder_is_fine(tmp_path: Path) -> None:
    folder = write_template(tmp_path, manifest=hello_manifest(sources="[src/main.c, src/alias.c]"))
    (folder / "src" / "real.c").write_text("int y;\n")
    os.symlink("real.c", folder / "src" / "alias.c")
    assert len(load_template(folder).sources) == 2


def test_manifest_symlink_is_refused(tmp_path: Path) -> None:
    folder = write_template(tmp_path)
    (folder / "agent.yaml").rename(tmp_path / "elsewhere.yaml")
    os.symlink(tmp_path / "elsewhere.yaml", folder / "agent.yaml")
    with pytest.raises(TemplateError, match="regular file"):
        load_template(folder)


def test_oversized_source(tmp_path: Path) -> None:
    folder = write_template(tmp_path, files={"src/main.c": "/*" + "x" * MAX_SOURCE_BYTES + "*/\n"})
    assert "is 1048581 bytes; the limit is 1048576" in problems(folder)


def test_oversized_manifest(tmp_path: Path) -> None:
    folder = write_template(tmp_path, manifest=hello_manifest() + "#" * 70_000 + "\n")
    with pytest.raises(TemplateError, match="limit is 65536"):
        load_template(folder)


def test_yaml_bomb_manifest(tmp_path: Path) -> None:
    bomb = "x0: &a0 [" + ", ".join(["y"] * 10) + "]\n"
    for i in range(1, 7):
        bomb += f"x{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]\n"
    folder = write_template(tmp_path, manifest=bomb)
    assert "alias bomb" in problems(folder)


def test_language_rules(tmp_path: Path) -> None:
    folder = write_template(tmp_path, manifest=hello_manifest(language="wat", sources="[a.wat, b.wat]"),
                            files={"a.wat": "(module)", "b.wat": "(module)"})
    assert "exactly one source" in problems(folder)
    folder = write_template(tmp_path, "pyish", manifest=hello_manifest("pyish", sources="[main.py]"),
                            files={"main.py": "print(1)"})
    assert "a c template takes .c, .h files" in problems(folder)


def test_dependency_hash_checked(tmp_path: Path) -> None:
    folder = write_template(tmp_path, files={"src/main.c": "int main(void){return 0;}\n",
                                             "vendor/lib/lib.c": "int lib;\n"})
    good = tree_sha256(folder / "vendor/lib")
    (folder / "agent.yaml").write_text(hello_manifest(extra_spec=dependency_yaml(good)))
    assert load_template(folder).dependencies[0].sha256 == good
    (folder / "vendor/lib/lib.c").write_text("int lib = 666; /* tampered */\n")
    msg = problems(folder)
    assert "dependency 'lib': vendored sources at 'vendor/lib' hash to" in msg
    assert f"not the declared {good}" in msg


def test_dependency_outside_folder(tmp_path: Path) -> None:
    folder = write_template(tmp_path, manifest=hello_manifest(extra_spec=dependency_yaml("ab" * 32, "vendor/none")))
    assert "dependency 'lib' path 'vendor/none' does not exist" in problems(folder)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    folder = write_template(tmp_path, manifest=hello_manifest(sources="[src/a.c, src/b.c]"))
    msg = problems(folder)
    assert "'src/a.c' does not exist" in msg and "'src/b.c' does not exist" in msg


def test_discover_skips_hidden_and_underscore(tmp_path: Path) -> None:
    write_template(tmp_path, "a")
    write_template(tmp_path, "_shared")
    write_template(tmp_path, ".scratch")
    (tmp_path / "notes").mkdir()
    assert [p.name for p in discover(tmp_path)] == ["a"]
