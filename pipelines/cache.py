"""Content-addressed build cache: unchanged templates are not rebuilt.

The key hashes everything that decides the output: the template manifest, its sources,
its test cases, the toolchain identity, SOURCE_DATE_EPOCH and the builder version. The
entry also records every other file the compiler read (headers found through includes) with
its hash, and is only a hit while all of them are unchanged and the store still holds the
artifact. Entries are written atomically; a corrupt entry is a miss, never an error.

An entry also remembers which key signed the artifact in each store (`signed_by`), so that a run re-signs
an unchanged artifact whose key was revoked or rotated away (pipelines/run.py), without reading the store's
signatures on every hit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentfactory import __version__
from agentfactory.artifact import canonical_json
from agentfactory.digest import DIGEST_RE, sha256_bytes, sha256_file
from agentfactory.fsutil import atomic_write
from agentfactory.template import Template

MAX_ENTRY_BYTES = 1024 * 1024
FORMAT = 2  # bumped when the build record changes shape (2: the run contract, "agent")


@dataclass(frozen=True)
class CacheEntry:
    digest: str
    manifest_digest: str
    size: int
    inputs: dict[str, str]
    build: dict[str, Any]
    tests: dict[str, int]
    signed_by: dict[str, str] = field(default_factory=dict)  # store URL -> key id of the artifact's signature


def cache_key(template: Template, toolchain: dict[str, Any], epoch: int, tests_sha: str | None) -> str:
    return sha256_bytes(canonical_json({
        "format": FORMAT,
        "builder": __version__,
        "manifest": template.manifest_sha256,
        "sources": {s.path: s.sha256 for s in template.sources},
        "tests": tests_sha,
        "toolchain": toolchain,
        "epoch": epoch,
    }))


class BuildCache:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        return self.root / f"{key}.json"

    def get(self, key: str, folder: Path) -> CacheEntry | None:
        """The entry for `key` if every file it recorded is unchanged in `folder`."""
        path = self._path(key)
        try:
            if path.stat().st_size > MAX_ENTRY_BYTES:
                return None
            doc = json.loads(path.read_bytes())
            entry = CacheEntry(digest=doc["digest"], manifest_digest=doc["manifest_digest"],
                               size=int(doc["size"]), inputs=dict(doc["inputs"]), build=dict(doc["build"]),
                               tests=dict(doc.get("tests", {})), signed_by=_signed_by(doc.get("signed_by")))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not (DIGEST_RE.match(entry.digest) and DIGEST_RE.match(entry.manifest_digest)):
            return None
        for rel, sha in entry.inputs.items():
            f = folder / rel
            try:
                if f.is_symlink() or sha256_file(f) != sha:
                    return None
            except OSError:
                return None
        return entry

    def put(self, key: str, entry: CacheEntry) -> None:
        atomic_write(self._path(key), json.dumps({
            "digest": entry.digest, "manifest_digest": entry.manifest_digest, "size": entry.size,
            "inputs": entry.inputs, "build": entry.build, "tests": entry.tests, "signed_by": entry.signed_by,
        }, indent=2, sort_keys=True).encode())


def _signed_by(value: Any) -> dict[str, str]:
    """The entry's store → key id map; anything else (an entry written before it existed) is empty."""
    if not isinstance(value, dict):
        return {}
    return {k: v for k, v in value.items() if isinstance(k, str) and isinstance(v, str)}
