"""The export's pure parts: file names from titles, paths in the archive, the archive written
in parts, entries of the access log as the patient reads them."""

from __future__ import annotations

import io
import os
import unicodedata
import zipfile
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dmp.audit.v1 import audit_pb2
from dmp_dossier import export
from dmp_dossier.export import (
    PART_BYTES,
    PartSink,
    document_path,
    extension,
    log_entry,
    new_archive,
    safe_title,
    unique_paths,
)

WHEN = datetime(2026, 3, 4, 10, 30, tzinfo=UTC)


def doc(**fields: object) -> dict[str, object]:
    return {
        "_id": "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b",
        "section": "comptes_rendus",
        "title": "Compte rendu",
        "mime_type": "application/pdf",
        "created_at": WHEN,
        **fields,
    }


@pytest.mark.parametrize(
    ("title", "expected"),
    [
        ("Compte rendu d'échographie", "Compte rendu d'échographie"),
        ("../../etc/passwd", "etc_passwd"),
        ("..\\..\\windows\\system32", "windows_system32"),
        ("a/b", "a_b"),
        ("Bilan\x00\x07\n\tsanguin", "Bilan sanguin"),
        ("  .cache  ", "cache"),
        ("", "document"),
        ("...", "document"),
        ("<script>:*?|", "script"),
        ("Cœur, poumons — ÉCG", "Cœur, poumons — ÉCG"),
        ("Nom\u202edécalé", "Nom décalé"),  # a direction override is a format character
    ],
)
def test_safe_title(title: str, expected: str) -> None:
    assert safe_title(title) == expected


def test_accents_are_kept_composed() -> None:
    decomposed = unicodedata.normalize("NFD", "Été")
    assert safe_title(decomposed) == "Été"


@given(st.text(max_size=300))
def test_any_title_gives_one_harmless_name(title: str) -> None:
    name = safe_title(title)
    assert 0 < len(name) <= export.TITLE_CHARS
    assert not set(name) & set('/\\:*?"<>|')
    assert not any(unicodedata.category(c).startswith("C") for c in name)
    assert not name.startswith(".") and ".." not in name
    assert name == safe_title(name)  # stable


def test_document_path_by_section_date_title_and_id() -> None:
    assert document_path(doc()) == "documents/comptes_rendus/2026-03-04-Compte rendu-2e3f4a5b.pdf"
    assert document_path(doc(title="../x", section="../../etc")).startswith(
        "documents/______etc/2026-03-04-x-"
    )


@pytest.mark.parametrize(
    ("mime", "ext"),
    [
        ("application/pdf", "pdf"),
        ("text/plain", "txt"),
        ("text/plain; charset=utf-8", "txt"),
        ("image/jpeg", "jpg"),
        ("application/fhir+json", "json"),
        ("application/x-unknown-thing", "bin"),
    ],
)
def test_extension(mime: str, ext: str) -> None:
    assert extension(mime) == ext


def test_two_documents_never_share_a_path() -> None:
    same = [doc(_id="aaaa-2e3f4a5b"), doc(_id="bbbb-2e3f4a5b")]
    paths = unique_paths(same)
    assert len(set(paths)) == 2 and all(p.endswith(".pdf") for p in paths)


def test_archive_written_in_parts_reads_back_whole() -> None:
    sink = PartSink()
    parts: list[bytes] = []
    big = os.urandom(PART_BYTES + 12345)  # random: deflate keeps it the same size
    archive = new_archive(sink)
    archive.writestr("LISEZMOI.txt", b"Votre archive")
    with archive.open("documents/imagerie/2026-03-04-IRM-1.bin", "w", force_zip64=True) as out:
        for start in range(0, len(big), export.WRITE_SLICE):
            out.write(big[start : start + export.WRITE_SLICE])
            parts += sink.parts()
    archive.close()
    parts += sink.parts(final=True)
    assert all(len(p) == PART_BYTES for p in parts[:-1]) and 0 < len(parts[-1]) <= PART_BYTES
    whole = b"".join(parts)
    assert len(whole) == sink.size
    opened = zipfile.ZipFile(io.BytesIO(whole))
    assert opened.testzip() is None
    assert opened.read("LISEZMOI.txt") == b"Votre archive"
    assert opened.read("documents/imagerie/2026-03-04-IRM-1.bin") == big


def test_an_entry_naming_a_document_the_patient_may_not_read_is_withheld() -> None:
    entry = audit_pb2.AccessLogEntry(
        seq=7,
        leaf_hash="ab",
        action="create",
        document_id="hidden",
        entry="{...}",
        actor=audit_pb2.AuditActor(kind="professional", id="10000000008", name="Dr X"),
    )
    assert log_entry(entry, {"other"}) == {"seq": 7, "leaf_hash": "ab", "withheld": True}
    shown = log_entry(entry, {"hidden"})
    assert shown["document_id"] == "hidden" and shown["actor"]["name"] == "Dr X"
    assert "entry" not in shown and "withheld" not in shown
