"""The path table: each peer's candidate paths, their RTTs, and which one is in use.

Pure state (ARCHITECTURE section 5): no sockets, no clock; ``now`` (seconds on the node clock) is
passed in. SmartSock drives it: it sends what :meth:`PathTable.probes_due` returns, feeds probe
responses and authenticated traffic back, calls :meth:`PathTable.handle_timer` at
:meth:`PathTable.get_timer`, and applies the :class:`PathSwitched` events it pulls.

Rules:

* A candidate is *usable* while its last success (probe answer or authenticated traffic) is at
  most ``stale_after`` old and it has fewer than ``max_failures`` consecutive lost probes.
  Failed candidates are still re-probed, less often, so a path that comes back is noticed.
* Selection compares *effective* RTTs: the smoothed RTT, plus ``relay_handicap_ms`` for a
  relayed path. The table switches when the best usable candidate beats the current path by
  more than ``switch_margin_ms`` (hysteresis), or at once when the current path is unusable.
* Before any RTT is known, the first candidate added is used (it is the address we dialled).
"""

from __future__ import annotations

import random
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from korium.identity import Identity
from korium.transport.addresses import Address
from korium.transport.probe import TARGET_SIZE, ProbeRequest, ProbeResponse


@dataclass(frozen=True, slots=True)
class Path:
    """A way to reach a peer: its own address, or a relay and a session on it."""

    address: Address
    """Where datagrams are sent: the peer itself, or the relay."""
    relay_session: bytes | None = None

    @property
    def relayed(self) -> bool:
        return self.relay_session is not None


@dataclass(frozen=True, slots=True)
class PathConfig:
    """Timing and limits of the path table. Times in seconds, RTT margins in milliseconds."""

    probe_interval: float = 5.0
    """How often each working candidate is probed."""
    failed_probe_interval: float = 30.0
    """How often a failed candidate is probed again."""
    probe_timeout: float = 3.0
    """A probe not answered within this counts as one failure."""
    stale_after: float = 30.0
    """A candidate without success for this long is no longer usable."""
    max_failures: int = 3
    switch_margin_ms: float = 10.0
    relay_handicap_ms: float = 50.0
    rtt_weight: float = 0.2
    """Weight of a new RTT sample in the smoothed estimate (EMA)."""
    max_peers: int = 10_000
    max_candidates: int = 24
    """Per peer; adding one more evicts the worst (never the working one in use)."""

    def __post_init__(self) -> None:
        if self.max_peers < 1 or self.max_candidates < 1:
            raise ValueError("max_peers and max_candidates must be at least 1")
        if not 0 < self.rtt_weight <= 1:
            raise ValueError("rtt_weight must be in (0, 1]")


@dataclass(slots=True)
class Candidate:
    path: Path
    rtt_ms: float | None = None
    failures: int = 0
    last_probe: float | None = None
    last_success: float | None = None
    probing: int | None = None
    """Transaction id of the probe in flight, if any."""


@dataclass(frozen=True, slots=True)
class PathSwitched:
    """The path used for *peer* changed (``new`` is None when no path is left)."""

    peer: Identity
    old: Path | None
    new: Path | None


@dataclass(slots=True)
class _Peer:
    candidates: dict[Path, Candidate] = field(default_factory=dict)
    active: Path | None = None


@dataclass(frozen=True, slots=True)
class _Pending:
    peer: Identity
    path: Path
    sent_at: float


class PathTable:
    """Candidate paths of every peer, with RTT estimates and selection with hysteresis."""

    def __init__(self, config: PathConfig | None = None, rng: random.Random | None = None):
        self.config = config or PathConfig()
        self._rng = rng or random.Random()
        self._peers: OrderedDict[Identity, _Peer] = OrderedDict()  # least recently used first
        self._by_address: dict[Address, Identity] = {}
        self._pending: dict[int, _Pending] = {}
        self._events: deque[PathSwitched] = deque()
        self.stats = {"probes_sent": 0, "probes_lost": 0, "probes_unmatched": 0, "switches": 0}

    # -- inputs ---------------------------------------------------------------------------------

    def add_candidate(self, peer: Identity, path: Path, now: float) -> None:
        """Make *path* a candidate for *peer* (idempotent). The first one becomes active."""
        state = self._peers.get(peer)
        if state is None:
            if len(self._peers) >= self.config.max_peers:
                self.remove_peer(next(iter(self._peers)))
            state = self._peers[peer] = _Peer()
        self._peers.move_to_end(peer)
        if path in state.candidates:
            return
        if len(state.candidates) >= self.config.max_candidates:
            limit = self.config.max_failures
            spare = [
                c
                for c in state.candidates.values()
                if c.path != state.active or c.failures >= limit  # in use and working: keep
            ]
            if not spare:
                return
            self._drop(peer, state, min(spare, key=_keep_score).path, now)
        state.candidates[path] = Candidate(path)
        if not path.relayed:
            self._by_address[path.address] = peer
        if state.active is None:
            self._switch(peer, state, path)

    def remove_candidate(self, peer: Identity, path: Path, now: float) -> None:
        """Forget *path* (a relay session closed, say); selects another if it was active."""
        state = self._peers.get(peer)
        if state is not None and path in state.candidates:
            self._drop(peer, state, path, now)

    def remove_peer(self, peer: Identity) -> None:
        """Forget everything about *peer*."""
        state = self._peers.pop(peer, None)
        if state is None:
            return
        for path in state.candidates:
            if self._by_address.get(path.address) == peer:
                del self._by_address[path.address]
        for transaction in [t for t, p in self._pending.items() if p.peer == peer]:
            del self._pending[transaction]

    def on_probe_response(self, response: ProbeResponse, source: Address, now: float) -> bool:
        """A probe came back from *source*; returns False if it matches no probe we sent."""
        pending = self._pending.get(response.transaction)
        if pending is None or pending.path.address != source:
            self.stats["probes_unmatched"] += 1
            return False
        del self._pending[response.transaction]
        state = self._peers.get(pending.peer)
        candidate = state.candidates.get(pending.path) if state else None
        if state is None or candidate is None:
            return True
        candidate.probing = None
        self._peers.move_to_end(pending.peer)
        sample = max(0.0, (now - pending.sent_at) * 1000.0)
        weight = self.config.rtt_weight
        rtt = candidate.rtt_ms
        candidate.rtt_ms = sample if rtt is None else rtt * (1 - weight) + sample * weight
        candidate.failures = 0
        candidate.last_success = now
        self._reselect(pending.peer, state, now)
        return True

    def on_traffic(self, peer: Identity, path: Path, now: float) -> None:
        """Authenticated traffic arrived over *path*: it works, whatever the probes say."""
        state = self._peers.get(peer)
        candidate = state.candidates.get(path) if state else None
        if candidate is not None:
            candidate.last_success = now
            candidate.failures = 0
            self._peers.move_to_end(peer)

    def handle_timer(self, now: float) -> None:
        """Count probes that timed out as failures and re-select paths."""
        timeout = self.config.probe_timeout
        expired = [t for t, p in self._pending.items() if now - p.sent_at >= timeout]
        touched: set[Identity] = set()
        for transaction in expired:
            pending = self._pending.pop(transaction)
            self.stats["probes_lost"] += 1
            state = self._peers.get(pending.peer)
            candidate = state.candidates.get(pending.path) if state else None
            if candidate is not None and candidate.probing == transaction:
                candidate.probing = None
                candidate.failures += 1
                touched.add(pending.peer)
        for peer in touched:
            self._reselect(peer, self._peers[peer], now)

    # -- outputs --------------------------------------------------------------------------------

    def probes_due(self, now: float) -> list[tuple[Path, ProbeRequest]]:
        """Probes to send now; each is recorded as in flight."""
        due = []
        timestamp_ms = int(now * 1000)
        for peer, state in self._peers.items():
            for candidate in state.candidates.values():
                if candidate.probing is not None or not self._probe_due(candidate, now):
                    continue
                transaction = self._rng.getrandbits(64)
                candidate.probing = transaction
                candidate.last_probe = now
                self._pending[transaction] = _Pending(peer, candidate.path, now)
                request = ProbeRequest(transaction, timestamp_ms, bytes(peer)[:TARGET_SIZE])
                due.append((candidate.path, request))
        self.stats["probes_sent"] += len(due)
        return due

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` or :meth:`probes_due` next has work, or None."""
        times = [p.sent_at + self.config.probe_timeout for p in self._pending.values()]
        for state in self._peers.values():
            for candidate in state.candidates.values():
                if candidate.probing is None:
                    times.append(self._next_probe(candidate))
        return min(times, default=None)

    def next_event(self) -> PathSwitched | None:
        """The oldest path switch not yet handled, or None."""
        return self._events.popleft() if self._events else None

    # -- queries --------------------------------------------------------------------------------

    def active_path(self, peer: Identity) -> Path | None:
        state = self._peers.get(peer)
        return state.active if state else None

    def has_candidate(self, peer: Identity, path: Path) -> bool:
        """Whether *path* is one of *peer*'s candidates."""
        state = self._peers.get(peer)
        return state is not None and path in state.candidates

    def usable_paths(self, peer: Identity, now: float) -> list[Path]:
        """*peer*'s paths that recently worked (answered a probe or carried its traffic)."""
        state = self._peers.get(peer)
        return [c.path for c in state.candidates.values() if self._usable(c, now)] if state else []

    def probe_soon(self, peer: Identity) -> None:
        """Probe *peer*'s idle candidates at the next wake (a hole was just punched, say)."""
        state = self._peers.get(peer)
        for candidate in state.candidates.values() if state else ():
            if candidate.probing is None:
                candidate.last_probe = None

    def peer_at(self, address: Address) -> Identity | None:
        """The peer whose direct path is *address*, if any."""
        return self._by_address.get(address)

    def candidates(self, peer: Identity) -> list[Candidate]:
        state = self._peers.get(peer)
        return list(state.candidates.values()) if state else []

    def __contains__(self, peer: Identity) -> bool:
        return peer in self._peers

    def __len__(self) -> int:
        return len(self._peers)

    # -- internals ------------------------------------------------------------------------------

    def _next_probe(self, candidate: Candidate) -> float:
        if candidate.last_probe is None:
            return 0.0
        failed = candidate.failures >= self.config.max_failures
        interval = self.config.failed_probe_interval if failed else self.config.probe_interval
        return candidate.last_probe + interval

    def _probe_due(self, candidate: Candidate, now: float) -> bool:
        return self._next_probe(candidate) <= now

    def _usable(self, candidate: Candidate, now: float) -> bool:
        return (
            candidate.last_success is not None
            and now - candidate.last_success <= self.config.stale_after
            and candidate.failures < self.config.max_failures
        )

    def _effective(self, candidate: Candidate) -> float:
        assert candidate.rtt_ms is not None
        handicap = self.config.relay_handicap_ms if candidate.path.relayed else 0.0
        return candidate.rtt_ms + handicap

    def _best(self, state: _Peer, now: float) -> Candidate | None:
        measured = [
            c for c in state.candidates.values() if c.rtt_ms is not None and self._usable(c, now)
        ]
        return min(measured, key=self._effective, default=None)

    def _reselect(self, peer: Identity, state: _Peer, now: float) -> None:
        best = self._best(state, now)
        if best is None:
            return  # nothing better known: keep the current path, even an untested one
        current = state.candidates.get(state.active) if state.active else None
        if current is None or current.rtt_ms is None or not self._usable(current, now):
            if best.path != state.active:
                self._switch(peer, state, best.path)
        elif self._effective(best) + self.config.switch_margin_ms < self._effective(current):
            self._switch(peer, state, best.path)

    def _switch(self, peer: Identity, state: _Peer, path: Path | None) -> None:
        old, state.active = state.active, path
        self.stats["switches"] += old is not None
        self._events.append(PathSwitched(peer, old, path))

    def _drop(self, peer: Identity, state: _Peer, path: Path, now: float) -> None:
        candidate = state.candidates.pop(path)
        if candidate.probing is not None:
            self._pending.pop(candidate.probing, None)
        if self._by_address.get(path.address) == peer and not path.relayed:
            del self._by_address[path.address]
        if state.active == path:
            best = self._best(state, now)
            fallback = best.path if best else next(iter(state.candidates), None)
            self._switch(peer, state, fallback)


def _keep_score(candidate: Candidate) -> tuple[bool, bool, float]:
    """Lower is evicted first: failed, then never answered, then the slowest candidate."""
    rtt = candidate.rtt_ms
    return (
        candidate.failures == 0,
        candidate.last_success is not None,
        -rtt if rtt is not None else float("-inf"),
    )
