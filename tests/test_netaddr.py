"""IP parsing, real network prefixes and exempt networks (korium.netaddr)."""

from __future__ import annotations

from ipaddress import ip_address

import pytest

from korium.errors import ConfigError
from korium.netaddr import DEFAULT_EXEMPT_NETWORKS, ExemptNetworks, ip_of, parse_ip, prefix


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.1.2.3:4433", "10.1.2.3"),
        ("[2001:db8::1]:1", "2001:db8::1"),
        ("[::ffff:192.0.2.1]:80", "::ffff:192.0.2.1"),
        ("example.com:4433", None),
        ("10.1.2.3", None),  # no port
        ("[2001:db8::1]", None),
        ("10.1.2.3:99999", None),
        ("", None),
    ],
)
def test_parse_ip(text: str, expected: str | None) -> None:
    assert parse_ip(text) == (None if expected is None else ip_address(expected))


def test_ip_of_an_address_tuple() -> None:
    assert ip_of(("192.0.2.9", 1)) == ip_address("192.0.2.9")
    assert ip_of(("2001:db8::9", 1)) == ip_address("2001:db8::9")
    assert ip_of(("localhost", 1)) is None


def test_prefixes_are_real_networks() -> None:
    assert prefix(ip_address("10.1.200.7"), 16, 32) == "10.1.0.0/16"
    assert prefix(ip_address("10.1.200.7"), 24, 48) == "10.1.200.0/24"
    assert prefix(ip_address("2001:db8:ffff:1::9"), 24, 32) == "2001:db8::/32"
    assert prefix(ip_address("2001:db8:ffff:1::9"), 24, 48) == "2001:db8:ffff::/48"
    # neighbours that a sum of address words would confuse are different prefixes
    assert prefix(ip_address("10.2.1.0"), 16, 32) != prefix(ip_address("10.1.2.0"), 16, 32)


def test_default_exempt_networks_are_loopback_and_private() -> None:
    exempt = ExemptNetworks()
    assert len(exempt.networks) == len(DEFAULT_EXEMPT_NETWORKS)
    for ip in ("127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.9.9", "::1", "fd00::1", "fe80::1"):
        assert ip_address(ip) in exempt, ip
    for ip in ("198.51.100.7", "8.8.8.8", "172.32.0.1", "2001:db8::1", "::ffff:10.0.0.1"):
        assert ip_address(ip) not in exempt, ip
    assert "10.0.0.1" not in exempt  # text is not an address


def test_custom_and_empty_exempt_networks() -> None:
    custom = ExemptNetworks(["198.51.100.0/24", "2001:db8::/32"])
    assert ip_address("198.51.100.7") in custom
    assert ip_address("2001:db8::5") in custom
    assert ip_address("10.0.0.1") not in custom
    assert ip_address("127.0.0.1") not in ExemptNetworks(())


@pytest.mark.parametrize(
    "bad", ["10.0.0.0/33", "10.0.0.1/8", "not a network", "", "fe80::/129", "300.0.0.0/8"]
)
def test_a_bad_network_is_a_config_error(bad: str) -> None:
    with pytest.raises(ConfigError, match="is not a network"):
        ExemptNetworks(["127.0.0.0/8", bad])


def test_one_string_instead_of_a_list_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not one string"):
        ExemptNetworks("10.0.0.0/8")
