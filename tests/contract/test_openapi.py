"""The gateway's OpenAPI document as an outside tool reads it: a valid OpenAPI document whose
every error is the Problem the server sends (application/problem+json), on every operation.
That the server's answers match it is checked against the running gateway (tests/security)."""

from __future__ import annotations

import ast
import json
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import validate

from dmp_gateway.app import create_app
from dmp_gateway.config import GatewaySettings
from dmp_gateway.problems import MEDIA_TYPE, STATUSES
from dmp_kit import errors
from dmp_kit.errors import PROBLEM_BASE

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    return create_app(GatewaySettings(env="dev")).openapi()


OAUTH_ERROR = {"$ref": "#/components/schemas/OAuthError"}


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(m.upper(), path, op) for path, item in spec["paths"].items() for m, op in item.items()]


def test_the_document_is_valid_openapi(spec: dict[str, Any]) -> None:
    validate(spec)


def test_every_error_response_is_a_problem_with_its_types(spec: dict[str, Any]) -> None:
    """Only problem+json, the Problem schema, and one example per type it may carry."""
    assert "HTTPValidationError" not in json.dumps(spec)
    problem = Draft202012Validator(
        {"$ref": "#/components/schemas/Problem", "components": spec["components"]}
    )
    for method, path, op in operations(spec):
        for status, response in op["responses"].items():
            if int(status) < 400:
                continue
            content = response.get("content", {})
            if path.startswith("/oauth/") and status in ("400", "401"):
                # RFC 6749 §5.2: the OAuth endpoints answer what OAuth clients read.
                assert content == {"application/json": {"schema": OAUTH_ERROR}}, (path, status)
                continue
            assert list(content) == [MEDIA_TYPE], (method, path, status)
            assert content[MEDIA_TYPE]["schema"] == {"$ref": "#/components/schemas/Problem"}
            examples = content[MEDIA_TYPE]["examples"]
            assert examples, (method, path, status)
            for slug, example in examples.items():
                problem.validate(example["value"])
                assert example["value"]["type"] == PROBLEM_BASE + slug
                assert example["value"]["status"] == int(status)


def test_every_operation_documents_its_client_errors(spec: dict[str, Any]) -> None:
    for method, path, op in operations(spec):
        answers = set(op["responses"])
        assert any(s.startswith("4") for s in answers), (method, path)
        if "security" in op:
            assert "401" in answers, (method, path)
        if "parameters" in op or "requestBody" in op:
            assert "422" in answers, (method, path)


def test_the_problem_schema_names_what_the_server_sends(spec: dict[str, Any]) -> None:
    problem = spec["components"]["schemas"]["Problem"]
    assert set(problem["required"]) == {"type", "title", "status", "detail"}
    assert set(problem["properties"]) == {
        "type",
        "title",
        "status",
        "detail",
        "field",
        "errors",
        "checks",
    }
    assert problem["additionalProperties"] is False


def raised_types() -> set[tuple[int, str]]:
    """(status, type) of every DmpError the services' code raises with its own type."""
    classes = {
        name: cls
        for name, cls in vars(errors).items()
        if isinstance(cls, type) and issubclass(cls, errors.DmpError) and cls is not errors.DmpError
    }
    found = {(cls.http_status, cls.slug) for cls in classes.values()}
    sources = [*ROOT.glob("services/*/dmp_*/**/*.py"), *ROOT.glob("libs/kit/dmp_kit/**/*.py")]
    for source in sources:
        for node in ast.walk(ast.parse(source.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                cls = classes.get(node.func.id)
                for keyword in node.keywords:
                    if cls and keyword.arg == "slug" and isinstance(keyword.value, ast.Constant):
                        found.add((cls.http_status, keyword.value.value))
    return found


def test_every_problem_type_the_code_raises_is_documented_with_its_status() -> None:
    documented = {(status, slug) for status, about in STATUSES.items() for slug in about.types}
    # Raised only for an RPC a service does not implement, which the gateway never calls.
    missing = raised_types() - documented - {(501, "not-implemented")}
    assert not missing, sorted(missing)
