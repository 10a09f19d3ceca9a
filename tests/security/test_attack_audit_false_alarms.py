"""Attack class: crying wolf. An audit that alarms on the pipeline's own signatures is an audit people stop
reading, and then the one real alarm (a stolen key at work) is missed. Right after `make demo`, `audit keys`
reported ~24 `UNACCOUNTED … (a stolen key at work?)`: the demo's own signatures into its side stores, and the
signatures of a run refused (or interrupted) after logging, which never reached the store.

Now the pipeline's signing record says, for every signature, which store it was made for: `audit keys` reports
a logged signature recorded for another store as `SIGNED FOR <store>` and one recorded for the audited store but
never published as `INTERRUPTED (signed and logged at …, never published)`; neither is an alarm. A logged
signature with no record line at all (what a thief with the key leaves) is still UNACCOUNTED, whichever store is
audited. Everything here is the real `agentfactory` command: pipeline runs, the embedded log, the audit.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import ROOT, write_template
from runtime_helpers import OK_WAT, wat_manifest

from agentfactory.evidence import ArtifactSignature, proposed_for_signature
from agentfactory.keys.local import LocalKeyring
from agentfactory.tlog.log import EmbeddedLog

AF = str(Path(sys.executable).with_name("agentfactory"))
LODASH = ROOT / "examples" / "scanning" / "templates" / "htmlpage" / "vendor"
VULNERABLE_DEPENDENCY = """  dependencies:
    - name: lodash
      version: 4.17.20
      purl: pkg:npm/lodash@4.17.20
      license: MIT
      path: vendor/lodash
      sha256: e6eb402571b8d3f9fc70b00902fac108d4426e9c8d4977a503eafafb9c522151
"""


def af(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([AF, *args], capture_output=True, text=True, env=os.environ.copy(), cwd=ROOT)


def agent(root: Path, name: str, *, vulnerable: bool = False) -> None:
    """A small WAT agent whose module (and so digest) is its own; `vulnerable` vendors lodash 4.17.20."""
    manifest = wat_manifest(name)
    if vulnerable:
        manifest = manifest.replace("  tests:\n", VULNERABLE_DEPENDENCY + "  tests:\n")
    folder = write_template(root, name, manifest=manifest, files={"src/main.wat": OK_WAT.replace('"ok', f'"{name}')})
    if vulnerable:
        shutil.copytree(LODASH, folder / "vendor")


def keys(log_key: Path, *args: str) -> tuple[int, dict[str, Any]]:
    done = af("audit", "keys", "--json", "--tlog-key", str(log_key), *args)
    assert done.returncode in (0, 1), done.stderr
    return done.returncode, json.loads(done.stdout)


@pytest.fixture
def two_stores(af_home: Path, tmp_path: Path) -> tuple[Path, str, str]:
    """`alpha` published to the default store, `beta` to a side store (as `make demo` does), the log's key pinned
    from a copy outside its folder and the monitor initialised: (pinned key, default store URL, side store URL)."""
    agent(tmp_path / "main", "alpha")
    agent(tmp_path / "side", "beta")
    side = tmp_path / "side-store"
    for args in (["--templates", str(tmp_path / "main")],
                 ["--templates", str(tmp_path / "side"), "--store", f"oci-layout:{side}"]):
        done = af("pipeline", "run", "--no-tests", *args)
        assert done.returncode == 0, done.stderr
    log_key = tmp_path / "log-key.pem"
    shutil.copy(af_home / "tlog" / "log-public-key.pem", log_key)
    init = af("audit", "monitor", "--init", "--tlog-key", str(log_key))
    assert init.returncode == 0, init.stderr
    return log_key, f"oci-layout:{(af_home / 'store').resolve()}", f"oci-layout:{side.resolve()}"


def test_signatures_for_another_store_are_said_not_alarmed(two_stores: tuple[Path, str, str]) -> None:
    log_key, main, side = two_stores
    for audited, other, theirs in ((main, side, "beta:1.0.0"), (side, main, "alpha:1.0.0")):
        code, report = keys(log_key, "--store", audited)
        assert code == 0 and report["ok"], report
        assert report["unaccounted"] == [] and report["interrupted"] == []
        # beta's signature, its 3 attestations and its image signature (for cosign)
        assert len(report["signedElsewhere"]) == 5, report["signedElsewhere"]
        assert all(line.startswith(f"SIGNED FOR {other}: ") and theirs in line for line in report["signedElsewhere"])
    text = af("audit", "keys", "--tlog-key", str(log_key))
    assert text.returncode == 0 and "stolen" not in text.stdout
    assert f"SIGNED FOR {side}" in text.stdout and "every signature by our keys is accounted for" in text.stdout


def test_a_run_stopped_after_logging_is_interrupted_not_stolen(two_stores: tuple[Path, str, str],
                                                                tmp_path: Path) -> None:
    """Signed, recorded and logged, then refused before publication (the artifact policy: lodash 4.17.20 has a
    High advisory): the same state a Ctrl-C between logging and publishing leaves."""
    log_key, main, side = two_stores
    agent(tmp_path / "vuln", "gamma", vulnerable=True)
    refused = af("pipeline", "run", "--no-tests", "--templates", str(tmp_path / "vuln"))
    assert refused.returncode == 1 and "GHSA-35jh-r3h4-6jhm" in refused.stderr, refused.stderr
    assert af("store", "ls", "--json").stdout.count('"gamma"') == 0  # never published
    code, report = keys(log_key)
    assert code == 0 and report["ok"], report
    assert len(report["interrupted"]) == 5, report["interrupted"]  # signature, 3 attestations, image signature
    for line in report["interrupted"]:
        assert line.startswith("INTERRUPTED: ") and "gamma:1.0.0" in line and "never published" in line
        assert "signed and logged at 20" in line and "stolen key at work" not in line
    code, report = keys(log_key, "--store", side)  # from the side store: the main store's business
    assert code == 0 and report["interrupted"] == []
    assert sum(f"SIGNED FOR {main}: " in line and "gamma:1.0.0" in line for line in report["signedElsewhere"]) == 5


def test_a_signature_with_no_record_line_still_alarms_in_every_store(af_home: Path,
                                                                     two_stores: tuple[Path, str, str]) -> None:
    """The thief: our key, a signature logged with no line in the pipeline's record (signed for no store)."""
    log_key, main, side = two_stores
    ring = LocalKeyring(af_home / "keys")
    digest = "sha256:" + hashlib.sha256(b"the thief's own module").hexdigest()
    art = ArtifactSignature.from_signature(digest, ring.sign_digest(bytes.fromhex(digest.split(":")[1])))
    with EmbeddedLog(af_home / "tlog") as log:
        log.add(proposed_for_signature(art, ring.public_keys()[0].pem))
    for audited in (main, side):
        code, report = keys(log_key, "--store", audited)
        assert code == 1 and not report["ok"]
        [line] = report["unaccounted"]
        assert "UNACCOUNTED" in line and "no record" in line and digest in line and "stolen key" in line
        assert not any(digest in line for line in report["signedElsewhere"] + report["interrupted"])


def test_every_signer_of_the_build_keys_records_what_it_signed(af_home: Path, two_stores: tuple[Path, str, str],
                                                               tmp_path: Path) -> None:
    """`scan --attest` (a re-scan, signed and logged by the build key) and `vex sign` sign outside the pipeline:
    their signatures are in the record too, so the audit does not take the operator's own re-scan for a thief."""
    log_key, main, side = two_stores
    rescanned = af("scan", "alpha:1.0.0", "--attest", "--json")
    assert rescanned.returncode == 0, rescanned.stderr
    index = json.loads(rescanned.stdout)["attestation"]["logIndex"]
    signed = af("vex", "sign", str(ROOT / "examples" / "scanning" / "vex" / "htmlpage.openvex.json"),
                "-o", str(tmp_path / "vex.dsse.json"), "--json")
    assert signed.returncode == 0, signed.stderr
    for audited in (main, side):
        code, report = keys(log_key, "--store", audited)
        assert code == 0 and report["unaccounted"] == [], report
    code, report = keys(log_key, "--store", side)
    assert any(f"log entry {index} " in line and line.startswith(f"SIGNED FOR {main}: ") and "alpha:1.0.0" in line
               for line in report["signedElsewhere"]), report["signedElsewhere"]
    lines = [json.loads(x) for x in (af_home / "signing-record.jsonl").read_text().splitlines()]
    assert [x["store"] for x in lines[-2:]] == [main, ""]  # the re-scan for its store, the VEX for none
