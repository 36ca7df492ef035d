"""The routing table: bucket maths, insertion verdicts, pings, eviction, anti-eclipse, k, lookups.

The table trusts its callers to have validated contact records (signature, proof of work), so
most tests build records directly around chosen ids with ``Identity._trusted``: that places a
contact in an exact bucket without generating thousands of keys. One test uses real signed
records end to end.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from korium_dht.config import DhtConfig
from korium_dht.netaddr import diversity_prefix, primary_ip
from korium_dht.routing import (
    ID_BITS,
    PING_EXPIRY_FACTOR,
    Observation,
    RoutingTable,
    Verdict,
    bucket_index,
    random_id_in_bucket,
)

from korium.identity import Contact, Identity, Keypair, NodeIdentity, ProofOfWork

LOCAL = Keypair.from_seed(bytes(range(32))).identity
ADDED = Observation(Verdict.ADDED)
UPDATED = Observation(Verdict.UPDATED)
CACHED = Observation(Verdict.CACHED)
PREFIX = Observation(Verdict.REFUSED, reason="prefix")

ids32 = st.binary(min_size=32, max_size=32)


def make(raw: bytes, ip: str = "10.0.0.1", ts: int = 1_000) -> Contact:
    """An unsigned record for an arbitrary id (the table never checks signatures)."""
    host = f"[{ip}]" if ":" in ip else ip
    return Contact(Identity._trusted(raw), (f"{host}:4433",), ts, ProofOfWork(0), bytes(64))


def at(rng: random.Random, index: int, ip: str = "10.0.0.1", ts: int = 1_000) -> Contact:
    """A record whose id lies in bucket *index* of LOCAL."""
    return make(random_id_in_bucket(bytes(LOCAL), index, rng), ip, ts)


def table(**settings: object) -> RoutingTable:
    return RoutingTable(LOCAL, DhtConfig(**{"k_min": 1, **settings}))  # type: ignore[arg-type]


def leading_zeros(x: bytes) -> int:
    bits = "".join(f"{byte:08b}" for byte in x)
    return len(bits) - len(bits.lstrip("0"))


# -- bucket maths ---------------------------------------------------------------------------------


@given(ids32, ids32)
def test_bucket_index_is_leading_zeros_of_xor_and_symmetric(a: bytes, b: bytes) -> None:
    assume(a != b)
    index = bucket_index(a, b)
    assert index == leading_zeros(bytes(x ^ y for x, y in zip(a, b, strict=True)))
    assert index == bucket_index(b, a)
    assert 0 <= index < ID_BITS


@given(ids32, st.integers(0, ID_BITS - 1))
def test_flipping_bit_i_lands_in_bucket_i(a: bytes, i: int) -> None:
    flipped = (int.from_bytes(a, "big") ^ (1 << (ID_BITS - 1 - i))).to_bytes(32, "big")
    assert bucket_index(a, flipped) == i


def test_bucket_index_refuses_equal_ids_and_wrong_lengths() -> None:
    with pytest.raises(ValueError, match="itself"):
        bucket_index(bytes(32), bytes(32))
    with pytest.raises(ValueError, match="32 bytes"):
        bucket_index(bytes(32), bytes(31))
    assert bucket_index(bytes(32), b"\x80" + bytes(31)) == 0
    assert bucket_index(bytes(32), bytes(31) + b"\x01") == 255


def test_random_id_in_bucket_lands_in_every_bucket() -> None:
    rng = random.Random(1)
    for local in (bytes(LOCAL), bytes(32), b"\xff" * 32):
        for index in range(ID_BITS):
            x = random_id_in_bucket(local, index, rng)
            assert len(x) == 32
            assert bucket_index(local, x) == index
    # The free bits really are random, and the last bucket has exactly one id.
    assert len({random_id_in_bucket(bytes(32), 0, rng) for _ in range(50)}) == 50
    assert random_id_in_bucket(bytes(32), 255, rng) == bytes(31) + b"\x01"
    for bad in (-1, 256):
        with pytest.raises(ValueError, match="bucket index"):
            random_id_in_bucket(bytes(32), bad, rng)


# -- observe ------------------------------------------------------------------------------------


def test_added_then_updated_and_the_freshest_record_wins() -> None:
    rt, rng = table(), random.Random(2)
    first = at(rng, 0, "10.0.0.1", ts=2_000)
    raw = bytes(first.identity)
    assert rt.observe(first, 0.0) == ADDED
    assert first.identity in rt
    assert len(rt) == 1

    older = make(raw, "10.0.0.2", ts=1_000)
    same_age = make(raw, "10.0.0.3", ts=2_000)
    assert rt.observe(older, 1.0) == UPDATED
    assert rt.observe(same_age, 2.0) == UPDATED
    assert rt.get(first.identity) == first  # neither replaced the stored record

    newer = make(raw, "10.0.0.4", ts=3_000)
    assert rt.observe(newer, 3.0) == UPDATED
    assert rt.get(first.identity) == newer
    assert rt.observe(first, 4.0) == UPDATED
    assert rt.get(first.identity) == newer  # an old record never rolls it back
    assert len(rt) == 1
    assert rt.contacts() == [newer]


def test_refuses_self_and_contacts_without_an_ip() -> None:
    rt, rng = table(), random.Random(3)
    assert rt.observe(make(bytes(LOCAL)), 0.0) == Observation(Verdict.REFUSED, reason="self")
    raw = random_id_in_bucket(bytes(LOCAL), 0, rng)
    named = Contact(Identity._trusted(raw), ("relay.example:4433",), 1, ProofOfWork(0), bytes(64))
    empty = Contact(Identity._trusted(raw), (), 1, ProofOfWork(0), bytes(64))
    for contact in (named, empty):
        assert rt.observe(contact, 0.0) == Observation(Verdict.REFUSED, reason="no-address")
    assert len(rt) == 0
    assert LOCAL not in rt
    assert "not an identity" not in rt
    assert rt.stats()["refused_other"] == 3
    assert rt.stats()["buckets"] == 0


def test_real_signed_contacts() -> None:
    nodes = [NodeIdentity.generate(difficulty=0) for _ in range(16)]
    rt = table(k=20)
    records = [n.contact([f"10.0.1.{i}:4433"], timestamp_ms=5) for i, n in enumerate(nodes)]
    assert [rt.observe(c, 0.0) for c in records] == [ADDED] * 16
    assert set(map(bytes, (c.identity for c in rt.contacts()))) == {
        bytes(n.identity) for n in nodes
    }
    target = nodes[3].identity
    assert rt.closest(bytes(target), 1) == [records[3]]
    assert records[3] not in rt.closest(bytes(target), 16, exclude=target)
    assert len(rt.closest(bytes(target), 16, exclude=target)) == 15


# -- full buckets, the replacement cache and pings ---------------------------------------------


def full_bucket(rng: random.Random, **settings: object) -> tuple[RoutingTable, Contact, Contact]:
    """A k=2 table whose bucket 0 holds a and b, b being the least recently seen."""
    rt = table(k=2, k_max=4, **settings)
    a, b = at(rng, 0, "10.0.0.1"), at(rng, 0, "10.0.0.2")
    assert rt.observe(a, 0.0) == ADDED
    assert rt.observe(b, 1.0) == ADDED
    assert rt.observe(a, 2.0) == UPDATED  # a moves to the most recent end
    return rt, a, b


def test_full_bucket_caches_and_pings_the_least_recently_seen_once() -> None:
    rng = random.Random(4)
    rt, _a, b = full_bucket(rng)
    c, d = at(rng, 0, "10.0.0.3"), at(rng, 0, "10.0.0.4")
    assert rt.observe(c, 3.0) == Observation(Verdict.CACHED, ping=b)
    assert rt.observe(d, 4.0) == CACHED  # a ping is already out for this bucket
    assert rt.observe(c, 5.0) == CACHED  # re-observing a candidate refreshes it, no new ping
    assert c.identity not in rt
    assert rt.get(c.identity) is None
    stats = rt.stats()
    assert (stats["contacts"], stats["replacements"], stats["pings_requested"]) == (2, 2, 1)
    # Another bucket has its own ping slot.
    e, f, g = at(rng, 1), at(rng, 1), at(rng, 1)
    assert [rt.observe(x, 6.0) for x in (e, f)] == [ADDED, ADDED]
    assert rt.observe(g, 6.0) == Observation(Verdict.CACHED, ping=e)


def test_a_lost_ping_expires() -> None:
    rng = random.Random(5)
    rt, _a, b = full_bucket(rng, query_timeout_s=1.0)
    assert rt.observe(at(rng, 0), 3.0).ping == b
    assert rt.observe(at(rng, 0), 3.0 + PING_EXPIRY_FACTOR - 0.5).ping is None
    assert rt.observe(at(rng, 0), 3.0 + PING_EXPIRY_FACTOR).ping == b
    assert rt.stats()["pings_requested"] == 2


def test_ping_alive_keeps_the_old_contact_and_the_candidate_stays_cached() -> None:
    rng = random.Random(6)
    rt, a, b = full_bucket(rng)
    c = at(rng, 0, "10.0.0.3")
    assert rt.observe(c, 3.0).ping == b
    rt.ping_result(b.identity, True, 4.0)
    assert b.identity in rt
    assert c.identity not in rt
    assert rt.stats()["replacements"] == 1
    # The ping slot is free again, and b is now the most recently seen: a is pinged next.
    assert rt.observe(at(rng, 0), 5.0) == Observation(Verdict.CACHED, ping=a)


def test_ping_dead_replaces_it_with_the_newest_candidate() -> None:
    rng = random.Random(7)
    rt, a, b = full_bucket(rng)
    c, d = at(rng, 0, "10.0.0.3"), at(rng, 0, "10.0.0.4")
    assert rt.observe(c, 3.0).ping == b
    assert rt.observe(d, 4.0) == CACHED
    rt.ping_result(b.identity, False, 5.0)
    assert b.identity not in rt
    assert d.identity in rt
    assert c.identity not in rt
    stats = rt.stats()
    assert (stats["contacts"], stats["replacements"], stats["evicted"]) == (2, 1, 1)
    # a is now the least recently seen, and the ping slot is free.
    assert rt.observe(at(rng, 0), 6.0) == Observation(Verdict.CACHED, ping=a)
    # A late or unknown report changes nothing.
    rt.ping_result(b.identity, False, 7.0)
    rt.ping_result(LOCAL, False, 7.0)
    assert rt.stats()["evicted"] == 1
    assert len(rt) == 2


def test_promotion_takes_the_newest_candidate_the_prefix_rule_admits() -> None:
    rng = random.Random(8)
    rt = table(k=2, k_max=4, max_per_prefix=1)
    a, b = at(rng, 0, "1.1.1.1"), at(rng, 0, "8.8.8.1")
    assert [rt.observe(a, 0.0), rt.observe(b, 1.0)] == [ADDED, ADDED]
    older, newer = at(rng, 0, "4.4.4.1"), at(rng, 0, "3.3.3.1")
    assert rt.observe(older, 2.0).ping == a
    assert rt.observe(newer, 3.0) == CACHED
    # b moves into 3.3.3.0/24, which makes the newer candidate ineligible.
    assert rt.observe(make(bytes(b.identity), "3.3.3.9", ts=2_000), 4.0) == UPDATED
    rt.ping_result(a.identity, False, 5.0)
    assert older.identity in rt
    assert newer.identity not in rt
    assert rt.stats()["replacements"] == 1


def test_a_cached_candidate_keeps_its_freshest_record() -> None:
    rng = random.Random(28)
    rt, _a, _b = full_bucket(rng)
    c, d = at(rng, 0, "10.0.0.3", ts=5), at(rng, 0, "10.0.0.4", ts=5)
    assert [rt.observe(c, 3.0).verdict, rt.observe(d, 3.0).verdict] == [Verdict.CACHED] * 2
    older_c = make(bytes(c.identity), "10.0.0.5", ts=4)
    newer_d = make(bytes(d.identity), "10.0.0.6", ts=6)
    assert [rt.observe(older_c, 4.0), rt.observe(newer_d, 4.0)] == [CACHED, CACHED]
    assert rt.stats()["replacements"] == 2
    rt.set_k(4)  # promotes both
    assert rt.get(c.identity) == c
    assert rt.get(d.identity) == newer_d


def test_a_candidate_admitted_later_leaves_the_cache() -> None:
    rng = random.Random(29)
    rt = table(k=2, k_max=4, max_per_prefix=1)
    a, b = at(rng, 0, "1.1.1.1", ts=1), at(rng, 0, "2.2.2.2", ts=1)
    rt.observe(a, 0.0)
    rt.observe(b, 0.0)
    c = at(rng, 0, "3.3.3.1")
    assert rt.observe(c, 1.0).verdict is Verdict.CACHED
    assert rt.observe(make(bytes(b.identity), "3.3.3.9", ts=2), 2.0) == UPDATED
    rt.remove(a.identity)  # c cannot be promoted: b now holds 3.3.3.0/24
    assert (len(rt), rt.stats()["replacements"]) == (1, 1)
    assert rt.observe(c, 3.0) == PREFIX
    assert rt.observe(make(bytes(b.identity), "2.2.2.3", ts=3), 4.0) == UPDATED
    assert rt.observe(c, 5.0) == ADDED
    assert (len(rt), rt.stats()["replacements"]) == (2, 0)


def test_record_failure_evicts_only_when_a_replacement_exists() -> None:
    rng = random.Random(9)
    rt, a, b = full_bucket(rng, failures_before_eviction=2)
    for _ in range(5):
        assert rt.record_failure(a.identity, 3.0) is False
    assert a.identity in rt  # a stale contact beats an empty slot
    assert rt.stats()["evicted"] == 0

    c = at(rng, 0, "10.0.0.3")
    assert rt.observe(c, 4.0) == Observation(Verdict.CACHED, ping=b)
    assert rt.record_failure(b.identity, 5.0) is False  # first failure
    assert rt.record_failure(b.identity, 6.0) is True
    assert b.identity not in rt
    assert c.identity in rt
    assert rt.stats()["evicted"] == 1
    assert rt.stats()["replacements"] == 0
    # b's ping slot was released with it.
    assert rt.observe(at(rng, 0), 7.0).ping == a


def test_success_resets_the_failure_count() -> None:
    rng = random.Random(10)
    rt, _a, b = full_bucket(rng, failures_before_eviction=2)
    rt.observe(at(rng, 0), 3.0)
    assert rt.record_failure(b.identity, 4.0) is False
    rt.record_success(b.identity, 5.0)
    assert rt.record_failure(b.identity, 6.0) is False
    assert b.identity in rt
    assert rt.record_failure(b.identity, 7.0) is True


def test_record_failure_of_a_candidate_drops_it() -> None:
    rng = random.Random(11)
    rt, _a, _b = full_bucket(rng)
    c = at(rng, 0)
    rt.observe(c, 3.0)
    assert rt.stats()["replacements"] == 1
    assert rt.record_failure(c.identity, 4.0) is False
    assert rt.stats()["replacements"] == 0
    assert rt.record_failure(at(rng, 5).identity, 4.0) is False  # unknown: nothing happens


def test_remove_refills_from_the_cache() -> None:
    rng = random.Random(12)
    rt, a, b = full_bucket(rng)
    c, d = at(rng, 0), at(rng, 0)
    rt.observe(c, 3.0)
    rt.observe(d, 4.0)
    assert rt.remove(a.identity) is True
    assert d.identity in rt
    assert rt.remove(c.identity) is True  # a candidate
    assert rt.stats()["replacements"] == 0
    assert rt.remove(c.identity) is False
    assert rt.remove(LOCAL) is False
    assert rt.remove(b.identity) is True
    assert rt.remove(d.identity) is True
    assert rt.stats()["buckets"] == 0  # buckets are freed once empty
    assert rt.stats()["evicted"] == 0  # removal is not eviction


# -- anti-eclipse -------------------------------------------------------------------------------


def test_third_contact_of_a_public_slash_24_in_a_bucket_is_refused() -> None:
    rng = random.Random(13)
    rt = table()
    assert rt.observe(at(rng, 0, "8.8.8.1"), 0.0) == ADDED
    assert rt.observe(at(rng, 0, "8.8.8.200"), 0.0) == ADDED
    assert rt.observe(at(rng, 0, "8.8.8.3"), 0.0) == PREFIX
    assert rt.observe(at(rng, 0, "8.8.9.1"), 0.0) == ADDED  # the next /24
    assert rt.observe(at(rng, 1, "8.8.8.4"), 0.0) == ADDED  # the rule is per bucket
    assert len(rt) == 4
    assert rt.stats()["refused_prefix"] == 1


def test_ipv6_counts_by_slash_48() -> None:
    rng = random.Random(14)
    rt = table()
    assert rt.observe(at(rng, 0, "2001:db8:1::1"), 0.0) == ADDED
    assert rt.observe(at(rng, 0, "2001:db8:1:ffff::2"), 0.0) == ADDED
    assert rt.observe(at(rng, 0, "2001:db8:1:2::3"), 0.0) == PREFIX
    assert rt.observe(at(rng, 0, "2001:db8:2::1"), 0.0) == ADDED
    assert len(rt) == 3


def test_loopback_and_private_addresses_are_exempt() -> None:
    rng = random.Random(15)
    rt = table()
    hosts = [f"127.0.0.{i}" for i in range(1, 6)] + [f"10.0.0.{i}" for i in range(1, 6)]
    assert [rt.observe(at(rng, 0, h), 0.0) for h in hosts] == [ADDED] * 10
    assert rt.observe(at(rng, 0, "::1"), 0.0) == ADDED
    assert rt.stats()["refused_prefix"] == 0


def test_without_exemptions_loopback_is_counted_too() -> None:
    rng = random.Random(16)
    rt = RoutingTable(LOCAL, DhtConfig(exempt_networks=()))
    assert rt.observe(at(rng, 0, "127.0.0.1"), 0.0) == ADDED
    assert rt.observe(at(rng, 0, "127.0.0.2"), 0.0) == ADDED
    assert rt.observe(at(rng, 0, "127.0.0.3"), 0.0) == PREFIX


def test_full_bucket_refuses_candidates_from_a_saturated_prefix() -> None:
    rng = random.Random(17)
    rt = table(k=2, k_max=4)
    rt.observe(at(rng, 0, "8.8.8.1"), 0.0)
    rt.observe(at(rng, 0, "8.8.8.2"), 0.0)
    assert rt.observe(at(rng, 0, "8.8.8.3"), 1.0) == PREFIX  # not cached, no ping
    stats = rt.stats()
    assert (stats["replacements"], stats["pings_requested"]) == (0, 0)


def test_a_newer_record_cannot_move_into_a_saturated_prefix() -> None:
    rng = random.Random(18)
    rt = table()
    for host in ("8.8.8.1", "8.8.8.2"):
        rt.observe(at(rng, 0, host), 0.0)
    c = at(rng, 0, "9.9.9.1", ts=1)
    rt.observe(c, 0.0)
    assert rt.observe(make(bytes(c.identity), "8.8.8.3", ts=2), 1.0) == PREFIX
    assert rt.get(c.identity) == c
    moved = make(bytes(c.identity), "9.9.10.1", ts=3)
    assert rt.observe(moved, 2.0) == UPDATED
    assert rt.get(c.identity) == moved


def test_one_prefix_cannot_flood_the_replacement_cache() -> None:
    rng = random.Random(19)
    rt = table(k=2, k_max=10)
    rt.observe(at(rng, 0, "1.1.1.1"), 0.0)
    rt.observe(at(rng, 0, "2.2.2.2"), 0.0)
    flood = [at(rng, 0, f"9.9.9.{i}") for i in range(1, 6)]
    other = at(rng, 0, "5.5.5.5")
    for t, contact in enumerate([*flood[:2], other, *flood[2:]]):
        assert rt.observe(contact, float(t)).verdict is Verdict.CACHED
    assert rt.stats()["replacements"] == 3  # two of 9.9.9.0/24 plus 5.5.5.5
    rt.set_k(10)
    kept = {c.identity for c in rt.contacts()}
    assert {flood[3].identity, flood[4].identity, other.identity} <= kept
    assert not {c.identity for c in flood[:3]} & kept


# -- adaptive k ---------------------------------------------------------------------------------


def test_set_k_shrinks_into_the_cache_and_grows_back() -> None:
    rng = random.Random(20)
    rt = table(k=4, k_max=6)
    a, b, c, d = (at(rng, 0) for _ in range(4))
    for t, contact in enumerate((a, b, c, d)):
        assert rt.observe(contact, float(t)) == ADDED
    rt.record_success(a.identity, 4.0)  # order now b, c, d, a
    rt.set_k(2)
    assert rt.k == 2
    assert {x.identity for x in rt.contacts()} == {d.identity, a.identity}
    assert rt.stats()["replacements"] == 2
    rt.set_k(4)
    assert len(rt) == 4
    assert rt.stats()["replacements"] == 0


def test_set_k_keeps_the_most_recently_seen_extras_when_the_cache_is_small() -> None:
    rng = random.Random(21)
    rt = table(k=4, k_max=6, replacement_cache=1)
    a, b, c, d = (at(rng, 0) for _ in range(4))
    for t, contact in enumerate((a, b, c, d)):
        rt.observe(contact, float(t))
    rt.set_k(2)  # a and b leave; only b (seen later) fits in the cache
    rt.set_k(4)
    assert {x.identity for x in rt.contacts()} == {b.identity, c.identity, d.identity}


def test_set_k_clamps() -> None:
    rt = table(k=4, k_min=2, k_max=6)
    rt.set_k(100)
    assert rt.k == 6
    rt.set_k(0)
    assert rt.k == 2


def test_shrinking_away_the_pinged_contact_frees_the_ping_slot() -> None:
    rng = random.Random(22)
    rt, a, b = full_bucket(rng)
    assert rt.observe(at(rng, 0), 3.0).ping == b
    rt.set_k(1)  # b (least recently seen) goes to the cache
    assert [x.identity for x in rt.contacts()] == [a.identity]
    assert rt.observe(at(rng, 0), 4.0).ping == a


# -- lookups ------------------------------------------------------------------------------------


def brute_force(rt: RoutingTable, target: bytes, count: int) -> list[Contact]:
    t = int.from_bytes(target, "big")
    return sorted(rt.contacts(), key=lambda c: int.from_bytes(bytes(c.identity), "big") ^ t)[:count]


@given(st.lists(ids32, max_size=60, unique=True), ids32, st.integers(0, 70))
def test_closest_matches_a_brute_force_sort(ids: list[bytes], target: bytes, count: int) -> None:
    rt = table(k=30, k_max=30)
    for raw in ids:
        if raw != bytes(LOCAL):
            rt.observe(make(raw), 0.0)
    assert rt.closest(target, count) == brute_force(rt, target, count)


def test_closest_on_a_large_table() -> None:
    rng = random.Random(23)
    rt = table(k=20)
    for _ in range(2_000):
        rt.observe(at(rng, min(int(rng.expovariate(0.3)), 255), "10.1.2.3"), 0.0)
    assert len(rt) > 250
    everyone = rt.contacts()
    for _ in range(30):
        target = rng.randbytes(32)
        for count in (1, 3, 20, 10_000):
            assert rt.closest(target, count) == brute_force(rt, target, count)
    member = everyone[17]
    nearest = rt.closest(bytes(member.identity), 4)
    assert nearest[0] == member
    assert rt.closest(bytes(member.identity), 3, exclude=member.identity) == nearest[1:]
    assert rt.closest(bytes(LOCAL), len(everyone) + 5) == brute_force(rt, bytes(LOCAL), 10**9)
    assert rt.closest(bytes(LOCAL), 0) == []
    with pytest.raises(ValueError, match="32 bytes"):
        rt.closest(b"short", 3)


# -- refresh ------------------------------------------------------------------------------------


def test_stale_buckets_and_mark_refreshed() -> None:
    rng = random.Random(24)
    rt = table(k=2, k_max=4, refresh_interval_s=100.0)
    a, a2, b = at(rng, 0), at(rng, 0), at(rng, 1)
    rt.observe(a, 0.0)
    rt.observe(a2, 0.0)  # bucket 0 is full
    rt.observe(b, 50.0)
    assert rt.stale_buckets(99.0) == []
    assert rt.stale_buckets(100.0) == [0]
    assert rt.stale_buckets(150.0) == [0, 1]
    rt.mark_refreshed(0, 150.0)
    assert rt.stale_buckets(150.0) == [1]
    rt.record_success(b.identity, 160.0)
    assert rt.stale_buckets(249.0) == []
    assert rt.stale_buckets(250.0) == [0]
    rt.mark_refreshed(200, 250.0)  # no such bucket: nothing to do
    with pytest.raises(ValueError, match="bucket index"):
        rt.mark_refreshed(256, 250.0)
    # A candidate arriving at a full bucket is not a touch of its contacts.
    rt.observe(at(rng, 0), 240.0)
    rt.observe(at(rng, 0), 240.0)
    assert rt.stale_buckets(250.0) == [0]
    assert rt.stats()["replacements"] == 2
    rt.remove(a.identity)
    rt.remove(a2.identity)
    rt.remove(b.identity)
    assert len(rt) == 2  # the candidates took a's and a2's places ...
    assert rt.stale_buckets(250.0) == [0]
    rt.observe(at(rng, 3), 250.0)
    assert rt.stale_buckets(10_000.0) == [0, 3]
    for contact in rt.contacts():
        rt.remove(contact.identity)
    assert rt.stale_buckets(10_000.0) == []  # ... and empty buckets need no refresh


def test_every_insertion_and_update_touches_its_bucket() -> None:
    rng = random.Random(27)
    rt = table(refresh_interval_s=100.0)
    a = at(rng, 0)
    rt.observe(a, 0.0)
    rt.observe(at(rng, 0), 60.0)  # ADDED
    assert rt.stale_buckets(159.0) == []
    assert rt.stale_buckets(160.0) == [0]
    rt.observe(a, 70.0)  # UPDATED
    assert rt.stale_buckets(169.0) == []
    assert rt.stale_buckets(170.0) == [0]


# -- counters and bounds ----------------------------------------------------------------------


def test_stats_counts_exactly() -> None:
    rng = random.Random(25)
    rt = table(k=2, k_max=4, exempt_networks=())
    rt.observe(make(bytes(LOCAL)), 0.0)  # refused: self
    a, b = at(rng, 0, "8.8.8.1"), at(rng, 0, "8.8.8.2")
    rt.observe(a, 0.0)
    rt.observe(b, 0.0)
    rt.observe(at(rng, 0, "8.8.8.3"), 0.0)  # refused: prefix
    rt.observe(at(rng, 0, "9.9.9.1"), 0.0)  # cached, ping a
    rt.observe(at(rng, 0, "9.9.9.2"), 0.0)  # cached, deduplicated
    rt.observe(at(rng, 4, "9.9.9.3"), 0.0)  # added to bucket 4
    rt.ping_result(a.identity, False, 1.0)  # evicted, 9.9.9.2 promoted
    assert rt.stats() == {
        "contacts": 3,
        "buckets": 2,
        "replacements": 1,
        "refused_prefix": 1,
        "refused_other": 1,
        "evicted": 1,
        "pings_requested": 1,
    }


def test_every_structure_stays_bounded() -> None:
    rng = random.Random(26)
    config = DhtConfig(k=4, k_min=2, k_max=6, replacement_cache=3, exempt_networks=())
    rt = RoutingTable(LOCAL, config)
    pending: list[Identity] = []
    known: list[Identity] = []
    added = 0
    for step in range(6_000):
        host = f"{rng.randrange(1, 30)}.0.0.{rng.randrange(1, 255)}"
        contact = at(rng, rng.randrange(ID_BITS), host, ts=rng.randrange(1, 10))
        result = rt.observe(contact, float(step))
        added += result.verdict is Verdict.ADDED
        known.append(contact.identity)
        if result.ping is not None:
            pending.append(result.ping.identity)
        roll = rng.random()
        if roll < 0.05 and pending:
            rt.ping_result(pending.pop(rng.randrange(len(pending))), rng.random() < 0.5, step)
        elif roll < 0.10:
            rt.record_failure(rng.choice(known), float(step))
        elif roll < 0.11:
            rt.set_k(rng.randrange(1, 8))
        if step % 500 == 499:
            stats = rt.stats()
            assert stats["contacts"] == len(rt) <= 256 * config.k_max
            assert stats["replacements"] <= 256 * config.replacement_cache
            assert stats["buckets"] <= 256
            contacts = rt.contacts()
            per_bucket = Counter(bucket_index(bytes(LOCAL), bytes(c.identity)) for c in contacts)
            assert max(per_bucket.values()) <= rt.k
            per_prefix = Counter(
                (bucket_index(bytes(LOCAL), bytes(c.identity)), diversity_prefix(ip))
                for c in contacts
                if (ip := primary_ip(c)) is not None
            )
            assert max(per_prefix.values()) <= config.max_per_prefix
    # The run really filled the table: most buckets are full and hold candidates.
    assert added > 1_000
    assert len(rt) > 256 * 2
    assert rt.stats()["replacements"] > 256
    assert rt.stats()["refused_prefix"] > 0
