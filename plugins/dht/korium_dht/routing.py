"""The Kademlia routing table: which peers this node knows, bucketed by XOR distance.

This module is pure state. It does no I/O, starts no tasks and never reads a clock: the DHT
driver passes the time in (``now``, seconds) and acts on what the table asks for (an
:class:`Observation` may ask for one ping). That keeps every rule testable in isolation and
lets the driver own all concurrency.

Compared with the Rust reference (``rust-protocols.md`` §1.2) it adds:

* a **replacement cache** per bucket: a newcomer meeting a full bucket is remembered, not
  dropped, so a contact that stops answering can be replaced at once;
* **deduplicated pings**: at most one outstanding liveness ping per bucket, however many
  newcomers arrive (the reference spawned a ping per insertion attempt);
* **anti-eclipse**: at most ``max_per_prefix`` contacts of one /24 (IPv4) or /48 (IPv6) per
  bucket, and as many per replacement cache, so one network cannot fill a bucket or flush its
  candidates;
* **lazy buckets**: a bucket object exists only while it holds something.

Callers validate contacts (signature, proof of work, freshness) before :meth:`observe`; the
table trusts them.
"""

from __future__ import annotations

import enum
import random
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from korium.identity import Contact, Identity
from korium.netaddr import IpAddress
from korium_dht.config import ID_BITS, DhtConfig
from korium_dht.netaddr import diversity_prefix, primary_ip

__all__ = [
    "ID_BITS",
    "PING_EXPIRY_FACTOR",
    "Observation",
    "RoutingTable",
    "Verdict",
    "bucket_index",
    "random_id_in_bucket",
]

_ID_BYTES: Final = ID_BITS // 8
PING_EXPIRY_FACTOR: Final = 4
"""An outstanding ping older than this many ``query_timeout_s`` is presumed lost, so a driver
that never reports a result cannot block a bucket's replacements forever."""


def bucket_index(local: bytes, other: bytes) -> int:
    """Leading zero bits of ``local XOR other`` (0..255; 0 is the farthest half of the space).

    :raises ValueError: the ids are equal (an id has no bucket relative to itself) or not
        32 bytes each.
    """
    if len(local) != _ID_BYTES or len(other) != _ID_BYTES:
        raise ValueError(f"ids are {_ID_BYTES} bytes, got {len(local)} and {len(other)}")
    distance = int.from_bytes(local, "big") ^ int.from_bytes(other, "big")
    if not distance:
        raise ValueError("an id has no bucket relative to itself")
    return ID_BITS - distance.bit_length()


def random_id_in_bucket(local: bytes, index: int, rng: random.Random) -> bytes:
    """32 random bytes in bucket *index* of *local*: the target of a bucket refresh lookup.

    The first *index* bits equal *local*'s, the next one differs, the rest are random. The
    result need not be a valid Ed25519 key: lookups only need a point in the id space.
    """
    if len(local) != _ID_BYTES:
        raise ValueError(f"an id is {_ID_BYTES} bytes, got {len(local)}")
    if not 0 <= index < ID_BITS:
        raise ValueError(f"bucket index must be 0 to {ID_BITS - 1}, got {index}")
    free_bits = ID_BITS - 1 - index
    distance = (1 << free_bits) | rng.getrandbits(free_bits)
    return (int.from_bytes(local, "big") ^ distance).to_bytes(_ID_BYTES, "big")


class Verdict(enum.Enum):
    """What :meth:`RoutingTable.observe` did with a contact."""

    ADDED = "added"
    """Inserted into a bucket that had room."""
    UPDATED = "updated"
    """Already in its bucket: marked seen (and its record replaced if the new one is newer)."""
    CACHED = "cached"
    """Its bucket is full: kept as a replacement candidate."""
    REFUSED = "refused"
    """Not kept; :attr:`Observation.reason` says why."""


@dataclass(frozen=True, slots=True)
class Observation:
    """The outcome of :meth:`RoutingTable.observe`.

    When :attr:`ping` is set, the driver must ping that contact (the least-recently-seen one
    of a full bucket) and report with :meth:`RoutingTable.ping_result`: a dead contact then
    makes room for the cached newcomer.
    """

    verdict: Verdict
    ping: Contact | None = None
    reason: str | None = None
    """For REFUSED: ``"self"``, ``"no-address"`` (no literal IP) or ``"prefix"`` (anti-eclipse)."""


class _Entry:
    """A contact in a bucket, with what liveness tracking needs."""

    __slots__ = ("contact", "failures", "id_int", "last_seen", "prefix")

    def __init__(self, contact: Contact, id_int: int, prefix: str | None, last_seen: float):
        self.contact = contact
        self.id_int = id_int  # precomputed: closest() compares ints on the lookup hot path
        self.prefix = prefix  # diversity prefix, None when exempt
        self.last_seen = last_seen
        self.failures = 0


class _Candidate:
    """A replacement candidate: a contact seen while its bucket was full."""

    __slots__ = ("contact", "prefix", "seen")

    def __init__(self, contact: Contact, prefix: str | None, seen: float):
        self.contact = contact
        self.prefix = prefix
        self.seen = seen


class _Bucket:
    """Up to k contacts, least-recently-seen first, plus newest-last replacement candidates."""

    __slots__ = ("cache", "entries", "last_touched", "ping_sent", "pinging")

    def __init__(self, now: float):
        self.entries: OrderedDict[Identity, _Entry] = OrderedDict()
        self.cache: OrderedDict[Identity, _Candidate] = OrderedDict()
        self.last_touched = now
        self.pinging: Identity | None = None
        self.ping_sent = 0.0


class RoutingTable:
    """This node's Kademlia routing table (see the module docstring for the rules)."""

    def __init__(self, local: Identity, config: DhtConfig) -> None:
        self.local = local
        self._config = config
        self._local_int = int.from_bytes(bytes(local), "big")
        self._k = config.k
        self._buckets: dict[int, _Bucket] = {}
        self._ping_expiry = PING_EXPIRY_FACTOR * config.query_timeout_s
        self._refused_prefix = 0
        self._refused_other = 0
        self._evicted = 0
        self._pings_requested = 0

    # -- size ----------------------------------------------------------------------------------

    @property
    def k(self) -> int:
        """The current bucket size (adaptive: the driver moves it with churn)."""
        return self._k

    def set_k(self, k: int) -> None:
        """Resize every bucket to *k*, clamped to ``[k_min, k_max]``.

        Shrinking moves each bucket's least-recently-seen extras to its replacement cache, so
        they can come back when k grows again; growing promotes cached candidates.
        """
        k = max(self._config.k_min, min(self._config.k_max, k))
        previous, self._k = self._k, k
        if k < previous:
            for bucket in self._buckets.values():
                while len(bucket.entries) > k:
                    identity, entry = bucket.entries.popitem(last=False)
                    if bucket.pinging == identity:
                        bucket.pinging = None
                    self._cache_put(bucket, identity, entry.contact, entry.prefix, entry.last_seen)
        elif k > previous:
            for bucket in self._buckets.values():
                self._promote(bucket)

    # -- observations --------------------------------------------------------------------------

    def observe(self, contact: Contact, now: float) -> Observation:
        """Offer a (validated) contact to the table; see :class:`Verdict` for the outcomes."""
        identity = contact.identity
        id_int = int.from_bytes(bytes(identity), "big")
        distance = id_int ^ self._local_int
        if not distance:
            self._refused_other += 1
            return Observation(Verdict.REFUSED, reason="self")
        ip = primary_ip(contact)
        if ip is None:
            self._refused_other += 1
            return Observation(Verdict.REFUSED, reason="no-address")
        index = ID_BITS - distance.bit_length()
        bucket = self._buckets.get(index)
        if bucket is not None:
            entry = bucket.entries.get(identity)
            if entry is not None:
                return self._update(bucket, entry, contact, ip, now)
            cached = bucket.cache.get(identity)
            if cached is not None and contact.timestamp_ms <= cached.contact.timestamp_ms:
                contact = cached.contact  # the freshest record wins
                prefix = cached.prefix
            else:
                prefix = self._prefix_key(ip)
            if self._prefix_full(bucket, prefix, None):
                self._refused_prefix += 1
                return Observation(Verdict.REFUSED, reason="prefix")
        else:
            prefix = self._prefix_key(ip)
            bucket = self._buckets[index] = _Bucket(now)

        if len(bucket.entries) < self._k:
            bucket.cache.pop(identity, None)
            bucket.entries[identity] = _Entry(contact, id_int, prefix, now)
            bucket.last_touched = now
            return Observation(Verdict.ADDED)

        self._cache_put(bucket, identity, contact, prefix, now)
        if bucket.pinging is not None and now - bucket.ping_sent < self._ping_expiry:
            return Observation(Verdict.CACHED)
        oldest = next(iter(bucket.entries.values())).contact
        bucket.pinging = oldest.identity
        bucket.ping_sent = now
        self._pings_requested += 1
        return Observation(Verdict.CACHED, ping=oldest)

    def _update(
        self, bucket: _Bucket, entry: _Entry, contact: Contact, ip: IpAddress, now: float
    ) -> Observation:
        """A known contact was seen again: refresh it, keeping the freshest record."""
        if contact.timestamp_ms > entry.contact.timestamp_ms:
            prefix = self._prefix_key(ip)
            if prefix != entry.prefix and self._prefix_full(bucket, prefix, contact.identity):
                # Moving to a saturated network is refused like any newcomer from there.
                self._refused_prefix += 1
                return Observation(Verdict.REFUSED, reason="prefix")
            entry.contact = contact
            entry.prefix = prefix
        self._seen(bucket, entry, now)
        return Observation(Verdict.UPDATED)

    def ping_result(self, identity: Identity, alive: bool, now: float) -> None:
        """Report the ping an :class:`Observation` asked for.

        Alive: the contact stays (long-lived contacts are the most reliable) and the newcomer
        stays cached. Dead: it is removed and the newest eligible candidate takes its place.
        """
        bucket = self._bucket_of(identity)
        if bucket is None:
            return
        if bucket.pinging == identity:
            bucket.pinging = None
        if alive:
            self.record_success(identity, now)
        elif identity in bucket.entries:
            self._remove_entry(bucket, identity)
            self._evicted += 1
            if self._promote(bucket):
                bucket.last_touched = now
            self._drop_if_empty(identity)

    def record_success(self, identity: Identity, now: float) -> None:
        """The contact answered a request: it is alive and now the most recently seen."""
        bucket = self._bucket_of(identity)
        if bucket is None:
            return
        entry = bucket.entries.get(identity)
        if entry is not None:
            self._seen(bucket, entry, now)
            return
        candidate = bucket.cache.get(identity)
        if candidate is not None:
            candidate.seen = now
            bucket.cache.move_to_end(identity)

    def record_failure(self, identity: Identity, now: float) -> bool:
        """The contact failed a request. Returns True if it was evicted from its bucket.

        After ``failures_before_eviction`` consecutive failures it is replaced, but only by an
        eligible cached candidate: a stale contact is better than an empty slot. A failing
        candidate is simply dropped from the cache (that returns False: the buckets are
        unchanged).
        """
        bucket = self._bucket_of(identity)
        if bucket is None:
            return False
        entry = bucket.entries.get(identity)
        if entry is None:
            if bucket.cache.pop(identity, None) is not None:
                self._drop_if_empty(identity)
            return False
        entry.failures += 1
        if entry.failures < self._config.failures_before_eviction:
            return False
        replacement = self._eligible_candidate(bucket, skip=identity)
        if replacement is None:
            return False
        self._remove_entry(bucket, identity)
        self._evicted += 1
        self._admit(bucket, replacement)
        bucket.last_touched = now
        return True

    def remove(self, identity: Identity) -> bool:
        """Forget *identity* (from its bucket or cache); True if it was there.

        A freed bucket slot is refilled from the cache at once.
        """
        bucket = self._bucket_of(identity)
        if bucket is None:
            return False
        if identity in bucket.entries:
            self._remove_entry(bucket, identity)
            self._promote(bucket)
        elif bucket.cache.pop(identity, None) is None:
            return False
        self._drop_if_empty(identity)
        return True

    # -- queries -------------------------------------------------------------------------------

    def get(self, identity: Identity) -> Contact | None:
        """The stored record of *identity*, if it is in a bucket (candidates do not count)."""
        bucket = self._bucket_of(identity)
        if bucket is None:
            return None
        entry = bucket.entries.get(identity)
        return None if entry is None else entry.contact

    def __contains__(self, identity: object) -> bool:
        return isinstance(identity, Identity) and self.get(identity) is not None

    def __len__(self) -> int:
        return sum(len(bucket.entries) for bucket in self._buckets.values())

    def contacts(self) -> list[Contact]:
        """Every contact in the buckets, nearest bucket last."""
        return [entry.contact for entry in self._entries()]

    def closest(
        self, target: bytes, count: int, *, exclude: Identity | None = None
    ) -> list[Contact]:
        """Up to *count* contacts nearest *target* by XOR distance, nearest first."""
        if len(target) != _ID_BYTES:
            raise ValueError(f"a target is {_ID_BYTES} bytes, got {len(target)}")
        if count <= 0:
            return []
        t = int.from_bytes(target, "big")
        skip = int.from_bytes(bytes(exclude), "big") if exclude is not None else None
        # Walk buckets in distance order instead of sorting the whole table. With b the
        # target's bucket: bucket b's contacts are nearest (they share b+1 bits with it), then
        # every bucket j > b (bit b set in the distance, lower bits vary: sorted together),
        # then buckets b-1, b-2, ..., each wholly farther than the one before.
        distance = t ^ self._local_int
        b = ID_BITS - distance.bit_length() if distance else ID_BITS - 1
        groups: list[list[_Entry]] = []
        first = self._buckets.get(b)
        if first is not None:
            groups.append(list(first.entries.values()))
        groups.append([e for j, bk in self._buckets.items() if j > b for e in bk.entries.values()])
        found: list[_Entry] = []
        for j in range(b - 1, -2, -1):
            for group in groups:
                if skip is not None:
                    group = [e for e in group if e.id_int != skip]
                group.sort(key=lambda e: e.id_int ^ t)
                found.extend(group[: count - len(found)])
                if len(found) >= count:
                    return [e.contact for e in found]
            bucket = self._buckets.get(j) if j >= 0 else None
            groups = [list(bucket.entries.values())] if bucket is not None else []
        return [e.contact for e in found]

    def stale_buckets(self, now: float) -> list[int]:
        """Non-empty buckets untouched for ``refresh_interval_s``: each needs a refresh lookup
        (of :func:`random_id_in_bucket`) so that quiet regions of the id space stay known."""
        interval = self._config.refresh_interval_s
        return sorted(
            index
            for index, bucket in self._buckets.items()
            if bucket.entries and now - bucket.last_touched >= interval
        )

    def mark_refreshed(self, index: int, now: float) -> None:
        """A refresh lookup for bucket *index* ran; it is not stale until the interval passes."""
        if not 0 <= index < ID_BITS:
            raise ValueError(f"bucket index must be 0 to {ID_BITS - 1}, got {index}")
        bucket = self._buckets.get(index)
        if bucket is not None:
            bucket.last_touched = now

    def stats(self) -> dict[str, int]:
        """Sizes and cumulative counters, for telemetry.

        ``evicted`` counts contacts removed for not answering (dead pings and repeated
        failures), not explicit :meth:`remove` calls; ``refused_other`` counts ``"self"`` and
        ``"no-address"`` refusals.
        """
        return {
            "contacts": len(self),
            "buckets": len(self._buckets),
            "replacements": sum(len(bucket.cache) for bucket in self._buckets.values()),
            "refused_prefix": self._refused_prefix,
            "refused_other": self._refused_other,
            "evicted": self._evicted,
            "pings_requested": self._pings_requested,
        }

    # -- internals -----------------------------------------------------------------------------

    def _entries(self) -> Iterator[_Entry]:
        for index in sorted(self._buckets):
            yield from self._buckets[index].entries.values()

    def _index_of(self, identity: Identity) -> int | None:
        distance = int.from_bytes(bytes(identity), "big") ^ self._local_int
        return ID_BITS - distance.bit_length() if distance else None

    def _bucket_of(self, identity: Identity) -> _Bucket | None:
        index = self._index_of(identity)
        return None if index is None else self._buckets.get(index)

    def _drop_if_empty(self, identity: Identity) -> None:
        """Free the bucket object of *identity* once it holds nothing (buckets are lazy)."""
        index = self._index_of(identity)
        if index is None:
            return
        bucket = self._buckets.get(index)
        if bucket is not None and not bucket.entries and not bucket.cache:
            del self._buckets[index]

    def _prefix_key(self, ip: IpAddress) -> str | None:
        """The prefix the anti-eclipse rule counts *ip* under; None when it is exempt."""
        return None if self._config.is_exempt(ip) else diversity_prefix(ip)

    def _prefix_full(
        self, bucket: _Bucket | None, prefix: str | None, skip: Identity | None
    ) -> bool:
        """Whether *bucket* already holds ``max_per_prefix`` contacts (other than *skip*)
        from *prefix*."""
        if prefix is None or bucket is None:
            return False
        same = sum(
            1
            for identity, entry in bucket.entries.items()
            if entry.prefix == prefix and identity != skip
        )
        return same >= self._config.max_per_prefix

    @staticmethod
    def _seen(bucket: _Bucket, entry: _Entry, now: float) -> None:
        entry.last_seen = now
        entry.failures = 0
        bucket.entries.move_to_end(entry.contact.identity)
        bucket.last_touched = now

    def _cache_put(
        self,
        bucket: _Bucket,
        identity: Identity,
        contact: Contact,
        prefix: str | None,
        seen: float,
    ) -> None:
        """Add or refresh a candidate at the newest end, within the cache's caps.

        One prefix may hold at most ``max_per_prefix`` cache slots (its oldest goes first), so
        a flood from one network cannot push out every other candidate.
        """
        bucket.cache.pop(identity, None)
        if prefix is not None:
            same = [i for i, c in bucket.cache.items() if c.prefix == prefix]
            if len(same) >= self._config.max_per_prefix:
                del bucket.cache[same[0]]
        while len(bucket.cache) >= self._config.replacement_cache:
            bucket.cache.popitem(last=False)
        bucket.cache[identity] = _Candidate(contact, prefix, seen)

    def _eligible_candidate(self, bucket: _Bucket, skip: Identity | None) -> Identity | None:
        """The newest cached candidate the prefix rule admits (ignoring *skip*'s entry)."""
        for identity in reversed(bucket.cache):
            if not self._prefix_full(bucket, bucket.cache[identity].prefix, skip):
                return identity
        return None

    def _admit(self, bucket: _Bucket, identity: Identity) -> None:
        candidate = bucket.cache.pop(identity)
        id_int = int.from_bytes(bytes(identity), "big")
        bucket.entries[identity] = _Entry(
            candidate.contact, id_int, candidate.prefix, candidate.seen
        )

    def _promote(self, bucket: _Bucket) -> int:
        """Fill free slots from the cache, newest eligible candidate first; returns how many."""
        promoted = 0
        while len(bucket.entries) < self._k:
            identity = self._eligible_candidate(bucket, None)
            if identity is None:
                break
            self._admit(bucket, identity)
            promoted += 1
        return promoted

    @staticmethod
    def _remove_entry(bucket: _Bucket, identity: Identity) -> None:
        del bucket.entries[identity]
        if bucket.pinging == identity:
            bucket.pinging = None
