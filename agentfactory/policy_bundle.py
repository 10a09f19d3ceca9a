"""The policies as an OPA bundle, and the revision that names exactly what a bundle holds.

An OPA server evaluates what it was given. So that a client can check that the server runs the
policies it expects, the bundle's `.manifest` carries a revision computed from the files it holds
(`policy_revision`): every `*.rego` of the folder except the `*_test.rego` unit tests, and
`data.json`, each by name and SHA-256. The OPA engine (agentfactory/policy_opa.py) computes the same
revision from its own policies folder and refuses answers from a server that reports another one.

The archive is deterministic (sorted entries, zero times and owners, gzip without a timestamp): the
same folder gives the same bytes on every machine. Its manifest roots are `agentfactory`, so the
bundle owns data.agentfactory (nothing can be written there through the REST API while it is
loaded) and leaves the rest of the server's data to other bundles. Built here rather than with
`opa build` so that a pipeline without the OPA binary can produce it; `opa build -b DIR --revision
REV` over the same files gives an equivalent bundle (docs/policy.md).

    python -m agentfactory.policy_bundle -o bundle.tar.gz [--policies DIR]   # prints the revision
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import sys
import tarfile
from pathlib import Path

from .policy import MAX_POLICY_BYTES, PolicyError, default_policy_dir

BUNDLE_ROOT = "agentfactory"
DATA_FILE = "data.json"


def bundle_files(folder: Path) -> list[Path]:
    """The files a bundle of `folder` holds: the policies (not their unit tests) and data.json, by name."""
    if not folder.is_dir():
        raise PolicyError(f"{folder}: policies folder not found")
    files = [p for p in folder.glob("*.rego") if not p.name.endswith("_test.rego")]
    if not files:
        raise PolicyError(f"{folder}: no .rego policies")
    data = folder / DATA_FILE
    if data.is_file():
        files.append(data)
    for path in files:
        if not path.is_file():
            raise PolicyError(f"{path}: not a regular file")
        if path.stat().st_size > MAX_POLICY_BYTES:
            raise PolicyError(f"{path}: larger than {MAX_POLICY_BYTES} bytes")
    return sorted(files, key=lambda p: p.name)


def policy_revision(folder: Path) -> str:
    """`sha256:<hex>` over the name and SHA-256 of every file a bundle of `folder` holds."""
    digest = hashlib.sha256()
    for path in bundle_files(folder):
        digest.update(f"{path.name}\0{hashlib.sha256(path.read_bytes()).hexdigest()}\n".encode())
    return "sha256:" + digest.hexdigest()


def build_bundle(folder: Path, out: Path) -> str:
    """Write the bundle of `folder` to `out` (a .tar.gz OPA loads with `opa run --server FILE`); its revision."""
    files = bundle_files(folder)
    revision = policy_revision(folder)
    data = folder / DATA_FILE
    if data.is_file():
        try:
            doc = json.loads(data.read_text("utf-8"))
        except ValueError as exc:
            raise PolicyError(f"{data}: not valid JSON ({exc})") from None
        if not isinstance(doc, dict) or set(doc) - {BUNDLE_ROOT}:
            raise PolicyError(f"{data}: a bundle rooted at {BUNDLE_ROOT} holds data under data.{BUNDLE_ROOT} only; "
                              f"found top-level keys {sorted(doc) if isinstance(doc, dict) else type(doc).__name__}")
    manifest = json.dumps({"revision": revision, "roots": [BUNDLE_ROOT]}, sort_keys=True).encode()
    entries = [(".manifest", manifest)] + [
        (p.name if p.name == DATA_FILE else f"{BUNDLE_ROOT}/{p.name}", p.read_bytes()) for p in files]
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, content in entries:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(content), 0o644, 0
            tar.addfile(info, io.BytesIO(content))
    packed = io.BytesIO()
    with gzip.GzipFile(fileobj=packed, mode="wb", mtime=0) as gz:
        gz.write(raw.getvalue())
    out.write_bytes(packed.getvalue())
    return revision


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m agentfactory.policy_bundle",
                                     description="Build the OPA bundle of the policies; print its revision.")
    parser.add_argument("-o", "--output", type=Path, required=True, help="the bundle file to write (.tar.gz)")
    parser.add_argument("--policies", type=Path, default=None, help="policies folder (default: as the engines find it)")
    args = parser.parse_args(argv)
    try:
        revision = build_bundle(args.policies or default_policy_dir(), args.output)
    except (PolicyError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(revision)
    return 0


if __name__ == "__main__":
    sys.exit(main())
