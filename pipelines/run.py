"""The pipeline: discover → validate → build → test → publish, one template at a time.

A template that fails at any stage is reported with every reason and the others go on.
Validation of all templates happens first (it is cheap and finds duplicate names); builds
then run in parallel, each publishing its own artifact atomically.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentfactory import __version__, evidence
from agentfactory.artifact import ANN_DESCRIPTION, ANN_REVISION, AgentArtifact, build_agent_artifact
from agentfactory.config import cache_dir, toolchain_cache
from agentfactory.digest import digest_of
from agentfactory.dsse import INTOTO_PAYLOAD_TYPE, sign_envelope
from agentfactory.errors import (
    AgentFactoryError,
    BuildError,
    InputError,
    NotFoundError,
    StoreError,
    ValidationFailed,
)
from agentfactory.evidence import ArtifactSignature, Evidence
from agentfactory.fsutil import atomic_write
from agentfactory.intoto import CYCLONEDX_BOM, SCAN_V1, SLSA_PROVENANCE_V1, make_statement
from agentfactory.key_bundles import COSIGN_SIGN_V1
from agentfactory.keys.base import KeyProvider
from agentfactory.keys.sigstore_keyless import KeylessSigner
from agentfactory.policy import PolicyEngine, template_input
from agentfactory.provenance import DEFAULT_BUILDER_ID
from agentfactory.provenance import predicate as provenance_predicate
from agentfactory.runspec import from_template
from agentfactory.sigstore_bundles import KeylessPolicy
from agentfactory.store import ArtifactStore, StoredAgent
from agentfactory.template import MANIFEST, Template, discover, folder_name_problem, load_template
from agentfactory.tlog import signing_record
from agentfactory.tlog.base import LogError, TransparencyLog
from agentfactory.trust import TrustPolicy, from_public_keys
from agentfactory.verifier import record_decision, verify

from . import casetests, toolchain
from .cache import BuildCache, CacheEntry, cache_key
from .gitinfo import GitView, Origin
from .publishguard import refuse_republish

if TYPE_CHECKING:
    from agentfactory.wasm import ModuleInfo

# Imported where used, not here: a run whose templates are all unchanged builds, inspects and compiles
# nothing (concurrent.futures, agentfactory.wasm, pipelines.pybuild and compilecheck: issue 23).

STAGES = ("validate", "build", "test", "sbom", "scan", "sign", "log", "publish")
Progress = Callable[[str, str], None]  # (template display path, stage or final status)


@dataclass
class TemplateResult:
    """One row of the summary, and one entry of the `--json` report."""

    path: str
    name: str
    version: str | None = None
    digest: str | None = None
    ref: str | None = None
    status: str = "failed"  # built | unchanged | failed
    errors: list[str] = field(default_factory=list)
    size: int | None = None
    tests: dict[str, int] = field(default_factory=dict)
    build: dict[str, Any] = field(default_factory=dict)
    evidence: dict[str, Any] = field(default_factory=dict)
    scan: dict[str, Any] | None = None  # the scan report (findings, VEX, gate), when the template was scanned
    scan_lines: list[str] = field(default_factory=list)  # the same, for people
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "digest": self.digest, "ref": self.ref,
                "status": self.status, "errors": self.errors, "path": self.path, "size": self.size,
                "tests": self.tests, "build": self.build, "evidence": self.evidence, "scan": self.scan,
                "seconds": round(self.seconds, 4)}


@dataclass
class PipelineReport:
    templates: list[TemplateResult]
    store: str
    skipped: list[str] = field(default_factory=list)  # not changed since --changed-since

    @property
    def ok(self) -> bool:
        return all(t.status != "failed" for t in self.templates)

    def to_json(self) -> dict[str, Any]:
        counts = {s: sum(t.status == s for t in self.templates) for s in ("built", "unchanged", "failed")}
        return {"templates": [t.to_json() for t in self.templates], "store": self.store,
                "skipped": self.skipped, "summary": counts}


def _display(path: Path) -> str:
    """Paths as the user typed them: relative to the working directory when inside it."""
    absolute = path.absolute()
    return str(absolute.relative_to(Path.cwd())) if absolute.is_relative_to(Path.cwd()) else str(absolute)


@dataclass
class _Job:
    folder: Path
    display: str
    result: TemplateResult
    template: Template | None = None
    findings: list[dict[str, Any]] = field(default_factory=list)
    base: dict[str, Any] | None = None


@dataclass(frozen=True)
class Scanning:
    """How the scan stage scans: which scanners (none named: the embedded OSV matcher, plus Grype and
    Trivy when on PATH), the OSV folder, the VEX documents, and whether unsigned VEX is refused.
    The gate's threshold is the artifact policy's (blocking_severities), not set here."""

    scanners: tuple[str, ...] = ()
    osv_db: Path | None = None
    vex: tuple[Path, ...] = ()
    require_signed_vex: bool = True
    fail_on: str = "high"  # only for the human report; the artifact policy decides
    ignore_unfixed: bool = False  # likewise
    exactly: tuple[str, ...] | None = None  # the policy's blocking severities, when not "fail_on and above"
    vex_trust: TrustPolicy | None = None  # whose signed VEX is believed; None: the signing keys'


class _Scanners:
    """The scanners, opened on first use and then shared by the build threads: an unchanged run
    never reads the OSV index, a changed one reads it once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._opened: list[Any] | None = None

    def get(self, cfg: Scanning) -> list[Any]:
        from agentfactory.scan.base import open_scanners

        with self._lock:
            if self._opened is None:
                self._opened = list(open_scanners(cfg.scanners, osv_db=cfg.osv_db))
            return self._opened


@dataclass(frozen=True)
class Signing:
    """How the sign stage signs: the key provider, the builder id it claims, where SBOMs go, the
    transparency log every signature is recorded in (with its public key, pinned, not fetched), and
    how the SBOM is scanned before anything is signed.

    With `keyless` (`--key-provider sigstore`), the artifact and its attestations are signed keylessly
    instead: Sigstore bundles, each logged in the instance's Rekor (so `tlog` is not used); the key
    provider then only names the keys signed VEX documents are checked against."""

    provider: KeyProvider
    builder_id: str = DEFAULT_BUILDER_ID
    sbom_dir: Path | None = None
    tlog: TransparencyLog | None = None
    tlog_key_pem: bytes | None = None
    scanning: Scanning = Scanning()
    scanners: _Scanners = field(default_factory=lambda: _Scanners(), compare=False)
    keyless: KeylessSigner | None = None
    signing_record: Path | None = None  # None: $AGENTFACTORY_SIGNING_RECORD or the state folder's
    resign: bool = False  # sign unchanged artifacts again (new signature, attestations and log entries)

    def log_key_pem(self) -> bytes | None:
        """The log's public key as pinned, or the log's own (the embedded log opened at its first use,
        agentfactory.tlog.connect.DeferredLog, is asked only when something was signed)."""
        if self.tlog_key_pem is not None or self.tlog is None:
            return self.tlog_key_pem
        return self.tlog.public_key_pem()


@dataclass
class _Made:
    """The evidence the sign stage made in memory, before publication: Sigstore bundles (an RSA signature
    and DSSE envelopes, each with its log entry; or keyless ones, with the identity that signed them)."""

    signature: ArtifactSignature | None
    sbom: bytes
    bundles: list[tuple[str | None, bytes]] = field(default_factory=list)  # (predicate type or None, bundle)
    keyless: KeylessPolicy | None = None

    def evidence(self) -> Evidence:
        """The evidence exactly as the store will hold it, read back as `collect` reads it."""
        return evidence.from_bundles([(f"pipeline (bundle: {p or 'signature'})", b) for p, b in self.bundles])


def run_pipeline(templates_dir: Path, store: ArtifactStore, *, changed_since: str | None = None,
                 jobs: int | None = None, progress: Progress | None = None,
                 run_tests: bool = True, signing: Signing | None = None,
                 engine: PolicyEngine | None = None) -> PipelineReport:
    """Run every template under `templates_dir` (or only those changed since a Git ref).

    Without `signing`, artifacts are published unsigned (the verifier will refuse them). With a
    policy `engine`, the template policy judges each template in validate (with the static
    findings) and after the build (with the module's imports), and the artifact policy judges
    the signed artifact, through the verifier, before anything is published.
    """
    notify: Progress = progress or (lambda _path, _stage: None)
    folders = discover(templates_dir)
    git = GitView(templates_dir)
    skipped: list[str] = []
    if changed_since:
        changed = git.changed_since(changed_since, folders)
        skipped = [_display(f) for f in folders if f not in changed]
        folders = [f for f in folders if f in changed]
    work = [_Job(f, _display(f), TemplateResult(path=_display(f), name=f.name)) for f in folders]

    for job in work:
        notify(job.display, "validate")
        _validate(job)
        if engine is not None and job.template is not None and not job.result.errors:
            _template_policy(job, engine, git, changed_since)
    _refuse_duplicate_names(work)

    cache = BuildCache(cache_dir("builds"))
    build_root = toolchain_cache()
    build_root.mkdir(parents=True, exist_ok=True)
    if signing is not None and signing.keyless is None and not signing.provider.public_keys():
        signing.provider.create()  # before the builds run in parallel: one first key, not one per thread

    def process(job: _Job) -> TemplateResult:
        started = time.perf_counter()
        if job.template is not None and not job.result.errors:
            try:
                _build_test_publish(job, job.template, git.origin(job.folder), store, cache, build_root,
                                    notify, run_tests, signing, engine)
            except AgentFactoryError as exc:
                job.result.errors.extend(_messages(exc))
            except Exception as exc:  # fail closed, but say what happened
                job.result.errors.append(f"{job.display}: internal error: {type(exc).__name__}: {exc}")
        if job.result.errors:
            job.result.status = "failed"
        job.result.seconds = time.perf_counter() - started
        notify(job.display, job.result.status)
        return job.result

    workers = max(1, min(jobs or os.cpu_count() or 1, len(work) or 1))
    if workers == 1:
        results = [process(j) for j in work]
    else:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="build") as pool:
            results = list(pool.map(process, work))
    return PipelineReport(templates=results, store=store.url, skipped=skipped)


def _messages(exc: AgentFactoryError) -> list[str]:
    if isinstance(exc, ValidationFailed):
        return [str(p) for p in exc.problems]
    return [str(exc)]


def _validate(job: _Job) -> None:
    manifest = f"{job.display}/{MANIFEST}"
    try:
        job.template = load_template(job.folder, manifest)
    except AgentFactoryError as exc:
        job.result.errors.extend(_messages(exc))
        return
    job.result.name, job.result.version = job.template.name, job.template.version
    problem = folder_name_problem(job.template, manifest)  # the same check and message as `template validate`
    if problem is not None:
        job.result.errors.append(str(problem))


def _template_policy(job: _Job, engine: PolicyEngine, git: GitView, changed_since: str | None,
                     module: ModuleInfo | None = None) -> bool:
    """Judge the template (and, after the build, its module's imports) with the template policy."""
    t = job.template
    assert t is not None
    if module is None:
        from agentfactory.sourcescan import scan_template  # the static validator: findings feed the policy

        job.findings = [f.to_json() for f in scan_template(t)]
        base_version = git.version_at(changed_since, job.folder) if changed_since else None
        job.base = {"version": base_version, "changed": True} if base_version else None
    decision = engine.decide("template", template_input(t, job.findings, module, job.base, path=job.display))
    record_decision(decision)
    job.result.errors.extend(f"{job.display}/{MANIFEST}: policy: {m}" for m in decision.deny)
    return decision.allow


def _refuse_duplicate_names(work: list[_Job]) -> None:
    by_name: dict[str, list[_Job]] = {}
    for job in work:
        if job.template is not None:
            by_name.setdefault(job.template.name, []).append(job)
    for name, jobs in by_name.items():
        if len(jobs) < 2:
            continue
        for job in jobs:
            others = ", ".join(f"{o.display}/{MANIFEST}" for o in jobs if o is not job)
            job.result.errors.append(f"{job.display}/{MANIFEST}: metadata.name: {name!r} is also declared "
                                     f"by {others}; template names must be unique")


def _build_test_publish(job: _Job, t: Template, origin: Origin, store: ArtifactStore, cache: BuildCache,
                        build_root: Path, notify: Progress, run_tests: bool, signing: Signing | None,
                        engine: PolicyEngine | None) -> None:
    r = job.result
    tool_id = toolchain.identity(t.language)
    key = cache_key(t, tool_id, origin.epoch, casetests.cases_sha(t) if run_tests else None)
    hit = cache.get(key, t.folder)
    if hit and store.has_agent(t.name, hit.digest):
        r.status, r.digest, r.size, r.tests, r.build = "unchanged", hit.digest, hit.size, hit.tests, hit.build
        r.ref = f"{t.name}:{t.version}@{hit.digest}"
        # The tag may have been moved by another build: make sure it names this artifact again.
        try:
            tagged = store.resolve(f"{t.name}:{t.version}").digest
        except NotFoundError:
            tagged = None
        stored = store.resolve(f"{t.name}@{hit.digest}")
        if tagged != hit.digest:
            refuse_republish(store, t.name, t.version, hit.digest, f"{job.display}/{MANIFEST}")
            stored = _publish(t, store, _artifact(t, store.fetch_wasm(hit.digest)[1], origin))
        if signing is not None:
            why = _resign_reason(hit, signing, store, stored)
            if why is None:
                r.evidence = {"signed": True, "reused": True}
            else:  # never signed (a crash, an unsigned run), its key revoked or rotated away, or --resign
                wasm = store.fetch_wasm(f"{t.name}@{hit.digest}")[1]
                again = _make_evidence(job, t, wasm, hit.build, signing, notify, store.url, stored.manifest_digest)
                if engine is None or _artifact_gate(job, t, hit.digest, wasm, again, signing, engine):
                    _attach(job, t, stored, store, again, signing)
                    r.evidence["resigned"] = why
                    if again.signature is not None:
                        cache.put(key, replace(hit, signed_by={**hit.signed_by, store.url: again.signature.keyid}))
        return

    from agentfactory.wasm import inspect

    from . import compilecheck, pybuild

    cases = casetests.load_cases(t, job.display) if run_tests else []  # parsed only when building
    notify(job.display, "build")
    started = time.time()
    built = toolchain.build(t, origin.epoch, build_root)
    info = (pybuild.judge_component(t, built.wasm, f"{job.display} (built component)") if t.language == "python"
            else inspect(built.wasm, f"{job.display} (built module)"))
    if not info.exported(t.entrypoint):
        raise BuildError(job.display, f"the module does not export the entrypoint {t.entrypoint!r} "
                                      "(spec.entrypoint)")
    limit = t.limits.memory_mib * 1024 * 1024
    if info.initial_memory_bytes > limit:
        raise BuildError(job.display, f"the module needs {info.initial_memory_bytes / 2**20:.2f} MiB of "
                                      f"linear memory at start, more than spec.limits.memoryMiB "
                                      f"({t.limits.memory_mib}); raise the limit or use less static data")
    compiled = compilecheck.compile_checked(t, built.wasm, f"{job.display} (built module)")  # before any signing
    finished = time.time()
    if engine is not None and not _template_policy(job, engine, GitView(t.folder), None, module=info):
        return

    if cases:
        notify(job.display, "test")
        outcomes = casetests.run_cases(t, compiled, cases)
        failed = [c for c in outcomes if not c.ok]
        r.tests = {"passed": len(outcomes) - len(failed), "total": len(outcomes)}
        if failed:
            r.errors.extend(f"{job.display}/{casetests.CASES_FILE}: case {c.name!r}: {c.reason}" for c in failed)
            return

    r.build = {
        "name": t.name, "version": t.version,
        "builder": {"id": signing.builder_id if signing else DEFAULT_BUILDER_ID, "version": __version__},
        "toolchain": built.toolchain,
        "sourceDateEpoch": built.source_date_epoch,
        "inputs": built.inputs,
        "dependencies": [{"name": d.name, "version": d.version, "purl": d.purl, "sha256": d.sha256}
                         for d in t.dependencies],
        "repository": origin.repository, "commit": origin.commit, "templateCommit": origin.template_commit,
        "templatePath": origin.path,
        "dirty": origin.dirty,
        "agent": from_template(t).to_json(),
        "compile": compiled.record,
        "startedOn": _iso(started), "finishedOn": _iso(finished),
    }
    digest = digest_of(built.wasm)
    # One version, one artifact: refused before signing, so a refused build leaves no signature behind.
    refuse_republish(store, t.name, t.version, digest, f"{job.display}/{MANIFEST}")
    made: _Made | None = None
    artifact = _artifact(t, built.wasm, origin)  # its manifest digest is what the image signature signs
    if signing is not None:
        made = _make_evidence(job, t, built.wasm, r.build, signing, notify, store.url, artifact.manifest.digest)
        if engine is not None and not _artifact_gate(job, t, digest, built.wasm, made, signing, engine):
            return  # refused before publication: nothing reaches the store
    notify(job.display, "publish")
    stored = _publish(t, store, artifact)
    r.status, r.digest, r.size, r.ref = "built", stored.digest, stored.size, stored.ref
    if signing is not None and made is not None:
        _attach(job, t, stored, store, made, signing)
    inputs = dict(built.inputs)
    inputs.setdefault(MANIFEST, t.manifest_sha256)
    signed_by = {store.url: made.signature.keyid} if made is not None and made.signature is not None else {}
    cache.put(key, CacheEntry(digest=stored.digest, manifest_digest=stored.manifest_digest, size=stored.size,
                              inputs=inputs, build=r.build, tests=r.tests, signed_by=signed_by))


def _resign_reason(hit: CacheEntry, signing: Signing, store: ArtifactStore, stored: StoredAgent) -> str | None:
    """Why an unchanged artifact must be signed again, or None: it has no signature in this store, the key
    that signed it there is revoked or no longer the active key, or `--resign` asks. Keyless signatures have
    no key status: only a missing signature or `--resign` re-signs them."""
    if not evidence.has_signature(store, stored):
        return f"no signature in {store.url}"
    if signing.resign:
        return "--resign"
    if signing.keyless is not None:
        return None
    keys = {k.key_id: k for k in signing.provider.public_keys()}
    active = next((k.key_id for k in keys.values() if k.status == "active"), None)
    signed_by = {hit.signed_by[store.url]} if store.url in hit.signed_by else _signature_keys(store, stored)
    if not signed_by or active in signed_by:  # no signature by a key: keyless bundles, judged by identity
        return None
    old = sorted(signed_by)[0]
    status = keys[old].status if old in keys else None
    if status == "revoked":
        return f"key {old[:16]} is revoked"
    if status is None:
        return f"key {old[:16]} is not one of this provider's keys"
    return f"key {old[:16]} is no longer the active key"


def _signature_keys(store: ArtifactStore, stored: StoredAgent) -> set[str]:
    """The key ids of the artifact signatures the store holds for `stored` (a cache entry that does not say)."""
    found = set()
    for where, doc in evidence.collect(store, stored).signatures:
        try:
            found.add(evidence.parse_artifact_signature(doc, where).keyid)
        except AgentFactoryError:
            continue
    return found


def _make_evidence(job: _Job, t: Template, wasm: bytes, build: dict[str, Any], signing: Signing,
                   notify: Progress, store_url: str, manifest_digest: str) -> _Made:
    """The sbom and sign stages, in memory: SBOM, provenance, the signatures over them, and (with a
    transparency log) the log's record of each signature, taken before anything is published.

    Key-based evidence is made as Sigstore bundles (docs/evidence.md): the signature over the wasm digest,
    each attestation about the wasm digest and the OCI manifest digest `manifest_digest` (so `cosign
    verify-attestation` finds them on the image), and an image signature (cosign's sign/v1 statement about
    both digests) that `cosign verify` accepts; each logged and bundled with its log entry."""
    # Imported here: cyclonedx and prometheus cost ~90 ms at start-up, and unchanged runs never sign.
    from agentfactory.metrics import SIGNATURES

    from .sbom import build_sbom, validate_sbom

    digest = digest_of(wasm)

    notify(job.display, "sbom")
    sbom = build_sbom(t, digest=digest, toolchain=build["toolchain"], epoch=build["sourceDateEpoch"],
                      commit=build.get("templateCommit"))
    validate_sbom(sbom, f"{job.display} (generated SBOM)")
    bom = json.loads(sbom)
    notify(job.display, "scan")
    scanned = _scan(job, bom, signing)
    notify(job.display, "sign")
    predicates = ((CYCLONEDX_BOM, bom),
                  (SLSA_PROVENANCE_V1, provenance_predicate(build, builder_id=signing.builder_id)),
                  (SCAN_V1, scanned))
    if signing.keyless is not None:
        return _sign_keyless(job, t, digest, predicates, sbom, signing.keyless)
    provider = signing.provider
    # The module's bytes, not their digest: the same RSA signature over the same SHA-256 digest for every
    # provider, and the only input the cosign provider can sign (`cosign sign-blob` hashes what it signs).
    signature = provider.sign(wasm)
    SIGNATURES.labels(provider=provider.name, kind="artifact").inc()
    attestations = []
    for predicate_type, predicate in (*predicates, (COSIGN_SIGN_V1, {})):
        statement = evidence.agent_statement(t.name, digest, predicate_type, predicate, manifest_digest)
        attestations.append((predicate_type, sign_envelope(INTOTO_PAYLOAD_TYPE, statement, provider)))
        SIGNATURES.labels(provider=provider.name, kind="attestation").inc()
    job.result.evidence = {"signed": True, "keyId": signature.key_id, "provider": provider.name,
                           "attestations": [p for p, _ in predicates], "manifestDigest": manifest_digest}
    art = ArtifactSignature.from_signature(digest, signature)
    try:  # before logging or publishing: every log entry the pipeline causes has its line (audit keys)
        signing_record.record_signing(store_url, t.name, t.version, digest, signature.key_id,
                                      [env for _, env in attestations], signing.signing_record)
    except AgentFactoryError as exc:
        raise BuildError(job.display, f"cannot record what was signed: {exc}") from None
    records: list[bytes] = []
    if signing.tlog is not None:
        notify(job.display, "log")
        pem_of = {k.key_id: k.pem for k in provider.public_keys()}
        proposals = [evidence.proposed_for_signature(art, pem_of[signature.key_id])]
        proposals += [evidence.proposed_for_envelope(env.to_json(), pem_of[env.signatures[0].keyid])
                      for _, env in attestations]
        try:
            added = [signing.tlog.add(p) for p in proposals]
        except LogError as exc:  # nothing is published unlogged when a log is configured
            raise BuildError(job.display, f"the transparency log {signing.tlog.url} refused or failed: {exc}") from None
        except StoreError as exc:  # the embedded log, opened at its first use (DeferredLog), cannot be opened
            raise BuildError(job.display, f"the transparency log cannot be opened, so nothing is published: {exc}") \
                from None
        records = [a.entry.to_json() for a in added]
        job.result.evidence["tlog"] = {"log": signing.tlog.url, "indexes": [a.entry.log_index for a in added]}
    try:
        bundles = evidence.key_bundles(art, attestations, records)
    except AgentFactoryError as exc:  # a log that answered with entries of something else
        raise BuildError(job.display, f"the transparency log's entries do not match what was signed: {exc}") from None
    return _Made(art, sbom, bundles)


def _sign_keyless(job: _Job, t: Template, digest: str, predicates: tuple[tuple[str, Any], ...], sbom: bytes,
                  signer: KeylessSigner) -> _Made:
    """The sign stage with Sigstore: one bundle over the digest and one DSSE bundle per statement, each
    already in the instance's Rekor (the bundle holds the proof), under one short-lived certificate."""
    from agentfactory.metrics import SIGNATURES

    statements = [(p, make_statement(t.name, digest, p, predicate)) for p, predicate in predicates]
    try:
        signed = signer.sign(digest, statements)
    except AgentFactoryError as exc:
        raise BuildError(job.display, str(exc)) from None
    SIGNATURES.labels(provider=signer.name, kind="artifact").inc()
    SIGNATURES.labels(provider=signer.name, kind="attestation").inc(len(statements))
    job.result.evidence = {"signed": True, "provider": signer.name, "identity": signed.identity.subject,
                           "issuer": signed.identity.issuer, "attestations": [p for p, _ in statements],
                           "tlog": {"log": f"sigstore {signer.instance} rekor", "indexes": signed.log_indexes}}
    return _Made(None, sbom, bundles=signed.bundles, keyless=KeylessPolicy((signed.identity,), signer.instance))


def _scan(job: _Job, bom: dict[str, Any], signing: Signing) -> dict[str, Any]:
    """The scan stage: every scanner over the SBOM, the signed VEX applied; the predicate to attest.

    The report goes into the template's result whatever the gate decides, so a refusal is explained
    finding by finding; the decision itself is the artifact policy's, on the signed attestation.
    """
    from agentfactory.scan.gate import Gate
    from agentfactory.scan.report import render_text, scan, subject_of
    from agentfactory.scan.vexdocs import load_vex

    cfg = signing.scanning
    trust = cfg.vex_trust or from_public_keys(signing.provider.public_keys(), builders=(signing.builder_id,))
    vex = load_vex(list(cfg.vex), trust=trust, require_signed=cfg.require_signed_vex) if cfg.vex else []
    report = scan(bom, signing.scanners.get(cfg), subject=subject_of(bom, f"{job.display} (generated SBOM)"), vex=vex)
    gate = Gate(cfg.fail_on, cfg.ignore_unfixed, cfg.exactly)
    job.result.scan = report.to_json(gate)
    job.result.scan_lines = render_text(report, gate)
    return report.to_predicate()


def _artifact_gate(job: _Job, t: Template, digest: str, wasm: bytes, made: _Made, signing: Signing,
                   engine: PolicyEngine) -> bool:
    """The artifact policy before publish, asked through the one verifier on the evidence just made.

    Keyless: the trust is the identity that signed (as the certificate names it) and the instance's
    trusted root, verified offline like everywhere else."""
    found = made.evidence()  # the bundles as they will be attached, read back as the verifier reads a store
    log_key = None if made.keyless else signing.log_key_pem()
    trust = from_public_keys([] if made.keyless else signing.provider.public_keys(), builders=(signing.builder_id,),
                             log_keys=[log_key] if log_key else None, keyless=made.keyless)
    verdict = verify(digest, wasm, found, trust, engine=engine, stage="dev", name=t.name, version=t.version)
    job.result.evidence["score"] = verdict.score
    job.result.errors.extend(f"{job.display}: {reason}" for reason in verdict.reasons)
    return verdict.allowed


def _attach(job: _Job, t: Template, stored: StoredAgent, store: ArtifactStore, made: _Made, signing: Signing) -> None:
    from .sbom import release_path

    evidence.attach_bundles(store, stored, made.bundles)
    if signing.sbom_dir is not None:
        atomic_write(release_path(signing.sbom_dir, t.name, t.version), made.sbom)


def _artifact(t: Template, wasm: bytes, origin: Origin) -> AgentArtifact:
    """The agent's OCI artifact: deterministic, so its manifest digest is known before it is published
    (the image signature and attestations name it)."""
    # Only what is the same in every clone goes into the manifest: the remote URL and HEAD
    # belong to provenance, the template's own last commit identifies its sources.
    annotations = {ANN_DESCRIPTION: t.description}
    if origin.template_commit:
        annotations[ANN_REVISION] = origin.template_commit
    return build_agent_artifact(wasm, name=t.name, version=t.version, created_epoch=origin.epoch,
                                annotations=annotations)


def _publish(t: Template, store: ArtifactStore, artifact: AgentArtifact) -> StoredAgent:
    return store.push_agent(artifact, name=t.name, version=t.version)


def _iso(ts: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


__all__ = ["STAGES", "InputError", "PipelineReport", "Scanning", "Signing", "TemplateResult", "run_pipeline"]
