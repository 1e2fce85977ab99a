"""The audit log's Merkle tree, exactly RFC 9162 §2.1 (as RFC 6962): hashes, proofs, checks.

Dependency-free on purpose (the standard library only): a patient's software, an auditor or
any third party can copy this file and check that an entry is in a signed tree head, and that
a later tree head extends an earlier one, against the platform's public routes.

    leaf hash = SHA-256(0x00 ‖ entry bytes)        node hash = SHA-256(0x01 ‖ left ‖ right)
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

HASH_SIZE = 32


def leaf_hash(entry: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def empty_root() -> bytes:
    return hashlib.sha256(b"").digest()


def root(leaves: Sequence[bytes]) -> bytes:
    """MTH over leaf hashes. Pairing level by level and carrying an odd last node up
    unchanged builds the same left-balanced tree as the RFC's split at the largest power of 2."""
    if not leaves:
        return empty_root()
    level = list(leaves)
    while len(level) > 1:
        paired = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0]


def _split(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


RangeRoot = Callable[[int, int], bytes]
"""MTH(D[start:end]) for 0 <= start < end: how proofs read a tree, whatever holds it."""


def inclusion_proof(index: int, leaves: Sequence[bytes]) -> list[bytes]:
    """PATH(m, D[n]) of RFC 9162 §2.1.3.1, over a list of leaf hashes."""
    return inclusion_path(index, len(leaves), lambda a, b: root(leaves[a:b]))


def consistency_proof(first: int, leaves: Sequence[bytes]) -> list[bytes]:
    """PROOF(m, D[n]) of RFC 9162 §2.1.4.1, over a list of leaf hashes."""
    return consistency_path(first, len(leaves), lambda a, b: root(leaves[a:b]))


def inclusion_path(index: int, size: int, range_root: RangeRoot) -> list[bytes]:
    """PATH(index, D[0:size]) read through `range_root`."""
    if not 0 <= index < size:
        raise ValueError("leaf index outside the tree")
    path: list[bytes] = []
    start, end = 0, size
    while end - start > 1:
        k = _split(end - start)
        if index < start + k:
            path.append(range_root(start + k, end))
            end = start + k
        else:
            path.append(range_root(start, start + k))
            start += k
    path.reverse()  # the RFC lists the path from the leaf up
    return path


def consistency_path(first: int, size: int, range_root: RangeRoot) -> list[bytes]:
    """PROOF(first, D[0:size]) read through `range_root`."""
    if not 0 < first <= size:
        raise ValueError("the first tree size must be between 1 and the second")
    path: list[bytes] = []
    start, end, m, complete = 0, size, first, True
    while m != end - start:
        k = _split(end - start)
        if m <= k:
            path.append(range_root(start + k, end))
            end = start + k
        else:
            path.append(range_root(start, start + k))
            m -= k
            start += k
            complete = False
    if not complete:
        path.append(range_root(start, end))
    path.reverse()
    return path


class Tree:
    """An append-only Merkle tree keeping the hash of every complete subtree, level by level.

    Level 0 holds the leaf hashes, level h the roots of the aligned subtrees of 2**h leaves,
    each level packed in one bytearray: 64 bytes per leaf in all. Any MTH(D[a:b]) the RFC's
    proofs need is then at most 2·log2(n) hashes away, for any tree size up to the current one.
    """

    def __init__(self) -> None:
        self._levels: list[bytearray] = [bytearray()]

    def __len__(self) -> int:
        return len(self._levels[0]) // HASH_SIZE

    def append(self, leaf: bytes) -> None:
        levels = self._levels
        levels[0] += leaf
        index, height, node = len(levels[0]) // HASH_SIZE - 1, 0, leaf
        while index & 1:  # this leaf completes subtrees: hash them up
            level = levels[height]
            node = node_hash(bytes(level[-2 * HASH_SIZE : -HASH_SIZE]), node)
            height += 1
            index >>= 1
            if height == len(levels):
                levels.append(bytearray())
            levels[height] += node

    def extend(self, leaves: Sequence[bytes]) -> None:
        """Append many leaves at once: each level's new nodes hash adjacent pairs in one pass."""
        levels = self._levels
        before = len(self)
        levels[0] += b"".join(leaves)
        start, end, height = before, len(self), 0
        while end - start > 0:
            level = levels[height]
            first_pair = start - (start & 1)  # a left sibling already stored joins the first pair
            view = bytes(level[first_pair * HASH_SIZE : (end - (end & 1)) * HASH_SIZE])
            if not view:
                break
            sha256 = hashlib.sha256
            parents = b"".join(
                [
                    sha256(b"\x01" + view[at : at + 2 * HASH_SIZE]).digest()
                    for at in range(0, len(view), 2 * HASH_SIZE)
                ]
            )
            height += 1
            if height == len(levels):
                levels.append(bytearray())
            levels[height] += parents
            start, end = first_pair // 2, end // 2

    def leaf(self, index: int) -> bytes:
        return bytes(self._levels[0][index * HASH_SIZE : (index + 1) * HASH_SIZE])

    def hashes(self, height: int, first: int, count: int) -> bytes:
        """The roots of `count` consecutive aligned subtrees of 2**height leaves, from the
        `first`: a tlog tile's content (tiles.py)."""
        if height >= len(self._levels) or (first + count) * HASH_SIZE > len(self._levels[height]):
            raise ValueError("the tree is not that large")
        return bytes(self._levels[height][first * HASH_SIZE : (first + count) * HASH_SIZE])

    def range_root(self, start: int, end: int) -> bytes:
        n = end - start
        if n & (n - 1) == 0 and start % n == 0:  # a complete, aligned subtree: stored
            height = n.bit_length() - 1
            at = (start >> height) * HASH_SIZE
            return bytes(self._levels[height][at : at + HASH_SIZE])
        k = _split(n)
        return node_hash(self.range_root(start, start + k), self.range_root(start + k, end))

    def root(self, size: int | None = None) -> bytes:
        size = len(self) if size is None else size
        self._check_size(size)
        return self.range_root(0, size) if size else empty_root()

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        self._check_size(size)
        return inclusion_path(index, size, self.range_root)

    def consistency_proof(self, first: int, size: int) -> list[bytes]:
        self._check_size(size)
        return consistency_path(first, size, self.range_root)

    def _check_size(self, size: int) -> None:
        if not 0 <= size <= len(self):
            raise ValueError("the tree is not that large")


def verify_inclusion(
    index: int, tree_size: int, leaf: bytes, proof: Sequence[bytes], expected_root: bytes
) -> bool:
    """RFC 9162 §2.1.3.2: is the leaf at `index` of the tree whose root is `expected_root`?"""
    if not 0 <= index < tree_size:
        return False
    fn, sn, r = index, tree_size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == expected_root


def verify_consistency(
    first: int, second: int, first_root: bytes, second_root: bytes, proof: Sequence[bytes]
) -> bool:
    """RFC 9162 §2.1.4.2: does the tree of size `second` extend the one of size `first`?"""
    if not 0 < first <= second:
        return False
    if first == second:
        return not proof and first_root == second_root
    path = list(proof)
    if first & (first - 1) == 0:  # an exact power of two: the old root is a node of the new tree
        path.insert(0, first_root)
    if not path:
        return False
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while not fn & 1 and fn != 0:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return sn == 0 and fr == first_root and sr == second_root
