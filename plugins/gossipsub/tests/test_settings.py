"""Tests of the GossipSub settings (``korium_gossipsub.config.GossipConfig``).

Defaults are the GossipSub v1.1 spec's numbers and korium's limits; every setting out of range
is a :class:`ConfigError` that names it, raised when the node is built (before it binds).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import re
from typing import Any

import korium_gossipsub
import pytest
from korium_gossipsub.config import MAX_MESSAGE_SIZE, MAX_TOPIC_LENGTH, GossipConfig
from korium_gossipsub.score import ScoreParams, ScoreThresholds

from korium import Node, NodeConfig, PluginInfo, hookimpl
from korium.errors import ConfigError
from korium.netaddr import DEFAULT_EXEMPT_NETWORKS

FIELDS = {f.name: f.type for f in dataclasses.fields(GossipConfig) if f.init}
INT_SETTINGS = sorted(name for name, kind in FIELDS.items() if kind == "int")
FLOAT_SETTINGS = sorted(name for name, kind in FIELDS.items() if kind == "float")


def test_defaults_are_valid_and_the_spec_numbers() -> None:
    config = GossipConfig.from_settings({})
    assert (config.d, config.d_lo, config.d_hi) == (6, 5, 12)
    assert (config.d_out, config.d_score, config.d_lazy) == (2, 4, 6)
    assert config.heartbeat_s == 1.0
    assert config.fanout_ttl_s == 60.0
    assert (config.history_length, config.history_gossip) == (5, 3)
    assert config.seen_ttl_s == 120.0
    assert config.prune_backoff_s == 60.0
    assert config.unsubscribe_backoff_s == 10.0
    assert config.flood_publish is True
    assert config.max_message_size == MAX_MESSAGE_SIZE == 64 * 1024
    assert MAX_TOPIC_LENGTH == 256
    assert config.max_topics == 10_000
    assert config.max_peers_per_topic == 1_000
    assert config.publish_rate == 100.0
    assert config.receive_rate == 50.0
    assert config.message_max_age_s + config.clock_skew_s <= config.seen_ttl_s
    assert config.thresholds == ScoreThresholds()
    assert config.score == ScoreParams()
    assert config.exempt_networks == DEFAULT_EXEMPT_NETWORKS


def test_equal_settings_give_equal_configs() -> None:
    assert GossipConfig.from_settings({"d": 7}) == GossipConfig(d=7)


def test_settings_classification_covers_every_number() -> None:
    """The parametrised type checks below reach every numeric setting."""
    assert len(INT_SETTINGS) == 27
    assert len(FLOAT_SETTINGS) == 16
    assert {"d", "d_out", "max_frame_bytes", "idontwant_threshold"} <= set(INT_SETTINGS)
    assert {"heartbeat_s", "gossip_factor", "flood_penalty"} <= set(FLOAT_SETTINGS)


# -- ordering invariants ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"d_lo": 7}, "d_lo"),  # d_lo > d
        ({"d": 13}, "d_hi"),  # d > d_hi
        ({"d": 4}, "d_lo"),  # d < d_lo
        ({"d_hi": 5}, "d_hi"),  # d_hi < d
        ({"d_lo": 2, "d_out": 2}, "d_out"),  # d_out >= d_lo
        ({"d_out": 4}, "d_out"),  # d_out > d / 2 (and still < d_lo)
        ({"d": 7, "d_hi": 12, "d_out": 4, "d_lo": 5}, "d_out"),  # 4 > 3.5
        ({"d_score": 7}, "d_score"),  # d_score > d
        ({"history_gossip": 6}, "history_gossip"),
        ({"history_length": 2}, "history_length"),
        ({"message_max_age_s": 91.0}, "message_max_age_s"),
        ({"clock_skew_s": 31.0}, "clock_skew_s"),
        ({"seen_ttl_s": 119.0}, "seen_ttl_s"),
        ({"max_message_size": MAX_MESSAGE_SIZE + 1}, "max_message_size"),
        ({"max_frame_bytes": MAX_MESSAGE_SIZE + 1023}, "max_frame_bytes"),
        ({"gossip_factor": 1.01}, "gossip_factor"),
    ],
)
def test_ordering_invariant_violated_names_the_setting(
    settings: dict[str, Any], named: str
) -> None:
    with pytest.raises(ConfigError, match=rf"\b{named}\b") as caught:
        GossipConfig.from_settings(settings)
    assert str(caught.value).startswith("gossipsub")


@pytest.mark.parametrize(
    "settings",
    [
        {"d_lo": 6},  # d_lo == d
        {"d_hi": 6},  # d == d_hi
        {"d": 5, "d_lo": 5, "d_hi": 5, "d_out": 2},
        {"d_out": 3, "d_lo": 4},  # d_out == d / 2, < d_lo
        {"d_out": 0},
        {"d_score": 6},  # d_score == d
        {"history_gossip": 5},  # == history_length
        {"message_max_age_s": 90.0, "clock_skew_s": 30.0, "seen_ttl_s": 120.0},  # sum == ttl
        {"max_message_size": MAX_MESSAGE_SIZE, "max_frame_bytes": MAX_MESSAGE_SIZE + 1024},
        {"max_message_size": 1000, "max_frame_bytes": 2024},
        {"gossip_factor": 1.0},
        {"prune_backoff_s": 0, "clock_skew_s": 0, "flood_penalty": 0.0},
        {"heartbeat_s": 1},  # an int is a number of seconds too
    ],
)
def test_settings_at_the_boundary_are_accepted(settings: dict[str, Any]) -> None:
    config = GossipConfig.from_settings(settings)
    for name, value in settings.items():
        assert getattr(config, name) == value


# -- types ------------------------------------------------------------------------------------


ZERO_ALLOWED = {
    "d_out",
    "d_score",
    "d_lazy",
    "prune_peers",
    "opportunistic_graft_peers",
    "idontwant_threshold",
}
BAD_INTS = [
    (name, value)
    for name in INT_SETTINGS
    for value in (True, False, "6", 6.0, math.nan, None, -1, 0)
    if not (name in ZERO_ALLOWED and type(value) is int and value == 0)
]


def test_zero_is_allowed_exactly_for_the_counts_that_may_be_empty() -> None:
    for name in ZERO_ALLOWED:
        assert getattr(GossipConfig.from_settings({name: 0}), name) == 0
    assert len(BAD_INTS) == 27 * 8 - len(ZERO_ALLOWED)


@pytest.mark.parametrize(("name", "value"), BAD_INTS)
def test_integer_setting_of_wrong_type_or_range_names_it(name: str, value: object) -> None:
    with pytest.raises(ConfigError, match=rf"gossipsub: {name} must") as caught:
        GossipConfig.from_settings({name: value})
    assert repr(value) in str(caught.value)


@pytest.mark.parametrize("value", [True, False, "1.0", None, math.nan, -1.0])
@pytest.mark.parametrize("name", FLOAT_SETTINGS)
def test_number_setting_of_wrong_type_or_range_names_it(name: str, value: object) -> None:
    with pytest.raises(ConfigError, match=rf"gossipsub: {name} must") as caught:
        GossipConfig.from_settings({name: value})
    assert repr(value) in str(caught.value)


@pytest.mark.parametrize("value", [True, "1024", math.nan, 1.5])
def test_idontwant_threshold_is_type_checked(value: object) -> None:
    with pytest.raises(ConfigError, match="idontwant_threshold"):
        GossipConfig(idontwant_threshold=value)  # type: ignore[arg-type]


def test_idontwant_threshold_negative_is_refused_zero_allowed() -> None:
    with pytest.raises(ConfigError, match="idontwant_threshold"):
        GossipConfig(idontwant_threshold=-1)
    assert GossipConfig(idontwant_threshold=0).idontwant_threshold == 0


@pytest.mark.parametrize("name", ["receive_rate", "publish_rate"])
def test_infinite_rate_is_refused(name: str) -> None:
    with pytest.raises(ConfigError, match=name):
        GossipConfig.from_settings({name: math.inf})


# -- from_settings ----------------------------------------------------------------------------


def test_unknown_setting_is_refused_listing_the_known_ones() -> None:
    with pytest.raises(ConfigError) as caught:
        GossipConfig.from_settings({"d": 6, "d_low": 4, "heartbeat": 1.0})
    text = str(caught.value)
    assert "unknown setting 'd_low'" in text
    listed = text.split("known settings: ", 1)[1].split(", ")
    assert listed == sorted(FIELDS)
    assert "exempt" not in listed  # derived, not a setting
    assert "heartbeat_s" in listed


def test_from_settings_applies_every_given_setting() -> None:
    config = GossipConfig.from_settings(
        {"d": 8, "d_lo": 6, "d_hi": 16, "flood_publish": False, "receive_rate": 10}
    )
    assert (config.d, config.d_lo, config.d_hi) == (8, 6, 16)
    assert config.flood_publish is False
    assert config.receive_rate == 10


def test_threshold_invariants_reach_through() -> None:
    with pytest.raises(ConfigError, match=r"ScoreThresholds\.gossip") as caught:
        GossipConfig.from_settings({"thresholds": ScoreThresholds(gossip=1)})
    assert "< 0" in str(caught.value)
    with pytest.raises(ConfigError, match=r"ScoreThresholds\.graylist"):
        GossipConfig.from_settings({"thresholds": ScoreThresholds(graylist=-40.0)})
    with pytest.raises(ConfigError, match=r"ScoreThresholds\.publish"):
        GossipConfig.from_settings({"thresholds": ScoreThresholds(gossip=-10, publish=-5)})
    GossipConfig.from_settings({"thresholds": ScoreThresholds(gossip=-10, publish=-10)})


def test_score_param_invariants_reach_through() -> None:
    with pytest.raises(ConfigError, match=r"ScoreParams\.decay_interval_s"):
        GossipConfig.from_settings({"score": ScoreParams(decay_interval_s=0.0)})


@pytest.mark.parametrize(
    ("name", "value"),
    [("thresholds", {"gossip": -10.0}), ("score", {"topic_score_cap": 1.0}), ("score", None)],
)
def test_score_settings_must_be_their_classes(name: str, value: object) -> None:
    with pytest.raises(ConfigError, match=rf"gossipsub: {name} must be"):
        GossipConfig.from_settings({name: value})


# -- exempt networks --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", [["10.0.0.0/33"], ["not-a-network"], ["127.0.0.1/8"], ["10.0.0.0/8", "x"]]
)
def test_bad_exempt_network_raises_config_error(value: list[str]) -> None:
    bad = value[-1]
    with pytest.raises(ConfigError, match=re.escape(repr(bad))):
        GossipConfig(exempt_networks=tuple(value))


def test_exempt_networks_as_one_string_is_refused() -> None:
    with pytest.raises(ConfigError, match="exempt_networks"):
        GossipConfig(exempt_networks="10.0.0.0/8")  # type: ignore[arg-type]


def test_exempt_networks_from_a_list_of_strings() -> None:
    config = GossipConfig.from_settings({"exempt_networks": ["10.1.0.0/16", "2001:db8::/32"]})
    assert config.exempt_networks == ("10.1.0.0/16", "2001:db8::/32")

    assert ipaddress.ip_address("10.1.200.3") in config.exempt
    assert ipaddress.ip_address("10.2.0.1") not in config.exempt
    assert ipaddress.ip_address("2001:db8::9") in config.exempt
    assert ipaddress.ip_address("127.0.0.1") not in config.exempt
    assert ipaddress.ip_address("127.0.0.1") not in GossipConfig(exempt_networks=()).exempt
    assert ipaddress.ip_address("127.0.0.1") in GossipConfig().exempt


@pytest.mark.parametrize("value", [5, None, b"10.0.0.0/8", [5]])
def test_exempt_networks_of_the_wrong_type_raise_config_error(value: object) -> None:
    with pytest.raises(ConfigError):
        GossipConfig(exempt_networks=value)  # type: ignore[arg-type]


# -- through a real node build ----------------------------------------------------------------


class Spy:
    """A plugin that records whether the node got past configuration and bound its socket."""

    korium_plugin = PluginInfo(name="spy")

    def __init__(self) -> None:
        self.calls: list[str] = []

    @hookimpl
    def korium_configure(self, config: NodeConfig) -> None:
        self.calls.append("configure")

    @hookimpl
    def korium_node_setup(self, node: Node) -> None:
        self.calls.append("setup")

    @hookimpl
    def korium_certificate_extensions(self, node: Node) -> None:
        self.calls.append("bind")


@pytest.mark.parametrize(
    "settings",
    [{"d_lo": 9}, {"d_low": 4}, {"thresholds": ScoreThresholds(gossip=1)}, {"heartbeat_s": "1"}],
)
async def test_bad_settings_fail_the_node_build_before_binding(settings: dict[str, Any]) -> None:
    spy = Spy()
    builder = (
        Node.builder("127.0.0.1:0")
        .difficulty(0)
        .plugins([korium_gossipsub.plugin, spy])
        .plugin_settings("gossipsub", **settings)
    )
    with pytest.raises(ConfigError, match="gossipsub"):
        await builder.build()
    assert "setup" not in spy.calls
    assert "bind" not in spy.calls


async def test_good_settings_reach_the_service_of_a_real_node() -> None:
    """The control for the test above: the spy does see setup and bind on a good build."""
    spy = Spy()
    node = await (
        Node.builder("127.0.0.1:0")
        .difficulty(0)
        .plugins([korium_gossipsub.plugin, spy])
        .plugin_settings("gossipsub", d_lo=4, d=5, history_gossip=2)
        .build()
    )
    async with node:
        config = korium_gossipsub.service(node).config
        assert (config.d, config.d_lo, config.history_gossip) == (5, 4, 2)
        assert config.d_hi == 12
        assert spy.calls == ["configure", "setup", "bind"]
