"""Tests of the relay server's session table (``korium_relay.server``), no sockets, no loop.

Covers each rule a relay enforces (total sessions, sessions per IP with both ends counted, the
access policy, who may join), forwarding only between a session's two exact addresses, the
counters, pending and idle expiry on the caller's clock, and that memory (per-IP and per-peer
indexes) shrinks back as sessions end. Hypothesis fuzzes ``forward`` and drives the table with
random operations, checking its invariants after each step.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    rule,
)
from korium_relay import frames, server
from korium_relay.frames import MAGIC, MAX_PAYLOAD, encode
from korium_relay.server import RelayLimits, RelayRefused, RelayServer, Session

from korium.errors import ConfigError, KoriumError
from korium.identity import Identity, Keypair
from korium.transport.addresses import Address

ALICE = Keypair.from_seed(b"\x01" * 32).identity
BOB = Keypair.from_seed(b"\x02" * 32).identity
CAROL = Keypair.from_seed(b"\x03" * 32).identity
EVE = Keypair.from_seed(b"\x04" * 32).identity
A_ADDR: Address = ("198.51.100.1", 40001)
B_ADDR: Address = ("203.0.113.2", 50002)
EVE_ADDR: Address = ("192.0.2.66", 6666)
SID = bytes(range(16))
SID2 = bytes(range(16, 32))

_counter = itertools.count()


def fresh_sid() -> bytes:
    """A session id unlike SID, SID2 and the small integers some tests use."""
    return b"\xf0" + next(_counter).to_bytes(15, "big")


def opened(relay: RelayServer, sid: bytes = SID, now: float = 0.0) -> Session:
    """A complete ALICE (A_ADDR) <-> BOB (B_ADDR) session."""
    relay.reserve(sid, ALICE, BOB, A_ADDR, now)
    return relay.join(sid, BOB, B_ADDR, now)


@contextmanager
def refused(rule: str) -> Iterator[pytest.ExceptionInfo[RelayRefused]]:
    """Expect :class:`RelayRefused` by *rule*."""
    with pytest.raises(RelayRefused) as info:
        yield info
    assert info.value.rule == rule, f"refused by {info.value.rule!r} instead: {info.value}"


def check_indexes(relay: RelayServer) -> None:
    """The per-IP, per-peer and expiry indexes equal a recount from the sessions."""
    sessions = list(relay._sessions.values())
    per_ip: Counter[str] = Counter()
    per_peer: dict[Identity, set[bytes]] = {}
    for s in sessions:
        ips = {relay._ip_key(s.initiator_address)}
        if s.target_address is not None:
            ips.add(relay._ip_key(s.target_address))
        per_ip.update(ips)
        per_peer.setdefault(s.initiator, set()).add(s.id)
        per_peer.setdefault(s.target, set()).add(s.id)
    assert relay._per_ip == dict(per_ip)  # no zero counts left behind
    assert relay._by_peer == per_peer
    assert set(relay._pending) == {s.id for s in sessions if not s.complete}
    assert set(relay._idle) == {s.id for s in sessions if s.complete}
    assert len(relay) == len(sessions) <= relay.limits.max_sessions
    assert all(count <= relay.limits.max_sessions_per_ip for count in per_ip.values())


# -- reserve, join ------------------------------------------------------------------------------


def test_reserve_opens_a_pending_session() -> None:
    relay = RelayServer()
    relay.reserve(SID, ALICE, BOB, A_ADDR, 5.0)
    assert len(relay) == 1
    assert relay.get(SID) == Session(SID, ALICE, BOB, A_ADDR, None, 5.0, 5.0, 0, 0)
    assert relay.get(SID) is not None
    assert not relay.get(SID).complete  # type: ignore[union-attr]
    assert relay.stats == Counter({"sessions_reserved": 1})
    assert relay.ip_count(A_ADDR) == 1
    assert relay.ip_count(B_ADDR) == 0  # the target's IP counts once it joins


def test_join_completes_the_session_and_returns_both_addresses() -> None:
    relay = RelayServer()
    relay.reserve(SID, ALICE, BOB, A_ADDR, 5.0)
    session = relay.join(SID, BOB, B_ADDR, 7.0)
    assert session == Session(SID, ALICE, BOB, A_ADDR, B_ADDR, 5.0, 7.0, 0, 0)
    assert session.complete
    assert relay.get(SID) is session
    assert relay.stats == Counter({"sessions_reserved": 1, "sessions_joined": 1})
    assert (relay.ip_count(A_ADDR), relay.ip_count(B_ADDR)) == (1, 1)


def test_reserve_refuses_a_session_to_oneself() -> None:
    relay = RelayServer()
    with refused("self") as info:
        relay.reserve(SID, ALICE, ALICE, A_ADDR, 0.0)
    assert "asked to relay to itself" in str(info.value)
    assert len(relay) == 0
    assert relay.stats == Counter({"refused_self": 1})


def test_reserve_refuses_an_existing_id_and_keeps_the_original() -> None:
    relay = RelayServer()
    original = opened(relay)
    with refused("exists") as info:
        relay.reserve(SID, EVE, CAROL, EVE_ADDR, 1.0)
    assert f"relay session {SID.hex()} already exists" == str(info.value)
    assert relay.get(SID) is original
    assert original == Session(SID, ALICE, BOB, A_ADDR, B_ADDR, 0.0, 0.0, 0, 0)
    assert relay.ip_count(EVE_ADDR) == 0
    assert relay.stats["refused_exists"] == 1


@pytest.mark.parametrize("size", [0, 15, 17])
def test_reserve_refuses_a_session_id_of_the_wrong_size(size: int) -> None:
    relay = RelayServer()
    with pytest.raises(ValueError, match=f"16 bytes, got {size}"):
        relay.reserve(bytes(size), ALICE, BOB, A_ADDR, 0.0)
    assert len(relay) == 0


def test_join_of_an_unknown_session_is_refused() -> None:
    relay = RelayServer()
    with refused("unknown-session") as info:
        relay.join(SID, BOB, B_ADDR, 0.0)
    assert str(info.value) == f"no relay session {SID.hex()}"
    assert relay.stats == Counter({"refused_unknown-session": 1})


@pytest.mark.parametrize("joiner", [EVE, ALICE], ids=["stranger", "initiator"])
def test_join_by_the_wrong_identity_leaves_the_session_intact(joiner: Identity) -> None:
    relay = RelayServer()
    relay.reserve(SID, ALICE, BOB, A_ADDR, 0.0)
    with refused("wrong-peer") as info:
        relay.join(SID, joiner, EVE_ADDR, 1.0)
    assert f"is for {BOB.short}..., not {joiner.short}..." in str(info.value)
    assert relay.get(SID) == Session(SID, ALICE, BOB, A_ADDR, None, 0.0, 0.0, 0, 0)
    assert relay.ip_count(EVE_ADDR) == 0
    # the real target still joins, and the attacker's address gets nothing
    assert relay.join(SID, BOB, B_ADDR, 2.0).target_address == B_ADDR
    assert relay.forward(encode(SID, b"x"), EVE_ADDR, 3.0) is None
    assert relay.forward(encode(SID, b"x"), A_ADDR, 3.0) == B_ADDR


def test_join_by_the_wrong_identity_cannot_touch_a_complete_session() -> None:
    relay = RelayServer()
    session = opened(relay)
    with refused("wrong-peer"):
        relay.join(SID, EVE, EVE_ADDR, 1.0)
    assert session.target_address == B_ADDR
    assert relay.forward(encode(SID, b"x"), B_ADDR, 2.0) == A_ADDR


def test_second_join_by_the_target_is_refused_and_keeps_its_address() -> None:
    relay = RelayServer()
    opened(relay)
    with refused("complete") as info:
        relay.join(SID, BOB, ("203.0.113.9", 1), 1.0)
    assert str(info.value) == f"relay session {SID.hex()} is already joined"
    assert relay.get(SID).target_address == B_ADDR  # type: ignore[union-attr]
    assert relay.ip_count(("203.0.113.9", 1)) == 0


def test_join_from_the_initiators_own_address_is_refused() -> None:
    relay = RelayServer()
    relay.reserve(SID, ALICE, BOB, A_ADDR, 0.0)
    with refused("self") as info:
        relay.join(SID, BOB, A_ADDR, 1.0)
    assert "same address" in str(info.value)
    assert not relay.get(SID).complete  # type: ignore[union-attr]


def test_relay_refused_is_a_korium_error_carrying_its_rule() -> None:
    exc = RelayRefused("capacity", "full")
    assert isinstance(exc, KoriumError)
    assert (exc.rule, str(exc)) == ("capacity", "full")


# -- total capacity -------------------------------------------------------------------------


def test_capacity_with_a_small_limit() -> None:
    relay = RelayServer(RelayLimits(max_sessions=3))
    sids = [fresh_sid() for _ in range(3)]
    for i, sid in enumerate(sids):
        relay.reserve(sid, ALICE, BOB, ("10.0.0.1", 1000 + i), 0.0)
    with refused("capacity") as info:
        relay.reserve(fresh_sid(), CAROL, BOB, ("10.0.0.2", 1), 0.0)
    assert str(info.value) == "relay is at capacity (3 sessions)"
    assert len(relay) == 3
    assert relay.stats["refused_capacity"] == 1
    relay.close(sids[0])  # a slot frees up
    relay.reserve(fresh_sid(), CAROL, BOB, ("10.0.0.2", 1), 0.0)
    assert len(relay) == 3


def test_capacity_counts_pending_and_complete_sessions() -> None:
    relay = RelayServer(RelayLimits(max_sessions=2))
    opened(relay, SID)
    relay.reserve(SID2, CAROL, BOB, ("10.0.0.3", 1), 0.0)
    with refused("capacity"):
        relay.reserve(fresh_sid(), EVE, BOB, EVE_ADDR, 0.0)


def test_capacity_at_the_default_of_10_000() -> None:
    relay = RelayServer()
    assert relay.limits.max_sessions == 10_000
    for i in range(10_000):  # 200 IPs x 50 sessions, each within the per-IP limit
        relay.reserve(i.to_bytes(16, "big"), ALICE, BOB, (f"10.1.{i // 50}.1", 1000 + i), 0.0)
    assert len(relay) == 10_000
    with refused("capacity"):
        relay.reserve(fresh_sid(), CAROL, BOB, ("10.2.0.1", 1), 0.0)
    assert len(relay) == 10_000
    # and expiry empties it again, leaving no index behind
    assert len(relay.expire(30.0)) == 10_000
    assert len(relay) == 0
    assert relay._per_ip == {}
    assert relay._by_peer == {}


# -- per IP ---------------------------------------------------------------------------------


def test_per_ip_default_50_as_initiator() -> None:
    relay = RelayServer()
    assert relay.limits.max_sessions_per_ip == 50
    for port in range(50):
        relay.reserve(fresh_sid(), ALICE, BOB, ("10.0.0.1", 2000 + port), 0.0)
    assert relay.ip_count(("10.0.0.1", 1)) == 50
    with refused("per-ip") as info:
        relay.reserve(fresh_sid(), CAROL, BOB, ("10.0.0.1", 9999), 0.0)
    assert str(info.value) == "10.0.0.1/32 is already an end of 50 relay sessions"
    assert relay.stats["refused_per-ip"] == 1
    relay.reserve(fresh_sid(), CAROL, BOB, ("10.0.0.2", 9999), 0.0)  # another IP is fine
    assert len(relay) == 51


def test_per_ip_counts_the_target_end() -> None:
    relay = RelayServer()
    target_ip: Address = ("10.9.9.9", 7000)
    for i in range(50):  # 10.9.9.9 is the target end of 50 sessions
        sid = fresh_sid()
        relay.reserve(sid, ALICE, BOB, (f"10.0.{i}.1", 1), 0.0)
        relay.join(sid, BOB, target_ip, 0.0)
    assert relay.ip_count(target_ip) == 50
    with refused("per-ip"):  # so it cannot initiate another
        relay.reserve(fresh_sid(), BOB, ALICE, target_ip, 0.0)
    pending = fresh_sid()
    relay.reserve(pending, ALICE, BOB, ("10.0.200.1", 1), 0.0)
    with refused("per-ip"):  # nor join one as target
        relay.join(pending, BOB, ("10.9.9.9", 7001), 0.0)
    assert not relay.get(pending).complete  # type: ignore[union-attr]
    assert relay.ip_count(target_ip) == 50
    relay.join(pending, BOB, ("10.9.9.10", 7001), 0.0)  # from another IP it may


def test_a_session_whose_ends_share_an_ip_counts_once() -> None:
    relay = RelayServer()
    relay.reserve(SID, ALICE, BOB, ("10.0.0.1", 1), 0.0)
    relay.join(SID, BOB, ("10.0.0.1", 2), 0.0)
    assert relay.ip_count(("10.0.0.1", 0)) == 1
    relay.close(SID)
    assert relay.ip_count(("10.0.0.1", 0)) == 0
    assert relay._per_ip == {}


def test_joining_at_the_initiators_ip_is_allowed_when_that_ip_is_full() -> None:
    relay = RelayServer(RelayLimits(max_sessions_per_ip=1))
    relay.reserve(SID, ALICE, BOB, ("10.0.0.1", 1), 0.0)
    relay.join(SID, BOB, ("10.0.0.1", 2), 0.0)  # no new IP slot needed
    assert relay.ip_count(("10.0.0.1", 0)) == 1


def test_per_ip_slots_are_freed_by_close_close_peer_and_expiry() -> None:
    relay = RelayServer(RelayLimits(max_sessions_per_ip=1))
    opened(relay, SID, now=0.0)
    with refused("per-ip"):
        relay.reserve(SID2, ALICE, CAROL, A_ADDR, 0.0)
    relay.close(SID)
    assert relay._per_ip == {}
    opened(relay, SID, now=0.0)
    assert relay.close_peer(BOB) == [SID]
    assert relay._per_ip == {}
    opened(relay, SID, now=0.0)
    assert relay.expire(300.0) == [SID]
    assert relay._per_ip == {}
    relay.reserve(SID2, ALICE, CAROL, A_ADDR, 300.0)
    assert relay.ip_count(A_ADDR) == 1


def test_ipv6_addresses_in_one_64_share_a_count() -> None:
    relay = RelayServer(RelayLimits(max_sessions_per_ip=2))
    relay.reserve(fresh_sid(), ALICE, BOB, ("2001:db8::1", 1), 0.0)
    relay.reserve(fresh_sid(), ALICE, BOB, ("2001:db8::ffff:2", 1), 0.0)
    with refused("per-ip") as info:
        relay.reserve(fresh_sid(), ALICE, BOB, ("2001:db8::3", 1), 0.0)
    assert str(info.value).startswith("2001:db8::/64 is already")
    relay.reserve(fresh_sid(), ALICE, BOB, ("2001:db8:0:1::1", 1), 0.0)  # next /64


def test_ipv6_prefix_128_counts_each_address() -> None:
    relay = RelayServer(RelayLimits(max_sessions_per_ip=1, ipv6_prefix=128))
    relay.reserve(fresh_sid(), ALICE, BOB, ("2001:db8::1", 1), 0.0)
    relay.reserve(fresh_sid(), ALICE, BOB, ("2001:db8::2", 1), 0.0)
    with refused("per-ip"):
        relay.reserve(fresh_sid(), ALICE, BOB, ("2001:db8::1", 2), 0.0)


def test_an_ipv4_mapped_address_counts_as_its_ipv4_address() -> None:
    relay = RelayServer(RelayLimits(max_sessions_per_ip=1))
    relay.reserve(fresh_sid(), ALICE, BOB, ("10.0.0.1", 1), 0.0)
    with refused("per-ip"):
        relay.reserve(fresh_sid(), ALICE, BOB, ("::ffff:10.0.0.1", 2), 0.0)


# -- access policy --------------------------------------------------------------------------


def test_policy_refusal() -> None:
    calls: list[tuple[Identity, Identity, Address]] = []

    def policy(initiator: Identity, target: Identity, address: Address) -> str | None:
        calls.append((initiator, target, address))
        return "not a member of this cluster"

    relay = RelayServer(policy=policy)
    with refused("policy") as info:
        relay.reserve(SID, ALICE, BOB, A_ADDR, 0.0)
    assert str(info.value) == (
        f"relay policy refuses {ALICE.short}... -> {BOB.short}...: not a member of this cluster"
    )
    assert calls == [(ALICE, BOB, A_ADDR)]
    assert len(relay) == 0
    assert relay._per_ip == {}
    assert relay.stats == Counter({"refused_policy": 1})


def test_policy_allowing_and_choosing_by_argument() -> None:
    calls: list[tuple[Identity, Identity, Address]] = []

    def policy(initiator: Identity, target: Identity, address: Address) -> str | None:
        calls.append((initiator, target, address))
        return None if target == BOB else "only relays to bob"

    relay = RelayServer(policy=policy)
    relay.reserve(SID, ALICE, BOB, A_ADDR, 0.0)
    with refused("policy"):
        relay.reserve(SID2, ALICE, CAROL, A_ADDR, 0.0)
    assert calls == [(ALICE, BOB, A_ADDR), (ALICE, CAROL, A_ADDR)]
    assert relay.get(SID) is not None
    assert relay.get(SID2) is None
    relay.join(SID, BOB, B_ADDR, 1.0)
    assert len(calls) == 2  # joining does not consult the policy again


def test_policy_is_not_consulted_for_a_request_the_limits_refuse() -> None:
    calls: list[Identity] = []

    def policy(initiator: Identity, target: Identity, address: Address) -> str | None:
        calls.append(initiator)
        return None

    relay = RelayServer(RelayLimits(max_sessions=1), policy=policy)
    relay.reserve(SID, ALICE, BOB, A_ADDR, 0.0)
    with refused("capacity"):
        relay.reserve(SID2, CAROL, BOB, EVE_ADDR, 0.0)
    assert calls == [ALICE]


# -- forwarding -----------------------------------------------------------------------------


def test_forward_goes_between_the_two_ends_and_counts() -> None:
    relay = RelayServer()
    session = opened(relay)
    a_to_b = encode(SID, b"\x40" + bytes(99))  # 120 bytes
    b_to_a = encode(SID, b"\x41" + bytes(29))  # 50 bytes
    assert relay.forward(a_to_b, A_ADDR, 1.0) == B_ADDR
    assert relay.forward(b_to_a, B_ADDR, 2.0) == A_ADDR
    assert relay.forward(b_to_a, B_ADDR, 3.0) == A_ADDR
    assert (session.bytes_relayed, session.packets_relayed) == (220, 3)
    assert session.last_activity == 3.0
    assert relay.stats["bytes_relayed"] == 220
    assert relay.stats["packets_relayed"] == 3
    assert not [key for key in relay.stats if key.startswith("dropped")]


def test_forward_counts_per_session() -> None:
    relay = RelayServer()
    one = opened(relay, SID)
    relay.reserve(SID2, CAROL, EVE, ("10.0.0.3", 3), 0.0)
    two = relay.join(SID2, EVE, ("10.0.0.4", 4), 0.0)
    assert relay.forward(encode(SID2, b"hi"), ("10.0.0.3", 3), 1.0) == ("10.0.0.4", 4)
    assert (one.packets_relayed, two.packets_relayed) == (0, 1)
    assert (one.bytes_relayed, two.bytes_relayed) == (0, 22)


def test_forward_drops_a_stranger_with_the_right_session_id() -> None:
    relay = RelayServer()
    session = opened(relay)
    frame = encode(SID, b"injected")
    assert relay.forward(frame, EVE_ADDR, 1.0) is None
    assert relay.forward(frame, (A_ADDR[0], A_ADDR[1] + 1), 1.0) is None  # right IP, other port
    assert relay.forward(frame, ("::ffff:198.51.100.1", A_ADDR[1]), 1.0) is None
    assert relay.stats["dropped_stranger"] == 3
    assert (session.packets_relayed, session.last_activity) == (0, 0.0)


def test_forward_drops_frames_of_a_pending_session() -> None:
    relay = RelayServer()
    relay.reserve(SID, ALICE, BOB, A_ADDR, 0.0)
    assert relay.forward(encode(SID, b"early"), A_ADDR, 1.0) is None
    assert relay.forward(encode(SID, b"early"), B_ADDR, 1.0) is None
    assert relay.stats["dropped_incomplete"] == 2


def test_forward_drops_unknown_sessions() -> None:
    relay = RelayServer()
    opened(relay)
    assert relay.forward(encode(SID2, b"x"), A_ADDR, 1.0) is None
    assert relay.stats["dropped_unknown_session"] == 1


@pytest.mark.parametrize(
    "datagram", [b"", b"CRLY", MAGIC + SID[:15], b"SMPR" + SID + b"x", b"\x40" + bytes(40)]
)
def test_forward_drops_malformed_datagrams(datagram: bytes) -> None:
    relay = RelayServer()
    opened(relay)
    assert relay.forward(datagram, A_ADDR, 1.0) is None
    assert relay.stats["dropped_malformed"] == 1


def test_forward_drops_oversized_frames() -> None:
    relay = RelayServer()
    opened(relay)
    assert relay.forward(MAGIC + SID + bytes(MAX_PAYLOAD), A_ADDR, 1.0) == B_ADDR
    assert relay.forward(MAGIC + SID + bytes(MAX_PAYLOAD + 1), A_ADDR, 1.0) is None
    assert relay.stats["dropped_oversized"] == 1
    assert relay.stats["packets_relayed"] == 1


def test_forward_honours_a_smaller_max_payload() -> None:
    relay = RelayServer(RelayLimits(max_payload=1200))
    opened(relay)
    assert relay.forward(MAGIC + SID + bytes(1200), A_ADDR, 1.0) == B_ADDR
    assert relay.forward(MAGIC + SID + bytes(1201), A_ADDR, 1.0) is None
    assert relay.stats["dropped_oversized"] == 1


def test_forward_of_an_empty_payload_keeps_the_session_alive() -> None:
    relay = RelayServer()
    session = opened(relay)
    assert relay.forward(MAGIC + SID, B_ADDR, 200.0) == A_ADDR
    assert session.last_activity == 200.0
    assert relay.expire(300.0) == []


def test_closed_session_forwards_nothing() -> None:
    relay = RelayServer()
    opened(relay)
    relay.close(SID)
    relay.close(SID)  # closing twice is fine
    assert relay.forward(encode(SID, b"x"), A_ADDR, 1.0) is None
    assert relay.stats["dropped_unknown_session"] == 1
    assert relay.stats["sessions_closed"] == 1


# -- expiry ---------------------------------------------------------------------------------


def test_pending_session_expires_after_pending_timeout() -> None:
    relay = RelayServer()
    relay.reserve(SID, ALICE, BOB, A_ADDR, 10.0)
    assert relay.get_timer() == 40.0
    assert relay.expire(39.999) == []
    assert relay.expire(40.0) == [SID]
    assert len(relay) == 0
    assert relay.get_timer() is None
    assert relay.stats["sessions_expired"] == 1
    with refused("unknown-session"):
        relay.join(SID, BOB, B_ADDR, 41.0)


def test_complete_session_expires_after_idle_timeout_without_traffic() -> None:
    relay = RelayServer()
    relay.reserve(SID, ALICE, BOB, A_ADDR, 0.0)
    relay.join(SID, BOB, B_ADDR, 20.0)  # joining moves it to the idle clock
    assert relay.get_timer() == 320.0
    assert relay.expire(100.0) == []  # past the pending timeout: it is complete now
    assert relay.forward(encode(SID, b"x"), A_ADDR, 250.0) == B_ADDR
    assert relay.get_timer() == 550.0
    assert relay.expire(549.0) == []
    assert relay.expire(550.0) == [SID]
    assert relay.forward(encode(SID, b"x"), A_ADDR, 551.0) is None
    assert relay.stats["sessions_expired"] == 1
    assert relay.stats["dropped_unknown_session"] == 1


def test_custom_timeouts() -> None:
    relay = RelayServer(RelayLimits(pending_timeout=2.0, idle_timeout=5.0))
    relay.reserve(SID, ALICE, BOB, A_ADDR, 0.0)
    opened(relay, SID2, now=0.0)
    assert relay.get_timer() == 2.0
    assert relay.expire(2.0) == [SID]
    assert relay.get_timer() == 5.0
    assert relay.expire(5.0) == [SID2]


def test_expire_returns_only_what_is_due_oldest_first() -> None:
    relay = RelayServer()
    sids = [fresh_sid() for _ in range(4)]
    for i, sid in enumerate(sids):
        relay.reserve(sid, ALICE, BOB, ("10.0.0.1", i), float(i))
    assert relay.expire(31.5) == sids[:2]
    assert relay.get_timer() == 32.0
    assert relay.expire(100.0) == sids[2:]


def test_traffic_reorders_idle_expiry() -> None:
    relay = RelayServer()
    opened(relay, SID, now=0.0)
    relay.reserve(SID2, CAROL, EVE, ("10.0.0.3", 3), 1.0)
    relay.join(SID2, EVE, ("10.0.0.4", 4), 1.0)
    relay.forward(encode(SID, b"x"), A_ADDR, 10.0)  # SID is now the most recently active
    assert relay.get_timer() == 301.0
    assert relay.expire(301.0) == [SID2]
    assert relay.get_timer() == 310.0


def test_a_clock_going_backwards_never_shortens_a_session() -> None:
    relay = RelayServer()
    session = opened(relay, now=100.0)
    assert relay.forward(encode(SID, b"x"), A_ADDR, 50.0) == B_ADDR
    assert session.last_activity == 100.0
    assert relay.expire(399.0) == []
    assert relay.expire(400.0) == [SID]


def test_get_timer_is_none_without_sessions() -> None:
    assert RelayServer().get_timer() is None


# -- peers ----------------------------------------------------------------------------------


def test_close_peer_closes_the_sessions_it_was_an_end_of() -> None:
    relay = RelayServer()
    as_initiator = fresh_sid()
    as_target = fresh_sid()
    unrelated = fresh_sid()
    relay.reserve(as_initiator, BOB, CAROL, B_ADDR, 0.0)
    relay.reserve(as_target, ALICE, BOB, A_ADDR, 0.0)
    relay.reserve(unrelated, ALICE, CAROL, A_ADDR, 0.0)
    assert {s.id for s in relay.sessions_of(BOB)} == {as_initiator, as_target}
    assert sorted(relay.close_peer(BOB)) == sorted([as_initiator, as_target])
    assert relay.sessions_of(BOB) == []
    assert [s.id for s in relay.sessions_of(ALICE)] == [unrelated]
    assert relay.close_peer(BOB) == []
    assert relay.stats["sessions_closed"] == 2
    check_indexes(relay)


# -- configuration and purity ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("max_sessions", 0),
        ("max_sessions_per_ip", 0),
        ("max_payload", 0),
        ("pending_timeout", 0.0),
        ("idle_timeout", -1.0),
        ("idle_timeout", float("nan")),
        ("ipv6_prefix", 0),
        ("ipv6_prefix", 129),
    ],
)
def test_limits_refuse_out_of_range_values(field: str, value: float) -> None:
    with pytest.raises(ConfigError, match=f"RelayLimits.{field} must"):
        RelayLimits(**{field: value})  # type: ignore[arg-type]


def test_default_limits_follow_the_spec() -> None:
    assert RelayLimits() == RelayLimits(10_000, 50, 30.0, 300.0, 1500, 64)


def test_modules_read_no_clock_and_open_no_socket() -> None:
    for module in (server, frames):
        source = Path(module.__file__ or "").read_text(encoding="utf-8")
        assert not re.search(r"^(import|from) (asyncio|socket|time|datetime)\b", source, re.M)


# -- fuzzing --------------------------------------------------------------------------------

ADDRESSES = st.one_of(
    st.sampled_from([A_ADDR, B_ADDR, EVE_ADDR, (A_ADDR[0], A_ADDR[1] + 1), ("::1", 1)]),
    st.tuples(st.text(max_size=40), st.integers(min_value=-(2**20), max_value=2**20)),
)
DATAGRAMS = st.one_of(
    st.binary(max_size=2 * MAX_PAYLOAD),
    st.builds(lambda rest: MAGIC + rest, st.binary(max_size=64)),
    st.builds(
        lambda sid, payload: MAGIC + sid + payload,
        st.sampled_from([SID, SID2]),
        st.binary(max_size=MAX_PAYLOAD + 2),
    ),
)


@given(st.lists(st.tuples(DATAGRAMS, ADDRESSES), max_size=20))
def test_forward_fuzz_never_raises_and_only_links_the_ends(
    traffic: list[tuple[bytes, Address]],
) -> None:
    relay = RelayServer()
    opened(relay, SID)
    relay.reserve(SID2, CAROL, EVE, EVE_ADDR, 0.0)  # pending
    for datagram, source in traffic:
        destination = relay.forward(datagram, source, 1.0)
        if destination is not None:
            assert datagram[:20] == MAGIC + SID
            assert len(datagram) <= 20 + MAX_PAYLOAD
            assert {source, destination} == {A_ADDR, B_ADDR}
    dropped = sum(n for key, n in relay.stats.items() if key.startswith("dropped_"))
    assert relay.stats["packets_relayed"] + dropped == len(traffic)


IDENTITIES = [Keypair.from_seed(bytes([i + 1]) * 32).identity for i in range(4)]
HOSTS = ["10.0.0.1", "10.0.0.2", "10.0.0.3", "2001:db8::1", "2001:db8::2"]


class RelayMachine(RuleBasedStateMachine):
    """Random reserve/join/forward/close/expire sequences on small limits."""

    sessions = Bundle("sessions")

    @initialize()
    def start(self) -> None:
        self.relay = RelayServer(
            RelayLimits(max_sessions=6, max_sessions_per_ip=3, pending_timeout=5, idle_timeout=8)
        )
        self.now = 0.0
        self.gone: set[bytes] = set()

    def _address(self, host: int, port: int) -> Address:
        return (HOSTS[host], port)

    @rule(
        target=sessions,
        initiator=st.integers(0, 3),
        target_peer=st.integers(0, 3),
        host=st.integers(0, 4),
        port=st.integers(1, 3),
    )
    def reserve(self, initiator: int, target_peer: int, host: int, port: int) -> bytes:
        sid = fresh_sid()
        before = len(self.relay)
        rule = None
        try:
            self.relay.reserve(
                sid,
                IDENTITIES[initiator],
                IDENTITIES[target_peer],
                self._address(host, port),
                self.now,
            )
        except RelayRefused as exc:
            rule = exc.rule
            self.gone.add(sid)
        if rule is None:
            assert len(self.relay) == before + 1
        else:
            assert rule in {"self", "capacity", "per-ip"}
            assert len(self.relay) == before
        return sid

    @rule(sid=sessions, joiner=st.integers(0, 3), host=st.integers(0, 4), port=st.integers(1, 3))
    def join(self, sid: bytes, joiner: int, host: int, port: int) -> None:
        before = self.relay.get(sid)
        snapshot = None if before is None else (before.target_address, before.last_activity)
        try:
            session = self.relay.join(sid, IDENTITIES[joiner], self._address(host, port), self.now)
        except RelayRefused as exc:
            rule = exc.rule
        else:
            assert session.target == IDENTITIES[joiner]
            assert session.target_address == self._address(host, port)
            return
        assert rule in server.RULES
        after = self.relay.get(sid)
        assert after is before  # a refused join changes nothing
        if after is not None:
            assert (after.target_address, after.last_activity) == snapshot

    @rule(sid=sessions, end=st.integers(0, 1), other=st.booleans(), payload=st.binary(max_size=8))
    def forward(self, sid: bytes, end: int, other: bool, payload: bytes) -> None:
        session = self.relay.get(sid)
        if session is None or other:
            source: Address = ("192.0.2.1", 9)
        else:
            source = session.initiator_address if end == 0 else session.target_address or A_ADDR
        destination = self.relay.forward(encode(sid, payload), source, self.now)
        if sid in self.gone:
            assert destination is None  # expired or closed sessions never forward
        if destination is not None:
            assert session is not None
            assert session.complete
            assert {source, destination} == {session.initiator_address, session.target_address}
            assert session.last_activity == self.now

    @rule(sid=consumes(sessions))
    def close(self, sid: bytes) -> None:
        self.relay.close(sid)
        self.gone.add(sid)

    @rule(peer=st.integers(0, 3))
    def close_peer(self, peer: int) -> None:
        closed = self.relay.close_peer(IDENTITIES[peer])
        self.gone.update(closed)
        assert self.relay.sessions_of(IDENTITIES[peer]) == []

    @rule(step=st.floats(0, 10))
    def tick(self, step: float) -> None:
        self.now += step
        timer = self.relay.get_timer()
        expired = self.relay.expire(self.now)
        if timer is None or timer > self.now:
            assert expired == []
        else:
            assert expired
        self.gone.update(expired)
        next_timer = self.relay.get_timer()
        assert next_timer is None or next_timer > self.now

    @invariant()
    def indexes_match_a_recount(self) -> None:
        check_indexes(self.relay)
        assert not any(sid in self.relay._sessions for sid in self.gone)


RelayMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
TestRelayMachine = RelayMachine.TestCase
