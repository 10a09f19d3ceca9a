"""Agent templates: `templates/<name>/agent.yaml` read, validated and confined to its folder.

Validation happens in two passes, and every problem of both is reported at once, each naming
the file and the line or field: the JSON Schema (shape, unknown fields, semver), then the
checks a schema cannot express (sources exist, stay inside the template folder, fit the size
limits; vendored dependencies match their declared source hash).
"""

from __future__ import annotations

import functools
import json
import os
import re
import stat
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from . import jsonsubset
from .digest import sha256_bytes, sha256_file, tree_sha256
from .errors import InputError, TemplateError, ValidationFailed
from .httpgrant import HttpGrant, from_spec, grant_problems
from .yamlsafe import Located, load_yaml

MANIFEST = "agent.yaml"
SCHEMA_NAME = "agent-template.schema.json"
MAX_MANIFEST_BYTES = 64 * 1024
MAX_SOURCE_BYTES = 1024 * 1024
MAX_TOTAL_SOURCE_BYTES = 16 * 1024 * 1024
LANG_SUFFIXES = {"c": {".c", ".h"}, "wat": {".wat"}, "python": {".py"}}
PYTHON_ENTRYPOINT = "run"  # the export of the project's WIT world (agentfactory.wit)
CASES_FILE = "tests/cases.yaml"
DNS_LABEL = re.compile(r"[a-z]([a-z0-9-]{0,61}[a-z0-9])?")


@dataclass(frozen=True)
class Preopen:
    guest_path: str
    host_path: str
    read_only: bool


@dataclass(frozen=True)
class Limits:
    memory_mib: int
    timeout_ms: int
    fuel: int | None
    max_output_kib: int


@dataclass(frozen=True)
class Dependency:
    name: str
    version: str
    purl: str
    license: str
    path: str
    sha256: str


@dataclass(frozen=True)
class SourceFile:
    path: str  # posix, relative to the template folder
    sha256: str
    size: int


@dataclass(frozen=True)
class Template:
    """A validated template. Paths are relative to `folder`; `sources` carry their digests."""

    folder: Path
    name: str
    version: str
    description: str
    owners: tuple[str, ...]
    language: str
    sources: tuple[SourceFile, ...]
    include_dirs: tuple[str, ...]
    entrypoint: str
    tools: tuple[str, ...]
    preopens: tuple[Preopen, ...]
    env: tuple[str, ...]
    limits: Limits
    dependencies: tuple[Dependency, ...]
    manifest_sha256: str
    labels: dict[str, str] = field(default_factory=dict)
    raw: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    python_module: str | None = None  # python: the module defining the agent (spec.python.module)
    python_paths: tuple[str, ...] = ()  # python: folders on its import path, in order (spec.python.paths)
    http: HttpGrant | None = None  # spec.http and spec.secrets: what http.fetch may reach, with which secrets

    @property
    def manifest_path(self) -> Path:
        return self.folder / MANIFEST


@functools.cache
def schema() -> dict[str, Any]:
    """The template JSON Schema shipped with the tool (the trusted copy, not the PR's)."""
    text = resources.files("agentfactory").joinpath("schemas", SCHEMA_NAME).read_text("utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


@functools.cache
def _checked_schema() -> dict[str, Any]:
    """The schema, once refused if it uses a keyword agentfactory.jsonsubset does not check."""
    found = schema()
    jsonsubset.check_schema(found)
    return found


def _field(path: tuple[str | int, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(document)"


def _not_a_string(value: Any, path: tuple[str | int, ...]) -> str:
    """What to write instead of an unquoted scalar YAML read as a number, a boolean or null (`version: 1.0`)."""
    kind = "null" if value is None else "a boolean" if isinstance(value, bool) else "a number"
    shown = "an empty value" if value is None else repr(value)
    if path and path[-1] == "version":
        return (f"{shown} is read by YAML as {kind}, not a string: write a quoted semantic version "
                f'like "1.0.0" (MAJOR.MINOR.PATCH)')
    return f"{shown} is read by YAML as {kind}, not a string: put the value in quotes"


def _schema_problems(doc: Located, where: str) -> list[InputError]:
    problems: list[tuple[int, InputError]] = []
    for err in jsonsubset.iter_problems(_checked_schema(), doc.data):
        path = err.path
        message = err.message
        if err.keyword == "additionalProperties":
            extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
            for name in extra:
                line = doc.line_of((*path, name)) or 0
                problems.append((line, InputError(f"{where}:{line}",
                                 f"{_field((*path, name))}: unknown field {name!r}")))
            continue
        if err.keyword == "type" and err.value == "string" and not isinstance(err.instance, (dict, list)):
            message = _not_a_string(err.instance, path)
        elif err.keyword == "pattern" and path and path[-1] == "version":
            message = f"{err.instance!r} is not a semantic version (MAJOR.MINOR.PATCH, e.g. 1.4.0)"
        elif err.keyword == "pattern":
            message = f"{err.instance!r} does not match the required format {err.value}"
        elif err.keyword == "required":
            message = message.replace(" is a required property", " is required")
        line = doc.line_of(path) or 0
        problems.append((line, InputError(f"{where}:{line}", f"{_field(path)}: {message}")))
    problems.sort(key=lambda p: p[0])
    return [p for _, p in problems]


def _confined(folder: Path, rel: str, where: str, what: str) -> tuple[Path | None, InputError | None]:
    """Resolve `rel` inside `folder`, refusing absolute paths, `..` and symlinks that escape."""
    if rel.startswith("/") or Path(rel).is_absolute():
        return None, InputError(where, f"{what} {rel!r} is an absolute path; paths are relative to "
                                       "the template folder")
    if ".." in Path(rel).parts:
        return None, InputError(where, f"{what} {rel!r} leaves the template folder ('..')")
    candidate = folder / rel
    real_folder = folder.resolve()
    try:
        candidate.resolve(strict=True).relative_to(real_folder)
    except FileNotFoundError:
        return None, InputError(where, f"{what} {rel!r} does not exist")
    except ValueError:
        return None, InputError(where, f"{what} {rel!r} resolves outside the template folder "
                                       "(symbolic link?)")
    except (OSError, RuntimeError) as exc:  # symlink loops
        return None, InputError(where, f"{what} {rel!r} cannot be resolved: {exc}")
    return candidate, None


def _check_sources(folder: Path, data: dict[str, Any], doc: Located, where: str,
                   problems: list[InputError]) -> list[SourceFile]:
    spec = data["spec"]
    language = spec["language"]
    found: list[SourceFile] = []
    total = 0
    for i, rel in enumerate(spec["sources"]):
        loc = f"{where}:{doc.line_of(('spec', 'sources', i))}"
        path, problem = _confined(folder, rel, loc, "source")
        if problem:
            problems.append(problem)
            continue
        assert path is not None
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            problems.append(InputError(loc, f"source {rel!r} is not a regular file"))
            continue
        if Path(rel).suffix not in LANG_SUFFIXES[language]:
            allowed = ", ".join(sorted(LANG_SUFFIXES[language]))
            problems.append(InputError(loc, f"source {rel!r}: a {language} template takes {allowed} files"))
            continue
        if st.st_size > MAX_SOURCE_BYTES:
            problems.append(InputError(loc, f"source {rel!r} is {st.st_size} bytes; the limit is "
                                            f"{MAX_SOURCE_BYTES}"))
            continue
        total += st.st_size
        found.append(SourceFile(path=Path(rel).as_posix(), sha256=sha256_file(path), size=st.st_size))
    if total > MAX_TOTAL_SOURCE_BYTES:
        problems.append(InputError(f"{where}:{doc.line_of(('spec', 'sources'))}",
                                   f"sources total {total} bytes; the limit is {MAX_TOTAL_SOURCE_BYTES}"))
    if language == "wat" and len(spec["sources"]) != 1:
        problems.append(InputError(f"{where}:{doc.line_of(('spec', 'sources'))}",
                                   "a wat template has exactly one source (the module text)"))
    if language == "c" and not any(s.path.endswith(".c") for s in found) and not problems:
        problems.append(InputError(f"{where}:{doc.line_of(('spec', 'sources'))}",
                                   "a c template needs at least one .c source"))
    for i, rel in enumerate(spec.get("includeDirs", [])):
        loc = f"{where}:{doc.line_of(('spec', 'includeDirs', i))}"
        if language != "c":
            problems.append(InputError(loc, "includeDirs is only for c templates"))
            continue
        path, problem = _confined(folder, rel, loc, "include folder")
        if problem:
            problems.append(problem)
        elif path is not None and not path.is_dir():
            problems.append(InputError(loc, f"include folder {rel!r} is not a folder"))
    return found


def _check_dependencies(folder: Path, data: dict[str, Any], doc: Located, where: str,
                        problems: list[InputError]) -> list[Dependency]:
    deps: list[Dependency] = []
    names: set[str] = set()
    for i, d in enumerate(data["spec"].get("dependencies", [])):
        loc = f"{where}:{doc.line_of(('spec', 'dependencies', i))}"
        if d["name"] in names:
            problems.append(InputError(loc, f"dependency {d['name']!r} is declared twice"))
        names.add(d["name"])
        path, problem = _confined(folder, d["path"], loc, f"dependency {d['name']!r} path")
        if problem:
            problems.append(problem)
            continue
        assert path is not None
        try:
            actual = tree_sha256(path)
        except InputError as exc:
            problems.append(InputError(loc, f"dependency {d['name']!r}: {exc.message} ({exc.where})"))
            continue
        if actual != d["sha256"]:
            problems.append(InputError(
                loc, f"dependency {d['name']!r}: vendored sources at {d['path']!r} hash to {actual}, "
                     f"not the declared {d['sha256']}; review the change, then update sha256 "
                     f"(`agentfactory template hash {folder.name}/{d['path']}`)"))
            continue
        deps.append(Dependency(name=d["name"], version=str(d["version"]), purl=d["purl"],
                               license=d["license"], path=d["path"], sha256=d["sha256"]))
    return deps


def _check_http(data: dict[str, Any], doc: Located, where: str, problems: list[InputError]) -> None:
    """spec.http and spec.secrets beyond the schema: the URL grammar, secret bindings, and the http.fetch tool."""
    spec = data["spec"]
    http, declared = spec.get("http"), "http.fetch" in spec.get("tools", [])
    for path, message in grant_problems(http, spec.get("secrets")):
        problems.append(InputError(f"{where}:{doc.line_of(path) or 0}", f"{_field(path)}: {message}"))
    if http is not None and not declared:
        problems.append(InputError(f"{where}:{doc.line_of(('spec', 'http')) or 0}",
                                   "spec.http: declared, but spec.tools does not list http.fetch; add it"))
    if http is None and declared:
        problems.append(InputError(f"{where}:{doc.line_of(('spec', 'tools')) or 0}",
                                   "spec.tools lists http.fetch but there is no spec.http saying which URLs it may "
                                   "reach; add spec.http.allow"))


def _check_python(folder: Path, data: dict[str, Any], doc: Located, where: str, problems: list[InputError],
                  sources: list[SourceFile]) -> tuple[str, ...]:
    """A python template's contract: spec.python names a module among its sources, on its import path;
    the entrypoint is the WIT world's `run`; and no WASI capabilities, because a component is built with
    every WASI import stubbed out (its only way out is the host tools it declares)."""
    spec = data["spec"]
    if spec["language"] != "python":
        if "python" in spec:
            problems.append(InputError(f"{where}:{doc.line_of(('spec', 'python'))}",
                                       "spec.python is only for python templates (spec.language: python)"))
        return ()
    if "python" not in spec:
        problems.append(InputError(f"{where}:{doc.line_of(('spec', 'language'))}",
                                   "spec.python is required for a python template: name the module that defines "
                                   "the agent (spec.python.module)"))
        return ()
    if spec.get("entrypoint", PYTHON_ENTRYPOINT) != PYTHON_ENTRYPOINT:
        problems.append(InputError(f"{where}:{doc.line_of(('spec', 'entrypoint'))}",
                                   f"spec.entrypoint: a python agent exports {PYTHON_ENTRYPOINT!r} (the WIT world's "
                                   f"export), not {spec['entrypoint']!r}; remove spec.entrypoint"))
    wasi = spec.get("capabilities", {}).get("wasi", {})
    for key in ("preopens", "env"):
        if wasi.get(key):
            problems.append(InputError(
                f"{where}:{doc.line_of(('spec', 'capabilities', 'wasi', key))}",
                f"spec.capabilities.wasi.{key}: a python agent gets no WASI (its component is built with every "
                "WASI import stubbed out); remove it and pass what the agent needs as its input, or use a tool"))
    first = Path(spec["sources"][0]).parent.as_posix()
    paths = [Path(p).as_posix() for p in spec["python"].get("paths", [first])]
    for i, rel in enumerate(spec["python"].get("paths", [])):
        loc = f"{where}:{doc.line_of(('spec', 'python', 'paths', i))}"
        path, problem = _confined(folder, rel, loc, "python path")
        if problem:
            problems.append(problem)
        elif path is not None and not path.is_dir():
            problems.append(InputError(loc, f"python path {rel!r} is not a folder"))
    module = spec["python"]["module"]
    candidates = {("" if p == "." else p + "/") + module + ".py" for p in paths}
    if sources and not any(s.path in candidates for s in sources):
        problems.append(InputError(f"{where}:{doc.line_of(('spec', 'python', 'module'))}",
                                   f"spec.python.module {module!r}: none of {', '.join(sorted(candidates))} is "
                                   "listed in spec.sources"))
    for s in sources:
        if not any(p == "." or s.path.startswith(p + "/") for p in paths):
            problems.append(InputError(f"{where}:{doc.line_of(('spec', 'sources'))}",
                                       f"source {s.path!r} is not under a folder of spec.python.paths "
                                       f"({', '.join(paths)}), so the agent could not import it"))
    return tuple(paths)


def untested_problem(folder: Path, data: dict[str, Any], where: str) -> InputError | None:
    """Why a template may not be built for want of tests: no tests/cases.yaml and no `spec.tests.none`
    giving a reason. Without this, moving the cases file out of a template (a rename the
    pull-request check sees as a change elsewhere) would ship the agent untested."""
    spec = data.get("spec") if isinstance(data, dict) else None
    tests = spec.get("tests") if isinstance(spec, dict) else None
    reason = tests.get("none") if isinstance(tests, dict) else None
    cases = folder / CASES_FILE
    has_cases = cases.exists() or cases.is_symlink()
    if not has_cases and not (isinstance(reason, str) and reason.strip()):
        cases_where = where[:-len(MANIFEST)] + CASES_FILE if where.endswith(MANIFEST) else str(cases)
        return InputError(cases_where, f"not found: every template has case tests, or says in {MANIFEST} why it "
                                       'has none (spec.tests.none: "<reason>")')
    return None


def read_manifest(folder: Path, display: str | None = None) -> tuple[bytes, str]:
    """The bytes of `folder/agent.yaml`, bounded, and the name to show in messages."""
    where = display or str(folder / MANIFEST)
    path = folder / MANIFEST
    try:
        st = path.lstat()
    except FileNotFoundError:
        raise TemplateError(where, "not found") from None
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISREG(st.st_mode):
        raise TemplateError(where, "must be a regular file (not a symbolic link)")
    if st.st_size > MAX_MANIFEST_BYTES:
        raise TemplateError(where, f"file is {st.st_size} bytes; the limit is {MAX_MANIFEST_BYTES}")
    with path.open("rb") as f:
        return f.read(MAX_MANIFEST_BYTES + 1), where


def load_template(folder: Path, display: str | None = None) -> Template:
    """Read and validate the template in `folder`.

    `display` is how the manifest is named in messages (e.g. `templates/x/agent.yaml`).
    Raises `ValidationFailed` listing every problem found.
    """
    text, where = read_manifest(folder, display)
    try:
        doc = load_yaml(text, where)
    except InputError as exc:
        raise ValidationFailed([exc]) from None
    problems = _schema_problems(doc, where)
    if problems:
        raise ValidationFailed(problems)
    data: dict[str, Any] = doc.data
    sources = _check_sources(folder, data, doc, where, problems)
    deps = _check_dependencies(folder, data, doc, where, problems)
    _check_http(data, doc, where, problems)
    python_paths = _check_python(folder, data, doc, where, problems, sources)
    untested = untested_problem(folder, data, where)
    if untested is not None:
        problems.append(untested)
    if problems:
        raise ValidationFailed(problems)
    meta, spec = data["metadata"], data["spec"]
    wasi = spec.get("capabilities", {}).get("wasi", {})
    limits = spec["limits"]
    return Template(
        folder=folder,
        name=meta["name"],
        version=meta["version"],
        description=meta["description"],
        owners=tuple(meta["owners"]),
        labels=dict(meta.get("labels", {})),
        language=spec["language"],
        sources=tuple(sources),
        include_dirs=tuple(Path(p).as_posix() for p in spec.get("includeDirs", [])),
        entrypoint=spec.get("entrypoint", PYTHON_ENTRYPOINT if spec["language"] == "python" else "_start"),
        tools=tuple(spec.get("tools", [])),
        preopens=tuple(Preopen(p["guestPath"], p["hostPath"], p.get("readOnly", True))
                       for p in wasi.get("preopens", [])),
        env=tuple(wasi.get("env", [])),
        limits=Limits(memory_mib=limits["memoryMiB"], timeout_ms=limits["timeoutMs"],
                      fuel=limits.get("fuel"), max_output_kib=limits.get("maxOutputKiB", 1024)),
        dependencies=tuple(deps),
        manifest_sha256=sha256_bytes(text),
        raw=data,
        python_module=spec["python"]["module"] if "python" in spec else None,
        python_paths=python_paths,
        http=from_spec(spec.get("http"), spec.get("secrets")),
    )


def folder_name_problem(template: Template, where: str) -> InputError | None:
    """The one check that `metadata.name` is the template's folder name (the pipeline refuses a mismatch, so
    `template validate` must too). `where` names the manifest in the message."""
    folder = template.folder.resolve().name
    if template.name == folder:
        return None
    return InputError(where, f"metadata.name: {template.name!r} differs from the folder name {folder!r}; "
                             "rename one so they match")


def discover(root: Path) -> list[Path]:
    """Template folders under `root`: each direct subfolder holding an agent.yaml.

    Folders starting with '.' or '_' are skipped (scratch space, shared fixtures). A template folder
    whose name is not a DNS label (what metadata.name must be) is refused, naming it with its odd
    characters escaped: the name reaches logs, summaries and CI outputs, where a newline or `::` could
    forge lines or workflow commands.
    """
    if not root.is_dir():
        raise InputError(str(root), "templates folder not found")
    found = []
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.name.startswith((".", "_")) or not entry.is_dir(follow_symlinks=False):
            continue
        if (Path(entry.path) / MANIFEST).exists() or (Path(entry.path) / MANIFEST).is_symlink():
            if not DNS_LABEL.fullmatch(entry.name):
                raise InputError(f"{root}/{entry.name!r}", "a template folder name must be a DNS label (lower-case "
                                                           "letters, digits and '-', starting with a letter, at most "
                                                           "63 characters); rename the folder")
            found.append(Path(entry.path))
    return found
