"""Latency tiering: 1-D k-means, the tier-count criterion, and the per-node tier state."""

from __future__ import annotations

import math
import random
from ipaddress import IPv4Address, IPv6Address, ip_address
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from korium_dht.config import DhtConfig
from korium_dht.tiering import LatencyTiers, choose_tier_count, kmeans_1d

MS = 0.001


def jittered(center: float, count: int, spread: float, seed: int) -> list[float]:
    """*count* values within +-*spread* (a fraction) of *center*, reproducibly."""
    rng = random.Random(seed)
    return [center * (1.0 + rng.uniform(-spread, spread)) for _ in range(count)]


def v4(i: int, host: int = 5) -> IPv4Address:
    """An address in the *i*-th /16 (``i`` < 65536)."""
    return IPv4Address((i << 16) | host)


# -- kmeans_1d ---------------------------------------------------------------------------------


def test_kmeans_finds_clear_clusters() -> None:
    groups = [jittered(10.0, 15, 0.1, 1), jittered(80.0, 15, 0.1, 2), jittered(250.0, 15, 0.1, 3)]
    labelled = [(v, label) for label, group in enumerate(groups) for v in group]
    random.Random(4).shuffle(labelled)
    values = [v for v, _ in labelled]

    centroids, assignment, inertia = kmeans_1d(values, 3)

    assert len(centroids) == 3
    for centroid, expected in zip(centroids, (10.0, 80.0, 250.0), strict=True):
        assert centroid == pytest.approx(expected, rel=0.05)
    assert assignment == [label for _, label in labelled]
    direct = sum((v - centroids[a]) ** 2 for v, a in zip(values, assignment, strict=True))
    assert inertia == pytest.approx(direct)
    assert inertia < 0.01 * sum((v - sum(values) / len(values)) ** 2 for v in values)


def test_kmeans_is_deterministic_and_order_independent() -> None:
    values = jittered(30.0, 40, 0.9, 5)
    first = kmeans_1d(values, 4)
    assert kmeans_1d(values, 4) == first
    reordered = values[::-1]
    centroids, assignment, inertia = kmeans_1d(reordered, 4)
    assert centroids == first[0]
    assert assignment == first[1][::-1]
    assert inertia == pytest.approx(first[2])


def test_kmeans_clamps_k_to_distinct_values() -> None:
    centroids, assignment, inertia = kmeans_1d([5.0, 7.0, 5.0, 5.0], 6)
    assert centroids == [5.0, 7.0]
    assert assignment == [0, 1, 0, 0]
    assert inertia == 0.0
    assert kmeans_1d([3.0, 3.0], 3) == ([3.0], [0, 0], 0.0)
    assert kmeans_1d([], 3) == ([], [], 0.0)


def test_kmeans_reseeds_empty_clusters() -> None:
    # Quantile initialisation puts all three centroids on the repeated 1.0; two clusters start
    # empty. Left alone, one would stay at 1.0 for ever (ties go to the lower twin) and 50 and
    # 100 would share a cluster; re-seeded, every value gets its own.
    values = [1.0] * 10 + [50.0, 100.0]
    centroids, assignment, inertia = kmeans_1d(values, 3)
    assert centroids == [1.0, 50.0, 100.0]
    assert assignment == [0] * 10 + [1, 2]
    assert inertia == 0.0


def test_kmeans_quantile_start_and_ties_to_the_lower_centroid() -> None:
    # No Lloyd step: centroids are the sorted values at quantile indices 1 and 3; 3.0 is
    # equidistant from both and belongs to the lower one.
    centroids, assignment, inertia = kmeans_1d([6.0, 3.0, 0.0, 2.0, 4.0], 2, iterations=0)
    assert centroids == [2.0, 4.0]
    assert assignment == [1, 0, 0, 0, 1]
    assert inertia == 4.0 + 1.0 + 4.0
    # Both start centroids on 0.0: 1.0 is as near to either, so it joins the first and the
    # second cluster, empty, is dropped. Lloyd steps re-seed it instead.
    assert kmeans_1d([0.0, 0.0, 0.0, 1.0], 2, iterations=0) == ([0.0], [0, 0, 0, 0], 1.0)
    assert kmeans_1d([0.0, 0.0, 0.0, 1.0], 2) == ([0.0, 1.0], [0, 0, 0, 1], 0.0)


def test_kmeans_one_cluster_is_the_mean() -> None:
    centroids, assignment, inertia = kmeans_1d([1.0, 2.0, 6.0], 1)
    assert centroids == [pytest.approx(3.0)]
    assert assignment == [0, 0, 0]
    assert inertia == pytest.approx(4.0 + 1.0 + 9.0)


def test_kmeans_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="k must be"):
        kmeans_1d([1.0], 0)
    with pytest.raises(ValueError, match="finite"):
        kmeans_1d([1.0, math.nan], 2)
    with pytest.raises(ValueError, match="finite"):
        kmeans_1d([1.0, math.inf], 2)
    with pytest.raises(ValueError, match="too large"):
        kmeans_1d([1e308, 1e308, -1e308], 2)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.floats(min_value=-1e6, max_value=1e6), max_size=60),
    st.integers(min_value=1, max_value=8),
    st.integers(min_value=0, max_value=20),
)
def test_kmeans_invariants(values: list[float], k: int, iterations: int) -> None:
    centroids, assignment, inertia = kmeans_1d(values, k, iterations)
    assert len(assignment) == len(values)
    assert len(centroids) <= min(k, len(set(values)))
    assert all(a < b for a, b in pairwise(centroids))
    assert set(assignment) == set(range(len(centroids)))  # no empty cluster
    for value, cluster in zip(values, assignment, strict=True):
        nearest = min(abs(value - c) for c in centroids)
        assert abs(value - centroids[cluster]) == nearest
    direct = math.fsum((v - centroids[a]) ** 2 for v, a in zip(values, assignment, strict=True))
    assert inertia == pytest.approx(direct, rel=1e-9, abs=1e-9)


# -- choose_tier_count ---------------------------------------------------------------------


def test_tier_count_of_equal_values_is_one() -> None:
    assert choose_tier_count([0.05] * 30, 7) == 1
    assert choose_tier_count([0.05], 7) == 1
    assert choose_tier_count([], 7) == 1


def test_tier_count_of_noise_around_one_value_is_one() -> None:
    # k-means alone would need four clusters to explain 90 % of uniform noise; they are within
    # a factor of 1.25 of each other, so they are one tier.
    assert choose_tier_count(jittered(50 * MS, 200, 0.05, 6), 7) == 1


def test_tier_count_merges_clusters_within_factor() -> None:
    values = jittered(10 * MS, 30, 0.01, 7) + jittered(11 * MS, 30, 0.01, 8)
    assert choose_tier_count(values, 7) == 1
    values = jittered(10 * MS, 30, 0.01, 7) + jittered(13 * MS, 30, 0.01, 8)
    assert choose_tier_count(values, 7) == 2


def test_tier_count_of_two_groups_is_two() -> None:
    values = jittered(10 * MS, 40, 0.1, 9) + jittered(150 * MS, 10, 0.1, 10)
    assert choose_tier_count(values, 7) == 2


def test_tier_count_of_three_groups_is_three() -> None:
    values = jittered(10, 20, 0.1, 11) + jittered(80, 20, 0.1, 12) + jittered(250, 20, 0.1, 13)
    assert choose_tier_count(values, 7) == 3
    assert choose_tier_count(values, 2) == 2
    assert choose_tier_count(values, 1) == 1


@pytest.mark.parametrize("groups", [4, 5, 6, 7])
def test_tier_count_keeps_many_distinct_groups_apart(groups: int) -> None:
    # Groups a factor 3 apart. "90 % of the variance" alone stops at 3 or 4 tiers; the
    # follow-up step sees that more tiers explain 90 % of the rest.
    values = [v for i in range(groups) for v in jittered(2 * MS * 3**i, 10, 0.1, 40 + i)]
    assert choose_tier_count(values, 7) == groups
    assert choose_tier_count(values, 3) == 3


def test_tier_count_is_scale_free() -> None:
    values = jittered(10, 20, 0.1, 14) + jittered(80, 20, 0.1, 15) + jittered(250, 20, 0.1, 16)
    assert choose_tier_count([v * MS for v in values], 7) == choose_tier_count(values, 7) == 3


def test_tier_count_of_a_continuum_is_moderate() -> None:
    # Log-uniform RTTs from 5 to 300 ms: the reference's criterion would pick 7 tiers.
    rng = random.Random(17)
    values = [math.exp(rng.uniform(math.log(5 * MS), math.log(300 * MS))) for _ in range(500)]
    assert choose_tier_count(values, 7) == 4


def test_tier_count_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="max_tiers"):
        choose_tier_count([1.0], 0)
    for bad in (0.0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="positive"):
            choose_tier_count([1.0, bad], 3)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(min_value=0.0, exclude_min=True, allow_infinity=False), max_size=50),
    st.integers(min_value=1, max_value=7),
)
def test_tier_count_is_within_bounds(values: list[float], max_tiers: int) -> None:
    count = choose_tier_count(values, max_tiers)
    assert 1 <= count <= max_tiers
    assert count <= max(1, len(set(values)))
    assert choose_tier_count(values[::-1], max_tiers) == count


# -- LatencyTiers ------------------------------------------------------------------------------


def three_tier_node(config: DhtConfig | None = None) -> LatencyTiers:
    """Prefixes 0-9 answer in ~5 ms, 10-19 in ~50 ms, 20-29 in ~300 ms; tiers computed."""
    tiers = LatencyTiers(config or DhtConfig())
    for i, rtt in enumerate(
        jittered(5 * MS, 10, 0.1, 20) + jittered(50 * MS, 10, 0.1, 21) + jittered(0.3, 10, 0.1, 22)
    ):
        tiers.record_rtt(v4(i), rtt, 0.0)
    tiers.recompute(0.0)
    return tiers


def test_fastest_prefix_is_tier_zero_and_slowest_the_highest() -> None:
    tiers = three_tier_node()
    assert tiers.tiers == 3
    assert [tiers.tier_of(v4(i)) for i in range(30)] == [0] * 10 + [1] * 10 + [2] * 10
    centroids = tiers.centroids
    assert len(centroids) == 3
    for centroid, expected in zip(centroids, (5 * MS, 50 * MS, 0.3), strict=True):
        assert centroid == pytest.approx(expected, rel=0.05)


def test_prefixes_are_ipv4_slash_16_and_ipv6_slash_32() -> None:
    tiers = LatencyTiers(DhtConfig())
    tiers.record_rtt(ip_address("10.1.5.5"), 0.010, 0.0)
    tiers.record_rtt(ip_address("10.1.200.1"), 0.020, 0.0)
    assert len(tiers) == 1
    assert tiers.samples(ip_address("10.1.0.0")) == 2
    tiers.record_rtt(ip_address("10.2.0.1"), 0.010, 0.0)
    assert len(tiers) == 2
    assert tiers.samples(ip_address("10.2.0.1")) == 1

    tiers.record_rtt(ip_address("2001:db8:1::1"), 0.010, 0.0)
    tiers.record_rtt(ip_address("2001:db8:ffff:1::9"), 0.010, 0.0)
    assert len(tiers) == 3
    tiers.record_rtt(ip_address("2001:db9::1"), 0.010, 0.0)
    assert len(tiers) == 4
    assert tiers.samples(IPv6Address("2001:db8::")) == 2


def test_ema_first_sample_sets_it_then_alpha_point_three() -> None:
    tiers = LatencyTiers(DhtConfig())
    ip = ip_address("192.0.2.1")
    assert tiers.smoothed_rtt(ip) is None
    tiers.record_rtt(ip, 0.100, 0.0)
    assert tiers.smoothed_rtt(ip) == pytest.approx(0.100)
    tiers.record_rtt(ip, 0.200, 0.0)
    assert tiers.smoothed_rtt(ip) == pytest.approx(0.130)
    tiers.record_rtt(ip, 0.000, 0.0)
    assert tiers.smoothed_rtt(ip) == pytest.approx(0.091)
    assert tiers.samples(ip) == 3
    tiers.recompute(0.0)
    assert tiers.centroids == [pytest.approx(0.091)]


def test_bad_samples_are_ignored() -> None:
    tiers = LatencyTiers(DhtConfig())
    tiers.record_rtt(None, 0.010, 0.0)
    for bad in (-0.001, math.nan, math.inf, -math.inf):
        tiers.record_rtt(ip_address("192.0.2.1"), bad, 0.0)
    assert len(tiers) == 0
    assert tiers.tiers == 1


def test_prefix_table_is_lru_bounded() -> None:
    tiers = LatencyTiers(DhtConfig(tiering_prefixes=10_000))
    for i in range(12_000):
        tiers.record_rtt(v4(i), 0.010 + (i % 7) * 0.030, 0.0)
        if i == 5_000:
            tiers.record_rtt(v4(0), 0.010, 0.0)  # sampled again: no longer the oldest
    assert len(tiers) == 10_000
    assert tiers.smoothed_rtt(v4(0)) is not None
    assert all(tiers.smoothed_rtt(v4(i)) is None for i in range(1, 2_001))
    assert all(tiers.smoothed_rtt(v4(i)) is not None for i in range(2_001, 12_000))
    assert tiers.tier_of(v4(1)) == tiers.tiers // 2
    stats = tiers.stats()
    assert sum(int(stats[f"tier{i}_prefixes"]) for i in range(tiers.tiers)) == 10_000


def test_unknown_prefix_is_the_middle_tier() -> None:
    tiers = three_tier_node()
    assert tiers.tier_of(ip_address("203.0.113.7")) == 1
    assert tiers.tier_of(None) == 1
    fresh = LatencyTiers(DhtConfig())
    assert fresh.tiers == 1
    assert fresh.tier_of(None) == 0
    assert fresh.tier_of(ip_address("203.0.113.7")) == 0


def test_middle_tier_of_two_and_five_tiers() -> None:
    tiers = LatencyTiers(DhtConfig())
    for i in range(5):
        for j, rtt in enumerate(jittered(2 * MS * 5**i, 8, 0.05, 30 + i)):
            tiers.record_rtt(v4(10 * i + j), rtt, 0.0)
    tiers.recompute(0.0)
    assert tiers.tiers == 5
    assert tiers.tier_of(None) == 2
    two = LatencyTiers(DhtConfig())
    two.record_rtt(v4(1), 0.005, 0.0)
    two.record_rtt(v4(2), 0.200, 0.0)
    assert two.tiers == 2
    assert two.tier_of(None) == 1


def test_first_tiers_come_at_two_prefixes_then_at_the_interval() -> None:
    tiers = LatencyTiers(DhtConfig(tiering_recompute_s=60.0))
    tiers.record_rtt(v4(1), 0.005, 100.0)
    assert tiers.tiers == 1
    assert tiers.centroids == []
    tiers.record_rtt(v4(2), 0.100, 101.0)  # second prefix: clustered at once
    assert tiers.tiers == 2
    assert tiers.centroids == [pytest.approx(0.005), pytest.approx(0.100)]

    for t in (102.0, 130.0, 160.9):  # a much slower prefix appears, but it is not yet time
        tiers.record_rtt(v4(3), 2.0, t)
    assert tiers.tiers == 2
    assert tiers.centroids == [pytest.approx(0.005), pytest.approx(0.100)]
    assert tiers.tier_of(v4(3)) == 1  # classified against the current centroids meanwhile

    tiers.record_rtt(v4(1), 0.005, 161.0)  # 60 s after the last recompute
    assert tiers.tiers == 3
    assert tiers.tier_of(v4(3)) == 2
    centroids = tiers.centroids
    tiers.record_rtt(v4(4), 10.0, 200.0)
    assert tiers.centroids == centroids
    tiers.record_rtt(v4(4), 10.0, 221.0)
    assert tiers.centroids != centroids
    assert tiers.tiers == 4


def test_an_early_explicit_recompute_does_not_delay_the_first_tiers() -> None:
    tiers = LatencyTiers(DhtConfig(tiering_recompute_s=60.0))
    tiers.recompute(0.0)
    tiers.record_rtt(v4(1), 0.005, 1.0)
    tiers.recompute(2.0)
    assert tiers.centroids == [pytest.approx(0.005)]
    tiers.record_rtt(v4(2), 0.100, 3.0)
    assert tiers.tiers == 2


def test_new_prefix_is_classified_before_the_next_recompute() -> None:
    tiers = three_tier_node()
    tiers.record_rtt(v4(100), 4 * MS, 1.0)
    tiers.record_rtt(v4(101), 400 * MS, 1.0)
    assert tiers.tier_of(v4(100)) == 0
    assert tiers.tier_of(v4(101)) == 2
    stats = tiers.stats()
    assert stats["tier0_prefixes"] == 11
    assert stats["tier2_prefixes"] == 11


def test_a_prefix_moves_tier_as_its_rtt_changes() -> None:
    tiers = three_tier_node()
    for _ in range(10):
        tiers.record_rtt(v4(0), 0.3, 1.0)
    assert tiers.tier_of(v4(0)) == 2
    assert tiers.stats()["tier0_prefixes"] == 9


def test_stats() -> None:
    tiers = three_tier_node()
    stats = tiers.stats()
    assert set(stats) == {
        "prefixes",
        "tiers",
        "tier0_prefixes",
        "tier0_ms",
        "tier1_prefixes",
        "tier1_ms",
        "tier2_prefixes",
        "tier2_ms",
    }
    assert stats["prefixes"] == 30
    assert stats["tiers"] == 3
    assert [stats[f"tier{i}_prefixes"] for i in range(3)] == [10, 10, 10]
    assert stats["tier0_ms"] == pytest.approx(5.0, rel=0.05)
    assert stats["tier1_ms"] == pytest.approx(50.0, rel=0.05)
    assert stats["tier2_ms"] == pytest.approx(300.0, rel=0.05)
    assert LatencyTiers(DhtConfig()).stats() == {
        "prefixes": 0,
        "tiers": 1,
        "tier0_prefixes": 0,
        "tier0_ms": 0.0,
    }


def test_max_tiers_caps_the_tiers() -> None:
    tiers = three_tier_node(DhtConfig(max_tiers=2))
    assert tiers.tiers == 2
    assert tiers.tier_of(v4(0)) == 0
    assert tiers.tier_of(v4(29)) == 1


def test_floor_rtt_is_the_lower_envelope_of_a_prefix() -> None:
    tiers = LatencyTiers(DhtConfig())
    ip = ip_address("10.1.2.3")
    assert tiers.floor_rtt(ip) is None
    tiers.record_rtt(ip, 0.050, 0.0)
    tiers.record_rtt(ip, 0.020, 1.0)  # drops at once
    assert tiers.floor_rtt(ip) == pytest.approx(0.020)
    tiers.record_rtt(ip, 0.220, 2.0)  # a queueing spike lifts it by 1% of the gap only
    assert tiers.floor_rtt(ip) == pytest.approx(0.022)
    assert tiers.floor_rtt(ip_address("10.2.0.1")) is None
    assert tiers.floor_rtt(None) is None
