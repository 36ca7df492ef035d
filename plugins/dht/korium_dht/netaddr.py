"""IP facts about contacts: the address a rule counts by, and real network prefixes.

Rules that count by address (insertion rate per IP, /24 diversity in a bucket) and latency
tiering (RTT per /16) all start from a contact's *primary IP*: the first of its addresses that
is a literal IP. Prefixes are real prefixes (``10.1.0.0/16``), not sums of address words.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from korium.identity import Contact
from korium.transport.addresses import parse_address

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def primary_ip(contact: Contact) -> IpAddress | None:
    """The first literal IP among *contact*'s addresses, or None (no address, names only)."""
    for text in contact.addresses:
        ip = _parse_ip(text)
        if ip is not None:
            return ip
    return None


@lru_cache(maxsize=4096)
def _parse_ip(text: str) -> IpAddress | None:
    try:
        host, _ = parse_address(text)
    except ValueError:
        return None
    return ipaddress.ip_address(host)


def prefix(ip: IpAddress, v4_bits: int, v6_bits: int) -> str:
    """The network of *ip* with the given prefix length, as text (``"10.1.0.0/16"``)."""
    bits = v4_bits if ip.version == 4 else v6_bits
    return str(ipaddress.ip_network((ip, bits), strict=False))


def diversity_prefix(ip: IpAddress) -> str:
    """The /24 (IPv4) or /48 (IPv6) a bucket may hold at most two contacts from."""
    return prefix(ip, 24, 48)


def tiering_prefix(ip: IpAddress) -> str:
    """The /16 (IPv4) or /32 (IPv6) whose round-trip times latency tiering tracks."""
    return prefix(ip, 16, 32)
