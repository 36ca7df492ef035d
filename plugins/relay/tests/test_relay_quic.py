"""The relay plugin with real korium nodes over QUIC on 127.0.0.1: the relayed data path, the
switch to a punched direct path, signal forgery, the relay's refusals, mesh signalling,
``configure_nat`` and a relay that goes away.

Why loopback: every rule the relay driver applies (who may reserve, which signal a target acts
on, when a session expires, what an initiator hears when the relay dies) is observable with
three nodes on one machine, in seconds; the NAT lab (``test_nat_traversal.py``) covers what
needs real NATs. On loopback every node is directly reachable, so the tests make the target
"behind NAT" by hand, as ``configure_nat`` would (``service(b).relays[r] = address``), and the
initiator dials with only the relayed path (or calls ``dial_fallback`` with a contact record that
names only the relay). Hole punching is off unless a test is about it.

Every wait is a condition polled up to a bound (``DEADLINE``); nothing asserts a duration.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import korium_dht.plugin
import korium_gossipsub
import korium_gossipsub.plugin
import korium_relay.plugin
import msgspec
import pytest
from korium_relay import frames, wire
from korium_relay.plugin import service
from korium_relay.server import RelayLimits
from korium_relay.service import IncomingConnection, NatConfiguration, RelayError, relay_entry

from korium import DISCOVERY, Identity, Keypair, Node, NodeConfig
from korium.capabilities import NatStatus, PubSubMessage
from korium.clock import wall_time_ms
from korium.errors import CapabilityMissing, ConnectionLostError, KoriumError, PeerUnreachableError
from korium.identity import Contact
from korium.rpc.dispatch import RpcConfig
from korium.transport.addresses import Address
from korium.transport.connection import PeerConnection
from korium.transport.paths import Path

PLUGINS: Sequence[object] = (korium_dht.plugin, korium_gossipsub.plugin, korium_relay.plugin)
DEADLINE = 10.0
"""Bound on every wait (loopback needs milliseconds; a loaded CI machine may need more)."""
XFAIL_WAIT = 3.0
"""Bound on a wait that a known bug makes fail (keeps the file fast; raise it with the fix)."""
ONE_WAY = "test/one-way"

NodeFactory = Callable[..., Awaitable[Node]]


# -- helpers ------------------------------------------------------------------------------------


async def wait_until(condition: Callable[[], bool], what: str, timeout: float = DEADLINE) -> None:
    """Poll *condition* until it holds; fail with *what* if it does not within *timeout* s."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"not reached within {timeout} s: {what}")
        await asyncio.sleep(0.02)


def stat(node: Node, name: str) -> float:
    """One ``relay.*`` counter of *node* (0 when it never moved)."""
    return node.stats().get(f"relay.{name}", 0)


def relay_contact(target: Node, relay: Node) -> Contact:
    """*target*'s contact record as a node behind NAT publishes it: only its relay."""
    return target.node_identity.contact([relay_entry(relay.identity, relay.local_addr)])


def relayed_paths(node: Node, peer: Node) -> list[Path]:
    return [c.path for c in node.smartsock.paths.candidates(peer.identity) if c.path.relayed]


async def ask(sender: Node, to: Node, message: wire.Message) -> wire.Message:
    """Send one relay RPC from *sender* to *to* and decode the answer."""
    reply = await sender.rpc.request(
        to.identity, wire.PROTOCOL, wire.encode(message), addresses=[to.local_addr]
    )
    return wire.decode(reply)


def signal(
    signer: Keypair,
    target: Identity,
    relay: Identity,
    *,
    offset_ms: int = 0,
    session: bytes | None = None,
) -> wire.RelaySignal:
    """A signal signed by *signer*, stamped now (plus *offset_ms*)."""
    return wire.RelaySignal.create(
        signer,
        target,
        session or frames.new_session_id(),
        relay,
        wall_time_ms() + offset_ms,
    )


async def behind_relay(target: Node, relay: Node) -> None:
    """Make *target* reachable only through *relay*, as ``configure_nat`` does behind NAT."""
    await target.connect(relay.identity, [relay.local_addr])
    service(target).relays[relay.identity] = relay.local_addr


async def dial_relayed(initiator: Node, target: Node, relay: Node) -> PeerConnection:
    """Set up a relay session (``dial_fallback``) and connect through it, nothing else."""
    assert await service(initiator).dial_fallback(target.identity, relay_contact(target, relay))
    paths = relayed_paths(initiator, target)
    assert [p.address for p in paths] == [relay.local_addr]
    conn = initiator.smartsock.dial(target.identity, [], paths)
    await asyncio.wait_for(conn.established, DEADLINE)
    return conn


@pytest.fixture
async def make_node() -> AsyncIterator[NodeFactory]:
    """``await make_node(**relay_settings)``: a node on 127.0.0.1 with the DHT, GossipSub and
    relay plugins (``plugins=`` to choose others); every node is closed at teardown."""
    built: list[Node] = []

    async def make(*, plugins: Sequence[object] = PLUGINS, **relay: Any) -> Node:
        config = NodeConfig(pow_difficulty=0, rpc=RpcConfig(dial_timeout=1.0))
        builder = Node.builder("127.0.0.1:0").config(config).plugins(list(plugins))
        if korium_relay.plugin in plugins:
            builder = builder.plugin_settings("relay", **{"hole_punching": False, **relay})
        node = await builder.build()
        built.append(node)
        return node

    try:
        yield make
    finally:
        await asyncio.gather(*(node.close() for node in built), return_exceptions=True)


async def trio(make_node: NodeFactory, **relay_settings: Any) -> tuple[Node, Node, Node]:
    """A relay *r* (with *relay_settings*), an initiator *a* and a target *b* behind *r*;
    *b* answers ``send`` with ``b"pong " + data``."""
    r = await make_node(**relay_settings)
    a = await make_node()
    b = await make_node()
    b.set_request_handler(lambda peer, data: b"pong " + data)
    await behind_relay(b, r)
    return r, a, b


# -- the relayed data path ------------------------------------------------------------------------


async def test_relayed_connection_carries_requests_and_messages(make_node: NodeFactory) -> None:
    r, a, b = await trio(make_node)
    forwarded: list[bytes] = []
    send = r.smartsock.send_datagram

    def spy(data: bytes, address: Address) -> None:
        forwarded.append(data)
        send(data, address)

    r.smartsock.send_datagram = spy  # type: ignore[method-assign]
    await dial_relayed(a, b, r)
    a.set_request_handler(lambda peer, data: b"back " + data)
    heard: list[bytes] = []
    b.rpc.register_message(ONE_WAY, lambda peer, body: heard.append(body))

    for i in range(50):
        assert await a.send(b.identity, b"ping %d" % i) == b"pong ping %d" % i
    assert await b.send(a.identity, b"hello") == b"back hello"  # the other way, same connection
    for i in range(20):
        await a.rpc.send_message(b.identity, ONE_WAY, b"note %d" % i)
    await wait_until(lambda: len(heard) == 20, "20 one-way messages through the relay")
    assert heard == [b"note %d" % i for i in range(20)]

    # both ends use the relayed path, and neither knows a real address for the other
    session = relayed_paths(a, b)[0].relay_session
    assert a.smartsock.paths.active_path(b.identity) == Path(r.local_addr, session)
    assert b.smartsock.paths.active_path(a.identity) == Path(r.local_addr, session)
    assert len(a.smartsock.connections) == 2  # to r and to b: no direct one appeared
    # the relay forwarded every datagram of the connection, and saw no plaintext
    packets = stat(r, "packets_relayed")
    assert packets >= 2 * 51  # a request and its response at least, per request
    assert stat(r, "sessions_reserved") == 1
    assert stat(r, "sessions_joined") == 1
    assert stat(r, "sessions") == 1
    relayed_frames = [d for d in forwarded if d.startswith(frames.MAGIC)]
    assert len(relayed_frames) == packets
    assert stat(r, "bytes_relayed") == sum(len(d) for d in relayed_frames)
    assert all(d[4 : frames.HEADER_SIZE] == session for d in relayed_frames)
    assert not any(b"ping" in d or b"pong" in d or b"note" in d for d in relayed_frames)
    assert b.smartsock.stats["relayed_datagrams"] > 50
    assert a.smartsock.stats["relayed_datagrams"] > 50
    assert stat(a, "client_sessions") == 1
    assert stat(b, "client_sessions") == 1
    assert stat(b, "signals_accepted") == 1


async def test_peer_address_is_none_while_relayed(make_node: NodeFactory) -> None:
    r, a, b = await trio(make_node)
    await dial_relayed(a, b, r)
    assert await a.send(b.identity, b"x") == b"pong x"
    assert a.smartsock.paths.active_path(b.identity) == relayed_paths(a, b)[0]
    assert (a.rpc.peer_address(b.identity), b.rpc.peer_address(a.identity)) == (None, None)


async def test_hole_punch_switches_to_direct_without_a_failed_request(
    make_node: NodeFactory,
) -> None:
    punching = {"hole_punching": True, "punch_delay": 0.5, "punch_interval": 0.1}
    r = await make_node()
    a = await make_node(**punching)
    b = await make_node(**punching)
    b.set_request_handler(lambda peer, data: b"pong " + data)
    await behind_relay(b, r)
    await dial_relayed(a, b, r)
    first = a.smartsock.paths.active_path(b.identity)
    assert first is not None
    assert first.relayed

    def direct(node: Node, peer: Node) -> bool:
        path = node.smartsock.paths.active_path(peer.identity)
        return path is not None and not path.relayed

    answered = failed = after_switch = relayed_answers = 0
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while after_switch < 30 and loop.time() < deadline:
        try:
            reply = await a.send(b.identity, b"%d" % answered, timeout=DEADLINE)
        except KoriumError:
            failed += 1
        else:
            assert reply == b"pong %d" % answered
            answered += 1
            relayed_answers += not direct(a, b)
        if direct(a, b) and direct(b, a):
            after_switch += 1
        await asyncio.sleep(0.02)

    assert failed == 0
    assert after_switch == 30, "the path did not switch to direct"
    assert a.smartsock.paths.active_path(b.identity) == Path(b.local_addr)
    assert b.smartsock.paths.active_path(a.identity) == Path(a.local_addr)
    assert a.rpc.peer_address(b.identity) == b.local_addr
    for node in (a, b):
        assert stat(node, "punched") == 1
        assert stat(node, "last_punch_ms") >= 0
        assert "relay.last_punch_ms" in node.stats()
        assert node.smartsock.stats["path_switches"] >= 1
    assert relayed_answers > 0  # the session started on the relay
    # once direct, requests no longer cross the relay
    before = stat(r, "packets_relayed")
    for i in range(20):
        assert await a.send(b.identity, b"d%d" % i) == b"pong d%d" % i
    assert stat(r, "packets_relayed") - before < 20


async def test_a_dial_with_no_address_falls_back_to_the_relay_in_the_record(
    make_node: NodeFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    r, a, b = await trio(make_node)
    await a.connect(r.identity, [r.local_addr])  # a knows no address of b: its DHT is empty
    record = relay_contact(b, r)
    looked_up: list[Identity] = []

    async def resolve(peer: Identity) -> Contact | None:
        looked_up.append(peer)
        return record if peer == b.identity else None

    # b's record as a DHT lookup would find it (on loopback a real lookup would also find
    # b's own address and connect to it directly)
    monkeypatch.setattr(a.services.require(DISCOVERY), "resolve", resolve)
    assert await a.send(b.identity, b"anyone?") == b"pong anyone?"
    assert set(looked_up) == {b.identity}
    assert a.stats()["rpc.dial_fallbacks"] == 1
    session = relayed_paths(a, b)[0].relay_session
    assert a.smartsock.paths.active_path(b.identity) == Path(r.local_addr, session)
    assert stat(r, "sessions_joined") == 1
    assert stat(r, "packets_relayed") >= 2


async def test_relay_gone_after_the_punch_leaves_the_connection_working(
    make_node: NodeFactory,
) -> None:
    punching = {"hole_punching": True, "punch_interval": 0.1}
    r = await make_node()
    a = await make_node(**punching)
    b = await make_node(**punching)
    b.set_request_handler(lambda peer, data: b"pong " + data)
    await behind_relay(b, r)
    await dial_relayed(a, b, r)
    await wait_until(
        lambda: (
            a.smartsock.paths.active_path(b.identity) == Path(b.local_addr)
            and b.smartsock.paths.active_path(a.identity) == Path(a.local_addr)
        ),
        "both ends on the direct path",
    )
    await r.close()
    await wait_until(lambda: stat(a, "relays_lost") == 1, "a saw its relay go")
    await wait_until(lambda: stat(b, "relays_lost") == 1, "b saw its relay go")
    assert relayed_paths(a, b) == []
    for i in range(10):
        assert await a.send(b.identity, b"%d" % i) == b"pong %d" % i
    assert b.identity in a.rpc.connected_peers()


# -- forged signals -------------------------------------------------------------------------------


def forged_signals(a: Node, b: Node, r: Node) -> dict[str, tuple[wire.RelaySignal, str, str]]:
    """Signals from *a* to *b* through *r* that *b* must refuse: name -> (signal, the rule of
    the Refused answer, a phrase of its reason)."""
    stranger = Keypair.generate()
    by_stranger = signal(stranger, b.identity, r.identity)
    return {
        "wrong signer": (
            msgspec.structs.replace(by_stranger, initiator=bytes(a.identity)),
            "signal",
            "signature does not verify",
        ),
        "for someone else": (
            signal(a.keypair, stranger.identity, r.identity),
            "signal",
            "for another node",
        ),
        "too old": (signal(a.keypair, b.identity, r.identity, offset_ms=-60_000), "signal", "old"),
        "from the future": (
            signal(a.keypair, b.identity, r.identity, offset_ms=60_000),
            "signal",
            "in the future",
        ),
        "relay not used": (
            signal(a.keypair, b.identity, stranger.identity),
            "relay",
            "does not use",
        ),
    }


async def test_forged_signals_sent_by_rpc_are_refused(make_node: NodeFactory) -> None:
    r = await make_node()
    a = await make_node()
    b = await make_node(auto_accept=False)
    await behind_relay(b, r)
    for name, (forged, rule, phrase) in forged_signals(a, b, r).items():
        reply = await ask(a, b, wire.Incoming(forged))
        assert isinstance(reply, wire.Refused), name
        assert reply.rule == rule, name
        assert phrase in reply.reason, name
    assert stat(b, "signals_refused") == 5

    valid = signal(a.keypair, b.identity, r.identity)
    assert await ask(a, b, wire.Incoming(valid)) == wire.Ack()
    replayed = await ask(a, b, wire.Incoming(valid))
    assert replayed == wire.Refused("replay", "this session was signalled before")
    assert stat(b, "signals_accepted") == 1
    assert stat(b, "signals_replayed") == 1
    assert stat(b, "signals_refused") == 5


async def test_forged_signals_on_gossip_are_not_acted_on(make_node: NodeFactory) -> None:
    r = await make_node()
    a = await make_node()
    b = await make_node()  # auto_accept: a signal it believed would make it join
    await behind_relay(b, r)
    await a.connect(r.identity, [r.local_addr])  # the mesh: a - r - b
    await wait_until(
        lambda: (
            b.identity in korium_gossipsub.service(r).topic_peers(wire.TOPIC_SIGNAL)
            and r.identity in korium_gossipsub.service(a).topic_peers(wire.TOPIC_SIGNAL)
        ),
        "the relay/signal subscriptions exchanged",
    )
    seen: list[PubSubMessage] = []

    async def read(messages: AsyncIterator[PubSubMessage]) -> None:
        async for message in messages:
            seen.append(message)

    reader = asyncio.ensure_future(read(b.messages(wire.TOPIC_SIGNAL)))
    try:
        forged = forged_signals(a, b, r)
        for forged_signal, _, _ in forged.values():
            await a.publish(wire.TOPIC_SIGNAL, wire.encode(forged_signal))
        await wait_until(lambda: len(seen) == len(forged), "b received every forged signal")
        await wait_until(lambda: stat(b, "signals_refused") == 4, "b refused four of them")
        # the fifth, for another node, is ignored without a word: b is not its target
        assert stat(b, "signals_accepted") == 0
        assert stat(b, "client_sessions") == 0
        assert stat(r, "sessions_joined") == 0
        assert not [k for k in r.stats() if k.startswith("relay.refused_")]  # no Join tried

        # the control: a real relay session (published on the mesh and handed over) is joined
        assert await service(a).dial_fallback(b.identity, relay_contact(b, r))
        assert stat(r, "sessions_joined") == 1
        await wait_until(lambda: stat(b, "signals_replayed") == 1, "the second copy refused")
        assert stat(b, "signals_accepted") == 1
        assert stat(b, "signals_refused") == 4
    finally:
        reader.cancel()


def signed_with_relay(signer: Keypair, target: Identity, relay: bytes) -> wire.RelaySignal:
    """A correctly signed signal whose relay field is *relay*, raw bytes (maybe not a key)."""
    unsigned = msgspec.structs.replace(
        signal(signer, target, signer.identity), relay=relay, signature=bytes(64)
    )
    return msgspec.structs.replace(
        unsigned, signature=signer.sign(wire.SIGNAL_DOMAIN, unsigned.signed_bytes())
    )


async def test_a_signal_naming_an_invalid_relay_key_is_refused(make_node: NodeFactory) -> None:
    r = await make_node()
    a = await make_node()
    b = await make_node(auto_accept=False)
    await behind_relay(b, r)
    reply = await ask(a, b, wire.Incoming(signed_with_relay(a.keypair, b.identity, bytes(32))))
    assert isinstance(reply, wire.Refused)
    assert stat(b, "signals_refused") == 1


async def test_a_signal_naming_an_invalid_relay_key_does_not_silence_the_mesh(
    make_node: NodeFactory,
) -> None:
    r = await make_node()
    a = await make_node()
    b = await make_node(auto_accept=False)
    await behind_relay(b, r)
    await a.connect(r.identity, [r.local_addr])
    await wait_until(
        lambda: (
            b.identity in korium_gossipsub.service(r).topic_peers(wire.TOPIC_SIGNAL)
            and r.identity in korium_gossipsub.service(a).topic_peers(wire.TOPIC_SIGNAL)
        ),
        "the relay/signal subscriptions exchanged",
    )
    heard = b.messages(wire.TOPIC_SIGNAL)
    poison = signed_with_relay(a.keypair, b.identity, bytes(32))
    await a.publish(wire.TOPIC_SIGNAL, wire.encode(poison))
    assert (await asyncio.wait_for(anext(heard), DEADLINE)).data == wire.encode(poison)
    await a.publish(wire.TOPIC_SIGNAL, wire.encode(signal(a.keypair, b.identity, r.identity)))
    await asyncio.wait_for(anext(heard), DEADLINE)
    await wait_until(lambda: stat(b, "signals_accepted") == 1, "b still hears signals", XFAIL_WAIT)


async def test_a_mesh_signal_that_beats_the_reservation_still_gets_joined(
    make_node: NodeFactory,
) -> None:
    r, a, b = await trio(make_node, reserve_timeout=1.0)
    await a.connect(r.identity, [r.local_addr])
    await wait_until(
        lambda: (
            b.identity in korium_gossipsub.service(r).topic_peers(wire.TOPIC_SIGNAL)
            and r.identity in korium_gossipsub.service(a).topic_peers(wire.TOPIC_SIGNAL)
        ),
        "the relay/signal subscriptions exchanged",
    )
    early = signal(a.keypair, b.identity, r.identity)
    await a.publish(wire.TOPIC_SIGNAL, wire.encode(early))  # the mesh is faster than a -> r
    await wait_until(
        lambda: service(r).server.stats["refused_unknown-session"] == 1, "b tried to join"
    )
    reply = await ask(a, r, wire.Reserve(early))
    assert isinstance(reply, wire.Joined), reply


async def test_a_long_policy_reason_reaches_the_initiator(
    make_node: NodeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    r, a, b = await trio(make_node, policy=lambda initiator, target, address: "no " * 200)
    with pytest.raises(RelayError, match=r"\[policy\]"):
        await service(a).dial_fallback(b.identity, relay_contact(b, r))
    assert stat(r, "refused_policy") == 1


# -- the relay's refusals -------------------------------------------------------------------------


async def test_reserve_refused_unless_the_signal_is_the_callers_and_for_this_relay(
    make_node: NodeFactory,
) -> None:
    r, a, b = await trio(make_node)
    not_from_a = signal(Keypair.generate(), b.identity, r.identity)
    reply = await ask(a, r, wire.Reserve(not_from_a))
    assert isinstance(reply, wire.Refused)
    assert reply.rule == "signal"
    for_another_relay = signal(a.keypair, b.identity, b.identity)
    reply = await ask(a, r, wire.Reserve(for_another_relay))
    assert isinstance(reply, wire.Refused)
    assert reply.rule == "signal"
    assert "not from you or not for this relay" in reply.reason
    assert len(service(r).server) == 0
    assert stat(r, "sessions_reserved") == 0
    assert stat(b, "signals_accepted") + stat(b, "signals_refused") == 0  # nothing handed over


async def test_access_policy_refuses_and_the_initiator_logs_why(
    make_node: NodeFactory, caplog: pytest.LogCaptureFixture
) -> None:
    asked: list[tuple[Identity, Identity, Address]] = []

    def policy(initiator: Identity, target: Identity, address: Address) -> str | None:
        asked.append((initiator, target, address))
        return "no strangers"

    r, a, b = await trio(make_node, policy=policy)
    with pytest.raises(RelayError, match=r"no strangers \[policy\]") as refused:
        await service(a).dial_fallback(b.identity, relay_contact(b, r))
    assert asked == [(a.identity, b.identity, a.local_addr)]
    assert stat(r, "refused_policy") == 1
    assert len(service(r).server) == 0
    assert relayed_paths(a, b) == []
    assert str(refused.value).endswith("no strangers [policy])")
    assert stat(b, "signals_accepted") == 0  # the refused session was never handed over


async def test_capacity_refuses_a_second_session(make_node: NodeFactory) -> None:
    r, a, b = await trio(make_node, limits=RelayLimits(max_sessions=1))
    await dial_relayed(a, b, r)
    reply = await ask(a, r, wire.Reserve(signal(a.keypair, b.identity, r.identity)))
    assert isinstance(reply, wire.Refused)
    assert reply.rule == "capacity"
    assert "at capacity (1 sessions)" in reply.reason
    assert stat(r, "refused_capacity") == 1
    assert len(service(r).server) == 1
    assert await a.send(b.identity, b"still") == b"pong still"  # the first one still works


async def test_a_node_that_does_not_serve_refuses_to_relay(make_node: NodeFactory) -> None:
    r, a, b = await trio(make_node, serve=False)
    reply = await ask(a, r, wire.Reserve(signal(a.keypair, b.identity, r.identity)))
    assert reply == wire.Refused("not-a-relay", "this node does not relay")
    with pytest.raises(RelayError, match=r"\[not-a-relay\]"):
        await service(a).dial_fallback(b.identity, relay_contact(b, r))
    assert stat(r, "sessions_reserved") == 0


async def test_reserve_times_out_when_the_target_never_joins(make_node: NodeFactory) -> None:
    r = await make_node(reserve_timeout=0.5)
    a = await make_node()
    b = await make_node(auto_accept=False)  # hears the signal, never joins
    await behind_relay(b, r)
    pending = signal(a.keypair, b.identity, r.identity)
    reply = await ask(a, r, wire.Reserve(pending))
    assert isinstance(reply, wire.Refused)
    assert reply.rule == "timeout"
    assert b.identity.short in reply.reason
    assert stat(b, "signals_accepted") == 1  # the relay handed the signal over
    assert service(r).server.get(pending.session) is None
    assert len(service(r).server) == 0
    assert stat(r, "sessions_closed") == 1
    assert stat(r, "sessions_joined") == 0


async def test_an_idle_session_expires(make_node: NodeFactory) -> None:
    # pending_timeout as short as idle_timeout: the relay's expiry timer, armed at the
    # reservation, must fire soon (see the xfail below for the default pending_timeout)
    r, a, b = await trio(make_node, limits=RelayLimits(idle_timeout=0.5, pending_timeout=1.0))
    assert await service(a).dial_fallback(b.identity, relay_contact(b, r))
    assert len(service(r).server) == 1
    assert stat(r, "sessions_joined") == 1  # complete: what expires is an idle session
    await wait_until(lambda: stat(r, "sessions_expired") == 1, "the idle session expired")
    assert len(service(r).server) == 0
    # what a sends through it now is dropped by the relay
    dropped = service(r).server.stats["dropped_unknown_session"]
    conn = a.smartsock.dial(b.identity, [], relayed_paths(a, b))
    await wait_until(
        lambda: service(r).server.stats["dropped_unknown_session"] > dropped,
        "the relay dropped a frame of the expired session",
    )
    assert not conn.established.done()
    conn.abort("test over")


async def test_an_idle_session_expires_at_its_idle_timeout(make_node: NodeFactory) -> None:
    r, a, b = await trio(make_node, limits=RelayLimits(idle_timeout=0.5))
    assert await service(a).dial_fallback(b.identity, relay_contact(b, r))
    await wait_until(lambda: stat(r, "sessions_expired") == 1, "the idle expiry", XFAIL_WAIT)


# -- mesh signalling and configure_nat -----------------------------------------------------------


async def test_mesh_signalling_hands_incoming_sessions_to_the_application(
    make_node: NodeFactory,
) -> None:
    r, a, b = await trio(make_node)
    incoming = b.enable_mesh_signaling()
    assert isinstance(incoming, AsyncGenerator)
    first = asyncio.ensure_future(anext(incoming))
    await asyncio.sleep(0)  # the application is now reading
    dialing = asyncio.ensure_future(service(a).dial_fallback(b.identity, relay_contact(b, r)))
    offered = await asyncio.wait_for(first, DEADLINE)
    assert isinstance(offered, IncomingConnection)
    assert (offered.peer, offered.relay) == (a.identity, r.identity)
    assert service(r).server.get(offered.session) is not None
    # not accepted behind the application's back
    assert stat(r, "sessions_joined") == 0
    assert stat(b, "client_sessions") == 0
    assert not dialing.done()

    await b.accept_incoming(offered)
    assert await asyncio.wait_for(dialing, DEADLINE)
    assert stat(r, "sessions_joined") == 1
    assert relayed_paths(a, b) == [Path(r.local_addr, offered.session)]
    conn = a.smartsock.dial(b.identity, [], relayed_paths(a, b))
    await asyncio.wait_for(conn.established, DEADLINE)
    assert await a.send(b.identity, b"accepted") == b"pong accepted"

    # once the application stops reading, sessions are accepted automatically again
    await incoming.aclose()
    assert await service(a).dial_fallback(b.identity, relay_contact(b, r))
    assert stat(r, "sessions_joined") == 2


async def test_configure_nat_on_loopback_finds_the_node_public(make_node: NodeFactory) -> None:
    r = await make_node()
    a = await make_node()
    await a.bootstrap(r.identity, r.local_addr)  # the DHT: where a publishes its record
    result = await a.configure_nat(r.identity)
    assert isinstance(result, NatConfiguration)
    is_public, relay, incoming = result
    assert (is_public, relay, incoming) == (True, None, None)
    assert service(a).nat_status is NatStatus.PUBLIC
    assert service(a).relays == {}
    contact = await r.resolve(a.identity)
    assert contact is not None
    assert list(contact.addresses) == a.routable_addresses()  # published, and no relay in it


async def test_node_facade_without_the_plugin_names_korium_relay(make_node: NodeFactory) -> None:
    plain = await make_node(plugins=(korium_dht.plugin, korium_gossipsub.plugin))
    with pytest.raises(CapabilityMissing, match=r"korium\[relay\]") as configure:
        await plain.configure_nat(plain.identity)
    with pytest.raises(CapabilityMissing, match=r"korium\[relay\]") as signalling:
        plain.enable_mesh_signaling()
    with pytest.raises(CapabilityMissing, match=r"korium\[relay\]") as accept:
        await plain.accept_incoming(None)
    assert [e.value.needed_by for e in (configure, signalling, accept)] == [
        "configure_nat",
        "enable_mesh_signaling",
        "accept_incoming",
    ]
    assert {e.value.extra for e in (configure, signalling, accept)} == {"relay"}


# -- a relay that goes away -----------------------------------------------------------------------


async def test_relay_gone_fails_the_request_in_flight_naming_the_relay(
    make_node: NodeFactory,
) -> None:
    r, a, b = await trio(make_node)
    started, release = asyncio.Event(), asyncio.Event()

    async def slow(peer: Identity, data: bytes) -> bytes:
        started.set()
        await release.wait()
        return data

    b.set_request_handler(slow)
    await dial_relayed(a, b, r)
    in_flight = asyncio.ensure_future(a.send(b.identity, b"slow", timeout=DEADLINE))
    await asyncio.wait_for(started.wait(), DEADLINE)  # the request is in b's handler
    await r.close()
    with pytest.raises(ConnectionLostError, match=rf"relay {r.identity.short}\.\.\. .* is gone"):
        await in_flight
    release.set()


async def test_relay_gone_next_request_raises_peer_unreachable(make_node: NodeFactory) -> None:
    r, a, b = await trio(make_node)
    await dial_relayed(a, b, r)
    assert await a.send(b.identity, b"x") == b"pong x"
    await r.close()
    await wait_until(lambda: r.identity not in a.rpc.connected_peers(), "a saw r go")
    await wait_until(lambda: b.identity not in a.rpc.connected_peers(), "a dropped b")
    with pytest.raises(PeerUnreachableError):
        await a.send(b.identity, b"y", timeout=DEADLINE)


async def test_relay_gone_next_request_names_the_relay(make_node: NodeFactory) -> None:
    r, a, b = await trio(make_node)
    await dial_relayed(a, b, r)
    assert await a.send(b.identity, b"x") == b"pong x"
    await r.close()
    await wait_until(lambda: b.identity not in a.rpc.connected_peers(), "a dropped b")
    with pytest.raises(KoriumError, match=rf"relay {r.identity.short}\.\.\. .*is gone"):
        await a.send(b.identity, b"y", timeout=DEADLINE)
