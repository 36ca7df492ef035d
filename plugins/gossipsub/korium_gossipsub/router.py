"""The GossipSub v1.1/v1.2 router of one node, as pure state: no I/O, time passed in.

The driver (:mod:`korium_gossipsub.service`) feeds it events (a peer connected, a frame
arrived, a heartbeat, a local publish) and carries out its decisions: every peer with
something to send is in :attr:`Router.dirty`, and :meth:`Router.take` cuts its next frame from
that peer's :class:`~korium_gossipsub.outbox.Outbox`.
Messages that passed every protocol check wait in :meth:`Router.receive`'s result for the
application's validators; :meth:`Router.finish` then delivers and forwards them (or penalises
their sender).

Who gets what:

* **Our own messages** go to every topic peer scoring at least the publish threshold (flood
  publishing), or, with flood publishing off, to the mesh (fanout when not subscribed).
* **Forwarded messages** go to the topic's mesh, except the peer they came from, their
  publisher and peers that said IDONTWANT for them.
* **Gossip**: each heartbeat, IHAVE with the ids of the newest cache windows goes to
  ``max(d_lazy, gossip_factor * eligible)`` non-mesh topic peers above the gossip threshold.
* Everything a peer below the graylist threshold sends is ignored.

"Outbound" peers (``d_out``) are those whose connection this node dialled: Sybils that connect
to us cannot fill that part of the mesh.
"""

from __future__ import annotations

import random
import statistics
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from korium.identity import Identity, Keypair
from korium.limits import KeyedRateLimiter, TokenBucket
from korium_gossipsub import messages as wire
from korium_gossipsub.caches import MessageCache, SeenCache, Verdict
from korium_gossipsub.config import GossipConfig
from korium_gossipsub.errors import MessageTooLargeError, TooManyTopicsError
from korium_gossipsub.messages import Frame, Message
from korium_gossipsub.outbox import MESSAGE_OVERHEAD, Outbox
from korium_gossipsub.score import PeerScore

MAX_PROMISES = 10_000
"""IWANT promises tracked at once (ids asked for and not yet delivered)."""
MAX_BACKOFFS = 10_000
MAX_SOURCES = 10_000
"""Publishers whose message rate is tracked (least recently seen forgotten first)."""
MAX_PX_CANDIDATES = 64
MAX_PENDING_COPIES = 64
"""Copies of one message remembered while it is being validated."""


@dataclass(slots=True)
class Incoming:
    """A new message that passed the protocol checks, waiting for the application's verdict."""

    peer: Identity
    """The peer that delivered it first."""
    message: Message
    source: Identity
    """Its publisher (signature verified)."""


@dataclass(slots=True)
class PeerState:
    """What the router knows about one connected peer."""

    ip: str | None
    outbound: bool
    """We dialled the connection (counts towards d_out)."""
    received: TokenBucket
    """Frames accepted from the peer (``receive_rate`` per second)."""
    sending: TokenBucket
    """Frames sent to the peer: paced at its receive rate, so we never trip its limit."""
    topics: set[str] = field(default_factory=set)
    out: Outbox = field(default_factory=Outbox)
    idontwant: OrderedDict[bytes, float] = field(default_factory=OrderedDict)
    ihaves: int = 0
    """IHAVE messages received this heartbeat."""
    asked: int = 0
    """Ids asked for with IWANT this heartbeat."""
    last_sent: float = 0.0


class Router:
    """GossipSub state of one node. See the module docstring for who gets what."""

    def __init__(
        self,
        keypair: Keypair,
        config: GossipConfig,
        score: PeerScore,
        *,
        rng: random.Random | None = None,
        addresses_of: Callable[[Identity], list[str]] = lambda peer: [],
    ) -> None:
        self.keypair = keypair
        self.identity = keypair.identity
        self.config = config
        self.score = score
        self.rng = rng or random.Random()
        self._addresses_of = addresses_of
        self.stats: Counter[str] = Counter()
        self.peers: dict[Identity, PeerState] = {}
        self.topics: dict[str, set[Identity]] = {}
        """Peers subscribed to each topic we know of."""
        self.subscriptions: set[str] = set()
        self.mesh: dict[str, set[Identity]] = {}
        self.fanout: dict[str, set[Identity]] = {}
        self.fanout_last: dict[str, float] = {}
        self.backoff: OrderedDict[tuple[Identity, str], float] = OrderedDict()
        self.seen = SeenCache(config.seen_ttl_s, config.max_seen)
        self.mcache: MessageCache[Message] = MessageCache(
            config.history_length,
            config.history_gossip,
            config.max_cache_bytes,
            lambda message: message.size + MESSAGE_OVERHEAD,
        )
        # a burst of the whole message-cache window: IWANT repair of a publisher's last few
        # seconds arrives at once and must pass
        window = config.history_length * config.heartbeat_s
        burst = max(1, int(config.source_rate * window))
        self.sources: KeyedRateLimiter[bytes] = KeyedRateLimiter(
            burst, burst / config.source_rate, MAX_SOURCES
        )
        """New messages accepted per publisher."""
        self.promises: OrderedDict[bytes, tuple[Identity, float]] = OrderedDict()
        self.seqno = wire.SeqnoClock()
        self.dirty: set[Identity] = set()
        """Peers with something to send; the driver calls :meth:`take` for each."""
        self.delivered: deque[tuple[Message, Identity]] = deque()
        """Accepted messages of subscribed topics, for the application (the driver drains)."""
        self.px_candidates: list[wire.PxPeer] = []
        """Peers offered by peer exchange, for the driver to connect to."""
        self.heartbeats = 0
        self._pending: dict[bytes, list[tuple[Identity, float]]] = {}
        """Copies of messages still being validated: who sent them and when, settled with the
        verdict (credit for a valid message, a penalty for an invalid one)."""

    # -- peers ----------------------------------------------------------------------------

    def add_peer(
        self, peer: Identity, ip: str | None, now: float, *, outbound: bool = False
    ) -> None:
        """*peer* connected (*outbound*: we dialled): score it, tell it our subscriptions."""
        if peer == self.identity:
            return
        state = self.peers.get(peer)
        if state is None:
            rate, burst = self.config.receive_rate, self.config.receive_burst
            sending = max(1, burst // 2)  # we pace with half the burst the receiver allows
            state = self.peers[peer] = PeerState(
                ip,
                outbound,
                TokenBucket.full(burst, burst / rate, now),
                TokenBucket.full(sending, sending / rate, now),
            )
            self.score.add_peer(peer, ip, now)
            state.out.subscriptions.extend(
                wire.SubOpt(True, topic) for topic in sorted(self.subscriptions)
            )
            self._touch(peer, state)
        else:
            state.outbound = state.outbound or outbound
            if ip is not None and ip != state.ip:
                state.ip = ip
                self.score.add_peer(peer, ip, now)

    def remove_peer(self, peer: Identity, now: float) -> None:
        """*peer* disconnected: forget its subscriptions and take it out of every mesh."""
        state = self.peers.pop(peer, None)
        if state is None:
            return
        for topic in state.topics:
            self._forget_topic_peer(topic, peer)
        for mesh in self.mesh.values():
            mesh.discard(peer)
        for peers in self.fanout.values():
            peers.discard(peer)
        self.dirty.discard(peer)
        self.score.remove_peer(peer, now)

    def _peer(self, peer: Identity, now: float) -> PeerState:
        state = self.peers.get(peer)
        if state is None:  # a frame before the connection event: count it as connected
            self.add_peer(peer, None, now)
            state = self.peers[peer]
        return state

    # -- local API ------------------------------------------------------------------------

    def subscribe(self, topic: str, now: float) -> None:
        """Join *topic*: build its mesh from fanout and topic peers, tell every peer."""
        wire.check_topic(topic)
        if topic in self.subscriptions:
            return
        if len(self.subscriptions) >= self.config.max_topics:
            raise TooManyTopicsError(
                f"this node already subscribes to {self.config.max_topics} topics"
            )
        self.subscriptions.add(topic)
        self.topics.setdefault(topic, set())
        mesh = self.mesh[topic] = set()
        fanout = self.fanout.pop(topic, set())
        self.fanout_last.pop(topic, None)
        for peer in sorted(fanout):
            usable = self.score.score(peer) >= 0 and not self._in_backoff(peer, topic, now)
            if usable and peer in self.peers and len(mesh) < self.config.d:
                self._graft(peer, topic, now)
        for peer in self._candidates(topic, now, self.config.d - len(mesh)):
            self._graft(peer, topic, now)
        for peer, state in self.peers.items():
            state.out.subscriptions.append(wire.SubOpt(True, topic))
            self._touch(peer, state)

    def unsubscribe(self, topic: str, now: float) -> None:
        """Leave *topic*: prune the mesh (with the unsubscribe backoff), tell every peer."""
        if topic not in self.subscriptions:
            return
        self.subscriptions.discard(topic)
        for peer in list(self.mesh.get(topic, ())):
            self._prune(peer, topic, now, px=True, backoff_s=self.config.unsubscribe_backoff_s)
        self.mesh.pop(topic, None)
        if not self.topics.get(topic):
            self.topics.pop(topic, None)
        for peer, state in self.peers.items():
            state.out.subscriptions.append(wire.SubOpt(False, topic))
            self._touch(peer, state)

    def publish(
        self,
        topic: str,
        data: bytes,
        now: float,
        wall_ms: int,
        targets: list[Identity] | None = None,
    ) -> tuple[Message, int]:
        """Sign *data* and queue it for its peers (*targets*, if the caller just computed
        them with :meth:`publish_targets`); returns the message and how many peers."""
        wire.check_topic(topic)
        if len(data) > self.config.max_message_size:
            raise MessageTooLargeError(
                f"message of {len(data)} bytes exceeds the {self.config.max_message_size}-byte "
                "limit"
            )
        message = wire.sign(self.keypair, topic, self.seqno.next(wall_ms), bytes(data))
        self.seen.add(message.id, now, Verdict.ACCEPTED)
        self.mcache.put(message.id, topic, message)
        if targets is None:
            targets = self.publish_targets(topic, now)
        for peer in targets:
            self._queue_message(peer, message, own=True)
        self.stats["published"] += 1
        if not targets:
            self.stats["published_to_no_peer"] += 1
        return message, len(targets)

    def publish_targets(self, topic: str, now: float) -> list[Identity]:
        """The peers our own next message on *topic* goes to."""
        threshold = self._publish_threshold
        mesh = self.mesh.get(topic)
        if mesh is None:  # not subscribed: fanout keeps a set of peers for a while
            fanout = self.fanout.get(topic)
            if fanout is None:
                if len(self.fanout) >= self.config.max_topics:  # the least recently used goes
                    stale = min(self.fanout, key=lambda t: self.fanout_last.get(t, now))
                    del self.fanout[stale]
                    self.fanout_last.pop(stale, None)
                    self.stats["fanout_evicted"] += 1
                fanout = self.fanout[topic] = set()
            self._fill(fanout, topic, now, threshold)
            self.fanout_last[topic] = now
            mesh = fanout
        if not self.config.flood_publish:
            return sorted(mesh)
        peers = self.topics.get(topic, set()) | mesh
        return sorted(p for p in peers if self.score.score(p) >= threshold)

    @property
    def _publish_threshold(self) -> float:
        return self.config.thresholds.publish

    def _fill(self, peers: set[Identity], topic: str, now: float, threshold: float) -> None:
        for peer in list(peers):
            if peer not in self.topics.get(topic, ()) or self.score.score(peer) < threshold:
                peers.discard(peer)
        need = self.config.d - len(peers)
        if need > 0:
            pool = sorted(
                p
                for p in self.topics.get(topic, ())
                if p not in peers and self.score.score(p) >= threshold
            )
            peers.update(self.rng.sample(pool, min(need, len(pool))))

    # -- receiving ------------------------------------------------------------------------

    def receive(self, peer: Identity, frame: Frame, now: float, wall_ms: int) -> list[Incoming]:
        """Handle *frame* from *peer*; returns the new messages awaiting validation."""
        state = self._peer(peer, now)
        if self.score.score(peer) < self.config.thresholds.graylist:
            self.stats["frames_graylisted"] += 1
            return []
        if not state.received.take(now):
            self.stats["frames_over_receive_rate"] += 1
            self.stats["messages_over_receive_rate"] += len(frame.messages)
            self.score.add_penalty(peer, self.config.flood_penalty)
            return []
        for sub in frame.subscriptions:
            self._on_subscription(peer, state, sub, now)
        for idontwant in frame.idontwant:  # first: it may cancel what we were about to send
            self._on_idontwant(state, idontwant, now)
        incoming: list[Incoming] = []
        for message in frame.messages:
            new = self._on_message(peer, state, message, now, wall_ms)
            if new is not None:
                incoming.append(new)
        for graft in frame.graft:
            self._on_graft(peer, graft.topic, now)
        for prune in frame.prune:
            self._on_prune(peer, prune, now)
        for ihave in frame.ihave:
            self._on_ihave(peer, state, ihave, now)
        for iwant in frame.iwant:
            self._on_iwant(peer, iwant)
        return incoming

    def malformed(self, peer: Identity) -> None:
        """*peer* sent a frame that does not decode: count it and penalise the peer."""
        self.stats["frames_malformed"] += 1
        self.score.add_penalty(peer)

    def _on_message(
        self, peer: Identity, state: PeerState, message: Message, now: float, wall_ms: int
    ) -> Incoming | None:
        stats = self.stats
        topic = message.topic
        if message.id in state.out.forwarded:  # the peer has it: our queued copy is not needed
            self.stats["cancelled_peer_has_it"] += state.out.cancel((message.id,))
        seen = self.seen.get(message.id)
        if seen is not None:
            stats["duplicates"] += 1
            if seen.verdict is Verdict.REJECTED:
                self.score.invalid_message(peer, topic)
            elif seen.verdict is Verdict.ACCEPTED:
                self.score.duplicate_delivery(peer, topic, seen.first_seen, now)
                self._keep_promise(message.id, peer)
            elif seen.verdict is Verdict.PENDING:
                copies = self._pending.get(message.id)
                if copies is not None and len(copies) < MAX_PENDING_COPIES:
                    copies.append((peer, now))
            return None
        if topic not in self.subscriptions:
            stats["dropped_not_subscribed"] += 1
            return None
        if message.size > self.config.max_message_size:  # our limit, not the wire's: no penalty
            stats["dropped_too_large"] += 1
            return None
        payload = message.payload()
        if wire.message_id(payload) != message.id:
            self._invalid(peer, topic, "rejected_message_id")
            return None
        published = wire.seqno_time_ms(message.seqno)
        if published < wall_ms - self.config.message_max_age_s * 1000:
            self._invalid(peer, topic, "rejected_too_old")
            return None
        if published > wall_ms + self.config.clock_skew_s * 1000:
            self._invalid(peer, topic, "rejected_future")
            return None
        source = wire.verify(message, payload)
        if source is None:
            self._invalid(peer, topic, "rejected_signature")
            return None
        if source == self.identity:  # our own message, forgotten: refuse, do not re-deliver
            stats["own_messages_returned"] += 1
            return None
        if not self.sources.allow(message.source, now):
            stats["dropped_source_rate"] += 1
            if source == peer:  # it floods with its own messages
                self.score.add_penalty(peer, self.config.flood_penalty)
            return None
        self.seen.add(message.id, now, Verdict.PENDING)
        self._pending[message.id] = []
        if message.size >= self.config.idontwant_threshold:
            self._send_idontwant(message, exclude=peer)
        return Incoming(peer, message, source)

    def _invalid(self, peer: Identity, topic: str, reason: str) -> None:
        self.stats[reason] += 1
        self.stats["rejected"] += 1
        self.score.invalid_message(peer, topic)
        return None

    def finish(self, incoming: Incoming, verdict: Verdict, now: float) -> None:
        """The application's verdict on *incoming*: deliver and forward, or penalise."""
        message, peer = incoming.message, incoming.peer
        copies = self._pending.pop(message.id, [])
        seen = self.seen.get(message.id)
        if seen is not None:
            seen.verdict = verdict
        for other, arrived in copies:
            if verdict is Verdict.ACCEPTED:
                first_seen = seen.first_seen if seen is not None else arrived
                self.score.duplicate_delivery(other, message.topic, first_seen, arrived)
                self._keep_promise(message.id, other)
            elif verdict is Verdict.REJECTED:
                self.score.invalid_message(other, message.topic)
        if verdict is Verdict.ACCEPTED:
            self.score.first_delivery(peer, message.topic, now)
            self._keep_promise(message.id, peer)
            self.mcache.put(message.id, message.topic, message)
            if message.topic in self.subscriptions:
                self.delivered.append((message, incoming.source))
                self.stats["delivered"] += 1
            self._forward(message, incoming.source, peer)
        elif verdict is Verdict.REJECTED:
            self.stats["rejected_by_validator"] += 1
            self.score.invalid_message(peer, message.topic)
        else:
            self.stats["ignored_by_validator"] += 1

    def _forward(self, message: Message, source: Identity, sender: Identity) -> None:
        for peer in self.mesh.get(message.topic, ()):
            if peer in (sender, source):
                continue
            state = self.peers.get(peer)
            if state is None:
                continue
            if message.id in state.idontwant:
                self.stats["idontwant_honoured"] += 1
                continue
            self._queue_message(peer, message, own=False)

    def _send_idontwant(self, message: Message, exclude: Identity) -> None:
        for peer in self.mesh.get(message.topic, ()):
            if peer == exclude:
                continue
            state = self.peers.get(peer)
            if state is not None:
                state.out.idontwant.append(message.id)
                self.stats["idontwant_sent"] += 1
                self._touch(peer, state)

    def _keep_promise(self, msg_id: bytes, peer: Identity) -> None:
        promise = self.promises.get(msg_id)
        if promise is not None and promise[0] == peer:
            del self.promises[msg_id]

    # -- control --------------------------------------------------------------------------

    def _on_subscription(
        self, peer: Identity, state: PeerState, sub: wire.SubOpt, now: float
    ) -> None:
        topic = sub.topic
        if not sub.subscribe:
            if topic in state.topics:
                state.topics.discard(topic)
                self._forget_topic_peer(topic, peer)
                if peer in self.mesh.get(topic, ()):
                    self.mesh[topic].discard(peer)
                    self.score.prune(peer, topic, now)
                fanout = self.fanout.get(topic)
                if fanout is not None:
                    fanout.discard(peer)
            return
        if topic in state.topics:
            return
        if not wire.valid_topic(topic):
            self.stats["subscriptions_invalid"] += 1
            self.score.add_penalty(peer)
            return
        if len(state.topics) >= self.config.max_topics_per_peer:
            self.stats["subscriptions_ignored"] += 1
            return
        peers = self.topics.get(topic)
        if peers is None:
            if len(self.topics) >= self.config.max_topics:
                self.stats["subscriptions_ignored"] += 1
                return
            peers = self.topics[topic] = set()
        if len(peers) >= self.config.max_peers_per_topic:
            self.stats["subscriptions_ignored"] += 1
            return
        peers.add(peer)
        state.topics.add(topic)

    def _forget_topic_peer(self, topic: str, peer: Identity) -> None:
        peers = self.topics.get(topic)
        if peers is None:
            return
        peers.discard(peer)
        if not peers and topic not in self.subscriptions and topic not in self.fanout:
            del self.topics[topic]

    def _on_graft(self, peer: Identity, topic: str, now: float) -> None:
        if topic not in self.subscriptions:
            self._queue_prune(peer, topic, now, px=False, backoff_s=self.config.prune_backoff_s)
            return
        mesh = self.mesh[topic]
        if peer in mesh:
            return
        until = self.backoff.get((peer, topic))
        if until is not None and now < until:
            self.stats["grafts_in_backoff"] += 1
            self.score.add_penalty(peer)
            if now < until - self.config.prune_backoff_s + self.config.graft_flood_s:
                self.score.add_penalty(peer)
            self._queue_prune(peer, topic, now, px=False, backoff_s=self.config.prune_backoff_s)
            return
        if self.score.score(peer) < 0:
            self.stats["grafts_refused_score"] += 1
            self._queue_prune(peer, topic, now, px=False, backoff_s=self.config.prune_backoff_s)
            return
        if len(mesh) >= self.config.d_hi and not self._is_outbound(peer):
            self.stats["grafts_refused_full"] += 1
            self._queue_prune(peer, topic, now, px=True, backoff_s=self.config.prune_backoff_s)
            return
        state = self.peers.get(peer)
        if state is not None and topic not in state.topics:
            self._on_subscription(peer, state, wire.SubOpt(True, topic), now)
        mesh.add(peer)
        self.score.graft(peer, topic, now)
        self._catch_up(peer, topic)

    def _catch_up(self, peer: Identity, topic: str) -> None:
        """A new mesh peer hears at once what we have of *topic* (IHAVE): messages published
        just before it joined would otherwise reach it from nobody, since its new mesh peers
        no longer gossip to it."""
        ids = self.mcache.gossip_ids(topic)
        state = self.peers.get(peer)
        if ids and state is not None:
            state.out.ihave.append(wire.IHave(topic, ids[: self.config.max_ihave_length]))
            self._touch(peer, state)
            self.stats["ihave_catch_up"] += 1

    def _on_prune(self, peer: Identity, prune: wire.Prune, now: float) -> None:
        topic = prune.topic
        mesh = self.mesh.get(topic)
        if mesh is not None and peer in mesh:
            mesh.discard(peer)
            self.score.prune(peer, topic, now)
        backoff = float(prune.backoff_s) if prune.backoff_s else self.config.prune_backoff_s
        self._set_backoff(peer, topic, now + backoff)
        if prune.peers:
            if self.score.score(peer) < self.config.thresholds.accept_px:
                self.stats["px_refused"] += 1
                return
            for offered in prune.peers[: self.config.prune_peers]:
                if offered.identity == bytes(self.identity):
                    continue
                if len(self.px_candidates) < MAX_PX_CANDIDATES:
                    self.px_candidates.append(offered)

    def _on_ihave(self, peer: Identity, state: PeerState, ihave: wire.IHave, now: float) -> None:
        if self.score.score(peer) < self.config.thresholds.gossip:
            self.stats["ihave_ignored_score"] += 1
            return
        state.ihaves += 1
        if state.ihaves > self.config.max_ihave_messages:
            self.stats["ihave_ignored_flood"] += 1
            return
        if ihave.topic not in self.subscriptions:
            return
        room = min(
            self.config.max_ihave_length - state.asked,
            self.config.peer_control_queue - state.out.control_size(),
        )
        seen = self.seen
        want = [i for i in dict.fromkeys(ihave.ids) if i not in seen][: max(0, room)]
        if not want:
            return
        state.asked += len(want)
        state.out.iwant.extend(want)
        self._touch(peer, state)
        # one promise per IWANT, on a random id: a peer that answers honestly but loses a
        # few answers to its queue limit is rarely penalised, one that ignores IWANT always
        promised = self.rng.choice(want)
        if promised not in self.promises:
            self.promises[promised] = (peer, now + self.config.iwant_followup_s)
            if len(self.promises) > MAX_PROMISES:
                self.promises.popitem(last=False)

    def _on_iwant(self, peer: Identity, iwant: wire.IWant) -> None:
        if self.score.score(peer) < self.config.thresholds.gossip:
            self.stats["iwant_ignored_score"] += 1
            return
        for msg_id in iwant.ids[: self.config.max_ihave_length]:
            message, count = self.mcache.get_for_peer(msg_id, peer)
            if message is None:
                self.stats["iwant_missing"] += 1
                continue
            if count > self.config.gossip_retransmission:
                self.stats["iwant_retransmissions_refused"] += 1
                continue
            self.stats["iwant_served"] += 1
            self._queue_message(peer, message, own=False)

    def _on_idontwant(self, state: PeerState, idontwant: wire.IDontWant, now: float) -> None:
        expiry = now + self.config.idontwant_ttl_s
        table = state.idontwant
        for msg_id in idontwant.ids:
            if len(table) >= self.config.max_idontwant:
                self.stats["idontwant_ignored"] += 1
                break
            table[msg_id] = expiry
        if state.out.forwarded:  # forwards not sent yet are cancelled
            self.stats["idontwant_cancelled"] += state.out.cancel(table.keys())

    # -- mesh changes ---------------------------------------------------------------------

    def _graft(self, peer: Identity, topic: str, now: float) -> None:
        self.mesh[topic].add(peer)
        self.score.graft(peer, topic, now)
        state = self.peers[peer]
        state.out.graft.append(wire.Graft(topic))
        self._touch(peer, state)
        self.stats["grafts_sent"] += 1
        self._catch_up(peer, topic)

    def _prune(self, peer: Identity, topic: str, now: float, *, px: bool, backoff_s: float) -> None:
        self.mesh[topic].discard(peer)
        self.score.prune(peer, topic, now)
        self._queue_prune(peer, topic, now, px=px, backoff_s=backoff_s)

    def _queue_prune(
        self, peer: Identity, topic: str, now: float, *, px: bool, backoff_s: float
    ) -> None:
        self._set_backoff(peer, topic, now + backoff_s)
        state = self.peers.get(peer)
        if state is None:
            return
        offered = self._px(peer, topic) if px else []
        state.out.prune.append(wire.Prune(topic, offered, int(backoff_s)))
        self._touch(peer, state)
        self.stats["prunes_sent"] += 1

    def _px(self, peer: Identity, topic: str) -> list[wire.PxPeer]:
        pool = sorted(p for p in self.mesh.get(topic, ()) if p != peer and self.score.score(p) >= 0)
        chosen = self.rng.sample(pool, min(self.config.prune_peers, len(pool)))
        return [
            wire.PxPeer(bytes(p), self._addresses_of(p)[: wire.MAX_PX_ADDRESSES]) for p in chosen
        ]

    def _set_backoff(self, peer: Identity, topic: str, until: float) -> None:
        key = (peer, topic)
        if self.backoff.get(key, 0.0) < until:
            self.backoff[key] = until
        self.backoff.move_to_end(key)
        if len(self.backoff) > MAX_BACKOFFS:
            self.backoff.popitem(last=False)

    def _is_outbound(self, peer: Identity) -> bool:
        state = self.peers.get(peer)
        return state is not None and state.outbound

    def outbound_mesh(self, topic: str) -> set[Identity]:
        """The mesh peers of *topic* whose connection we dialled."""
        return {p for p in self.mesh.get(topic, ()) if self._is_outbound(p)}

    def _in_backoff(self, peer: Identity, topic: str, now: float) -> bool:
        """Whether we must not graft *peer*: backoffs are symmetric (both sides record one
        when either prunes) and we wait a heartbeat longer than they last, so our GRAFT never
        reaches the peer before its own backoff ends."""
        until = self.backoff.get((peer, topic))
        return until is not None and now < until + self.config.heartbeat_s

    def _candidates(
        self, topic: str, now: float, count: int, *, outbound: bool = False
    ) -> list[Identity]:
        """Up to *count* random topic peers outside the mesh that may be grafted (only ones
        we dialled, with *outbound*)."""
        if count <= 0:
            return []
        mesh = self.mesh.get(topic, set())
        pool = sorted(
            p
            for p in self.topics.get(topic, ())
            if p not in mesh
            and not self._in_backoff(p, topic, now)
            and self.score.score(p) >= 0
            and (self._is_outbound(p) or not outbound)
        )
        return self.rng.sample(pool, min(count, len(pool)))

    # -- heartbeat ------------------------------------------------------------------------

    def heartbeat(self, now: float) -> None:
        """Once per ``heartbeat_s``: scores, mesh maintenance, fanout, gossip, expiry."""
        self.heartbeats += 1
        self.score.refresh(now)
        for topic in sorted(self.subscriptions):
            self._maintain_mesh(topic, now)
            self._gossip(topic, self.mesh[topic])
        for topic in sorted(self.fanout):
            if now - self.fanout_last.get(topic, now) > self.config.fanout_ttl_s:
                del self.fanout[topic]
                self.fanout_last.pop(topic, None)
                if not self.topics.get(topic):
                    self.topics.pop(topic, None)
                continue
            self._fill(self.fanout[topic], topic, now, self._publish_threshold)
            self._gossip(topic, self.fanout[topic])
        self._expire(now)
        self._keepalive(now)

    def _maintain_mesh(self, topic: str, now: float) -> None:
        config = self.config
        mesh = self.mesh[topic]
        for peer in sorted(mesh):
            if self.score.score(peer) < 0:
                self.stats["pruned_negative_score"] += 1
                self._prune(peer, topic, now, px=False, backoff_s=config.prune_backoff_s)
        if len(mesh) < config.d_lo:
            for peer in self._candidates(topic, now, config.d - len(mesh)):
                self._graft(peer, topic, now)
        if len(mesh) > config.d_hi:
            self._shrink(topic, mesh, now)
        if len(mesh) >= config.d_lo:
            missing = config.d_out - len(self.outbound_mesh(topic))
            for peer in self._candidates(topic, now, missing, outbound=True):
                self._graft(peer, topic, now)
        if self.heartbeats % config.opportunistic_graft_ticks == 0 and len(mesh) > 1:
            scores = sorted(self.score.score(p) for p in mesh)
            median = statistics.median(scores)
            if median < config.thresholds.opportunistic_graft:
                pool = [
                    p
                    for p in self._candidates(topic, now, len(self.topics.get(topic, ())))
                    if self.score.score(p) > median
                ]
                for peer in pool[: config.opportunistic_graft_peers]:
                    self.stats["opportunistic_grafts"] += 1
                    self._graft(peer, topic, now)

    def _shrink(self, topic: str, mesh: set[Identity], now: float) -> None:
        """Prune down to d: keep the best d_score by score, the rest at random, and at least
        d_out outbound peers."""
        config = self.config
        ranked = sorted(mesh, key=lambda p: (-self.score.score(p), p))
        keep = ranked[: config.d_score]
        rest = ranked[config.d_score :]
        self.rng.shuffle(rest)
        keep.extend(rest[: config.d - len(keep)])
        dropped = rest[config.d - config.d_score :]
        outbound = self._is_outbound
        short = config.d_out - sum(1 for p in keep if outbound(p))
        if short > 0:
            spare = [p for p in dropped if outbound(p)][:short]
            replaceable = [p for p in keep[config.d_score :] if not outbound(p)]
            for incoming, leaving in zip(spare, reversed(replaceable), strict=False):
                keep[keep.index(leaving)] = incoming
                dropped[dropped.index(incoming)] = leaving
        mesh.difference_update(dropped)  # first, so PX never offers a peer pruned now
        for peer in dropped:
            self._prune(peer, topic, now, px=True, backoff_s=config.prune_backoff_s)

    def _gossip(self, topic: str, exclude: set[Identity]) -> None:
        ids = self.mcache.gossip_ids(topic)
        if not ids:
            return
        threshold = self.config.thresholds.gossip
        pool = sorted(
            p
            for p in self.topics.get(topic, ())
            if p not in exclude and self.score.score(p) >= threshold
        )
        count = max(self.config.d_lazy, int(self.config.gossip_factor * len(pool)))
        for peer in self.rng.sample(pool, min(count, len(pool))):
            advertised = ids
            if len(ids) > self.config.max_ihave_length:
                advertised = self.rng.sample(ids, self.config.max_ihave_length)
            state = self.peers[peer]
            state.out.ihave.append(wire.IHave(topic, advertised))
            self._touch(peer, state)
            self.stats["ihave_sent"] += 1

    def _expire(self, now: float) -> None:
        for msg_id, (peer, deadline) in list(self.promises.items()):
            if deadline > now:
                continue
            del self.promises[msg_id]
            if msg_id not in self.seen:  # nobody delivered it: the advertiser lied
                self.stats["broken_promises"] += 1
                self.score.add_penalty(peer)
        for state in self.peers.values():
            state.ihaves = 0
            state.asked = 0
            table = state.idontwant
            while table:
                msg_id, expiry = next(iter(table.items()))
                if expiry > now:
                    break
                del table[msg_id]
        slack = self.config.heartbeat_s
        for key, until in list(self.backoff.items()):
            if until + slack <= now:
                del self.backoff[key]
        self.mcache.shift()
        self.seen.expire(now)

    def _keepalive(self, now: float) -> None:
        quiet = now - self.config.keepalive_s
        shared: set[Identity] = set()
        for topic in self.subscriptions:
            shared.update(self.topics.get(topic, ()))
        for peer in shared:
            state = self.peers.get(peer)
            if state is not None and state.last_sent < quiet and not state.out:
                state.out.keepalive = True
                self._touch(peer, state)

    # -- sending --------------------------------------------------------------------------

    def _touch(self, peer: Identity, state: PeerState) -> None:
        self.dirty.add(peer)
        if state.out.control_size() > self.config.peer_control_queue:
            self.stats["control_dropped"] += state.out.trim_control(self.config.peer_control_queue)

    def _queue_message(self, peer: Identity, message: Message, *, own: bool) -> None:
        state = self.peers.get(peer)
        if state is None:
            return
        dropped = state.out.add_message(message, own=own, limit=self.config.peer_queue)
        if dropped:
            self.stats["dropped_peer_queue"] += dropped
        self.dirty.add(peer)

    def queued(self, peer: Identity) -> int:
        """Messages waiting to be sent to *peer*."""
        state = self.peers.get(peer)
        return 0 if state is None else len(state.out.messages)

    def pace(self, peer: Identity, now: float) -> float:
        """Seconds to wait before the next frame to *peer* may go (0: send now)."""
        state = self.peers.get(peer)
        if state is None or state.sending.take(now):
            return 0.0
        return 1.0 / self.config.receive_rate

    def take(self, peer: Identity, now: float) -> Frame | None:
        """The next frame for *peer*, or None when nothing waits.

        Control goes first, then messages, until the frame holds about ``max_frame_bytes``
        (at least one entry, so a frame always makes progress); the rest waits for the next.
        """
        state = self.peers.get(peer)
        if state is None or not state.out:
            self.dirty.discard(peer)
            return None
        out = state.out
        frame = out.cut(self.config.max_frame_bytes)
        state.last_sent = now
        if not out:
            self.dirty.discard(peer)
        self.stats["frames_sent"] += 1
        self.stats["messages_sent"] += len(frame.messages)
        return frame
