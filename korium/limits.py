"""Rate limiters: pure token buckets, and a set of them keyed by peer or IP with an LRU cap.

Why in the kernel: every plugin that accepts work from peers (DHT stores and routing
insertions, pubsub messages...) needs the same two tools; they take the time as an argument
(no clock read), so they work unchanged on virtual time and in unit tests.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


@dataclass(slots=True)
class TokenBucket:
    """*capacity* tokens, refilled continuously so that a full bucket refills in *window* s."""

    capacity: int
    window: float
    tokens: float
    updated: float

    @classmethod
    def full(cls, capacity: int, window: float, now: float) -> TokenBucket:
        return cls(capacity, window, float(capacity), now)

    def take(self, now: float) -> bool:
        """Spend one token if there is one. A *now* earlier than the last one refills nothing."""
        if now > self.updated:
            refill = (now - self.updated) * self.capacity / self.window
            self.tokens = min(float(self.capacity), self.tokens + refill)
            self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


class KeyedRateLimiter(Generic[K]):
    """One token bucket per key; at most *max_keys* keys are tracked (least recent dropped).

    Dropping a key forgets its debt, so the cap trades a little precision for bounded memory;
    an attacker needs *max_keys* other keys to reset one, and each of those is limited too.
    """

    def __init__(self, capacity: int, window: float, max_keys: int) -> None:
        self.capacity = capacity
        self.window = window
        self.max_keys = max_keys
        self.refused = 0
        self._buckets: OrderedDict[K, TokenBucket] = OrderedDict()

    def allow(self, key: K, now: float) -> bool:
        """Whether *key* may act now (spends a token if so)."""
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = TokenBucket.full(self.capacity, self.window, now)
            self._buckets[key] = bucket
            if len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        else:
            self._buckets.move_to_end(key)
        if bucket.take(now):
            return True
        self.refused += 1
        return False

    def __len__(self) -> int:
        return len(self._buckets)
