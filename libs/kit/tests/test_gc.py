"""A serving process's garbage collector: what it built to start is frozen out of every
collection, and the young generation collected far less often than Python's default."""

from __future__ import annotations

import ast
import subprocess
import sys

from dmp_kit.runtime import GC_THRESHOLDS


def test_a_serving_process_freezes_its_start_and_collects_less_often() -> None:
    # In a process of its own: the test session's collector stays as it is.
    probe = (
        "import gc\n"
        "from dmp_kit.runtime import tune_gc\n"
        "before = (gc.get_threshold(), gc.get_freeze_count())\n"
        "tune_gc()\n"
        "print((before, gc.get_threshold(), gc.get_freeze_count()))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    before, after, frozen = ast.literal_eval(done.stdout)
    assert before == ((700, 10, 10), 0)
    assert after == GC_THRESHOLDS and after[0] > 700
    assert frozen > 10_000  # the modules it imported, at least
