"""The plugin host: finds plugins, composes a node profile, checks what they need.

Plugins are objects (usually modules) carrying ``@hookimpl`` functions and, optionally, a
``korium_plugin = PluginInfo(...)`` attribute declaring what they provide and require.
Installed plugins are found through the ``korium.plugins`` entry-point group, entry name =
plugin name. A :class:`Profile` says which of them a node loads; :class:`PluginHost` loads them
into a pluggy manager, checks requirements, and holds the node's :class:`ServiceRegistry`.
"""

from __future__ import annotations

import inspect
import logging
import os
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any, TypeVar

import pluggy

from korium import hookspecs
from korium.capabilities import Capability
from korium.errors import CapabilityMissing, PluginConflictError, PluginError, PluginLoadError

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "korium.plugins"
KNOWN_EXTRAS = {
    "dht": "dht",
    "gossipsub": "gossipsub",
    "relay": "relay",
    "spiffe": "spiffe",
    "threshold_ca": "spiffe",
}
"""Which ``korium[...]`` extra installs each of korium's own plugins."""

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class PluginInfo:
    """What a plugin declares about itself (the ``korium_plugin`` attribute)."""

    name: str
    description: str = ""
    provides: tuple[Capability[Any], ...] = ()
    requires: tuple[Capability[Any], ...] = ()
    replaces: tuple[str, ...] = ()
    """Plugins this one supersedes: when both are in a profile, those are left out."""
    version: str | None = None
    """Defaults to the version of the distribution that installed the plugin."""


@dataclass(frozen=True, slots=True)
class InstalledPlugin:
    """A plugin found through its entry point; loaded (imported) on demand."""

    name: str
    entry_point: EntryPoint

    @property
    def distribution(self) -> str | None:
        dist = self.entry_point.dist
        return dist.name if dist is not None else None

    @property
    def version(self) -> str | None:
        dist = self.entry_point.dist
        return dist.version if dist is not None else None

    def load(self) -> object:
        """Import the plugin object."""
        try:
            return self.entry_point.load()
        except Exception as exc:
            raise PluginLoadError(
                f"plugin {self.name!r} ({self.entry_point.value}) failed to import: {exc}"
            ) from exc


def installed_plugins() -> dict[str, InstalledPlugin]:
    """Every plugin installed in this environment, by name."""
    found: dict[str, InstalledPlugin] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in found:
            log.warning("two installed plugins are named %r; using %s", ep.name, ep.value)
        found[ep.name] = InstalledPlugin(ep.name, ep)
    return found


@dataclass(frozen=True, slots=True)
class Profile:
    """Which plugins a node loads.

    ``names=None`` means every installed plugin; a tuple means exactly those. ``objects`` are
    plugin objects passed in directly (no entry point needed); they are always loaded.
    """

    names: tuple[str, ...] | None = None
    objects: tuple[object, ...] = ()

    @classmethod
    def of(cls, items: Iterable[str | object]) -> Profile:
        """Exactly *items*: plugin names and plugin objects, mixed."""
        items = list(items)
        return cls(
            tuple(i for i in items if isinstance(i, str)),
            tuple(i for i in items if not isinstance(i, str)),
        )


@dataclass(slots=True)
class LoadedPlugin:
    """A plugin registered in a node's plugin manager."""

    info: PluginInfo
    plugin: object
    version: str | None
    distribution: str | None

    @property
    def name(self) -> str:
        return self.info.name


def plugin_info(plugin: object, default_name: str | None = None) -> PluginInfo:
    """The plugin's declared :class:`PluginInfo`, or a bare one named after it."""
    info = getattr(plugin, "korium_plugin", None)
    if isinstance(info, PluginInfo):
        if default_name is not None and info.name != default_name:
            raise PluginLoadError(
                f"plugin installed as {default_name!r} calls itself {info.name!r}: "
                "the entry-point name must equal PluginInfo.name"
            )
        return info
    if info is not None:
        raise PluginLoadError(f"{plugin!r}.korium_plugin must be a korium.plugins.PluginInfo")
    name = default_name or getattr(plugin, "__name__", None) or type(plugin).__name__
    return PluginInfo(name=name)


def new_plugin_manager() -> pluggy.PluginManager:
    """A pluggy manager with korium's hook specifications (and tracing if asked for)."""
    pm = pluggy.PluginManager("korium")
    pm.add_hookspecs(hookspecs)
    if os.environ.get("KORIUM_TRACE_HOOKS"):
        pm.trace.root.setwriter(lambda message: log.info("hook: %s", message.rstrip()))
        pm.enable_tracing()
    return pm


class PluginHost:
    """The plugins of one node: a pluggy manager plus the checks that make a profile valid.

    :raises PluginLoadError: a named plugin is not installed or fails to import.
    :raises PluginConflictError: two plugins share a name or provide the same capability.
    :raises CapabilityMissing: a plugin requires a capability no plugin in the profile provides.
    """

    def __init__(self, profile: Profile | None = None) -> None:
        profile = profile or Profile()
        self.pm = new_plugin_manager()
        self.plugins: dict[str, LoadedPlugin] = {}
        for loaded in _drop_replaced(_resolve(profile)):
            self._register(loaded)
        self.pm.hook.korium_add_hookspecs.call_historic(kwargs={"plugin_manager": self.pm})
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            raise PluginLoadError(
                f"{exc}: check the hook's spelling, or mark a hook owned by an optional "
                "plugin with @hookimpl(optionalhook=True)"
            ) from exc
        self._check_capabilities()

    @property
    def hook(self) -> pluggy.HookRelay:
        """Call hooks: ``host.hook.korium_node_setup(node=node)``."""
        return self.pm.hook

    def hooks_of(self, name: str) -> list[str]:
        """Names of the hooks plugin *name* implements."""
        callers = self.pm.get_hookcallers(self.plugins[name].plugin) or []
        return sorted(caller.name for caller in callers)

    def _register(self, loaded: LoadedPlugin) -> None:
        if loaded.name in self.plugins:
            raise PluginConflictError(f"two plugins in this profile are named {loaded.name!r}")
        try:
            self.pm.register(loaded.plugin, name=loaded.name)
        except ValueError as exc:
            raise PluginConflictError(f"cannot register plugin {loaded.name!r}: {exc}") from exc
        except pluggy.PluginValidationError as exc:
            raise PluginLoadError(f"plugin {loaded.name!r} has a bad hook: {exc}") from exc
        self.plugins[loaded.name] = loaded

    def _check_capabilities(self) -> None:
        providers: dict[Capability[Any], str] = {}
        for loaded in self.plugins.values():
            for capability in loaded.info.provides:
                other = providers.setdefault(capability, loaded.name)
                if other != loaded.name:
                    raise PluginConflictError(
                        f"plugins {other!r} and {loaded.name!r} both provide "
                        f"{capability.name}: choose one in the node profile, or declare "
                        f"replaces=({other!r},) in {loaded.name!r}"
                    )
        for loaded in self.plugins.values():
            for capability in loaded.info.requires:
                if capability not in providers:
                    raise CapabilityMissing(
                        capability.name, needed_by=loaded.name, extra=capability.extra
                    )

    def check_provided(self, services: ServiceRegistry) -> None:
        """After setup: every capability a plugin declared must now be registered."""
        for loaded in self.plugins.values():
            for capability in loaded.info.provides:
                if services.provider(capability) != loaded.name:
                    raise PluginError(
                        f"plugin {loaded.name!r} declares {capability.name} but did not "
                        "register it in korium_node_setup (node.services.provide)"
                    )


def _resolve(profile: Profile) -> list[LoadedPlugin]:
    # an object-only profile needs no entry-point scan (thousands of simulated nodes build fast)
    installed = installed_plugins() if profile.names != () else {}
    if profile.names is None:
        chosen = list(installed.values())
    else:
        missing = [name for name in profile.names if name not in installed]
        if missing:
            raise PluginLoadError(_not_installed_message(missing[0], installed))
        chosen = [installed[name] for name in dict.fromkeys(profile.names)]
    loaded = []
    for entry in chosen:
        plugin = entry.load()
        info = plugin_info(plugin, entry.name)
        loaded.append(LoadedPlugin(info, plugin, info.version or entry.version, entry.distribution))
    for plugin in profile.objects:
        info = plugin_info(plugin)
        loaded.append(LoadedPlugin(info, plugin, info.version, None))
    return loaded


def _drop_replaced(loaded: Sequence[LoadedPlugin]) -> list[LoadedPlugin]:
    replaced = {name: p.name for p in loaded for name in p.info.replaces}
    for p in loaded:
        if p.name in replaced:
            log.info("plugin %r replaces %r in this profile", replaced[p.name], p.name)
    return [p for p in loaded if p.name not in replaced]


def _not_installed_message(name: str, installed: dict[str, InstalledPlugin]) -> str:
    if name in KNOWN_EXTRAS:
        return f"plugin {name!r} is not installed: install korium[{KNOWN_EXTRAS[name]}]"
    names = ", ".join(sorted(installed)) or "none"
    return f"plugin {name!r} is not installed (installed plugins: {names})"


class ServiceRegistry:
    """The services of one node, one per capability."""

    def __init__(self) -> None:
        self._services: dict[Capability[Any], tuple[object, str]] = {}

    def provide(self, capability: Capability[T], service: T, *, provider: str) -> None:
        """Register *service* as this node's implementation of *capability*.

        :raises TypeError: *service* lacks the capability's interface.
        :raises PluginConflictError: another plugin already provides *capability*.
        """
        if not capability.check(service):
            raise TypeError(
                f"{provider!r} registered {type(service).__name__} for {capability.name}, "
                f"which does not implement {capability.interface.__name__}"
            )
        current = self._services.get(capability)
        if current is not None:
            raise PluginConflictError(
                f"{provider!r} and {current[1]!r} both provide {capability.name}"
            )
        self._services[capability] = (service, provider)

    def get(self, capability: Capability[T]) -> T | None:
        """The service for *capability*, or None."""
        entry = self._services.get(capability)
        return entry[0] if entry is not None else None  # type: ignore[return-value]

    def require(self, capability: Capability[T], *, needed_by: str | None = None) -> T:
        """The service for *capability*; raises :class:`CapabilityMissing` naming the extra."""
        entry = self._services.get(capability)
        if entry is None:
            raise CapabilityMissing(capability.name, needed_by=needed_by, extra=capability.extra)
        return entry[0]  # type: ignore[return-value]

    def require_instance(self, capability: Capability[Any], kind: type[T]) -> T:
        """The service for *capability* if it is a *kind* (a plugin reaching its own service
        for introspection); PluginError if another plugin provides the capability."""
        found = self.require(capability)
        if not isinstance(found, kind):
            raise PluginError(
                f"this node's {capability.name} capability is provided by "
                f"{self.provider(capability)!r}, not by {kind.__name__}"
            )
        return found

    def provider(self, capability: Capability[Any]) -> str | None:
        """Name of the plugin that provides *capability*, or None."""
        entry = self._services.get(capability)
        return entry[1] if entry is not None else None

    def __contains__(self, capability: Capability[Any]) -> bool:
        return capability in self._services

    def capabilities(self) -> list[Capability[Any]]:
        """Every capability this node has a service for."""
        return list(self._services)


async def await_results(results: Iterable[object]) -> None:
    """Await the awaitables among hook results, in order (sync hook, async result)."""
    for result in results:
        if inspect.isawaitable(result):
            await result


async def resolve_maybe(result: T | Awaitable[T]) -> T:
    """A hook result that may be a value or an awaitable, as a value."""
    if inspect.isawaitable(result):
        return await result
    return result


@dataclass(frozen=True, slots=True)
class PluginReport:
    """What ``korium plugins`` shows about one installed plugin."""

    name: str
    version: str | None
    distribution: str | None
    info: PluginInfo | None
    hooks: tuple[str, ...]
    error: str | None = None


def inspect_installed() -> list[PluginReport]:
    """Load each installed plugin on its own and report it; a broken one is reported, not raised.

    Requirements are not checked here: a plugin is listed even if its profile would be
    incomplete.
    """
    reports = []
    for name, entry in sorted(installed_plugins().items()):
        try:
            plugin = entry.load()
            info = plugin_info(plugin, name)
            pm = new_plugin_manager()
            pm.register(plugin, name=name)
            hooks = tuple(sorted(c.name for c in pm.get_hookcallers(plugin) or []))
        except (PluginError, ValueError, pluggy.PluginValidationError) as exc:
            reports.append(
                PluginReport(name, entry.version, entry.distribution, None, (), str(exc))
            )
            continue
        version = info.version or entry.version
        reports.append(PluginReport(name, version, entry.distribution, info, hooks))
    return reports


def installed_plugin_objects() -> list[object]:
    """Every installed plugin that imports cleanly (for process-wide hooks such as the CLI)."""
    objects = []
    for entry in installed_plugins().values():
        try:
            objects.append(entry.load())
        except PluginLoadError as exc:
            log.warning("%s", exc)
    return objects
