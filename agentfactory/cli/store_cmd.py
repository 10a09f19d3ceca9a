"""`agentfactory store`: what the artifact store holds."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from rich.table import Table

from ..fsutil import atomic_write
from ..store import open_store, split_reference
from .common import EXIT_PROBLEMS, SuggestingGroup, err, handle_errors, json_option, out, print_json, store_option


@click.group(cls=SuggestingGroup)
def store() -> None:
    """List and fetch agents in the artifact store."""


@store.command("ls")
@store_option
@json_option
@handle_errors
def ls(store_url: str | None, as_json: bool) -> None:
    """List agents: name, version, digest, size."""
    s = open_store(store_url, existing=True)
    agents = s.list_agents()
    if as_json:
        print_json({"store": s.url, "agents": [
            {"name": a.name, "version": a.version, "digest": a.digest, "manifest": a.manifest_digest,
             "size": a.size, "tag": a.tag} for a in agents]})
        return
    table = Table(title=f"{s.url}", title_justify="left")
    for col in ("name", "version", "digest", "size"):
        table.add_column(col, justify="right" if col == "size" else "left", overflow="fold",
                         min_width=None if col == "digest" else len(col))
    for a in agents:
        version = a.version if a.tag else f"{a.version} (untagged)"
        table.add_row(a.name, version, a.digest, f"{a.size:,}")
    out.print(table)
    if not agents:
        out.print("The store is empty: run `agentfactory pipeline run` to build and publish the templates.")


@store.command("get")
@click.argument("ref")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Where to write the module ('-' for stdout).")
@store_option
@handle_errors
def get(ref: str, output: Path, store_url: str | None) -> None:
    """Write the wasm module of REF (name, name:version, sha256:…, or oci://HOST/PREFIX/NAME@sha256:…),
    verified against its digest."""
    ref_store, ref = split_reference(ref)
    agent, wasm = open_store(ref_store or store_url, existing=True).fetch_wasm(ref)
    if str(output) == "-":
        sys.stdout.buffer.write(wasm)
        return
    atomic_write(output, wasm)
    click.echo(f"{agent.ref} → {output} ({len(wasm):,} bytes)", err=True)


@store.command("copy")
@click.argument("src")
@click.argument("dst")
@click.option("--agent", "agents", multiple=True, metavar="REF",
              help="Copy only this agent (name, name:version, name@sha256:…); repeatable. Default: every agent.")
@json_option
@handle_errors
def copy(src: str, dst: str, agents: tuple[str, ...], as_json: bool) -> None:
    """Copy agents with all their evidence from store SRC to store DST.

    Idempotent and resumable (run it again after an interruption); every byte is checked
    against its digest. Example: store copy oci-layout:.agentfactory/store oci://registry.example/agents
    """
    from ..store.copy import copy_agent

    source, target = open_store(src, existing=True), open_store(dst)
    chosen = [source.resolve(r) for r in agents] if agents else [a for a in source.list_agents() if a.tag]
    reports = [copy_agent(source, target, a) for a in chosen]
    if as_json:
        print_json({"source": source.url, "destination": target.url, "agents": [
            {"agent": r.agent, "digest": r.digest, "blobsCopied": r.blobs_copied, "blobsPresent": r.blobs_present,
             "referrers": r.referrers, "errors": r.errors} for r in reports]})
    else:
        for r in reports:
            out.print(f"{r.agent}: {r.blobs_copied} blobs copied, {r.blobs_present} already there, "
                      f"{r.referrers} referrers", highlight=False)
        out.print(f"{len(reports)} agent(s) copied from {source.url} to {target.url}", highlight=False)
    if any(r.errors for r in reports):
        for r in reports:
            for e in r.errors:
                err.print(f"error: {e}", markup=False)
        sys.exit(EXIT_PROBLEMS)
