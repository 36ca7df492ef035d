"""Request/response and one-way messages between identities.

:class:`Rpc` is the interface plugins program against (``node.rpc``). The real implementation is
:class:`korium.rpc.endpoint.RpcEndpoint` over QUIC; ``korium.testing`` provides an in-memory one
with the same semantics, so plugin code runs unchanged in simulations.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, runtime_checkable

from korium.identity import Identity
from korium.rpc.frames import MAX_REQUEST_SIZE, MAX_RESPONSE_SIZE
from korium.transport.addresses import Address

RequestHandler = Callable[[Identity, bytes], "Awaitable[bytes] | bytes"]
"""``handler(peer, body) -> response body``; a plain or an async function."""
MessageHandler = Callable[[Identity, bytes], "Awaitable[None] | None"]
"""``handler(peer, body)`` for one-way messages; a plain or an async function."""


@runtime_checkable
class Rpc(Protocol):
    """What a node offers plugins for talking to peers.

    Errors are :class:`korium.errors.RpcError` subclasses: ``RpcTimeoutError``,
    ``PeerUnreachableError``, ``IdentityMismatchError``, ``ProtocolNotSupportedError``,
    ``RemoteError``, ``RequestTooLargeError``, ``ResponseTooLargeError``,
    ``ConnectionLostError``.
    """

    def register(self, protocol: str, handler: RequestHandler) -> None:
        """Serve requests for *protocol* (e.g. ``"korium/dht/1"``)."""
        ...

    def register_message(self, protocol: str, handler: MessageHandler) -> None:
        """Receive one-way messages for *protocol*."""
        ...

    def unregister(self, protocol: str) -> None:
        """Stop serving *protocol*."""
        ...

    async def request(
        self,
        peer: Identity,
        protocol: str,
        body: bytes,
        *,
        addresses: list[Address] | None = None,
        timeout: float | None = None,
    ) -> bytes:
        """Send a request to *peer* and return its response body."""
        ...

    async def send_message(
        self, peer: Identity, protocol: str, body: bytes, *, addresses: list[Address] | None = None
    ) -> None:
        """Send a one-way message (delivery is not confirmed).

        Returns once the message is handed to the connection; when the peer falls behind by
        more than ``RpcConfig.message_buffer`` unacknowledged bytes, it waits until the peer
        catches up (backpressure), or raises ``RpcTimeoutError``.

        Messages to one peer over one connection arrive in the order they were sent (the real
        endpoint writes them to one stream); across a reconnection they may not, and the
        simulated network (:mod:`korium.testing`) may deliver messages sent at the same moment
        in either order.
        """
        ...

    def connected_peers(self) -> list[Identity]:
        """Peers this node currently holds a connection to."""
        ...

    def peer_address(self, peer: Identity) -> Address | None:
        """The real address *peer* is reached at now, or None (unknown, not connected, or
        only through a relay)."""
        ...

    def is_outbound(self, peer: Identity) -> bool:
        """Whether this node dialled its connection to *peer* (False: the peer dialled in, or
        there is no connection). Anti-eclipse rules prefer peers we chose to dial."""
        ...


__all__ = ["MAX_REQUEST_SIZE", "MAX_RESPONSE_SIZE", "MessageHandler", "RequestHandler", "Rpc"]
