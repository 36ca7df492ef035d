"""Simulated DHT networks (``korium_dht.simulation.SimDht``) on virtual time.

The acceptance scenario, scaled down to 1,000 nodes: lookups converge in a few rounds, survive
the abrupt loss of a fifth of the network, and latency tiering makes exact lookups faster on a
three-region network. One network serves every measurement (building it is most of the cost).
"""

from __future__ import annotations

import asyncio
import random
import statistics
from collections import Counter

import pytest
from korium_dht.lookup import LookupMetrics
from korium_dht.service import LookupResult
from korium_dht.simulation import REGIONS_3, LookupReport, SimDht

from korium.identity import Contact, Keypair, ProofOfWork
from korium.testing import on_virtual_time, run


def _contact(seed: int) -> Contact:
    return Contact.create(Keypair.from_seed(bytes([seed]) * 32), ProofOfWork(0), ["10.0.0.1:1"])


def test_lookup_report_counts_and_summarises() -> None:
    a, b = _contact(1), _contact(2)
    report = LookupReport()
    assert report.success_rate == 0.0
    report.add(
        LookupResult([a, b], None, LookupMetrics(queries=10, rounds=2, found_round=1), 0.2),
        a.identity,
    )
    report.add(LookupResult([b], None, LookupMetrics(queries=20, rounds=4), 0.4), a.identity)
    report.add(
        LookupResult([], None, LookupMetrics(queries=3, rounds=1, found_round=0), 1.0), b.identity
    )
    assert report.lookups == 3
    assert report.succeeded == 1  # only a result led by the target counts
    summary = report.summary()
    assert summary["success_rate"] == pytest.approx(1 / 3)
    assert summary["rounds_mean"] == pytest.approx(7 / 3)
    assert summary["rounds_max"] == 4
    assert summary["found_round_mean"] == pytest.approx(0.5)
    assert summary["found_round_max"] == 1
    assert summary["queries_mean"] == pytest.approx(11.0)
    assert summary["queries_max"] == 20
    assert summary["latency_median_s"] == pytest.approx(0.4)
    assert summary["latency_p99_s"] == pytest.approx(1.0)


@on_virtual_time
async def test_a_small_network_finds_every_node() -> None:
    sim = await SimDht.build(60, seed=3)
    assert len(sim.nodes) == len(sim.network) == 60
    assert all(len(sim.dht(n).table) >= 20 for n in sim.nodes)
    report = await sim.lookups(100, random.Random(4))
    summary = report.summary()
    assert summary["success_rate"] == 1.0
    assert summary["found_round_max"] <= 2
    assert summary["queries_mean"] <= 30
    assert min(report.latencies) >= 0.04 - 1e-9  # at least one 2 x 20 ms round trip
    await sim.close()
    assert len(sim.network) == 0


def _medians(report: LookupReport) -> float:
    return statistics.median(report.latencies)


async def _thousand_nodes() -> dict[str, object]:
    sim = await SimDht.build(1000, seed=1, regions=REGIONS_3)
    results: dict[str, object] = {}

    # 1. Random lookups of existing identities.
    results["random"] = await sim.lookups(300, random.Random(2))

    # 2. Latency tiering, on the same tables. Warm up (tiers need RTT samples), then alternate
    #    off / on / off / on over the same source-target pairs, so neither setting only ever
    #    runs second on tables the other one warmed.
    await sim.lookups(300, random.Random(9), exact=True)
    now = asyncio.get_running_loop().time()
    for node in sim.nodes:  # cluster what each node has measured (the periodic recompute)
        sim.dht(node).tiers.recompute(now)
    tiers = Counter(sim.dht(n).tiers.tiers for n in sim.nodes)
    results["tiers"] = tiers
    centroids = []
    for node in sim.nodes[:100]:
        t = sim.dht(node).tiers
        if t.tiers == 3:
            region = sim.region_of[node.identity]
            expected = sorted(2 * latency for latency in REGIONS_3[region])
            centroids.append((t.centroids, expected))
    results["centroids"] = centroids
    runs: list[tuple[bool, LookupReport]] = []
    for tiering in (False, True, False, True):
        sim.set_tiering(tiering)
        runs.append((tiering, await sim.lookups(300, random.Random(3), exact=True)))
    results["tiering"] = runs

    # 3. A fifth of the network vanishes; survivors look each other up.
    survivors = await sim.remove(0.2, random.Random(4))
    results["survivors"] = len(survivors)
    results["churn"] = await sim.lookups(300, random.Random(5), nodes=survivors)
    await sim.close()
    return results


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_thousand_nodes_lookups_churn_and_tiering() -> None:
    results = run(_thousand_nodes())

    random_lookups = results["random"]
    assert isinstance(random_lookups, LookupReport)
    summary = random_lookups.summary()
    assert summary["lookups"] == 300
    assert summary["success_rate"] == 1.0, summary
    assert summary["queries_mean"] <= 30, summary
    assert summary["found_round_max"] <= 3, summary

    tiers = results["tiers"]
    assert isinstance(tiers, Counter)
    assert max(tiers) == 3, tiers  # three regions: never more than three tiers
    assert tiers.most_common(1)[0][0] == 3, tiers
    assert tiers[3] >= 500, tiers
    centroids = results["centroids"]
    assert isinstance(centroids, list)
    assert len(centroids) >= 50
    for found, expected in centroids:  # each tier's RTT is a region's round trip
        assert found == pytest.approx(expected, rel=0.05)

    runs = results["tiering"]
    assert isinstance(runs, list)
    off = [_medians(report) for tiering, report in runs if not tiering]
    on = [_medians(report) for tiering, report in runs if tiering]
    assert all(report.success_rate == 1.0 for _, report in runs)
    assert max(on) < min(off), (on, off)

    assert results["survivors"] == 800
    churn = results["churn"]
    assert isinstance(churn, LookupReport)
    assert churn.lookups == 300
    assert churn.success_rate >= 0.99, churn.summary()
