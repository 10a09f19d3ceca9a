"""Log keys and signed checkpoints: round trips, every malformed note we refuse, and sigstore-python
reading our checkpoints with its own verifier."""

from __future__ import annotations

import base64
import hashlib
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from agentfactory.errors import InputError, KeyProviderError
from agentfactory.tlog.note import (
    EM_DASH,
    MAX_NOTE_BYTES,
    MAX_SIGNATURES,
    Checkpoint,
    LogKey,
    load_log_public_key,
    parse_signed_note,
    verify,
)

ROOT = hashlib.sha256(b"a root").digest()


@pytest.fixture(scope="module")
def key() -> LogKey:
    return LogKey.generate()


def signed(key: LogKey, size: int = 7, other: tuple[str, ...] = ()) -> str:
    return Checkpoint(key.origin, size, ROOT, other).sign(key)


def test_log_key_is_created_once_with_mode_0600_and_reloaded(tmp_path: Path) -> None:
    path = tmp_path / "tlog" / "log-key.pem"
    first = LogKey.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert b"BEGIN PRIVATE KEY" in path.read_bytes()
    again = LogKey.load_or_create(path)
    assert again.log_id == first.log_id
    der = first.public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert first.log_id == hashlib.sha256(der).hexdigest()
    assert first.key_hint == hashlib.sha256(der).digest()[:4] == bytes.fromhex(first.log_id)[:4]
    assert load_log_public_key(first.public_pem(), "k").public_numbers() == first.public_key.public_numbers()
    assert first.origin == f"agentfactory.dev/tlog - {int(first.log_id[:15], 16)}"  # Rekor: the decimal tree id
    assert first.legacy_origin == f"agentfactory.dev/tlog - {first.log_id[:16]}"


def test_log_key_refuses_group_readable_file(tmp_path: Path) -> None:
    path = tmp_path / "log-key.pem"
    LogKey.load_or_create(path)
    os.chmod(path, 0o640)
    with pytest.raises(KeyProviderError, match=r"log-key\.pem is accessible by group or others \(mode 0640\)"):
        LogKey.load_or_create(path)


def test_log_key_refuses_garbage_and_wrong_key_types(tmp_path: Path) -> None:
    path = tmp_path / "log-key.pem"
    path.write_bytes(b"not a key")
    os.chmod(path, 0o600)
    with pytest.raises(KeyProviderError, match=r"log-key\.pem is not an unencrypted PKCS#8 PEM private key"):
        LogKey.load_or_create(path)
    rsa_key = rsa.generate_private_key(65537, 2048)
    path.write_bytes(rsa_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    with pytest.raises(KeyProviderError, match=r"log-key\.pem is not an ECDSA P-256 key"):
        LogKey.load_or_create(path)
    path.write_bytes(b"x" * 20000)
    with pytest.raises(KeyProviderError, match=r"larger than 16384 bytes"):
        LogKey.load_or_create(path)


def test_log_key_refuses_symlink(tmp_path: Path) -> None:
    real = tmp_path / "real.pem"
    LogKey.load_or_create(real)
    link = tmp_path / "link.pem"
    link.symlink_to(real)
    with pytest.raises(KeyProviderError, match=r"cannot be opened .*a symlink is refused"):
        LogKey.load_or_create(link)


def test_load_log_public_key_refuses_non_p256() -> None:
    p384 = ec.generate_private_key(ec.SECP384R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(InputError, match="must be ECDSA P-256"):
        load_log_public_key(p384, "k")
    with pytest.raises(InputError, match="is not a PEM public key"):
        load_log_public_key(b"nope", "k")


def test_checkpoint_body_format(key: LogKey) -> None:
    cp = Checkpoint("example.org/log", 12, ROOT, ("Timestamp: 1679349379012118479",))
    b64 = base64.b64encode(ROOT).decode()
    assert cp.body() == f"example.org/log\n12\n{b64}\nTimestamp: 1679349379012118479\n".encode()


def test_sign_and_verify_round_trip(key: LogKey) -> None:
    note = signed(key, 42, ("Timestamp: 1",))
    body, sig_line = note.split("\n\n")
    assert sig_line.startswith(f"{EM_DASH} agentfactory.dev/tlog ") and sig_line.endswith("\n")
    blob = base64.b64decode(sig_line.split(" ")[2])
    assert blob[:4] == key.key_hint
    key.public_key.verify(blob[4:], (body + "\n").encode(), ec.ECDSA(hashes.SHA256()))
    cp = verify(note, key.public_key, origin=key.origin)
    assert cp == Checkpoint(key.origin, 42, ROOT, ("Timestamp: 1",))
    parsed, sigs = parse_signed_note(note)
    assert parsed == cp and [(s.name, s.hint) for s in sigs] == [("agentfactory.dev/tlog", key.key_hint)]


def test_extra_signature_by_another_key_is_ignored(key: LogKey) -> None:
    other = LogKey.generate("witness.example")
    note = signed(key)
    cosigned = note + Checkpoint(key.origin, 7, ROOT).sign(other).split("\n\n")[1]
    assert verify(cosigned, key.public_key).size == 7
    assert verify(cosigned, other.public_key).size == 7


def test_signature_by_another_key_is_refused(key: LogKey) -> None:
    other = LogKey.generate()
    with pytest.raises(InputError, match="no signature by this log key"):
        verify(signed(other), key.public_key)


def test_forged_hint_with_wrong_signature_is_refused(key: LogKey) -> None:
    other = LogKey.generate()
    note = signed(other)
    body, line = note.split("\n\n")
    blob = base64.b64decode(line.split(" ")[2])
    forged = f"{body}\n\n{EM_DASH} x {base64.b64encode(key.key_hint + blob[4:]).decode()}\n"
    with pytest.raises(InputError, match="bad signature"):
        verify(forged, key.public_key)


@pytest.mark.parametrize("old,new", [("\n7\n", "\n8\n"), ("agentfactory.dev/tlog -", "agentfactory.dev/log -")])
def test_altered_checkpoint_line_is_refused(key: LogKey, old: str, new: str) -> None:
    note = signed(key).replace(old, new, 1)
    with pytest.raises(InputError, match="bad signature"):
        verify(note, key.public_key)


def test_altered_root_is_refused(key: LogKey) -> None:
    b64 = base64.b64encode(ROOT).decode()
    other = base64.b64encode(hashlib.sha256(b"other").digest()).decode()
    with pytest.raises(InputError, match="bad signature"):
        verify(signed(key).replace(b64, other), key.public_key)


def test_wrong_origin_is_refused(key: LogKey) -> None:
    with pytest.raises(InputError, match=r"wrong origin 'agentfactory.dev/tlog - .*'; expected 'elsewhere'"):
        verify(signed(key), key.public_key, origin="elsewhere")


def _note(body: str, sig: str = f"{EM_DASH} n AAAAAAA=\n") -> str:
    return body + "\n" + sig


B64ROOT = base64.b64encode(ROOT).decode()
GOOD_BODY = f"o\n1\n{B64ROOT}\n"


@pytest.mark.parametrize("text,message", [
    ("x" * (MAX_NOTE_BYTES + 1), "signed note is 65537 bytes; the limit is 65536"),
    (b"o\n1\n\xff\n\n", "signed note is not UTF-8"),
    (_note(GOOD_BODY).replace("o\n", "o\r\n", 1), "signed note contains control characters"),
    (GOOD_BODY, "needs exactly one blank line"),
    (_note(GOOD_BODY) + "\n" + f"{EM_DASH} n AAAAAAA=\n", "needs exactly one blank line"),
    (GOOD_BODY + "\n" + f"{EM_DASH} n AAAAAAA=", "signature block must be non-empty and end with a newline"),
    (_note(GOOD_BODY, "".join(f"{EM_DASH} n{i} AAAAAAA=\n" for i in range(MAX_SIGNATURES + 1))),
     f"note has {MAX_SIGNATURES + 1} signatures; the limit is {MAX_SIGNATURES}"),
    (_note(GOOD_BODY, "- n AAAAAAA=\n"), "signature line 1 is not"),
    (_note(GOOD_BODY, f"{EM_DASH} a+b AAAAAAA=\n"), "signature line 1 is not"),
    (_note(GOOD_BODY, f"{EM_DASH} n AAAA AAA=\n"), "signature line 1 is not"),
    (_note(GOOD_BODY, f"{EM_DASH} n AAAAAA=\n"), "signature line 1 is not valid base64"),
    (_note(GOOD_BODY, f"{EM_DASH} n AAAA\n"), "signature line 1 is too short"),
    (_note("o\n1\n"), "needs origin, size and root hash lines"),
    (_note(GOOD_BODY + "".join(f"x{i}\n" for i in range(17))), "more than 16 extension lines"),
    (_note(f"{'o' * 257}\n1\n{B64ROOT}\n"), "origin must be 1-256 characters"),
    (_note(f"o\n01\n{B64ROOT}\n"), "size must be a decimal number without sign or leading zeros"),
    (_note(f"o\n+1\n{B64ROOT}\n"), "size must be a decimal number without sign or leading zeros"),
    (_note(f"o\n-1\n{B64ROOT}\n"), "size must be a decimal number without sign or leading zeros"),
    (_note(f"o\n1_0\n{B64ROOT}\n"), "size must be a decimal number without sign or leading zeros"),
    (_note(f"o\n9223372036854775808\n{B64ROOT}\n"), "size must be a decimal number without sign or leading zeros"),
    (_note("o\n1\n!!!!\n"), "checkpoint root hash is not valid base64"),
    (_note(f"o\n1\n{B64ROOT[:-2]}B=\n"), "root hash is not canonical base64"),
    (_note("o\n1\nAAAA\n"), "root hash is 3 bytes, not 32"),
])
def test_malformed_notes_are_refused(key: LogKey, text: str | bytes, message: str) -> None:
    with pytest.raises(InputError, match=message.replace("+", r"\+")):
        verify(text, key.public_key)


def test_size_zero_and_max_parse(key: LogKey) -> None:
    assert verify(signed(key, 0), key.public_key).size == 0
    assert verify(signed(key, 2**63 - 1), key.public_key).size == 2**63 - 1


def test_checkpoint_refuses_bad_fields() -> None:
    with pytest.raises(ValueError, match="origin"):
        Checkpoint("a\nb", 1, ROOT)
    with pytest.raises(ValueError, match="root hash"):
        Checkpoint("o", 1, b"short")
    with pytest.raises(ValueError, match="size"):
        Checkpoint("o", -1, ROOT)
    with pytest.raises(ValueError, match="extension"):
        Checkpoint("o", 1, ROOT, ("",))


# --- sigstore-python reads our checkpoints with its own verifier -------------------------------------


def _sigstore_keyring(key: LogKey):  # type: ignore[no-untyped-def]
    from sigstore._internal.trust import Keyring, RekorKeyring
    from sigstore_models.common import v1 as common_v1

    der = key.public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return RekorKeyring(Keyring([common_v1.PublicKey(
        raw_bytes=base64.b64encode(der), key_details=common_v1.PublicKeyDetails.PKIX_ECDSA_P256_SHA_256)]))


def test_sigstore_python_verifies_our_signed_checkpoint(key: LogKey) -> None:
    pytest.importorskip("sigstore")
    from sigstore._internal.rekor.checkpoint import SignedCheckpoint
    from sigstore._utils import KeyID
    from sigstore.errors import VerificationError

    note = signed(key, 5, ("Timestamp: 1700000000000000000",))
    sc = SignedCheckpoint.from_text(note)
    sc.signed_note.verify(_sigstore_keyring(key), KeyID(bytes.fromhex(key.log_id)))
    assert sc.checkpoint.origin == key.origin and sc.checkpoint.log_size == 5
    assert sc.checkpoint.log_hash == ROOT.hex()
    assert sc.checkpoint.other_content == ["Timestamp: 1700000000000000000"]

    tampered = SignedCheckpoint.from_text(note.replace("\n5\n", "\n6\n"))
    with pytest.raises(VerificationError, match="invalid signature"):
        tampered.signed_note.verify(_sigstore_keyring(key), KeyID(bytes.fromhex(key.log_id)))
    other = LogKey.generate()
    with pytest.raises(VerificationError, match="Signature not found"):
        SignedCheckpoint.from_text(signed(other)).signed_note.verify(
            _sigstore_keyring(key), KeyID(bytes.fromhex(key.log_id)))
