"""RFC 6962 / RFC 9162 Merkle tree hashing, proofs and their verification, as pure functions.

Proof construction is written against a `subtree(start, end)` oracle (the hash of leaves [start, end)) rather
than a list of leaves, so that storage can answer each range from stored perfect subtrees instead of rehashing
the log. Verification follows RFC 9162 sections 2.1.3.2 and 2.1.4.2 literally, because that is what Rekor,
cosign and sigstore clients check: our proofs must verify with their code, not just with ours.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

from ..errors import AgentFactoryError

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()

Subtree = Callable[[int, int], bytes]


class ProofError(AgentFactoryError):
    """A Merkle proof does not verify, or was asked for with impossible sizes: the log cannot be trusted."""


def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 || data): the prefix keeps a leaf from ever being mistaken for an interior node."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def split_point(n: int) -> int:
    """The largest power of two strictly below `n` (n > 1): where RFC 9162 splits a tree of n leaves."""
    return 1 << ((n - 1).bit_length() - 1)


def root_from_leaves(leaf_hashes: Sequence[bytes]) -> bytes:
    """MTH over already-hashed leaves; linear time, meant for tests and small trees."""
    if not leaf_hashes:
        return EMPTY_ROOT
    if len(leaf_hashes) == 1:
        return leaf_hashes[0]
    k = split_point(len(leaf_hashes))
    return node_hash(root_from_leaves(leaf_hashes[:k]), root_from_leaves(leaf_hashes[k:]))


def root_from_right_edge(perfect: Sequence[bytes]) -> bytes:
    """The root of a tree from the roots of the perfect subtrees it decomposes into, largest (leftmost) first.

    RFC 9162 splits at the largest power of two, so the root is those subtrees folded from the right: what a
    writer that keeps its right edge knows after an append without reading anything back."""
    if not perfect:
        return EMPTY_ROOT
    root = perfect[-1]
    for h in reversed(perfect[:-1]):
        root = node_hash(h, root)
    return root


def inclusion_path(index: int, size: int, subtree: Subtree) -> list[bytes]:
    """RFC 9162 PATH(index, D[0:size]): sibling hashes from the leaf's level up to the root's children."""
    if size <= 0 or not 0 <= index < size:
        raise ProofError(f"no inclusion proof for index {index} in a tree of size {size}: index must be below size")
    path: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        mid = start + split_point(end - start)
        if index < mid:
            path.append(subtree(mid, end))
            end = mid
        else:
            path.append(subtree(start, mid))
            start = mid
    path.reverse()  # collected root-first; the RFC orders them leaf-first
    return path


def consistency_path(old_size: int, new_size: int, subtree: Subtree) -> list[bytes]:
    """RFC 9162 PROOF(old_size, D[0:new_size]) via SUBPROOF, leaf-level hashes first."""
    _check_consistency_sizes(old_size, new_size)
    path: list[bytes] = []
    if old_size == new_size:
        return path
    start, end, complete = 0, new_size, True
    while True:
        n, m = end - start, old_size - start
        if m == n:
            if not complete:
                path.append(subtree(start, end))
            break
        k = split_point(n)
        if m <= k:
            path.append(subtree(start + k, end))
            end = start + k
        else:
            path.append(subtree(start, start + k))
            start += k
            complete = False
    path.reverse()
    return path


def _check_consistency_sizes(old_size: int, new_size: int) -> None:
    if old_size <= 0:
        raise ProofError(f"consistency from an empty tree is not defined (old size {old_size}, new size {new_size})")
    if old_size > new_size:
        raise ProofError(f"old size {old_size} is larger than new size {new_size}: a log never shrinks")


def _check_hashes(what: str, hashes: Sequence[bytes]) -> None:
    for i, h in enumerate(hashes):
        if len(h) != HASH_SIZE:
            raise ProofError(f"{what} hash #{i} is {len(h)} bytes, expected {HASH_SIZE}")


def root_from_inclusion(leaf: bytes, index: int, size: int, path: Sequence[bytes]) -> bytes:
    """The root that `path` implies for leaf hash `leaf` at `index` (RFC 9162 2.1.3.2, steps 1-4)."""
    if size <= 0 or not 0 <= index < size:
        raise ProofError(f"inclusion proof for index {index} in a tree of size {size}: index must be below size")
    _check_hashes("inclusion proof", [leaf, *path])
    fn, sn, r = index, size - 1, leaf
    for p in path:
        if sn == 0:
            raise ProofError(f"inclusion proof for index {index} in size {size} has too many hashes ({len(path)})")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError(f"inclusion proof for index {index} in size {size} has too few hashes ({len(path)})")
    return r


def verify_inclusion(leaf: bytes, index: int, size: int, path: Sequence[bytes], root: bytes) -> None:
    """Raise ProofError unless `path` proves leaf hash `leaf` sits at `index` in the tree of `size` with `root`."""
    if root_from_inclusion(leaf, index, size, path) != root:
        raise ProofError(f"inclusion proof for index {index} in size {size} does not lead to the expected root")


def verify_consistency(old_size: int, new_size: int, old_root: bytes, new_root: bytes, path: Sequence[bytes]) -> None:
    """Raise ProofError unless `path` proves the tree of `new_size` extends the tree of `old_size` (2.1.4.2)."""
    _check_consistency_sizes(old_size, new_size)
    _check_hashes("consistency proof", [old_root, new_root, *path])
    where = f"consistency proof from size {old_size} to {new_size}"
    if old_size == new_size:
        if path:
            raise ProofError(f"{where} must be empty for equal sizes, got {len(path)} hashes")
        if old_root != new_root:
            raise ProofError(f"{where}: the two roots differ for the same size: the log forked")
        return
    if not path:
        raise ProofError(f"{where} is empty")
    hashes = list(path)
    if old_size & (old_size - 1) == 0:
        hashes.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = hashes[0]
    for c in hashes[1:]:
        if sn == 0:
            raise ProofError(f"{where} has too many hashes ({len(path)})")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError(f"{where} has too few hashes ({len(path)})")
    if fr != old_root:
        raise ProofError(f"{where} does not lead to the old root")
    if sr != new_root:
        raise ProofError(f"{where} does not lead to the new root")
