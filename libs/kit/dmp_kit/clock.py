"""The injectable clock: every time-based rule reads one, so tests can move time."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime: ...


class SystemClock:
    def now(self) -> datetime:
        return datetime.now(UTC)


class ManualClock:
    """A clock for unit tests: starts where told and moves only when told."""

    def __init__(self, start: datetime) -> None:
        self._now = start

    def now(self) -> datetime:
        return self._now

    def advance(self, delta: timedelta) -> None:
        self._now += delta


class OffsetFileClock:
    """Wall clock plus a number of seconds read from a file (dev and test stacks only).

    Lets a test move the time of running services without restarting them.
    """

    def __init__(self, path: Path) -> None:
        self._path = path
        self._mtime_ns = -1
        self._offset = timedelta(0)

    def now(self) -> datetime:
        try:
            mtime = os.stat(self._path).st_mtime_ns
        except FileNotFoundError:
            self._mtime_ns, self._offset = -1, timedelta(0)
        else:
            if mtime != self._mtime_ns:
                text = self._path.read_text().strip() or "0"
                self._offset = timedelta(seconds=float(text))
                self._mtime_ns = mtime
        return datetime.now(UTC) + self._offset


def clock_from_path(offset_file: str) -> Clock:
    return OffsetFileClock(Path(offset_file)) if offset_file else SystemClock()
