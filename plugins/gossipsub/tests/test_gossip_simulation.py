"""Simulated GossipSub networks (``korium_gossipsub.simulation.SimGossip``) on virtual time.

The acceptance scenarios: a thousand nodes with 10% churn deliver at least 99% of messages to
every live subscriber (figures printed: latency to 90/99/100% of the nodes, duplicate ratio),
and with 30% Sybil attackers (droppers and spammers) honest delivery holds, spammers end
graylisted and droppers are pushed out of the meshes once P3 is tuned to catch them.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from korium_gossipsub.simulation import (
    DROPPER,
    DROPPER_RESISTANT_SCORE,
    SPAMMER,
    TOPIC,
    GossipReport,
    MessageOutcome,
    SimGossip,
)

from korium.testing import on_virtual_time, run


def test_outcome_latency_to_a_share_of_the_subscribers() -> None:
    outcome = MessageOutcome(0, 1.0, expected=10, latencies=[0.01 * i for i in range(1, 10)])
    assert outcome.delivered == 9
    assert not outcome.complete
    assert outcome.time_to(0.5) == pytest.approx(0.05)
    assert outcome.time_to(0.9) == pytest.approx(0.09)  # the 9th of 10
    assert outcome.time_to(0.91) is None  # needs all 10
    assert outcome.time_to(1.0) is None
    assert MessageOutcome(1, 0.0, expected=0).time_to(1.0) == 0.0  # nobody to reach
    assert MessageOutcome(2, 0.0, expected=1, latencies=[0.2]).complete


def test_report_figures() -> None:
    report = GossipReport(
        outcomes=[
            MessageOutcome(0, 0.0, 4, [0.1, 0.2, 0.3, 0.4]),
            MessageOutcome(1, 1.0, 4, [0.1, 0.1, 0.2]),
            MessageOutcome(2, 2.0, 2, [0.5, 0.6]),
        ],
    )
    report.counters.update(delivered=9, duplicates=27, messages_sent=45)
    summary = report.summary()
    assert summary["messages"] == 3
    assert summary["expected_deliveries"] == 10
    assert summary["delivery_ratio"] == pytest.approx(0.9)
    assert summary["complete_ratio"] == pytest.approx(2 / 3)
    assert summary["duplicate_ratio"] == pytest.approx(3.0)
    assert summary["sent_per_delivery"] == pytest.approx(5.0)
    # 90% of 4 is 4 subscribers, of 2 is 2: only the complete messages reach it
    assert (summary["t90_median_s"], summary["t90_max_s"]) == pytest.approx((0.5, 0.6))
    assert summary["t90_missed"] == 1
    assert report.latency(0.5) == pytest.approx((0.2, 0.5, 0))  # 0.2, 0.1, 0.5
    empty = GossipReport()
    assert empty.delivery_ratio == empty.complete_ratio == 1.0
    assert empty.duplicate_ratio == 0.0
    assert math.isnan(empty.latency(0.9)[0])


@on_virtual_time
async def test_small_network_with_churn_counts_live_subscribers() -> None:
    sim = await SimGossip.build(40, seed=5)
    assert all(5 <= len(m.service.mesh_peers(TOPIC)) <= 12 for m in sim.members)
    report = await sim.run(20, rate=10, churn=0.25, joins=0.25, window_s=5.0)
    assert (report.removed, report.joined) == (10, 10)
    assert report.duration_s == pytest.approx(2.0 + 5.0)
    assert len(sim.online()) == 40
    first, last = report.outcomes[0], report.outcomes[-1]
    # the first message: nobody had joined yet, and every node that left did so within its
    # 5 s window (some of those who left had joined meanwhile)
    founders = [m for m in sim.members if m.joined_at <= first.published_at]
    assert len(founders) == 40
    stayed = [m for m in founders if m.online and m.identity != first.publisher]
    assert 29 <= len(stayed) <= 34  # of the 10 who left, some had joined meanwhile
    assert first.expected == len(stayed)
    # the last one: every node online now (joiners included) but its publisher
    assert last.expected == len([m for m in sim.online() if m.identity != last.publisher])
    assert report.delivery_ratio == 1.0, report.summary()
    assert report.complete_ratio == 1.0
    assert min(min(o.latencies) for o in report.outcomes) >= 0.005 - 1e-9  # one hop, in a region
    summary = report.summary()
    assert summary["t90_median_s"] <= summary["t99_median_s"] <= summary["t100_median_s"]
    assert summary["duplicate_ratio"] > 1.0  # meshes of at least 5: copies arrive
    assert report.counters["published"] == 20
    await sim.close()
    assert len(sim.network) == 0


@on_virtual_time
async def test_an_unreachable_subscriber_counts_as_missed() -> None:
    sim = await SimGossip.build(30, seed=6, regions=((0.01,),))
    cut_off = sim.online()[-1]
    sim.network.partition([cut_off.identity])
    report = await sim.run(10, rate=10)
    assert cut_off.received == {}
    assert all(o.expected == 29 for o in report.outcomes)
    # all but the cut-off node (which may have published: then nobody got it)
    lost = [o for o in report.outcomes if o.publisher == cut_off.identity]
    assert all(o.delivered == 0 for o in lost)
    reached = [o for o in report.outcomes if o.publisher != cut_off.identity]
    assert len(reached) >= 5
    assert all(o.delivered == 28 for o in reached)
    assert report.complete_ratio == 0.0
    assert report.delivery_ratio == pytest.approx(28 * len(reached) / (29 * 10))
    assert report.latency(1.0)[2] == 10  # none reached 100%
    for outcome in reached:  # one region, 10 ms links: whole hops only
        assert outcome.latencies[0] == pytest.approx(0.01)
        for latency in outcome.latencies:
            assert latency / 0.01 == pytest.approx(round(latency / 0.01))
    await sim.close()


def _figures(title: str, report: GossipReport) -> str:
    s = report.summary()
    return (
        f"{title}: {s['messages']:.0f} messages, delivery {s['delivery_ratio']:.2%} of "
        f"{s['expected_deliveries']:.0f}, complete {s['complete_ratio']:.2%}; latency to "
        + ", ".join(
            f"{share}% median {s[f't{share}_median_s'] * 1000:.0f} ms max "
            f"{s[f't{share}_max_s'] * 1000:.0f} ms"
            for share in (90, 99, 100)
        )
        + f"; duplicate ratio {s['duplicate_ratio']:.2f}, sent per delivery "
        f"{s['sent_per_delivery']:.2f}; left {s['removed']:.0f}, joined {s['joined']:.0f}"
    )


async def _thousand_nodes_with_churn() -> tuple[GossipReport, float]:
    sim = await SimGossip.build(1000, seed=1)
    report = await sim.run(50, rate=10, churn=0.1, joins=0.1)
    departed = sim.mesh_share([m for m in sim.members if not m.online])
    await sim.close()
    return report, departed


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_thousand_nodes_with_ten_percent_churn() -> None:
    report, departed = run(_thousand_nodes_with_churn())
    print(
        _figures("1,000 nodes, 10% churn", report),
        f"; mesh slots still held by departed nodes: {departed:.1%}",
    )
    summary = report.summary()
    assert (report.removed, report.joined) == (100, 100)
    assert summary["expected_deliveries"] >= 50 * 850
    assert summary["delivery_ratio"] >= 0.99, summary
    assert summary["complete_ratio"] >= 0.99, summary
    # three regions 5-80 ms apart: most nodes within a few hops, joiners by gossip
    assert 0.01 <= summary["t90_median_s"] <= 0.3, summary
    assert summary["t99_median_s"] <= 0.5, summary
    assert summary["t100_missed"] == 0, summary
    assert summary["t100_max_s"] <= 5.0, summary
    assert 2.0 <= summary["duplicate_ratio"] <= 12.0, summary  # about mesh degree - 1


async def _sybil(settings: dict[str, Any]) -> dict[str, Any]:
    sim = await SimGossip.build(
        200, seed=2, attackers={DROPPER: 0.15, SPAMMER: 0.15}, settings=settings
    )
    droppers = [m for m in sim.members if m.behaviour == DROPPER]
    spammers = [m for m in sim.members if m.behaviour == SPAMMER]
    honest = sim.online(honest=True)
    results: dict[str, Any] = {
        "counts": (len(honest), len(droppers), len(spammers)),
        "droppers_before": sim.mesh_share(droppers),
        "spammers_before": sim.mesh_share(spammers),
    }
    results["report"] = await sim.run(80, rate=5)
    results["droppers_after"] = sim.mesh_share(droppers)
    results["spammers_after"] = sim.mesh_share(spammers)
    results["spammer_standing"] = sim.standing(spammers)
    results["dropper_standing"] = sim.standing(droppers)
    results["honest_standing"] = sim.standing(honest)
    results["dropper_counters"] = sim.counters(droppers)
    results["spammer_counters"] = sim.counters(spammers)
    await sim.close()
    return results


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_sybil_droppers_and_spammers() -> None:
    default = run(_sybil({}))
    tuned = run(_sybil({"score": DROPPER_RESISTANT_SCORE}))
    for name, results in (("default params", default), ("tuned P3", tuned)):
        report = results["report"]
        print(
            _figures(f"200 nodes, 15% droppers + 15% spammers, {name}", report),
            f"; dropper mesh share {results['droppers_before']:.1%} -> "
            f"{results['droppers_after']:.1%}, spammer mesh share "
            f"{results['spammers_before']:.1%} -> {results['spammers_after']:.1%}",
        )
        assert results["counts"] == (140, 30, 30)
        assert all(o.expected == 139 for o in report.outcomes)  # honest subscribers only
        summary = report.summary()
        assert summary["delivery_ratio"] >= 0.99, summary
        assert summary["complete_ratio"] >= 0.99, summary
        # the attackers did attack: droppers forwarded nothing, spammers only garbage
        assert results["dropper_counters"]["delivered"] > 0
        assert results["dropper_counters"]["messages_sent"] == 0
        spam = results["spammer_counters"]
        assert spam["spam_sent"] > 0
        assert spam["messages_sent"] == spam["spam_sent"]
        assert report.counters["rejected_signature"] > 0
        # spammers were in the meshes, then every honest neighbour pruned and graylisted them
        assert results["spammers_before"] > 0.05
        assert results["spammers_after"] == 0.0
        standing = results["spammer_standing"]
        assert standing.links > 100
        assert standing.graylisted == standing.links, standing
        # no honest peer is penalised for what the attackers did
        assert results["honest_standing"].negative == 0
        assert results["honest_standing"].graylisted == 0
    # default P3 never turns a dropper negative: it keeps its share of the mesh
    assert default["dropper_standing"].negative == 0
    assert default["droppers_after"] >= 0.8 * default["droppers_before"] > 0.1
    # tuned P3 (deficit after 10 s in the mesh) turns droppers negative and prunes most of
    # them; those left were grafted less than 10 s ago
    standing = tuned["dropper_standing"]
    assert standing.negative >= 0.8 * standing.links > 0, standing
    assert tuned["droppers_after"] <= tuned["droppers_before"] / 3
