"""Token buckets and the keyed rate limiter: time is an argument, so every case is exact."""

from __future__ import annotations

import pytest

from korium.limits import KeyedRateLimiter, TokenBucket


def test_a_full_bucket_allows_its_capacity_then_refuses() -> None:
    bucket = TokenBucket.full(3, 60.0, now=0.0)
    assert [bucket.take(0.0) for _ in range(4)] == [True, True, True, False]


def test_tokens_come_back_continuously() -> None:
    bucket = TokenBucket.full(6, 60.0, now=0.0)  # one token every 10 s
    assert all(bucket.take(0.0) for _ in range(6))
    assert not bucket.take(9.9)
    assert bucket.take(10.0)
    assert not bucket.take(10.0)
    assert bucket.take(30.0)  # two tokens refilled; one spent
    assert bucket.take(30.0)
    assert not bucket.take(30.0)


def test_refill_is_capped_at_capacity() -> None:
    bucket = TokenBucket.full(2, 1.0, now=0.0)
    assert bucket.take(0.0)
    assert bucket.tokens == pytest.approx(1.0)
    bucket.take(1_000.0)
    assert bucket.tokens == pytest.approx(1.0)  # capped at 2 before the take, not 2,000


def test_time_going_backwards_refills_nothing() -> None:
    bucket = TokenBucket.full(1, 10.0, now=100.0)
    assert bucket.take(100.0)
    assert not bucket.take(50.0)
    assert not bucket.take(100.0)


def test_keys_are_limited_separately_and_refusals_counted() -> None:
    limiter: KeyedRateLimiter[str] = KeyedRateLimiter(capacity=2, window=10.0, max_keys=10)
    assert [limiter.allow("a", 0.0) for _ in range(3)] == [True, True, False]
    assert limiter.allow("b", 0.0)
    assert limiter.refused == 1
    assert len(limiter) == 2
    assert limiter.allow("a", 5.0)  # one token back after half the window


def test_the_least_recently_used_key_is_forgotten_at_the_cap() -> None:
    limiter: KeyedRateLimiter[int] = KeyedRateLimiter(capacity=1, window=100.0, max_keys=2)
    assert limiter.allow(1, 0.0)
    assert limiter.allow(2, 0.0)
    assert not limiter.allow(1, 0.0)  # 1 is now the most recent
    assert limiter.allow(3, 0.0)  # evicts 2, the least recently used
    assert len(limiter) == 2
    assert not limiter.allow(1, 0.0)  # still tracked: still in debt
    assert limiter.allow(2, 0.0)  # forgotten: a fresh, full bucket
