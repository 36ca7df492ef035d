"""Plugin host: profiles, discovery, capability checks, conflicts and the service registry."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import pluggy
import pytest

import korium.plugins
from korium import DISCOVERY, NAT_TRAVERSAL, PUBSUB, Capability, PluginInfo, Profile, hookimpl
from korium.errors import (
    CapabilityMissing,
    PluginConflictError,
    PluginError,
    PluginLoadError,
)
from korium.identity import Contact, Identity
from korium.plugins import (
    PluginHost,
    ServiceRegistry,
    inspect_installed,
    installed_plugins,
    plugin_info,
)


@runtime_checkable
class Clock(Protocol):
    def now(self) -> float: ...


CLOCK: Capability[Clock] = Capability("clock", Clock)


class FixedClock:
    def now(self) -> float:
        return 42.0


class FakeDiscovery:
    async def find_peers(self, target: Identity) -> list[Contact]:
        return []

    async def resolve(self, identity: Identity) -> Contact | None:
        return None

    async def publish_address(self, addresses: object) -> None:
        return None

    async def put(self, value: bytes) -> bytes:
        return bytes(32)

    async def get(self, key: bytes) -> bytes | None:
        return None


class Plugin:
    """A configurable test plugin passed in as an object."""

    def __init__(self, name: str, **info: object) -> None:
        self.korium_plugin = PluginInfo(name=name, **info)  # type: ignore[arg-type]


def test_profile_of_splits_names_and_objects() -> None:
    obj = Plugin("x")
    profile = Profile.of(["greeter", obj])
    assert profile.names == ("greeter",)
    assert profile.objects == (obj,)


def test_default_profile_loads_every_installed_plugin() -> None:
    host = PluginHost(Profile())
    assert set(host.plugins) == set(installed_plugins())
    assert "greeter" in host.plugins  # the example third-party plugin is installed


def test_explicit_empty_profile_loads_nothing_but_objects() -> None:
    host = PluginHost(Profile(names=(), objects=(Plugin("solo"),)))
    assert list(host.plugins) == ["solo"]


def test_unknown_builtin_plugin_names_its_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    installed = korium.plugins.installed_plugins()
    without_relay = {name: plugin for name, plugin in installed.items() if name != "relay"}
    monkeypatch.setattr(korium.plugins, "installed_plugins", lambda: without_relay)
    with pytest.raises(PluginLoadError, match=r"install korium\[relay\]"):
        PluginHost(Profile(names=("relay",)))


def test_unknown_plugin_lists_installed_ones() -> None:
    with pytest.raises(PluginLoadError, match=r"installed plugins: .*greeter"):
        PluginHost(Profile(names=("no-such-plugin",)))


def test_missing_required_capability_names_plugin_and_extra() -> None:
    relay = Plugin("relay", provides=(NAT_TRAVERSAL,), requires=(PUBSUB,))
    with pytest.raises(CapabilityMissing) as info:
        PluginHost(Profile(names=(), objects=(relay,)))
    assert str(info.value).startswith("relay needs a pubsub capability: install korium[gossipsub]")
    assert info.value.extra == "gossipsub"
    assert info.value.needed_by == "relay"


def test_requirement_met_by_another_plugin() -> None:
    user = Plugin("user", requires=(CLOCK,))
    provider = Plugin("clock", provides=(CLOCK,))
    host = PluginHost(Profile(names=(), objects=(user, provider)))
    assert set(host.plugins) == {"user", "clock"}


def test_requirement_without_extra_says_so() -> None:
    with pytest.raises(CapabilityMissing, match="install and enable a plugin that provides it"):
        PluginHost(Profile(names=(), objects=(Plugin("user", requires=(CLOCK,)),)))


def test_two_providers_of_one_capability_conflict() -> None:
    a, b = Plugin("a", provides=(DISCOVERY,)), Plugin("b", provides=(DISCOVERY,))
    with pytest.raises(PluginConflictError, match="both provide discovery"):
        PluginHost(Profile(names=(), objects=(a, b)))


def test_replaces_drops_the_replaced_plugin() -> None:
    builtin = Plugin("dht", provides=(DISCOVERY,))
    mine = Plugin("mydisco", provides=(DISCOVERY,), replaces=("dht",))
    host = PluginHost(Profile(names=(), objects=(builtin, mine)))
    assert list(host.plugins) == ["mydisco"]


def test_duplicate_plugin_names_conflict() -> None:
    with pytest.raises(PluginConflictError, match="named 'twin'"):
        PluginHost(Profile(names=(), objects=(Plugin("twin"), Plugin("twin"))))


def test_misspelt_hook_fails_loudly() -> None:
    class Typo:
        @hookimpl
        def korium_node_setpu(self) -> None: ...

    with pytest.raises(PluginLoadError, match="korium_node_setpu"):
        PluginHost(Profile(names=(), objects=(Typo(),)))


def test_optional_hook_of_another_plugin_is_allowed() -> None:
    class Extends:
        @hookimpl(optionalhook=True)
        def gossipsub_validate_message(self) -> None: ...

    PluginHost(Profile(names=(), objects=(Extends(),)))


def test_plugin_can_add_hookspecs_that_others_implement() -> None:
    class Specs:
        @staticmethod
        @pluggy.HookspecMarker("korium")
        def myplugin_event(value: int) -> int:  # type: ignore[empty-body]
            """A plugin's own hook."""

    class Owner:
        @hookimpl
        def korium_add_hookspecs(self, plugin_manager: pluggy.PluginManager) -> None:
            plugin_manager.add_hookspecs(Specs)

    class Listener:
        @hookimpl
        def myplugin_event(self, value: int) -> int:
            return value * 2

    host = PluginHost(Profile(names=(), objects=(Owner(), Listener())))
    assert host.hook.myplugin_event(value=21) == [42]


def test_bad_korium_plugin_attribute_is_refused() -> None:
    class Bad:
        korium_plugin = ("bad",)

    with pytest.raises(PluginLoadError, match=r"must be a korium\.plugins\.PluginInfo"):
        plugin_info(Bad())


def test_entry_point_name_must_match_declared_name() -> None:
    with pytest.raises(PluginLoadError, match="calls itself 'other'"):
        plugin_info(Plugin("other"), "greeter")


def test_hooks_of_lists_implemented_hooks() -> None:
    host = PluginHost(Profile(names=("greeter",)))
    assert "korium_node_setup" in host.hooks_of("greeter")
    assert "korium_peer_connected" not in host.hooks_of("greeter")


def test_inspect_installed_reports_greeter() -> None:
    reports = {r.name: r for r in inspect_installed()}
    greeter = reports["greeter"]
    assert greeter.error is None
    assert greeter.distribution == "korium-example-greeter"
    assert greeter.version == "0.1.0"
    assert greeter.info is not None
    assert [c.name for c in greeter.info.provides] == ["greeter"]
    assert "korium_cli_commands" in greeter.hooks


def test_registry_provide_get_require() -> None:
    registry = ServiceRegistry()
    assert registry.get(CLOCK) is None
    assert CLOCK not in registry
    registry.provide(CLOCK, FixedClock(), provider="clock")
    assert registry.require(CLOCK).now() == 42.0
    assert registry.provider(CLOCK) == "clock"
    assert registry.capabilities() == [CLOCK]


def test_registry_require_instance_checks_the_provider_class() -> None:
    registry = ServiceRegistry()
    clock = FixedClock()
    registry.provide(CLOCK, clock, provider="clock")
    assert registry.require_instance(CLOCK, FixedClock) is clock
    with pytest.raises(PluginError, match=r"provided by 'clock', not by FakeDiscovery"):
        registry.require_instance(CLOCK, FakeDiscovery)


def test_registry_refuses_wrong_interface() -> None:
    registry = ServiceRegistry()
    with pytest.raises(TypeError, match="does not implement Discovery"):
        registry.provide(DISCOVERY, FixedClock(), provider="oops")  # type: ignore[misc]
    registry.provide(DISCOVERY, FakeDiscovery(), provider="fake")


def test_registry_refuses_second_provider() -> None:
    registry = ServiceRegistry()
    registry.provide(CLOCK, FixedClock(), provider="a")
    with pytest.raises(PluginConflictError):
        registry.provide(CLOCK, FixedClock(), provider="b")


def test_registry_require_missing_names_extra() -> None:
    with pytest.raises(CapabilityMissing, match=r"install korium\[dht\]"):
        ServiceRegistry().require(DISCOVERY)


def test_capability_missing_is_a_plugin_error() -> None:
    assert issubclass(CapabilityMissing, PluginError)
