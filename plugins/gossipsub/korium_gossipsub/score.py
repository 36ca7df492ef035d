"""GossipSub v1.1 peer scoring: the pure score state of one node.

The router reports what it sees (connections, GRAFT/PRUNE, deliveries, invalid messages,
misbehaviour) with the time passed in, and reads ``score(peer)`` for every frame it handles.
Follows the "Peer Scoring" section of the GossipSub v1.1 spec::

    score = TopicCap(sum_t weight_t * (w1*P1 + w2*P2 + w3*P3 + w3b*P3b + w4*P4))
            + w5*P5 + w6*P6 + w7*P7

Invariants, each there because the Rust reference broke it (rust-protocols.md section 2.7):

* Every component is live: a topic is scored with its own params or ``default_topic``, so
  P1-P4 are never silently inert, and P2, P3, P3b, P4 and P7 all decay.
* P6 counts only *connected* peers per IP; a count drops when a peer disconnects, changes IP
  or is evicted, and the other peers on that IP are re-scored at once.
* ``score()`` is one dict lookup. Cached scores are recomputed when one of the peer's counters
  changes (P6 moves its IP's peers too) and for every peer at ``refresh()``, where P1 grows.
* Memory is bounded: ``max_peers`` records, ``MAX_TOPICS_PER_PEER`` topics each, and topic
  counters that have decayed to zero outside the mesh are dropped.

Deliberately ignored: message ids and validation (the router says first, duplicate or
invalid), mesh decisions (see the thresholds), and any clock: ``now`` is monotonic seconds.
Events about a peer without a record are ignored, so a flood of unknown ids allocates nothing;
records are created by ``add_peer`` only.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Final

from korium.errors import ConfigError

Ip = str
"""A peer's IP address as text, e.g. ``"10.0.0.3"`` or ``"::1"``."""

MAX_TOPICS_PER_PEER: Final = 10_000
"""Topics with counters per peer (the spec's MAX_TOPICS); events on further topics are ignored."""

_NONNEG = ">= 0"
_NONPOS = "<= 0"
_POSITIVE = "> 0"
_UNIT = "in (0, 1)"

_RULES: Final[dict[str, Callable[[float], bool]]] = {
    _NONNEG: lambda v: v >= 0,
    _NONPOS: lambda v: v <= 0,
    _POSITIVE: lambda v: v > 0,
    _UNIT: lambda v: 0 < v < 1,
}


def _check(owner: str, name: str, value: object, rule: str) -> None:
    """Raise ConfigError naming *owner.name* unless *value* is a finite number obeying *rule*."""
    ok = (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and _RULES[rule](value)
    )
    if not ok:
        raise ConfigError(f"gossipsub score: {owner}.{name} must be a number {rule}, got {value!r}")


def _check_int(owner: str, name: str, value: object, low: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ConfigError(
            f"gossipsub score: {owner}.{name} must be an integer >= {low}, got {value!r}"
        )


# -- parameters -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TopicScoreParams:
    """How behaviour in one topic scores (the spec's per-topic parameters)."""

    topic_weight: float = 1.0
    # P1 time in mesh: min(time_in_mesh / quantum, cap) * weight
    time_in_mesh_weight: float = 0.02
    time_in_mesh_quantum_s: float = 1.0
    time_in_mesh_cap: float = 1800.0
    # P2 first message deliveries: counter capped at cap, decays
    first_message_deliveries_weight: float = 0.5
    first_message_deliveries_decay: float = 0.9
    first_message_deliveries_cap: float = 20.0
    # P3 mesh message delivery deficit: (threshold - counter)^2 once in mesh >= activation
    mesh_message_deliveries_weight: float = -0.5
    mesh_message_deliveries_decay: float = 0.9
    mesh_message_deliveries_threshold: float = 1.0
    mesh_message_deliveries_cap: float = 10.0
    mesh_message_deliveries_activation_s: float = 60.0
    mesh_message_deliveries_window_s: float = 0.5
    """Duplicates arriving this soon after the first copy count as near-first for P3."""
    # P3b mesh failure penalty: deficit^2 added on prune while P3 was active, decays
    mesh_failure_penalty_weight: float = -0.5
    mesh_failure_penalty_decay: float = 0.9
    # P4 invalid messages: counter^2 * weight, decays
    invalid_message_deliveries_weight: float = -10.0
    invalid_message_deliveries_decay: float = 0.99

    _FIELD_RULES = (
        ("topic_weight", _NONNEG),
        ("time_in_mesh_weight", _NONNEG),
        ("time_in_mesh_quantum_s", _POSITIVE),
        ("time_in_mesh_cap", _POSITIVE),
        ("first_message_deliveries_weight", _NONNEG),
        ("first_message_deliveries_decay", _UNIT),
        ("first_message_deliveries_cap", _POSITIVE),
        ("mesh_message_deliveries_weight", _NONPOS),
        ("mesh_message_deliveries_decay", _UNIT),
        ("mesh_message_deliveries_threshold", _NONNEG),
        ("mesh_message_deliveries_cap", _POSITIVE),
        ("mesh_message_deliveries_activation_s", _NONNEG),
        ("mesh_message_deliveries_window_s", _NONNEG),
        ("mesh_failure_penalty_weight", _NONPOS),
        ("mesh_failure_penalty_decay", _UNIT),
        ("invalid_message_deliveries_weight", _NONPOS),
        ("invalid_message_deliveries_decay", _UNIT),
    )

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first field out of range (spec constraints)."""
        self._validate("TopicScoreParams")

    def _validate(self, owner: str) -> None:
        for name, rule in self._FIELD_RULES:
            _check(owner, name, getattr(self, name), rule)
        # The spec requires cap >= threshold: below it, P3 could never be satisfied.
        if self.mesh_message_deliveries_cap < self.mesh_message_deliveries_threshold:
            raise ConfigError(
                f"gossipsub score: {owner}.mesh_message_deliveries_cap must be >= "
                f"mesh_message_deliveries_threshold ({self.mesh_message_deliveries_threshold}),"
                f" got {self.mesh_message_deliveries_cap}"
            )


@dataclass(frozen=True, slots=True)
class ScoreThresholds:
    """Scores below which the router restricts a peer (the spec's "Score Thresholds")."""

    gossip: float = -10.0
    """Below: no IHAVE/IWANT exchanged with the peer."""
    publish: float = -50.0
    """Below: our own publishes are not flooded to the peer."""
    graylist: float = -80.0
    """Below: everything the peer sends is ignored."""
    accept_px: float = 10.0
    """PX from a pruning peer is accepted only at or above this."""
    opportunistic_graft: float = 1.0
    """A median mesh score below this triggers opportunistic grafting."""

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first threshold breaking the spec's order."""
        owner = "ScoreThresholds"
        for name in ("gossip", "publish", "graylist", "accept_px", "opportunistic_graft"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(
                    f"gossipsub score: {owner}.{name} must be a number, got {value!r}"
                )
            if not math.isfinite(value):
                raise ConfigError(f"gossipsub score: {owner}.{name} must be finite, got {value!r}")
        rules = (
            ("gossip", self.gossip < 0, "< 0"),
            ("publish", self.publish <= self.gossip, f"<= gossip ({self.gossip})"),
            ("graylist", self.graylist < self.publish, f"< publish ({self.publish})"),
            ("accept_px", self.accept_px >= 0, ">= 0"),
            ("opportunistic_graft", self.opportunistic_graft >= 0, ">= 0"),
        )
        for name, ok, rule in rules:
            if not ok:
                raise ConfigError(
                    f"gossipsub score: {owner}.{name} must be {rule}, got {getattr(self, name)!r}"
                )


@dataclass(frozen=True, slots=True)
class ScoreParams:
    """Everything that shapes peer scores (the spec's global and per-topic parameters)."""

    topics: Mapping[str, TopicScoreParams] = field(default_factory=dict)
    """Per-topic overrides."""
    default_topic: TopicScoreParams | None = field(default_factory=TopicScoreParams)
    """Params of topics without an override; None leaves such topics unscored."""
    topic_score_cap: float = 100.0
    """Cap on the sum of the topic contributions, ``min(sum, cap)``; 0 means no cap."""
    app_specific_weight: float = 1.0
    """w5: weight of the application's own score (P5)."""
    ip_colocation_weight: float = -10.0
    """w6: weight of P6 = (connected peers on the IP - threshold)^2 when above."""
    ip_colocation_threshold: int = 1
    behaviour_penalty_weight: float = -10.0
    """w7: weight of P7 = (penalty - threshold)^2 when above."""
    behaviour_penalty_threshold: float = 0.0
    behaviour_penalty_decay: float = 0.99
    decay_interval_s: float = 1.0
    """Counters are multiplied by their decay once per this many seconds."""
    decay_to_zero: float = 0.01
    """Decayed counters below this become 0, so idle records empty out."""
    retain_score_s: float = 60.0
    """A disconnected peer's record is kept this long, so reconnecting does not reset it."""
    max_peers: int = 10_000
    """Records kept (the spec's scored peers); beyond it the longest-disconnected, then the
    least recently active are dropped."""

    _FIELD_RULES = (
        ("topic_score_cap", _NONNEG),
        ("app_specific_weight", _NONNEG),
        ("ip_colocation_weight", _NONPOS),
        ("behaviour_penalty_weight", _NONPOS),
        ("behaviour_penalty_threshold", _NONNEG),
        ("behaviour_penalty_decay", _UNIT),
        ("decay_interval_s", _POSITIVE),
        ("retain_score_s", _NONNEG),
    )

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first field out of range (spec constraints)."""
        owner = "ScoreParams"
        for name, rule in self._FIELD_RULES:
            _check(owner, name, getattr(self, name), rule)
        _check(owner, "decay_to_zero", self.decay_to_zero, _NONNEG)
        if self.decay_to_zero >= 1:
            raise ConfigError(
                f"gossipsub score: {owner}.decay_to_zero must be < 1, got {self.decay_to_zero!r}"
            )
        # The spec: "Must be at least 1"; 0 would penalise every lone peer.
        _check_int(owner, "ip_colocation_threshold", self.ip_colocation_threshold, 1)
        _check_int(owner, "max_peers", self.max_peers, 1)
        if not isinstance(self.topics, Mapping):
            raise ConfigError(f"gossipsub score: {owner}.topics must be a mapping")
        for topic, params in self.topics.items():
            if not isinstance(topic, str) or not isinstance(params, TopicScoreParams):
                raise ConfigError(
                    f"gossipsub score: {owner}.topics must map topic names to "
                    f"TopicScoreParams, got {topic!r}: {params!r}"
                )
            params._validate(f"{owner}.topics[{topic!r}]")
        if self.default_topic is not None:
            if not isinstance(self.default_topic, TopicScoreParams):
                raise ConfigError(
                    f"gossipsub score: {owner}.default_topic must be TopicScoreParams or None"
                )
            self.default_topic._validate(f"{owner}.default_topic")

    def for_topic(self, topic: str) -> TopicScoreParams | None:
        """The params scoring *topic*, or None when it is unscored."""
        return self.topics.get(topic, self.default_topic)


# -- per-peer state ---------------------------------------------------------------------------


class _TopicRuntime:
    """One TopicScoreParams plus the decay factors of the refresh in progress."""

    __slots__ = ("f2", "f3", "f3b", "f4", "params")

    def __init__(self, params: TopicScoreParams) -> None:
        self.params = params
        self.f2 = self.f3 = self.f3b = self.f4 = 1.0

    def set_steps(self, steps: int) -> None:
        """Compute once per refresh what *steps* decay intervals multiply each counter by."""
        p = self.params
        self.f2 = p.first_message_deliveries_decay**steps
        self.f3 = p.mesh_message_deliveries_decay**steps
        self.f3b = p.mesh_failure_penalty_decay**steps
        self.f4 = p.invalid_message_deliveries_decay**steps


class _TopicStats:
    """A peer's counters in one scored topic."""

    __slots__ = ("failure", "first", "graft_time", "in_mesh", "invalid", "mesh", "rt")

    def __init__(self, rt: _TopicRuntime) -> None:
        self.rt = rt
        self.in_mesh = False
        self.graft_time = 0.0
        self.first = 0.0  # P2
        self.mesh = 0.0  # P3 counter
        self.failure = 0.0  # P3b
        self.invalid = 0.0  # P4 counter

    def is_empty(self) -> bool:
        return not self.in_mesh and not (self.first or self.mesh or self.failure or self.invalid)


class _Record:
    """Everything scored about one peer; ``base`` is its score without P6."""

    __slots__ = ("app", "base", "connected", "disconnected_at", "ip", "peer", "penalty", "topics")

    def __init__(self, peer: Hashable) -> None:
        self.peer = peer
        self.ip: Ip | None = None  # the IP it is counted under for P6, while connected
        self.connected = True
        self.disconnected_at = 0.0
        self.topics: dict[str, _TopicStats] = {}
        self.app = 0.0  # P5
        self.penalty = 0.0  # P7 counter
        self.base = 0.0


# -- the score state --------------------------------------------------------------------------


class PeerScore:
    """Scores of every peer a node knows (pure: no I/O, time passed in).

    :param params: validated here; a bad value raises :class:`ConfigError`.
    :param is_exempt: addresses exempt from P6 (loopback, private allow-list); counted nowhere.
    """

    def __init__(
        self, params: ScoreParams, is_exempt: Callable[[Ip], bool] = lambda ip: False
    ) -> None:
        params.validate()
        self._params = params
        self._is_exempt = is_exempt
        self._default_rt = (
            None if params.default_topic is None else _TopicRuntime(params.default_topic)
        )
        self._topic_rts = {topic: _TopicRuntime(p) for topic, p in params.topics.items()}
        # Records in least-recently-active order; disconnected ones in disconnection order.
        self._records: OrderedDict[Hashable, _Record] = OrderedDict()
        self._disconnected: OrderedDict[Hashable, float] = OrderedDict()
        self._scores: dict[Hashable, float] = {}
        self._ip_peers: dict[Ip, set[_Record]] = {}
        self._now = -math.inf
        self._decay_anchor: float | None = None
        self.evicted = 0
        """Records dropped because ``max_peers`` was reached."""

    # -- reading ----------------------------------------------------------------------------

    def score(self, peer: Hashable) -> float:
        """The peer's cached score; 0.0 for unknown peers. O(1): called per incoming frame."""
        return self._scores.get(peer, 0.0)

    def __contains__(self, peer: object) -> bool:
        return peer in self._records

    def __len__(self) -> int:
        return len(self._records)

    def breakdown(self, peer: Hashable, now: float) -> dict[str, float]:
        """Weighted contribution of each component at *now*, for introspection and tests.

        Keys ``p1``, ``p2``, ``p3``, ``p3b``, ``p4`` (summed over topics, times topic weight,
        before the cap), ``topics`` (after the cap), ``p5``, ``p6``, ``p7`` and ``score``.
        """
        parts = dict.fromkeys(("p1", "p2", "p3", "p3b", "p4", "p5", "p6", "p7"), 0.0)
        rec = self._records.get(peer)
        if rec is None:
            return {**parts, "topics": 0.0, "score": 0.0}
        for st in rec.topics.values():
            p = st.rt.params
            tw = p.topic_weight
            p1, p3 = self._mesh_terms(st, now)
            parts["p1"] += tw * p.time_in_mesh_weight * p1
            parts["p2"] += tw * p.first_message_deliveries_weight * st.first
            parts["p3"] += tw * p.mesh_message_deliveries_weight * p3
            parts["p3b"] += tw * p.mesh_failure_penalty_weight * st.failure
            parts["p4"] += tw * p.invalid_message_deliveries_weight * st.invalid * st.invalid
        topics = sum(parts[k] for k in ("p1", "p2", "p3", "p3b", "p4"))
        cap = self._params.topic_score_cap
        if cap > 0 and topics > cap:
            topics = cap
        parts["p5"] = self._params.app_specific_weight * rec.app
        parts["p6"] = self._p6_term(rec.ip)
        parts["p7"] = self._p7_term(rec.penalty)
        return {
            **parts,
            "topics": topics,
            "score": topics + parts["p5"] + parts["p6"] + parts["p7"],
        }

    # -- connections ------------------------------------------------------------------------

    def add_peer(self, peer: Hashable, ip: Ip | None, now: float) -> None:
        """The peer connected (again) from *ip*.

        A retained record is restored with its counters; an expired one is replaced by a new
        record. An IP change moves the peer's P6 count. *ip* is compared as text, so pass the
        transport's canonical form; None or an exempt address is counted nowhere.
        """
        self._observe(now)
        rec = self._records.get(peer)
        if rec is not None and not rec.connected and self._expired(rec.disconnected_at):
            self._drop(peer)
            rec = None
        if rec is None:
            while len(self._records) >= self._params.max_peers:
                self._evict_one()
            rec = _Record(peer)
            self._records[peer] = rec
        else:
            self._records.move_to_end(peer)
            if not rec.connected:
                rec.connected = True
                del self._disconnected[peer]
        counted = ip if ip is not None and not self._is_exempt(ip) else None
        if counted != rec.ip:
            self._release_ip(rec)
            if counted is not None:
                rec.ip = counted
                peers = self._ip_peers.setdefault(counted, set())
                peers.add(rec)
                self._rescore_ip(counted)
        self._recompute(rec)

    def remove_peer(self, peer: Hashable, now: float) -> None:
        """The peer disconnected: it leaves every mesh (P3b applies), its P6 count is released
        at once, and its record is retained for ``retain_score_s``."""
        rec = self._records.get(peer)
        if rec is None or not rec.connected:
            return
        self._observe(now)
        for st in rec.topics.values():
            if st.in_mesh:
                self._leave_mesh(st, now)
        self._release_ip(rec)
        rec.connected = False
        rec.disconnected_at = self._now
        self._disconnected[peer] = self._now
        self._recompute(rec)

    # -- mesh -------------------------------------------------------------------------------

    def graft(self, peer: Hashable, topic: str, now: float) -> None:
        """The peer joined our mesh for *topic*: P1 time and P3 activation count from now."""
        rec = self._active(peer, now)
        if rec is None or not rec.connected:
            return
        st = self._stats(rec, topic)
        if st is None or st.in_mesh:
            return
        st.in_mesh = True
        st.graft_time = now
        st.mesh = 0.0  # P3 counts deliveries of this mesh membership
        self._recompute(rec)

    def prune(self, peer: Hashable, topic: str, now: float) -> None:
        """The peer left our mesh for *topic*: P3b grows if P3 was active and in deficit."""
        rec = self._active(peer, now)
        if rec is None:
            return
        st = rec.topics.get(topic)
        if st is None or not st.in_mesh:
            return
        self._leave_mesh(st, now)
        self._recompute(rec)

    # -- deliveries and penalties -----------------------------------------------------------

    def first_delivery(self, peer: Hashable, topic: str, now: float) -> None:
        """The peer was first to deliver a valid message: P2 +1 and, in the mesh, P3 +1."""
        rec = self._active(peer, now)
        if rec is None:
            return
        st = self._stats(rec, topic)
        if st is None:
            return
        p = st.rt.params
        before = (st.first, st.mesh)
        st.first = min(st.first + 1.0, p.first_message_deliveries_cap)
        if st.in_mesh:
            st.mesh = min(st.mesh + 1.0, p.mesh_message_deliveries_cap)
        if (st.first, st.mesh) != before:  # capped counters change nothing
            self._recompute(rec)

    def duplicate_delivery(self, peer: Hashable, topic: str, first_seen: float, now: float) -> None:
        """A valid duplicate: near-first (within the window) credits P3 for a mesh peer.

        The window is short so a mesh peer cannot earn P3 by echoing what we sent it.
        """
        rec = self._active(peer, now)
        if rec is None:
            return
        st = rec.topics.get(topic)
        if st is None or not st.in_mesh:
            return
        p = st.rt.params
        cap = p.mesh_message_deliveries_cap
        if now - first_seen <= p.mesh_message_deliveries_window_s and st.mesh < cap:
            st.mesh = min(st.mesh + 1.0, cap)
            self._recompute(rec)

    def invalid_message(self, peer: Hashable, topic: str) -> None:
        """The peer sent a message that failed validation in *topic*: P4 +1."""
        rec = self._active(peer, None)
        if rec is None:
            return
        st = self._stats(rec, topic)
        if st is None:
            return
        st.invalid += 1.0
        self._recompute(rec)

    def set_application_score(self, peer: Hashable, value: float) -> None:
        """Set P5, the application's own opinion of the peer; kept for the record's life.

        :raises ValueError: *value* is not finite.
        """
        if not math.isfinite(value):
            raise ValueError(f"application score must be finite, got {value!r}")
        rec = self._active(peer, None)
        if rec is None:
            return
        rec.app = float(value)
        self._recompute(rec)

    def add_penalty(self, peer: Hashable, amount: float = 1.0) -> None:
        """Add to P7 (GRAFT during backoff, a broken IWANT promise, flooding).

        :raises ValueError: *amount* is negative or not finite (penalties only grow).
        """
        if not (math.isfinite(amount) and amount >= 0):
            raise ValueError(f"penalty must be a finite number >= 0, got {amount!r}")
        rec = self._active(peer, None)
        if rec is None:
            return
        rec.penalty += amount
        self._recompute(rec)

    # -- heartbeat --------------------------------------------------------------------------

    def refresh(self, now: float) -> None:
        """Call every heartbeat: decay once per elapsed decay interval (catching up when late),
        drop expired retained records, and recompute every score (P1 grows with time).

        :raises ValueError: *now* is not finite.
        """
        if not math.isfinite(now):
            raise ValueError(f"now must be finite, got {now!r}")
        self._observe(now)
        now = self._now
        params = self._params
        while self._disconnected:
            peer, since = next(iter(self._disconnected.items()))
            if not self._expired(since):
                break
            self._drop(peer)
        steps = 0
        if self._decay_anchor is not None:
            steps = int((now - self._decay_anchor) // params.decay_interval_s)
            if steps > 0:
                self._decay_anchor += steps * params.decay_interval_s
                for rt in self._topic_rts.values():
                    rt.set_steps(steps)
                if self._default_rt is not None:
                    self._default_rt.set_steps(steps)
        f7 = params.behaviour_penalty_decay**steps
        zero = params.decay_to_zero
        scores = self._scores
        for peer, rec in self._records.items():
            if steps > 0:
                if rec.penalty:
                    rec.penalty *= f7
                    if rec.penalty < zero:
                        rec.penalty = 0.0
                emptied = False
                for st in rec.topics.values():
                    rt = st.rt
                    if st.first:
                        st.first *= rt.f2
                        if st.first < zero:
                            st.first = 0.0
                    if st.mesh:
                        st.mesh *= rt.f3
                        if st.mesh < zero:
                            st.mesh = 0.0
                    if st.failure:
                        st.failure *= rt.f3b
                        if st.failure < zero:
                            st.failure = 0.0
                    if st.invalid:
                        st.invalid *= rt.f4
                        if st.invalid < zero:
                            st.invalid = 0.0
                    emptied = emptied or st.is_empty()
                if emptied:
                    rec.topics = {t: st for t, st in rec.topics.items() if not st.is_empty()}
            rec.base = base = self._base(rec, now)
            scores[peer] = base + self._p6_term(rec.ip) if rec.ip is not None else base

    # -- internals --------------------------------------------------------------------------

    def _observe(self, now: float) -> None:
        """Remember the latest time seen; recomputes without a *now* argument use it."""
        if now > self._now:
            self._now = now
        if self._decay_anchor is None:
            self._decay_anchor = now

    def _active(self, peer: Hashable, now: float | None) -> _Record | None:
        """The peer's record, marked most recently active, or None if it has none."""
        rec = self._records.get(peer)
        if rec is None:
            return None
        if now is not None:
            self._observe(now)
        self._records.move_to_end(peer)
        return rec

    def _expired(self, disconnected_at: float) -> bool:
        return self._now - disconnected_at >= self._params.retain_score_s

    def _stats(self, rec: _Record, topic: str) -> _TopicStats | None:
        """The peer's counters for *topic*, created on first use; None if it is unscored."""
        st = rec.topics.get(topic)
        if st is None:
            rt = self._topic_rts.get(topic, self._default_rt)
            if rt is None or len(rec.topics) >= MAX_TOPICS_PER_PEER:
                return None
            st = rec.topics[topic] = _TopicStats(rt)
        return st

    @staticmethod
    def _mesh_terms(st: _TopicStats, now: float) -> tuple[float, float]:
        """Unweighted (P1, P3) of a topic at *now*; both 0 outside the mesh."""
        if not st.in_mesh:
            return 0.0, 0.0
        p = st.rt.params
        in_mesh = now - st.graft_time
        p1 = min(max(in_mesh, 0.0) / p.time_in_mesh_quantum_s, p.time_in_mesh_cap)
        p3 = 0.0
        threshold = p.mesh_message_deliveries_threshold
        if in_mesh >= p.mesh_message_deliveries_activation_s and st.mesh < threshold:
            p3 = (threshold - st.mesh) ** 2
        return p1, p3

    @staticmethod
    def _leave_mesh(st: _TopicStats, now: float) -> None:
        """Record a prune: the P3 deficit, if P3 was active, becomes sticky P3b."""
        _, p3 = PeerScore._mesh_terms(st, now)
        st.failure += p3
        st.in_mesh = False

    def _base(self, rec: _Record, now: float) -> float:
        """The peer's score without P6 at *now* (P6 is shared per IP, added separately)."""
        total = 0.0
        for st in rec.topics.values():
            p = st.rt.params
            t = (
                p.first_message_deliveries_weight * st.first
                + p.mesh_failure_penalty_weight * st.failure
                + p.invalid_message_deliveries_weight * st.invalid * st.invalid
            )
            if st.in_mesh:
                p1, p3 = self._mesh_terms(st, now)
                t += p.time_in_mesh_weight * p1 + p.mesh_message_deliveries_weight * p3
            total += p.topic_weight * t
        params = self._params
        cap = params.topic_score_cap
        if cap > 0 and total > cap:
            total = cap
        return total + params.app_specific_weight * rec.app + self._p7_term(rec.penalty)

    def _p7_term(self, penalty: float) -> float:
        excess = penalty - self._params.behaviour_penalty_threshold
        return self._params.behaviour_penalty_weight * excess * excess if excess > 0 else 0.0

    def _p6_term(self, ip: Ip | None) -> float:
        if ip is None:
            return 0.0
        surplus = len(self._ip_peers[ip]) - self._params.ip_colocation_threshold
        return self._params.ip_colocation_weight * surplus * surplus if surplus > 0 else 0.0

    def _recompute(self, rec: _Record) -> None:
        rec.base = self._base(rec, self._now)
        self._scores[rec.peer] = rec.base + self._p6_term(rec.ip)

    def _rescore_ip(self, ip: Ip) -> None:
        """Every peer on *ip* shares one P6 term: update them all after its count changed."""
        term = self._p6_term(ip)
        scores = self._scores
        for rec in self._ip_peers[ip]:
            scores[rec.peer] = rec.base + term

    def _release_ip(self, rec: _Record) -> None:
        """Stop counting *rec* under its IP (disconnect, IP change, eviction)."""
        ip = rec.ip
        if ip is None:
            return
        rec.ip = None
        peers = self._ip_peers[ip]
        peers.discard(rec)
        self._scores[rec.peer] = rec.base
        if peers:
            self._rescore_ip(ip)
        else:
            del self._ip_peers[ip]

    def _drop(self, peer: Hashable) -> None:
        rec = self._records.pop(peer)
        self._release_ip(rec)
        self._disconnected.pop(peer, None)
        del self._scores[peer]

    def _evict_one(self) -> None:
        """Make room: the longest-disconnected record, else the least recently active one."""
        victim = next(iter(self._disconnected)) if self._disconnected else next(iter(self._records))
        self._drop(victim)
        self.evicted += 1
