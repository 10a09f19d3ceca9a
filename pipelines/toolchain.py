"""The pinned WASI toolchain: `zig cc` (C → wasm32-wasi), wasmtime's `wat2wasm` (WAT) and componentize-py
(Python → a WebAssembly component of the project's WIT world: pipelines/pybuild.py).

Builds are hermetic and reproducible: a scrubbed environment, fixed flags, paths mapped
to `.` so the checkout location never reaches the binary, debug info stripped, and
SOURCE_DATE_EPOCH taken from the commit. The compiler's dependency files name every file
it read; a build that read anything outside the template folder or the toolchain's own
headers fails, and the files it read inside the template become part of the cache key.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentfactory.errors import BuildError
from agentfactory.template import Template

# zig's default wasm stack is 16 MiB, which every agent would have to allow as memory: 1 MiB.
# -msimd128: fixed-width SIMD, on in the engine (agentfactory.wasmconfig), so the vectorisers can use it as a
# native build uses the host's. -unroll-threshold=600 (LLVM: 150 at -O2, 300 at -O3): small constant-trip
# loops are unrolled whole, so the straight-line code vectorises and the loop's epoch check goes; measured
# in benchmarks/results/runtime.md ("WASI compute overhead").
C_FLAGS = ("-target", "wasm32-wasi", "-std=c11", "-O2", "-msimd128", "-mllvm", "-unroll-threshold=600", "-s",
           "-Wall", "-Wextra", "-Werror", "-Wl,-z,stack-size=1048576")
COMPILE_TIMEOUT_S = 300
MAX_WASM_BYTES = 64 * 1024 * 1024
MAX_DIAGNOSTICS = 16 * 1024
MAX_STAGED_BYTES = 64 * 1024 * 1024
# A diagnostic's location: "path:line:col: error", "In file included from path:line:".
_LOCATION = re.compile(r"^(?:In file included from |\s*from )?(?P<file>[^:\n]+):\d+(?::\d+)?[:,]", re.M)


@dataclass(frozen=True)
class BuildResult:
    """Module bytes plus what provenance needs to describe how they were made."""

    wasm: bytes
    toolchain: dict[str, Any]
    inputs: dict[str, str]  # posix path in the template → sha256 of every file the compiler read
    source_date_epoch: int
    flags: tuple[str, ...] = field(default=())


@functools.cache
def zig_dir() -> Path:
    import ziglang

    return Path(ziglang.__file__).parent


# The pipeline's own libc functions, linked into every C agent ahead of zig's (pipelines/libc/memcmp.c says
# why): part of the toolchain, so their digests are in its identity (cache key, provenance, SBOM).
LIBC_DIR = Path(__file__).resolve().parent / "libc"
LIBC_SOURCES = ("memcmp.c",)


@functools.cache
def libc_supplement() -> dict[str, str]:
    """{"pipelines/libc/<file>": sha256} of the pipeline's libc functions that every C agent links."""
    from agentfactory.digest import sha256_file

    return {f"pipelines/libc/{name}": sha256_file(LIBC_DIR / name) for name in LIBC_SOURCES}


def libc_supplement_args() -> list[str]:
    """The sources to put on a wasm32-wasi `zig cc` line after the program's own, and the prefix map that keeps
    the checkout's location out of the module."""
    return [f"-ffile-prefix-map={LIBC_DIR}=agentfactory-libc", *(str(LIBC_DIR / name) for name in LIBC_SOURCES)]


@functools.cache
def zig_version() -> str:
    """The pinned wheel's version, which is zig's own (no subprocess on the unchanged path)."""
    from agentfactory.distversion import installed_version

    return installed_version("ziglang")


@functools.cache
def wasmtime_version() -> str:
    from agentfactory.distversion import installed_version

    return installed_version("wasmtime")


def identity(language: str) -> dict[str, Any]:
    """What the cache key and the provenance record of the toolchain for `language`."""
    if language == "python":
        from . import pybuild

        return pybuild.identity()
    if language == "c":
        return {"name": "zig cc", "version": zig_version(), "package": f"ziglang=={zig_version()}",
                "target": "wasm32-wasi", "libc": "wasi-libc (bundled with zig)", "flags": list(C_FLAGS),
                "libcSupplement": libc_supplement()}
    return {"name": "wat2wasm", "version": wasmtime_version(),
            "package": f"wasmtime=={wasmtime_version()}", "target": "wasm32"}


def _clean_env(extra: dict[str, str]) -> dict[str, str]:
    """No CFLAGS, no user config: only what the build needs."""
    return {"PATH": "/usr/bin:/bin", "LC_ALL": "C", "TZ": "UTC", **extra}


def _truncate(text: str) -> str:
    return text if len(text) <= MAX_DIAGNOSTICS else text[:MAX_DIAGNOSTICS] + "\n… (diagnostics truncated)"


def _parse_depfile(text: str) -> list[str]:
    """Prerequisites of a Make-style depfile (`target: a b \\` continuation lines)."""
    _, _, rest = text.replace("\\\n", " ").partition(": ")
    parts: list[str] = []
    current = ""
    tokens = rest.split(" ")
    for tok in tokens:
        if tok.endswith("\\") and not tok.endswith("\\\\"):  # escaped space inside a path
            current += tok[:-1] + " "
            continue
        current += tok
        if current.strip():
            parts.append(current.strip())
        current = ""
    return parts


def stage(folder: Path, dest: Path) -> None:
    """Copy the template's regular files into a private build folder.

    The compiler then sees nothing but the template: `../` leads into an empty parent, and a
    symbolic link that leaves the template is refused here rather than followed.
    """
    real = folder.resolve()
    total = 0
    for path in sorted(real.rglob("*")):
        rel = path.relative_to(real)
        if rel.parts[0] in (".git",):
            continue
        target = path.resolve()
        if not target.is_relative_to(real):
            raise BuildError(folder.name, f"{rel.as_posix()} is a symbolic link to {target}, outside the "
                                          "template folder")
        if target.is_file():
            total += target.stat().st_size
            if total > MAX_STAGED_BYTES:
                raise BuildError(folder.name, f"the template folder holds more than {MAX_STAGED_BYTES} bytes")
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(target, dest / rel)


def _withhold_outside(diagnostics: str, root: Path) -> str | None:
    """The first file outside `root` and the toolchain that the diagnostics quote, if any.

    A compiler error inside a host file prints that file's text; a pull request must not be
    able to read the build machine through its own CI output.
    """
    toolchain = zig_dir().resolve()
    for m in _LOCATION.finditer(diagnostics):
        name = m["file"].strip()
        path = Path(name) if os.path.isabs(name) else root / name
        resolved = path.resolve()
        if not (resolved.is_relative_to(root) or resolved.is_relative_to(toolchain)):
            return name
    return None


def build_c(template: Template, epoch: int, cache_root: Path) -> BuildResult:
    """Compile a C template to a WASI command module with zig cc, from a staged copy."""
    where = f"{template.folder.name}"
    global_cache = cache_root / "zig-global"
    global_cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="build-", dir=cache_root) as scratch:
        src = (Path(scratch) / "src").resolve()
        local = Path(scratch) / "zig-local"
        src.mkdir()
        local.mkdir()
        stage(template.folder, src)
        includes = tuple(f"-I{inc}" for inc in template.include_dirs)
        flags = [*C_FLAGS, f"-ffile-prefix-map={src}=.", *includes]
        out = local / "agent.wasm"
        cmd = [str(zig_dir() / "zig"), "cc", *flags, "-MD", *(s.path for s in template.sources),
               *libc_supplement_args(), "-o", str(out)]
        env = _clean_env({"ZIG_GLOBAL_CACHE_DIR": str(global_cache), "ZIG_LOCAL_CACHE_DIR": str(local),
                          "SOURCE_DATE_EPOCH": str(epoch), "HOME": str(local)})
        try:
            proc = subprocess.run(cmd, cwd=src, capture_output=True, text=True, env=env,
                                  timeout=COMPILE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise BuildError(where, f"zig cc did not finish within {COMPILE_TIMEOUT_S} s") from None
        if proc.returncode != 0:
            diagnostics = proc.stderr or proc.stdout
            outside = _withhold_outside(diagnostics, src)
            if outside:
                raise BuildError(where, f"compile failed: the build read {outside}, which is outside the "
                                        "template folder (diagnostics withheld so that host files are not "
                                        "disclosed)")
            raise BuildError(where, f"compile failed (zig cc exit {proc.returncode}):", _truncate(diagnostics))
        inputs = _confined_inputs(local, src, where)
        wasm = _read_output(out, where)
    return BuildResult(wasm=wasm, toolchain=identity("c"), inputs=inputs, source_date_epoch=epoch,
                       flags=(*C_FLAGS, *includes))


def _confined_inputs(local: Path, folder: Path, where: str) -> dict[str, str]:
    """Every file the compiler read, from its depfiles; refuse reads outside the template."""
    from agentfactory.digest import sha256_file

    depfiles = list(local.rglob("*.d"))
    if not depfiles:
        raise BuildError(where, "the compiler wrote no dependency file; cannot tell which files it read")
    toolchain = zig_dir().resolve()
    inputs: dict[str, str] = {}
    libc = {(LIBC_DIR / name).resolve() for name in LIBC_SOURCES}
    for dep in depfiles:
        names = _parse_depfile(dep.read_text("utf-8", "replace"))
        # Only the pipeline's own compile of a libc file (its depfile starts with that file) may read it: a
        # template that includes it reads outside its folder like any other host file.
        own = bool(names) and Path(names[0]).resolve() in libc
        for name in names:
            path = (folder / name).resolve() if not os.path.isabs(name) else Path(name).resolve()
            if path.is_relative_to(toolchain) or (own and path in libc):
                continue
            if not path.is_relative_to(folder):
                raise BuildError(where, f"the build read {name}, which is outside the template folder; "
                                        "templates may only use their own files and vendored sources")
            inputs[path.relative_to(folder).as_posix()] = sha256_file(path)
    return dict(sorted(inputs.items()))


def _read_output(out: Path, where: str) -> bytes:
    size = out.stat().st_size
    if size > MAX_WASM_BYTES:
        raise BuildError(where, f"the module is {size} bytes; the limit is {MAX_WASM_BYTES}")
    return out.read_bytes()


def build_wat(template: Template, epoch: int) -> BuildResult:
    """Assemble a WAT template with wasmtime's wat2wasm."""
    import wasmtime

    source = template.sources[0]
    where = f"{template.folder.name}/{source.path}"
    try:
        text = (template.folder / source.path).read_text("utf-8", errors="strict")
    except UnicodeDecodeError as exc:
        raise BuildError(where, f"not UTF-8 text (byte {exc.start})") from None
    try:
        wasm = bytes(wasmtime.wat2wasm(text))
    except wasmtime.WasmtimeError as exc:
        raise BuildError(where, "wat2wasm failed:", _truncate(str(exc))) from None
    return BuildResult(wasm=wasm, toolchain=identity("wat"), inputs={source.path: source.sha256},
                       source_date_epoch=epoch)


def build_python(template: Template, epoch: int, cache_root: Path) -> BuildResult:
    """Build a Python template into a component with componentize-py (pipelines/pybuild.py)."""
    from agentfactory.digest import sha256_bytes

    from . import pybuild

    built = pybuild.build_python(template, epoch, cache_root, zig_dir() / "zig")
    record = {**identity("python"), "templateWorldSha256": sha256_bytes(built.world.encode()),
              "reproducibility": built.reproducible}
    return BuildResult(wasm=built.wasm, toolchain=record, inputs=built.inputs, source_date_epoch=epoch)


def build(template: Template, epoch: int, cache_root: Path) -> BuildResult:
    """Build `template` with the toolchain for its language."""
    if template.language == "c":
        return build_c(template, epoch, cache_root)
    if template.language == "wat":
        return build_wat(template, epoch)
    if template.language == "python":
        return build_python(template, epoch, cache_root)
    raise BuildError(template.folder.name, f"no toolchain for language {template.language!r}")

