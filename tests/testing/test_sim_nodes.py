"""Whole nodes, with their plugins, on the simulated network and virtual time."""

from __future__ import annotations

import asyncio
import random

from korium import Node, NodeConfig, PluginInfo, hookimpl
from korium.identity import Identity
from korium.testing import SimNetwork, on_virtual_time

PING = "test/ping/1"


class Pinger:
    """A plugin written only against the public node API: it runs unchanged here."""

    korium_plugin = PluginInfo(name="pinger")

    def __init__(self, peers: list[Identity], rng: random.Random) -> None:
        self.peers = peers
        self.rng = rng
        self.answered = 0
        self.failed = 0
        self.task: asyncio.Task[None] | None = None

    @hookimpl
    def korium_node_setup(self, node: Node) -> None:
        node.rpc.register(PING, lambda peer, body: b"pong:" + body)

    @hookimpl
    def korium_node_started(self, node: Node) -> None:
        self.task = asyncio.create_task(self._loop(node))

    @hookimpl
    def korium_node_stopping(self, node: Node) -> None:
        if self.task is not None:
            self.task.cancel()

    @hookimpl
    def korium_stats(self, node: Node) -> dict[str, int]:
        return {"pinger.answered": self.answered, "pinger.failed": self.failed}

    async def _loop(self, node: Node) -> None:
        while True:
            await asyncio.sleep(10)
            peer = self.rng.choice(self.peers)
            if peer == node.identity:
                continue
            try:
                reply = await node.rpc.request(peer, PING, b"x", timeout=5)
            except Exception:
                self.failed += 1
            else:
                assert reply == b"pong:x"
                self.answered += 1


@on_virtual_time
async def test_two_hundred_nodes_with_a_plugin_for_an_hour() -> None:
    network = SimNetwork(seed=7, default_latency=0.02)
    rng = random.Random(7)
    peers: list[Identity] = []
    nodes: list[Node] = []
    pingers: list[Pinger] = []
    loop = asyncio.get_running_loop()
    for _ in range(200):
        pinger = Pinger(peers, rng)
        node = await (
            Node.builder().simulated(network).config(NodeConfig(pow_difficulty=0)).plugins([pinger])
        ).build()
        peers.append(node.identity)
        nodes.append(node)
        pingers.append(pinger)
    start = loop.time()
    await asyncio.sleep(3600)
    assert loop.time() - start >= 3600  # an hour of protocol time, on the simulated clock
    answered = sum(p.answered for p in pingers)
    assert answered > 200 * 340  # about one ping every 10 s per node, minus self-picks
    assert sum(p.failed for p in pingers) == 0
    assert nodes[0].stats()["pinger.answered"] == pingers[0].answered
    # a node that leaves is unreachable for the others, exactly as a dead peer
    await nodes[1].close()
    await asyncio.sleep(600)
    assert sum(p.failed for p in pingers) > 0
    for node in nodes:
        await node.close()


@on_virtual_time
async def test_send_and_request_handler_on_simulated_nodes() -> None:
    network = SimNetwork(seed=1, default_latency=0.05)
    config = NodeConfig(pow_difficulty=0)
    a = await Node.builder().simulated(network).config(config).plugins([]).build()
    b = await Node.builder().simulated(network).config(config).plugins([]).build()
    b.set_request_handler(lambda peer, data: data.upper())
    loop = asyncio.get_running_loop()
    start = loop.time()
    assert await a.send(b.identity, b"hi") == b"HI"
    assert abs(loop.time() - start - 0.1) < 1e-6  # two link latencies of virtual time
    await a.close()
    await b.close()


class PeerWatcher:
    """Records the peer connection hooks, as a plugin would."""

    korium_plugin = PluginInfo(name="peer-watcher")

    def __init__(self) -> None:
        self.events: list[tuple[str, Identity]] = []

    @hookimpl
    def korium_peer_connected(self, node: Node, peer: Identity) -> None:
        self.events.append(("connected", peer))

    @hookimpl
    def korium_peer_disconnected(self, node: Node, peer: Identity) -> None:
        self.events.append(("disconnected", peer))


@on_virtual_time
async def test_simulated_nodes_fire_the_peer_hooks_and_know_addresses() -> None:
    network = SimNetwork(seed=1, idle_timeout=30.0)
    config = NodeConfig(pow_difficulty=0)
    watchers = [PeerWatcher() for _ in range(3)]
    a, b, c = [
        await Node.builder(address).simulated(network).config(config).plugins([watcher]).build()
        for address, watcher in zip(
            ["192.0.2.1:4433", "0.0.0.0:4433", "[2001:db8::3]:4433"], watchers, strict=True
        )
    ]
    for node in (b, c):
        node.set_request_handler(lambda peer, data: data)
    await a.send(b.identity, b"x")
    await a.send(c.identity, b"x")
    assert watchers[0].events == [("connected", b.identity), ("connected", c.identity)]
    assert watchers[1].events == [("connected", a.identity)]
    assert watchers[2].events == [("connected", a.identity)]
    assert a.rpc.peer_address(c.identity) == ("2001:db8::3", 4433)
    assert c.rpc.peer_address(a.identity) == ("192.0.2.1", 4433)
    assert a.rpc.peer_address(b.identity) is None  # bound to a wildcard: no address to give
    await c.close()
    assert watchers[2].events == [("connected", a.identity)]  # nothing after its own removal
    await asyncio.sleep(30)
    assert c.identity not in a.rpc.connected_peers()
    assert watchers[0].events[-1] == ("disconnected", c.identity)
    await a.close()
    await b.close()
