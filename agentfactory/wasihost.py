"""The host side of WASI for agents, shared by the node's sandbox and the pipeline's test stage.

Epoch interruption stops a guest only while it runs wasm code: a host call that blocks (a
`poll_oneoff` clock sleep, an open of a FIFO) would hold a worker past any deadline. So:

- `define_wasi` links wasmtime's WASI and then shadows the calls that can wait: `poll_oneoff`
  (implemented here: fd subscriptions are always ready in an agent's sandbox, clock sleeps are
  clamped to the invocation's remaining deadline, and reaching it traps as a timeout) and
  `clock_time_get` (so absolute monotonic subscriptions and the guest's clock agree);
- `check()` is called by every host tool before it works, so no host call starts past the deadline;
- `blocking_entry` finds FIFOs, sockets and devices under a preopen (an open or read of one blocks,
  or reads forever), so the node refuses such a preopen before the agent runs;
- stdout and stderr are captured in memory by `CappedOutput`, which refuses bytes past the cap as
  they are written (no temporary file grows first); stdin is given as bytes (`stdin_bytes`).
  `fd_write` is implemented here too: it writes fds 1 and 2 to the invocation's outputs on the
  calling thread (wasmtime's own WASI hands each write to background threads and back, which cost a
  trivial invocation a third of its time). Every other fd is read-only in an agent's sandbox (stdin,
  read-only preopens), so a write to it is EBADF, as wasmtime answers.

The deadline (and the outputs) of the invocation running on this thread are bound with `bind` (a
store runs on one thread); a host call made with no deadline bound fails closed, and a write with no
outputs bound is EBADF.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import struct
import threading
import time
from pathlib import Path
from typing import Any, NoReturn

WASI_MODULE = "wasi_snapshot_preview1"
MAX_SUBSCRIPTIONS = 4096
MAX_PREOPEN_ENTRIES = 10_000
# WASI preview1 errno values
_ESUCCESS, _EBADF, _EFAULT, _EFBIG, _EINVAL = 0, 8, 21, 22, 28
MAX_IOVS = 1024  # IOV_MAX
_SUBSCRIPTION = 48
_EVENT = struct.Struct("<QHB5xQH6x")  # userdata, error, type, (pad), nbytes, flags, (pad): 32 bytes
_CLOCK = struct.Struct("<I4xQQH")  # clock id, (pad), timeout, precision, flags: at offset 16
_ABSTIME = 0x1
_REALTIME, _MONOTONIC = 0, 1


class Deadline:
    """The wall-clock deadline of one invocation; `hit` once a host call stopped the guest at it."""

    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds
        self.base_ns = time.monotonic_ns()  # the guest's monotonic clock starts at 0 here
        self.hit = False

    def remaining(self) -> float:
        return self.at - time.monotonic()

    def expire(self) -> NoReturn:
        import wasmtime

        self.hit = True
        raise wasmtime.Trap("deadline exceeded during a host call")


_current = threading.local()
_EXPIRED = Deadline(-1.0)


def bind(deadline: Deadline | None, outputs: tuple[CappedOutput, CappedOutput] | None = None) -> None:
    """Make `deadline` the one host calls on this thread respect, and `outputs` its (stdout, stderr) for
    `fd_write` (None when the invocation ends)."""
    _current.deadline = deadline
    _current.outputs = outputs


def current() -> Deadline:
    deadline: Deadline | None = getattr(_current, "deadline", None)
    return deadline if deadline is not None else _EXPIRED  # no invocation bound: fail closed


def check() -> None:
    """Trap as a timeout when the current invocation's deadline has passed."""
    deadline = current()
    if deadline.remaining() <= 0:
        deadline.expire()


def define_wasi(linker: Any) -> None:
    """wasmtime's WASI, with the calls that can wait replaced by deadline-aware ones."""
    import wasmtime

    i32, i64 = wasmtime.ValType.i32(), wasmtime.ValType.i64()
    linker.define_wasi()
    linker.allow_shadowing = True
    linker.define_func(WASI_MODULE, "poll_oneoff", wasmtime.FuncType([i32] * 4, [i32]), _poll_oneoff,
                       access_caller=True)
    linker.define_func(WASI_MODULE, "clock_time_get", wasmtime.FuncType([i32, i64, i32], [i32]), _clock_time_get,
                       access_caller=True)
    linker.define_func(WASI_MODULE, "fd_write", wasmtime.FuncType([i32] * 4, [i32]), _fd_write, access_caller=True)
    linker.allow_shadowing = False


def _memory(caller: Any) -> Any:
    import wasmtime

    memory = caller.get("memory")
    if not isinstance(memory, wasmtime.Memory):
        raise wasmtime.Trap("WASI needs the module to export its memory as 'memory'")
    return memory


def _now_ns(clock_id: int) -> int | None:
    if clock_id == _REALTIME:
        return time.time_ns()
    if clock_id == _MONOTONIC:
        return time.monotonic_ns() - current().base_ns
    return None


def _clock_time_get(caller: Any, clock_id: int, _precision: int, out: int) -> int:
    check()
    now = _now_ns(clock_id & 0xFFFFFFFF)
    if now is None:
        return _EBADF  # what wasmtime answers for the CPU-time clocks
    memory, out = _memory(caller), out & 0xFFFFFFFF
    if out + 8 > memory.data_len(caller):
        return _EFAULT
    memory.write(caller, struct.pack("<Q", now), out)
    return _ESUCCESS


def _fd_write(caller: Any, fd: int, iovs: int, iovs_len: int, nwritten: int) -> int:
    """fd_write: fds 1 and 2 to the invocation's CappedOutputs (EFBIG past the cap), any other fd EBADF.

    Copies out of guest memory no more than the output still has room for: iovecs may overlap, so what
    they ask for is up to MAX_IOVS times the guest's memory (1,024 x 256 MiB), and only the cap bounds it."""
    outputs: tuple[CappedOutput, CappedOutput] | None = getattr(_current, "outputs", None)
    fd, iovs, iovs_len, nwritten = (v & 0xFFFFFFFF for v in (fd, iovs, iovs_len, nwritten))
    if outputs is None or fd not in (1, 2):
        return _EBADF
    if iovs_len > MAX_IOVS:
        return _EINVAL
    memory = _memory(caller)
    size = memory.data_len(caller)
    if iovs + 8 * iovs_len > size or nwritten + 4 > size:
        return _EFAULT
    raw = memory.read(caller, iovs, iovs + 8 * iovs_len)
    ranges = [struct.unpack_from("<II", raw, 8 * i) for i in range(iovs_len)]
    if any(ptr + length > size for ptr, length in ranges):
        return _EFAULT
    out = outputs[fd - 1]
    asked = sum(length for _, length in ranges)
    left = min(asked, out.room())
    chunks = []
    for ptr, length in ranges:
        if left <= 0:
            break
        take = min(length, left)
        if take:
            chunks.append(memory.read(caller, ptr, ptr + take))
            left -= take
    written = out(b"".join(chunks), asked)
    if written < 0:
        return _EFBIG
    memory.write(caller, struct.pack("<I", written), nwritten)
    return _ESUCCESS


def _poll_oneoff(caller: Any, in_ptr: int, out_ptr: int, count: int, nevents_ptr: int) -> int:
    """poll_oneoff for a sandbox where every fd is ready: fds answer at once, clocks sleep to the deadline."""
    deadline = current()
    check()
    in_ptr, out_ptr, count, nevents_ptr = (v & 0xFFFFFFFF for v in (in_ptr, out_ptr, count, nevents_ptr))
    memory = _memory(caller)
    size = memory.data_len(caller)
    if count == 0 or count > MAX_SUBSCRIPTIONS:
        return _EINVAL
    if in_ptr + count * _SUBSCRIPTION > size or out_ptr + count * _EVENT.size > size or nevents_ptr + 4 > size:
        return _EFAULT
    raw = memory.read(caller, in_ptr, in_ptr + count * _SUBSCRIPTION)
    ready: list[tuple[int, int, int]] = []  # (userdata, error, type)
    clocks: list[tuple[int, int]] = []  # (userdata, nanoseconds to wait)
    for i in range(count):
        base = i * _SUBSCRIPTION
        userdata, tag = struct.unpack_from("<QB", raw, base)
        if tag in (1, 2):  # fd_read, fd_write: stdin is bytes, outputs are in memory, files are regular
            ready.append((userdata, _ESUCCESS, tag))
        elif tag == 0:
            clock_id, timeout, _precision, flags = _CLOCK.unpack_from(raw, base + 16)
            now = _now_ns(clock_id)
            if now is None:
                ready.append((userdata, _EINVAL, 0))
            else:
                clocks.append((userdata, timeout - now if flags & _ABSTIME else timeout))
        else:
            return _EINVAL
    if not ready:
        wait = max(0, min(ns for _, ns in clocks))
        if wait / 1e9 >= deadline.remaining():
            time.sleep(max(0.0, deadline.remaining()))
            deadline.expire()
        time.sleep(wait / 1e9)
        ready = [(userdata, _ESUCCESS, 0) for userdata, ns in clocks if ns <= wait]
    else:
        ready += [(userdata, _ESUCCESS, 0) for userdata, ns in clocks if ns <= 0]
    events = b"".join(_EVENT.pack(userdata, error, kind, 0, 0) for userdata, error, kind in ready)
    memory.write(caller, events, out_ptr)
    memory.write(caller, struct.pack("<I", len(ready)), nevents_ptr)
    check()
    return _ESUCCESS


def blocking_entry(root: Path, limit: int = MAX_PREOPEN_ENTRIES) -> str | None:
    """The first entry under `root` that could block a reader (FIFO, socket, device), or None.

    Symbolic links are judged by what they point to. A tree of more than `limit` entries is
    refused too: it cannot be checked cheaply, so it cannot be granted.
    """
    seen = 0
    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            entries = list(os.scandir(folder))
        except OSError as exc:
            return f"{folder}: cannot be listed ({exc.strerror})"
        for entry in entries:
            seen += 1
            if seen > limit:
                return f"{root}: more than {limit} entries; the node checks every entry a preopen grants"
            try:
                mode = os.stat(entry.path).st_mode if entry.is_symlink() else entry.stat(follow_symlinks=False).st_mode
            except FileNotFoundError:
                continue  # a dangling link: opening it fails, it cannot block
            except OSError as exc:
                return f"{entry.path}: cannot be checked ({exc.strerror})"
            if stat.S_ISDIR(mode):
                if not entry.is_symlink():
                    stack.append(Path(entry.path))
            elif not stat.S_ISREG(mode):
                return f"{entry.path} is a {_kind(mode)}: opening or reading it can block past any deadline"
    return None


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "FIFO"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"),
                       (stat.S_ISBLK, "block device")):
        if test(mode):
            return name
    return "special file"


class CappedOutput:
    """A WASI output stream kept in memory up to `cap` bytes; writes beyond fail with EFBIG."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.parts: list[bytes] = []
        self.size = 0
        self.overflow = False

    def room(self) -> int:
        """Bytes this output still keeps: a writer copies no more than this out of guest memory."""
        return max(self.cap - self.size, 0)

    def __call__(self, data: bytes, asked: int | None = None) -> int:
        """Keep `data`, a write of `asked` bytes (default len(data)) of which `data` may be only the first
        room() bytes; a write past the cap keeps what fits, marks the overflow and answers -EFBIG."""
        room = self.cap - self.size
        if max(len(data), asked or 0) > room:
            self.overflow = True
            if room > 0:
                self.parts.append(data[:room])
                self.size = self.cap
            return -errno.EFBIG
        self.parts.append(data)
        self.size += len(data)
        return len(data)

    def value(self) -> bytes:
        return b"".join(self.parts)


def stdin_bytes(wasi: Any, data: bytes) -> None:
    """Give the guest `data` as stdin without a temporary file (the C API copies it)."""
    from wasmtime import _ffi as ffi

    vec = ffi.wasm_byte_vec_t()
    buf = (ctypes.c_uint8 * len(data)).from_buffer_copy(data) if data else (ctypes.c_uint8 * 1)()
    ffi.wasm_byte_vec_new(ctypes.byref(vec), len(data), buf)
    ffi.wasi_config_set_stdin_bytes(wasi.ptr(), ctypes.byref(vec))
