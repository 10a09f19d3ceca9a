"""The stages an artifact can be judged at, read from the policies' own data.

`data.agentfactory.config.admission.stages` (policies/data.json) lists the stages in promotion order;
the admission webhook and the Rego rules read the same list. A command that takes `--stage` (verify,
run) checks it here, so that a typo (`prdo`) is refused with the closest names instead of being judged
at a stage no policy knows.
"""

from __future__ import annotations

import difflib
from typing import Any

from .errors import ConfigError

STAGES_PATH = ("agentfactory", "config", "admission", "stages")


def known_stages(engine: Any) -> tuple[str, ...]:
    """The stages listed in the policy engine's data, in promotion order (empty when the data has none)."""
    node: Any = getattr(engine, "data", None)
    for key in STAGES_PATH:
        node = node.get(key) if isinstance(node, dict) else None
    if not isinstance(node, list):
        return ()
    return tuple(s for s in node if isinstance(s, str) and s)


def check_stage(stage: str, engine: Any, *, option: str = "--stage") -> str:
    """`stage` when the policies know it; else a ConfigError (exit 2) naming the known stages and the closest.

    A policy engine that did not load (its `broken` set) is left to refuse on its own: every decision
    it makes is a refusal that says why, which is clearer than a stage list it could not read.
    """
    if getattr(engine, "broken", None):
        return stage
    stages = known_stages(engine)
    if not stages:
        where = getattr(engine, "folder", "the policies folder")
        raise ConfigError(f"{option} {stage!r}: the policy data ({where}/data.json) lists no stages at "
                          f"data.{'.'.join(STAGES_PATH)}, so no stage can be checked")
    if stage in stages:
        return stage
    close = difflib.get_close_matches(stage, stages, n=2, cutoff=0.6)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    raise ConfigError(f"{option} {stage!r}: unknown stage; the policies know {', '.join(stages)}.{hint}")
