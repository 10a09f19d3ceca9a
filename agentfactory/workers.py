"""Several server processes behind one listening socket, with the connections shared out evenly.

A webhook whose decisions are CPU-bound (the policy evaluation holds the interpreter) uses one core per
process. Letting N processes accept on one shared socket does not share the load: the kernel hands each
connection to whichever process accepts first, and the API server's few long-lived keep-alive connections
then split 3:1 as often as 2:2. So the parent (`Supervisor`) accepts every connection itself and hands it to
the worker holding the fewest open ones (SCM_RIGHTS over a SOCK_SEQPACKET socketpair); the worker tells it
when each one closes. Only the accept goes through the parent: the TLS handshake, the requests and the
answers are the worker's, on its own socket.

The channel between the parent and a worker carries one message per event:

- parent → worker: `c` with one descriptor, an accepted connection to serve;
- worker → parent: `r` + a JSON object once it serves (what it would print as its `listening` line), then
  one `x` per connection it finished with (however it ended: a failed handshake counts too).

A worker that exits is replaced; one that exits before it ever served stops the supervisor with its exit
status, as does any worker exiting while the supervisor starts (a bad configuration is reported once, with
the status a single process would give). A worker whose parent is gone (end of file on the channel) stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import selectors
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

READY, CONNECTION, CLOSED = b"r", b"c", b"x"
NOISY_EVERY_S = 1.0  # at most one line per second for what clients can cause again and again
STOP_GRACE_S = 30.0  # after SIGTERM, how long a worker may take to finish its requests before SIGKILL


class WorkerFailed(Exception):
    """A worker exited before it served (or while the supervisor started): `status` is its exit status."""

    def __init__(self, slot: int, pid: int, status: int) -> None:
        super().__init__(f"worker {slot} (pid {pid}) exited with status {status} before it served")
        self.slot, self.pid, self.status = slot, pid, status


@dataclass
class _Worker:
    slot: int
    process: subprocess.Popen[bytes]
    channel: socket.socket
    ready: bool = False
    info: dict[str, Any] = field(default_factory=dict)
    open: int = 0  # connections handed to it and not yet reported finished
    handed: int = 0


class Supervisor:
    """Start `count` workers (`command(slot, fd)` is worker `slot`'s argv; `fd` its end of the channel), wait
    until each serves, then accept on `listener` and hand each connection to the least busy worker until
    `stop()`."""

    def __init__(self, listener: socket.socket, count: int, command: Callable[[int, int], list[str]],
                 env: Mapping[str, str] | None = None, log: Callable[[dict[str, Any]], None] | None = None) -> None:
        if count < 1:
            raise ValueError("at least one worker")
        self.listener = listener
        self.count = count
        self.command = command
        self.env = dict(env) if env is not None else None
        self.log = log or (lambda _doc: None)
        self.workers: list[_Worker] = []
        self._selector = selectors.DefaultSelector()
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_write, False)
        self._stopping = False
        self._accepting = False
        self._noise: dict[str, tuple[float, int]] = {}  # kind -> (when last logged, how many since not logged)

    # -- from other threads ------------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the supervisor to stop its workers and return (safe from any thread or a signal's watcher)."""
        self._stopping = True
        with contextlib.suppress(BlockingIOError, OSError):
            os.write(self._wake_write, b"\0")

    # -- the parent's loop ---------------------------------------------------------------------------------
    def start(self) -> list[dict[str, Any]]:
        """Start every worker and wait until each serves; their ready documents, in slot order. Raises
        WorkerFailed (after stopping the others) when one exits first."""
        self.listener.setblocking(False)
        self.listener.listen(2048)
        self._selector.register(self._wake_read, selectors.EVENT_READ, None)
        for slot in range(self.count):
            self.workers.append(self._spawn(slot))
        try:
            while not self._stopping and not all(w.ready for w in self.workers):
                self._step(starting=True)
        except WorkerFailed:
            self.shutdown()
            raise
        return [w.info for w in self.workers]

    def serve(self) -> None:
        """Hand out connections until `stop()`; then stop the workers."""
        try:
            while not self._stopping:
                self._step(starting=False)
        finally:
            self.shutdown()

    def _spawn(self, slot: int) -> _Worker:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            process = subprocess.Popen(self.command(slot, child.fileno()), pass_fds=(child.fileno(),),
                                       env=self.env, stdin=subprocess.DEVNULL)
        finally:
            child.close()
        parent.setblocking(False)
        worker = _Worker(slot, process, parent)
        self._selector.register(parent, selectors.EVENT_READ, worker)
        return worker

    def _step(self, *, starting: bool) -> None:
        self._listen(any(w.ready for w in self.workers) and not starting)
        for key, _events in self._selector.select():
            if key.fileobj == self._wake_read:
                with contextlib.suppress(BlockingIOError):
                    os.read(self._wake_read, 512)
            elif key.fileobj is self.listener:
                self._accept()
            else:
                self._read(key.data, starting=starting)

    def _listen(self, on: bool) -> None:
        """Accept only while a worker can take the connection (else they wait in the kernel's backlog)."""
        if on != self._accepting:
            if on:
                self._selector.register(self.listener, selectors.EVENT_READ, None)
            else:
                self._selector.unregister(self.listener)
            self._accepting = on

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # EMFILE and the like: the connection stays queued; say so and go on
                self._noisy("accept failed", {"accept": "failed", "error": exc.strerror or str(exc)})
                time.sleep(0.01)
                return
            with conn:
                self._hand(conn)

    def _hand(self, conn: socket.socket) -> None:
        for worker in sorted((w for w in self.workers if w.ready), key=lambda w: (w.open, w.handed)):
            try:
                socket.send_fds(worker.channel, [CONNECTION], [conn.fileno()])
            except OSError:  # its channel is full or gone (it is exiting): the next worker takes it
                continue
            worker.open += 1
            worker.handed += 1
            return
        self._noisy("dropped", {"connection": "dropped", "why": "no worker could take it"})

    def _noisy(self, kind: str, doc: dict[str, Any]) -> None:
        """Log what a client can cause over and over (a connection flood, descriptors run out) at most once per
        NOISY_EVERY_S per kind, with how many were not logged since: never a line per connection."""
        now = time.monotonic()
        last, quiet = self._noise.get(kind, (-NOISY_EVERY_S, 0))
        if now - last < NOISY_EVERY_S:
            self._noise[kind] = (last, quiet + 1)
            return
        self._noise[kind] = (now, 0)
        self.log({**doc, "notLogged": quiet} if quiet else doc)

    def _read(self, worker: _Worker, *, starting: bool) -> None:
        try:
            message = worker.channel.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            message = b""
        if not message:
            self._lost(worker, starting=starting)
        elif message[:1] == READY:
            worker.info = _ready_info(message[1:])
            worker.info["pid"] = worker.process.pid
            worker.ready = True
            worker.open = 0
            if not starting:
                self.log({"worker": worker.slot, "pid": worker.process.pid, "serving": True})
        elif message[:1] == CLOSED:
            worker.open = max(0, worker.open - len(message))

    def _lost(self, worker: _Worker, *, starting: bool) -> None:
        """A worker's channel closed: it exited. Replace it, unless it never served or we are starting."""
        self._selector.unregister(worker.channel)
        worker.channel.close()
        status = _status(worker.process.wait())
        if self._stopping:
            return
        if starting or not worker.ready:
            raise WorkerFailed(worker.slot, worker.process.pid, status)
        self.log({"worker": worker.slot, "pid": worker.process.pid, "exited": status, "replacing": True})
        self.workers[self.workers.index(worker)] = self._spawn(worker.slot)

    def shutdown(self) -> None:
        """SIGTERM every worker, wait up to STOP_GRACE_S for them to finish, SIGKILL what is left."""
        self._stopping = True
        if self._accepting:
            self._selector.unregister(self.listener)
            self._accepting = False
        with contextlib.suppress(OSError):
            self.listener.close()
        for worker in self.workers:
            if worker.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    worker.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_S
        for worker in self.workers:
            try:
                worker.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()
            with contextlib.suppress(OSError, KeyError, ValueError):
                self._selector.unregister(worker.channel)
            worker.channel.close()


def _status(returncode: int) -> int:
    """An exit status as a shell reports it (128 + signal for a worker killed by one)."""
    return 128 - returncode if returncode < 0 else returncode


def _ready_info(payload: bytes) -> dict[str, Any]:
    try:
        info = json.loads(payload) if payload else {}
    except ValueError:
        return {}
    return info if isinstance(info, dict) else {}


# -- the worker's side -----------------------------------------------------------------------------------------
def run_handed(server: Any, channel: socket.socket, info: Mapping[str, Any]) -> None:
    """`serve_handed` on the event loop uvicorn would pick for `server` (uvloop when installed): the plain asyncio
    loop costs a cached review about 1.8 times the CPU (TLS and the socket calls in Python)."""
    with asyncio.Runner(loop_factory=server.config.get_loop_factory()) as runner:
        runner.run(serve_handed(server, channel, info))


async def serve_handed(server: Any, channel: socket.socket, info: Mapping[str, Any]) -> None:
    """Run the uvicorn `server` on the connections the supervisor hands over `channel` (it listens on no
    socket of its own); report `info` once it serves, and each connection when it is finished with."""
    loop = asyncio.get_running_loop()
    serving = asyncio.ensure_future(server.serve(sockets=[]))
    while not server.started and not serving.done():
        await asyncio.sleep(0.005)
    if serving.done():
        await serving
        return
    config = server.config
    context: ssl.SSLContext | None = config.ssl
    channel.setblocking(False)
    unsent = 0

    def finished() -> None:
        nonlocal unsent
        unsent += 1
        try:
            channel.send(CLOSED * unsent)
            unsent = 0
        except BlockingIOError:  # the parent is busy: sent with the next one
            pass
        except OSError:
            server.should_exit = True

    base = config.http_protocol_class

    def connection_lost(self: Any, exc: Exception | None) -> None:
        try:
            base.connection_lost(self, exc)
        finally:
            finished()

    reported = type("Reported" + base.__name__, (base,), {"connection_lost": connection_lost})

    def protocol() -> asyncio.Protocol:
        made: asyncio.Protocol = reported(config=config, server_state=server.server_state,
                                          app_state=server.lifespan.state)
        return made

    async def adopt(conn: socket.socket) -> None:
        try:  # after a handshake the protocol reports the end; a failed handshake never reaches it
            await loop.connect_accepted_socket(protocol, conn, ssl=context)
        except (OSError, ssl.SSLError, asyncio.CancelledError, ConnectionError, TimeoutError):
            conn.close()
            finished()

    tasks: set[asyncio.Task[None]] = set()

    def readable() -> None:
        while True:
            try:
                message, fds, _flags, _addr = socket.recv_fds(channel, 16, 4)
            except BlockingIOError:
                return
            except OSError:
                message, fds = b"", []
            if not message and not fds:  # the supervisor is gone: stop serving
                loop.remove_reader(channel)
                server.should_exit = True
                return
            for fd in fds:
                conn = socket.socket(fileno=fd)
                conn.setblocking(False)
                task = loop.create_task(adopt(conn))
                tasks.add(task)
                task.add_done_callback(tasks.discard)

    channel.send(READY + json.dumps(dict(info)).encode())
    loop.add_reader(channel, readable)
    try:
        await serving
    finally:
        with contextlib.suppress(Exception):
            loop.remove_reader(channel)


def worker_command(args: Sequence[str]) -> list[str]:
    """The argv that runs `agentfactory ARGS...` with this interpreter (the console script may not be on PATH)."""
    return [sys.executable, "-c", "from agentfactory.cli import main; main()", *args]


__all__ = ["Supervisor", "WorkerFailed", "run_handed", "serve_handed", "worker_command"]
