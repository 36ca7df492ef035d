"""The DHT's local storage: what this node holds for the network, as a pure state object.

Why pure: no clock reads, no I/O and no asyncio, so every rule (classification, record
monotonicity, rate, quotas, totals, expiry) is tested with plain numbers. The caller passes
``now`` (monotonic seconds, the event loop's clock) and ``now_ms`` (Unix milliseconds, for
the freshness of signed records).

Two kinds of item are stored (see ``docs/protocol.md``):

* a **value**, at the key ``blake3(value)``: content-addressed, so nobody can store other
  bytes under a key someone else uses;
* a **record**, at the key ``bytes(identity)``: a signed :class:`~korium.identity.Contact`
  for that identity, with a valid signature, a fresh timestamp and a proof of work at this
  node's difficulty. Only a strictly newer record replaces a stored one.

Unlike the Rust implementation this design follows, nobody can overwrite a key with
bytes it may not hold there, a record never goes backwards in time, every store is checked
again here whatever the caller checked, and a refusal raises (so the RPC layer can say why)
and leaves the store exactly as it was. Nothing is ever evicted to make room: a full store
refuses.
"""

from __future__ import annotations

import enum
import heapq
from dataclasses import dataclass
from typing import Final

import blake3

from korium.errors import (
    ConfigError,
    ContactError,
    ContactFromFutureError,
    ContactProofError,
    ContactSignatureError,
    ContactStaleError,
)
from korium.identity import MAX_CONTACT_SIZE, Contact, Identity
from korium.identity.pow import check_difficulty
from korium.limits import KeyedRateLimiter
from korium_dht.config import DhtConfig
from korium_dht.errors import (
    InvalidValueError,
    QuotaExceededError,
    RateLimitedError,
    RecordRefusedError,
    StorageFullError,
    StoreRefusedError,
    ValueTooLargeError,
)

KEY_LEN: Final = 32
"""Every DHT key is 32 bytes: a blake3 digest or an identity."""

_COMPACT_SLACK: Final = 64
"""The expiry heap is rebuilt once it holds this many more stale entries than items."""


class Kind(enum.Enum):
    """What a stored item is, which decides who may replace it."""

    VALUE = "value"
    """Content-addressed bytes: the key is their blake3 hash."""
    RECORD = "record"
    """A signed contact record: the key is the identity it is for."""


def value_key(value: bytes) -> bytes:
    """The key of a content-addressed value: its 32-byte blake3 digest."""
    return blake3.blake3(value).digest()


@dataclass(slots=True)
class StoredItem:
    """One stored value or record, and whom its bytes are charged to."""

    key: bytes
    value: bytes
    kind: Kind
    stored_by: Identity
    """The peer that stored it (charged for it); a refresh by another peer does not change it."""
    expires_at: float
    """Monotonic time at which the item is dropped unless stored again."""
    size: int
    """Bytes charged: ``len(value)``."""


@dataclass(slots=True)
class _Usage:
    """What one peer is charged for; dropped when it reaches zero entries (bounded memory)."""

    size: int = 0
    entries: int = 0


class Store:
    """A node's local DHT storage, with per-peer rate and quotas and global caps.

    :param config: the node's DHT settings (sizes, quotas, rate, totals, TTL).
    :param local: this node's identity; its own stores skip the per-peer rate and quota.
    :param difficulty: proof-of-work bits a stored record's identity must reach.
    :param max_record_age_s: oldest record timestamp accepted; a stored record also expires
        when it reaches this age, so the store never serves a record others would refuse.
    """

    def __init__(
        self,
        config: DhtConfig,
        local: Identity,
        *,
        difficulty: int,
        max_record_age_s: float,
    ) -> None:
        check_difficulty(difficulty)
        if not isinstance(max_record_age_s, int | float) or not max_record_age_s > 0:
            raise ConfigError(
                f"max_record_age_s must be a positive number of seconds, got {max_record_age_s!r}"
            )
        self._config = config
        self._local = local
        self._difficulty = difficulty
        self._max_record_age_s = float(max_record_age_s)
        self._rate: KeyedRateLimiter[Identity] = KeyedRateLimiter(
            config.stores_per_peer, config.store_window_s, config.rate_limiter_entries
        )
        self._items: dict[bytes, StoredItem] = {}
        # Decoded records by key, for the monotonicity check and record().
        self._contacts: dict[bytes, Contact] = {}
        self._usage: dict[Identity, _Usage] = {}
        # (expires_at, key), possibly stale: an entry counts only if its item has expired by
        # then. Every item has an entry for its current expiry.
        self._heap: list[tuple[float, bytes]] = []
        self._bytes = 0
        self._refused = 0
        self._expired = 0

    # -- classification ---------------------------------------------------------------------

    def classify(self, key: bytes, value: bytes, now_ms: int) -> Kind:
        """Whether *value* may be stored at *key*, and as what; does not store anything.

        :raises ValueTooLargeError: larger than ``config.max_value_size`` (checked first).
        :raises RecordRefusedError: a contact record that is for another key (``wrong-key``),
            ``stale``, ``future``-dated, badly signed (``signature``) or has a weak ``proof``.
        :raises InvalidValueError: neither ``blake3(value) == key`` nor a contact record.
        """
        return self._classify(bytes(key), bytes(value), now_ms)[0]

    def _check_size(self, value: bytes) -> None:
        limit = self._config.max_value_size
        if len(value) > limit:
            raise ValueTooLargeError(
                "too-large",
                f"value is {len(value)} bytes, the limit is {limit}: split it or store a hash",
            )

    def _classify(self, key: bytes, value: bytes, now_ms: int) -> tuple[Kind, Contact | None]:
        """:meth:`classify`, also returning the decoded record (so it is decoded once)."""
        self._check_size(value)
        if len(key) != KEY_LEN:
            raise InvalidValueError("invalid", f"a DHT key is {KEY_LEN} bytes, got {len(key)}")
        if value_key(value) == key:
            return Kind.VALUE, None
        if len(value) > MAX_CONTACT_SIZE:
            raise InvalidValueError(
                "invalid",
                f"the key is not the blake3 hash of the value, and {len(value)} bytes is too "
                f"large for a contact record (at most {MAX_CONTACT_SIZE})",
            )
        try:
            contact = Contact.decode(value)
        except ContactError as exc:
            raise InvalidValueError(
                "invalid",
                f"the key is not the blake3 hash of the value, nor is the value a contact "
                f"record ({exc})",
            ) from None
        if bytes(contact.identity) != key:
            raise RecordRefusedError(
                "wrong-key",
                f"a contact record for {contact.identity.short}... can only be stored at its "
                f"own identity, not at key {key[:8].hex()}...",
            )
        try:
            contact.validate(
                difficulty=self._difficulty, now_ms=now_ms, max_age_s=self._max_record_age_s
            )
        except ContactFromFutureError as exc:
            raise RecordRefusedError("future", str(exc)) from None
        except ContactStaleError as exc:
            raise RecordRefusedError("stale", str(exc)) from None
        except ContactSignatureError as exc:
            raise RecordRefusedError("signature", str(exc)) from None
        except ContactProofError as exc:
            raise RecordRefusedError("proof", str(exc)) from None
        return Kind.RECORD, contact

    # -- storing ----------------------------------------------------------------------------

    def put(self, key: bytes, value: bytes, stored_by: Identity, now: float, now_ms: int) -> Kind:
        """Store *value* at *key* for *stored_by*, or raise why not (the store is unchanged).

        Order: size; the storer's rate (before the costly hashing and signature check, so a
        flood of bad stores is limited too); classification; record monotonicity (a record
        older than or as old as the stored one is refused, an identical one refreshes);
        the storer's quota of bytes and entries; the node's totals. Storing a value or record
        that is already held only extends its expiry, charging nobody again. The local
        node's own stores skip the rate and quota, not the totals.

        :raises StoreRefusedError: one of its subclasses; ``reason`` says which rule.
        """
        try:
            return self._put(bytes(key), bytes(value), stored_by, now, now_ms)
        except StoreRefusedError:
            self._refused += 1
            raise

    def _put(self, key: bytes, value: bytes, stored_by: Identity, now: float, now_ms: int) -> Kind:
        config = self._config
        self._check_size(value)
        exempt = stored_by == self._local
        if not exempt and not self._rate.allow(stored_by, now):
            raise RateLimitedError(
                "rate",
                f"peer {stored_by.short}... made more than {config.stores_per_peer} stores in "
                f"{config.store_window_s:g} s: slow down",
            )
        kind, contact = self._classify(key, value, now_ms)

        expires_at = now + config.ttl_s
        if contact is not None:
            # A record is useless once stale: every receiver would refuse it.
            fresh_for = (contact.timestamp_ms - now_ms) / 1000 + self._max_record_age_s
            expires_at = min(expires_at, now + fresh_for)

        old = self._live(key, now)
        if old is not None:
            if kind is Kind.VALUE and old.kind is Kind.VALUE:
                # Same key, so the same bytes: a republish.
                self._extend(old, expires_at)
                return kind
            current = self._contacts.get(key)
            if contact is not None and current is not None:
                if contact == current:
                    self._extend(old, expires_at)
                    return kind
                if current.timestamp_ms >= contact.timestamp_ms:
                    raise RecordRefusedError(
                        "older",
                        f"a record for {contact.identity.short}... dated {current.timestamp_ms} "
                        f"is stored; one dated {contact.timestamp_ms} cannot replace it "
                        "(the newest record wins)",
                    )

        size = len(value)
        same_storer = old is not None and old.stored_by == stored_by
        released_size = old.size if old is not None and same_storer else 0
        if not exempt:
            usage = self._usage.get(stored_by) or _Usage()
            peer_bytes = usage.size - released_size + size
            peer_entries = usage.entries + (0 if same_storer else 1)
            if peer_bytes > config.per_peer_bytes:
                raise QuotaExceededError(
                    "quota-bytes",
                    f"peer {stored_by.short}... would hold {peer_bytes} bytes here, "
                    f"the quota is {config.per_peer_bytes}",
                )
            if peer_entries > config.per_peer_entries:
                raise QuotaExceededError(
                    "quota-entries",
                    f"peer {stored_by.short}... would hold {peer_entries} entries here, "
                    f"the quota is {config.per_peer_entries}",
                )
        total_entries = len(self._items) + (0 if old is not None else 1)
        total_bytes = self._bytes + size - (old.size if old is not None else 0)
        if total_entries > config.max_entries or total_bytes > config.max_total_bytes:
            raise StorageFullError(
                "full",
                f"this node holds {len(self._items)} entries and {self._bytes} bytes "
                f"(limits {config.max_entries} and {config.max_total_bytes}): store elsewhere",
            )

        # Every check passed: only now change anything.
        if old is not None:
            self._remove(old)
        item = StoredItem(key, value, kind, stored_by, expires_at, size)
        self._items[key] = item
        if contact is not None:
            self._contacts[key] = contact
        usage = self._usage.setdefault(stored_by, _Usage())
        usage.size += size
        usage.entries += 1
        self._bytes += size
        self._schedule(item)
        return kind

    # -- reading ----------------------------------------------------------------------------

    def get(self, key: bytes, now: float) -> bytes | None:
        """The value or encoded record stored at *key*; None if absent or expired."""
        item = self._live(key, now)
        return None if item is None else item.value

    def record(self, identity: Identity, now: float) -> Contact | None:
        """The stored (already validated) contact record of *identity*, if any."""
        key = bytes(identity)
        item = self._live(key, now)
        if item is None or item.kind is not Kind.RECORD:
            return None
        return self._contacts[key]

    def usage(self, peer: Identity) -> tuple[int, int]:
        """``(bytes, entries)`` currently charged to *peer*."""
        usage = self._usage.get(peer)
        return (0, 0) if usage is None else (usage.size, usage.entries)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, key: object) -> bool:
        """Whether an item is held at *key*; may include an expired one not yet removed."""
        return isinstance(key, bytes) and key in self._items

    def stats(self) -> dict[str, int]:
        """Counters for metrics: current entries, bytes, records, values and peers charged;
        cumulative refused stores and expired items."""
        records = len(self._contacts)
        return {
            "entries": len(self._items),
            "bytes": self._bytes,
            "records": records,
            "values": len(self._items) - records,
            "peers": len(self._usage),
            "refused": self._refused,
            "expired": self._expired,
        }

    # -- expiry -----------------------------------------------------------------------------

    def expire(self, now: float) -> int:
        """Remove every item expired at *now*; returns how many. O(1) when none expired."""
        heap = self._heap
        removed = 0
        while heap and heap[0][0] <= now:
            _, key = heapq.heappop(heap)
            item = self._items.get(key)
            # A stale heap entry (the item was refreshed, replaced or removed) is skipped.
            if item is not None and item.expires_at <= now:
                self._remove(item)
                self._expired += 1
                removed += 1
        return removed

    def _live(self, key: bytes, now: float) -> StoredItem | None:
        """The item at *key*, removing it first if it has expired."""
        item = self._items.get(key)
        if item is not None and item.expires_at <= now:
            self._remove(item)
            self._expired += 1
            return None
        return item

    def _extend(self, item: StoredItem, expires_at: float) -> None:
        """Refresh *item*'s expiry (never shortening it)."""
        if expires_at > item.expires_at:
            item.expires_at = expires_at
            self._schedule(item)

    def _schedule(self, item: StoredItem) -> None:
        heapq.heappush(self._heap, (item.expires_at, item.key))
        if len(self._heap) > 2 * len(self._items) + _COMPACT_SLACK:
            # Refreshes and replacements leave stale entries; rebuilding keeps memory bounded.
            self._heap = [(i.expires_at, i.key) for i in self._items.values()]
            heapq.heapify(self._heap)

    def _remove(self, item: StoredItem) -> None:
        """Drop *item* and release its charge (and the storer's row, once empty)."""
        del self._items[item.key]
        self._contacts.pop(item.key, None)
        self._bytes -= item.size
        usage = self._usage[item.stored_by]
        usage.size -= item.size
        usage.entries -= 1
        if usage.entries == 0:
            del self._usage[item.stored_by]
