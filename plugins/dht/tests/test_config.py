"""Tests of the DHT settings (``korium_dht.config.DhtConfig``): defaults, ranges, errors."""

from __future__ import annotations

import dataclasses
import ipaddress
import math
from typing import Any

import pytest
from korium_dht import plugin
from korium_dht.config import MAX_VALUE_SIZE, PER_PEER_ENTRY_LIMIT, DhtConfig

from korium import Node, NodeIdentity
from korium.errors import ConfigError
from korium.testing import SimNetwork, on_virtual_time

INT_SETTINGS = [
    "replacement_cache",
    "failures_before_eviction",
    "max_per_prefix",
    "insertions_per_peer",
    "insertions_per_ip",
    "rate_limiter_entries",
    "churn_window",
    "max_contacts_per_response",
    "tiering_prefixes",
    "max_value_size",
    "per_peer_bytes",
    "per_peer_entries",
    "stores_per_peer",
    "max_entries",
    "max_total_bytes",
    "replication",
]
SECONDS_SETTINGS = [
    "insertion_window_s",
    "refresh_interval_s",
    "query_timeout_s",
    "lookup_timeout_s",
    "tiering_recompute_s",
    "store_window_s",
    "ttl_s",
    "republish_s",
]


def test_defaults_are_the_spec_constants() -> None:
    config = DhtConfig.from_settings({})
    assert (config.k, config.k_min, config.k_max) == (20, 10, 30)
    assert (config.alpha, config.alpha_min, config.alpha_max) == (3, 2, 5)
    assert config.churn_window == 100
    assert config.max_value_size == MAX_VALUE_SIZE == 1024 * 1024
    assert config.per_peer_bytes == 1024 * 1024
    assert config.per_peer_entries == PER_PEER_ENTRY_LIMIT == 100
    assert config.ttl_s == 24 * 3600
    assert config.republish_s == 3600
    assert config.max_per_prefix == 2
    assert config.addresses is None
    assert config.server is True
    assert config.tiering is True
    assert config == DhtConfig()


def test_from_settings_sets_fields() -> None:
    config = DhtConfig.from_settings({"k": 12, "k_min": 12, "ttl_s": 100.0, "republish_s": 50})
    assert (config.k, config.k_min, config.ttl_s, config.republish_s) == (12, 12, 100.0, 50)


def test_an_unknown_setting_is_named() -> None:
    with pytest.raises(ConfigError, match="unknown setting 'kk'") as info:
        DhtConfig.from_settings({"k": 20, "kk": 3})
    assert "known settings:" in str(info.value)
    assert "replacement_cache" in str(info.value)


def test_the_private_field_is_not_a_setting() -> None:
    with pytest.raises(ConfigError, match="unknown setting '_exempt'"):
        DhtConfig.from_settings({"_exempt": ()})


def test_the_first_unknown_setting_alphabetically_is_named() -> None:
    with pytest.raises(ConfigError, match="unknown setting 'aa'"):
        DhtConfig.from_settings({"zz": 1, "aa": 2})


@pytest.mark.parametrize("name", INT_SETTINGS)
@pytest.mark.parametrize("value", [0, -1, True, 2.0, "3", None])
def test_integer_settings_out_of_range(name: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=name):
        DhtConfig.from_settings({name: value})


@pytest.mark.parametrize("name", INT_SETTINGS)
def test_integer_settings_accept_one_where_the_rest_allows(name: str) -> None:
    settings: dict[str, Any] = {name: 1}
    if name == "max_contacts_per_response":  # must be at least k_max
        settings.update(k=1, k_min=1, k_max=1)
    config = DhtConfig.from_settings(settings)
    assert getattr(config, name) == 1


@pytest.mark.parametrize("name", SECONDS_SETTINGS)
@pytest.mark.parametrize("value", [0, 0.0, -1.0, math.nan, "10", None])
def test_seconds_settings_out_of_range(name: str, value: Any) -> None:
    with pytest.raises(ConfigError, match=name):
        DhtConfig.from_settings({name: value})


def test_seconds_settings_refuse_a_bool() -> None:
    with pytest.raises(ConfigError, match="lookup_timeout_s"):
        DhtConfig.from_settings({"lookup_timeout_s": True})


@pytest.mark.parametrize("name", SECONDS_SETTINGS)
def test_seconds_settings_accept_fractions(name: str) -> None:
    settings: dict[str, Any] = {name: 0.5}
    if name == "ttl_s":
        settings["republish_s"] = 0.25
    config = DhtConfig.from_settings(settings)
    assert getattr(config, name) == 0.5


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"k": 0}, "k "),
        ({"k_min": 0}, "k_min"),
        ({"k": 9}, "k_min <= k <= k_max"),
        ({"k": 31}, "k_min <= k <= k_max"),
        ({"k_min": 21}, "k_min <= k <= k_max"),
        ({"k_max": 19}, "k_min <= k <= k_max"),
        ({"k": 2.5}, "k "),
        ({"k": True}, "k "),
        ({"k_max": "30"}, "k_max"),
        ({"alpha": 0}, "alpha "),
        ({"alpha": 1}, "alpha_min <= alpha <= alpha_max"),
        ({"alpha": 6}, "alpha_min <= alpha <= alpha_max"),
        ({"alpha_min": 4}, "alpha_min <= alpha <= alpha_max"),
        ({"alpha_max": 2}, "alpha_min <= alpha <= alpha_max"),
        ({"alpha_min": 0, "alpha": 1}, "alpha_min"),
    ],
)
def test_ordering_and_ranges_of_k_and_alpha(settings: dict[str, Any], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        DhtConfig.from_settings(settings)


def test_k_and_alpha_at_their_bounds() -> None:
    config = DhtConfig.from_settings({"k": 10, "alpha": 5})
    assert (config.k, config.alpha) == (10, 5)
    config = DhtConfig.from_settings({"k": 1, "k_min": 1, "k_max": 1, "alpha_min": 1, "alpha": 1})
    assert (config.k_min, config.k, config.k_max) == (1, 1, 1)


def test_max_contacts_per_response_must_cover_k_max() -> None:
    with pytest.raises(ConfigError, match="max_contacts_per_response"):
        DhtConfig.from_settings({"max_contacts_per_response": 29})
    with pytest.raises(ConfigError, match="max_contacts_per_response"):
        DhtConfig.from_settings({"k_max": 40})
    config = DhtConfig.from_settings({"k_max": 40, "max_contacts_per_response": 40})
    assert config.k_max == 40


def test_max_value_size_cannot_exceed_the_protocol_limit() -> None:
    with pytest.raises(ConfigError, match="max_value_size"):
        DhtConfig.from_settings({"max_value_size": MAX_VALUE_SIZE + 1})
    assert DhtConfig.from_settings({"max_value_size": 1000}).max_value_size == 1000


@pytest.mark.parametrize("tiers", [0, 8, -1])
def test_max_tiers_range(tiers: int) -> None:
    with pytest.raises(ConfigError, match="max_tiers"):
        DhtConfig.from_settings({"max_tiers": tiers})


@pytest.mark.parametrize("tiers", [1, 7])
def test_max_tiers_bounds_accepted(tiers: int) -> None:
    assert DhtConfig.from_settings({"max_tiers": tiers}).max_tiers == tiers


def test_max_tiers_of_the_wrong_type_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="max_tiers"):
        DhtConfig.from_settings({"max_tiers": "3"})


@pytest.mark.parametrize("tiers", [2.5, True])
def test_max_tiers_must_be_an_integer(tiers: Any) -> None:
    with pytest.raises(ConfigError, match="max_tiers"):
        DhtConfig.from_settings({"max_tiers": tiers})


@pytest.mark.parametrize("value", [-1, 257, "4", 1.5])
def test_join_refresh_range(value: Any) -> None:
    with pytest.raises(ConfigError, match="join_refresh"):
        DhtConfig.from_settings({"join_refresh": value})


@pytest.mark.parametrize("value", [0, 256])
def test_join_refresh_bounds_accepted(value: int) -> None:
    assert DhtConfig.from_settings({"join_refresh": value}).join_refresh == value


def test_join_refresh_refuses_a_bool() -> None:
    with pytest.raises(ConfigError, match="join_refresh"):
        DhtConfig.from_settings({"join_refresh": True})


def test_republish_must_be_shorter_than_ttl() -> None:
    with pytest.raises(ConfigError, match="republish_s must be shorter than ttl_s"):
        DhtConfig.from_settings({"republish_s": 24 * 3600.0})
    with pytest.raises(ConfigError, match="republish_s"):
        DhtConfig.from_settings({"ttl_s": 600.0})  # the default republish_s is 3600
    config = DhtConfig.from_settings({"ttl_s": 600.0, "republish_s": 599.0})
    assert config.republish_s < config.ttl_s


@pytest.mark.parametrize(
    "network", ["10.0.0.0/33", "10.0.0.1/8", "not a network", "", "fe80::/129", "300.0.0.0/8"]
)
def test_a_bad_exempt_network(network: str) -> None:
    with pytest.raises(ConfigError, match="exempt_networks"):
        DhtConfig.from_settings({"exempt_networks": ("127.0.0.0/8", network)})


def test_exempt_networks() -> None:
    config = DhtConfig()
    ip = ipaddress.ip_address
    for exempt in ("127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.9.9", "::1", "fd00::1"):
        assert config.is_exempt(ip(exempt)), exempt
    for counted in ("198.51.100.7", "8.8.8.8", "172.32.0.1", "2001:db8::1"):
        assert not config.is_exempt(ip(counted)), counted
    none = DhtConfig.from_settings({"exempt_networks": ()})
    assert not none.is_exempt(ip("127.0.0.1"))
    custom = DhtConfig.from_settings({"exempt_networks": ["198.51.100.0/24"]})
    assert custom.is_exempt(ip("198.51.100.7"))
    assert not custom.is_exempt(ip("10.0.0.1"))


def test_addresses_become_a_tuple() -> None:
    config = DhtConfig.from_settings({"addresses": ["198.51.100.7:4433", "10.0.0.1:1"]})
    assert config.addresses == ("198.51.100.7:4433", "10.0.0.1:1")


def test_a_single_address_string_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="addresses"):
        DhtConfig.from_settings({"addresses": "198.51.100.7:4433"})


def test_assigning_after_construction_is_validated_by_validate() -> None:
    config = DhtConfig()
    config.k = 50
    with pytest.raises(ConfigError, match="k_min <= k <= k_max"):
        config.validate()


def test_every_setting_has_a_default() -> None:
    for f in dataclasses.fields(DhtConfig):
        assert f.default is not dataclasses.MISSING, f.name


# -- through the node builder --------------------------------------------------------------


@pytest.fixture(scope="module")
def identity() -> NodeIdentity:
    return NodeIdentity.generate(difficulty=8)


@pytest.mark.parametrize(
    ("settings", "named"),
    [
        ({"k": 0}, "k"),
        ({"kk": 20}, "unknown setting 'kk'"),
        ({"republish_s": 90_000.0}, "republish_s"),
        ({"exempt_networks": ("bad",)}, "exempt_networks"),
        ({"query_timeout_s": -1}, "query_timeout_s"),
    ],
)
@on_virtual_time
async def test_a_node_with_bad_dht_settings_does_not_build(
    identity: NodeIdentity, settings: dict[str, Any], named: str
) -> None:
    network = SimNetwork()
    builder = (
        Node.builder()
        .identity(identity)
        .difficulty(8)
        .plugins([plugin])
        .plugin_settings("dht", **settings)
        .simulated(network)
    )
    with pytest.raises(ConfigError, match=named):
        await builder.build()
    assert len(network) == 0  # refused before the node joined the network


@on_virtual_time
async def test_a_node_with_good_dht_settings_uses_them(identity: NodeIdentity) -> None:
    network = SimNetwork()
    node = await (
        Node.builder()
        .identity(identity)
        .difficulty(8)
        .plugins([plugin])
        .plugin_settings("dht", k=15, alpha=4, addresses=("198.51.100.7:4433",))
        .simulated(network)
        .build()
    )
    try:
        dht = plugin.service(node)
        assert (dht.config.k, dht.config.alpha) == (15, 4)
        assert dht.addresses == ("198.51.100.7:4433",)
        assert node.stats()["dht.params.k"] == 15
    finally:
        await node.close()
