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


def only_container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    """The pod's one container, checked to be the one named."""
    containers = pod["containers"]
    assert [c["name"] for c in containers] == [name]
    c: dict[str, Any] = containers[0]
    return c


def volumes_of(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in pod["volumes"]}


def mount_in(pod: dict[str, Any], container: str, volume: str) -> str:
    """Where `container` mounts `volume`: exactly once."""
    paths = [m["mountPath"] for m in only_container(pod, container)["volumeMounts"] if m["name"] == volume]
    assert len(paths) == 1, f"volume {volume} is mounted {len(paths)} times in the {container} container"
    return str(paths[0])
