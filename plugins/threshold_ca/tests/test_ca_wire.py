"""Tests of the threshold CA's messages (``korium_threshold_ca.wire``).

Every message must survive encode/decode unchanged and carry the tag peers dispatch on. The
decoder reads bytes from any peer: whatever they are, it returns a message or raises WireError,
and every declared bound (session and key lengths, identifiers 1..255, TBS and list sizes,
integer ranges) is enforced at decode time. ``expect`` turns a Refused reply into RefusedError
and any other surprise into WireError. A DKG round-2 share is secret and never in a repr.
"""

from __future__ import annotations

import contextlib
from typing import Any, Final

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from korium_threshold_ca import wire
from korium_threshold_ca.wire import (
    MAX_MESSAGE_SIZE,
    MAX_SIGNERS,
    MAX_TBS_SIZE,
    RefusedError,
    WireError,
)

from korium.errors import KoriumError

SESSION: Final = bytes(range(16))
KEY: Final = bytes(range(100, 132))
POINT_A: Final = bytes(range(32))
POINT_B: Final = bytes(range(32, 64))
SCALAR: Final = bytes(range(64, 96))


def commitment(identifier: int = 3) -> wire.Commitment:
    return wire.Commitment(SESSION, identifier, POINT_A, POINT_B)


def samples() -> dict[str, wire.Message]:
    """One message of each kind, with every field set to a value of its own."""
    return {
        "csr": wire.Csr(SESSION, KEY, "leaf", b"\x30\x03\x02\x01\x01", b"contact record"),
        "csr-ca": wire.Csr(SESSION, KEY, "ca", b"", b""),
        "commit": commitment(),
        "sign": wire.SignRequest(SESSION, [commitment(1), commitment(4), commitment(255)]),
        "share": wire.SignatureShare(SESSION, 7, SCALAR),
        "dkg1": wire.DkgRound1(KEY, [POINT_A, POINT_B, KEY], POINT_B, SCALAR, 1_800_000_000, 3),
        "dkg2": wire.DkgRound2(KEY, SCALAR, POINT_A),
        "signer": wire.SignerAnnouncement(KEY, 255, 1_800_000_000),
        "ack": wire.Ack(),
        "refused": wire.Refused("rate", "too many requests", SESSION),
        "refused-no-session": wire.Refused("busy", "the signer is busy"),
    }


TAGS: Final = {
    "csr": "csr",
    "csr-ca": "csr",
    "commit": "commit",
    "sign": "sign",
    "share": "share",
    "dkg1": "dkg1",
    "dkg2": "dkg2",
    "signer": "signer",
    "ack": "ack",
    "refused": "refused",
    "refused-no-session": "refused",
}


def fields_of(message: wire.Message) -> list[Any]:
    """The generic MessagePack array of *message*: [tag, field, ...]."""
    fields = msgspec.msgpack.decode(wire.encode(message))
    assert isinstance(fields, list)
    return fields


def encoded_with(message: wire.Message, index: int, value: Any) -> bytes:
    """*message* encoded with array element *index* (0 is the tag) replaced by *value*."""
    fields = fields_of(message)
    fields[index] = value
    return msgspec.msgpack.encode(fields)


# -- round trips ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(samples()))
def test_round_trip(name: str) -> None:
    message = samples()[name]
    data = wire.encode(message)
    decoded = wire.decode(data)
    assert decoded == message
    assert type(decoded) is type(message)
    assert wire.encode(decoded) == data
    assert wire.expect(data, type(message)) == message
    assert fields_of(message)[0] == TAGS[name]


def test_encodings_are_arrays_led_by_the_tag() -> None:
    assert wire.encode(wire.Ack()) == b"\x91\xa3ack"
    assert fields_of(samples()["share"]) == ["share", SESSION, 7, SCALAR]
    assert fields_of(samples()["refused-no-session"]) == [
        "refused",
        "busy",
        "the signer is busy",
        b"",
    ]


def test_defaulted_trailing_fields_may_be_omitted() -> None:
    dkg1 = samples()["dkg1"]
    assert isinstance(dkg1, wire.DkgRound1)
    without_attempt = msgspec.msgpack.encode(fields_of(dkg1)[:-1])
    assert wire.decode(without_attempt) == msgspec.structs.replace(dkg1, attempt=0)
    without_session = msgspec.msgpack.encode(["refused", "rate", "slow down"])
    assert wire.decode(without_session) == wire.Refused("rate", "slow down", b"")


def test_bounds_accept_their_limits() -> None:
    at_limits: list[wire.Message] = [
        wire.Csr(SESSION, KEY, "leaf", bytes(MAX_TBS_SIZE), bytes(8 * 1024)),
        wire.SignRequest(SESSION, [commitment(1 + i % 255) for i in range(MAX_SIGNERS)]),
        wire.Commitment(SESSION, 1, POINT_A, POINT_B),
        wire.SignatureShare(SESSION, 255, SCALAR),
        wire.DkgRound1(KEY, [POINT_A] * MAX_SIGNERS, POINT_B, SCALAR, 2**62, 2**31),
        wire.DkgRound1(KEY, [POINT_A] * 2, POINT_B, SCALAR, 0, 0),
        wire.Refused("r" * 64, "x" * 512, bytes(32)),
        wire.SignerAnnouncement(KEY, 1, 0),
    ]
    for message in at_limits:
        assert wire.decode(wire.encode(message)) == message


# -- refusals -------------------------------------------------------------------------------------

OUT_OF_BOUNDS: Final[dict[str, Any]] = {
    "csr session 15 bytes": lambda: wire.Csr(SESSION[:15], KEY, "leaf", b"", b""),
    "csr session 17 bytes": lambda: wire.Csr(SESSION + b"\x00", KEY, "leaf", b"", b""),
    "csr ca_key 31 bytes": lambda: wire.Csr(SESSION, KEY[:31], "leaf", b"", b""),
    "csr kind": lambda: wire.Csr(SESSION, KEY, "root", b"", b""),  # type: ignore[arg-type]
    "csr tbs 16 KiB + 1": lambda: wire.Csr(SESSION, KEY, "leaf", bytes(MAX_TBS_SIZE + 1), b""),
    "csr contact 8 KiB + 1": lambda: wire.Csr(SESSION, KEY, "leaf", b"", bytes(8 * 1024 + 1)),
    "commitment identifier 0": lambda: commitment(0),
    "commitment identifier 256": lambda: commitment(256),
    "commitment identifier -1": lambda: commitment(-1),
    "commitment session empty": lambda: wire.Commitment(b"", 1, POINT_A, POINT_B),
    "commitment hiding 33 bytes": lambda: wire.Commitment(SESSION, 1, POINT_A + b"\x00", POINT_B),
    "sign 256 commitments": lambda: wire.SignRequest(SESSION, [commitment()] * 256),
    "sign session 15 bytes": lambda: wire.SignRequest(SESSION[:15], [commitment()]),
    "sign bad commitment inside": lambda: wire.SignRequest(SESSION, [commitment(0)]),
    "share identifier 0": lambda: wire.SignatureShare(SESSION, 0, SCALAR),
    "share identifier 256": lambda: wire.SignatureShare(SESSION, 256, SCALAR),
    "share 31 bytes": lambda: wire.SignatureShare(SESSION, 1, SCALAR[:31]),
    "share session 32 bytes": lambda: wire.SignatureShare(KEY, 1, SCALAR),
    "dkg1 one commitment": lambda: wire.DkgRound1(KEY, [POINT_A], POINT_B, SCALAR, 0),
    "dkg1 256 commitments": lambda: wire.DkgRound1(KEY, [POINT_A] * 256, POINT_B, SCALAR, 0),
    "dkg1 short commitment": lambda: wire.DkgRound1(KEY, [POINT_A, KEY[:5]], POINT_B, SCALAR, 0),
    "dkg1 session 16 bytes": lambda: wire.DkgRound1(SESSION, [POINT_A] * 2, POINT_B, SCALAR, 0),
    "dkg1 negative timestamp": lambda: wire.DkgRound1(KEY, [POINT_A] * 2, POINT_B, SCALAR, -1),
    "dkg1 timestamp 2**62 + 1": lambda: wire.DkgRound1(
        KEY, [POINT_A] * 2, POINT_B, SCALAR, 2**62 + 1
    ),
    "dkg1 attempt -1": lambda: wire.DkgRound1(KEY, [POINT_A] * 2, POINT_B, SCALAR, 0, -1),
    "dkg1 attempt 2**31 + 1": lambda: wire.DkgRound1(
        KEY, [POINT_A] * 2, POINT_B, SCALAR, 0, 2**31 + 1
    ),
    "dkg2 share 33 bytes": lambda: wire.DkgRound2(KEY, SCALAR + b"\x00", POINT_A),
    "dkg2 digest empty": lambda: wire.DkgRound2(KEY, SCALAR, b""),
    "signer identifier 0": lambda: wire.SignerAnnouncement(KEY, 0, 0),
    "signer identifier 256": lambda: wire.SignerAnnouncement(KEY, 256, 0),
    "signer ca_key 16 bytes": lambda: wire.SignerAnnouncement(SESSION, 1, 0),
    "refused rule 65 chars": lambda: wire.Refused("r" * 65, "reason"),
    "refused reason 513 chars": lambda: wire.Refused("rule", "x" * 513),
    "refused session 33 bytes": lambda: wire.Refused("rule", "reason", bytes(33)),
}


@pytest.mark.parametrize("case", list(OUT_OF_BOUNDS))
def test_out_of_bounds_field_refused(case: str) -> None:
    data = wire.encode(OUT_OF_BOUNDS[case]())
    assert len(data) <= MAX_MESSAGE_SIZE  # the field bound trips, not the size limit
    with pytest.raises(WireError, match="malformed threshold CA message"):
        wire.decode(data)


WRONG_TYPES: Final[dict[str, tuple[str, int, Any]]] = {
    "identifier as bool": ("commit", 2, True),
    "identifier as float": ("commit", 2, 3.0),
    "identifier as str": ("share", 2, "7"),
    "session as str": ("share", 1, "0123456789abcdef"),
    "share as list": ("share", 3, list(SCALAR)),
    "kind as bytes": ("csr", 3, b"leaf"),
    "tbs as str": ("csr", 4, "tbs"),
    "commitments as map": ("sign", 2, {"a": 1}),
    "timestamp as float": ("dkg1", 5, 1.5),
    "timestamp as nil": ("dkg1", 5, None),
    "rule as bytes": ("refused", 1, b"rate"),
    "unknown tag": ("ack", 0, "hello"),
    "tag as int": ("ack", 0, 1),
}


@pytest.mark.parametrize("case", list(WRONG_TYPES))
def test_wrong_field_type_refused(case: str) -> None:
    name, index, value = WRONG_TYPES[case]
    with pytest.raises(WireError, match="malformed threshold CA message"):
        wire.decode(encoded_with(samples()[name], index, value))


@pytest.mark.parametrize("name", list(samples()))
def test_extra_or_missing_fields_refused(name: str) -> None:
    fields = fields_of(samples()[name])
    with pytest.raises(WireError):
        wire.decode(msgspec.msgpack.encode([*fields, 0]))
    if name not in ("ack", "dkg1", "refused", "refused-no-session"):  # these end in defaults
        with pytest.raises(WireError):
            wire.decode(msgspec.msgpack.encode(fields[:-1]))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc0",
        b"\x90",
        b"\x80",
        b"\xa3ack",
        msgspec.msgpack.encode({"ack": []}),
        msgspec.msgpack.encode(["ack"]) + b"\x00",
        wire.encode(wire.Ack())[:-1],
        b"\x91" * 40_000 + b"\xc0",
        b"\xdd\xff\xff\xff\xff",  # an array claiming 4 billion elements
        b"\xc6\xff\xff\xff\xff",  # a bin claiming 4 GiB
    ],
    ids=lambda d: d[:12].hex() or "empty",
)
def test_malformed_bytes_refused(data: bytes) -> None:
    with pytest.raises(WireError, match="malformed threshold CA message"):
        wire.decode(data)


def test_oversized_input_refused() -> None:
    valid = wire.encode(wire.Csr(SESSION, KEY, "leaf", bytes(MAX_TBS_SIZE), bytes(8 * 1024)))
    for data in (bytes(MAX_MESSAGE_SIZE + 1), valid + bytes(MAX_MESSAGE_SIZE + 1 - len(valid))):
        with pytest.raises(WireError, match=f"message of {MAX_MESSAGE_SIZE + 1} bytes exceeds"):
            wire.decode(data)
    with pytest.raises(WireError, match="exceeds"):
        wire.expect(bytes(MAX_MESSAGE_SIZE + 1), wire.Ack)


@pytest.mark.parametrize(
    "data",
    [
        b"\x91\xa1\x80",  # the tag
        wire.encode(wire.Refused("rate", "slow")).replace(b"\xa4rate", b"\xa4\x80ate"),
        wire.encode(wire.Csr(SESSION, KEY, "leaf", b"", b"")).replace(b"\xa4leaf", b"\xa4\xffeaf"),
    ],
    ids=["tag", "refused rule", "csr kind"],
)
def test_string_that_is_not_utf8_refused(data: bytes) -> None:
    with pytest.raises(WireError):
        wire.decode(data)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_decode_fuzz_arbitrary_bytes(data: bytes) -> None:
    with contextlib.suppress(WireError):
        message = wire.decode(data)
        assert wire.decode(wire.encode(message)) == message


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid encoding of some message with one byte replaced, a cut, or bytes inserted."""
    data = wire.encode(samples()[draw(st.sampled_from(list(samples())))])
    how = draw(st.sampled_from(["replace", "truncate", "insert"]))
    at = draw(st.integers(0, len(data) - 1))
    if how == "replace":
        return data[:at] + bytes([draw(st.integers(0, 255))]) + data[at + 1 :]
    if how == "truncate":
        return data[:at]
    return data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_decode_fuzz_mutations(data: bytes) -> None:
    with contextlib.suppress(WireError):
        message = wire.decode(data)
        assert wire.decode(wire.encode(message)) == message


# -- expect ---------------------------------------------------------------------------------------


def test_expect_wrong_kind_is_a_wire_error() -> None:
    data = wire.encode(samples()["commit"])
    with pytest.raises(WireError, match="expected SignatureShare, got Commitment") as caught:
        wire.expect(data, wire.SignatureShare)
    assert type(caught.value) is WireError
    with pytest.raises(WireError, match="expected Ack, got Csr"):
        wire.expect(wire.encode(samples()["csr"]), wire.Ack)


def test_expect_refused_raises_refused_error() -> None:
    data = wire.encode(wire.Refused("rate", "too many requests from this requester", SESSION))
    with pytest.raises(RefusedError) as caught:
        wire.expect(data, wire.SignatureShare)
    assert caught.value.rule == "rate"
    assert str(caught.value) == "too many requests from this requester"
    assert isinstance(caught.value, WireError)
    assert isinstance(caught.value, KoriumError)
    assert wire.expect(data, wire.Refused) == wire.Refused(
        "rate", "too many requests from this requester", SESSION
    )


def test_expect_malformed_is_a_wire_error() -> None:
    with pytest.raises(WireError, match="malformed"):
        wire.expect(b"\x92\xa6commit\x00", wire.Commitment)


# -- secrets --------------------------------------------------------------------------------------


def test_dkg_round2_repr_hides_the_share() -> None:
    share = bytes.fromhex("5f" * 16 + "a7" * 16)
    message = wire.DkgRound2(KEY, share, POINT_A)
    for text in (repr(message), str(message), repr([message]), f"{message!r}"):
        assert share.hex() not in text
        assert repr(share) not in text
        assert "a7a7" not in text
    assert repr(message) == f"DkgRound2(session={KEY.hex()[:16]}...)"
