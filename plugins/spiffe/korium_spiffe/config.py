"""SPIFFE settings: this node's SPIFFE ID, and which peers' SPIFFE IDs it admits.

``SpiffeConfig`` is the node's own ID (``spiffe://{trust_domain}/{identity_hex}[/{path}]``);
``SpiffeSettings`` is the plugin's settings section (``Node.builder().spiffe_trust_domain(...)``
fills it): that ID, plus an optional admission policy for peers. Everything is checked against
the strict SPIFFE ID grammar when it is made.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from korium.config import plugin_config
from korium.errors import ConfigError
from korium.identity import Identity
from korium_spiffe.spiffe_id import (
    SpiffeId,
    SpiffeIdError,
    korium_spiffe_id,
    validate_trust_domain,
    validate_workload_path,
)


@dataclass(frozen=True, slots=True)
class SpiffeConfig:
    """A trust domain and optional workload path; raises SpiffeIdError naming the rule broken."""

    trust_domain: str
    workload_path: str | None = None

    def __post_init__(self) -> None:
        validate_trust_domain(self.trust_domain)
        if self.workload_path is not None:
            validate_workload_path(self.workload_path)

    def spiffe_id(self, identity: Identity) -> str:
        """``spiffe://{trust_domain}/{identity_hex}[/{workload_path}]``."""
        return korium_spiffe_id(self.trust_domain, identity, self.workload_path)


@dataclass(frozen=True, slots=True)
class PeerPolicy:
    """Which peers a node admits by SPIFFE ID: entries are a trust domain (any workload of
    it, or none) or ``trust_domain/workload/path`` (exactly that workload)."""

    allowed: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for entry in self.allowed:
            if entry.startswith("spiffe://"):
                raise SpiffeIdError(
                    "scheme",
                    f"allowed_peers entry {entry!r}: give 'trust.domain' or "
                    "'trust.domain/workload/path', without spiffe://",
                )
            domain, slash, path = entry.partition("/")
            validate_trust_domain(domain)
            if slash and not path:  # "example.org/" must not silently mean the whole domain
                raise SpiffeIdError(
                    "trailing-slash",
                    f"allowed_peers entry {entry!r}: path cannot have a trailing slash (give "
                    "a workload path, or the trust domain alone)",
                )
            if path:
                validate_workload_path(path)

    def __bool__(self) -> bool:
        return bool(self.allowed)

    def admits(self, spiffe_id: SpiffeId) -> bool:
        """Whether a peer presenting *spiffe_id* (identity already checked) may connect."""
        workload = "/".join(spiffe_id.segments[1:])
        for entry in self.allowed:
            domain, _, path = entry.partition("/")
            if domain == spiffe_id.trust_domain and (not path or path == workload):
                return True
        return False


@dataclass(frozen=True, slots=True)
class SpiffeSettings:
    """The ``spiffe`` plugin's settings section."""

    trust_domain: str | None = None
    """This node's trust domain; None: the node presents no SPIFFE ID."""
    workload_path: str | None = None
    """This node's workload path (needs a trust domain)."""
    allowed_peers: tuple[str, ...] = ()
    """If set, only peers whose SPIFFE ID matches an entry connect: ``"example.org"`` admits
    any peer of that trust domain, ``"example.org/api"`` only that workload path."""
    own: SpiffeConfig | None = field(default=None, init=False, compare=False)
    policy: PeerPolicy = field(default=PeerPolicy(), init=False, compare=False)

    def __post_init__(self) -> None:
        if self.workload_path is not None and self.trust_domain is None:
            raise ConfigError("spiffe: workload_path needs a trust_domain")
        allowed = self.allowed_peers
        if isinstance(allowed, str) or not all(isinstance(a, str) for a in allowed):
            raise ConfigError(f"spiffe: allowed_peers must be a list of strings, got {allowed!r}")
        try:
            own = (
                None
                if self.trust_domain is None
                else SpiffeConfig(self.trust_domain, self.workload_path)
            )
            policy = PeerPolicy(tuple(allowed))
        except SpiffeIdError as exc:
            raise ConfigError(f"spiffe: {exc}") from None
        object.__setattr__(self, "allowed_peers", tuple(allowed))
        object.__setattr__(self, "own", own)
        object.__setattr__(self, "policy", policy)

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> SpiffeSettings:
        """Build from the plugin's settings section; unknown keys are an error (typos)."""
        return plugin_config(cls, settings, "spiffe")
