"""DHT settings: one validated dataclass, filled from the node's ``dht`` plugin settings.

Every table and cache has a cap here; the defaults are the spec's constants.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from korium.config import plugin_config
from korium.errors import ConfigError
from korium.netaddr import DEFAULT_EXEMPT_NETWORKS, ExemptNetworks, IpAddress

MAX_VALUE_SIZE: Final = 1024 * 1024
"""Largest value the DHT stores (the spec's MAX_VALUE_SIZE)."""
PER_PEER_STORAGE_QUOTA: Final = 1024 * 1024
PER_PEER_ENTRY_LIMIT: Final = 100
ID_BITS: Final = 256


@dataclass(slots=True)
class DhtConfig:
    """Settings of one node's DHT. ``DhtConfig.from_settings(node.config.settings("dht"))``."""

    # -- routing table --------------------------------------------------------------------
    k: int = 20
    """Bucket size and lookup width while the network is healthy."""
    k_min: int = 10
    k_max: int = 30
    replacement_cache: int = 8
    """Candidates kept per full bucket, to replace contacts that stop answering."""
    failures_before_eviction: int = 2
    """Consecutive failed requests after which a contact is replaced (if a replacement exists)."""
    max_per_prefix: int = 2
    """Contacts per bucket from one /24 (IPv4) or /48 (IPv6): the anti-eclipse rule."""
    exempt_networks: tuple[str, ...] = DEFAULT_EXEMPT_NETWORKS
    """Addresses exempt from the per-IP and per-prefix rules (loopback and private ranges, so
    a local cluster works). Set to ``()`` to apply the rules everywhere."""
    insertions_per_peer: int = 50
    """Routing insertions one peer may cause per ``insertion_window_s`` (token bucket)."""
    insertions_per_ip: int = 20
    """Routing insertions of contacts from one IP address per ``insertion_window_s``."""
    insertion_window_s: float = 60.0
    rate_limiter_entries: int = 1000
    """Peers and IPs tracked by each insertion rate limiter (LRU)."""
    refresh_interval_s: float = 1800.0
    """A bucket untouched this long is refreshed by a lookup of a random id in its range."""
    join_refresh: int = 256
    """On bootstrap, also look up a random id in the farthest *join_refresh* empty buckets
    (all of them by default: Kademlia's join), so the far id space is known from the start.
    Each costs one lookup; 0 leaves the far buckets to inbound traffic and periodic refresh."""

    # -- adaptive parameters ----------------------------------------------------------------
    alpha: int = 3
    """Requests in flight per lookup while the network is healthy."""
    alpha_min: int = 2
    alpha_max: int = 5
    churn_window: int = 100
    """Recent request outcomes that churn and congestion are measured over."""

    # -- lookups ------------------------------------------------------------------------------
    query_timeout_s: float = 3.0
    """Timeout of one request within a lookup."""
    lookup_timeout_s: float = 10.0
    """Timeout of a whole lookup; it then returns what answered so far."""
    max_contacts_per_response: int = 30
    """Contacts of a FIND_NODE answer that are considered (the rest are ignored; an answer
    with more than 100 is a decode error)."""
    tiering: bool = True
    """Prefer low-latency tiers among candidates of equal progress."""

    # -- tiering ------------------------------------------------------------------------------
    tiering_prefixes: int = 10_000
    """RTT statistics are kept for at most this many network prefixes (LRU)."""
    tiering_recompute_s: float = 60.0
    """How often tiers are recomputed from the RTT statistics."""
    max_tiers: int = 7

    # -- storage ------------------------------------------------------------------------------
    max_value_size: int = MAX_VALUE_SIZE
    per_peer_bytes: int = PER_PEER_STORAGE_QUOTA
    per_peer_entries: int = PER_PEER_ENTRY_LIMIT
    stores_per_peer: int = 20
    """Stores one peer may make per ``store_window_s``."""
    store_window_s: float = 60.0
    max_entries: int = 100_000
    """Entries this node stores for others in total."""
    max_total_bytes: int = 64 * 1024 * 1024
    """Bytes this node stores for others in total."""
    ttl_s: float = 24 * 3600.0
    """Stored values and records expire this long after they were stored."""
    republish_s: float = 3600.0
    """A node republishes its own contact record this often (well before the TTL)."""
    replication: int = 20
    """Peers a value or record is stored on."""

    # -- node ---------------------------------------------------------------------------------
    addresses: tuple[str, ...] | None = None
    """Addresses to advertise in this node's contact record (default: the node's own)."""
    server: bool = True
    """Whether this node offers itself as a routing contact (False: client-only)."""

    _exempt: ExemptNetworks = field(
        default=ExemptNetworks(()), init=False, repr=False, compare=False
    )
    """Built from ``exempt_networks`` by :meth:`validate`."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first setting that is out of range."""
        _order("k", self.k_min, self.k, self.k_max, low=1)
        _order("alpha", self.alpha_min, self.alpha, self.alpha_max, low=1)
        if not _is_int(self.join_refresh) or not 0 <= self.join_refresh <= 256:
            raise ConfigError(f"dht: join_refresh must be 0 to 256, got {self.join_refresh!r}")
        for name in (
            "replacement_cache",
            "failures_before_eviction",
            "max_per_prefix",
            "insertions_per_peer",
            "insertions_per_ip",
            "rate_limiter_entries",
            "churn_window",
            "max_contacts_per_response",
            "tiering_prefixes",
            "max_value_size",
            "per_peer_bytes",
            "per_peer_entries",
            "stores_per_peer",
            "max_entries",
            "max_total_bytes",
            "replication",
        ):
            value = getattr(self, name)
            if not _is_int(value) or value < 1:
                raise ConfigError(f"dht: {name} must be a positive integer, got {value!r}")
        if not _is_int(self.max_tiers) or not 1 <= self.max_tiers <= 7:
            raise ConfigError(f"dht: max_tiers must be 1 to 7, got {self.max_tiers}")
        if self.max_contacts_per_response < self.k_max:
            raise ConfigError("dht: max_contacts_per_response must be at least k_max")
        if self.max_value_size > MAX_VALUE_SIZE:
            raise ConfigError(f"dht: max_value_size cannot exceed {MAX_VALUE_SIZE}")
        for name in (
            "insertion_window_s",
            "refresh_interval_s",
            "query_timeout_s",
            "lookup_timeout_s",
            "tiering_recompute_s",
            "store_window_s",
            "ttl_s",
            "republish_s",
        ):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ConfigError(
                    f"dht: {name} must be a positive number of seconds, got {value!r}"
                )
        if self.republish_s >= self.ttl_s:
            raise ConfigError("dht: republish_s must be shorter than ttl_s, or records lapse")
        try:
            self._exempt = ExemptNetworks(self.exempt_networks)
        except ConfigError as exc:
            raise ConfigError(f"dht: exempt_networks: {exc}") from None
        if self.addresses is not None:
            if isinstance(self.addresses, str | bytes):
                raise ConfigError("dht: addresses must be a list of 'HOST:PORT' strings, not one")
            self.addresses = tuple(self.addresses)
            if not all(isinstance(a, str) and a for a in self.addresses):
                raise ConfigError(f"dht: addresses must be 'HOST:PORT' strings: {self.addresses}")

    def is_exempt(self, ip: IpAddress) -> bool:
        """Whether *ip* is exempt from the per-IP and per-prefix rules."""
        return ip in self._exempt

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> DhtConfig:
        """Build from a plugin settings section; unknown keys are an error (typos)."""
        return plugin_config(cls, settings, "dht")


def _order(name: str, low_value: int, value: int, high_value: int, *, low: int) -> None:
    for label, number in ((f"{name}_min", low_value), (name, value), (f"{name}_max", high_value)):
        if not _is_int(number) or number < low:
            raise ConfigError(f"dht: {label} must be an integer >= {low}, got {number!r}")
    if not low_value <= value <= high_value:
        raise ConfigError(
            f"dht: need {name}_min <= {name} <= {name}_max, got {low_value}, {value}, {high_value}"
        )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
