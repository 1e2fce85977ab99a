"""schemathesis against the running gateway, from its OpenAPI document, as each kind of user:
at least 10,000 generated requests; no 5xx, no response that contradicts the schema: errors
included, each with a status and a media type the operation documents, and its body checked
against the schema documented for them.

Every failure is collected (operation, status, what was wrong) rather than stopping at the
first, so that one run reports them all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.core.transport import response_content_type
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from dmp_stack.testing import RunningStack

REQUESTS_AT_LEAST = 10_000
# Each kind of caller, and no caller at all.
KINDS = ("anonymous", "admin", "patient", "professional", "insurer")
# Left out: those that rotate and revoke the token-signing keys, which would end the fuzzer's
# tokens (tests/e2e/test_identity.py covers them), and the password change.
EXCLUDED = {
    ("POST", "/v1/admin/signing-keys/rotate"),
    ("POST", "/v1/admin/signing-keys/{key_id}/revoke"),
    # Wrong current passwords lock the account, the administrator's that later tests log in
    # with included (tests/e2e/test_accounts.py covers it).
    ("POST", "/v1/me/password"),
}


@dataclass
class Tally:
    requests: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    # errors whose status and media type the document gives a schema, which their body is
    # validated against
    errors_with_schema: int = 0
    failures: list[str] = field(default_factory=list)


@pytest.fixture(scope="module")
def tokens(stack: RunningStack) -> dict[str, str]:
    admin = stack.admin_token()
    patient = stack.create_patient(admin)
    pro = stack.create_professional(admin)
    return {
        "admin": admin,
        "patient": stack.login("patient", patient["ins"], patient["password"], patient["email"])[
            "access_token"
        ],
        "professional": stack.login("professional", pro["rpps"], pro["password"], pro["email"])[
            "access_token"
        ],
        "insurer": stack.client_token(admin, ["insurer"]),
    }


# Ten thousand requests, each response checked against the document: minutes on two cores,
# longer than the suite's default timeout when the machine is shared.
@pytest.mark.timeout(1200)
def test_generated_requests_get_no_server_error_and_match_the_schema(
    stack: RunningStack, tokens: dict[str, str]
) -> None:
    schema = schemathesis.openapi.from_url(f"{stack.url}/openapi.json")
    operations = [
        result.ok()
        for result in schema.get_all_operations()
        if (result.ok().method.upper(), result.ok().path) not in EXCLUDED
    ]
    # Hypothesis draws fewer cases where an operation has few distinct ones: a margin.
    per_operation = int(1.3 * REQUESTS_AT_LEAST / (len(operations) * len(KINDS))) + 1
    tally = Tally()
    session = requests.Session()
    for kind in KINDS:
        headers = {"authorization": f"Bearer {tokens[kind]}"} if kind in tokens else {}
        for operation in operations:
            fuzz(stack.url, session, operation, kind, headers, per_operation, tally)
    print(f"\nschemathesis: {tally.requests} requests, by status {sorted(tally.by_status.items())}")
    assert tally.requests >= REQUESTS_AT_LEAST
    assert not tally.failures, "\n".join(tally.failures[:30])
    assert not [s for s in tally.by_status if s >= 500]
    assert tally.errors > REQUESTS_AT_LEAST // 10
    assert tally.errors_with_schema == tally.errors


def fuzz(
    base_url: str,
    session: requests.Session,
    operation: Any,
    kind: str,
    headers: dict[str, str],
    examples: int,
    tally: Tally,
) -> None:
    """`examples` generated requests to one operation as one kind of caller."""

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy())
    def run(case: Any) -> None:
        response = case.call(base_url=base_url, session=session, headers=headers)
        tally.requests += 1
        tally.by_status[response.status_code] = tally.by_status.get(response.status_code, 0) + 1
        if response.status_code >= 400:
            tally.errors += 1
            documented = case.operation.responses.find_by_status_code(response.status_code)
            media = response_content_type(response)
            if documented is not None and documented.get_schema(media).schema is not None:
                tally.errors_with_schema += 1
        try:
            case.validate_response(
                response,
                checks=[
                    not_a_server_error,
                    status_code_conformance,
                    content_type_conformance,
                    response_schema_conformance,
                ],
            )
        except (Exception, BaseExceptionGroup) as failure:  # schemathesis groups its findings
            tally.failures.append(
                f"{kind} {case.method} {case.path} → {response.status_code}: {str(failure)[:300]}"
            )

    run()
