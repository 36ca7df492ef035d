"""Node configuration: kernel settings plus one free-form section per plugin."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from korium.errors import ConfigError
from korium.identity import DEFAULT_DIFFICULTY, DEFAULT_MAX_AGE_S
from korium.identity.pow import check_difficulty
from korium.rpc.dispatch import RpcConfig
from korium.transport.smartsock import TransportConfig

T = TypeVar("T")


def plugin_config(cls: type[T], settings: Mapping[str, Any], plugin: str) -> T:
    """The dataclass *cls* built from *plugin*'s settings section (``NodeConfig.settings``).

    Unknown keys are an error naming the known ones, so a typo never passes silently; the
    dataclass validates the values itself.
    """
    known = {f.name for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ConfigError(
            f"{plugin}: unknown setting {unknown[0]!r}; known settings: {', '.join(sorted(known))}"
        )
    return cls(**dict(settings))


@dataclass(slots=True)
class NodeConfig:
    """Settings of one node. Plugins validate their own section in ``korium_configure``."""

    pow_difficulty: int = DEFAULT_DIFFICULTY
    """Proof-of-work bits this node's identity must have and that it requires of peers."""
    contact_max_age_s: float = DEFAULT_MAX_AGE_S
    """Contact records older than this (seconds) are refused."""
    shutdown_timeout_s: float = 10.0
    """How long ``Node.stop`` waits for each plugin's ``korium_node_stopping``."""
    transport: TransportConfig = field(default_factory=TransportConfig)
    """Socket, QUIC and path-probing settings."""
    rpc: RpcConfig = field(default_factory=RpcConfig)
    """Timeouts, size limits and connection pool settings."""
    plugin_settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per-plugin settings, keyed by plugin name."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` for an out-of-range kernel setting."""
        check_difficulty(self.pow_difficulty)
        if self.contact_max_age_s <= 0:
            raise ConfigError(f"contact_max_age_s must be positive, got {self.contact_max_age_s}")
        if self.shutdown_timeout_s <= 0:
            raise ConfigError(f"shutdown_timeout_s must be positive, got {self.shutdown_timeout_s}")

    def settings(self, plugin: str) -> dict[str, Any]:
        """The settings section of *plugin*, created empty if absent."""
        return self.plugin_settings.setdefault(plugin, {})
