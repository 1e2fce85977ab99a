"""C2SP tlog-tiles and checkpoint notes: the specs' own examples, paths both ways, and each
tile's hashes against Merkle roots computed over the leaves."""

from __future__ import annotations

import base64
import hashlib
import os
import random
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from dmp_audit import merkle
from dmp_audit.config import AuditSettings
from dmp_audit.note import BadNote, Checkpoint, NoteSigner, open_note, public_key_of
from dmp_audit.tiles import (
    TILE_BYTES,
    TILE_WIDTH,
    BadEdge,
    BadTilePath,
    TamperedTile,
    Tile,
    TiledTree,
    TileFiles,
    tile_hashes,
)

LEAVES = [hashlib.sha256(b"\x00" + str(i).encode()).digest() for i in range(70_000)]
TREE = merkle.Tree()
TREE.extend(LEAVES)


def tiles_of(size: int) -> set[Tile]:
    """The tiles a tree of `size` entries has, from tlog-tiles' definitions."""
    found = set()
    level = 0
    while size >> (8 * level):
        hashes = size >> (8 * level)
        found |= {Tile(level, n) for n in range(hashes // TILE_WIDTH)}
        if hashes % TILE_WIDTH:
            found.add(Tile(level, hashes // TILE_WIDTH, hashes % TILE_WIDTH))
        level += 1
    return found


def test_the_specs_example_tree_of_70000() -> None:
    tiles = tiles_of(70_000)
    full0 = [t for t in tiles if t.level == 0 and t.full]
    assert len(full0) == 273
    assert tiles - set(full0) == {
        Tile(0, 273, 112),
        Tile(1, 0),
        Tile(1, 1, 17),
        Tile(2, 0, 1),
    }
    for tile in tiles:
        assert tile_hashes(TREE, tile, 70_000) is not None, tile
    assert tile_hashes(TREE, Tile(0, 273, 113), 70_000) is None
    assert tile_hashes(TREE, Tile(0, 273), 70_000) is None
    assert tile_hashes(TREE, Tile(2, 0, 2), 70_000) is None
    assert tile_hashes(TREE, Tile(0, 0), 255) is None, "a full tile only once it is full"
    assert tiles_of(256) == {Tile(0, 0), Tile(1, 0, 1)}


@pytest.mark.parametrize("size", [1, 255, 256, 257, 511, 65_535, 65_536, 70_000])
def test_each_hash_is_the_root_of_its_range(size: int) -> None:
    for tile in tiles_of(size):
        data = tile_hashes(TREE, tile, size)
        assert data is not None and len(data) == 32 * tile.width
        span = TILE_WIDTH**tile.level
        for i in {0, tile.width // 2, tile.width - 1}:
            first = (tile.index * TILE_WIDTH + i) * span
            assert data[32 * i : 32 * i + 32] == merkle.root(LEAVES[first : first + span])


@pytest.mark.parametrize(
    ("tile", "path"),
    [
        (Tile(0, 0), "tile/0/000"),
        (Tile(0, 1234), "tile/0/x001/234"),
        (Tile(4, 1234067, 1), "tile/4/x001/x234/067.p/1"),
        (Tile(2, 1, 17), "tile/2/001.p/17"),
        (Tile(63, 999, 255), "tile/63/999.p/255"),
        (Tile(0, 10**9), "tile/0/x001/x000/x000/000"),
    ],
)
def test_paths_both_ways(tile: Tile, path: str) -> None:
    assert tile.path() == path
    assert Tile.parse(path) == tile


@pytest.mark.parametrize(
    "path",
    [
        "tile/0/1",
        "tile/0/0001",
        "tile/0/x000/001",  # a zero group in front: not the canonical spelling
        "tile/01/000",
        "tile/64/000",
        "tile/0/000.p/0",
        "tile/0/000.p/256",
        "tile/0/000.p/010",
        "tile/0/001/234",
        "tile/entries/000",
        "tile/8/0/000",
        "tile/0/000/",
        "",
    ],
)
def test_other_spellings_are_refused(path: str) -> None:
    with pytest.raises(BadTilePath):
        Tile.parse(path)


def test_the_signed_note_specs_example() -> None:
    vkey = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
    note = (
        "This is an example message.\n\n\u2014 example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1"
        "YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n"
    ).encode()
    assert open_note(note, vkey) == b"This is an example message.\n"
    with pytest.raises(BadNote):
        open_note(note.replace(b"example message", b"example massage"), vkey)


def test_checkpoints_sign_and_open() -> None:
    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    signer = NoteSigner("dmp.example/v1/audit/log", key)
    checkpoint = Checkpoint(signer.name, 70_000, TREE.root())
    note = signer.sign(checkpoint.text())
    text = open_note(note, signer.verifier_key)
    assert Checkpoint.from_text(text) == checkpoint
    assert text.decode().split("\n")[:3] == [
        "dmp.example/v1/audit/log",
        "70000",
        base64.b64encode(TREE.root()).decode(),
    ]
    name, public = public_key_of(signer.verifier_key)
    assert name == signer.name and public == key.public_key()

    # Another key under the same name is ignored, so nothing vouches for the note.
    impostor = NoteSigner(signer.name, Ed25519PrivateKey.generate())
    forked = impostor.sign(Checkpoint(signer.name, 70_000, bytes(32)).text())
    with pytest.raises(BadNote, match="no signature by the log's key"):
        open_note(forked, signer.verifier_key)
    with pytest.raises(BadNote):
        open_note(note.replace(b"70000", b"70001"), signer.verifier_key)
    with pytest.raises(BadNote):
        public_key_of(signer.verifier_key.replace("dmp.example", "dmp.other"))


@pytest.mark.parametrize("origin", ["", "two words", "a+b", "tab\there", "dmp-audit-tree-head/v1"])
def test_origins_a_note_cannot_carry(origin: str) -> None:
    with pytest.raises(ValueError):
        NoteSigner(origin, Ed25519PrivateKey.generate())


def test_the_origin_is_the_logs_url_prefix_by_default() -> None:
    assert AuditSettings(env="dev").origin == "dmp.localhost/v1/audit/log"
    issuer = AuditSettings(env="dev", jwt_issuer="https://dmp.example.fr:8443/identity")
    assert issuer.origin == "dmp.example.fr:8443/v1/audit/log"
    chosen = AuditSettings(env="dev", checkpoint_origin="audit.dmp.example.fr/log")
    assert chosen.origin == "audit.dmp.example.fr/log"
    with pytest.raises(ValueError):
        AuditSettings(env="dev", checkpoint_origin="audit log")


# --- the tree stored as tiles: the same hashes, proofs and tiles as the whole tree in memory ---


async def test_a_tiled_tree_reloaded_from_its_edge_proves_what_the_whole_tree_proves() -> None:
    rng = random.Random(20261130)
    stored: dict[tuple[int, int], bytes] = {}

    async def load(keys: list[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        return {key: stored[key] for key in keys if key in stored}

    tree = TiledTree(load, cache=4)
    size = 0
    while size < len(LEAVES):
        batch = LEAVES[size : size + rng.randint(1, 3000)]
        stored.update(tree.extend(batch))
        size += len(batch)
        assert tree.root() == TREE.root(size)
        again = TiledTree(load, tree.size, [bytes(row) for row in tree.edge], cache=2)
        at = rng.randint(1, size)
        seq, first = rng.randrange(at), rng.randint(1, at)
        assert await again.inclusion_proof(seq, at) == TREE.inclusion_proof(seq, at)
        assert await again.consistency_proof(first, at) == TREE.consistency_proof(first, at)
        assert await again.root_at(at) == TREE.root(at)
        assert await again.leaf(seq) == TREE.leaf(seq)
        for tile in tiles_of(at):
            assert await again.tile(tile, at) == tile_hashes(TREE, tile, at), tile
    with pytest.raises(BadEdge):
        TiledTree(load, 300, [bytes(32 * 43)])
    key = (0, 17)
    stored[key] = stored[key][:-1] + bytes([stored[key][-1] ^ 1])
    with pytest.raises(TamperedTile):
        await TiledTree(load, tree.size, [bytes(row) for row in tree.edge]).leaf(17 * 256)


async def test_what_a_serving_tree_keeps_between_proofs_stays_right_as_it_grows() -> None:
    """A tree serving proofs keeps its tiles' levels and the roots it took from the edge and
    upper tiles. Proofs from the writer itself and from a replica following its stored edge,
    asked again and again as the log grows past tile boundaries, stay the whole tree's."""
    rng = random.Random(20261201)
    stored: dict[tuple[int, int], bytes] = {}

    async def load(keys: list[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        return {key: stored[key] for key in keys if key in stored}

    writer, follower = TiledTree(load, cache=8), TiledTree(load, cache=8)
    size = 0
    while size < len(LEAVES):
        batch = LEAVES[size : size + rng.randint(1, 6000)]
        stored.update(writer.extend(batch))
        size += len(batch)
        follower = follower.advanced(writer.size, [bytes(row) for row in writer.edge])
        for tree in (writer, follower):
            for at in (size, rng.randint(1, size)):
                for _ in range(10):
                    seq, first = rng.randrange(at), rng.randint(1, at)
                    assert await tree.inclusion_proof(seq, at) == TREE.inclusion_proof(seq, at)
                    assert await tree.consistency_proof(first, at) == TREE.consistency_proof(
                        first, at
                    )
            assert tree.root() == TREE.root(size)


# --- full tiles kept as local files ---------------------------------------------------------


class Loads:
    """A tile store that counts which tiles were read from it."""

    def __init__(self) -> None:
        self.stored: dict[tuple[int, int], bytes] = {}
        self.read: list[tuple[int, int]] = []

    async def __call__(self, keys: list[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
        self.read += keys
        return {key: self.stored[key] for key in keys if key in self.stored}


def _grown(loads: Loads, files: TileFiles | None, leaves: list[bytes]) -> TiledTree:
    tree = TiledTree(loads, cache=4, files=files)
    for at in range(0, len(leaves), 5000):
        loads.stored.update(tree.extend(leaves[at : at + 5000]))
    return tree


def _reopened(tree: TiledTree, loads: Loads, directory: Path) -> TiledTree:
    """The same tree in a new process: an empty memory cache, the same tile files."""
    return TiledTree(loads, tree.size, [bytes(r) for r in tree.edge], 2, TileFiles(directory))


async def _proofs_right(tree: TiledTree, rng: random.Random, count: int = 60) -> None:
    for _ in range(count):
        at = rng.randint(1, tree.size)
        seq, first = rng.randrange(at), rng.randint(1, at)
        assert await tree.inclusion_proof(seq, at) == TREE.inclusion_proof(seq, at)
        assert await tree.consistency_proof(first, at) == TREE.consistency_proof(first, at)


async def test_proofs_read_the_tiles_the_writer_kept_as_files_not_the_database(
    tmp_path: Path,
) -> None:
    loads = Loads()
    writer = _grown(loads, TileFiles(tmp_path), LEAVES)
    level0 = tmp_path / "level-0.tiles"
    assert level0.stat().st_size == len(LEAVES) // TILE_WIDTH * TILE_BYTES
    assert (tmp_path / "level-1.tiles").stat().st_size == TILE_BYTES  # 70,000 = 1 full of 65,536
    reader = _reopened(writer, loads, tmp_path)
    await _proofs_right(reader, random.Random(1))
    assert loads.read == []  # every full tile came from the files, checked
    for tile in tiles_of(writer.size):
        assert await reader.tile(tile, writer.size) == tile_hashes(TREE, tile, writer.size)
    assert loads.read == []


async def test_a_tile_file_that_is_wrong_short_or_another_logs_is_read_again_from_the_database(
    tmp_path: Path,
) -> None:
    loads = Loads()
    writer = _grown(loads, None, LEAVES)  # the writer kept no files: they start empty
    reader = _reopened(writer, loads, tmp_path)
    await reader.leaf(3 * TILE_WIDTH)
    # holes in the files: the tile and its full parent from the database, then kept
    assert loads.read == [(0, 3), (1, 0)]
    loads.read.clear()
    reader = _reopened(writer, loads, tmp_path)
    await reader.leaf(3 * TILE_WIDTH + 1)
    assert loads.read == []

    level0 = tmp_path / "level-0.tiles"
    with level0.open("r+b") as f:  # one bit changed in tile 3
        f.seek(3 * TILE_BYTES + 100)
        byte = f.read(1)[0]
        f.seek(3 * TILE_BYTES + 100)
        f.write(bytes([byte ^ 4]))
    reader = _reopened(writer, loads, tmp_path)
    assert await reader.leaf(3 * TILE_WIDTH + 3) == LEAVES[3 * TILE_WIDTH + 3]
    assert loads.read == [(0, 3)]
    assert level0.read_bytes()[3 * TILE_BYTES :] == loads.stored[(0, 3)]  # and mended

    other = [hashlib.sha256(b"other" + str(i).encode()).digest() for i in range(len(LEAVES))]
    elsewhere = tmp_path / "elsewhere"
    _grown(Loads(), TileFiles(elsewhere), other)  # another log's tiles, where this one looks
    reader = _reopened(writer, loads, elsewhere)
    loads.read.clear()
    await _proofs_right(reader, random.Random(2), count=20)
    assert loads.read  # none of the other log's tiles was taken

    for index in (1, 2):  # tiles 1 to 3 kept in the file
        await _reopened(writer, loads, tmp_path).leaf(index * TILE_WIDTH)
    os.truncate(level0, 2 * TILE_BYTES + 10)  # cut short: tile 1 whole, 2 and 3 gone
    reader = _reopened(writer, loads, tmp_path)
    loads.read.clear()
    for index in (1, 2, 3):
        assert await reader.leaf(index * TILE_WIDTH) == LEAVES[index * TILE_WIDTH]
    assert loads.read == [(0, 2), (0, 3)]


async def test_a_tampered_database_tile_is_still_caught_and_a_failing_disk_turns_files_off(
    tmp_path: Path,
) -> None:
    loads = Loads()
    writer = _grown(loads, None, LEAVES)
    key = (0, 17)
    loads.stored[key] = loads.stored[key][:-1] + bytes([loads.stored[key][-1] ^ 1])
    with pytest.raises(TamperedTile):
        await _reopened(writer, loads, tmp_path).leaf(17 * TILE_WIDTH)
    assert (tmp_path / "level-0.tiles").read_bytes() == b""  # nothing written of it

    files = TileFiles(tmp_path / "failing")
    reader = TiledTree(loads, writer.size, [bytes(r) for r in writer.edge], 2, files)
    assert await reader.leaf(5) == LEAVES[5]
    for fd in files._fds.values():  # the disk goes away under the open files
        os.close(fd)
    assert await reader.leaf(9 * TILE_WIDTH) == LEAVES[9 * TILE_WIDTH]  # from the database
    assert files.off
    files._fds.clear()


async def test_the_tile_files_stop_growing_at_their_limit_and_are_still_read(
    tmp_path: Path,
) -> None:
    loads = Loads()
    files = TileFiles(tmp_path, max_bytes=10 * TILE_BYTES)
    writer = _grown(loads, files, LEAVES)
    assert files.full and files.used == 10 * TILE_BYTES
    assert sum(f.stat().st_blocks * 512 for f in tmp_path.iterdir()) == 10 * TILE_BYTES
    again = TileFiles(tmp_path, max_bytes=10 * TILE_BYTES)
    assert again.used == 10 * TILE_BYTES  # counted from the files at a start
    reader = TiledTree(loads, writer.size, [bytes(r) for r in writer.edge], 2, again)
    for index in range(12):
        assert await reader.leaf(index * TILE_WIDTH) == LEAVES[index * TILE_WIDTH]
    # the first ten from the files; the next two, and their parent, from the database
    assert [key for key in loads.read if key[0] == 0] == [(0, 10), (0, 11)]
    assert sum(f.stat().st_blocks * 512 for f in tmp_path.iterdir()) == 10 * TILE_BYTES
    with pytest.raises(ValueError, match="at least 1 MiB"):
        AuditSettings(env="dev", tile_dir_max_mb=0)


async def test_a_replica_new_on_its_node_fills_its_tile_files_from_the_database(
    tmp_path: Path,
) -> None:
    loads = Loads()
    writer = _grown(loads, None, LEAVES)  # 273 full tiles at level 0, 1 at level 1
    files = TileFiles(tmp_path)
    reader = TiledTree(loads, writer.size, [bytes(r) for r in writer.edge], 8, files)
    await reader.leaf(5)  # one tile already there
    assert await reader.fill_files(batch=50, idle=0) == len(LEAVES) // TILE_WIDTH + 1 - 2
    assert all(key[0] == 1 or key == (0, 0) for key in reader._cache)  # not kept in memory
    assert await reader.fill_files(idle=0) == 0
    loads.read.clear()
    await _proofs_right(_reopened(writer, loads, tmp_path), random.Random(3))
    assert loads.read == []

    key = (0, 200)
    loads.stored[key] = loads.stored[key][:-1] + bytes([loads.stored[key][-1] ^ 1])
    again = tmp_path / "again"
    with pytest.raises(TamperedTile):
        await _reopened(writer, loads, again).fill_files(batch=32, idle=0)
    files = TileFiles(again)
    assert files.read(key) is None and files.read((0, 241)) is not None  # newest first
