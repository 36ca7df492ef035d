"""A path switch under a live QUIC connection is invisible to it.

Node A reaches node B through two real UDP paths: two forwarding proxies on loopback, each with
a one-way delay we control. Mid-way through a stream of requests the delays are swapped, the
probes notice, the path tables switch, and not one request fails or reconnects.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from korium import Node
from korium.config import NodeConfig
from korium.identity import Identity
from korium.transport.addresses import Address
from korium.transport.paths import Path, PathConfig
from korium.transport.smartsock import TransportConfig


class DelayProxy:
    """A UDP forwarder with a settable one-way delay (a path with adjustable latency)."""

    def __init__(self, target: Address) -> None:
        self.target = target
        self.delay = 0.0
        self.forwarded = 0
        self._front: asyncio.DatagramTransport | None = None
        self._backs: dict[Address, asyncio.DatagramTransport] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> Address:
        loop = asyncio.get_running_loop()
        proxy = self

        class Front(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                task = loop.create_task(proxy._to_target(data, (addr[0], addr[1])))
                proxy._tasks.add(task)
                task.add_done_callback(proxy._tasks.discard)

        transport, _ = await loop.create_datagram_endpoint(Front, local_addr=("127.0.0.1", 0))
        self._front = transport
        host, port = transport.get_extra_info("sockname")[:2]
        return (host, port)

    async def _to_target(self, data: bytes, client: Address) -> None:
        back = self._backs.get(client)
        if back is None:
            loop = asyncio.get_running_loop()
            proxy = self

            class Back(asyncio.DatagramProtocol):
                def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                    proxy._later(lambda: proxy._send_front(data, client))

            back, _ = await loop.create_datagram_endpoint(
                Back, local_addr=("127.0.0.1", 0), remote_addr=self.target
            )
            self._backs[client] = back
        self._later(lambda: back.sendto(data))

    def _send_front(self, data: bytes, client: Address) -> None:
        if self._front is not None:
            self._front.sendto(data, client)

    def _later(self, send: object) -> None:
        self.forwarded += 1
        assert callable(send)
        asyncio.get_running_loop().call_later(self.delay, send)

    def close(self) -> None:
        if self._front is not None:
            self._front.close()
        for back in self._backs.values():
            back.close()


FAST_PROBES = NodeConfig(
    transport=TransportConfig(
        paths=PathConfig(probe_interval=0.1, probe_timeout=0.5, stale_after=2.0)
    )
)


@pytest.fixture
async def pair() -> AsyncIterator[tuple[Node, Node]]:
    a = await Node.builder("127.0.0.1:0").config(FAST_PROBES).difficulty(4).plugins([]).build()
    b = await Node.builder("127.0.0.1:0").config(FAST_PROBES).difficulty(4).plugins([]).build()
    yield a, b
    await a.close()
    await b.close()


async def wait_for_path(node: Node, peer: Identity, address: Address, limit: float = 10) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while node.smartsock.paths.active_path(peer) != Path(address):
        assert loop.time() < deadline, f"no switch to {address}"
        await asyncio.sleep(0.02)


async def wait_until(condition: Callable[[], bool], limit: float = 10) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not condition():
        assert loop.time() < deadline, "condition not reached"
        await asyncio.sleep(0.02)


def all_measured(node: Node, peer: Identity) -> bool:
    candidates = node.smartsock.paths.candidates(peer)
    return len(candidates) == 2 and all(c.rtt_ms is not None for c in candidates)


async def test_path_switch_mid_request_stream_loses_nothing(pair: tuple[Node, Node]) -> None:
    a, b = pair
    b.set_request_handler(lambda peer, data: data[::-1])
    first, second = DelayProxy(b.local_addr), DelayProxy(b.local_addr)
    first_addr, second_addr = await first.start(), await second.start()
    first.delay, second.delay = 0.0, 0.04  # the first path is fast, the second slow
    try:
        await a.send(b.identity, b"hello", addresses=[first_addr, second_addr])
        conn = await a.connect(b.identity)
        results: list[bytes] = []
        failures: list[BaseException] = []
        stop = asyncio.Event()

        async def stream(worker: int) -> None:
            n = 0
            while not stop.is_set():
                payload = b"%d-%d" % (worker, n)
                try:
                    reply = await a.send(b.identity, payload, timeout=5)
                except Exception as exc:
                    failures.append(exc)
                    return
                results.append(reply)
                assert reply == payload[::-1]
                n += 1

        workers = [asyncio.create_task(stream(w)) for w in range(4)]
        await wait_until(lambda: all_measured(a, b.identity) and len(results) > 20)
        assert a.smartsock.paths.active_path(b.identity) == Path(first_addr)

        before = len(results)
        first.delay, second.delay = 0.04, 0.0  # swap: the table must move to the second path
        await wait_for_path(a, b.identity, second_addr)
        during = len(results)
        await wait_until(lambda: len(results) > during + 20)  # traffic flows on the new path
        first.delay, second.delay = 0.0, 0.04  # and back again
        await wait_for_path(a, b.identity, first_addr)
        after = len(results)
        await wait_until(lambda: len(results) > after + 20)
        stop.set()
        await asyncio.gather(*workers)

        assert failures == []
        assert len(results) > after > during > before > 0
        assert a.stats()["transport.path_switches"] >= 2
        assert b.stats()["transport.path_switches"] >= 1  # B moved its answers too
        assert await a.connect(b.identity) is conn  # the same QUIC connection throughout
        assert not conn.closed
        assert first.forwarded > 0
        assert second.forwarded > 0
    finally:
        first.close()
        second.close()
