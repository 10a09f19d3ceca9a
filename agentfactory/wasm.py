"""A bounded reader for the WebAssembly binary format: sections, imports and exports.

Enough to answer "what does this module import and export?" without compiling it, which
the pipeline needs after a build and policy needs before anything runs (verify before you
compile). Every length is checked against the bytes that remain; malformed input raises
`InputError` naming the offset.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import InputError

MAGIC = b"\x00asm"
VERSION_1 = b"\x01\x00\x00\x00"
MAX_MODULE_BYTES = 64 * 1024 * 1024
PAGE = 64 * 1024
_KINDS = {0: "func", 1: "table", 2: "memory", 3: "global", 4: "tag"}


@dataclass(frozen=True)
class Import:
    module: str
    name: str
    kind: str


@dataclass(frozen=True)
class Export:
    name: str
    kind: str


@dataclass
class ModuleInfo:
    imports: list[Import] = field(default_factory=list)
    exports: list[Export] = field(default_factory=list)
    custom_sections: list[str] = field(default_factory=list)
    memories: list[tuple[int, int | None]] = field(default_factory=list)  # (min, max) in 64 KiB pages

    def exported(self, name: str, kind: str = "func") -> bool:
        return any(e.name == name and e.kind == kind for e in self.exports)

    @property
    def initial_memory_bytes(self) -> int:
        """Linear memory the module asks for before it runs a single instruction."""
        return sum(low for low, _ in self.memories) * PAGE


class _Reader:
    def __init__(self, data: bytes, where: str, start: int = 0, end: int | None = None) -> None:
        self.data, self.where, self.pos = data, where, start
        self.end = len(data) if end is None else end

    def fail(self, message: str) -> InputError:
        return InputError(self.where, f"malformed wasm at byte {self.pos}: {message}")

    def byte(self) -> int:
        if self.pos >= self.end:
            raise self.fail("unexpected end")
        b = self.data[self.pos]
        self.pos += 1
        return b

    def u32(self) -> int:
        result = shift = 0
        for _ in range(5):
            b = self.byte()
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                if result > 0xFFFFFFFF:
                    raise self.fail("LEB128 value exceeds 32 bits")
                return result
            shift += 7
        raise self.fail("LEB128 value too long")

    def take(self, n: int) -> bytes:
        if n > self.end - self.pos:
            raise self.fail(f"length {n} runs past the end")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def name(self) -> str:
        raw = self.take(self.u32())
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail("name is not UTF-8") from None

    def limits(self) -> tuple[int, int | None]:
        flags = self.byte()
        if flags & ~0x03:
            raise self.fail(f"unsupported limits flags {flags:#x} (memory64 or custom page sizes)")
        low = self.u32()
        return low, (self.u32() if flags & 0x01 else None)


def inspect(data: bytes, where: str = "module") -> ModuleInfo:
    """Parse the sections of a core wasm module (not a component) without compiling it."""
    if len(data) > MAX_MODULE_BYTES:
        raise InputError(where, f"module is {len(data)} bytes; the limit is {MAX_MODULE_BYTES}")
    if data[:4] != MAGIC:
        raise InputError(where, "not a WebAssembly module (bad magic number)")
    if data[4:8] != VERSION_1:
        raise InputError(where, "not a core WebAssembly 1.0 module (components are not supported)")
    info = ModuleInfo()
    r = _Reader(data, where, 8)
    while r.pos < r.end:
        section_id = r.byte()
        size = r.u32()
        body_end = r.pos + size
        if body_end > r.end:
            raise r.fail(f"section {section_id} of {size} bytes runs past the end")
        s = _Reader(data, where, r.pos, body_end)
        if section_id == 0:
            info.custom_sections.append(s.name())
        elif section_id == 2:
            for _ in range(s.u32()):
                module, name, kind = s.name(), s.name(), s.byte()
                if kind == 0:
                    s.u32()
                elif kind == 1:
                    s.byte()
                    s.limits()
                elif kind == 2:
                    info.memories.append(s.limits())
                elif kind == 3:
                    s.byte()
                    s.byte()
                elif kind == 4:
                    s.byte()
                    s.u32()
                else:
                    raise s.fail(f"unknown import kind {kind}")
                info.imports.append(Import(module, name, _KINDS[kind]))
        elif section_id == 5:
            for _ in range(s.u32()):
                info.memories.append(s.limits())
        elif section_id == 7:
            for _ in range(s.u32()):
                name, kind = s.name(), s.byte()
                s.u32()
                if kind not in _KINDS:
                    raise s.fail(f"unknown export kind {kind}")
                info.exports.append(Export(name, _KINDS[kind]))
        r.pos = body_end
    return info
