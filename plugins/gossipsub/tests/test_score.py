"""Tests of the GossipSub v1.1 peer score (``korium_gossipsub.score``): every component live."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from korium_gossipsub.score import (
    PeerScore,
    ScoreParams,
    ScoreThresholds,
    TopicScoreParams,
)

from korium.errors import ConfigError

# Weights of every component set to 0, so each test switches on only what it measures.
SILENT_TOPIC: dict[str, Any] = {
    "time_in_mesh_weight": 0.0,
    "first_message_deliveries_weight": 0.0,
    "mesh_message_deliveries_weight": 0.0,
    "mesh_failure_penalty_weight": 0.0,
    "invalid_message_deliveries_weight": 0.0,
}
SILENT_GLOBAL: dict[str, Any] = {
    "app_specific_weight": 0.0,
    "ip_colocation_weight": 0.0,
    "behaviour_penalty_weight": 0.0,
    "topic_score_cap": 0.0,
}


def topic(**overrides: Any) -> TopicScoreParams:
    """Topic params with every weight 0 except *overrides*."""
    return TopicScoreParams(**{**SILENT_TOPIC, **overrides})


def scorer(
    topic_params: TopicScoreParams | None = None, *, exempt: str | None = None, **overrides: Any
) -> PeerScore:
    """A PeerScore whose default topic is *topic_params* and whose other weights are 0."""
    params = ScoreParams(
        default_topic=topic_params if topic_params is not None else topic(),
        **{**SILENT_GLOBAL, **overrides},
    )
    if exempt is None:
        return PeerScore(params)
    prefix = exempt
    return PeerScore(params, is_exempt=lambda ip: ip.startswith(prefix))


def connected(ps: PeerScore, *peers: str, ip: str | None = None, now: float = 0.0) -> PeerScore:
    for peer in peers:
        ps.add_peer(peer, ip, now)
    return ps


# -- each component moves the score by the expected amount -----------------------------------


def test_p1_time_in_mesh_grows_with_quanta_is_capped_and_resets_on_prune() -> None:
    ps = connected(
        scorer(topic(time_in_mesh_weight=0.5, time_in_mesh_quantum_s=2.0, time_in_mesh_cap=10.0)),
        "a",
    )
    ps.graft("a", "t", 0.0)
    ps.refresh(6.0)
    assert ps.score("a") == pytest.approx(0.5 * 3)
    ps.refresh(100.0)
    assert ps.score("a") == pytest.approx(0.5 * 10)
    ps.prune("a", "t", 100.0)
    assert ps.score("a") == 0.0
    ps.graft("a", "t", 100.0)
    ps.refresh(104.0)
    assert ps.score("a") == pytest.approx(0.5 * 2)


def test_p2_first_deliveries_count_up_to_the_cap() -> None:
    ps = connected(
        scorer(topic(first_message_deliveries_weight=2.0, first_message_deliveries_cap=3.0)), "a"
    )
    ps.first_delivery("a", "t", 0.0)
    assert ps.score("a") == pytest.approx(2.0)
    for _ in range(4):
        ps.first_delivery("a", "t", 0.0)
    assert ps.score("a") == pytest.approx(2.0 * 3)
    assert ps.breakdown("a", 0.0)["p2"] == pytest.approx(6.0)


P3_TOPIC = topic(
    mesh_message_deliveries_weight=-1.0,
    mesh_message_deliveries_threshold=4.0,
    mesh_message_deliveries_cap=10.0,
    mesh_message_deliveries_activation_s=10.0,
)


def test_p3_inactive_before_activation_then_squares_the_deficit() -> None:
    ps = connected(scorer(P3_TOPIC, decay_interval_s=1000.0), "a")
    ps.graft("a", "t", 0.0)
    ps.first_delivery("a", "t", 1.0)
    ps.refresh(9.9)
    assert ps.score("a") == 0.0
    ps.refresh(10.0)
    assert ps.score("a") == pytest.approx(-((4 - 1) ** 2))
    ps.first_delivery("a", "t", 10.0)
    assert ps.score("a") == pytest.approx(-((4 - 2) ** 2))
    for _ in range(2):
        ps.first_delivery("a", "t", 10.0)
    assert ps.score("a") == 0.0


def test_p3_only_counts_for_mesh_peers_and_the_counter_is_capped() -> None:
    ps = connected(scorer(dataclasses.replace(P3_TOPIC, mesh_message_deliveries_cap=5.0)), "a")
    for _ in range(3):
        ps.first_delivery("a", "t", 0.0)  # outside the mesh: no P3 credit
    ps.graft("a", "t", 0.0)
    ps.refresh(10.0)
    assert ps.score("a") == pytest.approx(-16.0)
    for _ in range(20):
        ps.first_delivery("a", "t", 10.0)
    assert ps.score("a") == 0.0
    ps.refresh(11.0)  # the capped counter 5 decays by 0.9 to 4.5: still above 4
    assert ps.score("a") == 0.0
    ps.refresh(13.0)  # 5 * 0.9**3 = 3.645: deficit 0.355
    assert ps.score("a") == pytest.approx(-((4 - 5 * 0.9**3) ** 2))


def test_p3_window_credits_near_first_duplicates_only() -> None:
    params = dataclasses.replace(
        P3_TOPIC, mesh_message_deliveries_activation_s=0.0, mesh_message_deliveries_window_s=0.5
    )
    ps = connected(scorer(params, decay_interval_s=1000.0), "a", "b")
    ps.graft("a", "t", 0.0)
    assert ps.score("a") == pytest.approx(-16.0)
    ps.duplicate_delivery("a", "t", first_seen=1.0, now=1.4)
    assert ps.score("a") == pytest.approx(-9.0)
    ps.duplicate_delivery("a", "t", first_seen=1.0, now=1.6)  # too late: an echo
    assert ps.score("a") == pytest.approx(-9.0)
    ps.duplicate_delivery("b", "t", first_seen=1.0, now=1.1)  # not in the mesh
    assert ps.score("b") == 0.0


def test_p3b_on_prune_only_when_p3_was_active_and_in_deficit() -> None:
    params = dataclasses.replace(
        P3_TOPIC, mesh_message_deliveries_weight=0.0, mesh_failure_penalty_weight=-1.0
    )
    ps = connected(scorer(params, decay_interval_s=1000.0), "a")
    ps.graft("a", "t", 0.0)
    ps.prune("a", "t", 5.0)  # before activation: no failure recorded
    assert ps.score("a") == 0.0
    ps.graft("a", "t", 5.0)
    for _ in range(4):
        ps.first_delivery("a", "t", 6.0)
    ps.prune("a", "t", 20.0)  # active but at the threshold: no deficit
    assert ps.score("a") == 0.0
    ps.graft("a", "t", 20.0)
    ps.first_delivery("a", "t", 21.0)
    ps.prune("a", "t", 30.0)  # active, deficit 3
    assert ps.score("a") == pytest.approx(-9.0)
    assert ps.breakdown("a", 30.0)["p3b"] == pytest.approx(-9.0)
    ps.graft("a", "t", 30.0)
    ps.remove_peer("a", 45.0)  # a disconnect leaves the mesh like a prune: deficit 4
    assert ps.score("a") == pytest.approx(-9.0 - 16.0)


def test_p4_squares_the_invalid_message_counter() -> None:
    ps = connected(scorer(topic(invalid_message_deliveries_weight=-2.0)), "a")
    for _ in range(3):
        ps.invalid_message("a", "t")
    assert ps.score("a") == pytest.approx(-2.0 * 9)


def test_p5_application_score_is_weighted_and_may_be_negative() -> None:
    ps = connected(scorer(app_specific_weight=3.0), "a")
    ps.set_application_score("a", 2.5)
    assert ps.score("a") == pytest.approx(7.5)
    ps.set_application_score("a", -1.0)
    assert ps.score("a") == pytest.approx(-3.0)
    with pytest.raises(ValueError, match="finite"):
        ps.set_application_score("a", math.nan)


def test_p7_squares_the_penalty_above_its_threshold() -> None:
    ps = connected(scorer(behaviour_penalty_weight=-2.0, behaviour_penalty_threshold=1.0), "a")
    ps.add_penalty("a", 0.5)
    assert ps.score("a") == 0.0
    ps.add_penalty("a", 2.5)
    assert ps.score("a") == pytest.approx(-2.0 * (3.0 - 1.0) ** 2)
    with pytest.raises(ValueError, match=">= 0"):
        ps.add_penalty("a", -1.0)


# -- P6 ----------------------------------------------------------------------------------------


def test_p6_three_peers_on_one_ip_and_removal_lowers_the_others() -> None:
    ps = connected(scorer(ip_colocation_weight=-1.0), "a", "b", "c", ip="10.0.0.1")
    assert [ps.score(p) for p in "abc"] == [-4.0, -4.0, -4.0]
    ps.remove_peer("c", 1.0)
    assert [ps.score(p) for p in "abc"] == [-1.0, -1.0, 0.0]
    ps.remove_peer("b", 2.0)
    assert [ps.score(p) for p in "abc"] == [0.0, 0.0, 0.0]
    ps.add_peer("b", "10.0.0.1", 3.0)  # reconnecting counts again
    assert [ps.score(p) for p in "ab"] == [-1.0, -1.0]


def test_p6_exempt_and_unknown_addresses_never_count() -> None:
    ps = connected(scorer(ip_colocation_weight=-1.0, exempt="127."), "a", "b", "c", ip="127.0.0.1")
    connected(ps, "d", "e", ip=None)
    assert [ps.score(p) for p in "abcde"] == [0.0] * 5
    assert ps.breakdown("a", 0.0)["p6"] == 0.0


def test_p6_ip_change_moves_the_count() -> None:
    ps = connected(scorer(ip_colocation_weight=-1.0), "a", "b", "c", ip="10.0.0.1")
    connected(ps, "x", ip="10.0.0.2")
    ps.add_peer("c", "10.0.0.2", 1.0)
    assert [ps.score(p) for p in "abcx"] == [-1.0, -1.0, -1.0, -1.0]
    ps.add_peer("c", "127.0.0.1", 2.0)  # not exempt here: a third address
    assert [ps.score(p) for p in "abcx"] == [-1.0, -1.0, 0.0, 0.0]
    assert ps.breakdown("a", 2.0)["p6"] == -1.0


def test_p6_threshold_above_one_and_composes_with_other_components() -> None:
    ps = connected(
        scorer(ip_colocation_weight=-2.0, ip_colocation_threshold=2, app_specific_weight=1.0),
        *"abcde",
        ip="10.0.0.1",
    )
    ps.set_application_score("a", 5.0)
    assert ps.score("a") == pytest.approx(5.0 - 2.0 * 9)
    assert ps.score("b") == pytest.approx(-18.0)
    ps.remove_peer("e", 1.0)
    assert ps.score("a") == pytest.approx(5.0 - 2.0 * 4)


# -- topics ------------------------------------------------------------------------------------


def test_topic_weight_scales_the_topic() -> None:
    ps = connected(scorer(topic(topic_weight=0.5, first_message_deliveries_weight=1.0)), "a")
    for _ in range(4):
        ps.first_delivery("a", "t", 0.0)
    assert ps.score("a") == pytest.approx(2.0)


def test_topic_cap_applies_to_the_sum_of_topics_not_to_p5() -> None:
    p2 = topic(first_message_deliveries_weight=1.0)
    ps = connected(scorer(p2, topic_score_cap=5.0, app_specific_weight=1.0), "a")
    for t in ("x", "y"):
        for _ in range(4):
            ps.first_delivery("a", t, 0.0)
    assert ps.score("a") == pytest.approx(5.0)  # 8 capped
    ps.set_application_score("a", 3.0)
    assert ps.score("a") == pytest.approx(8.0)
    breakdown = ps.breakdown("a", 0.0)
    assert (breakdown["p2"], breakdown["topics"]) == pytest.approx((8.0, 5.0))

    uncapped = connected(scorer(p2, topic_score_cap=0.0), "a")
    for t in ("x", "y"):
        for _ in range(4):
            uncapped.first_delivery("a", t, 0.0)
    assert uncapped.score("a") == pytest.approx(8.0)


def test_topic_cap_is_taken_after_negative_topics_are_summed() -> None:
    params = ScoreParams(
        topics={
            "good": topic(first_message_deliveries_weight=1.0),
            "bad": topic(invalid_message_deliveries_weight=-1.0),
        },
        default_topic=None,
        **{**SILENT_GLOBAL, "topic_score_cap": 5.0},
    )
    ps = connected(PeerScore(params), "a")
    for _ in range(8):
        ps.first_delivery("a", "good", 0.0)
    ps.invalid_message("a", "bad")
    ps.invalid_message("a", "bad")
    assert ps.score("a") == pytest.approx(min(8.0 - 4.0, 5.0))
    ps.invalid_message("a", "bad")
    assert ps.score("a") == pytest.approx(8.0 - 9.0)


def test_unscored_topics_contribute_nothing() -> None:
    params = ScoreParams(
        topics={"scored": topic(invalid_message_deliveries_weight=-1.0, time_in_mesh_weight=1.0)},
        default_topic=None,
        **SILENT_GLOBAL,
    )
    assert params.for_topic("other") is None
    ps = connected(PeerScore(params), "a")
    ps.graft("a", "other", 0.0)
    ps.first_delivery("a", "other", 0.0)
    ps.invalid_message("a", "other")
    ps.refresh(50.0)
    assert ps.score("a") == 0.0
    assert ps.breakdown("a", 50.0)["p4"] == 0.0
    ps.invalid_message("a", "scored")
    assert ps.score("a") == -1.0


def test_per_topic_override_beats_the_default() -> None:
    params = ScoreParams(
        topics={"t": topic(invalid_message_deliveries_weight=-5.0)},
        default_topic=topic(invalid_message_deliveries_weight=-1.0),
        **SILENT_GLOBAL,
    )
    ps = connected(PeerScore(params), "a")
    ps.invalid_message("a", "t")
    ps.invalid_message("a", "u")
    assert ps.score("a") == pytest.approx(-6.0)


# -- decay ---------------------------------------------------------------------------------------


def decaying_p2(**overrides: Any) -> PeerScore:
    params = topic(
        first_message_deliveries_weight=1.0,
        first_message_deliveries_decay=0.5,
        first_message_deliveries_cap=100.0,
    )
    ps = connected(scorer(params, **overrides), "a")
    for _ in range(10):
        ps.first_delivery("a", "t", 0.0)
    return ps


def test_decay_once_per_interval_keeping_the_remainder() -> None:
    ps = decaying_p2()
    ps.refresh(0.0)
    assert ps.score("a") == 10.0
    ps.refresh(1.0)
    assert ps.score("a") == 5.0
    ps.refresh(1.5)
    assert ps.score("a") == 5.0
    ps.refresh(2.2)
    assert ps.score("a") == 2.5
    ps.refresh(3.0)  # 1.0 -> 3.0 spans two intervals even though refresh came at 2.2
    assert ps.score("a") == 1.25


def test_late_refresh_catches_up_every_missed_interval() -> None:
    late = decaying_p2()
    late.refresh(3.7)
    stepwise = decaying_p2()
    for now in (1.0, 2.0, 3.0):
        stepwise.refresh(now)
    assert late.score("a") == stepwise.score("a") == 10 * 0.5**3


def test_decay_to_zero_snaps_small_counters() -> None:
    ps = decaying_p2(decay_to_zero=0.2)
    ps.refresh(5.0)  # 10 * 0.5**5 = 0.3125
    assert ps.score("a") == pytest.approx(0.3125)
    ps.refresh(6.0)  # 0.156 < 0.2
    assert ps.score("a") == 0.0


def test_p3b_p4_and_p7_decay_too() -> None:
    params = topic(
        invalid_message_deliveries_weight=-1.0,
        invalid_message_deliveries_decay=0.5,
        mesh_failure_penalty_weight=-1.0,
        mesh_failure_penalty_decay=0.5,
        mesh_message_deliveries_threshold=2.0,
        mesh_message_deliveries_activation_s=0.0,
    )
    ps = connected(scorer(params, behaviour_penalty_weight=-1.0, behaviour_penalty_decay=0.5), "a")
    ps.invalid_message("a", "t")
    ps.invalid_message("a", "t")
    ps.graft("a", "t", 0.0)
    ps.prune("a", "t", 0.0)
    ps.add_penalty("a", 4.0)
    before = ps.breakdown("a", 0.0)
    assert (before["p3b"], before["p4"], before["p7"]) == (-4.0, -4.0, -16.0)
    ps.refresh(1.0)
    after = ps.breakdown("a", 1.0)
    assert (after["p3b"], after["p4"], after["p7"]) == (-2.0, -1.0, -4.0)
    assert ps.score("a") == -7.0


def test_p5_does_not_decay() -> None:
    ps = connected(scorer(app_specific_weight=1.0), "a")
    ps.set_application_score("a", 4.0)
    ps.refresh(100.0)
    assert ps.score("a") == 4.0


# -- records -------------------------------------------------------------------------------------


def test_retained_record_keeps_a_penalty_until_retain_score_expires() -> None:
    ps = connected(scorer(topic(invalid_message_deliveries_weight=-1.0), retain_score_s=60.0), "a")
    ps.invalid_message("a", "t")
    ps.invalid_message("a", "t")
    ps.remove_peer("a", 0.0)
    assert ("a" in ps, ps.score("a")) == (True, -4.0)
    ps.add_peer("a", "10.0.0.1", 59.0)  # decay 0.99 per second over 59 s
    assert ps.score("a") == pytest.approx(-4.0)
    ps.refresh(59.0)
    assert ps.score("a") == pytest.approx(-((2 * 0.99**59) ** 2))
    ps.remove_peer("a", 100.0)
    ps.refresh(159.0)
    assert "a" in ps
    ps.refresh(160.0)
    assert ("a" in ps, len(ps), ps.score("a")) == (False, 0, 0.0)


def test_reconnecting_after_retain_score_starts_afresh_even_without_refresh() -> None:
    ps = connected(scorer(topic(invalid_message_deliveries_weight=-1.0), retain_score_s=10.0), "a")
    ps.invalid_message("a", "t")
    ps.remove_peer("a", 0.0)
    ps.add_peer("a", None, 10.0)
    assert (ps.score("a"), len(ps), ps.evicted) == (0.0, 1, 0)


def test_unknown_peers_score_zero_and_their_events_are_ignored() -> None:
    ps = scorer(topic(invalid_message_deliveries_weight=-1.0), behaviour_penalty_weight=-1.0)
    ps.invalid_message("ghost", "t")
    ps.add_penalty("ghost", 5.0)
    ps.graft("ghost", "t", 0.0)
    ps.remove_peer("ghost", 0.0)
    assert (ps.score("ghost"), len(ps), "ghost" in ps) == (0.0, 0, False)
    assert ps.breakdown("ghost", 0.0)["score"] == 0.0


def kept(ps: PeerScore) -> list[str]:
    return [p for p in "abcdef" if p in ps]


def test_max_peers_evicts_longest_disconnected_then_least_recently_active() -> None:
    ps = connected(scorer(max_peers=3), "a", "b", "c")
    ps.remove_peer("b", 1.0)
    ps.remove_peer("a", 2.0)
    ps.add_peer("d", None, 3.0)
    assert (kept(ps), ps.evicted) == (["a", "c", "d"], 1)
    ps.add_peer("e", None, 4.0)
    assert (kept(ps), ps.evicted) == (["c", "d", "e"], 2)
    ps.first_delivery("c", "t", 5.0)  # c is now the most recently active
    ps.add_peer("f", None, 6.0)
    assert (kept(ps), ps.evicted, len(ps)) == (["c", "e", "f"], 3, 3)


def test_evicting_a_connected_peer_releases_its_ip() -> None:
    ps = connected(scorer(ip_colocation_weight=-1.0, max_peers=2), "a", "b", ip="10.0.0.1")
    assert ps.score("b") == -1.0
    ps.add_peer("c", "10.0.0.9", 1.0)
    assert ("a" in ps, ps.score("b"), ps.evicted) == (False, 0.0, 1)


def test_breakdown_adds_up_to_the_cached_score() -> None:
    params = TopicScoreParams(mesh_message_deliveries_activation_s=5.0)
    ps = PeerScore(ScoreParams(default_topic=params, topic_score_cap=0.0))
    connected(ps, "a", "b", ip="10.0.0.1")
    ps.graft("a", "t", 0.0)
    ps.first_delivery("a", "t", 1.0)
    ps.invalid_message("a", "u")
    ps.add_penalty("a", 0.5)
    ps.set_application_score("a", 2.0)
    ps.refresh(30.0)
    parts = ps.breakdown("a", 30.0)
    components = ("p1", "p2", "p3", "p3b", "p4", "p5", "p6", "p7")
    assert all(parts[k] != 0.0 for k in components if k != "p3b")
    assert sum(parts[k] for k in components) == pytest.approx(parts["score"])
    assert ps.score("a") == pytest.approx(parts["score"])


# -- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("gossip", 0.0),
        ("publish", -5.0),
        ("graylist", -50.0),
        ("accept_px", -1.0),
        ("opportunistic_graft", -0.1),
        ("gossip", math.nan),
    ],
)
def test_thresholds_each_invariant(name: str, value: float) -> None:
    ScoreThresholds().validate()
    with pytest.raises(ConfigError, match=f"ScoreThresholds.{name} "):
        dataclasses.replace(ScoreThresholds(), **{name: value}).validate()


def test_thresholds_publish_may_equal_gossip() -> None:
    ScoreThresholds(gossip=-10.0, publish=-10.0, graylist=-11.0).validate()


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("topic_weight", -1.0),
        ("time_in_mesh_weight", -0.1),
        ("time_in_mesh_quantum_s", 0.0),
        ("time_in_mesh_cap", 0.0),
        ("first_message_deliveries_weight", -1.0),
        ("first_message_deliveries_decay", 1.0),
        ("first_message_deliveries_cap", -1.0),
        ("mesh_message_deliveries_weight", 0.5),
        ("mesh_message_deliveries_decay", 0.0),
        ("mesh_message_deliveries_threshold", -1.0),
        ("mesh_message_deliveries_cap", 0.5),
        ("mesh_message_deliveries_activation_s", -1.0),
        ("mesh_message_deliveries_window_s", -0.1),
        ("mesh_failure_penalty_weight", 1.0),
        ("mesh_failure_penalty_decay", 1.5),
        ("invalid_message_deliveries_weight", 1.0),
        ("invalid_message_deliveries_decay", -0.5),
        ("time_in_mesh_cap", math.inf),
        ("topic_weight", math.nan),
        ("topic_weight", True),
    ],
)
def test_topic_params_each_rule(name: str, value: float) -> None:
    TopicScoreParams().validate()
    bad = dataclasses.replace(TopicScoreParams(), **{name: value})
    with pytest.raises(ConfigError, match=f"TopicScoreParams.{name} "):
        bad.validate()
    with pytest.raises(ConfigError, match=rf"topics\['t'\].{name} "):
        PeerScore(ScoreParams(topics={"t": bad}))
    with pytest.raises(ConfigError, match=f"default_topic.{name} "):
        PeerScore(ScoreParams(default_topic=bad))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("topic_score_cap", -1.0),
        ("app_specific_weight", -1.0),
        ("ip_colocation_weight", 1.0),
        ("ip_colocation_threshold", 0),
        ("ip_colocation_threshold", 1.5),
        ("behaviour_penalty_weight", 1.0),
        ("behaviour_penalty_threshold", -1.0),
        ("behaviour_penalty_decay", 1.0),
        ("decay_interval_s", 0.0),
        ("decay_to_zero", -0.1),
        ("decay_to_zero", 1.0),
        ("retain_score_s", -1.0),
        ("max_peers", 0),
    ],
)
def test_score_params_each_rule(name: str, value: float) -> None:
    ScoreParams().validate()
    change: dict[str, Any] = {name: value}
    with pytest.raises(ConfigError, match=f"ScoreParams.{name} "):
        PeerScore(dataclasses.replace(ScoreParams(), **change))


def test_score_params_reject_wrongly_typed_topics() -> None:
    with pytest.raises(ConfigError, match="TopicScoreParams"):
        ScoreParams(topics={"t": 1.0}).validate()  # type: ignore[dict-item]


# -- property: arbitrary event sequences -----------------------------------------------------------

PEERS = ["p0", "p1", "p2", "p3", "p4", "p5"]
IPS = [None, "10.0.0.1", "10.0.0.2", "127.0.0.1"]
TOPICS = ["a", "b", "unscored"]
operations = st.lists(
    st.tuples(
        st.sampled_from(
            [
                "add",
                "remove",
                "graft",
                "prune",
                "first",
                "duplicate",
                "invalid",
                "app",
                "penalty",
                "refresh",
            ]
        ),
        st.sampled_from(PEERS),
        st.sampled_from(IPS),
        st.sampled_from(TOPICS),
        st.floats(min_value=0.0, max_value=3.0),
        st.floats(min_value=-1e6, max_value=1e6),
    ),
    max_size=80,
)


@settings(max_examples=200, deadline=None)
@given(operations)
def test_any_event_sequence_keeps_scores_finite_and_bounded(
    ops: list[tuple[str, str, str | None, str, float, float]],
) -> None:
    params = ScoreParams(
        topics={
            "a": TopicScoreParams(mesh_message_deliveries_activation_s=1.0),
            "b": TopicScoreParams(topic_weight=0.5, mesh_message_deliveries_window_s=1.0),
        },
        default_topic=None,
        max_peers=4,
        retain_score_s=2.0,
        ip_colocation_weight=-1.0,
    )
    ps = PeerScore(params, is_exempt=lambda ip: ip.startswith("127."))
    now = 0.0
    connected_ip: dict[str, str | None] = {}
    for op, peer, ip, tpc, dt, value in ops:
        now += dt
        if op == "add":
            ps.add_peer(peer, ip, now)
            connected_ip[peer] = ip
        elif op == "remove":
            ps.remove_peer(peer, now)
            connected_ip.pop(peer, None)
        elif op == "graft":
            ps.graft(peer, tpc, now)
        elif op == "prune":
            ps.prune(peer, tpc, now)
        elif op == "first":
            ps.first_delivery(peer, tpc, now)
        elif op == "duplicate":
            ps.duplicate_delivery(peer, tpc, now - dt, now)
        elif op == "invalid":
            ps.invalid_message(peer, tpc)
        elif op == "app":
            ps.set_application_score(peer, value)
        elif op == "penalty":
            ps.add_penalty(peer, abs(value) / 1e3)
        else:
            ps.refresh(now)
            for p in PEERS:
                assert ps.score(p) == pytest.approx(ps.breakdown(p, now)["score"])
        assert len(ps) <= 4
        connected_ip = {p: i for p, i in connected_ip.items() if p in ps}
        for p in PEERS:
            assert math.isfinite(ps.score(p))
            if p in connected_ip:
                ip_of = connected_ip[p]
                on_ip = sum(1 for i in connected_ip.values() if i == ip_of)
                counted = ip_of is not None and not ip_of.startswith("127.")
                expected = -float((on_ip - 1) ** 2) if counted and on_ip > 1 else 0.0
                assert ps.breakdown(p, now)["p6"] == expected
