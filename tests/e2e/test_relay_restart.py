"""A service killed mid-burst, while its outbox holds events: after restart, every stored change
is published exactly once (the relay resumes; JetStream drops what it already had)."""

from __future__ import annotations

import asyncio
import base64
from typing import Any

import httpx

from dmp_stack.testing import RunningStack, collect_events


async def test_every_stored_document_is_announced_once_across_a_crash(stack: RunningStack) -> None:
    admin = stack.admin_token()
    patient = stack.create_patient(admin)
    gp = stack.create_professional(admin, "10")
    ins = patient["ins"]
    pt = stack.login("patient", ins, patient["password"], patient["email"])["access_token"]
    with stack.client(pt) as c:
        r = c.post(
            "/v1/dossiers",
            json={"ins": ins, "vitale_serial": patient["vitale_serial"], "patient_consent": True},
        )
        assert r.status_code == 201, r.text
    token = stack.login("professional", gp["rpps"], gp["password"], gp["email"])["access_token"]

    async def add(c: httpx.AsyncClient, i: int) -> Any:
        return await c.post(
            f"/v1/dossiers/{ins}/documents",
            json={
                "type_code": "11488-4",
                "title": f"CR {i}",
                "mime_type": "text/plain",
                "content_base64": base64.b64encode(f"compte rendu {i}".encode()).decode(),
            },
        )

    async with httpx.AsyncClient(
        base_url=stack.url, timeout=30, headers={"authorization": f"Bearer {token}"}
    ) as c:
        writes = [asyncio.create_task(add(c, i)) for i in range(40)]
        for answered, write in enumerate(asyncio.as_completed(writes), start=1):
            await write
            if answered == 10:
                break
        # Killed mid-burst, the tenth answer just out: some writes are stored with their events
        # still in the outbox, others cut off.
        await asyncio.to_thread(stack.stack.restart, "dossier")
        answers = await asyncio.gather(*writes, return_exceptions=True)
    acknowledged = {
        r.json()["id"] for r in answers if isinstance(r, httpx.Response) and r.status_code == 201
    }
    refused = [r for r in answers if not isinstance(r, httpx.Response) or r.status_code != 201]
    assert len(acknowledged) >= 10, "the writes answered before the crash"
    assert all(isinstance(r, httpx.Response) and r.status_code == 503 for r in refused), refused
    with stack.client(token) as c:
        listed = c.get(f"/v1/dossiers/{ins}/documents", params={"page_size": 100}).json()["items"]
    stored = {d["id"] for d in listed}
    assert acknowledged <= stored, "every acknowledged write survived"
    events = await collect_events(
        stack.infra.nats.url,
        "DOSSIER",
        "document.added",
        lambda seen: stored <= {e.document_added.document_id for e in seen},
        wait=60,
    )
    ids = [e.document_added.document_id for e in events if e.patient_ins == ins]
    assert set(ids) == stored, "every stored document was announced"
    assert len(ids) == len(stored), "no change announced twice"
