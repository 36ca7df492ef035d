"""SmartSock: one UDP socket per node, demultiplexing QUIC, probes, relay and plugin frames.

Each datagram is classified, in order:

1. QUIC long header (first bit set): routed by destination connection ID; an unknown ID on an
   Initial of at least 1200 bytes opens a new inbound connection.
2. QUIC short header whose destination connection ID is one of ours (checked before the magic
   numbers below, so a connection ID can never be mistaken for a frame type).
3. ``SMPR`` path probes; ``CRLY`` relay frames and other 4-byte frame types registered by
   plugins (``register_frame_type``).
4. Anything else is dropped and counted.

Outgoing QUIC datagrams go to the peer's currently selected path (the :class:`PathTable`); while
a dialled handshake is in progress they go to every candidate address at once, so one dead
address costs nothing.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aioquic._buffer import Buffer
from aioquic.quic.packet import QuicPacketType, pull_quic_header

from korium.errors import TransportError
from korium.identity import Identity, NodeIdentity
from korium.transport import probe
from korium.transport.addresses import Address, normalize, smart_addr
from korium.transport.connection import PeerConnection, StreamHandler
from korium.transport.paths import Path, PathConfig, PathTable
from korium.transport.tls import (
    CONNECTION_ID_LENGTH,
    CertificateExtension,
    KoriumQuicConnection,
    PeerVerifier,
    build_certificate,
    quic_configuration,
)

log = logging.getLogger(__name__)

FrameHandler = Callable[[bytes, Address], None]
RELAY_MAGIC = b"CRLY"
MIN_INITIAL_SIZE = 1200
MAX_DIAL_ADDRESSES = 8
TRAFFIC_NOTE_INTERVAL = 0.5
"""Seconds between liveness notes for a path that keeps carrying a connection's traffic."""


@dataclass(frozen=True, slots=True)
class TransportConfig:
    """Transport settings. Times in seconds."""

    idle_timeout: float = 60.0
    """QUIC idle timeout; the RPC pool pings connections in use well before it."""
    max_data: int = 16 * 1024 * 1024
    max_stream_data: int = 4 * 1024 * 1024
    max_connections: int = 2_000
    """Inbound plus outbound; new inbound handshakes beyond it are dropped."""
    handshake_timeout: float = 10.0
    """An inbound handshake not finished by then is dropped (its slot freed)."""
    paths: PathConfig = field(default_factory=PathConfig)


class SmartSock(asyncio.DatagramProtocol):
    """The node's UDP socket and every QUIC connection on it."""

    def __init__(
        self,
        node_identity: NodeIdentity,
        *,
        handler: StreamHandler,
        verifier: PeerVerifier,
        config: TransportConfig | None = None,
        certificate_extensions: Sequence[CertificateExtension] = (),
    ) -> None:
        self.config = config or TransportConfig()
        self.node_identity = node_identity
        self.handler = handler
        self.verifier = verifier
        certificate, key = build_certificate(node_identity, certificate_extensions)
        self._client_config, self._server_config = (
            quic_configuration(
                is_client=is_client,
                certificate=certificate,
                private_key=key,
                idle_timeout=self.config.idle_timeout,
                max_data=self.config.max_data,
                max_stream_data=self.config.max_stream_data,
            )
            for is_client in (True, False)
        )
        self.paths = PathTable(self.config.paths)
        self.stats: Counter[str] = Counter()
        self.connections: set[PeerConnection] = set()
        self._cids: dict[bytes, PeerConnection] = {}
        self._frame_handlers: dict[bytes, FrameHandler] = {}
        self._virtual = itertools.count(1)
        self._transport: asyncio.DatagramTransport | None = None
        self._probe_timer: asyncio.TimerHandle | None = None
        self._loop = asyncio.get_running_loop()
        self._probe_target = bytes(node_identity.identity)[: probe.TARGET_SIZE]
        self._probe_waiters: dict[int, asyncio.Future[probe.ProbeResponse]] = {}
        self.relay_sender: Callable[[Path, bytes], None] | None = None
        """Set by the relay plugin: sends a datagram over a relayed path."""

    # -- lifecycle --------------------------------------------------------------------------

    async def bind(self, address: Address) -> Address:
        """Open the UDP socket on *address*; returns the bound address (with its real port)."""
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        try:
            await self._loop.create_datagram_endpoint(
                lambda: self, local_addr=address, family=family
            )
        except OSError as exc:
            raise TransportError(f"cannot bind UDP {address[0]}:{address[1]}: {exc}") from exc
        return self.local_address

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # a DatagramTransport
        self._arm_probe_timer()

    @property
    def local_address(self) -> Address:
        if self._transport is None:
            raise TransportError("the socket is not bound")
        return normalize(self._transport.get_extra_info("sockname"))

    def close(self, *, error_code: int = 0) -> None:
        """Close every connection (with *error_code*) and the socket."""
        for conn in list(self.connections):
            conn.abort("node closing", error_code=error_code)
        if self._probe_timer is not None:
            self._probe_timer.cancel()
        if self._transport is not None:
            self._transport.close()

    # -- plugins ----------------------------------------------------------------------------

    def register_frame_type(self, magic: bytes, handler: FrameHandler) -> None:
        """Deliver datagrams starting with the 4-byte *magic* to *handler*.

        The first byte must have its top bit clear (QUIC long headers set it).
        """
        if len(magic) != 4 or magic[0] & 0x80:
            raise ValueError(f"frame magic {magic!r} must be 4 bytes with the top bit clear")
        if magic == probe.PROBE_MAGIC or magic in self._frame_handlers:
            raise ValueError(f"frame type {magic!r} is already registered")
        self._frame_handlers[magic] = handler

    def send_datagram(self, data: bytes, address: Address) -> None:
        """Send a raw datagram (plugin frames)."""
        if self._transport is not None:
            self._transport.sendto(data, address)

    # -- receiving --------------------------------------------------------------------------

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self._receive(data, (addr[0], addr[1]), None)

    def deliver_relayed(self, data: bytes, path: Path) -> None:
        """A datagram the relay plugin unwrapped from relay session ``path.relay_session``:
        handled as if it had arrived over *path* (QUIC and probes; not plugin frames)."""
        self.stats["relayed_datagrams"] += 1
        self._receive(data, path.address, path.relay_session)

    def _receive(self, data: bytes, source: Address, session: bytes | None) -> None:
        """Demultiplex one datagram from *source* (through relay *session*, if not None); a
        Path is made only off the hot path of an established connection's packets."""
        if not data:
            self.stats["dropped_empty"] += 1
            return
        first = data[0]
        if first & 0x80:
            self._receive_long_header(data, source, session)
            return
        conn = self._cids.get(data[1 : 1 + CONNECTION_ID_LENGTH])
        if conn is not None and first & 0x40:
            self._deliver(conn, data, source, session)
            return
        magic = data[:4]
        if magic == probe.PROBE_MAGIC:
            self._receive_probe(data, Path(source, session))
            return
        frame_handler = self._frame_handlers.get(magic)
        if frame_handler is not None and session is None:
            self.stats["frames"] += 1
            frame_handler(data, source)
        elif first & 0x40:
            self.stats["dropped_unknown_connection"] += 1
        else:
            self.stats["dropped_garbage"] += 1

    def error_received(self, exc: Exception) -> None:
        self.stats["socket_errors"] += 1
        log.debug("socket error: %s", exc)

    def _receive_long_header(self, data: bytes, source: Address, session: bytes | None) -> None:
        try:
            header = pull_quic_header(Buffer(data=data), host_cid_length=CONNECTION_ID_LENGTH)
        except ValueError:
            self.stats["dropped_garbage"] += 1
            return
        conn = self._cids.get(header.destination_cid)
        if conn is not None:
            self._deliver(conn, data, source, session)
            return
        if (
            header.packet_type != QuicPacketType.INITIAL
            or len(data) < MIN_INITIAL_SIZE
            or header.version not in self._server_config.supported_versions
        ):
            self.stats["dropped_unknown_connection"] += 1
            return
        if len(self.connections) >= self.config.max_connections:
            self.stats["dropped_over_capacity"] += 1
            return
        quic = KoriumQuicConnection(
            configuration=self._server_config,
            original_destination_connection_id=header.destination_cid,
            expected=None,
            verify=self.verifier,
        )
        # Until the handshake names the peer, aioquic knows it by a provisional virtual
        # address that never changes (changing it would look like a migration).
        virtual = (f"fd00:c0f1:ffff:ffff::{next(self._virtual) & 0xFFFF_FFFF:x}", 1)
        conn = PeerConnection(
            self, quic, virtual=virtual, remote=source, dialed=False, handler=self.handler
        )
        conn.remote_session = session
        self.connections.add(conn)
        self._cids[header.destination_cid] = conn
        self._cids[quic.host_cid] = conn
        self._deliver(conn, data, source, session)
        if conn.datagrams_sent == 0:
            # Nothing decrypted (a real Initial always gets at least an ACK back): garbage or
            # a spoofed flood. Forget it now rather than holding a slot for the idle timeout.
            self.stats["dropped_bad_initial"] += 1
            conn.abort("undecryptable Initial")
            return
        self.stats["connections_accepted"] += 1
        self._loop.call_later(self.config.handshake_timeout, self._check_handshake, conn)

    def _check_handshake(self, conn: PeerConnection) -> None:
        """An inbound handshake that has not finished in time gives its slot back."""
        if not conn.closed and not conn.established.done():
            self.stats["handshakes_timed_out"] += 1
            conn.abort("handshake timed out")

    def _deliver(
        self, conn: PeerConnection, data: bytes, source: Address, session: bytes | None
    ) -> None:
        self.stats["quic_datagrams"] += 1
        peer = conn.peer
        if peer is not None and not conn.closed:
            now = self._loop.time()
            # the hot path: same path as before, liveness noted recently -> nothing to do
            if (
                source != conn.remote
                or session != conn.remote_session
                or now - conn.traffic_noted >= TRAFFIC_NOTE_INTERVAL
            ):
                conn.traffic_noted = now
                path = Path(source, session)
                if self.paths.active_path(peer) is None or not self.paths.has_candidate(peer, path):
                    # a new path for an authenticated peer: a candidate, proven by probes
                    self.paths.add_candidate(peer, path, now)
                    self._arm_probe_timer()
                else:
                    self.paths.on_traffic(peer, path, now)
        conn.datagram_received(data, source, session)

    def _receive_probe(self, data: bytes, path: Path) -> None:
        try:
            message = probe.decode(data)
        except probe.ProbeError:
            self.stats["dropped_malformed_probe"] += 1
            return
        if isinstance(message, probe.ProbeRequest):
            if message.target != self._probe_target:
                self.stats["probes_misaddressed"] += 1
                return
            self.stats["probes_answered"] += 1
            response = probe.ProbeResponse(message.transaction, message.timestamp_ms, path.address)
            self._send_path(path, probe.encode_response(response))
        else:
            waiter = self._probe_waiters.pop(message.transaction, None)
            if waiter is not None:
                if not waiter.done():
                    waiter.set_result(message)
                return
            self.paths.on_probe_response(message, path.address, self._loop.time())
            self._drain_path_events()
            self._arm_probe_timer()  # the next probe of that path is due sooner than any expiry

    async def probe_address(
        self, address: Address, target: bytes, timeout: float
    ) -> probe.ProbeResponse | None:
        """Send one probe to *address* (a node whose identity starts with *target*) and return
        its answer, which says where this socket's datagrams come from as seen there (STUN-like);
        None if none came within *timeout* seconds."""
        transaction = int.from_bytes(os.urandom(8))
        waiter: asyncio.Future[probe.ProbeResponse] = self._loop.create_future()
        self._probe_waiters[transaction] = waiter
        request = probe.ProbeRequest(transaction, int(time.time() * 1000), target)
        try:
            self.send_datagram(probe.encode_request(request), address)
            return await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            return None
        finally:
            self._probe_waiters.pop(transaction, None)

    # -- connections ------------------------------------------------------------------------

    def dial(
        self, peer: Identity, addresses: list[Address], relayed: Sequence[Path] = ()
    ) -> PeerConnection:
        """Open a connection to *peer*, trying every address (and relayed path) at once;
        returns immediately. Await ``conn.established`` for the authenticated result.
        """
        if not addresses and not relayed:
            raise ValueError("no address to dial")
        now = self._loop.time()
        quic = KoriumQuicConnection(
            configuration=self._client_config, expected=peer, verify=self.verifier
        )
        paths = [Path(a) for a in addresses[:MAX_DIAL_ADDRESSES]] + list(relayed)
        conn = PeerConnection(
            self,
            quic,
            virtual=smart_addr(peer),
            remote=paths[0].address,
            dialed=True,
            handler=self.handler,
        )
        conn.remote_session = paths[0].relay_session
        conn.dial_paths = paths
        self.connections.add(conn)
        self._cids[quic.host_cid] = conn
        quic.connect(conn.virtual, now)
        conn.transmit()
        self.stats["connections_dialed"] += 1
        return conn

    def connection_established(self, conn: PeerConnection) -> None:
        """The handshake authenticated *conn*'s peer: its addresses become path candidates.

        Not before: an unauthenticated dial must not steer traffic for an identity.
        """
        peer = conn.peer
        assert peer is not None
        now = self._loop.time()
        self.paths.add_candidate(peer, conn.remote_path, now)  # the path that answered
        for path in conn.dial_paths:
            self.paths.add_candidate(peer, path, now)
        self._drain_path_events()
        self._arm_probe_timer()

    def add_connection_id(self, cid: bytes, conn: PeerConnection) -> None:
        self._cids[cid] = conn

    def remove_connection_id(self, cid: bytes) -> None:
        self._cids.pop(cid, None)

    def connection_terminated(self, conn: PeerConnection) -> None:
        self.connections.discard(conn)
        for cid in [c for c, owner in self._cids.items() if owner is conn]:
            del self._cids[cid]
        peer = conn.peer
        if peer is not None and not any(c.peer == peer for c in self.connections):
            self.paths.remove_peer(peer)

    # -- sending ----------------------------------------------------------------------------

    def send_for(self, conn: PeerConnection, data: bytes) -> None:
        """Send one of *conn*'s datagrams over the peer's current path."""
        transport = self._transport
        if transport is None:
            return
        peer = conn.peer
        if peer is None:
            if conn.dialed:  # handshake in progress: every candidate at once
                for path in conn.dial_paths:
                    self._send_path(path, data)
            else:
                self._send_path(conn.remote_path, data)
            return
        self._send_path(self.paths.active_path(peer) or conn.remote_path, data)

    def _send_path(self, path: Path, data: bytes) -> None:
        if path.relay_session is None:
            if self._transport is not None:
                self._transport.sendto(data, path.address)
        elif self.relay_sender is not None:
            self.relay_sender(path, data)
        else:
            self.stats["dropped_no_relay"] += 1

    # -- probing ----------------------------------------------------------------------------

    def probe_soon(self, peer: Identity) -> None:
        """Probe *peer*'s candidate paths now rather than at their next turn."""
        self.paths.probe_soon(peer)
        self._arm_probe_timer()

    def _arm_probe_timer(self) -> None:
        if self._transport is None:
            return
        wake = self.paths.get_timer()
        if wake is None:
            return
        wake = max(wake, self._loop.time() + 0.01)
        if self._probe_timer is not None:
            if self._probe_timer.when() <= wake:
                return
            self._probe_timer.cancel()
        self._probe_timer = self._loop.call_at(wake, self._probe_wake)

    def _probe_wake(self) -> None:
        self._probe_timer = None
        now = self._loop.time()
        self.paths.handle_timer(now)
        for path, request in self.paths.probes_due(now):
            self._send_path(path, probe.encode_request(request))
        self._drain_path_events()
        self._arm_probe_timer()

    def _drain_path_events(self) -> None:
        while (event := self.paths.next_event()) is not None:
            if event.old is not None:
                log.info("peer %s: path %s -> %s", event.peer.short, event.old, event.new)
                self.stats["path_switches"] += 1

    def path_stats(self) -> dict[str, int]:
        return {f"paths.{k}": v for k, v in self.paths.stats.items()}
