"""Reading claims: every refusal has its reason, money never survives a read, the history window."""

from __future__ import annotations

import csv
import io
from datetime import date, timedelta

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


def test_insurer_text_never_becomes_a_formula() -> None:
    """OWASP's CSV injection: a cell starting with = + - @, tab or carriage return is quoted;
    separators and quotes in the insurer's text stay inside their cell."""
    labels = ['=HYPERLINK("u")', "+1+1", "-2+3", "@SUM(A1)", "\tx", "\ry", "a\r=b", ' =c;"d"']
    claims = [
        domain.Claim(f"c{i}", INS, f"2026-01-0{i + 1}", "act", "=1" if i else "A", label, "")
        for i, label in enumerate(labels)
    ]
    text = domain.remb_document(claims).decode()
    rows = list(csv.reader(io.StringIO(text), delimiter=";"))
    assert len(rows) == 1 + len(labels)
    cells = [cell for row in rows[1:] for cell in row]
    assert not [c for c in cells if c[:1] in ("=", "+", "-", "@", "\t", "\r")]
    assert [row[3] for row in rows[1:]] == [
        '\'=HYPERLINK("u")',
        "'+1+1",
        "'-2+3",
        "'@SUM(A1)",
        "'\tx",
        " y",
        "a =b",
        '\' =c;"d"',
    ]
    assert rows[1][2] == "A" and rows[2][2] == "'=1"
    assert domain.spreadsheet_safe("2026-01-01") == "2026-01-01"


def test_a_label_read_from_a_batch_is_neutralised_in_the_document() -> None:
    [(_, claim)] = rows(f"c1,{INS},2026-01-02,act,A,\"=cmd|' /C calc'!A0\",,1,1")
    assert isinstance(claim, domain.Claim)
    assert "\n2026-01-02;Acte;A;'=cmd" in domain.remb_document([claim]).decode()


def test_a_line_too_long_is_refused_unread_and_the_rest_goes_on() -> None:
    good = (
        f'{{"claim_id":"j1","ins":"{INS}","care_date":"2026-01-02","kind":"act",'
        '"code":"A","label":"x","professional_rpps":""}\n'
    )
    huge = '{"label":"' + "x" * (5 * domain.MAX_LINE) + '"}\n'
    stream = io.StringIO(good + huge + good.replace("j1", "j2") + huge.rstrip("\n"))
    asked: list[int] = []

    def readline(size: int) -> str:
        asked.append(size)
        return stream.readline(size)

    found = list(domain.read_json_lines(domain.bounded_lines(readline)))
    assert [line for line, _ in found] == [1, 2, 3, 4]
    assert found[1] == (2, f"the line is longer than {domain.MAX_LINE} characters")
    assert found[3] == (4, f"the line is longer than {domain.MAX_LINE} characters")
    assert [r.claim_id for _, r in found if isinstance(r, domain.Claim)] == ["j1", "j2"]
    assert max(asked) == domain.MAX_LINE + 1, "never more than the limit read at once"
    exact = "y" * domain.MAX_LINE + "\n"
    assert list(domain.bounded_lines(io.StringIO(exact).readline)) == [exact]


def test_a_csv_line_too_long_is_refused_unread_and_the_rest_goes_on() -> None:
    good = f"c1,{INS},2026-01-02,act,A,x,,1,1\n"
    huge = f'c2,{INS},2026-01-02,act,A,"{"x" * (5 * domain.MAX_LINE)}",,1,1\n'
    stream = io.StringIO(HEADER + "\n" + good + huge + good.replace("c1", "c3"))
    asked: list[int] = []

    def readline(size: int) -> str:
        asked.append(size)
        return stream.readline(size)

    found = list(domain.read_csv(domain.bounded_lines(readline)))
    assert found[1] == (3, f"the line is longer than {domain.MAX_LINE} characters")
    assert [(line, r.claim_id) for line, r in found if isinstance(r, domain.Claim)] == [
        (2, "c1"),
        (4, "c3"),
    ]
    assert max(asked) == domain.MAX_LINE + 1, "never more than the limit read at once"


def test_a_quoted_csv_field_ends_on_its_line() -> None:
    """A quote left open cannot gather the following lines into one unbounded row: its line is
    refused and the next is read on its own."""
    lines = [HEADER + "\n", f'c1,{INS},2026-01-02,act,A,"open\n', *[f"c{n},x\n" for n in range(5)]]
    lines.append(f"c9,{INS},2026-01-02,act,A,x,,1,1\n")
    found = list(domain.read_csv(lines))
    assert found[0] == (2, "the line is not valid CSV (a quoted field must end on its line)")
    assert [line for line, _ in found] == [2, 3, 4, 5, 6, 7, 8]
    assert found[-1] == (8, domain.Claim("c9", INS, "2026-01-02", "act", "A", "x", ""))
    assert list(domain.read_csv([None, "a\n"])) == [
        (1, f"the header is longer than {domain.MAX_LINE} characters")
    ]


def test_the_history_changes_on_the_day_its_oldest_claim_leaves_it() -> None:
    today = date(2026, 11, 23)
    claims = [
        domain.Claim("old", INS, "2024-11-23", "act", "A", "dernier jour", ""),
        domain.Claim("new", INS, "2026-11-01", "act", "A", "récent", ""),
        domain.Claim("gone", INS, "2024-11-22", "act", "A", "sorti", ""),
    ]
    assert [c.claim_id for c in domain.history(claims, today)] == ["old", "new"]
    assert domain.history_changes_on(claims, today) == "2026-11-24"  # "old" leaves tomorrow
    assert [c.claim_id for c in domain.history(claims, date(2026, 11, 24))] == ["new"]
    due = domain.history_changes_on(claims, date(2026, 11, 24))
    assert due is not None
    day = date.fromisoformat(due)
    assert [c.claim_id for c in domain.history(claims, day - timedelta(days=1))] == ["new"]
    assert domain.history(claims, day) == []
    later = [*claims, domain.Claim("f", INS, "2026-12-05", "act", "A", "à venir", "")]
    assert domain.history_changes_on(later, date(2026, 11, 24)) == "2026-12-05"
    assert domain.history_changes_on([], today) is None


def test_months_before_counts_calendar_months_and_clamps_to_the_month_end() -> None:
    from dmp_ingest.domain import months_before

    assert months_before(date(2026, 11, 30), 12) == date(2025, 11, 30)
    assert months_before(date(2028, 2, 29), 12) == date(2027, 2, 28)
    assert months_before(date(2026, 3, 31), 1) == date(2026, 2, 28)
    assert months_before(date(2026, 1, 15), 1) == date(2025, 12, 15)
    assert months_before(date(2026, 12, 31), 24) == date(2024, 12, 31)
