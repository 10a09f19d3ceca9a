"""Build the compute kernels with the pipeline's own zig and flags, for wasm32-wasi or for this host.

A WASI-versus-native comparison only means something if both sides are the same C compiled by the
same compiler with the same optimisation: so the flags come from `pipelines.toolchain.C_FLAGS` (what
every agent is built with), and only the target and the wasm-only linker flags differ. zig is run
the way the pipeline runs it (the pinned wheel's binary, a scrubbed environment) and shares the
pipeline's zig global cache, so wasi-libc and the host libc are built once, not per benchmark run.

Flags that only exist for wasm are dropped natively: `-msimd128` is the wasm build's counterpart of the
host's own SIMD, which a native build gets anyway (zig builds for this CPU, AVX2 included). Likewise the
pipeline's own libc functions (pipelines/libc, linked into every C agent) are the wasm build's counterpart
of the host's glibc, which the native build links.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from pathlib import Path
from typing import Literal

from agentfactory.config import toolchain_cache
from pipelines.toolchain import C_FLAGS, COMPILE_TIMEOUT_S, libc_supplement_args, zig_dir

KERNEL_DIR = Path(__file__).resolve().parent

# Work size per kernel that runs for roughly 0.4-0.5 s natively (measured on the development machine,
# x86-64 with AVX2/FMA, zig 0.17 -O2); see the C files for what one unit of work is.
KERNELS: dict[str, int] = {
    "sha256": 4000,  # hashes of a 16 KiB buffer (~0.44 s)
    "nbody": 7_500_000,  # simulation steps (~0.45 s)
    "sort": 120,  # rounds of generating and sorting 65536 ints (~0.42 s)
    "strings": 550,  # passes counting the words of a 256 KiB text (~0.43 s)
}

Target = Literal["native", "wasm"]
TARGETS: tuple[Target, ...] = ("native", "wasm")

# Flags that only make sense for the wasm build: the target itself, the wasm linker's stack size and wasm SIMD.
_WASM_ONLY_PREFIXES = ("-Wl,-z,stack-size=", "-msimd128")
# Named in `without` to build wasm without the pipeline's libc functions, with zig's own instead.
LIBC_SUPPLEMENT = "pipelines/libc"
_OUTPUT = re.compile(r"checksum=(?P<checksum>[0-9a-f]{16}) ns=(?P<ns>\d+)")


class KernelBuildError(RuntimeError):
    """zig could not build a kernel; the message names the kernel and target and carries zig's stderr."""


def _common_flags() -> list[str]:
    """C_FLAGS without `-target wasm32-wasi` and the wasm-only linker flags: what both targets share."""
    flags: list[str] = []
    skip = False
    for flag in C_FLAGS:
        if skip:
            skip = False
            continue
        if flag == "-target":
            skip = True
            continue
        if flag.startswith(("-target=", "--target=", *_WASM_ONLY_PREFIXES)):
            continue
        flags.append(flag)
    return flags


def flags_for(target: Target) -> list[str]:
    """The compiler flags for `target`: the pipeline's for wasm, the same minus the wasm-only ones natively.

    Native builds get no `-target`, so zig builds for this host (its CPU features included, as a native
    `-O2` build of the C would normally be).
    """
    if target == "wasm":
        return list(C_FLAGS)
    if target == "native":
        return _common_flags()
    raise ValueError(f"unknown target {target!r}; expected one of {', '.join(TARGETS)}")


def _env(global_cache: Path, local_cache: Path) -> dict[str, str]:
    """A scrubbed environment, as `pipelines.toolchain._clean_env` builds it: no CFLAGS or user config."""
    return {"PATH": "/usr/bin:/bin", "LC_ALL": "C", "TZ": "UTC", "ZIG_GLOBAL_CACHE_DIR": str(global_cache),
            "ZIG_LOCAL_CACHE_DIR": str(local_cache), "HOME": str(local_cache)}


def build(kernel: str, target: Target, out_dir: Path, *, cache_root: Path | None = None,
          without: tuple[str, ...] = ()) -> Path:
    """Compile benchmarks/kernels/<kernel>.c for `target` into `out_dir`; returns the binary's path.

    `<out_dir>/<kernel>.wasm` for wasm, `<out_dir>/<kernel>` natively. zig's global cache lives under
    `cache_root` (default: the pipeline's toolchain cache, `$AGENTFACTORY_TOOLCHAIN_CACHE`), in the same
    `zig-global` folder the pipeline uses, so a warm pipeline cache makes kernel builds fast too.
    `without` names pinned flags to leave out, each of which must be one, or `LIBC_SUPPLEMENT` (wasm only):
    the benchmark prices a choice by building without it.
    """
    source = KERNEL_DIR / f"{kernel}.c"
    if kernel not in KERNELS or not source.is_file():
        raise KernelBuildError(f"unknown kernel {kernel!r}; expected one of {', '.join(KERNELS)}")
    flags = flags_for(target)
    supplement = libc_supplement_args() if target == "wasm" else []
    unknown = [f for f in without if f not in flags and not (f == LIBC_SUPPLEMENT and supplement)]
    if unknown:
        raise KernelBuildError(f"kernel {kernel} ({target}): {', '.join(unknown)} is not among its flags")
    flags = [f for f in flags if f not in without]
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / (f"{kernel}.wasm" if target == "wasm" else kernel)
    global_cache = (cache_root or toolchain_cache()) / "zig-global"
    global_cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f"zig-local-{kernel}-", dir=out_dir) as local:
        libc = [] if LIBC_SUPPLEMENT in without else supplement
        cmd = [str(zig_dir() / "zig"), "cc", *flags, str(source), *libc, "-o", str(out)]
        try:
            proc = subprocess.run(cmd, cwd=KERNEL_DIR, capture_output=True, text=True,
                                  env=_env(global_cache, Path(local)), timeout=COMPILE_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            raise KernelBuildError(f"kernel {kernel} ({target}): zig cc did not finish within "
                                   f"{COMPILE_TIMEOUT_S} s") from None
    if proc.returncode != 0 or not out.is_file():
        raise KernelBuildError(f"kernel {kernel} ({target}): zig cc exit {proc.returncode}\n"
                               f"command: {' '.join(cmd)}\n{proc.stderr or proc.stdout}")
    return out


def parse_output(text: str) -> tuple[str, int]:
    """(checksum, ns) from a kernel's stdout, which must be exactly one `checksum=<16 hex> ns=<int>` line.

    Strict on purpose: a kernel that printed anything else (a warning, a second line) is broken, and
    a benchmark must not quietly time it.
    """
    m = _OUTPUT.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"not a kernel result line (expected 'checksum=<16 hex> ns=<int>'): {text!r}")
    return m["checksum"], int(m["ns"])
