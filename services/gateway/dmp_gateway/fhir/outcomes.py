"""Every error under /fhir/ leaves as an OperationOutcome: the gateway's problem details
(whoever wrote them: a route, the body limit, admission, the rate limit) are rewritten on
their way out, so FHIR errors and REST errors stay one vocabulary."""

from __future__ import annotations

import json

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dmp_gateway.fhir.resources import MEDIA_TYPE, dump, outcome
from dmp_kit.errors import PROBLEM_BASE
from dmp_kit.logging import get_logger

log = get_logger(__name__)

PREFIX = "/fhir/"


class FhirOutcomes:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(PREFIX):
            await self.app(scope, receive, send)
            return
        start: Message | None = None
        started = False
        body = bytearray()

        async def rewrite(message: Message) -> None:
            nonlocal start, started
            if message["type"] == "http.response.start":
                started = True
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

        try:
            await self.app(scope, receive, rewrite)
        except Exception:
            # What no handler turned into an answer (a bug): told as a 500 OperationOutcome,
            # nothing of it said; the trace goes to the log, as Starlette's own handler does.
            log.exception("unhandled error", path=scope["path"])
            if started:
                raise
            text = dump(outcome(500, "an internal error occurred", PROBLEM_BASE + "internal-error"))
            await send(
                {
                    "type": "http.response.start",
                    "status": 500,
                    "headers": [
                        (b"content-type", MEDIA_TYPE.encode()),
                        (b"content-length", str(len(text)).encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": text.encode()})
