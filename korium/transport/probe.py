"""Path probes (``SMPR``): measure a path's round-trip time and learn our observed address.

Request, 40 bytes::

    b"SMPR" || 0x01 || transaction id (u64 BE) || sender timestamp ms (u64 BE)
        || target (first 8 bytes of the probed peer's identity) || 11 zero bytes

Response, 28 bytes (IPv4) or 40 bytes (IPv6)::

    b"SMPR" || 0x02 || transaction id || echoed timestamp || family (4 or 6)
        || observed IP (4 or 16 bytes) || observed port (u16 BE)

The observed address is the UDP source the responder saw: what a NAT made of ours. The RTT is
measured against our own record of when the request left, never against the echoed timestamp.
Requests are padded to the size of the largest response, so answering a spoofed request
reflects no more bytes than the spoofer sent (no amplification). A node answers only requests
whose target is its own identity, so an address that now belongs to another node does not look
like a working path to the peer we meant.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass
from typing import Final

from korium.transport.addresses import Address

PROBE_MAGIC: Final = b"SMPR"
REQUEST: Final = 1
RESPONSE: Final = 2
_head = struct.Struct(">4sBQQ")
HEADER_SIZE: Final = _head.size  # 21
REQUEST_SIZE: Final = 40
TARGET_SIZE: Final = 8
_PADDING: Final = bytes(REQUEST_SIZE - HEADER_SIZE - TARGET_SIZE)


class ProbeError(ValueError):
    """A datagram that starts like a probe but is not a well-formed one."""


@dataclass(frozen=True, slots=True)
class ProbeRequest:
    transaction: int
    timestamp_ms: int
    target: bytes = bytes(TARGET_SIZE)
    """The first 8 bytes of the identity the prober expects to answer."""


@dataclass(frozen=True, slots=True)
class ProbeResponse:
    transaction: int
    timestamp_ms: int
    observed: Address


def encode_request(request: ProbeRequest) -> bytes:
    if len(request.target) != TARGET_SIZE:
        raise ValueError(f"a probe target is {TARGET_SIZE} bytes")
    head = _head.pack(PROBE_MAGIC, REQUEST, request.transaction, request.timestamp_ms)
    return head + request.target + _PADDING


def encode_response(response: ProbeResponse) -> bytes:
    ip = ipaddress.ip_address(response.observed[0])
    head = _head.pack(PROBE_MAGIC, RESPONSE, response.transaction, response.timestamp_ms)
    return head + bytes([ip.version]) + ip.packed + response.observed[1].to_bytes(2, "big")


def decode(data: bytes) -> ProbeRequest | ProbeResponse:
    """Parse a probe datagram; raises :class:`ProbeError` for anything malformed."""
    if len(data) < HEADER_SIZE:
        raise ProbeError(f"probe of {len(data)} bytes is too short")
    magic, kind, transaction, timestamp = _head.unpack_from(data)
    if magic != PROBE_MAGIC:
        raise ProbeError("not a probe")
    if kind == REQUEST:
        if len(data) != REQUEST_SIZE:
            raise ProbeError(f"probe request must be {REQUEST_SIZE} bytes, got {len(data)}")
        return ProbeRequest(transaction, timestamp, data[HEADER_SIZE : HEADER_SIZE + TARGET_SIZE])
    if kind != RESPONSE:
        raise ProbeError(f"unknown probe type {kind}")
    rest = data[HEADER_SIZE:]
    if len(rest) == 7 and rest[0] == 4:
        ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.IPv4Address(rest[1:5])
    elif len(rest) == 19 and rest[0] == 6:
        ip = ipaddress.IPv6Address(rest[1:17])
    else:
        raise ProbeError("probe response has a malformed observed address")
    return ProbeResponse(transaction, timestamp, (str(ip), int.from_bytes(rest[-2:], "big")))
