"""Glacier's SHA-256 tree hash, against references built independently of the implementation."""

from __future__ import annotations

import hashlib
import io
import random

import pytest
from botocore.utils import calculate_tree_hash

from panscan.sources.glacier import MIB, TreeHash, tree_hash


def sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def level_by_level(data: bytes) -> str:
    """The definition as Glacier's documentation states it: hash 1 MiB leaves, then hash
    adjacent pairs level by level, an odd last node moving up unchanged."""
    nodes = [sha(data[i:i + MIB]) for i in range(0, len(data), MIB)] or [sha(b"")]
    while len(nodes) > 1:
        paired = [sha(nodes[i] + nodes[i + 1]) for i in range(0, len(nodes) - 1, 2)]
        if len(nodes) % 2:
            paired.append(nodes[-1])
        nodes = paired
    return nodes[0].hex()


def data_of(size: int, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(size)


def test_data_up_to_one_mib_hashes_to_its_plain_sha256() -> None:
    for size in (1, 1000, MIB - 1, MIB):
        data = data_of(size)
        assert tree_hash([data]) == hashlib.sha256(data).hexdigest()


def test_no_data_hashes_to_the_sha256_of_nothing() -> None:
    assert tree_hash([]) == hashlib.sha256(b"").hexdigest()
    assert tree_hash([b"", b""]) == hashlib.sha256(b"").hexdigest()


def test_three_mib_is_the_hash_of_the_first_pair_joined_with_the_third_leaf() -> None:
    data = data_of(3 * MIB)
    h0, h1, h2 = sha(data[:MIB]), sha(data[MIB:2 * MIB]), sha(data[2 * MIB:])
    expected = sha(sha(h0 + h1) + h2).hex()
    assert tree_hash([data]) == expected


def test_one_byte_past_a_mib_makes_a_second_leaf() -> None:
    data = data_of(MIB + 1)
    assert tree_hash([data]) == sha(sha(data[:MIB]) + sha(data[MIB:])).hex()


@pytest.mark.parametrize("leaves", [2, 4, 5, 6, 7, 8, 9])
def test_trees_of_many_leaves_match_the_level_by_level_definition(leaves: int) -> None:
    data = data_of(leaves * MIB - 12345, seed=leaves)
    expected = level_by_level(data)
    assert tree_hash([data]) == expected
    assert calculate_tree_hash(io.BytesIO(data)) == expected  # botocore agrees


def test_the_hash_does_not_depend_on_how_the_data_is_chunked() -> None:
    data = data_of(5 * MIB + 17)
    rng = random.Random(3)
    chunks, i = [], 0
    while i < len(data):
        n = rng.choice((1, 7, 4096, MIB - 1, MIB, MIB + 1, 3 * MIB))
        chunks.append(data[i:i + n])
        i += n
    assert tree_hash(chunks) == level_by_level(data)


def test_reading_the_digest_midway_does_not_change_the_result() -> None:
    data = data_of(3 * MIB + 5)
    hasher = TreeHash()
    hasher.update(data[:2 * MIB])
    assert hasher.hexdigest() == level_by_level(data[:2 * MIB])
    hasher.update(memoryview(data)[2 * MIB:])
    assert hasher.hexdigest() == level_by_level(data)
