"""Small WebAssembly components written in the component text format, for the tests of component agents.

A real Python agent takes ~40 s to build with componentize-py and ~12 s of CPU to compile; these take
milliseconds and do one thing each: echo their input, return an error, loop, grow memory, return a big
output, call the `log` tool, or import and export what an attack needs. They are assembled with
wasmtime's own `wat2wasm`, which reads the component model's text format.
"""

from __future__ import annotations

import wasmtime

TOOLS = "agentfactory:agent/tools@0.1.0"
RUN_TYPE = '(func (param "input" string) (result (result string (error string))))'
LOG = '(export "log" (func (param "msg" string)))'
NOW_MS = '(export "now-ms" (func (result u64)))'

# What `run` does, as the body of a core function (param $ptr i32) (param $len i32) (result i32) that returns
# the address of a result<string, string> in memory: tag byte at 16, string pointer at 20, length at 24.
ECHO = """
      (i32.store8 (i32.const 16) (i32.const 0))
      (i32.store (i32.const 20) (local.get $ptr))
      (i32.store (i32.const 24) (local.get $len))
      (i32.const 16)"""
ERR = """
      (i32.store8 (i32.const 16) (i32.const 1))
      (i32.store (i32.const 20) (local.get $ptr))
      (i32.store (i32.const 24) (local.get $len))
      (i32.const 16)"""
LOOP = """
      (loop $spin (br $spin))
      (i32.const 16)"""
# Grow memory a page at a time until it fails, then answer how many 64 KiB pages it has, as decimal text.
GROW = """
      (local $pages i32) (local $n i32) (local $at i32)
      (block $full (loop $more
        (br_if $full (i32.eq (memory.grow (i32.const 1)) (i32.const -1)))
        (br $more)))
      (local.set $n (memory.size))
      (local.set $at (i32.const 4000))
      (loop $digits
        (local.set $at (i32.sub (local.get $at) (i32.const 1)))
        (i32.store8 (local.get $at) (i32.add (i32.const 48) (i32.rem_u (local.get $n) (i32.const 10))))
        (local.set $n (i32.div_u (local.get $n) (i32.const 10)))
        (br_if $digits (local.get $n)))
      (i32.store8 (i32.const 16) (i32.const 0))
      (i32.store (i32.const 20) (local.get $at))
      (i32.store (i32.const 24) (i32.sub (i32.const 4000) (local.get $at)))
      (i32.const 16)"""


def big(n: int) -> str:
    """`run` answering ok with `n` bytes of 'x'."""
    return f"""
      (memory.fill (i32.const 65536) (i32.const 120) (i32.const {n}))
      (i32.store8 (i32.const 16) (i32.const 0))
      (i32.store (i32.const 20) (i32.const 65536))
      (i32.store (i32.const 24) (i32.const {n}))
      (i32.const 16)"""


def log_then(body: str) -> str:
    """Call `log(input)` first, then `body`."""
    return "\n      (call $log (local.get $ptr) (local.get $len))" + body


def component(body: str = ECHO, *, imports: str = f'(import "{TOOLS}" (instance $tools {LOG}))',
              uses_log: bool = False, run_type: str = RUN_TYPE, export: str = "run", pages: int = 2,
              max_pages: int | None = None) -> bytes:
    """A component whose `run` (exported as `export`, of type `run_type`) does `body`.

    `imports` are its top-level imports (by default the world's tools interface with `log`); `uses_log`
    makes its core module import the lowered `log` (which must then be among the imports).
    """
    limit = f" {max_pages}" if max_pages is not None else ""
    log_import = '(import "tools" "log" (func $log (param i32 i32)))' if uses_log else ""
    lowered = '(core func $log (canon lower (func $tools "log") (memory (core memory $mem "memory"))))' \
        if uses_log else ""
    with_tools = '(with "tools" (instance (export "log" (func $log))))' if uses_log else ""
    text = f"""(component
  {imports}
  (core module $Mem
    (memory (export "memory") {pages}{limit})
    (global $bump (mut i32) (i32.const 8192))
    (func (export "realloc") (param i32 i32 i32 i32) (result i32)
      (local $p i32)
      (local.set $p (global.get $bump))
      (global.set $bump (i32.add (global.get $bump) (local.get 3)))
      (local.get $p)))
  (core instance $mem (instantiate $Mem))
  {lowered}
  (core module $Main
    (import "mem" "memory" (memory {pages}{limit}))
    {log_import}
    (func (export "run") (param $ptr i32) (param $len i32) (result i32) {body}))
  (core instance $main (instantiate $Main (with "mem" (instance $mem)) {with_tools}))
  (func $run {run_type[len("(func "):-1]}
    (canon lift (core func $main "run") (memory (core memory $mem "memory"))
      (realloc (core func $mem "realloc"))))
  (export "{export}" (func $run)))
"""
    return bytes(wasmtime.wat2wasm(text))


def manifest(name: str, *, tools: str = "[log.write]", memory_mib: int = 2, timeout_ms: int = 1000,
             output_kib: int = 64, entrypoint: str = "run") -> str:
    """A run contract for a component signed with runtime_helpers.sign_raw (a WAT template's manifest: the
    contract, not the build, is what matters there)."""
    return f"""apiVersion: agentfactory.dev/v1alpha1
kind: AgentTemplate
metadata:
  name: {name}
  version: 1.0.0
  description: A component test agent.
  owners: ["@example/team"]
spec:
  language: wat
  sources: [src/main.wat]
  entrypoint: {entrypoint}
  tools: {tools}
  limits:
    memoryMiB: {memory_mib}
    timeoutMs: {timeout_ms}
    maxOutputKiB: {output_kib}
  tests:
    none: "a test agent: the test suite runs it"
"""


def python_manifest(name: str, *, tools: str = "[log.write]", sources: str = "[src/agent.py]",
                    python: str = "{module: agent}", memory_mib: int = 64, extra: str = "") -> str:
    """A Python template's agent.yaml (for pipeline runs of Python agents)."""
    return f"""apiVersion: agentfactory.dev/v1alpha1
kind: AgentTemplate
metadata:
  name: {name}
  version: 1.0.0
  description: A Python test agent.
  owners: ["@example/team"]
spec:
  language: python
  sources: {sources}
  python: {python}
  tools: {tools}
  limits:
    memoryMiB: {memory_mib}
    timeoutMs: 2000
{extra}  tests:
    none: "a test agent: the test suite runs it"
"""
