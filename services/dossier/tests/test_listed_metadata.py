"""A list's metadata messages are made once per document as decoded, and show each caller only
the links they may follow (dmp_dossier.api.ListedMetadata)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from dmp_dossier.api import ListedMetadata, metadata
from dmp_kit.forget import forget_all


def _doc(**extra: Any) -> dict[str, Any]:
    return {
        "_id": "doc-2",
        "ins": "180017512345660",
        "type_code": "11488-4",
        "section": "reports",
        "title": "CR",
        "author": "10000000001",
        "created_at": datetime(2026, 1, 1, tzinfo=UTC),
        "service_start": None,
        "mime_type": "text/plain",
        "size": 3,
        "sha256": "ab" * 32,
        "labels": [],
        "status": "approved",
        "replaces": "doc-1",
        **extra,
    }


def test_a_documents_message_is_made_once_and_shows_each_caller_the_links_they_may_follow() -> None:
    listed = ListedMetadata()
    doc = _doc()
    first = listed.get(doc, {"doc-1"})
    assert first == metadata(doc, {"doc-1"}) and first.replaces == "doc-1"
    assert listed.get(doc, {"doc-1"}) is first, "made once"
    hidden = listed.get(doc, set())  # a caller who may not read the version it replaces
    assert hidden.replaces == "" and listed.get(doc, {"doc-1"}).replaces == "doc-1"
    assert listed.get(doc, None).replaces == "doc-1"
    # The same document decoded again (its listing changed): another dict, made anew.
    changed = _doc(title="Nouveau titre")
    assert listed.get(changed, {"doc-1"}).title == "Nouveau titre"
    assert listed.get(_doc(), {"doc-1"}) is not first
    forget_all()  # emptied with the rest of the patient data held (dmp_kit.forget)
    assert listed.get(doc, {"doc-1"}) is not first
