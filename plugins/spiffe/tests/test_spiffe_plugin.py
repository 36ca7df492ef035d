"""The spiffe plugin in a node: certificates, handshake binding, peer policy, settings, CLI.

Every handshake here is real QUIC over 127.0.0.1 between korium nodes; what a node presents is
observed from the other side of the handshake (an ``Observer`` plugin object records each peer
certificate a node verifies), so the tests see exactly the certificate that travels. Nodes that
must present a hand-made SPIFFE ID (another node's identity, two IDs, a malformed one) carry a
``Forger`` plugin object and NOT the spiffe plugin, so nothing on their side vets what they
present. Every refusal is checked to be a handshake refusal (IdentityMismatchError, TLS alert 42
bad_certificate) by the node that holds the policy, after it saw the certificate, with nothing
served and nobody reported connected; every kind of refusal has a positive control.

Waits are bounded (``DEADLINE_S``) but never timed: a refusal inside the handshake takes
milliseconds on loopback, so the bound only turns a hang into a failure.
"""

from __future__ import annotations

import asyncio
import copy
import json
import shutil
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import click
import korium_spiffe
import pytest
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from korium_spiffe import (
    SpiffeConfig,
    extract_spiffe_id_from_cert,
    generate_ed25519_cert_with_spiffe,
    parse_spiffe_id,
    validate_spiffe_id,
)
from korium_spiffe.certificates import spiffe_extension
from korium_spiffe.spiffe_id import GO_SPIFFE_MESSAGES

import korium.cli
from korium import Identity, Keypair, Node, NodeBuilder, hookimpl
from korium.errors import ConfigError, IdentityMismatchError, TransportError
from korium.hookspecs import CertificateExtension
from korium.identity import NodeIdentity
from korium.transport.addresses import Address
from korium.transport.connection import PeerConnection

DIFFICULTY: Final = 4
DEADLINE_S: Final = 10.0
"""Bound on any one dial or request (loopback handshakes take milliseconds)."""
TRUST_DOMAIN: Final = "example.org"
PING: Final = b"ping"
REFUSED: Final = "handshake refused (TLS alert 42): "
"""How a dial refused inside the handshake (bad_certificate) reads, on either side."""
NOT_IN_POLICY: Final = "is outside the admitted ones"
NO_SPIFFE_ID: Final = "the peer presents no SPIFFE ID, and this node admits only SPIFFE peers"
DIALS: Final = "checker-dials"
LISTENS: Final = "checker-listens"
DIRECTIONS: Final = (DIALS, LISTENS)
"""Who opens the connection: the node whose plugin decides (the checker), or the other peer."""


# -- plugin objects -----------------------------------------------------------------------------


class Observer:
    """Records every peer certificate its node verifies (voting to accept) and every peer that
    its node reports connected."""

    def __init__(self) -> None:
        self.certificates: list[tuple[Identity, x509.Certificate]] = []
        self.connected: list[Identity] = []

    @hookimpl
    def korium_verify_peer_certificate(
        self, node: Node, peer: Identity, certificate: x509.Certificate
    ) -> None:
        self.certificates.append((peer, certificate))

    @hookimpl
    def korium_peer_connected(self, node: Node, peer: Identity) -> None:
        self.connected.append(peer)

    def certificate_of(self, peer: Identity) -> x509.Certificate:
        """The last certificate *peer* presented to this node in a handshake."""
        seen = [certificate for who, certificate in self.certificates if who == peer]
        assert seen, f"{peer.short}... never presented a certificate to this node"
        return seen[-1]


class Forger:
    """Puts hand-made SPIFFE IDs (one URI SAN extension each) into its node's certificate."""

    def __init__(self, spiffe_ids: Callable[[Identity], Sequence[str]]) -> None:
        self.spiffe_ids = spiffe_ids

    @hookimpl
    def korium_certificate_extensions(self, node: Node) -> list[CertificateExtension]:
        return [(spiffe_extension(uri), False) for uri in self.spiffe_ids(node.identity)]


class Handler:
    """A request handler that remembers every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[Identity, bytes]] = []

    def __call__(self, peer: Identity, data: bytes) -> bytes:
        self.calls.append((peer, data))
        return b"pong:" + data


@dataclass
class Peer:
    """A running node with its Observer and request handler."""

    node: Node
    observer: Observer
    handler: Handler

    @property
    def identity(self) -> Identity:
        return self.node.identity

    @property
    def address(self) -> Address:
        return self.node.local_addr


MakePeer = Callable[..., Awaitable[Peer]]


@pytest.fixture
async def make_peer() -> AsyncIterator[MakePeer]:
    """``await make_peer(*plugins, trust_domain=, workload_path=, allowed_peers=)``: a node on
    127.0.0.1 loading exactly *plugins* plus an Observer; closed at teardown."""
    peers: list[Peer] = []

    async def make(
        *plugins: str | object,
        trust_domain: str | None = None,
        workload_path: str | None = None,
        allowed_peers: Sequence[str] | None = None,
    ) -> Peer:
        observer = Observer()
        builder = Node.builder("127.0.0.1:0").difficulty(DIFFICULTY)
        builder.plugins([*plugins, observer])
        if trust_domain is not None:
            builder.spiffe_trust_domain(trust_domain)
        if workload_path is not None:
            builder.spiffe_workload_path(workload_path)
        if allowed_peers is not None:
            builder.plugin_settings("spiffe", allowed_peers=list(allowed_peers))
        node = await builder.build()
        handler = Handler()
        node.set_request_handler(handler)
        peer = Peer(node, observer, handler)
        peers.append(peer)
        return peer

    try:
        yield make
    finally:
        for peer in peers:
            await peer.node.close()


def forger(make_peer: MakePeer, spiffe_ids: Callable[[Identity], Sequence[str]]) -> Awaitable[Peer]:
    """A node WITHOUT the spiffe plugin presenting ``spiffe_ids(own identity)``."""
    return make_peer(Forger(spiffe_ids))


# -- dialling -----------------------------------------------------------------------------------


async def request(dialler: Peer, listener: Peer) -> bytes:
    """A plain request from *dialler* to *listener* at its address (dials if needed)."""
    return await dialler.node.send(
        listener.identity, PING, addresses=[listener.address], timeout=DEADLINE_S
    )


async def dial(dialler: Peer, listener: Peer) -> PeerConnection:
    async with asyncio.timeout(DEADLINE_S):
        return await dialler.node.connect(listener.identity, [listener.address])


def ends(checker: Peer, other: Peer, direction: str) -> tuple[Peer, Peer]:
    """(dialler, listener) for *direction*."""
    return (checker, other) if direction == DIALS else (other, checker)


async def assert_accepted(dialler: Peer, listener: Peer) -> None:
    assert await request(dialler, listener) == b"pong:" + PING
    assert listener.handler.calls == [(dialler.identity, PING)]
    assert dialler.identity in listener.node.rpc.connected_peers()
    assert listener.identity in dialler.node.rpc.connected_peers()


def assert_never_connected(a: Peer, b: Peer) -> None:
    for one, other in ((a, b), (b, a)):
        assert one.handler.calls == [], "a request reached a handler"
        assert other.identity not in one.observer.connected, "a refused peer was reported"
        assert other.identity not in one.node.rpc.connected_peers()
        assert one.node.stats().get("rpc.requests_served", 0) == 0


async def assert_refused(checker: Peer, other: Peer, direction: str, *fragments: str) -> str:
    """*checker* refuses *other* in the handshake, dialling or dialled; returns the message."""
    dialler, listener = ends(checker, other, direction)
    with pytest.raises(IdentityMismatchError) as info:
        await request(dialler, listener)
    message = str(info.value)
    assert message.startswith(REFUSED), message
    for fragment in fragments:
        assert fragment in message, message
    # the checker got as far as the certificate checks, and nothing came of the connection
    checker.observer.certificate_of(other.identity)
    assert_never_connected(checker, other)
    return message


def only_uris(certificate: x509.Certificate) -> list[str]:
    """Every URI SAN of *certificate* (the whole SAN must consist of URIs)."""
    names = list(certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    assert all(isinstance(name, x509.UniformResourceIdentifier) for name in names), names
    return [name.value for name in names]


def extension_values(certificate: x509.Certificate) -> list[tuple[str, bool, object]]:
    return [(e.oid.dotted_string, e.critical, e.value) for e in certificate.extensions]


def has_san(certificate: x509.Certificate) -> bool:
    try:
        certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return False
    return True


# -- 1. the certificate a node presents ---------------------------------------------------------


async def test_node_presents_its_spiffe_id_as_the_only_uri_san(make_peer: MakePeer) -> None:
    api = await make_peer("spiffe", trust_domain=TRUST_DOMAIN, workload_path="api/v1")
    watcher = await make_peer()  # no spiffe plugin: it only looks
    await assert_accepted(watcher, api)

    expected = f"spiffe://example.org/{api.identity.hex()}/api/v1"
    certificate = watcher.observer.certificate_of(api.identity)
    assert only_uris(certificate) == [expected]
    der = certificate.public_bytes(Encoding.DER)
    assert extract_spiffe_id_from_cert(der) == expected
    assert validate_spiffe_id(expected, TRUST_DOMAIN) == api.identity
    assert parse_spiffe_id(expected).segments == (api.identity.hex(), "api", "v1")
    assert korium_spiffe.service(api.node).spiffe_id(api.identity) == expected
    # the standalone generator makes the same SAN, next to the node's own proof of work
    generated = x509.load_der_x509_certificate(
        generate_ed25519_cert_with_spiffe(
            api.node.node_identity, SpiffeConfig("example.org", "api/v1")
        )
    )
    assert only_uris(generated) == [expected]
    assert extension_values(generated) == extension_values(certificate)


async def test_node_without_trust_domain_presents_no_san(make_peer: MakePeer) -> None:
    plain = await make_peer("spiffe")
    watcher = await make_peer()
    await assert_accepted(watcher, plain)

    certificate = watcher.observer.certificate_of(plain.identity)
    assert not has_san(certificate)
    assert extract_spiffe_id_from_cert(certificate.public_bytes(Encoding.DER)) is None
    with pytest.raises(korium.KoriumError, match="no SPIFFE trust domain"):
        korium_spiffe.service(plain.node).spiffe_id(plain.identity)


class DnsName:
    """Another plugin's SAN entry, merged by the kernel into the same SAN extension."""

    @hookimpl
    def korium_certificate_extensions(self, node: Node) -> list[CertificateExtension]:
        return [(x509.SubjectAlternativeName([x509.DNSName("node.example.org")]), False)]


async def test_spiffe_id_shares_the_san_with_other_plugins(make_peer: MakePeer) -> None:
    both = await make_peer("spiffe", DnsName(), trust_domain=TRUST_DOMAIN)
    checker = await make_peer("spiffe")
    await assert_accepted(checker, both)

    certificate = checker.observer.certificate_of(both.identity)
    san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["node.example.org"]
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        f"spiffe://example.org/{both.identity.hex()}"
    ]


# -- 2. the SPIFFE ID is bound to the key, in the handshake -------------------------------------


async def test_spiffe_id_naming_another_identity_is_refused(make_peer: MakePeer) -> None:
    victim = await make_peer("spiffe", trust_domain=TRUST_DOMAIN)
    stolen = f"spiffe://example.org/{victim.identity.hex()}"
    impostor = await forger(make_peer, lambda own: [stolen])
    checker = await make_peer("spiffe")

    # the impostor dials (send, then connect): the checker refuses it as listener ...
    with pytest.raises(IdentityMismatchError) as sent:
        await request(impostor, checker)
    with pytest.raises(IdentityMismatchError) as connected:
        await dial(impostor, checker)
    # ... and the checker dials the impostor: it refuses it as dialler
    with pytest.raises(IdentityMismatchError) as dialled:
        await dial(checker, impostor)
    with pytest.raises(IdentityMismatchError) as asked:
        await request(checker, impostor)

    certificate = checker.observer.certificate_of(impostor.identity)
    assert only_uris(certificate) == [stolen]  # it did present the stolen ID
    reason = korium_spiffe.service(checker.node).check_peer(impostor.identity, certificate)
    assert reason == (
        f"the peer's SPIFFE ID {stolen} names another identity than its key {impostor.identity}"
    )
    for error in (sent, connected, dialled, asked):
        assert str(error.value) == REFUSED + reason
    assert [peer for peer, _ in checker.observer.certificates] == [impostor.identity] * 4
    assert_never_connected(checker, impostor)

    # positive controls: the victim itself connects; a node without spiffe does not object
    await assert_accepted(victim, checker)
    bystander = await make_peer()
    await assert_accepted(impostor, bystander)


async def test_certificate_with_two_spiffe_ids_is_refused(make_peer: MakePeer) -> None:
    def two(own: Identity) -> list[str]:
        return [f"spiffe://example.org/{own.hex()}", f"spiffe://example.org/{own.hex()}/api"]

    double = await forger(make_peer, two)
    checker = await make_peer("spiffe")
    for direction in DIRECTIONS:
        await assert_refused(checker, double, direction, "carries 2 SPIFFE IDs")
    # both IDs name the right key: only their number is wrong (the kernel merged them)
    assert only_uris(checker.observer.certificate_of(double.identity)) == two(double.identity)


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize(
    ("spiffe_id", "fragment"),
    [
        (
            lambda own: f"spiffe://example.org/{own.hex().upper()}",
            "must be written in lowercase hex, but has uppercase letters",
        ),
        (lambda own: f"spiffe://Example.org/{own.hex()}", GO_SPIFFE_MESSAGES["trust-domain-chars"]),
        (lambda own: f"spiffe://example.org/{own.hex()}/", GO_SPIFFE_MESSAGES["trailing-slash"]),
        (lambda own: f"spiffe://example.org/{own.hex()}/../x", GO_SPIFFE_MESSAGES["dot-segment"]),
        (lambda own: "spiffe://example.org", "names no identity"),
        (lambda own: f"spiffe://example.org/{own.hex()[:63]}", "got 63"),
    ],
    ids=["uppercase-hex", "uppercase-domain", "trailing-slash", "dot-segment", "no-id", "short"],
)
async def test_invalid_spiffe_id_is_refused(
    make_peer: MakePeer, spiffe_id: Callable[[Identity], str], fragment: str, direction: str
) -> None:
    bad = await forger(make_peer, lambda own: [spiffe_id(own)])
    checker = await make_peer("spiffe")
    message = await assert_refused(checker, bad, direction, fragment)
    assert "the peer's SPIFFE ID is invalid: " in message
    assert only_uris(checker.observer.certificate_of(bad.identity)) == [spiffe_id(bad.identity)]


@pytest.mark.parametrize("direction", DIRECTIONS)
async def test_correct_hand_made_spiffe_id_connects(make_peer: MakePeer, direction: str) -> None:
    honest = await forger(make_peer, lambda own: [f"spiffe://example.org/{own.hex()}/api"])
    checker = await make_peer("spiffe", trust_domain=TRUST_DOMAIN)
    await assert_accepted(*ends(checker, honest, direction))
    assert only_uris(checker.observer.certificate_of(honest.identity)) == [
        f"spiffe://example.org/{honest.identity.hex()}/api"
    ]


# -- 3. trust-domain and workload policy --------------------------------------------------------

# (plugins, trust domain, workload path) of the peer meeting the policy node
PeerSpec = tuple[tuple[str, ...], str | None, str | None]
SPIFFE_DOMAIN: Final[PeerSpec] = (("spiffe",), "example.org", None)
SPIFFE_API: Final[PeerSpec] = (("spiffe",), "example.org", "api")
SPIFFE_API_V1: Final[PeerSpec] = (("spiffe",), "example.org", "api/v1")
SPIFFE_API_V2: Final[PeerSpec] = (("spiffe",), "example.org", "api/v2")
SPIFFE_OTHER: Final[PeerSpec] = (("spiffe",), "other.org", None)
SPIFFE_OTHER_API: Final[PeerSpec] = (("spiffe",), "other.org", "api")
SPIFFE_NO_DOMAIN: Final[PeerSpec] = (("spiffe",), None, None)
NO_PLUGIN: Final[PeerSpec] = ((), None, None)


async def make_spec(make_peer: MakePeer, spec: PeerSpec) -> Peer:
    plugins, trust_domain, workload_path = spec
    return await make_peer(*plugins, trust_domain=trust_domain, workload_path=workload_path)


async def policy_node(make_peer: MakePeer, allowed: list[str]) -> Peer:
    return await make_peer("spiffe", trust_domain=TRUST_DOMAIN, allowed_peers=allowed)


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize(
    ("allowed", "spec"),
    [
        (["example.org"], SPIFFE_DOMAIN),
        (["example.org"], SPIFFE_API_V1),
        (["other.org", "example.org"], SPIFFE_DOMAIN),
        (["example.org/api"], SPIFFE_API),
        (["example.org/api/v1"], SPIFFE_API_V1),
        (["other.org/api", "example.org/api/v2"], SPIFFE_API_V2),
    ],
    ids=["domain", "domain-any-workload", "second-entry", "workload", "deep-workload", "mixed"],
)
async def test_policy_admits(
    make_peer: MakePeer, allowed: list[str], spec: PeerSpec, direction: str
) -> None:
    checker = await policy_node(make_peer, allowed)
    other = await make_spec(make_peer, spec)
    await assert_accepted(*ends(checker, other, direction))
    checker.observer.certificate_of(other.identity)  # it was checked, in this handshake


@pytest.mark.parametrize("direction", DIRECTIONS)
@pytest.mark.parametrize(
    ("allowed", "spec", "control"),
    [
        (["example.org"], SPIFFE_OTHER, SPIFFE_DOMAIN),
        (["example.org"], SPIFFE_NO_DOMAIN, SPIFFE_DOMAIN),
        (["example.org"], NO_PLUGIN, SPIFFE_DOMAIN),
        (["example.org/api"], SPIFFE_API_V2, SPIFFE_API),
        (["example.org/api"], SPIFFE_DOMAIN, SPIFFE_API),
        (["example.org/api"], SPIFFE_API_V1, SPIFFE_API),
        (["example.org/api"], SPIFFE_OTHER_API, SPIFFE_API),
        (["example.org/api"], NO_PLUGIN, SPIFFE_API),
        (["example.org/api/v1"], SPIFFE_API, SPIFFE_API_V1),
    ],
    ids=[
        "other-domain",
        "spiffe-without-id",
        "no-plugin",
        "workload-api/v2",
        "workload-none",
        "workload-api/v1",
        "workload-other-domain",
        "workload-no-plugin",
        "deep-workload-parent",
    ],
)
async def test_policy_refuses(
    make_peer: MakePeer, allowed: list[str], spec: PeerSpec, control: PeerSpec, direction: str
) -> None:
    checker = await policy_node(make_peer, allowed)
    other = await make_spec(make_peer, spec)
    if spec[1] is None:
        expected = NO_SPIFFE_ID
    else:
        workload = f"/{spec[2]}" if spec[2] else ""
        spiffe_id = f"spiffe://{spec[1]}/{other.identity.hex()}{workload}"
        expected = f"the peer's SPIFFE ID {spiffe_id} {NOT_IN_POLICY} ({', '.join(allowed)})"
    message = await assert_refused(checker, other, direction)
    assert message == REFUSED + expected

    # positive control: a peer the policy admits, the same way round
    admitted = await make_spec(make_peer, control)
    await assert_accepted(*ends(checker, admitted, direction))


# -- 4. openssl as an independent parser ---------------------------------------------------------


def test_openssl_reads_the_spiffe_uri_san(tmp_path: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl binary is not installed (.ci/run installs it)")
    keypair = Keypair.generate()
    der = generate_ed25519_cert_with_spiffe(keypair, SpiffeConfig("example.org", "api"))
    path = tmp_path / "svid.der"
    path.write_bytes(der)
    shown = subprocess.run(
        [openssl, "x509", "-inform", "DER", "-in", str(path), "-noout", "-text"],
        capture_output=True,
        text=True,
        timeout=DEADLINE_S,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    lines = [line.strip() for line in shown.stdout.splitlines()]
    assert "X509v3 Subject Alternative Name:" in lines  # present, and not marked critical
    san = lines.index("X509v3 Subject Alternative Name:")
    assert lines[san + 1] == f"URI:spiffe://example.org/{keypair.identity.hex()}/api"
    assert "Public Key Algorithm: ED25519" in lines
    assert f"Subject: CN = {keypair.identity.hex()}" in lines


# -- 5. without the plugin ----------------------------------------------------------------------

WITHOUT_SPIFFE: Final = """
import asyncio, importlib.util, json, sys
from cryptography import x509
from korium import CapabilityMissing, Node, hookimpl

class Observer:
    def __init__(self):
        self.certificates = {}

    @hookimpl
    def korium_verify_peer_certificate(self, node, peer, certificate):
        self.certificates[peer] = certificate

async def main():
    installed = importlib.util.find_spec("korium_spiffe") is not None
    observer = Observer()
    watcher = await Node.builder("127.0.0.1:0").difficulty(4).plugins([observer]).build()
    subject = await Node.builder("127.0.0.1:0").difficulty(4).plugins(["dht", "gossipsub"]).build()
    subject.set_request_handler(lambda peer, data: b"pong:" + data)
    try:
        response = await watcher.send(
            subject.identity, b"ping", addresses=[subject.local_addr], timeout=10
        )
        loaded = sorted(subject.plugins.plugins)
    finally:
        await subject.close()
        await watcher.close()
    certificate = observer.certificates[subject.identity]
    try:
        certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        has_san = True
    except x509.ExtensionNotFound:
        has_san = False
    missing = {}
    for option in ("spiffe_trust_domain", "spiffe_workload_path"):
        builder = getattr(Node.builder("127.0.0.1:0").plugins([]), option)("example.org")
        try:
            node = await builder.build()
        except CapabilityMissing as exc:
            missing[option] = [str(exc), exc.capability, exc.needed_by, exc.extra]
        else:
            await node.close()
    print(json.dumps({
        "installed": installed,
        "response": response.decode(),
        "loaded": loaded,
        "has_san": has_san,
        "missing": missing,
        "imported": sorted(m for m in sys.modules if m.partition(".")[0] == "korium_spiffe"),
    }))

asyncio.run(main())
"""


def test_nodes_without_the_plugin_never_import_it_nor_present_a_san() -> None:
    """In a fresh interpreter: korium_spiffe is installed but a profile without it never
    imports it; its nodes' certificates carry no SAN; the SPIFFE builder options say what is
    missing."""
    ran = subprocess.run(
        [sys.executable, "-c", WITHOUT_SPIFFE],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    seen = json.loads(ran.stdout)
    assert seen["installed"] is True, "korium_spiffe is not installed: the test would be vacuous"
    assert seen["response"] == "pong:ping"
    assert seen["loaded"] == ["dht", "gossipsub"]
    assert seen["has_san"] is False
    assert seen["imported"] == []
    hint = "install korium[spiffe] or add a plugin that provides it to the node profile"
    assert seen["missing"] == {
        option: [
            f"{option} needs a workload-identity capability: {hint}",
            "workload-identity",
            option,
            "spiffe",
        ]
        for option in ("spiffe_trust_domain", "spiffe_workload_path")
    }


UNINSTALLED: Final = """
import importlib.metadata as metadata

_entry_points = metadata.entry_points

def without_spiffe(**selection):  # as if korium-spiffe were not installed (and so neither
    found = _entry_points(**selection)  # korium-threshold-ca, which depends on it)
    hidden = ("spiffe", "threshold_ca")
    return metadata.EntryPoints(ep for ep in found if ep.name not in hidden)

metadata.entry_points = without_spiffe
""" + WITHOUT_SPIFFE.replace('.plugins(["dht", "gossipsub"])', "")


def test_a_default_node_without_the_plugin_installed_has_no_spiffe_at_all() -> None:
    """The default profile (every installed plugin) with the spiffe entry point hidden."""
    ran = subprocess.run(
        [sys.executable, "-c", UNINSTALLED], capture_output=True, text=True, timeout=60, check=False
    )
    assert ran.returncode == 0, ran.stderr
    seen = json.loads(ran.stdout)
    assert "spiffe" not in seen["loaded"]
    assert {"dht", "gossipsub"} <= set(seen["loaded"])
    assert seen["has_san"] is False
    assert seen["imported"] == []


async def test_spiffe_option_without_the_plugin_raises_capability_missing() -> None:
    builder = Node.builder().plugins([]).spiffe_trust_domain("example.org")
    with pytest.raises(korium.CapabilityMissing) as info:
        await builder.build()
    assert str(info.value) == (
        "spiffe_trust_domain needs a workload-identity capability: install korium[spiffe] or "
        "add a plugin that provides it to the node profile"
    )
    assert (info.value.capability, info.value.needed_by, info.value.extra) == (
        "workload-identity",
        "spiffe_trust_domain",
        "spiffe",
    )


# -- 6. settings are checked when the node is built, before it binds ----------------------------


@pytest.fixture
def taken_address() -> Iterator[str]:
    """A loopback UDP address already bound: a node that got as far as binding would fail
    there with TransportError."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{sock.getsockname()[1]}"


Configure = Callable[[NodeBuilder], NodeBuilder]


@pytest.mark.parametrize(
    ("configure", "fragments"),
    [
        (
            lambda b: b.spiffe_trust_domain("Example.org"),
            ["'Example.org'", GO_SPIFFE_MESSAGES["trust-domain-chars"]],
        ),
        (
            lambda b: b.spiffe_trust_domain("a$b"),
            ["'a$b'", GO_SPIFFE_MESSAGES["trust-domain-chars"]],
        ),
        (
            lambda b: b.spiffe_trust_domain("example.org").spiffe_workload_path("api/"),
            ["'api/'", GO_SPIFFE_MESSAGES["trailing-slash"]],
        ),
        (
            lambda b: b.spiffe_trust_domain("example.org").spiffe_workload_path("a//b"),
            ["'a//b'", GO_SPIFFE_MESSAGES["empty-segment"]],
        ),
        (
            lambda b: b.spiffe_trust_domain("example.org").spiffe_workload_path(".."),
            ["'..'", GO_SPIFFE_MESSAGES["dot-segment"]],
        ),
        (
            lambda b: b.spiffe_trust_domain("example.org").spiffe_workload_path("a/./b"),
            ["'a/./b'", GO_SPIFFE_MESSAGES["dot-segment"]],
        ),
        (lambda b: b.spiffe_workload_path("api"), ["workload_path needs a trust_domain"]),
        (
            lambda b: b.plugin_settings("spiffe", allowed_peers="example.org"),
            ["allowed_peers must be a list of strings", "'example.org'"],
        ),
        (
            lambda b: b.plugin_settings("spiffe", allowed_peers=["example.org", "Bad.org"]),
            ["'Bad.org'", GO_SPIFFE_MESSAGES["trust-domain-chars"]],
        ),
        (
            lambda b: b.plugin_settings("spiffe", allowed_peers=["example.org/api/"]),
            ["'api/'", GO_SPIFFE_MESSAGES["trailing-slash"]],
        ),
        (
            lambda b: b.plugin_settings("spiffe", allowed_peers=["example.org/a/../b"]),
            ["'a/../b'", GO_SPIFFE_MESSAGES["dot-segment"]],
        ),
        (
            lambda b: b.plugin_settings("spiffe", allowed_peers=[42]),
            ["allowed_peers must be a list of strings"],
        ),
    ],
    ids=[
        "uppercase-domain",
        "dollar-domain",
        "trailing-slash-path",
        "empty-segment-path",
        "dotdot-path",
        "dot-segment-path",
        "path-without-domain",
        "allowed-peers-string",
        "allowed-peers-bad-domain",
        "allowed-peers-bad-path",
        "allowed-peers-dot-path",
        "allowed-peers-not-text",
    ],
)
async def test_bad_settings_raise_config_error_before_binding(
    taken_address: str, configure: Configure, fragments: list[str]
) -> None:
    builder = configure(Node.builder(taken_address).difficulty(DIFFICULTY).plugins(["spiffe"]))
    with pytest.raises(ConfigError) as info:  # not TransportError: it never tried to bind
        await builder.build()
    message = str(info.value)
    assert message.startswith("spiffe: "), message
    for fragment in fragments:
        assert fragment in message, message


async def test_good_settings_get_as_far_as_binding(taken_address: str) -> None:
    """Control for the test above: valid settings on the taken address fail at the bind."""
    builder = (
        Node.builder(taken_address)
        .difficulty(DIFFICULTY)
        .plugins(["spiffe"])
        .spiffe_trust_domain("example.org")
        .spiffe_workload_path("api/v1")
        .plugin_settings("spiffe", allowed_peers=["example.org", "other.org/api"])
    )
    with pytest.raises(TransportError, match="cannot bind"):
        await builder.build()


async def test_allowed_peer_with_trailing_slash_is_a_config_error(taken_address: str) -> None:
    builder = (
        Node.builder(taken_address)
        .difficulty(DIFFICULTY)
        .plugins(["spiffe"])
        .plugin_settings("spiffe", allowed_peers=["example.org/"])
    )
    with pytest.raises(ConfigError, match="trailing slash"):
        await builder.build()


# -- 7. the command line ------------------------------------------------------------------------

PRISTINE_CLI: Final = copy.deepcopy(korium.cli.cli)
"""The ``korium`` group as defined, before any plugin added to it: copied when this module is
imported (pytest imports every test module before running any test), because
tests/test_cli.py runs ``main()`` in-process, which runs every plugin's korium_cli_commands
hook on the module-global group, and the spiffe hook must see a group it has not seen yet
(see test_main_runs_twice_in_one_process)."""


def _show_options(group: click.Group) -> list[str]:
    identity = group.commands["identity"]
    assert isinstance(identity, click.Group)
    return [name for param in identity.commands["show"].params for name in param.opts]


@pytest.fixture
def plugin_cli(monkeypatch: pytest.MonkeyPatch) -> click.Group:
    """The ``korium`` group as ``main()`` builds it: a fresh copy of it made the module's
    ``cli``, then every installed plugin's korium_cli_commands hook run on it."""
    assert "--spiffe-trust-domain" not in _show_options(PRISTINE_CLI)
    fresh = copy.deepcopy(PRISTINE_CLI)
    monkeypatch.setattr(korium.cli, "cli", fresh)
    korium.cli._add_plugin_commands()
    return fresh


@pytest.fixture
def key_file(tmp_path: Path) -> tuple[Path, NodeIdentity]:
    """A key file made by ``korium identity new`` (4 bits, in-process)."""
    path = tmp_path / "id.pem"
    made = CliRunner().invoke(
        copy.deepcopy(PRISTINE_CLI),
        ["identity", "new", "--key-file", str(path), "--difficulty", "4", "--workers", "1"],
    )
    assert made.exit_code == 0, made.output
    return path, NodeIdentity.load(path, difficulty=4)


NO_SPIFFE_ENV: Final[dict[str, str | None]] = {
    "KORIUM_SPIFFE_TRUST_DOMAIN": None,
    "KORIUM_SPIFFE_WORKLOAD_PATH": None,
}


def show(
    group: click.Group, path: Path, *options: str, env: dict[str, str | None] | None = None
) -> tuple[int, list[str]]:
    result = CliRunner().invoke(
        group,
        ["identity", "show", "--key-file", str(path), *options],
        env={**NO_SPIFFE_ENV, **(env or {})},
    )
    return result.exit_code, result.output.splitlines()


def identity_lines(path: Path, node_identity: NodeIdentity) -> list[str]:
    return [
        f"identity  {node_identity.identity}",
        f"strength  {node_identity.strength} bits (spec default 24)",
        f"pow nonce {node_identity.proof.nonce}",
        f"key file  {path}",
    ]


def test_cli_shows_the_spiffe_id(
    plugin_cli: click.Group, key_file: tuple[Path, NodeIdentity]
) -> None:
    path, node_identity = key_file
    hex_id = node_identity.identity.hex()
    code, lines = show(
        plugin_cli, path, "--spiffe-trust-domain", "example.org", "--spiffe-workload-path", "api"
    )
    assert code == 0, lines
    assert lines == [
        *identity_lines(path, node_identity),
        f"spiffe    spiffe://example.org/{hex_id}/api",
    ]
    code, lines = show(plugin_cli, path, "--spiffe-trust-domain", "example.org")
    assert code == 0, lines
    assert lines[-1] == f"spiffe    spiffe://example.org/{hex_id}"


def test_cli_reads_the_trust_domain_from_the_environment(
    plugin_cli: click.Group, key_file: tuple[Path, NodeIdentity]
) -> None:
    path, node_identity = key_file
    hex_id = node_identity.identity.hex()
    code, lines = show(plugin_cli, path, env={"KORIUM_SPIFFE_TRUST_DOMAIN": "example.org"})
    assert code == 0, lines
    assert lines == [
        *identity_lines(path, node_identity),
        f"spiffe    spiffe://example.org/{hex_id}",
    ]
    code, lines = show(
        plugin_cli,
        path,
        env={"KORIUM_SPIFFE_TRUST_DOMAIN": "example.org", "KORIUM_SPIFFE_WORKLOAD_PATH": "a/b"},
    )
    assert code == 0, lines
    assert lines[-1] == f"spiffe    spiffe://example.org/{hex_id}/a/b"


@pytest.mark.parametrize(
    ("options", "rule_text"),
    [
        (["--spiffe-trust-domain", "Example.org"], GO_SPIFFE_MESSAGES["trust-domain-chars"]),
        (["--spiffe-trust-domain", "a$b"], GO_SPIFFE_MESSAGES["trust-domain-chars"]),
        (
            ["--spiffe-trust-domain", "example.org", "--spiffe-workload-path", "api/"],
            GO_SPIFFE_MESSAGES["trailing-slash"],
        ),
    ],
    ids=["uppercase-domain", "dollar-domain", "trailing-slash-path"],
)
def test_cli_bad_spiffe_option_is_a_usage_error(
    plugin_cli: click.Group,
    key_file: tuple[Path, NodeIdentity],
    options: list[str],
    rule_text: str,
) -> None:
    path, _ = key_file
    code, lines = show(plugin_cli, path, *options)
    assert code == 2, lines  # click's usage error
    assert any(line.startswith("Error: Invalid value") and rule_text in line for line in lines)
    assert not any(line.startswith("spiffe ") for line in lines)


def test_cli_without_the_option_prints_nothing_about_spiffe(
    plugin_cli: click.Group, key_file: tuple[Path, NodeIdentity]
) -> None:
    path, node_identity = key_file
    assert {"--spiffe-trust-domain", "--spiffe-workload-path"} <= set(_show_options(plugin_cli))
    code, lines = show(plugin_cli, path)
    assert code == 0, lines
    assert lines == identity_lines(path, node_identity)


def test_cli_bad_trust_domain_fails_before_output_and_names_the_option(
    plugin_cli: click.Group, key_file: tuple[Path, NodeIdentity]
) -> None:
    path, _ = key_file
    code, lines = show(plugin_cli, path, "--spiffe-trust-domain", "Example.org")
    assert code == 2
    assert not any(line.startswith("identity  ") for line in lines), lines
    assert any("--spiffe-trust-domain" in line for line in lines), lines


@pytest.mark.filterwarnings("ignore:The parameter --spiffe-:UserWarning")
def test_main_runs_twice_in_one_process(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    key_file: tuple[Path, NodeIdentity],
) -> None:
    path, node_identity = key_file
    monkeypatch.setattr(korium.cli, "cli", copy.deepcopy(PRISTINE_CLI))
    for name in NO_SPIFFE_ENV:
        monkeypatch.delenv(name, raising=False)
    argv = ["korium", "identity", "show", "--key-file", str(path)]
    monkeypatch.setattr(sys, "argv", [*argv, "--spiffe-trust-domain", "example.org"])
    expected = f"spiffe    spiffe://example.org/{node_identity.identity.hex()}"
    for _ in range(2):
        with pytest.raises(SystemExit) as info:
            korium.cli.main()
        assert info.value.code == 0
        assert capsys.readouterr().out.splitlines()[-1] == expected
