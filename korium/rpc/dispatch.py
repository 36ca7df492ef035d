"""What every :class:`korium.rpc.Rpc` implementation shares: settings, handlers, outcomes.

The QUIC endpoint and the simulated one differ only in how frames travel. The server half
(protocol tables, running plain and async handlers under a timeout, turning a result or an
exception into a response frame) and the client half (turning a response frame into bytes or a
typed error) live here once, so the two cannot drift apart.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from korium.errors import (
    ProtocolNotSupportedError,
    RemoteError,
    RequestTooLargeError,
    ResponseTooLargeError,
    RpcError,
    RpcTimeoutError,
)
from korium.identity import Identity
from korium.rpc import MessageHandler, RequestHandler, frames
from korium.rpc.frames import ErrorCode, FrameError

log = logging.getLogger(__name__)

Reply = Callable[[frames.Ok | frames.Error], None]
Spawn = Callable[[Coroutine[Any, Any, None]], None]


@dataclass(frozen=True, slots=True)
class RpcConfig:
    """RPC settings. Times in seconds, sizes in bytes."""

    request_timeout: float = 10.0
    dial_timeout: float = 5.0
    handler_timeout: float = 30.0
    max_connections: int = 1_000
    """Pooled connections (one per peer); the least recently used idle one is closed first."""
    idle_close: float = 120.0
    """A pooled connection without requests for this long is closed."""
    keepalive_interval: float = 15.0
    """Pooled connections quieter than this get a PING (well inside the QUIC idle timeout)."""
    max_request_size: int = frames.MAX_REQUEST_SIZE
    max_response_size: int = frames.MAX_RESPONSE_SIZE
    message_buffer: int = 1024 * 1024
    """Unacknowledged one-way message bytes per connection beyond which ``send_message``
    waits for the peer to catch up (backpressure instead of an unbounded send buffer)."""


def error_frame(code: ErrorCode, message: str) -> frames.Error:
    """An error response, its message cut to what the wire format allows."""
    return frames.Error(code, message[: frames.MAX_ERROR_MESSAGE])


def encode_request(protocol: str, body: bytes, config: RpcConfig, what: str = "request") -> bytes:
    """The request frame, or :class:`RequestTooLargeError` if it is over the limit."""
    frame = frames.encode_request(protocol, body)
    if len(frame) - frames.LENGTH.size > config.max_request_size:
        raise RequestTooLargeError(
            f"{what} of {len(frame)} bytes exceeds the {config.max_request_size}-byte limit: "
            "it was not sent"
        )
    return frame


@contextlib.contextmanager
def request_outcome(
    stats: Counter[str], peer: Identity, protocol: str, limit: float
) -> Iterator[None]:
    """Count a request and turn a timeout inside it into :class:`RpcTimeoutError`."""
    stats["requests_sent"] += 1
    try:
        yield
    except TimeoutError:
        stats["requests_timed_out"] += 1
        raise RpcTimeoutError(
            f"no response from {peer.short}... to {protocol!r} within {limit} s"
        ) from None
    except RpcError:
        stats["requests_failed"] += 1
        raise


def response_body(frame: bytes, config: RpcConfig) -> bytes:
    """The body of a complete response frame; raises the typed error it carries."""
    size = len(frame) - frames.LENGTH.size
    try:
        if size > config.max_response_size:
            limit = config.max_response_size
            raise FrameError(f"frame of {size} bytes exceeds the {limit}-byte limit")
        response = frames.decode_response(frame)
    except FrameError as exc:
        raise frame_error(exc) from None
    if isinstance(response, frames.Ok):
        return response.body
    raise remote_error(response)


def frame_error(exc: FrameError) -> RpcError:
    """The caller's exception for a response frame that is too large or malformed."""
    if "exceeds" in str(exc):
        return ResponseTooLargeError(f"response discarded: {exc}")
    return RemoteError(f"malformed response: {exc}", code=0)


def remote_error(error: frames.Error) -> RpcError:
    """The caller's exception for an error response."""
    if error.code == ErrorCode.UNKNOWN_PROTOCOL:
        return ProtocolNotSupportedError(error.message)
    if error.code == ErrorCode.REQUEST_TOO_LARGE:
        return RequestTooLargeError(f"the peer refused the request: {error.message}")
    if error.code == ErrorCode.RESPONSE_TOO_LARGE:
        return ResponseTooLargeError(f"the peer's response was too large: {error.message}")
    return RemoteError(error.message, code=error.code)


class Dispatcher:
    """Protocol handlers of one node and how a request becomes a response.

    Plain handlers run at once, in the caller's callback (the fast path); async handlers, and
    plain ones that return an awaitable, run as tasks under ``handler_timeout``.
    """

    def __init__(self, config: RpcConfig, stats: Counter[str], spawn: Spawn) -> None:
        self.config = config
        self.stats = stats
        self._spawn = spawn
        self._handlers: dict[str, RequestHandler] = {}
        self._message_handlers: dict[str, MessageHandler] = {}

    def register(self, protocol: str, handler: RequestHandler) -> None:
        """Serve requests for *protocol* (``"korium/dht/1"``...) with *handler*."""
        _check_name(protocol, self._handlers)
        self._handlers[protocol] = handler

    def register_message(self, protocol: str, handler: MessageHandler) -> None:
        """Receive one-way messages for *protocol* with *handler*."""
        _check_name(protocol, self._message_handlers)
        self._message_handlers[protocol] = handler

    def unregister(self, protocol: str) -> None:
        """Stop serving *protocol* (requests get ProtocolNotSupportedError)."""
        self._handlers.pop(protocol, None)
        self._message_handlers.pop(protocol, None)

    # -- requests ---------------------------------------------------------------------------

    def serve(self, peer: Identity, frame: bytes, reply: Reply) -> None:
        """Answer the complete request *frame* from *peer* through *reply* (now or later)."""
        try:
            request = frames.decode_request(frame, self.config.max_request_size)
        except FrameError as exc:
            too_large = "exceeds" in str(exc)
            self.stats["requests_too_large" if too_large else "requests_malformed"] += 1
            code = ErrorCode.REQUEST_TOO_LARGE if too_large else ErrorCode.MALFORMED
            reply(error_frame(code, str(exc)))
            return
        self.stats["requests_served"] += 1
        handler = self._handlers.get(request.protocol)
        if handler is None:
            self.stats["requests_unknown_protocol"] += 1
            message = f"this node does not serve protocol {request.protocol!r}"
            reply(error_frame(ErrorCode.UNKNOWN_PROTOCOL, message))
            return
        try:  # an async handler only creates its coroutine here; the task runs it
            result = handler(peer, request.body)
        except Exception as exc:
            reply(self._handler_failed(request.protocol, exc))
            return
        if inspect.isawaitable(result):
            self._spawn(self._finish(request.protocol, result, reply))
        else:
            reply(self._result(result))

    async def _finish(self, protocol: str, pending: Awaitable[bytes], reply: Reply) -> None:
        deadline = asyncio.timeout(self.config.handler_timeout)
        try:
            async with deadline:
                result = await pending
        except TimeoutError as exc:
            if not deadline.expired():  # the handler's own TimeoutError: a handler error
                reply(self._handler_failed(protocol, exc))
                return
            self.stats["handler_timeouts"] += 1
            message = f"handler did not answer within {self.config.handler_timeout} s"
            reply(error_frame(ErrorCode.HANDLER_TIMEOUT, message))
            return
        except Exception as exc:
            reply(self._handler_failed(protocol, exc))
            return
        reply(self._result(result))

    def _result(self, result: object) -> frames.Ok | frames.Error:
        if not isinstance(result, bytes | bytearray | memoryview):
            self.stats["handler_errors"] += 1
            message = f"handler returned {type(result).__name__}, not bytes"
            return error_frame(ErrorCode.HANDLER_ERROR, message)
        if len(result) > self.config.max_response_size - 64:
            self.stats["responses_too_large"] += 1
            message = f"response of {len(result)} bytes exceeds the limit; not sent"
            return error_frame(ErrorCode.RESPONSE_TOO_LARGE, message)
        return frames.Ok(bytes(result))

    def _handler_failed(self, protocol: str, exc: Exception) -> frames.Error:
        self.stats["handler_errors"] += 1
        log.debug("handler for %r raised", protocol, exc_info=exc)
        return error_frame(ErrorCode.HANDLER_ERROR, f"{type(exc).__name__}: {exc}")

    # -- one-way messages -------------------------------------------------------------------

    def deliver(self, peer: Identity, frame: bytes) -> None:
        """Hand the complete one-way *frame* from *peer* to its handler (or count the drop)."""
        try:
            request = frames.decode_request(frame, self.config.max_request_size)
        except FrameError as exc:
            too_large = "exceeds" in str(exc)
            self.stats["requests_too_large" if too_large else "requests_malformed"] += 1
            return
        handler = self._message_handlers.get(request.protocol)
        if handler is None:
            self.stats["messages_unknown_protocol"] += 1
            return
        self.stats["messages_received"] += 1
        try:
            result = handler(peer, request.body)
        except Exception:
            self.stats["handler_errors"] += 1
            log.exception("message handler for %r raised", request.protocol)
            return
        if inspect.isawaitable(result):
            self._spawn(self._await_message(request.protocol, result))

    async def _await_message(self, protocol: str, pending: Awaitable[None]) -> None:
        try:
            await pending
        except Exception:
            self.stats["handler_errors"] += 1
            log.exception("message handler for %r raised", protocol)


class ServesProtocols:
    """The handler-registration half of :class:`korium.rpc.Rpc`, for owners of a Dispatcher."""

    dispatcher: Dispatcher

    def register(self, protocol: str, handler: RequestHandler) -> None:
        """Serve requests for *protocol* (``"korium/dht/1"``...) with *handler*."""
        self.dispatcher.register(protocol, handler)

    def unregister(self, protocol: str) -> None:
        """Stop serving *protocol* (requests get ProtocolNotSupportedError)."""
        self.dispatcher.unregister(protocol)

    def register_message(self, protocol: str, handler: MessageHandler) -> None:
        """Receive one-way messages for *protocol* with *handler*."""
        self.dispatcher.register_message(protocol, handler)


def _check_name(protocol: str, table: Mapping[str, object]) -> None:
    if not 0 < len(protocol) <= frames.MAX_PROTOCOL_NAME:
        raise ValueError(f"protocol names are 1 to {frames.MAX_PROTOCOL_NAME} characters")
    if protocol in table:
        raise ValueError(f"protocol {protocol!r} already has a handler")
