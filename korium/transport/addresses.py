"""Socket addresses and SmartAddrs.

A *SmartAddr* is a peer's stable virtual IPv6 address in ``fd00:c0f1::/32``: the prefix followed
by the first 12 bytes of ``blake3(identity)``. QUIC connections see only SmartAddrs, so when
SmartSock moves a peer to another real path (another address, a relay) the connection notices
nothing.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from typing import Final

import blake3

from korium.identity import Identity

SMART_PREFIX: Final = bytes.fromhex("fd00c0f1")
SMART_PORT: Final = 1
Address = tuple[str, int]
"""A UDP socket address as asyncio gives it: (host, port) with IPv6 hosts unbracketed."""


def smart_addr(identity: Identity) -> Address:
    """The SmartAddr of *identity*, as an address tuple QUIC can use."""
    digest = blake3.blake3(bytes(identity)).digest()
    return (str(ipaddress.IPv6Address(SMART_PREFIX + digest[:12])), SMART_PORT)


def is_smart_addr(address: Address) -> bool:
    """Whether *address* is in ``fd00:c0f1::/32``."""
    try:
        ip = ipaddress.ip_address(address[0])
    except ValueError:
        return False
    return ip.version == 6 and ip.packed[:4] == SMART_PREFIX


def parse_address(text: str) -> Address:
    """``"127.0.0.1:4433"`` or ``"[::1]:4433"`` as an address tuple; raises ValueError."""
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit():
        raise ValueError(f"address {text!r} must be HOST:PORT (IPv6 as [HOST]:PORT)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    ip = ipaddress.ip_address(host)  # raises ValueError for names: addresses only
    port = int(port_text)
    if not 0 <= port <= 65535:
        raise ValueError(f"port {port} out of range in {text!r}")
    return (str(ip), port)


def parse_addresses(texts: Iterable[str]) -> list[Address]:
    """The parseable ``HOST:PORT`` entries of *texts* (names and malformed ones are skipped)."""
    found = []
    for text in texts:
        try:
            found.append(parse_address(text))
        except ValueError:
            continue
    return found


def format_address(address: Address) -> str:
    """An address tuple as ``HOST:PORT`` text, IPv6 in brackets."""
    host, port = address[0], address[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def normalize(address: tuple[object, ...]) -> Address:
    """Reduce an asyncio peer address (IPv6 gives 4-tuples) to (host, port)."""
    host, port = address[0], address[1]
    if not isinstance(host, str) or not isinstance(port, int):
        raise TypeError(f"not a socket address: {address!r}")
    return (host, port)


def family_of(address: Address) -> socket.AddressFamily:
    """AF_INET or AF_INET6 for *address*."""
    return socket.AF_INET6 if ":" in address[0] else socket.AF_INET
