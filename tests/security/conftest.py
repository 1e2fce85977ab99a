"""What the security tests share: the gateway's OpenAPI document, against which every answer
they observe is checked."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import pytest
from jsonschema import Draft202012Validator

from dmp_stack.testing import RunningStack

PROBLEM = "application/problem+json"


class Answer(Protocol):
    """An HTTP response, from httpx or requests."""

    status_code: int
    text: str

    @property
    def headers(self) -> Any: ...

    def json(self) -> Any: ...


class Documented:
    """The responses the document gives each operation. `check` fails on an answer the
    document does not describe: a status it does not list for that operation, an error that is
    not problem+json, a problem whose body breaks the Problem schema, or whose `type` is not
    one the document gives that status of that operation (one example per type)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.problem = Draft202012Validator(
            {"$ref": "#/components/schemas/Problem", "components": spec["components"]},
            format_checker=Draft202012Validator.FORMAT_CHECKER,
        )
        self.oauth = Draft202012Validator(
            {"$ref": "#/components/schemas/OAuthError", "components": spec["components"]}
        )

    def check(self, method: str, path: str, r: Answer) -> None:
        answers = self.spec["paths"][path][method.lower()]["responses"]
        context = (method, path, r.status_code, r.text[:300])
        assert str(r.status_code) in answers, ("status not documented", *context)
        if r.status_code < 400:
            return
        media = r.headers["content-type"].split(";")[0].strip()
        if media == "application/json" and "OAuthError" in str(answers[str(r.status_code)]):
            # The OAuth endpoints' own errors (RFC 6749 §5.2), documented as such.
            self.oauth.validate(r.json())
            return
        assert media == PROBLEM, ("an error that is not problem+json", *context)
        content = answers[str(r.status_code)]["content"][media]
        body = r.json()
        broken = [e.message for e in self.problem.iter_errors(body)]
        assert not broken, ("not a Problem", broken, *context)
        types = {e["value"]["type"] for e in content["examples"].values()}
        assert body["type"] in types, ("type not documented", sorted(types), *context)


@pytest.fixture(scope="session")
def documents() -> Callable[[dict[str, Any]], Documented]:
    """Builds the check from a document (the running gateway's, or an app's own)."""
    return Documented


@pytest.fixture(scope="module")
def documented(stack: RunningStack) -> Documented:
    """The running gateway's document."""
    with stack.client() as c:
        spec = c.get("/openapi.json").json()
    return Documented(spec)
