"""`agentfactory run` and `agentfactory runtime serve|audit`: the node runtime from the command line.

`run` exit codes: the agent's own exit code when it ran to completion; 124 when the sandbox
stopped it (deadline, memory, stack, output, fuel, trap); 125 when it was refused before running
(verification, policy, run contract, unknown agent); 2 usage or input error; 70 internal error.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click
from rich.markup import escape

from agentfactory.cli.common import (
    EXIT_OK,
    EXIT_PROBLEMS,
    err,
    handle_errors,
    json_option,
    out,
    policies_option,
    print_json,
    store_option,
)
from agentfactory.cli.verify_cmd import default_policy, entry_stage_option, policy_option, provider_option
from agentfactory.errors import InputError
from agentfactory.policy_select import open_engine, policy_engine_options
from agentfactory.stages import check_stage
from agentfactory.store import open_store, split_reference
from agentfactory.trust import TrustPolicy, load_trust_policy

from .http_node import http_node_options, node_from_context, settings_from_context

EXIT_STOPPED, EXIT_REFUSED = 124, 125


def _runtime_options(func: Any) -> Any:
    options: list[Any] = [
        policy_option, provider_option, policies_option, policy_engine_options, store_option,
        click.option("--stage", default="dev", show_default=True, envvar="AGENTFACTORY_STAGE",
                     help="Stage this node runs: its artifact policy, and only agents promoted to it (a bare name "
                          "is the version promoted here)."),
        entry_stage_option,
        click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                     envvar="AGENTFACTORY_RUNTIME_CACHE", help="On-disk compiled-module cache (HMAC-authenticated)."),
        click.option("--node-key", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     envvar="AGENTFACTORY_NODE_KEY", help="HMAC key for the cache (default: CACHE_DIR/node.key)."),
        click.option("--audit-log", type=click.Path(dir_okay=False, allow_dash=True, path_type=Path), default=None,
                     envvar="AGENTFACTORY_AUDIT_LOG",
                     help="Append-only JSON Lines audit trail ('-': standard output)."),
        click.option("--allow-host-path", "host_roots", multiple=True,
                     type=click.Path(file_okay=False, path_type=Path),
                     help="Host folder agents may preopen read-only (repeatable; default: none)."),
        http_node_options,
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _trust(policy_path: Path | None, provider: str | None) -> TrustPolicy:
    return load_trust_policy(policy_path) if policy_path else default_policy(provider)


def _node_config() -> dict[str, Any]:
    """This node's own ceilings for the policies (A5, T12), so that a node run with other
    AGENTFACTORY_RUNTIME_* limits judges by them, not by the defaults in policies/data.json."""
    from .server import INVOCATION_OVERHEAD, TOOL_LOG_BYTES
    from .server_limits import ServerLimits

    limits = ServerLimits.from_env()
    return {"node": {"max_output_kib": limits.max_output_kib, "memory_budget_mib": limits.memory_budget_mib,
                     "invocation_overhead_kib": (TOOL_LOG_BYTES + INVOCATION_OVERHEAD) // 1024,
                     "default_output_kib": 1024,
                     "http": settings_from_context().policy_config()}}  # http.rego: this node's http.fetch


def _open_runtime(store_url: str | None, policy_path: Path | None, provider: str | None, policies_dir: Path | None,
                  stage: str, cache_dir: Path | None, node_key: Path | None, audit_log: Path | None,
                  host_roots: tuple[Path, ...], entry_stage: str, background_compile: bool = False,
                  cpu: Any = None) -> Any:
    from .runtime import Runtime, RuntimeConfig

    roots = tuple(p.resolve() for p in host_roots)
    config = RuntimeConfig(stage=stage, cache_dir=cache_dir, node_key=node_key, host_roots=roots,
                           audit_log=audit_log, entry_stage=entry_stage, background_compile=background_compile,
                           http=node_from_context(), cpu=cpu)
    engine = open_engine(policies_dir, config=_node_config())
    check_stage(stage, engine)  # a typo'd stage is exit 2 with the closest name, not a node that refuses all
    check_stage(entry_stage, engine, option="--entry-stage")
    return Runtime(open_store(store_url, existing=True), _trust(policy_path, provider), engine, config)


@click.command("run")
@click.argument("ref")
@click.option("--stdin", "stdin_path", type=click.Path(dir_okay=False, allow_dash=True), default=None,
              help="File to give the agent as stdin ('-' for this process's stdin; default: empty).")
@click.option("--arg", "args", multiple=True, help="An argument for the agent (repeatable, in order).")
@click.option("--env", "env_pairs", multiple=True, metavar="NAME=VALUE",
              help="An environment variable for the agent; NAME must be on its allowlist (repeatable).")
@_runtime_options
@json_option
@handle_errors
def run(ref: str, stdin_path: str | None, args: tuple[str, ...], env_pairs: tuple[str, ...], as_json: bool,
        store_url: str | None, policy_path: Path | None, provider: str | None, policies_dir: Path | None,
        stage: str, entry_stage: str, cache_dir: Path | None, node_key: Path | None, audit_log: Path | None,
        host_roots: tuple[Path, ...]) -> None:
    """Verify REF, then run it once in the sandbox: REF's stdout and stderr are this command's.

    One invocation: the module is compiled here, under the node's compile budget, when no cache has it.

    REF: name, name:version, name@sha256:…, or oci://HOST/PREFIX/NAME@sha256:…. Exit code: the
    agent's own; 124 when the sandbox stopped it, 125 when it was refused before running.
    """
    from .runtime import MAX_STDIN, Refused
    from .sandbox import Invocation

    ref_store, ref = split_reference(ref)
    stdin = _read_stdin(stdin_path, MAX_STDIN)
    env = {}
    for pair in env_pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise InputError("--env", f"{pair!r}: write NAME=VALUE")
        env[name] = value
    runtime = _open_runtime(ref_store or store_url, policy_path, provider, policies_dir, stage, cache_dir, node_key,
                            audit_log, host_roots, entry_stage)
    try:
        result = runtime.invoke(ref, Invocation(stdin=stdin, args=args, env=env))
    except Refused as exc:
        if as_json:
            print_json({"ref": ref, "refused": True, "reason": exc.reason, "error": str(exc),
                        "verdict": exc.verdict.to_json() if exc.verdict else None})
        else:
            _print_refusal(exc)
        _exit(EXIT_REFUSED)
    finally:
        runtime.close()
    ex = result.execution
    if as_json:
        from .server import _streams

        print_json({**result.to_json(), **_streams(ex.stdout, ex.stderr)})
    else:
        sys.stdout.buffer.write(ex.stdout)
        sys.stdout.flush()
        sys.stderr.buffer.write(ex.stderr)
        if ex.outcome not in ("ok", "error"):
            err.print(f"[red]stopped:[/red] {ex.reason}", markup=True)
    if ex.outcome not in ("ok", "error"):
        _exit(EXIT_STOPPED)
    _exit(ex.exit_code or EXIT_OK)


def _exit(code: int) -> None:
    """Exit at once, output flushed: wasmtime's WASI worker threads can abort a normal interpreter
    shutdown (a Rust panic in a thread that starts while the process tears down: exit 134), after all
    the work is done. Nothing is left to finalize: the audit trail is written with unbuffered writes."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _print_refusal(exc: Any) -> None:
    """One line for the refusal, then one per failed check: what an operator reads first."""
    verdict = exc.verdict
    if verdict is None or verdict.allowed:
        err.print(f"[red]refused:[/red] {escape(str(exc))}")
        return
    agent = f"{exc.agent.name}@{exc.agent.digest}" if exc.agent else verdict.digest
    if exc.reason == "not-promoted":  # the stage first: what this node runs, and where the agent is
        err.print(f"[red]refused:[/red] {escape(str(exc).split(': ', 1)[0])}")
    err.print(f"[red]refused:[/red] {escape(agent)} (score {verdict.score:.1f}/10)")
    for reason in verdict.reasons:
        err.print(f"  ✗ {escape(reason)}")


def _read_stdin(path: str | None, limit: int) -> bytes:
    if path is None:
        return b""
    if path == "-":
        data = sys.stdin.buffer.read(limit + 1)
    else:
        try:
            with open(path, "rb") as f:
                data = f.read(limit + 1)
        except OSError as exc:
            raise InputError(path, f"cannot read: {exc.strerror}") from None
    if len(data) > limit:
        raise InputError(path, f"larger than the {limit}-byte stdin limit")
    return data


@click.group("runtime")
def runtime() -> None:
    """The node runtime service and its audit trail."""


@runtime.command("serve")
@click.option("--listen", default="127.0.0.1:8080", show_default=True, metavar="HOST:PORT",
              envvar="AGENTFACTORY_RUNTIME_LISTEN", help="Address to serve on (port 0: any free port).")
@click.option("--workers", type=click.IntRange(1, 1024), default=None,
              help="Invocations at once (default: twice the CPUs).")
@click.option("--warm-interval", type=click.FloatRange(1, 86400), default=60.0, show_default=True,
              envvar="AGENTFACTORY_RUNTIME_WARM_INTERVAL",
              help="Seconds between scans of the agents this node may run (verified and compiled before traffic).")
@click.option("--host-cpu", default="auto", show_default=True, metavar="auto|off|CPU",
              envvar="AGENTFACTORY_RUNTIME_HOST_CPU",
              help="Keep the node's own threads on one CPU (auto: the one it started on); a guest running past 2 ms "
                   "may use every CPU. off: leave placement to the scheduler.")
@_runtime_options
@handle_errors
def serve(listen: str, workers: int | None, warm_interval: float, host_cpu: str, store_url: str | None,
          policy_path: Path | None, provider: str | None,
          policies_dir: Path | None, stage: str, entry_stage: str, cache_dir: Path | None, node_key: Path | None,
          audit_log: Path | None, host_roots: tuple[Path, ...]) -> None:
    """Serve POST /v1/agents/NAME/invoke, GET /healthz, /readyz and /metrics until SIGTERM."""
    from agentfactory.stopsignals import StopSignals

    from .cpu_home import CpuHome
    from .server import RuntimeServer
    from .warmpool import WarmPool

    stop = StopSignals().install()  # from the start: a signal while the node sets up stops the server it makes
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit():
        raise InputError("--listen", f"{listen!r}: write HOST:PORT (e.g. 127.0.0.1:8080)")
    cpu = CpuHome.choose(host_cpu)
    rt = _open_runtime(store_url, policy_path, provider, policies_dir, stage, cache_dir, node_key, audit_log,
                       host_roots, entry_stage, background_compile=True, cpu=cpu)
    warm = WarmPool(rt, warm_interval)  # compiles off the request path; /readyz waits for its first scan
    server = RuntimeServer((host.strip("[]"), int(port)), rt, workers=workers or 2 * (os.cpu_count() or 1),
                           warm=warm)
    cpu.pin_process()  # every thread so far; those started later inherit the home CPU from their maker
    stop.then(server.shutdown)
    bound_host, bound_port = str(server.server_address[0]), server.server_address[1]
    err.print(json.dumps({"listening": f"http://{bound_host}:{bound_port}", "stage": stage,
                          "store": rt.store.url, "trust": rt.trust.source, **cpu.describe()}), markup=False)
    server.ready.set()
    warm.start()
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        warm.stop()
        server.server_close()
        rt.close()
    _exit(stop.exit_code())  # Ctrl-C: 130, as every command; SIGTERM: 0


@runtime.command("audit")
@click.argument("path", type=click.Path(dir_okay=False, exists=True, path_type=Path))
@json_option
@handle_errors
def audit(path: Path, as_json: bool) -> None:
    """Check that an audit trail is intact: every record links to the one before it."""
    from agentfactory.audit import verify_chain

    try:
        count = verify_chain(path)
    except InputError as exc:
        if as_json:
            print_json({"path": str(path), "intact": False, "error": str(exc)})
        else:
            err.print(f"[red]broken:[/red] {escape(str(exc))}")
        sys.exit(EXIT_PROBLEMS)
    if as_json:
        print_json({"path": str(path), "records": count, "intact": True})
    else:
        out.print(f"{path}: {count} records, chain intact", markup=False)
