"""« Vérifier l'historique » in Chromium checks the witnesses too: after two witnesses cosigned
the log and handed their cosignatures to it, the patient reads which ones vouched for it; a
cosignature altered on its way to the browser, or a witnessed tree the log does not extend, is
told as a failed check."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from playwright.sync_api import Route, expect

from dmp_audit.cosign import Cosigner
from dmp_audit.note import Checkpoint, NoteSigner, open_note
from dmp_stack.testing import TEST_WITNESSES, RunningStack, until
from tests.browser.test_portal import browser, visitors  # noqa: F401 (fixtures)
from tests.e2e.test_tlog_go import (
    SECOND,
    SECOND_SEED,
    WITNESS,
    WITNESS_SEED,
    real_signer,
    saved,
    witness,
)

W1, W2 = TEST_WITNESSES


def log_key(stack: RunningStack) -> str:
    with stack.client() as c:
        keys = c.get("/v1/audit/keys").json()["keys"]
    return str(next(k["verifier_key"] for k in keys if k["role"] == "log"))


def signed_size(stack: RunningStack, vkey: str) -> int:
    with stack.client() as c:
        note = c.get("/v1/audit/log/checkpoint").content
    return Checkpoint.from_text(open_note(note, vkey)).size


def test_the_patient_sees_which_witnesses_vouched_for_the_log(
    stack: RunningStack,
    visitors: Any,  # noqa: F811
    tmp_path: Path,
) -> None:
    admin = stack.admin_token()
    patient = stack.create_patient(admin)
    token = stack.token_for(patient, "patient")
    stack.open_dossier(token, patient)
    with stack.client(token) as c:
        assert c.get(f"/v1/dossiers/{patient['ins']}").status_code == 200
    vkey = log_key(stack)
    with stack.client() as c:
        size = c.get("/v1/audit/checkpoint").json()["size"]
    assert until(lambda: signed_size(stack, vkey) > size), "the read is in a signed tree"

    def both_cosign() -> bool:
        """Both witnesses cosign the newest checkpoint (the same one, unless the log grew)."""
        sizes = set()
        for name, seed in ((WITNESS, WITNESS_SEED), (SECOND, SECOND_SEED)):
            state = tmp_path / f"{name[-2:]}.json"
            done = witness(stack.url, vkey, state, "--submit", name=name, seed=seed)
            assert done.returncode == 0, done.stderr
            sizes.add(saved(state).size)
        return len(sizes) == 1

    assert until(both_cosign), "two witnesses cosigned the same checkpoint"

    me = visitors()
    page = me.page
    me.sign_in("Patient", patient["ins"], patient["password"], patient["email"])
    expect(page.get_by_role("heading", name="Mon dossier médical")).to_be_visible()
    me.go_to("Historique des accès")
    page.get_by_role("button", name="Vérifier l'historique").click()
    verified = page.get_by_text(re.compile("^Historique vérifié"))
    expect(verified).to_be_visible(timeout=60_000)
    expect(verified).to_contain_text(
        f"Les témoins indépendants {WITNESS}, {SECOND} ont contre-signé le journal"
    )

    # A cosignature altered on its way: the check fails and names the witness.
    def altered(route: Route) -> None:
        note = route.fetch().text()
        lines = note.split("\n")
        at = next(i for i, line in enumerate(lines) if line.startswith(f"\u2014 {SECOND} "))
        blob = bytearray(base64.b64decode(lines[at].split(" ")[2]))
        blob[-1] ^= 1
        lines[at] = f"\u2014 {SECOND} {base64.b64encode(blob).decode()}"
        route.fulfill(body="\n".join(lines), content_type="text/plain; charset=utf-8")

    page.route(re.compile(r".*/v1/audit/log/checkpoint\?witnessed=true$"), altered)
    page.get_by_role("button", name="Vérifier l'historique").click()
    failed = page.get_by_text(re.compile("^Vérification échouée"))
    expect(failed).to_be_visible(timeout=60_000)
    expect(failed).to_contain_text(f"la contre-signature du témoin {SECOND} ne correspond pas")
    page.unroute(re.compile(r".*/v1/audit/log/checkpoint\?witnessed=true$"))

    # The witnesses cosigned a tree the log also signed but that the head does not extend (a
    # split view): told as such.
    def forked(route: Route) -> None:
        real = Checkpoint.from_text(open_note(route.fetch().body(), vkey))
        fork = Checkpoint(real.origin, real.size, bytes(32)).text()
        note = NoteSigner(real.origin, real_signer(stack).private_key).sign(fork)
        line = Cosigner(WITNESS, Ed25519PrivateKey.from_private_bytes(WITNESS_SEED)).cosign(fork, 1)
        route.fulfill(body=note + line.line.encode() + b"\n", content_type="text/plain")

    page.route(re.compile(r".*/v1/audit/log/checkpoint\?witnessed=true$"), forked)
    page.get_by_role("button", name="Vérifier l'historique").click()
    expect(page.get_by_text(re.compile("^Vérification échouée"))).to_contain_text(
        "que celui-ci ne prolonge pas"
    )
