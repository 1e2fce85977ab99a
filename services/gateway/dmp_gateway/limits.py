"""Request bodies: their size, enforced on the bytes received (a chunked body has no
Content-Length), and their media type (JSON, but where a route declares another).

The body is read here, up to the limit, before the app sees it: FastAPI turns any error raised
while it reads a body into a generic 400, so the limit cannot be signalled from inside; and it
would try to read a JSON body whatever its declared type.
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
        not_json: tuple[re.Pattern[str], ...] = (),
    ) -> None:
        self.app = app
        self.default = max_bytes
        self.larger = larger
        # routes that read their body as a stream and bound it themselves (ingest batches)
        self.streamed = streamed
        # routes whose body is not JSON (a form, CSV): they check their own media type
        self.not_json = (*streamed, *not_json)

    def limit(self, path: str, headers: dict[bytes, bytes]) -> int:
        """The larger limits are for callers who present a token: a body that large is not
        held in memory for someone who has not even said who they are (the token itself is
        checked afterwards, by the route)."""
        if b"authorization" not in headers:
            return self.default
        return next(
            (size for pattern, size in self.larger if pattern.fullmatch(path)), self.default
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or any(p.fullmatch(scope["path"]) for p in self.streamed):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        limit = self.limit(scope["path"], headers)
        declared = headers.get(b"content-length")
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
        if body and not self._json(scope):
            await self._unsupported(scope, receive, send)
            return
        await self.app(
            scope, _replay([{"type": "http.request", "body": bytes(body)}], receive), send
        )

    def _json(self, scope: Scope) -> bool:
        """The body is declared JSON, or the route takes another kind."""
        if any(p.fullmatch(scope["path"]) for p in self.not_json):
            return True
        declared = dict(scope["headers"]).get(b"content-type", b"").decode("latin-1")
        media = declared.split(";")[0].strip().lower()
        return media == "application/json" or media.endswith("+json")

    async def _unsupported(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = problems.problem(
            415,
            "unsupported-media-type",
            "Unsupported media type",
            "the body must be application/json",
        )
        await response(scope, receive, send)

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
