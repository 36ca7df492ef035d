"""SMPR path probes: exact wire layout, round trips, malformed input, no amplification."""

from __future__ import annotations

import ipaddress
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from korium.transport.addresses import Address
from korium.transport.probe import (
    HEADER_SIZE,
    PROBE_MAGIC,
    REQUEST,
    REQUEST_SIZE,
    RESPONSE,
    ProbeError,
    ProbeRequest,
    ProbeResponse,
    decode,
    encode_request,
    encode_response,
)

U64 = st.integers(min_value=0, max_value=2**64 - 1)
PORTS = st.integers(min_value=0, max_value=65535)
IPV4 = st.ip_addresses(v=4).map(str)
IPV6 = st.ip_addresses(v=6).map(str)
ADDRESSES: st.SearchStrategy[Address] = st.tuples(st.one_of(IPV4, IPV6), PORTS)

TX = 0x0102030405060708
TS = 0x1112131415161718
TX_BYTES = bytes(range(1, 9))
TS_BYTES = bytes(range(0x11, 0x19))


def _request_bytes(kind: int = REQUEST, size: int = REQUEST_SIZE) -> bytes:
    data = PROBE_MAGIC + bytes([kind]) + TX_BYTES + TS_BYTES
    return data + bytes(max(0, size - len(data)))


def _response_bytes(family: int, ip: bytes, port: int = 443) -> bytes:
    return (
        PROBE_MAGIC
        + bytes([RESPONSE])
        + TX_BYTES
        + TS_BYTES
        + bytes([family])
        + ip
        + (port.to_bytes(2, "big"))
    )


# -- constants and layout ---------------------------------------------------------------------


def test_constants() -> None:
    assert PROBE_MAGIC == b"SMPR"
    assert (REQUEST, RESPONSE) == (1, 2)
    assert HEADER_SIZE == 21
    assert REQUEST_SIZE == 40
    assert issubclass(ProbeError, ValueError)


def test_request_exact_layout() -> None:
    data = encode_request(ProbeRequest(TX, TS))
    assert data == b"SMPR" + b"\x01" + TX_BYTES + TS_BYTES + bytes(19)
    assert len(data) == REQUEST_SIZE


def test_response_ipv4_exact_layout() -> None:
    data = encode_response(ProbeResponse(TX, TS, ("192.0.2.1", 0x1234)))
    assert data == b"SMPR\x02" + TX_BYTES + TS_BYTES + b"\x04" + bytes([192, 0, 2, 1]) + b"\x12\x34"
    assert len(data) == 28


def test_response_ipv6_exact_layout() -> None:
    data = encode_response(ProbeResponse(TX, TS, ("2001:db8::1", 443)))
    ip = ipaddress.IPv6Address("2001:db8::1").packed
    assert data == b"SMPR\x02" + TX_BYTES + TS_BYTES + b"\x06" + ip + b"\x01\xbb"
    assert len(data) == 40


def test_header_is_big_endian() -> None:
    data = encode_request(ProbeRequest(1, 2))
    assert struct.unpack_from(">4sBQQ", data) == (b"SMPR", 1, 1, 2)
    assert data[5:13] == b"\x00" * 7 + b"\x01"


# -- round trips ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("transaction", "timestamp_ms"), [(0, 0), (TX, TS), (2**64 - 1, 2**64 - 1)]
)
def test_request_round_trip(transaction: int, timestamp_ms: int) -> None:
    request = ProbeRequest(transaction, timestamp_ms)
    assert decode(encode_request(request)) == request


@pytest.mark.parametrize(
    "observed",
    [
        ("0.0.0.0", 0),
        ("203.0.113.7", 40000),
        ("255.255.255.255", 65535),
        ("::", 0),
        ("2001:db8::1", 443),
        ("fd00:c0f1::1", 1),
    ],
)
def test_response_round_trip(observed: Address) -> None:
    response = ProbeResponse(TX, TS, observed)
    decoded = decode(encode_response(response))
    assert decoded == response
    assert isinstance(decoded, ProbeResponse)


@pytest.mark.parametrize(
    ("written", "canonical"),
    [("::ffff:192.0.2.1", "::ffff:c000:201"), ("2001:DB8:0:0::1", "2001:db8::1")],
)
def test_response_decodes_to_canonical_text(written: str, canonical: str) -> None:
    # The observed address travels as bytes, so only the canonical spelling comes back.
    decoded = decode(encode_response(ProbeResponse(TX, TS, (written, 9))))
    assert decoded == ProbeResponse(TX, TS, (canonical, 9))


@given(U64, U64)
def test_request_round_trip_property(transaction: int, timestamp_ms: int) -> None:
    request = ProbeRequest(transaction, timestamp_ms)
    data = encode_request(request)
    assert len(data) == REQUEST_SIZE
    assert decode(data) == request


@given(U64, U64, ADDRESSES)
def test_response_round_trip_property(
    transaction: int, timestamp_ms: int, observed: Address
) -> None:
    response = ProbeResponse(transaction, timestamp_ms, observed)
    data = encode_response(response)
    assert len(data) == (28 if ipaddress.ip_address(observed[0]).version == 4 else 40)
    assert decode(data) == response


# -- no amplification -------------------------------------------------------------------------


@given(U64, U64, ADDRESSES)
def test_response_never_larger_than_request(
    transaction: int, timestamp_ms: int, observed: Address
) -> None:
    request = encode_request(ProbeRequest(transaction, timestamp_ms))
    response = encode_response(ProbeResponse(transaction, timestamp_ms, observed))
    assert len(response) <= len(request) == REQUEST_SIZE


# -- malformed input --------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, 4, 5, 12, 20])
def test_too_short_is_refused(size: int) -> None:
    with pytest.raises(ProbeError, match="too short"):
        decode(_request_bytes()[:size])


@pytest.mark.parametrize("magic", [b"XMPR", b"smpr", b"SMP\x00", b"\x00\x00\x00\x00"])
def test_wrong_magic_is_refused(magic: bytes) -> None:
    with pytest.raises(ProbeError, match="not a probe"):
        decode(magic + _request_bytes()[4:])
    with pytest.raises(ProbeError, match="not a probe"):
        decode(magic + _response_bytes(4, bytes(4))[4:])


@pytest.mark.parametrize("kind", [0, 3, 4, 0x7F, 0xFF])
@pytest.mark.parametrize("size", [HEADER_SIZE, 28, REQUEST_SIZE])
def test_unknown_type_is_refused(kind: int, size: int) -> None:
    with pytest.raises(ProbeError, match="unknown probe type"):
        decode(_request_bytes(kind, size))


@pytest.mark.parametrize("size", [HEADER_SIZE, 28, 39, 41, 64, 1200])
def test_request_of_wrong_size_is_refused(size: int) -> None:
    with pytest.raises(ProbeError, match="must be 40 bytes"):
        decode(_request_bytes(REQUEST, size))


@pytest.mark.parametrize(
    "data",
    [
        # bad family with a well-sized body
        _response_bytes(0, bytes(4)),
        _response_bytes(5, bytes(4)),
        _response_bytes(6, bytes(4)),  # family 6 with an IPv4-sized body
        _response_bytes(4, bytes(16)),  # family 4 with an IPv6-sized body
        _response_bytes(0, bytes(16)),
        _response_bytes(0x46, bytes(16)),
        # bad length
        _response_bytes(4, bytes(4))[:-1],
        _response_bytes(4, bytes(4)) + b"\x00",
        _response_bytes(6, bytes(16))[:-1],
        _response_bytes(6, bytes(16)) + b"\x00",
        _response_bytes(4, bytes(3)),
        _response_bytes(6, bytes(15)),
        _request_bytes(RESPONSE, HEADER_SIZE),  # header only
        _request_bytes(RESPONSE, HEADER_SIZE + 1)[:-1] + b"\x04",  # family, nothing after
        _request_bytes(RESPONSE, REQUEST_SIZE),  # a zero-padded request typed as response
    ],
)
def test_malformed_response_is_refused(data: bytes) -> None:
    with pytest.raises(ProbeError, match="malformed observed address"):
        decode(data)


# -- fuzzing ----------------------------------------------------------------------------------

_PROBE_LIKE = st.builds(
    lambda kind, tail: PROBE_MAGIC + bytes([kind]) + tail,
    st.sampled_from([0, REQUEST, RESPONSE, 3, 0xFF]),
    st.binary(max_size=48),
)


@given(st.one_of(st.binary(max_size=64), _PROBE_LIKE))
def test_random_bytes_decode_or_raise_probe_error(data: bytes) -> None:
    try:
        message = decode(data)
    except ProbeError:
        return
    assert data[:4] == PROBE_MAGIC
    if isinstance(message, ProbeRequest):
        assert len(data) == REQUEST_SIZE
        assert encode_request(message)[:HEADER_SIZE] == data[:HEADER_SIZE]
    else:
        assert len(data) in (28, 40)
        assert encode_response(message) == data
