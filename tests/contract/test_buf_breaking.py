"""`make buf-breaking` (in `make ci`) compares the contracts with main's: this shows that a
wire-incompatible change does fail it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BUF = str(Path(sys.executable).parent / "buf")


def breaking(changed: Path, against: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [BUF, "breaking", str(changed), "--against", str(against)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_renumbering_a_field_breaks_the_build(tmp_path: Path) -> None:
    changed = tmp_path / "proto"
    shutil.copytree(ROOT / "proto", changed)
    envelope = changed / "dmp" / "events" / "v1" / "envelope.proto"
    text = envelope.read_text()
    assert "string id = 1;" in text
    envelope.write_text(text.replace("string id = 1;", "string id = 99;", 1))
    done = breaking(changed, ROOT / "proto")
    assert done.returncode != 0
    assert "envelope.proto" in done.stdout + done.stderr


def test_adding_a_field_does_not(tmp_path: Path) -> None:
    changed = tmp_path / "proto"
    shutil.copytree(ROOT / "proto", changed)
    envelope = changed / "dmp" / "events" / "v1" / "envelope.proto"
    text = envelope.read_text()
    head, sep, tail = text.partition("message Envelope {")
    envelope.write_text(head + sep + "\n  string added_later = 999;" + tail)
    done = breaking(changed, ROOT / "proto")
    assert done.returncode == 0, done.stdout + done.stderr
