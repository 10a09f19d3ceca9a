"""The `agentfactory.cli` entry points (the planes' subcommands), found without importlib.metadata.

Importing importlib.metadata costs ~25 ms (it brings email, zipfile, csv), a tenth of the start-up
budget of `agentfactory pipeline run`, to read a few small files. The entry points of installed
distributions lie in `<name>-<version>.dist-info/entry_points.txt` (or `.egg-info/`) in the folders
of sys.path, in the INI format the PyPA entry-points specification describes; this reads them the
way importlib.metadata does: sys.path in order, the first distribution of a name wins. A sys.path
entry that is a zip archive is handed to importlib.metadata, which can look inside it.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterable

GROUP = "agentfactory.cli"
_META_SUFFIXES = (".dist-info", ".egg-info")
_SECTION = re.compile(r"^\[\s*(?P<name>[^\]]+?)\s*\]$")


def _normalized(folder: str) -> str:
    """The distribution's name from its metadata folder, normalized as importlib.metadata does (PEP 503)."""
    stem = folder.rsplit(".", 1)[0].split("-", 1)[0]
    return re.sub(r"[-_.]+", "_", stem).lower()


def parse_group(text: str, group: str = GROUP) -> dict[str, str]:
    """`name = module:attr` lines of one `[group]` section of an entry_points.txt (comments and blanks skipped)."""
    found: dict[str, str] = {}
    section = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        head = _SECTION.match(line)
        if head:
            section = head.group("name")
            continue
        if section == group and "=" in line:
            name, _, value = line.partition("=")
            found.setdefault(name.strip(), value.strip())
    return found


def _from_folder(folder: str, seen: set[str]) -> Iterable[tuple[str, str]]:
    try:
        names = sorted(os.listdir(folder))
    except OSError:  # a missing or unreadable sys.path entry, as importlib.metadata skips it
        return
    for name in names:
        if not name.endswith(_META_SUFFIXES):
            continue
        dist = _normalized(name)
        if dist in seen:
            continue
        seen.add(dist)
        try:
            with open(os.path.join(folder, name, "entry_points.txt"), encoding="utf-8") as f:
                text = f.read()
        except OSError:  # no entry points: a distribution without console scripts or plugins
            continue
        yield from parse_group(text).items()


def _from_metadata(group: str) -> dict[str, str]:
    from importlib.metadata import entry_points

    return {ep.name: ep.value for ep in entry_points(group=group)}


def find_commands(path: list[str] | None = None) -> dict[str, str]:
    """`name -> "module:attr"` of every command contributed to the `agentfactory.cli` group."""
    entries = sys.path if path is None else path
    folders = [os.path.abspath(p or ".") for p in entries if isinstance(p, str)]
    if any(os.path.isfile(p) for p in folders):  # a zip archive on the path: only importlib.metadata reads it
        return _from_metadata(GROUP)
    found: dict[str, str] = {}
    seen: set[str] = set()
    for folder in folders:
        for name, value in _from_folder(folder, seen):
            found.setdefault(name, value)
    return found
