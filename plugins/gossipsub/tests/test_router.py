"""Tests of the pure GossipSub router (``korium_gossipsub.router``), each rule with its numbers.

Why pure: the router takes the time as an argument, so every timing rule (backoff, fanout TTL,
IWANT promises, rate limits, seen-cache expiry) is checked exactly, with no event loop and no
clock. Two kinds of peers:

* routers of a :class:`Net`, whose frames :meth:`Net.flush` moves by hand through the wire
  codec (what a router receives is what would really decode), each new message accepted;
* "bare" peers: only an identity. The test writes every frame they send and reads what the
  router queued for them with :func:`drain`, so it controls and sees every byte.
"""

from __future__ import annotations

import os
import random
from typing import Any

import msgspec
import pytest
from korium_gossipsub import messages as wire
from korium_gossipsub.caches import Verdict
from korium_gossipsub.config import GossipConfig
from korium_gossipsub.errors import GossipDecodeError, MessageTooLargeError, TooManyTopicsError
from korium_gossipsub.messages import (
    Frame,
    Graft,
    IDontWant,
    IHave,
    IWant,
    Message,
    Prune,
    PxPeer,
    SubOpt,
)
from korium_gossipsub.router import Incoming, Router
from korium_gossipsub.score import PeerScore, ScoreParams, TopicScoreParams

from korium.identity import Identity, Keypair

TOPIC = "t"
WALL0_MS = 1_700_000_000_000
"""Unix time (ms) at ``Net.now == 0``."""


# -- harness ----------------------------------------------------------------------------------


class Net:
    """Routers on one hand-advanced clock; frames move only when a test says so."""

    def __init__(self, **settings: Any) -> None:
        self.now = 0.0
        self.settings = settings
        self.routers: dict[Identity, Router] = {}
        self._seed = 0

    @property
    def wall_ms(self) -> int:
        return WALL0_MS + round(self.now * 1000)

    def router(self, keypair: Keypair | None = None, **overrides: Any) -> Router:
        """A router with the net's settings updated by *overrides* (seeded, so repeatable)."""
        config = GossipConfig(**{**self.settings, **overrides})
        self._seed += 1
        router = Router(
            keypair or Keypair.generate(),
            config,
            PeerScore(config.score),
            rng=random.Random(self._seed),
        )
        self.routers[router.identity] = router
        return router

    def connect(self, a: Router, b: Router) -> None:
        a.add_peer(b.identity, None, self.now)
        b.add_peer(a.identity, None, self.now)

    def flush(self) -> int:
        """Move frames between the net's routers until none has anything for another; every
        new message is accepted. Returns the number of frames moved."""
        moved = 0
        progress = True
        while progress:
            progress = False
            for src in list(self.routers.values()):
                for peer in sorted(src.dirty):
                    dst = self.routers.get(peer)
                    frame = None if dst is None else src.take(peer, self.now)
                    if dst is None or frame is None:
                        continue
                    progress = True
                    moved += 1
                    self.deliver(src, dst, frame)
        return moved

    def deliver(self, src: Router, dst: Router, frame: Frame) -> None:
        try:
            decoded = wire.decode(wire.encode(frame))
        except GossipDecodeError:
            dst.malformed(src.identity)
            return
        for incoming in dst.receive(src.identity, decoded, self.now, self.wall_ms):
            dst.finish(incoming, Verdict.ACCEPTED, self.now)

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def beat(self, *routers: Router) -> None:
        """A heartbeat of each of *routers* now, then every frame moved."""
        for router in routers:
            router.heartbeat(self.now)
        self.flush()


def bare() -> Identity:
    return Keypair.generate().identity


def send(net: Net, router: Router, peer: Identity, frame: Frame) -> list[Incoming]:
    """*peer* sends *frame* to *router* now."""
    return router.receive(peer, frame, net.now, net.wall_ms)


def join(net: Net, router: Router, peer: Identity, *topics: str) -> None:
    """Bare *peer* connects to *router* and subscribes to *topics* (default: TOPIC)."""
    router.add_peer(peer, None, net.now)
    subs = [SubOpt(True, t) for t in topics or (TOPIC,)]
    assert send(net, router, peer, Frame(subscriptions=subs)) == []


def topic_peers(net: Net, router: Router, count: int, *topics: str) -> list[Identity]:
    peers = [bare() for _ in range(count)]
    for peer in peers:
        join(net, router, peer, *topics)
    return peers


def drain(net: Net, router: Router, peer: Identity) -> list[Frame]:
    """Every frame *router* has queued for *peer*, cut as it would be sent."""
    frames = []
    while (frame := router.take(peer, net.now)) is not None:
        frames.append(frame)
    return frames


def drain_all(net: Net, router: Router, peers: list[Identity]) -> None:
    for peer in peers:
        drain(net, router, peer)


def messages_to(net: Net, router: Router, peer: Identity) -> list[Message]:
    return [m for frame in drain(net, router, peer) for m in frame.messages]


def signed(
    net: Net, publisher: Keypair, data: bytes, *, ms: int = 0, topic: str = TOPIC
) -> Message:
    """A message *publisher* signs now (plus *ms* milliseconds), as a router would."""
    return wire.sign(publisher, topic, (net.wall_ms + ms) * 1000, data)


def p(router: Router, peer: Identity, net: Net, part: str) -> float:
    """One component of *router*'s score of *peer* (``p3``, ``p4``, ``p7``...)."""
    return router.score.breakdown(peer, net.now)[part]


def subscribed_with_mesh(net: Net, count: int, **overrides: Any) -> tuple[Router, list[Identity]]:
    """A router subscribed to TOPIC whose mesh is *count* (<= d) bare peers, queues empty."""
    router = net.router(**overrides)
    peers = topic_peers(net, router, count)
    router.subscribe(TOPIC, net.now)
    assert router.mesh[TOPIC] == set(peers)
    drain_all(net, router, peers)
    return router, peers


# -- mesh ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("known", "grafted"), [(3, 3), (10, 6)])
def test_subscribe_grafts_up_to_d_known_topic_peers(known: int, grafted: int) -> None:
    net = Net()
    router = net.router()
    peers = topic_peers(net, router, known)
    others = topic_peers(net, router, 3, "other")
    router.subscribe(TOPIC, net.now)

    mesh = router.mesh[TOPIC]
    assert len(mesh) == grafted
    assert mesh <= set(peers)
    assert router.outbound_mesh(TOPIC) == set()  # they dialled us: none is outbound
    assert router.stats["grafts_sent"] == grafted
    for peer in peers + others:
        (frame,) = drain(net, router, peer)
        assert frame.subscriptions == [SubOpt(True, TOPIC)]
        assert frame.graft == ([Graft(TOPIC)] if peer in mesh else [])


def test_heartbeat_grafts_below_d_lo_up_to_d() -> None:
    net = Net()  # d=6, d_lo=5
    router = net.router()
    first = topic_peers(net, router, 2)
    router.subscribe(TOPIC, net.now)
    assert len(router.mesh[TOPIC]) == 2
    topic_peers(net, router, 8)
    net.advance(1)
    router.heartbeat(net.now)
    assert len(router.mesh[TOPIC]) == 6
    assert router.stats["grafts_sent"] == 6
    assert set(first) <= router.mesh[TOPIC]

    router.remove_peer(sorted(router.mesh[TOPIC])[0], net.now)
    net.advance(1)
    router.heartbeat(net.now)
    assert len(router.mesh[TOPIC]) == 5  # d_lo: enough
    assert router.stats["grafts_sent"] == 6

    router.remove_peer(sorted(router.mesh[TOPIC])[0], net.now)
    net.advance(1)
    router.heartbeat(net.now)
    assert len(router.mesh[TOPIC]) == 6  # 4 < d_lo: back up to d
    assert router.stats["grafts_sent"] == 8


def test_heartbeat_prunes_above_d_hi_to_d_keeping_best_scores_and_d_out_outbound() -> None:
    net = Net()  # d=6, d_lo=5, d_hi=12, d_score=4, d_out=2
    router = net.router()
    router.subscribe(TOPIC, net.now)
    grafting = topic_peers(net, router, 14)
    spare = topic_peers(net, router, 2)
    for peer in spare:
        router.add_peer(peer, None, net.now, outbound=True)  # we dialled these two
    for peer in grafting:
        send(net, router, peer, Frame(graft=[Graft(TOPIC)]))
    assert router.mesh[TOPIC] == set(grafting[:12])  # the last two found the mesh full
    assert router.stats["grafts_refused_full"] == 2
    assert router.outbound_mesh(TOPIC) == set()
    best = grafting[:4]
    for peer in best:
        router.score.set_application_score(peer, 10.0)

    net.advance(1)
    router.heartbeat(net.now)  # 12 inbound: not above d_hi, but no outbound peer
    assert router.outbound_mesh(TOPIC) == set(spare)  # grafted for d_out
    assert len(router.mesh[TOPIC]) == 14

    net.advance(1)
    router.heartbeat(net.now)
    assert router.mesh[TOPIC] == set(best) | set(spare)
    assert router.outbound_mesh(TOPIC) == set(spare)
    dropped = set(grafting[4:12])
    assert router.stats["prunes_sent"] == 2 + 8
    px_sizes = []
    for peer in dropped:
        (prune,) = [pr for frame in drain(net, router, peer) for pr in frame.prune]
        assert prune.topic == TOPIC
        assert prune.backoff_s == 60
        offered = {Identity(px.identity) for px in prune.peers}
        assert peer not in offered
        assert offered < set(grafting[:12]) | set(spare)
        px_sizes.append(len(offered))
    assert px_sizes == [6] * 8  # PX offers only the peers that stay in the mesh


def test_negative_score_mesh_peer_is_pruned_at_heartbeat_and_backed_off() -> None:
    net = Net()
    router = net.router()
    peers = topic_peers(net, router, 10)
    router.subscribe(TOPIC, net.now)
    drain_all(net, router, peers)
    bad = sorted(router.mesh[TOPIC])[0]
    router.score.set_application_score(bad, -0.5)
    net.advance(1)
    router.heartbeat(net.now)
    assert router.stats["pruned_negative_score"] == 1
    assert len(router.mesh[TOPIC]) == 5  # d_lo reached: no replacement yet
    assert bad not in router.mesh[TOPIC]
    (frame,) = drain(net, router, bad)
    assert frame.prune == [Prune(TOPIC, [], 60)]  # no PX for a bad peer
    assert router.backoff[(bad, TOPIC)] == net.now + 60

    router.score.set_application_score(bad, 0.0)
    router.remove_peer(sorted(router.mesh[TOPIC])[0], net.now)
    net.advance(1)
    router.heartbeat(net.now)
    assert len(router.mesh[TOPIC]) == 6
    assert bad not in router.mesh[TOPIC]  # still in backoff


def test_graft_for_unsubscribed_topic_is_answered_with_prune() -> None:
    net = Net()
    router, (peer,) = subscribed_with_mesh(net, 1)
    send(net, router, peer, Frame(graft=[Graft("u")]))
    assert "u" not in router.mesh
    (frame,) = drain(net, router, peer)
    assert frame.prune == [Prune("u", [], 60)]
    assert router.stats["prunes_sent"] == 1
    assert p(router, peer, net, "p7") == 0.0  # not a misbehaviour


def test_graft_in_backoff_is_refused_and_penalised_double_within_graft_flood() -> None:
    net = Net()  # prune_backoff_s=60, graft_flood_s=10, heartbeat_s=1
    router, (peer,) = subscribed_with_mesh(net, 1)
    router.score.set_application_score(peer, -1.0)
    net.advance(1)
    router.heartbeat(net.now)  # pruned for its score
    pruned_at = net.now
    router.score.set_application_score(peer, 0.0)
    drain(net, router, peer)

    net.now = pruned_at + 5  # within graft_flood_s: two penalties
    send(net, router, peer, Frame(graft=[Graft(TOPIC)]))
    assert router.stats["grafts_in_backoff"] == 1
    assert p(router, peer, net, "p7") == pytest.approx(-10.0 * 2**2)
    assert peer not in router.mesh[TOPIC]
    (frame,) = drain(net, router, peer)
    assert frame.prune == [Prune(TOPIC, [], 60)]

    net.now = pruned_at + 20  # the refusal renewed the backoff, from 5 s: 15 s ago, one more
    send(net, router, peer, Frame(graft=[Graft(TOPIC)]))
    assert router.stats["grafts_in_backoff"] == 2
    assert p(router, peer, net, "p7") == pytest.approx(-10.0 * 3**2)
    assert peer not in router.mesh[TOPIC]
    assert drain(net, router, peer)[0].prune == [Prune(TOPIC, [], 60)]


def test_graft_to_full_mesh_is_accepted_from_a_peer_we_dialled() -> None:
    net = Net()  # d_hi=12
    router = net.router()
    router.subscribe(TOPIC, net.now)
    for peer in topic_peers(net, router, 12):
        send(net, router, peer, Frame(graft=[Graft(TOPIC)]))
    (dialled,) = topic_peers(net, router, 1)
    router.add_peer(dialled, None, net.now, outbound=True)
    send(net, router, dialled, Frame(graft=[Graft(TOPIC)]))
    assert len(router.mesh[TOPIC]) == 13
    assert router.outbound_mesh(TOPIC) == {dialled}
    assert router.stats["grafts_refused_full"] == 0


def test_graft_to_full_mesh_is_refused_with_px() -> None:
    net = Net()  # d_hi=12, prune_peers=16
    router = net.router()
    router.subscribe(TOPIC, net.now)
    peers = topic_peers(net, router, 13)
    for peer in peers:
        send(net, router, peer, Frame(graft=[Graft(TOPIC)]))
    late = peers[12]
    assert router.mesh[TOPIC] == set(peers[:12])
    assert router.stats["grafts_refused_full"] == 1
    (frame,) = drain(net, router, late)
    (prune,) = frame.prune
    assert prune.backoff_s == 60
    assert {Identity(px.identity) for px in prune.peers} == set(peers[:12])
    assert p(router, late, net, "p7") == 0.0


def test_prune_backoff_keeps_pruned_side_from_regrafting_until_it_ends() -> None:
    net = Net()
    router, (peer,) = subscribed_with_mesh(net, 1)
    net.advance(0.5)
    send(net, router, peer, Frame(prune=[Prune(TOPIC, [], 30)]))
    assert router.mesh[TOPIC] == set()
    assert router.backoff[(peer, TOPIC)] == 30.5
    for _ in range(30):  # until 30.5 + a heartbeat of slack
        net.advance(1)
        router.heartbeat(net.now)
        assert router.mesh[TOPIC] == set()
    assert router.stats["grafts_sent"] == 1
    net.advance(1)  # 31.5: the backoff and its slack are over
    router.heartbeat(net.now)
    assert router.mesh[TOPIC] == {peer}
    assert router.stats["grafts_sent"] == 2
    assert any(frame.graft == [Graft(TOPIC)] for frame in drain(net, router, peer))

    send(net, router, peer, Frame(prune=[Prune(TOPIC, [], 0)]))  # 0: our own default, 60 s
    assert router.backoff[(peer, TOPIC)] == net.now + 60


def test_px_is_accepted_only_from_peers_scoring_at_least_accept_px() -> None:
    net = Net()  # accept_px=10, prune_peers=16
    router, (peer,) = subscribed_with_mesh(net, 1)
    offered = [PxPeer(bytes(bare()), ["127.0.0.1:4000"]) for _ in range(3)]
    own = PxPeer(bytes(router.identity), [])
    send(net, router, peer, Frame(prune=[Prune(TOPIC, [*offered, own], 10)]))
    assert router.stats["px_refused"] == 1
    assert router.px_candidates == []

    router.score.set_application_score(peer, 10.0)
    send(net, router, peer, Frame(prune=[Prune(TOPIC, [*offered, own], 10)]))
    assert router.stats["px_refused"] == 1
    assert router.px_candidates == offered  # never ourselves


def test_opportunistic_grafting_adds_peers_above_a_low_median() -> None:
    net = Net(opportunistic_graft_ticks=3)  # opportunistic_graft_peers=2, threshold 1.0
    router = net.router()
    peers = topic_peers(net, router, 10)
    router.subscribe(TOPIC, net.now)
    mesh = set(router.mesh[TOPIC])
    outside = sorted(set(peers) - mesh)
    good, poor = outside[:3], outside[3]
    for peer in good:
        router.score.set_application_score(peer, 5.0)
    for _ in range(2):
        net.advance(1)
        router.heartbeat(net.now)
    assert router.mesh[TOPIC] == mesh
    net.advance(1)
    router.heartbeat(net.now)  # tick 3: median mesh score 3 s * 0.02 = 0.06 < 1
    assert router.stats["opportunistic_grafts"] == 2
    added = router.mesh[TOPIC] - mesh
    assert len(added) == 2
    assert added <= set(good)
    assert poor not in router.mesh[TOPIC]


def test_no_opportunistic_grafting_when_the_median_is_high_enough() -> None:
    net = Net(opportunistic_graft_ticks=1)
    router = net.router()
    peers = topic_peers(net, router, 10)
    router.subscribe(TOPIC, net.now)
    for peer in peers:
        router.score.set_application_score(peer, 2.0 if peer in router.mesh[TOPIC] else 5.0)
    net.advance(1)
    router.heartbeat(net.now)
    assert router.stats["opportunistic_grafts"] == 0
    assert len(router.mesh[TOPIC]) == 6


def test_unsubscribe_prunes_with_unsubscribe_backoff_and_tells_every_peer() -> None:
    net = Net()  # unsubscribe_backoff_s=10
    router = net.router()
    peers = topic_peers(net, router, 8)
    others = topic_peers(net, router, 2, "other")
    router.subscribe(TOPIC, net.now)
    mesh = set(router.mesh[TOPIC])
    drain_all(net, router, peers + others)
    router.unsubscribe(TOPIC, net.now)

    assert TOPIC not in router.mesh
    assert TOPIC not in router.subscriptions
    assert router.stats["prunes_sent"] == 6
    for peer in peers + others:
        (frame,) = drain(net, router, peer)
        assert frame.subscriptions == [SubOpt(False, TOPIC)]
        if peer in mesh:
            (prune,) = frame.prune
            assert prune.topic == TOPIC
            assert prune.backoff_s == 10
            assert {Identity(px.identity) for px in prune.peers} < mesh  # PX: other mesh peers
            assert router.backoff[(peer, TOPIC)] == net.now + 10
        else:
            assert frame.prune == []
    assert router.topics[TOPIC] == set(peers)  # still known: they did not leave


# -- publishing ---------------------------------------------------------------------------------


@pytest.mark.parametrize("subscribe", [True, False])
def test_flood_publish_reaches_every_topic_peer_at_or_above_the_publish_threshold(
    subscribe: bool,
) -> None:
    net = Net()  # publish threshold -50
    router = net.router()
    normal = topic_peers(net, router, 8)
    at, below = topic_peers(net, router, 2)
    (stranger,) = topic_peers(net, router, 1, "other")
    router.score.set_application_score(at, -50.0)
    router.score.set_application_score(below, -50.5)
    if subscribe:
        router.subscribe(TOPIC, net.now)
        assert router.mesh[TOPIC] <= set(normal)
    drain_all(net, router, [*normal, at, below, stranger])

    message, count = router.publish(TOPIC, b"hello", net.now, net.wall_ms)
    assert count == 9
    assert router.stats["published"] == 1
    for peer in [*normal, at]:
        assert messages_to(net, router, peer) == [message]
    assert messages_to(net, router, below) == []
    assert messages_to(net, router, stranger) == []
    assert not router.delivered  # our own message is not delivered to us
    assert router.stats["delivered"] == 0


def test_without_flood_publish_only_the_mesh_gets_our_messages() -> None:
    net = Net(flood_publish=False)
    router = net.router()
    peers = topic_peers(net, router, 10)
    router.subscribe(TOPIC, net.now)
    drain_all(net, router, peers)
    message, count = router.publish(TOPIC, b"x", net.now, net.wall_ms)
    assert count == 6
    got = {peer for peer in peers if messages_to(net, router, peer) == [message]}
    assert got == router.mesh[TOPIC]


@pytest.mark.parametrize(("flood", "sent_to"), [(True, 10), (False, 6)])
def test_publishing_to_an_unsubscribed_topic_keeps_a_fanout_of_d_until_its_ttl(
    flood: bool, sent_to: int
) -> None:
    net = Net(flood_publish=flood)  # fanout_ttl_s=60, d=6
    router = net.router()
    peers = topic_peers(net, router, 10)
    drain_all(net, router, peers)
    message, count = router.publish(TOPIC, b"x", net.now, net.wall_ms)
    fanout = set(router.fanout[TOPIC])
    assert len(fanout) == 6
    assert fanout <= set(peers)
    assert count == sent_to
    got = {peer for peer in peers if messages_to(net, router, peer) == [message]}
    assert len(got) == sent_to
    assert fanout <= got

    net.advance(60)
    router.heartbeat(net.now)  # exactly the TTL: kept
    assert router.fanout[TOPIC] == fanout
    _, count = router.publish(TOPIC, b"y", net.now, net.wall_ms)
    assert count == sent_to
    assert router.fanout[TOPIC] == fanout  # the same peers, not a new draw
    net.advance(60)
    router.heartbeat(net.now)
    assert router.fanout[TOPIC] == fanout
    net.advance(0.5)
    router.heartbeat(net.now)  # 60.5 s without a publish
    assert TOPIC not in router.fanout


def test_publish_refuses_oversized_data_and_too_many_subscriptions() -> None:
    net = Net(max_message_size=1000, max_frame_bytes=2024, max_topics=2)
    router = net.router()
    router.publish(TOPIC, bytes(1000), net.now, net.wall_ms)
    with pytest.raises(MessageTooLargeError):
        router.publish(TOPIC, bytes(1001), net.now, net.wall_ms)
    assert router.stats["published"] == 1
    assert router.stats["published_to_no_peer"] == 1
    router.subscribe("a", net.now)
    router.subscribe("b", net.now)
    with pytest.raises(TooManyTopicsError):
        router.subscribe("c", net.now)
    assert router.subscriptions == {"a", "b"}


# -- forwarding and delivery --------------------------------------------------------------------


def test_new_message_is_delivered_once_and_forwarded_to_mesh_but_sender_and_publisher() -> None:
    net = Net()
    publisher = Keypair.generate()
    router = net.router()
    sender, x, y = topic_peers(net, router, 3)
    join(net, router, publisher.identity)
    router.subscribe(TOPIC, net.now)
    assert len(router.mesh[TOPIC]) == 4
    drain_all(net, router, [sender, x, y, publisher.identity])

    message = signed(net, publisher, b"news")
    (incoming,) = send(net, router, sender, Frame(messages=[message]))
    assert (incoming.peer, incoming.source, incoming.message) == (
        sender,
        publisher.identity,
        message,
    )
    assert not router.delivered  # not before the verdict
    router.finish(incoming, Verdict.ACCEPTED, net.now)
    assert list(router.delivered) == [(message, publisher.identity)]
    assert router.stats["delivered"] == 1
    assert messages_to(net, router, x) == [message]
    assert messages_to(net, router, y) == [message]
    assert messages_to(net, router, sender) == []
    assert messages_to(net, router, publisher.identity) == []
    assert p(router, sender, net, "p2") == pytest.approx(0.5)  # first delivery credit

    assert send(net, router, x, Frame(messages=[message])) == []
    assert send(net, router, publisher.identity, Frame(messages=[message])) == []
    assert router.stats["duplicates"] == 2
    assert router.stats["delivered"] == 1
    assert p(router, x, net, "p2") == 0.0
    assert all(messages_to(net, router, peer) == [] for peer in (x, y, sender))


TRACKING_P3 = TopicScoreParams(
    time_in_mesh_weight=0.0,
    first_message_deliveries_weight=0.0,
    mesh_message_deliveries_weight=-1.0,
    mesh_message_deliveries_threshold=3.0,
    mesh_message_deliveries_activation_s=0.0,
    mesh_message_deliveries_window_s=0.5,
)
"""Only P3 counts: deficit (3 - deliveries) squared, active at once; 0.5 s near-first window."""


def test_duplicates_earn_p3_credit_only_within_the_window() -> None:
    net = Net(score=ScoreParams(default_topic=TRACKING_P3))
    router, (sender, early, late) = subscribed_with_mesh(net, 3)
    publisher = Keypair.generate()
    net.advance(10)
    message = signed(net, publisher, b"m")
    for peer in (sender, early, late):
        assert p(router, peer, net, "p3") == pytest.approx(-9.0)  # deficit 3, squared
    (incoming,) = send(net, router, sender, Frame(messages=[message]))
    router.finish(incoming, Verdict.ACCEPTED, net.now)
    assert p(router, sender, net, "p3") == pytest.approx(-4.0)
    net.advance(0.5)
    send(net, router, early, Frame(messages=[message]))
    assert p(router, early, net, "p3") == pytest.approx(-4.0)
    net.advance(0.1)
    send(net, router, late, Frame(messages=[message]))
    assert p(router, late, net, "p3") == pytest.approx(-9.0)  # an echo: no credit
    assert router.stats["duplicates"] == 2


def test_large_message_makes_the_receiver_send_idontwant_to_its_other_mesh_peers() -> None:
    net = Net()  # idontwant_threshold=1024
    router, (sender, x, y) = subscribed_with_mesh(net, 3)
    publisher = Keypair.generate()
    big = signed(net, publisher, bytes(1024))
    (incoming,) = send(net, router, sender, Frame(messages=[big]))
    assert router.stats["idontwant_sent"] == 2  # before validation: the copies are wasted
    for peer in (x, y):
        (frame,) = drain(net, router, peer)
        assert frame.idontwant == [IDontWant([big.id])]
        assert frame.messages == []
    assert drain(net, router, sender) == []
    router.finish(incoming, Verdict.ACCEPTED, net.now)
    for peer in (x, y):
        assert messages_to(net, router, peer) == [big]  # neither said it had it

    small = signed(net, publisher, bytes(1023))
    (incoming,) = send(net, router, sender, Frame(messages=[small]))
    router.finish(incoming, Verdict.ACCEPTED, net.now)
    assert router.stats["idontwant_sent"] == 2
    for peer in (x, y):
        (frame,) = drain(net, router, peer)
        assert frame.idontwant == []
        assert frame.messages == [small]


def test_idontwant_is_honoured_when_forwarding() -> None:
    net = Net()  # idontwant_ttl_s=3
    router, (sender, x, y) = subscribed_with_mesh(net, 3)
    publisher = Keypair.generate()
    first, second = (signed(net, publisher, bytes([i]) * 2000) for i in range(2))
    send(net, router, x, Frame(idontwant=[IDontWant([first.id, second.id])]))
    (incoming,) = send(net, router, sender, Frame(messages=[first]))
    router.finish(incoming, Verdict.ACCEPTED, net.now)
    assert router.stats["idontwant_honoured"] == 1
    assert messages_to(net, router, x) == []
    assert messages_to(net, router, y) == [first]

    net.advance(3)
    router.heartbeat(net.now)  # x's IDONTWANT has expired
    (incoming,) = send(net, router, sender, Frame(messages=[second]))
    router.finish(incoming, Verdict.ACCEPTED, net.now)
    assert router.stats["idontwant_honoured"] == 1
    assert second in messages_to(net, router, x)


def test_idontwant_is_not_sent_to_a_peer_the_message_itself_goes_to() -> None:
    net = Net()  # validated at once: the forward and the IDONTWANT leave together
    router, (sender, x) = subscribed_with_mesh(net, 2)
    big = signed(net, Keypair.generate(), bytes(4096))
    (incoming,) = send(net, router, sender, Frame(messages=[big]))
    router.finish(incoming, Verdict.ACCEPTED, net.now)
    (frame,) = drain(net, router, x)  # one frame: the message says we have it
    assert frame.idontwant == []
    assert frame.messages == [big]


def test_a_queued_forward_is_cancelled_when_the_peer_sends_that_message() -> None:
    net = Net()
    router, (sender, x) = subscribed_with_mesh(net, 2)
    message = signed(net, Keypair.generate(), b"m")
    (incoming,) = send(net, router, sender, Frame(messages=[message]))
    router.finish(incoming, Verdict.ACCEPTED, net.now)
    assert router.queued(x) == 1
    send(net, router, x, Frame(messages=[message]))  # x had it from elsewhere
    assert router.queued(x) == 0
    assert router.stats["cancelled_peer_has_it"] == 1
    assert router.stats["duplicates"] == 1
    own, _ = router.publish(TOPIC, b"own", net.now, net.wall_ms)
    send(net, router, x, Frame(messages=[own]))  # an echo of our own: ours still goes
    assert messages_to(net, router, x) == [own]


# -- bad input ----------------------------------------------------------------------------------


def test_message_with_a_wrong_id_is_rejected_and_its_id_not_remembered() -> None:
    net = Net()
    router, (sender, honest) = subscribed_with_mesh(net, 2)
    publisher = Keypair.generate()
    genuine = signed(net, publisher, b"genuine")
    other = signed(net, publisher, b"other")
    forged = msgspec.structs.replace(other, id=genuine.id)  # claims the genuine message's id
    assert send(net, router, sender, Frame(messages=[forged])) == []
    assert router.stats["rejected_message_id"] == 1
    assert router.stats["rejected"] == 1
    assert p(router, sender, net, "p4") == pytest.approx(-10.0)
    assert genuine.id not in router.seen

    (incoming,) = send(net, router, honest, Frame(messages=[genuine]))
    router.finish(incoming, Verdict.ACCEPTED, net.now)
    assert router.stats["delivered"] == 1
    assert p(router, honest, net, "p4") == 0.0


def test_message_with_a_bad_signature_is_rejected_and_the_genuine_one_later_accepted() -> None:
    net = Net()
    router, (sender, honest) = subscribed_with_mesh(net, 2)
    publisher = Keypair.generate()
    genuine = signed(net, publisher, b"genuine")
    bad = msgspec.structs.replace(genuine, signature=bytes(reversed(genuine.signature)))
    assert bad.id == genuine.id  # the id hashes the payload, not the signature
    assert send(net, router, sender, Frame(messages=[bad])) == []
    assert router.stats["rejected_signature"] == 1
    assert p(router, sender, net, "p4") == pytest.approx(-10.0)
    assert genuine.id not in router.seen

    (incoming,) = send(net, router, honest, Frame(messages=[genuine]))
    router.finish(incoming, Verdict.ACCEPTED, net.now)
    assert list(router.delivered) == [(genuine, publisher.identity)]


def test_messages_too_old_or_too_far_in_the_future_are_refused() -> None:
    net = Net()  # message_max_age_s=90, clock_skew_s=30
    router, (sender,) = subscribed_with_mesh(net, 1)
    publisher = Keypair.generate()
    cases = [(-90_001, False), (-90_000, True), (30_000, True), (30_001, False)]
    for offset, accepted in cases:
        message = signed(net, publisher, str(offset).encode(), ms=offset)
        assert len(send(net, router, sender, Frame(messages=[message]))) == int(accepted)
    assert router.stats["rejected_too_old"] == 1
    assert router.stats["rejected_future"] == 1
    assert p(router, sender, net, "p4") == pytest.approx(-10.0 * 2**2)


def test_replay_after_the_seen_cache_forgot_the_id_is_refused_by_age() -> None:
    net = Net()  # seen_ttl_s=120 > message_max_age_s=90 + clock_skew_s=30
    router, (sender, replayer) = subscribed_with_mesh(net, 2)
    message = signed(net, Keypair.generate(), b"once")
    (incoming,) = send(net, router, sender, Frame(messages=[message]))
    router.finish(incoming, Verdict.ACCEPTED, net.now)
    net.advance(120)
    router.heartbeat(net.now)
    assert message.id not in router.seen
    assert send(net, router, replayer, Frame(messages=[message])) == []
    assert router.stats["rejected_too_old"] == 1
    assert router.stats["delivered"] == 1


def test_restarted_publisher_messages_are_accepted() -> None:
    net = Net()
    keypair = Keypair.generate()
    receiver = net.router()
    receiver.subscribe(TOPIC, net.now)
    before = net.router(keypair)
    net.connect(before, receiver)
    net.flush()
    old, count = before.publish(TOPIC, b"before", net.now, net.wall_ms)
    assert count == 1
    net.flush()

    receiver.remove_peer(keypair.identity, net.now)
    after = net.router(keypair)  # a new process: SeqnoClock starts from zero
    net.connect(after, receiver)
    net.flush()
    same_ms, _ = after.publish(TOPIC, b"same millisecond", net.now, net.wall_ms)
    net.advance(1)
    later, _ = after.publish(TOPIC, b"a second later", net.now, net.wall_ms)
    net.flush()
    assert same_ms.seqno == old.seqno  # the clock restarted, the data differs
    assert [m for m, _ in receiver.delivered] == [old, same_ms, later]
    assert receiver.stats["rejected"] == 0


def test_validator_rejection_penalises_the_sender_and_later_copies() -> None:
    net = Net()
    router, (sender, copier, other) = subscribed_with_mesh(net, 3)
    message = signed(net, Keypair.generate(), b"spam")
    (incoming,) = send(net, router, sender, Frame(messages=[message]))
    router.finish(incoming, Verdict.REJECTED, net.now)
    assert router.stats["rejected_by_validator"] == 1
    assert p(router, sender, net, "p4") == pytest.approx(-10.0)
    assert send(net, router, copier, Frame(messages=[message])) == []
    assert p(router, copier, net, "p4") == pytest.approx(-10.0)
    assert router.stats["delivered"] == 0
    assert messages_to(net, router, other) == []


def test_validator_ignore_neither_delivers_nor_penalises() -> None:
    net = Net()
    router, (sender, copier, other) = subscribed_with_mesh(net, 3)
    message = signed(net, Keypair.generate(), b"meh")
    (incoming,) = send(net, router, sender, Frame(messages=[message]))
    router.finish(incoming, Verdict.IGNORED, net.now)
    assert router.stats["ignored_by_validator"] == 1
    assert send(net, router, copier, Frame(messages=[message])) == []
    for peer in (sender, copier):
        assert p(router, peer, net, "p4") == 0.0
        assert p(router, peer, net, "p2") == 0.0
    assert router.stats["delivered"] == 0
    assert messages_to(net, router, other) == []


def test_graylisted_peer_frames_are_ignored_entirely() -> None:
    net = Net()  # graylist threshold -80
    router, _ = subscribed_with_mesh(net, 1)
    gray, edge = bare(), bare()
    router.add_peer(gray, None, net.now)
    router.add_peer(edge, None, net.now)
    router.score.set_application_score(gray, -80.01)
    router.score.set_application_score(edge, -80.0)
    message = signed(net, Keypair.generate(), b"m")
    frame = Frame(subscriptions=[SubOpt(True, TOPIC)], messages=[message], graft=[Graft(TOPIC)])
    assert send(net, router, gray, frame) == []
    assert router.stats["frames_graylisted"] == 1
    assert gray not in router.topics[TOPIC]
    assert message.id not in router.seen
    assert len(send(net, router, edge, frame)) == 1  # at the threshold: still heard
    assert edge in router.topics[TOPIC]
    assert router.stats["frames_graylisted"] == 1


def test_frames_over_the_receive_rate_are_dropped_counted_and_penalised() -> None:
    net = Net()  # receive_rate=50: bursts of 500, then one frame per 20 ms
    router, (peer,) = subscribed_with_mesh(net, 1)
    for _ in range(499):  # and its subscription: 500
        send(net, router, peer, Frame())
    assert router.stats["frames_over_receive_rate"] == 0
    message = signed(net, Keypair.generate(), b"late")
    assert send(net, router, peer, Frame(messages=[message])) == []
    assert router.stats["frames_over_receive_rate"] == 1
    assert router.stats["messages_over_receive_rate"] == 1
    assert message.id not in router.seen
    assert p(router, peer, net, "p7") == pytest.approx(-10.0 * 0.1**2)
    net.advance(0.025)  # 1.25 tokens back
    assert len(send(net, router, peer, Frame(messages=[message]))) == 1
    send(net, router, peer, Frame())
    assert router.stats["frames_over_receive_rate"] == 2


def test_malformed_frame_costs_a_behaviour_penalty() -> None:
    net = Net()
    router, (peer,) = subscribed_with_mesh(net, 1)
    router.malformed(peer)
    router.malformed(peer)
    assert router.stats["frames_malformed"] == 2
    assert p(router, peer, net, "p7") == pytest.approx(-10.0 * 2**2)


# -- gossip -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("eligible", "told"), [(30, 7), (10, 6), (4, 4)])
def test_ihave_goes_to_max_d_lazy_or_factor_of_eligible_non_mesh_peers(
    eligible: int, told: int
) -> None:
    net = Net()  # d_lazy=6, gossip_factor=0.25, gossip threshold -10
    router = net.router()
    peers = topic_peers(net, router, 6 + eligible)
    low = topic_peers(net, router, 2)
    for peer in low:
        router.score.set_application_score(peer, -10.5)
    router.subscribe(TOPIC, net.now)
    mesh = router.mesh[TOPIC]
    message, _ = router.publish(TOPIC, b"m", net.now, net.wall_ms)
    drain_all(net, router, peers + low)
    net.advance(1)
    router.heartbeat(net.now)
    assert router.stats["ihave_sent"] == told
    gossiped = set()
    for peer in peers + low:
        ihaves = [ih for frame in drain(net, router, peer) for ih in frame.ihave]
        if ihaves:
            assert ihaves == [IHave(TOPIC, [message.id])]
            gossiped.add(peer)
    assert len(gossiped) == told
    assert not gossiped & (mesh | set(low))


def test_ihave_advertises_the_newest_history_gossip_windows_iwant_serves_history_length() -> None:
    net = Net()  # history_length=5, history_gossip=3
    router, _ = subscribed_with_mesh(net, 6)
    (watcher,) = topic_peers(net, router, 1)  # joined late: outside the mesh
    message, _ = router.publish(TOPIC, b"m", net.now, net.wall_ms)
    drain(net, router, watcher)
    advertised = []
    for _ in range(4):
        net.advance(1)
        router.heartbeat(net.now)
        frames = drain(net, router, watcher)
        advertised.append(any(message.id in ih.ids for f in frames for ih in f.ihave))
    assert advertised == [True, True, True, False]
    send(net, router, watcher, Frame(iwant=[IWant([message.id])]))
    assert messages_to(net, router, watcher) == [message]  # still cached
    net.advance(1)
    router.heartbeat(net.now)
    send(net, router, watcher, Frame(iwant=[IWant([message.id])]))
    assert messages_to(net, router, watcher) == []
    assert router.stats["iwant_served"] == 1
    assert router.stats["iwant_missing"] == 1


def test_ihave_leads_to_iwant_for_unseen_ids_within_per_heartbeat_caps() -> None:
    net = Net(max_ihave_length=5, max_ihave_messages=2)
    router, (peer,) = subscribed_with_mesh(net, 1)
    known, _ = router.publish(TOPIC, b"known", net.now, net.wall_ms)
    drain(net, router, peer)
    ids = [os.urandom(32) for _ in range(10)]

    send(net, router, peer, Frame(ihave=[IHave(TOPIC, [known.id, *ids[:2]])]))
    assert drain(net, router, peer)[0].iwant == [IWant(ids[:2])]
    send(net, router, peer, Frame(ihave=[IHave(TOPIC, ids[2:6])]))
    assert drain(net, router, peer)[0].iwant == [IWant(ids[2:5])]  # 5 ids per heartbeat
    send(net, router, peer, Frame(ihave=[IHave(TOPIC, ids[6:7])]))
    assert drain(net, router, peer) == []  # third IHAVE this heartbeat
    assert router.stats["ihave_ignored_flood"] == 1

    net.advance(1)
    router.heartbeat(net.now)
    drain(net, router, peer)
    send(net, router, peer, Frame(ihave=[IHave(TOPIC, ids[7:9]), IHave("other", ids[9:])]))
    assert [iw for frame in drain(net, router, peer) for iw in frame.iwant] == [IWant(ids[7:9])]
    assert len(router.promises) == 3  # one promise per IWANT, on one of its ids
    assert all(peer_ == peer for peer_, _ in router.promises.values())


def test_ihave_from_a_peer_below_the_gossip_threshold_is_ignored() -> None:
    net = Net()
    router, (peer,) = subscribed_with_mesh(net, 1)
    router.score.set_application_score(peer, -10.5)
    send(net, router, peer, Frame(ihave=[IHave(TOPIC, [os.urandom(32)])]))
    assert router.stats["ihave_ignored_score"] == 1
    assert drain(net, router, peer) == []
    assert router.promises == {}


def test_iwant_is_served_at_most_gossip_retransmission_times_per_peer() -> None:
    net = Net()  # gossip_retransmission=3
    router = net.router()
    router.subscribe(TOPIC, net.now)
    message, count = router.publish(TOPIC, b"m", net.now, net.wall_ms)
    assert count == 0
    asker, other = bare(), bare()
    for peer in (asker, other):
        router.add_peer(peer, None, net.now)
        drain(net, router, peer)
    for _ in range(4):
        send(net, router, asker, Frame(iwant=[IWant([message.id])]))
    send(net, router, other, Frame(iwant=[IWant([message.id])]))
    assert messages_to(net, router, asker) == [message] * 3
    assert messages_to(net, router, other) == [message]  # counted per peer
    assert router.stats["iwant_served"] == 4
    assert router.stats["iwant_retransmissions_refused"] == 1


def test_unfulfilled_iwant_promise_penalises_the_advertiser_after_the_followup_time() -> None:
    net = Net()  # iwant_followup_s=3
    router, (liar, honest, third) = subscribed_with_mesh(net, 3)
    publisher = Keypair.generate()
    kept, elsewhere = signed(net, publisher, b"kept"), signed(net, publisher, b"elsewhere")
    send(net, router, liar, Frame(ihave=[IHave(TOPIC, [os.urandom(32)])]))
    send(net, router, honest, Frame(ihave=[IHave(TOPIC, [kept.id, elsewhere.id])]))
    net.advance(1)
    (incoming,) = send(net, router, honest, Frame(messages=[kept]))
    router.finish(incoming, Verdict.ACCEPTED, net.now)
    (incoming,) = send(net, router, third, Frame(messages=[elsewhere]))  # someone else had it
    router.finish(incoming, Verdict.ACCEPTED, net.now)
    for _ in range(2):
        router.heartbeat(net.now)
        assert router.stats["broken_promises"] == 0
        net.advance(1)
    router.heartbeat(net.now)  # 3 s after the IHAVE
    assert router.stats["broken_promises"] == 1
    assert p(router, liar, net, "p7") == pytest.approx(-10.0)
    assert p(router, honest, net, "p7") == 0.0
    assert router.promises == {}


# -- limits -------------------------------------------------------------------------------------


def test_subscriptions_per_peer_are_bounded() -> None:
    net = Net(max_topics_per_peer=3)
    router = net.router()
    peer = bare()
    join(net, router, peer, "a", "b", "c", "d", "e")
    assert router.peers[peer].topics == {"a", "b", "c"}
    assert router.stats["subscriptions_ignored"] == 2


def test_known_topics_are_bounded() -> None:
    net = Net(max_topics=4)
    router = net.router()
    router.subscribe(TOPIC, net.now)
    peer = bare()
    join(net, router, peer, "a", "b", "c", "d")
    assert set(router.topics) == {TOPIC, "a", "b", "c"}
    assert router.stats["subscriptions_ignored"] == 1
    join(net, router, bare(), TOPIC, "a")  # known topics still take peers
    assert router.stats["subscriptions_ignored"] == 1


def test_peers_per_topic_are_bounded() -> None:
    net = Net(max_peers_per_topic=3)
    router = net.router()
    peers = topic_peers(net, router, 5)
    assert router.topics[TOPIC] == set(peers[:3])
    assert router.stats["subscriptions_ignored"] == 2
    send(net, router, peers[0], Frame(subscriptions=[SubOpt(False, TOPIC)]))
    send(net, router, peers[4], Frame(subscriptions=[SubOpt(True, TOPIC)]))
    assert router.topics[TOPIC] == {peers[1], peers[2], peers[4]}  # room after a leave


def test_subscription_to_an_invalid_topic_is_penalised() -> None:
    net = Net()
    router = net.router()
    peer = bare()
    join(net, router, peer, "bad\ttopic", TOPIC)
    assert router.stats["subscriptions_invalid"] == 1
    assert "bad\ttopic" not in router.topics
    assert router.peers[peer].topics == {TOPIC}
    assert p(router, peer, net, "p7") == pytest.approx(-10.0)


def test_peer_message_queue_drops_forwarded_messages_and_own_ones_evict_them() -> None:
    net = Net(peer_queue=4, max_ihave_length=4)
    router, (sender, slow) = subscribed_with_mesh(net, 2)
    publisher = Keypair.generate()
    forwarded = [signed(net, publisher, bytes([i])) for i in range(6)]
    for message in forwarded:
        (incoming,) = send(net, router, sender, Frame(messages=[message]))
        router.finish(incoming, Verdict.ACCEPTED, net.now)
    assert router.queued(slow) == 4
    assert router.stats["dropped_peer_queue"] == 2

    own = [router.publish(TOPIC, b"own%d" % i, net.now, net.wall_ms)[0] for i in range(5)]
    assert router.queued(slow) == 5  # four evicted forwarded messages, then own ones wait
    assert router.stats["dropped_peer_queue"] == 2 + 4
    last = signed(net, publisher, b"last")
    (incoming,) = send(net, router, sender, Frame(messages=[last]))
    router.finish(incoming, Verdict.ACCEPTED, net.now)
    assert router.stats["dropped_peer_queue"] == 2 + 4 + 1
    assert messages_to(net, router, slow) == own


def test_control_queue_drops_gossip_first_and_keeps_graft_and_prune() -> None:
    net = Net(peer_control_queue=5)
    router, (peer,) = subscribed_with_mesh(net, 1)
    ids = [os.urandom(32) for _ in range(8)]
    grafts = [Graft(f"u{i}") for i in range(3)]  # unsubscribed topics: three PRUNEs
    send(net, router, peer, Frame(graft=grafts))  # three PRUNEs queued
    send(net, router, peer, Frame(ihave=[IHave(TOPIC, ids)]))
    assert router.stats["control_dropped"] == 0  # IWANT asks only what the queue holds
    state = router.peers[peer]
    for index in range(4):  # our own IDONTWANTs overflow the queue: gossip goes first
        state.out.idontwant.append(ids[index])
        router._touch(peer, state)
    assert router.stats["control_dropped"] == 4
    (frame,) = drain(net, router, peer)
    assert [pr.topic for pr in frame.prune] == ["u0", "u1", "u2"]
    assert frame.iwant == [IWant(ids[:2])]


def test_take_cuts_frames_at_max_frame_bytes() -> None:
    net = Net(max_message_size=1000, max_frame_bytes=2024)
    router = net.router()
    (peer,) = topic_peers(net, router, 1)
    send(net, router, peer, Frame(graft=[Graft("u")]))
    published = [router.publish(TOPIC, bytes([i]) * 500, net.now, net.wall_ms)[0] for i in range(7)]
    frames = drain(net, router, peer)
    assert [len(f.messages) for f in frames] == [3, 3, 1]  # (500 + 160) * 3 <= 2024
    assert [m for f in frames for m in f.messages] == published
    assert frames[0].prune == [Prune("u", [], 60)]
    assert all(len(wire.encode(f)) <= 2024 for f in frames)
    assert router.stats["frames_sent"] == 3
    assert router.stats["messages_sent"] == 7
    assert peer not in router.dirty


def test_pace_allows_receive_rate_frames_per_second_then_asks_to_wait() -> None:
    net = Net()  # receive_rate=50, receive_burst=500: we pace with bursts of 250
    router = net.router()
    peer = bare()
    router.add_peer(peer, None, net.now)
    assert [router.pace(peer, net.now) for _ in range(250)] == [0.0] * 250
    assert router.pace(peer, net.now) == pytest.approx(0.02)
    net.advance(0.025)
    assert router.pace(peer, net.now) == 0.0
    assert router.pace(peer, net.now) == pytest.approx(0.02)


def test_remove_peer_drops_it_from_topics_mesh_and_fanout() -> None:
    net = Net()
    router, (gone, stays) = subscribed_with_mesh(net, 2)
    for peer in (gone, stays):
        send(net, router, peer, Frame(subscriptions=[SubOpt(True, "f")]))
    router.publish("f", b"x", net.now, net.wall_ms)
    assert router.fanout["f"] == {gone, stays}
    router.remove_peer(gone, net.now)
    assert gone not in router.peers
    assert router.topics[TOPIC] == {stays}
    assert router.topics["f"] == {stays}
    assert router.mesh[TOPIC] == {stays}
    assert router.fanout["f"] == {stays}
    assert gone not in router.dirty
    assert router.take(gone, net.now) is None
    _, count = router.publish(TOPIC, b"y", net.now, net.wall_ms)
    assert count == 1


# -- routers together ---------------------------------------------------------------------------


def test_routers_in_a_line_mesh_and_forward() -> None:
    net = Net()
    a, b, c = net.router(), net.router(), net.router()
    for x, y in ((a, b), (b, c)):
        net.connect(x, y)
    for router in (a, b, c):
        router.subscribe(TOPIC, net.now)
    net.flush()
    assert a.mesh[TOPIC] == set()  # nobody knew the others' subscriptions yet
    net.advance(1)
    net.beat(a, b, c)
    assert a.mesh[TOPIC] == {b.identity}
    assert b.mesh[TOPIC] == {a.identity, c.identity}
    message, count = a.publish(TOPIC, b"hi", net.now, net.wall_ms)
    assert count == 1
    net.flush()
    assert [m for m, _ in c.delivered] == [message]  # forwarded by b
    assert [m for m, _ in b.delivered] == [message]
    assert a.stats["duplicates"] == 0  # b does not echo it to its publisher


# -- bugs ---------------------------------------------------------------------------------------


def meshed_pair(net: Net) -> tuple[Router, Router]:
    """Two connected routers subscribed to TOPIC, each in the other's mesh."""
    a, b = net.router(), net.router()
    net.connect(a, b)
    a.subscribe(TOPIC, net.now)
    b.subscribe(TOPIC, net.now)
    net.flush()
    net.advance(1)
    net.beat(a, b)
    assert a.mesh[TOPIC] == {b.identity}
    assert b.mesh[TOPIC] == {a.identity}
    return a, b


def test_regraft_after_the_advertised_backoff_is_accepted() -> None:
    net = Net()  # prune_backoff_s=60
    a, b = meshed_pair(net)
    b.score.set_application_score(a.identity, -1.0)
    net.advance(1)
    net.beat(b)  # b prunes a for its score: PRUNE with backoff 60
    b.score.set_application_score(a.identity, 0.0)
    assert a.mesh[TOPIC] == set()
    assert b.mesh[TOPIC] == set()
    for _ in range(90):
        net.advance(1)
        net.beat(a, b)
    assert a.stats["grafts_in_backoff"] + b.stats["grafts_in_backoff"] == 0
    assert p(b, a.identity, net, "p7") == 0.0
    assert a.mesh[TOPIC] == {b.identity}
    assert b.mesh[TOPIC] == {a.identity}


def test_flood_publish_skips_a_mesh_peer_below_the_publish_threshold() -> None:
    net = Net()  # publish threshold -50
    router, (fallen, fine) = subscribed_with_mesh(net, 2)
    router.score.set_application_score(fallen, -60.0)  # pruned only at the next heartbeat
    message, count = router.publish(TOPIC, b"m", net.now, net.wall_ms)
    assert messages_to(net, router, fine) == [message]
    assert messages_to(net, router, fallen) == []
    assert count == 1


def test_resubscribing_does_not_graft_fanout_peers_in_backoff() -> None:
    net = Net()  # unsubscribe_backoff_s=10
    a, b = meshed_pair(net)
    a.unsubscribe(TOPIC, net.now)
    net.flush()
    assert b.mesh[TOPIC] == set()
    net.advance(1)
    _, count = a.publish(TOPIC, b"from outside", net.now, net.wall_ms)
    assert count == 1
    assert a.fanout[TOPIC] == {b.identity}
    net.flush()
    net.advance(1)
    a.subscribe(TOPIC, net.now)  # 2 s after leaving: 8 s of backoff left
    net.flush()
    assert b.stats["grafts_in_backoff"] == 0
    assert p(b, a.identity, net, "p7") == 0.0


def test_iwant_ids_dropped_from_the_control_queue_are_not_promised() -> None:
    net = Net(peer_control_queue=5)
    router, (peer,) = subscribed_with_mesh(net, 1)
    publisher = Keypair.generate()
    offered = [signed(net, publisher, bytes([i])) for i in range(8)]
    send(net, router, peer, Frame(ihave=[IHave(TOPIC, [m.id for m in offered])]))
    asked = {i for frame in drain(net, router, peer) for iw in frame.iwant for i in iw.ids}
    assert len(asked) == 5
    for message in offered:  # the peer sends everything it was asked for
        if message.id in asked:
            (incoming,) = send(net, router, peer, Frame(messages=[message]))
            router.finish(incoming, Verdict.ACCEPTED, net.now)
    net.advance(3)
    router.heartbeat(net.now)
    assert router.stats["broken_promises"] == 0
    assert p(router, peer, net, "p7") == 0.0


def test_a_frame_never_carries_more_messages_than_the_wire_allows() -> None:
    net = Net(peer_queue=1500, source_rate=2000.0)  # one publisher, 1,001 at once
    a, b = net.router(), net.router()
    net.connect(a, b)
    b.subscribe(TOPIC, net.now)
    net.flush()
    for i in range(wire.MAX_ENTRIES + 1):
        a.publish(TOPIC, b"%d" % i, net.now, net.wall_ms)
    net.flush()
    assert b.stats["frames_malformed"] == 0
    assert b.stats["delivered"] == wire.MAX_ENTRIES + 1


@pytest.mark.parametrize(
    ("verdict", "part", "expected"),
    [
        (Verdict.ACCEPTED, "p3", -4.0),
        (Verdict.REJECTED, "p4", -10.0),
    ],
)
def test_copies_arriving_during_validation_are_settled_with_the_verdict(
    verdict: Verdict, part: str, expected: float
) -> None:
    net = Net(score=ScoreParams(default_topic=TRACKING_P3))
    router, (sender, copier) = subscribed_with_mesh(net, 2)
    message = signed(net, Keypair.generate(), b"m")
    (incoming,) = send(net, router, sender, Frame(messages=[message]))
    net.advance(0.1)
    assert send(net, router, copier, Frame(messages=[message])) == []  # validation runs
    router.finish(incoming, verdict, net.now)
    assert p(router, copier, net, part) == pytest.approx(expected)


def test_graft_after_graft_flood_s_costs_a_single_penalty() -> None:
    net = Net()  # graft_flood_s=10, heartbeat_s=1
    router, (peer,) = subscribed_with_mesh(net, 1)
    router.score.set_application_score(peer, -1.0)
    net.advance(1)
    router.heartbeat(net.now)
    router.score.set_application_score(peer, 0.0)
    net.advance(10.5)
    send(net, router, peer, Frame(graft=[Graft(TOPIC)]))
    assert router.stats["grafts_in_backoff"] == 1
    assert p(router, peer, net, "p7") == pytest.approx(-10.0)


def test_control_counts_against_max_frame_bytes() -> None:
    net = Net(max_message_size=1000, max_frame_bytes=2024)
    router, (peer,) = subscribed_with_mesh(net, 1)
    ids = [os.urandom(32) for _ in range(100)]
    send(net, router, peer, Frame(ihave=[IHave(TOPIC, ids)]))
    frames = drain(net, router, peer)
    assert sorted(i for f in frames for iw in f.iwant for i in iw.ids) == sorted(ids)
    assert max(len(wire.encode(f)) for f in frames) <= 2024


def test_an_honest_iwant_answer_is_not_penalised() -> None:
    net = Net()  # defaults: max_ihave_length=5000, peer_queue=512
    a = net.router()
    a.subscribe(TOPIC, net.now)
    for peer in topic_peers(net, a, 12):  # a's mesh is full (d_hi)...
        send(net, a, peer, Frame(graft=[Graft(TOPIC)]))
    for i in range(600):  # ...and a has 600 fresh messages (200/s over 3 windows)
        a.publish(TOPIC, b"%d" % i, net.now, net.wall_ms)
    b = net.router()
    b.subscribe(TOPIC, net.now)
    net.connect(a, b)
    net.flush()
    net.advance(1)
    net.beat(b)  # b grafts a, a refuses: full; b stays a non-mesh topic peer of a
    net.beat(a)  # a gossips its 600 ids to b, b asks for them all, a answers
    assert len(b.delivered) > 0
    net.advance(3)
    net.beat(b)
    assert b.stats["broken_promises"] == 0
    assert b.score.score(a.identity) >= 0.0


def test_messages_of_one_publisher_beyond_its_rate_are_dropped() -> None:
    net = Net(source_rate=10.0, history_length=5)  # burst 10/s x 5 s = 50
    router, (relay,) = subscribed_with_mesh(net, 1)
    publisher = Keypair.generate()
    router.add_peer(publisher.identity, None, net.now)
    relayed = [signed(net, publisher, b"r%d" % i, ms=i) for i in range(30)]
    for message in relayed:  # forwarded by a relay: dropped beyond the burst, no penalty
        for incoming in send(net, router, relay, Frame(messages=[message])):
            router.finish(incoming, Verdict.ACCEPTED, net.now)
    direct = [signed(net, publisher, b"d%d" % i, ms=100 + i) for i in range(30)]
    for message in direct:  # the publisher floods itself: dropped and penalised
        for incoming in send(net, router, publisher.identity, Frame(messages=[message])):
            router.finish(incoming, Verdict.ACCEPTED, net.now)
    assert router.stats["delivered"] == 50
    assert router.stats["dropped_source_rate"] == 10
    assert p(router, relay, net, "p7") == 0.0
    assert p(router, publisher.identity, net, "p7") == pytest.approx(-10.0 * (10 * 0.1) ** 2)
    net.advance(1.0)  # ten more tokens
    late = signed(net, publisher, b"late")
    assert len(send(net, router, relay, Frame(messages=[late]))) == 1


def test_a_new_mesh_peer_hears_what_we_have_at_once() -> None:
    net = Net()
    a = net.router()
    a.subscribe(TOPIC, net.now)
    before = [a.publish(TOPIC, b"%d" % i, net.now, net.wall_ms)[0] for i in range(3)]
    joiner = net.router()
    net.connect(a, joiner)
    joiner.subscribe(TOPIC, net.now)
    net.flush()  # subscriptions exchanged
    net.advance(1)
    net.beat(joiner)  # joiner grafts a; a accepts and answers with IHAVE, then IWANT
    assert a.stats["ihave_catch_up"] == 1
    assert sorted(m.data for m, _ in joiner.delivered) == sorted(m.data for m in before)
    assert joiner.stats["iwant_served"] == 0
    assert a.stats["iwant_served"] == 3


def test_fanout_topics_are_bounded_by_max_topics() -> None:
    net = Net(max_topics=3)
    router = net.router()
    for index in range(5):
        net.advance(1)
        router.publish(f"f{index}", b"x", net.now, net.wall_ms)
    assert sorted(router.fanout) == ["f2", "f3", "f4"]
    assert router.stats["fanout_evicted"] == 2
