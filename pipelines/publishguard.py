"""One version, one artifact: the release never publishes new bytes under a name and version the
store already holds.

The pull-request check enforces "the version increases when the template changes" (policy T10)
against the merge base, but the release builds `main` without a base: a change that reached `main`
without that check (a quoted path it missed, a bypassed check, a push) would otherwise be
published as, say, `wordstats:1.1.0` again with other bytes, moving the tag under everyone who
pinned that version. Asked before signing, so a refused build leaves no signature and no log entry.
"""

from __future__ import annotations

from agentfactory.errors import InputError
from agentfactory.store.base import ArtifactStore


def refuse_republish(store: ArtifactStore, name: str, version: str, digest: str, where: str) -> None:
    """Raise when `store` holds `name:version` (tagged or not) as an artifact other than `digest`.

    The same digest again is fine (a re-run, a rebuild of unchanged sources); `where` names the
    template's manifest in the message (e.g. `templates/wordstats/agent.yaml`).
    """
    others = sorted({e.artifact_digest for e in store.entries(name)
                     if e.name == name and e.version == version and e.artifact_digest != digest})
    if others:
        raise InputError(f"{where}: metadata.version",
                         f"{name}:{version} is already published in {store.url} as {', '.join(others)}, and "
                         f"this build is {digest}: a version names one artifact, so the template changed "
                         f"without a new version; bump metadata.version above {version}")


__all__ = ["refuse_republish"]
