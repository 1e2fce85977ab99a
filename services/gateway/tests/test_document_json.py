"""A page of documents is written as plain data, not through DocumentOut: each item must be
exactly what DocumentOut would have given (the OpenAPI document describes that model)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from dmp.dossier.v1 import dossier_pb2 as pb
from dmp_gateway.routes.dossiers import DocumentOut, document_bytes, document_json, document_out
from dmp_kit.forget import forget_all


def metadata(**extra: object) -> pb.DocumentMetadata:
    m = pb.DocumentMetadata(
        id="doc-1",
        ins="180017512345660",
        type_code="11502-2",
        section="reports",
        title="Compte rendu",
        author="10000000001",
        mime_type="text/plain",
        size=42,
        sha256="ab" * 32,
        confidentiality=["MASQUE_PS"],
        status=pb.DOCUMENT_STATUS_APPROVED,
        **extra,  # type: ignore[arg-type]
    )
    m.created_at.FromDatetime(datetime(2026, 11, 30, 1, 2, 3, 456000, tzinfo=UTC))
    return m


def test_an_item_is_what_the_model_gives() -> None:
    plain = metadata()
    linked = metadata(replaces="doc-0", replaced_by="doc-2")
    linked.service_start.FromDatetime(datetime(2026, 11, 1, tzinfo=UTC))
    for m in (plain, linked):
        item = document_json(m)
        assert item == document_out(m).model_dump(exclude_none=True)
        assert DocumentOut.model_validate(item).model_dump(exclude_none=True) == item
    assert "replaces" not in document_json(plain) and "service_start" not in document_json(plain)
    assert document_json(linked)["service_start"] == "2026-11-01T00:00:00.000Z"
    assert document_json(plain)["masked_from_professionals"] is True


def test_an_items_json_is_made_once_per_version_of_its_metadata() -> None:
    m = metadata()
    first = document_bytes(m)
    assert json.loads(first) == document_json(m)
    assert document_bytes(metadata()) is first, "the same version: served as made"
    m.confidentiality.remove("MASQUE_PS")  # masked no more: another version
    unmasked = document_bytes(m)
    assert json.loads(unmasked)["masked_from_professionals"] is False
    assert json.loads(unmasked) == document_json(m)
    forget_all()  # emptied with the rest of the patient data held (dmp_kit.forget)
    assert document_bytes(metadata()) is not first
