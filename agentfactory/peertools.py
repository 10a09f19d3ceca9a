"""Where the field's own programs are: OPA, cosign, rekor-cli, Grype, Trivy, kube-apiserver.

`make tools` builds them from their Go modules at the versions pinned in `tools/versions.txt` into
`.agentfactory/tools/bin/`, so that tests and operators run against the real programs. This module
only finds them (never installs): `$AGENTFACTORY_TOOLS_BIN`, then the checkout's
`.agentfactory/tools/bin/`, then `PATH`; a missing one is a ConfigError that names `make tools`.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from .errors import ConfigError

_CHECKOUT = Path(__file__).resolve().parent.parent
VERSIONS_FILE = _CHECKOUT / "tools" / "versions.txt"
KUBE_TOOLS = frozenset({"kube-apiserver", "kubectl"})  # built by tools/build-kube.sh (`make e2e-kube`)


def pins(versions_file: Path = VERSIONS_FILE) -> dict[str, tuple[str, str]]:
    """name -> (Go package, version) from tools/versions.txt; empty outside a checkout."""
    found: dict[str, tuple[str, str]] = {}
    if not versions_file.is_file():
        return found
    for line in versions_file.read_text(encoding="utf-8").splitlines():
        fields = line.split()
        if len(fields) >= 3 and not fields[0].startswith("#"):
            found[fields[0]] = (fields[1], fields[2])
    return found


def tools_bin() -> Path:
    """The folder `make tools` installs into (overridable with AGENTFACTORY_TOOLS_BIN)."""
    return Path(os.environ.get("AGENTFACTORY_TOOLS_BIN") or _CHECKOUT / ".agentfactory" / "tools" / "bin")


def find(name: str) -> Path:
    """The executable `name`; ConfigError naming `make tools` (and the pinned version) when it is missing."""
    candidate = tools_bin() / name
    if candidate.is_file() and os.access(candidate, os.X_OK):
        return candidate
    on_path = shutil.which(name)
    if on_path:
        return Path(on_path)
    pin = pins().get(name)
    what = f"{name} {pin[1]} (from {pin[0]})" if pin else name
    target = "`make e2e-kube` (tools/build-kube.sh)" if name in KUBE_TOOLS else "`make tools`"
    raise ConfigError(f"{name} is not installed: run {target}, which builds {what} into {tools_bin()}, "
                      f"or put {name} on PATH")


def pinned_version(name: str) -> str | None:
    """The version `make tools` pins for `name`, if this is a checkout that pins it."""
    pin = pins().get(name)
    return pin[1] if pin else None
