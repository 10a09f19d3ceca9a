"""Running the real Grype or Trivy binary: found where `make tools` put it, with the settings we choose.

Why apart from `common.run_scanner`: the pinned scanners live in `.agentfactory/tools/bin/` (found by
`peertools.find`, not only on PATH), and they must run with an environment the adapter controls
(Grype reads its database location and update switches from `GRYPE_*` variables only). Like
`run_scanner`, output goes to a temporary file and is capped, a timeout kills the scanner, and any
failure is a `ScannerFailed` that carries what the scanner said: never an empty result.
"""

from __future__ import annotations

import functools
import mmap
import os
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError
from ..peertools import find
from .common import MAX_REPORT_BYTES, SCANNER_TIMEOUT_S
from .errors import ScannerFailed, ScannerUnavailable

MAX_STDERR_BYTES = 64 * 1024
_BUILDINFO_MAGIC = b"\xff Go buildinf:"


@dataclass(frozen=True)
class Run:
    """A finished scanner run: its exit code, stdout (capped) and the tail of stderr."""

    argv: tuple[str, ...]
    returncode: int
    stdout: bytes
    stderr: str

    @property
    def command(self) -> str:
        return " ".join([Path(self.argv[0]).name, *self.argv[1:]])


def scanner_binary(name: str) -> Path:
    """The pinned scanner `name`; `ScannerUnavailable` naming `make tools` when it is not installed."""
    try:
        return find(name)
    except ConfigError as exc:
        raise ScannerUnavailable(f"{exc}; or scan with the embedded OSV matcher") from None


def run_peer(name: str, argv: list[str], *, env: Mapping[str, str] | None = None,
             timeout: float = SCANNER_TIMEOUT_S, max_bytes: int = MAX_REPORT_BYTES) -> Run:
    """Run scanner `name` with `argv`; the run, whatever its exit.

    The environment is the caller's, less every variable the scanner reads as a setting (GRYPE_*,
    TRIVY_*: a stray `TRIVY_SERVER` or `GRYPE_DB_VALIDATE_AGE=false` would change what is scanned
    or against what), plus `env`. Raises `ScannerFailed` only when it cannot be run at all: timed
    out, not executable, or it wrote more than `max_bytes`.
    """
    binary = scanner_binary(name)
    full = (str(binary), *argv)
    prefix = f"{name.upper()}_"
    environ = {k: v for k, v in os.environ.items() if not k.startswith(prefix)}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        try:
            done = subprocess.run(full, stdout=out, stderr=err, stdin=subprocess.DEVNULL, timeout=timeout,
                                  env={**environ, **(env or {})}, check=False)
        except subprocess.TimeoutExpired as exc:
            raise ScannerFailed(f"{name} did not finish within {timeout:g} s ({' '.join(argv)})") from exc
        except OSError as exc:
            raise ScannerFailed(f"cannot run {binary}: {exc.strerror or exc}") from exc
        size = out.tell()
        if size > max_bytes:
            raise ScannerFailed(f"{name} answered {size} bytes; the limit is {max_bytes}")
        out.seek(0)
        err.seek(max(0, err.tell() - MAX_STDERR_BYTES))
        stderr = err.read().decode("utf-8", "replace").strip()
        return Run(full, done.returncode, out.read(), stderr)


def _excerpt(text: str, limit: int = 1000) -> str:
    """The start (where a Go panic says what went wrong) and the end (the last error) of a long message."""
    if len(text) <= limit:
        return text
    return f"{text[:limit // 2].rstrip()} … {text[-limit // 2:].lstrip()}"


def require_success(run: Run, hint: str = "") -> bytes:
    """The run's stdout; `ScannerFailed` with the exit code, what the scanner said and `hint` otherwise."""
    if run.returncode == 0:
        return run.stdout
    said = _excerpt(run.stderr) or _excerpt(run.stdout.decode("utf-8", "replace").strip()) or "(no output)"
    message = f"{run.command} failed (exit {run.returncode}): {said}"
    raise ScannerFailed(f"{message}\n{hint}" if hint else message)


def _uvarint(data: bytes | mmap.mmap, at: int) -> tuple[int, int]:
    value = shift = 0
    while at < len(data):
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, at
        shift += 7
    raise ValueError("truncated varint")


def go_module_version(binary: Path) -> tuple[str, str] | None:
    """(module path, version) from a Go binary's embedded build info; read once per binary file (path, size, mtime)."""
    st = binary.stat()
    return _read_go_module_version(str(binary), st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=16)
def _read_go_module_version(binary: str, _size: int, _mtime_ns: int) -> tuple[str, str] | None:
    """(module path, version) from a Go binary's embedded build info, as `go version -m` prints it.

    Why: `go install module@version` records the module version in the binary, but Grype and
    Trivy print their version only when the release build injects it with -ldflags, so
    `grype version` says "[not provided]" here. The build info is a 32-byte header ("\\xff Go
    buildinf:", pointer size, flags; flag 2 = strings inline, Go 1.18+) at a 16-byte boundary,
    then the Go version and the module info as varint-prefixed strings. None when absent.
    """
    with open(binary, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as data:
        at = data.find(_BUILDINFO_MAGIC)
        while at != -1:
            if at % 16 == 0 and data[at + 15] & 2:
                try:
                    go_version_size, pos = _uvarint(data, at + 32)
                    size, pos = _uvarint(data, pos + go_version_size)
                    info = data[pos:pos + size].decode("utf-8", "replace")
                except (ValueError, IndexError):
                    info = ""
                for line in info.splitlines():
                    fields = line.split("\t")
                    if len(fields) >= 3 and fields[0] == "mod":
                        return fields[1], fields[2]
            at = data.find(_BUILDINFO_MAGIC, at + 1)
    return None
