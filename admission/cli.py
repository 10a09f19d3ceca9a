"""`agentfactory admission serve|certs|review`: the validating webhook from the command line."""

from __future__ import annotations

import dataclasses
import json
import ssl
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click

from agentfactory.cli.common import EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE, err, handle_errors, print_json
from agentfactory.errors import InputError
from agentfactory.policy_select import policy_engine_options

from .config import AdmissionConfig, load_config


def _config(path: Path | None, store_url: str | None) -> AdmissionConfig:
    config = load_config(path) if path else AdmissionConfig()
    if store_url:
        config = dataclasses.replace(config, store=store_url)
    return config


def build_admitter(config: AdmissionConfig, *, shared_audit: bool = False) -> Any:
    """The Admitter for a config: store, trust policy, policies and audit trail opened once (`shared_audit`:
    other processes append to the same trail, as `serve --workers` does)."""
    from agentfactory.audit import AuditLog
    from agentfactory.cli.verify_cmd import default_policy
    from agentfactory.policy_select import open_engine
    from agentfactory.store import open_store
    from agentfactory.trust import load_trust_policy

    from .decide import Admitter

    trust = load_trust_policy(config.trust_policy) if config.trust_policy else default_policy(config.key_provider)
    audit = AuditLog(config.audit_log, shared=shared_audit) if config.audit_log else None
    return Admitter(config, open_store(config.store), trust, open_engine(config.policies), audit)


config_option = click.option("--config", "config_path", type=click.Path(dir_okay=False, path_type=Path),
                             envvar="AGENTFACTORY_ADMISSION_CONFIG", default=None,
                             help="Webhook configuration (YAML; see docs/admission.md).")
store_override = click.option("--store", "store_url", metavar="URL", default=None,
                              help="Artifact store (overrides the config's `store`).")


@click.group("admission")
def admission() -> None:
    """The Kubernetes validating admission webhook."""


@admission.command("serve")
@click.option("--listen", default="0.0.0.0:8443", show_default=True, metavar="HOST:PORT",
              help="Address to serve HTTPS on (port 0: any free port).")
@click.option("--tls-cert", type=click.Path(dir_okay=False, exists=True, path_type=Path), required=True,
              help="Serving certificate (PEM); HTTPS only.")
@click.option("--tls-key", type=click.Path(dir_okay=False, exists=True, path_type=Path), required=True,
              help="Its private key (PEM).")
@config_option
@store_override
@policy_engine_options
@click.option("--host-cpu", default="auto", show_default=True, metavar="auto|off|CPU",
              envvar="AGENTFACTORY_ADMISSION_HOST_CPU",
              help="Keep the webhook's threads on one CPU (auto: the one it started on; with --workers, one CPU "
                   "per worker); off: leave them to the scheduler.")
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              envvar="AGENTFACTORY_ADMISSION_WORKERS",
              help="Worker processes judging in parallel (one per core the webhook may use); the connections are "
                   "shared out evenly and they write one audit trail.")
@click.option("--worker-channel", type=int, default=None, hidden=True)  # set by the supervisor for its workers
@handle_errors
def serve(listen: str, tls_cert: Path, tls_key: Path, config_path: Path | None, store_url: str | None,
          host_cpu: str, workers: int, worker_channel: int | None) -> None:
    """Serve POST /validate and /validate/warn, GET /healthz, /readyz and /metrics over TLS."""
    from agentfactory.stopsignals import StopSignals

    stop = StopSignals().install()  # from the start: a signal while the webhook sets up stops the server it makes
    if worker_channel is not None:
        _serve_worker(stop, worker_channel, tls_cert, tls_key, _config(config_path, store_url), host_cpu)
    elif workers > 1:
        _supervise(stop, listen, workers, tls_cert, tls_key, config_path, store_url, host_cpu)
    else:
        _serve_one(stop, listen, tls_cert, tls_key, _config(config_path, store_url), host_cpu)
    sys.exit(stop.exit_code())


def _server(admitter: Any, tls_cert: Path, tls_key: Path, inline: bool) -> Any:
    """The uvicorn server for the webhook app, its TLS context reloaded when cert-manager renews the files."""
    import uvicorn

    from agentfactory.httpguard import guarded_http

    from .app import create_app

    contexts: list[ssl.SSLContext] = []

    def tls_context(_config: Any, default: Any) -> ssl.SSLContext:
        context: ssl.SSLContext = default()
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        contexts.append(context)
        return context

    server = uvicorn.Server(uvicorn.Config(
        # threads on one CPU: a worker thread buys no parallelism, so decisions needing no I/O stay on the loop
        create_app(admitter, inline_decisions=inline), ssl_certfile=str(tls_cert),
        ssl_keyfile=str(tls_key), log_level="warning",
        access_log=False, timeout_keep_alive=30, limit_concurrency=1000, server_header=False,
        ssl_context_factory=tls_context, http=guarded_http()))
    threading.Thread(target=_reload_certificate, args=(contexts, tls_cert, tls_key), daemon=True,
                     name="tls-reload").start()
    return server


def _described(admitter: Any, home: frozenset[int] | None) -> dict[str, Any]:
    return {"config": admitter.config.source, "store": admitter.store.url, "trust": admitter.trust.source,
            "hostCpu": sorted(home) if home is not None else "off", "inlineDecisions": home is not None}


def _serve_one(stop: Any, listen: str, tls_cert: Path, tls_key: Path, config: AdmissionConfig,
               host_cpu: str) -> None:
    from agentfactory.cpuplace import choose_home, place_every_thread
    from agentfactory.httpserve import bind, url_of

    home = choose_home(host_cpu, "--host-cpu")  # the event loop and the worker threads hand off per review
    sock = bind(listen, "0.0.0.0:8443")
    admitter = build_admitter(config)
    server = _server(admitter, tls_cert, tls_key, home is not None)
    if home is not None:
        place_every_thread(home)
    stop.then(lambda: setattr(server, "should_exit", True))
    err.print(json.dumps({"listening": url_of(sock, "https"), **_described(admitter, home)}), markup=False)
    server.run(sockets=[sock])


def _serve_worker(stop: Any, channel_fd: int, tls_cert: Path, tls_key: Path, config: AdmissionConfig,
                  host_cpu: str) -> None:
    """One of `--workers`: serves the connections its supervisor hands it, into the shared audit trail."""
    import socket

    from agentfactory.cpuplace import choose_home, place_every_thread
    from agentfactory.workers import run_handed

    channel = socket.socket(fileno=channel_fd)
    home = choose_home(host_cpu, "--host-cpu")
    admitter = build_admitter(config, shared_audit=True)
    server = _server(admitter, tls_cert, tls_key, home is not None)
    if home is not None:
        place_every_thread(home)
    stop.then(lambda: setattr(server, "should_exit", True))
    run_handed(server, channel, _described(admitter, home))


def _supervise(stop: Any, listen: str, workers: int, tls_cert: Path, tls_key: Path, config_path: Path | None,
               store_url: str | None, host_cpu: str) -> None:
    """`--workers N`: accept here, judge in N worker processes (one CPU each), one audit trail, /metrics summed."""
    import os
    import shutil
    import tempfile

    from agentfactory.cpuplace import allowed_cpus
    from agentfactory.httpserve import bind, url_of
    from agentfactory.policy_select import engine_environment
    from agentfactory.workers import Supervisor, WorkerFailed, worker_command

    setting = host_cpu.strip().lower()
    if setting not in ("auto", "off"):
        raise InputError("--host-cpu", f"{host_cpu!r} with --workers {workers}: each worker takes its own CPU; "
                         "use auto or off")
    config = _config(config_path, store_url)  # its errors once, here, rather than once per worker
    if config.audit_log is not None and str(config.audit_log) == "-":
        raise InputError(f"{config.source}: auditLog", "standard output cannot be shared by several worker "
                         "processes (their records would not form one hash chain): give a file path, or --workers 1")
    cpus = sorted(allowed_cpus())
    sock = bind(listen, "0.0.0.0:8443")
    metrics_dir = tempfile.mkdtemp(prefix="agentfactory-admission-metrics-")
    env = {**os.environ, **engine_environment(), "PROMETHEUS_MULTIPROC_DIR": metrics_dir}

    def command(slot: int, fd: int) -> list[str]:
        cpu = str(cpus[slot % len(cpus)]) if setting == "auto" and len(cpus) >= 2 else "off"
        args = ["admission", "serve", "--tls-cert", str(tls_cert), "--tls-key", str(tls_key),
                "--host-cpu", cpu, "--worker-channel", str(fd)]
        if config_path is not None:
            args += ["--config", str(config_path)]
        if store_url:
            args += ["--store", store_url]
        return worker_command(args)

    supervisor = Supervisor(sock, workers, command, env,
                            log=lambda doc: err.print(json.dumps(doc), markup=False))
    stop.then(supervisor.stop)
    try:
        try:
            ready = supervisor.start()
        except WorkerFailed as exc:
            err.print(f"error: {exc}; stopped", markup=False)
            sys.exit(exc.status or EXIT_PROBLEMS)
        if not stop.requested:
            first = ready[0] if ready else {}
            err.print(json.dumps({"listening": url_of(sock, "https"), "workers": [
                {"pid": w.get("pid"), "hostCpu": w.get("hostCpu")} for w in ready],
                **{k: first.get(k) for k in ("config", "store", "trust", "inlineDecisions")}}), markup=False)
            try:
                supervisor.serve()
            except WorkerFailed as exc:  # a replacement that could not start (the config broke since): say so
                err.print(f"error: {exc}; stopped", markup=False)
                sys.exit(exc.status or EXIT_PROBLEMS)
        else:
            supervisor.shutdown()
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)


def _reload_certificate(contexts: list[ssl.SSLContext], cert: Path, key: Path, every: float = 30.0) -> None:
    """Load a renewed certificate (cert-manager rewrites the Secret's files) into the live TLS context:
    new handshakes use it, open connections go on, and no restart is needed before the old one expires."""
    def stamp() -> tuple[float, float]:
        return cert.stat().st_mtime, key.stat().st_mtime

    try:
        seen = stamp()
    except OSError:
        return
    while True:
        time.sleep(every)
        try:
            now = stamp()
            if now != seen and contexts:
                contexts[0].load_cert_chain(cert, key)
                seen = now
                err.print(json.dumps({"tls": "reloaded", "cert": str(cert)}), markup=False)
        except (OSError, ssl.SSLError) as exc:  # a half-written pair: keep serving the old one, try again
            err.print(json.dumps({"tls": "reload failed, keeping the current certificate", "error": str(exc)}),
                      markup=False)


@admission.command("certs")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Folder for ca.crt, tls.crt and tls.key.")
@click.option("--service", default="agentfactory-admission", show_default=True)
@click.option("--namespace", default="agentfactory-system", show_default=True)
@click.option("--days", type=click.IntRange(1, 3650), default=365, show_default=True)
@handle_errors
def certs(out: Path, service: str, namespace: str, days: int) -> None:
    """A development CA and serving certificate; prints the caBundle for the webhook configuration."""
    from .certs import make_certs

    bundle = make_certs(out, service=service, namespace=namespace, days=days)
    err.print(f"wrote {out}/ca.crt, tls.crt, tls.key (for {service}.{namespace}.svc, localhost, 127.0.0.1)",
              markup=False)
    sys.stdout.write(bundle + "\n")


@admission.command("review")
@click.argument("file", type=click.File("rb"))
@click.option("--warn", "warn_mode", is_flag=True, help="Judge as in a namespace in warn mode.")
@config_option
@store_override
@policy_engine_options
@handle_errors
def review_cmd(file: Any, warn_mode: bool, config_path: Path | None, store_url: str | None) -> None:
    """Answer one AdmissionReview from FILE ('-': stdin) as the webhook would, without a server.

    Prints the response AdmissionReview; exit 0 when allowed, 1 when denied, 2 when FILE is not an
    AdmissionReview (the 400 answer the server would send is printed all the same).
    """
    from .review import parse_review, response, uid_of

    config = _config(config_path, store_url)
    data = file.read(config.max_request_bytes + 1)
    if len(data) > config.max_request_bytes:
        raise InputError(file.name, f"larger than {config.max_request_bytes} bytes (config maxRequestBytes)")
    try:
        review = parse_review(data)
    except InputError as exc:  # what the server answers: a 400 denial naming the problem
        print_json(response(uid_of(data), False, code=400, message=f"not a valid AdmissionReview: {exc}; denied"))
        sys.exit(EXIT_USAGE)
    answer = build_admitter(config).review(review, "warn" if warn_mode else "enforce")
    print_json(response(review.uid, answer.allowed, code=None if answer.allowed else answer.code,
                        message="" if answer.allowed else answer.message, warnings=answer.warnings))
    sys.exit(EXIT_OK if answer.allowed else EXIT_PROBLEMS)
