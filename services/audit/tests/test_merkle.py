"""RFC 9162 §2.1 against known answers and an independent implementation written from the RFC."""

from __future__ import annotations

import hashlib
import random

import pytest

from dmp_audit import merkle


def h(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def L(entry: bytes) -> bytes:
    return h(b"\x00" + entry)


def N(left: bytes, right: bytes) -> bytes:
    return h(b"\x01" + left + right)


ENTRIES = [f"entry-{i}".encode() for i in range(8)]
LEAVES = [L(e) for e in ENTRIES]


def test_known_answers() -> None:
    l0, l1, l2, l3, l4, l5, l6 = LEAVES[:7]
    assert (
        merkle.root([]).hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )
    assert merkle.leaf_hash(ENTRIES[0]) == l0
    assert merkle.root(LEAVES[:1]) == l0
    assert merkle.root(LEAVES[:2]) == N(l0, l1)
    assert merkle.root(LEAVES[:3]) == N(N(l0, l1), l2)
    assert merkle.root(LEAVES[:4]) == N(N(l0, l1), N(l2, l3))
    assert merkle.root(LEAVES[:5]) == N(N(N(l0, l1), N(l2, l3)), l4)
    assert merkle.root(LEAVES[:7]) == N(N(N(l0, l1), N(l2, l3)), N(N(l4, l5), l6))
    # The RFC's own example tree (§2.1.5): the inclusion proof of d0 in 7 leaves is [b, h, l].
    assert merkle.inclusion_proof(0, LEAVES[:7]) == [l1, N(l2, l3), N(N(l4, l5), l6)]
    # And the consistency proof between 3 and 7 leaves is [c, d, g, l].
    assert merkle.consistency_proof(3, LEAVES[:7]) == [l2, l3, N(l0, l1), N(N(l4, l5), l6)]


# --- the RFC's definitions, recursively, as written -------------------------------------------


def mth(d: list[bytes]) -> bytes:
    n = len(d)
    if n == 0:
        return h(b"")
    if n == 1:
        return d[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return N(mth(d[:k]), mth(d[k:]))


def path(m: int, d: list[bytes]) -> list[bytes]:
    n = len(d)
    if n == 1:
        return []
    k = 1
    while k * 2 < n:
        k *= 2
    return [*path(m, d[:k]), mth(d[k:])] if m < k else [*path(m - k, d[k:]), mth(d[:k])]


def subproof(m: int, d: list[bytes], b: bool) -> list[bytes]:
    n = len(d)
    if m == n:
        return [] if b else [mth(d)]
    k = 1
    while k * 2 < n:
        k *= 2
    if m <= k:
        return [*subproof(m, d[:k], b), mth(d[k:])]
    return [*subproof(m - k, d[k:], False), mth(d[:k])]


def leaves(n: int) -> list[bytes]:
    return [L(f"e{i}".encode()) for i in range(n)]


def sample(n: int, rng: random.Random, limit: int) -> list[int]:
    if n <= limit:
        return list(range(n))
    return sorted({0, n - 1, *rng.sample(range(n), limit)})


@pytest.mark.parametrize("n", range(1, 301))
def test_every_size_from_1_to_300(n: int) -> None:
    rng = random.Random(n)
    d = leaves(n)
    r = merkle.root(d)
    assert r == mth(d)
    for m in sample(n, rng, 24):
        proof = merkle.inclusion_proof(m, d)
        assert proof == path(m, d)
        assert merkle.verify_inclusion(m, n, d[m], proof, r)
        assert not merkle.verify_inclusion(m, n, L(b"forged"), proof, r)
        if n > 1:
            assert not merkle.verify_inclusion((m + 1) % n, n, d[m], proof, r)
        if proof:
            bad = [*proof]
            bad[rng.randrange(len(bad))] = L(b"x")
            assert not merkle.verify_inclusion(m, n, d[m], bad, r)
    for first in sample(n, rng, 16):
        first += 1  # sizes 1..n
        proof = merkle.consistency_proof(first, d)
        assert proof == subproof(first, d, True)
        old = mth(d[:first])
        assert merkle.verify_consistency(first, n, old, r, proof)
        assert not merkle.verify_consistency(first, n, L(b"other"), r, proof)
        if first < n:
            assert not merkle.verify_consistency(first, n, old, L(b"other"), proof)
            bad = [*proof]
            bad[rng.randrange(len(bad))] = L(b"x")
            assert not merkle.verify_consistency(first, n, old, r, bad)


@pytest.mark.parametrize("n", [1_000, 1_537, 4_099])
def test_random_larger_trees(n: int) -> None:
    rng = random.Random(n)
    d = leaves(n)
    r = merkle.root(d)
    for _ in range(20):
        m = rng.randrange(n)
        assert merkle.verify_inclusion(m, n, d[m], merkle.inclusion_proof(m, d), r)
        first = rng.randrange(1, n + 1)
        proof = merkle.consistency_proof(first, d)
        assert merkle.verify_consistency(first, n, merkle.root(d[:first]), r, proof)


@pytest.mark.parametrize(("first", "second"), [(0, 5), (6, 5), (-1, 3)])
def test_impossible_sizes_are_refused(first: int, second: int) -> None:
    assert not merkle.verify_consistency(first, second, b"", b"", [])
    assert not merkle.verify_inclusion(first, second, b"", [], b"")
    with pytest.raises(ValueError):
        merkle.inclusion_proof(7, leaves(7))


def test_the_stored_tree_answers_like_the_rfc_for_every_past_size() -> None:
    """The service's Tree serves proofs for any earlier size from its stored subtree hashes."""
    rng = random.Random(7)
    d = leaves(300)
    tree = merkle.Tree()
    for leaf in d:
        tree.append(leaf)
    assert len(tree) == 300
    assert tree.root(0) == merkle.empty_root()
    for size in range(1, 301):
        assert tree.root(size) == mth(d[:size])
        for m in sample(size, rng, 6):
            assert tree.leaf(m) == d[m]
            assert tree.inclusion_proof(m, size) == path(m, d[:size])
        for first in sample(size, rng, 6):
            assert tree.consistency_proof(first + 1, size) == subproof(first + 1, d[:size], True)
    with pytest.raises(ValueError):
        tree.root(301)
    with pytest.raises(ValueError):
        tree.inclusion_proof(3, 301)


def test_extending_by_batches_builds_the_same_tree_as_appending() -> None:
    rng = random.Random(11)
    for _ in range(200):
        one, batched, reference = merkle.Tree(), merkle.Tree(), []
        for _ in range(rng.randint(1, 8)):
            batch = [L(rng.randbytes(6)) for _ in range(rng.randint(0, 40))]
            for leaf in batch:
                one.append(leaf)
            batched.extend(batch)
            reference += batch
            assert len(batched) == len(reference)
            assert batched.root() == one.root() == mth(reference)
        for m in sample(len(reference), rng, 5) if reference else []:
            assert batched.inclusion_proof(m, len(reference)) == path(m, reference)
