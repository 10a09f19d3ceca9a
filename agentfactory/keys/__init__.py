"""Signing-key providers: local keyring (embedded default) and Vault/OpenBao Transit."""
