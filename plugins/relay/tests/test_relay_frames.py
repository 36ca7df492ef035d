"""Tests of the ``CRLY`` relay frame (``korium_relay.frames``).

A frame is ``b"CRLY" || 16-byte session id || payload``. ``decode`` returns exactly what
``encode`` wrapped, accepts an empty payload, and refuses short, mis-tagged and oversized
datagrams with :class:`FrameError` (a ``KoriumError``), never with another exception.
"""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from korium_relay.frames import (
    HEADER_SIZE,
    MAGIC,
    MAX_PAYLOAD,
    SESSION_ID_SIZE,
    FrameError,
    decode,
    encode,
    new_session_id,
)

from korium.errors import KoriumError

SID = bytes(range(16))


def test_constants_match_the_spec() -> None:
    assert MAGIC == b"CRLY"
    assert SESSION_ID_SIZE == 16
    assert HEADER_SIZE == 20
    assert MAX_PAYLOAD == 1500


def test_encode_lays_out_magic_session_payload() -> None:
    assert encode(SID, b"quic") == b"CRLY" + SID + b"quic"


def test_decode_returns_session_and_payload() -> None:
    assert decode(b"CRLY" + SID + b"\x40abc") == (SID, b"\x40abc")


def test_empty_payload_is_allowed() -> None:
    assert encode(SID, b"") == b"CRLY" + SID
    assert decode(b"CRLY" + SID) == (SID, b"")


def test_payload_at_the_limit_passes_one_over_fails() -> None:
    assert decode(MAGIC + SID + bytes(MAX_PAYLOAD)) == (SID, bytes(MAX_PAYLOAD))
    with pytest.raises(FrameError, match="1501 bytes is over the 1500-byte limit") as info:
        decode(MAGIC + SID + bytes(MAX_PAYLOAD + 1))
    assert info.value.reason == "oversized"


def test_decode_honours_a_smaller_max_payload() -> None:
    assert decode(MAGIC + SID + b"12345", max_payload=5) == (SID, b"12345")
    with pytest.raises(FrameError) as info:
        decode(MAGIC + SID + b"123456", max_payload=5)
    assert info.value.reason == "oversized"


@pytest.mark.parametrize("size", [0, 1, 4, 19])
def test_short_datagram_is_refused(size: int) -> None:
    with pytest.raises(FrameError, match=f"20-byte header, got {size} bytes") as info:
        decode((MAGIC + SID)[:size])
    assert info.value.reason == "short"


def test_wrong_magic_is_refused() -> None:
    with pytest.raises(FrameError, match="starts with b'CRLY', got b'SMPR'") as info:
        decode(b"SMPR" + SID + b"x")
    assert info.value.reason == "magic"


def test_frame_error_is_a_korium_error_and_a_value_error() -> None:
    assert issubclass(FrameError, KoriumError)
    assert issubclass(FrameError, ValueError)


@pytest.mark.parametrize("session", [b"", bytes(15), bytes(17)])
def test_encode_refuses_a_session_id_of_the_wrong_size(session: bytes) -> None:
    with pytest.raises(ValueError, match=f"16 bytes, got {len(session)}"):
        encode(session, b"x")


def test_encode_refuses_an_oversized_payload() -> None:
    assert len(encode(SID, bytes(MAX_PAYLOAD))) == HEADER_SIZE + MAX_PAYLOAD
    with pytest.raises(ValueError, match="at most 1500 bytes, got 1501"):
        encode(SID, bytes(MAX_PAYLOAD + 1))


def test_new_session_ids_are_16_random_bytes() -> None:
    ids = {new_session_id() for _ in range(64)}
    assert len(ids) == 64
    assert {len(i) for i in ids} == {16}


@given(
    st.binary(min_size=SESSION_ID_SIZE, max_size=SESSION_ID_SIZE),
    st.binary(max_size=MAX_PAYLOAD),
)
def test_roundtrip(session: bytes, payload: bytes) -> None:
    assert decode(encode(session, payload)) == (session, payload)


@given(st.binary(max_size=2 * MAX_PAYLOAD))
def test_decode_fuzz_only_raises_frame_error(datagram: bytes) -> None:
    if len(datagram) < HEADER_SIZE:
        expected = "short"
    elif datagram[:4] != MAGIC:
        expected = "magic"
    elif len(datagram) - HEADER_SIZE > MAX_PAYLOAD:
        expected = "oversized"
    else:
        assert decode(datagram) == (datagram[4:20], datagram[20:])
        return
    with pytest.raises(FrameError) as info:
        decode(datagram)
    assert info.value.reason == expected


@given(st.binary(max_size=64))
def test_decode_fuzz_with_the_magic_in_front(rest: bytes) -> None:
    datagram = MAGIC + rest
    if len(datagram) < HEADER_SIZE:
        with pytest.raises(FrameError):
            decode(datagram)
    else:
        assert decode(datagram) == (rest[:16], rest[16:])
