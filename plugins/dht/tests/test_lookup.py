"""Tests of the pure lookup state (``korium_dht.lookup.Lookup``), driven without a network.

A synthetic network of 300 contacts: each knows, per Kademlia bucket of its own id, up to 20
other contacts, and answers FIND_NODE with the 20 it knows closest to the target. A small
driver plays the requests, answering in the order they were sent.
"""

from __future__ import annotations

import functools
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from korium_dht.lookup import ID_BITS, Candidate, Lookup, State
from korium_dht.routing import bucket_index

from korium.identity import Contact, Identity, Keypair, ProofOfWork

K = 20
TS = 1_700_000_000_000


@functools.cache
def keypair(seed: int) -> Keypair:
    return Keypair.from_seed(seed.to_bytes(4, "big") * 8)


def contact(seed: int, ts: int = TS, ip: str | None = None) -> Contact:
    """A signed record (the lookup does not check proofs, so nonce 0 will do)."""
    address = ip or f"10.{seed % 200}.{seed // 200 % 250}.1:4433"
    return Contact.create(keypair(seed), ProofOfWork(0), [address], timestamp_ms=ts)


@functools.cache
def population(count: int = 300) -> tuple[Contact, ...]:
    return tuple(contact(seed) for seed in range(1, count + 1))


def distance(target: bytes, c: Contact) -> int:
    return int.from_bytes(target, "big") ^ int.from_bytes(bytes(c.identity), "big")


def closest(target: bytes, contacts: Sequence[Contact], count: int) -> list[Contact]:
    return sorted(contacts, key=lambda c: distance(target, c))[:count]


def progress(target: bytes, c: Contact) -> int:
    return ID_BITS - distance(target, c).bit_length()


@functools.cache
def knowledge() -> dict[Identity, tuple[Contact, ...]]:
    """Who knows whom: up to K contacts per bucket of each contact's own id."""
    rng = random.Random(5)
    everyone = population()
    known: dict[Identity, tuple[Contact, ...]] = {}
    for c in everyone:
        buckets: dict[int, list[Contact]] = {}
        others = [o for o in everyone if o.identity != c.identity]
        rng.shuffle(others)
        for other in others:
            index = bucket_index(bytes(c.identity), bytes(other.identity))
            bucket = buckets.setdefault(index, [])
            if len(bucket) < K:
                bucket.append(other)
        known[c.identity] = tuple(o for bucket in buckets.values() for o in bucket)
    return known


def answer(peer: Identity, target: bytes) -> list[Contact]:
    """What *peer* returns for FIND_NODE(target): the K closest it knows."""
    return closest(target, knowledge()[peer], K)


def answer_unless(dead: set[Identity], peer: Identity, *, target: bytes) -> list[Contact] | None:
    """*peer*'s answer, or None (no answer) if it is *dead*."""
    return None if peer in dead else answer(peer, target)


def cand(lookup: Lookup, identity: Identity) -> Candidate:
    found = lookup.candidate(identity)
    assert found is not None
    return found


def state(candidate: Candidate) -> State:
    return candidate.state


@dataclass
class Run:
    """What the driver saw: the order of queries and the most in flight at once."""

    asked: list[Identity] = field(default_factory=list)
    max_in_flight: int = 0
    steps: int = 0


def drive(
    lookup: Lookup,
    respond: Callable[[Identity], list[Contact] | None],
    *,
    rng: random.Random | None = None,
) -> Run:
    """Run *lookup* to completion. *respond* gives a peer's answer, None for no answer.

    Answers arrive oldest request first, or in random order with *rng*.
    """
    run = Run()
    waiting: deque[Identity] = deque()
    while not lookup.done:
        for candidate in lookup.next_queries(float(run.steps)):
            assert candidate.state is State.WAITING
            run.asked.append(candidate.identity)
            waiting.append(candidate.identity)
        run.max_in_flight = max(run.max_in_flight, lookup.in_flight)
        assert lookup.in_flight == len(waiting)
        if not waiting:
            break
        if rng is not None:
            waiting.rotate(-rng.randrange(len(waiting)))
        peer = waiting.popleft()
        found = respond(peer)
        if found is None:
            lookup.failed(peer)
        else:
            lookup.answered(peer, found)
        run.steps += 1
    return run


def local_start(local: Contact, target: bytes) -> list[Contact]:
    """What the local node's table offers first."""
    return answer(local.identity, target)


# -- in flight -----------------------------------------------------------------------------


def test_at_most_alpha_in_flight() -> None:
    everyone = population()
    target = bytes(32)
    lookup = Lookup(target, everyone[0].identity, k=K, alpha=3)
    lookup.add(everyone[1:40], depth=1)
    first = lookup.next_queries(0.0)
    assert len(first) == 3
    assert lookup.in_flight == 3
    assert lookup.next_queries(0.0) == []
    lookup.answered(first[0].identity)
    again = lookup.next_queries(1.0)
    assert len(again) == 1
    assert again[0].sent_at == 1.0
    assert lookup.in_flight == 3
    lookup.failed(first[1].identity)
    lookup.failed(first[2].identity)
    assert len(lookup.next_queries(2.0)) == 2
    assert lookup.in_flight == 3


@pytest.mark.parametrize("alpha", [1, 2, 3, 5])
def test_driver_never_exceeds_alpha(alpha: int) -> None:
    everyone = population()
    rng = random.Random(alpha)
    target = rng.randbytes(32)
    lookup = Lookup(target, everyone[0].identity, k=K, alpha=alpha)
    lookup.add(local_start(everyone[0], target), depth=1)
    run = drive(lookup, lambda peer: answer(peer, target), rng=rng)
    assert run.max_in_flight == alpha
    assert lookup.metrics.queries == len(run.asked) == len(set(run.asked))


def test_answers_for_unknown_or_finished_peers_are_ignored() -> None:
    everyone = population()
    lookup = Lookup(bytes(32), everyone[0].identity, k=K, alpha=2)
    lookup.add(everyone[1:5], depth=1)
    asked = lookup.next_queries(0.0)
    lookup.answered(asked[0].identity)
    lookup.answered(asked[0].identity)  # a duplicate
    lookup.failed(asked[0].identity)  # and a late failure
    lookup.answered(everyone[100].identity)  # never asked
    assert lookup.in_flight == 1
    assert lookup.metrics.answers == 1
    assert lookup.metrics.failures == 0
    assert lookup.candidate(asked[0].identity) is not None
    assert cand(lookup, asked[0].identity).state is State.ANSWERED


def test_the_local_identity_is_never_a_candidate() -> None:
    everyone = population()
    local = everyone[0]
    lookup = Lookup(bytes(local.identity), local.identity, k=K, alpha=3)
    lookup.add([local, everyone[1]], depth=1)
    assert lookup.candidate(local.identity) is None
    assert lookup.metrics.found_round is None
    assert [c.identity for c in lookup.next_queries(0.0)] == [everyone[1].identity]


# -- convergence ---------------------------------------------------------------------------


def test_converges_on_the_true_k_closest() -> None:
    everyone = population()
    rng = random.Random(11)
    answered: list[int] = []
    for _ in range(25):
        local = rng.choice(everyone)
        target = rng.randbytes(32)
        lookup = Lookup(target, local.identity, k=K, alpha=3)
        lookup.add(local_start(local, target), depth=1)
        drive(lookup, functools.partial(answer, target=target), rng=rng)
        others = [c for c in everyone if c.identity != local.identity]
        assert lookup.result() == closest(target, others, K)
        answered.append(len(lookup.answered_candidates()))
        assert lookup.metrics.queries <= 60
        assert lookup.metrics.failures == 0
    assert max(answered) > K  # more answered than k, yet the result holds k


def test_lookup_of_an_existing_identity_finds_it_first() -> None:
    everyone = population()
    rng = random.Random(12)
    rounds = []
    for _ in range(25):
        local, wanted = rng.sample(everyone, 2)
        target = bytes(wanted.identity)
        lookup = Lookup(target, local.identity, k=K, alpha=3)
        lookup.add(local_start(local, target), depth=1)
        drive(lookup, functools.partial(answer, target=target))
        assert lookup.result()[0] == wanted
        assert lookup.metrics.found_round is not None
        assert lookup.metrics.found_round <= 3
        rounds.append(lookup.metrics.rounds)
    assert max(rounds) <= 6


def test_result_holds_only_answered_peers_closest_first_at_most_k() -> None:
    everyone = population()
    rng = random.Random(13)
    dead = {c.identity for c in rng.sample(everyone, 90)}
    local = next(c for c in everyone if c.identity not in dead)
    for _ in range(10):
        target = rng.randbytes(32)
        lookup = Lookup(target, local.identity, k=K, alpha=3)
        lookup.add(local_start(local, target), depth=1)
        run = drive(lookup, functools.partial(answer_unless, dead, target=target))
        result = lookup.result()
        # Answers name dead peers too, so fewer than k live ones may be known at all.
        assert 10 <= len(result) <= K
        assert not any(c.identity in dead for c in result)
        assert [distance(target, c) for c in result] == sorted(distance(target, c) for c in result)
        assert result == [c.contact for c in lookup.answered_candidates()][:K]
        alive = [c for c in everyone if c.identity not in dead and c.identity != local.identity]
        assert result[:5] == closest(target, alive, 5)
        assert lookup.metrics.failures == sum(1 for p in run.asked if p in dead) > 0


def test_a_failure_drops_out_and_the_next_closest_takes_its_place() -> None:
    everyone = population()
    target = random.Random(14).randbytes(32)
    local = everyone[0]
    five = closest(target, everyone[1:], 5)
    lookup = Lookup(target, local.identity, k=3, alpha=1)
    lookup.add(five, depth=1)
    order = []
    while not lookup.done:
        (asked,) = lookup.next_queries(0.0)
        order.append(asked.contact)
        if asked.contact == five[0]:
            lookup.failed(asked.identity)
        else:
            lookup.answered(asked.identity)
    assert order == five[:4]  # the fourth closest replaced the failed closest one
    assert lookup.result() == five[1:4]
    assert cand(lookup, five[4].identity).state is State.NEW
    assert lookup.metrics.failures == 1
    assert lookup.metrics.answers == 3


def test_every_peer_failing_ends_with_an_empty_result() -> None:
    everyone = population()
    lookup = Lookup(bytes(32), everyone[0].identity, k=K, alpha=3)
    lookup.add(everyone[1:11], depth=1)
    run = drive(lookup, lambda peer: None)
    assert len(run.asked) == 10
    assert lookup.done
    assert lookup.result() == []
    assert lookup.metrics.failures == 10


# -- the done rule -------------------------------------------------------------------------


def test_done_rule() -> None:
    everyone = population()
    target = bytes(32)
    lookup = Lookup(target, everyone[0].identity, k=2, alpha=2)
    assert lookup.done  # nothing to ask
    near = closest(target, everyone[1:], 4)
    lookup.add(near, depth=1)
    assert not lookup.done
    a, b = lookup.next_queries(0.0)
    assert [a.contact, b.contact] == near[:2]
    assert not lookup.done  # waiting
    lookup.answered(a.identity)
    assert not lookup.done
    lookup.answered(b.identity)
    assert lookup.done  # the two closest answered: farther candidates do not matter
    assert cand(lookup, near[2].identity).state is State.NEW


def test_not_done_while_a_closer_peer_named_in_an_answer_is_unasked() -> None:
    everyone = population()
    target = bytes(32)
    near = closest(target, everyone[1:], 3)
    lookup = Lookup(target, everyone[0].identity, k=2, alpha=1)
    lookup.add(near[1:], depth=1)
    (first,) = lookup.next_queries(0.0)
    assert first.contact == near[1]
    lookup.answered(first.identity, [near[0]])  # names a closer peer
    assert not lookup.done  # near[0] pushed near[2] out of the frontier, and is fresh
    (second,) = lookup.next_queries(0.0)
    assert second.contact == near[0]
    assert not lookup.done
    lookup.answered(second.identity)
    assert lookup.done
    assert lookup.result() == near[:2]
    assert cand(lookup, near[2].identity).state is State.NEW
    assert lookup.metrics.queries == 2


def test_done_when_failures_exhaust_the_candidates() -> None:
    everyone = population()
    lookup = Lookup(bytes(32), everyone[0].identity, k=5, alpha=3)
    lookup.add(everyone[1:3], depth=1)
    asked = lookup.next_queries(0.0)
    lookup.answered(asked[0].identity)
    assert not lookup.done
    lookup.failed(asked[1].identity)
    assert lookup.done  # the only fresh-or-waiting candidate failed
    assert lookup.result() == [asked[0].contact]


def test_exact_lookup_stops_when_the_target_answers() -> None:
    everyone = population()
    wanted = everyone[50]
    target = bytes(wanted.identity)
    others = closest(target, everyone[1:], 10)
    assert others[0] == wanted
    for exact in (True, False):
        lookup = Lookup(target, everyone[0].identity, k=K, alpha=1, exact=exact)
        lookup.add(others, depth=1)
        (first,) = lookup.next_queries(0.0)
        assert first.contact == wanted
        assert first.distance == 0
        assert first.progress == ID_BITS
        assert not lookup.done
        lookup.answered(first.identity)
        assert lookup.done is exact
        assert lookup.result() == [wanted]


def test_exact_lookup_continues_when_the_target_fails() -> None:
    everyone = population()
    wanted = everyone[50]
    target = bytes(wanted.identity)
    others = closest(target, everyone[1:], 4)
    lookup = Lookup(target, everyone[0].identity, k=K, alpha=1, exact=True)
    lookup.add(others, depth=1)
    run = drive(lookup, lambda p: None if p == wanted.identity else [])
    assert run.asked == [c.identity for c in others]
    assert lookup.result() == others[1:]


# -- tier preference -----------------------------------------------------------------------


def by_progress(target: bytes) -> dict[int, list[Contact]]:
    groups: dict[int, list[Contact]] = {}
    for c in population()[1:]:
        groups.setdefault(progress(target, c), []).append(c)
    return {p: sorted(g, key=lambda c: distance(target, c)) for p, g in groups.items()}


def test_tiers_order_candidates_of_equal_progress() -> None:
    target = bytes(32)
    groups = by_progress(target)
    high = groups[2][0]  # the most progress of the four
    near, far = groups[1][:2]  # equal progress; near is closer
    low = groups[0][0]
    tiers = {high.identity: 6, near.identity: 3, far.identity: 0, low.identity: 0}
    local = population()[0].identity

    def order(tier_of: Callable[[Contact], int] | None) -> list[Contact]:
        lookup = Lookup(target, local, k=K, alpha=1, tier_of=tier_of)
        lookup.add([low, far, near, high], depth=1)
        run = drive(lookup, lambda peer: [])
        return [cand(lookup, i).contact for i in run.asked]

    assert order(None) == [high, near, far, low]  # XOR distance only
    # Tiers reorder within equal progress; never a lower-progress candidate first, even one
    # in the fastest tier (low), and the slowest tier does not demote high.
    assert order(lambda c: tiers[c.identity]) == [high, far, near, low]


def test_candidate_tier_and_progress_recorded() -> None:
    target = bytes(32)
    groups = by_progress(target)
    c = groups[1][0]
    lookup = Lookup(target, population()[0].identity, k=K, alpha=1, tier_of=lambda _: 4)
    lookup.add([c], depth=3)
    candidate = lookup.candidate(c.identity)
    assert candidate is not None
    assert candidate.tier == 4
    assert candidate.depth == 3
    assert candidate.progress == 1


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 4))
def test_tiering_never_takes_less_progress_before_more(seed: int, alpha: int) -> None:
    rng = random.Random(seed)
    everyone = population()
    target = rng.randbytes(32)
    tiers = {c.identity: rng.randrange(7) for c in everyone}
    lookup = Lookup(
        target, everyone[0].identity, k=60, alpha=alpha, tier_of=lambda c: tiers[c.identity]
    )
    pool = rng.sample(everyone[1:], 50)
    lookup.add(pool, depth=1)
    keys: list[tuple[int, int, int]] = []
    while batch := lookup.next_queries(0.0):
        keys.extend((-c.progress, c.tier, c.distance) for c in batch)
        for c in batch:
            lookup.answered(c.identity)
    assert len(keys) == 50
    assert keys == sorted(keys)  # progress first, then tier, then distance


# -- newer records -------------------------------------------------------------------------


def test_newer_record_replaces_and_keeps_a_fallback() -> None:
    everyone = population()
    old = contact(77, ts=TS)
    newer = contact(77, ts=TS + 1000, ip="10.77.0.2:4433")
    oldest = contact(77, ts=TS - 1000, ip="10.77.0.3:4433")
    lookup = Lookup(bytes(32), everyone[0].identity, k=K, alpha=1)
    lookup.add([old], depth=1)
    lookup.add([newer], depth=2)
    candidate = lookup.candidate(old.identity)
    assert candidate is not None
    assert candidate.contact == newer
    assert candidate.fallback == old
    assert candidate.depth == 1  # still asked in the round it was first known
    lookup.add([oldest], depth=2)  # an older record changes nothing
    assert candidate.contact == newer
    assert candidate.fallback == old


def test_reject_falls_back_then_fails() -> None:
    everyone = population()
    old = contact(78, ts=TS)
    newer = contact(78, ts=TS + 1000, ip="10.78.0.2:4433")
    lookup = Lookup(bytes(32), everyone[0].identity, k=K, alpha=1)
    lookup.add([old], depth=1)
    lookup.add([newer], depth=2)
    (candidate,) = lookup.next_queries(0.0)
    assert lookup.reject(candidate) is True
    assert candidate.contact == old
    assert candidate.fallback is None
    assert candidate.state is State.WAITING
    assert lookup.in_flight == 1
    assert lookup.reject(candidate) is False
    assert state(candidate) is State.FAILED
    assert lookup.in_flight == 0
    assert lookup.metrics.invalid_contacts == 2
    assert lookup.metrics.failures == 1
    assert lookup.done
    assert lookup.result() == []


def test_a_record_arriving_after_the_query_is_not_swapped_in() -> None:
    everyone = population()
    old = contact(79, ts=TS)
    lookup = Lookup(bytes(32), everyone[0].identity, k=K, alpha=1)
    lookup.add([old], depth=1)
    (candidate,) = lookup.next_queries(0.0)
    lookup.add([contact(79, ts=TS + 5000)], depth=2)
    assert candidate.contact == old
    assert candidate.fallback is None


def test_duplicates_are_one_candidate() -> None:
    everyone = population()
    lookup = Lookup(bytes(32), everyone[0].identity, k=K, alpha=5)
    lookup.add(everyone[1:4], depth=1)
    lookup.add(everyone[1:4], depth=2)
    assert len(lookup.next_queries(0.0)) == 3


# -- metrics -------------------------------------------------------------------------------


def test_metrics_queries_rounds_and_found_round() -> None:
    everyone = population()
    local, a, b, c = everyone[0], everyone[1], everyone[2], everyone[3]
    wanted = everyone[4]
    lookup = Lookup(bytes(wanted.identity), local.identity, k=K, alpha=3)
    lookup.add([a], depth=1)
    chain = {a.identity: [b], b.identity: [c], c.identity: [wanted], wanted.identity: []}
    run = drive(lookup, lambda peer: chain[peer])
    assert run.asked == [a.identity, b.identity, c.identity, wanted.identity]
    m = lookup.metrics
    assert m.queries == 4
    assert m.answers == 4
    assert m.failures == 0
    assert m.rounds == 4  # wanted was learnt from round 3's answer: asked in round 4
    assert m.found_round == 3
    assert cand(lookup, wanted.identity).depth == 4


def test_found_round_zero_when_the_target_is_in_the_local_table() -> None:
    everyone = population()
    wanted = everyone[9]
    lookup = Lookup(bytes(wanted.identity), everyone[0].identity, k=K, alpha=3)
    lookup.add([everyone[1], wanted], depth=1)
    assert lookup.metrics.found_round == 0
    drive(lookup, lambda peer: [])
    assert lookup.metrics.rounds == 1
    assert lookup.metrics.queries == 2


def test_found_round_keeps_the_first_time() -> None:
    everyone = population()
    wanted = everyone[9]
    lookup = Lookup(bytes(wanted.identity), everyone[0].identity, k=K, alpha=3)
    lookup.add([everyone[1]], depth=1)
    lookup.add([wanted], depth=2)
    lookup.add([contact(10, ts=TS + 1)], depth=5)
    assert lookup.metrics.found_round == 1


def test_a_real_lookup_costs_what_the_metrics_say() -> None:
    everyone = population()
    rng = random.Random(15)
    local, wanted = rng.sample(everyone, 2)
    target = bytes(wanted.identity)
    lookup = Lookup(target, local.identity, k=K, alpha=3)
    lookup.add(local_start(local, target), depth=1)
    run = drive(lookup, lambda peer: answer(peer, target))
    m = lookup.metrics
    assert m.queries == len(run.asked) == m.answers
    depths = [cand(lookup, i).depth for i in run.asked]
    assert m.rounds == max(depths)
    assert m.found_round is not None
    assert m.found_round < m.rounds


def test_candidates_are_dataclasses_of_the_lookup() -> None:
    everyone = population()
    lookup = Lookup(bytes(32), everyone[0].identity, k=K, alpha=1)
    lookup.add([everyone[1]], depth=1)
    candidate = lookup.candidate(everyone[1].identity)
    assert isinstance(candidate, Candidate)
    assert candidate.identity == everyone[1].identity
    assert candidate.distance == distance(bytes(32), everyone[1])


def test_result_mid_lookup_holds_only_answered_peers() -> None:
    """A lookup cut short (the driver's timeout) returns what answered so far, nothing else."""
    everyone = population()
    target = bytes(32)
    near = closest(target, everyone[1:], 10)
    lookup = Lookup(target, everyone[0].identity, k=K, alpha=3)
    lookup.add(near, depth=1)
    first, second, third = lookup.next_queries(0.0)
    assert lookup.result() == []
    lookup.answered(third.identity)
    lookup.failed(first.identity)
    assert lookup.result() == [third.contact]
    assert not lookup.done
    assert second.state is State.WAITING
