"""The scanner port: one interface, the embedded OSV matcher and the Grype and Trivy adapters beside it.

A scanner takes a CycloneDX SBOM (the parsed document and the file it came from: Grype and Trivy
read files) and answers `Finding`s in the one model, the components it could not judge, and a
description of itself and its database that the scan attestation records, so an auditor can tell
which advisories an agent was judged against.
"""

from __future__ import annotations

import abc
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from ..config import cache_dir, home
from ..errors import ConfigError
from .model import Finding, Unscanned

OSV_DB_ENV = "AGENTFACTORY_OSV_DB"
SCANNER_NAMES = ("osv", "grype", "trivy")


@dataclass(frozen=True)
class ScannerInfo:
    """What ran: its name and version, and the database it matched against."""

    name: str
    version: str
    database: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "database": self.database}


@dataclass
class ScanResult:
    findings: list[Finding]
    unscanned: list[Unscanned]
    scanner: ScannerInfo
    warnings: list[str] = field(default_factory=list)


class Scanner(abc.ABC):
    """Scan one SBOM. Raise `InputError` for a malformed SBOM, `ScannerUnavailable`/`ScannerFailed`
    when the tool cannot answer: never an empty result for a scan that did not happen."""

    name: str

    @abc.abstractmethod
    def scan(self, bom: dict[str, Any], sbom_path: Path) -> ScanResult: ...


def osv_db_dir() -> Path:
    """The embedded matcher's database: `$AGENTFACTORY_OSV_DB`, else `$AGENTFACTORY_HOME/osv`."""
    value = os.environ.get(OSV_DB_ENV)
    return Path(value).expanduser().resolve() if value else home() / "osv"


class OsvScanner(Scanner):
    """The embedded default: the offline OSV folder, indexed once and cached."""

    name = "osv"

    def __init__(self, folder: Path | None = None) -> None:
        from .osv import OsvDatabase

        self.folder = (folder or osv_db_dir()).resolve()
        if not self.folder.is_dir():
            raise ConfigError(f"no OSV database at {self.folder}: load one with `agentfactory osv import PATH` "
                              f"(a folder of OSV records or OSV's per-ecosystem all.zip), or set {OSV_DB_ENV}")
        self.db = OsvDatabase(self.folder, cache_dir=cache_dir("osv"))
        if len(self.db) == 0:
            raise ConfigError(f"the OSV database at {self.folder} holds no usable advisory; a scan against it "
                              "would prove nothing (see `agentfactory osv import`)")

    def describe(self) -> ScannerInfo:
        return ScannerInfo("agentfactory-osv", __version__,
                           {"uri": self.folder.as_uri(), "advisories": len(self.db),
                            "listing": self.db.listing_digest()})

    def scan(self, bom: dict[str, Any], sbom_path: Path) -> ScanResult:
        findings, unscanned = self.db.scan_sbom(bom)
        return ScanResult(findings, unscanned, self.describe(), list(self.db.warnings))


class _ExternalScanner(Scanner):
    """A real scanner binary (`make tools`), run offline against its own database folder."""

    program: str

    def available(self) -> bool:
        from .errors import ScannerUnavailable
        from .peerscan import scanner_binary

        try:
            scanner_binary(self.program)
        except ScannerUnavailable:
            return False
        return True

    def has_database(self) -> bool:
        raise NotImplementedError

    def require(self) -> None:
        """ScannerUnavailable naming `make tools` when the binary is missing."""
        from .peerscan import scanner_binary

        scanner_binary(self.program)


class GrypeScanner(_ExternalScanner):
    name = program = "grype"

    def has_database(self) -> bool:
        from .grype import grype_db_dir

        return (grype_db_dir() / "6" / "vulnerability.db").is_file()

    def scan(self, bom: dict[str, Any], sbom_path: Path) -> ScanResult:
        from .grype import scan_grype

        r = scan_grype(sbom_path)
        return ScanResult(r.findings, [], ScannerInfo("grype", r.version, r.database))


class TrivyScanner(_ExternalScanner):
    name = program = "trivy"

    def has_database(self) -> bool:
        from .trivy import trivy_cache_dir

        return (trivy_cache_dir() / "db" / "trivy.db").is_file()

    def scan(self, bom: dict[str, Any], sbom_path: Path) -> ScanResult:
        from .trivy import scan_trivy

        r = scan_trivy(sbom_path)
        return ScanResult(r.findings, [], ScannerInfo("trivy", r.version, r.database))


def open_scanners(names: tuple[str, ...] | list[str] | None = None, *, osv_db: Path | None = None) -> list[Scanner]:
    """The scanners to run. None: the embedded OSV matcher, plus Grype and Trivy when installed (`make
    tools`) and given a database (docs/scanning.md): a scanner without its database is left out by
    default, since it could only fail closed. Named explicitly, a scanner that cannot run is an error.
    """
    if not names:
        scanners: list[Scanner] = [OsvScanner(osv_db)]
        scanners += [s for s in (GrypeScanner(), TrivyScanner()) if s.available() and s.has_database()]
        return scanners
    out: list[Scanner] = []
    for name in dict.fromkeys(names):
        if name == "osv":
            out.append(OsvScanner(osv_db))
        elif name in ("grype", "trivy"):
            scanner: _ExternalScanner = GrypeScanner() if name == "grype" else TrivyScanner()
            scanner.require()  # a missing database is the scan's own failure, naming how to build one
            out.append(scanner)
        else:
            raise ConfigError(f"unknown scanner {name!r} (known: {', '.join(SCANNER_NAMES)})")
    return out
