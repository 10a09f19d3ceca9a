"""The benchmark kernels build for both targets and compute the same, correct result natively and in wasmtime.

A WASI-versus-native benchmark is only honest if both sides do the same work: the checksums must agree,
and they must be the right ones (a kernel whose loop the compiler dropped would agree with itself).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import wasmtime
from helpers import ROOT

if str(ROOT) not in sys.path:  # `benchmarks` is not an installed package; the benchmark scripts do the same
    sys.path.append(str(ROOT))

from benchmarks.kernels import build as kernels

pytestmark = pytest.mark.toolchain

# Small work sizes, and the checksums they must give. Derived independently of the C: from Python
# reimplementations of each kernel (hashlib.sha256 for sha256, Python floats and math.sqrt for nbody,
# sorted() for sort, re + Counter for strings). nbody's 1000 steps are enough for a build that fused
# a*b+c into FMA natively (FP_CONTRACT not off) to give a different checksum.
SMALL: dict[str, tuple[int, str]] = {
    "sha256": (3, "0ec086a903af6e43"),
    "nbody": (1000, "d2c8af7440ebde26"),
    "sort": (3, "dc93818be67139d0"),
    "strings": (3, "eb12c23548ce4207"),
}


def run_native(binary: Path, size: int) -> str:
    proc = subprocess.run([str(binary), str(size)], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, f"{binary.name} exit {proc.returncode}: {proc.stderr}"
    return proc.stdout


def run_wasm(module_path: Path, size: int, tmp_path: Path) -> str:
    """Run a WASI command module in wasmtime-py; the kernel's stdout goes to a file we read back."""
    engine = wasmtime.Engine()
    module = wasmtime.Module.from_file(engine, str(module_path))
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    store = wasmtime.Store(engine)
    stdout = tmp_path / f"{module_path.stem}.stdout"
    stderr = tmp_path / f"{module_path.stem}.stderr"
    config = wasmtime.WasiConfig()
    config.argv = [module_path.stem, str(size)]
    config.stdout_file = str(stdout)
    config.stderr_file = str(stderr)
    store.set_wasi(config)
    instance = linker.instantiate(store, module)
    start = instance.exports(store)["_start"]
    assert isinstance(start, wasmtime.Func)
    try:
        start(store)  # wasi-libc returns normally when main returns 0 ...
    except wasmtime.ExitTrap as exc:  # ... and calls proc_exit otherwise
        assert exc.code == 0, f"{module_path.name} exit {exc.code}: {stderr.read_text()}"
    return stdout.read_text()


def test_every_kernel_has_a_small_size_and_a_benchmark_size() -> None:
    assert set(SMALL) == set(kernels.KERNELS)
    assert len(kernels.KERNELS) >= 3
    for name, size in kernels.KERNELS.items():
        assert (kernels.KERNEL_DIR / f"{name}.c").is_file()
        assert size > SMALL[name][0]


@pytest.mark.parametrize("name", sorted(SMALL))
def test_kernel_gives_the_same_correct_checksum_native_and_in_wasmtime(tmp_path: Path, name: str) -> None:
    size, expected = SMALL[name]
    native = kernels.build(name, "native", tmp_path / "out")
    wasm = kernels.build(name, "wasm", tmp_path / "out")
    assert native == tmp_path / "out" / name
    assert wasm == tmp_path / "out" / f"{name}.wasm"
    assert wasm.read_bytes()[:4] == b"\0asm"
    assert native.read_bytes()[:4] != b"\0asm"

    native_sum, native_ns = kernels.parse_output(run_native(native, size))
    wasm_sum, wasm_ns = kernels.parse_output(run_wasm(wasm, size, tmp_path))
    assert native_sum == wasm_sum, f"{name}: native {native_sum} vs wasm {wasm_sum} at size {size}"
    assert native_sum == expected, f"{name}: checksum {native_sum}, expected {expected} at size {size}"
    assert native_ns > 0
    assert wasm_ns > 0


def test_kernel_refuses_a_bad_work_size(tmp_path: Path) -> None:
    native = kernels.build("sort", "native", tmp_path)
    for bad in ("0", "-5", "12x"):
        proc = subprocess.run([str(native), bad], capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 2, bad
        assert proc.stdout == ""


def test_build_flags_are_the_pipeline_flags_except_the_wasm_only_ones() -> None:
    from pipelines.toolchain import C_FLAGS

    assert kernels.flags_for("wasm") == list(C_FLAGS)
    native = kernels.flags_for("native")
    assert "-target" not in native and "wasm32-wasi" not in native
    assert not [f for f in native if "stack-size" in f]
    assert [f for f in C_FLAGS if f in native] == native  # nothing added, order kept
    for flag in ("-O2", "-std=c11", "-Wall", "-Wextra", "-Werror"):
        assert flag in native
    with pytest.raises(ValueError, match="unknown target"):
        kernels.flags_for("riscv")  # type: ignore[arg-type]


def test_wasm_kernels_link_the_pipelines_libc_as_agents_do(tmp_path: Path) -> None:
    """The wasm side is the pipeline's build, pipelines/libc included; the benchmark prices it by leaving it out,
    which only a wasm build can (native links the host's libc)."""
    size, expected = SMALL["strings"]  # the kernel that calls memcmp
    linked = kernels.build("strings", "wasm", tmp_path / "linked")
    plain = kernels.build("strings", "wasm", tmp_path / "plain", without=(kernels.LIBC_SUPPLEMENT,))
    assert linked.read_bytes() != plain.read_bytes()
    for module in (linked, plain):
        assert kernels.parse_output(run_wasm(module, size, tmp_path))[0] == expected
    with pytest.raises(kernels.KernelBuildError, match="pipelines/libc is not among its flags"):
        kernels.build("strings", "native", tmp_path / "native", without=(kernels.LIBC_SUPPLEMENT,))


def test_build_failure_names_the_kernel_and_carries_zigs_stderr(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "broken.c").write_text("int main(void) { return undeclared_thing; }\n")
    monkeypatch.setattr(kernels, "KERNEL_DIR", src)
    monkeypatch.setitem(kernels.KERNELS, "broken", 1)
    for target in ("native", "wasm"):
        with pytest.raises(kernels.KernelBuildError, match=rf"kernel broken \({target}\)") as info:
            kernels.build("broken", target, tmp_path / "out")
        assert "undeclared_thing" in str(info.value)
    with pytest.raises(kernels.KernelBuildError, match="unknown kernel 'nope'"):
        kernels.build("nope", "native", tmp_path / "out")


@pytest.mark.parametrize("text", ["", "checksum=123 ns=5", "checksum=0123456789abcdef ns=", "hello\n",
                                  "checksum=0123456789abcdef ns=5\nchecksum=0123456789abcdef ns=5",
                                  "checksum=0123456789ABCDEF ns=5"])
def test_parse_output_refuses_anything_but_one_result_line(text: str) -> None:
    with pytest.raises(ValueError, match="not a kernel result line"):
        kernels.parse_output(text)


def test_parse_output_reads_one_result_line() -> None:
    assert kernels.parse_output("checksum=0123456789abcdef ns=42\n") == ("0123456789abcdef", 42)
