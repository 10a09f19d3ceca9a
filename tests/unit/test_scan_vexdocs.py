"""VEX documents as files: which ones a gate believes. Signed ones must verify against the trust policy."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from helpers import EXAMPLES_SCANNING

from agentfactory.dsse import INTOTO_PAYLOAD_TYPE, sign_envelope
from agentfactory.errors import InputError
from agentfactory.intoto import STATEMENT_TYPE, make_statement
from agentfactory.keys.local import LocalKeyring
from agentfactory.scan.vex import MAX_VEX_BYTES, parse_vex
from agentfactory.scan.vexdocs import OPENVEX_PREDICATE, load_vex, sign_vex
from agentfactory.trust import TrustPolicy, from_public_keys

EXAMPLE_VEX = EXAMPLES_SCANNING / "vex" / "htmlpage.openvex.json"

CYCLONEDX_VEX = {
    "bomFormat": "CycloneDX", "specVersion": "1.6", "version": 1,
    "serialNumber": "urn:uuid:3e671687-395b-41f5-a30f-a58921a69b79",
    "metadata": {"timestamp": "2026-01-01T00:00:00Z", "component": {"name": "htmlpage", "purl": "pkg:oci/htmlpage"}},
    "components": [{"bom-ref": "lodash", "name": "lodash", "version": "4.17.20", "purl": "pkg:npm/lodash@4.17.20"}],
    "vulnerabilities": [{"id": "CVE-2021-23337", "references": [{"id": "GHSA-35jh-r3h4-6jhm"}],
                         "analysis": {"state": "not_affected", "justification": "code_not_reachable"},
                         "affects": [{"ref": "lodash"}]}],
}


@pytest.fixture(scope="module")
def stranger(tmp_path_factory: pytest.TempPathFactory) -> LocalKeyring:
    """A keyring nobody trusts."""
    r = LocalKeyring(tmp_path_factory.mktemp("stranger-keys"))
    r.create()
    return r


@pytest.fixture(scope="module")
def trust(ring: LocalKeyring) -> TrustPolicy:
    return from_public_keys(ring.public_keys())


def signed(tmp_path: Path, keyring: LocalKeyring, source: Path = EXAMPLE_VEX, name: str = "signed.dsse.json") -> Path:
    out = tmp_path / name
    out.write_bytes(sign_vex(source.read_bytes(), str(source), keyring))
    return out


def plain(tmp_path: Path, name: str = "plain.openvex.json") -> Path:
    out = tmp_path / name
    out.write_bytes(EXAMPLE_VEX.read_bytes())
    return out


def envelope_of(path: Path) -> dict[str, Any]:
    env: dict[str, Any] = json.loads(path.read_bytes())
    return env


def statement_of(path: Path) -> dict[str, Any]:
    st: dict[str, Any] = json.loads(base64.b64decode(envelope_of(path)["payload"]))
    return st


# --- plain documents --------------------------------------------------------------------------

def test_a_plain_document_is_read_when_signatures_are_not_required(tmp_path: Path) -> None:
    path = plain(tmp_path)
    ((source, statements),) = load_vex([path], trust=None, require_signed=False)
    assert source.where == str(path) and source.signed_by == "" and source.statements == 1
    assert source.digest == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
    (st,) = statements
    assert (st.vulnerability, st.status, st.justification) == (
        "GHSA-35jh-r3h4-6jhm", "not_affected", "vulnerable_code_not_in_execute_path")
    assert st.products == ("pkg:oci/htmlpage",) and st.subcomponents == ("pkg:npm/lodash@4.17.20",)


def test_a_plain_document_is_refused_when_signatures_are_required(tmp_path: Path, trust: TrustPolicy) -> None:
    path = plain(tmp_path)
    with pytest.raises(InputError) as exc:
        load_vex([path], trust=trust, require_signed=True)
    assert exc.value.where == str(path)
    assert "this VEX document is not signed" in exc.value.message
    assert "agentfactory vex sign" in exc.value.message


def test_no_paths_means_no_vex() -> None:
    assert load_vex([], trust=None, require_signed=True) == []


# --- signed documents -------------------------------------------------------------------------

def test_sign_vex_wraps_the_document_in_an_in_toto_statement(tmp_path: Path, ring: LocalKeyring) -> None:
    path = signed(tmp_path, ring)
    env = envelope_of(path)
    assert env["payloadType"] == INTOTO_PAYLOAD_TYPE
    assert [s["keyid"] for s in env["signatures"]] == [ring.public_keys()[0].key_id]
    st = statement_of(path)
    doc = json.loads(EXAMPLE_VEX.read_bytes())
    assert st["_type"] == STATEMENT_TYPE and st["predicateType"] == OPENVEX_PREDICATE
    assert st["predicate"] == doc
    assert st["subject"][0]["name"] == doc["@id"]


def test_a_document_signed_by_a_trusted_key_is_believed(tmp_path: Path, ring: LocalKeyring,
                                                        trust: TrustPolicy) -> None:
    path = signed(tmp_path, ring)
    for require_signed in (True, False):
        ((source, statements),) = load_vex([path], trust=trust, require_signed=require_signed)
        assert source.signed_by == ring.public_keys()[0].key_id
        assert source.where == str(path) and source.statements == 1
        assert source.digest == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()
        # The statements are the signed document's, exactly as if it had been read plain.
        assert statements == parse_vex(EXAMPLE_VEX.read_bytes(), EXAMPLE_VEX)


def test_a_signed_cyclonedx_vex_is_believed(tmp_path: Path, ring: LocalKeyring, trust: TrustPolicy) -> None:
    source = tmp_path / "htmlpage.cdx.vex.json"
    source.write_text(json.dumps(CYCLONEDX_VEX))
    path = signed(tmp_path, ring, source)
    assert statement_of(path)["predicateType"] == "https://cyclonedx.org/vex"
    ((info, (st,)),) = load_vex([path], trust=trust, require_signed=True)
    assert info.signed_by == ring.public_keys()[0].key_id
    assert st.vulnerability == "CVE-2021-23337" and st.aliases == ("GHSA-35jh-r3h4-6jhm",)
    assert st.products == ("pkg:oci/htmlpage",) and st.subcomponents == ("pkg:npm/lodash@4.17.20",)


def test_a_document_signed_by_an_untrusted_key_is_refused(tmp_path: Path, stranger: LocalKeyring,
                                                          trust: TrustPolicy) -> None:
    path = signed(tmp_path, stranger)
    for require_signed in (True, False):  # signed means checked, whether or not signatures are required
        with pytest.raises(InputError) as exc:
            load_vex([path], trust=trust, require_signed=require_signed)
        assert exc.value.where == str(path)
        assert "the VEX signature is not trusted" in exc.value.message
        assert "which the trust policy does not list" in exc.value.message


def test_a_tampered_envelope_is_refused(tmp_path: Path, ring: LocalKeyring, trust: TrustPolicy) -> None:
    path = signed(tmp_path, ring)
    env = envelope_of(path)
    st = statement_of(path)
    # The same signer's document, with the statement widened to every product: the signature must not carry over.
    st["predicate"]["statements"][0]["products"][0]["@id"] = "pkg:oci/otheragent"
    env["payload"] = base64.b64encode(json.dumps(st).encode()).decode()
    path.write_text(json.dumps(env))
    with pytest.raises(InputError) as exc:
        load_vex([path], trust=trust, require_signed=True)
    assert exc.value.where == str(path)
    assert "not trusted" in exc.value.message and "does not verify (the document was modified)" in exc.value.message


def test_a_tampered_signature_is_refused(tmp_path: Path, ring: LocalKeyring, trust: TrustPolicy) -> None:
    path = signed(tmp_path, ring)
    env = envelope_of(path)
    sig = bytearray(base64.b64decode(env["signatures"][0]["sig"]))
    sig[7] ^= 1
    env["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
    path.write_text(json.dumps(env))
    with pytest.raises(InputError, match="does not verify"):
        load_vex([path], trust=trust, require_signed=True)


def test_a_signature_by_a_revoked_key_is_refused(tmp_path: Path) -> None:
    keyring = LocalKeyring(tmp_path / "keys")
    old = keyring.create()
    path = signed(tmp_path, keyring)
    keyring.rotate()
    keyring.revoke(old.key_id)
    with pytest.raises(InputError, match="revoked key"):
        load_vex([path], trust=from_public_keys(keyring.public_keys()), require_signed=True)


def test_a_signed_document_without_a_trust_policy_is_refused(tmp_path: Path, ring: LocalKeyring) -> None:
    path = signed(tmp_path, ring)
    with pytest.raises(InputError, match="needs a trust policy to check its signer"):
        load_vex([path], trust=None, require_signed=False)


def test_an_envelope_whose_predicate_is_not_vex_is_refused(tmp_path: Path, ring: LocalKeyring,
                                                           trust: TrustPolicy) -> None:
    digest = "sha256:" + "ab" * 32
    for name, predicate, message in (
            ("other.json", {"hello": "world"}, "neither OpenVEX nor CycloneDX VEX"),
            ("list.json", ["statements"], "is not a VEX document"),
            ("bad-vex.json", {"@context": "https://openvex.dev/ns/v0.2.0", "author": "x", "statements": [
                {"vulnerability": {"name": "CVE-1"}, "products": [{"@id": "pkg:oci/a"}], "status": "maybe"}]},
             "status 'maybe' is not one of")):
        path = tmp_path / name
        statement = make_statement("x", digest, OPENVEX_PREDICATE, predicate)
        path.write_bytes(sign_envelope(INTOTO_PAYLOAD_TYPE, statement, ring).to_json())
        with pytest.raises(InputError) as exc:
            load_vex([path], trust=trust, require_signed=True)
        assert str(path) in str(exc.value) and message in str(exc.value), str(exc.value)
    # A signed statement of another kind (the pipeline's own SBOM attestation, say) is not VEX.
    path = tmp_path / "sbom.json"
    statement = make_statement("x", digest, "https://cyclonedx.org/bom", {"bomFormat": "CycloneDX"})
    path.write_bytes(sign_envelope(INTOTO_PAYLOAD_TYPE, statement, ring).to_json())
    with pytest.raises(InputError, match="is not OpenVEX or CycloneDX VEX"):
        load_vex([path], trust=trust, require_signed=True)


def test_an_envelope_that_is_not_an_in_toto_statement_is_refused(tmp_path: Path, ring: LocalKeyring,
                                                                 trust: TrustPolicy) -> None:
    path = tmp_path / "raw.dsse.json"
    path.write_bytes(sign_envelope("application/vnd.openvex+json", EXAMPLE_VEX.read_bytes(), ring).to_json())
    with pytest.raises(InputError, match="is not an in-toto statement") as exc:
        load_vex([path], trust=trust, require_signed=True)
    assert exc.value.where == str(path)


def test_a_malformed_envelope_is_refused(tmp_path: Path, trust: TrustPolicy) -> None:
    path = tmp_path / "broken.dsse.json"
    path.write_text(json.dumps({"payloadType": INTOTO_PAYLOAD_TYPE, "payload": "!!!", "signatures": []}))
    with pytest.raises(InputError) as exc:
        load_vex([path], trust=trust, require_signed=True)
    assert str(path) in str(exc.value)


# --- files and folders ------------------------------------------------------------------------

def test_a_folder_is_read_as_its_json_files_in_name_order(tmp_path: Path, ring: LocalKeyring,
                                                          trust: TrustPolicy) -> None:
    folder = tmp_path / "vex"
    folder.mkdir()
    b = signed(folder, ring, name="b.dsse.json")
    a = signed(folder, ring, name="a.dsse.json")
    (folder / "README.md").write_text("VEX for htmlpage; not a document")
    (folder / "nested").mkdir()
    (folder / "nested" / "c.json").write_text("not read: folders are not walked")
    loaded = load_vex([folder], trust=trust, require_signed=True)
    assert [s.where for s, _ in loaded] == [str(a), str(b)]
    # A file given next to the folder is read too, in the order given.
    extra = plain(tmp_path)
    loaded = load_vex([folder, extra], trust=trust, require_signed=False)
    assert [s.where for s, _ in loaded] == [str(a), str(b), str(extra)]
    assert [s.signed_by != "" for s, _ in loaded] == [True, True, False]


def test_one_unsigned_document_in_a_folder_refuses_them_all(tmp_path: Path, ring: LocalKeyring,
                                                            trust: TrustPolicy) -> None:
    folder = tmp_path / "vex"
    folder.mkdir()
    signed(folder, ring, name="a.dsse.json")
    odd = plain(folder, "b.openvex.json")
    with pytest.raises(InputError) as exc:  # nothing is half-applied
        load_vex([folder], trust=trust, require_signed=True)
    assert exc.value.where == str(odd) and "not signed" in exc.value.message


def test_an_empty_folder_holds_no_vex(tmp_path: Path) -> None:
    (tmp_path / "vex").mkdir()
    assert load_vex([tmp_path / "vex"], trust=None, require_signed=True) == []


def test_a_missing_path_is_refused(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.openvex.json"
    with pytest.raises(InputError) as exc:
        load_vex([plain(tmp_path), missing], trust=None, require_signed=False)
    assert exc.value.where == str(missing) and exc.value.message == "no such VEX file or folder"


def test_an_oversized_document_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "huge.json"
    with path.open("wb") as fh:
        fh.truncate(MAX_VEX_BYTES + 1)
    with pytest.raises(InputError, match=f"the limit is {MAX_VEX_BYTES}"):
        load_vex([path], trust=None, require_signed=False)


def test_a_plain_file_that_is_not_vex_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "sbom.json"
    path.write_text(json.dumps({"hello": "world"}))
    with pytest.raises(InputError, match="neither an OpenVEX document") as exc:
        load_vex([path], trust=None, require_signed=False)
    assert exc.value.where == str(path)


# --- sign_vex ---------------------------------------------------------------------------------

@pytest.mark.parametrize(("document", "message"), [
    (b'{"hello": "world"}', "neither an OpenVEX document (@context) nor CycloneDX VEX (bomFormat)"),
    (b"not json at all", "the VEX document is not JSON"),
    (b"[1, 2]", "the VEX document is not a JSON object"),
    (json.dumps({"@context": "https://openvex.dev/ns/v0.2.0", "author": "x", "statements": []}).encode(),
     "the VEX document has no statements"),
    (json.dumps({**CYCLONEDX_VEX, "vulnerabilities": []}).encode(), "the VEX document has no statements"),
    (json.dumps({"@context": "https://openvex.dev/ns/v0.2.0", "author": "x", "statements": [
        {"vulnerability": {"name": "CVE-1"}, "products": [{"@id": "pkg:oci/a"}], "status": "not_affected"}]}).encode(),
     "needs a justification or an impact statement"),
])
def test_sign_vex_refuses_what_is_not_a_vex_document(ring: LocalKeyring, document: bytes, message: str) -> None:
    with pytest.raises(InputError) as exc:
        sign_vex(document, "doc.json", ring)
    assert str(exc.value).startswith("doc.json") and message in str(exc.value)


SIGSTORE_FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "sigstore"


def test_a_keyless_bundle_needs_keyless_identities(tmp_path: Path, trust: TrustPolicy) -> None:
    bundle = tmp_path / "vex.sigstore.json"
    bundle.write_bytes((SIGSTORE_FIXTURES / "new_bundle.txt.sigstore.json").read_bytes())
    with pytest.raises(InputError, match="needs keyless identities in the trust policy"):
        load_vex([bundle], trust=trust, require_signed=True)


def test_a_keyless_bundle_that_is_not_a_dsse_statement_is_refused(tmp_path: Path, ring: LocalKeyring) -> None:
    from agentfactory.sigstore_bundles import KeylessIdentity, KeylessPolicy

    # A real keyless bundle from the public Sigstore instance, by a trusted identity, but over a file's
    # digest: a signature, not a signed VEX statement.
    bundle = tmp_path / "vex.sigstore.json"
    bundle.write_bytes((SIGSTORE_FIXTURES / "new_bundle.txt.sigstore.json").read_bytes())
    keyless = KeylessPolicy((KeylessIdentity("https://github.com/login/oauth", "aryadeeptade@gmail.com"),))
    policy = from_public_keys(ring.public_keys(), keyless=keyless)
    with pytest.raises(InputError) as exc:
        load_vex([bundle], trust=policy, require_signed=True)
    assert str(bundle) in str(exc.value) and "not a DSSE attestation" in str(exc.value)


def test_keyless_vex_signing_needs_an_ambient_identity(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from agentfactory.cli.scan_cmd import vex

    for name in ("ACTIONS_ID_TOKEN_REQUEST_URL", "ACTIONS_ID_TOKEN_REQUEST_TOKEN", "SIGSTORE_ID_TOKEN",
                 "GITHUB_ACTIONS"):
        monkeypatch.delenv(name, raising=False)
    done = CliRunner().invoke(vex, ["sign", str(EXAMPLE_VEX), "--key-provider", "sigstore", "-o",
                                    str(tmp_path / "out.json")])
    assert done.exit_code == 2 and "no ambient OIDC identity" in done.output, done.output
    assert not (tmp_path / "out.json").exists()
