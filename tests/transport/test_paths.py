"""PathTable: candidates, smoothed RTTs, selection with hysteresis, bounds and timers.

The table is pure state, so every test drives it with explicit ``now`` values: no event loop,
no sleeps. Probe rounds that must produce exact RTT samples (the hysteresis and handicap
boundaries) are sent at ``now == 0.0``, where ``(0.0 + ms / 1000) * 1000 == ms`` for every
value used; later rounds carry float noise and are compared with ``pytest.approx``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from korium.identity import Identity, Keypair
from korium.transport.addresses import Address
from korium.transport.paths import Candidate, Path, PathConfig, PathSwitched, PathTable
from korium.transport.probe import ProbeRequest, ProbeResponse

OBSERVED: Address = ("203.0.113.200", 50000)
A = Path(("192.0.2.1", 4433))
B = Path(("198.51.100.2", 4433))
C = Path(("2001:db8::3", 4433))
D = Path(("192.0.2.4", 4433))
RELAY_ADDRESS: Address = ("203.0.113.9", 3478)
R = Path(RELAY_ADDRESS, relay_session=b"\x01" * 16)
R2 = Path(RELAY_ADDRESS, relay_session=b"\x02" * 16)
STRANGER: Address = ("198.18.0.66", 4433)


# -- helpers ----------------------------------------------------------------------------------


def new_peer() -> Identity:
    return Keypair.generate().identity


def make_table(config: PathConfig | None = None, seed: int = 1) -> PathTable:
    return PathTable(config, rng=random.Random(seed))


def send(table: PathTable, now: float) -> dict[Path, ProbeRequest]:
    """The probes due at *now*, by path (every test path belongs to one peer only)."""
    sent = table.probes_due(now)
    requests = dict(sent)
    assert len(requests) == len(sent)
    return requests


def respond(
    table: PathTable,
    path: Path,
    request: ProbeRequest,
    now: float,
    source: Address | None = None,
) -> bool:
    response = ProbeResponse(request.transaction, request.timestamp_ms, OBSERVED)
    return table.on_probe_response(response, path.address if source is None else source, now)


def probe_round(
    table: PathTable, now: float, replies: Sequence[tuple[Path, float]]
) -> dict[Path, ProbeRequest]:
    """Send the probes due at *now* and answer those in *replies* (path, RTT in ms).

    Responses are fed in the order given (a network may reorder them); replies for paths that
    were not probed are ignored (the caller checks the returned requests). Unanswered probes
    stay in flight.
    """
    requests = send(table, now)
    for path, rtt_ms in replies:
        if path in requests:
            assert respond(table, path, requests[path], now + rtt_ms / 1000)
    return requests


def tick(
    table: PathTable, now: float, replies: Sequence[tuple[Path, float]]
) -> dict[Path, ProbeRequest]:
    """A probe round at *now*, then the timer at the probe timeout: the rest are lost."""
    requests = probe_round(table, now, replies)
    table.handle_timer(now + table.config.probe_timeout)
    return requests


def drain(table: PathTable) -> list[PathSwitched]:
    events = []
    while (event := table.next_event()) is not None:
        events.append(event)
    return events


def candidate(table: PathTable, peer: Identity, path: Path) -> Candidate:
    matches = [c for c in table.candidates(peer) if c.path == path]
    assert len(matches) == 1, f"{path} is not a candidate"
    return matches[0]


def paths_of(table: PathTable, peer: Identity) -> list[Path]:
    return [c.path for c in table.candidates(peer)]


@pytest.fixture
def peer() -> Identity:
    return new_peer()


@pytest.fixture
def table() -> PathTable:
    return make_table()


# -- candidates and the first path ------------------------------------------------------------


def test_empty_table(table: PathTable, peer: Identity) -> None:
    assert len(table) == 0
    assert peer not in table
    assert table.active_path(peer) is None
    assert table.candidates(peer) == []
    assert table.next_event() is None
    assert table.get_timer() is None
    assert table.probes_due(0.0) == []
    table.handle_timer(1000.0)
    assert table.stats == {"probes_sent": 0, "probes_lost": 0, "probes_unmatched": 0, "switches": 0}


def test_first_candidate_becomes_active(table: PathTable, peer: Identity) -> None:
    table.add_candidate(peer, A, 0.0)
    assert peer in table
    assert len(table) == 1
    assert table.active_path(peer) == A
    assert table.next_event() == PathSwitched(peer, None, A)
    assert table.next_event() is None

    table.add_candidate(peer, B, 0.0)
    table.add_candidate(peer, R, 0.0)
    assert table.active_path(peer) == A
    assert table.next_event() is None
    assert paths_of(table, peer) == [A, B, R]
    assert table.stats["switches"] == 0  # the first path is not a switch


def test_first_candidate_may_be_relayed(table: PathTable, peer: Identity) -> None:
    table.add_candidate(peer, R, 0.0)
    assert R.relayed
    assert not A.relayed
    assert table.active_path(peer) == R
    assert drain(table) == [PathSwitched(peer, None, R)]


def test_add_candidate_is_idempotent(table: PathTable, peer: Identity) -> None:
    table.add_candidate(peer, A, 0.0)
    tick(table, 0.0, [(A, 20)])
    expected = [Candidate(A, rtt_ms=20.0, last_probe=0.0, last_success=0.02)]
    assert table.candidates(peer) == expected

    table.add_candidate(peer, A, 1.0)
    table.add_candidate(peer, Path(("192.0.2.1", 4433)), 2.0)  # an equal Path
    assert table.candidates(peer) == expected
    assert drain(table) == [PathSwitched(peer, None, A)]


def test_untested_first_path_is_kept_while_nothing_is_known(
    table: PathTable, peer: Identity
) -> None:
    table.add_candidate(peer, A, 0.0)
    table.add_candidate(peer, B, 0.0)
    drain(table)
    for now in (0.0, 5.0, 10.0, 15.0):
        tick(table, now, [])
    assert candidate(table, peer, A).failures == 3
    assert candidate(table, peer, B).failures == 3
    assert table.active_path(peer) == A  # nothing better is known
    assert drain(table) == []


def test_first_measured_path_replaces_an_untested_current_path(
    table: PathTable, peer: Identity
) -> None:
    table.add_candidate(peer, A, 0.0)
    table.add_candidate(peer, B, 0.0)
    drain(table)
    probe_round(table, 0.0, [(B, 80)])
    assert table.active_path(peer) == B
    assert drain(table) == [PathSwitched(peer, A, B)]
    assert table.stats["switches"] == 1


# -- RTT smoothing ----------------------------------------------------------------------------


def test_rtt_first_sample_raw_then_ema(table: PathTable, peer: Identity) -> None:
    table.add_candidate(peer, A, 0.0)
    tick(table, 0.0, [(A, 100)])
    assert candidate(table, peer, A).rtt_ms == 100.0
    tick(table, 5.0, [(A, 50)])
    assert candidate(table, peer, A).rtt_ms == pytest.approx(90.0, abs=1e-9)  # .8*100 + .2*50
    tick(table, 10.0, [(A, 50)])
    assert candidate(table, peer, A).rtt_ms == pytest.approx(82.0, abs=1e-9)
    tick(table, 15.0, [(A, 250)])
    assert candidate(table, peer, A).rtt_ms == pytest.approx(115.6, abs=1e-9)
    state = candidate(table, peer, A)
    assert state.failures == 0
    assert state.probing is None
    assert state.last_probe == 15.0
    assert state.last_success == pytest.approx(15.25)


def test_rtt_weight_is_configurable(peer: Identity) -> None:
    table = make_table(PathConfig(rtt_weight=0.5))
    table.add_candidate(peer, A, 0.0)
    tick(table, 0.0, [(A, 100)])
    tick(table, 5.0, [(A, 50)])
    assert candidate(table, peer, A).rtt_ms == pytest.approx(75.0, abs=1e-9)


def test_rtt_is_measured_from_our_send_time_not_the_echoed_timestamp(
    table: PathTable, peer: Identity
) -> None:
    table.add_candidate(peer, A, 0.0)
    request = send(table, 0.0)[A]
    assert request.timestamp_ms == 0
    forged = ProbeResponse(request.transaction, 2**63, OBSERVED)  # a lying echo
    assert table.on_probe_response(forged, A.address, 0.04)
    assert candidate(table, peer, A).rtt_ms == 40.0


def test_negative_rtt_sample_is_clamped_to_zero(table: PathTable, peer: Identity) -> None:
    table.add_candidate(peer, A, 0.0)
    request = send(table, 10.0)[A]
    assert respond(table, A, request, 9.0)
    assert candidate(table, peer, A).rtt_ms == 0.0


# -- selection: hysteresis and relay handicap -------------------------------------------------


@pytest.mark.parametrize(
    ("rtt_b", "switch"),
    [
        (40.0, False),  # worse
        (30.0, False),  # equal
        (25.0, False),  # better by 5 ms
        (20.0, False),  # better by exactly the margin: not enough
        (19.9, True),  # better by just over the margin
        (5.0, True),
    ],
)
def test_direct_path_must_beat_current_by_more_than_margin(
    table: PathTable, peer: Identity, rtt_b: float, switch: bool
) -> None:
    table.add_candidate(peer, A, 0.0)
    table.add_candidate(peer, B, 0.0)
    drain(table)
    probe_round(table, 0.0, [(A, 30), (B, rtt_b)])  # A measured first: it is the current path
    assert candidate(table, peer, A).rtt_ms == 30.0
    assert candidate(table, peer, B).rtt_ms == rtt_b  # exact samples: an exact boundary
    assert table.active_path(peer) == (B if switch else A)
    assert drain(table) == ([PathSwitched(peer, A, B)] if switch else [])


@pytest.mark.parametrize(
    ("rtt_relay", "switch"),
    [
        (70.0, False),  # 30 ms faster than direct: effective 120 ms, not chosen
        (40.0, False),  # 60 ms faster: effective 90 ms, better by exactly the margin
        (39.9, True),
        (30.0, True),  # 70 ms faster: effective 80 ms, better by 20 ms > margin
    ],
)
def test_relay_is_handicapped_against_direct(
    table: PathTable, peer: Identity, rtt_relay: float, switch: bool
) -> None:
    table.add_candidate(peer, A, 0.0)
    table.add_candidate(peer, R, 0.0)
    drain(table)
    probe_round(table, 0.0, [(A, 100), (R, rtt_relay)])
    assert table.active_path(peer) == (R if switch else A)
    assert drain(table) == ([PathSwitched(peer, A, R)] if switch else [])


@pytest.mark.parametrize(
    ("rtt_direct", "switch"),
    [
        (70.0, False),  # equal to the relay's effective 20 + 50
        (60.0, False),  # better by exactly the margin
        (59.9, True),
        (65.0, False),
    ],
)
def test_direct_must_beat_relay_effective_rtt_by_margin(
    table: PathTable, peer: Identity, rtt_direct: float, switch: bool
) -> None:
    table.add_candidate(peer, R, 0.0)
    table.add_candidate(peer, A, 0.0)
    drain(table)
    probe_round(table, 0.0, [(R, 20), (A, rtt_direct)])
    assert table.active_path(peer) == (A if switch else R)
    assert drain(table) == ([PathSwitched(peer, R, A)] if switch else [])


@pytest.mark.parametrize(("rtt_r2", "switch"), [(40.0, False), (39.9, True)])
def test_relay_against_relay_uses_the_same_margin(
    table: PathTable, peer: Identity, rtt_r2: float, switch: bool
) -> None:
    table.add_candidate(peer, R, 0.0)
    table.add_candidate(peer, R2, 0.0)
    drain(table)
    probe_round(table, 0.0, [(R, 50), (R2, rtt_r2)])
    assert table.active_path(peer) == (R2 if switch else R)


def test_switch_happens_when_smoothed_rtt_crosses_the_margin(
    table: PathTable, peer: Identity
) -> None:
    table.add_candidate(peer, A, 0.0)
    table.add_candidate(peer, B, 0.0)
    tick(table, 0.0, [(A, 50), (B, 100)])
    assert table.active_path(peer) == A
    drain(table)
    # B's smoothed RTT with 10 ms samples: 82, 67.6, 56.08, 46.864, then 39.4912 < 50 - 10
    for now, smoothed in [(5.0, 82.0), (10.0, 67.6), (15.0, 56.08), (20.0, 46.864)]:
        tick(table, now, [(B, 10), (A, 50)])
        assert candidate(table, peer, B).rtt_ms == pytest.approx(smoothed)
        assert table.active_path(peer) == A
    assert drain(table) == []
    tick(table, 25.0, [(B, 10), (A, 50)])
    assert candidate(table, peer, B).rtt_ms == pytest.approx(39.4912)
    assert table.active_path(peer) == B
    assert drain(table) == [PathSwitched(peer, A, B)]


def test_no_flapping_between_paths_within_the_margin(table: PathTable, peer: Identity) -> None:
    table.add_candidate(peer, A, 0.0)
    table.add_candidate(peer, B, 0.0)
    drain(table)
    tick(table, 0.0, [(A, 30), (B, 30)])
    for i in range(1, 40):
        # each raw sample pair differs by 30 ms, alternating; the smoothed RTTs stay within 10 ms
        a, b = (45, 15) if i % 2 else (15, 45)
        tick(table, 5.0 * i, sorted([(A, a), (B, b)], key=lambda reply: reply[1]))
        assert table.active_path(peer) == A
    assert drain(table) == []
    assert table.stats["switches"] == 0


# -- unusable paths ---------------------------------------------------------------------------


def test_current_path_losing_probes_is_left_at_once(table: PathTable, peer: Identity) -> None:
    table.add_candidate(peer, A, 0.0)
    table.add_candidate(peer, B, 0.0)
    tick(table, 0.0, [(A, 20), (B, 60)])
    drain(table)
    tick(table, 5.0, [(B, 60)])
    tick(table, 10.0, [(B, 60)])
    assert candidate(table, peer, A).failures == 2
    probe_round(table, 15.0, [(B, 60)])
    table.handle_timer(17.999)
    assert table.active_path(peer) == A  # two failures: still usable, and 40 ms better
    assert table.stats["probes_lost"] == 2

    table.handle_timer(18.0)  # the third loss: A is unusable, B is taken although slower
    assert candidate(table, peer, A).failures == 3
    assert table.stats["probes_lost"] == 3
    assert table.active_path(peer) == B
    assert drain(table) == [PathSwitched(peer, A, B)]


def test_unusable_current_path_is_left_even_for_a_much_slower_relay(
    table: PathTable, peer: Identity
) -> None:
    table.add_candidate(peer, A, 0.0)
    table.add_candidate(peer, R, 0.0)
    tick(table, 0.0, [(A, 5), (R, 200)])
    drain(table)
    for now in (5.0, 10.0, 15.0):
        tick(table, now, [(R, 200)])
    assert table.active_path(peer) == R
    assert drain(table) == [PathSwitched(peer, A, R)]


def test_path_without_success_for_stale_after_is_unusable(peer: Identity) -> None:
    table = make_table(PathConfig(max_failures=1000))  # only staleness can disqualify A
    table.add_candidate(peer, A, 0.0)
    table.add_candidate(peer, B, 0.0)
    tick(table, 0.0, [(A, 20), (B, 60)])  # A's last success: 0.02
    drain(table)
    for now in (5.0, 10.0, 15.0, 20.0, 25.0):
        tick(table, now, [(B, 60)])
        assert table.active_path(peer) == A
    assert candidate(table, peer, A).failures == 5
    probe_round(table, 30.0, [(B, 60)])  # answered at 30.06: A silent for 30.04 s
    assert table.active_path(peer) == B
    assert drain(table) == [PathSwitched(peer, A, B)]


def test_stale_after_boundary_is_inclusive(peer: Identity) -> None:
    config = PathConfig(max_failures=1000, probe_timeout=1000.0, probe_interval=0.5)
    table = make_table(config)
    table.add_candidate(peer, A, 0.0)
    table.add_candidate(peer, B, 0.0)
    probe_round(table, 0.0, [(A, 20), (B, 60)])
    table.on_traffic(peer, A, 10.0)
    drain(table)

    requests = send(table, 39.0)
    assert set(requests) == {A, B}
    assert respond(table, B, requests[B], 40.0)  # A's last success exactly 30 s ago: usable
    assert table.active_path(peer) == A
    requests = send(table, 40.0)
    assert set(requests) == {B}  # A's probe is still in flight
    assert respond(table, B, requests[B], math.nextafter(40.0, math.inf))
    assert table.active_path(peer) == B
    assert drain(table) == [PathSwitched(peer, A, B)]


def test_traffic_keeps_a_path_alive_and_resets_failures(table: PathTable, peer: Identity) -> None:
    table.add_candidate(peer, A, 0.0)
    table.add_candidate(peer, B, 0.0)
    tick(table, 0.0, [(A, 20), (B, 60)])
    drain(table)
    for now in range(5, 65, 5):  # A answers no probe for a minute, but carries traffic
        tick(table, now, [(B, 60)])
        assert candidate(table, peer, A).failures == 1
        table.on_traffic(peer, A, now + 4.0)
        assert candidate(table, peer, A).failures == 0
        assert candidate(table, peer, A).last_success == now + 4.0
        assert table.active_path(peer) == A
    assert drain(table) == []
    assert table.stats["probes_lost"] == 12


def test_traffic_for_unknown_peer_or_path_is_ignored(table: PathTable, peer: Identity) -> None:
    table.on_traffic(peer, A, 1.0)
    assert peer not in table
    table.add_candidate(peer, A, 0.0)
    table.on_traffic(peer, B, 1.0)
    assert paths_of(table, peer) == [A]
    assert candidate(table, peer, A).last_success is None


def test_failed_candidate_is_reprobed_less_often_and_can_come_back(
    table: PathTable, peer: Identity
) -> None:
    table.add_candidate(peer, A, 0.0)
    table.add_candidate(peer, B, 0.0)
    tick(table, 0.0, [(A, 20), (B, 40)])
    drain(table)
    for now in (5.0, 10.0, 15.0):
        assert set(tick(table, now, [(B, 40)])) == {A, B}
    assert candidate(table, peer, A).failures == 3
    assert candidate(table, peer, A).last_probe == 15.0
    assert table.active_path(peer) == B
    assert drain(table) == [PathSwitched(peer, A, B)]
    assert table.get_timer() == 20.0  # B's next probe; A's is at 15 + 30

    for now in (20.0, 25.0, 30.0, 35.0, 40.0):
        assert set(tick(table, now, [(B, 40)])) == {B}
    assert set(send(table, 44.999)) == set()

    requests = probe_round(table, 45.0, [(A, 20), (B, 40)])  # failed_probe_interval later
    assert set(requests) == {A, B}
    assert candidate(table, peer, A).failures == 0
    assert candidate(table, peer, A).rtt_ms == pytest.approx(20.0)
    assert table.active_path(peer) == A
    assert drain(table) == [PathSwitched(peer, B, A)]


def test_failed_probe_interval_is_configurable(peer: Identity) -> None:
    table = make_table(PathConfig(failed_probe_interval=100.0, max_failures=1))
    table.add_candidate(peer, A, 0.0)
    tick(table, 0.0, [])
    assert candidate(table, peer, A).failures == 1
    assert table.get_timer() == 100.0
    assert send(table, 99.9) == {}
    assert set(send(table, 100.0)) == {A}


# -- probe responses and timeouts -------------------------------------------------------------


def test_probe_timeout_counted_by_handle_timer(table: PathTable, peer: Identity) -> None:
    table.add_candidate(peer, A, 0.0)
    request = send(table, 10.0)[A]
    assert table.get_timer() == 13.0
    table.handle_timer(12.999)
    assert table.stats["probes_lost"] == 0
    assert candidate(table, peer, A).probing == request.transaction

    table.handle_timer(13.0)
    assert table.stats["probes_lost"] == 1
    assert candidate(table, peer, A).failures == 1
    assert candidate(table, peer, A).probing is None
    assert table.get_timer() == 15.0

    assert not respond(table, A, request, 13.5)  # too late
    assert table.stats["probes_unmatched"] == 1
    assert candidate(table, peer, A).rtt_ms is None
    table.handle_timer(100.0)
    assert table.stats["probes_lost"] == 1  # counted once


@pytest.mark.parametrize(
    "source",
    [
        B.address,  # another candidate of the same peer
        ("192.0.2.1", 4434),  # right host, wrong port
        RELAY_ADDRESS,
        OBSERVED,
        STRANGER,
    ],
)
def test_response_from_another_source_is_refused(
    table: PathTable, peer: Identity, source: Address
) -> None:
    table.add_candidate(peer, A, 0.0)
    table.add_candidate(peer, B, 0.0)
    request = send(table, 0.0)[A]
    assert not respond(table, A, request, 0.001, source=source)
    assert table.stats["probes_unmatched"] == 1
    state = candidate(table, peer, A)
    assert state.rtt_ms is None
    assert state.last_success is None
    assert state.probing == request.transaction
    assert table.active_path(peer) == A
    # the spoofed answer did not consume the probe: the real one still counts
    assert respond(table, A, request, 0.03)
    assert candidate(table, peer, A).rtt_ms == 30.0


def test_relayed_probe_must_be_answered_from_the_relay(table: PathTable, peer: Identity) -> None:
    table.add_candidate(peer, A, 0.0)
    table.add_candidate(peer, R, 0.0)
    request = send(table, 0.0)[R]
    assert not respond(table, R, request, 0.01, source=A.address)
    assert candidate(table, peer, R).rtt_ms is None
    assert respond(table, R, request, 0.02, source=RELAY_ADDRESS)
    assert candidate(table, peer, R).rtt_ms == 20.0


def test_unknown_or_replayed_transaction_is_refused(table: PathTable, peer: Identity) -> None:
    table.add_candidate(peer, A, 0.0)
    stranger = ProbeResponse(12345, 0, OBSERVED)
    assert not table.on_probe_response(stranger, A.address, 0.0)
    request = send(table, 0.0)[A]
    wrong = ProbeResponse(request.transaction ^ 1, request.timestamp_ms, OBSERVED)
    assert not table.on_probe_response(wrong, A.address, 0.01)
    assert table.stats["probes_unmatched"] == 2
    assert candidate(table, peer, A).rtt_ms is None

    assert respond(table, A, request, 0.02)
    assert not respond(table, A, request, 0.03)  # a replay
    assert table.stats["probes_unmatched"] == 3
    assert candidate(table, peer, A).rtt_ms == 20.0


# -- removal ----------------------------------------------------------------------------------


def test_removing_the_active_path_selects_the_best_other(table: PathTable, peer: Identity) -> None:
    for path in (A, B, C):
        table.add_candidate(peer, path, 0.0)
    tick(table, 0.0, [(A, 10), (C, 30), (B, 50)])
    drain(table)
    table.remove_candidate(peer, A, 1.0)
    assert table.active_path(peer) == C
    assert drain(table) == [PathSwitched(peer, A, C)]
    assert paths_of(table, peer) == [B, C]
    assert table.peer_at(A.address) is None
    assert table.stats["switches"] == 1


def test_removing_the_active_path_skips_unusable_candidates(
    table: PathTable, peer: Identity
) -> None:
    for path in (A, B, C):
        table.add_candidate(peer, path, 0.0)
    tick(table, 0.0, [(A, 10), (B, 20), (C, 90)])
    for now in (5.0, 10.0, 15.0):
        tick(table, now, [(A, 10), (C, 90)])  # B fails
    drain(table)
    table.remove_candidate(peer, A, 16.0)
    assert table.active_path(peer) == C
    assert drain(table) == [PathSwitched(peer, A, C)]


def test_removing_an_untested_active_path_falls_back_to_the_next(
    table: PathTable, peer: Identity
) -> None:
    for path in (A, B, C):
        table.add_candidate(peer, path, 0.0)
    drain(table)
    table.remove_candidate(peer, A, 0.0)
    assert table.active_path(peer) == B
    assert drain(table) == [PathSwitched(peer, A, B)]


def test_removing_an_inactive_or_unknown_path_emits_nothing(
    table: PathTable, peer: Identity
) -> None:
    table.add_candidate(peer, A, 0.0)
    table.add_candidate(peer, B, 0.0)
    drain(table)
    table.remove_candidate(peer, B, 0.0)
    table.remove_candidate(peer, C, 0.0)
    table.remove_candidate(new_peer(), A, 0.0)
    assert paths_of(table, peer) == [A]
    assert table.active_path(peer) == A
    assert drain(table) == []


def test_removing_the_last_path_leaves_none(table: PathTable, peer: Identity) -> None:
    table.add_candidate(peer, A, 0.0)
    drain(table)
    table.remove_candidate(peer, A, 1.0)
    assert table.active_path(peer) is None
    assert drain(table) == [PathSwitched(peer, A, None)]
    assert table.candidates(peer) == []
    table.add_candidate(peer, B, 2.0)  # the next candidate is the first one again
    assert drain(table) == [PathSwitched(peer, None, B)]


def test_removed_candidate_forgets_its_probe(table: PathTable, peer: Identity) -> None:
    table.add_candidate(peer, A, 0.0)
    table.add_candidate(peer, B, 0.0)
    requests = send(table, 0.0)
    table.remove_candidate(peer, B, 0.0)
    assert not respond(table, B, requests[B], 0.01)
    table.handle_timer(10.0)
    assert table.stats["probes_lost"] == 1  # A's only
    table.add_candidate(peer, B, 11.0)  # back, as a fresh candidate
    assert candidate(table, peer, B) == Candidate(B)


def test_remove_peer_forgets_everything(table: PathTable, peer: Identity) -> None:
    other = new_peer()
    table.add_candidate(peer, A, 0.0)
    table.add_candidate(peer, R, 0.0)
    table.add_candidate(other, B, 0.0)
    requests = send(table, 0.0)
    drain(table)

    table.remove_peer(peer)
    assert peer not in table
    assert len(table) == 1
    assert table.active_path(peer) is None
    assert table.candidates(peer) == []
    assert table.peer_at(A.address) is None
    assert table.peer_at(B.address) == other
    assert drain(table) == []  # forgetting is not a switch
    assert not respond(table, A, requests[A], 0.01)
    assert not respond(table, R, requests[R], 0.01)
    assert table.stats["probes_unmatched"] == 2
    table.handle_timer(10.0)
    assert table.stats["probes_lost"] == 1  # the other peer's only

    table.remove_peer(peer)  # again: a no-op
    table.remove_peer(other)
    assert len(table) == 0
    assert table.get_timer() is None
    assert table.probes_due(100.0) == []


# -- reverse lookup ---------------------------------------------------------------------------


def test_peer_at_maps_direct_addresses_only(table: PathTable) -> None:
    p, q = new_peer(), new_peer()
    table.add_candidate(p, A, 0.0)
    table.add_candidate(p, R, 0.0)
    table.add_candidate(q, B, 0.0)
    table.add_candidate(q, R2, 0.0)
    assert table.peer_at(A.address) == p
    assert table.peer_at(B.address) == q
    assert table.peer_at(RELAY_ADDRESS) is None
    assert table.peer_at(STRANGER) is None
    table.remove_candidate(p, R, 0.0)
    assert table.peer_at(A.address) == p
    table.remove_candidate(p, A, 0.0)
    assert table.peer_at(A.address) is None
    assert table.peer_at(B.address) == q


def test_peer_at_direct_address_of_a_relay_peer_survives_relayed_paths(
    table: PathTable,
) -> None:
    relay_node, client = new_peer(), new_peer()
    relay_direct = Path(RELAY_ADDRESS)
    table.add_candidate(relay_node, relay_direct, 0.0)
    table.add_candidate(client, R, 0.0)  # reached through that relay
    assert table.peer_at(RELAY_ADDRESS) == relay_node
    table.remove_candidate(client, R, 0.0)
    table.remove_peer(client)
    assert table.peer_at(RELAY_ADDRESS) == relay_node


# -- bounds -----------------------------------------------------------------------------------


def test_max_candidates_evicts_a_failed_candidate_first(peer: Identity) -> None:
    table = make_table(PathConfig(max_candidates=3))
    table.add_candidate(peer, A, 0.0)
    table.add_candidate(peer, B, 0.0)
    tick(table, 0.0, [(A, 10), (B, 20)])
    for now in (5.0, 10.0, 15.0):
        tick(table, now, [(A, 10)])
    assert candidate(table, peer, B).failures == 3
    table.add_candidate(peer, C, 20.0)  # untested: it never succeeded, but it has not failed
    drain(table)
    table.add_candidate(peer, D, 21.0)
    assert paths_of(table, peer) == [A, C, D]
    assert table.peer_at(B.address) is None
    assert table.active_path(peer) == A
    assert drain(table) == []


def test_max_candidates_evicts_the_least_recently_successful(peer: Identity) -> None:
    table = make_table(PathConfig(max_candidates=3))
    for path in (A, B, C):
        table.add_candidate(peer, path, 0.0)
    tick(table, 0.0, [(A, 10), (B, 20), (C, 30)])
    table.on_traffic(peer, B, 5.0)
    table.on_traffic(peer, A, 6.0)  # C's last success (0.03) is now the oldest
    table.add_candidate(peer, D, 7.0)
    assert paths_of(table, peer) == [A, B, D]
    assert table.peer_at(C.address) is None


def test_max_candidates_prefers_evicting_an_untested_candidate(peer: Identity) -> None:
    table = make_table(PathConfig(max_candidates=2))
    table.add_candidate(peer, A, 0.0)
    tick(table, 0.0, [(A, 10)])
    table.add_candidate(peer, B, 1.0)  # never answered
    table.add_candidate(peer, C, 2.0)
    assert paths_of(table, peer) == [A, C]


def test_evicting_the_active_path_announces_the_switch(peer: Identity) -> None:
    table = make_table(PathConfig(max_candidates=3))
    table.add_candidate(peer, A, 0.0)  # dialled, never answers
    for now in (0.0, 5.0, 10.0):
        tick(table, now, [])
    table.add_candidate(peer, B, 20.0)
    table.add_candidate(peer, C, 20.0)
    drain(table)
    table.add_candidate(peer, D, 21.0)  # A is the failed one
    assert paths_of(table, peer) == [B, C, D]
    assert table.active_path(peer) == B
    assert drain(table) == [PathSwitched(peer, A, B)]


def test_max_candidates_is_never_exceeded(peer: Identity) -> None:
    table = make_table(PathConfig(max_candidates=3))
    paths = [Path((f"192.0.2.{i}", 4433)) for i in range(1, 30)]
    for i, path in enumerate(paths):
        table.add_candidate(peer, path, float(i))
        assert len(table.candidates(peer)) == min(i + 1, 3)
        assert path in paths_of(table, peer)  # the newest is always kept
        active = table.active_path(peer)
        assert active is not None
        assert active in paths_of(table, peer)
    direct = [p for p in paths if table.peer_at(p.address) is not None]
    assert sorted(direct, key=paths.index) == paths_of(table, peer)


def test_max_candidates_does_not_evict_the_best_active_path(peer: Identity) -> None:
    table = make_table(PathConfig(max_candidates=3))
    for path in (A, B, C):
        table.add_candidate(peer, path, 0.0)
    tick(table, 0.0, [(A, 10), (B, 50), (C, 90)])
    assert table.active_path(peer) == A
    table.add_candidate(peer, D, 1.0)
    assert A in paths_of(table, peer)
    assert table.active_path(peer) == A


def test_success_at_time_zero_counts_for_eviction(peer: Identity) -> None:
    table = make_table(PathConfig(max_candidates=2))
    table.add_candidate(peer, A, 0.0)
    table.add_candidate(peer, B, 0.0)
    table.on_traffic(peer, A, 0.0)  # A works; B never did
    table.add_candidate(peer, C, 1.0)
    assert paths_of(table, peer) == [A, C]


def test_max_peers_evicts_the_least_recently_used_peer() -> None:
    table = make_table(PathConfig(max_peers=2))
    p1, p2, p3 = new_peer(), new_peer(), new_peer()
    table.add_candidate(p1, A, 0.0)
    table.add_candidate(p2, B, 1.0)
    requests = send(table, 1.0)
    table.add_candidate(p1, A, 2.0)  # re-adding refreshes p1
    drain(table)

    table.add_candidate(p3, C, 3.0)
    assert len(table) == 2
    assert p2 not in table
    assert p1 in table
    assert p3 in table
    assert table.active_path(p2) is None
    assert table.candidates(p2) == []
    assert table.peer_at(B.address) is None
    assert not respond(table, B, requests[B], 3.01)  # its probe was forgotten too
    assert drain(table) == [PathSwitched(p3, None, C)]

    table.add_candidate(p2, B, 4.0)  # p1 is now the least recently used
    assert p1 not in table
    assert len(table) == 2


def test_peer_with_recent_traffic_is_not_evicted_first() -> None:
    table = make_table(PathConfig(max_peers=2))
    busy, idle, new = new_peer(), new_peer(), new_peer()
    table.add_candidate(busy, A, 0.0)
    table.add_candidate(idle, B, 1.0)
    table.on_traffic(busy, A, 2.0)
    table.add_candidate(new, C, 3.0)
    assert busy in table
    assert idle not in table


# -- timers and probe scheduling --------------------------------------------------------------


def test_get_timer_is_the_earliest_probe_or_expiry(table: PathTable, peer: Identity) -> None:
    assert table.get_timer() is None
    table.add_candidate(peer, A, 100.0)
    assert table.get_timer() == 0.0  # never probed: due at once
    send(table, 100.0)
    assert table.get_timer() == 103.0  # the probe's expiry
    requests = send(table, 100.0)
    assert requests == {}
    table.add_candidate(peer, B, 101.0)
    assert table.get_timer() == 0.0
    requests = send(table, 101.0)
    assert set(requests) == {B}
    assert table.get_timer() == 103.0  # A's expiry comes before B's (104)
    assert respond(table, B, requests[B], 101.05)
    assert table.get_timer() == 103.0  # B's next probe is at 106
    table.handle_timer(103.0)
    assert table.get_timer() == 105.0  # A's next probe (100 + 5)
    table.remove_peer(peer)
    assert table.get_timer() is None


def test_probes_due_never_sends_a_second_probe_in_flight(table: PathTable, peer: Identity) -> None:
    table.add_candidate(peer, A, 0.0)
    table.add_candidate(peer, B, 0.0)
    first = table.probes_due(12.5)
    assert [path for path, _ in first] == [A, B]
    assert all(request.timestamp_ms == 12500 for _, request in first)
    assert len({request.transaction for _, request in first}) == 2
    assert table.stats["probes_sent"] == 2
    assert table.probes_due(12.5) == []
    assert table.probes_due(60.0) == []  # expired, but not yet counted by handle_timer

    requests = dict(first)
    assert respond(table, B, requests[B], 12.51)
    assert table.probes_due(17.49) == []
    assert [path for path, _ in table.probes_due(17.5)] == [B]  # A is still in flight
    table.handle_timer(60.0)
    assert [path for path, _ in table.probes_due(60.0)] == [A, B]
    assert table.stats["probes_sent"] == 5
    assert table.stats["probes_lost"] == 2


def test_transaction_ids_come_from_the_rng(peer: Identity) -> None:
    def transactions(seed: int) -> list[int]:
        table = make_table(seed=seed)
        for path in (A, B, C):
            table.add_candidate(peer, path, 0.0)
        return [request.transaction for _, request in table.probes_due(0.0)]

    assert transactions(7) == transactions(7)
    assert transactions(7) != transactions(8)
    assert all(0 <= t < 2**64 for t in transactions(7))


# -- property: invariants under random operations ---------------------------------------------

PROP_PEERS = [Keypair.generate().identity for _ in range(3)]
PROP_PATHS = [
    [Path((f"192.0.2.{10 * i + j}", 4433)) for j in range(3)]
    + [Path(RELAY_ADDRESS, relay_session=bytes([i, j]) * 8) for j in range(2)]
    for i in range(len(PROP_PEERS))
]
PROP_CONFIG = PathConfig(max_peers=2, max_candidates=3, max_failures=2)

_peer_index = st.integers(0, len(PROP_PEERS) - 1)
_path_index = st.integers(0, len(PROP_PATHS[0]) - 1)
_rtt_ms = st.integers(0, 300)
_operations = st.one_of(
    st.tuples(st.just("add"), _peer_index, _path_index),
    st.tuples(st.just("add"), _peer_index, _path_index),
    st.tuples(st.just("remove"), _peer_index, _path_index),
    st.tuples(st.just("traffic"), _peer_index, _path_index),
    st.tuples(st.just("remove_peer"), _peer_index, st.just(0)),
    # send the due probes; answer those whose bit is set in x, the k-th after (y * (k + 1)) % 301
    st.tuples(st.just("round"), st.integers(0, 255), _rtt_ms),
    st.tuples(st.just("round"), st.just(255), _rtt_ms),
    st.tuples(st.just("round"), st.just(0), st.just(0)),
    st.tuples(st.just("answer"), st.integers(0, 50), _rtt_ms),  # a late or reordered answer
    st.tuples(st.just("spoof"), st.integers(0, 50), st.just(0)),
    st.tuples(st.just("lose"), st.integers(0, 50), st.just(0)),
    st.tuples(st.just("advance"), st.sampled_from([1, 500, 3000, 5000, 30_000]), st.just(0)),
    st.tuples(st.just("advance"), st.integers(0, 40_000), st.just(0)),
)


@dataclass
class _Model:
    table: PathTable
    now: float = 1000.0
    in_flight: list[tuple[Path, ProbeRequest]] = field(default_factory=list)
    announced: dict[Identity, Path | None] = field(default_factory=dict)

    def apply(self, op: str, x: int, y: int) -> None:
        table = self.table
        if op == "add":
            table.add_candidate(PROP_PEERS[x], PROP_PATHS[x][y], self.now)
        elif op == "remove":
            table.remove_candidate(PROP_PEERS[x], PROP_PATHS[x][y], self.now)
        elif op == "traffic":
            table.on_traffic(PROP_PEERS[x], PROP_PATHS[x][y], self.now)
        elif op == "remove_peer":
            table.remove_peer(PROP_PEERS[x])
        elif op == "round":
            sent = table.probes_due(self.now)
            answers = sorted(((y * (k + 1)) % 301, k) for k in range(len(sent)) if x >> (k % 8) & 1)
            for rtt_ms, k in answers:  # in order of arrival
                path, request = sent[k]
                response = ProbeResponse(request.transaction, request.timestamp_ms, OBSERVED)
                assert table.on_probe_response(response, path.address, self.now + rtt_ms / 1000)
            answered = {k for _, k in answers}
            self.in_flight.extend(probe for k, probe in enumerate(sent) if k not in answered)
            if answers:
                self.now += answers[-1][0] / 1000
        elif op == "advance":
            self.now += x / 1000
            table.handle_timer(self.now)
        elif self.in_flight:
            index = x % len(self.in_flight)
            path, request = self.in_flight[index]
            response = ProbeResponse(request.transaction, request.timestamp_ms, OBSERVED)
            if op == "answer":  # late, or after others: matched only while still pending
                del self.in_flight[index]
                self.now += y / 1000
                table.on_probe_response(response, path.address, self.now)
            elif op == "spoof":  # the real answer may still come
                assert not table.on_probe_response(response, STRANGER, self.now)
            else:  # "lose": the response never comes
                del self.in_flight[index]

    def check(self) -> None:
        table = self.table
        config = table.config
        for event in drain(table):
            assert event.old != event.new
            assert event.old == self.announced.get(event.peer)
            self.announced[event.peer] = event.new
        assert len(table) <= config.max_peers
        probing = 0
        for i, peer in enumerate(PROP_PEERS):
            paths = paths_of(table, peer)
            active = table.active_path(peer)
            assert len(paths) <= config.max_candidates
            assert len(set(paths)) == len(paths)
            if peer not in table:
                assert paths == []
                assert active is None
                self.announced.pop(peer, None)  # forgotten without an event
                continue
            assert self.announced.get(peer) == active  # every change was announced
            assert (active is None) == (paths == [])
            assert active is None or active in paths
            for path in paths:
                assert path in PROP_PATHS[i]
                if not path.relayed:
                    assert table.peer_at(path.address) == peer
            for c in table.candidates(peer):
                assert c.failures >= 0
                assert c.rtt_ms is None or c.rtt_ms >= 0.0
                probing += c.probing is not None
        assert table.peer_at(RELAY_ADDRESS) is None
        assert len(table._pending) == probing  # exactly one pending probe per probing candidate
        has_candidates = any(table.candidates(p) for p in PROP_PEERS)
        assert (table.get_timer() is None) == (not has_candidates)


@settings(max_examples=300, deadline=None)
@given(st.lists(_operations, min_size=10, max_size=120), st.integers(0, 2**32))
def test_invariants_hold_under_random_operations(
    operations: list[tuple[str, int, int]], seed: int
) -> None:
    model = _Model(make_table(PROP_CONFIG, seed=seed))
    for op, x, y in operations:
        model.apply(op, x, y)
        model.check()
