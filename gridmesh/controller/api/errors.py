"""Mapping errors to gRPC statuses at the edge, so that no traceback ever reaches a client."""

from __future__ import annotations

import functools
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc

from gridmesh.controller.errors import GridError

log = logging.getLogger("gridmesh.controller.api")

Req = TypeVar("Req")
Resp = TypeVar("Resp")
Self = TypeVar("Self")


async def abort_for(context: grpc.aio.ServicerContext[Any, Any], exc: BaseException, method: str) -> None:
    """Aborts the call with the status that fits ``exc``; unexpected errors are logged, not shown."""
    if isinstance(exc, GridError):
        await context.abort(grpc.StatusCode[exc.code], str(exc))
    ref = secrets.token_hex(4)
    log.error("internal error in %s (ref %s)", method, ref, exc_info=exc, extra={"ref": ref})
    await context.abort(grpc.StatusCode.INTERNAL, f"internal error (ref {ref}); the controller log has the details")


def unary(
    fn: Callable[[Self, Req, grpc.aio.ServicerContext[Any, Any]], Awaitable[Resp]],
) -> Callable[[Self, Req, grpc.aio.ServicerContext[Any, Any]], Awaitable[Resp]]:
    @functools.wraps(fn)
    async def wrapper(self: Self, request: Req, context: grpc.aio.ServicerContext[Any, Any]) -> Resp:
        try:
            return await fn(self, request, context)
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await abort_for(context, exc, fn.__name__)
            raise AssertionError("unreachable: abort raises") from exc

    return wrapper


def streaming(
    fn: Callable[[Self, Req, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[Resp]],
) -> Callable[[Self, Req, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[Resp]]:
    @functools.wraps(fn)
    async def wrapper(self: Self, request: Req, context: grpc.aio.ServicerContext[Any, Any]) -> AsyncIterator[Resp]:
        try:
            async for item in fn(self, request, context):
                yield item
        except grpc.aio.AbortError:
            raise
        except Exception as exc:
            await abort_for(context, exc, fn.__name__)

    return wrapper
