"""The stage graph (`pipelines/stages.yaml`): stages, where each is promoted from, and its gates.

Parsed strictly (unknown keys, a cycle, two stages promoted from nowhere, a `from` naming no stage
are errors naming the line), because a typo here would silently open a path to production.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentfactory.errors import InputError
from agentfactory.yamlsafe import Located, load_yaml

from .analysis import Thresholds, parse_window

DEFAULT_STAGES = Path(__file__).resolve().parent.parent / "stages.yaml"
_NAME = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
_GATE_KEYS = {"policy", "soak", "approval", "analysis"}
_ANALYSIS_KEYS = {"maxErrorRatio", "maxP95Seconds", "minRequests"}


@dataclass(frozen=True)
class Gates:
    policy: bool = True
    soak_seconds: float = 0.0
    approval: bool = False
    analysis: Thresholds | None = None


@dataclass(frozen=True)
class Stage:
    name: str
    namespace: str
    source: str | None  # the stage promoted from; None: the entry stage, fed from the artifact store
    gates: Gates = field(default_factory=Gates)


@dataclass(frozen=True)
class StageGraph:
    stages: tuple[Stage, ...]
    env_path: str  # "deploy/envs/{stage}", relative to the environment repository
    where: str

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise InputError(self.where, f"no stage {name!r} (stages: {', '.join(s.name for s in self.stages)})")

    def next_of(self, name: str) -> list[Stage]:
        return [s for s in self.stages if s.source == name]

    def folder(self, name: str) -> str:
        return self.env_path.replace("{stage}", name)


def _fail(where: str, doc: Located, path: tuple[Any, ...], message: str) -> InputError:
    line = doc.line_of(path)
    return InputError(f"{where}:{line}" if line else where, message)


def load_stages(path: Path | None = None) -> StageGraph:
    path = path or DEFAULT_STAGES
    where = str(path)
    if not path.is_file():
        raise InputError(where, "no stage graph here (the default is pipelines/stages.yaml)")
    doc = load_yaml(path.read_bytes(), where)
    data, lines = doc.data, doc
    if not isinstance(data, dict) or data.get("kind") != "StageGraph":
        raise InputError(where, "not a StageGraph (kind: StageGraph)")
    unknown = set(data) - {"apiVersion", "kind", "environments", "stages"}
    if unknown:
        raise InputError(where, f"unknown field(s): {', '.join(sorted(unknown))}")
    envs = data.get("environments") or {}
    env_path = envs.get("path", "deploy/envs/{stage}") if isinstance(envs, dict) else None
    if not isinstance(env_path, str) or "{stage}" not in env_path or env_path.startswith("/") or ".." in env_path:
        raise _fail(where, lines, ("environments", "path"), "environments.path must be a relative path with {stage}")
    raw = data.get("stages")
    if not isinstance(raw, list) or not raw:
        raise InputError(where, "stages must be a non-empty list")
    stages: list[Stage] = []
    for i, item in enumerate(raw):
        at = ("stages", i)
        if not isinstance(item, dict):
            raise _fail(where, lines, at, f"stages[{i}] must be a mapping")
        extra = set(item) - {"name", "from", "namespace", "gates"}
        if extra:
            raise _fail(where, lines, at, f"stages[{i}]: unknown field(s): {', '.join(sorted(extra))}")
        name = item.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            raise _fail(where, lines, at, f"stages[{i}].name must match {_NAME.pattern}")
        namespace = item.get("namespace", f"agents-{name}")
        source = item.get("from")
        if source is not None and not isinstance(source, str):
            raise _fail(where, lines, at, f"stages[{i}].from must be a stage name")
        stages.append(Stage(name, str(namespace), source, _gates(item.get("gates") or {}, where, lines, at)))
    names = [s.name for s in stages]
    for s in stages:
        if names.count(s.name) > 1:
            raise InputError(where, f"stage {s.name!r} is declared twice")
        if s.source is not None and s.source not in names:
            raise InputError(where, f"stage {s.name!r} is promoted from {s.source!r}, which is not a stage")
    entries = [s.name for s in stages if s.source is None]
    if len(entries) != 1:
        raise InputError(where, f"exactly one stage must have no `from` (the entry stage); found {entries or 'none'}")
    graph = StageGraph(tuple(stages), env_path, where)
    for s in stages:  # every stage reaches the entry stage: no cycles
        seen = {s.name}
        cur = s
        while cur.source is not None:
            if cur.source in seen:
                raise InputError(where, f"the stages form a cycle through {cur.source!r}")
            seen.add(cur.source)
            cur = graph.stage(cur.source)
    return graph


def _gates(raw: Any, where: str, lines: Located, at: tuple[Any, ...]) -> Gates:
    if not isinstance(raw, dict):
        raise _fail(where, lines, at, "gates must be a mapping")
    extra = set(raw) - _GATE_KEYS
    if extra:
        raise _fail(where, lines, (*at, "gates"), f"gates: unknown field(s): {', '.join(sorted(extra))}")
    soak = raw.get("soak", "0s")
    try:
        soak_seconds = parse_window(str(soak)) if soak not in (0, "0") else 0.0
    except InputError as exc:
        raise _fail(where, lines, (*at, "gates", "soak"), f"gates.soak: {exc.message}") from None
    analysis = raw.get("analysis")
    thresholds = None
    if analysis is not None:
        if not isinstance(analysis, dict) or set(analysis) - _ANALYSIS_KEYS:
            raise _fail(where, lines, (*at, "gates", "analysis"),
                        f"gates.analysis takes only {', '.join(sorted(_ANALYSIS_KEYS))}")
        ratio, p95, minimum = analysis.get("maxErrorRatio", 0.05), analysis.get("maxP95Seconds"), \
            analysis.get("minRequests", 20)
        if not isinstance(ratio, int | float) or not 0 <= ratio <= 1:
            raise _fail(where, lines, (*at, "gates", "analysis"), "maxErrorRatio must be a number from 0 to 1")
        if p95 is not None and (not isinstance(p95, int | float) or p95 <= 0):
            raise _fail(where, lines, (*at, "gates", "analysis"), "maxP95Seconds must be a positive number")
        if not isinstance(minimum, int) or minimum < 1:
            raise _fail(where, lines, (*at, "gates", "analysis"), "minRequests must be a positive integer")
        thresholds = Thresholds(float(ratio), float(p95) if p95 is not None else None, minimum)
    for key in ("policy", "approval"):
        if key in raw and not isinstance(raw[key], bool):
            raise _fail(where, lines, (*at, "gates", key), f"gates.{key} must be true or false")
    return Gates(bool(raw.get("policy", True)), soak_seconds, bool(raw.get("approval", False)), thresholds)
