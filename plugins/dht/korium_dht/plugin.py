"""The ``dht`` plugin's hooks: wire one :class:`DhtService` into each node.

Settings (``Node.builder().plugin_settings("dht", k=20, ...)``) are the fields of
:class:`korium_dht.DhtConfig`, validated when the node is built.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable

from korium import DISCOVERY, Contact, Identity, Node, NodeConfig, PluginInfo, hookimpl
from korium.errors import KoriumError
from korium_dht.config import DhtConfig
from korium_dht.service import DhtService

NAME = "dht"

korium_plugin = PluginInfo(
    name=NAME,
    description="Adaptive, latency-tiered Kademlia DHT: find_peers, resolve, put/get.",
    provides=(DISCOVERY,),
)


def service(node: Node) -> DhtService:
    """The DHT service of *node* (for introspection: routing table, store, lookups)."""
    return node.services.require_instance(DISCOVERY, DhtService)


def _advertised(node: Node) -> list[str]:
    try:
        return node.routable_addresses()
    except KoriumError:  # a simulated node has no socket: a stable private address stands in
        raw = bytes(node.identity)
        return [f"10.{raw[0]}.{raw[1]}.{raw[2]}:4433"]


@hookimpl
def korium_configure(config: NodeConfig) -> None:
    DhtConfig.from_settings(config.settings(NAME))


@hookimpl
def korium_node_setup(node: Node) -> None:
    dht = DhtService(
        node.node_identity,
        node.rpc,
        DhtConfig.from_settings(node.config.settings(NAME)),
        difficulty=node.config.pow_difficulty,
        max_record_age_s=node.config.contact_max_age_s,
        addresses=lambda: _advertised(node),
    )
    node.services.provide(DISCOVERY, dht, provider=NAME)


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
def korium_resolve_contact(node: Node, peer: Identity) -> Awaitable[Contact | None]:
    return service(node).contact_for_dial(peer)


@hookimpl
def korium_bootstrap(node: Node, peer: Identity) -> Awaitable[None]:
    return asyncio.ensure_future(service(node).bootstrap(peer))
