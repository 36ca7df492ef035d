"""The ``relay`` plugin's hooks: one :class:`RelayService` per node.

Every node with the plugin relays for others (``plugin_settings("relay", serve=False)`` opts
out), can learn whether it is reachable (``node.configure_nat(helper)``), and reaches peers
behind NAT through the relays their contact records name, punching a direct path when it can.
Settings are the fields of :class:`korium_relay.RelaySettings`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from korium import (
    DISCOVERY,
    NAT_TRAVERSAL,
    PUBSUB,
    Identity,
    Node,
    NodeConfig,
    PluginInfo,
    hookimpl,
)
from korium.identity import Contact
from korium.transport.addresses import Address
from korium_relay.config import RelaySettings
from korium_relay.service import RelayService

NAME = "relay"

korium_plugin = PluginInfo(
    name=NAME,
    description="Relays, reachability checks and hole punching for nodes behind NAT.",
    provides=(NAT_TRAVERSAL,),
    requires=(DISCOVERY, PUBSUB),
)


def service(node: Node) -> RelayService:
    """The relay service of *node* (its relay server, sessions and counters)."""
    return node.services.require_instance(NAT_TRAVERSAL, RelayService)


@hookimpl
def korium_configure(config: NodeConfig) -> None:
    RelaySettings.from_settings(config.settings(NAME))


@hookimpl
def korium_node_setup(node: Node) -> None:
    settings = RelaySettings.from_settings(node.config.settings(NAME))
    node.services.provide(NAT_TRAVERSAL, RelayService(node, settings), provider=NAME)


@hookimpl
def korium_frame_handlers(node: Node) -> dict[bytes, Callable[[bytes, Address], None]]:
    return service(node).frame_handlers()


@hookimpl(trylast=True)
def korium_node_started(node: Node) -> Awaitable[None]:
    return asyncio.ensure_future(service(node).start())


@hookimpl
def korium_node_stopping(node: Node) -> Awaitable[None]:
    return asyncio.ensure_future(service(node).stop())


@hookimpl
def korium_stats(node: Node) -> dict[str, int | float]:
    return service(node).stats()


@hookimpl
def korium_peer_disconnected(node: Node, peer: Identity) -> None:
    service(node).peer_disconnected(peer)


@hookimpl
def korium_dial_fallback(
    node: Node, peer: Identity, contact: Contact | None, error: Exception
) -> Awaitable[bool]:
    return asyncio.ensure_future(service(node).dial_fallback(peer, contact))
