"""The relay plugin's driver: relay for others, reach peers through relays, punch holes.

**Relaying** (any reachable node, unless ``serve=False``): an initiator *reserves* a session
for a target by RPC; the relay hands the initiator's signed signal to the target over the
target's own connection, and answers the reservation once the target *joins*. From then on it
forwards ``CRLY`` frames between the two addresses it saw, and nothing else
(:class:`korium_relay.server.RelayServer`). The frames carry QUIC packets: end-to-end
encrypted, the relay never sees plaintext.

**Using a relay**: a node behind NAT (``configure_nat``) keeps a connection to its relay and
publishes a contact record that names it (``relay/<identity>/<host:port>``). A node whose
direct dial fails (``korium_dial_fallback``) reads that record, reserves a session, and adds
the relayed path to SmartSock's path table; the retried dial and every later packet of the
connection use it, and the QUIC connection never knows.

**Hole punching**: each end learned the other's address as the relay saw it; both send punch
datagrams to it for a few seconds and add it as a direct candidate path. SmartSock's probes
prove it, and the path table switches to it (direct beats relayed by ``relay_handicap_ms``);
if it dies later, the table falls back to the relay.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

from korium import DISCOVERY, PUBSUB, Identity, Node
from korium.capabilities import NatStatus, PubSubMessage
from korium.errors import KoriumError, PeerUnreachableError, RpcError
from korium.identity import Contact
from korium.transport import probe
from korium.transport.addresses import Address, format_address, parse_address
from korium.transport.paths import Path
from korium_relay import frames, wire
from korium_relay.config import RelaySettings
from korium_relay.server import RelayRefused, RelayServer

log = logging.getLogger(__name__)

PUNCH_MAGIC = b"CPUN"
RELAY_PREFIX = "relay/"
SEEN_SIGNALS = 4_096
MAX_RELAY_CANDIDATES = 16
MAX_CLIENT_SESSIONS = 10_000
MAPPING_CHECK_WINDOW = 5.0
PUNCH_WATCH_INTERVAL = 0.01
JOIN_ATTEMPTS = 4
JOIN_RETRY_DELAY = 0.25
MAPPING_PROBE_TIMEOUT = 1.0
RESOLVE_TIMEOUT = 3.0
INCOMING_QUEUE = 64


class RelayError(PeerUnreachableError):
    """No way through a relay: the message says what was tried."""


@dataclass(frozen=True, slots=True)
class IncomingConnection:
    """A peer asks to reach this node through a relay (``accept_incoming`` joins it)."""

    peer: Identity
    relay: Identity
    session: bytes


class NatConfiguration(NamedTuple):
    """What ``configure_nat`` found: ``is_public, relay, incoming = ...``."""

    is_public: bool
    relay: Identity | None
    incoming: AsyncIterator[IncomingConnection] | None


@dataclass(slots=True)
class _ClientSession:
    relay: Identity
    relay_address: Address
    peer: Identity


def relay_entry(relay: Identity, address: Address) -> str:
    """The contact-record address that says "reach me through *relay* at *address*"."""
    return f"{RELAY_PREFIX}{relay.hex()}/{format_address(address)}"


def relays_in(contact: Contact) -> list[tuple[Identity, Address]]:
    """The relays a contact record names (other entries are direct addresses)."""
    found = []
    for entry in contact.addresses:
        if not entry.startswith(RELAY_PREFIX):
            continue
        identity, _, address = entry[len(RELAY_PREFIX) :].partition("/")
        try:
            found.append((Identity.from_hex(identity), parse_address(address)))
        except (KoriumError, ValueError):
            continue
    return found


class RelayService:
    """One node's relay server and relay client."""

    def __init__(self, node: Node, settings: RelaySettings) -> None:
        self.node = node
        self.settings = settings
        self.server = RelayServer(settings.limits, settings.policy)
        self.stats_counter: Counter[str] = Counter()
        self.nat_status = NatStatus.UNKNOWN
        self.mapping: str | None = None
        """How this node's NAT maps ports: ``"endpoint-independent"`` (punching works) or
        ``"address-and-port-dependent"`` (symmetric: it does not); None until checked."""
        self.relays: dict[Identity, Address] = {}
        """The relays this node is reachable through (behind NAT)."""
        self._direct_addresses: list[str] = []
        self._kept_alive: set[Identity] = set()
        self._lost: dict[Identity, str] = {}
        """Why a peer's relayed connection ended, for the error of the next dial to it."""
        self._sessions: dict[bytes, _ClientSession] = {}
        self._joins: dict[bytes, asyncio.Future[Address]] = {}
        self._seen: OrderedDict[bytes, None] = OrderedDict()
        self._incoming: asyncio.Queue[IncomingConnection] = asyncio.Queue(INCOMING_QUEUE)
        self._readers = 0
        """Application iterators reading ``enable_mesh_signaling()`` now."""
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self._expiry: asyncio.TimerHandle | None = None
        self._socket = False

    # -- lifecycle ----------------------------------------------------------------------------

    def frame_handlers(self) -> dict[bytes, Any]:
        return {frames.MAGIC: self._on_frame, PUNCH_MAGIC: self._on_punch}

    async def start(self) -> None:
        try:
            sock = self.node.smartsock
        except KoriumError:
            return  # a simulated node: no socket to relay on
        self._socket = True
        sock.relay_sender = self._send_relayed
        self.node.rpc.register(wire.PROTOCOL, self._on_request)
        pubsub = self.node.services.get(PUBSUB)
        if pubsub is not None:
            signals = pubsub.messages(wire.TOPIC_SIGNAL)
            await pubsub.subscribe(wire.TOPIC_SIGNAL)
            self._spawn(self._hear_signals(signals))

    async def stop(self) -> None:
        self._stopping = True  # the connections closing now are not relays lost
        if self._expiry is not None:
            self._expiry.cancel()
        if self._socket:
            self.node.rpc.unregister(wire.PROTOCOL)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def stats(self) -> dict[str, int | float]:
        counters = Counter(self.stats_counter)
        counters.update(self.server.stats)
        counters["sessions"] = len(self.server)
        counters["client_sessions"] = len(self._sessions)
        return {f"relay.{k}": v for k, v in counters.items()}

    def peer_disconnected(self, peer: Identity) -> None:
        """*peer*'s last connection closed: as a relay, drop its sessions; as a client whose
        relay it was, drop the paths through it and, behind NAT, pick another relay."""
        self.server.close_peer(peer)
        if self._stopping:
            return
        for session in [s for s, c in self._sessions.items() if c.peer == peer]:
            del self._sessions[session]  # the relayed connection is over
        if any(c.relay == peer for c in self._sessions.values()) or peer in self.relays:
            self._relay_lost(peer)

    def _relay_lost(self, relay: Identity) -> None:
        sock = self.node.smartsock
        now = asyncio.get_running_loop().time()
        for session, used in list(self._sessions.items()):
            if used.relay != relay:
                continue
            del self._sessions[session]
            sock.paths.remove_candidate(used.peer, Path(used.relay_address, session), now)
            if not sock.paths.usable_paths(used.peer, now):
                reason = f"the relay {relay.short}... this connection went through is gone"
                self._lost[used.peer] = reason
                if len(self._lost) > MAX_CLIENT_SESSIONS:
                    self._lost.pop(next(iter(self._lost)))
                for conn in [c for c in sock.connections if c.peer == used.peer]:
                    conn.abort(reason)
        self.stats_counter["relays_lost"] += 1
        if self.relays.pop(relay, None) is not None:
            self._spawn(self._replace_relay(exclude={relay}))

    async def _replace_relay(self, exclude: set[Identity]) -> None:
        """Behind NAT without a relay: use another public peer and republish the record."""
        for candidate in await self._relay_candidates(exclude):
            address = self.node.rpc.peer_address(candidate)
            if address is None:
                continue
            self.relays[candidate] = address
            self._keep_alive_soon(candidate)
            entries = [relay_entry(r, a) for r, a in self.relays.items()]
            await self._publish([*self._direct_addresses, *entries])
            self.stats_counter["relays_reselected"] += 1
            log.info("now reachable through relay %s", candidate.short)
            return
        log.warning("behind NAT and no relay left: peers cannot reach this node")

    async def _relay_candidates(self, exclude: set[Identity]) -> list[Identity]:
        """Connected peers that are publicly reachable: their published record lists, without
        a relay, the very address this node reaches them at."""
        discovery = self.node.services.get(DISCOVERY)
        if discovery is None:
            return []
        found = []
        for peer in self.node.rpc.connected_peers()[:MAX_RELAY_CANDIDATES]:
            address = self.node.rpc.peer_address(peer)
            if peer in exclude or address is None:
                continue
            try:
                async with asyncio.timeout(RESOLVE_TIMEOUT):
                    contact = await discovery.resolve(peer)
            except (TimeoutError, KoriumError):
                continue
            if contact and not relays_in(contact) and format_address(address) in contact.addresses:
                found.append(peer)
        return found

    # -- data plane ---------------------------------------------------------------------------

    def _send_relayed(self, path: Path, data: bytes) -> None:
        assert path.relay_session is not None
        self.node.smartsock.send_datagram(frames.encode(path.relay_session, data), path.address)

    def _on_frame(self, datagram: bytes, source: Address) -> None:
        session = datagram[4 : 4 + frames.SESSION_ID_SIZE]
        mine = self._sessions.get(session)
        if mine is not None and mine.relay_address == source:
            try:
                _, payload = frames.decode(datagram)
            except frames.FrameError:
                self.stats_counter["dropped_malformed"] += 1
                return
            self.node.smartsock.deliver_relayed(payload, Path(source, session))
            return
        destination = self.server.forward(datagram, source, time.monotonic())
        if destination is not None:
            self.node.smartsock.send_datagram(datagram, destination)

    def _on_punch(self, datagram: bytes, source: Address) -> None:
        """A peer's punch got through: the hole is open, so prove the direct path now."""
        self.stats_counter["punches_received"] += 1
        peer = self.node.smartsock.paths.peer_at(source)
        if peer is not None:
            self.node.smartsock.probe_soon(peer)

    # -- RPC ----------------------------------------------------------------------------------

    async def _on_request(self, peer: Identity, body: bytes) -> bytes:
        try:
            message = wire.decode(body)
        except wire.WireError as exc:
            self.stats_counter["malformed"] += 1
            return wire.encode(_refused("malformed", str(exc)))
        reply: wire.Message
        if isinstance(message, wire.Reserve):
            reply = await self._reserve(peer, message.signal)
        elif isinstance(message, wire.Join):
            reply = self._join(peer, message.session)
        elif isinstance(message, wire.Incoming):
            reply = self._on_signal(message.signal, via=peer)
        elif isinstance(message, wire.CheckReachability):
            reply = await self._check_reachability(peer)
        elif isinstance(message, wire.Ack):
            reply = wire.Ack()  # a keepalive
        else:
            reply = wire.Refused("unexpected", f"no use for {type(message).__name__}")
        return wire.encode(reply)

    async def _reserve(self, peer: Identity, signal: wire.RelaySignal) -> wire.Message:
        if not self.settings.serve:
            return wire.Refused("not-a-relay", "this node does not relay")
        if signal.initiator != bytes(peer) or signal.relay != bytes(self.node.identity):
            return wire.Refused("signal", "the signal is not from you or not for this relay")
        address = self.node.rpc.peer_address(peer)
        if address is None:
            return wire.Refused("address", "you reach this relay through another relay")
        try:
            target = Identity(signal.target)
        except (KoriumError, ValueError):
            return _refused("signal", "the signal's target is not a valid identity")
        try:
            self.server.reserve(signal.session, peer, target, address, time.monotonic())
        except RelayRefused as exc:
            return _refused(exc.rule, str(exc))
        self._arm_expiry()
        joined: asyncio.Future[Address] = asyncio.get_running_loop().create_future()
        self._joins[signal.session] = joined
        if target in self.node.rpc.connected_peers():
            self._spawn(self._hand_over(target, signal))
        try:
            async with asyncio.timeout(self.settings.reserve_timeout):
                seen = await joined
        except TimeoutError:
            self.server.close(signal.session)
            return wire.Refused("timeout", f"{target.short}... did not join within the timeout")
        finally:
            self._joins.pop(signal.session, None)
        return wire.Joined(signal.session, format_address(seen))

    async def _hand_over(self, target: Identity, signal: wire.RelaySignal) -> None:
        with contextlib.suppress(RpcError, wire.WireError):
            await self.node.rpc.request(target, wire.PROTOCOL, wire.encode(wire.Incoming(signal)))

    def _join(self, peer: Identity, session: bytes) -> wire.Message:
        address = self.node.rpc.peer_address(peer)
        if address is None:
            return wire.Refused("address", "you reach this relay through another relay")
        try:
            joined = self.server.join(session, peer, address, time.monotonic())
        except RelayRefused as exc:
            return _refused(exc.rule, str(exc))
        self._arm_expiry()  # idle expiry may come sooner than the pending one it replaces
        waiting = self._joins.get(session)
        if waiting is not None and not waiting.done():
            waiting.set_result(address)
        return wire.Joined(session, format_address(joined.initiator_address))

    def _arm_expiry(self) -> None:
        wake = self.server.get_timer()
        if wake is None or (self._expiry is not None and self._expiry.when() <= wake):
            return
        if self._expiry is not None:
            self._expiry.cancel()
        loop = asyncio.get_running_loop()
        self._expiry = loop.call_at(
            max(wake - time.monotonic() + loop.time(), loop.time()), self._expire
        )

    def _expire(self) -> None:
        self._expiry = None
        self.server.expire(time.monotonic())
        self._arm_expiry()

    # -- reachability -------------------------------------------------------------------------

    async def _check_reachability(self, peer: Identity) -> wire.Message:
        """Dial the peer back from a fresh socket: an answer means no NAT filters it. The
        socket also answers the peer's probes for a while (the mapping check)."""
        address = self.node.rpc.peer_address(peer)
        if address is None:
            return wire.Refused("address", "you reach this node through a relay")
        loop = asyncio.get_running_loop()
        answered: asyncio.Future[None] = loop.create_future()
        me = bytes(self.node.identity)[: probe.TARGET_SIZE]

        class DialBack(asyncio.DatagramProtocol):
            transport: asyncio.DatagramTransport

            def connection_made(self, transport: asyncio.BaseTransport) -> None:
                self.transport = cast(asyncio.DatagramTransport, transport)

            def datagram_received(self, data: bytes, source: Any) -> None:
                try:
                    message = probe.decode(data)
                except probe.ProbeError:
                    return
                if isinstance(message, probe.ProbeResponse):
                    if not answered.done():
                        answered.set_result(None)
                elif message.target == me:  # the node asks how it looks from here
                    seen = (source[0], source[1])
                    response = probe.ProbeResponse(message.transaction, message.timestamp_ms, seen)
                    self.transport.sendto(probe.encode_response(response), seen)

        request = probe.ProbeRequest(
            int.from_bytes(os.urandom(8)), int(time.time() * 1000), bytes(peer)[: probe.TARGET_SIZE]
        )
        anywhere = "::" if ":" in address[0] else "0.0.0.0"
        transport, _ = await loop.create_datagram_endpoint(DialBack, local_addr=(anywhere, 0))
        for _ in range(5):
            transport.sendto(probe.encode_request(request), address)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(answered), 0.3)
            if answered.done():
                break
        loop.call_later(MAPPING_CHECK_WINDOW, transport.close)
        port = transport.get_extra_info("sockname")[1]
        return wire.Reachability(format_address(address), answered.done(), port)

    async def _check_mapping(self, helper: Identity, reply: wire.Reachability) -> None:
        """Whether this node's NAT keeps one external port for every destination."""
        address = self.node.rpc.peer_address(helper)
        if not reply.probe_port or address is None:
            return
        target = bytes(helper)[: probe.TARGET_SIZE]
        seen = await self.node.smartsock.probe_address(
            (address[0], reply.probe_port), target, MAPPING_PROBE_TIMEOUT
        )
        if seen is None:
            return
        independent = format_address(seen.observed) == reply.observed
        self.mapping = "endpoint-independent" if independent else "address-and-port-dependent"
        self.stats_counter["nat_mapping_dependent"] = int(not independent)

    async def configure_nat(
        self, helper: Identity, addresses: Sequence[str] | None = None
    ) -> NatConfiguration:
        """Ask *helper* whether this node is reachable; behind NAT, use it as relay and publish
        a contact record that names it. ``is_public, relay, incoming = await ...``."""
        reply = wire.expect(
            await self.node.rpc.request(
                helper, wire.PROTOCOL, wire.encode(wire.CheckReachability(os.urandom(32)))
            ),
            wire.Reachability,
        )
        await self._check_mapping(helper, reply)
        published = list(addresses if addresses is not None else self.node.routable_addresses())
        self._direct_addresses = published
        if reply.reachable:
            self.nat_status = NatStatus.PUBLIC
            await self._publish(published)
            return NatConfiguration(True, None, None)
        self.nat_status = NatStatus.BEHIND_NAT
        relay_address = self.node.rpc.peer_address(helper)
        if relay_address is None:
            raise RelayError(f"{helper.short}... is itself reached through a relay")
        self.relays[helper] = relay_address
        self._keep_alive_soon(helper)
        await self._publish([*published, relay_entry(helper, relay_address)])
        return NatConfiguration(False, helper, self.enable_mesh_signaling())

    async def _publish(self, addresses: list[str]) -> None:
        discovery = self.node.services.get(DISCOVERY)
        if discovery is not None:
            await discovery.publish_address(addresses)

    def _keep_alive_soon(self, relay: Identity) -> None:
        if relay not in self._kept_alive:
            self._kept_alive.add(relay)
            self._spawn(self._keep_alive(relay))

    def _needs(self, relay: Identity) -> bool:
        return relay in self.relays or any(c.relay == relay for c in self._sessions.values())

    async def _keep_alive(self, relay: Identity) -> None:
        """Talk to *relay* while this node needs it, so neither the RPC pool's idle close nor
        the NAT's mapping timeout ends the connection its sessions depend on."""
        try:
            while self._needs(relay):
                await asyncio.sleep(self.settings.keepalive_interval)
                if not self._needs(relay):
                    return
                try:
                    await self.node.rpc.request(relay, wire.PROTOCOL, wire.encode(wire.Ack()))
                except RpcError as exc:
                    self.stats_counter["relay_keepalive_failed"] += 1
                    log.info("relay %s did not answer: %s", relay.short, exc)
        finally:
            self._kept_alive.discard(relay)

    # -- signals and accepting ----------------------------------------------------------------

    def enable_mesh_signaling(self) -> AsyncIterator[IncomingConnection]:
        """Incoming relay connections, for the application to accept (``accept_incoming``);
        while it reads them, they are no longer accepted automatically."""
        queue = self._incoming

        async def iterate() -> AsyncIterator[IncomingConnection]:
            self._readers += 1
            try:
                while True:
                    yield await queue.get()
            finally:
                self._readers -= 1

        return iterate()

    async def _hear_signals(self, signals: AsyncIterator[PubSubMessage]) -> None:
        async for message in signals:
            try:
                signal = wire.expect(message.data, wire.RelaySignal)
            except wire.WireError:
                self.stats_counter["signals_malformed"] += 1
                continue
            if signal.target == bytes(self.node.identity):
                self._on_signal(signal, via=message.source)

    def _on_signal(self, signal: wire.RelaySignal, via: Identity) -> wire.Message:
        try:
            initiator = signal.verify(
                self.node.identity,
                int(time.time() * 1000),
                max_age_ms=int(self.settings.signal_max_age * 1000),
                max_skew_ms=int(self.settings.signal_max_skew * 1000),
            )
        except wire.SignalError as exc:
            self.stats_counter["signals_refused"] += 1
            return _refused("signal", str(exc))
        try:
            relay = Identity(signal.relay)
        except (KoriumError, ValueError):
            self.stats_counter["signals_refused"] += 1
            return _refused("signal", "the signal's relay is not a valid identity")
        if relay not in self.relays:
            self.stats_counter["signals_refused"] += 1
            return wire.Refused("relay", "the signal names a relay this node does not use")
        if signal.session in self._seen:
            self.stats_counter["signals_replayed"] += 1
            return wire.Refused("replay", "this session was signalled before")
        self._seen[signal.session] = None
        if len(self._seen) > SEEN_SIGNALS:
            self._seen.popitem(last=False)
        incoming = IncomingConnection(initiator, relay, signal.session)
        self.stats_counter["signals_accepted"] += 1
        if self._readers:
            try:
                self._incoming.put_nowait(incoming)
            except asyncio.QueueFull:
                self.stats_counter["incoming_dropped"] += 1
        elif self.settings.auto_accept:
            self._spawn(self._accept_quietly(incoming))
        return wire.Ack()

    async def _accept_quietly(self, incoming: IncomingConnection) -> None:
        try:
            await self.accept_incoming(incoming)
        except (RelayError, RpcError, wire.WireError) as exc:
            self._seen.pop(incoming.session, None)  # another copy of the signal may still work
            log.info("relay session from %s failed: %s", incoming.peer.short, exc)

    async def accept_incoming(self, incoming: IncomingConnection) -> None:
        """Join the relay session *incoming* names, so the peer's dial comes through."""
        relay_address = self.relays.get(incoming.relay)
        if relay_address is None:
            raise RelayError(f"{incoming.relay.short}... is not a relay of this node")
        for attempt in range(JOIN_ATTEMPTS):
            try:
                reply = wire.expect(
                    await self.node.rpc.request(
                        incoming.relay, wire.PROTOCOL, wire.encode(wire.Join(incoming.session))
                    ),
                    wire.Joined,
                )
                break
            except wire.RefusedError as exc:
                # the mesh copy of the signal can overtake the reservation it announces
                if exc.rule != "unknown-session" or attempt == JOIN_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(JOIN_RETRY_DELAY)
        self._use_session(incoming.session, incoming.relay, relay_address, incoming.peer, reply)

    def _use_session(
        self,
        session: bytes,
        relay: Identity,
        relay_address: Address,
        peer: Identity,
        joined: wire.Joined,
    ) -> None:
        sock = self.node.smartsock
        if len(self._sessions) >= MAX_CLIENT_SESSIONS:
            self._sessions.pop(next(iter(self._sessions)))  # the oldest
        self._sessions[session] = _ClientSession(relay, relay_address, peer)
        self._keep_alive_soon(relay)
        sock.paths.add_candidate(
            peer, Path(relay_address, session), asyncio.get_running_loop().time()
        )
        self.stats_counter["sessions_used"] += 1
        if self.settings.hole_punching:
            with contextlib.suppress(ValueError):
                self._spawn(self._punch(peer, parse_address(joined.peer_address)))

    async def _punch(self, peer: Identity, address: Address) -> None:
        """Open this side's NAT towards *address* and offer it as a direct path."""
        sock = self.node.smartsock
        loop = asyncio.get_running_loop()
        await asyncio.sleep(self.settings.punch_delay)
        sock.paths.add_candidate(peer, Path(address), loop.time())
        started = next_punch = loop.time()
        while loop.time() < started + self.settings.punch_duration:
            active = sock.paths.active_path(peer)
            if active is not None and not active.relayed:
                self.stats_counter["punched"] += 1
                self.stats_counter["last_punch_ms"] = int((loop.time() - started) * 1000)
                return
            if loop.time() >= next_punch:
                sock.send_datagram(PUNCH_MAGIC + os.urandom(8), address)
                self.stats_counter["punches_sent"] += 1
                sock.probe_soon(peer)
                next_punch += self.settings.punch_interval
            await asyncio.sleep(PUNCH_WATCH_INTERVAL)  # notice the switch promptly
        self.stats_counter["punch_failed"] += 1

    # -- dialing through a relay --------------------------------------------------------------

    async def dial_fallback(self, peer: Identity, contact: Contact | None) -> bool:
        """The direct dial to *peer* failed: set up a relayed path (True once it exists)."""
        if contact is None:
            discovery = self.node.services.get(DISCOVERY)
            contact = await discovery.resolve(peer) if discovery is not None else None
        relays = relays_in(contact) if contact is not None else []
        log.info("direct dial to %s failed; relays in its record: %d", peer.short, len(relays))
        if not relays:
            lost = self._lost.pop(peer, None)
            if lost is not None:
                raise RelayError(f"{peer.short}... is unreachable: {lost}")
            return False
        errors = []
        started = time.monotonic()
        for relay, address in relays:
            try:
                await self._relay_to(peer, relay, address)
                self.stats_counter["last_relay_setup_ms"] = int((time.monotonic() - started) * 1000)
                return True
            except (RelayError, RpcError, wire.WireError) as exc:
                errors.append(f"{relay.short}...: {exc}")
        lost = self._lost.pop(peer, None)
        raise RelayError(
            f"{peer.short}... is unreachable: the direct dial failed and so did its relays "
            f"({'; '.join(errors)})" + (f"; earlier, {lost}" if lost else "")
        )

    async def _relay_to(self, peer: Identity, relay: Identity, address: Address) -> None:
        await self.node.connect(relay, [address])
        relay_address = self.node.rpc.peer_address(relay) or address
        session = frames.new_session_id()
        signal = wire.RelaySignal.create(
            self.node.keypair, peer, session, relay, int(time.time() * 1000)
        )
        reserve = asyncio.ensure_future(
            self.node.rpc.request(
                relay,
                wire.PROTOCOL,
                wire.encode(wire.Reserve(signal)),
                timeout=self.settings.reserve_timeout + 5.0,
            )
        )
        pubsub = self.node.services.get(PUBSUB)
        if pubsub is not None:  # the mesh path, in case the relay cannot hand it over
            with contextlib.suppress(KoriumError):
                await pubsub.publish(wire.TOPIC_SIGNAL, wire.encode(signal))
        try:
            reply = wire.expect(await reserve, wire.Joined)
        except wire.RefusedError as exc:
            raise RelayError(f"the relay refused: {exc} [{exc.rule}]") from None
        self._use_session(session, relay, relay_address, peer, reply)


def _refused(rule: str, reason: str) -> wire.Refused:
    """A refusal that always fits the wire limits (a policy's reason can be any length)."""
    return wire.Refused(rule[:64], reason[:500])
