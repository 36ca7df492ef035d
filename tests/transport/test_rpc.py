"""Request/response between real nodes over loopback UDP and QUIC."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from korium import Node, hookimpl
from korium.config import NodeConfig
from korium.errors import (
    ConfigError,
    PeerUnreachableError,
    ProtocolNotSupportedError,
    RemoteError,
    RequestTooLargeError,
    ResponseTooLargeError,
    RpcTimeoutError,
)
from korium.identity import Identity, Keypair
from korium.rpc import frames
from korium.rpc.endpoint import STREAM_CANCELLED, RpcConfig
from korium.rpc.frames import MAX_REQUEST_SIZE
from korium.transport.addresses import smart_addr
from korium.transport.paths import Path
from korium.transport.smartsock import TransportConfig

MakeNode = Callable[..., Awaitable[Node]]


@pytest.fixture
async def make_node() -> AsyncIterator[MakeNode]:
    nodes: list[Node] = []

    async def make(config: NodeConfig | None = None) -> Node:
        builder = Node.builder("127.0.0.1:0").plugins([])
        if config is not None:
            builder.config(config)
        node = await builder.difficulty(4).build()
        nodes.append(node)
        return node

    yield make
    for node in nodes:
        await node.close()


async def test_echo_both_directions(make_node: MakeNode) -> None:
    a, b = await make_node(), await make_node()
    a.set_request_handler(lambda peer, data: b"a:" + bytes(peer)[:2] + data)
    b.set_request_handler(lambda peer, data: b"b:" + bytes(peer)[:2] + data)
    assert await a.send(b.identity, b"hi", addresses=[b.local_addr]) == (
        b"b:" + bytes(a.identity)[:2] + b"hi"
    )
    # b never learnt a's address except from the connection a opened
    assert await b.send(a.identity, b"yo") == b"a:" + bytes(b.identity)[:2] + b"yo"
    assert a.stats()["rpc.pooled_connections"] == 1
    assert b.stats()["rpc.pooled_connections"] == 1


async def test_ten_nodes_each_send_to_every_other(make_node: MakeNode) -> None:
    nodes = [await make_node() for _ in range(10)]
    for node in nodes:
        name = str(node.identity).encode()

        async def handler(peer: Identity, data: bytes, name: bytes = name) -> bytes:
            return name + b"<-" + data

        node.set_request_handler(handler)

    async def send(src: Node, dst: Node) -> None:
        reply = await src.send(dst.identity, str(src.identity).encode(), addresses=[dst.local_addr])
        assert reply == str(dst.identity).encode() + b"<-" + str(src.identity).encode()

    pairs = [(s, d) for s, d in itertools.permutations(nodes, 2)]
    await asyncio.gather(*(send(s, d) for s, d in pairs))
    assert len(pairs) == 90
    for node in nodes:
        assert node.stats()["rpc.requests_served"] == 9


async def test_async_handler_and_incoming_requests(make_node: MakeNode) -> None:
    a, b, c = await make_node(), await make_node(), await make_node()

    async def slow_upper(peer: Identity, data: bytes) -> bytes:
        await asyncio.sleep(0.01)
        return data.upper()

    b.set_request_handler(slow_upper)
    assert await a.send(b.identity, b"abc", addresses=[b.local_addr]) == b"ABC"

    async def serve() -> None:
        async for request in c.incoming_requests():
            request.respond(f"got {len(request.data)} bytes from {request.peer.short}".encode())

    server = asyncio.create_task(serve())
    try:
        reply = await a.send(c.identity, b"123456789", addresses=[c.local_addr])
        assert reply == f"got 9 bytes from {a.identity.short}".encode()
    finally:
        server.cancel()
    with pytest.raises(ConfigError):
        c.set_request_handler(slow_upper)


async def test_handler_error_is_a_remote_error_not_a_hang(make_node: MakeNode) -> None:
    a, b = await make_node(), await make_node()

    def broken(peer: Identity, data: bytes) -> bytes:
        raise ValueError("cannot parse " + data.decode())

    b.set_request_handler(broken)
    with pytest.raises(RemoteError, match="ValueError: cannot parse xyz") as info:
        await a.send(b.identity, b"xyz", addresses=[b.local_addr], timeout=5)
    assert info.value.code == 2

    async def broken_async(peer: Identity, data: bytes) -> bytes:
        raise KeyError("missing")

    b.set_request_handler(broken_async)
    with pytest.raises(RemoteError, match="KeyError"):
        await a.send(b.identity, b"xyz", timeout=5)
    assert b.stats()["rpc.handler_errors"] == 2


async def test_handler_returning_wrong_type_is_a_remote_error(make_node: MakeNode) -> None:
    a, b = await make_node(), await make_node()
    b.set_request_handler(lambda peer, data: "text, not bytes")  # type: ignore[arg-type,return-value]
    with pytest.raises(RemoteError, match="handler returned str, not bytes"):
        await a.send(b.identity, b"x", addresses=[b.local_addr])


async def test_unknown_protocol_is_typed(make_node: MakeNode) -> None:
    a, b = await make_node(), await make_node()
    with pytest.raises(ProtocolNotSupportedError, match="korium/nothing/1"):
        await a.rpc.request(b.identity, "korium/nothing/1", b"", addresses=[b.local_addr])
    # no plain handler set: plain requests are refused at once, not left to time out
    with pytest.raises(ProtocolNotSupportedError):
        await a.send(b.identity, b"x", timeout=5)


async def test_request_over_the_limit_is_refused_and_connection_survives(
    make_node: MakeNode,
) -> None:
    a, b = await make_node(), await make_node()
    b.set_request_handler(lambda peer, data: str(len(data)).encode())
    value = b"v" * (1024 * 1024)  # a 1 MB DHT value fits
    assert await a.send(b.identity, value, addresses=[b.local_addr]) == b"1048576"
    with pytest.raises(RequestTooLargeError, match="was not sent"):
        await a.send(b.identity, b"v" * (MAX_REQUEST_SIZE + 1))
    assert await a.send(b.identity, b"after") == b"5"
    assert a.stats()["transport.connections"] == 1


async def test_peer_refuses_oversized_request_with_typed_error(make_node: MakeNode) -> None:
    # a client configured with a larger limit than the server: the server refuses it
    # from the length prefix, before buffering, and the connection keeps working
    big = NodeConfig(rpc=RpcConfig(max_request_size=4 * 1024 * 1024))
    a, b = await make_node(big), await make_node()
    b.set_request_handler(lambda peer, data: b"ok")
    with pytest.raises(RequestTooLargeError, match="the peer refused"):
        await a.send(b.identity, b"v" * (2 * 1024 * 1024), addresses=[b.local_addr], timeout=10)
    assert await a.send(b.identity, b"small") == b"ok"
    assert b.stats()["rpc.requests_too_large"] == 1


async def test_response_over_the_limit_is_typed(make_node: MakeNode) -> None:
    a, b = await make_node(), await make_node()
    b.set_request_handler(lambda peer, data: b"r" * (MAX_REQUEST_SIZE + 10))
    with pytest.raises(ResponseTooLargeError):
        await a.send(b.identity, b"x", addresses=[b.local_addr])
    # a client with a smaller response limit discards a large answer unread
    small = NodeConfig(rpc=RpcConfig(max_response_size=1000))
    c = await make_node(small)
    b.set_request_handler(lambda peer, data: b"r" * 5000)
    with pytest.raises(ResponseTooLargeError, match="discarded"):
        await c.send(b.identity, b"x", addresses=[b.local_addr])


async def test_request_timeout_is_typed(make_node: MakeNode) -> None:
    a, b = await make_node(), await make_node()

    async def stall(peer: Identity, data: bytes) -> bytes:
        await asyncio.sleep(30)
        return b""

    b.set_request_handler(stall)
    with pytest.raises(RpcTimeoutError, match=r"within 0\.3 s"):
        await a.send(b.identity, b"x", addresses=[b.local_addr], timeout=0.3)
    assert isinstance(RpcTimeoutError("x"), TimeoutError)


async def test_dead_peer_does_not_stall_requests_to_others(make_node: MakeNode) -> None:
    fast = NodeConfig(rpc=RpcConfig(dial_timeout=2.0))
    a, b = await make_node(fast), await make_node()
    b.set_request_handler(lambda peer, data: data)
    silent = Keypair.generate().identity
    # a port nobody answers on
    dead = asyncio.create_task(a.send(silent, b"x", addresses=[("127.0.0.1", 9)]))
    await asyncio.sleep(0.05)
    loop = asyncio.get_running_loop()
    start = loop.time()
    for _ in range(20):
        assert await a.send(b.identity, b"ping", addresses=[b.local_addr]) == b"ping"
    assert loop.time() - start < 1.5  # all done while the dead dial is still pending
    assert not dead.done()
    with pytest.raises(PeerUnreachableError, match="no answer"):
        await dead


async def test_no_address_known_is_a_clear_error(make_node: MakeNode) -> None:
    a = await make_node()
    with pytest.raises(PeerUnreachableError, match="no address known"):
        await a.send(Keypair.generate().identity, b"x")
    with pytest.raises(PeerUnreachableError, match="itself"):
        await a.send(a.identity, b"x", addresses=[a.local_addr])


async def test_one_way_messages(make_node: MakeNode) -> None:
    a, b = await make_node(), await make_node()
    got: asyncio.Queue[tuple[Identity, bytes]] = asyncio.Queue()
    b.rpc.register_message("test/note/1", lambda peer, data: got.put_nowait((peer, data)))
    for i in range(5):
        await a.rpc.send_message(b.identity, "test/note/1", b"n%d" % i, addresses=[b.local_addr])
    received = [await asyncio.wait_for(got.get(), 5) for _ in range(5)]
    assert sorted(data for _, data in received) == [b"n0", b"n1", b"n2", b"n3", b"n4"]
    assert all(peer == a.identity for peer, _ in received)


async def test_simultaneous_dials_end_with_one_connection(make_node: MakeNode) -> None:
    a, b = await make_node(), await make_node()
    a.set_request_handler(lambda peer, data: b"from a")
    b.set_request_handler(lambda peer, data: b"from b")
    for _ in range(3):
        ra, rb = await asyncio.gather(
            a.send(b.identity, b"x", addresses=[b.local_addr]),
            b.send(a.identity, b"y", addresses=[a.local_addr]),
        )
        assert (ra, rb) == (b"from b", b"from a")
    for _ in range(50):  # the duplicate is retired once idle
        if len(a.smartsock.connections) == len(b.smartsock.connections) == 1:
            break
        await asyncio.sleep(0.05)
    assert len(a.smartsock.connections) == 1
    assert len(b.smartsock.connections) == 1
    # and the survivor carries traffic both ways
    assert await a.send(b.identity, b"x") == b"from b"
    assert await b.send(a.identity, b"y") == b"from a"
    failed = a.stats().get("rpc.requests_failed", 0) + b.stats().get("rpc.requests_failed", 0)
    assert failed == 0


@pytest.mark.parametrize("attempt", range(3))  # each races two dials
async def test_messages_sent_during_simultaneous_dials_all_arrive(
    make_node: MakeNode, attempt: int
) -> None:
    a, b = await make_node(), await make_node()
    at_a, at_b = _collect(a), _collect(b)
    burst = [b"m%d" % i for i in range(200)]

    async def flood(src: Node, dst: Node) -> None:
        for body in burst:
            await src.rpc.send_message(dst.identity, "test/msg/1", body, addresses=[dst.local_addr])

    await asyncio.gather(flood(a, b), flood(b, a))
    await _wait_for(lambda: len(at_a) == len(at_b) == 200, "every message of both floods")
    assert sorted(at_a) == sorted(at_b) == sorted(burst)
    await _wait_for(  # the retired duplicate closes once its messages are acknowledged
        lambda: len(a.smartsock.connections) == len(b.smartsock.connections) == 1,
        "the duplicate to close",
    )


async def test_pooled_connection_survives_idle_periods(make_node: MakeNode) -> None:
    # idle timeout 1 s, keep-alive every 0.25 s: without the pings the connection would die
    quick = NodeConfig(
        transport=TransportConfig(idle_timeout=1.0),
        rpc=RpcConfig(keepalive_interval=0.25, idle_close=30.0),
    )
    a, b = await make_node(quick), await make_node(quick)
    b.set_request_handler(lambda peer, data: data)
    await a.send(b.identity, b"1", addresses=[b.local_addr])
    conn = await a.connect(b.identity)
    await asyncio.sleep(3.0)
    assert not conn.closed
    assert await a.connect(b.identity) is conn
    assert await a.send(b.identity, b"2") == b"2"


async def test_idle_connection_is_closed_and_redialled(make_node: MakeNode) -> None:
    quick = NodeConfig(rpc=RpcConfig(keepalive_interval=0.1, idle_close=0.3))
    a, b = await make_node(quick), await make_node()
    b.set_request_handler(lambda peer, data: data)
    await a.send(b.identity, b"1", addresses=[b.local_addr])
    first = await a.connect(b.identity)
    for _ in range(40):
        if first.closed:
            break
        await asyncio.sleep(0.05)
    assert first.closed
    assert await a.send(b.identity, b"2") == b"2"  # redialled from the remembered address


async def test_at_most_64_concurrent_streams_per_connection(make_node: MakeNode) -> None:
    a, b = await make_node(), await make_node()
    running = 0
    peak = 0
    release = asyncio.Event()

    async def hold(peer: Identity, data: bytes) -> bytes:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await release.wait()
        running -= 1
        return data

    b.set_request_handler(hold)
    await a.connect(b.identity, [b.local_addr])
    calls = [asyncio.create_task(a.send(b.identity, b"%d" % i)) for i in range(100)]
    for _ in range(100):
        if running >= 64:
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)
    assert running == 64  # the 36 others wait for stream credit: queued, not failed
    release.set()
    replies = await asyncio.gather(*calls)
    assert replies == [b"%d" % i for i in range(100)]
    assert peak == 64


async def test_pool_is_bounded_and_evicts_least_recently_used(make_node: MakeNode) -> None:
    a = await make_node(NodeConfig(rpc=RpcConfig(max_connections=2)))
    peers = [await make_node() for _ in range(3)]
    for peer in peers:
        peer.set_request_handler(lambda p, data: data)
    for peer in peers:
        await a.send(peer.identity, b"x", addresses=[peer.local_addr])
    assert a.stats()["rpc.pooled_connections"] == 2
    assert a.stats()["rpc.connections_evicted"] == 1
    # the evicted peer is redialled on demand
    assert await a.send(peers[0].identity, b"again") == b"again"


async def test_ipv6_loopback(make_node: MakeNode) -> None:
    a = await Node.builder("[::1]:0").difficulty(4).plugins([]).build()
    b = await Node.builder("[::1]:0").difficulty(4).plugins([]).build()
    try:
        assert a.local_addr[0] == "::1"
        b.set_request_handler(lambda peer, data: b"v6:" + data)
        assert await a.send(b.identity, b"x", addresses=[f"[::1]:{b.local_addr[1]}"]) == b"v6:x"
    finally:
        await a.close()
        await b.close()


async def test_plugin_frame_type_reaches_its_handler() -> None:
    received: list[tuple[bytes, tuple[str, int]]] = []

    class Beacon:
        @hookimpl
        def korium_frame_handlers(self, node: Node) -> dict[bytes, object]:
            return {b"BCN1": lambda data, source: received.append((data, source))}

    node = await Node.builder("127.0.0.1:0").difficulty(4).plugins([Beacon()]).build()
    try:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0)
        )
        transport.sendto(b"BCN1hello", node.local_addr)
        transport.sendto(b"\x1bnot a frame", node.local_addr)
        for _ in range(100):
            if received and node.stats().get("transport.dropped_garbage"):
                break
            await asyncio.sleep(0.01)
        sender = transport.get_extra_info("sockname")
        transport.close()
        assert received == [(b"BCN1hello", (sender[0], sender[1]))]
        assert node.stats()["transport.frames"] == 1
        assert node.stats()["transport.dropped_garbage"] == 1
    finally:
        await node.close()


# -- one-way messages on one stream per connection ---------------------------------------------


def _collect(node: Node, protocol: str = "test/msg/1") -> list[bytes]:
    received: list[bytes] = []
    node.rpc.register_message(protocol, lambda peer, data: received.append(data))
    return received


async def _wait_for(condition: Callable[[], bool], what: str) -> None:
    """Poll *condition*; bounded by a count (about 10 s), never by the machine's speed."""
    for _ in range(1_000):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


async def test_messages_arrive_in_order_on_one_stream(make_node: MakeNode) -> None:
    a, b = await make_node(), await make_node()
    received = _collect(b)
    sent = [b"m%d" % i for i in range(2_000)]
    await a.connect(b.identity, [b.local_addr])
    for burst in range(0, len(sent), 100):
        for body in sent[burst : burst + 100]:  # no await yields between these
            await a.rpc.send_message(b.identity, "test/msg/1", body)
        await asyncio.sleep(0)
    await _wait_for(lambda: len(received) == len(sent), "2,000 messages")
    assert received == sent
    assert a.stats()["rpc.message_streams_opened"] == 1
    assert a.stats()["rpc.messages_sent"] == b.stats()["rpc.messages_received"] == 2_000


async def test_small_and_large_messages_keep_their_order(make_node: MakeNode) -> None:
    a, b = await make_node(), await make_node()
    received = _collect(b)
    sizes = [0, 70_000, 5, 300_000, 1, 1_000_000, 64 * 1024 + 1, 3, 200_000, 10] * 2
    sent = [bytes([i]) * size for i, size in enumerate(sizes)]
    for body in sent:
        await a.rpc.send_message(b.identity, "test/msg/1", body, addresses=[b.local_addr])
    await _wait_for(lambda: len(received) == len(sent), "every message")
    assert [len(body) for body in received] == sizes
    assert received == sent
    assert a.stats()["rpc.message_streams_opened"] == 1


async def test_oversize_message_is_refused_and_counted(make_node: MakeNode) -> None:
    # the sender allows more than the receiver: the receiver refuses the frame from its
    # length prefix, stops that stream, and keeps the connection
    a = await make_node(NodeConfig(rpc=RpcConfig(max_request_size=4 * 1024 * 1024)))
    b = await make_node()
    received = _collect(b)
    b.set_request_handler(lambda peer, data: data)
    await a.rpc.send_message(b.identity, "test/msg/1", b"before", addresses=[b.local_addr])
    await a.rpc.send_message(b.identity, "test/msg/1", bytes(2 * 1024 * 1024))
    await _wait_for(lambda: b.stats().get("rpc.requests_too_large", 0) == 1, "the refusal")
    assert received == [b"before"]
    conn = await a.connect(b.identity)
    assert await a.send(b.identity, b"still here") == b"still here"
    assert await a.connect(b.identity) is conn
    assert not conn.closed
    # messages written before the refusal reached the sender are lost; then a new stream
    for _ in range(1_000):
        await a.rpc.send_message(b.identity, "test/msg/1", b"later")
        if len(received) > 1:
            break
        await asyncio.sleep(0.01)
    assert received[:2] == [b"before", b"later"]
    assert a.stats()["rpc.message_streams_opened"] == 2
    assert b.stats()["rpc.requests_too_large"] == 1


async def test_malformed_message_in_the_middle_loses_only_itself(make_node: MakeNode) -> None:
    a, b = await make_node(), await make_node()
    received = _collect(b)
    conn = await a.connect(b.identity, [b.local_addr])
    stream_id = conn.quic.get_next_available_stream_id(is_unidirectional=True)
    garbage = frames.LENGTH.pack(3) + b"\xc1\xc1\xc1"  # a whole frame, not MessagePack
    wrong_type = frames.LENGTH.pack(2) + b"\x92\x01"  # [1]: not a request
    first = frames.encode_request("test/msg/1", b"one")
    rest = frames.encode_request("test/msg/1", b"two") + frames.encode_request(
        "test/msg/1", b"three"
    )
    conn.quic.send_stream_data(stream_id, first + garbage, end_stream=False)
    conn.transmit()
    conn.quic.send_stream_data(stream_id, wrong_type[:3], end_stream=False)
    conn.transmit()
    conn.quic.send_stream_data(stream_id, wrong_type[3:] + rest, end_stream=False)
    conn.transmit()
    await _wait_for(lambda: len(received) == 3, "the well-formed messages")
    assert received == [b"one", b"two", b"three"]
    assert b.stats()["rpc.requests_malformed"] == 2
    # the stream and the endpoint's own message stream both keep working
    conn.quic.send_stream_data(stream_id, frames.encode_request("test/msg/1", b"four"))
    conn.transmit()
    await a.rpc.send_message(b.identity, "test/msg/1", b"five")
    await _wait_for(lambda: len(received) == 5, "two more messages")
    assert sorted(received[3:]) == [b"five", b"four"]


async def test_sender_opens_a_new_stream_after_the_peer_stops_one(make_node: MakeNode) -> None:
    a, b = await make_node(), await make_node()
    received = _collect(b)
    conn = await a.connect(b.identity, [b.local_addr])
    stream_id = conn.quic.get_next_available_stream_id(is_unidirectional=True)
    await a.rpc.send_message(b.identity, "test/msg/1", b"first")
    await _wait_for(lambda: received == [b"first"], "the first message")
    server = next(c for c in b.smartsock.connections if c.peer == a.identity)
    server.quic.stop_stream(stream_id, STREAM_CANCELLED)
    server.transmit()
    probe = b""
    for i in range(1_000):  # until a write meets the stopped stream
        probe = b"probe-%d" % i
        await a.rpc.send_message(b.identity, "test/msg/1", probe)
        if a.stats()["rpc.message_streams_opened"] == 2:
            break
        await asyncio.sleep(0.01)
    after = [b"after-%d" % i for i in range(100)]
    for body in after:
        await a.rpc.send_message(b.identity, "test/msg/1", body)
    await _wait_for(lambda: received[-1:] == [after[-1]], "the messages on the new stream")
    # the probe that met the stopped stream was sent again on the new one, ahead of the rest
    assert received.count(probe) == 1
    assert received[-101:] == [probe, *after]
    assert a.stats()["rpc.message_streams_opened"] == 2
    assert not conn.closed


# -- peer addresses ------------------------------------------------------------------------------


async def test_is_outbound_names_the_dialling_end(make_node: MakeNode) -> None:
    a, b = await make_node(), await make_node()
    b.set_request_handler(lambda peer, data: data)
    assert not a.rpc.is_outbound(b.identity)  # not connected
    await a.send(b.identity, b"x", addresses=[b.local_addr])
    assert a.rpc.is_outbound(b.identity)
    assert not b.rpc.is_outbound(a.identity)
    await b.close()
    await _wait_for(lambda: not a.rpc.is_outbound(b.identity), "the connection to close")


async def test_peer_address_is_the_active_direct_path(make_node: MakeNode) -> None:
    a, b = await make_node(), await make_node()
    b.set_request_handler(lambda peer, data: data)
    stranger = Keypair.generate().identity
    assert a.rpc.peer_address(b.identity) is None  # not connected
    assert a.rpc.peer_address(stranger) is None
    await a.send(b.identity, b"x", addresses=[b.local_addr])
    assert a.rpc.peer_address(b.identity) == b.local_addr
    assert b.rpc.peer_address(a.identity) == a.local_addr  # learnt from the inbound connection
    # only a relayed path left, the peer's datagrams arriving by relay (from its SmartAddr)
    conn = await a.connect(b.identity)
    paths = a.smartsock.paths
    now = asyncio.get_running_loop().time()
    relayed = Path(("192.0.2.7", 4433), relay_session=b"session")
    paths.add_candidate(b.identity, relayed, now)
    for candidate in paths.candidates(b.identity):
        if not candidate.path.relayed:
            paths.remove_candidate(b.identity, candidate.path, now)
    assert paths.active_path(b.identity) == relayed
    direct = conn.remote
    conn.remote = smart_addr(b.identity)
    assert a.rpc.peer_address(b.identity) is None
    conn.remote = direct  # a direct datagram came in meanwhile: that address answers
    assert a.rpc.peer_address(b.identity) == b.local_addr
    await b.close()
    await _wait_for(lambda: a.rpc.peer_address(b.identity) is None, "the connection to close")


async def test_send_message_waits_while_the_peer_does_not_acknowledge(
    make_node: MakeNode,
) -> None:
    config = NodeConfig(rpc=RpcConfig(message_buffer=256 * 1024, request_timeout=30.0))
    a, b = await make_node(config), await make_node()
    received = _collect(b)
    await a.connect(b.identity, [b.local_addr])
    sock = b.smartsock
    deliver = sock.datagram_received
    sock.datagram_received = lambda data, addr: None  # type: ignore[method-assign]  # a dead path
    body = bytes(32 * 1024)
    accepted = 0

    async def flood() -> None:
        nonlocal accepted
        for _ in range(64):  # 2 MiB: far more than the buffer
            await a.rpc.send_message(b.identity, "test/msg/1", body)
            accepted += 1

    sending = asyncio.create_task(flood())
    await _wait_for(lambda: a.stats().get("rpc.messages_backpressured") == 1, "backpressure")
    for _ in range(20):  # the sender stays blocked while nothing is acknowledged
        await asyncio.sleep(0.01)
    assert not sending.done()
    assert accepted <= 256 // 32 + 1  # the buffer, then the message that crossed it
    sock.datagram_received = deliver  # type: ignore[method-assign]  # the path recovers
    await asyncio.wait_for(sending, 60)
    await _wait_for(lambda: len(received) == 64, "every message")
    assert received == [body] * 64


async def test_send_message_times_out_when_the_peer_never_catches_up(
    make_node: MakeNode,
) -> None:
    config = NodeConfig(rpc=RpcConfig(message_buffer=64 * 1024, request_timeout=0.5))
    a, b = await make_node(config), await make_node()
    await a.connect(b.identity, [b.local_addr])
    b.smartsock.datagram_received = lambda data, addr: None  # type: ignore[method-assign]

    async def flood() -> None:
        for _ in range(16):
            await a.rpc.send_message(b.identity, "test/msg/1", bytes(16 * 1024))

    with pytest.raises(RpcTimeoutError, match="has not acknowledged"):
        await flood()
