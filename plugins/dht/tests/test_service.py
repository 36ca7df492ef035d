"""Tests of the DHT service (``korium_dht.service``) through the real RPC path, on virtual time.

Nodes are real korium nodes on a :class:`korium.testing.SimNetwork`. Hand-crafted and malicious
peers are raw :class:`korium.testing.SimRpc` endpoints (``network.add_node``) that speak
``korium/dht/1`` directly, so every request and answer goes through encoding, the simulated
network and the node's handler exactly as a remote peer's would.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import msgspec
import pytest
from korium_dht import messages, plugin
from korium_dht.config import MAX_VALUE_SIZE
from korium_dht.errors import (
    DhtError,
    InvalidValueError,
    LookupFailedError,
    RecordRefusedError,
    StoreRefusedError,
    ValueTooLargeError,
)
from korium_dht.messages import (
    PROTOCOL,
    FindNode,
    FindValue,
    Found,
    Nodes,
    Ping,
    Pong,
    Store,
    StoreResult,
)
from korium_dht.routing import bucket_index
from korium_dht.service import DhtService
from korium_dht.storage import value_key

from korium import Node, NodeIdentity
from korium.clock import wall_time_ms
from korium.errors import CapabilityMissing, RemoteError
from korium.identity import Contact, Identity, Keypair, solve_pow
from korium.testing import SimNetwork, SimRpc, on_virtual_time

DIFFICULTY = 8
HOUR = 3600.0
DAY = 24 * HOUR
KiB = 1024


@functools.cache
def strong(seed: int) -> NodeIdentity:
    """A fixed identity whose proof reaches the nodes' difficulty."""
    keypair = Keypair.from_seed(seed.to_bytes(4, "big") * 8)
    return NodeIdentity(keypair, solve_pow(keypair.identity, DIFFICULTY, workers=1))


@functools.cache
def weak(seed: int = 0) -> NodeIdentity:
    """An identity whose proof of work is below the nodes' difficulty."""
    while True:
        candidate = NodeIdentity.generate(difficulty=0)
        if candidate.strength < DIFFICULTY:
            return candidate


async def new_node(network: SimNetwork, seed: int, **settings: object) -> Node:
    return await (
        Node.builder()
        .identity(strong(seed))
        .difficulty(DIFFICULTY)
        .plugins([plugin])
        .plugin_settings("dht", **settings)
        .simulated(network)
        .build()
    )


async def cluster(network: SimNetwork, count: int, first_seed: int = 1000) -> list[Node]:
    """*count* nodes, each joined through the first."""
    nodes: list[Node] = []
    for i in range(count):
        node = await new_node(network, first_seed + i)
        if nodes:
            await node.bootstrap(nodes[0].identity, "10.0.0.1:4433")
        nodes.append(node)
    return nodes


def dht(node: Node) -> DhtService:
    return plugin.service(node)


def counter(node: Node, name: str) -> int | float:
    return node.stats().get(f"dht.{name}", 0)


Responder = Callable[[Identity, messages.Request], messages.Response]


@dataclass
class Raw:
    """A hand-driven peer: a bare rpc endpoint that speaks the DHT protocol."""

    node_identity: NodeIdentity
    rpc: SimRpc
    address: str
    received: list[messages.Request] = field(default_factory=list)

    @property
    def identity(self) -> Identity:
        return self.node_identity.identity

    def contact(self, age_s: float = 0.0, address: str | None = None) -> Contact:
        """A signed record dated *age_s* seconds ago (negative: in the future)."""
        return self.node_identity.contact(
            [address or self.address], timestamp_ms=wall_time_ms() - int(age_s * 1000)
        )

    async def send(self, peer: Node | Identity, body: bytes) -> bytes:
        target = peer.identity if isinstance(peer, Node) else peer
        return await self.rpc.request(target, PROTOCOL, body)

    async def ask(self, peer: Node | Identity, message: messages.Request) -> messages.Response:
        return messages.decode_response(await self.send(peer, messages.encode(message)))

    async def store(self, peer: Node, key: bytes, value: bytes) -> StoreResult:
        result = await self.ask(peer, Store(self.contact(), key, value))
        assert isinstance(result, StoreResult)
        return result

    def serve(self, responder: Responder | None = None) -> None:
        """Answer DHT requests with *responder*, or honestly with nothing to offer."""

        def handler(peer: Identity, body: bytes) -> bytes:
            request = messages.decode_request(body)
            self.received.append(request)
            if responder is not None:
                return messages.encode(responder(peer, request))
            return messages.encode(self.honest(request))

        self.rpc.register(PROTOCOL, handler)

    def honest(self, request: messages.Request) -> messages.Response:
        if isinstance(request, Ping):
            return Pong(self.contact())
        if isinstance(request, Store):
            return StoreResult(True)
        return Nodes([])


def raw(network: SimNetwork, node_identity: NodeIdentity, address: str | None = None) -> Raw:
    raw_id = bytes(node_identity.identity)
    default = f"10.200.{raw_id[0]}.{raw_id[1] or 1}:4433"
    return Raw(node_identity, network.add_node(node_identity), address or default)


async def introduce(peer: Raw, node: Node) -> None:
    """*peer* pings *node* with its own record, so *node* learns it."""
    answer = await peer.ask(node, Ping(peer.contact()))
    assert isinstance(answer, Pong)


# -- serving the four requests -------------------------------------------------------------


@on_virtual_time
async def test_requests_are_served_over_rpc() -> None:
    network = SimNetwork(seed=1)
    nodes = await cluster(network, 4)
    node = nodes[0]
    r = raw(network, strong(1))
    served = counter(node, "requests_served")

    pong = await r.ask(node, Ping(r.contact()))
    assert isinstance(pong, Pong)
    assert pong.contact is not None
    assert pong.contact.identity == node.identity
    pong.contact.validate(difficulty=DIFFICULTY, now_ms=wall_time_ms())
    assert r.identity in dht(node).table  # learnt from its own record

    target = bytes(range(32))
    found = await r.ask(node, FindNode(r.contact(), target))
    assert isinstance(found, Nodes)
    assert found.contacts == dht(node).table.closest(target, 20)
    assert len(found.contacts) == 4  # three cluster peers and r
    distances = [
        int.from_bytes(bytes(c.identity), "big") ^ int.from_bytes(target, "big")
        for c in found.contacts
    ]
    assert distances == sorted(distances)

    value = b"some value"
    key = value_key(value)
    missing = await r.ask(node, FindValue(None, key))
    assert isinstance(missing, Nodes)
    assert missing.contacts == dht(node).table.closest(key, 20)

    stored = await r.ask(node, Store(r.contact(), key, value))
    assert stored == StoreResult(True, "")
    assert await r.ask(node, FindValue(None, key)) == Found(value)

    record = strong(2).contact(["10.2.2.2:4433"], timestamp_ms=wall_time_ms())
    assert await r.ask(node, Store(None, bytes(record.identity), record.encode())) == (
        StoreResult(True)
    )
    assert await r.ask(node, FindValue(None, bytes(record.identity))) == Found(record.encode())
    assert counter(node, "requests_served") - served == 7


@on_virtual_time
async def test_a_request_without_a_sender_is_served_but_not_learnt() -> None:
    network = SimNetwork(seed=2)
    (node,) = await cluster(network, 1)
    r = raw(network, strong(1))
    pong = await r.ask(node, Ping(None))
    assert isinstance(pong, Pong)
    assert r.identity not in dht(node).table
    assert len(dht(node).table) == 0
    assert counter(node, "requests_served") == 1


@on_virtual_time
async def test_a_sender_record_naming_another_identity_is_refused() -> None:
    network = SimNetwork(seed=3)
    nodes = await cluster(network, 2)
    node = nodes[0]
    r = raw(network, strong(1))
    other = raw(network, strong(2))
    served = counter(node, "requests_served")
    for message in (Ping(other.contact()), FindNode(other.contact(), bytes(32))):
        with pytest.raises(RemoteError, match="not the authenticated peer's"):
            await r.ask(node, message)
    assert counter(node, "sender_mismatch") == 2
    assert counter(node, "requests_served") == served
    assert other.identity not in dht(node).table
    assert r.identity not in dht(node).table
    # The same peer with its own record is fine.
    await introduce(r, node)
    assert r.identity in dht(node).table
    assert counter(node, "sender_mismatch") == 2


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"\x93garbage",
        msgspec.msgpack.encode([2, None, b"short key"]),
        msgspec.msgpack.encode([7, None]),
        msgspec.msgpack.encode([1, [b"\xff" * 32, ["10.0.0.1:1"], 1, [0], bytes(64)]]),
        messages.encode(Store(None, bytes(32), bytes(MAX_VALUE_SIZE + 1))),
    ],
    ids=["empty", "garbage", "short-key", "unknown-tag", "bad-identity", "oversized-value"],
)
@on_virtual_time
async def test_malformed_requests_are_refused_and_the_node_keeps_working(body: bytes) -> None:
    network = SimNetwork(seed=4)
    nodes = await cluster(network, 2)
    node = nodes[0]
    r = raw(network, strong(1))
    with pytest.raises(RemoteError, match="DhtDecodeError"):
        await r.send(node, body)
    assert counter(node, "malformed_requests") == 1
    assert isinstance(await r.ask(node, Ping(r.contact())), Pong)
    assert r.identity in dht(node).table
    # ... and its own lookups still work.
    found = await node.find_peers(nodes[1].identity)
    assert found[0].identity == nodes[1].identity


# -- who enters the routing table ----------------------------------------------------------


@on_virtual_time
async def test_a_weak_proof_of_work_sender_never_enters_the_table() -> None:
    network = SimNetwork(seed=5)
    (node,) = await cluster(network, 1)
    w = raw(network, weak())
    assert w.node_identity.strength < DIFFICULTY
    for message in (Ping(w.contact()), FindNode(w.contact(), bytes(32))):
        assert not isinstance(await w.ask(node, message), StoreResult)  # served all the same
    assert w.identity not in dht(node).table
    assert counter(node, "invalid_records") == 2
    s = raw(network, strong(1))
    await introduce(s, node)
    assert s.identity in dht(node).table
    assert counter(node, "invalid_records") == 2


@on_virtual_time
async def test_a_weak_proof_of_work_contact_in_an_answer_is_never_used() -> None:
    network = SimNetwork(seed=6)
    (node,) = await cluster(network, 1)
    w = raw(network, weak())
    good = raw(network, strong(2))
    liar = raw(network, strong(1))
    w.serve()
    good.serve()

    def offer(peer: Identity, request: messages.Request) -> messages.Response:
        if isinstance(request, Ping):
            return Pong(liar.contact())
        return Nodes([w.contact(), good.contact()])

    liar.serve(offer)
    await introduce(liar, node)
    result = await node.find_peers(w.identity)
    assert w.received == []  # never asked
    assert w.identity not in dht(node).table
    assert w.identity not in [c.identity for c in result]
    assert counter(node, "weak_proof") >= 1
    # The control: the strong contact from the same answer was asked, answered, and learnt.
    assert [type(m) for m in good.received] == [FindNode]
    assert good.identity in dht(node).table
    assert {c.identity for c in result} == {liar.identity, good.identity}


@pytest.mark.parametrize(
    ("age_s", "learnt"),
    [(0.0, True), (-2.0, True), (-10.0, False), (DAY - 60, True), (DAY + 60, False)],
    ids=["fresh", "2s-ahead", "10s-ahead", "almost-a-day", "over-a-day"],
)
@on_virtual_time
async def test_stale_or_future_sender_records_are_not_learnt(age_s: float, learnt: bool) -> None:
    network = SimNetwork(seed=7)
    (node,) = await cluster(network, 1)
    r = raw(network, strong(1))
    pong = await r.ask(node, Ping(r.contact(age_s=age_s)))
    assert isinstance(pong, Pong)
    assert (r.identity in dht(node).table) is learnt
    assert counter(node, "invalid_records") == (0 if learnt else 1)


@on_virtual_time
async def test_a_client_only_node_is_not_routed_to() -> None:
    network = SimNetwork(seed=8)
    nodes = await cluster(network, 4)
    client = await new_node(network, 1, server=False)
    await client.bootstrap(nodes[0].identity, "10.0.0.1:4433")
    assert len(dht(client).table) == 4
    for node in nodes:
        assert client.identity not in dht(node).table
    r = raw(network, strong(2))
    pong = await r.ask(client, Ping(None))
    assert pong == Pong(None)
    key = await nodes[1].put(b"for the client")
    assert await client.get(key) == b"for the client"


# -- storing over rpc ----------------------------------------------------------------------


@on_virtual_time
async def test_a_stored_value_is_found_through_another_node() -> None:
    network = SimNetwork(seed=9)
    nodes = await cluster(network, 4)
    r = raw(network, strong(1))
    value = b"content-addressed " * 10
    key = value_key(value)
    assert await r.store(nodes[1], key, value) == StoreResult(True)
    assert dht(nodes[1]).store.usage(r.identity) == (len(value), 1)
    assert all(dht(n).store.get(key, 0.0) is None for n in (nodes[0], nodes[2], nodes[3]))
    assert await nodes[3].get(key) == value
    assert await nodes[0].get(key) == value


@on_virtual_time
async def test_store_refusals_name_their_reason() -> None:
    network = SimNetwork(seed=10)
    (node,) = await cluster(network, 1)
    store = dht(node).store
    r = raw(network, strong(1))
    y = strong(2)
    now_ms = wall_time_ms()

    def record(who: NodeIdentity, age_s: float = 0.0) -> bytes:
        return who.contact(["10.2.2.2:4433"], timestamp_ms=now_ms - int(age_s * 1000)).encode()

    forged = msgspec.structs.replace(Contact.decode(record(y)), signature=bytes(64)).encode()
    cases: list[tuple[str, bytes, bytes, type[StoreRefusedError]]] = [
        ("invalid", value_key(b"x"), b"y", InvalidValueError),
        ("invalid", bytes(y.identity), b"not a record", InvalidValueError),
        ("wrong-key", bytes(strong(3).identity), record(y), RecordRefusedError),
        ("stale", bytes(y.identity), record(y, age_s=DAY + 60), RecordRefusedError),
        ("future", bytes(y.identity), record(y, age_s=-60), RecordRefusedError),
        ("signature", bytes(y.identity), forged, RecordRefusedError),
        ("proof", bytes(weak().identity), record(weak()), RecordRefusedError),
    ]
    for reason, key, value, error in cases:
        # The storage level raises a typed error with the reason ...
        with pytest.raises(error) as info:
            store.classify(key, value, wall_time_ms())
        assert info.value.reason == reason
        # ... and the reason comes back over rpc.
        assert await r.store(node, key, value) == StoreResult(False, reason), reason
    assert len(store) == 0
    assert counter(node, "store_refused_invalid") == 2
    for reason in ("wrong-key", "stale", "future", "signature", "proof"):
        assert counter(node, f"store_refused_{reason}") == 1

    # A valid record is accepted; an older one no longer is.
    assert await r.store(node, bytes(y.identity), record(y)) == StoreResult(True)
    assert await r.store(node, bytes(y.identity), record(y, age_s=1)) == StoreResult(False, "older")
    assert await r.store(node, bytes(y.identity), record(y, age_s=-1)) == StoreResult(True)
    assert store.stats()["records"] == 1


@on_virtual_time
async def test_oversized_values_are_refused() -> None:
    network = SimNetwork(seed=11)
    (node,) = await cluster(network, 1)
    small = await new_node(network, 1, max_value_size=1000)
    r = raw(network, strong(2))
    fits = bytes(1000)
    assert await r.store(small, value_key(fits), fits) == StoreResult(True)
    over = bytes(1001)
    with pytest.raises(ValueTooLargeError):
        dht(small).store.classify(value_key(over), over, wall_time_ms())
    assert await r.store(small, value_key(over), over) == StoreResult(False, "too-large")
    assert counter(small, "store_refused_too-large") == 1
    # Over the protocol's 1 MiB the request does not even decode.
    biggest = bytes(MAX_VALUE_SIZE)
    assert await r.store(node, value_key(biggest), biggest) == StoreResult(True)
    beyond = bytes(MAX_VALUE_SIZE + 1)
    with pytest.raises(RemoteError, match="DhtDecodeError"):
        await r.store(node, value_key(beyond), beyond)
    assert counter(node, "malformed_requests") == 1


@on_virtual_time
async def test_per_peer_entry_quota_over_rpc() -> None:
    network = SimNetwork(seed=12)
    node = await new_node(network, 1, stores_per_peer=1000)  # isolate the quota from the rate
    node_dht = dht(node)
    r = raw(network, strong(2))
    for i in range(100):
        value = b"entry %d" % i
        assert await r.store(node, value_key(value), value) == StoreResult(True), i
    value = b"entry 100"
    assert await r.store(node, value_key(value), value) == StoreResult(False, "quota-entries")
    assert node_dht.store.usage(r.identity)[1] == 100
    # Another peer has its own quota.
    other = raw(network, strong(3))
    assert await other.store(node, value_key(value), value) == StoreResult(True)
    assert counter(node, "store_refused_quota-entries") == 1


@on_virtual_time
async def test_per_peer_byte_quota_over_rpc() -> None:
    network = SimNetwork(seed=13)
    (node,) = await cluster(network, 1)
    r = raw(network, strong(1))
    values = [bytes([i]) * (300 * KiB) for i in range(4)]
    for value in values[:3]:
        assert await r.store(node, value_key(value), value) == StoreResult(True)
    assert dht(node).store.usage(r.identity) == (900 * KiB, 3)
    assert await r.store(node, value_key(values[3]), values[3]) == StoreResult(False, "quota-bytes")
    small = b"a small one still fits"
    assert await r.store(node, value_key(small), small) == StoreResult(True)


@on_virtual_time
async def test_store_rate_limit_over_rpc() -> None:
    network = SimNetwork(seed=14)
    (node,) = await cluster(network, 1)
    r = raw(network, strong(1))
    results = []
    for i in range(21):
        value = b"rate %d" % i
        results.append(await r.store(node, value_key(value), value))
    assert results[:20] == [StoreResult(True)] * 20
    assert results[20] == StoreResult(False, "rate")
    # The rate is checked before anything costly: a bad store is refused for the rate too.
    assert await r.store(node, value_key(b"x"), b"y") == StoreResult(False, "rate")
    await asyncio.sleep(3.1)  # 20 stores per 60 s: one token back
    value = b"after a pause"
    assert await r.store(node, value_key(value), value) == StoreResult(True)
    assert await r.store(node, value_key(b"again"), b"again") == StoreResult(False, "rate")
    assert counter(node, "store_refused_rate") == 3
    assert counter(node, "store_refused_invalid") == 0


# -- the Node facade -----------------------------------------------------------------------


@on_virtual_time
async def test_put_and_get_across_nodes() -> None:
    network = SimNetwork(seed=15)
    nodes = await cluster(network, 5)
    value = b"hello, dht"
    key = await nodes[0].put(value)
    assert key == value_key(value)
    holders = [n for n in nodes if dht(n).store.get(key, asyncio.get_running_loop().time())]
    assert len(holders) == 5
    assert counter(nodes[0], "value_replicas") == 4
    assert await nodes[4].get(key) == value
    assert await nodes[2].get(value_key(b"never stored")) is None
    with pytest.raises(ValueTooLargeError):
        await nodes[1].put(bytes(MAX_VALUE_SIZE + 1))
    with pytest.raises(DhtError, match="32 bytes"):
        await nodes[1].get(b"short")


@on_virtual_time
async def test_get_refuses_a_value_that_does_not_match_its_key() -> None:
    network = SimNetwork(seed=16)
    (node,) = await cluster(network, 1)
    liar = raw(network, strong(1))

    def wrong(peer: Identity, request: messages.Request) -> messages.Response:
        if isinstance(request, Ping):
            return Pong(liar.contact())
        return Found(b"wrong")

    liar.serve(wrong)
    await introduce(liar, node)
    value = b"the right bytes"
    key = value_key(value)
    assert await node.get(key) is None
    assert counter(node, "bad_values") == 1
    assert dht(node).store.get(key, asyncio.get_running_loop().time()) is None

    # With an honest holder as well, the right value wins though the liar answers first.
    honest = await new_node(network, 2)
    await honest.bootstrap(node.identity, "10.0.0.1:4433")
    r = raw(network, strong(3))
    assert await r.store(honest, key, value) == StoreResult(True)
    network.set_link(node.identity, liar.identity, latency=0.001)
    network.set_link(node.identity, honest.identity, latency=0.05)
    assert await node.get(key) == value
    assert counter(node, "bad_values") == 2


@on_virtual_time
async def test_a_record_for_another_identity_is_not_a_resolve_answer() -> None:
    network = SimNetwork(seed=17)
    (node,) = await cluster(network, 1)
    liar = raw(network, strong(1))
    target = strong(2)
    impostor = strong(3).contact(["10.6.6.6:4433"], timestamp_ms=wall_time_ms())

    def fake(peer: Identity, request: messages.Request) -> messages.Response:
        if isinstance(request, Ping):
            return Pong(liar.contact())
        return Found(impostor.encode())

    liar.serve(fake)
    await introduce(liar, node)
    assert await node.resolve(target.identity) is None
    assert counter(node, "bad_values") == 1


@on_virtual_time
async def test_publish_then_resolve_returns_the_newest_record() -> None:
    network = SimNetwork(seed=18)
    nodes = await cluster(network, 5)
    a, e = nodes[1], nodes[4]
    await a.publish_address(["10.1.2.3:4433"])
    first = dht(a).own_contact()
    await asyncio.sleep(10)
    await a.publish_address(["10.1.2.4:4433"])
    second = dht(a).own_contact()
    assert second.timestamp_ms >= first.timestamp_ms + 10_000
    found = await e.resolve(a.identity)
    assert found == second
    now = asyncio.get_running_loop().time()
    assert all(dht(n).store.record(a.identity, now) == second for n in nodes)
    # With a offline, the stored record still resolves.
    await a.close()
    found = await nodes[3].resolve(a.identity)
    assert found is not None
    assert found.addresses == ("10.1.2.4:4433",)
    assert found.timestamp_ms == second.timestamp_ms


@on_virtual_time
async def test_values_expire_after_the_ttl() -> None:
    network = SimNetwork(seed=19)
    nodes = await cluster(network, 4)
    key = await nodes[0].put(b"short-lived")

    def holders() -> int:
        return sum(key in dht(n).store for n in nodes)

    assert holders() == 4
    await asyncio.sleep(DAY - HOUR)
    assert holders() == 4
    assert await nodes[3].get(key) == b"short-lived"
    await asyncio.sleep(HOUR + 120)  # past the TTL and the next housekeeping tick
    assert holders() == 0
    assert all(n.stats()["dht.store.entries"] == 0 for n in nodes)
    assert sum(counter(n, "expired") for n in nodes) == 4
    assert await nodes[3].get(key) is None


@on_virtual_time(time_limit=3 * DAY)
async def test_republishing_keeps_a_record_alive_past_the_ttl() -> None:
    network = SimNetwork(seed=20)
    nodes = await cluster(network, 5)
    keeper, leaver = nodes[1], nodes[2]
    await keeper.publish_address(["10.1.1.1:4433"])
    await leaver.publish_address(["10.2.2.2:4433"])
    await leaver.close()  # no more republishing
    rest = [n for n in nodes if n is not leaver]
    await asyncio.sleep(DAY + HOUR)
    now = asyncio.get_running_loop().time()
    kept = [dht(n).store.record(keeper.identity, now) for n in rest]
    assert all(c is not None for c in kept)
    for c in kept:
        assert c is not None
        assert c.addresses == ("10.1.1.1:4433",)
        assert wall_time_ms() - c.timestamp_ms < 2 * HOUR * 1000  # republished recently
    assert all(dht(n).store.record(leaver.identity, now) is None for n in rest)
    found = await nodes[4].resolve(keeper.identity)
    assert found is not None
    assert found.addresses == ("10.1.1.1:4433",)


@on_virtual_time(time_limit=3 * DAY)
async def test_resolve_never_returns_a_stale_record() -> None:
    network = SimNetwork(seed=21)
    nodes = await cluster(network, 5)
    gone = nodes[1]
    await gone.close()
    await asyncio.sleep(DAY + HOUR)
    found = await nodes[4].resolve(gone.identity)
    if found is not None:
        age_s = (wall_time_ms() - found.timestamp_ms) / 1000
        assert age_s <= nodes[4].config.contact_max_age_s, f"a {age_s / HOUR:.1f} h old record"


# -- routing table upkeep through the service ----------------------------------------------


def in_bucket_zero_of(local: Identity, count: int, start: int = 5000) -> list[NodeIdentity]:
    """*count* fixed identities that fall into *local*'s bucket 0 (the far half)."""
    found: list[NodeIdentity] = []
    seed = start
    while len(found) < count:
        candidate = strong(seed)
        if bucket_index(bytes(local), bytes(candidate.identity)) == 0:
            found.append(candidate)
        seed += 1
    return found


@on_virtual_time
async def test_a_full_bucket_pings_its_least_recently_seen_contact() -> None:
    network = SimNetwork(seed=22)
    node = await new_node(network, 1, k=2, k_min=2, k_max=2)
    table = dht(node).table
    r1, r2, r3, r4 = (raw(network, i) for i in in_bucket_zero_of(node.identity, 4))
    for r in (r1, r2, r3, r4):
        r.serve()
    await introduce(r1, node)
    await introduce(r2, node)
    assert table.stats()["pings_requested"] == 0

    # r3 meets a full bucket: r1, the least recently seen, is pinged, answers and stays.
    await introduce(r3, node)
    await asyncio.sleep(1)
    assert [type(m) for m in r1.received] == [Ping]
    assert r2.received == []
    assert r1.identity in table
    assert r2.identity in table
    assert r3.identity not in table
    assert table.stats()["pings_requested"] == 1
    assert table.stats()["replacements"] == 1  # r3 waits in the cache
    assert table.stats()["evicted"] == 0

    # r2 (now the least recently seen) dies; r4 arrives: r2 is pinged, fails, is replaced.
    network.remove_node(r2.rpc)
    await introduce(r4, node)
    await asyncio.sleep(10)
    assert table.stats()["pings_requested"] == 2
    assert table.stats()["evicted"] == 1
    assert r2.identity not in table
    assert r1.identity in table
    assert r4.identity in table  # the newest candidate takes the slot
    assert r3.identity not in table
    assert table.stats()["replacements"] == 1
    assert table.stats()["contacts"] == 2


@on_virtual_time
async def test_insertions_per_ip_are_rate_limited() -> None:
    network = SimNetwork(seed=23)
    settings: dict[str, object] = {
        "exempt_networks": (),
        "max_per_prefix": 100,
        "addresses": ("198.51.100.7:4433",),
    }
    node = await new_node(network, 1, **settings)
    table = dht(node).table
    same_ip = [raw(network, strong(6000 + i), "203.0.113.5:4433") for i in range(25)]
    for r in same_ip:
        await introduce(r, node)
    assert len(table) == 20
    assert all(r.identity in table for r in same_ip[:20])
    assert counter(node, "rate_limited_insertions") == 5
    await asyncio.sleep(3.1)  # 20 per 60 s: one more token
    await introduce(same_ip[20], node)
    assert same_ip[20].identity in table
    await introduce(same_ip[21], node)
    assert same_ip[21].identity not in table
    assert counter(node, "rate_limited_insertions") == 6

    # Distinct addresses are not limited by one another.
    other = await new_node(network, 2, **settings)
    distinct = [raw(network, strong(7000 + i), f"203.0.113.{i + 1}:4433") for i in range(25)]
    for r in distinct:
        await introduce(r, other)
    assert len(dht(other).table) == 25
    assert counter(other, "rate_limited_insertions") == 0


@on_virtual_time
async def test_insertions_per_peer_are_rate_limited() -> None:
    # A peer knocking at a full bucket spends one insertion token per attempt: 50 per 60 s.
    network = SimNetwork(seed=26)
    node = await new_node(network, 1, k=2, k_min=2, k_max=2)
    r1, r2, pushy = (raw(network, i) for i in in_bucket_zero_of(node.identity, 3, start=8000))
    for r in (r1, r2, pushy):
        r.serve()
    await introduce(r1, node)
    await introduce(r2, node)
    # 60 attempts at 0.02 s each: the 50 tokens, plus at most 2 refilled meanwhile
    for _ in range(60):
        await introduce(pushy, node)
    first = counter(node, "rate_limited_insertions")
    assert 8 <= first <= 10
    assert pushy.identity not in dht(node).table
    await asyncio.sleep(60.0)  # a full window refills the bucket (to its cap of 50, no more)
    for _ in range(70):
        await introduce(pushy, node)
    assert 18 <= counter(node, "rate_limited_insertions") - first <= 20


@on_virtual_time
async def test_private_addresses_are_exempt_from_the_ip_rate_limit() -> None:
    network = SimNetwork(seed=24)
    node = await new_node(network, 1, max_per_prefix=100)
    peers = [raw(network, strong(6000 + i), "10.9.9.9:4433") for i in range(25)]
    for r in peers:
        await introduce(r, node)
    assert len(dht(node).table) == 25
    assert counter(node, "rate_limited_insertions") == 0


@on_virtual_time
async def test_node_stats_include_the_dht() -> None:
    network = SimNetwork(seed=25)
    nodes = await cluster(network, 4)
    await nodes[0].put(b"counted")
    stats = nodes[0].stats()
    assert stats["dht.table.contacts"] == len(dht(nodes[0]).table) == 3
    assert stats["dht.store.entries"] == 1
    assert stats["dht.store.values"] == 1
    assert stats["dht.params.k"] == 20
    assert stats["dht.params.alpha"] == 3
    assert stats["dht.params.churn"] == 0.0
    assert stats["dht.tiers.tiers"] >= 1
    assert stats["dht.lookups"] == 1  # the seed's only lookup: the put's
    assert stats["dht.lookup_queries"] == 3  # asking each of its three peers once
    assert stats["dht.value_replicas"] == 3
    assert stats["dht.requests_served"] > 0
    assert all(isinstance(v, int | float) for v in stats.values())


# -- without the plugin --------------------------------------------------------------------


@on_virtual_time
async def test_discovery_methods_need_the_plugin() -> None:
    network = SimNetwork(seed=26)
    node = await (
        Node.builder().identity(strong(1)).difficulty(DIFFICULTY).plugins([]).simulated(network)
    ).build()
    peer = strong(2).identity
    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "find_peers": lambda: node.find_peers(peer),
        "resolve": lambda: node.resolve(peer),
        "publish_address": lambda: node.publish_address(["10.0.0.1:1"]),
        "put": lambda: node.put(b"v"),
        "get": lambda: node.get(bytes(32)),
    }
    for name, call in calls.items():
        with pytest.raises(CapabilityMissing) as info:
            await call()
        assert info.value.capability == "discovery"
        assert info.value.needed_by == name
        assert info.value.extra == "dht"
        assert "korium[dht]" in str(info.value)
    assert not any(key.startswith("dht.") for key in node.stats())
    with pytest.raises(CapabilityMissing):
        plugin.service(node)
    await node.close()


# -- answers a node must not trust --------------------------------------------------------


@on_virtual_time
async def test_contacts_beyond_max_contacts_per_response_are_never_used() -> None:
    network = SimNetwork(seed=27)
    (node,) = await cluster(network, 1)
    peers = [raw(network, strong(8000 + i)) for i in range(40)]
    for p in peers:
        p.serve()
    target = strong(2).identity
    # Farthest first: the ten nearest the target come after the 30 an answer may carry.
    peers.sort(key=lambda p: p.identity.distance(target), reverse=True)
    liar = raw(network, strong(1))
    liar.serve(
        lambda peer, request: (
            Pong(liar.contact())
            if isinstance(request, Ping)
            else Nodes([p.contact() for p in peers])
        )
    )
    await introduce(liar, node)
    result = await node.find_peers(target)
    assert dht(node).config.max_contacts_per_response == 30
    assert all(p.received == [] for p in peers[30:])
    assert not any(p.identity in dht(node).table for p in peers[30:])
    assert sum(1 for p in peers[:30] if p.received) >= 1
    assert all(c.identity not in {p.identity for p in peers[30:]} for c in result)


@on_virtual_time
async def test_an_answer_with_too_many_contacts_is_malformed() -> None:
    network = SimNetwork(seed=28)
    (node,) = await cluster(network, 1)
    liar = raw(network, strong(1))
    many = [raw(network, strong(9000 + i)).contact() for i in range(101)]
    liar.serve(
        lambda peer, request: Pong(liar.contact()) if isinstance(request, Ping) else Nodes(many)
    )
    await introduce(liar, node)
    result = await node.find_peers(strong(2).identity)
    assert result == []
    assert counter(node, "malformed_responses") == 1
    assert node.stats()["dht.params.churn"] == 1.0  # counted as no answer


@on_virtual_time
async def test_bootstrap_through_a_peer_that_does_not_speak_dht_fails() -> None:
    network = SimNetwork(seed=29)
    (node,) = await cluster(network, 1)
    mute = raw(network, strong(1))  # no DHT handler
    with pytest.raises(LookupFailedError, match="did not answer"):
        await node.bootstrap(mute.identity, "10.0.0.1:4433")
    assert len(dht(node).table) == 0


@on_virtual_time
async def test_get_only_returns_content_addressed_values() -> None:
    network = SimNetwork(seed=30)
    nodes = await cluster(network, 4)
    await nodes[1].publish_address(["10.1.1.1:4433"])
    key = bytes(nodes[1].identity)
    found = await nodes[3].get(key)
    assert found is None or value_key(found) == key
