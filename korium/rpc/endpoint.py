"""Request/response and one-way messages over pooled QUIC connections.

Each request has its own bidirectional stream, carrying one frame each way
(:mod:`korium.rpc.frames`). One-way messages share one unidirectional stream per connection and
direction, opened by the first message and kept for the connection's life, one frame per
message: a stream per message stalls bursts on the peer's stream credit (benchmarks/messages.py
measures both), and on one stream messages to a peer arrive in the order they were sent. A
receiver takes any number of frames from each unidirectional stream its peer opens and hands
each to its handler as soon as it is whole; a sender whose stream the peer stopped opens a new
one.

Connections are pooled per peer identity (LRU, bounded), dialled concurrently (one slow or dead
peer never holds up requests to others), kept alive with PINGs while pooled and closed after a
period without requests.

When two nodes dial each other at the same moment both connections complete; the one dialled
by the smaller identity is kept and the other is *retired*: its dialer closes it once no request
is in flight on it, with :data:`CLOSE_DUPLICATE`. A request that meets such a graceful close
before any response arrived was never handled (the closing side had no open stream), so it is
retried once on the kept connection: the swap is invisible to callers.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Final

from korium.errors import (
    ConnectionLostError,
    PeerUnreachableError,
    RequestTooLargeError,
    RpcError,
    RpcTimeoutError,
)
from korium.identity import Identity
from korium.rpc import frames
from korium.rpc.dispatch import (
    Dispatcher,
    RpcConfig,
    ServesProtocols,
    encode_request,
    error_frame,
    frame_error,
    request_outcome,
    response_body,
)
from korium.rpc.frames import LENGTH, ErrorCode, FrameBuffer, FrameError, FrameSplitter
from korium.transport.addresses import Address, is_smart_addr
from korium.transport.connection import PeerConnection
from korium.transport.smartsock import SmartSock

__all__ = ["RpcConfig", "RpcEndpoint"]

log = logging.getLogger(__name__)

AddressResolver = Callable[[Identity], Awaitable[list[Address]]]
DialFallback = Callable[[Identity, Exception], Awaitable[bool]]
"""``fallback(peer, error)`` after a failed dial: True once another way (a relay) is set up."""

CLOSE_IDLE: Final = 0x10
CLOSE_DUPLICATE: Final = 0x11
CLOSE_SHUTDOWN: Final = 0x12
GRACEFUL_CLOSES: Final = frozenset({CLOSE_IDLE, CLOSE_DUPLICATE})
"""Close codes sent only by a side with no stream open: a request that met one never ran."""
STREAM_CANCELLED: Final = 0x1
ADDRESS_BOOK_SIZE: Final = 10_000
DRAIN_POLL_S: Final = 0.002
"""How often a backpressured ``send_message`` looks whether the peer caught up."""


class _Retry(Exception):
    """The request met a graceful close before any answer: send it again."""


@dataclass(slots=True)
class _Call:
    future: asyncio.Future[bytes]
    buffer: FrameBuffer
    deadline: float
    answered: bool = False


@dataclass(slots=True)
class _Incoming:
    buffer: FrameBuffer
    refused: bool = False


class RpcEndpoint(ServesProtocols):
    """Named protocols, the connection pool, and every request in flight (a StreamHandler)."""

    def __init__(
        self,
        identity: Identity,
        config: RpcConfig | None = None,
        *,
        resolve: AddressResolver | None = None,
        fallback: DialFallback | None = None,
        on_peer_connected: Callable[[Identity], None] | None = None,
        on_peer_disconnected: Callable[[Identity], None] | None = None,
    ) -> None:
        self.identity = identity
        self.config = config or RpcConfig()
        self.sock: SmartSock | None = None
        self.stats: Counter[str] = Counter()
        self._resolve = resolve
        self._fallback = fallback
        self._on_connected = on_peer_connected
        self._on_disconnected = on_peer_disconnected
        self.dispatcher = Dispatcher(self.config, self.stats, self._spawn)
        self._pool: OrderedDict[Identity, PeerConnection] = OrderedDict()
        self._dialing: dict[Identity, tuple[asyncio.Future[PeerConnection], list[Address]]] = {}
        self._calls: dict[PeerConnection, dict[int, _Call]] = {}
        self._incoming: dict[PeerConnection, dict[int, _Incoming]] = {}
        self._message_streams: dict[PeerConnection, int] = {}
        """The stream each connection's outbound one-way messages go on."""
        self._messages_in: dict[PeerConnection, dict[int, FrameSplitter | None]] = {}
        """Peers' open message streams; None: refused, the rest of it is ignored."""
        self._last_used: dict[PeerConnection, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._expiry: asyncio.TimerHandle | None = None
        self._address_book: OrderedDict[Identity, list[Address]] = OrderedDict()
        """Where recently connected peers were reached (LRU, bounded), for redialling."""

    # -- protocols --------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- lifecycle --------------------------------------------------------------------------

    def start(self, sock: SmartSock) -> None:
        self.sock = sock
        self._sweeper = asyncio.create_task(self._sweep(), name="korium-rpc-sweeper")

    async def close(self) -> None:
        """Stop serving and fail everything in flight."""
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._expiry is not None:
            self._expiry.cancel()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for future, _ in self._dialing.values():
            if not future.done():
                future.set_exception(ConnectionLostError("node closed"))
                future.exception()

    # -- client -----------------------------------------------------------------------------

    async def request(
        self,
        peer: Identity,
        protocol: str,
        body: bytes,
        *,
        addresses: list[Address] | None = None,
        timeout: float | None = None,
    ) -> bytes:
        """Send a request and wait for the response body.

        :raises RpcTimeoutError, PeerUnreachableError, IdentityMismatchError,
            ProtocolNotSupportedError, RemoteError, RequestTooLargeError,
            ResponseTooLargeError, ConnectionLostError:
        """
        try:
            frame = encode_request(protocol, body, self.config)
        except RequestTooLargeError:
            self.stats["requests_too_large"] += 1
            raise
        limit = self.config.request_timeout if timeout is None else timeout
        deadline = asyncio.get_running_loop().time() + limit
        with request_outcome(self.stats, peer, protocol, limit):
            for attempt in (0, 1):
                conn = self._pool.get(peer)  # the hot path: a live pooled connection
                if conn is None or conn.closed or conn.retiring:
                    async with asyncio.timeout_at(deadline):
                        conn = await self.connect(peer, addresses)
                else:
                    self._pool.move_to_end(peer)  # recently used: evicted last
                try:
                    return await self._call(conn, frame, deadline)
                except _Retry:
                    self.stats["requests_retried"] += 1
                    if attempt:
                        raise ConnectionLostError(
                            f"connection to {peer.short}... closed twice"
                        ) from None
        raise AssertionError("unreachable")

    async def _call(self, conn: PeerConnection, frame: bytes, deadline: float) -> bytes:
        loop = asyncio.get_running_loop()
        quic = conn.quic
        stream_id = quic.get_next_available_stream_id()
        future: asyncio.Future[bytes] = loop.create_future()
        call = _Call(future, FrameBuffer(self.config.max_response_size), deadline)
        self._calls.setdefault(conn, {})[stream_id] = call
        conn.open_streams.add(stream_id)
        self._last_used[conn] = loop.time()
        quic.send_stream_data(stream_id, frame, end_stream=True)
        conn.transmit_soon()
        if self._expiry is None:
            self._expiry = loop.call_at(deadline, self._expire_calls)
        elif deadline < self._expiry.when():
            self._expiry.cancel()
            self._expiry = loop.call_at(deadline, self._expire_calls)
        try:
            return await future
        except (asyncio.CancelledError, TimeoutError):
            if not conn.closed and not call.answered:
                quic.reset_stream(stream_id, STREAM_CANCELLED)
                quic.stop_stream(stream_id, STREAM_CANCELLED)
                conn.transmit_soon()
            raise
        finally:
            calls = self._calls.get(conn)
            if calls is not None:
                calls.pop(stream_id, None)
            conn.open_streams.discard(stream_id)
            self._retire_if_idle(conn)

    def _expire_calls(self) -> None:
        """Fail calls past their deadline; one timer for all requests, not one each."""
        self._expiry = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        earliest: float | None = None
        for calls in self._calls.values():
            for call in calls.values():
                if call.future.done():
                    continue
                if call.deadline <= now:
                    call.future.set_exception(TimeoutError())
                elif earliest is None or call.deadline < earliest:
                    earliest = call.deadline
        if earliest is not None:
            self._expiry = loop.call_at(earliest, self._expire_calls)

    async def send_message(
        self, peer: Identity, protocol: str, body: bytes, *, addresses: list[Address] | None = None
    ) -> None:
        """Send a one-way message (no response; delivery is not confirmed).

        Messages to *peer* over one connection arrive in the order they were sent.
        """
        frame = encode_request(protocol, body, self.config, "message")
        conn = self._pool.get(peer)  # the hot path: a live pooled connection
        if conn is None or conn.closed or conn.retiring:
            try:
                async with asyncio.timeout(self.config.request_timeout):
                    conn = await self.connect(peer, addresses)
            except TimeoutError:
                raise RpcTimeoutError(
                    f"no connection to {peer.short}... within {self.config.request_timeout} s"
                ) from None
        else:
            self._pool.move_to_end(peer)
        self._write_message(conn, frame)
        conn.transmit_soon()
        self._last_used[conn] = asyncio.get_running_loop().time()
        self.stats["messages_sent"] += 1
        if self._unacked(conn) > self.config.message_buffer:
            await self._drain(conn, peer)

    def _unacked(self, conn: PeerConnection) -> int:
        """Bytes written to the connection's message stream and not yet acknowledged."""
        stream_id = self._message_streams.get(conn)
        stream = None if stream_id is None else conn.quic._streams.get(stream_id)
        if stream is None:
            return 0
        return stream.sender._buffer_stop - stream.sender._buffer_start

    async def _drain(self, conn: PeerConnection, peer: Identity) -> None:
        """Wait until the peer has acknowledged half the message buffer (it reads too slowly,
        or the path is congested); RpcTimeoutError if that takes ``request_timeout``."""
        self.stats["messages_backpressured"] += 1
        low = self.config.message_buffer // 2
        try:
            async with asyncio.timeout(self.config.request_timeout):
                # aioquic reports no "acknowledged" event to wait on: poll, only when blocked
                while not conn.closed and self._unacked(conn) > low:  # noqa: ASYNC110
                    await asyncio.sleep(DRAIN_POLL_S)
        except TimeoutError:
            raise RpcTimeoutError(
                f"{peer.short}... has not acknowledged {self._unacked(conn)} bytes of messages "
                f"within {self.config.request_timeout} s"
            ) from None

    def _write_message(self, conn: PeerConnection, frame: bytes) -> None:
        """Append *frame* to the connection's message stream, opening one if needed."""
        quic = conn.quic
        stream_id = self._message_streams.get(conn)
        if stream_id is not None:
            try:
                quic.send_stream_data(stream_id, frame, end_stream=False)
                return
            except (RuntimeError, ValueError):  # the peer stopped the stream: use a new one
                log.debug("peer %s stopped message stream %d", conn.peer, stream_id)
        stream_id = quic.get_next_available_stream_id(is_unidirectional=True)
        quic.send_stream_data(stream_id, frame, end_stream=False)
        self._message_streams[conn] = stream_id
        self.stats["message_streams_opened"] += 1

    async def connect(
        self, peer: Identity, addresses: list[Address] | None = None
    ) -> PeerConnection:
        """The pooled connection to *peer*, dialling one if needed.

        Addresses: those given, else what the resolver (the DHT) finds, else the addresses
        the node has seen the peer use.
        """
        if peer == self.identity:
            raise PeerUnreachableError("a node cannot connect to itself")
        conn = self._pool.get(peer)
        if conn is not None and not conn.closed and not conn.retiring:
            self._pool.move_to_end(peer)
            return conn
        dialing = self._dialing.get(peer)
        if dialing is not None and (not addresses or set(addresses) <= set(dialing[1])):
            return await asyncio.shield(dialing[0])
        # no dial in flight, or the caller knows addresses it does not try: dial (again)
        pending: asyncio.Future[PeerConnection] = asyncio.get_running_loop().create_future()
        self._dialing[peer] = (pending, list(addresses or []))
        self._spawn(self._dial_or_fall_back(peer, addresses, pending))
        return await asyncio.shield(pending)

    async def _dial_or_fall_back(
        self,
        peer: Identity,
        addresses: list[Address] | None,
        result: asyncio.Future[PeerConnection],
    ) -> None:
        """Dial; if that fails, let plugins open another way (a relay), then dial once more."""
        first: asyncio.Future[PeerConnection] = asyncio.get_running_loop().create_future()
        await self._dial(peer, addresses, first)
        error = first.exception()
        if isinstance(error, PeerUnreachableError) and self._fallback is not None:
            self.stats["dial_fallbacks"] += 1
            try:
                opened = await self._fallback(peer, error)
            except PeerUnreachableError as exc:  # says what else was tried: more to the point
                error, opened = exc, False
            except Exception as exc:  # a plugin's failure must not hide the dial's error
                log.warning("dial fallback for %s failed: %s", peer.short, exc)
                opened = False
            if opened:
                await self._dial(peer, addresses, result)
                return
        if error is None:
            result.set_result(first.result())
        else:
            result.set_exception(error)
            result.exception()
        if self._dialing.get(peer, (None,))[0] is result:
            del self._dialing[peer]

    async def _dial(
        self,
        peer: Identity,
        addresses: list[Address] | None,
        result: asyncio.Future[PeerConnection],
    ) -> None:
        try:
            assert self.sock is not None
            relayed = [c.path for c in self.sock.paths.candidates(peer) if c.path.relayed]
            try:
                targets = addresses or await self._addresses_for(peer)
            except PeerUnreachableError:
                if not relayed:
                    raise
                targets = []  # reachable only through a relay the relay plugin set up
            if not targets and not relayed:
                raise PeerUnreachableError(f"no address known for {peer.short}...")
            conn = self.sock.dial(peer, targets, relayed)
            try:
                async with asyncio.timeout(self.config.dial_timeout):
                    await asyncio.shield(conn.established)
            except TimeoutError:
                conn.abort("dial timed out")
                shown = ", ".join([f"{h}:{p}" for h, p in targets] + ["a relay"] * bool(relayed))
                raise PeerUnreachableError(
                    f"no answer from {peer.short}... at {shown} within {self.config.dial_timeout} s"
                ) from None
            pooled = self._pool.get(peer)
            result.set_result(pooled if pooled is not None and not pooled.closed else conn)
        except BaseException as exc:
            if not result.done():
                result.set_exception(exc)
                result.exception()
        finally:
            if self._dialing.get(peer, (None,))[0] is result:
                del self._dialing[peer]

    async def _addresses_for(self, peer: Identity) -> list[Address]:
        if self._resolve is not None:
            found = await self._resolve(peer)
            if found:
                return found
        assert self.sock is not None
        known = [c.path.address for c in self.sock.paths.candidates(peer) if not c.path.relayed]
        if known:
            return known
        if peer in self._address_book:
            return self._address_book[peer]
        raise PeerUnreachableError(
            f"no address known for {peer.short}...: pass addresses, bootstrap, or install a "
            "discovery plugin (korium[dht])"
        )

    # -- StreamHandler ----------------------------------------------------------------------

    def stream_data(self, conn: PeerConnection, stream_id: int, data: bytes, end: bool) -> None:
        local = (stream_id & 1) == (0 if conn.quic._is_client else 1)
        if local:
            call = self._calls.get(conn, {}).get(stream_id)
            if call is not None and not call.answered:
                self._response_data(conn, stream_id, call, data, end)
            return
        if stream_id & 2:
            self._message_data(conn, stream_id, data, end)
            return
        incoming = self._incoming.setdefault(conn, {})
        state = incoming.get(stream_id)
        if state is None and end and conn.peer is not None:
            # the whole request in one piece (the common case): no buffering
            self._last_used[conn] = asyncio.get_running_loop().time()
            conn.open_streams.add(stream_id)
            reply = functools.partial(self._respond, conn, stream_id)
            self.dispatcher.serve(conn.peer, data, reply)
            return
        if state is None:
            state = incoming[stream_id] = _Incoming(FrameBuffer(self.config.max_request_size))
            conn.open_streams.add(stream_id)
        if not state.refused:
            try:
                state.buffer.feed(data)
            except FrameError as exc:
                state.refused = True
                too_large = "exceeds" in str(exc)
                self.stats["requests_too_large" if too_large else "requests_malformed"] += 1
                code = ErrorCode.REQUEST_TOO_LARGE if too_large else ErrorCode.MALFORMED
                self._respond(conn, stream_id, error_frame(code, str(exc)))
                conn.quic.stop_stream(stream_id, STREAM_CANCELLED)  # tell the sender to stop
                conn.transmit_soon()
        if end:
            del incoming[stream_id]
            if not state.refused:
                self._dispatch(conn, stream_id, state)

    def _message_data(self, conn: PeerConnection, stream_id: int, data: bytes, end: bool) -> None:
        """Data on a peer's unidirectional stream: deliver each message as soon as it is whole.

        The stream counts as open (holding off idle and duplicate closes) only while a
        message on it is incomplete.
        """
        peer = conn.peer
        if peer is None:  # cannot happen: streams open only after the handshake
            return
        streams = self._messages_in.get(conn)
        if streams is None:
            streams = self._messages_in[conn] = {}
        if stream_id in streams:
            splitter = streams[stream_id]
            if splitter is None:  # refused: ignore the rest
                if end:
                    del streams[stream_id]
                return
        elif (
            end
            and len(data) >= LENGTH.size
            and LENGTH.unpack_from(data)[0] == len(data) - LENGTH.size
        ):
            # a stream of exactly one message, then FIN: no buffering, no copy
            self._last_used[conn] = asyncio.get_running_loop().time()
            self.dispatcher.deliver(peer, data)
            return
        else:
            splitter = streams[stream_id] = FrameSplitter(self.config.max_request_size)
        try:
            complete = splitter.feed(data)
        except FrameError as exc:
            self._refuse_messages(conn, stream_id, streams, exc, end)
            return
        if complete:
            self._last_used[conn] = asyncio.get_running_loop().time()
            deliver = self.dispatcher.deliver
            for frame in complete:  # a malformed one is counted and dropped alone
                deliver(peer, frame)
        if end:
            try:
                splitter.finish()
            except FrameError as exc:
                self._refuse_messages(conn, stream_id, streams, exc, end)
                return
            del streams[stream_id]
        if splitter.pending and not end:
            conn.open_streams.add(stream_id)
        else:
            conn.open_streams.discard(stream_id)
            self._retire_if_idle(conn)

    def _refuse_messages(
        self,
        conn: PeerConnection,
        stream_id: int,
        streams: dict[int, FrameSplitter | None],
        exc: FrameError,
        end: bool,
    ) -> None:
        """A frame over the limit, or one cut short by FIN: the stream carries no more."""
        too_large = "exceeds" in str(exc)
        self.stats["requests_too_large" if too_large else "requests_malformed"] += 1
        conn.open_streams.discard(stream_id)
        if end:
            del streams[stream_id]
            return
        streams[stream_id] = None
        conn.quic.stop_stream(stream_id, STREAM_CANCELLED)  # tell the sender to stop sending
        conn.transmit_soon()

    def _response_data(
        self, conn: PeerConnection, stream_id: int, call: _Call, data: bytes, end: bool
    ) -> None:
        future = call.future
        if end and call.buffer.received == 0:  # the whole response in one piece
            call.answered = True
            if not future.done():
                try:
                    future.set_result(response_body(data, self.config))
                except RpcError as exc:
                    future.set_exception(exc)
            return
        try:
            call.buffer.feed(data)
            if not end:
                return
            frame = call.buffer.frame()
        except FrameError as exc:
            call.answered = True
            if not future.done():
                future.set_exception(frame_error(exc))
            if not end:
                conn.quic.stop_stream(stream_id, STREAM_CANCELLED)
                conn.transmit_soon()
            return
        call.answered = True
        if future.done():
            return
        try:
            future.set_result(response_body(frame, self.config))
        except RpcError as exc:
            future.set_exception(exc)

    def stream_reset(self, conn: PeerConnection, stream_id: int) -> None:
        call = self._calls.get(conn, {}).get(stream_id)
        if call is not None and not call.future.done():
            call.future.set_exception(ConnectionLostError("the peer reset the request stream"))
        incoming = self._incoming.get(conn, {})
        messages = self._messages_in.get(conn, {})
        if stream_id in incoming or stream_id in messages:
            incoming.pop(stream_id, None)
            messages.pop(stream_id, None)
            conn.open_streams.discard(stream_id)
        peer_bidi = not stream_id & 2 and (stream_id & 1) != (0 if conn.quic._is_client else 1)
        if peer_bidi and not conn.closed:
            # finish our half too, or aioquic keeps the stream and its credit forever
            try:
                conn.quic.reset_stream(stream_id, STREAM_CANCELLED)
            except Exception:  # already finished (answered before the reset arrived)
                return
            conn.transmit_soon()

    def connection_established(self, conn: PeerConnection) -> None:
        peer = conn.peer
        assert peer is not None
        existing = self._pool.get(peer)
        first = existing is None or existing.closed
        if first:
            self._pool[peer] = conn
            self._enforce_pool_limit()
        else:
            assert existing is not None
            keep, retire = (conn, existing) if self._preferred(conn) else (existing, conn)
            self._pool[peer] = keep
            retire.retiring = True  # new messages go to the kept one; sent ones still arrive
            self.stats["duplicate_connections"] += 1
            self._retire_if_idle(retire)
        self._pool.move_to_end(peer)
        self._last_used[conn] = asyncio.get_running_loop().time()
        direct = [] if conn.remote_session is not None else [conn.remote]
        self._remember(peer, conn.dial_addresses if conn.dialed else direct)
        if first and self._on_connected is not None:
            self._on_connected(peer)

    def connection_lost(self, conn: PeerConnection, reason: str, code: int) -> None:
        retry = code in GRACEFUL_CLOSES
        for call in self._calls.pop(conn, {}).values():
            if not call.future.done():
                if retry and call.buffer.received == 0:
                    call.future.set_exception(_Retry())
                else:
                    call.future.set_exception(ConnectionLostError(f"connection lost: {reason}"))
        self._incoming.pop(conn, None)
        self._messages_in.pop(conn, None)
        self._message_streams.pop(conn, None)
        self._last_used.pop(conn, None)
        peer = conn.peer
        if peer is None or self._pool.get(peer) is not conn:
            return
        del self._pool[peer]
        other = (
            next((c for c in self.sock.connections if c.peer == peer and not c.closed), None)
            if self.sock
            else None
        )
        if other is not None:
            other.retiring = False
            self._pool[peer] = other
        elif self._on_disconnected is not None:
            self._on_disconnected(peer)

    # -- server -----------------------------------------------------------------------------

    def _dispatch(self, conn: PeerConnection, stream_id: int, state: _Incoming) -> None:
        peer = conn.peer
        if peer is None:  # cannot happen: streams open only after the handshake
            return
        self._last_used[conn] = asyncio.get_running_loop().time()
        try:
            frame = state.buffer.frame()
        except FrameError as exc:
            self.stats["requests_malformed"] += 1
            self._respond(conn, stream_id, error_frame(ErrorCode.MALFORMED, str(exc)))
            return
        self.dispatcher.serve(peer, frame, functools.partial(self._respond, conn, stream_id))

    def _respond(
        self, conn: PeerConnection, stream_id: int, response: frames.Ok | frames.Error
    ) -> None:
        conn.open_streams.discard(stream_id)
        if conn.closed:
            return
        try:
            conn.quic.send_stream_data(stream_id, frames.encode_response(response), end_stream=True)
        except Exception as exc:  # the stream was reset or stopped meanwhile
            log.debug("cannot answer stream %d: %s", stream_id, exc)
            return
        conn.transmit_soon()
        self._retire_if_idle(conn)

    # -- pool -------------------------------------------------------------------------------

    def _preferred(self, conn: PeerConnection) -> bool:
        """Of two connections to one peer, keep the one dialled by the smaller identity."""
        peer = conn.peer
        assert peer is not None
        return conn.dialed == (self.identity < peer)

    def _retire_if_idle(self, conn: PeerConnection) -> None:
        """Close a retired duplicate once nothing is in flight on it: no request, and every
        one-way message it carried acknowledged (closing would discard them)."""
        if (
            conn.retiring
            and conn.dialed
            and not conn.open_streams
            and not conn.closed
            and not self._unacked(conn)
        ):
            self.stats["duplicates_closed"] += 1
            conn.close(error_code=CLOSE_DUPLICATE, reason="duplicate connection")

    def _enforce_pool_limit(self) -> None:
        while len(self._pool) > self.config.max_connections:
            victim = next((c for c in self._pool.values() if not c.open_streams), None)
            if victim is None:
                return  # every connection is busy: allow the overshoot until one idles
            assert victim.peer is not None
            del self._pool[victim.peer]
            self.stats["connections_evicted"] += 1
            victim.close(error_code=CLOSE_IDLE, reason="connection pool full")

    async def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        interval = min(self.config.keepalive_interval, self.config.idle_close) / 2
        while True:
            await asyncio.sleep(interval)
            now = loop.time()
            if self.sock is not None:  # retired duplicates whose messages were acked since
                for conn in list(self.sock.connections):
                    if conn.retiring:
                        self._retire_if_idle(conn)
            for conn in list(self._pool.values()):
                idle = now - self._last_used.get(conn, now)
                if idle >= self.config.idle_close and not conn.open_streams:
                    self.stats["connections_idle_closed"] += 1
                    conn.close(error_code=CLOSE_IDLE, reason="idle")
                elif now - conn.last_activity >= self.config.keepalive_interval:
                    conn.ping()

    def _remember(self, peer: Identity, addresses: list[Address]) -> None:
        if not addresses:
            return  # reached only through a relay: nothing to redial directly
        self._address_book[peer] = list(addresses)
        self._address_book.move_to_end(peer)
        while len(self._address_book) > ADDRESS_BOOK_SIZE:
            self._address_book.popitem(last=False)

    def pool_size(self) -> int:
        return len(self._pool)

    def connected_peers(self) -> list[Identity]:
        return list(self._pool)

    def is_outbound(self, peer: Identity) -> bool:
        """Whether this node dialled its pooled connection to *peer*."""
        conn = self._pool.get(peer)
        return conn is not None and not conn.closed and conn.dialed

    def peer_address(self, peer: Identity) -> Address | None:
        """The real address *peer* is reached at now, or None (unknown, not connected, or
        only through a relay)."""
        conn = self._pool.get(peer)
        if conn is None or conn.closed:
            return None
        path = self.sock.paths.active_path(peer) if self.sock is not None else None
        if path is not None and not path.relayed:
            return path.address
        # the last datagram's source, unless it came through a relay
        relayed = conn.remote_session is not None or is_smart_addr(conn.remote)
        return None if relayed else conn.remote
