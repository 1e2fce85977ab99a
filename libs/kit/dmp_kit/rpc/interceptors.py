"""Server interceptors: request context and logging, auth (deny by default), error mapping."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias, cast

import grpc
import structlog
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from pymongo.errors import ConnectionFailure, NetworkTimeout, ServerSelectionTimeoutError

from dmp_kit.app_scopes import app_may_call
from dmp_kit.auth import Principal, TokenVerifier, bearer_token, current_principal
from dmp_kit.context import current_deadline, current_token, current_trace, new_trace
from dmp_kit.errors import (
    DmpError,
    Internal,
    InvalidArgument,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
    Unimplemented,
)
from dmp_kit.logging import get_logger
from dmp_kit.metrics import RPC_REQUESTS, RPC_SECONDS
from dmp_kit.rpc.status import DETAILS_KEY, error_from_rpc, status_details

log = get_logger(__name__)
# Generic only in the type stubs, hence the string aliases.
Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"
Around: TypeAlias = "Callable[[Callable[[], Awaitable[Any]], str, Context], Awaitable[Any]]"

# Always public: health checks and reflection carry no patient data.
ALWAYS_PUBLIC_PREFIXES = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def _metadata(context: Context) -> dict[str, str]:
    return {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}


def _wrap(handler: Handler, method: str, around: Around) -> Handler:
    """Runs `around` over a handler whose response is a single message (unary or client-stream)."""
    if handler.unary_unary:
        behaviour, make = handler.unary_unary, grpc.unary_unary_rpc_method_handler
    elif handler.stream_unary:
        behaviour, make = handler.stream_unary, grpc.stream_unary_rpc_method_handler
    else:
        return handler
    inner = cast(Callable[[Any, Context], Awaitable[Any]], behaviour)

    async def wrapped(request: Any, context: Context) -> Any:
        return await around(lambda: inner(request, context), method, context)

    return make(wrapped, handler.request_deserializer, handler.response_serializer)


class _Interceptor(grpc.aio.ServerInterceptor):
    # By method: the handler last wrapped and its wrapping. The server finds the same handler
    # for every call of a method, so each is wrapped once, not at every call (a handler and
    # its closure per interceptor and call).
    def __init__(self) -> None:
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method: str = handler_call_details.method
        held = self._wrapped.get(method)
        if held is not None and held[0] is handler:
            return held[1]
        wrapped = self.wrap(handler, method)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def wrap(self, handler: Handler, method: str) -> Handler:
        return _wrap(handler, method, self.around)

    async def around(
        self,
        call: Callable[[], Awaitable[Any]],
        method: str,
        context: Context,
    ) -> Any:
        return await call()


class RequestContextInterceptor(_Interceptor):
    """Binds request id, trace and deadline; logs each call with its code and duration."""

    async def around(
        self,
        call: Callable[[], Awaitable[Any]],
        method: str,
        context: Context,
    ) -> Any:
        md = _metadata(context)
        trace = new_trace(md.get("x-request-id"), md.get("traceparent"))
        current_trace.set(trace)
        remaining = context.time_remaining()
        current_deadline.set(time.monotonic() + remaining if remaining is not None else None)
        structlog.contextvars.bind_contextvars(
            request_id=trace.request_id, trace_id=trace.trace_id, rpc=method
        )
        started = time.perf_counter()
        try:
            return await call()
        finally:
            code = context.code() if hasattr(context, "code") else None
            status = (code or grpc.StatusCode.OK).name
            elapsed = time.perf_counter() - started
            RPC_REQUESTS.labels(method, status).inc()
            RPC_SECONDS.labels(method).observe(elapsed)
            log.info("rpc", grpc_status=status, ms=round(elapsed * 1000, 2))
            structlog.contextvars.unbind_contextvars("request_id", "trace_id", "rpc")


class ErrorInterceptor(_Interceptor):
    """DmpError → its status and details; database faults → UNAVAILABLE; bugs → INTERNAL."""

    async def around(
        self,
        call: Callable[[], Awaitable[Any]],
        method: str,
        context: Context,
    ) -> Any:
        try:
            return await call()
        except grpc.aio.AbortError:
            raise
        except DmpError as err:
            await _abort(context, err)
        except grpc.aio.AioRpcError as exc:
            await _abort(context, error_from_rpc(exc))
        except NotImplementedError:
            # What generated servicers raise for a method of the contract not written yet.
            await _abort(context, Unimplemented("this method is not implemented yet"))
        except (ConnectionFailure, ServerSelectionTimeoutError, NetworkTimeout) as exc:
            log.warning("database_unavailable", error=type(exc).__name__)
            await _abort(context, Unavailable("the database is unavailable"))
        except Exception:
            log.exception("unhandled_error")
            await _abort(context, Internal("an internal error occurred"))
        raise AssertionError("unreachable: abort raises")


async def _abort(context: Context, err: DmpError) -> None:
    await context.abort(
        err.grpc_code, err.detail, trailing_metadata=((DETAILS_KEY, status_details(err)),)
    )


def nul_field(message: Message, prefix: str = "") -> str | None:
    """The path of the first text field of `message` holding a NUL character, if any."""
    if not prefix and b"\x00" not in message.SerializeToString():
        # A NUL in any text is a zero byte on the wire; most requests hold none at all, and
        # serialising (in C) is much cheaper than walking a large message's fields.
        return None
    for field, value in message.ListFields():
        name = f"{prefix}{field.name}"
        if field.type == FieldDescriptor.TYPE_STRING:
            if not field.is_repeated:
                value = [value]
            for i, text in enumerate(value):
                if "\x00" in text:
                    return f"{name}.{i}" if field.is_repeated else name
        elif field.message_type is not None and field.message_type.GetOptions().map_entry:
            for key, item in value.items():
                if "\x00" in str(key) or (isinstance(item, str) and "\x00" in item):
                    return f"{name}.{key}"
                if isinstance(item, Message) and (found := nul_field(item, f"{name}.{key}.")):
                    return found
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            children = (
                [(f"{name}.{i}.", item) for i, item in enumerate(value)]
                if field.is_repeated
                else [(f"{name}.", value)]
            )
            for where, item in children:
                if found := nul_field(item, where):
                    return found
    return None


class TextInterceptor(_Interceptor):
    """Refuses a request whose text holds a NUL character: no text of the platform may hold
    one, and PostgreSQL (under FerretDB) can neither store nor compare it."""

    def wrap(self, handler: Handler, method: str) -> Handler:
        if not handler.unary_unary:
            return handler
        inner = cast(Callable[[Any, Context], Awaitable[Any]], handler.unary_unary)

        async def wrapped(request: Any, context: Context) -> Any:
            if isinstance(request, Message) and (field := nul_field(request)):
                await _abort(
                    context, InvalidArgument("text may not contain a NUL character", field=field)
                )
            return await inner(request, context)

        return grpc.unary_unary_rpc_method_handler(
            wrapped, handler.request_deserializer, handler.response_serializer
        )


class AuthInterceptor(_Interceptor):
    """Every method needs a valid access token, except those declared public."""

    def __init__(self, verifier: TokenVerifier, public_methods: frozenset[str]) -> None:
        super().__init__()
        self._verifier = verifier
        self._public = public_methods

    def is_public(self, method: str) -> bool:
        return method in self._public or method.startswith(ALWAYS_PUBLIC_PREFIXES)

    def wrap(self, handler: Handler, method: str) -> Handler:
        if self.is_public(method):
            return handler
        if handler.unary_stream or handler.stream_stream:
            # None of our services stream responses; refuse rather than serve unchecked.
            return _refuse_streaming(handler)
        return _wrap(handler, method, self.around)

    async def around(
        self,
        call: Callable[[], Awaitable[Any]],
        method: str,
        context: Context,
    ) -> Any:
        principal = await self.authenticate(_metadata(context))
        if principal.app and not app_may_call(method, principal.scopes):
            raise PermissionDenied("an app's token does not reach this", slug="insufficient-scope")
        current_principal.set(principal)
        current_token.set(principal.token)
        structlog.contextvars.bind_contextvars(caller_kind=principal.kind)
        try:
            return await call()
        finally:
            structlog.contextvars.unbind_contextvars("caller_kind")

    async def authenticate(self, metadata: dict[str, str]) -> Principal:
        return await self._verifier.verify(bearer_token(metadata.get("authorization")))


def _refuse_streaming(handler: Handler) -> Handler:
    async def refuse(_request: Any, context: Context) -> AsyncIterator[Any]:
        await _abort(context, Unauthenticated("streaming methods are not exposed"))
        yield None

    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(
            refuse, handler.request_deserializer, handler.response_serializer
        )
    return grpc.stream_stream_rpc_method_handler(
        refuse, handler.request_deserializer, handler.response_serializer
    )
