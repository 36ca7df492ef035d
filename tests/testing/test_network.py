"""Simulated rpc: the real endpoint's semantics, plus latency, loss, partitions and churn."""

from __future__ import annotations

import asyncio
import logging
import textwrap
from collections.abc import Awaitable, Callable

import pytest

from korium.errors import (
    ConnectionLostError,
    PeerUnreachableError,
    ProtocolNotSupportedError,
    RemoteError,
    RequestTooLargeError,
    ResponseTooLargeError,
    RpcTimeoutError,
)
from korium.identity import Identity, Keypair
from korium.rpc import MAX_REQUEST_SIZE, MAX_RESPONSE_SIZE, Rpc, frames
from korium.rpc.endpoint import RpcConfig
from korium.rpc.frames import ErrorCode
from korium.testing import SimNetwork, SimRpc, on_virtual_time, run

MakeIds = Callable[[int], list[Identity]]


def now() -> float:
    return asyncio.get_running_loop().time()


def echo(peer: Identity, body: bytes) -> bytes:
    return body


async def timed(awaitable: Awaitable[bytes]) -> tuple[bytes, float]:
    """The result and the virtual time it took."""
    start = now()
    result = await awaitable
    return result, now() - start


async def fails_after(awaitable: Awaitable[object], error: type[Exception]) -> float:
    """Await *awaitable*, which must raise *error*; return the virtual time that took."""
    start = now()
    with pytest.raises(error):
        await awaitable
    return now() - start


def pair(network: SimNetwork, make_ids: MakeIds) -> tuple[SimRpc, SimRpc]:
    a, b = (network.add_node(identity) for identity in make_ids(2))
    a.register("echo", echo)
    b.register("echo", echo)
    return a, b


# -- the Rpc interface ------------------------------------------------------------------------


def test_sim_rpc_implements_the_rpc_protocol(make_ids: MakeIds) -> None:
    node: Rpc = SimNetwork().add_node(make_ids(1)[0])  # mypy checks the structure
    assert isinstance(node, Rpc)


def test_add_node_accepts_keypairs_and_refuses_duplicates(make_ids: MakeIds) -> None:
    network = SimNetwork()
    keypair = Keypair.from_seed(bytes(32))
    node = network.add_node(keypair)
    assert node.identity == keypair.identity
    assert keypair.identity in network
    assert network.node(keypair.identity) is node
    with pytest.raises(ValueError, match="already"):
        network.add_node(keypair.identity)


def test_protocol_names_are_checked(make_ids: MakeIds) -> None:
    node = SimNetwork().add_node(make_ids(1)[0])
    node.register("echo", echo)
    with pytest.raises(ValueError, match="already has a handler"):
        node.register("echo", echo)
    with pytest.raises(ValueError, match="1 to 128 characters"):
        node.register("x" * 129, echo)
    with pytest.raises(ValueError, match="1 to 128 characters"):
        node.register_message("", lambda peer, body: None)


def test_link_settings_are_validated(make_ids: MakeIds) -> None:
    network = SimNetwork()
    a, b = make_ids(2)
    with pytest.raises(ValueError, match="latency"):
        network.set_link(a, b, latency=-1)
    with pytest.raises(ValueError, match="loss"):
        network.set_link(a, b, loss=1.5)
    with pytest.raises(ValueError, match="both sides"):
        network.partition([a], [a, b])


# -- requests ---------------------------------------------------------------------------------


@on_virtual_time
async def test_echo_both_directions_takes_twice_the_link_latency(make_ids: MakeIds) -> None:
    network = SimNetwork(default_latency=0.025)
    a, b = pair(network, make_ids)
    assert await timed(a.request(b.identity, "echo", b"ping")) == (b"ping", 0.05)
    assert await timed(b.request(a.identity, "echo", b"pong")) == (b"pong", 0.05)
    network.set_link(a, b, latency=0.2)
    assert network.link(b, a).latency == 0.2
    assert await timed(a.request(b.identity, "echo", b"x")) == (b"x", 0.4)


@on_virtual_time
async def test_asymmetric_links_add_up(make_ids: MakeIds) -> None:
    network = SimNetwork()
    a, b = pair(network, make_ids)
    network.set_link(a, b, latency=0.03, symmetric=False)
    network.set_link(b, a, latency=0.1, symmetric=False)
    reply, elapsed = await timed(a.request(b.identity, "echo", b"x"))
    assert reply == b"x"
    assert elapsed == pytest.approx(0.13)


@on_virtual_time
async def test_sync_async_and_awaitable_returning_handlers(make_ids: MakeIds) -> None:
    network = SimNetwork(default_latency=0.01)
    a, b = make_ids(2)
    client, server = network.add_node(a), network.add_node(b)

    async def slow_upper(peer: Identity, body: bytes) -> bytes:
        await asyncio.sleep(1.0)
        return body.upper()

    def deferred(peer: Identity, body: bytes) -> Awaitable[bytes]:
        return slow_upper(peer, body)

    def sync(peer: Identity, body: bytes) -> bytes:
        return bytearray(bytes(peer)[:2] + body)  # type: ignore[return-value]  # as real allows

    server.register("sync", sync)
    server.register("async", slow_upper)
    server.register("deferred", deferred)
    reply, elapsed = await timed(client.request(b, "sync", b"x"))
    assert (reply, type(reply), elapsed) == (bytes(a)[:2] + b"x", bytes, 0.02)
    reply, elapsed = await timed(client.request(b, "async", b"abc"))
    assert reply == b"ABC"
    assert elapsed == pytest.approx(1.02)
    reply, elapsed = await timed(client.request(b, "deferred", b"def"))
    assert reply == b"DEF"
    assert elapsed == pytest.approx(1.02)
    assert server.stats["requests_served"] == 3


@on_virtual_time
async def test_async_handlers_run_concurrently_as_tasks(make_ids: MakeIds) -> None:
    network = SimNetwork(default_latency=0.0)
    client, server = (network.add_node(i) for i in make_ids(2))

    async def slow(peer: Identity, body: bytes) -> bytes:
        await asyncio.sleep(9)
        return body

    server.register("slow", slow)
    start = now()
    replies = await asyncio.gather(
        *(client.request(server.identity, "slow", b"%d" % i) for i in range(50))
    )
    assert replies == [b"%d" % i for i in range(50)]
    assert now() - start == 9.0


@on_virtual_time
async def test_handler_errors_become_remote_errors(make_ids: MakeIds) -> None:
    network = SimNetwork()
    client, server = (network.add_node(i) for i in make_ids(2))

    def broken(peer: Identity, body: bytes) -> bytes:
        raise ValueError("boom")

    async def broken_async(peer: Identity, body: bytes) -> bytes:
        await asyncio.sleep(0.5)
        raise KeyError("missing")

    server.register("broken", broken)
    server.register("broken-async", broken_async)
    server.register("not-bytes", lambda peer, body: "text")  # type: ignore[arg-type, return-value]
    with pytest.raises(RemoteError) as info:
        await client.request(server.identity, "broken", b"")
    assert (str(info.value), info.value.code) == ("ValueError: boom", ErrorCode.HANDLER_ERROR)
    with pytest.raises(RemoteError, match=r"^KeyError: 'missing'$"):
        await client.request(server.identity, "broken-async", b"")
    with pytest.raises(RemoteError, match=r"^handler returned str, not bytes$"):
        await client.request(server.identity, "not-bytes", b"")
    assert server.stats["handler_errors"] == 3
    assert client.stats["requests_failed"] == 3


@on_virtual_time
async def test_unknown_protocol(make_ids: MakeIds) -> None:
    network = SimNetwork()
    a, b = pair(network, make_ids)
    with pytest.raises(ProtocolNotSupportedError, match="does not serve protocol 'korium/nope/1'"):
        await a.request(b.identity, "korium/nope/1", b"")
    assert b.stats["requests_unknown_protocol"] == 1


@on_virtual_time
async def test_malformed_request_is_answered_with_an_error(make_ids: MakeIds) -> None:
    network = SimNetwork()
    a, b = pair(network, make_ids)
    with pytest.raises(RemoteError) as info:  # the protocol name is checked when decoding
        await a.request(b.identity, "p" * 129, b"")
    assert info.value.code == ErrorCode.MALFORMED
    assert b.stats["requests_malformed"] == 1


@on_virtual_time
async def test_request_size_limit_is_checked_before_sending(make_ids: MakeIds) -> None:
    network = SimNetwork()
    a, b = pair(network, make_ids)
    b.register("len", lambda peer, body: str(len(body)).encode())
    overhead = len(frames.encode_request("len", bytes(100_000))) - frames.LENGTH.size - 100_000
    largest = MAX_REQUEST_SIZE - overhead  # the limit applies to the encoded frame
    assert await a.request(b.identity, "len", bytes(largest)) == str(largest).encode()
    delivered = network.stats.delivered
    elapsed = await fails_after(
        a.request(b.identity, "len", bytes(largest + 1)), RequestTooLargeError
    )
    assert elapsed == 0.0
    assert network.stats.delivered == delivered  # nothing was sent
    assert a.stats["requests_too_large"] == 1
    with pytest.raises(RequestTooLargeError):
        await a.send_message(b.identity, "echo", bytes(MAX_REQUEST_SIZE))


@on_virtual_time
async def test_receiver_with_a_smaller_limit_refuses_the_request(make_ids: MakeIds) -> None:
    network = SimNetwork()
    a = network.add_node(make_ids(1)[0])
    b = network.add_node(make_ids(1)[0], config=RpcConfig(max_request_size=1000))
    b.register("echo", echo)
    with pytest.raises(RequestTooLargeError, match="the peer refused the request"):
        await a.request(b.identity, "echo", bytes(2000))


@on_virtual_time
async def test_response_size_limits(make_ids: MakeIds) -> None:
    network = SimNetwork()
    a, b = pair(network, make_ids)
    b.register("big", lambda peer, body: bytes(int(body)))
    limit = MAX_RESPONSE_SIZE - 64
    assert len(await a.request(b.identity, "big", str(limit).encode())) == limit
    with pytest.raises(ResponseTooLargeError, match="the peer's response was too large"):
        await a.request(b.identity, "big", str(limit + 1).encode())
    assert b.stats["responses_too_large"] == 1
    # a client configured with a smaller limit discards a response the server could send
    small = network.add_node(make_ids(1)[0], config=RpcConfig(max_response_size=1000))
    with pytest.raises(ResponseTooLargeError, match="response discarded"):
        await small.request(b.identity, "big", b"2000")


@on_virtual_time
async def test_request_timeouts(make_ids: MakeIds) -> None:
    network = SimNetwork()
    a, b = pair(network, make_ids)

    async def never(peer: Identity, body: bytes) -> bytes:
        await asyncio.Event().wait()
        return b""

    b.register("never", never)
    assert await fails_after(a.request(b.identity, "never", b""), RpcTimeoutError) == 10.0
    assert (
        await fails_after(a.request(b.identity, "never", b"", timeout=0.5), RpcTimeoutError) == 0.5
    )
    assert a.stats["requests_timed_out"] == 2


@on_virtual_time
async def test_handler_timeout(make_ids: MakeIds) -> None:
    network = SimNetwork(config=RpcConfig(handler_timeout=3.0), default_latency=0.0)
    a, b = pair(network, make_ids)

    async def slow(peer: Identity, body: bytes) -> bytes:
        await asyncio.sleep(60)
        return b""

    b.register("slow", slow)
    start = now()
    with pytest.raises(RemoteError, match=r"handler did not answer within 3\.0 s") as info:
        await a.request(b.identity, "slow", b"")
    assert info.value.code == ErrorCode.HANDLER_TIMEOUT
    assert now() - start == 3.0


@on_virtual_time
async def test_request_to_self_is_refused(make_ids: MakeIds) -> None:
    a, _ = pair(SimNetwork(), make_ids)
    with pytest.raises(PeerUnreachableError, match="itself"):
        await a.request(a.identity, "echo", b"")
    with pytest.raises(PeerUnreachableError, match="itself"):
        await a.send_message(a.identity, "echo", b"")


@on_virtual_time
async def test_bodies_are_copied(make_ids: MakeIds) -> None:
    network = SimNetwork()
    a, b = make_ids(2)
    client, server = network.add_node(a), network.add_node(b)
    seen: list[bytes] = []

    def keep(peer: Identity, body: bytes) -> bytes:
        seen.append(body)
        return body

    server.register("keep", keep)
    body = bytearray(b"original")
    pending = asyncio.ensure_future(client.request(b, "keep", body))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    body[:] = b"mutated!"
    assert await pending == b"original"
    assert seen == [b"original"]
    assert type(seen[0]) is bytes


# -- one-way messages -------------------------------------------------------------------------


@on_virtual_time
async def test_one_way_messages(make_ids: MakeIds, caplog: pytest.LogCaptureFixture) -> None:
    network = SimNetwork(default_latency=0.04)
    a, b = make_ids(2)
    sender, receiver = network.add_node(a), network.add_node(b)
    got: list[tuple[Identity, bytes, float]] = []

    async def slow(peer: Identity, body: bytes) -> None:
        await asyncio.sleep(1)
        got.append((peer, body, now()))

    def broken(peer: Identity, body: bytes) -> None:
        raise RuntimeError("handler bug")

    receiver.register_message("fast", lambda peer, body: got.append((peer, body, now())))
    receiver.register_message("slow", slow)
    receiver.register_message("broken", broken)
    await sender.send_message(b, "fast", b"1")
    assert now() == 0.0  # one-way: returns without waiting for delivery
    await sender.send_message(b, "slow", b"2")
    await sender.send_message(b, "unknown", b"3")
    with caplog.at_level(logging.CRITICAL):
        await sender.send_message(b, "broken", b"4")
    await asyncio.sleep(2)
    assert got == [(a, b"1", 0.04), (a, b"2", 1.04)]
    assert receiver.stats["messages_received"] == 3
    assert receiver.stats["messages_unknown_protocol"] == 1
    assert receiver.stats["handler_errors"] == 1
    assert sender.stats["messages_sent"] == 4


@on_virtual_time
async def test_one_way_message_to_an_unreachable_peer(make_ids: MakeIds) -> None:
    network = SimNetwork()
    a = network.add_node(make_ids(1)[0])
    ghost = make_ids(1)[0]
    assert await fails_after(a.send_message(ghost, "x", b""), PeerUnreachableError) == 5.0
    assert network.stats.unreachable == 1


# -- loss -------------------------------------------------------------------------------------


async def lossy_round(seed: int) -> tuple[int, int, int]:
    network = SimNetwork(seed=seed, loss=0.2)
    nodes = [network.add_node(Keypair.from_seed(bytes([i]) * 32)) for i in range(10)]
    for node in nodes:
        node.register("echo", echo)
    results = await asyncio.gather(
        *(a.request(b.identity, "echo", b"x") for a in nodes for b in nodes if a is not b),
        return_exceptions=True,
    )
    ok = sum(r == b"x" for r in results)
    timeouts = sum(isinstance(r, RpcTimeoutError) for r in results)
    served = sum(node.stats["requests_served"] for node in nodes)
    assert ok + timeouts == 90
    assert timeouts == network.stats.lost  # one lost frame, request or response: one timeout
    assert network.stats.delivered == served + ok  # requests that arrived, responses that did
    return ok, timeouts, served


def test_loss_is_reproducible_with_a_seed() -> None:
    first = run(lossy_round(7))
    assert run(lossy_round(7)) == first
    assert 0 < first[1] < 90  # about 1 - 0.8**2 = 36 % of requests lose a frame
    assert {run(lossy_round(seed)) for seed in range(5)} != {first}


@on_virtual_time
async def test_a_fully_lossy_link_times_out(make_ids: MakeIds) -> None:
    network = SimNetwork()
    a, b = pair(network, make_ids)
    network.set_link(b, a, loss=1.0, symmetric=False)  # responses never come back
    assert await fails_after(a.request(b.identity, "echo", b""), RpcTimeoutError) == 10.0
    assert b.stats["requests_served"] == 1
    assert network.stats.lost == 1


# -- partitions and churn ---------------------------------------------------------------------


@on_virtual_time
async def test_partition_then_heal(make_ids: MakeIds) -> None:
    network = SimNetwork()
    a, b, c, d = (network.add_node(i) for i in make_ids(4))
    for node in (a, b, c, d):
        node.register("echo", echo)
    await a.request(b.identity, "echo", b"")  # a and b now hold a connection
    network.partition([a, c], [b, d])
    assert not network.reachable(a, b)
    assert network.reachable(a, c)
    assert await a.request(c.identity, "echo", b"same side") == b"same side"
    # over the open connection, frames vanish: the request times out
    assert await fails_after(a.request(b.identity, "echo", b""), RpcTimeoutError) == 10.0
    # no connection to d: the dial fails
    assert await fails_after(a.request(d.identity, "echo", b""), PeerUnreachableError) == 5.0
    # a shorter request timeout wins over the dial timeout
    elapsed = await fails_after(a.request(d.identity, "echo", b"", timeout=1), RpcTimeoutError)
    assert elapsed == 1.0
    assert b.identity in a.connected_peers()
    await asyncio.sleep(network.idle_timeout)  # QUIC's idle timeout kills the connection
    assert b.identity not in a.connected_peers()
    assert await fails_after(a.request(b.identity, "echo", b""), PeerUnreachableError) == 5.0
    assert network.stats.partitioned == 4  # two dropped frames, two failed dials
    network.heal()
    assert await a.request(b.identity, "echo", b"healed") == b"healed"
    assert await d.request(c.identity, "echo", b"healed") == b"healed"


@on_virtual_time
async def test_partition_against_everyone_else(make_ids: MakeIds) -> None:
    network = SimNetwork()
    a, b, c = (network.add_node(i) for i in make_ids(3))
    c.register("echo", echo)
    network.partition([a])
    late = network.add_node(make_ids(1)[0])
    assert not network.reachable(a, b)
    assert not network.reachable(late, a)
    assert network.reachable(b, late)
    assert await b.request(c.identity, "echo", b"ok") == b"ok"
    with pytest.raises(PeerUnreachableError):
        await a.request(c.identity, "echo", b"")


@on_virtual_time
async def test_partition_cuts_frames_in_flight(make_ids: MakeIds) -> None:
    network = SimNetwork(default_latency=1.0)
    a, b = pair(network, make_ids)
    pending = asyncio.ensure_future(a.request(b.identity, "echo", b""))
    await asyncio.sleep(0.5)
    network.partition([a], [b])
    with pytest.raises(RpcTimeoutError):
        await pending
    assert b.stats["requests_served"] == 0
    assert network.stats.partitioned == 1


@on_virtual_time
async def test_removed_node_looks_dead(make_ids: MakeIds) -> None:
    network = SimNetwork()
    a, b, c = (network.add_node(i) for i in make_ids(3))
    for node in (a, b, c):
        node.register("echo", echo)
    await a.request(b.identity, "echo", b"")
    network.remove_node(b)
    assert b.identity not in network
    assert not b.online
    # a still holds a connection: its request times out; c has none: its dial fails
    assert await fails_after(a.request(b.identity, "echo", b""), RpcTimeoutError) == 10.0
    assert await fails_after(c.request(b.identity, "echo", b""), PeerUnreachableError) == 5.0
    # a removed node can do nothing any more
    with pytest.raises(ConnectionLostError, match="removed"):
        await b.request(a.identity, "echo", b"")
    with pytest.raises(KeyError):
        network.remove_node(b)


@on_virtual_time
async def test_removal_fails_calls_and_stops_handlers(make_ids: MakeIds) -> None:
    network = SimNetwork()
    a, b, c = (network.add_node(i) for i in make_ids(3))
    finished: list[str] = []

    async def slow(peer: Identity, body: bytes) -> bytes:
        await asyncio.sleep(5)
        finished.append("slow")
        return b""

    b.register("slow", slow)
    c.register("slow", slow)
    to_b = asyncio.ensure_future(a.request(b.identity, "slow", b""))
    from_b = asyncio.ensure_future(b.request(c.identity, "slow", b""))
    await asyncio.sleep(1)
    network.remove_node(b)
    with pytest.raises(ConnectionLostError):
        await from_b
    with pytest.raises(RpcTimeoutError):
        await to_b
    assert finished == ["slow"]  # c's handler ran to the end; b's was stopped


@on_virtual_time
async def test_a_restarted_node_is_reachable_at_once(make_ids: MakeIds) -> None:
    network = SimNetwork()
    a, b = pair(network, make_ids)
    await a.request(b.identity, "echo", b"")
    network.remove_node(b)
    restarted = network.add_node(b.identity)
    restarted.register("echo", lambda peer, body: b"new:" + body)
    assert await a.request(b.identity, "echo", b"x") == b"new:x"
    assert network.nodes == [a, restarted]


@on_virtual_time
async def test_connections_idle_out_and_the_pool_is_bounded(make_ids: MakeIds) -> None:
    network = SimNetwork(config=RpcConfig(max_connections=3))
    hub, *spokes = (network.add_node(i) for i in make_ids(5))
    for spoke in spokes:
        spoke.register("echo", echo)
    for spoke in spokes[:2]:
        await hub.request(spoke.identity, "echo", b"")
    assert hub.connected_peers() == [s.identity for s in spokes[:2]]
    assert spokes[0].connected_peers() == [hub.identity]
    for spoke in spokes[2:]:
        await hub.request(spoke.identity, "echo", b"")
    assert hub.connected_peers() == [s.identity for s in spokes[1:]]  # least recent evicted
    assert hub.stats["connections_evicted"] == 1
    await asyncio.sleep(hub.config.idle_close)
    assert hub.connected_peers() == []


class Events:
    """What one node's connection callbacks reported, in order."""

    def __init__(self, node: SimRpc) -> None:
        self.log: list[tuple[str, Identity]] = []
        node.on_peer_connected = lambda peer: self.log.append(("up", peer))
        node.on_peer_disconnected = lambda peer: self.log.append(("down", peer))

    def take(self) -> list[tuple[str, Identity]]:
        taken, self.log = self.log, []
        return taken


@on_virtual_time
async def test_connection_callbacks_on_both_ends(make_ids: MakeIds) -> None:
    network = SimNetwork(config=RpcConfig(idle_close=60.0))
    a, b = pair(network, make_ids)
    on_a, on_b = Events(a), Events(b)
    await a.request(b.identity, "echo", b"")
    await a.send_message(b.identity, "echo", b"")
    await b.request(a.identity, "echo", b"")  # the same pooled connection, both ways
    await asyncio.sleep(1)
    assert on_a.take() == [("up", b.identity)]
    assert on_b.take() == [("up", a.identity)]
    await asyncio.sleep(60)  # idle: each end notices when it next looks at its pool
    assert a.connected_peers() == []
    assert on_a.take() == [("down", b.identity)]
    assert on_b.take() == []
    await a.request(b.identity, "echo", b"")  # b's entry idled out too: both ends reconnect
    assert on_a.take() == [("up", b.identity)]
    assert on_b.take() == [("down", a.identity), ("up", a.identity)]


@on_virtual_time
async def test_connection_callbacks_on_eviction(make_ids: MakeIds) -> None:
    network = SimNetwork(config=RpcConfig(max_connections=2))
    hub, *spokes = (network.add_node(i) for i in make_ids(4))
    for spoke in spokes:
        spoke.register("echo", echo)
    events = Events(hub)
    for spoke in spokes:
        await hub.request(spoke.identity, "echo", b"")
    first, second, third = (s.identity for s in spokes)
    assert events.take() == [("up", first), ("up", second), ("up", third), ("down", first)]


@on_virtual_time
async def test_connection_callbacks_when_a_peer_dies_or_restarts(make_ids: MakeIds) -> None:
    network = SimNetwork(idle_timeout=30.0)
    a, b, c = (network.add_node(i) for i in make_ids(3))
    for node in (b, c):
        node.register("echo", echo)
    on_a, on_b = Events(a), Events(b)
    await a.request(b.identity, "echo", b"")
    await a.request(c.identity, "echo", b"")
    on_a.take()
    assert on_b.take() == [("up", a.identity)]
    network.remove_node(b)  # no callback into the removed node
    assert on_b.take() == []
    assert a.connected_peers() == [b.identity, c.identity]  # dies after the idle timeout
    await asyncio.sleep(30)
    assert a.connected_peers() == [c.identity]
    assert on_a.take() == [("down", b.identity)]
    assert on_b.take() == []
    # a restarted peer: the old connection is gone at once and a new one is made
    network.remove_node(c)
    restarted = network.add_node(c.identity)
    restarted.register("echo", echo)
    on_restarted = Events(restarted)
    await a.request(c.identity, "echo", b"")
    assert on_a.take() == [("down", c.identity), ("up", c.identity)]
    assert on_restarted.take() == [("up", a.identity)]


@on_virtual_time
async def test_is_outbound_names_the_dialling_end(make_ids: MakeIds) -> None:
    network = SimNetwork(idle_timeout=30.0)
    a, b = (network.add_node(i) for i in make_ids(2))
    b.register("echo", echo)
    a.register("echo", echo)
    assert not a.is_outbound(b.identity)  # not connected
    await a.request(b.identity, "echo", b"")
    await b.request(a.identity, "echo", b"")  # reuses the connection a dialled
    assert a.is_outbound(b.identity)
    assert not b.is_outbound(a.identity)
    network.remove_node(b)
    await asyncio.sleep(30)
    assert not a.is_outbound(b.identity)


@on_virtual_time
async def test_peer_address_while_connected(make_ids: MakeIds) -> None:
    network = SimNetwork(idle_timeout=30.0)
    ids = make_ids(3)
    a = network.add_node(ids[0], address=("192.0.2.1", 4433))
    b = network.add_node(ids[1], address=("2001:db8::2", 4433))
    c = network.add_node(ids[2])  # no address given
    for node in (a, b, c):
        node.register("echo", echo)
    assert a.address == ("192.0.2.1", 4433)
    assert a.peer_address(b.identity) is None  # not connected
    await a.request(b.identity, "echo", b"")
    await a.request(c.identity, "echo", b"")
    assert a.peer_address(b.identity) == ("2001:db8::2", 4433)
    assert b.peer_address(a.identity) == ("192.0.2.1", 4433)
    assert a.peer_address(c.identity) is None
    assert a.peer_address(a.identity) is None
    network.remove_node(b)
    assert a.peer_address(b.identity) == ("2001:db8::2", 4433)  # not yet known to be dead
    await asyncio.sleep(30)
    assert a.peer_address(b.identity) is None
    assert b.identity not in a.connected_peers()


@on_virtual_time
async def test_stats_count_frames_and_bytes(make_ids: MakeIds) -> None:
    network = SimNetwork()
    a, b = pair(network, make_ids)
    await a.request(b.identity, "echo", b"12345")
    await a.send_message(b.identity, "echo", b"1")
    await asyncio.sleep(1)
    request = len(frames.encode_request("echo", b"12345"))
    response = len(frames.encode_response(frames.Ok(b"12345")))
    message = len(frames.encode_request("echo", b"1"))
    assert network.stats.delivered == 3
    assert network.stats.bytes == request + response + message
    assert (network.stats.lost, network.stats.partitioned, network.stats.unreachable) == (0, 0, 0)


@on_virtual_time
async def test_unmodified_driver_runs_an_hour_of_pings(make_ids: MakeIds) -> None:
    """A driver written against Rpc and asyncio only, as plugins are, on a lossy network."""

    class Pinger:
        def __init__(self, rpc: Rpc, peer: Identity) -> None:
            self.rpc, self.peer = rpc, peer
            self.rtts: list[float] = []
            self.failures = 0

        async def run(self, interval: float, duration: float) -> None:
            loop = asyncio.get_running_loop()
            end = loop.time() + duration
            while loop.time() < end:
                start = loop.time()
                try:
                    await self.rpc.request(self.peer, "ping", b"", timeout=2.0)
                    self.rtts.append(loop.time() - start)
                except RpcTimeoutError:
                    self.failures += 1
                await asyncio.sleep(interval)

    network = SimNetwork(seed=3, default_latency=0.075, loss=0.05)
    a, b = (network.add_node(i) for i in make_ids(2))
    b.register("ping", lambda peer, body: b"pong")
    pinger = Pinger(a, b.identity)
    await pinger.run(interval=10.0, duration=3600.0)
    assert pinger.failures == network.stats.lost > 0
    assert all(rtt == pytest.approx(0.15) for rtt in pinger.rtts)
    # every round took a round trip (or the 2 s timeout) plus the interval, to the nanosecond
    spent = len(pinger.rtts) * 10.15 + pinger.failures * 12.0
    assert now() == pytest.approx(spent, abs=1e-6)
    assert 3600.0 <= now() < 3612.0


def test_package_docstring_example_runs() -> None:
    import korium.testing

    doc = korium.testing.__doc__ or ""
    example = textwrap.dedent(doc.split("::\n", 1)[1])
    namespace: dict[str, object] = {}
    exec(compile(example, "korium/testing/__init__.py docstring", "exec"), namespace)
    test_echo = namespace["test_echo"]
    assert callable(test_echo)
    test_echo()
