from __future__ import annotations

import pytest
import wasmtime

from agentfactory.errors import InputError
from agentfactory.wasm import MAX_MODULE_BYTES, inspect

WAT = """(module
  (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 3 10)
  (func (export "_start"))
  (@custom "note" "hi"))"""


def test_imports_exports_memory() -> None:
    info = inspect(bytes(wasmtime.wat2wasm(WAT)))
    assert [(i.module, i.name, i.kind) for i in info.imports] == [("wasi_snapshot_preview1", "fd_write", "func")]
    assert info.exported("_start") and info.exported("memory", "memory") and not info.exported("main")
    assert info.memories == [(3, 10)] and info.initial_memory_bytes == 3 * 65536


@pytest.mark.parametrize(("data", "message"), [
    (b"\x7fELF\x01\x00\x00\x00", "bad magic"),
    (b"\x00asm\x0d\x00\x01\x00", "components are not supported"),
    (b"\x00asm\x01\x00\x00\x00\x07\x05\x01", "runs past the end"),
    (b"\x00asm\x01\x00\x00\x00\x07\xff\xff\xff\xff\xff\x01", "LEB128"),
    (b"\x00asm\x01\x00\x00\x00\x07\x04\x01\x05ab", "length 5 runs past the end"),
    (b"\x00asm\x01\x00\x00\x00\x07\x05\x01\x02\xff\xfe\x00", "not UTF-8"),
    (b"\x00asm\x01\x00\x00\x00\x02\x06\x01\x01a\x01b\x09", "unknown import kind"),
])
def test_malformed_modules_name_the_problem(data: bytes, message: str) -> None:
    with pytest.raises(InputError, match=message):
        inspect(data, "evil.wasm")


def test_truncated_real_module() -> None:
    data = bytes(wasmtime.wat2wasm(WAT))
    for cut in range(9, len(data) - 1, 7):
        try:
            inspect(data[:cut], "cut.wasm")
        except InputError as exc:
            assert "cut.wasm: malformed wasm at byte" in str(exc)


def test_size_limit() -> None:
    with pytest.raises(InputError, match="limit"):
        inspect(b"\x00asm\x01\x00\x00\x00" + b"\x00" * MAX_MODULE_BYTES)
