"""The out-of-tree plugin works through discovery alone, without touching the kernel."""

from __future__ import annotations

import pytest
from korium_example_greeter import GREETER, GreeterService

from korium import Node
from korium.errors import ConfigError
from korium.plugins import installed_plugins


def test_found_through_its_entry_point() -> None:
    entry = installed_plugins()["greeter"]
    assert entry.distribution == "korium-example-greeter"
    assert entry.entry_point.value == "korium_example_greeter.plugin"


async def test_profile_by_name_calls_its_hooks() -> None:
    node = await (
        Node.builder("127.0.0.1:0")
        .difficulty(6)
        .plugins(["greeter"])
        .plugin_settings("greeter", greeting="hi")
    ).build()
    service = node.services.require(GREETER)
    assert isinstance(service, GreeterService)
    # korium_configure validated the settings, korium_node_setup and korium_node_started ran
    assert service.events == ["setup", "started"]
    async with node:
        assert service.greet("Ada") == f"hi, Ada! (from node {node.identity.short})"
        assert node.stats()["greeter.greetings"] == 1
    assert service.events == ["setup", "started", "stopping"]


async def test_its_configure_hook_validates_settings() -> None:
    builder = Node.builder("127.0.0.1:0").difficulty(6).plugins(["greeter"])
    with pytest.raises(ConfigError, match="'greeting' must be a non-empty string"):
        await builder.plugin_settings("greeter", greeting="").build()


async def test_profile_without_it_does_not_load_it() -> None:
    node = await Node.builder("127.0.0.1:0").difficulty(6).plugins([]).build()
    assert node.services.get(GREETER) is None
    assert "greeter" not in node.plugins.plugins
    await node.close()
