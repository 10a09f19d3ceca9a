"""Signing-key providers: local keyring (embedded default), Vault/OpenBao Transit, and cosign.

`open_provider()` picks one by name or `$AGENTFACTORY_KEY_PROVIDER`. The Transit and cosign
providers are imported only when asked for: hvac (and requests) cost ~0.1 s of start-up that the
local keyring, the webhook and the runtime do not need. `cosign` signs through the cosign binary
with a cosign key file or `hashivault://NAME` (`--cosign-key`, `$AGENTFACTORY_COSIGN_KEY`).

Keyless Sigstore signing (`sigstore`, `sigstore_keyless.KeylessSigner`) is not a key provider: it
holds no keys. The pipeline takes it with `--key-provider sigstore`; here the name is refused with
what to use instead.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from .base import KeyProvider, KeyStatus, PublicKey, Signature, key_id
from .local import LocalKeyring

if TYPE_CHECKING:
    from .cosign import CosignKeyProvider
    from .vault import TransitKeyProvider

__all__ = ["COSIGN_KEY_ENV", "KEYLESS", "PROVIDERS", "PROVIDER_ENV", "CosignKeyProvider", "KeyProvider", "KeyStatus",
           "LocalKeyring", "PublicKey", "Signature", "TransitKeyProvider", "key_id", "open_provider"]

PROVIDER_ENV = "AGENTFACTORY_KEY_PROVIDER"
PROVIDERS = ("local", "vault", "cosign")
COSIGN_KEY_ENV = "AGENTFACTORY_COSIGN_KEY"  # the cosign key reference (cosign.COSIGN_KEY_ENV, without importing it)
KEYLESS = "sigstore"  # the pipeline's keyless signing; not a key provider


def open_provider(name: str | None = None, *, cosign_key: str | None = None) -> KeyProvider:
    """The provider named `name`, else `$AGENTFACTORY_KEY_PROVIDER`, else the local keyring.

    `vault` reads its settings (VAULT_ADDR, credentials, Transit mount and key) from the
    environment; `cosign` signs with `cosign_key` (`--cosign-key`), else `$AGENTFACTORY_COSIGN_KEY`;
    see docs/keys.md. A `cosign_key` given for another provider is refused, not ignored.
    """
    chosen = (name or os.environ.get(PROVIDER_ENV) or "local").strip().lower()
    if cosign_key is not None and chosen != "cosign":
        raise ConfigError(f"--cosign-key {cosign_key!r} names a cosign key, but the key provider is {chosen!r}: "
                          "add --key-provider cosign, or leave --cosign-key out")
    if chosen == "cosign":
        from .cosign import CosignKeyProvider

        return CosignKeyProvider(cosign_key)
    if chosen == "local":
        return LocalKeyring()
    if chosen == "vault":
        from .vault import TransitKeyProvider

        return TransitKeyProvider()
    source = "--provider" if name else PROVIDER_ENV
    if chosen == KEYLESS:
        raise ConfigError(f"{source}={chosen!r}: keyless Sigstore signing holds no keys, so it cannot list, rotate "
                          "or revoke them, nor be a trust policy's keys; use it for `pipeline run --key-provider "
                          "sigstore`, and verify with a trust policy naming the signer (spec.keyless, docs/keys.md)")
    raise ConfigError(f"{source}={chosen!r}: unknown key provider; use one of {', '.join(PROVIDERS)}")


def __getattr__(attr: str) -> Any:
    if attr == "TransitKeyProvider":
        from .vault import TransitKeyProvider

        return TransitKeyProvider
    if attr == "CosignKeyProvider":
        from .cosign import CosignKeyProvider

        return CosignKeyProvider
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")
