"""One scan of one SBOM: every scanner's findings merged, VEX applied, the gate, and the report.

Two scanners (or two databases in one folder, PYSEC and GHSA) often report the same vulnerability
under different ids; findings for the same package version whose id or aliases overlap are merged
into one, keeping the highest severity and every alias and fixed version, so a VEX statement
naming any of the ids suppresses it and the gate counts it once.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .attestation import canonical_json, sbom_digest
from .base import Scanner, ScannerInfo
from .gate import Gate
from .model import SEVERITIES, Finding, Unscanned, severity_rank
from .vex import VexStatement, apply_vex, unused_statements


def merge_findings(findings: Sequence[Finding]) -> list[Finding]:
    """One finding per vulnerability per package version, whichever scanners and ids reported it."""
    merged: list[Finding] = []
    absorbed: set[int] = set()
    index: dict[tuple[str, str, str], int] = {}
    for f in findings:
        slots = sorted({index[(f.package, f.version, n)] for n in f.names if (f.package, f.version, n) in index})
        if not slots:
            merged.append(f)
            slot = len(merged) - 1
        else:
            slot = slots[0]
            for other in slots[1:]:  # f names findings kept apart so far (a CVE, a GHSA): one vulnerability
                merged[slot] = _merge(merged[slot], merged[other])
                absorbed.add(other)
            merged[slot] = _merge(merged[slot], f)
        for n in merged[slot].names:
            index[(f.package, f.version, n)] = slot
    return [m for i, m in enumerate(merged) if i not in absorbed]


def _merge(a: Finding, b: Finding) -> Finding:
    higher = a if severity_rank(a.severity) >= severity_rank(b.severity) else b
    aliases = tuple(n for n in dict.fromkeys((*a.aliases, b.id, *b.aliases)) if n != a.id)
    sources = ",".join(dict.fromkeys(s for s in (*a.source.split(","), *b.source.split(",")) if s))
    return replace(a, severity=higher.severity, cvss_score=higher.cvss_score if higher.cvss_score is not None
                   else a.cvss_score or b.cvss_score, cvss_vector=higher.cvss_vector or a.cvss_vector or b.cvss_vector,
                   aliases=aliases, fixed_versions=tuple(dict.fromkeys((*a.fixed_versions, *b.fixed_versions))),
                   source=sources, summary=a.summary or b.summary)


@dataclass(frozen=True)
class VexSource:
    """A VEX document the scan applied: where it came from, its digest, and who signed it (if anyone)."""

    where: str
    digest: str
    statements: int
    signed_by: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"uri": self.where, "digest": self.digest, "statements": self.statements, "signedBy": self.signed_by}


@dataclass
class ScanReport:
    subject: str  # the product purl VEX statements are matched against
    sbom_digest: str
    findings: list[Finding]
    unscanned: list[Unscanned]
    scanners: list[ScannerInfo]
    vex: list[VexSource] = field(default_factory=list)
    unused_vex: list[VexStatement] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    started: str = ""
    finished: str = ""

    def counts(self) -> dict[str, int]:
        out = {s: 0 for s in reversed(SEVERITIES)}
        for f in self.findings:
            if not f.suppressed:
                out[f.severity] += 1
        out["suppressed"] = sum(f.suppressed for f in self.findings)
        return out

    def to_predicate(self) -> dict[str, Any]:
        """The scan attestation's predicate (docs/scanning.md): what was found, not what to do about it;
        the verifier's policy decides."""
        return {
            "scanners": [s.to_json() for s in self.scanners],
            "subject": self.subject,
            "sbom": {"digest": self.sbom_digest},
            "vex": [v.to_json() for v in self.vex],
            "findings": [f.to_json() for f in self.findings],
            "unscanned": [u.to_json() for u in self.unscanned],
            "summary": self.counts(),
            "metadata": {"scanStartedOn": self.started, "scanFinishedOn": self.finished},
        }

    def to_json(self, gate: Gate | None = None) -> dict[str, Any]:
        doc = self.to_predicate()
        doc["unusedVex"] = [{"vulnerability": s.vulnerability, "products": list(s.products), "where": s.where}
                            for s in self.unused_vex]
        doc["warnings"] = self.warnings
        if gate is not None:
            blocking = gate.blocking(self.findings)
            doc["gate"] = {"failOn": gate.fail_on, "ignoreUnfixed": gate.ignore_unfixed, "passed": not blocking,
                           "blocking": [f.id for f in blocking]}
        return doc


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def scan(bom: dict[str, Any], scanners: Sequence[Scanner], *, subject: str,
         vex: Sequence[tuple[VexSource, list[VexStatement]]] = (), sbom_path: Path | None = None) -> ScanReport:
    """Run every scanner over `bom`, merge, apply the VEX statements for `subject`."""
    started = _now()
    findings: list[Finding] = []
    unscanned: list[Unscanned] = []
    infos: list[ScannerInfo] = []
    warnings: list[str] = []
    seen: set[Unscanned] = set()  # a set: a list membership test is quadratic in a large SBOM
    with tempfile.TemporaryDirectory(prefix="af-scan-") as tmp:
        path = sbom_path
        if path is None and any(s.name != "osv" for s in scanners):
            path = Path(tmp) / "sbom.cdx.json"  # Grype and Trivy read a file
            path.write_bytes(canonical_json(bom))
        for scanner in scanners:
            result = scanner.scan(bom, path or Path(tmp) / "unused")
            findings.extend(result.findings)
            infos.append(result.scanner)
            warnings.extend(result.warnings)
            for u in result.unscanned:
                if u not in seen:
                    seen.add(u)
                    unscanned.append(u)
    statements = [s for _, stmts in vex for s in stmts]
    merged = apply_vex(merge_findings(findings), statements, subject)
    merged.sort(key=lambda f: (-severity_rank(f.severity), f.package, f.id))
    return ScanReport(subject=subject, sbom_digest=sbom_digest(bom), findings=merged, unscanned=unscanned,
                      scanners=infos, vex=[v for v, _ in vex],
                      unused_vex=unused_statements(merged, statements, subject), warnings=warnings,
                      started=started, finished=_now())


def subject_of(bom: dict[str, Any], where: str) -> str:
    """The product an SBOM describes (metadata.component.purl): what VEX statements must name."""
    component = bom.get("metadata", {}).get("component") if isinstance(bom.get("metadata"), dict) else None
    purl = component.get("purl") if isinstance(component, dict) else None
    if not isinstance(purl, str) or not purl:
        from ..errors import InputError

        raise InputError(where, "metadata.component.purl is missing: the SBOM does not say which product it "
                                "describes, so no VEX statement could be matched to it")
    return purl


def render_text(report: ScanReport, gate: Gate) -> list[str]:
    """The human report: blocking findings first with what to do, then the rest, suppressions with why."""
    lines: list[str] = []
    names = ", ".join(f"{s.name} {s.version}" + (f" ({s.database['advisories']} advisories)"
                                                 if "advisories" in s.database else "") for s in report.scanners)
    lines.append(f"scanned {report.subject} with {names}")
    blocking = gate.blocking(report.findings)
    for f in report.findings:
        mark = "BLOCKS" if f in blocking else ("suppressed" if f.suppressed else "allowed")
        also = f" (also {', '.join(f.aliases)})" if f.aliases else ""
        score = f" {f.cvss_score:.1f}" if f.cvss_score is not None else ""
        lines.append(f"  {mark:10} {f.severity.upper()}{score} {f.id}{also} in {f.package}")
        if f.summary:
            lines.append(f"             {f.summary}")
        if f.suppressed_by is not None:
            by = f.suppressed_by
            why = f"{by.status}" + (f": {by.justification}" if by.justification else "")
            lines.append(f"             VEX {why} — {by.statement}" + (f" by {by.author}" if by.author else ""))
        elif f.fixed:
            lines.append(f"             fix: upgrade to {' or '.join(f.fixed_versions)}")
        else:
            lines.append("             no fixed version is published")
    for u in report.unscanned:
        lines.append(f"  unscanned  {u.component}: {u.reason}")
    for s in report.unused_vex:
        lines.append(f"  unused VEX statement {s.where} ({s.vulnerability} for {', '.join(s.products)}): it "
                     f"matches no finding of {report.subject}")
    for w in report.warnings:
        lines.append(f"  warning: {w}")
    counts = report.counts()
    summary = ", ".join(f"{n} {s}" for s, n in counts.items() if n)
    verdict = (f"gate (fail on {gate.fail_on}): FAILED, {len(blocking)} finding(s) block" if blocking
               else f"gate (fail on {gate.fail_on}): passed")
    lines.append(f"{len(report.findings)} finding(s){': ' + summary if summary else ''}; "
                 f"{len(report.unscanned)} component(s) unscanned; {verdict}")
    return lines
