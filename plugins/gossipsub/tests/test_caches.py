"""Tests of the seen cache and the message cache (``korium_gossipsub.caches``): pure state.

The seen cache decides what is a duplicate (and what a copy of a rejected message costs); the
message cache decides what IWANT can fetch and what IHAVE advertises. Both are bounded.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from korium_gossipsub.caches import MessageCache, Seen, SeenCache, Verdict


def mid(n: int) -> bytes:
    """A 32-byte message id."""
    return n.to_bytes(32, "big")


# -- seen cache -------------------------------------------------------------------------------


def test_seen_add_get_and_verdict() -> None:
    seen = SeenCache(ttl=120.0, max_entries=10)
    assert seen.get(mid(1)) is None
    assert mid(1) not in seen
    entry = seen.add(mid(1), 5.0, Verdict.PENDING)
    assert entry == Seen(5.0, Verdict.PENDING)
    assert seen.get(mid(1)) is entry
    assert mid(1) in seen
    assert len(seen) == 1
    entry.verdict = Verdict.REJECTED  # the router records the application's verdict in place
    assert seen.get(mid(1)) == Seen(5.0, Verdict.REJECTED)
    assert seen.get(mid(2)) is None
    assert seen.evicted == 0


def test_seen_expires_at_exactly_ttl() -> None:
    """An id first seen at t is kept until t + ttl and forgotten at t + ttl (inclusive)."""
    seen = SeenCache(ttl=120.0, max_entries=10)
    seen.add(mid(1), 10.0, Verdict.ACCEPTED)
    seen.add(mid(2), 11.0, Verdict.REJECTED)
    seen.expire(129.75)
    assert len(seen) == 2
    seen.expire(130.0)
    assert mid(1) not in seen
    assert mid(2) in seen
    seen.expire(130.5)
    assert mid(2) in seen
    seen.expire(131.0)
    assert len(seen) == 0
    assert seen.evicted == 0  # expiry is not eviction


def test_seen_expire_forgets_every_old_id_in_one_call() -> None:
    seen = SeenCache(ttl=10.0, max_entries=1000)
    for n in range(100):
        seen.add(mid(n), float(n), Verdict.ACCEPTED)
    seen.expire(60.0)  # first seen at 0..50 are >= 10 s old
    assert len(seen) == 49
    assert mid(50) not in seen
    assert mid(51) in seen


def test_seen_full_cache_evicts_oldest_first_and_counts() -> None:
    seen = SeenCache(ttl=120.0, max_entries=3)
    for n in range(3):
        seen.add(mid(n), float(n), Verdict.ACCEPTED)
    assert seen.evicted == 0
    seen.add(mid(3), 3.0, Verdict.PENDING)
    assert seen.evicted == 1
    assert mid(0) not in seen
    assert [n for n in range(4) if mid(n) in seen] == [1, 2, 3]
    for n in range(4, 9):
        seen.add(mid(n), float(n), Verdict.ACCEPTED)
    assert seen.evicted == 6
    assert len(seen) == 3
    assert [n for n in range(9) if mid(n) in seen] == [6, 7, 8]


@given(st.integers(1, 20), st.integers(0, 60))
def test_seen_never_holds_more_than_max_entries(cap: int, adds: int) -> None:
    seen = SeenCache(ttl=120.0, max_entries=cap)
    for n in range(adds):
        seen.add(mid(n), float(n), Verdict.ACCEPTED)
    assert len(seen) == min(cap, adds)
    assert seen.evicted == max(0, adds - cap)
    assert all(mid(n) in seen for n in range(max(0, adds - cap), adds))


def test_seen_re_adding_an_id_does_not_stall_expiry() -> None:
    seen = SeenCache(ttl=10.0, max_entries=10)
    seen.add(mid(1), 0.0, Verdict.PENDING)
    seen.add(mid(2), 1.0, Verdict.ACCEPTED)
    seen.add(mid(1), 5.0, Verdict.ACCEPTED)
    seen.expire(11.0)  # mid(2) was first seen 10 s ago
    assert mid(2) not in seen


# -- message cache ----------------------------------------------------------------------------


def test_message_cache_put_and_get() -> None:
    cache: MessageCache[str] = MessageCache(history_length=5, history_gossip=3)
    assert cache.get(mid(1)) is None
    cache.put(mid(1), "a", "m1")
    cache.put(mid(2), "b", "m2")
    assert cache.get(mid(1)) == "m1"
    assert cache.get(mid(2)) == "m2"
    assert mid(1) in cache
    assert mid(3) not in cache
    assert len(cache) == 2


def test_message_cache_duplicate_put_is_ignored() -> None:
    """A copy neither replaces the entry, nor repeats the id in IHAVE, nor extends its life."""
    cache: MessageCache[str] = MessageCache(history_length=3, history_gossip=2)
    cache.put(mid(1), "a", "first")
    cache.shift()
    cache.put(mid(1), "a", "second")
    assert cache.get(mid(1)) == "first"
    assert len(cache) == 1
    assert cache.gossip_ids("a") == [mid(1)]
    cache.shift()
    assert cache.gossip_ids("a") == []  # aged out of the gossip windows as first put
    cache.shift()
    assert mid(1) not in cache


def test_gossip_ids_are_per_topic_newest_first() -> None:
    cache: MessageCache[str] = MessageCache(history_length=5, history_gossip=3)
    cache.put(mid(1), "a", "m")
    cache.put(mid(2), "b", "m")
    cache.put(mid(3), "a", "m")
    cache.shift()
    cache.put(mid(4), "a", "m")
    cache.put(mid(5), "a", "m")
    assert cache.gossip_ids("a") == [mid(5), mid(4), mid(3), mid(1)]
    assert cache.gossip_ids("b") == [mid(2)]
    assert cache.gossip_ids("c") == []


def test_gossip_ids_come_only_from_the_newest_history_gossip_windows() -> None:
    cache: MessageCache[str] = MessageCache(history_length=5, history_gossip=3)
    for window in range(5):
        cache.put(mid(window), "a", "m")
        cache.shift()
    # Windows now hold (newest first): [], [4], [3], [2], [1]; mid(0) was dropped.
    assert cache.gossip_ids("a") == [mid(4), mid(3)]
    assert [n for n in range(5) if mid(n) in cache] == [1, 2, 3, 4]
    # Still fetchable by IWANT though no longer advertised.
    assert cache.get(mid(1)) == "m"


def test_shift_drops_a_window_after_history_length_shifts() -> None:
    cache: MessageCache[str] = MessageCache(history_length=5, history_gossip=3)
    cache.put(mid(1), "a", "m")
    cache.put(mid(2), "b", "m")
    for shifts in range(1, 5):
        cache.shift()
        assert len(cache) == 2, shifts
    cache.shift()
    assert len(cache) == 0
    assert cache.get(mid(1)) is None
    assert cache.gossip_ids("a") == []


def test_advertised_for_history_gossip_shifts_kept_for_history_length() -> None:
    cache: MessageCache[str] = MessageCache(history_length=5, history_gossip=3)
    cache.put(mid(7), "a", "m")
    advertised, kept = [], []
    for _ in range(6):
        advertised.append(mid(7) in cache.gossip_ids("a"))
        kept.append(mid(7) in cache)
        cache.shift()
    assert advertised == [True, True, True, False, False, False]
    assert kept == [True, True, True, True, True, False]


def test_get_for_peer_counts_per_peer_and_per_message() -> None:
    cache: MessageCache[str] = MessageCache(history_length=5, history_gossip=3)
    cache.put(mid(1), "a", "m1")
    cache.put(mid(2), "a", "m2")
    assert cache.get_for_peer(mid(1), "p") == ("m1", 1)
    assert cache.get_for_peer(mid(1), "p") == ("m1", 2)
    assert cache.get_for_peer(mid(1), "q") == ("m1", 1)
    assert cache.get_for_peer(mid(2), "p") == ("m2", 1)
    assert cache.get_for_peer(mid(1), "p") == ("m1", 3)
    assert cache.get_for_peer(mid(9), "p") == (None, 0)
    assert cache.get_for_peer(mid(9), "p") == (None, 0)  # unknown ids are not counted
    assert cache.get(mid(1)) == "m1"  # plain get does not count
    assert cache.get_for_peer(mid(1), "p") == ("m1", 4)


def test_iwant_counts_are_dropped_with_the_message() -> None:
    cache: MessageCache[str] = MessageCache(history_length=2, history_gossip=1)
    cache.put(mid(1), "a", "m1")
    for _ in range(3):
        cache.get_for_peer(mid(1), "p")
    assert cache.get_for_peer(mid(1), "p") == ("m1", 4)
    cache.shift()
    cache.shift()
    assert cache.get_for_peer(mid(1), "p") == (None, 0)
    cache.put(mid(1), "a", "again")  # cached anew: its counts start from zero
    assert cache.get_for_peer(mid(1), "p") == ("again", 1)


@given(st.lists(st.tuples(st.booleans(), st.sampled_from("ab")), max_size=60))
def test_message_cache_matches_a_model(ops: list[tuple[bool, str]]) -> None:
    """Random puts and shifts: cached iff put within the last history_length windows,
    advertised iff within the last history_gossip windows, newest first."""
    length, gossip = 4, 2
    cache: MessageCache[int] = MessageCache(history_length=length, history_gossip=gossip)
    put_at: dict[int, tuple[int, str]] = {}  # n -> (window number, topic)
    window = 0
    for n, (shift, topic) in enumerate(ops):
        if shift:
            cache.shift()
            window += 1
        else:
            cache.put(mid(n), topic, n)
            put_at[n] = (window, topic)
    for n, (w, _) in put_at.items():
        assert (mid(n) in cache) is (window - w < length)
    for topic in "ab":
        expected = [
            mid(n)
            for n, (w, t) in sorted(put_at.items(), key=lambda item: (-item[1][0], -item[0]))
            if t == topic and window - w < gossip
        ]
        assert cache.gossip_ids(topic) == expected


def test_message_cache_drops_its_oldest_messages_beyond_max_bytes() -> None:
    cache: MessageCache[bytes] = MessageCache(5, 3, max_bytes=250, size=len)
    for index in range(3):
        cache.put(bytes([index]) * 32, "t", bytes(100))
        cache.shift()
    assert len(cache) == 2  # the first went when the third arrived
    assert cache.bytes == 200
    assert cache.evicted == 1
    assert bytes([0]) * 32 not in cache
    assert cache.get(bytes([2]) * 32) == bytes(100)
    for _ in range(5):
        cache.shift()
    assert (len(cache), cache.bytes, cache.evicted) == (0, 0, 1)
