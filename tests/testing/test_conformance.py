"""The simulated endpoint answers every call exactly as the real QUIC endpoint does.

The same handlers and the same calls run twice: between two real nodes over loopback, and
between two simulated nodes on virtual time. Results, error types, messages and codes must be
identical; a change to either endpoint that makes them drift fails here.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable

from korium import Node
from korium.config import NodeConfig
from korium.errors import RemoteError, RpcError
from korium.identity import Identity, Keypair
from korium.rpc import MAX_REQUEST_SIZE, MAX_RESPONSE_SIZE, Rpc
from korium.rpc.endpoint import RpcConfig
from korium.testing import SimNetwork, run
from korium.transport.addresses import Address

Outcome = tuple[str, bytes | str, int | None]

CALLS: list[tuple[str, bytes, float | None]] = [
    ("echo", b"hello", None),
    ("echo", b"", None),
    ("async-echo", b"abc", None),
    ("deferred", b"def", None),
    ("bytearray", b"ghi", None),
    ("largest", b"", None),
    ("raise", b"", None),
    ("raise-async", b"", None),
    ("raise-long", b"", None),
    # A TimeoutError raised by an async handler (a nested request timing out, say) reaches the
    # caller as HANDLER_TIMEOUT "did not answer within 30.0 s", in both endpoints.
    ("raise-timeout", b"", None),
    ("not-bytes", b"", None),
    ("too-big", b"", None),
    ("korium/unknown/1", b"", None),
    ("p" * 129, b"", None),
    ("echo", bytes(MAX_REQUEST_SIZE), None),
    ("slow", b"", 0.2),
]


def register_handlers(rpc: Rpc, received: list[tuple[str, bytes]]) -> None:
    async def async_echo(peer: Identity, body: bytes) -> bytes:
        await asyncio.sleep(0.01)
        return body

    def deferred(peer: Identity, body: bytes) -> Awaitable[bytes]:
        return async_echo(peer, body)

    def raise_(peer: Identity, body: bytes) -> bytes:
        raise ValueError("boom")

    async def raise_async(peer: Identity, body: bytes) -> bytes:
        raise KeyError("missing")

    def raise_long(peer: Identity, body: bytes) -> bytes:
        raise RuntimeError("x" * 5000)

    async def raise_timeout(peer: Identity, body: bytes) -> bytes:
        raise TimeoutError("inner")

    async def slow(peer: Identity, body: bytes) -> bytes:
        await asyncio.sleep(1.0)
        return body

    async def note(peer: Identity, body: bytes) -> None:
        received.append(("note", body))

    rpc.register("echo", lambda peer, body: body)
    rpc.register("async-echo", async_echo)
    rpc.register("deferred", deferred)
    rpc.register("bytearray", lambda peer, body: bytearray(body))  # type: ignore[arg-type, return-value]
    rpc.register("largest", lambda peer, body: bytes(MAX_RESPONSE_SIZE - 64))
    rpc.register("raise", raise_)
    rpc.register("raise-async", raise_async)
    rpc.register("raise-long", raise_long)
    rpc.register("raise-timeout", raise_timeout)
    rpc.register("not-bytes", lambda peer, body: 42)  # type: ignore[arg-type, return-value]
    rpc.register("too-big", lambda peer, body: bytes(MAX_RESPONSE_SIZE - 63))
    rpc.register("slow", slow)
    rpc.register_message("note", note)
    rpc.register_message("note-sync", lambda peer, body: received.append(("sync", body)))


async def outcomes(
    client: Rpc, client_id: Identity, server_id: Identity, addresses: list[Address] | None
) -> list[Outcome]:
    results: list[Outcome] = []
    for protocol, body, timeout in CALLS:
        try:
            reply = await client.request(
                server_id, protocol, body, addresses=addresses, timeout=timeout
            )
        except RpcError as exc:
            message = str(exc).replace(server_id.short, "<peer>")
            code = exc.code if isinstance(exc, RemoteError) else None
            results.append((type(exc).__name__, message, code))
        else:
            results.append(("ok", reply if len(reply) < 100 else b"%d bytes" % len(reply), None))
    try:
        await client.request(client_id, "echo", b"", addresses=addresses)
    except RpcError as exc:
        results.append((type(exc).__name__, str(exc), None))
    return results


async def messages(client: Rpc, server_id: Identity, addresses: list[Address] | None) -> None:
    for protocol in ("note", "note-sync", "korium/unknown/1", "note"):
        await client.send_message(server_id, protocol, protocol.encode(), addresses=addresses)
    await asyncio.sleep(0.5)


async def real() -> tuple[list[Outcome], list[tuple[str, bytes]]]:
    received: list[tuple[str, bytes]] = []
    client, server = [
        await Node.builder("127.0.0.1:0")
        .keypair(Keypair.from_seed(bytes([i]) * 32))
        .difficulty(4)
        .plugins([])
        .build()
        for i in (1, 2)
    ]
    async with client, server:
        register_handlers(server.rpc, received)
        addresses = [server.local_addr]
        results = await outcomes(client.rpc, client.identity, server.identity, addresses)
        await messages(client.rpc, server.identity, addresses)
    return results, received


async def simulated() -> tuple[list[Outcome], list[tuple[str, bytes]]]:
    received: list[tuple[str, bytes]] = []
    network = SimNetwork(default_latency=0.001)
    client, server = (network.add_node(Keypair.from_seed(bytes([i]) * 32)) for i in (1, 2))
    register_handlers(server, received)
    results = await outcomes(client, client.identity, server.identity, None)
    await messages(client, server.identity, None)
    return results, received


def test_simulated_and_real_endpoints_agree() -> None:
    real_results, real_received = asyncio.run(real())
    sim_results, sim_received = run(simulated())
    assert len(sim_results) == len(CALLS) + 1
    for call, sim, actual in zip(
        [*CALLS, ("self", b"", None)], sim_results, real_results, strict=True
    ):
        assert sim == actual, f"{call[0]!r}: simulated {sim} != real {actual}"
    assert sorted(sim_received) == sorted(real_received)
    assert sorted(sim_received) == [("note", b"note"), ("note", b"note"), ("sync", b"note-sync")]


DIAL_TIMEOUT = 0.3


def dial_failure(exc: RpcError, peer: Identity) -> tuple[str, str]:
    """The error's type and message, minus the address list only the real one can show."""
    message = re.sub(r" at \S+ within", " within", str(exc)).replace(peer.short, "<peer>")
    return type(exc).__name__, message


async def real_dead_peer() -> tuple[tuple[str, str], float]:
    config = NodeConfig(rpc=RpcConfig(dial_timeout=DIAL_TIMEOUT))
    client = await Node.builder("127.0.0.1:0").config(config).difficulty(4).plugins([]).build()
    dead = await Node.builder("127.0.0.1:0").difficulty(4).plugins([]).build()
    address, identity = dead.local_addr, dead.identity
    await dead.close()
    async with client:
        loop = asyncio.get_running_loop()
        start = loop.time()
        try:
            await client.rpc.request(identity, "echo", b"", addresses=[address])
        except RpcError as exc:
            return dial_failure(exc, identity), loop.time() - start
    raise AssertionError("a request to a closed node succeeded")


async def simulated_dead_peer() -> tuple[tuple[str, str], float]:
    network = SimNetwork(config=RpcConfig(dial_timeout=DIAL_TIMEOUT))
    client, dead = (network.add_node(Keypair.from_seed(bytes([i]) * 32)) for i in (1, 2))
    network.remove_node(dead)
    loop = asyncio.get_running_loop()
    start = loop.time()
    try:
        await client.request(dead.identity, "echo", b"")
    except RpcError as exc:
        return dial_failure(exc, dead.identity), loop.time() - start
    raise AssertionError("a request to a removed node succeeded")


def test_a_dead_peer_fails_the_dial_alike() -> None:
    real_error, real_elapsed = asyncio.run(real_dead_peer())
    sim_error, sim_elapsed = run(simulated_dead_peer())
    assert (
        sim_error
        == real_error
        == (
            "PeerUnreachableError",
            f"no answer from <peer>... within {DIAL_TIMEOUT} s",
        )
    )
    assert sim_elapsed == DIAL_TIMEOUT
    assert real_elapsed >= DIAL_TIMEOUT
