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
    start: bool = False  # a start section: guest code that runs while the module is instantiated

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
        raise InputError(where, "not a core WebAssembly 1.0 module (components are not supported here: "
                                "inspect_component reads them)")
    return _inspect_core(data, where, 8, len(data))


def _inspect_core(data: bytes, where: str, start: int, end: int) -> ModuleInfo:
    """The sections of the core module in data[start:end] (after its header)."""
    info = ModuleInfo()
    r = _Reader(data, where, start, end)
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
        elif section_id == 8:
            info.start = True
        elif section_id == 7:
            for _ in range(s.u32()):
                name, kind = s.name(), s.byte()
                s.u32()
                if kind not in _KINDS:
                    raise s.fail(f"unknown export kind {kind}")
                info.exports.append(Export(name, _KINDS[kind]))
        r.pos = body_end
    return info


# --- components (the component model's binary format, layer 1) --------------------------------------
#
# A component's imports and exports are typed by WIT: instances of functions over records, lists,
# options and results. The reader below resolves the top-level component's type, instance and function
# index spaces just far enough to name every import and export and to render each function's signature
# (`func(msg: string)`), so that "does this component import only the declared tools of the project's
# world, with their exact signatures, and export `run`?" is answered before anything is compiled.
# Nested core modules are read with the core reader above (their memories); nested components and
# instances they make are summarised, never executed. Types are rendered structurally (records by
# their fields), bounded in length so that a type of doubling tuples cannot exhaust memory.

COMPONENT_VERSION = b"\x0d\x00\x01\x00"  # version 0x0d, layer 1: what wasmtime 50 and componentize-py emit
MAX_TYPE_TEXT = 16 * 1024  # characters of one rendered type
MAX_ITEMS = 1_000_000  # entries of one index space
MAX_NESTING = 32  # instance and component types inside each other
_PRIMS = {0x7F: "bool", 0x7E: "s8", 0x7D: "u8", 0x7C: "s16", 0x7B: "u16", 0x7A: "s32", 0x79: "u32",
          0x78: "s64", 0x77: "u64", 0x76: "f32", 0x75: "f64", 0x74: "char", 0x73: "string",
          0x64: "error-context"}
_EXTERN = {0x00: "module", 0x01: "func", 0x02: "value", 0x03: "type", 0x04: "component", 0x05: "instance"}
_SORTS = {0x01: "func", 0x02: "value", 0x03: "type", 0x04: "component", 0x05: "instance"}


@dataclass(frozen=True)
class ComponentItem:
    """An import or export of a component: its name, kind and (for functions) signature; an instance
    lists what it exports, each as an item of its own."""

    name: str
    kind: str  # func | instance | type | component | module | value
    signature: str = ""  # func: "func(a: string) -> u64"; type: its definition; else ""
    items: tuple[ComponentItem, ...] = ()  # an instance's exports, in declaration order

    def functions(self) -> dict[str, str]:
        return {i.name: i.signature for i in self.items if i.kind == "func"}


@dataclass
class ComponentInfo:
    """What a component imports and exports at its top level, and what its core modules ask for."""

    imports: list[ComponentItem] = field(default_factory=list)
    exports: list[ComponentItem] = field(default_factory=list)
    custom_sections: list[str] = field(default_factory=list)
    core_modules: int = 0
    nested_components: int = 0
    core_instances: int = 0  # core module instantiations, nested components' included: a store's instance limit
    memories: list[tuple[int, int | None]] = field(default_factory=list)  # defined by its core modules

    @property
    def initial_memory_bytes(self) -> int:
        """Linear memory the component's core modules define before a single instruction runs."""
        return sum(low for low, _ in self.memories) * PAGE

    def export(self, name: str) -> ComponentItem | None:
        return next((e for e in self.exports if e.name == name), None)


@dataclass(frozen=True)
class _Type:
    kind: str  # val | func | instance | component | resource | opaque
    text: str = ""
    items: tuple[ComponentItem, ...] = ()


_OPAQUE = _Type("opaque", "?")


class _Scope:
    """One index space of types (a component, or an instance or component type inside one)."""

    def __init__(self, parent: _Scope | None) -> None:
        self.parent = parent
        self.types: list[_Type] = []
        self.depth: int = 0 if parent is None else parent.depth + 1

    def type(self, r: _Reader, index: int) -> _Type:
        if index >= len(self.types):
            raise r.fail(f"type index {index} is not defined (only {len(self.types)} types so far)")
        return self.types[index]

    def add(self, r: _Reader, t: _Type) -> None:
        if len(self.types) >= MAX_ITEMS:
            raise r.fail(f"more than {MAX_ITEMS} types")
        self.types.append(t)

    def outer(self, r: _Reader, count: int) -> _Scope:
        scope: _Scope | None = self
        for _ in range(count):
            scope = scope.parent if scope is not None else None
        if scope is None:
            raise r.fail(f"outer alias {count} scopes out, beyond the outermost component")
        return scope


def _text(r: _Reader, text: str) -> str:
    if len(text) > MAX_TYPE_TEXT:
        raise r.fail(f"a type's description exceeds {MAX_TYPE_TEXT} characters (deeply nested or repeated types)")
    return text


class _ComponentReader:
    def __init__(self, data: bytes, where: str) -> None:
        self.data, self.where = data, where
        self.top = _Scope(None)
        self.funcs: list[str] = []  # signature per function index ("" when unknown)
        self.instances: list[tuple[ComponentItem, ...] | None] = []  # exports per instance (None: unknown)
        self.info = ComponentInfo()

    # -- small productions ------------------------------------------------------------------------
    def label(self, r: _Reader) -> str:
        return r.name()

    def extern_name(self, r: _Reader) -> str:
        """nameattributes: 0x00/0x01 name, or 0x02 name and attributes (ignored for typing)."""
        tag = r.byte()
        if tag not in (0x00, 0x01, 0x02):
            raise r.fail(f"unknown import/export name form {tag:#x}")
        name = r.name()
        if tag == 0x02:
            for _ in range(r.u32()):
                attr = r.byte()
                if attr not in (0x00, 0x01, 0x02):
                    raise r.fail(f"unknown name attribute {attr:#x}")
                r.name()
        return name

    def valtype(self, r: _Reader, scope: _Scope) -> str:
        b = r.data[r.pos] if r.pos < r.end else -1
        if 0x40 <= b <= 0x7F:
            r.pos += 1
            if b not in _PRIMS:
                raise r.fail(f"unknown value type {b:#x}")
            return _PRIMS[b]
        t = scope.type(r, r.u32())
        if t.kind not in ("val", "opaque"):
            raise r.fail(f"a value type refers to a {t.kind} type")
        return t.text

    def optional(self, r: _Reader, scope: _Scope) -> str | None:
        flag = r.byte()
        if flag == 0x00:
            return None
        if flag != 0x01:
            raise r.fail(f"bad optional-type flag {flag:#x}")
        return self.valtype(r, scope)

    def resource_name(self, r: _Reader, scope: _Scope) -> str:
        t = scope.type(r, r.u32())
        if t.kind not in ("resource", "opaque"):
            raise r.fail(f"a handle refers to a {t.kind} type, not a resource")
        return t.text

    def defvaltype(self, r: _Reader, scope: _Scope, op: int) -> str:
        if op in _PRIMS:
            return _PRIMS[op]
        if op == 0x72:
            fields = [f"{self.label(r)}: {self.valtype(r, scope)}" for _ in range(r.u32())]
            return _text(r, "record{" + ", ".join(fields) + "}")
        if op == 0x71:
            cases = []
            for _ in range(r.u32()):
                name, payload = self.label(r), self.optional(r, scope)
                if r.byte() != 0x00:
                    raise r.fail("variant case refinements are not supported")
                cases.append(name if payload is None else f"{name}({payload})")
            return _text(r, "variant{" + ", ".join(cases) + "}")
        if op == 0x70:
            return _text(r, f"list<{self.valtype(r, scope)}>")
        if op == 0x67:
            element = self.valtype(r, scope)
            return _text(r, f"list<{element}, {r.u32()}>")
        if op == 0x6F:
            return _text(r, "tuple<" + ", ".join(self.valtype(r, scope) for _ in range(r.u32())) + ">")
        if op in (0x6E, 0x6D):
            labels = [self.label(r) for _ in range(r.u32())]
            return _text(r, ("flags{" if op == 0x6E else "enum{") + ", ".join(labels) + "}")
        if op == 0x6B:
            return _text(r, f"option<{self.valtype(r, scope)}>")
        if op == 0x6A:
            ok, err = self.optional(r, scope), self.optional(r, scope)
            if ok is None and err is None:
                return "result"
            return _text(r, f"result<{ok or '_'}" + (f", {err}>" if err is not None else ">"))
        if op in (0x69, 0x68):
            return _text(r, f"{'own' if op == 0x69 else 'borrow'}<{self.resource_name(r, scope)}>")
        if op in (0x66, 0x65):
            inner = self.optional(r, scope)
            kind = "stream" if op == 0x66 else "future"
            return _text(r, kind if inner is None else f"{kind}<{inner}>")
        if op == 0x63:
            key = self.valtype(r, scope)
            return _text(r, f"map<{key}, {self.valtype(r, scope)}>")
        raise r.fail(f"unknown type constructor {op:#x}")

    def functype(self, r: _Reader, scope: _Scope, op: int) -> str:
        params = [f"{self.label(r)}: {self.valtype(r, scope)}" for _ in range(r.u32())]
        tag = r.byte()
        if tag == 0x00:
            result = f" -> {self.valtype(r, scope)}"
        elif tag == 0x01 and r.byte() == 0x00:
            result = ""
        else:
            raise r.fail("bad function result list")
        return _text(r, ("async " if op == 0x43 else "") + "func(" + ", ".join(params) + ")" + result)

    def deftype(self, r: _Reader, scope: _Scope) -> _Type:
        op = r.byte()
        if op in (0x40, 0x43):
            return _Type("func", self.functype(r, scope, op))
        if op in (0x41, 0x42):
            if scope.depth >= MAX_NESTING:
                raise r.fail(f"instance and component types nested more than {MAX_NESTING} deep")
            items = self.declarations(r, _Scope(scope), component=op == 0x41)
            kind = "component" if op == 0x41 else "instance"
            return _Type(kind, kind, items)
        if op == 0x3F:
            r.byte()  # the representation (i32)
            if r.byte() == 0x01:
                r.u32()  # destructor
            return _Type("resource", f"resource#{len(scope.types)}")
        return _Type("val", self.defvaltype(r, scope, op))

    def externtype(self, r: _Reader, scope: _Scope, name: str) -> tuple[ComponentItem, _Type | None]:
        """An import's or export's type: the item, and the type it adds to the type index space (if any)."""
        tag = r.byte()
        if tag == 0x00:
            if r.byte() != 0x11:
                raise r.fail("bad core module type")
            r.u32()
            return ComponentItem(name, "module"), None
        if tag == 0x02:
            bound = r.byte()
            if bound == 0x00:
                r.u32()
            elif bound == 0x01:
                self.valtype(r, scope)
            else:
                raise r.fail(f"bad value bound {bound:#x}")
            return ComponentItem(name, "value"), None
        if tag == 0x03:
            bound = r.byte()
            if bound == 0x00:
                t = scope.type(r, r.u32())
            elif bound == 0x01:
                t = _Type("resource", name)
            else:
                raise r.fail(f"bad type bound {bound:#x}")
            return ComponentItem(name, "type", t.text), t
        if tag not in (0x01, 0x04, 0x05):
            raise r.fail(f"unknown extern type {tag:#x}")
        t = scope.type(r, r.u32())
        kind = _EXTERN[tag]
        if t.kind not in (kind, "opaque"):
            raise r.fail(f"{name!r} is declared a {kind} of a {t.kind} type")
        return ComponentItem(name, kind, t.text if kind == "func" else "", t.items), None

    def declarations(self, r: _Reader, scope: _Scope, *, component: bool) -> tuple[ComponentItem, ...]:
        """The declarators of an instance type (or component type): what it exports (or imports and exports)."""
        items: list[ComponentItem] = []
        for _ in range(r.u32()):
            tag = r.byte()
            if tag == 0x00:
                raise r.fail("core types inside instance or component types are not supported")
            if tag == 0x01:
                scope.add(r, self.deftype(r, scope))
            elif tag == 0x02:
                sort = r.byte()
                target = r.byte()
                if sort == 0x03 and target == 0x02:
                    outer = scope.outer(r, r.u32())
                    scope.add(r, outer.type(r, r.u32()))
                elif target == 0x00 and sort in (0x03, 0x05):
                    r.u32()
                    r.name()
                    if sort == 0x03:
                        scope.add(r, _OPAQUE)
                else:
                    raise r.fail(f"unsupported alias (sort {sort:#x}, target {target:#x}) in a type")
            elif tag in (0x03, 0x04):
                if tag == 0x03 and not component:
                    raise r.fail("an instance type cannot declare imports")
                item, added = self.externtype(r, scope, self.extern_name(r))
                if added is not None:
                    scope.add(r, added)
                if tag == 0x04:
                    items.append(item)
            else:
                raise r.fail(f"unknown declarator {tag:#x}")
        return tuple(items)

    # -- sections of the top-level component --------------------------------------------------------
    def add_func(self, r: _Reader, signature: str) -> None:
        if len(self.funcs) >= MAX_ITEMS:
            raise r.fail(f"more than {MAX_ITEMS} functions")
        self.funcs.append(signature)

    def add_instance(self, r: _Reader, items: tuple[ComponentItem, ...] | None) -> None:
        if len(self.instances) >= MAX_ITEMS:
            raise r.fail(f"more than {MAX_ITEMS} instances")
        self.instances.append(items)

    def define(self, r: _Reader, item: ComponentItem, added: _Type | None) -> None:
        """An import (or an export) adds an entry to the index space of its kind."""
        if item.kind == "func":
            self.add_func(r, item.signature)
        elif item.kind == "instance":
            self.add_instance(r, item.items)
        elif item.kind == "type":
            self.top.add(r, added or _OPAQUE)

    def sortidx_item(self, r: _Reader, name: str) -> ComponentItem:
        sort = r.byte()
        if sort == 0x00:
            r.byte()
            r.u32()
            return ComponentItem(name, "module")
        if sort not in _SORTS:
            raise r.fail(f"unknown sort {sort:#x}")
        index = r.u32()
        kind = _SORTS[sort]
        if kind == "func":
            if index >= len(self.funcs):
                raise r.fail(f"function index {index} is not defined")
            return ComponentItem(name, "func", self.funcs[index])
        if kind == "instance":
            if index >= len(self.instances):
                raise r.fail(f"instance index {index} is not defined")
            return ComponentItem(name, "instance", "", self.instances[index] or ())
        if kind == "type":
            return ComponentItem(name, "type", self.top.type(r, index).text)
        return ComponentItem(name, kind)

    def alias(self, r: _Reader) -> None:
        sort = r.byte()
        if sort == 0x00:
            r.byte()  # a core sort: core index spaces are not tracked
        elif sort not in _SORTS:
            raise r.fail(f"unknown alias sort {sort:#x}")
        target = r.byte()
        if target == 0x00:
            index, name = r.u32(), r.name()
            if index >= len(self.instances):
                raise r.fail(f"alias of instance {index}, which is not defined")
            exports = self.instances[index]
            found = next((i for i in exports or () if i.name == name), None)
            if exports is not None and found is None:
                raise r.fail(f"alias of {name!r}, which instance {index} does not export")
        elif target == 0x01:
            r.u32()
            r.name()
            found = None
        elif target == 0x02:
            count, index = r.u32(), r.u32()
            if count != 0 and sort != 0x00:
                raise r.fail("an outer alias leaves the outermost component")
            found = None
            if sort == 0x03:
                self.top.add(r, self.top.type(r, index))
                return
        else:
            raise r.fail(f"unknown alias target {target:#x}")
        if sort == 0x01:
            self.add_func(r, found.signature if found is not None else "")
        elif sort == 0x05:
            self.add_instance(r, found.items if found is not None else None)
        elif sort == 0x03:
            self.top.add(r, _Type("val", found.signature) if found is not None and found.signature else _OPAQUE)

    def canon(self, r: _Reader) -> None:
        op = r.byte()
        if op == 0x00:  # lift: a component function of the given type
            if r.byte() != 0x00:
                raise r.fail("canon lift of a non-function")
            r.u32()
            self.options(r)
            t = self.top.type(r, r.u32())
            if t.kind != "func":
                raise r.fail(f"canon lift with a {t.kind} type")
            self.add_func(r, t.text)
            return
        if op == 0x01:
            r.byte()
            r.u32()
            self.options(r)
        elif op in (0x02, 0x03, 0x04, 0x0E, 0x13, 0x14, 0x15, 0x1A, 0x1B):
            r.u32()
        elif op in (0x05, 0x0D, 0x1E, 0x1F, 0x22, 0x23, 0x24, 0x25, 0x26, 0x28):
            pass
        elif op == 0x09:
            tag = r.byte()
            if tag == 0x00:
                self.valtype(r, self.top)
            elif not (tag == 0x01 and r.byte() == 0x00):
                raise r.fail("bad result list")
            self.options(r)
        elif op in (0x0A, 0x0B):
            r.byte()
            r.u32()
        elif op in (0x06, 0x0C, 0x29, 0x2A, 0x2B, 0x2C, 0x2D, 0x42):
            r.byte()
        elif op in (0x0F, 0x10, 0x16, 0x17):
            r.u32()
            self.options(r)
        elif op in (0x11, 0x12, 0x18, 0x19):
            r.u32()
            r.byte()
        elif op in (0x1C, 0x1D):
            self.options(r)
        elif op in (0x20, 0x21):
            r.byte()
            r.u32()
        elif op == 0x27:
            r.u32()
            r.u32()
        elif op == 0x40:
            r.byte()
            r.u32()
        elif op == 0x41:
            r.byte()
            r.u32()
            r.u32()
        else:
            raise r.fail(f"unknown canonical definition {op:#x}")

    def options(self, r: _Reader) -> None:
        for _ in range(r.u32()):
            opt = r.byte()
            if opt in (0x03, 0x04, 0x05, 0x07):
                r.u32()
            elif opt not in (0x00, 0x01, 0x02, 0x06):
                raise r.fail(f"unknown canonical option {opt:#x}")

    def instance(self, r: _Reader) -> None:
        tag = r.byte()
        if tag == 0x00:  # instantiate a nested component: its exports are not tracked
            r.u32()
            for _ in range(r.u32()):
                r.name()
                self.sortidx_item(r, "")
            self.add_instance(r, None)
        elif tag == 0x01:
            self.add_instance(r, tuple(self.sortidx_item(r, self.extern_name(r)) for _ in range(r.u32())))
        else:
            raise r.fail(f"unknown instance expression {tag:#x}")

    def read(self) -> ComponentInfo:
        r = _Reader(self.data, self.where, 8)
        while r.pos < r.end:
            section_id = r.byte()
            size = r.u32()
            body_end = r.pos + size
            if body_end > r.end:
                raise r.fail(f"section {section_id} of {size} bytes runs past the end")
            s = _Reader(self.data, self.where, r.pos, body_end)
            self.section(section_id, s)
            if section_id not in (0, 1, 2, 3, 4, 9, 12) and s.pos != body_end:
                raise s.fail(f"section {section_id} has {body_end - s.pos} bytes left over")
            r.pos = body_end
        return self.info

    def section(self, section_id: int, s: _Reader) -> None:
        if section_id == 0:
            self.info.custom_sections.append(s.name())
        elif section_id == 1:
            self.info.core_modules += 1
            module = _core(self.data, f"{self.where} (core module {self.info.core_modules})", s.pos, s.end)
            self.info.memories.extend(module.memories[len([i for i in module.imports if i.kind == 'memory']):])
        elif section_id == 2:
            self.info.core_instances += _core_instantiations(s)
        elif section_id == 4:
            self.info.nested_components += 1
            self.info.core_instances += _nested_instantiations(self.data, self.where, s.pos, s.end, 1)
        elif section_id == 5:
            for _ in range(s.u32()):
                self.instance(s)
        elif section_id == 6:
            for _ in range(s.u32()):
                self.alias(s)
        elif section_id == 7:
            for _ in range(s.u32()):
                self.top.add(s, self.deftype(s, self.top))
        elif section_id == 8:
            for _ in range(s.u32()):
                self.canon(s)
        elif section_id == 10:
            for _ in range(s.u32()):
                item, added = self.externtype(s, self.top, self.extern_name(s))
                self.info.imports.append(item)
                self.define(s, item, added)
        elif section_id == 11:
            for _ in range(s.u32()):
                name = self.extern_name(s)
                item = self.sortidx_item(s, name)
                if s.byte() == 0x01:  # an ascribed type: what the export claims to be
                    item, _ = self.externtype(s, self.top, name)
                self.info.exports.append(item)
                self.define(s, item, _Type("val", item.signature) if item.kind == "type" else None)
        elif section_id not in (3, 9, 12):
            raise s.fail(f"unknown component section {section_id}")


def _core_instantiations(s: _Reader) -> int:
    """How many core instances of modules a core instance section makes (inline exports make none)."""
    made = 0
    for _ in range(s.u32()):
        tag = s.byte()
        if tag == 0x00:
            made += 1
            s.u32()
        elif tag != 0x01:
            raise s.fail(f"unknown core instance expression {tag:#x}")
        for _ in range(s.u32()):
            s.name()
            if tag == 0x01:
                s.byte()
            elif s.byte() != 0x12:
                raise s.fail("a core instantiation argument that is not an instance")
            s.u32()
    return made


def _nested_instantiations(data: bytes, where: str, start: int, end: int, depth: int) -> int:
    """Core instantiations inside a nested component (its sections 2 and 4, recursively, bounded)."""
    if depth > MAX_NESTING:
        raise InputError(where, f"malformed wasm at byte {start}: components nested more than {MAX_NESTING} deep")
    if data[start:start + 8] != MAGIC + COMPONENT_VERSION:
        raise InputError(where, f"malformed wasm at byte {start}: a nested component has no component header")
    r = _Reader(data, where, start + 8, end)
    made = 0
    while r.pos < r.end:
        section_id = r.byte()
        size = r.u32()
        body_end = r.pos + size
        if body_end > r.end:
            raise r.fail(f"section {section_id} of {size} bytes runs past the end")
        if section_id == 2:
            made += _core_instantiations(_Reader(data, where, r.pos, body_end))
        elif section_id == 4:
            made += _nested_instantiations(data, where, r.pos, body_end, depth + 1)
        r.pos = body_end
    return made


def _core(data: bytes, where: str, start: int, end: int) -> ModuleInfo:
    """A core module embedded in a component, read with the core reader."""
    if data[start:start + 8] != MAGIC + VERSION_1:
        raise InputError(where, f"malformed wasm at byte {start}: a nested core module does not start with the "
                                "core WebAssembly 1.0 header")
    return _inspect_core(data, where, start + 8, end)


def is_component(data: bytes) -> bool:
    """Whether `data` starts with the header of a component (not a core module)."""
    return data[:4] == MAGIC and data[4:8] == COMPONENT_VERSION


def inspect_component(data: bytes, where: str = "component") -> ComponentInfo:
    """Parse a component's top level without compiling it: imports, exports (with signatures), core memories."""
    if len(data) > MAX_MODULE_BYTES:
        raise InputError(where, f"component is {len(data)} bytes; the limit is {MAX_MODULE_BYTES}")
    if data[:4] != MAGIC:
        raise InputError(where, "not a WebAssembly component (bad magic number)")
    if data[4:8] != COMPONENT_VERSION:
        raise InputError(where, f"not a component of the supported encoding (header {data[4:8].hex()}, expected "
                                f"{COMPONENT_VERSION.hex()})")
    return _ComponentReader(data, where).read()


def inspect_any(data: bytes, where: str = "module") -> ModuleInfo | ComponentInfo:
    """A core module's or a component's imports and exports, by the header."""
    return inspect_component(data, where) if is_component(data) else inspect(data, where)
