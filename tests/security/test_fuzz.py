"""schemathesis against the running gateway, from its OpenAPI document, as each kind of user:
at least 10,000 generated requests; no 5xx, no response that contradicts the schema: errors
included, each with a status and a media type the operation documents, and its body checked
against the schema documented for them.

Every failure is collected (operation, status, what was wrong) rather than stopping at the
first, so that one run reports them all.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor

import pytest
from hypothesis import settings

from dmp_stack.testing import RunningStack
from tests.security.fuzzing import Job, Tally, fuzz_share, operations

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


# Generating a case costs the client far more than answering it costs the stack: two client
# processes, each its share of the operations (fuzzing.py).
CLIENTS = 2


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
    keys = [key for key in operations(stack.url) if key not in EXCLUDED]
    # Hypothesis draws fewer cases where an operation has few distinct ones: a margin.
    per_operation = int(1.3 * REQUESTS_AT_LEAST / (len(keys) * len(KINDS))) + 1
    jobs: list[Job] = [(kind, method, path) for kind in KINDS for method, path in keys]
    headers = {
        kind: {"authorization": f"Bearer {tokens[kind]}"} if kind in tokens else {}
        for kind in KINDS
    }
    # Spawned, not forked: this process runs the stack's threads. Niced, so that the stack is
    # never the one kept waiting for a core (its deadlines would answer 503).
    context = multiprocessing.get_context("spawn")
    tally = Tally()
    with ProcessPoolExecutor(
        CLIENTS, mp_context=context, initializer=os.nice, initargs=(10,)
    ) as pool:
        shares = [
            pool.submit(
                fuzz_share,
                stack.url,
                jobs[i::CLIENTS],
                headers,
                per_operation,
                settings.default.derandomize,
            )
            for i in range(CLIENTS)
        ]
        for share in shares:
            tally.add(share.result())
    print(f"\nschemathesis: {tally.requests} requests, by status {sorted(tally.by_status.items())}")
    assert tally.requests >= REQUESTS_AT_LEAST
    assert not tally.failures, "\n".join(tally.failures[:30])
    assert not [s for s in tally.by_status if s >= 500]
    assert tally.errors > REQUESTS_AT_LEAST // 10
    assert tally.errors_with_schema == tally.errors
