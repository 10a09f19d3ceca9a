"""`agentfactory tlog serve|info`: the embedded transparency log, served as a Rekor v1 API or inspected."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from ..errors import ConfigError
from ..httpserve import bind, url_of
from .common import EXIT_PROBLEMS, handle_errors, print_json

PUBLIC_KEY_FILE = "log-public-key.pem"

dir_option = click.option("--dir", "folder", type=click.Path(file_okay=False, path_type=Path), default=None,
                          help="The log's folder (tree.db, log-key.pem; default: $AGENTFACTORY_HOME/tlog).")


@click.group("tlog")
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
@handle_errors
def serve(listen: str, folder: Path | None, tls_cert: Path | None, tls_key: Path | None) -> None:
    """Serve the Rekor v1 API (entries, index, log info, proofs, public key) and GET /healthz."""

    import uvicorn

    from ..tlog.log import EmbeddedLog
    from ..tlog.server import create_app

    if (tls_cert is None) != (tls_key is None):
        raise ConfigError("--tls-cert and --tls-key go together")
    sock = bind(listen, "127.0.0.1:3000")
    log = EmbeddedLog(folder)
    # The public key exported once, for `trust init --tlog-key` (log-key.pem is private). Clients pin the key
    # their trust policy lists, never this file: it lives where the log's writer can replace it.
    public_pem = log.folder / PUBLIC_KEY_FILE
    server = uvicorn.Server(uvicorn.Config(
        create_app(log), log_level="warning", access_log=False, timeout_keep_alive=30, limit_concurrency=1000,
        server_header=False, ssl_certfile=str(tls_cert) if tls_cert else None,
        ssl_keyfile=str(tls_key) if tls_key else None))
    sys.stderr.write(json.dumps({"listening": url_of(sock, "https" if tls_cert else "http"), "logID": log.log_id,
                                 "publicKey": str(public_pem)}) + "\n")
    sys.stderr.flush()
    try:
        server.run(sockets=[sock])
    finally:
        log.close()


@tlog.command("info")
@dir_option
@click.option("--check", "full_check", is_flag=True, help="Check everything: every stored hash and every index row "
                                                          "(slow on big logs).")
@handle_errors
def info(folder: Path | None, full_check: bool) -> None:
    """Print the log's size, root hash, log id and a storage check: hashes (a sample, or all with --check), the
    search index against the leaves, and the tree against the largest checkpoint the log signed."""
    from ..tlog.log import EmbeddedLog

    with EmbeddedLog(folder) as log:
        state = log.info()
        problems = log.check(full=full_check)
        print_json({"dir": str(log.folder), "treeSize": state.tree_size, "rootHash": state.root_hash,
                    "logID": log.log_id, "treeID": state.tree_id, "problems": problems})
    if problems:
        sys.exit(EXIT_PROBLEMS)
