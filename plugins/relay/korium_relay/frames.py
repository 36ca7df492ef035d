"""The relay data plane's one wire format: a QUIC datagram wrapped in a ``CRLY`` frame.

A relayed datagram travels ``end -> relay -> other end`` as::

    b"CRLY" (4 bytes) || session id (16 bytes) || payload (0 to MAX_PAYLOAD bytes)

(the spec's "Relay Frame (CRLY)" header). The payload is the sender's QUIC datagram exactly as
aioquic produced it, already encrypted end to end: the relay reads only the 20-byte header and
forwards the frame unchanged. The session id is 16 random bytes chosen by the initiator when it
reserves the session, so it cannot be guessed; it is not a credential, though: the relay also
checks that a frame comes from the exact address of one of the session's two ends.

An empty payload is allowed (clients may use one as a keep-alive for a NAT mapping).
"""

from __future__ import annotations

import os
from typing import Final

from korium.errors import KoriumError

MAGIC: Final = b"CRLY"
SESSION_ID_SIZE: Final = 16
"""Bytes in a session id (spec, "Relay Frame (CRLY)")."""
HEADER_SIZE: Final = len(MAGIC) + SESSION_ID_SIZE  # 20
MAX_PAYLOAD: Final = 1500
"""Largest payload a relay forwards, in bytes.

korium's QUIC datagrams are at most aioquic's ``max_datagram_size``, 1200 bytes by default
(``SMALLEST_MAX_DATAGRAM_SIZE``, RFC 9000 section 14; aioquic does no path MTU discovery, so it
never grows). 1500 (an Ethernet MTU) leaves room for an end configured with larger datagrams,
while refusing anything bigger: a UDP datagram may be up to 64 KiB, and without a bound one frame
would make the relay send 64 KiB (fragmented at the IP layer) on behalf of whoever sent it.
"""


class FrameError(KoriumError, ValueError):
    """A datagram that is not a well-formed ``CRLY`` frame.

    ``reason`` is ``"short"`` (under :data:`HEADER_SIZE` bytes), ``"magic"`` (does not start with
    ``b"CRLY"``) or ``"oversized"`` (payload over the limit).
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def encode(session: bytes, payload: bytes) -> bytes:
    """Wrap *payload* (a QUIC datagram) in a frame for *session*.

    :raises ValueError: the session id is not 16 bytes, or the payload is over
        :data:`MAX_PAYLOAD` (a caller's mistake: no relay would forward it).
    """
    if len(session) != SESSION_ID_SIZE:
        raise ValueError(f"a relay session id is {SESSION_ID_SIZE} bytes, got {len(session)}")
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(
            f"a relayed payload is at most {MAX_PAYLOAD} bytes, got {len(payload)}; "
            "lower the QUIC max_datagram_size"
        )
    return MAGIC + session + payload


def decode(datagram: bytes, *, max_payload: int = MAX_PAYLOAD) -> tuple[bytes, bytes]:
    """Split a received frame into ``(session id, payload)``.

    :param max_payload: the largest payload accepted, in bytes.
    :raises FrameError: the datagram is too short, has the wrong magic, or its payload is over
        *max_payload*. Any other exception is a bug.
    """
    if len(datagram) < HEADER_SIZE:
        raise FrameError(
            "short", f"a relay frame has a {HEADER_SIZE}-byte header, got {len(datagram)} bytes"
        )
    if datagram[:4] != MAGIC:
        raise FrameError("magic", f"a relay frame starts with {MAGIC!r}, got {datagram[:4]!r}")
    size = len(datagram) - HEADER_SIZE
    if size > max_payload:
        raise FrameError(
            "oversized", f"relay frame payload of {size} bytes is over the {max_payload}-byte limit"
        )
    return bytes(datagram[4:HEADER_SIZE]), bytes(datagram[HEADER_SIZE:])


def new_session_id() -> bytes:
    """16 random bytes from the OS random source: a fresh, unguessable session id."""
    return os.urandom(SESSION_ID_SIZE)
