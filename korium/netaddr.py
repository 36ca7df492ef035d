"""IP facts for rules that count by address: parsing, real network prefixes, exempt networks.

Why in the kernel: per-IP rate limits, per-prefix diversity and latency tiering (DHT), and IP
colocation limits (pubsub) all start from the same questions: which IP is this peer at, which
/24 (or /48) is that, and is it a loopback or private address a local cluster uses. Prefixes
are real prefixes (``10.1.0.0/16``), not sums of address words.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from functools import lru_cache
from typing import Final

from korium.errors import ConfigError
from korium.transport.addresses import Address, parse_address

__all__ = [
    "DEFAULT_EXEMPT_NETWORKS",
    "ExemptNetworks",
    "IpAddress",
    "ip_of",
    "parse_ip",
    "prefix",
]

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DEFAULT_EXEMPT_NETWORKS: Final[tuple[str, ...]] = (
    "127.0.0.0/8",
    "::1/128",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "fc00::/7",
    "fe80::/10",
)
"""Loopback and private ranges: where a local cluster or test network lives."""


@lru_cache(maxsize=4096)
def parse_ip(text: str) -> IpAddress | None:
    """The IP of ``"HOST:PORT"`` or ``"[v6]:PORT"`` text; None for names and malformed text."""
    try:
        host, _ = parse_address(text)
    except ValueError:
        return None
    return ipaddress.ip_address(host)


def ip_of(address: Address) -> IpAddress | None:
    """The IP of a socket address tuple; None if its host is not a literal IP."""
    try:
        return ipaddress.ip_address(address[0])
    except ValueError:
        return None


def prefix(ip: IpAddress, v4_bits: int, v6_bits: int) -> str:
    """The network of *ip* with the given prefix length, as text (``"10.1.0.0/16"``)."""
    bits = v4_bits if ip.version == 4 else v6_bits
    return str(ipaddress.ip_network((ip, bits), strict=False))


class ExemptNetworks:
    """Networks whose addresses per-IP and per-prefix rules leave alone (``ip in exempt``)."""

    __slots__ = ("networks",)

    def __init__(self, cidrs: Iterable[str] = DEFAULT_EXEMPT_NETWORKS) -> None:
        """Raises :class:`ConfigError` naming the first entry that is not a network."""
        if isinstance(cidrs, str | bytes):
            raise ConfigError(f"give a list of networks, not one string: {cidrs!r}")
        networks: list[IpNetwork] = []
        for cidr in cidrs:
            try:
                networks.append(ipaddress.ip_network(cidr))
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"{cidr!r} is not a network: {exc}") from None
        self.networks: tuple[IpNetwork, ...] = tuple(networks)

    def __contains__(self, ip: object) -> bool:
        if not isinstance(ip, ipaddress.IPv4Address | ipaddress.IPv6Address):
            return False
        return any(ip in network for network in self.networks)

    def __repr__(self) -> str:
        return f"ExemptNetworks({[str(n) for n in self.networks]})"
