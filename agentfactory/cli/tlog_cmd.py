"""`agentfactory tlog serve|info`: the embedded transparency log, served as a Rekor v1 API or inspected."""

from __future__ import annotations

import errno
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..errors import ConfigError, StoreError
from ..httpserve import bind, url_of
from .common import EXIT_PROBLEMS, SuggestingGroup, err, handle_errors, json_option, out, print_json

if TYPE_CHECKING:
    from ..tlog.log import EmbeddedLog

PUBLIC_KEY_FILE = "log-public-key.pem"

dir_option = click.option("--dir", "folder", type=click.Path(file_okay=False, path_type=Path), default=None,
                          help="The log's folder (tree.db, log-key.pem; default: $AGENTFACTORY_HOME/tlog).")


def read_only_reason(folder: Path) -> str | None:
    """Why the log's folder cannot be written, or None. SQLite in WAL mode writes beside the database even to
    read it, so a read-only folder would otherwise surface as "not a transparency log database"."""
    target = folder if folder.exists() else folder.parent
    if os.access(target, os.W_OK):
        return None
    try:
        st = os.statvfs(target)
    except OSError:
        return "it cannot be written"
    return "the file system is read-only" if st.f_flag & os.ST_RDONLY else "it is not writable by this user"


def open_embedded_log(folder: Path | None) -> EmbeddedLog:
    """The embedded log, with a read-only folder named as such (exit 2) instead of a misleading database error."""
    from ..tlog.log import EmbeddedLog, default_tlog_dir

    where = Path(folder) if folder is not None else default_tlog_dir()
    try:
        return EmbeddedLog(folder)
    except (StoreError, OSError) as exc:
        reason = read_only_reason(where)
        if reason is None and not (isinstance(exc, OSError) and exc.errno in (errno.EROFS, errno.EACCES)):
            raise
        raise ConfigError(f"transparency log {where}: read-only ({reason or exc}): the embedded log writes to its "
                          "folder even to be read (SQLite WAL); make it writable, copy it elsewhere and pass "
                          "--dir, or use `agentfactory audit` against a served log") from exc


@click.group("tlog", cls=SuggestingGroup)
def tlog() -> None:
    """The embedded transparency log (Rekor v1 compatible)."""


@tlog.command("serve")
@click.option("--listen", default="127.0.0.1:3000", show_default=True, metavar="HOST:PORT",
              help="Address to serve on (port 0: any free port).")
@dir_option
@click.option("--tls-cert", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="Serve HTTPS with this certificate (PEM); plain HTTP without it.")
@click.option("--tls-key", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="The certificate's private key (PEM).")
@click.option("--host-cpu", default="auto", show_default=True, metavar="auto|off|CPU",
              envvar="AGENTFACTORY_TLOG_HOST_CPU",
              help="Keep the server's threads on one CPU (auto: the one it started on); off: leave them to the "
                   "scheduler.")
@click.option("--batch-wait-ms", type=float, default=2.0, show_default=True, metavar="MS",
              envvar="AGENTFACTORY_TLOG_BATCH_WAIT_MS",
              help="How long a commit may wait for the entries it expects (as many as the last batch carried) "
                   "before it starts with fewer; 0: never wait. At most 100.")
@handle_errors
def serve(listen: str, folder: Path | None, tls_cert: Path | None, tls_key: Path | None, host_cpu: str,
          batch_wait_ms: float) -> None:
    """Serve the Rekor v1 API (entries, index, log info, proofs, public key) and GET /healthz."""

    import uvicorn

    from ..cpuplace import choose_home, place_every_thread
    from ..httpguard import guarded_http
    from ..stopsignals import StopSignals
    from ..tlog.server import batch_wait_seconds, create_app

    stop = StopSignals().install()  # from the start: a signal while the log opens stops the server it opens
    if (tls_cert is None) != (tls_key is None):
        raise ConfigError("--tls-cert and --tls-key go together")
    batch_wait_s = batch_wait_seconds(batch_wait_ms, "--batch-wait-ms")
    home = choose_home(host_cpu, "--host-cpu")  # the event loop and the commit thread hand off per batch
    sock = bind(listen, "127.0.0.1:3000")
    log = open_embedded_log(folder)
    # The public key exported once, for `trust init --tlog-key` (log-key.pem is private). Clients pin the key
    # their trust policy lists, never this file: it lives where the log's writer can replace it.
    public_pem = log.folder / PUBLIC_KEY_FILE
    server = uvicorn.Server(uvicorn.Config(
        create_app(log, batch_wait_s), log_level="warning", access_log=False, timeout_keep_alive=30,
        limit_concurrency=1000, server_header=False, proxy_headers=False, http=guarded_http(),
        ssl_certfile=str(tls_cert) if tls_cert else None,
        ssl_keyfile=str(tls_key) if tls_key else None))
    if home is not None:
        place_every_thread(home)
    stop.then(lambda: setattr(server, "should_exit", True))
    sys.stderr.write(json.dumps({"listening": url_of(sock, "https" if tls_cert else "http"), "logID": log.log_id,
                                 "publicKey": str(public_pem),
                                 "hostCpu": sorted(home) if home is not None else "off",
                                 "batchWaitMs": batch_wait_ms}) + "\n")
    sys.stderr.flush()
    try:
        server.run(sockets=[sock])
    finally:
        log.close()
    sys.exit(stop.exit_code())


@tlog.command("info")
@dir_option
@click.option("--check", "full_check", is_flag=True, help="Check everything: every stored hash and every index row "
                                                          "(slow on big logs).")
@json_option
@handle_errors
def info(folder: Path | None, full_check: bool, as_json: bool) -> None:
    """Print the log's size, root hash, log id and a storage check: hashes (a sample, or all with --check), the
    search index against the leaves, and the tree against the largest checkpoint the log signed. Exit 1 on a
    problem."""
    with open_embedded_log(folder) as log:
        state = log.info()
        problems = log.check(full=full_check)
        doc = {"dir": str(log.folder), "treeSize": state.tree_size, "rootHash": state.root_hash,
               "logID": log.log_id, "treeID": state.tree_id, "problems": problems}
    if as_json:
        print_json(doc)
    else:
        width = max(len(k) for k in ("folder", "tree size", "root hash", "log id", "tree id"))
        for label, value in (("folder", doc["dir"]), ("tree size", state.tree_size), ("root hash", state.root_hash),
                             ("log id", log.log_id), ("tree id", state.tree_id)):
            out.print(f"{label:<{width}}  {value}", markup=False)
        checked = "every hash and index row" if full_check else "a sample of hashes, the index, the checkpoint"
        if problems:
            out.print(f"{'check':<{width}}  {len(problems)} problem(s) ({checked}):", markup=False)
            for problem in problems:
                err.print(f"  ✗ {problem}", markup=False)
        else:
            out.print(f"{'check':<{width}}  ok ({checked})", markup=False)
    if problems:
        sys.exit(EXIT_PROBLEMS)
