"""Acceptance over real QUIC on loopback: 20 nodes join through one seed, publish, resolve."""

from __future__ import annotations

import asyncio

import pytest
from korium_dht import plugin

from korium import Node, NodeIdentity

DIFFICULTY = 8
COUNT = 20


async def _node(**settings: int) -> Node:
    identity = NodeIdentity.generate(difficulty=DIFFICULTY)
    builder = Node.builder("127.0.0.1:0").identity(identity).difficulty(DIFFICULTY)
    return await builder.plugins(["dht"]).plugin_settings("dht", **settings).build()


@pytest.mark.timeout(180)
async def test_twenty_nodes_publish_resolve_and_connect_by_identity() -> None:
    nodes = [await _node() for _ in range(COUNT)]
    seed = nodes[0]
    try:
        await asyncio.gather(
            *(n.bootstrap(seed.identity, seed.routable_addresses()[0]) for n in nodes[1:])
        )
        for node in nodes:
            assert len(plugin.service(node).table) > 0
        await asyncio.gather(*(n.publish_address(n.routable_addresses()) for n in nodes))

        async def resolve_all(node: Node) -> list[bool]:
            others = [m for m in nodes if m is not node]
            found = await asyncio.gather(*(node.resolve(m.identity) for m in others))
            return [
                c is not None
                and c.identity == m.identity
                and list(c.addresses) == m.routable_addresses()
                for c, m in zip(found, others, strict=True)
            ]

        results = await asyncio.gather(*(resolve_all(n) for n in nodes))
        assert all(all(row) for row in results), [row.count(False) for row in results]

        # A newcomer with a tiny table (k=2) reaches a peer it neither knows nor is connected
        # to by identity alone: connect() resolves the address through the DHT.
        newcomer = await _node(k_min=2, k=2, join_refresh=0)
        nodes.append(newcomer)
        await newcomer.bootstrap(seed.identity, seed.routable_addresses()[0])
        known = set(newcomer.rpc.connected_peers()) | {
            c.identity for c in plugin.service(newcomer).table.contacts()
        }
        target = next(n for n in nodes[1:-1] if n.identity not in known)
        target.set_request_handler(lambda peer, data: b"hi " + data)
        connection = await newcomer.connect(target.identity)
        assert connection.peer == target.identity
        assert await newcomer.send(target.identity, b"there") == b"hi there"

        stats = seed.stats()
        assert stats["dht.table.contacts"] >= COUNT - 1
        assert stats["dht.store.records"] >= 1
        assert stats["dht.params.k"] == 20
    finally:
        await asyncio.gather(*(n.close() for n in nodes))


async def test_find_peers_returns_only_peers_that_answered() -> None:
    nodes = [await _node() for _ in range(6)]
    try:
        for node in nodes[1:]:
            await node.bootstrap(nodes[0].identity, nodes[0].routable_addresses()[0])
        dead = nodes.pop(3)
        await dead.close()
        found = await nodes[1].find_peers(dead.identity)
        assert dead.identity not in [c.identity for c in found]
        assert {c.identity for c in found} <= {n.identity for n in nodes}
        assert len(found) == len(nodes) - 1  # every live peer but the asker itself
    finally:
        await asyncio.gather(*(n.close() for n in nodes))
