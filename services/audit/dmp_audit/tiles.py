"""The log's Merkle tree as C2SP tlog-tiles (c2sp.org/tlog-tiles): hash tiles and their paths.

A tile at level L, index N lists up to 256 consecutive hashes of the tree at height 8·L:
hash i is MTH(D[(N·256 + i)·256^L : (N·256 + i + 1)·256^L]). A full tile has 256 (8,192 bytes);
the rightmost tiles of a level are partial, `.p/<W>` with W from 1 to 255. N is written in
groups of three digits, all but the last prefixed with `x` (1234067 → `x001/x234/067`).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from dmp_audit.merkle import (
    HASH_SIZE,
    RangeRoot,
    Tree,
    consistency_path,
    empty_root,
    inclusion_path,
    node_hash,
)

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT
TILE_BYTES = TILE_WIDTH * HASH_SIZE
MAX_LEVEL = 63
_PATH = re.compile(r"tile/(0|[1-9][0-9]?)/((?:x[0-9]{3}/)*[0-9]{3})(?:\.p/([1-9][0-9]{0,2}))?")


class BadTilePath(ValueError):
    """Not a tile path as c2sp.org/tlog-tiles writes them."""


@dataclass(frozen=True)
class Tile:
    level: int
    index: int
    width: int = TILE_WIDTH

    @property
    def full(self) -> bool:
        return self.width == TILE_WIDTH

    @property
    def end(self) -> int:
        """How many entries the tree needs for this tile to exist."""
        return (self.index * TILE_WIDTH + self.width) << (TILE_HEIGHT * self.level)

    def path(self) -> str:
        number, rest = f"{self.index % 1000:03d}", self.index // 1000
        while rest:
            number, rest = f"x{rest % 1000:03d}/{number}", rest // 1000
        partial = "" if self.full else f".p/{self.width}"
        return f"tile/{self.level}/{number}{partial}"

    @classmethod
    def parse(cls, path: str) -> Tile:
        """The tile a path names; only the one canonical spelling of each is accepted."""
        found = _PATH.fullmatch(path)
        if found is None:
            raise BadTilePath("not a tile path: tile/<level>/<index>[.p/<width>]")
        level = int(found[1])
        width = int(found[3]) if found[3] else TILE_WIDTH
        if level > MAX_LEVEL or (width >= TILE_WIDTH and found[3]):
            raise BadTilePath("the level is at most 63 and a partial width at most 255")
        tile = cls(level, int(found[2].replace("x", "").replace("/", "")), width)
        if tile.path() != path:
            raise BadTilePath("not the canonical path of its tile (a group has extra zeros)")
        return tile


def tile_hashes(tree: Tree, tile: Tile, size: int) -> bytes | None:
    """The tile's bytes if the tree of `size` entries holds it; None if it does not (yet)."""
    if tile.end > size or size > len(tree):
        return None
    return tree.hashes(TILE_HEIGHT * tile.level, tile.index * TILE_WIDTH, tile.width)


# --- the tree stored as tiles ------------------------------------------------------------------

TileKey = tuple[int, int]  # (level, index) of a full tile
Levels = tuple[bytes, ...]  # a full tile's hashes, then each level above them (tile_levels)
# Roots of complete subtrees already computed from the edge or from upper tiles, kept (they
# never change: the log is append-only) up to this many, then forgotten all at once.
ROOTS_KEPT = 65_536
TileLoader = Callable[[list[TileKey]], Awaitable[dict[TileKey, bytes]]]
Node = tuple[
    int, int
]  # (height, position): the root of D[position·2^height : (position+1)·2^height]


def run_root(hashes: bytes) -> bytes:
    """The root over a run of 2^k consecutive hashes of one level (a complete subtree)."""
    return tile_levels(hashes)[-1]


def tile_levels(hashes: bytes) -> tuple[bytes, ...]:
    """Every level of the complete subtree over a run of 2^k hashes: the run itself, then each
    level's hashes up to the root alone (the last: `run_root`)."""
    sha256 = hashlib.sha256
    levels = [hashes]
    while len(hashes) > HASH_SIZE:
        hashes = b"".join(
            [
                sha256(b"\x01" + hashes[i : i + 2 * HASH_SIZE]).digest()
                for i in range(0, len(hashes), 2 * HASH_SIZE)
            ]
        )
        levels.append(hashes)
    return tuple(levels)


def fold_range(start: int, end: int, node: Callable[[Node], bytes]) -> bytes:
    """MTH(D[start:end]) split as RFC 9162 splits it, from the roots of complete subtrees."""
    n = end - start
    if n & (n - 1) == 0 and start % n == 0:
        height = n.bit_length() - 1
        return node((height, start >> height))
    k = 1 << ((n - 1).bit_length() - 1)
    return node_hash(fold_range(start, start + k, node), fold_range(start + k, end, node))


def edge_widths(size: int) -> list[int]:
    """How many hashes the rightmost tile of each level holds in a tree of `size` entries."""
    widths: list[int] = []
    while size >> (TILE_HEIGHT * len(widths)):
        widths.append((size >> (TILE_HEIGHT * len(widths))) % TILE_WIDTH)
    return widths


def _place(node: Node) -> tuple[TileKey, int, int]:
    """Where a complete subtree's root is read from: the tile holding the run of hashes it is
    the root of, that run's offset in the tile's bytes, and its length."""
    height, position = node
    level, extra = divmod(height, TILE_HEIGHT)
    first = position << extra  # its first hash, counted along its level
    return (level, first >> TILE_HEIGHT), (first % TILE_WIDTH) * HASH_SIZE, HASH_SIZE << extra


class BadEdge(ValueError):
    """A stored edge that does not fit the tree size stored with it."""


log = structlog.get_logger("dmp.audit")
_HOLE = bytes(TILE_BYTES)


class TileFiles:
    """Full tiles kept as local files, below the in-memory cache: one sparse file per level,
    tile N at byte N·8 KiB. A proof that misses the memory cache reads its tile here (a read
    from the page cache, not the process's memory) instead of the database.

    Nothing here is trusted: a tile read from a file is checked against its parent like one
    from the database, and one that is absent (a hole reads as zeros), cut short or not the
    tree's (files left by another log) is read from the database and written here again. A
    full tile never changes, so the files only ever gain tiles, 32 bytes per entry of the log,
    until they take `max_bytes`; then no more are written (said once in the log) and those
    already there are still read. A failing disk turns them off for the process, said once.
    """

    def __init__(self, directory: Path, max_bytes: int = 1 << 62) -> None:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.directory = directory
        self.max_bytes = max_bytes
        self.used = sum(f.stat().st_blocks * 512 for f in directory.glob("level-*.tiles"))
        self._fds: dict[int, int] = {}
        self.off = False
        self.full = False

    def _fd(self, level: int) -> int:
        fd = self._fds.get(level)
        if fd is None:
            path = self.directory / f"level-{level}.tiles"
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._fds[level] = fd
        return fd

    def read(self, key: TileKey) -> bytes | None:
        if self.off:
            return None
        try:
            data = os.pread(self._fd(key[0]), TILE_BYTES, key[1] * TILE_BYTES)
        except OSError as exc:
            self._failed(exc)
            return None
        return data if len(data) == TILE_BYTES and data != _HOLE else None

    def write(self, tiles: Iterable[tuple[TileKey, bytes]]) -> None:
        for (level, index), data in tiles:
            if self.off or self.full:
                return
            if self.used + TILE_BYTES > self.max_bytes:
                log.warning("tile_files_full", directory=str(self.directory), bytes=self.used)
                self.full = True
                return
            try:
                os.pwrite(self._fd(level), data, index * TILE_BYTES)
            except OSError as exc:
                self._failed(exc)
                return
            self.used += TILE_BYTES

    def _failed(self, exc: OSError) -> None:
        log.error("tile_files_off", directory=str(self.directory), error=exc.strerror)
        self.off = True


class TiledTree:
    """The Merkle tree as tlog tiles: full tiles live in the database (read through a bounded
    cache); in memory there is only the right edge, each level's rightmost, partial tile.

    A cached tile keeps the levels its check against its parent computed, so a proof reads
    its nodes inside the tile instead of hashing them again; the roots a proof takes from the
    edge or from an upper tile (the same for every proof of a tree size) are kept too.

    `extend` returns the tiles it completed, for the caller to store. The root of any complete
    subtree — hence any proof, for any size up to the current one — needs at most one tile per
    level and subtree, and the edge.
    """

    def __init__(
        self,
        load: TileLoader,
        size: int = 0,
        edge: Sequence[bytes] = (),
        cache: int = 1024,
        files: TileFiles | None = None,
    ) -> None:
        widths = edge_widths(size)
        rows = [bytearray(row) for row in edge]
        while rows and not rows[-1] and len(rows) > len(widths):
            rows.pop()
        rows += [bytearray() for _ in range(len(widths) - len(rows))]
        if [len(row) // HASH_SIZE for row in rows] != widths or any(
            len(r) % HASH_SIZE for r in rows
        ):
            raise BadEdge(f"the stored edge does not fit a tree of {size} entries")
        self._load = load
        self._files = files
        self.size = size
        self.edge = rows
        self._cache: OrderedDict[TileKey, Levels] = OrderedDict()
        self._cache_size = cache
        self._roots: dict[Node, bytes] = {}

    def advanced(self, size: int, edge: Sequence[bytes]) -> TiledTree:
        """The same tree grown to `size` by another writer (its stored edge), keeping the tiles
        cached so far: a full tile never changes."""
        grown = TiledTree(self._load, size, edge, self._cache_size, self._files)
        grown._cache = self._cache
        grown._roots = self._roots
        return grown

    def __len__(self) -> int:
        return self.size

    # appending --------------------------------------------------------------------------------

    def extend(self, leaves: Sequence[bytes]) -> list[tuple[TileKey, bytes]]:
        """Append leaf hashes; returns the tiles that became full, to be stored."""
        done: list[tuple[TileKey, bytes]] = []
        for leaf in leaves:
            index, level, node = self.size, 0, leaf  # index: of the node at this level
            while True:
                if level == len(self.edge):
                    self.edge.append(bytearray())
                row = self.edge[level]
                row += node
                if len(row) < TILE_BYTES:
                    break
                levels = tile_levels(bytes(row))
                key = (level, index >> TILE_HEIGHT)
                done.append((key, levels[0]))
                self._remember(key, levels)
                if self._files is not None:
                    self._files.write([(key, levels[0])])
                row.clear()
                index, level, node = index >> TILE_HEIGHT, level + 1, levels[-1]
            self.size += 1
        return done

    def root(self) -> bytes:
        """The root of the current tree, from the edge alone."""
        if not self.size:
            return empty_root()
        return fold_range(0, self.size, self._edge_node)

    def _edge_node(self, node: Node) -> bytes:
        found = self._from_edge(node)
        if found is None:
            raise KeyError(node)  # the root only ever needs the edge
        return found

    def _from_edge(self, node: Node) -> bytes | None:
        key, at, length = _place(node)
        if key[0] >= len(self.edge) or not self._in_edge(key):
            return None
        found = self._roots.get(node)
        if found is None:
            run = bytes(self.edge[key[0]][at : at + length])
            if len(run) != length:
                return None
            found = run_root(run)
            self._keep(node, found)
        return found

    def _keep(self, node: Node, root: bytes) -> None:
        if len(self._roots) >= ROOTS_KEPT:
            self._roots.clear()
        self._roots[node] = root

    # reading ----------------------------------------------------------------------------------

    async def nodes(self, wanted: set[Node]) -> dict[Node, bytes]:
        """The roots of complete subtrees of the current tree, read from the edge and tiles."""
        out: dict[Node, bytes] = {}
        need: dict[Node, tuple[TileKey, int, int]] = {}
        for node in wanted:
            height, position = node
            if (position + 1) << height > self.size:
                raise ValueError("the tree is not that large")
            found = self._roots.get(node) or self._from_edge(node)
            if found is not None:
                out[node] = found
                continue
            need[node] = _place(node)
        tiles = await self._levels({key for key, _, _ in need.values()})
        for node, (key, at, _) in need.items():
            extra = node[0] - key[0] * TILE_HEIGHT  # the node's height inside its tile
            i = at >> extra  # its index on that level, in bytes (it is aligned)
            out[node] = tiles[key][extra][i : i + HASH_SIZE]
            if key[0]:
                self._keep(node, out[node])
        return out

    async def tiles(self, keys: set[TileKey]) -> dict[TileKey, bytes]:
        """Full tiles by (level, index), from the cache or the database (`_levels`)."""
        return {key: levels[0] for key, levels in (await self._levels(keys)).items()}

    async def fill_files(self, batch: int = 8, idle: float = 3.0) -> int:
        """Write to the tile files every full tile of this tree they lack, read from the
        database and checked, upper levels first, then the newest tiles first (the entries
        most often asked about); returns how many. For a replica new on its node: its proofs
        stop reading the database once this is done. The tiles are not kept in memory. After
        each batch it waits `idle` times as long as the batch took, so that it takes at most
        1/(1 + idle) of the database's time and requests are not queued behind it."""
        files = self._files
        if files is None:
            return 0
        written = 0
        for level in reversed(range(len(self.edge))):
            keys = [(level, i) for i in reversed(range(self.size >> (TILE_HEIGHT * (level + 1))))]
            for at in range(0, len(keys), batch):
                if files.off or files.full:
                    return written
                started = time.perf_counter()
                lacking = {key for key in keys[at : at + batch] if files.read(key) is None}
                if lacking:
                    await self._levels(lacking, remember=False)
                    written += len(lacking)
                await asyncio.sleep(idle * (time.perf_counter() - started))
        return written

    async def _levels(self, keys: set[TileKey], remember: bool = True) -> dict[TileKey, Levels]:
        """Full tiles with their levels, from the cache, the tile files or the database. A
        tile read from a file or the database is checked against its parent's hash, itself in
        a checked tile or the edge: a tile changed in the database is caught before anything
        is served from it; one wrong in a file is read from the database instead."""
        out: dict[TileKey, Levels] = {}
        want: set[TileKey] = set()
        anchors: dict[TileKey, Levels] = {}
        for key in keys:
            cached = self._cache.get(key)
            if cached is not None:
                self._cache.move_to_end(key)
                out[key] = cached
                continue
            while key not in self._cache and not self._in_edge(key):
                want.add(key)
                key = (key[0] + 1, key[1] >> TILE_HEIGHT)
            if key in self._cache:
                anchors[key] = self._cache[key]  # kept: the cache may drop it meanwhile
        if not want:
            return out
        checked: dict[TileKey, Levels] = dict(anchors)
        on_disk = {key: self._files.read(key) for key in want} if self._files else {}
        loaded = await self._load(sorted(k for k in want if on_disk.get(k) is None))
        fetched: list[tuple[TileKey, bytes]] = []
        for key in sorted(want, reverse=True):  # parents first
            data = on_disk.get(key)
            levels = self._checked(key, data, checked) if data is not None else None
            if levels is None:
                if key not in loaded:  # the file's copy was not the tree's
                    loaded.update(await self._load([key]))
                data = loaded.get(key)
                if data is None or len(data) != TILE_BYTES:
                    raise MissingTile(f"the tile {Tile(*key).path()} is not stored")
                levels = self._checked(key, data, checked)
                if levels is None:
                    raise TamperedTile(f"the tile {Tile(*key).path()} is not the tree's")
                fetched.append((key, data))
            checked[key] = levels
        if self._files is not None:
            self._files.write(fetched)
        for key in want:
            if remember or key not in keys:
                self._remember(key, checked[key])
            if key in keys:
                out[key] = checked[key]
        return out

    def _checked(self, key: TileKey, data: bytes, checked: dict[TileKey, Levels]) -> Levels | None:
        """The tile's levels if its root is its parent's hash (in the edge or a tile checked
        before it); None if not."""
        level, index = key
        parent = (level + 1, index >> TILE_HEIGHT)
        row = self.edge[level + 1] if self._in_edge(parent) else checked[parent][0]
        at = (index % TILE_WIDTH) * HASH_SIZE
        levels = tile_levels(data)
        return levels if levels[-1] == bytes(row[at : at + HASH_SIZE]) else None

    def _in_edge(self, key: TileKey) -> bool:
        """Is this the rightmost tile of its level (in memory, partial)?"""
        level, index = key
        return index == self.size >> (TILE_HEIGHT * (level + 1))

    def _remember(self, key: TileKey, levels: Levels) -> None:
        self._cache[key] = levels
        self._cache.move_to_end(key)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    async def range_roots(self, ranges: Callable[[RangeRoot], object]) -> RangeRoot:
        """Run `ranges` once to learn which subtrees it reads, fetch them, and return a
        RangeRoot over them: how the sync proof functions of merkle.py read a tiled tree."""
        wanted: set[Node] = set()

        def record(node: Node) -> bytes:
            wanted.add(node)
            return bytes(HASH_SIZE)

        ranges(lambda start, end: fold_range(start, end, record))
        found = await self.nodes(wanted)
        return lambda start, end: fold_range(start, end, found.__getitem__)

    async def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        self._check_size(size)
        reader = await self.range_roots(lambda rr: inclusion_path(index, size, rr))
        return inclusion_path(index, size, reader)

    async def consistency_proof(self, first: int, size: int) -> list[bytes]:
        self._check_size(size)
        reader = await self.range_roots(lambda rr: consistency_path(first, size, rr))
        return consistency_path(first, size, reader)

    async def root_at(self, size: int) -> bytes:
        self._check_size(size)
        if not size:
            return empty_root()
        reader = await self.range_roots(lambda rr: rr(0, size))
        return reader(0, size)

    async def leaf(self, index: int) -> bytes:
        return (await self.nodes({(0, index)}))[(0, index)]

    async def tile(self, tile: Tile, size: int) -> bytes | None:
        """The tile's bytes in the tree of `size` entries (at most the current size); None when
        that tree does not hold it. A full tile's first hashes are its partial versions'."""
        if tile.end > size or size > self.size:
            return None
        key = (tile.level, tile.index)
        data = (
            bytes(self.edge[tile.level]) if self._in_edge(key) else (await self.tiles({key}))[key]
        )
        return data[: tile.width * HASH_SIZE]

    def _check_size(self, size: int) -> None:
        if not 0 <= size <= self.size:
            raise ValueError("the tree is not that large")


class TileError(RuntimeError):
    """The database does not hold the tree's tiles as they were written."""


class MissingTile(TileError):
    """A full tile the tree needs is not in the database."""


class TamperedTile(TileError):
    """A tile in the database does not hash to its parent: it was changed."""
