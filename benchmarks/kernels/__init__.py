"""Compute kernels in plain C11, built both for wasm32-wasi and natively, to compare WASI against native."""
