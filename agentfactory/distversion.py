"""Installed versions of the pinned tools' wheels, without importing importlib.metadata.

The versions go into cache keys and provenance on every run, also when nothing is rebuilt; importing
importlib.metadata and parsing METADATA costs a CLI about 20 ms. A wheel's `.dist-info` folder is named
`<normalized name>-<version>.dist-info`, so the version is read from that name, searching `sys.path` in
order as importlib.metadata does; anything unusual (an egg, a zip on the path) falls back to it.
"""

from __future__ import annotations

import functools
import os
import re
import sys


@functools.cache
def installed_version(dist: str) -> str:
    """The version of the installed distribution `dist` (PackageNotFoundError when it is not installed)."""
    prefix = re.sub(r"[-_.]+", "_", dist).lower() + "-"
    for entry in sys.path:
        try:
            names = os.listdir(entry or ".")
        except OSError:
            continue
        for name in names:
            if name.endswith(".dist-info") and name.lower().startswith(prefix):
                found = name[len(prefix):-len(".dist-info")]
                if found and "-" not in found:
                    return found
    from importlib.metadata import version

    return version(dist)
