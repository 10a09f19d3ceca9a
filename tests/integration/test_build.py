"""Real builds with the pinned zig and wat2wasm, run in wasmtime."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers import EXAMPLES, TEMPLATES, hello_manifest, write_template

from agentfactory.digest import sha256_file
from agentfactory.store import OCILayoutStore
from agentfactory.wasm import inspect
from pipelines import toolchain
from pipelines.run import run_pipeline

pytestmark = pytest.mark.toolchain


def run_one(tmp_path: Path, folder: Path) -> dict:
    store = OCILayoutStore(tmp_path / "store")
    report = run_pipeline(folder.parent, store, jobs=1)
    (result,) = [t for t in report.templates if t.path.endswith(folder.name)]
    return {"r": result, "store": store}


@pytest.mark.parametrize("name", EXAMPLES)
def test_example_builds_passes_its_cases_and_is_published(tmp_path: Path, name: str) -> None:
    shutil.copytree(TEMPLATES / name, tmp_path / "t" / name)
    out = run_one(tmp_path, tmp_path / "t" / name)
    r = out["r"]
    assert r.status == "built", r.errors
    assert r.tests["total"] >= 5 and r.tests["passed"] == r.tests["total"]
    agent, wasm = out["store"].fetch_wasm(f"{name}:{r.version}")
    assert agent.digest == r.digest
    info = inspect(wasm)
    assert info.exported("_start") and info.exported("memory", "memory")
    assert {i.module for i in info.imports} <= {"wasi_snapshot_preview1"}
    assert r.build["toolchain"]["version"] and r.build["inputs"]


def test_compile_error_shows_diagnostics(tmp_path: Path) -> None:
    folder = write_template(tmp_path, files={"src/main.c": "int main(void) {\n  return undefined_thing;\n}\n"})
    r = run_one(tmp_path, folder)["r"]
    assert r.status == "failed"
    (msg,) = r.errors
    assert "compile failed (zig cc exit 1)" in msg
    assert "src/main.c:2:10: error: use of undeclared identifier 'undefined_thing'" in msg
    assert str(tmp_path) not in msg  # diagnostics name template paths, not the checkout


def test_warnings_are_errors(tmp_path: Path) -> None:
    folder = write_template(tmp_path, files={"src/main.c": "int main(void) { int unused; return 0; }\n"})
    assert "-Werror,-Wunused-variable" in run_one(tmp_path, folder)["r"].errors[0]


# The pipeline's own libc source is read by its own compile only; a template including it is reading the host.
@pytest.mark.parametrize("include", ['"/etc/hostname"', '"../../outside.h"',
                                     f'"{toolchain.LIBC_DIR / "memcmp.c"}"'])
def test_include_outside_the_template_is_refused(tmp_path: Path, include: str) -> None:
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "outside.h").write_text("#define OUTSIDE 1\n")
    folder = write_template(tmp_path / "t", files={"src/main.c": f"#include {include}\nint main(void){{return 0;}}\n"})
    r = run_one(tmp_path, folder)["r"]
    assert r.status == "failed"
    # The build runs on a private copy: `../` finds nothing, an absolute path is named and withheld.
    assert "outside the template folder" in r.errors[0] or "file not found" in r.errors[0]
    assert not (tmp_path / "store" / "index.json").exists()


def test_host_file_contents_never_reach_the_diagnostics(tmp_path: Path) -> None:
    secret = tmp_path / "host-secret.txt"
    secret.write_text("TOPSECRET_TOKEN_123\n")
    folder = write_template(tmp_path / "t", files={"src/main.c": f'#include "{secret}"\nint main(void){{return 0;}}\n'})
    (msg,) = run_one(tmp_path, folder)["r"].errors
    assert f"the build read {secret}, which is outside the template folder" in msg
    assert "TOPSECRET" not in msg


def test_symlink_to_host_file_is_refused_before_compiling(tmp_path: Path) -> None:
    secret = tmp_path / "host-secret.h"
    secret.write_text("TOPSECRET_TOKEN_123\n")
    folder = write_template(tmp_path / "t", files={"src/main.c": '#include "x.h"\nint main(void){return 0;}\n'})
    (folder / "src" / "x.h").symlink_to(secret)
    (msg,) = run_one(tmp_path, folder)["r"].errors
    assert "src/x.h is a symbolic link to" in msg and "TOPSECRET" not in msg


def test_embed_of_a_host_file_is_refused(tmp_path: Path) -> None:
    # Compiles only if the C23 #embed warning were not an error; either way nothing is published.
    folder = write_template(tmp_path / "t", files={
        "src/main.c": 'static const char d[] = {\n#embed "/etc/hostname"\n, 0};\nint main(void){return d[0];}\n'})
    r = run_one(tmp_path, folder)
    assert r["r"].status == "failed" and r["store"].list_agents() == []


def test_unlisted_header_is_tracked_for_the_cache(tmp_path: Path) -> None:
    folder = write_template(tmp_path, files={
        "src/main.c": '#include <stdio.h>\n#include "msg.h"\nint main(void){puts(MSG);return 0;}\n',
        "src/msg.h": '#define MSG "one"\n'})
    r = run_one(tmp_path, folder)["r"]
    assert r.status == "built" and "src/msg.h" in r.build["inputs"]
    assert run_one(tmp_path, folder)["r"].status == "unchanged"
    (folder / "src/msg.h").write_text('#define MSG "two"\n')
    manifest = folder / "agent.yaml"  # new bytes need a new version (pipelines/publishguard.py)
    manifest.write_text(manifest.read_text().replace("version: 1.0.0", "version: 1.0.1"))
    again = run_one(tmp_path, folder)["r"]
    assert again.status == "built" and again.digest != r.digest


def test_missing_entrypoint(tmp_path: Path) -> None:
    folder = write_template(tmp_path, manifest=hello_manifest(language="wat", sources="[m.wat]"),
                            files={"m.wat": '(module (memory (export "memory") 1) (func (export "main")))'})
    assert "does not export the entrypoint '_start'" in run_one(tmp_path, folder)["r"].errors[0]


def test_wat_syntax_error(tmp_path: Path) -> None:
    folder = write_template(tmp_path, manifest=hello_manifest(language="wat", sources="[m.wat]"),
                            files={"m.wat": "(module\n  (func (export \"_start\")\n    i32.bogus))"})
    msg = run_one(tmp_path, folder)["r"].errors[0]
    assert "hello/m.wat: wat2wasm failed" in msg and "i32.bogus" in msg


def test_memory_over_the_declared_limit(tmp_path: Path) -> None:
    folder = write_template(tmp_path, files={
        "src/main.c": "static char big[16 << 20];\n"
                      "int main(int argc, char **argv) {\n  (void)argv; big[argc] = 1; return big[argc * 2];\n}\n"})
    r = run_one(tmp_path, folder)["r"]
    assert "more than spec.limits.memoryMiB (8)" in r.errors[0]


def test_failing_case_blocks_publication(tmp_path: Path) -> None:
    folder = write_template(tmp_path)
    (folder / "tests").mkdir()
    (folder / "tests/cases.yaml").write_text("cases:\n  - name: says bye\n    stdout: \"bye\\n\"\n")
    r = run_one(tmp_path, folder)
    assert r["r"].status == "failed"
    assert "case 'says bye': stdout 'hello\\n', expected 'bye\\n'" in r["r"].errors[0]
    assert r["store"].list_agents() == []


def test_runaway_case_hits_the_deadline(tmp_path: Path) -> None:
    folder = write_template(tmp_path, manifest=hello_manifest().replace("timeoutMs: 2000", "timeoutMs: 200"),
                            files={"src/main.c": "int main(void){ volatile int x = 1; while (x) {} return 0; }\n"})
    (folder / "tests").mkdir()
    (folder / "tests/cases.yaml").write_text("cases:\n  - name: spins\n")
    r = run_one(tmp_path, folder)["r"]
    assert r.status == "failed"
    assert r.errors[0].endswith("case 'spins': trapped: deadline exceeded (spec.limits.timeoutMs = 200)")


def test_malformed_cases_file(tmp_path: Path) -> None:
    folder = write_template(tmp_path)
    (folder / "tests").mkdir()
    (folder / "tests/cases.yaml").write_text("cases:\n  - name: x\n    stdot: typo\n")
    assert "hello/tests/cases.yaml:2" in run_one(tmp_path, folder)["r"].errors[0]


def test_c_agents_link_the_pipelines_memcmp_and_keep_their_own(tmp_path: Path) -> None:
    """Every C agent gets pipelines/libc/memcmp.c (zig's own is a byte loop): it must agree with a byte-by-byte
    reference on every length, alignment and first-difference position, never read past either buffer (a
    load past the end of linear memory traps the case), and give way to an agent's own memcmp."""
    root = tmp_path / "t"
    check = (Path(__file__).parents[1] / "fixtures" / "libc" / "memcmp_check.c").read_text()
    write_template(root, "memcmpcheck", manifest=hello_manifest("memcmpcheck"), files={"src/main.c": check})
    (root / "memcmpcheck" / "tests").mkdir()
    (root / "memcmpcheck" / "tests/cases.yaml").write_text(
        'cases:\n  - name: agrees with the reference\n    stdout: "cases=409088 wrong=0\\n"\n')
    own = ("#include <stddef.h>\n#include <stdio.h>\n#include <string.h>\n"
           "int memcmp(const void *a, const void *b, size_t n) { (void)a; (void)b; return (int)n + 1000; }\n"
           "static int (*volatile cmp)(const void *, const void *, size_t) = memcmp;\n"
           "int main(void) { printf(\"%d\\n\", cmp(\"ab\", \"ab\", 2)); return 0; }\n")
    write_template(root, "ownmemcmp", manifest=hello_manifest("ownmemcmp"), files={"src/main.c": own})
    (root / "ownmemcmp" / "tests").mkdir()
    (root / "ownmemcmp" / "tests/cases.yaml").write_text('cases:\n  - name: its own\n    stdout: "1002\\n"\n')
    report = run_pipeline(root, OCILayoutStore(tmp_path / "store"), jobs=1)
    results = {Path(t.path).name: t for t in report.templates}
    for name in ("memcmpcheck", "ownmemcmp"):
        assert results[name].status == "built", results[name].errors
    supplement = results["memcmpcheck"].build["toolchain"]["libcSupplement"]
    assert supplement == {"pipelines/libc/memcmp.c": sha256_file(toolchain.LIBC_DIR / "memcmp.c")}
    assert list(results["memcmpcheck"].build["inputs"]) == ["src/main.c"]  # the supplement is toolchain, not input
