"""Request body limit, enforced on the bytes received (a chunked body has no Content-Length).

The body is read here, up to the limit, before the app sees it: FastAPI turns any error raised
while it reads a body into a generic 400, so the limit cannot be signalled from inside.
"""

from __future__ import annotations

import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dmp_gateway import problems


class BodyLimit:
    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int,
        larger: tuple[tuple[re.Pattern[str], int], ...] = (),
        streamed: tuple[re.Pattern[str], ...] = (),
    ) -> None:
        self.app = app
        self.default = max_bytes
        self.larger = larger
        # routes that read their body as a stream and bound it themselves (ingest batches)
        self.streamed = streamed

    def limit(self, path: str) -> int:
        return next(
            (size for pattern, size in self.larger if pattern.fullmatch(path)), self.default
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or any(p.fullmatch(scope["path"]) for p in self.streamed):
            await self.app(scope, receive, send)
            return
        limit = self.limit(scope["path"])
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await self._refuse(scope, receive, send, limit)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message]), send)  # the client went away
                return
            body += message.get("body", b"")
            if len(body) > limit:
                await self._refuse(scope, receive, send, limit)
                return
            if not message.get("more_body", False):
                break
        await self.app(
            scope, _replay([{"type": "http.request", "body": bytes(body)}], receive), send
        )

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, limit: int) -> None:
        response = problems.problem(
            413,
            "payload-too-large",
            "Payload too large",
            f"the body may not exceed {limit} bytes",
        )
        await response(scope, receive, send)


def _replay(messages: list[Message], then: Receive | None = None) -> Receive:
    async def receive() -> Message:
        if messages:
            return messages.pop(0)
        if then is not None:
            return await then()
        return {"type": "http.disconnect"}

    return receive
