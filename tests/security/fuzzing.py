"""The schema fuzzer's work, run in worker processes by test_fuzz.py: generating a case costs
the client far more than answering it costs the stack (one client process kept a core busy
while the stack's sat mostly idle), so the generating is shared between two.

A share is a list of (kind of caller, method, path); each worker reads the OpenAPI document
itself and sends `examples` generated requests to each operation of its share, tallying every
response instead of stopping at the first failure.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

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

Job = tuple[str, str, str]  # (kind of caller, METHOD, path)


@dataclass
class Tally:
    requests: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    errors: int = 0
    # errors whose status and media type the document gives a schema, which their body is
    # validated against
    errors_with_schema: int = 0
    failures: list[str] = field(default_factory=list)

    def add(self, other: Tally) -> None:
        self.requests += other.requests
        self.by_status.update(other.by_status)
        self.errors += other.errors
        self.errors_with_schema += other.errors_with_schema
        self.failures += other.failures


def operations(base_url: str) -> dict[tuple[str, str], Any]:
    """Every operation of the gateway's OpenAPI document, by (METHOD, path)."""
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json")
    found = (result.ok() for result in schema.get_all_operations())
    return {(operation.method.upper(), operation.path): operation for operation in found}


def fuzz_share(
    base_url: str,
    jobs: list[Job],
    headers: dict[str, dict[str, str]],
    examples: int,
    derandomize: bool,
) -> Tally:
    """`examples` generated requests to each job's operation as its kind of caller (`headers`
    by kind); `derandomize` as the calling session's Hypothesis profile has it."""
    by_key = operations(base_url)
    tally = Tally()
    session = requests.Session()
    for kind, method, path in jobs:
        fuzz(
            base_url,
            session,
            by_key[(method, path)],
            kind,
            headers[kind],
            examples,
            tally,
            derandomize,
        )
    return tally


def fuzz(
    base_url: str,
    session: requests.Session,
    operation: Any,
    kind: str,
    headers: dict[str, str],
    examples: int,
    tally: Tally,
    derandomize: bool,
) -> None:
    """`examples` generated requests to one operation as one kind of caller."""

    @settings(
        max_examples=examples,
        deadline=None,
        database=None,
        derandomize=derandomize,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy())
    def run(case: Any) -> None:
        response = case.call(base_url=base_url, session=session, headers=headers)
        tally.requests += 1
        tally.by_status[response.status_code] += 1
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
