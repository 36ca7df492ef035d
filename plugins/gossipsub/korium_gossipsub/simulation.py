"""Simulated GossipSub networks: a thousand real korium nodes on :mod:`korium.testing`.

Why: delivery under churn, latency to reach most of the network, duplicate overhead and
resistance to Sybil attackers are properties of many nodes together; they are measured here on
virtual time, running the plugin's unmodified code (every honest node is a ``Node`` built with
``.simulated(network)`` and the ``gossipsub`` plugin). The tests use this; so can applications
tuning their settings.

The model: nodes are spread evenly over regions (``REGIONS_3``: 5-80 ms one-way), each dials
``degree`` random others (a random peer graph; in a simulation ``bootstrap`` only tells the
peer our subscriptions), all subscribe to one topic and meshes form over a few heartbeats.
Messages are then published at a fixed rate by random honest nodes while nodes leave (churn:
``node.close()``, no goodbye) and, optionally, join. Attackers run the plugin with a
misbehaving router (:class:`Behaviour`): droppers stay in meshes and forward nothing, spammers
send messages with bad signatures. Run it on virtual time (``korium.testing.run``)::

    sim = await SimGossip.build(1000, seed=1)
    report = await sim.run(100, rate=10, churn=0.1)
    print(report.summary())

Delivery is counted over *live honest subscribers*: honest nodes subscribed and connected
when the message was published and still online ``window_s`` later ("alive from publish to the
end", with the end set per message, so a node that leaves long after a message still counts for
it). A delivery counts if it arrives within ``window_s``. Runs are reproducible for a given
seed and ``PYTHONHASHSEED`` (sets of identities are iterated in hash order in places).
"""

from __future__ import annotations

import asyncio
import math
import random
import statistics
import struct
from collections import Counter
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from korium import PUBSUB, Node, NodeConfig, NodeIdentity, PluginInfo, hookimpl
from korium.clock import wall_time_ms
from korium.identity import Identity, Keypair
from korium.identity.pow import solve_pow
from korium.rpc import Rpc
from korium.testing import SimNetwork
from korium_gossipsub import messages as wire
from korium_gossipsub import plugin
from korium_gossipsub.config import GossipConfig
from korium_gossipsub.router import Router
from korium_gossipsub.score import ScoreParams, TopicScoreParams
from korium_gossipsub.service import GossipService

REGIONS_3: tuple[tuple[float, ...], ...] = (
    (0.005, 0.040, 0.080),
    (0.040, 0.005, 0.060),
    (0.080, 0.060, 0.005),
)
"""One-way latency in seconds between three regions (for example Europe, US East, Asia)."""
TOPIC = "korium-sim"
SHARES = (0.9, 0.99, 1.0)
"""Shares of the live subscribers whose delivery latency is reported."""

DROPPER_RESISTANT_TOPIC = TopicScoreParams(
    mesh_message_deliveries_weight=-1.0,
    mesh_message_deliveries_threshold=2.0,
    mesh_message_deliveries_cap=10.0,
    mesh_message_deliveries_decay=0.9,
    mesh_message_deliveries_activation_s=10.0,
)
"""Topic params under which mesh peers that forward nothing turn negative (and are pruned).

With the defaults, P3 (mesh delivery deficit) starts after 60 s in the mesh and costs at most
``0.5 * 1**2 = 0.5``, while P1 (time in mesh) has earned ``0.02 * 60 = 1.2`` by then: a dropper
never goes negative. Here P3 starts after 10 s and costs ``1.0 * 2**2 = 4`` for a peer that
delivered nothing (P1: 0.2 at 10 s; it outweighs 4 only after 200 s in the mesh, and a pruned
dropper starts again from 0). The counter decays by 0.9 a second, so an honest mesh peer stays
above the threshold of 2 as long as it delivers a message (first, or within 0.5 s of the first)
every few seconds. P3's known limit applies: the topic must carry traffic. Meshes that sit
silent for the activation time turn every honest mesh peer negative (with 5 s, and the
simulation's 5 s of quiet warm-up, honest nodes pruned each other when publishing began).
"""
DROPPER_RESISTANT_SCORE = ScoreParams(default_topic=DROPPER_RESISTANT_TOPIC)
"""Score params with :data:`DROPPER_RESISTANT_TOPIC` for every topic (the rest default)."""

_INDEX = struct.Struct(">I")


# -- attackers -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Behaviour:
    """What a node does with the protocol; honest unless a field says otherwise."""

    forward: bool = True
    """Forward messages to the mesh and answer IWANT (a dropper does neither)."""
    gossip: bool = True
    """Advertise cached messages with IHAVE (a dropper keeps quiet, so no broken promises)."""
    spam: int = 0
    """Messages with bad signatures sent, for each real message received, to each mesh peer."""
    spray: bool = False
    """Send the spam to every peer in the topic, not only to the mesh."""

    @property
    def honest(self) -> bool:
        return self.forward and self.gossip and not self.spam


HONEST = Behaviour()
DROPPER = Behaviour(forward=False, gossip=False)
"""Stays in meshes (answers GRAFT, grafts itself), receives everything, forwards nothing."""
SPAMMER = Behaviour(forward=False, gossip=False, spam=2, spray=True)
"""Forwards garbage instead of real messages, to every peer in the topic: both attacks."""


class AttackerRouter(Router):
    """The plugin's router with :class:`Behaviour` applied to what it sends.

    It overrides the router's internal steps (``_forward``, ``_on_iwant``, ``_gossip``) rather
    than copying them, so attackers otherwise run the real protocol; the simulation tests
    check that the overrides still take effect (droppers send no message at all).
    """

    behaviour: Behaviour = HONEST

    def _forward(self, message: wire.Message, source: Identity, sender: Identity) -> None:
        if self.behaviour.forward:
            super()._forward(message, source, sender)
        if self.behaviour.spam:
            topic = message.topic
            targets = self.topics.get(topic, ()) if self.behaviour.spray else self.mesh[topic]
            for peer in sorted(targets):  # the sender too: an attacker spares nobody
                self._spam(peer, topic)

    def _on_iwant(self, peer: Identity, iwant: wire.IWant) -> None:
        if self.behaviour.forward:
            super()._on_iwant(peer, iwant)

    def _gossip(self, topic: str, exclude: set[Identity]) -> None:
        if self.behaviour.gossip:
            super()._gossip(topic, exclude)

    def _spam(self, peer: Identity, topic: str) -> None:
        """Queue garbage for *peer*: right id and fresh seqno, so only the signature fails."""
        for _ in range(self.behaviour.spam):
            source = bytes(self.identity)
            seqno = self.seqno.next(wall_time_ms())
            data = self.rng.randbytes(32)
            payload = wire.signed_payload(source, topic, seqno, data)
            garbage = wire.Message(
                wire.message_id(payload), topic, source, seqno, data, self.rng.randbytes(64)
            )
            self._queue_message(peer, garbage, own=False)
            self.stats["spam_sent"] += 1


class AttackerService(GossipService):
    """The plugin's driver around an :class:`AttackerRouter`."""

    def __init__(
        self, keypair: Keypair, rpc: Rpc, config: GossipConfig, behaviour: Behaviour
    ) -> None:
        self.behaviour = behaviour
        super().__init__(keypair, rpc, config)

    def _make_router(self, keypair: Keypair, config: GossipConfig) -> Router:
        router = AttackerRouter(
            keypair, config, self.score, rng=self.rng, addresses_of=self._addresses_of
        )
        router.behaviour = self.behaviour
        return router


class AttackerPlugin:
    """A ``gossipsub`` plugin whose nodes misbehave as *behaviour* says (load it instead of
    ``korium_gossipsub.plugin``); every hook but setup is the real plugin's."""

    def __init__(self, behaviour: Behaviour) -> None:
        self.behaviour = behaviour
        self.korium_plugin = PluginInfo(
            name=plugin.NAME, description=f"misbehaving gossipsub: {behaviour}", provides=(PUBSUB,)
        )

    @hookimpl
    def korium_configure(self, config: NodeConfig) -> None:
        plugin.korium_configure(config)

    @hookimpl
    def korium_node_setup(self, node: Node) -> None:
        config = GossipConfig.from_settings(node.config.settings(plugin.NAME))
        service = AttackerService(node.keypair, node.rpc, config, self.behaviour)
        node.services.provide(PUBSUB, service, provider=plugin.NAME)

    @hookimpl
    def korium_node_started(self, node: Node) -> None:
        plugin.korium_node_started(node)

    @hookimpl
    def korium_node_stopping(self, node: Node) -> Awaitable[None]:
        return plugin.korium_node_stopping(node)

    @hookimpl
    def korium_stats(self, node: Node) -> dict[str, int | float]:
        return plugin.korium_stats(node)

    @hookimpl
    def korium_peer_connected(self, node: Node, peer: Identity) -> None:
        plugin.korium_peer_connected(node, peer)

    @hookimpl
    def korium_peer_disconnected(self, node: Node, peer: Identity) -> None:
        plugin.korium_peer_disconnected(node, peer)

    @hookimpl
    def korium_bootstrap(self, node: Node, peer: Identity) -> None:
        plugin.korium_bootstrap(node, peer)


# -- measurements ----------------------------------------------------------------------------


@dataclass(slots=True)
class MessageOutcome:
    """Who got one message, and how long after it was published."""

    index: int
    published_at: float
    expected: int
    """Live honest subscribers (publisher excluded)."""
    latencies: list[float] = field(default_factory=list)
    """Seconds from publish to delivery, sorted, of the live subscribers reached in time."""
    publisher: Identity | None = None

    @property
    def delivered(self) -> int:
        return len(self.latencies)

    @property
    def complete(self) -> bool:
        return self.delivered >= self.expected

    def time_to(self, share: float) -> float | None:
        """Seconds until *share* of the live subscribers had it; None if it never reached them."""
        if self.expected == 0:
            return 0.0
        needed = max(1, math.ceil(share * self.expected - 1e-9))
        if needed > self.delivered:
            return None
        return self.latencies[needed - 1]


@dataclass(slots=True)
class GossipReport:
    """Outcome of one :meth:`SimGossip.run`: per message deliveries, plus router counters."""

    outcomes: list[MessageOutcome] = field(default_factory=list)
    counters: Counter[str] = field(default_factory=Counter)
    """Router counters summed over the honest nodes, for the run only."""
    removed: int = 0
    joined: int = 0
    duration_s: float = 0.0
    """Virtual seconds the run took (publishing and draining)."""

    @property
    def delivery_ratio(self) -> float:
        """Deliveries over expected deliveries, all messages together."""
        expected = sum(o.expected for o in self.outcomes)
        return sum(o.delivered for o in self.outcomes) / expected if expected else 1.0

    @property
    def complete_ratio(self) -> float:
        """Share of messages that reached every live subscriber."""
        return sum(o.complete for o in self.outcomes) / len(self.outcomes) if self.outcomes else 1.0

    @property
    def duplicate_ratio(self) -> float:
        """Copies received that were already seen, per message delivered (honest nodes)."""
        delivered = self.counters["delivered"]
        return self.counters["duplicates"] / delivered if delivered else 0.0

    def latency(self, share: float) -> tuple[float, float, int]:
        """(median, max) over messages of the time to reach *share* of the live subscribers,
        and how many messages never reached that share (left out of median and max)."""
        times = [o.time_to(share) for o in self.outcomes]
        reached = [t for t in times if t is not None]
        if not reached:
            return math.nan, math.nan, len(times)
        return statistics.median(reached), max(reached), len(times) - len(reached)

    def summary(self) -> dict[str, float]:
        """The figures of the run, flat (for printing and asserting)."""
        figures: dict[str, float] = {
            "messages": len(self.outcomes),
            "expected_deliveries": sum(o.expected for o in self.outcomes),
            "delivery_ratio": self.delivery_ratio,
            "complete_ratio": self.complete_ratio,
            "duplicate_ratio": self.duplicate_ratio,
            "sent_per_delivery": (
                self.counters["messages_sent"] / self.counters["delivered"]
                if self.counters["delivered"]
                else 0.0
            ),
            "removed": self.removed,
            "joined": self.joined,
        }
        for share in SHARES:
            median, worst, missed = self.latency(share)
            name = f"t{round(share * 100)}"
            figures[f"{name}_median_s"] = median
            figures[f"{name}_max_s"] = worst
            figures[f"{name}_missed"] = missed
        return figures


@dataclass(slots=True)
class Standing:
    """How honest nodes see one group of nodes (attackers, or honest peers for comparison)."""

    links: int = 0
    """(honest node, peer of the group) pairs where the honest node is connected to the peer."""
    graylisted: int = 0
    """... of which the honest node scores the peer below its graylist threshold."""
    negative: int = 0
    """... below zero (no longer grafted, pruned at the next heartbeat)."""
    in_mesh: int = 0
    """... in the honest node's mesh."""


@dataclass(slots=True)
class Member:
    """One simulated node and its bookkeeping."""

    node: Node
    behaviour: Behaviour
    region: int
    joined_at: float = math.inf
    """Virtual time it was subscribed and connected (inf: not yet)."""
    removed_at: float | None = None
    received: dict[int, float] = field(default_factory=dict)
    """Message index -> virtual time delivered to the application."""
    consumer: asyncio.Task[None] | None = None

    @property
    def identity(self) -> Identity:
        return self.node.identity

    @property
    def online(self) -> bool:
        return self.removed_at is None

    @property
    def service(self) -> GossipService:
        return plugin.service(self.node)


# -- the simulation --------------------------------------------------------------------------


class SimGossip:
    """A simulated network of GossipSub nodes on one topic; build with :meth:`build`."""

    def __init__(
        self,
        network: SimNetwork,
        rng: random.Random,
        *,
        regions: Sequence[Sequence[float]],
        degree: int,
        settings: Mapping[str, Any],
        message_size: int,
    ) -> None:
        self.network = network
        self.rng = rng
        self.regions = regions
        self.degree = degree
        self.settings = dict(settings)
        self.message_size = message_size
        self.members: list[Member] = []
        self._by_identity: dict[Identity, Member] = {}
        self._published: dict[int, tuple[Member, float]] = {}
        self._next_index = 0
        self._attacker_plugins: dict[Behaviour, AttackerPlugin] = {}
        network.latency_model = self._latency

    @classmethod
    async def build(
        cls,
        count: int,
        *,
        seed: int = 0,
        regions: Sequence[Sequence[float]] = REGIONS_3,
        degree: int = 8,
        attackers: Mapping[Behaviour, float] | None = None,
        settings: Mapping[str, Any] | None = None,
        message_size: int = 64,
        warmup_s: float = 5.0,
    ) -> SimGossip:
        """*count* nodes in a random peer graph, subscribed, meshes formed.

        :param degree: peers each node dials (so about twice that per node on average).
        :param attackers: share of the *count* nodes running each misbehaving :class:`Behaviour`
            (chosen at random).
        :param settings: ``gossipsub`` plugin settings of every node (attackers too).
        :param message_size: payload bytes of each published message (at least 4).
        :param warmup_s: virtual seconds for meshes to form before :meth:`build` returns.
        """
        rng = random.Random(seed)
        sim = cls(
            SimNetwork(seed=seed),
            rng,
            regions=regions,
            degree=degree,
            settings=settings or {},
            message_size=max(_INDEX.size, message_size),
        )
        roles = [HONEST] * count
        slots = list(range(count))
        rng.shuffle(slots)
        for behaviour, share in (attackers or {}).items():
            for _ in range(round(share * count)):
                if slots:
                    roles[slots.pop()] = behaviour
        for index, behaviour in enumerate(roles):
            await sim._add(behaviour, index % len(regions))
        now = asyncio.get_running_loop().time()
        for member in sim.members:
            await sim._connect(member, sim.members)
            member.joined_at = now
        await asyncio.sleep(warmup_s)
        return sim

    async def _add(self, behaviour: Behaviour, region: int) -> Member:
        keypair = Keypair.from_seed(self.rng.randbytes(32))
        identity = NodeIdentity(keypair, solve_pow(keypair.identity, 0, workers=1))
        builder = Node.builder().identity(identity).difficulty(0).simulated(self.network)
        if behaviour.honest:
            builder.plugins([plugin])
        else:
            attacker = self._attacker_plugins.get(behaviour)
            if attacker is None:
                attacker = self._attacker_plugins[behaviour] = AttackerPlugin(behaviour)
            builder.plugins([attacker])
        if self.settings:
            builder.plugin_settings(plugin.NAME, **self.settings)
        node = await builder.build()
        member = Member(node, behaviour, region)
        self.members.append(member)
        self._by_identity[member.identity] = member
        member.service.rng.seed(self.rng.randrange(2**32))  # reproducible meshes and gossip
        await node.subscribe(TOPIC)
        if behaviour.honest:
            member.consumer = asyncio.create_task(self._consume(member))
        return member

    async def _connect(self, member: Member, among: Sequence[Member]) -> None:
        """Dial ``degree`` random members of *among* (not itself)."""
        picked = self.rng.sample(list(among), min(self.degree + 1, len(among)))
        for peer in [p for p in picked if p is not member][: self.degree]:
            await member.node.bootstrap(peer.identity, "10.0.0.1:1")

    async def _consume(self, member: Member) -> None:
        loop = asyncio.get_running_loop()
        async for message in member.node.messages(TOPIC):
            (index,) = _INDEX.unpack_from(message.data)
            member.received.setdefault(index, loop.time())

    def _latency(self, a: Identity, b: Identity) -> float:
        return self.regions[self._by_identity[a].region][self._by_identity[b].region]

    # -- views ------------------------------------------------------------------------------

    def online(self, *, honest: bool | None = None) -> list[Member]:
        """Online members (only honest ones, or only attackers, if asked)."""
        return [
            m for m in self.members if m.online and (honest is None or m.behaviour.honest == honest)
        ]

    def member(self, identity: Identity) -> Member:
        return self._by_identity[identity]

    def standing(self, group: Sequence[Member]) -> Standing:
        """How the online honest nodes connected to *group*'s members score them now."""
        wanted = {m.identity for m in group}
        standing = Standing()
        for honest in self.online(honest=True):
            service = honest.service
            graylist = service.config.thresholds.graylist
            mesh = service.router.mesh.get(TOPIC, set())
            for peer in service.router.peers:
                if peer not in wanted:
                    continue
                score = service.peer_score(peer)
                standing.links += 1
                standing.graylisted += score < graylist
                standing.negative += score < 0
                standing.in_mesh += peer in mesh
        return standing

    def mesh_share(self, group: Sequence[Member]) -> float:
        """Share of the online honest nodes' mesh slots that *group*'s members hold."""
        wanted = {m.identity for m in group}
        slots = held = 0
        for honest in self.online(honest=True):
            mesh = honest.service.router.mesh.get(TOPIC, set())
            slots += len(mesh)
            held += len(mesh & wanted)
        return held / slots if slots else 0.0

    def counters(self, members: Sequence[Member] | None = None) -> Counter[str]:
        """Router counters summed over *members* (default: every honest node, gone or not)."""
        total: Counter[str] = Counter()
        for member in members if members is not None else self.members:
            if members is not None or member.behaviour.honest:
                total.update(member.service.router.stats)
        return total

    # -- running ----------------------------------------------------------------------------

    async def run(
        self,
        messages: int,
        *,
        rate: float = 10.0,
        churn: float = 0.0,
        joins: float = 0.0,
        window_s: float = 5.0,
    ) -> GossipReport:
        """Publish *messages* at *rate* per second from random online honest nodes, while
        *churn* of the online nodes leave and *joins* (a share of them) join, at even
        intervals over the publishing time; then wait *window_s* and report.

        A leaving node closes abruptly (peers keep it until their connections time out); a
        joining node is honest, subscribes and dials ``degree`` random online nodes.
        """
        loop = asyncio.get_running_loop()
        start = loop.time()
        period = messages / rate
        population = len(self.online())
        events: list[tuple[float, int, str]] = [
            (start + i / rate, 0, "publish") for i in range(messages)
        ]
        for kind, share in (("leave", churn), ("join", joins)):
            count = round(share * population)
            events.extend((start + (i + 0.5) * period / count, 1, kind) for i in range(count))
        events.sort()
        before = self.counters()
        report = GossipReport()
        first = self._next_index
        for at, _, kind in events:
            await asyncio.sleep(max(0.0, at - loop.time()))
            if kind == "publish":
                await self._publish()
            elif kind == "leave":
                await self._leave()
                report.removed += 1
            else:
                await self._join()
                report.joined += 1
        await asyncio.sleep(max(0.0, start + period + window_s - loop.time()))
        report.duration_s = loop.time() - start
        report.counters = self.counters() - before
        report.outcomes = [self._outcome(i, window_s) for i in range(first, self._next_index)]
        return report

    async def _publish(self) -> None:
        publisher = self.rng.choice(self.online(honest=True))
        index = self._next_index
        self._next_index += 1
        data = _INDEX.pack(index) + bytes(self.message_size - _INDEX.size)
        self._published[index] = (publisher, asyncio.get_running_loop().time())
        await publisher.node.publish(TOPIC, data)

    async def _leave(self) -> None:
        member = self.rng.choice(self.online())
        member.removed_at = asyncio.get_running_loop().time()
        await member.node.close()

    async def _join(self) -> None:
        member = await self._add(HONEST, len(self.members) % len(self.regions))
        await self._connect(member, self.online())
        member.joined_at = asyncio.get_running_loop().time()

    def _outcome(self, index: int, window_s: float) -> MessageOutcome:
        publisher, at = self._published[index]
        latencies = []
        expected = 0
        for member in self.members:
            if member is publisher or not member.behaviour.honest or member.joined_at > at:
                continue
            if member.removed_at is not None and member.removed_at < at + window_s:
                continue
            expected += 1
            received = member.received.get(index)
            if received is not None and received - at <= window_s:
                latencies.append(received - at)
        latencies.sort()
        return MessageOutcome(index, at, expected, latencies, publisher.identity)

    async def close(self) -> None:
        """Close every online node and stop the consumers."""
        for member in self.members:
            if member.online:
                member.removed_at = asyncio.get_running_loop().time()
                await member.node.close()
        for member in self.members:
            if member.consumer is not None:
                member.consumer.cancel()
        await asyncio.gather(
            *(m.consumer for m in self.members if m.consumer is not None), return_exceptions=True
        )
