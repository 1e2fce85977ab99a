"""Every error under /fhir/ leaves as an OperationOutcome: the gateway's problem details
(whoever wrote them: a route, the body limit, admission, the rate limit) are rewritten on
their way out, so FHIR errors and REST errors stay one vocabulary."""

from __future__ import annotations

import json

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dmp_gateway.fhir.resources import MEDIA_TYPE, dump, outcome

PREFIX = "/fhir/"


class FhirOutcomes:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PREFIX):
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        body = bytearray()

        async def rewrite(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                media = MutableHeaders(scope=message).get("content-type", "")
                if media.startswith("application/problem+json"):
                    start = message
                    return
            elif start is not None and message["type"] == "http.response.body":
                body.extend(message.get("body", b""))
                if message.get("more_body", False):
                    return
                problem = json.loads(body or b"{}")
                fields = [e["field"] for e in problem.get("errors", []) if e.get("field")]
                if problem.get("field") and problem["field"] not in fields:
                    fields.insert(0, problem["field"])
                text = dump(
                    outcome(
                        int(problem.get("status", start["status"])),
                        str(problem.get("detail", "")),
                        str(problem.get("type", "")),
                        fields or None,
                    )
                ).encode()
                headers = MutableHeaders(scope=start)
                headers["content-type"] = MEDIA_TYPE
                headers["content-length"] = str(len(text))
                await send(start)
                await send({"type": "http.response.body", "body": text})
                return
            await send(message)

        await self.app(scope, receive, rewrite)
