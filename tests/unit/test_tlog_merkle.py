"""RFC 6962 / RFC 9162 Merkle hashing and proofs: known vectors, a naive reference, and tampered proofs."""

from __future__ import annotations

import hashlib

import pytest

from agentfactory.tlog import merkle
from agentfactory.tlog.merkle import ProofError

# The 8-leaf tree of the RFC 6962 reference tests, with the root for each size 1..8 and known proofs, from
# transparency-dev/merkle proof/verify_test.go (`leaves`, `roots`, `inclusionProofs`, `consistencyProofs`;
# the same vectors as google/trillian merkle/log_verifier_test.go and certificate-transparency-go).
LEAVES = [bytes.fromhex(h) for h in (
    "", "00", "10", "2021", "3031", "40414243", "5051525354555657", "606162636465666768696a6b6c6d6e6f")]
ROOTS = [bytes.fromhex(h) for h in (
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
)]
# (leaf index, tree size, proof); the Go file numbers leaves from 1.
INCLUSION = [
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (1, 5, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]
CONSISTENCY = [
    (1, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (6, 8, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 5, ["5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
    (6, 7, ["0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
]
N = 20


# -- a naive reference: the RFC's recursive definitions over a list, nothing shared with merkle.py ----------

def _mth(d: list[bytes]) -> bytes:
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return d[0]
    k = 1
    while k * 2 < len(d):
        k *= 2
    return hashlib.sha256(b"\x01" + _mth(d[:k]) + _mth(d[k:])).digest()


def _path(m: int, d: list[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = 1
    while k * 2 < len(d):
        k *= 2
    return [*_path(m, d[:k]), _mth(d[k:])] if m < k else [*_path(m - k, d[k:]), _mth(d[:k])]


def _subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    if m == len(d):
        return [] if b else [_mth(d)]
    k = 1
    while k * 2 < len(d):
        k *= 2
    if m <= k:
        return [*_subproof(m, d[:k], b), _mth(d[k:])]
    return [*_subproof(m - k, d[k:], False), _mth(d[:k])]


def _hashes(n: int) -> list[bytes]:
    return [merkle.leaf_hash(b"entry-%d" % i) for i in range(n)]


def _oracle(d: list[bytes]) -> merkle.Subtree:
    return lambda start, end: _mth(d[start:end])


def _flip(h: bytes, bit: int = 3) -> bytes:
    return bytes([h[0] ^ (1 << bit)]) + h[1:]


# -- vectors ---------------------------------------------------------------------------------------------

def test_hashing_primitives() -> None:
    assert merkle.EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert merkle.leaf_hash(b"") == ROOTS[0]
    assert merkle.node_hash(b"a" * 32, b"b" * 32) == hashlib.sha256(b"\x01" + b"a" * 32 + b"b" * 32).digest()
    assert merkle.root_from_leaves([]) == merkle.EMPTY_ROOT


@pytest.mark.parametrize("size", range(1, 9))
def test_rfc6962_roots(size: int) -> None:
    hashes = [merkle.leaf_hash(x) for x in LEAVES]
    assert merkle.root_from_leaves(hashes[:size]) == ROOTS[size - 1]


@pytest.mark.parametrize(("index", "size", "proof"), INCLUSION)
def test_rfc6962_inclusion_vectors(index: int, size: int, proof: list[str]) -> None:
    hashes = [merkle.leaf_hash(x) for x in LEAVES]
    path = merkle.inclusion_path(index, size, _oracle(hashes))
    assert [p.hex() for p in path] == proof
    merkle.verify_inclusion(hashes[index], index, size, path, ROOTS[size - 1])


@pytest.mark.parametrize(("old", "new", "proof"), CONSISTENCY)
def test_rfc6962_consistency_vectors(old: int, new: int, proof: list[str]) -> None:
    hashes = [merkle.leaf_hash(x) for x in LEAVES]
    path = merkle.consistency_path(old, new, _oracle(hashes))
    assert [p.hex() for p in path] == proof
    merkle.verify_consistency(old, new, ROOTS[old - 1], ROOTS[new - 1], path)


# -- every pair up to N leaves against the naive reference ------------------------------------------------

def test_inclusion_every_pair_matches_reference() -> None:
    d = _hashes(N)
    for size in range(1, N + 1):
        root = _mth(d[:size])
        assert merkle.root_from_leaves(d[:size]) == root
        for index in range(size):
            path = merkle.inclusion_path(index, size, _oracle(d[:size]))
            assert path == _path(index, d[:size]), (index, size)
            merkle.verify_inclusion(d[index], index, size, path, root)
            assert merkle.root_from_inclusion(d[index], index, size, path) == root


def test_consistency_every_pair_matches_reference() -> None:
    d = _hashes(N)
    for new in range(1, N + 1):
        for old in range(1, new + 1):
            path = merkle.consistency_path(old, new, _oracle(d[:new]))
            assert path == _subproof(old, d[:new], True), (old, new)
            merkle.verify_consistency(old, new, _mth(d[:old]), _mth(d[:new]), path)


# -- tampering ------------------------------------------------------------------------------------------

Probe = tuple[bytes, int, int, list[bytes], bytes]


def _inclusion_probes(index: int, size: int, path: list[bytes], root: bytes, leaf: bytes) -> list[Probe]:
    """Wrong index, size, leaf or root; a flipped bit; a hash added or removed (as transparency-dev/merkle does).

    Sizes move by a factor of two, not by one: RFC 9162 verification binds the proof's shape, and neighbouring
    sizes can share it; the size itself is bound by the signed checkpoint, not by the proof.
    """
    probes: list[Probe] = [
        (leaf, index, size * 2, path, root),
        (merkle.leaf_hash(b"wrong"), index, size, path, root), (leaf, index, size, path, merkle.EMPTY_ROOT),
        (_flip(leaf), index, size, path, root), (leaf, index, size, path, _flip(root)),
        (leaf, index, size, [*path, root], root), (leaf, index, size, [root, *path], root),
    ]
    if index + 1 < size:
        probes.append((leaf, index + 1, size, path, root))
    if index > 0:
        probes.append((leaf, index - 1, size, path, root))
    if index < size // 2:
        probes.append((leaf, index, size // 2, path, root))
    for i in range(len(path)):
        probes.append((leaf, index, size, [*path[:i], _flip(path[i]), *path[i + 1:]], root))
    if path:
        probes.append((leaf, index, size, path[:-1], root))
        probes.append((leaf, index, size, path[1:], root))
    return probes


def test_tampered_inclusion_proofs_rejected() -> None:
    d = _hashes(N)
    for size in range(1, N + 1):
        root = _mth(d[:size])
        for index in range(size):
            path = _path(index, d[:size])
            for leaf, i, n, p, r in _inclusion_probes(index, size, path, root, d[index]):
                with pytest.raises(ProofError):
                    merkle.verify_inclusion(leaf, i, n, p, r)


def test_tampered_consistency_proofs_rejected() -> None:
    d = _hashes(N)
    for new in range(2, N + 1):
        for old in range(1, new):
            r1, r2 = _mth(d[:old]), _mth(d[:new])
            path = _subproof(old, d[:new], True)
            probes: list[tuple[int, int, bytes, bytes, list[bytes]]] = [
                (old, new, r2, r1, path), (old, new, _flip(r1), r2, path), (old, new, r1, _flip(r2), path),
                (old, new, r1, r2, []), (old, new, r1, r2, [*path, r1]), (old, new, r1, r2, [r2, *path]),
                (old, new, r1, r2, path[:-1]), (old, new * 2, r1, r2, path),
            ]
            if old <= new // 2 < new:
                probes.append((old, new // 2, r1, r2, path))
            if old + 1 < new:
                probes.append((old + 1, new, r1, r2, path))
            if old > 1:
                probes.append((old - 1, new, r1, r2, path))
            for i in range(len(path)):
                probes.append((old, new, r1, r2, [*path[:i], _flip(path[i], 4), *path[i + 1:]]))
            for o, n, a, b, p in probes:
                with pytest.raises(ProofError):
                    merkle.verify_consistency(o, n, a, b, p)


def test_bad_sizes_are_errors() -> None:
    d = _hashes(4)
    oracle = _oracle(d)
    with pytest.raises(ProofError, match="consistency from an empty tree is not defined"):
        merkle.consistency_path(0, 4, oracle)
    with pytest.raises(ProofError, match="consistency from an empty tree is not defined"):
        merkle.verify_consistency(0, 4, merkle.EMPTY_ROOT, _mth(d), [])
    with pytest.raises(ProofError, match="old size 5 is larger than new size 4"):
        merkle.consistency_path(5, 4, oracle)
    with pytest.raises(ProofError, match="index must be below size"):
        merkle.inclusion_path(4, 4, oracle)
    with pytest.raises(ProofError, match="index must be below size"):
        merkle.inclusion_path(0, 0, oracle)
    with pytest.raises(ProofError, match="index must be below size"):
        merkle.verify_inclusion(d[0], 0, 0, [], merkle.EMPTY_ROOT)
    with pytest.raises(ProofError, match="is 31 bytes"):
        merkle.verify_inclusion(d[0], 0, 2, [d[1][:31]], _mth(d[:2]))


def test_equal_sizes() -> None:
    d = _hashes(5)
    assert merkle.consistency_path(5, 5, _oracle(d)) == []
    merkle.verify_consistency(5, 5, _mth(d), _mth(d), [])
    with pytest.raises(ProofError, match="forked"):
        merkle.verify_consistency(5, 5, _mth(d), _mth(d[:4]), [])
    with pytest.raises(ProofError, match="must be empty"):
        merkle.verify_consistency(5, 5, _mth(d), _mth(d), [d[0]])


def test_single_leaf_inclusion() -> None:
    h = merkle.leaf_hash(b"data")
    assert merkle.inclusion_path(0, 1, _oracle([h])) == []
    merkle.verify_inclusion(h, 0, 1, [], h)
    with pytest.raises(ProofError):
        merkle.verify_inclusion(h, 0, 1, [], merkle.EMPTY_ROOT)
