"""Hook specifications: every point where a plugin can join in a node's life.

Hooks are grouped by phase. Each is called by keyword, so an implementation may accept fewer
arguments than the spec (pluggy drops the rest) and specs grow by adding arguments, never by
renaming or removing one. Hooks are synchronous; a hook that needs I/O returns an awaitable,
which the node awaits (see "may return an awaitable" below). Long-running work belongs in the
plugin's own asyncio tasks, started from :func:`korium_node_started`.

Hook order is pluggy's: last registered runs first, adjusted by ``tryfirst``/``trylast``.
Set ``KORIUM_TRACE_HOOKS=1`` to log every hook call. ``docs/hooks.md`` documents each hook
with an example; a test keeps the two in step.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import click
    from cryptography import x509

    from korium.config import NodeConfig
    from korium.identity import Contact, Identity
    from korium.node import Node

hookspec = pluggy.HookspecMarker("korium")
hookimpl = pluggy.HookimplMarker("korium")

CertificateExtension = tuple["x509.ExtensionType", bool]
"""An X.509 extension value and its ``critical`` flag."""


# -- registration ---------------------------------------------------------------------------


@hookspec(historic=True)
def korium_add_hookspecs(plugin_manager: pluggy.PluginManager) -> None:
    """Add a plugin's own hook specifications (gossipsub's message validators, say).

    Historic: a plugin registered later still gets the call. Incompatible with hook wrappers.
    Called once per plugin manager (once per node).

    :param plugin_manager: call ``plugin_manager.add_hookspecs(module)``.
    """


# -- configuration --------------------------------------------------------------------------


@hookspec
def korium_configure(config: NodeConfig) -> None:
    """Validate and complete this plugin's configuration before the node is built.

    Called once per node, before :func:`korium_node_setup`. Read your settings from
    ``config.settings(<plugin name>)``, fill in defaults, and raise
    :class:`korium.errors.ConfigError` for invalid values. Must not do I/O.

    :param config: the node's configuration; plugins may modify only their own section.
    """


# -- node setup and lifecycle ---------------------------------------------------------------


@hookspec
def korium_node_setup(node: Node) -> None:
    """Register this plugin's services, protocols and frame types on a new node.

    Called once per node, after configuration, before the node starts. Every capability the
    plugin declares in ``provides`` must be registered here with ``node.services.provide``.
    Must not do I/O or start tasks (do that in :func:`korium_node_started`).

    :param node: the node being built.
    """


@hookspec
def korium_node_started(node: Node) -> Awaitable[None] | None:
    """The node is up: start background tasks (refresh loops, heartbeats), bootstrap.

    Called once per node; may return an awaitable, which the node awaits before ``start``
    returns. Plugins run in hook order.

    :param node: the node that started.
    """


@hookspec
def korium_node_stopping(node: Node) -> Awaitable[None] | None:
    """The node is shutting down: stop tasks, flush state, say goodbye to peers.

    Called once per node; may return an awaitable, which the node awaits (with the node's
    shutdown timeout). Must not raise; errors are logged and the shutdown goes on.

    :param node: the node that is stopping.
    """


@hookspec
def korium_stats(node: Node) -> Mapping[str, int | float] | None:
    """Counters for ``node.stats()``: sizes, overflows, drops, malformed inputs.

    Called whenever ``node.stats()`` is called. Prefix keys with the plugin name
    (``"dht.contacts"``) so they never collide.

    :returns: a flat mapping of counter name to value, or None.
    """


@hookspec
def korium_frame_handlers(node: Node) -> Mapping[bytes, Callable[[bytes, Any], None]] | None:
    """Datagram types this plugin handles on the node's UDP socket, by 4-byte magic.

    Called once per node when its socket is bound, before ``korium_node_started``. SmartSock
    hands every datagram starting with the magic to ``handler(datagram, source_address)``
    (the relay plugin registers ``b"CRLY"``). A magic's first byte must have its top bit clear;
    two plugins claiming one magic fail the start.
    """


# -- peers ----------------------------------------------------------------------------------


@hookspec
def korium_peer_connected(node: Node, peer: Identity) -> None:
    """A connection to *peer* completed its handshake (mutual TLS verified).

    Called once per new connection, inbound or outbound; must not block.
    """


@hookspec
def korium_peer_disconnected(node: Node, peer: Identity) -> None:
    """The last connection to *peer* closed. Called once per lost peer; must not block."""


# -- TLS ------------------------------------------------------------------------------------


@hookspec
def korium_certificate_extensions(node: Node) -> Sequence[CertificateExtension] | None:
    """X.509 extensions to add to this node's self-signed TLS certificate.

    Called when the node builds its certificate (at start). SPIFFE adds its URI SAN here;
    SubjectAlternativeName values from several plugins are merged into one extension.

    :returns: ``(extension_value, critical)`` pairs, or None.
    """


@hookspec
def korium_verify_peer_certificate(
    node: Node, peer: Identity, certificate: x509.Certificate
) -> str | None:
    """Vote on a peer's certificate during the TLS handshake.

    Called on both sides of every handshake after the kernel has checked that the peer holds
    the key of *peer*. Every implementation votes; any rejection aborts the handshake.
    Must be fast and must not do I/O.

    :returns: None to accept, or the reason for rejecting the peer.
    """


# -- dialing --------------------------------------------------------------------------------


@hookspec(firstresult=True)
def korium_resolve_contact(
    node: Node, peer: Identity
) -> Contact | Awaitable[Contact | None] | None:
    """Find a dialable contact for *peer* that the node does not already know.

    Called when the node must dial a peer it has no address for. Stops at first non-None
    result, so return None (not an awaitable resolving to None) when this plugin cannot help.
    May return an awaitable; the node bounds it with its dial timeout.
    """


@hookspec
def korium_dial_fallback(
    node: Node, peer: Identity, contact: Contact | None, error: Exception
) -> Awaitable[bool] | None:
    """The direct dial to *peer* failed: offer another way to reach it (a relay, a punch).

    Called once per failed direct dial. Return an awaitable that resolves to True once the
    node's path table has a new path to *peer* (the node then dials again), or None if this
    plugin cannot help. Implementations are tried one at a time, in hook order.
    """


@hookspec
def korium_bootstrap(node: Node, peer: Identity) -> Awaitable[None] | None:
    """``node.bootstrap`` connected to *peer*: join the network through it.

    Called once per bootstrap call, after the connection is up; may return an awaitable, which
    ``bootstrap`` awaits (the DHT runs its self-lookup here).
    """


# -- command line ---------------------------------------------------------------------------


@hookspec
def korium_cli_commands(cli: click.Group) -> None:
    """Add subcommands to the ``korium`` command (``cli.add_command(...)``).

    Called once when the command line starts, for every installed plugin.
    """
