"""The node facade: one identity, one plugin profile, one set of services.

``Node.builder()`` composes a node: its identity (given, loaded from a key file, or generated),
its configuration and its plugin profile. ``build()`` loads the plugins, lets them configure
and set up, and checks that every declared capability was provided. ``start()``/``stop()``
(or ``async with node``) run the lifecycle hooks. Methods whose capability no plugin provides
raise :class:`korium.errors.CapabilityMissing` naming the extra to install.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterable
from types import TracebackType
from typing import Any, Self

from korium.capabilities import DISCOVERY, PUBSUB
from korium.config import NodeConfig
from korium.errors import ConfigError
from korium.identity import Contact, Identity, NodeIdentity
from korium.identity.pow import check_difficulty
from korium.plugins import PluginHost, Profile, ServiceRegistry, await_results

log = logging.getLogger(__name__)


class NodeBuilder:
    """Collects a node's identity, configuration and plugins; ``await build()`` makes it."""

    def __init__(self) -> None:
        self._identity: NodeIdentity | None = None
        self._key_file: str | os.PathLike[str] | None = None
        self._config = NodeConfig()
        self._profile = Profile()

    def identity(self, node_identity: NodeIdentity) -> Self:
        """Use this identity (its proof must reach the configured difficulty)."""
        self._identity = node_identity
        return self

    def key_file(self, path: str | os.PathLike[str]) -> Self:
        """Load the identity from *path*, generating and saving one there if it is absent."""
        self._key_file = path
        return self

    def difficulty(self, bits: int) -> Self:
        """Proof-of-work bits required of this node and of its peers (default 24)."""
        check_difficulty(bits)
        self._config.pow_difficulty = bits
        return self

    def config(self, config: NodeConfig) -> Self:
        """Replace the whole configuration."""
        self._config = config
        return self

    def plugin_settings(self, plugin: str, **settings: Any) -> Self:
        """Settings for one plugin's section (validated by the plugin when building)."""
        self._config.settings(plugin).update(settings)
        return self

    def plugins(self, items: Iterable[str | object]) -> Self:
        """Load exactly these plugins: installed ones by name, others as objects."""
        self._profile = Profile.of(items)
        return self

    def add_plugin(self, plugin: object) -> Self:
        """Add a plugin object to the profile (keeps the installed plugins, by default all)."""
        self._profile = Profile(self._profile.names, (*self._profile.objects, plugin))
        return self

    async def build(self) -> Node:
        """Load plugins, resolve the identity, run configuration and setup hooks."""
        if self._identity is not None and self._key_file is not None:
            raise ConfigError("give either an identity or a key file, not both")
        self._config.validate()
        host = PluginHost(self._profile)
        host.hook.korium_configure(config=self._config)
        difficulty = self._config.pow_difficulty
        node_identity = self._identity
        if node_identity is None and self._key_file is not None:
            path = self._key_file
            node_identity = await asyncio.to_thread(
                NodeIdentity.load_or_generate, path, difficulty=difficulty
            )
        elif node_identity is None:
            node_identity = await NodeIdentity.generate_async(difficulty)
        node_identity.proof.verify(node_identity.identity, difficulty)
        node = Node(node_identity, self._config, host)
        host.hook.korium_node_setup(node=node)
        host.check_provided(node.services)
        return node


class Node:
    """A korium node. Build one with :meth:`Node.builder`."""

    def __init__(self, node_identity: NodeIdentity, config: NodeConfig, host: PluginHost) -> None:
        self.node_identity = node_identity
        self.config = config
        self.plugins = host
        self.services = ServiceRegistry()
        self._started = False

    @staticmethod
    def builder() -> NodeBuilder:
        """Start composing a node."""
        return NodeBuilder()

    @property
    def identity(self) -> Identity:
        """This node's public identity."""
        return self.node_identity.identity

    @property
    def running(self) -> bool:
        """Whether :meth:`start` has run and :meth:`stop` has not."""
        return self._started

    async def start(self) -> None:
        """Run every plugin's ``korium_node_started`` hook."""
        if self._started:
            return
        self._started = True
        try:
            await await_results(self.plugins.hook.korium_node_started(node=self))
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        """Run every plugin's ``korium_node_stopping`` hook; errors are logged, not raised."""
        if not self._started:
            return
        self._started = False
        for result in self.plugins.hook.korium_node_stopping(node=self):
            if result is None:
                continue
            try:
                await asyncio.wait_for(result, self.config.shutdown_timeout_s)
            except Exception:
                log.exception("a plugin failed while stopping node %s", self.identity.short)

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def stats(self) -> dict[str, int | float]:
        """Counters from the kernel and every plugin (sizes, overflows, drops)."""
        stats: dict[str, int | float] = {"kernel.plugins": len(self.plugins.plugins)}
        for contribution in self.plugins.hook.korium_stats(node=self):
            stats.update(contribution)
        return stats

    # -- capability facade ----------------------------------------------------------------------

    async def find_peers(self, target: Identity) -> list[Contact]:
        """Contacts of the peers closest to *target* (needs Discovery: korium[dht])."""
        return await self.services.require(DISCOVERY, needed_by="find_peers").find_peers(target)

    async def resolve(self, peer: Identity) -> Contact | None:
        """*peer*'s newest valid contact record (needs Discovery: korium[dht])."""
        return await self.services.require(DISCOVERY, needed_by="resolve").resolve(peer)

    async def subscribe(self, topic: str) -> None:
        """Subscribe to *topic* (needs PubSub: korium[gossipsub])."""
        await self.services.require(PUBSUB, needed_by="subscribe").subscribe(topic)

    async def publish(self, topic: str, data: bytes) -> None:
        """Publish *data* on *topic* (needs PubSub: korium[gossipsub])."""
        await self.services.require(PUBSUB, needed_by="publish").publish(topic, data)

    def __repr__(self) -> str:
        return f"Node({self.identity.short}..., plugins={sorted(self.plugins.plugins)})"
