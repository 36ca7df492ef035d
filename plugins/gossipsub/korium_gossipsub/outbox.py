"""What waits to be sent to one peer, and how it is cut into frames. Pure state.

Control (subscriptions, GRAFT, PRUNE, IWANT, IHAVE, IDONTWANT) goes before messages, and a
frame holds about ``max_bytes``. Both queues are bounded: beyond the control bound gossip is
dropped first (GRAFT, PRUNE and subscriptions are kept); beyond the message bound forwarded
messages are dropped, never our own. The router counts what each method reports dropped.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Final, TypeVar

from korium_gossipsub import messages as wire
from korium_gossipsub.messages import Frame, Message

ID_BYTES: Final = 35
"""Bytes of one message id on the wire (32 plus MessagePack framing)."""
MESSAGE_OVERHEAD: Final = 160
"""Bytes of a message's envelope (id, source, seqno, signature, framing), for frame sizing."""
E = TypeVar("E")


@dataclass(slots=True)
class Outbox:
    """The queues of one peer: control first, then messages."""

    subscriptions: list[wire.SubOpt] = field(default_factory=list)
    graft: list[wire.Graft] = field(default_factory=list)
    prune: list[wire.Prune] = field(default_factory=list)
    iwant: list[bytes] = field(default_factory=list)
    ihave: list[wire.IHave] = field(default_factory=list)
    idontwant: list[bytes] = field(default_factory=list)
    messages: deque[tuple[Message, bool]] = field(default_factory=deque)
    """(message, own): own messages are never dropped for space, forwarded ones may be."""
    forwarded: dict[bytes, int] = field(default_factory=dict)
    """Ids of the forwarded messages in the queue (with their count), so finding a copy to
    cancel costs a lookup, not a scan of the queue."""
    keepalive: bool = False

    def control_size(self) -> int:
        return (
            len(self.subscriptions)
            + len(self.graft)
            + len(self.prune)
            + len(self.iwant)
            + len(self.ihave)
            + len(self.idontwant)
        )

    def __bool__(self) -> bool:
        return bool(
            self.messages
            or self.keepalive
            or self.subscriptions
            or self.graft
            or self.prune
            or self.iwant
            or self.ihave
            or self.idontwant
        )

    def add_message(self, message: Message, *, own: bool, limit: int) -> int:
        """Queue *message*; returns how many messages were dropped for space (0 or 1)."""
        queue = self.messages
        dropped = 0
        if len(queue) >= limit:
            if not own:
                return 1
            for index, (evicted, was_own) in enumerate(queue):
                if not was_own:
                    del queue[index]
                    self._forget(evicted)
                    dropped = 1
                    break
            # else all queued messages are ours: the publisher's backpressure bounds them
        queue.append((message, own))
        if not own:
            self.forwarded[message.id] = self.forwarded.get(message.id, 0) + 1
        return dropped

    def _forget(self, message: Message) -> None:
        """A forwarded *message* left the queue."""
        count = self.forwarded.pop(message.id, 0)
        if count > 1:
            self.forwarded[message.id] = count - 1

    def trim_control(self, limit: int) -> int:
        """Drop gossip beyond *limit* control entries (IHAVE, then IDONTWANT, then IWANT,
        whose ids carry promises), oldest first; returns how many were dropped."""
        dropped = 0
        for entries in (self.ihave, self.idontwant, self.iwant):
            excess = self.control_size() - limit
            if excess <= 0:
                break
            cut = min(excess, len(entries))
            del entries[:cut]
            dropped += cut
        return dropped

    def cancel(self, ids: Collection[bytes]) -> int:
        """Drop queued forwards of *ids* (the peer has them); returns how many."""
        forwarded = self.forwarded
        if len(ids) <= len(forwarded):
            hits = {i for i in ids if i in forwarded}
        else:
            hits = {i for i in forwarded if i in ids}
        if not hits:
            return 0
        queue = self.messages
        kept = [(m, own) for m, own in queue if own or m.id not in hits]
        cancelled = len(queue) - len(kept)
        queue.clear()
        queue.extend(kept)
        for msg_id in hits:
            del forwarded[msg_id]
        return cancelled

    def cut(self, max_bytes: int) -> Frame:
        """The next frame: control first, then messages, up to about *max_bytes* (at least
        one entry, so a frame always makes progress); the rest stays queued."""
        budget = [max_bytes]
        subscriptions = _cut(self.subscriptions, budget, lambda e: len(e.topic) + 4)
        graft = _cut(self.graft, budget, lambda e: len(e.topic) + 4)
        prune = _cut(self.prune, budget, lambda e: len(e.topic) + 8 + 120 * len(e.peers))
        iwant = _cut(self.iwant, budget, lambda e: ID_BYTES)
        ihave = _cut(self.ihave, budget, lambda e: len(e.topic) + 8 + ID_BYTES * len(e.ids))
        if self.idontwant and self.forwarded:  # sending a message says we have it
            self.idontwant[:] = [i for i in self.idontwant if i not in self.forwarded]
        idontwant = _cut(self.idontwant, budget, lambda e: ID_BYTES)
        sent: list[Message] = []
        queue = self.messages
        # a frame with IDONTWANT carries no message, so it arrives before a large one we
        # also send and the peer can still cancel its own copy for us
        while queue and len(sent) < wire.MAX_ENTRIES and not idontwant:
            size = queue[0][0].size + MESSAGE_OVERHEAD
            if size > budget[0] and (sent or budget[0] < max_bytes):
                break
            message, own = queue.popleft()
            if not own:
                self._forget(message)
            sent.append(message)
            budget[0] -= size
        self.keepalive = False
        return Frame(
            subscriptions=subscriptions,
            messages=sent,
            ihave=ihave,
            iwant=[wire.IWant(chunk) for chunk in _chunks(iwant, wire.MAX_IDS)],
            graft=graft,
            prune=prune,
            idontwant=[wire.IDontWant(chunk) for chunk in _chunks(idontwant, wire.MAX_IDS)],
        )


def _cut(entries: list[E], budget: list[int], size: Callable[[E], int]) -> list[E]:
    """Take entries from the front of *entries* while *budget* (bytes left) allows, at most
    MAX_ENTRIES; the first entry of a frame is taken whatever its size."""
    count = 0
    full = budget[0]
    for entry in entries[: wire.MAX_ENTRIES]:
        cost = size(entry)
        if cost > budget[0] and (count or budget[0] < full):
            break
        budget[0] -= cost
        count += 1
    taken = entries[:count]
    del entries[:count]
    return taken


def _chunks(items: list[bytes], size: int) -> Iterable[list[bytes]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
