"""The bounded component reader (agentfactory.wasm.inspect_component): names and signatures, nothing compiled."""

from __future__ import annotations

import pytest
import wasmtime
from component_helpers import ECHO, LOG, NOW_MS, TOOLS, component

from agentfactory.errors import InputError
from agentfactory.wasm import MAX_TYPE_TEXT, inspect, inspect_any, inspect_component, is_component


def test_imports_exports_and_signatures_of_a_component() -> None:
    data = component(ECHO, imports=f'(import "{TOOLS}" (instance {LOG} {NOW_MS}))')
    info = inspect_component(data, "agent.wasm")
    assert is_component(data) and inspect_any(data) == info
    assert [(i.name, i.kind) for i in info.imports] == [(TOOLS, "instance")]
    assert info.imports[0].functions() == {"log": "func(msg: string)", "now-ms": "func() -> u64"}
    run = info.export("run")
    assert run is not None and run.kind == "func"
    assert run.signature == "func(input: string) -> result<string, string>"
    assert info.core_modules == 2 and info.core_instances == 2 and info.memories == [(2, None)]
    assert info.initial_memory_bytes == 2 * 65536


def test_every_kind_of_value_type_is_rendered() -> None:
    wat = """(component
  (import "x:y/z@1.0.0" (instance
    (type $r (record (field "a" u8) (field "b-c" (list (tuple string s64)))))
    (export "r" (type (eq $r)))
    (type $v (variant (case "none") (case "some" f64)))
    (type $e (enum "low" "high"))
    (type $f (flags "read" "write"))
    (export "res" (type $res (sub resource)))
    (type $own (own $res))
    (export "f" (func (param "a" $r) (param "b" (option $v)) (param "c" $e) (param "d" $f) (param "h" $own)
      (result (result (error char)))))
    (export "g" (func (result (result u32))))
    (export "h" (func (result (result))))))
)"""
    info = inspect_component(bytes(wasmtime.wat2wasm(wat)))
    items = {i.name: i for i in info.imports[0].items}
    assert items["r"].kind == "type" and items["r"].signature == "record{a: u8, b-c: list<tuple<string, s64>>}"
    assert items["f"].signature == ("func(a: record{a: u8, b-c: list<tuple<string, s64>>}, "
                                    "b: option<variant{none, some(f64)}>, c: enum{low, high}, d: flags{read, write}, "
                                    "h: own<res>) -> result<_, char>")
    assert items["g"].signature == "func() -> result<u32>"
    assert items["h"].signature == "func() -> result"


def test_a_core_module_is_not_a_component_and_the_core_reader_says_so() -> None:
    module = bytes(wasmtime.wat2wasm('(module (func (export "_start")))'))
    assert not is_component(module)
    assert inspect_any(module).exported("_start")
    with pytest.raises(InputError, match="not a component of the supported encoding"):
        inspect_component(module, "m.wasm")
    with pytest.raises(InputError, match="components are not supported here"):
        inspect(component(), "c.wasm")


def test_truncated_components_fail_with_the_offset() -> None:
    data = component(ECHO)
    for cut in range(9, len(data) - 1, 5):
        try:
            inspect_component(data[:cut], "cut.wasm")
        except InputError as exc:
            assert str(exc).startswith("cut.wasm")
            assert "malformed wasm at byte" in str(exc)


@pytest.mark.parametrize(("tail", "message"), [
    (b"\x0d\x01\x00", "unknown component section 13"),
    (b"\x07\x02\x01\x55", "unknown type constructor 0x55"),
    (b"\x07\x03\x01\x70\x05", "type index 5 is not defined"),
    (b"\x0a\x06\x01\x00\x01a\x05\x00", "type index 0 is not defined"),
    (b"\x0b\x05\x01\x00\x01a\x01", "unexpected end"),
    (b"\x06\x06\x01\x01\x00\x09\x01a", "alias of instance 9, which is not defined"),
    (b"\x08\x02\x01\x77", "unknown canonical definition 0x77"),
])
def test_malformed_sections_name_the_problem(tail: bytes, message: str) -> None:
    with pytest.raises(InputError, match=message):
        inspect_component(b"\x00asm\x0d\x00\x01\x00" + tail, "evil.wasm")


def leb(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def test_a_type_bomb_stops_at_the_text_limit() -> None:
    # type 0 = string; type n+1 = tuple<n, n>: the description doubles with each type.
    types = [b"\x73"] + [b"\x6f\x02" + bytes([n, n]) for n in range(40)]
    body = leb(len(types)) + b"".join(types)
    data = b"\x00asm\x0d\x00\x01\x00\x07" + leb(len(body)) + body
    with pytest.raises(InputError, match=f"exceeds {MAX_TYPE_TEXT} characters"):
        inspect_component(data, "bomb.wasm")


def test_size_limit() -> None:
    from agentfactory.wasm import MAX_MODULE_BYTES

    with pytest.raises(InputError, match="limit"):
        inspect_component(b"\x00asm\x0d\x00\x01\x00" + b"\x00" * MAX_MODULE_BYTES)


def test_nested_components_count_their_core_instances() -> None:
    wat = """(component
  (component $inner
    (core module $m)
    (core instance (instantiate $m))
    (core instance (instantiate $m)))
  (instance (instantiate $inner))
  (core module $n)
  (core instance (instantiate $n)))"""
    info = inspect_component(bytes(wasmtime.wat2wasm(wat)))
    assert info.nested_components == 1 and info.core_instances == 3 and info.core_modules == 1
