"""Tests of the adaptive k and alpha (``korium_dht.adaptive``) on synthetic outcome series.

The formulas (module docstring of :mod:`korium_dht.adaptive`), with the default settings
``k0 = 20, k_min = 10, k_max = 30, a0 = 3, a_min = 2, a_max = 5`` and a window of 100::

    S     = ramp(F, 0.05, 0.50)
    C     = ramp(Q, 1.5, 4.0)
    k     = clamp(rnd(20 + 10 * S), 10, 30)
    alpha = clamp(rnd(3 + 2 * S - 3 * C), 2, 5)
"""

from __future__ import annotations

import math
import random

import pytest
from korium_dht.adaptive import (
    MIN_SAMPLES,
    RTT_FLOOR,
    AdaptiveParams,
    Outcome,
    ramp,
    round_half_up,
)
from korium_dht.config import DhtConfig

OK = Outcome.ANSWERED
LOST = Outcome.NO_ANSWER


def params(**settings: object) -> AdaptiveParams:
    return AdaptiveParams(DhtConfig.from_settings(settings))


def feed(p: AdaptiveParams, outcomes: list[Outcome], rtt: float = 0.05) -> None:
    for outcome in outcomes:
        p.record(outcome, rtt if outcome is OK else None)


def pattern(failures_in_5: int, count: int) -> list[Outcome]:
    """*count* outcomes, *failures_in_5* of every 5 failing (so exact fractions per window)."""
    return [LOST if i % 5 < failures_in_5 else OK for i in range(count)]


# -- helpers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("x", "expected"),
    [(-1.0, 0.0), (0.05, 0.0), (0.275, 0.5), (0.5, 1.0), (0.9, 1.0), (0.14, 0.2)],
)
def test_ramp(x: float, expected: float) -> None:
    assert ramp(x, 0.05, 0.50) == pytest.approx(expected)


def test_ramp_is_zero_at_low_and_one_at_high_exactly() -> None:
    assert ramp(1.5, 1.5, 4.0) == 0.0
    assert ramp(4.0, 1.5, 4.0) == 1.0
    assert ramp(2.75, 1.5, 4.0) == 0.5


@pytest.mark.parametrize(
    ("x", "expected"),
    [(0.5, 1), (1.5, 2), (2.5, 3), (3.5, 4), (2.4999, 2), (2.5001, 3), (-0.5, 0), (-1.5, -1)],
)
def test_round_half_up(x: float, expected: int) -> None:
    assert round_half_up(x) == expected


def test_round_half_up_differs_from_bankers_rounding() -> None:
    assert round(2.5) == 2
    assert round_half_up(2.5) == 3
    assert round(20.5) == 20
    assert round_half_up(20.5) == 21


# -- healthy network -----------------------------------------------------------------------


def test_healthy_network_stays_at_the_defaults_over_1000_outcomes() -> None:
    p = params()
    rng = random.Random(7)
    changed = 0
    for _ in range(1000):
        changed += p.record(OK, 0.05 + rng.uniform(-0.002, 0.002))
        assert (p.k, p.alpha) == (20, 3)
    assert changed == 0
    assert p.churn == 0.0
    assert p.inflation == pytest.approx(1.0, abs=0.1)
    assert p.stats() == {
        "k": 20,
        "alpha": 3,
        "churn": 0.0,
        "rtt_inflation": round(p.inflation, 3),
    }


def test_five_percent_failures_is_still_healthy() -> None:
    p = params()
    feed(p, [LOST if i % 20 == 0 else OK for i in range(1000)])
    assert p.churn == pytest.approx(0.05)
    assert (p.k, p.alpha) == (20, 3)


def test_defaults_hold_until_min_samples() -> None:
    p = params()
    assert MIN_SAMPLES == 20
    for i in range(MIN_SAMPLES - 1):
        assert p.record(LOST) is False, i
        assert (p.k, p.alpha) == (20, 3)
    assert p.churn == 1.0
    assert p.record(LOST) is True  # the 20th outcome: k moves
    assert (p.k, p.alpha) == (30, 5)


# -- churn ---------------------------------------------------------------------------------


def test_fifty_percent_failures_gives_k30_alpha5() -> None:
    p = params()
    feed(p, [LOST if i % 2 else OK for i in range(200)])
    assert p.churn == pytest.approx(0.5)
    assert (p.k, p.alpha) == (30, 5)


def test_all_failures_saturates_at_k_max_and_alpha_max() -> None:
    p = params()
    feed(p, [LOST] * 300)
    assert (p.k, p.alpha) == (30, 5)


def test_twenty_percent_failures_follow_the_formula() -> None:
    p = params()
    feed(p, pattern(1, 500))
    assert p.churn == pytest.approx(0.2)
    s = (0.2 - 0.05) / 0.45  # 1/3
    assert round_half_up(20 + 10 * s) == 23  # 23.33
    assert round_half_up(3 + 2 * s) == 4  # 3.67
    assert (p.k, p.alpha) == (23, 4)


@pytest.mark.parametrize(
    ("fraction_in_5", "k", "alpha"),
    [(0, 20, 3), (1, 23, 4), (2, 28, 5), (3, 30, 5), (5, 30, 5)],
)
def test_churn_levels(fraction_in_5: int, k: int, alpha: int) -> None:
    p = params()
    feed(p, pattern(fraction_in_5, 400))
    f = fraction_in_5 / 5
    s = ramp(f, 0.05, 0.50)
    assert p.k == min(max(round_half_up(20 + 10 * s), 10), 30) == k
    assert p.alpha == min(max(round_half_up(3 + 2 * s), 2), 5) == alpha


def test_record_returns_true_only_when_k_changes() -> None:
    p = params()
    feed(p, [OK] * 100)
    changes = [p.record(LOST) for _ in range(10)]
    # F goes 0.01 .. 0.10: S = (F - 0.05) / 0.45, k = rnd(20 + 10 S) reaches 21 at F = 0.08.
    assert changes == [False] * 7 + [True, False, False]
    assert p.k == 21


def test_churn_is_exact_over_the_sliding_window() -> None:
    p = params(churn_window=37)
    rng = random.Random(3)
    history: list[bool] = []
    for _ in range(2000):
        failed = rng.random() < 0.3
        history.append(failed)
        p.record(LOST if failed else OK, 0.04)
        window = history[-37:]
        assert p.churn == sum(window) / len(window)


def test_recovery_to_the_defaults_once_the_window_refills() -> None:
    p = params()
    feed(p, [LOST] * 100)
    assert (p.k, p.alpha) == (30, 5)
    first_default_k = first_default_alpha = None
    for n in range(1, 101):
        p.record(OK, 0.05)
        if p.k == 20 and first_default_k is None:
            first_default_k = n
        if p.alpha == 3 and first_default_alpha is None:
            first_default_alpha = n
    # After n healthy outcomes F = (100 - n) / 100. k is back to 20 once 10 S < 0.5
    # (F <= 0.07, n = 93); alpha once 2 S < 0.5 (F <= 0.16, n = 84).
    assert first_default_k == 93
    assert first_default_alpha == 84
    assert p.churn == 0.0
    assert (p.k, p.alpha) == (20, 3)


# -- congestion ----------------------------------------------------------------------------


def test_rising_rtt_on_answered_requests_lowers_alpha_not_k() -> None:
    p = params()
    feed(p, [OK] * 100, rtt=0.05)
    assert (p.k, p.alpha) == (20, 3)
    alphas = []
    for i in range(101):
        p.record(OK, 0.05 + 0.25 * i / 100)  # 50 ms rising to 300 ms
        assert p.k == 20
        alphas.append(p.alpha)
    assert min(alphas) == 2
    assert p.churn == 0.0
    assert p.inflation > 1.9167  # C > 1/6: alpha = rnd(3 - 3 C) <= 2
    # Alpha only ever went down during the ramp (no oscillation back up while rising).
    assert alphas == sorted(alphas, reverse=True)


def test_a_sustained_higher_rtt_is_learnt_as_the_new_baseline() -> None:
    p = params()
    feed(p, [OK] * 100, rtt=0.05)
    feed(p, [OK] * 30, rtt=0.3)
    assert p.alpha == 2  # a burst of queueing: congestion
    feed(p, [OK] * 1000, rtt=0.3)
    assert p.baseline == pytest.approx(0.3, rel=0.01)
    assert p.inflation == pytest.approx(1.0, abs=0.01)
    assert p.alpha == 3  # a route change, learnt


def test_inflation_formula() -> None:
    p = params()
    p.record(OK, 0.1)
    assert p.srtt == p.baseline == 0.1
    p.record(OK, 0.2)
    assert p.srtt == pytest.approx(0.11)  # EWMA weight 0.1
    assert p.baseline == pytest.approx(0.1001)  # rises 1% of the gap
    assert p.inflation == pytest.approx(0.11 / 0.1001)
    p.record(OK, 0.0)
    assert p.srtt == pytest.approx(0.099)
    assert p.baseline == pytest.approx(0.099)  # drops at once
    assert p.inflation == pytest.approx(0.099 / 0.099)


def test_rtt_below_the_floor_never_counts_as_congestion() -> None:
    assert RTT_FLOOR == 0.020
    p = params()
    feed(p, [OK] * 100, rtt=0.0005)  # loopback
    raw_ratio = 0.0
    for _ in range(200):
        p.record(OK, 0.0195)  # 39 times slower, still under the 20 ms floor
        assert p.srtt is not None
        assert p.baseline is not None
        raw_ratio = max(raw_ratio, p.srtt / p.baseline)
        assert p.inflation < 1.0
        assert (p.k, p.alpha) == (20, 3)
    assert raw_ratio > 10  # without the floor this would be full congestion (Q >= 4)


def test_the_floor_still_lets_real_queueing_count() -> None:
    p = params()
    feed(p, [OK] * 100, rtt=0.001)
    feed(p, [OK] * 20, rtt=0.2)
    assert p.baseline is not None
    assert p.baseline < RTT_FLOOR + 0.005
    assert p.inflation > 4.0  # about 175 ms over the 20 ms floor
    assert p.alpha == 2


def test_no_answers_and_bad_rtts_do_not_move_the_rtt_estimate() -> None:
    p = params()
    p.record(OK, 0.05)
    p.record(LOST, 5.0)  # an rtt with a failure is ignored
    p.record(OK, None)
    p.record(OK, math.nan)
    p.record(OK, math.inf)
    p.record(OK, -1.0)
    assert p.srtt == p.baseline == 0.05


def test_inflation_is_one_before_any_rtt() -> None:
    p = params()
    feed(p, [LOST] * 50)
    assert p.srtt is None
    assert p.inflation == 1.0


def test_churn_and_congestion_combine() -> None:
    p = params()
    feed(p, [OK] * 100, rtt=0.05)
    for i in range(100):  # 50% failures; the answers take 500 ms instead of 50 ms
        p.record(LOST if i % 2 else OK, 0.5)
    assert p.churn == 0.5
    q = p.inflation
    assert 1.5 < q < 4.0
    c = (q - 1.5) / 2.5
    assert p.k == 30
    assert p.alpha == round_half_up(3 + 2 * 1.0 - 3 * c) == 4  # 5 from churn alone


def test_custom_bounds_clamp() -> None:
    p = params(k=12, k_min=12, k_max=14, alpha=2, alpha_min=1, alpha_max=2)
    feed(p, [OK] * 50)
    assert (p.k, p.alpha) == (12, 2)
    feed(p, [LOST] * 100)
    assert (p.k, p.alpha) == (14, 2)
    feed(p, [OK] * 100, rtt=0.05)
    feed(p, [OK] * 40, rtt=1.0)
    assert (p.k, p.alpha) == (12, 1)


def test_near_and_far_peers_mixed_are_not_congestion() -> None:
    # Three regions answering at their usual RTTs, interleaved: the global srtt swings, but
    # each answer is compared with its own path, so alpha stays at its default.
    p = params()
    paths = (0.010, 0.080, 0.160)
    rng = random.Random(3)
    for _ in range(1000):
        floor = rng.choice(paths)
        p.record(Outcome.ANSWERED, floor * rng.uniform(1.0, 1.2), floor)
    assert p.inflation < 1.3
    assert (p.k, p.alpha) == (20, 3)


def test_queueing_on_each_path_shrinks_alpha() -> None:
    p = params()
    paths = (0.010, 0.080, 0.160)
    for i in range(300):
        floor = paths[i % 3]
        p.record(Outcome.ANSWERED, floor * 5, floor)  # every answer 5x slower than its path
    assert p.inflation > 4.0
    assert (p.k, p.alpha) == (20, 2)
