"""Mutual TLS over real loopback UDP: every refusal happens inside the QUIC handshake.

Each negative case checks that the request handler never ran and which error the dialler got;
each has a positive control with the right identity or certificate, so no test can pass just
because nothing works. Peers that are not korium nodes are stock aioquic endpoints
(``aioquic.asyncio.serve`` / ``connect``) with hand-made certificates.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import pytest
from aioquic import tls
from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import QuicServer, serve
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

from korium import Node, NodeIdentity, hookimpl
from korium.config import NodeConfig
from korium.errors import (
    IdentityMismatchError,
    PeerUnreachableError,
)
from korium.identity import Identity, Keypair, ProofOfWork
from korium.node import PLAIN_PROTOCOL
from korium.rpc import frames
from korium.transport.addresses import Address
from korium.transport.paths import PathConfig
from korium.transport.smartsock import TransportConfig
from korium.transport.tls import ALPN, POW_EXTENSION_OID, build_certificate

DIFFICULTY: Final = 4
STRONG_DIFFICULTY: Final = 12
FAST: Final = 1.0
"""A refusal inside the handshake takes milliseconds; the dial timeout is 5 s."""
CERTIFICATE_REQUIRED: Final = 0x100 + tls.AlertDescription.certificate_required  # 0x174
BAD_CERTIFICATE: Final = 0x100 + tls.AlertDescription.bad_certificate  # 0x12a
CRYPTO_ERROR: Final = 0x100

PrivateKey = Ed25519PrivateKey | ec.EllipticCurvePrivateKey
MakeNode = Callable[..., Awaitable[Node]]


class Handler:
    """A request handler that remembers every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[Identity, bytes]] = []

    def __call__(self, peer: Identity, data: bytes) -> bytes:
        self.calls.append((peer, data))
        return b"ok:" + data


class Veto:
    """A plugin that refuses every peer certificate."""

    def __init__(self) -> None:
        self.votes: list[Identity] = []

    @hookimpl
    def korium_verify_peer_certificate(
        self, node: Node, peer: Identity, certificate: x509.Certificate
    ) -> str | None:
        self.votes.append(peer)
        return "not welcome"


class PeerWatch:
    """A plugin that records korium_peer_connected calls."""

    def __init__(self) -> None:
        self.connected: list[Identity] = []

    @hookimpl
    def korium_peer_connected(self, node: Node, peer: Identity) -> None:
        self.connected.append(peer)


@pytest.fixture
async def make_node() -> AsyncIterator[MakeNode]:
    nodes: list[Node] = []

    async def make(
        *plugins: object,
        difficulty: int = DIFFICULTY,
        identity: NodeIdentity | None = None,
        config: NodeConfig | None = None,
    ) -> Node:
        builder = Node.builder("127.0.0.1:0").plugins(list(plugins))
        if config is not None:
            builder.config(config)
        builder.difficulty(difficulty)
        if identity is not None:
            builder.identity(identity)
        node = await builder.build()
        nodes.append(node)
        return node

    try:
        yield make
    finally:
        for node in nodes:
            await node.close()


async def served_node(
    make_node: MakeNode, *plugins: object, difficulty: int = DIFFICULTY
) -> tuple[Node, Handler]:
    node = await make_node(*plugins, difficulty=difficulty)
    handler = Handler()
    node.set_request_handler(handler)
    return node, handler


# -- certificates -----------------------------------------------------------------------------


def self_signed(
    key: PrivateKey, extensions: Sequence[x509.ExtensionType] = (), cn: str = "not-korium"
) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    for extension in extensions:
        builder = builder.add_extension(extension, critical=False)
    algorithm = None if isinstance(key, Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm)


def ec_certificate() -> tuple[x509.Certificate, PrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    return self_signed(key), key


def ed25519_key(node_identity: NodeIdentity) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(node_identity.keypair.seed)


def weak_identity(difficulty: int) -> NodeIdentity:
    """An identity whose proof of work is valid-looking but weaker than *difficulty*."""
    keypair = Keypair.generate()
    nonce = next(n for n in range(1_000) if ProofOfWork(n).strength(keypair.identity) < difficulty)
    proof = ProofOfWork(nonce)
    assert proof.strength(keypair.identity) < difficulty
    return NodeIdentity(keypair, proof)


# -- stock aioquic peers ----------------------------------------------------------------------


class RecordingProtocol(QuicConnectionProtocol):
    """A stock aioquic connection that keeps every QUIC event."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.events: list[events.QuicEvent] = []

    def quic_event_received(self, event: events.QuicEvent) -> None:
        self.events.append(event)
        super().quic_event_received(event)

    def saw(self, kind: type[events.QuicEvent]) -> bool:
        return any(isinstance(event, kind) for event in self.events)

    @property
    def terminated(self) -> events.ConnectionTerminated | None:
        found = [e for e in self.events if isinstance(e, events.ConnectionTerminated)]
        return found[0] if found else None


@dataclass
class RawServer:
    """A stock aioquic listener and every connection it accepted."""

    server: QuicServer
    connections: list[RecordingProtocol] = field(default_factory=list)

    @property
    def address(self) -> Address:
        transport = self.server._transport
        assert transport is not None
        host, port = transport.get_extra_info("sockname")[:2]
        return (str(host), int(port))

    def completed(self) -> bool:
        return any(c.saw(events.HandshakeCompleted) for c in self.connections)

    def stream_data(self) -> bool:
        return any(c.saw(events.StreamDataReceived) for c in self.connections)


@pytest.fixture
async def raw_server() -> AsyncIterator[
    Callable[[x509.Certificate, PrivateKey], Awaitable[RawServer]]
]:
    servers: list[RawServer] = []

    async def start(certificate: x509.Certificate, key: PrivateKey) -> RawServer:
        configuration = QuicConfiguration(is_client=False, alpn_protocols=[ALPN])
        configuration.certificate = certificate
        configuration.private_key = key
        connections: list[RecordingProtocol] = []

        def create_protocol(*args: Any, **kwargs: Any) -> RecordingProtocol:
            protocol = RecordingProtocol(*args, **kwargs)
            connections.append(protocol)
            return protocol

        server = await serve(
            "127.0.0.1", 0, configuration=configuration, create_protocol=create_protocol
        )
        raw = RawServer(server, connections)
        servers.append(raw)
        return raw

    try:
        yield start
    finally:
        for raw in servers:
            raw.server.close()


@dataclass
class StockOutcome:
    """What a stock aioquic client saw when it sent one plain request to a node."""

    connect_error: BaseException | None
    handshake_completed: bool
    response: bytes
    terminated: events.ConnectionTerminated | None


async def stock_request(
    address: Address, certificate: x509.Certificate | None, key: PrivateKey | None
) -> StockOutcome:
    """Connect with a stock aioquic client (no CA checks) and send one plain request."""
    configuration = QuicConfiguration(
        is_client=True, alpn_protocols=[ALPN], verify_mode=ssl.CERT_NONE
    )
    if certificate is not None:
        configuration.certificate = certificate
        configuration.private_key = key
    protocol: RecordingProtocol | None = None
    response = b""
    try:
        async with connect(
            address[0], address[1], configuration=configuration, create_protocol=RecordingProtocol
        ) as client:
            assert isinstance(client, RecordingProtocol)
            protocol = client
            reader, writer = await client.create_stream()
            writer.write(frames.encode_request(PLAIN_PROTOCOL, b"hello"))
            writer.write_eof()
            with contextlib.suppress(ConnectionError):
                response = await asyncio.wait_for(reader.read(), 3.0)
            if not response:  # refused: wait for the CONNECTION_CLOSE to be reported
                with contextlib.suppress(ConnectionError):
                    await asyncio.wait_for(client.wait_closed(), 3.0)
    except ConnectionError as exc:
        return StockOutcome(exc, False, b"", None)
    assert protocol is not None
    return StockOutcome(
        None, protocol.saw(events.HandshakeCompleted), response, protocol.terminated
    )


async def forgotten(node: Node, timeout: float = 3.0) -> bool:
    """Whether the node drops every connection within *timeout* (after the closing period)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not node.smartsock.connections:
            return True
        await asyncio.sleep(0.02)
    return False


def assert_refused(outcome: StockOutcome, code: int) -> None:
    assert outcome.response == b"", "the refused client got an answer"
    if outcome.connect_error is not None:
        return  # refused before the client even finished its side of the handshake
    assert outcome.terminated is not None, "the refused client's connection stayed open"
    assert outcome.terminated.error_code == code, (
        f"closed with {outcome.terminated.error_code:#x} "
        f"({outcome.terminated.reason_phrase!r}), expected {code:#x}"
    )


def assert_no_peer(node: Node, handler: Handler) -> None:
    assert handler.calls == [], "a request reached the handler"
    stats = node.stats()
    assert stats["rpc.pooled_connections"] == 0
    assert stats.get("rpc.requests_served", 0) == 0


# -- korium dialler, korium listener ----------------------------------------------------------


async def test_wrong_expected_identity_fails_in_the_handshake(make_node: MakeNode) -> None:
    a = await make_node()
    b, handler = await served_node(make_node)
    stranger = await make_node()

    started = time.monotonic()
    with pytest.raises(IdentityMismatchError):
        await a.send(stranger.identity, b"x", addresses=[b.local_addr])
    assert time.monotonic() - started < FAST
    started = time.monotonic()
    with pytest.raises(IdentityMismatchError):
        await a.connect(stranger.identity, [b.local_addr])
    assert time.monotonic() - started < FAST
    assert_no_peer(b, handler)
    assert a.stats()["rpc.pooled_connections"] == 0

    # positive control: the right identity at the same address
    assert await a.send(b.identity, b"x", addresses=[b.local_addr]) == b"ok:x"
    assert handler.calls == [(a.identity, b"x")]


async def test_refused_dial_does_not_poison_the_peers_path(make_node: MakeNode) -> None:
    """A refused dial must not make the wrong address a path of the identity we expected.

    (Found on the original SmartSock.dial, which made every dialled address a path candidate
    before the handshake; when a korium node lived there it answered probes and every later
    send to the right address timed out.) A huge switch margin takes RTT noise out of it.
    """
    sticky = TransportConfig(paths=PathConfig(switch_margin_ms=1e9))
    a = await make_node(config=NodeConfig(transport=sticky))
    b = await make_node()
    x, handler = await served_node(make_node)
    with pytest.raises(IdentityMismatchError):
        await a.send(x.identity, b"1", addresses=[b.local_addr])  # x's stale address: b now
    assert await a.send(x.identity, b"2", addresses=[x.local_addr], timeout=2) == b"ok:2"
    assert handler.calls == [(a.identity, b"2")]


async def test_listener_plugin_veto_refuses_the_dialler(make_node: MakeNode) -> None:
    """TLS 1.3 clients finish first: the dialler must still learn of the refusal in the dial.

    (Found on the original PeerConnection, which resolved the dial at HandshakeCompleted: the
    dialler got a dead connection, korium_peer_connected fired, and send() failed ~90 ms later
    with ConnectionLostError.)
    """
    veto = Veto()
    server, handler = await served_node(make_node, veto)
    watch = PeerWatch()
    dialler = await make_node(watch)

    started = time.monotonic()
    with pytest.raises(IdentityMismatchError, match="not welcome"):
        await dialler.send(server.identity, b"x", addresses=[server.local_addr])
    with pytest.raises(IdentityMismatchError, match="not welcome"):
        await dialler.connect(server.identity, [server.local_addr])
    assert time.monotonic() - started < 2 * FAST
    assert veto.votes == [dialler.identity, dialler.identity]
    assert watch.connected == [], "the dialler reported a peer that refused it as connected"
    assert_no_peer(server, handler)
    assert dialler.stats()["rpc.pooled_connections"] == 0

    # positive control: the same dialler and handler without the veto
    plain, plain_handler = await served_node(make_node)
    assert await dialler.send(plain.identity, b"x", addresses=[plain.local_addr]) == b"ok:x"
    assert plain_handler.calls == [(dialler.identity, b"x")]
    assert watch.connected == [plain.identity]


async def test_dialler_plugin_veto_refuses_the_listener(make_node: MakeNode) -> None:
    veto = Veto()
    dialler = await make_node(veto)
    server, handler = await served_node(make_node)

    started = time.monotonic()
    with pytest.raises(IdentityMismatchError, match="not welcome"):
        await dialler.send(server.identity, b"x", addresses=[server.local_addr])
    assert time.monotonic() - started < FAST
    assert veto.votes == [server.identity]
    assert_no_peer(server, handler)
    assert dialler.stats()["rpc.pooled_connections"] == 0

    # positive control: a dialler without the veto reaches the same listener
    other = await make_node()
    assert await other.send(server.identity, b"x", addresses=[server.local_addr]) == b"ok:x"


async def test_dialler_refuses_a_listener_with_weak_proof_of_work(make_node: MakeNode) -> None:
    dialler = await make_node(difficulty=STRONG_DIFFICULTY)
    weak = weak_identity(STRONG_DIFFICULTY)
    server = await make_node(identity=weak, difficulty=0)
    handler = Handler()
    server.set_request_handler(handler)

    started = time.monotonic()
    with pytest.raises(IdentityMismatchError, match="proof of work"):
        await dialler.send(server.identity, b"x", addresses=[server.local_addr])
    assert time.monotonic() - started < FAST
    assert_no_peer(server, handler)

    # positive control: a listener whose proof reaches the dialler's difficulty
    strong, strong_handler = await served_node(make_node, difficulty=STRONG_DIFFICULTY)
    assert await dialler.send(strong.identity, b"x", addresses=[strong.local_addr]) == b"ok:x"
    assert strong_handler.calls == [(dialler.identity, b"x")]


async def test_resumption_is_never_configured(make_node: MakeNode) -> None:
    a = await make_node()
    b, _ = await served_node(make_node)
    for node in (a, b):
        sock = node.smartsock
        client, server = sock._client_config, sock._server_config
        # aioquic keeps the ticket callbacks on the connection, not the configuration: check both
        assert getattr(client, "session_ticket_handler", None) is None
        assert getattr(server, "session_ticket_fetcher", None) is None
        assert client.session_ticket is None
        assert server.session_ticket is None
    assert await a.send(b.identity, b"x", addresses=[b.local_addr]) == b"ok:x"
    live = [*a.smartsock.connections, *b.smartsock.connections]
    assert len(live) == 2
    for conn in live:
        quic = conn.quic
        assert quic._session_ticket_handler is None
        assert quic._session_ticket_fetcher is None
        assert quic.tls.new_session_ticket_cb is None, "tickets would be issued or stored"
        assert quic.tls.get_session_ticket_cb is None, "tickets would be accepted"
        assert quic.tls.session_resumed is False


# -- korium dialler, stock aioquic listener ---------------------------------------------------


async def test_foreign_certificate_is_refused(
    make_node: MakeNode,
    raw_server: Callable[[x509.Certificate, PrivateKey], Awaitable[RawServer]],
) -> None:
    """The listener shows X's certificate but holds Y's key: CertificateVerify fails."""
    dialler = await make_node()
    x = await NodeIdentity.generate_async(DIFFICULTY)
    y = await NodeIdentity.generate_async(DIFFICULTY)
    certificate, _ = build_certificate(x)
    impostor = await raw_server(certificate, ed25519_key(y))

    started = time.monotonic()
    with pytest.raises(PeerUnreachableError):  # IdentityMismatchError is a subclass
        await dialler.send(x.identity, b"x", addresses=[impostor.address])
    assert time.monotonic() - started < FAST
    await asyncio.sleep(0.05)  # give a (wrongly) continued handshake time to show up
    assert not impostor.completed(), "the impostor completed a handshake"
    assert not impostor.stream_data(), "a request reached the impostor"
    assert dialler.stats()["rpc.pooled_connections"] == 0

    # positive control: the same certificate with its own key is accepted
    genuine = await raw_server(certificate, ed25519_key(x))
    conn = await dialler.connect(x.identity, [genuine.address])
    assert conn.peer == x.identity
    for _ in range(100):  # bounded: the listener completes one flight later
        if genuine.completed():
            break
        await asyncio.sleep(0.01)
    assert genuine.completed()


async def test_non_ed25519_listener_certificate_is_refused(
    make_node: MakeNode,
    raw_server: Callable[[x509.Certificate, PrivateKey], Awaitable[RawServer]],
) -> None:
    dialler = await make_node()
    certificate, key = ec_certificate()
    listener = await raw_server(certificate, key)
    somebody = (await NodeIdentity.generate_async(DIFFICULTY)).identity

    started = time.monotonic()
    with pytest.raises(IdentityMismatchError, match="not Ed25519"):
        await dialler.connect(somebody, [listener.address])
    assert time.monotonic() - started < FAST
    await asyncio.sleep(0.05)
    assert not listener.completed()
    assert not listener.stream_data()

    # positive control: a stock listener with a proper korium certificate
    x = await NodeIdentity.generate_async(DIFFICULTY)
    proper = await raw_server(build_certificate(x)[0], ed25519_key(x))
    assert (await dialler.connect(x.identity, [proper.address])).peer == x.identity


# -- stock aioquic dialler, korium listener ---------------------------------------------------


async def test_client_without_certificate_is_refused(make_node: MakeNode) -> None:
    node, handler = await served_node(make_node)
    outcome = await stock_request(node.local_addr, None, None)
    assert_refused(outcome, CERTIFICATE_REQUIRED)
    assert_no_peer(node, handler)
    assert await forgotten(node), "the refused connection was never forgotten"

    # positive control: the same stock client with a korium certificate is served
    x = await NodeIdentity.generate_async(DIFFICULTY)
    certificate, key = build_certificate(x)
    accepted = await stock_request(node.local_addr, certificate, key)
    assert accepted.connect_error is None
    assert frames.decode_response(accepted.response) == frames.Ok(b"ok:hello")
    assert handler.calls == [(x.identity, b"hello")]


def _no_proof(node_identity: NodeIdentity) -> tuple[x509.Certificate, PrivateKey]:
    key = ed25519_key(node_identity)
    return self_signed(key, cn=node_identity.identity.hex()), key


def _malformed_proof(node_identity: NodeIdentity) -> tuple[x509.Certificate, PrivateKey]:
    key = ed25519_key(node_identity)
    extension = x509.UnrecognizedExtension(POW_EXTENSION_OID, b"\x00\x01")  # not 8 bytes
    return self_signed(key, [extension], cn=node_identity.identity.hex()), key


def _weak_proof(node_identity: NodeIdentity) -> tuple[x509.Certificate, PrivateKey]:
    weak = weak_identity(STRONG_DIFFICULTY)
    certificate, key = build_certificate(weak)
    return certificate, key


def _foreign_key(node_identity: NodeIdentity) -> tuple[x509.Certificate, PrivateKey]:
    certificate, _ = build_certificate(node_identity)  # a strong, valid certificate...
    return certificate, Ed25519PrivateKey.generate()  # ...but not our key


def _ec(node_identity: NodeIdentity) -> tuple[x509.Certificate, PrivateKey]:
    return ec_certificate()


@pytest.mark.parametrize(
    ("make_certificate", "code"),
    [
        (_ec, BAD_CERTIFICATE),
        (_no_proof, BAD_CERTIFICATE),
        (_malformed_proof, BAD_CERTIFICATE),
        (_weak_proof, BAD_CERTIFICATE),
        (_foreign_key, CRYPTO_ERROR + tls.AlertDescription.decrypt_error),
    ],
    ids=["ec-certificate", "no-proof", "malformed-proof", "weak-proof", "foreign-key"],
)
async def test_client_certificate_is_refused(
    make_node: MakeNode,
    make_certificate: Callable[[NodeIdentity], tuple[x509.Certificate, PrivateKey]],
    code: int,
) -> None:
    node, handler = await served_node(make_node, difficulty=STRONG_DIFFICULTY)
    strong = await NodeIdentity.generate_async(STRONG_DIFFICULTY)

    certificate, key = make_certificate(strong)
    outcome = await stock_request(node.local_addr, certificate, key)
    assert_refused(outcome, code)
    assert_no_peer(node, handler)

    # positive control: the same identity with a proper certificate (proof >= 12 bits)
    certificate, key = build_certificate(strong)
    accepted = await stock_request(node.local_addr, certificate, key)
    assert frames.decode_response(accepted.response) == frames.Ok(b"ok:hello")
    assert handler.calls == [(strong.identity, b"hello")]
