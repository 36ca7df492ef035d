"""The relay plugin's settings (``Node.builder().plugin_settings("relay", ...)``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from korium.config import plugin_config
from korium.errors import ConfigError
from korium_relay.server import AccessPolicy, RelayLimits


@dataclass(frozen=True, slots=True)
class RelaySettings:
    """What a node does for others (serve as a relay) and for itself (use relays, punch)."""

    serve: bool = True
    """Relay for others when asked (a node behind NAT is never asked: it is not reachable)."""
    limits: RelayLimits = field(default_factory=RelayLimits)
    policy: AccessPolicy | None = None
    """``policy(initiator, target, initiator_address)``: None to relay, else why not."""
    auto_accept: bool = True
    """Join relay sessions others open to this node without asking the application (off
    while the application reads ``enable_mesh_signaling()``)."""
    hole_punching: bool = True
    """Once relayed, try a direct path to the peer and switch to it when it works."""
    punch_interval: float = 0.2
    punch_duration: float = 5.0
    punch_delay: float = 0.0
    """Seconds to stay relayed before punching (tests use it to watch the switch)."""
    reserve_timeout: float = 10.0
    """How long an initiator waits for the target to join a relay session."""
    signal_max_age: float = 30.0
    signal_max_skew: float = 5.0
    keepalive_interval: float = 20.0
    """How often a node behind NAT talks to its relay, so the NAT keeps the mapping open."""

    def __post_init__(self) -> None:
        if self.punch_delay < 0:
            raise ConfigError("relay: punch_delay must not be negative")
        if not isinstance(self.limits, RelayLimits):
            raise ConfigError("relay: limits must be a RelayLimits")
        for name in (
            "punch_interval",
            "punch_duration",
            "reserve_timeout",
            "signal_max_age",
            "signal_max_skew",
            "keepalive_interval",
        ):
            if not getattr(self, name) > 0:
                raise ConfigError(f"relay: {name} must be a positive number of seconds")

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> RelaySettings:
        return plugin_config(cls, settings, "relay")
