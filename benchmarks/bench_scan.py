"""Embedded OSV matcher benchmark: index build (cold), warm open from the cache, and an SBOM scan.

Synthetic data, so the run needs no network: 12 000 OSV records (PyPI, npm, crates.io; 4 000 each,
one package per record, two introduced/fixed pairs and a `versions` list like real exports) and a
CycloneDX SBOM of 1000 components, a third of them at an affected version. The scan target is
≤ 1 s for the 1000-component SBOM.
Writes benchmarks/results/scan.json and scan.md.
"""

from __future__ import annotations

import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import sized, verdict, write_results  # noqa: E402

from agentfactory.scan.osv import OsvDatabase  # noqa: E402
from agentfactory.scan.report import Gate, VexSource, scan  # noqa: E402
from agentfactory.scan.vex import parse_vex  # noqa: E402

RECORDS_PER_ECOSYSTEM = sized(4000, 100)
COMPONENTS = sized(1000, 50)
REPEAT = sized(5, 1)
ECOSYSTEMS = (("PyPI", "pypi"), ("npm", "npm"), ("crates.io", "cargo"))
VECTOR = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:N"


def record(ecosystem: str, i: int) -> dict[str, Any]:
    name = f"pkg-{i}"
    return {
        "schema_version": "1.6.0", "id": f"BENCH-{ecosystem}-{i}", "modified": "2024-01-01T00:00:00Z",
        "aliases": [f"CVE-2099-{i:05d}"], "summary": f"synthetic vulnerability {i} in {name}",
        "severity": [{"type": "CVSS_V3", "score": VECTOR}],
        "affected": [{
            "package": {"ecosystem": ecosystem, "name": name},
            "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "1.0.0"}, {"fixed": "1.4.0"},
                                                        {"introduced": "2.0.0"}, {"fixed": "2.1.3"}]}],
            "versions": ["1.0.0", "1.1.0", "1.2.0", "1.3.0", "2.0.0", "2.1.0", "2.1.1", "2.1.2"],
        }],
    }


def write_database(folder: Path) -> int:
    count = 0
    for ecosystem, _ in ECOSYSTEMS:
        sub = folder / ecosystem
        sub.mkdir(parents=True)
        for i in range(RECORDS_PER_ECOSYSTEM):
            (sub / f"BENCH-{i}.json").write_text(json.dumps(record(ecosystem, i)))
            count += 1
    return count


def sbom() -> tuple[dict[str, Any], int]:
    """1000 components across the three ecosystems; every third one at an affected version."""
    components = []
    affected = 0
    for n in range(COMPONENTS):
        _, purl_type = ECOSYSTEMS[n % 3]
        i = (n * 7) % (RECORDS_PER_ECOSYSTEM * 2)  # half of the names have no record at all
        version = "1.2.0" if n % 3 == 0 else "1.4.0"
        affected += n % 3 == 0 and i < RECORDS_PER_ECOSYSTEM
        components.append({"type": "library", "name": f"pkg-{i}", "version": version,
                           "purl": f"pkg:{purl_type}/pkg-{i}@{version}", "bom-ref": f"c{n}"})
    return {"bomFormat": "CycloneDX", "specVersion": "1.6", "components": components}, affected


class _Warm:
    """The warm database as a scanner (the pipeline's OsvScanner, without re-opening the folder)."""

    name = "osv"

    def __init__(self, db: OsvDatabase) -> None:
        self.db = db

    def scan(self, bom: dict[str, Any], sbom_path: Path) -> Any:
        from agentfactory.scan.base import ScannerInfo, ScanResult

        findings, unscanned = self.db.scan_sbom(bom)
        return ScanResult(findings, unscanned, ScannerInfo("agentfactory-osv", "bench"))


def whole_scan(db: OsvDatabase, bom: dict[str, Any], findings: list[Any]) -> tuple[float, int]:
    """What the pipeline's scan stage does: match, merge, apply VEX (half the findings answered), gate,
    and the predicate it signs."""
    statements = [{"vulnerability": {"name": f.id}, "products": [{"@id": "pkg:oci/bench"}],
                   "status": "not_affected", "justification": "vulnerable_code_not_in_execute_path"}
                  for f in findings[: len(findings) // 2]]
    doc = {"@context": "https://openvex.dev/ns/v0.2.0", "@id": "bench", "author": "bench",
           "timestamp": "2026-01-01T00:00:00Z", "version": 1, "statements": statements}
    vex = [(VexSource("bench.json", "sha256:0", len(statements)), parse_vex(json.dumps(doc).encode(), "bench"))]
    times, suppressed = [], 0
    for _ in range(REPEAT):
        start = time.perf_counter()
        report = scan(bom, [_Warm(db)], subject="pkg:oci/bench@sha256:" + "0" * 64, vex=vex)  # type: ignore[list-item]
        Gate().blocking(report.findings)
        report.to_predicate()
        times.append(time.perf_counter() - start)
        suppressed = sum(f.suppressed for f in report.findings)
    return statistics.median(times), suppressed


def timed(fn: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        folder, cache = Path(tmp) / "osv", Path(tmp) / "cache"
        count = write_database(folder)
        cold, db = timed(lambda: OsvDatabase(folder, cache))
        assert db.rebuilt and not db.warnings
        warm_times = []
        for _ in range(REPEAT):
            t, warm = timed(lambda: OsvDatabase(folder, cache))
            assert not warm.rebuilt
            warm_times.append(t)
        bom, expected = sbom()
        scan_times = []
        for _ in range(REPEAT):
            t, (findings, unscanned) = timed(lambda: warm.scan_sbom(bom))
            scan_times.append(t)
        assert len(findings) == expected and not unscanned, (len(findings), expected, unscanned[:3])
        whole_s, suppressed = whole_scan(warm, bom, findings)
        cache_bytes = sum(p.stat().st_size for p in cache.iterdir())
    warm_s, scan_s = statistics.median(warm_times), statistics.median(scan_times)
    result = {
        "records": count, "components": COMPONENTS, "findings": len(findings),
        "index_build_cold_s": round(cold, 3), "open_warm_median_s": round(warm_s, 4),
        "scan_sbom_median_s": round(scan_s, 4), "scan_target_s": 1.0, "scan_within_target": scan_s <= 1.0,
        "whole_scan_median_s": round(whole_s, 4), "vex_statements": len(findings) // 2, "suppressed": suppressed,
        "cache_bytes": cache_bytes, "repeat": REPEAT,
        "python": platform.python_version(), "machine": platform.machine(),
    }
    lines = [
        "# Embedded OSV matcher",
        "",
        f"{count} synthetic OSV records (PyPI, npm, crates.io), SBOM of {COMPONENTS} components "
        f"({len(findings)} findings); median of {REPEAT} for warm open and scan.",
        "",
        "| measure | seconds |",
        "| --- | --- |",
        f"| index build, cold (read and validate every record, write the cache) | {cold:.3f} |",
        f"| open, warm (fingerprint the folder, read the {cache_bytes // 1024} KiB cache) | {warm_s:.4f} |",
        f"| scan of the {COMPONENTS}-component SBOM (target ≤ 1 s) | {scan_s:.4f} ({verdict(scan_s <= 1.0)}) |",
        f"| the same, whole: match, merge, {len(findings) // 2} VEX statements applied, gate, attestation "
        f"predicate ({suppressed} suppressed) | {whole_s:.4f} |",
        "",
    ]
    write_results("scan", result, lines)


if __name__ == "__main__":
    main()
