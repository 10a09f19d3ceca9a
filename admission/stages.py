"""The stage an agent is judged at: its namespace's, never one the object claims.

The map is the policy's own data, `data.agentfactory.config.admission` of the policy engine
(policies/data.json): `stages`, in promotion order (dev < canary < prod), and `namespace_stages`, a
namespace name or a glob with one trailing `*` → stage, read exactly as admission.rego reads it (an
exact name wins over a glob, the longest glob prefix over shorter ones). A namespace matching no
entry is at the webhook's `defaultStage`. One source of truth: the webhook verifies at the stage the
policy checks, so the two can never disagree about where a namespace stands.

A map that cannot be read (no data, an unknown stage, a bad glob) does not guess: `problem` says
why, and every agent workload is refused with it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

MAX_REMEMBERED = 10_000  # namespaces whose stage is kept: a dict lookup per review on the fast path


@dataclass
class StageMap:
    stages: tuple[str, ...]
    exact: dict[str, str]
    globs: tuple[tuple[str, str], ...]  # (prefix, stage), longest prefix first
    default: str
    problem: str | None = None
    _memo: dict[str, str] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def of(self, namespace: str) -> str:
        """The stage of `namespace` (an exact entry, else the longest matching glob, else the default)."""
        hit = self._memo.get(namespace)
        if hit is not None:
            return hit
        stage = self.exact.get(namespace)
        if stage is None:
            stage = next((s for prefix, s in self.globs if namespace.startswith(prefix)), self.default)
        with self._lock:
            if len(self._memo) >= MAX_REMEMBERED:
                self._memo.clear()
            self._memo[namespace] = stage
        return stage

    def rank(self, stage: str) -> int | None:
        """The position of `stage` in the promotion order, None when it is not a known stage."""
        return self.stages.index(stage) if stage in self.stages else None


def stage_map(engine: Any, default_stage: str) -> StageMap:
    """The map from the policy engine's data; a map with `problem` set when it cannot be trusted."""
    data = getattr(engine, "data", None)
    cfg = _get(data, ("agentfactory", "config", "admission"))
    broken = StageMap((), {}, (), default_stage)
    if not isinstance(cfg, dict):
        broken.problem = ("the policy data has no data.agentfactory.config.admission (policies/data.json): the "
                          "namespace stages are unknown, so no agent can be judged")
        return broken
    stages, mapping = cfg.get("stages"), cfg.get("namespace_stages", {})
    if not isinstance(stages, list) or not stages or not all(isinstance(s, str) and s for s in stages) \
            or len(set(stages)) != len(stages):
        broken.problem = ("config admission.stages (policies/data.json) must be a list of distinct stage names "
                          "in promotion order")
        return broken
    known = tuple(stages)
    if default_stage not in known:
        broken.problem = (f"defaultStage {default_stage!r} (the webhook's config) is not one of config "
                          f"admission.stages ({', '.join(known)})")
        return broken
    if not isinstance(mapping, dict):
        broken.problem = "config admission.namespace_stages (policies/data.json) must be an object"
        return broken
    exact: dict[str, str] = {}
    globs: list[tuple[str, str]] = []
    for key, stage in mapping.items():
        if stage not in known:
            broken.problem = (f"config admission.namespace_stages[{key!r}] is {stage!r}, not one of config "
                              f"admission.stages ({', '.join(known)})")
            return broken
        if "*" not in key:
            exact[key] = stage
        elif key.endswith("*") and "*" not in key[:-1]:
            globs.append((key[:-1], stage))
        else:
            broken.problem = (f"config admission.namespace_stages: the key {key!r} has a * elsewhere than at its "
                              "end; only a namespace name or a prefix glob with a single trailing * is supported")
            return broken
    globs.sort(key=lambda g: len(g[0]), reverse=True)
    return StageMap(known, exact, tuple(globs), default_stage)


def _get(obj: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj
