"""The greeter plugin: one capability, one service per node, and the hooks that wire them."""

from __future__ import annotations

import asyncio
from typing import Protocol, runtime_checkable

import click

from korium import Capability, Node, NodeConfig, PluginInfo, hookimpl
from korium.errors import ConfigError

NAME = "greeter"


@runtime_checkable
class Greeter(Protocol):
    """Says hello on behalf of a node."""

    def greet(self, name: str) -> str: ...


GREETER: Capability[Greeter] = Capability("greeter", Greeter)

korium_plugin = PluginInfo(
    name=NAME,
    description="Example third-party plugin: a greeting service and `korium greet`.",
    provides=(GREETER,),
)


class GreeterService:
    """One per node; counts greetings and knows whether its node is running."""

    def __init__(self, node: Node, greeting: str) -> None:
        self.node = node
        self.greeting = greeting
        self.greetings = 0
        self.events: list[str] = []
        self._ticker: asyncio.Task[None] | None = None

    def greet(self, name: str) -> str:
        self.greetings += 1
        return f"{self.greeting}, {name}! (from node {self.node.identity.short})"

    async def start(self) -> None:
        self.events.append("started")
        self._ticker = asyncio.create_task(asyncio.sleep(3600), name="greeter-ticker")

    async def stop(self) -> None:
        self.events.append("stopping")
        if self._ticker is not None:
            self._ticker.cancel()


@hookimpl
def korium_configure(config: NodeConfig) -> None:
    settings = config.settings(NAME)
    greeting = settings.setdefault("greeting", "hello")
    if not isinstance(greeting, str) or not greeting:
        raise ConfigError(f"greeter: 'greeting' must be a non-empty string, got {greeting!r}")


@hookimpl
def korium_node_setup(node: Node) -> None:
    service = GreeterService(node, node.config.settings(NAME)["greeting"])
    service.events.append("setup")
    node.services.provide(GREETER, service, provider=NAME)


def _service(node: Node) -> GreeterService:
    service = node.services.require(GREETER)
    assert isinstance(service, GreeterService)
    return service


@hookimpl
def korium_node_started(node: Node) -> asyncio.Future[None] | None:
    return asyncio.ensure_future(_service(node).start())


@hookimpl
def korium_node_stopping(node: Node) -> asyncio.Future[None] | None:
    return asyncio.ensure_future(_service(node).stop())


@hookimpl
def korium_stats(node: Node) -> dict[str, int]:
    return {"greeter.greetings": _service(node).greetings}


@hookimpl
def korium_cli_commands(cli: click.Group) -> None:
    @cli.command("greet")
    @click.argument("name")
    def greet(name: str) -> None:
        """Say hello (added by the korium-example-greeter plugin)."""
        click.echo(f"hello, {name}! (from the greeter plugin)")
