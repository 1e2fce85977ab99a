"""Messaging's rules, alone (no I/O)."""

from __future__ import annotations

import pytest

from dmp_kit.auth import Principal
from dmp_kit.errors import Conflict, InvalidArgument, PermissionDenied
from dmp_messaging import domain
from dmp_messaging.domain import Side, Status

PDF = b"%PDF-1.4\n1 0 obj << >> endobj\n%%EOF\n"
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"


def test_who_has_a_mailbox() -> None:
    patient = Principal("patient", "s", ins="180057512345623")
    assert domain.caller_party(patient).key == "patient:180057512345623"
    pro = Principal("professional", "s", rpps="10001234567", profession="21")
    assert domain.caller_party(pro).profession == "21"
    mailbox = Principal("system", "s", roles=frozenset({"mailbox"}), client_id="chu-x")
    assert domain.caller_party(mailbox).key == "system:chu-x"
    # a hospital's document software is not its mailbox; insurers and administrators have none
    for nobody in (
        Principal("system", "s", roles=frozenset({"facility"}), client_id="chu-x"),
        Principal("system", "s", roles=frozenset({"insurer"}), client_id="cpam"),
        Principal("admin", "s", roles=frozenset({"admin"})),
    ):
        with pytest.raises(PermissionDenied):
            domain.caller_party(nobody)


def test_a_patient_writes_first_only_to_a_pharmacy_that_dispensed_to_them() -> None:
    domain.may_open_with_pharmacy("21", dispensed=True)
    for profession, dispensed in (("21", False), ("10", True), ("60", True)):
        with pytest.raises(PermissionDenied) as refused:
            domain.may_open_with_pharmacy(profession, dispensed)
        assert refused.value.problem == "conversation-not-allowed"


def test_replies_while_open_and_only_the_professional_side_closes() -> None:
    domain.may_post(Side.PATIENT, Status.OPEN, 0)
    with pytest.raises(Conflict):
        domain.may_post(Side.PATIENT, Status.CLOSED, 1)
    with pytest.raises(Conflict):
        domain.may_post(Side.COUNTERPART, Status.OPEN, domain.MAX_MESSAGES)
    domain.may_set_status(Side.COUNTERPART)
    with pytest.raises(PermissionDenied):
        domain.may_set_status(Side.PATIENT)


def test_a_conversation_stays_within_one_database_document() -> None:
    # every message at its largest (4 bytes a character) plus its envelope, under 16 MB
    worst = domain.MAX_MESSAGES * (4 * domain.MAX_BODY + 2_000)
    assert worst < 16 * 1024 * 1024


def test_attachments_are_judged_by_their_content() -> None:
    assert domain.attachment_type(PDF, "f") == "application/pdf"
    assert domain.attachment_type(JPEG, "f") == "image/jpeg"
    for content in (b"", b"just text named .pdf", b"MZ\x90\x00\x03\x00\x00\x00", b"<html>"):
        with pytest.raises(InvalidArgument) as refused:
            domain.attachment_type(content, "attachments.0.content")
        assert refused.value.field == "attachments.0.content"
    with pytest.raises(InvalidArgument):
        domain.attachment_type(PDF + b"0" * domain.MAX_ATTACHMENT_BYTES, "f")


def test_file_names_are_plain() -> None:
    assert domain.filename("C:\\Users\\x\\ordonnance.pdf", "f") == "ordonnance.pdf"
    assert domain.filename("../../etc/résultats.pdf", "f") == "résultats.pdf"
    for bad in ("facture\u202efdp.exe", "a\nb.pdf", "", "   ", "x" * 121, "a\u2028b.pdf"):
        with pytest.raises(InvalidArgument):
            domain.filename(bad, "f")


def test_a_document_hidden_from_the_patient_is_not_sent_to_them() -> None:
    domain.may_copy({"MASQUE_PS"}, "f")
    for label in ("INVISIBLE_PATIENT", "INVISIBLE_REPRESENTANTS_LEGAUX"):
        with pytest.raises(PermissionDenied):
            domain.may_copy({label}, "f")


def test_the_lengths() -> None:
    assert domain.subject("  Suivi  ") == "Suivi"
    with pytest.raises(InvalidArgument):
        domain.subject("x" * (domain.MAX_SUBJECT + 1))
    with pytest.raises(InvalidArgument):
        domain.body(" \n ")
    with pytest.raises(InvalidArgument):
        domain.attachment_count(domain.MAX_ATTACHMENTS + 1)


def test_a_search_is_matched_case_and_accents_aside() -> None:
    terms = domain.check_search("  RÉSULTATS   du bilan ")
    assert terms == "resultats du bilan"
    assert domain.found_in(terms, ["Sujet", "Les résultats de votre bilan"]) is False
    assert domain.found_in(terms, ["Sujet", "Voici les Résultats du  Bilan."]) is True
    assert domain.found_in(domain.check_search("bilan"), ["BILAN"]) is True
    for wrong in ("a", " ", "x" * 101):
        with pytest.raises(InvalidArgument):
            domain.check_search(wrong)
