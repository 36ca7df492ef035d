"""The message cache (for IWANT and IHAVE) and the seen cache (for duplicates). Pure state.

The message cache holds the full messages of the last ``history_length`` heartbeat windows,
so peers can fetch what they missed; IHAVE advertises only the newest ``history_gossip``
windows, so an id is never advertised after it is gone. The seen cache remembers ids much
longer (``seen_ttl``), with what became of each message, so copies are dropped, and copies of
a rejected message cost their sender too.
"""

from __future__ import annotations

import enum
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


class Verdict(enum.Enum):
    """What became of a message this node has seen."""

    PENDING = "pending"
    """Being validated by the application."""
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    """Invalid: its sender and anyone forwarding a copy is penalised."""
    IGNORED = "ignored"
    """Dropped without penalty (application said ignore, or no longer relevant)."""


@dataclass(slots=True)
class Seen:
    """One remembered message id."""

    first_seen: float
    verdict: Verdict


class SeenCache:
    """Message ids seen in the last *ttl* seconds (at most *max_entries*, oldest dropped)."""

    def __init__(self, ttl: float, max_entries: int) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self.evicted = 0
        """Ids forgotten early because the cache was full (a replay could pass the age check
        only if it also passed this one, so a non-zero count means max_seen is too small)."""
        self._entries: OrderedDict[bytes, Seen] = OrderedDict()

    def get(self, msg_id: bytes) -> Seen | None:
        return self._entries.get(msg_id)

    def add(self, msg_id: bytes, now: float, verdict: Verdict) -> Seen:
        """Remember *msg_id* (first seen now); an id already known keeps its entry."""
        known = self._entries.get(msg_id)
        if known is not None:
            return known
        entry = Seen(now, verdict)
        self._entries[msg_id] = entry
        if len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
            self.evicted += 1
        return entry

    def expire(self, now: float) -> None:
        """Forget ids first seen ttl seconds ago or earlier."""
        entries = self._entries
        limit = now - self.ttl
        while entries:
            msg_id, entry = next(iter(entries.items()))
            if entry.first_seen > limit:
                break
            del entries[msg_id]

    def __contains__(self, msg_id: object) -> bool:
        return msg_id in self._entries

    def __len__(self) -> int:
        return len(self._entries)


class MessageCache(Generic[T]):
    """Messages of the last *history_length* heartbeats, by id; ids of the newest
    *history_gossip* heartbeats by topic, for IHAVE. ``shift()`` once per heartbeat."""

    def __init__(
        self,
        history_length: int,
        history_gossip: int,
        max_bytes: int = 2**62,
        size: Callable[[T], int] = lambda entry: 0,
    ) -> None:
        self.history_gossip = history_gossip
        self.max_bytes = max_bytes
        self.bytes = 0
        self.evicted = 0
        """Messages dropped before their time because the cache held max_bytes."""
        self._size = size
        self._messages: dict[bytes, tuple[str, T]] = {}
        self._windows: deque[dict[str, list[bytes]]] = deque(
            [{} for _ in range(history_length)], maxlen=history_length
        )
        self._sent: dict[bytes, dict[object, int]] = {}
        """Per message, how often it was sent to each peer in answer to IWANT."""

    def put(self, msg_id: bytes, topic: str, entry: T) -> None:
        """Cache *entry* under *msg_id* (ignored if already cached)."""
        if msg_id in self._messages:
            return
        self._messages[msg_id] = (topic, entry)
        self._windows[0].setdefault(topic, []).append(msg_id)
        self.bytes += self._size(entry)
        if self.bytes > self.max_bytes:
            self._trim()

    def _trim(self) -> None:
        """Drop the oldest messages until the cache fits in max_bytes again."""
        for window in reversed(self._windows):
            for ids in window.values():
                for msg_id in ids:
                    if self.bytes <= self.max_bytes:
                        return
                    found = self._messages.pop(msg_id, None)
                    if found is not None:
                        self.bytes -= self._size(found[1])
                        self._sent.pop(msg_id, None)
                        self.evicted += 1

    def get(self, msg_id: bytes) -> T | None:
        found = self._messages.get(msg_id)
        return None if found is None else found[1]

    def get_for_peer(self, msg_id: bytes, peer: object) -> tuple[T | None, int]:
        """The entry for an IWANT from *peer*, and how often *peer* has now asked for it."""
        found = self._messages.get(msg_id)
        if found is None:
            return None, 0
        counts = self._sent.setdefault(msg_id, {})
        counts[peer] = counts.get(peer, 0) + 1
        return found[1], counts[peer]

    def gossip_ids(self, topic: str) -> list[bytes]:
        """Ids of *topic* in the newest history_gossip windows (newest first)."""
        ids: list[bytes] = []
        for index in range(self.history_gossip):
            ids.extend(reversed(self._windows[index].get(topic, ())))
        return ids

    def shift(self) -> None:
        """Start a new window; the oldest one's messages are dropped."""
        for ids in self._windows[-1].values():
            for msg_id in ids:
                found = self._messages.pop(msg_id, None)
                if found is not None:
                    self.bytes -= self._size(found[1])
                self._sent.pop(msg_id, None)
        self._windows.appendleft({})

    def __contains__(self, msg_id: object) -> bool:
        return msg_id in self._messages

    def __len__(self) -> int:
        return len(self._messages)
