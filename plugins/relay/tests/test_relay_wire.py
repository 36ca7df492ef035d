"""Tests of the relay plugin's messages (``korium_relay.wire``), no sockets, no loop.

Every message round-trips; ``decode`` is fuzzed with hypothesis (random bytes, mutated valid
messages, well-formed MessagePack of the wrong shape, invalid UTF-8 in text fields, oversized
input) and only ever returns a message or raises ``WireError``. ``RelaySignal.verify`` accepts a
good signal, refuses each kind of bad one with ``SignalError`` and a message that says why, and
its signature covers every field: changing any byte of target, initiator, session, relay or
timestamp breaks it.
"""

from __future__ import annotations

import typing
from collections.abc import Callable

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from korium_relay import wire
from korium_relay.wire import (
    Ack,
    CheckReachability,
    Incoming,
    Join,
    Joined,
    Reachability,
    Refused,
    RelaySignal,
    Reserve,
    SignalError,
    WireError,
)

from korium.errors import KoriumError
from korium.identity import Identity, Keypair

INITIATOR = Keypair.from_seed(b"\x11" * 32)
TARGET = Keypair.from_seed(b"\x22" * 32).identity
RELAY = Keypair.from_seed(b"\x33" * 32).identity
SESSION = bytes(range(16))
NOW_MS = 1_700_000_000_000
MAX_AGE_MS = 30_000
MAX_SKEW_MS = 5_000
FOREVER = 2**62
"""A max age and skew no timestamp exceeds: only the signature can fail."""

SIGNAL = RelaySignal.create(INITIATOR, TARGET, SESSION, RELAY, NOW_MS)


def verify(signal: RelaySignal, *, me: Identity = TARGET, now_ms: int = NOW_MS) -> Identity:
    return signal.verify(me, now_ms, max_age_ms=MAX_AGE_MS, max_skew_ms=MAX_SKEW_MS)


def samples() -> list[wire.Message]:
    """One message of every kind, with fields at their limits where it matters."""
    return [
        SIGNAL,
        Reserve(SIGNAL),
        Join(SESSION),
        Joined(SESSION, "127.0.0.1:4433"),
        Joined(SESSION, "[2001:db8::1]:65535"),
        Incoming(SIGNAL),
        CheckReachability(bytes(range(32))),
        Reachability("203.0.113.7:61000", True, 65535),
        Reachability("x" * 64, False),
        Ack(),
        Refused("capacity", "relay is at capacity (10000 sessions)"),
        Refused("r" * 64, "é" * 512),  # lengths count characters, not bytes
    ]


# -- round trips ----------------------------------------------------------------------------------


def test_every_message_kind_has_a_sample() -> None:
    kinds = set(typing.get_args(wire.Message))
    assert {type(message) for message in samples()} == kinds


@pytest.mark.parametrize("message", samples(), ids=lambda m: type(m).__name__)
def test_every_message_round_trips(message: wire.Message) -> None:
    data = wire.encode(message)
    assert len(data) <= wire.MAX_MESSAGE_SIZE
    assert wire.decode(data) == message
    assert wire.expect(data, type(message)) == message


def test_a_signal_still_verifies_after_a_round_trip() -> None:
    carried = wire.decode(wire.encode(Incoming(SIGNAL)))
    assert isinstance(carried, Incoming)
    assert verify(carried.signal) == INITIATOR.identity


bytes32 = st.binary(min_size=32, max_size=32)
session_ids = st.binary(min_size=16, max_size=16)
host_ports = st.text(max_size=64)
signals = st.builds(
    RelaySignal,
    target=bytes32,
    initiator=bytes32,
    session=session_ids,
    relay=bytes32,
    timestamp_ms=st.integers(0, 2**62),
    signature=st.binary(min_size=64, max_size=64),
)
messages: st.SearchStrategy[wire.Message] = st.one_of(
    signals,
    st.builds(Reserve, signals),
    st.builds(Join, session_ids),
    st.builds(Joined, session_ids, host_ports),
    st.builds(Incoming, signals),
    st.builds(CheckReachability, bytes32),
    st.builds(Reachability, host_ports, st.booleans(), st.integers(0, 65535)),
    st.just(Ack()),
    st.builds(Refused, st.text(max_size=64), st.text(max_size=512)),
)


@given(messages)
def test_any_valid_message_round_trips(message: wire.Message) -> None:
    assert wire.decode(wire.encode(message)) == message


# -- decoding hostile input -----------------------------------------------------------------------


def decodes_or_wire_error(data: bytes) -> None:
    """``decode`` returns a message or raises WireError (a KoriumError): nothing else."""
    try:
        message = wire.decode(data)
    except WireError:
        return
    assert isinstance(message, typing.get_args(wire.Message))


def test_the_errors_are_korium_errors() -> None:
    assert issubclass(WireError, KoriumError)
    assert issubclass(wire.RefusedError, WireError)
    assert issubclass(SignalError, KoriumError)


@settings(max_examples=300)
@given(st.binary(max_size=5000))
def test_decode_random_bytes(data: bytes) -> None:
    decodes_or_wire_error(data)


@settings(max_examples=300)
@given(
    st.sampled_from([wire.encode(m) for m in samples()]),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 255)), min_size=1, max_size=8),
    st.integers(0, 10_000),
)
def test_decode_mutated_messages(data: bytes, edits: list[tuple[int, int]], cut: int) -> None:
    mutated = bytearray(data)
    for position, value in edits:
        mutated[position % len(mutated)] = value
    decodes_or_wire_error(bytes(mutated))
    decodes_or_wire_error(bytes(mutated[: cut % (len(mutated) + 1)]))


msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats()
    | st.text(max_size=80)
    | st.binary(max_size=80),
    lambda inner: st.lists(inner, max_size=8) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=30,
)
TAGS = [str(kind.__struct_config__.tag) for kind in typing.get_args(wire.Message)]
tags = st.sampled_from([*TAGS, "nope", ""])


def test_the_fuzzed_tags_are_the_messages_tags() -> None:
    assert sorted(TAGS) == sorted(
        [
            "signal",
            "reserve",
            "join",
            "joined",
            "incoming",
            "check",
            "reachability",
            "ack",
            "refused",
        ]
    )


@settings(max_examples=300)
@given(tags, st.lists(msgpack_values, max_size=8))
def test_decode_well_formed_msgpack_of_the_wrong_shape(tag: str, fields: list[object]) -> None:
    decodes_or_wire_error(msgspec.msgpack.encode([tag, *fields]))
    decodes_or_wire_error(msgspec.msgpack.encode(fields))


def msgpack_str(raw: bytes) -> bytes:
    """A MessagePack str holding *raw* as it is (which need not be UTF-8)."""
    if len(raw) < 32:
        return bytes([0xA0 | len(raw)]) + raw
    return bytes([0xD9, len(raw)]) + raw


def invalid_utf8(raw: bytes) -> bool:
    try:
        raw.decode()
    except UnicodeDecodeError:
        return True
    return False


bad_text = st.binary(min_size=1, max_size=200).filter(invalid_utf8)
TEXT_FIELDS: dict[str, tuple[Callable[[bytes], bytes], bytes, wire.Message]] = {
    # field: (a frame with that field's encoded text, valid text, what the frame then is)
    "refused.rule": (
        lambda s: b"\x93" + msgpack_str(b"refused") + s + msgpack_str(b"why"),
        b"rule",
        Refused("rule", "why"),
    ),
    "refused.reason": (
        lambda s: b"\x93" + msgpack_str(b"refused") + msgpack_str(b"rule") + s,
        b"why",
        Refused("rule", "why"),
    ),
    "joined.peer_address": (
        lambda s: b"\x93" + msgpack_str(b"joined") + b"\xc4\x10" + SESSION + s,
        b"10.0.0.1:9",
        Joined(SESSION, "10.0.0.1:9"),
    ),
    "reachability.observed": (
        lambda s: b"\x93" + msgpack_str(b"reachability") + s + b"\xc3",
        b"10.0.0.1:9",
        Reachability("10.0.0.1:9", True),
    ),
    "tag": (lambda s: b"\x91" + s, b"ack", Ack()),
}


@pytest.mark.parametrize("field", sorted(TEXT_FIELDS))
def test_the_utf8_frames_are_valid_with_valid_text(field: str) -> None:
    """Control for the test below: with valid text, each hand-built frame decodes."""
    build, text, expected = TEXT_FIELDS[field]
    assert wire.decode(build(msgpack_str(text))) == expected


@pytest.mark.parametrize("field", sorted(TEXT_FIELDS))
@given(raw=bad_text)
def test_invalid_utf8_in_a_text_field_is_a_wire_error(field: str, raw: bytes) -> None:
    build, _, _ = TEXT_FIELDS[field]
    with pytest.raises(WireError, match="malformed relay message"):
        wire.decode(build(msgpack_str(raw)))


@settings(max_examples=30)
@given(st.integers(wire.MAX_MESSAGE_SIZE + 1, 16 * wire.MAX_MESSAGE_SIZE), st.binary(max_size=64))
def test_oversized_input_is_refused_before_decoding(size: int, start: bytes) -> None:
    data = start.ljust(size, b"\x00")
    with pytest.raises(WireError, match=rf"{size} bytes exceeds {wire.MAX_MESSAGE_SIZE}"):
        wire.decode(data)


def test_an_oversized_well_formed_message_is_refused() -> None:
    big = msgspec.msgpack.encode(["refused", "r", "x" * wire.MAX_MESSAGE_SIZE])
    with pytest.raises(WireError, match="exceeds"):
        wire.decode(big)


@pytest.mark.parametrize(
    ("data", "phrase"),
    [
        (b"", "malformed"),
        (b"\xc1", "malformed"),
        (msgspec.msgpack.encode(["join", b"short"]), "malformed"),
        (msgspec.msgpack.encode(["join", SESSION, "extra"]), "malformed"),
        (msgspec.msgpack.encode(["refused", "r" * 65, "why"]), "malformed"),
        (msgspec.msgpack.encode(["refused", "r", "y" * 513]), "malformed"),
        (msgspec.msgpack.encode(["joined", SESSION, "h" * 65]), "malformed"),
        (msgspec.msgpack.encode(["reachability", "h:1", True, 65536]), "malformed"),
        (msgspec.msgpack.encode(["unknown"]), "malformed"),
        (msgspec.msgpack.encode({"type": "ack"}), "malformed"),
        (b"\x91" * 4000 + b"\xc0", "malformed"),  # deep nesting
    ],
)
def test_specific_malformed_inputs(data: bytes, phrase: str) -> None:
    with pytest.raises(WireError, match=phrase):
        wire.decode(data)


def test_a_signal_timestamp_is_bounded() -> None:
    fields = [
        "signal",
        bytes(TARGET),
        bytes(INITIATOR.identity),
        SESSION,
        bytes(RELAY),
        2**62 + 1,
        bytes(64),
    ]
    with pytest.raises(WireError):
        wire.decode(msgspec.msgpack.encode(fields))
    fields[5] = -1
    with pytest.raises(WireError):
        wire.decode(msgspec.msgpack.encode(fields))


# -- expect ---------------------------------------------------------------------------------------


def test_expect_returns_the_kind_asked_for() -> None:
    joined = Joined(SESSION, "127.0.0.1:1")
    assert wire.expect(wire.encode(joined), Joined) is not None
    assert wire.expect(wire.encode(joined), Joined) == joined


def test_expect_turns_refused_into_refused_error() -> None:
    with pytest.raises(wire.RefusedError) as raised:
        wire.expect(wire.encode(Refused("policy", "no strangers")), Joined)
    assert raised.value.rule == "policy"
    assert str(raised.value) == "no strangers"
    assert isinstance(raised.value, WireError)


def test_expect_refuses_another_kind() -> None:
    with pytest.raises(WireError, match="expected Joined, got Ack") as raised:
        wire.expect(wire.encode(Ack()), Joined)
    assert not isinstance(raised.value, wire.RefusedError)


def test_what_encode_accepts_decode_accepts() -> None:
    message = Refused("policy", "relay policy refuses a -> b: " + "no " * 200)
    try:
        data = wire.encode(message)
    except WireError:
        return  # refusing to encode it is fine too
    assert isinstance(wire.decode(data), Refused)


# -- RelaySignal.verify ---------------------------------------------------------------------------


def test_a_good_signal_verifies_to_its_initiator() -> None:
    assert verify(SIGNAL) == INITIATOR.identity
    assert SIGNAL.initiator == bytes(INITIATOR.identity)
    assert SIGNAL.target == bytes(TARGET)
    assert SIGNAL.relay == bytes(RELAY)
    INITIATOR.identity.verify(wire.SIGNAL_DOMAIN, SIGNAL.signed_bytes(), SIGNAL.signature)


def test_signed_bytes_lay_out_every_field() -> None:
    assert SIGNAL.signed_bytes() == (
        bytes(TARGET)
        + bytes(INITIATOR.identity)
        + SESSION
        + bytes(RELAY)
        + NOW_MS.to_bytes(8, "little")
    )


def test_age_and_skew_limits_are_inclusive() -> None:
    assert verify(SIGNAL, now_ms=NOW_MS + MAX_AGE_MS) == INITIATOR.identity
    assert verify(SIGNAL, now_ms=NOW_MS - MAX_SKEW_MS) == INITIATOR.identity


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (
            lambda: verify(SIGNAL, me=RELAY),
            "the signal is for another node",
        ),
        (
            lambda: verify(SIGNAL, now_ms=NOW_MS + MAX_AGE_MS + 1),
            f"the signal is {MAX_AGE_MS + 1} ms old (at most {MAX_AGE_MS})",
        ),
        (
            lambda: verify(SIGNAL, now_ms=NOW_MS - MAX_SKEW_MS - 1),
            f"the signal is {MAX_SKEW_MS + 1} ms in the future",
        ),
        (
            lambda: verify(
                msgspec.structs.replace(
                    RelaySignal.create(
                        Keypair.from_seed(b"\x44" * 32), TARGET, SESSION, RELAY, NOW_MS
                    ),
                    initiator=bytes(INITIATOR.identity),
                )
            ),
            "the signal's signature does not verify: signature does not verify for identity",
        ),
        (
            lambda: verify(msgspec.structs.replace(SIGNAL, initiator=bytes(32))),
            "the signal's signature does not verify: the all-zero key is not a valid identity",
        ),
        (
            lambda: verify(msgspec.structs.replace(SIGNAL, signature=bytes(64))),
            "the signal's signature does not verify",
        ),
    ],
    ids=["someone else", "too old", "future", "wrong signer", "invalid initiator", "zeroes"],
)
def test_each_bad_signal_says_why(make: Callable[[], Identity], message: str) -> None:
    with pytest.raises(SignalError) as raised:
        make()
    assert str(raised.value).startswith(message)
    assert isinstance(raised.value, KoriumError)


def test_a_signature_under_another_domain_does_not_verify() -> None:
    unsigned = msgspec.structs.replace(SIGNAL, signature=bytes(64))
    elsewhere = INITIATOR.sign(b"korium-relay-signal-v2:", unsigned.signed_bytes())
    with pytest.raises(SignalError, match="signature does not verify"):
        verify(msgspec.structs.replace(SIGNAL, signature=elsewhere))


def flip(raw: bytes, index: int, mask: int) -> bytes:
    changed = bytearray(raw)
    changed[index % len(raw)] ^= mask
    return bytes(changed)


@given(
    field=st.sampled_from(["initiator", "session", "relay", "signature"]),
    index=st.integers(0, 63),
    mask=st.integers(1, 255),
)
def test_the_signature_covers_every_byte(field: str, index: int, mask: int) -> None:
    tampered = msgspec.structs.replace(SIGNAL, **{field: flip(getattr(SIGNAL, field), index, mask)})
    with pytest.raises(SignalError, match="signature does not verify"):
        tampered.verify(TARGET, NOW_MS, max_age_ms=FOREVER, max_skew_ms=FOREVER)


def valid_flips(raw: bytes) -> list[Identity]:
    """For each byte of *raw*, the first single-byte change that is still a valid key."""
    found = []
    for index in range(len(raw)):
        for mask in range(1, 256):
            try:
                found.append(Identity(flip(raw, index, mask)))
            except KoriumError:
                continue
            break
    return found


def test_the_signature_covers_every_byte_of_the_target() -> None:
    targets = valid_flips(SIGNAL.target)
    assert len(targets) == 32  # verify only runs for the node the signal names: a valid key
    for me in targets:
        tampered = msgspec.structs.replace(SIGNAL, target=bytes(me))
        with pytest.raises(SignalError, match="signature does not verify"):
            tampered.verify(me, NOW_MS, max_age_ms=FOREVER, max_skew_ms=FOREVER)


@given(bit=st.integers(0, 61))
def test_the_signature_covers_the_timestamp(bit: int) -> None:
    tampered = msgspec.structs.replace(SIGNAL, timestamp_ms=SIGNAL.timestamp_ms ^ (1 << bit))
    with pytest.raises(SignalError, match="signature does not verify"):
        tampered.verify(TARGET, NOW_MS, max_age_ms=FOREVER, max_skew_ms=FOREVER)


def test_an_untampered_signal_passes_the_same_lenient_check() -> None:
    """The tamper tests above fail only because of the change (control)."""
    assert SIGNAL.verify(TARGET, NOW_MS, max_age_ms=FOREVER, max_skew_ms=FOREVER) == (
        INITIATOR.identity
    )
