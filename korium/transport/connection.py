"""One QUIC connection to one peer: the thin asyncio driver around a sans-IO aioquic connection.

SmartSock owns the socket and hands each datagram for this connection to
:meth:`PeerConnection.datagram_received`; the connection feeds aioquic, turns its events into
calls on the :class:`StreamHandler` (the RPC layer), and sends what aioquic wants to send back
through SmartSock, which picks the real path. aioquic only ever sees the connection's virtual
address, so a path switch is invisible to it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Protocol

from aioquic.quic import events

from korium.errors import IdentityMismatchError, PeerUnreachableError
from korium.identity import Identity
from korium.transport.addresses import Address
from korium.transport.paths import Path
from korium.transport.tls import KoriumQuicConnection

if TYPE_CHECKING:
    from korium.transport.smartsock import SmartSock

log = logging.getLogger(__name__)

CRYPTO_ERRORS = 0x100
"""QUIC CRYPTO_ERROR codes are 0x100 + the TLS alert (bad_certificate: 0x12a)."""


class StreamHandler(Protocol):
    """What a connection tells the layer above about its streams (the RPC endpoint)."""

    def stream_data(self, conn: PeerConnection, stream_id: int, data: bytes, end: bool) -> None:
        """Data arrived on a stream; *end* means the peer finished sending on it."""

    def stream_reset(self, conn: PeerConnection, stream_id: int) -> None:
        """The peer reset a stream."""

    def connection_established(self, conn: PeerConnection) -> None:
        """The handshake completed: ``conn.peer`` is authenticated."""

    def connection_lost(self, conn: PeerConnection, reason: str, code: int) -> None:
        """The connection is gone; every stream on it is dead. *code*: the close error code."""


class PeerConnection:
    """A QUIC connection whose peer is (after the handshake) an authenticated identity."""

    def __init__(
        self,
        sock: SmartSock,
        quic: KoriumQuicConnection,
        *,
        virtual: Address,
        remote: Address,
        dialed: bool,
        handler: StreamHandler,
    ) -> None:
        self.sock = sock
        self.quic = quic
        self.virtual = virtual
        """The address aioquic knows the peer by; never changes."""
        self.remote = remote
        """The real address the last datagram came from (a relay's, when relayed)."""
        self.remote_session: bytes | None = None
        """The relay session the last datagram came through, or None if it came direct."""
        self.dialed = dialed
        """True if this node opened the connection."""
        self.handler = handler
        loop = asyncio.get_running_loop()
        self._loop = loop
        self.established: asyncio.Future[Identity] = loop.create_future()
        self.closed = False
        self.close_reason = ""
        self.close_code = 0
        self.last_activity = loop.time()
        self.open_streams: set[int] = set()
        self.dial_paths: list[Path] = []
        """Where a dialled handshake is sent (every candidate at once, relays included)."""
        self.retiring = False
        """A duplicate of another connection to the same peer: close when idle."""
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._transmit_pending = False
        self._handshake_complete = False
        self.datagrams_sent = 0
        self.traffic_noted = -1e9
        """When SmartSock last told the path table this connection's path works."""

    @property
    def peer(self) -> Identity | None:
        """The peer's identity once the handshake verified it."""
        return self.quic.peer_identity

    @property
    def expected(self) -> Identity | None:
        """The identity a dialled connection insists on."""
        return self.quic.expected

    # -- input ------------------------------------------------------------------------------

    @property
    def remote_path(self) -> Path:
        """The path the last datagram came over."""
        return Path(self.remote, self.remote_session)

    @property
    def dial_addresses(self) -> list[Address]:
        """The direct addresses a dialled handshake was sent to."""
        return [path.address for path in self.dial_paths if not path.relayed]

    def datagram_received(self, data: bytes, source: Address, session: bytes | None) -> None:
        now = self._loop.time()
        self.remote, self.remote_session = source, session
        self.last_activity = now
        self.quic.receive_datagram(data, self.virtual, now)
        self._process_events()
        self.transmit()

    def _handle_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        self.quic.handle_timer(self._loop.time())
        self._process_events()
        self.transmit()

    def _process_events(self) -> None:
        quic = self.quic
        handler = self.handler
        while (event := quic.next_event()) is not None:
            if isinstance(event, events.StreamDataReceived):
                handler.stream_data(self, event.stream_id, event.data, event.end_stream)
            elif isinstance(event, events.HandshakeCompleted):
                self._handshake_complete = True
            elif isinstance(event, events.StreamReset):
                handler.stream_reset(self, event.stream_id)
            elif isinstance(event, events.ConnectionIdIssued):
                self.sock.add_connection_id(event.connection_id, self)
            elif isinstance(event, events.ConnectionIdRetired):
                self.sock.remove_connection_id(event.connection_id)
            elif isinstance(event, events.ConnectionTerminated):
                reason = event.reason_phrase or f"error {event.error_code:#x}"
                self._terminated(reason, event.error_code)
        if self.established.done():
            return
        # A rejected handshake is decided now; aioquic reports it only after the closing
        # period (3 PTO). Fail the dial at once.
        close_event = quic._close_event
        if close_event is not None:
            reason = close_event.reason_phrase or "handshake failed"
            self._fail_establishment(reason, close_event.error_code)
        elif self._handshake_complete and quic._handshake_confirmed:
            # Confirmed, not just completed: a TLS 1.3 client completes before the listener
            # has checked the client's certificate, so only confirmation (HANDSHAKE_DONE)
            # means both sides accepted each other.
            self._established()

    def _established(self) -> None:
        peer = self.quic.peer_identity
        if peer is None:  # cannot happen: verification sets it before Finished
            self.close(reason="handshake completed without a verified peer")
            return
        self.established.set_result(peer)
        self.sock.connection_established(self)
        self.handler.connection_established(self)

    def _fail_establishment(self, reason: str, code: int) -> None:
        if CRYPTO_ERRORS <= code < CRYPTO_ERRORS + 0x100:  # a TLS alert: a side refused
            alert = code - CRYPTO_ERRORS
            error: Exception = IdentityMismatchError(
                f"handshake refused (TLS alert {alert}): {reason}"
            )
        else:
            error = PeerUnreachableError(f"handshake failed: {reason}")
        self.established.set_exception(error)
        self.established.exception()  # mark retrieved: nobody may be waiting

    def _terminated(self, reason: str, code: int) -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        self.close_code = code
        if not self.established.done():
            self._fail_establishment(reason, code)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.sock.connection_terminated(self)
        self.handler.connection_lost(self, reason, code)

    # -- output -----------------------------------------------------------------------------

    def transmit_soon(self) -> None:
        """Send pending data at the end of this loop iteration (coalesces many writes)."""
        if not self._transmit_pending:
            self._transmit_pending = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        if self._transmit_pending:  # not already sent by a transmit() since
            self.transmit()

    def transmit(self) -> None:
        """Send everything aioquic has queued and re-arm the single timer."""
        self._transmit_pending = False
        if self.closed:
            return
        now = self._loop.time()
        send = self.sock.send_for
        for data, _ in self.quic.datagrams_to_send(now):
            send(self, data)
            self.datagrams_sent += 1
        timer_at = self.quic.get_timer()
        if timer_at != self._timer_at:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            self._timer_at = timer_at
            if timer_at is not None:
                self._timer = self._loop.call_at(timer_at, self._handle_timer)

    def close(self, *, error_code: int = 0, reason: str = "") -> None:
        """Close gracefully; streams in flight fail on both sides."""
        if not self.closed:
            self.quic.close(error_code=error_code, reason_phrase=reason)
            self.transmit()

    def abort(self, reason: str, *, error_code: int = 0) -> None:
        """Close now and forget the connection without waiting for the closing period."""
        self.close(error_code=error_code, reason=reason)
        self._terminated(reason, error_code)

    def ping(self) -> None:
        """Send a PING (keeps the connection and any NAT binding alive)."""
        if not self.closed:
            self.quic.send_ping(0)
            self.transmit_soon()

    def __repr__(self) -> str:
        who = self.peer or self.expected
        return f"PeerConnection({who!r}, dialed={self.dialed}, closed={self.closed})"
