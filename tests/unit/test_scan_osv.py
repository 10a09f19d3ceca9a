"""The embedded OSV matcher: version orderings, OSV range evaluation, records, index cache, import."""

from __future__ import annotations

import itertools
import json
import math
import os
import shutil
import zipfile
from pathlib import Path
from typing import Any

import pytest

from agentfactory.errors import InputError
from agentfactory.scan import osv
from agentfactory.scan.osv import OsvDatabase, import_osv, load_record
from agentfactory.scan.versions import MavenVersion, VersionError, compare, in_range, parse_version

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "osv"
RECORDS = ["GHSA-35jh-r3h4-6jhm.json", "GHSA-j8r2-6x86-q33q.json", "PYSEC-2021-66.yaml", "PYSEC-2023-192.yaml",
           "PYSEC-2023-74.yaml"]


@pytest.fixture
def db_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "osv"
    folder.mkdir()
    for name in RECORDS:
        shutil.copy(FIXTURES / name, folder / name)
    return folder


def ids(findings: list[Any]) -> set[str]:
    return {f.id for f in findings}


# --- versions ---------------------------------------------------------------------------------

def test_semver_prerelease_ordering() -> None:
    # semver.org §11's example chain
    chain = ["1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2", "1.0.0-beta.11",
             "1.0.0-rc.1", "1.0.0", "1.0.1", "1.1.0", "2.0.0"]
    for a, b in itertools.pairwise(chain):
        assert compare(a, b, "npm") == -1, (a, b)
        assert compare(b, a, "crates.io") == 1, (a, b)
    assert compare("1.0.0+build.1", "1.0.0+build.2", "npm") == 0  # build metadata has no precedence
    assert compare("v1.2.3", "1.2.3", "Go") == 0
    assert compare("v0.0.0-20230101000000-abcdef123456", "v0.0.1", "Go") == -1  # pseudo-version is a prerelease


@pytest.mark.parametrize("bad", ["1.0", "01.0.0", "1.0.0-", "1.0.0-01", "v1.0.0", "1.0.0.0", "latest", ""])
def test_semver_strict(bad: str) -> None:
    with pytest.raises(VersionError) as exc:
        parse_version(bad, "npm")
    assert exc.value.ecosystem == "npm" and exc.value.value == bad


def test_pep440_edges() -> None:
    assert compare("1.0.post1", "1.0", "PyPI") == 1
    assert compare("1.0rc1", "1.0", "PyPI") == -1
    assert compare("1.0.dev0", "1.0a1", "PyPI") == -1
    assert compare("2.0", "2.0.0", "PyPI") == 0
    assert compare("1!0.1", "2.0", "PyPI") == 1  # epoch
    with pytest.raises(VersionError):
        parse_version("not-a-version!", "PyPI")


def test_maven_subset() -> None:
    order = ["1.0-alpha-1", "1.0-beta-1", "1.0-m1", "1.0-rc1", "1.0-SNAPSHOT", "1.0", "1.0-sp1", "1.0.1", "1.1"]
    for a, b in itertools.pairwise(order):
        assert MavenVersion(a) < MavenVersion(b), (a, b)
    assert MavenVersion("1") == MavenVersion("1.0.0") == MavenVersion("1-ga") == MavenVersion("1.0-final")
    assert MavenVersion("1.0a1") == MavenVersion("1.0-alpha-1")
    assert MavenVersion("1.10") > MavenVersion("1.9")
    with pytest.raises(VersionError):
        MavenVersion("1.0 beta")


def test_generic_has_no_order() -> None:
    with pytest.raises(VersionError, match="exact matches only"):
        parse_version("1.0", "Debian")


# --- OSV evaluation ---------------------------------------------------------------------------

def ev(*pairs: tuple[str, str]) -> list[dict[str, str]]:
    return [{k: v} for k, v in pairs]


def test_evaluation_multiple_pairs() -> None:
    events = ev(("introduced", "1.0.0"), ("fixed", "1.0.2"), ("introduced", "3.0.0"), ("fixed", "3.2.5"))
    affected = {v: in_range(v, events, "npm", "SEMVER") for v in
                ["0.9.0", "1.0.0", "1.0.1", "1.0.2", "2.0.0", "3.0.0-rc.1", "3.0.0", "3.2.4", "3.2.5", "4.0.0"]}
    assert affected == {"0.9.0": False, "1.0.0": True, "1.0.1": True, "1.0.2": False, "2.0.0": False,
                        "3.0.0-rc.1": False, "3.0.0": True, "3.2.4": True, "3.2.5": False, "4.0.0": False}
    # unsorted events are sorted first (the urllib3 record lists its 2.x pair before its 1.x one)
    shuffled = ev(("introduced", "2.0.0"), ("fixed", "2.0.6"), ("introduced", "0"), ("fixed", "1.26.17"))
    assert [in_range(v, shuffled, "PyPI") for v in ["1.26.16", "1.26.17", "2.0.5", "2.0.6"]] == [True, False, True,
                                                                                                 False]


def test_evaluation_introduced_zero_and_unfixed() -> None:
    assert in_range("0.0.0-alpha", ev(("introduced", "0")), "npm")
    assert in_range("0.0.1.dev0", ev(("introduced", "0"), ("fixed", "1.0")), "PyPI")
    assert not in_range("1.0", ev(("introduced", "0"), ("fixed", "1.0")), "PyPI")


def test_evaluation_last_affected() -> None:
    events = ev(("introduced", "0"), ("last_affected", "2.1.214"))
    assert in_range("2.1.214", events, "Maven")
    assert not in_range("2.1.215", events, "Maven")
    # fixed excludes its own version, last_affected includes it
    assert not in_range("2.1.214", ev(("introduced", "0"), ("fixed", "2.1.214")), "Maven")


def test_evaluation_limit() -> None:
    events = ev(("introduced", "1.0.0"), ("limit", "2.0.0"))
    assert in_range("1.5.0", events, "crates.io")
    assert not in_range("2.0.0", events, "crates.io")
    assert not in_range("0.5.0", events, "crates.io")
    assert in_range("9.0.0", ev(("introduced", "1.0.0"), ("limit", "*")), "crates.io")
    # several limits: below any one of them is enough, the events still decide
    two = ev(("introduced", "1.0.0"), ("fixed", "1.5.0"), ("limit", "1.2.0"), ("limit", "3.0.0"))
    assert in_range("1.4.0", two, "npm") and not in_range("1.6.0", two, "npm")


def test_evaluation_errors() -> None:
    with pytest.raises(VersionError):
        in_range("nope", ev(("introduced", "0")), "npm")
    with pytest.raises(ValueError, match="exactly one"):
        in_range("1.0.0", [{"introduced": "0", "fixed": "1.0.0"}], "npm")
    assert not in_range("1.0.0", ev(("introduced", "0")), "npm", "GIT")  # needs the repository


# --- records and matching ---------------------------------------------------------------------

def cvss31_base(vector: str) -> float:
    """CVSS 3.1 base score (scope unchanged only), straight from the specification's formulas."""
    m = dict(part.split(":") for part in vector.split("/")[1:])
    assert m["S"] == "U"
    weights = {"AV": {"N": 0.85, "A": 0.62, "L": 0.55, "P": 0.2}, "AC": {"L": 0.77, "H": 0.44},
               "PR": {"N": 0.85, "L": 0.62, "H": 0.27}, "UI": {"N": 0.85, "R": 0.62}}
    cia = {"H": 0.56, "L": 0.22, "N": 0.0}
    iss = 1 - (1 - cia[m["C"]]) * (1 - cia[m["I"]]) * (1 - cia[m["A"]])
    impact = 6.42 * iss
    exploitability = 8.22 * math.prod(weights[k][m[k]] for k in ("AV", "AC", "PR", "UI"))
    if impact <= 0:
        return 0.0
    raw = round(min(impact + exploitability, 10) * 100000)
    return raw / 100000.0 if raw % 10000 == 0 else (math.floor(raw / 10000) + 1) / 10.0


def test_lodash_matched_with_cvss_severity(db_dir: Path, tmp_path: Path) -> None:
    db = OsvDatabase(db_dir, tmp_path / "cache")
    assert db.warnings == []
    [finding] = db.match("pkg:npm/lodash@4.17.20")
    vector = "CVSS:3.1/AV:N/AC:L/PR:H/UI:N/S:U/C:H/I:H/A:H"
    assert finding.id == "GHSA-35jh-r3h4-6jhm" and finding.aliases == ("CVE-2021-23337",)
    assert finding.cvss_vector == vector and finding.cvss_score == cvss31_base(vector) == 7.2
    assert finding.severity == "high" and finding.fixed_versions == ("4.17.21",)
    assert finding.source == "osv" and finding.package == "pkg:npm/lodash@4.17.20" and finding.summary
    assert db.match("pkg:npm/lodash@4.17.21") == []
    assert ids(db.match("pkg:npm/lodash-es", "4.17.15")) == {"GHSA-35jh-r3h4-6jhm"}
    assert db.match("pkg:npm/lodash@5.0.0-rc.1") == []


@pytest.mark.parametrize(("purl", "affected", "fixed", "expected"), [
    ("pkg:pypi/jinja2", "2.11.2", "2.11.3", {"PYSEC-2021-66"}),
    ("pkg:pypi/Jinja2", "2.0rc1", "3.0.0", {"PYSEC-2021-66"}),  # PEP 503 name, prerelease in `versions`
    ("pkg:pypi/requests", "2.30.0", "2.31.0", {"PYSEC-2023-74", "GHSA-j8r2-6x86-q33q"}),
    ("pkg:pypi/urllib3", "1.26.16", "1.26.17", {"PYSEC-2023-192"}),
    ("pkg:pypi/urllib3", "2.0.5", "2.0.6", {"PYSEC-2023-192"}),
])
def test_pypi_records(db_dir: Path, purl: str, affected: str, fixed: str, expected: set[str]) -> None:
    db = OsvDatabase(db_dir)
    assert ids(db.match(purl, affected)) == expected
    assert db.match(purl, fixed) == []


def test_pypi_severity_sources(db_dir: Path) -> None:
    db = OsvDatabase(db_dir)
    by_id = {f.id: f for f in db.match("pkg:pypi/requests", "2.3.0") + db.match("pkg:pypi/urllib3", "2.0.0")
             + db.match("pkg:pypi/jinja2", "2.10")}
    assert by_id["GHSA-j8r2-6x86-q33q"].severity == "medium"  # CVSS 6.1 (GHSA also says MODERATE)
    assert by_id["PYSEC-2023-192"].severity == "high" and by_id["PYSEC-2023-192"].cvss_score == 8.1
    assert by_id["PYSEC-2023-192"].fixed_versions == ("2.0.6", "1.26.17")  # not the GIT commits
    assert by_id["PYSEC-2021-66"].severity == "unknown" and by_id["PYSEC-2021-66"].cvss_score is None
    assert by_id["PYSEC-2023-74"].severity == "unknown"
    assert db.match("pkg:pypi/requests", "2.2.1") == []


def test_database_specific_severity(tmp_path: Path) -> None:
    doc = json.loads((FIXTURES / "GHSA-j8r2-6x86-q33q.json").read_text())
    del doc["severity"]
    (tmp_path / "r.json").write_text(json.dumps(doc))
    [finding] = OsvDatabase(tmp_path).match("pkg:pypi/requests@2.30.0")
    assert finding.severity == "medium" and finding.cvss_vector == ""  # MODERATE → medium


def test_withdrawn_ignored(db_dir: Path) -> None:
    doc = json.loads((db_dir / "GHSA-35jh-r3h4-6jhm.json").read_text())
    doc["withdrawn"] = "2024-01-01T00:00:00Z"
    (db_dir / "GHSA-35jh-r3h4-6jhm.json").write_text(json.dumps(doc))
    db = OsvDatabase(db_dir)
    assert db.match("pkg:npm/lodash@4.17.20") == [] and db.warnings == []


def test_malformed_records_skipped_with_warning(db_dir: Path) -> None:
    (db_dir / "broken.json").write_text('{"id": "X", "affected": [')
    (db_dir / "noid.json").write_text(json.dumps({"affected": []}))
    (db_dir / "bad.yaml").write_text("id: [unclosed\n")
    big = db_dir / "big.json"
    big.write_bytes(b" " * (osv.MAX_RECORD_BYTES + 1))
    db = OsvDatabase(db_dir)
    text = "\n".join(db.warnings)
    assert len(db.warnings) == 4
    for name in ("broken.json", "noid.json", "bad.yaml", "big.json"):
        assert name in text
    assert "no 'id' string" in text and "not JSON" in text
    assert ids(db.match("pkg:npm/lodash@4.17.20")) == {"GHSA-35jh-r3h4-6jhm"}  # the others still load


def test_load_record_warnings(tmp_path: Path) -> None:
    warnings: list[str] = []
    p = tmp_path / "x.json"
    p.write_text(json.dumps({"id": "X", "affected": [{"package": {"ecosystem": "npm", "name": "a"},
                                                      "ranges": [{"type": "SEMVER", "events": [{"bad": 1}]}]}]}))
    assert load_record(p, warnings) is None and "x.json" in warnings[0]
    assert load_record(FIXTURES / "PYSEC-2023-74.yaml", warnings)["id"] == "PYSEC-2023-74"  # type: ignore[index]


def bom(*components: dict[str, Any]) -> dict[str, Any]:
    return {"bomFormat": "CycloneDX", "specVersion": "1.6", "components": list(components)}


def test_scan_sbom_unscanned(db_dir: Path) -> None:
    db = OsvDatabase(db_dir)
    doc = bom(
        {"type": "library", "name": "lodash", "version": "4.17.20", "purl": "pkg:npm/lodash@4.17.20",
         "components": [{"type": "library", "name": "urllib3", "version": "2.0.0", "purl": "pkg:pypi/urllib3@2.0.0"}]},
        {"type": "library", "name": "vendored", "version": "1.0"},
        {"type": "library", "name": "zlib", "version": "1.3", "purl": "pkg:deb/debian/zlib@1.3"},
        {"type": "library", "name": "lodash", "version": "latest", "purl": "pkg:npm/lodash@latest"},
        {"type": "library", "name": "thing", "version": "1.0", "purl": "pkg:generic/thing@1.0"},
        {"type": "library", "name": "safe", "version": "3.0.0", "purl": "pkg:cargo/safe@3.0.0"},
    )
    findings, unscanned = db.scan_sbom(doc)
    assert ids(findings) == {"GHSA-35jh-r3h4-6jhm", "PYSEC-2023-192"}  # nested component scanned too
    reasons = {u.component: u.reason for u in unscanned}
    assert reasons["vendored@1.0"].startswith("no purl")
    assert "'deb' has no OSV ecosystem" in reasons["pkg:deb/debian/zlib@1.3"]
    assert "unparsable version" in reasons["pkg:npm/lodash@latest"] and "'latest'" in reasons["pkg:npm/lodash@latest"]
    assert "vcs_url" in reasons["pkg:generic/thing@1.0"]
    assert len(unscanned) == 4


def test_git_commit_matched_only_when_listed(tmp_path: Path) -> None:
    commit = "a" * 40
    record = {"id": "OSV-TEST-1", "affected": [{"ranges": [{"type": "GIT", "repo": "https://github.com/Org/Lib.git",
                                                            "events": [{"introduced": "0"}, {"fixed": "b" * 40}]}],
                                                 "versions": [commit]}]}
    (tmp_path / "r.json").write_text(json.dumps(record))
    db = OsvDatabase(tmp_path)
    assert ids(db.match(f"pkg:github/org/lib@{commit}")) == {"OSV-TEST-1"}
    assert db.match(f"pkg:github/org/lib@{'c' * 40}") == []  # not listed: the range itself is not resolved
    assert ids(db.match(f"pkg:generic/lib@{commit}?vcs_url=git%2Bhttps://github.com/org/lib")) == {"OSV-TEST-1"}


def test_maven_and_go_names(tmp_path: Path) -> None:
    records = [
        {"id": "M-1", "affected": [{"package": {"ecosystem": "Maven", "name": "org.example:lib"},
                                    "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "1.0"},
                                                                                 {"fixed": "1.2"}]}]}]},
        {"id": "G-1", "affected": [{"package": {"ecosystem": "Go", "name": "github.com/ex/mod"},
                                    "ranges": [{"type": "SEMVER", "events": [{"introduced": "0"},
                                                                              {"fixed": "1.4.1"}]}]}]},
    ]
    for r in records:
        (tmp_path / f"{r['id']}.json").write_text(json.dumps(r))
    db = OsvDatabase(tmp_path)
    assert ids(db.match("pkg:maven/org.example/lib@1.2-rc1")) == {"M-1"}
    assert db.match("pkg:maven/org.example/lib@1.2") == []
    assert ids(db.match("pkg:golang/github.com/ex/mod@v1.4.0")) == {"G-1"}
    assert db.match("pkg:golang/github.com/ex/mod@v1.4.1") == []


# --- index cache ------------------------------------------------------------------------------

def test_index_cache_reused_and_rebuilt(db_dir: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = OsvDatabase(db_dir, cache)
    assert first.rebuilt and len(list(cache.glob("osv-index-*.json"))) == 1
    second = OsvDatabase(db_dir, cache)
    assert not second.rebuilt and second.index == first.index
    assert ids(second.match("pkg:npm/lodash@4.17.20")) == {"GHSA-35jh-r3h4-6jhm"}

    path = db_dir / "GHSA-35jh-r3h4-6jhm.json"
    doc = json.loads(path.read_text())
    doc["affected"][0]["ranges"][0]["events"][1]["fixed"] = "4.17.19"
    path.write_text(json.dumps(doc))
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    third = OsvDatabase(db_dir, cache)
    assert third.rebuilt and third.match("pkg:npm/lodash@4.17.20") == []

    (db_dir / "broken.json").write_text("{")
    fourth = OsvDatabase(db_dir, cache)
    assert fourth.rebuilt and len(fourth.warnings) == 1
    fifth = OsvDatabase(db_dir, cache)
    assert not fifth.rebuilt and fifth.warnings == fourth.warnings  # warnings survive the cache


# --- zip import -------------------------------------------------------------------------------

def test_import_zip_export(tmp_path: Path) -> None:
    archive = tmp_path / "all.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for name in RECORDS:
            zf.write(FIXTURES / name, name)
        zf.writestr("broken.json", "{")
    dest = tmp_path / "db"
    dest.mkdir()
    (dest / "stale.json").write_text("{}")
    count, warnings = import_osv(archive, dest)
    assert count == 5 and len(warnings) == 1 and "broken.json" in warnings[0]
    assert sorted(p.name for p in dest.iterdir()) == sorted(f"{Path(n).stem}.json" for n in RECORDS)
    db = OsvDatabase(dest)
    assert ids(db.match("pkg:pypi/urllib3@1.26.0")) == {"PYSEC-2023-192"}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp folders left


def test_database_reads_zip_in_folder(tmp_path: Path) -> None:
    folder = tmp_path / "db"
    folder.mkdir()
    with zipfile.ZipFile(folder / "all.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(FIXTURES / "GHSA-35jh-r3h4-6jhm.json", "GHSA-35jh-r3h4-6jhm.json")
    assert ids(OsvDatabase(folder).match("pkg:npm/lodash@4.17.0")) == {"GHSA-35jh-r3h4-6jhm"}


def test_zip_bomb_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(osv, "MAX_ZIP_TOTAL_BYTES", 8 * 1024 * 1024)
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        for i in range(4):
            zf.writestr(f"r{i}.json", b" " * (3 * 1024 * 1024))
    assert archive.stat().st_size < 200_000
    dest = tmp_path / "db"
    with pytest.raises(InputError, match="zip bomb"):
        import_osv(archive, dest)
    assert not dest.exists()
    # and in a database folder: that zip is skipped with the same reason, not a crash
    folder = tmp_path / "folder"
    folder.mkdir()
    shutil.copy(archive, folder / "all.zip")
    db = OsvDatabase(folder)
    assert len(db.warnings) == 1 and "zip bomb" in db.warnings[0]


def test_zip_entry_over_limit_skipped(tmp_path: Path) -> None:
    archive = tmp_path / "big.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("huge.json", b" " * (osv.MAX_ZIP_ENTRY_BYTES + 1))
        zf.write(FIXTURES / "PYSEC-2021-66.yaml", "PYSEC-2021-66.yaml")
    count, warnings = import_osv(archive, tmp_path / "db")
    assert count == 1 and len(warnings) == 1 and "huge.json" in warnings[0]


def test_record_range_unparsable_warns(tmp_path: Path) -> None:
    record = {"id": "BAD-RANGE", "affected": [{"package": {"ecosystem": "npm", "name": "a"},
                                               "ranges": [{"type": "SEMVER", "events": [{"introduced": "1.0"}]}],
                                               "versions": ["1.0.0"]}]}
    (tmp_path / "r.json").write_text(json.dumps(record))
    db = OsvDatabase(tmp_path)
    assert ids(db.match("pkg:npm/a@1.0.0")) == {"BAD-RANGE"}  # still matched through `versions`
    [finding] = db.match("pkg:npm/a", "1.0.0")
    assert finding.package == "pkg:npm/a@1.0.0"
    assert db.match("pkg:npm/a@1.5.0") == []
    assert len(db.warnings) == 1 and "BAD-RANGE" in db.warnings[0] and "'1.0'" in db.warnings[0]
