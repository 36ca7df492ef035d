"""Regression guard: the private aioquic internals korium's mutual TLS is built on.

aioquic has no public API to request a client certificate or to verify a peer certificate
inside the handshake, so ``korium/transport/tls.py`` overrides private methods and sets private
attributes (``PRIVATE_HOOKS``). An aioquic upgrade may rename any of them *silently*: the
override would simply never be called and peers would go unauthenticated. These tests fail
loudly instead, both structurally (every hook is still there, with the signature korium's
overrides assume) and behaviourally (a sans-IO handshake between two in-memory connections
really exchanges and checks both certificates).
"""

from __future__ import annotations

import inspect
import ssl
from collections.abc import Callable
from typing import Any, Final

import aioquic
import pytest
from aioquic import tls
from aioquic._buffer import Buffer
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import pull_quic_header
from cryptography import x509

from korium.identity import Identity, Keypair, NodeIdentity, ProofOfWork
from korium.transport.tls import (
    ALPN,
    CONNECTION_ID_LENGTH,
    MAX_STREAMS,
    PRIVATE_HOOKS,
    KoriumQuicConnection,
    KoriumTlsContext,
    build_certificate,
    quic_configuration,
)

PINNED_MINOR: Final = "1.7."
CLIENT_ADDR: Final = ("127.0.0.1", 40001)
SERVER_ADDR: Final = ("127.0.0.1", 40002)
CERTIFICATE_REQUIRED: Final = 0x100 + tls.AlertDescription.certificate_required  # 0x174
BAD_CERTIFICATE: Final = 0x100 + tls.AlertDescription.bad_certificate  # 0x12a

UPGRADE_HINT: Final = (
    "An aioquic upgrade broke korium's mutual TLS (installed aioquic {version}). "
    "korium/transport/tls.py relies on private aioquic internals listed in PRIVATE_HOOKS; "
    "check aioquic's tls.py (Context) and quic/connection.py (QuicConnection) for the renamed "
    "or re-signed hook, update KoriumTlsContext / KoriumQuicConnection and PRIVATE_HOOKS, then "
    "rerun tests/transport/test_handshake.py -- or pin aioquic back to ~=1.7.2."
)


def _hint() -> str:
    return UPGRADE_HINT.format(version=aioquic.__version__)


def _instance_of(cls: type) -> object:
    """A freshly constructed aioquic object carrying *cls*'s instance attributes."""
    if issubclass(cls, QuicConnection):
        return QuicConnection(configuration=QuicConfiguration(is_client=True))
    if issubclass(cls, tls.Context):
        return tls.Context(is_client=False)
    raise AssertionError(f"no recipe to construct {cls.__qualname__}: extend _instance_of")


def _noop_verifier(peer: Identity, certificate: x509.Certificate) -> str | None:
    return None


def _node_identity() -> NodeIdentity:
    # The proof is never checked by KoriumQuicConnection itself (only by the node's verifier).
    return NodeIdentity(Keypair.generate(), ProofOfWork(0))


def _config(node_identity: NodeIdentity, *, is_client: bool) -> QuicConfiguration:
    certificate, key = build_certificate(node_identity)
    return quic_configuration(
        is_client=is_client,
        certificate=certificate,
        private_key=key,
        idle_timeout=10.0,
        max_data=1 << 20,
        max_stream_data=1 << 20,
    )


# -- structure ------------------------------------------------------------------------------


def test_aioquic_is_the_pinned_minor() -> None:
    assert aioquic.__version__.startswith(PINNED_MINOR), (
        f"aioquic {aioquic.__version__} is installed but korium pins {PINNED_MINOR}x "
        "(pyproject: aioquic~=1.7.2) because its mutual TLS uses private aioquic internals "
        "(korium.transport.tls.PRIVATE_HOOKS). Before moving the pin, review aioquic's "
        "changes to tls.py and quic/connection.py, then run tests/transport/"
        "test_aioquic_hooks.py and tests/transport/test_handshake.py against the new version."
    )


@pytest.mark.parametrize(
    ("cls", "attribute"),
    PRIVATE_HOOKS,
    ids=[f"{cls.__name__}.{attribute}" for cls, attribute in PRIVATE_HOOKS],
)
def test_private_hook_exists(cls: type, attribute: str) -> None:
    where = f"{cls.__module__}.{cls.__qualname__}.{attribute}"
    if hasattr(cls, attribute):
        return
    # Instance attributes only exist once __init__ ran.
    instance = _instance_of(cls)
    assert hasattr(instance, attribute), f"{where} is gone. {_hint()}"


def test_private_hooks_cover_what_korium_overrides() -> None:
    """Every aioquic method korium overrides is listed in PRIVATE_HOOKS (so it is guarded)."""
    hooks = set(PRIVATE_HOOKS)
    for subclass, base in ((KoriumQuicConnection, QuicConnection), (KoriumTlsContext, tls.Context)):
        for name, member in vars(subclass).items():
            private = name.startswith("_") and not name.startswith("__")
            if private and callable(member) and hasattr(base, name):
                assert (base, name) in hooks, (
                    f"{subclass.__qualname__} overrides private {base.__qualname__}.{name} "
                    "but PRIVATE_HOOKS does not list it: add it so upgrades are guarded"
                )


@pytest.mark.parametrize(
    ("base", "override"),
    [
        (QuicConnection._initialize, KoriumQuicConnection._initialize),
        (
            tls.Context._check_certificate_verify_signature,
            KoriumTlsContext._check_certificate_verify_signature,
        ),
        (tls.Context._server_handle_certificate, KoriumTlsContext._server_handle_certificate),
    ],
    ids=["_initialize", "_check_certificate_verify_signature", "_server_handle_certificate"],
)
def test_overridden_hooks_keep_their_signature(
    base: Callable[..., Any], override: Callable[..., Any]
) -> None:
    """korium's overrides call ``super()`` positionally: aioquic must take the same arguments."""
    expected = [p.kind for p in inspect.signature(override).parameters.values()]
    actual = [p.kind for p in inspect.signature(base).parameters.values()]
    assert actual == expected, (
        f"aioquic's {base.__qualname__}{inspect.signature(base)} no longer matches korium's "
        f"override {inspect.signature(override)}. {_hint()}"
    )


def test_instance_hooks_have_the_shape_korium_uses() -> None:
    quic = QuicConnection(configuration=QuicConfiguration(is_client=True))
    for limit in (quic._local_max_streams_bidi, quic._local_max_streams_uni):
        assert isinstance(limit.value, int), f"stream Limit.value changed. {_hint()}"
        assert isinstance(limit.sent, int), f"stream Limit.sent changed. {_hint()}"
    assert quic._close_event is None, f"QuicConnection._close_event changed. {_hint()}"
    assert quic._handshake_confirmed is False, (
        f"QuicConnection._handshake_confirmed changed. {_hint()}"
    )
    context = tls.Context(is_client=False)
    assert context._request_client_certificate is False, (
        f"tls.Context._request_client_certificate changed meaning. {_hint()}"
    )
    assert context._peer_certificate is None, f"tls.Context._peer_certificate changed. {_hint()}"
    # public-but-unstable helpers the overrides use
    assert callable(tls.pull_certificate), f"tls.pull_certificate is gone. {_hint()}"
    assert issubclass(tls.AlertBadCertificate, tls.Alert), _hint()
    assert int(tls.AlertDescription.certificate_required) == 116, _hint()
    assert "reason_phrase" in events.ConnectionTerminated.__dataclass_fields__, _hint()


# -- behaviour ------------------------------------------------------------------------------


def test_server_connection_requests_a_client_certificate_after_initialize() -> None:
    # A real client Initial makes aioquic call _initialize on the server connection.
    client = QuicConnection(
        configuration=QuicConfiguration(
            is_client=True, alpn_protocols=[ALPN], connection_id_length=CONNECTION_ID_LENGTH
        )
    )
    client.connect(SERVER_ADDR, now=1.0)
    initial = [data for data, _ in client.datagrams_to_send(1.0)]
    header = pull_quic_header(Buffer(data=initial[0]), host_cid_length=CONNECTION_ID_LENGTH)
    server = KoriumQuicConnection(
        configuration=_config(_node_identity(), is_client=False),
        original_destination_connection_id=header.destination_cid,
        expected=None,
        verify=_noop_verifier,
    )
    assert not hasattr(server, "tls"), "aioquic now builds its TLS context before _initialize"
    for data in initial:
        server.receive_datagram(data, CLIENT_ADDR, now=1.0)
    assert isinstance(server.tls, KoriumTlsContext), (
        f"KoriumQuicConnection._initialize no longer installs KoriumTlsContext. {_hint()}"
    )
    assert server.tls._request_client_certificate is True, (
        f"a korium listener no longer asks for the client certificate. {_hint()}"
    )
    # the stream limits korium sets survive construction (they go out as transport parameters)
    assert server._local_max_streams_bidi.value == MAX_STREAMS
    assert server._local_max_streams_bidi.sent == MAX_STREAMS


def test_client_connection_installs_the_korium_context_but_does_not_request() -> None:
    client = KoriumQuicConnection(
        configuration=_config(_node_identity(), is_client=True),
        expected=_node_identity().identity,
        verify=_noop_verifier,
    )
    client.connect(SERVER_ADDR, now=0.0)  # calls _initialize
    assert isinstance(client.tls, KoriumTlsContext), _hint()
    assert client.tls._request_client_certificate is False


def _pump(
    client: QuicConnection, server_factory: Callable[[bytes], QuicConnection]
) -> QuicConnection:
    """Run a handshake in memory; the server is created from the client's first datagram."""
    now = 1.0
    client.connect(SERVER_ADDR, now=now)
    first = [data for data, _ in client.datagrams_to_send(now)]
    assert first, "the client sent nothing"
    header = pull_quic_header(Buffer(data=first[0]), host_cid_length=CONNECTION_ID_LENGTH)
    server = server_factory(header.destination_cid)
    for data in first:
        server.receive_datagram(data, CLIENT_ADDR, now)
    for _ in range(20):  # bounded: a handshake needs a handful of flights
        now += 0.001
        moved = False
        for data, _ in server.datagrams_to_send(now):
            client.receive_datagram(data, SERVER_ADDR, now)
            moved = True
        for data, _ in client.datagrams_to_send(now):
            server.receive_datagram(data, CLIENT_ADDR, now)
            moved = True
        if not moved:
            break
    return server


def _drain(quic: QuicConnection) -> list[events.QuicEvent]:
    found: list[events.QuicEvent] = []
    while (event := quic.next_event()) is not None:
        found.append(event)
    return found


def test_sans_io_handshake_authenticates_both_sides() -> None:
    client_id, server_id = _node_identity(), _node_identity()
    seen: list[tuple[str, Identity]] = []

    def verifier(side: str) -> Callable[[Identity, x509.Certificate], str | None]:
        def verify(peer: Identity, certificate: x509.Certificate) -> str | None:
            seen.append((side, peer))
            return None

        return verify

    client = KoriumQuicConnection(
        configuration=_config(client_id, is_client=True),
        expected=server_id.identity,
        verify=verifier("client"),
    )

    def make_server(cid: bytes) -> QuicConnection:
        return KoriumQuicConnection(
            configuration=_config(server_id, is_client=False),
            original_destination_connection_id=cid,
            expected=None,
            verify=verifier("server"),
        )

    server = _pump(client, make_server)
    assert isinstance(server, KoriumQuicConnection)
    assert client._handshake_confirmed, f"HANDSHAKE_DONE no longer confirms. {_hint()}"
    assert any(isinstance(e, events.HandshakeCompleted) for e in _drain(client))
    assert any(isinstance(e, events.HandshakeCompleted) for e in _drain(server))
    assert client.peer_identity == server_id.identity
    assert server.peer_identity == client_id.identity, (
        f"the listener did not receive/verify the client certificate. {_hint()}"
    )
    peer_certificate = server.tls._peer_certificate
    assert peer_certificate is not None
    assert peer_certificate.subject.rfc4514_string() == f"CN={client_id.identity.hex()}"
    assert sorted(seen) == [("client", server_id.identity), ("server", client_id.identity)]


def test_sans_io_listener_refuses_a_client_without_certificate() -> None:
    """A stock aioquic client sends an empty Certificate only if asked: this proves we ask."""
    stock = QuicConnection(
        configuration=QuicConfiguration(
            is_client=True,
            alpn_protocols=[ALPN],
            verify_mode=ssl.CERT_NONE,
            connection_id_length=CONNECTION_ID_LENGTH,
        )
    )

    def make_server(cid: bytes) -> QuicConnection:
        return KoriumQuicConnection(
            configuration=_config(_node_identity(), is_client=False),
            original_destination_connection_id=cid,
            expected=None,
            verify=_noop_verifier,
        )

    server = _pump(stock, make_server)
    assert isinstance(server, KoriumQuicConnection)
    assert server.peer_identity is None
    assert not any(isinstance(e, events.HandshakeCompleted) for e in _drain(server))
    close = server._close_event
    assert close is not None, f"the listener accepted a client without certificate. {_hint()}"
    assert close.error_code == CERTIFICATE_REQUIRED


def test_sans_io_dialer_refuses_the_wrong_identity_inside_the_handshake() -> None:
    server_id = _node_identity()
    client = KoriumQuicConnection(
        configuration=_config(_node_identity(), is_client=True),
        expected=_node_identity().identity,  # not server_id
        verify=_noop_verifier,
    )

    def make_server(cid: bytes) -> QuicConnection:
        return KoriumQuicConnection(
            configuration=_config(server_id, is_client=False),
            original_destination_connection_id=cid,
            expected=None,
            verify=_noop_verifier,
        )

    server = _pump(client, make_server)
    assert not any(isinstance(e, events.HandshakeCompleted) for e in _drain(client))
    assert client.peer_identity is None
    close = client._close_event
    assert close is not None, f"the dialer did not abort the handshake. {_hint()}"
    assert close.error_code == BAD_CERTIFICATE
    assert not any(isinstance(e, events.HandshakeCompleted) for e in _drain(server))


def test_sans_io_listener_refusal_is_never_confirmed_to_the_dialer() -> None:
    """A TLS 1.3 client completes before the listener checks its certificate; korium's dial
    waits for confirmation (HANDSHAKE_DONE), which a refusing listener never sends."""
    client = KoriumQuicConnection(
        configuration=_config(_node_identity(), is_client=True),
        expected=None,
        verify=_noop_verifier,
    )

    def refuse(peer: Identity, certificate: x509.Certificate) -> str | None:
        return "not welcome"

    def make_server(cid: bytes) -> QuicConnection:
        return KoriumQuicConnection(
            configuration=_config(_node_identity(), is_client=False),
            original_destination_connection_id=cid,
            expected=None,
            verify=refuse,
        )

    server = _pump(client, make_server)
    assert isinstance(server, KoriumQuicConnection)
    assert server.peer_identity is None
    server_close = server._close_event
    assert server_close is not None
    assert server_close.error_code == BAD_CERTIFICATE
    assert any(isinstance(e, events.HandshakeCompleted) for e in _drain(client))
    assert not client._handshake_confirmed, (
        f"a refused client saw its handshake confirmed. {_hint()}"
    )
    client_close = client._close_event
    assert client_close is not None, "the dialer never heard of the refusal"
    assert client_close.error_code == BAD_CERTIFICATE
