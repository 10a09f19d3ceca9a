"""Reading kustomize folders as written (before kustomize runs): what the deploy tests share."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


def load(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def manifest_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*.yaml") if p.name != "kustomization.yaml")


def kustomization(folder: Path) -> dict[str, Any]:
    k: dict[str, Any] = yaml.safe_load((folder / "kustomization.yaml").read_text())
    return k
