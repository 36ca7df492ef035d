"""One iterative Kademlia lookup as a pure state object; the driver does the requests.

Why a state object: the convergence rules (which peer next, when to stop, what to return) are
the delicate part of Kademlia, and here they are testable without a network.

Rules (they fix the Rust reference's lookup, which stopped as soon as one round brought
nothing closer and returned peers that never answered):

* Up to *alpha* requests are in flight. Whenever one ends, the next candidate starts (no
  lock-step rounds), chosen among the *frontier*: the k closest candidates that have not failed.
* With tiering on, candidates of **equal progress** (the same number of leading bits shared with
  the target, so equally useful in Kademlia's hop bound) are taken lowest latency tier first;
  progress always comes first, then XOR distance breaks ties.
* The lookup is done when every frontier candidate has answered (or there is nothing left to
  ask). Peers that fail drop out of the frontier, so the next closest take their place.
* The result holds only peers that answered, closest first, at most k.
* An *exact* lookup (resolving one peer by identity) is done once that peer answers: what the
  caller needs is the peer, not its k neighbours, and this is where tiering pays off (the
  path to the peer runs through nearby peers).
* A candidate offered again with a newer signed record takes the newer one, keeping the older
  as a fallback in case the newer one fails verification.
"""

from __future__ import annotations

import bisect
import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from korium.identity import Contact, Identity

ID_BITS = 256


class State(enum.Enum):
    NEW = "new"
    WAITING = "waiting"
    ANSWERED = "answered"
    FAILED = "failed"


@dataclass(slots=True)
class Candidate:
    """A peer the lookup knows of, and how far it got with it."""

    contact: Contact
    distance: int
    depth: int
    """The round in which asking it would happen: 1 for peers from the local table."""
    tier: int
    state: State = State.NEW
    fallback: Contact | None = None
    sent_at: float = 0.0

    @property
    def identity(self) -> Identity:
        return self.contact.identity

    @property
    def progress(self) -> int:
        """Leading bits shared with the target (256 for the target itself)."""
        return ID_BITS - self.distance.bit_length()


@dataclass(slots=True)
class LookupMetrics:
    """What a lookup cost, for statistics and benchmarks."""

    queries: int = 0
    answers: int = 0
    failures: int = 0
    rounds: int = 0
    """The deepest round that was asked (1 = only peers from the local table)."""
    found_round: int | None = None
    """Round whose answer first named the target id itself (0: it was in the local table)."""
    invalid_contacts: int = 0


@dataclass(slots=True)
class Lookup:
    """Find the k peers closest to *target* that answer."""

    target: bytes
    local: Identity
    k: int
    alpha: int
    tier_of: Callable[[Contact], int] | None = None
    exact: bool = False
    """Stop as soon as the peer whose id *is* the target answers (resolving one peer)."""
    metrics: LookupMetrics = field(default_factory=LookupMetrics)
    _target_int: int = 0
    _by_id: dict[Identity, Candidate] = field(default_factory=dict)
    _sorted: list[tuple[int, Candidate]] = field(default_factory=list)
    _in_flight: int = 0

    def __post_init__(self) -> None:
        self._target_int = int.from_bytes(self.target, "big")

    def add(self, contacts: Iterable[Contact], depth: int) -> None:
        """Offer candidates learnt at *depth* (1: the local table; n+1: an answer at round n)."""
        for contact in contacts:
            identity = contact.identity
            if identity == self.local:
                continue
            known = self._by_id.get(identity)
            if known is not None:
                if known.state is State.NEW and contact.timestamp_ms > known.contact.timestamp_ms:
                    known.fallback = known.contact
                    known.contact = contact
                continue
            distance = int.from_bytes(bytes(identity), "big") ^ self._target_int
            if distance == 0 and self.metrics.found_round is None:
                self.metrics.found_round = depth - 1
            tier = self.tier_of(contact) if self.tier_of is not None else 0
            candidate = Candidate(contact, distance, depth, tier)
            self._by_id[identity] = candidate
            bisect.insort(self._sorted, (distance, candidate), key=lambda item: item[0])

    def _frontier(self) -> list[Candidate]:
        frontier: list[Candidate] = []
        for _, candidate in self._sorted:
            if candidate.state is not State.FAILED:
                frontier.append(candidate)
                if len(frontier) == self.k:
                    break
        return frontier

    def next_queries(self, now: float) -> list[Candidate]:
        """Candidates to ask now (marked as waiting), so that at most alpha are in flight."""
        room = self.alpha - self._in_flight
        if room <= 0:
            return []
        fresh = [c for c in self._frontier() if c.state is State.NEW]
        if self.tier_of is not None:
            fresh.sort(key=lambda c: (-c.progress, c.tier, c.distance))
        chosen = fresh[:room]
        for candidate in chosen:
            candidate.state = State.WAITING
            candidate.sent_at = now
            self._in_flight += 1
            self.metrics.queries += 1
            self.metrics.rounds = max(self.metrics.rounds, candidate.depth)
        return chosen

    def answered(self, identity: Identity, contacts: Iterable[Contact] = ()) -> None:
        """*identity* answered; *contacts* are the peers it named (already checked)."""
        candidate = self._finish(identity, State.ANSWERED)
        if candidate is not None:
            self.metrics.answers += 1
            self.add(contacts, candidate.depth + 1)

    def failed(self, identity: Identity) -> None:
        """*identity* did not answer (or answered nonsense)."""
        if self._finish(identity, State.FAILED) is not None:
            self.metrics.failures += 1

    def reject(self, candidate: Candidate) -> bool:
        """The candidate's record failed verification before it was asked.

        Falls back to the older record if there is one (True: ask again with it); otherwise
        the candidate fails.
        """
        self.metrics.invalid_contacts += 1
        if candidate.fallback is not None:
            candidate.contact, candidate.fallback = candidate.fallback, None
            return True
        self.failed(candidate.identity)
        return False

    def _finish(self, identity: Identity, state: State) -> Candidate | None:
        candidate = self._by_id.get(identity)
        if candidate is None or candidate.state is not State.WAITING:
            return None
        candidate.state = state
        self._in_flight -= 1
        return candidate

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def done(self) -> bool:
        """Every frontier candidate answered, or nothing is left to ask or wait for."""
        frontier = self._frontier()
        if self.exact and frontier and frontier[0].distance == 0:
            return frontier[0].state is State.ANSWERED or self._settled(frontier)
        return self._settled(frontier)

    def _settled(self, frontier: list[Candidate]) -> bool:
        if all(c.state is State.ANSWERED for c in frontier):
            return True
        return self._in_flight == 0 and not any(c.state is State.NEW for c in frontier)

    def result(self) -> list[Contact]:
        """Contacts that answered, closest to the target first, at most k."""
        found = [c.contact for _, c in self._sorted if c.state is State.ANSWERED]
        return found[: self.k]

    def candidate(self, identity: Identity) -> Candidate | None:
        return self._by_id.get(identity)

    def answered_candidates(self) -> list[Candidate]:
        """Answered candidates, closest first (all of them, not only k)."""
        return [c for _, c in self._sorted if c.state is State.ANSWERED]
