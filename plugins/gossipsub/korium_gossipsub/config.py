"""GossipSub settings: one validated dataclass, filled from the node's ``gossipsub`` settings.

Defaults are the GossipSub v1.1 spec's (D=6, D_lo=5, D_hi=12, heartbeat 1 s, mcache 5 windows
gossiping from 3, seen cache 2 min, prune backoff 1 min...) and korium's security limits
(64 KB messages, 10,000 topics, 1,000 peers per topic, publish 100/s, receive 50/s per peer).
Every queue and table has a cap here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeGuard

from korium.config import plugin_config
from korium.errors import ConfigError
from korium.netaddr import DEFAULT_EXEMPT_NETWORKS, ExemptNetworks
from korium_gossipsub.score import ScoreParams, ScoreThresholds

MAX_MESSAGE_SIZE: Final = 64 * 1024
"""Largest payload a message may carry (the spec's 64 KB)."""
MAX_TOPIC_LENGTH: Final = 256
"""Longest topic name, in characters (printable ASCII)."""


@dataclass(slots=True)
class GossipConfig:
    """Settings of one node's GossipSub router. ``GossipConfig.from_settings(settings)``."""

    # -- mesh ---------------------------------------------------------------------------------
    d: int = 6
    """Target number of mesh peers per topic."""
    d_lo: int = 5
    """Fewer mesh peers than this: graft more at the next heartbeat."""
    d_hi: int = 12
    """More mesh peers than this: prune down to ``d`` at the next heartbeat."""
    d_out: int = 2
    """Mesh peers per topic that must be outbound (peers we grafted), against eclipse."""
    d_score: int = 4
    """Mesh peers kept by score when pruning (the rest are chosen at random)."""
    d_lazy: int = 6
    """Minimum peers that receive IHAVE gossip per topic and heartbeat."""
    gossip_factor: float = 0.25
    """Share of the eligible non-mesh peers that receive gossip, when larger than d_lazy."""
    heartbeat_s: float = 1.0
    fanout_ttl_s: float = 60.0
    """A topic we publish to without subscribing keeps its fanout peers this long."""
    flood_publish: bool = True
    """Send our own messages to every topic peer above the publish threshold, not just the mesh."""
    prune_backoff_s: float = 60.0
    """A pruned peer may not graft again for this long."""
    unsubscribe_backoff_s: float = 10.0
    """Backoff we ask for when we prune because we leave a topic."""
    graft_flood_s: float = 10.0
    """A GRAFT this soon after our PRUNE costs an extra behaviour penalty."""
    prune_peers: int = 16
    """Peers offered in peer exchange (PX) when pruning."""
    opportunistic_graft_ticks: int = 60
    """Heartbeats between opportunistic grafting rounds."""
    opportunistic_graft_peers: int = 2
    keepalive_s: float = 30.0
    """Peers sharing a topic with us get an empty frame after this long without traffic, so
    idle connections (and so topic peers) are not lost."""

    # -- caches and gossip --------------------------------------------------------------------
    history_length: int = 5
    """Heartbeat windows of messages kept for IWANT (the message cache)."""
    history_gossip: int = 3
    """Of those, the newest windows advertised in IHAVE."""
    seen_ttl_s: float = 120.0
    """How long a message id is remembered, so copies are dropped as duplicates."""
    max_seen: int = 200_000
    """Message ids remembered at most (oldest forgotten first; counted)."""
    message_max_age_s: float = 90.0
    """Messages published longer ago than this are refused as replays. With ``clock_skew_s``
    it must fit in ``seen_ttl_s``, so a replay is caught either as seen or as too old."""
    clock_skew_s: float = 30.0
    """Messages dated this far in the future are still accepted (publisher clock ahead)."""
    max_ihave_length: int = 500
    """Message ids asked for (IWANT) from one peer per heartbeat, and advertised per IHAVE.
    At most ``peer_queue``, so a peer can answer every IWANT without dropping (go-libp2p
    allows 5000 ids but has no per-message queue bound)."""
    max_ihave_messages: int = 10
    """IHAVE messages accepted from one peer per heartbeat."""
    iwant_followup_s: float = 3.0
    """A peer that advertised an id and does not deliver it within this time is penalised."""
    gossip_retransmission: int = 3
    """Times one message is sent to one peer in answer to IWANT."""
    idontwant_threshold: int = 1024
    """Messages of at least this many bytes trigger IDONTWANT to our mesh peers (v1.2)."""
    max_idontwant: int = 1000
    """Message ids remembered per peer from its IDONTWANTs (more are ignored)."""
    idontwant_ttl_s: float = 3.0
    """How long a peer's IDONTWANT is honoured."""

    # -- limits -------------------------------------------------------------------------------
    max_message_size: int = MAX_MESSAGE_SIZE
    max_topics: int = 10_000
    """Topics known to this node: its own subscriptions and those of its peers."""
    max_topics_per_peer: int = 1_000
    """Subscriptions remembered per peer (more are ignored and counted)."""
    max_peers_per_topic: int = 1_000
    publish_rate: float = 100.0
    """Local publishes per second; ``publish`` waits beyond it (backpressure)."""
    receive_rate: float = 50.0
    """Frames per second accepted from one peer (bursts of twice that); the excess is dropped,
    counted and penalised. Senders pace their frames to this rate and batch the messages that
    accumulate meanwhile, so a topic can carry more messages per second than this."""
    source_rate: float = 200.0
    """New messages per second accepted from one publisher (twice the publish limit every
    honest node keeps to), with a burst of the message cache's window (IWANT repair arrives at
    once); the excess is dropped and counted, and costs a behaviour penalty when the
    publisher itself delivered it."""
    max_cache_bytes: int = 64 * 1024 * 1024
    """Bytes of message data the message cache holds at most (oldest dropped first)."""
    receive_burst: int = 500
    """Frames from one peer accepted at once above the rate (10 s worth). Senders pace with
    half of it, so frames held up by a congested path and then released together are not
    mistaken for a flood."""
    flood_penalty: float = 0.1
    """Behaviour penalty (P7) per frame dropped by the receive limit."""
    delivery_queue: int = 1024
    """Messages waiting for the application in ``messages()``; beyond it the oldest is dropped
    and counted (the router never waits for a slow consumer)."""
    peer_queue: int = 512
    """Messages waiting to be sent to one peer; control messages go first and are bounded by
    ``peer_control_queue``. Overflow drops forwarded messages (counted); our own publishes wait."""
    peer_control_queue: int = 4096
    max_frame_bytes: int = 256 * 1024
    """Frames to one peer are cut at about this size (several frames when more is queued)."""

    # -- scoring ------------------------------------------------------------------------------
    score: ScoreParams = field(default_factory=ScoreParams)
    thresholds: ScoreThresholds = field(default_factory=ScoreThresholds)
    exempt_networks: tuple[str, ...] = DEFAULT_EXEMPT_NETWORKS
    """Addresses exempt from the IP colocation penalty (P6): loopback and private ranges, so a
    local cluster works. Set to ``()`` to apply it everywhere."""

    exempt: ExemptNetworks = field(
        default_factory=lambda: ExemptNetworks(()), init=False, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first setting that is out of range."""
        for name in (
            "d",
            "d_lo",
            "d_hi",
            "history_length",
            "history_gossip",
            "max_seen",
            "max_ihave_length",
            "max_ihave_messages",
            "gossip_retransmission",
            "max_idontwant",
            "max_message_size",
            "max_topics",
            "max_topics_per_peer",
            "max_peers_per_topic",
            "delivery_queue",
            "peer_queue",
            "peer_control_queue",
            "max_frame_bytes",
            "receive_burst",
            "max_cache_bytes",
            "opportunistic_graft_ticks",
        ):
            _positive_int(name, getattr(self, name))
        for name in (
            "d_out",
            "d_score",
            "d_lazy",
            "prune_peers",
            "opportunistic_graft_peers",
            "idontwant_threshold",
        ):
            value = getattr(self, name)
            if not _is_int(value) or value < 0:
                raise ConfigError(f"gossipsub: {name} must be an integer >= 0, got {value!r}")
        if not self.d_lo <= self.d <= self.d_hi:
            raise ConfigError(
                f"gossipsub: need d_lo <= d <= d_hi, got {self.d_lo}, {self.d}, {self.d_hi}"
            )
        if not (self.d_out < self.d_lo and self.d_out <= self.d // 2):
            raise ConfigError(f"gossipsub: need d_out < d_lo and d_out <= d / 2, got {self.d_out}")
        if self.d_score > self.d:
            raise ConfigError(f"gossipsub: need d_score <= d, got {self.d_score} > {self.d}")
        if self.max_ihave_length > self.peer_queue:
            raise ConfigError(
                "gossipsub: max_ihave_length cannot exceed peer_queue (IWANT answers would be "
                "dropped by the peer's queue)"
            )
        if self.history_gossip > self.history_length:
            raise ConfigError("gossipsub: history_gossip cannot exceed history_length")
        for name in (
            "heartbeat_s",
            "fanout_ttl_s",
            "seen_ttl_s",
            "message_max_age_s",
            "iwant_followup_s",
            "idontwant_ttl_s",
            "publish_rate",
            "receive_rate",
            "source_rate",
            "keepalive_s",
        ):
            _positive_number(name, getattr(self, name))
        for name in (
            "prune_backoff_s",
            "unsubscribe_backoff_s",
            "graft_flood_s",
            "clock_skew_s",
            "flood_penalty",
            "gossip_factor",
        ):
            value = getattr(self, name)
            if not _is_number(value) or not value >= 0:
                raise ConfigError(f"gossipsub: {name} must be a number >= 0, got {value!r}")
        if self.gossip_factor > 1:
            raise ConfigError(f"gossipsub: gossip_factor must be <= 1, got {self.gossip_factor}")
        if self.message_max_age_s + self.clock_skew_s > self.seen_ttl_s:
            raise ConfigError(
                "gossipsub: message_max_age_s + clock_skew_s must not exceed seen_ttl_s, or a "
                "replay could arrive after its id was forgotten and still look fresh"
            )
        if self.max_message_size > MAX_MESSAGE_SIZE:
            raise ConfigError(f"gossipsub: max_message_size cannot exceed {MAX_MESSAGE_SIZE}")
        if self.max_frame_bytes < self.max_message_size + 1024:
            raise ConfigError("gossipsub: max_frame_bytes must hold one message of max size")
        if not isinstance(self.flood_publish, bool):
            raise ConfigError(
                f"gossipsub: flood_publish must be True or False: {self.flood_publish!r}"
            )
        if not isinstance(self.score, ScoreParams):
            raise ConfigError("gossipsub: score must be a korium_gossipsub.ScoreParams")
        if not isinstance(self.thresholds, ScoreThresholds):
            raise ConfigError("gossipsub: thresholds must be a korium_gossipsub.ScoreThresholds")
        self.score.validate()
        self.thresholds.validate()
        networks = self.exempt_networks
        if not isinstance(networks, list | tuple) or not all(isinstance(n, str) for n in networks):
            raise ConfigError(
                f"gossipsub: exempt_networks must be a list of CIDR strings, got {networks!r}"
            )
        self.exempt_networks = tuple(networks)
        try:
            self.exempt = ExemptNetworks(self.exempt_networks)
        except ConfigError as exc:
            raise ConfigError(f"gossipsub: exempt_networks: {exc}") from None

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> GossipConfig:
        """Build from a plugin settings section; unknown keys are an error (typos)."""
        return plugin_config(cls, settings, "gossipsub")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _positive_int(name: str, value: object) -> None:
    if not _is_int(value) or not value > 0:  # type: ignore[operator]
        raise ConfigError(f"gossipsub: {name} must be a positive integer, got {value!r}")


def _is_number(value: object) -> TypeGuard[float]:
    """A finite int or float (not a bool): infinite rates and times make no sense here."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _positive_number(name: str, value: object) -> None:
    if not _is_number(value) or not value > 0:
        raise ConfigError(f"gossipsub: {name} must be a positive number, got {value!r}")
