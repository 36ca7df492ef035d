"""The per-peer outbox: queue bounds and the index of queued forwards stay in step."""

from __future__ import annotations

from korium_gossipsub import messages as wire
from korium_gossipsub.outbox import Outbox

from korium import Keypair

KEYPAIR = Keypair.generate()


def message(index: int) -> wire.Message:
    return wire.sign(KEYPAIR, "t", 1_700_000_000_000_000 + index, b"%d" % index)


def test_the_forward_index_follows_queue_evictions_cuts_and_cancels() -> None:
    out = Outbox()
    first, second, third, own = (message(i) for i in range(4))
    assert out.add_message(first, own=False, limit=2) == 0
    assert out.add_message(second, own=False, limit=2) == 0
    assert out.add_message(third, own=False, limit=2) == 1  # full: a forward is dropped
    assert out.forwarded == {first.id: 1, second.id: 1}
    assert out.add_message(own, own=True, limit=2) == 1  # ours evicts the oldest forward
    assert out.forwarded == {second.id: 1}
    assert out.cancel([third.id, own.id]) == 0  # neither is a queued forward
    frame = out.cut(10_000)
    assert frame.messages == [second, own]
    assert out.forwarded == {}
    out.add_message(first, own=False, limit=4)
    out.add_message(first, own=False, limit=4)  # answered twice (IWANT)
    assert out.forwarded == {first.id: 2}
    assert out.cancel([first.id]) == 2
    assert (list(out.messages), out.forwarded) == ([], {})


def test_idontwant_is_left_out_for_a_message_queued_to_the_same_peer() -> None:
    out = Outbox()
    queued, other = message(1), message(2)
    out.add_message(queued, own=False, limit=8)
    out.idontwant.extend([queued.id, other.id])
    frame = out.cut(10_000)
    assert [i for entry in frame.idontwant for i in entry.ids] == [other.id]
    assert frame.messages == []  # the IDONTWANT frame goes ahead of the message
    assert out.cut(10_000).messages == [queued]
