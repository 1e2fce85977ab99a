"""Reading claims: every refusal has its reason, money never survives a read, the history window."""

from __future__ import annotations

from datetime import date

from dmp_ingest import domain
from dmp_stack.testing import make_ins, make_rpps

INS, RPPS = make_ins(), make_rpps()
HEADER = "claim_id,ins,care_date,kind,code,label,professional_rpps,amount_paid,amount_reimbursed"


def rows(*lines: str) -> list[domain.Row]:
    return list(domain.read_csv([HEADER + "\n", *(line + "\n" for line in lines)]))


def test_a_good_row_is_a_claim_without_money() -> None:
    [(line, claim)] = rows(f"c1,{INS},2026-01-02,drug,3400,Paracétamol,{RPPS},2.18,1.42")
    assert line == 2
    assert claim == domain.Claim("c1", INS, "2026-01-02", "drug", "3400", "Paracétamol", RPPS)
    assert not any("amount" in f for f in domain.Claim._fields)


def test_each_bad_row_says_why_and_the_rest_goes_on() -> None:
    found = rows(
        f"c1,{INS},2026-02-30,lab,B,x,,1,1",
        f"c2,{INS},2026-01-02,spa,B,x,,1,1",
        "c3,123,2026-01-02,lab,B,x,,1,1",
        f"c4,{INS},2026-01-02",
        f",{INS},2026-01-02,lab,B,x,,1,1",
        f"c6,{INS},2026-01-02,lab,B,x,12345,1,1",
        f"c7,{INS},2026-01-02,lab,B,x,,1,1",
    )
    reasons = {line: r for line, r in found if isinstance(r, str)}
    assert set(reasons) == {2, 3, 4, 5, 6, 7}
    assert reasons[2].startswith("care_date") and reasons[3].startswith("kind")
    assert reasons[4].startswith("ins") and "fields" in reasons[5]
    assert reasons[6].startswith("claim_id") and reasons[7].startswith("professional_rpps")
    assert isinstance(found[-1][1], domain.Claim)


def test_a_header_without_the_columns_refuses_the_batch() -> None:
    assert list(domain.read_csv(["claim_id,ins\n", "a,b\n"])) == [
        (1, "the header lacks care_date, kind, code, label, professional_rpps")
    ]
    assert list(domain.read_csv([])) == []


def test_json_lines_take_the_same_fields() -> None:
    found = list(
        domain.read_json_lines(
            [
                f'{{"claim_id":"j1","ins":"{INS}","care_date":"2026-01-02","kind":"act",'
                '"code":"A","label":"x","professional_rpps":"","amount_paid":3}',
                "[1, 2]",
                "{broken",
                "",
                f'{{"claim_id":"j2","ins":"{INS}","care_date":20260102,"kind":"act"}}',
            ]
        )
    )
    assert isinstance(found[0][1], domain.Claim)
    assert found[1] == (2, "the line is not a JSON object") and found[2][0] == 3
    assert found[3][0] == 5 and isinstance(found[3][1], str)


def test_the_history_is_the_last_24_months_by_date_without_money() -> None:
    claims = [
        domain.Claim("b", INS, "2026-11-01", "act", "A", "récent", ""),
        domain.Claim("a", INS, "2025-01-01", "drug", "D", "an dernier", RPPS),
        domain.Claim("c", INS, "2024-11-22", "lab", "L", "trop ancien", ""),
        domain.Claim("d", INS, "2026-12-01", "lab", "L", "dans le futur", ""),
    ]
    kept = domain.history(claims, date(2026, 11, 23))
    assert [c.claim_id for c in kept] == ["a", "b"]
    text = domain.remb_document(kept).decode()
    assert text.splitlines() == [
        "date;nature;code;libellé;professionnel (RPPS)",
        f"2025-01-01;Médicament délivré;D;an dernier;{RPPS}",
        "2026-11-01;Acte;A;récent;",
    ]
