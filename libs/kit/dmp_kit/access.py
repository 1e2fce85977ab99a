"""What a refused access decision means to the caller: consent's reasons, mapped to errors once."""

from __future__ import annotations

from typing import Protocol

from dmp_kit.errors import Conflict, NotFound, PermissionDenied


class Verdict(Protocol):
    """A decision: consent's own, or the DecideResponse it sends."""

    @property
    def allowed(self) -> bool: ...

    @property
    def reason(self) -> str: ...


def raise_if_denied(verdict: Verdict) -> None:
    if verdict.allowed:
        return
    reason = verdict.reason
    if reason == "no_dossier":
        raise NotFound("no DMP for this INS", field="ins", slug="dossier-not-found")
    if reason == "dossier_closed":
        raise Conflict("the DMP is closed", slug="dossier-closed")
    if reason == "already_open":
        raise Conflict("a DMP is already open for this INS", field="ins", slug="dossier-exists")
    if reason == "read_only":
        raise PermissionDenied(
            "this trusted person may read the patient's space, not change it", slug="read-only"
        )
    if reason in ("not_for_trusted_persons", "not_for_apps"):
        raise PermissionDenied(
            "only the patient (or a minor's legal representatives) does this", slug="patient-only"
        )
    raise PermissionDenied(f"not allowed: {reason}", slug="access-denied")
