"""`agentfactory scan`, `agentfactory osv` and `agentfactory vex`: vulnerability scanning by hand.

`scan` judges an SBOM file, or a stored agent's verified SBOM, with the same scanners, VEX handling
and gate as the pipeline; `--attest` signs the result and attaches it to the agent, which is how a
published agent is re-judged against a newer database (the verifier takes the newest scan).
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path
from typing import Any

import click

from ..errors import InputError
from ..fsutil import atomic_write
from ..intoto import parse_statement
from ..scan.base import OSV_DB_ENV, SCANNER_NAMES, osv_db_dir
from ..scan.gate import FAIL_ON, Gate
from ..scan.report import ScanReport
from .common import EXIT_OK, EXIT_PROBLEMS, err, handle_errors, json_option, out, print_json, store_option
from .keys_cmd import cosign_key_context_option, cosign_key_of
from .verify_cmd import default_policy, policy_option, provider_option

osv_db_option = click.option("--osv-db", type=click.Path(file_okay=False, path_type=Path), default=None,
                             help=f"OSV database folder (default: ${OSV_DB_ENV}, else $AGENTFACTORY_HOME/osv).")


@click.command("scan")
@click.argument("target")
@click.option("--vex", "vex", multiple=True, type=click.Path(exists=True, path_type=Path),
              help="VEX document (OpenVEX or CycloneDX, plain or signed), or a folder of them; repeatable.")
@click.option("--require-signed-vex", is_flag=True, help="Refuse plain VEX documents, as the pipeline does.")
@click.option("--fail-on", type=click.Choice(FAIL_ON), default="high", show_default=True,
              help="Lowest severity that fails the gate (none: report only).")
@click.option("--ignore-unfixed", is_flag=True, help="Findings without a published fix do not fail the gate.")
@click.option("--fail-on-unscanned", is_flag=True,
              help="Any component the scanners could not judge fails the gate (a scan that judged nothing always "
                   "fails).")
@click.option("--scanner", "scanners", multiple=True, type=click.Choice(SCANNER_NAMES),
              help="Scanner to run (repeatable). Default: the embedded OSV matcher, plus grype and trivy when on PATH.")
@osv_db_option
@click.option("--product", default=None, metavar="PURL",
              help="The product VEX statements must name, for an SBOM without metadata.component.purl.")
@click.option("--attest", is_flag=True, help="TARGET is a stored agent: sign this scan and attach it as evidence.")
@click.option("--keyless", is_flag=True,
              help="With --attest: sign keylessly with Sigstore (the CI's OIDC identity, e.g. GitHub Actions); the "
                   "bundle carries its own Rekor entry, so --tlog is not used.")
@click.option("--sigstore-instance", type=click.Choice(["production", "staging"]), default="production",
              show_default=True, help="With --keyless: the Sigstore instance.")
@click.option("--tlog", "tlog_url", envvar="AGENTFACTORY_TLOG", default="embedded", show_default=True,
              metavar="embedded|none|URL", help="With --attest: the transparency log the new attestation goes to.")
@click.option("--tlog-key", type=click.Path(dir_okay=False, exists=True, path_type=Path), default=None,
              envvar="AGENTFACTORY_TLOG_KEY", help="With --attest and a Rekor URL: the log's public key (PEM).")
@policy_option
@provider_option
@store_option
@json_option
@click.option("--format", "fmt", type=click.Choice(["text", "json", "sarif"]), default=None,
              help="What to print: the report (text, default), the JSON report, or SARIF 2.1.0 (GitHub code "
                   "scanning: one result per open finding, on the SBOM file).")
@handle_errors
def scan_cmd(target: str, vex: tuple[Path, ...], require_signed_vex: bool, fail_on: str, ignore_unfixed: bool,
             fail_on_unscanned: bool, scanners: tuple[str, ...], osv_db: Path | None, product: str | None,
             attest: bool, keyless: bool, sigstore_instance: str, tlog_url: str, tlog_key: Path | None,
             policy_path: Path | None, provider: str | None, store_url: str | None, as_json: bool,
             fmt: str | None) -> None:
    """Scan TARGET for known vulnerabilities: a CycloneDX SBOM file, or a stored agent (name@sha256:…,
    name:version, name), whose signed SBOM is verified first.

    An SBOM file is validated exactly as the pipeline validates the SBOMs it writes (strict CycloneDX
    1.6, duplicate keys refused). Exit code 0 when the gate passes, 1 when a finding blocks or
    nothing was scanned, 2 for bad input or a missing database.
    """
    from ..scan.base import open_scanners
    from ..scan.coverage import coverage_problems
    from ..scan.report import scan, subject_of
    from ..scan.vexdocs import load_vex
    from ..trust import load_trust_policy

    if as_json and fmt not in (None, "json"):
        raise click.UsageError(f"--json and --format {fmt} ask for two outputs: give one")
    fmt = "json" if as_json else fmt or "text"
    gate = Gate(fail_on, ignore_unfixed)
    if keyless and not attest:
        raise InputError("--keyless", "signs the scan attestation: give --attest too")
    signer = None
    if keyless:  # the OIDC token is read now, so a job that cannot sign fails before it scans
        from ..keys.sigstore_keyless import KeylessSigner

        signer = KeylessSigner("staging" if sigstore_instance == "staging" else "production")
    policy = load_trust_policy(policy_path) if policy_path else default_policy(provider)
    path = Path(target)
    agent = store = None
    sbom_path: Path | None = None
    if path.is_file():
        sbom_path = path
        if attest:
            raise InputError(target, "--attest needs a stored agent, not an SBOM file")
        from ..sbom import MAX_SBOM_BYTES, load_sbom

        bom = load_sbom(path.read_bytes()[: MAX_SBOM_BYTES + 1], target)  # the pipeline's own validation
        subject = product or (subject_of(bom, target) if _has_subject(bom) else "")
    else:
        agent, bom, store = _verified_sbom(target, store_url, policy)
        subject = subject_of(bom, f"{target} (signed SBOM)")
    vex_docs = load_vex(list(vex), trust=policy, require_signed=require_signed_vex) if vex else []
    if vex_docs and not subject:
        raise InputError(target, "the SBOM names no product (metadata.component.purl): give --product PURL so "
                                 "VEX statements can be matched")
    report = scan(bom, open_scanners(scanners, osv_db=osv_db), subject=subject, vex=vex_docs,
                  sbom_path=sbom_path)
    attested = None
    if attest and agent is not None:
        attested = (_attest_keyless(store, agent, report, signer) if signer is not None
                    else _attest(store, agent, report, provider, tlog_url, tlog_key))
    blocking = gate.blocking(report.findings)
    uncovered = coverage_problems(bom, report.unscanned, fail_on_unscanned=fail_on_unscanned)
    if fmt == "sarif":
        from ..sarif import dumps

        if sbom_path is not None:
            where = sarif_location(sbom_path)
        else:  # where `pipeline run --sbom-root .` writes the agent's SBOM in the repository
            assert agent is not None
            where = f"sbom/{agent.name}/{agent.version}.cdx.json"
        sys.stdout.write(dumps(sarif_of(report, where)))
    elif fmt == "json":
        doc = report.to_json(gate)
        doc["gate"]["coverage"] = uncovered
        doc["gate"]["passed"] = doc["gate"]["passed"] and not uncovered
        if attested:
            doc["attestation"] = attested
        print_json(doc)
    else:
        from ..scan.report import render_text

        for line in render_text(report, gate):
            out.print(line, markup=False)
        for problem in uncovered:
            out.print(f"gate: FAILED, {problem}", markup=False)
        if attested:
            out.print(f"attached a signed scan attestation to {attested['agent']}"
                      + (f" (log index {attested['logIndex']})" if attested.get("logIndex") is not None else ""),
                      markup=False)
    sys.exit(EXIT_PROBLEMS if blocking or uncovered else EXIT_OK)


def sarif_of(report: ScanReport, where: str) -> dict[str, Any]:
    """The scan as a SARIF 2.1.0 log: one result per open finding (a VEX-suppressed one is answered, not
    open), each on `where`, the SBOM file relative to the repository root."""
    from ..sarif import sarif_log, vulnerability_result, vulnerability_rule

    open_findings = [f.to_json() for f in report.findings if not f.suppressed]
    return sarif_log("agentfactory scan", [vulnerability_result(f, where) for f in open_findings],
                     [vulnerability_rule(f) for f in open_findings])


def sarif_location(sbom: Path) -> str:
    """Where a SARIF result about `sbom` points: its path from the root of the Git repository that holds it
    (what GitHub resolves `%SRCROOT%` to), else its file name."""
    path = sbom.resolve()
    for folder in path.parents:
        if (folder / ".git").exists():
            return path.relative_to(folder).as_posix()
    return path.name


def _has_subject(bom: dict[str, Any]) -> bool:
    meta = bom.get("metadata")
    comp = meta.get("component") if isinstance(meta, dict) else None
    return isinstance(comp, dict) and isinstance(comp.get("purl"), str) and bool(comp.get("purl"))


def _verified_sbom(ref: str, store_url: str | None, policy: Any) -> tuple[Any, dict[str, Any], Any]:
    """The agent and its SBOM, only when the signature and the SBOM attestation verify."""
    from ..fetchverify import verify_stored
    from ..store import open_store, split_reference

    ref_store, ref = split_reference(ref)
    store = open_store(ref_store or store_url, existing=True)
    agent = store.resolve(ref)
    verdict, _ = verify_stored(store, agent, policy)
    failed = [c for c in verdict.checks if not c.ok and c.name in ("digest", "signature", "key-status", "sbom")]
    if failed or not isinstance(verdict.sbom, dict):
        reasons = "; ".join(f"{c.name}: {c.reason}" for c in failed) or "no verified SBOM"
        raise InputError(f"{agent.name}@{agent.digest}", f"cannot scan: its SBOM does not verify ({reasons})")
    return agent, verdict.sbom, store


def _attest(store: Any, agent: Any, report: ScanReport, provider: str | None, tlog_url: str,
            tlog_key: Path | None) -> dict[str, Any]:
    """Sign the scan as an in-toto attestation about the agent, log it, attach it."""
    from ..dsse import INTOTO_PAYLOAD_TYPE, sign_envelope
    from ..evidence import agent_statement, attach_attestations, proposed_for_envelope
    from ..intoto import SCAN_V1
    from ..keys import open_provider
    from ..tlog.connect import open_tlog
    from ..tlog.signing_record import record_signing

    keys = open_provider(provider)
    # The OCI manifest digest first, as the pipeline's attestations: `cosign verify-attestation` finds it on the image
    statement = agent_statement(agent.name, agent.digest, SCAN_V1, report.to_predicate(), agent.manifest_digest)
    envelope = sign_envelope(INTOTO_PAYLOAD_TYPE, statement, keys)
    key_id = envelope.signatures[0].keyid
    # Before logging, like the pipeline: `audit keys` accounts every log entry by our keys by this record.
    record_signing(store.url, agent.name, agent.version, agent.digest, None, [envelope])
    log, _ = open_tlog(tlog_url, tlog_key)
    records: list[bytes] = []
    index = None
    if log is not None:
        pem = {k.key_id: k.pem for k in keys.public_keys()}[key_id]
        added = log.add(proposed_for_envelope(envelope.to_json(), pem))  # LogError: nothing is attached
        records, index = [added.entry.to_json()], added.entry.log_index
    attach_attestations(store, agent, [(SCAN_V1, envelope)], records)
    return {"agent": f"{agent.name}@{agent.digest}", "keyId": key_id, "logIndex": index}


def _attest_keyless(store: Any, agent: Any, report: ScanReport, signer: Any) -> dict[str, Any]:
    """Sign the scan as a Sigstore DSSE bundle (logged in the instance's Rekor) and attach it."""
    from ..evidence import attach_bundles
    from ..intoto import SCAN_V1, make_statement

    bundle = signer.sign_statement(make_statement(agent.name, agent.digest, SCAN_V1, report.to_predicate()))
    attach_bundles(store, agent, [(SCAN_V1, bundle)])
    return {"agent": f"{agent.name}@{agent.digest}", "identity": signer.token_identity, "logIndex": None}


@click.group("osv")
def osv() -> None:
    """The embedded matcher's offline OSV database."""


@osv.command("import")
@click.argument("source", type=click.Path(exists=True, path_type=Path))
@osv_db_option
@click.option("--allow-empty", is_flag=True,
              help="Replace the database even when the export holds no usable record (an empty database matches "
                   "nothing).")
@json_option
@handle_errors
def osv_import(source: Path, osv_db: Path | None, allow_empty: bool, as_json: bool) -> None:
    """Load an OSV export into the database: a folder of OSV records (JSON or YAML, e.g. a clone of
    the PyPA or GitHub advisory database) or the per-ecosystem all.zip OSV publishes. Replaces the
    database atomically; records that do not parse are skipped, each named. An export with no usable
    record is refused (exit 2, the database unchanged) unless --allow-empty."""
    from ..config import cache_dir
    from ..scan.osv import OsvDatabase, import_osv

    dest = (osv_db or osv_db_dir()).resolve()
    count, warnings = import_osv(source, dest, allow_empty=allow_empty)
    if count == 0:  # --allow-empty: there is nothing to index (OsvDatabase refuses an empty folder)
        if as_json:
            print_json({"database": str(dest), "records": 0, "advisories": 0, "skipped": warnings})
        else:
            out.print(f"emptied the OSV database at {dest} (--allow-empty): scans now fail until records are "
                      "imported", markup=False)
        return
    db = OsvDatabase(dest, cache_dir=cache_dir("osv"))  # index now, so the first scan is fast
    if as_json:
        print_json({"database": str(dest), "records": count, "advisories": len(db), "skipped": warnings})
    else:
        for w in warnings:
            err.print(f"skipped: {w}", markup=False)
        out.print(f"imported {count} OSV record(s) into {dest} ({len(db)} indexed, {len(warnings)} skipped)",
                  markup=False)


@click.group("vex")
def vex() -> None:
    """VEX documents: say, and sign, why a vulnerability does not affect an agent."""


@vex.command("sign")
@click.argument("document", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the signed envelope here (default: DOCUMENT with .dsse.json).")
@click.option("--key-provider", "provider", type=click.Choice(["local", "vault", "cosign", "sigstore"]), default=None,
              help="Who signs: the local keyring (default), Vault Transit, cosign (--cosign-key), or Sigstore keyless "
                   "(GitHub Actions OIDC; writes a Sigstore bundle).")
@cosign_key_context_option
@click.option("--sigstore-instance", type=click.Choice(["production", "staging"]), default="production",
              show_default=True, help="With --key-provider sigstore: the Sigstore instance.")
@json_option
@handle_errors
def vex_sign(document: Path, output: Path | None, provider: str | None, sigstore_instance: str,
             as_json: bool) -> None:
    """Sign an OpenVEX or CycloneDX VEX document (checked first) as an in-toto statement: a DSSE
    envelope by a key, or a Sigstore bundle signed keylessly; `pipeline run --vex` believes either
    when the trust policy trusts the signer."""
    from ..keys import open_provider
    from ..scan.vex import MAX_VEX_BYTES
    from ..scan.vexdocs import sign_vex, vex_statement

    data = document.read_bytes()[: MAX_VEX_BYTES + 1]
    if provider == "sigstore":
        from ..keys.sigstore_keyless import KeylessSigner

        statement = vex_statement(data, str(document))  # checked before an identity token is asked for
        signer = KeylessSigner("staging" if sigstore_instance == "staging" else "production")
        bundle = signer.sign_statement(statement)
        target = output or document.with_name(document.name.removesuffix(".json") + ".sigstore.json")
        atomic_write(target, bundle)
        err.print(f"signed {document} keylessly as {signer.token_identity} → {target}", markup=False)
        if as_json:
            print_json(_vex_signed(target, None, "sigstore", statement))
        return
    from ..dsse import parse_envelope
    from ..tlog.signing_record import record_signing

    keys = open_provider(provider, cosign_key=cosign_key_of())
    if not keys.public_keys():
        keys.create()
    signed = sign_vex(data, str(document), keys)
    envelope = parse_envelope(signed, str(document))
    subjects = parse_statement(envelope.payload, str(document)).subjects
    # Every signature by our keys is recorded (audit keys); a VEX document is for no store.
    record_signing("", subjects[0][0], "", subjects[0][1], None, [envelope])
    target = output or document.with_name(document.name.removesuffix(".json") + ".dsse.json")
    atomic_write(target, signed)
    digest = hashlib.sha256(data).hexdigest()
    key_id = envelope.signatures[0].keyid
    err.print(f"signed {document} (sha256:{digest[:16]}…) with {keys.name} key {key_id[:16]}… → {target}",
              markup=False)
    if as_json:
        print_json(_vex_signed(target, key_id, keys.name, envelope.payload))


def _vex_signed(target: Path, key_id: str | None, provider: str, statement: bytes) -> dict[str, Any]:
    """What `vex sign --json` prints: where the signed document went, who signed, and what it is about."""
    parsed = parse_statement(statement, str(target))
    return {"output": str(target), "keyId": key_id, "provider": provider, "predicateType": parsed.predicate_type,
            "subjects": [{"name": name, "digest": digest} for name, digest in parsed.subjects]}
