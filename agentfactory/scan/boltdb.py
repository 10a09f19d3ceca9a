"""A write-once bbolt (etcd-io/bbolt, format version 2) file: nested buckets of keys and values.

Why: Trivy's vulnerability database is a bbolt file, and the only way to hand Trivy a database
offline is to write that file. Nothing on PyPI writes bbolt, and the format is small: two meta
pages (FNV-1a checksummed), a freelist page, then B+tree pages. This writer builds the whole file
in one pass from a finished tree, the way a compaction would: a small bucket without sub-buckets
is stored inline in its parent (as bbolt does up to a quarter page), others get their own pages;
leaves are filled up to a page and a single large entry spills into overflow pages, as bbolt
allows. It only writes; Trivy (bbolt v1.5.0, read-only) is the reader the tests run against it.

Layout (little-endian, as bbolt writes on amd64/arm64): page header = id u64, flags u16, count u16,
overflow u32; leaf element = flags u32, pos u32, ksize u32, vsize u32; branch element = pos u32,
ksize u32, pgid u64; `pos` counts from the element to its key. A bucket's value is its header
(root pgid u64, sequence u64) with the bucket flag on the element.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar, Union

MAGIC = 0xED0CDAED
VERSION = 2  # bbolt's file format version (common.Version), not Trivy's schema
PAGE_SIZE = 4096
_HEADER = 16
_ELEMENT = 16
_BRANCH, _LEAF, _META, _FREELIST = 0x01, 0x02, 0x04, 0x10
_BUCKET_FLAG = 0x01
_MAX_KEY = 32768  # bbolt's MaxKeySize
_MAX_VALUE = (1 << 31) - 2  # bbolt's MaxValueSize
_MAX_INLINE = PAGE_SIZE // 4  # bbolt's maxInlineBucketSize

# A bucket: key -> value bytes, or key -> nested bucket.
Tree = Mapping[bytes, Union[bytes, "Tree"]]
_T = TypeVar("_T")


def _fnv1a64(data: bytes) -> int:
    h = 0xCBF29CE484222325
    for byte in data:
        h = ((h ^ byte) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


class _Writer:
    """Appends pages after the two meta pages and the freelist page; page ids are file offsets / PAGE_SIZE."""

    def __init__(self) -> None:
        self.pages: list[bytes] = []  # data pages, the first at pgid 3
        self.next_id = 3

    def _page(self, flags: int, count: int, body: bytes) -> int:
        pgid = self.next_id
        size = _HEADER + len(body)
        npages = -(-size // PAGE_SIZE)
        header = struct.pack("<QHHI", pgid, flags, count, npages - 1)
        self.pages.append((header + body).ljust(npages * PAGE_SIZE, b"\0"))
        self.next_id += npages
        return pgid

    def leaf(self, items: list[tuple[bytes, bytes, int]]) -> int:
        return self._page(_LEAF, len(items), _leaf_body(items))

    def branch(self, children: list[tuple[bytes, int]]) -> int:
        elements, data = bytearray(), bytearray()
        n = len(children)
        for i, (key, pgid) in enumerate(children):
            pos = _ELEMENT * n + len(data) - _ELEMENT * i
            elements += struct.pack("<IIQ", pos, len(key), pgid)
            data += key
        return self._page(_BRANCH, n, bytes(elements + data))

    def items(self, tree: Tree, where: str) -> list[tuple[bytes, bytes, int]]:
        """One bucket's sorted (key, value, flags) entries; nested buckets are written first."""
        items: list[tuple[bytes, bytes, int]] = []
        for key in sorted(tree):
            if not isinstance(key, bytes) or not 0 < len(key) <= _MAX_KEY:
                raise ValueError(f"{where}: a key must be 1 to {_MAX_KEY} bytes, got {key!r:.80}")
            value = tree[key]
            if isinstance(value, bytes):
                if len(value) > _MAX_VALUE:
                    raise ValueError(f"{where}/{key!r:.80}: value of {len(value)} bytes is over bbolt's limit")
                items.append((key, value, 0))
            else:
                items.append((key, self._bucket_value(value, f"{where}/{key.decode('utf-8', 'replace')}"),
                              _BUCKET_FLAG))
        return items

    def _bucket_value(self, tree: Tree, where: str) -> bytes:
        """A nested bucket's value: inline (root 0, its one leaf page after the header) when bbolt would
        inline it (no sub-buckets, at most a quarter page), else the header pointing at its own pages."""
        items = self.items(tree, where)
        size = _HEADER + sum(_ELEMENT + len(k) + len(v) for k, v, _ in items)
        if size <= _MAX_INLINE and not any(flags & _BUCKET_FLAG for _, _, flags in items):
            return struct.pack("<QQ", 0, 0) + struct.pack("<QHHI", 0, _LEAF, len(items), 0) + _leaf_body(items)
        return struct.pack("<QQ", self.tree(items), 0)

    def tree(self, items: list[tuple[bytes, bytes, int]]) -> int:
        """Leaves filled up to a page (at least one entry each), then branch levels up to one root."""
        if not items:
            return self.leaf([])
        level: list[tuple[bytes, int]] = []
        for chunk in _chunks(items, lambda it: _ELEMENT + len(it[0]) + len(it[1])):
            level.append((chunk[0][0], self.leaf(chunk)))
        while len(level) > 1:
            level = [(chunk[0][0], self.branch(chunk))
                     for chunk in _chunks(level, lambda child: _ELEMENT + len(child[0]))]
        return level[0][1]


def _leaf_body(items: list[tuple[bytes, bytes, int]]) -> bytes:
    """Leaf elements then their keys and values; `pos` is from each element to its key."""
    elements, data = bytearray(), bytearray()
    n = len(items)
    for i, (key, value, flags) in enumerate(items):
        pos = _ELEMENT * n + len(data) - _ELEMENT * i
        elements += struct.pack("<IIII", flags, pos, len(key), len(value))
        data += key + value
    return bytes(elements + data)


def _chunks(items: list[_T], size_of: Callable[[_T], int]) -> list[list[_T]]:
    """Consecutive runs of `items` that fit one page each (a run holds at least one item)."""
    out: list[list[_T]] = [[]]
    used = _HEADER
    for item in items:
        size = size_of(item)
        if out[-1] and (used + size > PAGE_SIZE or len(out[-1]) == 0xFFFF):
            out.append([])
            used = _HEADER
        out[-1].append(item)
        used += size
    return out


def _meta(pgid: int, root: int, high_water: int, txid: int) -> bytes:
    body = struct.pack("<IIIIQQQQQ", MAGIC, VERSION, PAGE_SIZE, 0, root, 0, 2, high_water, txid)
    body += struct.pack("<Q", _fnv1a64(body))
    return (struct.pack("<QHHI", pgid, _META, 0, 0) + body).ljust(PAGE_SIZE, b"\0")


def write_bolt(path: Path, tree: Tree) -> int:
    """Write `tree` (top-level buckets; every top-level value must be a bucket) as a bbolt file; its size.

    Written to a temporary name and renamed, so a reader never opens half a file.
    """
    for key, value in tree.items():
        if isinstance(value, bytes):
            raise ValueError(f"top-level key {key!r:.80} must be a bucket: bbolt's root holds only buckets")
    writer = _Writer()
    root = writer.tree(writer.items(tree, ""))
    freelist = struct.pack("<QHHI", 2, _FREELIST, 0, 0).ljust(PAGE_SIZE, b"\0")
    blob = b"".join([_meta(0, root, writer.next_id, 0), _meta(1, root, writer.next_id, 1), freelist, *writer.pages])
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(blob)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return len(blob)
