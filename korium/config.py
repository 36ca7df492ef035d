"""Node configuration: kernel settings plus one free-form section per plugin."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from korium.errors import ConfigError
from korium.identity import DEFAULT_DIFFICULTY, DEFAULT_MAX_AGE_S
from korium.identity.pow import check_difficulty
from korium.rpc.dispatch import RpcConfig
from korium.transport.smartsock import TransportConfig


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
