"""`agentfactory keys`: create, list, export, rotate and revoke signing keys.

Every command works on one provider: `--key-provider local|vault|cosign` (the spelling of every other command;
`--provider` still works) (default `$AGENTFACTORY_KEY_PROVIDER`, else the local keyring); `cosign` names its
key with `--cosign-key REF` or `$AGENTFACTORY_COSIGN_KEY`. Key ids may be abbreviated to a unique prefix of at
least 8 hex digits.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.table import Table

from ..errors import ConfigError, KeyProviderError
from ..fsutil import atomic_write
from ..keys import PROVIDER_ENV, PROVIDERS, KeyProvider, LocalKeyring, PublicKey, open_provider
from .common import SuggestingGroup, err, handle_errors, json_option, out, print_json

MIN_PREFIX = 8

class _FirstNameOption(click.Option):
    """An option whose older spellings still parse but are not advertised in --help."""

    def get_help_record(self, ctx: click.Context) -> tuple[str, str] | None:
        record = super().get_help_record(ctx)
        if record is None:
            return None
        names, text = record
        for alias in self.opts[1:]:
            names = names.replace(f", {alias}", "")
        return names, text


F = TypeVar("F", bound=Callable[..., Any])

_provider_name_option = click.option(
    "--key-provider", "--provider", "provider", cls=_FirstNameOption, type=click.Choice(PROVIDERS),
    envvar=PROVIDER_ENV, default=None,
    help="Key provider: local keyring folder, Vault/OpenBao Transit, or cosign (a cosign key file or "
         "hashivault://NAME, signed through the cosign binary) (default: $AGENTFACTORY_KEY_PROVIDER or local).")
# No envvar here: the cosign provider reads $AGENTFACTORY_COSIGN_KEY itself, so a shell that exports it
# can still use the other providers.
_cosign_key_option = click.option(
    "--cosign-key", "cosign_key", default=None, metavar="REF",
    help="With --key-provider cosign: a cosign key file (password in COSIGN_PASSWORD) or hashivault://NAME "
         "(default: $AGENTFACTORY_COSIGN_KEY).")


def provider_option(f: F) -> F:
    """--key-provider and --cosign-key: which provider, and for cosign which key."""
    return _provider_name_option(_cosign_key_option(f))


_COSIGN_KEY_META = "agentfactory.cosign_key"


def _remember_cosign_key(ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    ctx.meta[_COSIGN_KEY_META] = value
    return value


# For commands owned elsewhere (pipeline run, vex sign): the value goes to the context, not to a
# parameter, so adding it changes no function signature; `cosign_key_of()` reads it back.
cosign_key_context_option = click.option(
    "--cosign-key", default=None, metavar="REF", expose_value=False, callback=_remember_cosign_key,
    help="With --key-provider cosign: a cosign key file (password in COSIGN_PASSWORD) or hashivault://NAME "
         "(default: $AGENTFACTORY_COSIGN_KEY).")


def cosign_key_of(ctx: click.Context | None = None) -> str | None:
    """The --cosign-key of the running command (cosign_key_context_option), if one was given."""
    ctx = ctx or click.get_current_context()
    value = ctx.meta.get(_COSIGN_KEY_META)
    return value if isinstance(value, str) else None


def _where(provider: KeyProvider) -> str:
    if isinstance(provider, LocalKeyring):
        return str(provider.folder)
    if provider.name == "cosign":
        return str(getattr(provider, "where", provider.name))
    key_path = getattr(provider, "key_path", "")
    where = getattr(provider, "where", "")
    return f"{key_path} on {where}" if key_path else provider.name


def _as_json(k: PublicKey, *, pem: bool = False) -> dict[str, Any]:
    doc: dict[str, Any] = {"keyId": k.key_id, "status": k.status, "provider": k.provider, "name": k.name,
                           "version": k.version, "created": k.created}
    if pem:
        doc["publicKey"] = k.pem.decode()
    return doc


def _resolve(keys: list[PublicKey], wanted: str, where: str) -> PublicKey:
    """A key by its id or by a unique prefix of it (humans copy the first characters of a table)."""
    wanted = wanted.strip().lower()
    exact = [k for k in keys if k.key_id == wanted]
    if exact:
        return exact[0]
    if len(wanted) < MIN_PREFIX:
        raise ConfigError(f"key id {wanted!r}: give the full id or at least {MIN_PREFIX} of its first hex digits")
    matches = [k for k in keys if k.key_id.startswith(wanted)]
    if not matches:
        raise KeyProviderError(f"no key with id {wanted}… in {where}: `agentfactory keys list` shows the ids")
    if len(matches) > 1:
        raise ConfigError(f"key id prefix {wanted!r} matches {len(matches)} keys in {where}: give more digits")
    return matches[0]


@click.group(cls=SuggestingGroup)
def keys() -> None:
    """Signing keys: local keyring (default), Vault/OpenBao Transit, or cosign. See docs/keys.md."""


@keys.command("create")
@click.option("--name", default=None, help="Name of the new key (local keyring only; default key-N).")
@provider_option
@json_option
@handle_errors
def create(name: str | None, provider: str | None, cosign_key: str | None, as_json: bool) -> None:
    """Create a key: the active one if there is none, else an enabled (staged) one.

    With Vault, creates the Transit key (rsa-2048, auto-rotated) if it does not exist. With cosign,
    imports a new RSA-2048 key into the --cosign-key file (cosign import-key-pair, COSIGN_PASSWORD) if it
    does not exist; a hashivault:// key is created in Vault, not here.
    """
    p = open_provider(provider, cosign_key=cosign_key)
    if isinstance(p, LocalKeyring):
        k = p.create(name)
    elif name is not None:
        raise ConfigError("--name applies to the local keyring only: the Transit key is named by "
                          "AGENTFACTORY_TRANSIT_KEY, a cosign key by --cosign-key")
    else:
        k = p.create()
    if as_json:
        print_json(_as_json(k, pem=True))
        return
    version = f" version {k.version}," if k.version is not None else ""
    out.print(f"{k.key_id}  ({k.status},{version} {k.provider} key {k.name!r} in {_where(p)})", markup=False)


@keys.command("list")
@provider_option
@json_option
@handle_errors
def list_(provider: str | None, cosign_key: str | None, as_json: bool) -> None:
    """List every key with its status: active (signs), enabled (verifies), revoked."""
    p = open_provider(provider, cosign_key=cosign_key)
    found = p.public_keys()
    if as_json:
        print_json({"provider": p.name, "where": _where(p), "keys": [_as_json(k) for k in found]})
        return
    if not found:
        out.print(f"No {p.name} keys yet in {_where(p)}: the first signature creates one, or run "
                  f"`agentfactory keys create`.", markup=False)
        return
    table = Table(title=f"{p.name} keys: {_where(p)}", title_justify="left")
    for col in ("key id", "status", "provider", "name", "version", "created"):
        table.add_column(col, overflow="fold", justify="right" if col == "version" else "left")
    style = {"active": "green", "enabled": "", "revoked": "red"}
    for k in found:
        table.add_row(k.key_id, f"[{style[k.status]}]{k.status}[/]" if style[k.status] else k.status, k.provider,
                      k.name, "" if k.version is None else str(k.version), k.created or "")
    out.print(table)


@keys.command("export")
@click.argument("key_id", required=False)
@click.option("--all", "all_", is_flag=True, help="Every key that still verifies (active and enabled).")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write to FILE instead of stdout.")
@provider_option
@handle_errors
def export(key_id: str | None, all_: bool, output: Path | None, provider: str | None,
           cosign_key: str | None) -> None:
    """Print public keys (SubjectPublicKeyInfo PEM): KEY_ID, every usable key (--all), or the active one."""
    if key_id and all_:
        raise ConfigError("give KEY_ID or --all, not both")
    p = open_provider(provider, cosign_key=cosign_key)
    found = p.public_keys()
    if all_:
        chosen = [k for k in found if k.status != "revoked"]
    elif key_id:
        chosen = [_resolve(found, key_id, _where(p))]
        if chosen[0].status == "revoked":
            err.print(f"warning: key {chosen[0].key_id} is revoked: do not add it to a trust policy as trusted",
                      markup=False)
    else:
        chosen = [k for k in found if k.status == "active"]
    if not chosen:
        raise KeyProviderError(f"no {'usable ' if all_ else 'active '}key in {_where(p)}: "
                               f"run `agentfactory keys create` first")
    data = b"".join(k.pem for k in chosen)
    if output is None:
        sys.stdout.write(data.decode())
        return
    atomic_write(output, data)
    err.print(f"{len(chosen)} public key(s) → {output}", markup=False)


@keys.command("rotate")
@provider_option
@json_option
@handle_errors
def rotate(provider: str | None, cosign_key: str | None, as_json: bool) -> None:
    """Make a new key (Transit: a new key version) active; the previous one stays enabled."""
    p = open_provider(provider, cosign_key=cosign_key)
    k = p.rotate()
    if as_json:
        print_json(_as_json(k, pem=True))
        return
    version = f" (version {k.version})" if k.version is not None else ""
    out.print(f"rotated: {k.key_id} is now the active key{version} in {_where(p)}; earlier keys stay enabled "
              f"and keep verifying what they signed", markup=False)


@keys.command("revoke")
@click.argument("key_id")
@provider_option
@json_option
@handle_errors
def revoke(key_id: str, provider: str | None, cosign_key: str | None, as_json: bool) -> None:
    """Revoke KEY_ID: what it signed no longer verifies. The active key is refused (rotate first).

    With Vault, this revokes that key version AND EVERY OLDER VERSION of the Transit key
    (Transit revokes by raising min_decryption_version).
    """
    p = open_provider(provider, cosign_key=cosign_key)
    before = p.public_keys()
    target = _resolve(before, key_id, _where(p))
    k = p.revoke(target.key_id)
    after = p.public_keys()
    was = {b.key_id: b.status for b in before}
    newly = [a for a in after if a.status == "revoked" and was.get(a.key_id) != "revoked"]
    if as_json:
        print_json({"revoked": _as_json(k), "newlyRevoked": [_as_json(a) for a in newly]})
        return
    if not newly:
        out.print(f"{k.key_id} was already revoked", markup=False)
        return
    out.print(f"revoked {k.key_id}" + (f" (version {k.version})" if k.version is not None else ""), markup=False)
    others = [a for a in newly if a.key_id != k.key_id]
    if k.version is not None:
        out.print(f"Transit revokes by version: min_decryption_version is now {k.version + 1}, so version "
                  f"{k.version} and every older version are revoked", markup=False)
    for a in others:
        out.print(f"also revoked {a.key_id} (version {a.version})", markup=False)
