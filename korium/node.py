"""The node facade: one identity, one UDP socket, one plugin profile, one set of services.

``await Node.bind("0.0.0.0:4433")`` (or ``Node.builder(addr)...build()``) resolves the node's
identity (given, loaded from a key file, or generated with proof of work), loads its plugins,
lets them configure and set up, binds SmartSock, and starts. ``close()`` (or ``async with``)
stops it. Methods whose capability no plugin provides raise
:class:`korium.errors.CapabilityMissing` naming the extra to install.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

from cryptography import x509

from korium.capabilities import (
    CERTIFICATE_ISSUER,
    DISCOVERY,
    NAT_TRAVERSAL,
    PUBSUB,
    WORKLOAD_IDENTITY,
    Capability,
    PubSubMessage,
    PubSubValidator,
)
from korium.config import NodeConfig
from korium.errors import CapabilityMissing, ConfigError, KoriumError
from korium.identity import Contact, Identity, Keypair, NodeIdentity
from korium.identity.pow import check_difficulty, solve_pow_async
from korium.plugins import PluginHost, Profile, ServiceRegistry, await_results, resolve_maybe
from korium.rpc import Rpc
from korium.rpc.endpoint import CLOSE_SHUTDOWN, RpcEndpoint
from korium.transport.addresses import Address, format_address, parse_address, parse_addresses
from korium.transport.connection import PeerConnection
from korium.transport.smartsock import SmartSock
from korium.transport.tls import certificate_proof

if TYPE_CHECKING:
    from korium.testing import SimNetwork

log = logging.getLogger(__name__)

PLAIN_PROTOCOL = "korium/plain/1"
"""The protocol of ``Node.send`` and the request handler."""
INCOMING_QUEUE = 256
AddressLike = str | Address
RequestFunction = Callable[[Identity, bytes], "Awaitable[bytes] | bytes"]


@dataclass(frozen=True, slots=True)
class IncomingRequest:
    """A plain request waiting for :meth:`respond` (from ``node.incoming_requests()``)."""

    peer: Identity
    data: bytes
    _future: asyncio.Future[bytes]

    def respond(self, response: bytes) -> None:
        """Send *response* back (once; later calls are ignored)."""
        if not self._future.done():
            self._future.set_result(bytes(response))


class NodeBuilder:
    """Collects a node's address, identity, configuration and plugins; ``await build()``."""

    def __init__(self, address: AddressLike = "0.0.0.0:0") -> None:
        self._address = _to_address(address)
        self._identity: NodeIdentity | None = None
        self._keypair: Keypair | None = None
        self._key_file: str | os.PathLike[str] | None = None
        self._config = NodeConfig()
        self._profile = Profile()
        self._network: SimNetwork | None = None
        self._needs: dict[str, Capability[Any]] = {}
        """Builder options that only a plugin can carry out, and the capability they need."""

    def simulated(self, network: SimNetwork) -> Self:
        """Run on a :class:`korium.testing.SimNetwork` instead of a UDP socket.

        The node's ``rpc`` then talks through the simulated network (on virtual time, with
        latency, loss and partitions) and plugins run unchanged; there is no socket, so
        ``local_addr`` and ``connect`` are unavailable. A specific address given to the builder
        (not a wildcard host or port 0) is what peers see from ``rpc.peer_address``.
        """
        self._network = network
        return self

    def identity(self, node_identity: NodeIdentity) -> Self:
        """Use this identity (its proof must reach the configured difficulty)."""
        self._identity = node_identity
        return self

    def keypair(self, keypair: Keypair) -> Self:
        """Use this keypair; its proof of work is computed when building."""
        self._keypair = keypair
        return self

    def key_file(self, path: str | os.PathLike[str]) -> Self:
        """Load the identity from *path*, generating and saving one there if it is absent."""
        self._key_file = path
        return self

    def difficulty(self, bits: int) -> Self:
        """Proof-of-work bits required of this node and of its peers (default 24)."""
        check_difficulty(bits)
        self._config.pow_difficulty = bits
        return self

    def config(self, config: NodeConfig) -> Self:
        """Replace the whole configuration."""
        self._config = config
        return self

    def spiffe_trust_domain(self, trust_domain: str) -> Self:
        """Present ``spiffe://{trust_domain}/{identity}`` as a URI SAN in this node's
        certificate (needs korium[spiffe], which validates it when the node is built)."""
        self._config.settings("spiffe")["trust_domain"] = trust_domain
        self._needs["spiffe_trust_domain"] = WORKLOAD_IDENTITY
        return self

    def spiffe_workload_path(self, workload_path: str) -> Self:
        """Append ``/{workload_path}`` to this node's SPIFFE ID (needs korium[spiffe])."""
        self._config.settings("spiffe")["workload_path"] = workload_path
        self._needs["spiffe_workload_path"] = WORKLOAD_IDENTITY
        return self

    def as_ca_signer(self, signer_state: Any) -> Self:
        """Serve as a threshold CA signer with *signer_state* (a
        ``korium_threshold_ca.SignerState`` from the key ceremony; needs korium[spiffe])."""
        self._config.settings("threshold_ca")["signer_state"] = signer_state
        self._needs["as_ca_signer"] = CERTIFICATE_ISSUER
        return self

    def plugin_settings(self, plugin: str, **settings: Any) -> Self:
        """Settings for one plugin's section (validated by the plugin when building)."""
        self._config.settings(plugin).update(settings)
        return self

    def plugins(self, items: Iterable[str | object]) -> Self:
        """Load exactly these plugins: installed ones by name, others as objects."""
        self._profile = Profile.of(items)
        return self

    def add_plugin(self, plugin: object) -> Self:
        """Add a plugin object to the profile (keeps the installed plugins, by default all)."""
        self._profile = Profile(self._profile.names, (*self._profile.objects, plugin))
        return self

    async def build(self) -> Node:
        """Resolve the identity, load plugins, bind the socket and start the node."""
        given = [x for x in (self._identity, self._keypair, self._key_file) if x is not None]
        if len(given) > 1:
            raise ConfigError("give at most one of an identity, a keypair or a key file")
        self._config.validate()
        host = PluginHost(self._profile)
        for needed_by, capability in self._needs.items():
            if not any(capability in p.info.provides for p in host.plugins.values()):
                raise CapabilityMissing(
                    capability.name, needed_by=needed_by, extra=capability.extra
                )
        host.hook.korium_configure(config=self._config)
        node = Node(
            await self._node_identity(), self._config, host, self._address, network=self._network
        )
        host.hook.korium_node_setup(node=node)
        host.check_provided(node.services)
        await node.start()
        return node

    async def _node_identity(self) -> NodeIdentity:
        difficulty = self._config.pow_difficulty
        if self._key_file is not None:
            path = self._key_file
            return await asyncio.to_thread(
                NodeIdentity.load_or_generate, path, difficulty=difficulty
            )
        if self._keypair is not None:
            proof = await solve_pow_async(self._keypair.identity, difficulty)
            return NodeIdentity(self._keypair, proof)
        if self._identity is not None:
            self._identity.proof.verify(self._identity.identity, difficulty)
            return self._identity
        return await NodeIdentity.generate_async(difficulty)


class Node:
    """A korium node. Make one with :meth:`Node.bind` or :meth:`Node.builder`."""

    def __init__(
        self,
        node_identity: NodeIdentity,
        config: NodeConfig,
        host: PluginHost,
        address: Address = ("0.0.0.0", 0),
        *,
        network: SimNetwork | None = None,
    ) -> None:
        self.node_identity = node_identity
        self.config = config
        self.plugins = host
        self.services = ServiceRegistry()
        self._address = address
        self._network = network
        self._endpoint: RpcEndpoint | None = None
        self.rpc: Rpc
        """Request/response and one-way messages for plugins (``node.rpc.register(...)``)."""
        if network is not None:
            specific = address[1] != 0 and address[0] not in ("0.0.0.0", "::")
            self.rpc = network.add_node(
                node_identity.identity,
                config=config.rpc,
                address=address if specific else None,
                on_peer_connected=self._peer_connected,
                on_peer_disconnected=self._peer_disconnected,
            )
        else:
            self._endpoint = RpcEndpoint(
                node_identity.identity,
                config.rpc,
                resolve=self._resolve_addresses,
                fallback=self._dial_fallback,
                on_peer_connected=self._peer_connected,
                on_peer_disconnected=self._peer_disconnected,
            )
            self.rpc = self._endpoint
        self._sock: SmartSock | None = None
        self._started = False
        self._plain_handler: RequestFunction | None = None
        self._incoming: asyncio.Queue[IncomingRequest] | None = None

    @staticmethod
    def builder(address: AddressLike = "0.0.0.0:0") -> NodeBuilder:
        """Start composing a node that will listen on *address*."""
        return NodeBuilder(address)

    @classmethod
    async def bind(
        cls,
        address: AddressLike = "0.0.0.0:0",
        *,
        key_file: str | os.PathLike[str] | None = None,
        keypair: Keypair | None = None,
        difficulty: int | None = None,
        plugins: Iterable[str | object] | None = None,
    ) -> Node:
        """A running node on *address*: the short form of ``Node.builder(...).build()``."""
        builder = cls.builder(address)
        if key_file is not None:
            builder.key_file(key_file)
        if keypair is not None:
            builder.keypair(keypair)
        if difficulty is not None:
            builder.difficulty(difficulty)
        if plugins is not None:
            builder.plugins(plugins)
        return await builder.build()

    # -- identity and addresses ---------------------------------------------------------------

    @property
    def identity(self) -> Identity:
        """This node's public identity (``str(node.identity)`` is its 64-hex form)."""
        return self.node_identity.identity

    @property
    def keypair(self) -> Keypair:
        """This node's keypair."""
        return self.node_identity.keypair

    @property
    def local_addr(self) -> Address:
        """The bound UDP address, with its real port."""
        return self._smartsock.local_address

    @property
    def smartsock(self) -> SmartSock:
        """The node's socket (plugins register frame types and relayed paths on it)."""
        return self._smartsock

    @property
    def _smartsock(self) -> SmartSock:
        if self._network is not None:
            raise KoriumError("a simulated node has no socket")
        if self._sock is None:
            raise KoriumError("the node is not running: build it or call start() first")
        return self._sock

    @property
    def _quic(self) -> RpcEndpoint:
        if self._endpoint is None:
            raise KoriumError("a simulated node has no QUIC connections; use node.rpc")
        return self._endpoint

    def routable_addresses(self) -> list[str]:
        """``HOST:PORT`` strings peers can try: the bound address, or every local one."""
        host, port = self.local_addr
        if host not in ("0.0.0.0", "::"):
            return [format_address((host, port))]
        family = socket.AF_INET6 if host == "::" else socket.AF_INET
        found: list[str] = []
        try:
            infos = socket.getaddrinfo(socket.gethostname(), None, family, socket.SOCK_DGRAM)
        except OSError:
            infos = []
        for info in infos:
            ip = str(info[4][0])
            if not ip.startswith(("127.", "::1", "fe80")) and ip not in found:
                found.append(ip)
        found.append("::1" if family == socket.AF_INET6 else "127.0.0.1")
        return [format_address((ip, port)) for ip in found]

    def peer_endpoint(self) -> Contact:
        """This node's freshly signed contact record, with its routable addresses."""
        return self.node_identity.contact(self.routable_addresses())

    def bootstrap_string(self) -> str:
        """``HOST:PORT/IDENTITY`` for ``korium run --bootstrap``."""
        return f"{self.routable_addresses()[0]}/{self.identity}"

    # -- lifecycle ----------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """Whether the node is started and not closed."""
        return self._started

    async def start(self) -> None:
        """Bind the socket and run every plugin's ``korium_node_started`` hook."""
        if self._started:
            return
        if self._endpoint is not None:
            await self._bind(self._endpoint)
        self._started = True
        try:
            await await_results(self.plugins.hook.korium_node_started(node=self))
        except BaseException:
            await self.close()
            raise

    async def _bind(self, endpoint: RpcEndpoint) -> None:
        extensions = [
            extension
            for result in self.plugins.hook.korium_certificate_extensions(node=self)
            if result
            for extension in result
        ]
        sock = SmartSock(
            self.node_identity,
            handler=endpoint,
            verifier=self._verify_peer,
            config=self.config.transport,
            certificate_extensions=extensions,
        )
        for handlers in self.plugins.hook.korium_frame_handlers(node=self):
            for magic, handler in (handlers or {}).items():
                sock.register_frame_type(magic, handler)
        await sock.bind(self._address)
        self._sock = sock
        endpoint.start(sock)
        log.info("node %s listening on %s", self.identity, format_address(self.local_addr))

    async def close(self) -> None:
        """Stop plugins (each within the shutdown timeout), close connections and the socket."""
        if not self._started:
            return
        self._started = False
        for result in self.plugins.hook.korium_node_stopping(node=self):
            if result is None:
                continue
            try:
                await asyncio.wait_for(result, self.config.shutdown_timeout_s)
            except Exception:
                log.exception("a plugin failed while stopping node %s", self.identity.short)
        if self._endpoint is not None:
            await self._endpoint.close()
        if self._sock is not None:
            self._sock.close(error_code=CLOSE_SHUTDOWN)
        if self._network is not None:
            self._network.remove_node(self.identity)

    stop = close

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    def stats(self) -> dict[str, int | float]:
        """Counters from the socket, paths, RPC and every plugin (sizes, overflows, drops)."""
        stats: dict[str, int | float] = {"kernel.plugins": len(self.plugins.plugins)}
        if self._sock is not None:
            stats.update({f"transport.{k}": v for k, v in self._sock.stats.items()})
            stats.update(self._sock.path_stats())
            stats["transport.connections"] = len(self._sock.connections)
        rpc_stats: Mapping[str, int] = getattr(self.rpc, "stats", {})
        stats.update({f"rpc.{k}": v for k, v in rpc_stats.items()})
        stats["rpc.pooled_connections"] = len(self.rpc.connected_peers())
        for contribution in self.plugins.hook.korium_stats(node=self):
            if contribution:
                stats.update(contribution)
        return stats

    # -- peers --------------------------------------------------------------------------------

    async def connect(
        self, peer: Identity, addresses: Iterable[AddressLike] | None = None
    ) -> PeerConnection:
        """A live, authenticated connection to *peer* (SmartConnect).

        Dials the given addresses, else asks the plugins (``korium_resolve_contact``, the
        DHT), else uses addresses the node has seen *peer* use; relays and hole punching
        (``korium_dial_fallback``) get a turn when the direct dial fails.
        """
        targets = [_to_address(a) for a in addresses] if addresses is not None else None
        return await self._quic.connect(peer, targets)

    async def bootstrap(self, peer: Identity, address: AddressLike) -> None:
        """Join the network through *peer* at *address*: connect, then let plugins run."""
        if self._network is None:  # a simulated network routes by identity: nothing to dial
            await self.connect(peer, [address])
        await await_results(self.plugins.hook.korium_bootstrap(node=self, peer=peer))

    async def send(
        self,
        peer: Identity,
        data: bytes,
        *,
        addresses: Iterable[AddressLike] | None = None,
        timeout: float | None = None,
    ) -> bytes:
        """Send *data* to *peer*'s request handler and return its response."""
        targets = [_to_address(a) for a in addresses] if addresses is not None else None
        return await self.rpc.request(
            peer, PLAIN_PROTOCOL, data, addresses=targets, timeout=timeout
        )

    def set_request_handler(self, handler: RequestFunction) -> None:
        """Answer ``send`` requests with ``handler(peer, data) -> bytes`` (plain or async).

        Replaces an earlier handler. An exception in the handler reaches the sender as a
        :class:`korium.errors.RemoteError`.

        :raises ConfigError: ``incoming_requests`` is in use.
        """
        if self._incoming is not None:
            raise ConfigError("requests are already consumed through incoming_requests()")
        self.rpc.unregister(PLAIN_PROTOCOL)
        self._plain_handler = handler
        self.rpc.register(PLAIN_PROTOCOL, handler)

    def incoming_requests(self) -> AsyncIterator[IncomingRequest]:
        """Requests as they arrive, to answer with ``request.respond(data)``.

        At most 256 wait; beyond that senders wait (backpressure), nothing is dropped.
        """
        if self._plain_handler is not None or self._incoming is not None:
            raise ConfigError("this node already has a request handler")
        queue: asyncio.Queue[IncomingRequest] = asyncio.Queue(INCOMING_QUEUE)
        self._incoming = queue

        async def enqueue(peer: Identity, data: bytes) -> bytes:
            future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
            await queue.put(IncomingRequest(peer, data, future))
            return await future

        self.rpc.register(PLAIN_PROTOCOL, enqueue)

        async def iterate() -> AsyncIterator[IncomingRequest]:
            while True:
                yield await queue.get()

        return iterate()

    # -- capability facade ----------------------------------------------------------------------

    async def find_peers(self, target: Identity) -> list[Contact]:
        """Contacts of the peers closest to *target* (needs Discovery: korium[dht])."""
        return await self.services.require(DISCOVERY, needed_by="find_peers").find_peers(target)

    async def resolve(self, peer: Identity) -> Contact | None:
        """*peer*'s newest valid contact record (needs Discovery: korium[dht])."""
        return await self.services.require(DISCOVERY, needed_by="resolve").resolve(peer)

    async def publish_address(self, addresses: Iterable[str]) -> None:
        """Sign and publish this node's contact record (needs Discovery: korium[dht])."""
        service = self.services.require(DISCOVERY, needed_by="publish_address")
        await service.publish_address(list(addresses))

    async def put(self, value: bytes) -> bytes:
        """Store *value* under its blake3 content address; returns the key (korium[dht])."""
        return await self.services.require(DISCOVERY, needed_by="put").put(value)

    async def get(self, key: bytes) -> bytes | None:
        """The value whose content address is *key*, or None (needs korium[dht])."""
        return await self.services.require(DISCOVERY, needed_by="get").get(key)

    async def subscribe(self, topic: str) -> None:
        """Subscribe to *topic* (needs PubSub: korium[gossipsub])."""
        await self.services.require(PUBSUB, needed_by="subscribe").subscribe(topic)

    async def unsubscribe(self, topic: str) -> None:
        """Leave *topic* (needs PubSub: korium[gossipsub])."""
        await self.services.require(PUBSUB, needed_by="unsubscribe").unsubscribe(topic)

    async def publish(self, topic: str, data: bytes) -> int:
        """Sign and publish *data* on *topic*; returns how many peers it was sent to.

        Waits rather than dropping when the publish rate or a peer's queue is spent (needs
        PubSub: korium[gossipsub]).
        """
        return await self.services.require(PUBSUB, needed_by="publish").publish(topic, data)

    def messages(self, topic: str | None = None) -> AsyncIterator[PubSubMessage]:
        """Messages of every subscribed topic, or only *topic*, as they arrive (needs PubSub:
        korium[gossipsub])."""
        return self.services.require(PUBSUB, needed_by="messages").messages(topic)

    def add_validator(self, topic: str, validator: PubSubValidator) -> None:
        """Run *validator* on every new message of *topic* before it is delivered or
        forwarded; rejected messages penalise their sender (needs korium[gossipsub])."""
        self.services.require(PUBSUB, needed_by="add_validator").add_validator(topic, validator)

    def mesh_peers(self, topic: str) -> list[Identity]:
        """The peers *topic*'s messages are eagerly exchanged with (needs korium[gossipsub])."""
        return self.services.require(PUBSUB, needed_by="mesh_peers").mesh_peers(topic)

    def peer_score(self, peer: Identity) -> float:
        """This node's pubsub score of *peer* (needs korium[gossipsub])."""
        return self.services.require(PUBSUB, needed_by="peer_score").peer_score(peer)

    async def request_ca_certificate_from_mesh(
        self, trust_domain: str, workload_path: str | None, config: Any
    ) -> bytes:
        """A DER certificate for this node's key with SPIFFE ID in *trust_domain*, signed by
        k signers of the threshold CA in *config* (a ``korium_threshold_ca.CaRequestConfig``;
        needs korium[spiffe])."""
        service = self.services.require(
            CERTIFICATE_ISSUER, needed_by="request_ca_certificate_from_mesh"
        )
        return await service.request_ca_certificate_from_mesh(trust_domain, workload_path, config)

    async def request_ca_root_certificate_from_mesh(self, config: Any) -> bytes:
        """The threshold CA's own DER certificate, self-signed by k of its signers (the trust
        anchor verifiers need; needs korium[spiffe])."""
        service = self.services.require(
            CERTIFICATE_ISSUER, needed_by="request_ca_root_certificate_from_mesh"
        )
        return await service.request_ca_root_certificate(config)

    async def configure_nat(self, helper: Identity, addresses: Iterable[str] | None = None) -> Any:
        """Learn from *helper* whether this node is reachable; behind a NAT, relay through it
        and publish a contact record naming the relay. ``is_public, relay, incoming = await
        node.configure_nat(helper)`` (needs korium[relay])."""
        service = self.services.require(NAT_TRAVERSAL, needed_by="configure_nat")
        return await service.configure_nat(
            helper, list(addresses) if addresses is not None else None
        )

    def enable_mesh_signaling(self) -> AsyncIterator[Any]:
        """Incoming relayed connections for the application to accept with
        :meth:`accept_incoming` (otherwise they are accepted automatically; korium[relay])."""
        return self.services.require(
            NAT_TRAVERSAL, needed_by="enable_mesh_signaling"
        ).enable_mesh_signaling()

    async def accept_incoming(self, incoming: Any) -> None:
        """Join the relay session of *incoming* so its peer's dial gets through (korium[relay])."""
        service = self.services.require(NAT_TRAVERSAL, needed_by="accept_incoming")
        await service.accept_incoming(incoming)

    # -- kernel internals -----------------------------------------------------------------------

    def _verify_peer(self, peer: Identity, certificate: x509.Certificate) -> str | None:
        proof = certificate_proof(certificate)
        if proof is None:
            return "the peer's certificate carries no proof of work"
        difficulty = self.config.pow_difficulty
        if proof.strength(peer) < difficulty:
            return f"the peer's proof of work is weaker than the {difficulty} bits required"
        votes = self.plugins.hook.korium_verify_peer_certificate(
            node=self, peer=peer, certificate=certificate
        )
        return next((reason for reason in votes if reason), None)

    async def _dial_fallback(self, peer: Identity, error: Exception) -> bool:
        """The direct dial failed (for ``connect``, ``send`` or any plugin's request): let the
        plugins (the relay) open another way, one at a time, in hook order."""
        for attempt in self.plugins.hook.korium_dial_fallback(
            node=self, peer=peer, contact=None, error=error
        ):
            if attempt is not None and await attempt:
                return True
        return False

    async def _resolve_addresses(self, peer: Identity) -> list[Address]:
        result = self.plugins.hook.korium_resolve_contact(node=self, peer=peer)
        if result is None:
            return []
        contact = await resolve_maybe(result)
        if contact is None or contact.identity != peer:
            return []
        return parse_addresses(contact.addresses)

    def _peer_connected(self, peer: Identity) -> None:
        log.info("peer connected: %s", peer)
        self.plugins.hook.korium_peer_connected(node=self, peer=peer)

    def _peer_disconnected(self, peer: Identity) -> None:
        log.info("peer disconnected: %s", peer)
        self.plugins.hook.korium_peer_disconnected(node=self, peer=peer)

    def __repr__(self) -> str:
        return f"Node({self.identity.short}..., plugins={sorted(self.plugins.plugins)})"


def _to_address(address: AddressLike) -> Address:
    return parse_address(address) if isinstance(address, str) else (address[0], address[1])
