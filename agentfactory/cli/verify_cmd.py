"""`agentfactory verify` and `agentfactory trust`: the verifier from the command line."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

import click

from ..errors import AgentFactoryError, NotFoundError, ValidationFailed
from ..evidence import Evidence, collect
from ..fetchverify import is_bare_name, resolve_in_stage, verify_stored
from ..fsutil import atomic_write
from ..policy import PolicyEngine
from ..policy_select import open_engine, policy_engine_options
from ..promotion import DEFAULT_ENTRY_STAGE
from ..sigstore_bundles import KeylessIdentity, KeylessPolicy
from ..stages import check_stage
from ..store import ArtifactStore, open_store, split_reference
from ..store.base import MAX_WASM_BYTES
from ..trust import TrustPolicy, from_public_keys, load_trust_policy, to_yaml
from ..verifier import Verdict, refuse, verify
from .common import (
    EXIT_OK,
    EXIT_PROBLEMS,
    EXIT_USAGE,
    err,
    handle_errors,
    json_option,
    out,
    policies_option,
    print_json,
    store_option,
)

policy_option = click.option("--policy", "policy_path", type=click.Path(dir_okay=False, path_type=Path),
                             envvar="AGENTFACTORY_TRUST_POLICY",
                             help="TrustPolicy file (default: trust the key provider's keys).")
entry_stage_option = click.option(
    "--entry-stage", default=DEFAULT_ENTRY_STAGE, show_default=True, envvar="AGENTFACTORY_ENTRY_STAGE",
    help="The stage fed from the store, which needs no promotion (the stage graph's first stage).")
def provider_option(func: Any) -> Any:
    """`--key-provider local|vault|cosign` and, for cosign, `--cosign-key REF`."""
    from .keys_cmd import cosign_key_context_option

    func = cosign_key_context_option(func)
    return click.option("--key-provider", "provider", type=click.Choice(["local", "vault", "cosign"]), default=None,
                        envvar="AGENTFACTORY_KEY_PROVIDER", help="Where the keys live (default: local).")(func)


def _open_provider(provider: str | None) -> Any:
    from ..keys import open_provider
    from .keys_cmd import cosign_key_of

    return open_provider(provider, cosign_key=cosign_key_of())


def default_policy(provider: str | None) -> TrustPolicy:
    """The key provider's keys as build keys, the embedded promoter keyring's keys as promoters (its first
    key made on first use, so a node started before the first promotion trusts it), and the embedded
    transparency log's key when that log exists here."""
    from ..promotion import promoter_keyring
    from ..tlog.log import PUBLIC_KEY_FILE, default_tlog_dir

    p = _open_provider(provider)
    pem_path = default_tlog_dir() / PUBLIC_KEY_FILE
    logs = [pem_path.read_bytes()[:16384]] if pem_path.is_file() else None
    promoters = promoter_keyring(create=True).public_keys()
    source = f"embedded default ({p.name} keys, local promoter key" + (", embedded transparency log)" if logs else ")")
    return from_public_keys(p.public_keys(), source=source, log_keys=logs, promoters=promoters)


def verify_ref(ref: str, store: ArtifactStore, policy: TrustPolicy, engine: PolicyEngine | None = None,
               stage: str = "dev", entry_stage: str = DEFAULT_ENTRY_STAGE) -> Verdict:
    """Verify a store reference, or a .wasm file by its digest, against `policy` (and the artifact policy).

    Beyond the entry stage, a bare name is the version promoted there (as on a node), not the highest tag."""
    path = Path(ref)
    if path.is_file():
        local = path.read_bytes()[: MAX_WASM_BYTES + 1]
        digest = "sha256:" + hashlib.sha256(local).hexdigest()
        try:
            agent = store.resolve(digest)
        except NotFoundError:
            return verify(digest, local, Evidence(problems=[
                f"{digest} is not in {store.url}: nothing was ever signed with these bytes "
                "(a modified copy, or never built by the pipeline)"]), policy, engine=engine, stage=stage,
                entry_stage=entry_stage)
        return verify(digest, local, collect(store, agent), policy, engine=engine, stage=stage, name=agent.name,
                      version=agent.version, entry_stage=entry_stage)
    agent = resolve_in_stage(store, ref, policy, stage, entry_stage) if is_bare_name(ref) else store.resolve(ref)
    return verify_stored(store, agent, policy, engine=engine, stage=stage, entry_stage=entry_stage)[0]


def _in_store(store: ArtifactStore, ref: str) -> bool:
    """Whether the store holds REF at all: an agent that exists but is not promoted to the stage is denied
    (exit 1); a reference to nothing is a reference error (exit 2, docs/cli.md)."""
    try:
        store.resolve(ref)
    except AgentFactoryError:
        return False
    return True


def print_verdict(ref: str, verdict: Verdict, policy_source: str) -> None:
    from rich.table import Table  # only for people: `--json` does not import it

    table = Table(title=f"{ref}  {verdict.digest}", title_justify="left")
    table.add_column("check")
    table.add_column("ok")
    table.add_column("reason", overflow="fold")
    for c in verdict.checks:
        table.add_row(c.name, "[green]✓[/green]" if c.ok else "[red]✗[/red]", c.reason)
    out.print(table)
    word = "[green]ALLOWED[/green]" if verdict.allowed else "[red]DENIED[/red]"
    out.print(f"{word}  score {verdict.score:.1f}/10  (trust policy: {policy_source})")


@click.command("verify")
@click.argument("ref")
@policy_option
@provider_option
@click.option("--stage", default="dev", show_default=True,
              help="Judge the artifact policy for this stage, and prove the artifact promoted to it.")
@entry_stage_option
@policies_option
@policy_engine_options
@store_option
@json_option
@handle_errors
def verify_cmd(ref: str, policy_path: Path | None, provider: str | None, stage: str, entry_stage: str,
               policies_dir: Path | None, store_url: str | None, as_json: bool) -> None:
    """May REF run? REF: name@sha256:…, name:version, name, a path to a .wasm file, or a full
    registry reference oci://HOST/PREFIX/NAME@sha256:….

    Exit code 0 when allowed, 1 when denied (every failed check says why), 2 when REF is not in the store
    or the stage is unknown (the verdict is printed all the same).
    """
    ref_store, ref = split_reference(ref)
    engine = open_engine(policies_dir)
    check_stage(stage, engine)
    check_stage(entry_stage, engine, option="--entry-stage")
    store = open_store(ref_store or store_url, existing=True)
    code = EXIT_PROBLEMS
    try:
        policy = load_trust_policy(policy_path) if policy_path else default_policy(provider)
        verdict = verify_ref(ref, store, policy, engine, stage, entry_stage)
        source = policy.source
    except ValidationFailed as exc:  # a policy that does not load refuses everything
        verdict = refuse(ref, "trust-policy", f"the trust policy does not load, so nothing is trusted: {exc}")
        source = str(policy_path)
    except NotFoundError as exc:
        verdict = refuse(ref, "artifact", str(exc))
        source = str(policy_path or "n/a")
        code = EXIT_PROBLEMS if _in_store(store, ref) else EXIT_USAGE  # not promoted is a denial, absent a typo
    except AgentFactoryError as exc:
        verdict = refuse(ref, "verifier", str(exc))
        source = str(policy_path or "n/a")
    if as_json:
        print_json(verdict.to_json())
    else:
        print_verdict(ref, verdict, source)
    sys.exit(EXIT_OK if verdict.allowed else code)


@click.group("trust")
def trust() -> None:
    """Trust policies: which keys, builders and repositories the verifier trusts."""


@trust.command("init")
@provider_option
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the policy here (default: stdout).")
@click.option("--builder", "builders", multiple=True, help="Trusted builder id (repeatable).")
@click.option("--repository", "repositories", multiple=True, help="Trusted source repository glob (repeatable).")
@click.option("--tlog-key", "tlog_keys", multiple=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="A transparency log's public key (PEM; repeatable): every signature must then be in it.")
@click.option("--keyless-identity", "keyless", multiple=True, metavar="ISSUER=SUBJECT",
              help="Trust Sigstore keyless signatures by this identity (repeatable), e.g. "
                   "https://token.actions.githubusercontent.com=https://github.com/OWNER/REPO/.github/workflows/"
                   "release.yml@refs/heads/main.")
@handle_errors
def trust_init(provider: str | None, output: Path | None, builders: tuple[str, ...],
               repositories: tuple[str, ...], tlog_keys: tuple[Path, ...], keyless: tuple[str, ...]) -> None:
    """Write a TrustPolicy that trusts the key provider's current keys, the local promoter key as the only
    promoter (made on first use), and the given transparency logs."""
    from ..promotion import promoter_keyring
    from ..provenance import DEFAULT_BUILDER_ID

    keys = _open_provider(provider).public_keys()
    promoters = promoter_keyring(create=True).public_keys()
    from ..tlog.note import load_log_public_key

    log_pems = [p.read_bytes()[:16384] for p in tlog_keys]
    for path, pem in zip(tlog_keys, log_pems, strict=True):
        load_log_public_key(pem, str(path))  # name the file that is not a log key
    identities = []
    for item in keyless:
        issuer, sep, subject = item.partition("=https://") if item.startswith("https://") else ("", "", "")
        if not sep or not issuer or "=" in issuer:
            from ..errors import InputError

            raise InputError("--keyless-identity", f"{item!r}: write ISSUER=SUBJECT, e.g. "
                                                   "https://token.actions.githubusercontent.com=https://github.com/…")
        identities.append(KeylessIdentity(issuer=issuer, subject="https://" + subject))
    policy = KeylessPolicy(identities=tuple(identities)) if identities else None
    text = to_yaml(keys, builders or (DEFAULT_BUILDER_ID,), repositories or ("*",), log_pems, keyless=policy,
                   promoters=promoters)
    if output:
        atomic_write(output, text.encode())
        err.print(f"wrote {output} ({len(keys)} keys, {len(promoters)} promoter keys)", markup=False)
    else:
        sys.stdout.write(text)
