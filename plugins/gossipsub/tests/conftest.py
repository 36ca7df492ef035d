"""Fixtures for GossipSub tests on real QUIC over 127.0.0.1.

Why fixtures: every node a test builds is closed at teardown, even when the test fails, so no
socket, connection or task leaks into the next test. Nodes load only the gossipsub plugin (or
none, for a hand-driven peer that writes raw frames), so no DHT or other plugin interferes.

Fixtures hand out plain callables typed with korium types, so test modules need no import from
this file:

* ``gossip_node(**settings) -> Node``: one node with the gossipsub plugin and these
  ``GossipConfig`` settings.
* ``raw_node() -> Node``: a node without plugins; a test sends it hand-made gossipsub frames
  with ``node.rpc.send_message`` (the peer is fully under the test's control).
* ``gossip_cluster(count, topology=..., settings=..., overrides=...) -> list[Node]``: *count*
  connected nodes; returns once every node's gossipsub router knows each of its neighbours.
* ``link(a, b)``: connect two nodes and wait until both routers know each other (a raw node:
  until it holds the connection).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import korium_gossipsub
import pytest
from korium_gossipsub import plugin

from korium import PUBSUB, Node

DEADLINE_S = 20.0
"""Bound on every wait for the network to settle (generous: loopback takes milliseconds)."""

NodeFactory = Callable[..., Awaitable[Node]]
RawNodeFactory = Callable[[], Awaitable[Node]]
Link = Callable[[Node, Node], Awaitable[None]]
ClusterFactory = Callable[..., Awaitable[list[Node]]]


async def wait_until(condition: Callable[[], bool], timeout: float = DEADLINE_S) -> None:
    """Poll *condition* until it holds; fail the test if it does not within *timeout*."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"condition not reached within {timeout} s")
        await asyncio.sleep(0.02)


def _knows(node: Node, peer: Node) -> bool:
    """Whether *node*'s gossipsub router counts *peer* as connected (it can send to it); a
    node without the plugin knows nobody at that level, so only its connection counts."""
    if node.services.get(PUBSUB) is None:
        return peer.identity in node.rpc.connected_peers()
    return peer.identity in korium_gossipsub.service(node).router.peers


@pytest.fixture
async def built() -> AsyncIterator[list[Node]]:
    """Nodes a test built; all closed at teardown."""
    nodes: list[Node] = []
    try:
        yield nodes
    finally:
        await asyncio.gather(*(n.close() for n in nodes), return_exceptions=True)


@pytest.fixture
def raw_node(built: list[Node]) -> RawNodeFactory:
    async def make() -> Node:
        node = await Node.builder("127.0.0.1:0").difficulty(0).plugins([]).build()
        built.append(node)
        return node

    return make


@pytest.fixture
def gossip_node(built: list[Node]) -> NodeFactory:
    async def make(**settings: Any) -> Node:
        builder = Node.builder("127.0.0.1:0").difficulty(0).plugins([plugin])
        node = await builder.plugin_settings("gossipsub", **settings).build()
        built.append(node)
        return node

    return make


@pytest.fixture
def link() -> Link:
    async def connect(a: Node, b: Node) -> None:
        await a.connect(b.identity, [b.local_addr])
        await wait_until(lambda: _knows(a, b) and _knows(b, a))

    return connect


@pytest.fixture
def gossip_cluster(gossip_node: NodeFactory, link: Link) -> ClusterFactory:
    async def make(
        count: int,
        *,
        topology: str = "full",
        settings: Mapping[str, Any] | None = None,
        overrides: Mapping[int, Mapping[str, Any]] | None = None,
    ) -> list[Node]:
        """*count* nodes; node ``i`` gets ``settings`` updated with ``overrides[i]``.

        Topologies: ``"full"`` (every pair connected), ``"star"`` (each node bootstraps
        through node 0 and connects nowhere else) and ``"ring"`` (a star plus each node
        1..count-1 connected to the next one, wrapping around).
        """
        nodes = []
        for index in range(count):
            merged = {**(settings or {}), **(overrides or {}).get(index, {})}
            nodes.append(await gossip_node(**merged))
        hub = nodes[0]
        pairs: list[tuple[Node, Node]] = []
        if topology == "full":
            pairs = [(a, b) for i, a in enumerate(nodes) for b in nodes[i + 1 :]]
        elif topology in ("star", "ring"):
            for node in nodes[1:]:
                await node.bootstrap(hub.identity, hub.local_addr)
            pairs = [(hub, node) for node in nodes[1:]]
            if topology == "ring" and count > 3:
                pairs += [(nodes[i], nodes[i % (count - 1) + 1]) for i in range(1, count)]
        else:
            raise ValueError(f"unknown topology {topology!r}")
        for a, b in pairs:
            await link(a, b)
        return nodes

    return make
