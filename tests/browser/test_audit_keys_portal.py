"""« Vérifier l'historique » after a key rotation: the portal checks the signed head under the
key its key_id names among all the published ones, and only within that key's period. The
published list is rewritten on its way to the browser (as a rotation, or a wrong period, would
show it); the log itself is the session's."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from playwright.sync_api import Route, expect

from dmp_audit.entry import key_id, raw_public_key
from dmp_stack.testing import RunningStack
from tests.browser.test_portal import browser, visitors  # noqa: F401 (fixtures)

Keys = list[dict[str, Any]]


def retired_decoy() -> dict[str, Any]:
    """A key of its own, retired before the log's heads: listed first, never the one used."""
    public = Ed25519PrivateKey.generate().public_key()
    return {
        "key_id": key_id(public),
        "algorithm": "Ed25519",
        "public_key": base64.b64encode(raw_public_key(public)).decode(),
        "verifier_key": "",
        "not_before": "2020-01-01T00:00:00.000000Z",
        "not_after": "2021-01-01T00:00:00.000000Z",
    }


def check_history(stack: RunningStack, visitor: Any, rewrite: Callable[[Keys], Keys]) -> Any:
    """The patient's « Vérifier l'historique », the published keys rewritten by `rewrite`."""
    admin = stack.admin_token()
    patient = stack.create_patient(admin)
    stack.open_dossier(stack.token_for(patient, "patient"), patient)
    me = visitor()
    page = me.page

    def keys(route: Route) -> None:
        published = route.fetch().json()["keys"]
        route.fulfill(json={"keys": rewrite(published)})

    page.route(re.compile(r"/v1/audit/keys$"), keys)
    me.sign_in("Patient", patient["ins"], patient["password"], patient["email"])
    expect(page.get_by_role("heading", name="Mon dossier médical")).to_be_visible()
    page.get_by_role("link", name="Historique des accès").click()
    page.get_by_role("button", name="Vérifier l'historique").click()
    return page


def test_the_head_is_checked_under_the_key_it_names_among_several(
    stack: RunningStack,
    visitors: Any,  # noqa: F811 (the fixture)
) -> None:
    page = check_history(stack, visitors, lambda keys: [retired_decoy(), *keys])
    expect(page.get_by_text(re.compile("^Historique vérifié"))).to_be_visible(timeout=60_000)


@pytest.mark.parametrize(
    "period",
    [
        {"not_before": "2999-01-01T00:00:00.000000Z"},  # from after every head it signed
        {"not_after": "2000-01-01T00:00:00.000000Z"},  # until before them
    ],
)
def test_a_head_outside_its_keys_period_fails_the_check(
    stack: RunningStack,
    visitors: Any,  # noqa: F811 (the fixture)
    period: dict[str, str],
) -> None:
    page = check_history(stack, visitors, lambda keys: [{**keys[0], **period}, *keys[1:]])
    failed = page.get_by_text(re.compile("^Vérification échouée"))
    expect(failed).to_be_visible(timeout=60_000)
    expect(failed).to_contain_text("la signature du journal ne correspond pas")
