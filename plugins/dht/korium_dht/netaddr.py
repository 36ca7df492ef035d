"""The DHT's IP rules on top of :mod:`korium.netaddr`: which IP a contact counts by, and where.

Rules that count by address (insertion rate per IP, /24 diversity in a bucket) and latency
tiering (RTT per /16) all start from a contact's *primary IP*: the first of its addresses that
is a literal IP.
"""

from __future__ import annotations

from korium.identity import Contact
from korium.netaddr import IpAddress, parse_ip, prefix


def primary_ip(contact: Contact) -> IpAddress | None:
    """The first literal IP among *contact*'s addresses, or None (no address, names only)."""
    for text in contact.addresses:
        ip = parse_ip(text)
        if ip is not None:
            return ip
    return None


def diversity_prefix(ip: IpAddress) -> str:
    """The /24 (IPv4) or /48 (IPv6) a bucket may hold at most two contacts from."""
    return prefix(ip, 24, 48)


def tiering_prefix(ip: IpAddress) -> str:
    """The /16 (IPv4) or /32 (IPv6) whose round-trip times latency tiering tracks."""
    return prefix(ip, 16, 32)
