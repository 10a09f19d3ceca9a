"""`agentfactory cosign trusted-root|legacy-evidence`: what a cosign user needs to check our evidence.

`trusted-root` writes the Sigstore trusted root that names our transparency log, so `cosign verify`,
`verify-blob` and `verify-attestation --key … --trusted-root FILE` check the log entries inside our bundles
offline. `legacy-evidence` lists the agents whose evidence is still only in the format before bundles, which
cosign and admission controllers cannot read and which the verifier stops reading after the deprecation
window (docs/evidence.md).
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import click

from ..errors import ConfigError, InputError
from .common import EXIT_PROBLEMS, SuggestingGroup, handle_errors, json_option, out, print_json, store_option


@click.group("cosign", cls=SuggestingGroup)
def cosign() -> None:
    """Interoperability with cosign and the Sigstore ecosystem (docs/evidence.md)."""


def _valid_from(text: str | None, log: object) -> datetime:
    """--valid-from, else the log's first entry's integrated time (an empty log: now)."""
    if text is not None:
        try:
            when = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            raise InputError("--valid-from", f"{text!r} is not an RFC 3339 time (2025-01-31T00:00:00Z)") from None
        return when if when.tzinfo else when.replace(tzinfo=UTC)
    from ..errors import NotFoundError
    from ..tlog.base import TransparencyLog

    assert isinstance(log, TransparencyLog)
    try:
        return datetime.fromtimestamp(log.entry_at(0).integrated_time, UTC)
    except NotFoundError:
        return datetime.now(UTC).replace(microsecond=0)


@cosign.command("trusted-root")
@click.option("--tlog", "tlog_url", envvar="AGENTFACTORY_TLOG", default="embedded", show_default=True,
              help="The transparency log the bundles' entries come from: the embedded log or a Rekor v1 URL.")
@click.option("--tlog-key", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              help="The log's public key (PEM), pinned; required with a URL, checked against the embedded log.")
@click.option("--base-url", default=None, metavar="URL",
              help="The log's URL written into the root (for people: cosign reads the key; default: the log's URL).")
@click.option("--valid-from", default=None, metavar="RFC3339",
              help="Trust the key from this time on (default: the log's first entry, or now for an empty log); "
                   "cosign refuses an entry integrated before it.")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the root here (default: standard output).")
@handle_errors
def trusted_root_cmd(tlog_url: str, tlog_key: Path | None, base_url: str | None, valid_from: str | None,
                     output: Path | None) -> None:
    """Write a Sigstore trusted root naming the transparency log, for `cosign … --trusted-root FILE`.

    It lists the log only (key-based signatures need no certificate authority, CT log or timestamp
    authority): `cosign verify --key cosign.pub --trusted-root trusted_root.json IMAGE`.
    """
    from ..cosign_root import trusted_log, trusted_root
    from ..fsutil import atomic_write
    from ..tlog.connect import open_tlog

    if tlog_url == "none":
        raise ConfigError("--tlog none: a trusted root names a transparency log; give embedded or a Rekor URL")
    log, pem = open_tlog(tlog_url, tlog_key)
    assert log is not None and pem is not None
    try:
        root = trusted_root([trusted_log(pem, base_url or log.url, _valid_from(valid_from, log), "--tlog-key")])
    finally:
        close = getattr(log, "close", None)
        if close is not None:
            close()
    if output is None:
        sys.stdout.buffer.write(root)
    else:
        atomic_write(output, root)
        out.print(f"wrote {output}: a trusted root naming the transparency log ({tlog_url})", markup=False)


@cosign.command("legacy-evidence")
@store_option
@json_option
@handle_errors
def legacy_evidence(store_url: str | None, as_json: bool) -> None:
    """List agents whose evidence is only in the format before Sigstore bundles (exit 1 when there are some).

    Re-sign them with `agentfactory pipeline run --resign` (new bundles, logged) before the verifier stops
    reading the old format.
    """
    from ..evidence import legacy_only
    from ..store import open_store

    store = open_store(store_url, existing=True)
    found = [a.ref for a in store.list_agents() if legacy_only(store, a)]
    if as_json:
        print_json({"store": store.url, "legacyOnly": found})
    elif found:
        out.print(f"{len(found)} agents in {store.url} carry only evidence in the old format (cosign cannot read it; "
                  "re-sign them with `agentfactory pipeline run --resign`):", markup=False)
        for ref in found:
            out.print(f"  {ref}", markup=False)
    else:
        out.print(f"every agent in {store.url} carries Sigstore bundles", markup=False)
    if found:
        sys.exit(EXIT_PROBLEMS)
