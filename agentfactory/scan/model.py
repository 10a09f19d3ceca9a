"""The normalized vulnerability finding, whatever found it (the OSV matcher, Grype, Trivy).

Every scanner adapter turns its own output into `Finding`s, so VEX, the gate, the scan attestation
and the artifact policy see one model. Severities are the four CVSS v3 ratings plus `unknown` (a
finding whose severity cannot be established is kept, and the gate treats it as the policy says).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

SEVERITIES = ("unknown", "low", "medium", "high", "critical")


def severity_rank(severity: str) -> int:
    """0 for unknown … 4 for critical; an unrecognised string ranks as unknown."""
    s = severity.lower()
    return SEVERITIES.index(s) if s in SEVERITIES else 0


def severity_of_score(score: float | None) -> str:
    """The CVSS v3 qualitative rating of a base score."""
    if score is None:
        return "unknown"
    if score >= 9.0:
        return "critical"
    if score >= 7.0:
        return "high"
    if score >= 4.0:
        return "medium"
    if score > 0.0:
        return "low"
    return "unknown"


@dataclass(frozen=True)
class Suppression:
    """Why a finding does not apply: the VEX statement that said so."""

    status: str  # not_affected | fixed
    justification: str  # e.g. vulnerable_code_not_in_execute_path; "" for fixed
    statement: str  # where: document id or file, and the statement's index
    author: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"status": self.status, "justification": self.justification, "statement": self.statement,
                "author": self.author}


@dataclass(frozen=True)
class Finding:
    id: str  # the advisory id as the source names it (GHSA-…, PYSEC-…, CVE-…)
    package: str  # the component's purl (without qualifiers), or its name when it has none
    version: str
    severity: str = "unknown"  # one of SEVERITIES
    aliases: tuple[str, ...] = ()
    cvss_score: float | None = None
    cvss_vector: str = ""
    fixed_versions: tuple[str, ...] = ()
    source: str = ""  # osv | grype | trivy
    summary: str = ""
    suppressed_by: Suppression | None = field(default=None, compare=False)

    @property
    def fixed(self) -> bool:
        """Whether a fixed version exists (the gate's 'unfixed' means none is published)."""
        return bool(self.fixed_versions)

    @property
    def suppressed(self) -> bool:
        return self.suppressed_by is not None

    @property
    def names(self) -> tuple[str, ...]:
        """The id and its aliases: what a VEX statement may name."""
        return (self.id, *self.aliases)

    def suppress(self, by: Suppression) -> Finding:
        return replace(self, suppressed_by=by)

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "id": self.id, "aliases": list(self.aliases), "package": self.package, "version": self.version,
            "severity": self.severity, "cvss": {"score": self.cvss_score, "vector": self.cvss_vector},
            "fixedVersions": list(self.fixed_versions), "fixed": self.fixed, "source": self.source,
            "summary": self.summary, "suppressed": self.suppressed,
        }
        if self.suppressed_by is not None:
            doc["suppressedBy"] = self.suppressed_by.to_json()
        return doc


@dataclass(frozen=True)
class Unscanned:
    """A component the scanner could not judge (no purl, unknown ecosystem, unparsable version)."""

    component: str
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"component": self.component, "reason": self.reason}
