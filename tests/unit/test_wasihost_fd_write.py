"""wasihost's fd_write (agentfactory/wasihost.py): what a guest can do with the one WASI call that writes. fds 1 and 2
go to the invocation's capped outputs, gather-writes keep their order, the cap holds (EFBIG, the rest dropped),
every other fd and a write with no invocation bound are EBADF, and pointers outside memory are EFAULT, never a read
of host memory."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest
import wasmtime

from agentfactory import wasihost

WAT = """(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "w") (param i32 i32 i32 i32) (result i32)
    (call $fd_write (local.get 0) (local.get 1) (local.get 2) (local.get 3))))"""
EBADF, EFAULT, EFBIG, EINVAL = 8, 21, 22, 28


class Guest:
    def __init__(self) -> None:
        engine = wasmtime.Engine()
        linker = wasmtime.Linker(engine)
        wasihost.define_wasi(linker)
        self.store = wasmtime.Store(engine)
        self.store.set_wasi(wasmtime.WasiConfig())
        instance = linker.instantiate(self.store, wasmtime.Module(engine, WAT))
        exports = instance.exports(self.store)
        self.memory, self.write = exports["memory"], exports["w"]
        assert isinstance(self.memory, wasmtime.Memory) and isinstance(self.write, wasmtime.Func)

    def put(self, at: int, data: bytes) -> None:
        self.memory.write(self.store, data, at)

    def iovs(self, at: int, pieces: list[tuple[int, int]]) -> None:
        self.put(at, b"".join(struct.pack("<II", p, n) for p, n in pieces))

    def call(self, fd: int, iovs: int, count: int, nwritten: int = 4000) -> tuple[int, int]:
        code = self.write(self.store, fd, iovs, count, nwritten)
        assert isinstance(code, int)
        return code, struct.unpack("<I", bytes(self.memory.read(self.store, nwritten, nwritten + 4)))[0]


@pytest.fixture
def outputs() -> Iterator[tuple[wasihost.CappedOutput, wasihost.CappedOutput]]:
    out, err = wasihost.CappedOutput(10), wasihost.CappedOutput(10)
    wasihost.bind(wasihost.Deadline(10), (out, err))
    yield out, err
    wasihost.bind(None)


def test_gathered_writes_go_to_their_stream_in_order(outputs: tuple[wasihost.CappedOutput, ...]) -> None:
    out, err = outputs
    guest = Guest()
    guest.put(100, b"hello world")
    guest.iovs(200, [(106, 3), (105, 1), (100, 2), (0, 0)])
    assert guest.call(1, 200, 4) == (0, 6) and out.value() == b"wor he" and not out.overflow
    assert guest.call(2, 200, 1) == (0, 3) and err.value() == b"wor"
    assert guest.call(1, 200, 0) == (0, 0) and out.value() == b"wor he"


def test_the_cap_answers_efbig(outputs: tuple[wasihost.CappedOutput, ...]) -> None:
    out, _ = outputs
    guest = Guest()
    guest.put(100, b"x" * 64)
    guest.iovs(200, [(100, 64)])
    code, _ = guest.call(1, 200, 1)
    assert code == EFBIG and out.value() == b"x" * 10 and out.overflow


@pytest.mark.parametrize(("fd", "iovs", "count", "nwritten", "want"), [
    (0, 200, 1, 4000, EBADF), (3, 200, 1, 4000, EBADF), (0xFFFFFFFF, 200, 1, 4000, EBADF),
    (1, 65532, 1, 4000, EFAULT), (1, 200, 1, 65534, EFAULT), (1, 300, 1, 4000, EFAULT),
    (1, 200, 1025, 4000, EINVAL), (1, 200, 0x7FFFFFFF, 4000, EINVAL),
])
def test_bad_arguments_are_refused(fd: int, iovs: int, count: int, nwritten: int, want: int,
                                   outputs: tuple[wasihost.CappedOutput, ...]) -> None:
    out, err = outputs
    guest = Guest()
    guest.iovs(200, [(100, 4)])
    guest.iovs(300, [(65530, 100)])  # an iovec reaching past the end of memory
    code = guest.write(guest.store, fd, iovs, count, nwritten)
    assert code == want and out.value() == b"" and err.value() == b""


def test_no_invocation_bound_is_ebadf() -> None:
    wasihost.bind(None)
    guest = Guest()
    guest.iovs(200, [(100, 4)])
    assert guest.write(guest.store, 1, 200, 1, 4000) == EBADF


@pytest.fixture
def copied(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every byte a host function copies out of guest memory (wasmtime.Memory.read), call by call."""
    sizes: list[int] = []
    read = wasmtime.Memory.read

    def counting(self: wasmtime.Memory, store: object, start: int | None = None, stop: int | None = None) -> bytearray:
        data = read(self, store, start, stop)  # type: ignore[arg-type]
        sizes.append(len(data))
        return data

    monkeypatch.setattr(wasmtime.Memory, "read", counting)
    return sizes


@pytest.mark.parametrize("room", [0, 3, 10])
def test_overlapping_iovecs_never_copy_more_than_the_output_keeps(
        room: int, copied: list[int], outputs: tuple[wasihost.CappedOutput, ...]) -> None:
    """The class: what a host call copies out of guest memory is bounded by what it keeps, never by what the guest
    asks for. 1,024 iovecs (IOV_MAX) each over the whole 64 KiB memory ask for 64 MiB; at 256 MiB of memory that
    was 256 GiB copied and joined in one call, before the cap was looked at, where no epoch deadline reaches."""
    out, _ = outputs
    guest = Guest()
    out(b"y" * (10 - room))
    table = 56 * 1024  # 8 KiB of iovecs end at the end of memory
    guest.iovs(table, [(0, 65536)] * wasihost.MAX_IOVS)  # the table itself lies inside the ranges
    copied.clear()
    code = guest.write(guest.store, 1, table, wasihost.MAX_IOVS, 4000)
    assert code == EFBIG and out.overflow and out.size == 10
    assert sum(copied) <= 8 * wasihost.MAX_IOVS + room, copied  # the iovec table, and at most the room left
    assert out.value()[10 - room:] == bytes(guest.memory.read(guest.store, 0, room))


def test_a_write_that_fits_is_copied_whole_across_its_iovecs(copied: list[int]) -> None:
    out, err = wasihost.CappedOutput(1 << 20), wasihost.CappedOutput(1 << 20)
    wasihost.bind(wasihost.Deadline(10), (out, err))
    try:
        guest = Guest()
        guest.put(0, bytes(range(256)) * 4)
        guest.iovs(4096, [(0, 1024), (10, 5), (0, 0), (1000, 24)])
        copied.clear()
        assert guest.write(guest.store, 1, 4096, 4, 8000) == 0
        assert sum(copied) == 32 + 1053 and not out.overflow
        assert guest.call(1, 4096, 0) == (0, 0)
        assert out.value() == bytes(range(256)) * 4 + bytes(range(10, 15)) + (bytes(range(256)) * 4)[1000:]
    finally:
        wasihost.bind(None)
