"""Python agents: a template built into a WebAssembly component of the project's WIT world with componentize-py.

The build is hermetic like the C one: a private copy of the template, a scrubbed environment, and a child
process that calls componentize-py's Python API (not its command line, which adds the build machine's
site-packages to the agent's import path). The agent is built against the project's WIT world cut down to
the tools its template declares (agentfactory.wit.world_text), with every WASI import replaced by a trap
(`--stub-wasi`): its only way out is the host tools it declared. componentize-py runs the agent's module
once at build time (pre-initialisation) and snapshots the interpreter, so that module may not wait for
input or loop forever: the child is stopped at COMPONENTIZE_TIMEOUT_S.

What may be on the agent's import path is checked first, because componentize-py reads more than Python
sources there: a `componentize-py.toml` adds WIT worlds (imports the template did not declare), a `.so`
is linked into the component as native code, and a `.pyc` is loaded instead of the source beside it. All
are refused, and so is any Python file that is neither a declared source nor inside a vendored dependency
(it would be importable without being reviewed or in the SBOM). The sources are read (parsed, not run)
for imports of WIT interfaces outside the world and calls of tools the template did not declare, and
each is refused naming the file and line, before the slow build.

Reproducibility: the child runs under the shim in pipelines/pyrepro.py; without it (not x86_64 Linux),
the build is marked not reproducible in the toolchain record that provenance carries. A reproducible
build is kept in the toolchain cache under the hash of everything that went into it (the toolchain, the
world, the module, the epoch and every file on the import path), like zig's compiled wasi-libc: the same
inputs on the same machine then skip componentize-py's ~40 s.
"""

from __future__ import annotations

import ast
import functools
import importlib
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from agentfactory import wit
from agentfactory.digest import sha256_bytes, sha256_file
from agentfactory.distversion import installed_version as version
from agentfactory.errors import BuildError
from agentfactory.fsutil import atomic_write
from agentfactory.template import Template
from agentfactory.wasm import ModuleInfo, inspect_component, is_component

from . import pyrepro

COMPONENTIZE_TIMEOUT_S = 600  # wall clock of one componentize-py build (pre-initialisation included)
MAX_COMPONENT_BYTES = 64 * 1024 * 1024
MAX_DIAGNOSTICS = 16 * 1024
MAX_PARSED_BYTES = 1024 * 1024
# Python files componentize-py would link or load as code without their sources being reviewed.
CODE_SUFFIXES = (".so", ".pyd", ".dylib", ".dll", ".pyc", ".pyo", ".wasm")
CONFIG_FILES = ("componentize-py.toml",)
# Module names the build itself provides: a template module by one of these names would be shadowed or shadow.
RESERVED_MODULES = ("wit_world", "componentize_py_runtime", "componentize_py_types", "componentize_py_async_support",
                    "poll_loop")
WORLD_MODULE = "wit_world"
CPYTHON = {"0.25.1": "3.14"}  # the CPython that each pinned componentize-py bundles


@dataclass(frozen=True)
class PyBuild:
    """The component bytes and what provenance needs: the files that went in, and how it was made."""

    wasm: bytes
    inputs: dict[str, str]  # posix path in the template -> sha256, of every file on the import path
    world: str  # the WIT the component was built against (the project's world, cut to the declared tools)
    reproducible: dict[str, Any]


@functools.cache
def componentize_version() -> str:
    return version("componentize-py")


def identity() -> dict[str, Any]:
    """The toolchain record (cache key and provenance) of a python build."""
    cpy = componentize_version()
    return {"name": "componentize-py", "version": cpy, "package": f"componentize-py=={cpy}",
            "target": "wasm32-wasip2 component", "cpython": CPYTHON.get(cpy, "unknown"),
            "world": wit.WORLD_ID, "worldSha256": sha256_bytes(wit.world_text().encode()),
            "stubWasi": True, "reproducibilityShim": pyrepro.SOURCE_SHA256}


def check_import_path(template: Template, staged: Path) -> dict[str, str]:
    """Every file on the agent's import path, hashed; BuildError naming the first that may not be there."""
    where = template.folder.name
    sources = {s.path for s in template.sources}
    deps = [PurePosixPath(d.path) for d in template.dependencies]
    inputs: dict[str, str] = {}
    for rel_dir in template.python_paths:
        top = staged / rel_dir
        for path in sorted(top.rglob("*")):
            rel = PurePosixPath(path.relative_to(staged).as_posix())
            if path.is_symlink():
                raise BuildError(where, f"{rel}: a symbolic link on the agent's import path")
            if path.is_dir():
                if path.name == "__pycache__":
                    raise BuildError(where, f"{rel}: compiled bytecode on the agent's import path; delete it "
                                            "(the build compiles the sources it reviews)")
                continue
            if path.name in CONFIG_FILES:
                raise BuildError(where, f"{rel}: componentize-py reads it to add WIT worlds to the agent; "
                                        "templates build against the project's world only: remove it")
            if path.name.endswith(CODE_SUFFIXES):
                raise BuildError(where, f"{rel}: compiled code on the agent's import path "
                                        f"({', '.join(CODE_SUFFIXES)} are refused); vendor pure-Python sources")
            in_dep = any(rel == d or d in rel.parents for d in deps)
            if rel.suffix == ".py" and str(rel) not in sources and not in_dep:
                raise BuildError(where, f"{rel}: a Python file the agent can import that is neither in spec.sources "
                                        "nor inside a vendored dependency (spec.dependencies); list it or remove it")
            inputs[str(rel)] = sha256_file(path)
    if template.python_module in RESERVED_MODULES:
        raise BuildError(where, f"spec.python.module {template.python_module!r} is a name the build uses itself; "
                                "rename the module")
    return dict(sorted(inputs.items()))


def check_sources(template: Template, staged: Path) -> None:
    """Refuse, naming file and line, a source that imports a WIT interface outside the world or calls a tool
    its template did not declare (the build would fail later, or the agent at its first call)."""
    declared = wit.tools_for(template.tools)
    allowed: set[str] = {t.wit_name.replace("-", "_") for t in declared}
    allowed |= {name.title().replace("-", "") for t in declared for name in t.types}  # records: tools.Request
    every = {t.wit_name.replace("-", "_"): t for t in wit.TOOLS}
    for source in template.sources:
        path = staged / source.path
        text = path.read_bytes()[:MAX_PARSED_BYTES]
        try:
            tree = ast.parse(text, filename=source.path)
        except SyntaxError as exc:
            raise BuildError(f"{template.folder.name}/{source.path}:{exc.lineno or 0}",
                             f"not valid Python (as Python {sys.version_info.major}.{sys.version_info.minor} "
                             f"reads it): {exc.msg}") from None
        names = _tool_aliases(tree, template, source.path, bool(allowed))
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in names
                    and node.attr not in allowed):
                loc = f"{template.folder.name}/{source.path}:{node.lineno}"
                if node.attr in every:
                    tool = every[node.attr].tool
                    raise BuildError(loc, f"calls tools.{node.attr}, the tool {tool!r}, which spec.tools does not "
                                          f"declare; add {tool!r} to spec.tools (policy decides) or remove the call")
                raise BuildError(loc, f"tools.{node.attr} is not a tool of the WIT world {wit.WORLD_ID} "
                                      f"(its tools: {', '.join(sorted(every))})")


def _tool_aliases(tree: ast.AST, template: Template, path: str, declared: bool) -> set[str]:
    """The names a source binds to the world's `tools` interface; BuildError for any other interface."""
    names: set[str] = set()
    loc = f"{template.folder.name}/{path}"
    for node in ast.walk(tree):
        modules: list[tuple[str, str | None]] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules = [(f"{node.module}.{a.name}", a.asname or a.name) for a in node.names]
        elif isinstance(node, ast.Import):
            modules = [(a.name, None) for a in node.names]
        line = getattr(node, "lineno", 0)
        for dotted, bound in modules:
            parts = dotted.split(".")
            if parts[:2] != [WORLD_MODULE, "imports"] or len(parts) < 3:
                continue
            interface = parts[2]
            if interface != wit.INTERFACE:
                raise BuildError(f"{loc}:{line}",
                                 f"imports the WIT interface {interface!r}, which is not in the world {wit.WORLD_ID} "
                                 f"(it offers only {wit.INTERFACE!r}, the tools spec.tools declares)")
            if not declared:
                raise BuildError(f"{loc}:{line}", "imports the tools interface, but spec.tools declares no "
                                                         "tool of the WIT world (log.write, clock.now_ms, http.fetch)")
            if bound is not None and len(parts) == 3:
                names.add(bound)
    return names


def build_python(template: Template, epoch: int, cache_root: Path, zig: Path) -> PyBuild:
    """Build `template` into a component, from a staged copy, under the reproducibility shim when possible."""
    from .toolchain import stage  # the same private copy as C builds (symbolic links out refused)

    where = template.folder.name
    with tempfile.TemporaryDirectory(prefix="pybuild-", dir=cache_root) as scratch_name:
        scratch = Path(scratch_name).resolve()
        src, wit_dir, tmp, home, out = (scratch / n for n in ("src", "wit", "tmp", "home", "out"))
        for d in (src, wit_dir, tmp, home, out):
            d.mkdir()
        stage(template.folder, src)
        inputs = check_import_path(template, src)
        check_sources(template, src)
        world = wit.world_text(template.tools)
        key = _cache_key(template, inputs, world, epoch)
        cached = cache_root / "componentize" / f"{key}.wasm"
        if cached.is_file() and cached.stat().st_size <= MAX_COMPONENT_BYTES:
            return PyBuild(wasm=cached.read_bytes(), inputs=inputs, world=world,
                           reproducible={"reproducible": True, "shim": pyrepro.SOURCE_SHA256})
        (wit_dir / "world.wit").write_text(world, encoding="utf-8")
        for path in [scratch, *scratch.rglob("*")]:  # the files' times are not the checkout's
            os.utime(path, (epoch, epoch), follow_symlinks=False)
        env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C", "TZ": "UTC", "HOME": str(home), "TMPDIR": str(tmp),
               "SOURCE_DATE_EPOCH": str(epoch), "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1"}
        try:
            env.update(pyrepro.environment(pyrepro.shim(cache_root, zig), epoch, scratch))
            reproducible: dict[str, Any] = {"reproducible": True, "shim": pyrepro.SOURCE_SHA256}
        except pyrepro.ShimUnavailable as exc:
            reproducible = {"reproducible": False, "reason": f"{exc}: the pre-initialised memory snapshot then "
                                                             "holds this build's random seed, clock readings, "
                                                             "file times and inode numbers"}
        request = {"wit": str(wit_dir), "world": wit.WORLD, "paths": [str(src / p) for p in template.python_paths],
                   "module": template.python_module, "output": str(out / "agent.wasm")}
        proc = _componentize(request, scratch, env, template)
        if proc.returncode == pyrepro.EXIT_UNAVAILABLE and b"reproducibility shim:" in proc.stderr:
            why = proc.stderr.decode("utf-8", "replace").strip().splitlines()[-1]  # e.g. seccomp is not allowed here
            for name in ("LD_PRELOAD", "AGENTFACTORY_REPRO_EPOCH", "AGENTFACTORY_REPRO_ROOT"):
                env.pop(name, None)
            reproducible = {"reproducible": False, "reason": f"{why}: the pre-initialised memory snapshot then holds "
                                                             "this build's random seed, clock readings, file times "
                                                             "and inode numbers"}
            proc = _componentize(request, scratch, env, template)
        if proc.returncode != 0:
            text = (proc.stderr or proc.stdout).decode("utf-8", "replace").replace(str(scratch), "<build>")
            raise BuildError(where, f"componentize-py failed (exit {proc.returncode}):", _truncate(text))
        component = out / "agent.wasm"
        size = component.stat().st_size
        if size > MAX_COMPONENT_BYTES:
            raise BuildError(where, f"the component is {size} bytes; the limit is {MAX_COMPONENT_BYTES}")
        wasm = component.read_bytes()
        if reproducible["reproducible"]:
            atomic_write(cached, wasm)
        return PyBuild(wasm=wasm, inputs=inputs, world=world, reproducible=reproducible)


def _cache_key(template: Template, inputs: dict[str, str], world: str, epoch: int) -> str:
    doc = {"toolchain": identity(), "world": world, "module": template.python_module,
           "paths": list(template.python_paths), "epoch": epoch, "inputs": inputs}
    return sha256_bytes(json.dumps(doc, sort_keys=True).encode())


def judge_component(template: Template, wasm: bytes, where: str) -> ModuleInfo:
    """The built component read (bounded, nothing compiled) and held to the world for the tools its template
    declared; BuildError naming every import or export that does not fit. Returns it in the form policy
    judges modules by (agentfactory.wit.as_module)."""
    if not is_component(wasm):
        raise BuildError(where, "componentize-py did not produce a component")
    info = inspect_component(wasm, where)
    problems = wit.world_problems(info, template.tools)
    if problems:
        raise BuildError(where, "the component does not fit the world " + wit.WORLD_ID + ": " + "; ".join(problems))
    return wit.as_module(info)


def _componentize(request: dict[str, Any], scratch: Path, env: dict[str, str],
                  template: Template) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run([sys.executable, "-P", "-m", "pipelines.pybuild", json.dumps(request)], cwd=scratch,
                              env=env, capture_output=True, timeout=COMPONENTIZE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise BuildError(template.folder.name, f"componentize-py did not finish within {COMPONENTIZE_TIMEOUT_S} s "
                                               f"(does the module {template.python_module!r} wait or loop when it "
                                               "is imported?)") from None


def _truncate(text: str) -> str:
    return text if len(text) <= MAX_DIAGNOSTICS else "… (diagnostics truncated)\n" + text[-MAX_DIAGNOSTICS:]


def _child(request: dict[str, Any]) -> int:
    """The build child: componentize-py's Python API with exactly the given import path and world."""
    componentize_py = importlib.import_module("componentize_py")  # no type information
    componentize_py.componentize(
        [request["wit"]], [request["world"]], [], False, None, request["paths"], [], request["module"],
        request["output"], True, [], [], False, None)
    return 0


if __name__ == "__main__":
    sys.exit(_child(json.loads(sys.argv[1])))
