"""The node runtime (wasmtime): verify before run, sandbox, invoke API; filled by the runtime issue."""
