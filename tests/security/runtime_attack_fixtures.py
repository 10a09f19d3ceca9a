"""Agents and clients for the attacks on the node's HTTP service (tests/security/test_attack_runtime_*.py).

The agents are signed by the real pipeline into a real store; the server is the real
`agentfactory runtime serve` in its own process, on loopback, with its limits scaled down through
`AGENTFACTORY_RUNTIME_*` so that each attack runs in seconds.
"""

from __future__ import annotations

import http.client
import time
from pathlib import Path

from runtime_helpers import OK_WAT, Signed, publish, signed_store, wat_manifest

# stdin to stdout, 64 KiB at a time, in 128 KiB of linear memory.
CAT_WAT = """(module
  (import "wasi_snapshot_preview1" "fd_read" (func $fd_read (param i32 i32 i32 i32) (result i32)))
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (func (export "_start") (local $n i32)
    (loop $again
      (i32.store (i32.const 0) (i32.const 1024))
      (i32.store (i32.const 4) (i32.const 65536))
      (if (call $fd_read (i32.const 0) (i32.const 0) (i32.const 1) (i32.const 16)) (then (return)))
      (local.set $n (i32.load (i32.const 16)))
      (if (i32.eqz (local.get $n)) (then (return)))
      (i32.store (i32.const 0) (i32.const 1024))
      (i32.store (i32.const 4) (local.get $n))
      (if (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 16)) (then (return)))
      (br $again))))
"""

# Control bytes (0x01) to stdout until the output cap refuses a write, then a trap: a 422 whose JSON
# carried each byte as six (\\u0001) before the fix.
SPEW_WAT = """(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  (func (export "_start")
    (memory.fill (i32.const 1024) (i32.const 1) (i32.const 65536))
    (loop $again
      (i32.store (i32.const 0) (i32.const 1024))
      (i32.store (i32.const 4) (i32.const 65536))
      (if (call $fd_write (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 16)) (then (unreachable)))
      (br $again))))
"""

SPIN_WAT = '(module (memory (export "memory") 1) (func (export "_start") (loop $l (br $l))))'


def agents(home: Path, root: Path, **extra: tuple[str, dict[str, str]]) -> Signed:
    """A signed store with `ok`, `cat` (16 MiB output cap) and whatever else is given."""
    signed = signed_store(home)
    publish(signed, root, {
        "ok": (wat_manifest("ok"), {"src/main.wat": OK_WAT}),
        "cat": (wat_manifest("cat", output_kib=16384, timeout_ms=5000), {"src/main.wat": CAT_WAT}),
        **extra,
    })
    return signed


def get(port: int, path: str, *, source: str = "127.0.0.1", timeout: float = 5.0) -> tuple[int, bytes, float]:
    """(status, body, seconds) of one GET on a fresh connection."""
    started = time.monotonic()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout, source_address=(source, 0))
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read(), time.monotonic() - started
    finally:
        conn.close()


def post(port: int, path: str, body: bytes = b"", *, headers: dict[str, str] | None = None,
         source: str = "127.0.0.1", timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one POST on a fresh connection."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout, source_address=(source, 0))
    try:
        conn.request("POST", path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read()
    finally:
        conn.close()


def metric(port: int, name: str) -> float:
    """One sample from /metrics, e.g. 'agent_factory_runtime_memory_budget_bytes{state="used"}'."""
    _, body, _ = get(port, "/metrics")
    for line in body.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"no {name} in /metrics")
