"""The end-of-session scan of the logs for identifiers (dmp_stack.testing)."""

from __future__ import annotations

from pathlib import Path

from dmp_stack.testing import identifiers_in_logs, make_ins, make_rpps


def test_identifiers_are_found_and_pseudonyms_are_not(tmp_path: Path) -> None:
    ins, rpps = make_ins(), make_rpps()
    (tmp_path / "dossier.log").write_text(
        '{"event": "read", "patient": "p:3f9a1c0d2b", "trace": "0af7651916cd43dd8448eb21"}\n'
        '{"event": "opened", "ts": "2026-11-23T17:30:31.996958Z", "seq": 123456789012}\n'
        f'{{"event": "oops", "ins": "{ins}"}}\n'
    )
    (tmp_path / "gateway.log").write_text(f'{{"event": "login", "login": "{rpps}"}}\n')
    (tmp_path / "notify.log").write_text('{"to": "patient-1@example.org"}\n')
    (tmp_path / "smtp.log").write_text(f"RCPT TO {ins}@example.org\n")  # the sink, not ours
    found = identifiers_in_logs(tmp_path)
    assert [line.split(":")[0] for line in found] == ["dossier.log", "gateway.log", "notify.log"]
    assert ins in found[0] and rpps in found[1]
