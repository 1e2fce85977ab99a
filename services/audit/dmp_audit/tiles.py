"""The log's Merkle tree as C2SP tlog-tiles (c2sp.org/tlog-tiles): hash tiles and their paths.

A tile at level L, index N lists up to 256 consecutive hashes of the tree at height 8·L:
hash i is MTH(D[(N·256 + i)·256^L : (N·256 + i + 1)·256^L]). A full tile has 256 (8,192 bytes);
the rightmost tiles of a level are partial, `.p/<W>` with W from 1 to 255. N is written in
groups of three digits, all but the last prefixed with `x` (1234067 → `x001/x234/067`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from dmp_audit.merkle import Tree

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT
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
