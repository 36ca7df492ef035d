"""One simulated node's endpoint: :class:`korium.rpc.Rpc` with the real endpoint's semantics.

Why: plugins program against ``Rpc`` only, so an endpoint that behaves like
:class:`korium.rpc.endpoint.RpcEndpoint` but sends through a
:class:`~korium.testing.network.SimNetwork` runs them unchanged. ``tests/testing`` runs the
same calls against both and requires identical results, errors and messages.

What is mirrored, from the real endpoint:

* Requests and responses travel as the real wire frames, so every size limit applies to the
  same bytes: a request over ``max_request_size`` raises ``RequestTooLargeError`` without being
  sent; a response over the limit becomes ``ResponseTooLargeError``; a malformed request (a
  protocol name over 128 bytes) becomes ``RemoteError`` with code ``MALFORMED``. The receiver
  decodes its own copy of the bytes: no mutable state is shared between nodes.
* Handlers: an ``async def`` handler runs as a task, a plain one is called directly (if it
  returns an awaitable, that runs as a task), both under ``handler_timeout``. A handler that
  raises becomes ``RemoteError("{type}: {message}")``; one that returns something other than
  bytes becomes ``RemoteError``; a protocol nobody serves becomes
  ``ProtocolNotSupportedError``. One-way messages with no handler are dropped and counted.
* Timeouts: a request waits ``timeout`` (default ``request_timeout``, 10 s) for its response.
* ``stats`` has the same counter names as ``RpcEndpoint.stats`` (less those about QUIC streams,
  such as ``message_streams_opened``).

What is modelled, where the real endpoint's behaviour depends on the network:

* Connections are pooled per peer (both ends, LRU-bounded by ``max_connections``, closed after
  ``idle_close`` seconds unused) and set up instantly: a request takes exactly the link latency
  there and back, plus handler time.
* ``on_peer_connected(peer)`` / ``on_peer_disconnected(peer)`` (what a ``Node`` turns into the
  ``korium_peer_connected`` / ``korium_peer_disconnected`` hooks) fire once when a pool entry
  for *peer* is created, on the dialler and on the dialled node, and once when it is dropped:
  LRU eviction, or an idle or dead connection. Each end keeps its own entry, and an idle or
  dead one is noticed when the node next looks at it (``connected_peers``, ``peer_address``,
  traffic to or from that peer): there is no timer per connection. A removed node's entries go
  without callbacks.
* ``peer_address(peer)`` is the address the peer was added with (``SimNetwork.add_node``),
  while this node holds a live connection to it.
* One-way messages are independent frames: unlike the real endpoint's, two sent to one peer at
  the same moment may arrive in either order (see :mod:`korium.testing.network`).
* A peer that cannot be reached (offline, partitioned away, or never added) fails like a peer
  whose address does not answer. With no open connection the dial fails: after
  ``dial_timeout`` (5 s) the request raises ``PeerUnreachableError`` (``RpcTimeoutError`` if
  its own timeout is shorter), and so does ``send_message``. Over a connection opened before
  the peer became unreachable, frames vanish: a request raises ``RpcTimeoutError`` after its
  timeout, a one-way message is silently lost; the connection dies ``idle_timeout`` (60 s)
  after the peer became unreachable, and later requests fail to dial as above.
* ``addresses`` is accepted and ignored: the simulation routes by identity.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import Counter, OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

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
    request_outcome,
    response_body,
)
from korium.transport.addresses import Address

if TYPE_CHECKING:
    from korium.testing.network import SimNetwork

__all__ = ["SimRpc"]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class _Connection:
    peer: SimRpc
    last_used: float
    outbound: bool = False
    """This end dialled the connection."""


PeerCallback = Callable[[Identity], None]


class SimRpc(ServesProtocols):
    """The rpc endpoint of one simulated node; create it with ``SimNetwork.add_node``."""

    def __init__(
        self,
        network: SimNetwork,
        identity: Identity,
        config: RpcConfig,
        *,
        address: Address | None = None,
        on_peer_connected: PeerCallback | None = None,
        on_peer_disconnected: PeerCallback | None = None,
    ) -> None:
        self.identity = identity
        self.config = config
        self.address = address
        """The node's address as its peers see it (``peer_address``); None: none given."""
        self.on_peer_connected = on_peer_connected
        """Called with a peer's identity when a connection to it is pooled (settable)."""
        self.on_peer_disconnected = on_peer_disconnected
        """Called with a peer's identity when its pooled connection is dropped (settable)."""
        self.stats: Counter[str] = Counter()
        self.removed_at: float | None = None
        """Virtual time the node was removed from the network; ``None`` while online."""
        self._network = network
        self.dispatcher = Dispatcher(config, self.stats, self._spawn)
        self._pool: OrderedDict[Identity, _Connection] = OrderedDict()
        self._calls: set[asyncio.Future[bytes]] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def network(self) -> SimNetwork:
        """The network this node belongs (or belonged) to."""
        return self._network

    @property
    def online(self) -> bool:
        """False once the node has been removed from the network."""
        return self.removed_at is None

    def __repr__(self) -> str:
        state = "online" if self.online else "removed"
        return f"SimRpc({self.identity.short}..., {state})"

    # -- protocols --------------------------------------------------------------------------

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

        :raises RpcTimeoutError, PeerUnreachableError, ProtocolNotSupportedError, RemoteError,
            RequestTooLargeError, ResponseTooLargeError, ConnectionLostError:
        """
        try:
            frame = encode_request(protocol, body, self.config)
        except RequestTooLargeError:
            self.stats["requests_too_large"] += 1
            raise
        limit = self.config.request_timeout if timeout is None else timeout
        call: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        try:
            with request_outcome(self.stats, peer, protocol, limit):
                async with asyncio.timeout(limit):
                    target = await self._connect(peer)
                    self._calls.add(call)
                    serve = functools.partial(target._serve, self, frame, call)
                    self._network._transmit(self, target, frame, serve)
                    return await call
        finally:
            self._calls.discard(call)

    async def send_message(
        self, peer: Identity, protocol: str, body: bytes, *, addresses: list[Address] | None = None
    ) -> None:
        """Send a one-way message (no response; delivery is not confirmed)."""
        frame = encode_request(protocol, body, self.config, "message")
        target = self._pooled(peer)  # the hot path: no timeout needed, nothing to wait for
        if target is None:
            try:
                async with asyncio.timeout(self.config.request_timeout):
                    target = await self._connect(peer)
            except TimeoutError:
                raise RpcTimeoutError(
                    f"no connection to {peer.short}... within {self.config.request_timeout} s"
                ) from None
        receive = functools.partial(target._receive_message, self, frame)
        self._network._transmit(self, target, frame, receive)
        self.stats["messages_sent"] += 1

    def connected_peers(self) -> list[Identity]:
        """Peers this node currently holds a connection to (least recently used first)."""
        now = self._network._now()
        for peer, conn in list(self._pool.items()):
            if not self._alive(conn, now):
                self._pool_drop(peer)
        return list(self._pool)

    def peer_address(self, peer: Identity) -> Address | None:
        """The address *peer* was added with, while this node holds a live connection to it."""
        conn = self._pool.get(peer)
        if conn is None:
            return None
        if not self._alive(conn, self._network._now()):
            self._pool_drop(peer)
            return None
        return conn.peer.address

    def is_outbound(self, peer: Identity) -> bool:
        """Whether this node dialled its live connection to *peer*."""
        conn = self._pool.get(peer)
        return conn is not None and conn.outbound and self._alive(conn, self._network._now())

    def _pooled(self, peer: Identity) -> SimRpc | None:
        """The peer over a live pooled connection (marked used), else None."""
        conn = self._pool.get(peer)
        if conn is None or not self.online:
            return None
        now = self._network._now()
        if not self._alive(conn, now):
            return None
        conn.last_used = now
        self._pool.move_to_end(peer)
        return conn.peer

    async def _connect(self, peer: Identity) -> SimRpc:
        """The endpoint to send to: over a pooled connection, else by dialling *peer*."""
        if not self.online:
            raise ConnectionLostError(
                f"node {self.identity.short}... was removed from the simulation"
            )
        if peer == self.identity:
            raise PeerUnreachableError("a node cannot connect to itself")
        now = asyncio.get_running_loop().time()
        conn = self._pool.get(peer)
        if conn is not None:
            if self._alive(conn, now):
                conn.last_used = now
                self._pool.move_to_end(peer)
                return conn.peer
            self._pool_drop(peer)
        target = self._network._dial(self, peer)
        if target is None:
            await asyncio.sleep(self.config.dial_timeout)
            raise PeerUnreachableError(
                f"no answer from {peer.short}... within {self.config.dial_timeout} s"
            )
        self._pool_add(target, now, outbound=True)
        target._pool_add(self, now)
        return target

    def _alive(self, conn: _Connection, now: float) -> bool:
        if now - conn.last_used >= self.config.idle_close:
            return False
        return self._network._connection_alive(self, conn.peer, now)

    def _pool_add(self, peer: SimRpc, now: float, *, outbound: bool = False) -> None:
        conn = self._pool.get(peer.identity)
        if conn is not None:
            if conn.peer is peer and self._alive(conn, now):
                conn.last_used = now
                self._pool.move_to_end(peer.identity)
                return
            self._pool_drop(peer.identity)  # idle, dead, or the peer restarted: a new one
        self._pool[peer.identity] = _Connection(peer, now, outbound)
        if self.on_peer_connected is not None:
            self.on_peer_connected(peer.identity)
        while len(self._pool) > self.config.max_connections:
            self._pool_drop(next(iter(self._pool)))
            self.stats["connections_evicted"] += 1

    def _pool_drop(self, peer: Identity) -> None:
        del self._pool[peer]
        if self.on_peer_disconnected is not None:
            self.on_peer_disconnected(peer)

    def _receive_response(self, call: asyncio.Future[bytes], frame: bytes) -> None:
        if call.done():  # timed out or cancelled meanwhile
            return
        try:
            call.set_result(response_body(frame, self.config))
        except RpcError as exc:
            call.set_exception(exc)

    # -- server -----------------------------------------------------------------------------

    def _serve(self, caller: SimRpc, frame: bytes, call: asyncio.Future[bytes]) -> None:
        """A request frame arrived from *caller*: answer it as the real endpoint would."""
        self._pool_add(caller, asyncio.get_running_loop().time())
        self.dispatcher.serve(caller.identity, frame, functools.partial(self._reply, caller, call))

    def _reply(
        self, caller: SimRpc, call: asyncio.Future[bytes], response: frames.Ok | frames.Error
    ) -> None:
        if not self.online:
            return
        frame = frames.encode_response(response)
        receive = functools.partial(caller._receive_response, call, frame)
        self._network._transmit(self, caller, frame, receive)

    def _receive_message(self, sender: SimRpc, frame: bytes) -> None:
        """A one-way frame arrived from *sender*."""
        self._pool_add(sender, asyncio.get_running_loop().time())
        self.dispatcher.deliver(sender.identity, frame)

    # -- lifecycle --------------------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _shut_down(self, now: float) -> None:
        """The node left the network: stop its handlers and fail its requests in flight."""
        self.removed_at = now
        for task in list(self._tasks):
            task.cancel()
        for call in self._calls:
            if not call.done():
                call.set_exception(ConnectionLostError("this node was removed from the network"))
        self._pool.clear()
