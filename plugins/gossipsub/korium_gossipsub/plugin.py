"""The ``gossipsub`` plugin's hooks: wire one :class:`GossipService` into each node.

Settings (``Node.builder().plugin_settings("gossipsub", d=6, ...)``) are the fields of
:class:`korium_gossipsub.GossipConfig`, validated when the node is built.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from korium import PUBSUB, Identity, Node, NodeConfig, PluginInfo, hookimpl
from korium_gossipsub.config import GossipConfig
from korium_gossipsub.service import GossipService

NAME = "gossipsub"

korium_plugin = PluginInfo(
    name=NAME,
    description="GossipSub v1.1/v1.2 pubsub: signed messages, peer scoring, IDONTWANT.",
    provides=(PUBSUB,),
)


def service(node: Node) -> GossipService:
    """The GossipSub service of *node* (validators, scores, mesh introspection)."""
    return node.services.require_instance(PUBSUB, GossipService)


@hookimpl
def korium_configure(config: NodeConfig) -> None:
    GossipConfig.from_settings(config.settings(NAME))


@hookimpl
def korium_node_setup(node: Node) -> None:
    gossip = GossipService(
        node.keypair, node.rpc, GossipConfig.from_settings(node.config.settings(NAME))
    )
    node.services.provide(PUBSUB, gossip, provider=NAME)


@hookimpl
def korium_node_started(node: Node) -> None:
    service(node).start()


@hookimpl
def korium_node_stopping(node: Node) -> Awaitable[None]:
    return asyncio.ensure_future(service(node).stop())


@hookimpl
def korium_stats(node: Node) -> dict[str, int | float]:
    return service(node).stats()


@hookimpl
def korium_peer_connected(node: Node, peer: Identity) -> None:
    service(node).peer_connected(peer)


@hookimpl
def korium_peer_disconnected(node: Node, peer: Identity) -> None:
    service(node).peer_disconnected(peer)


@hookimpl
def korium_bootstrap(node: Node, peer: Identity) -> None:
    service(node).peer_connected(peer)
