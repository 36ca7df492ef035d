"""Tests of the GossipSub wire format and signing (``korium_gossipsub.messages``).

Whatever bytes a peer sends, ``decode`` either returns a frame or raises
:class:`GossipDecodeError`; every bound holds at its limit and fails one past it. A message's
id and signature bind topic, publisher, sequence number and data, under their own domain.
"""

from __future__ import annotations

import struct
from typing import Any

import blake3
import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from korium_gossipsub.config import MAX_MESSAGE_SIZE, MAX_TOPIC_LENGTH
from korium_gossipsub.errors import GossipDecodeError, InvalidTopicError
from korium_gossipsub.messages import (
    DOMAIN,
    ID_LEN,
    MAX_ADDRESS,
    MAX_BACKOFF_S,
    MAX_ENTRIES,
    MAX_IDS,
    MAX_PX,
    MAX_PX_ADDRESSES,
    U64_MAX,
    Frame,
    Graft,
    IDontWant,
    IHave,
    IWant,
    Prune,
    PxPeer,
    SeqnoClock,
    SubOpt,
    check_topic,
    decode,
    encode,
    message_id,
    seqno_time_ms,
    sign,
    signed_payload,
    valid_topic,
    verify,
)

from korium.errors import SignatureError
from korium.identity import Keypair

KEYPAIR = Keypair.from_seed(b"\x01" * 32)
OTHER = Keypair.from_seed(b"\x02" * 32)
SEQNO = 1_700_000_000_000_000
MSG = sign(KEYPAIR, "news", SEQNO, b"hello")
ID = bytes(range(ID_LEN))
PX = PxPeer(bytes(OTHER.identity), ["10.0.0.2:4433", "[2001:db8::2]:4433"])

FULL = Frame(
    subscriptions=[SubOpt(True, "news"), SubOpt(False, "old")],
    messages=[MSG, sign(OTHER, "t", 7, b"")],
    ihave=[IHave("news", [MSG.id, ID])],
    iwant=[IWant([ID])],
    graft=[Graft("news")],
    prune=[Prune("news", [PX, PxPeer(bytes(32))], 60), Prune("old")],
    idontwant=[IDontWant([MSG.id])],
)


def accepted(frame: Frame) -> None:
    """*frame* survives the wire unchanged."""
    assert decode(encode(frame)) == frame


def refused(frame: Frame) -> None:
    """*frame*'s wire form is refused with exactly GossipDecodeError."""
    with pytest.raises(GossipDecodeError) as caught:
        decode(encode(frame))
    assert type(caught.value) is GossipDecodeError


def with_message(**changes: Any) -> Frame:
    """A frame of one message with fields replaced (msgspec does not validate on init)."""
    return Frame(messages=[msgspec.structs.replace(MSG, **changes)])


# -- round trips -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [
        Frame(),
        Frame(subscriptions=[SubOpt(True, "a")]),
        Frame(messages=[MSG]),
        Frame(ihave=[IHave("a", [])]),
        Frame(iwant=[IWant([ID, ID])]),
        Frame(graft=[Graft("a")]),
        Frame(prune=[Prune("a")]),
        Frame(prune=[Prune("a", [PxPeer(bytes(32), [])], MAX_BACKOFF_S)]),
        Frame(idontwant=[IDontWant([ID])]),
        FULL,
    ],
)
def test_every_struct_round_trips(frame: Frame) -> None:
    accepted(frame)


def test_full_frame_round_trip_keeps_every_field() -> None:
    decoded = decode(encode(FULL))
    assert decoded == FULL
    assert decoded.messages[0].payload() == MSG.payload()
    assert verify(decoded.messages[0], decoded.messages[0].payload()) == KEYPAIR.identity
    assert decoded.prune[0].peers[0].addresses == ["10.0.0.2:4433", "[2001:db8::2]:4433"]
    assert decoded.prune[0].backoff_s == 60
    assert decoded.prune[1] == Prune("old", [], 0)


def test_empty_frame_is_false_and_short_forms_decode() -> None:
    """A keepalive is an empty frame. msgspec ignores omit_defaults on array-like structs
    (msgspec issue #720), so it is 7 empty lists on the wire; trailing lists may be left out."""
    assert encode(Frame()) == b"\x97" + b"\x90" * 7
    assert decode(b"\x90") == Frame()
    assert decode(b"\x91\x91\x92\xc3\xa1a") == Frame(subscriptions=[SubOpt(True, "a")])
    assert not Frame()
    assert Frame(graft=[Graft("a")])


# -- bounds: at the limit accepted, one past refused ------------------------------------------

TOPIC_AT = "t" * MAX_TOPIC_LENGTH
TOPIC_PAST = "t" * (MAX_TOPIC_LENGTH + 1)


def topic_frames(topic: str) -> list[Frame]:
    """*topic* in every place a topic travels."""
    return [
        Frame(subscriptions=[SubOpt(True, topic)]),
        with_message(topic=topic),
        Frame(ihave=[IHave(topic, [ID])]),
        Frame(graft=[Graft(topic)]),
        Frame(prune=[Prune(topic)]),
    ]


@pytest.mark.parametrize("index", range(5))
def test_topic_of_256_characters_is_accepted_257_and_empty_refused(index: int) -> None:
    assert len(TOPIC_AT) == 256
    accepted(topic_frames(TOPIC_AT)[index])
    refused(topic_frames(TOPIC_PAST)[index])
    refused(topic_frames("")[index])


def test_data_of_64_kib_is_accepted_one_more_byte_refused() -> None:
    assert MAX_MESSAGE_SIZE == 65536
    accepted(with_message(data=b"x" * 65536))
    refused(with_message(data=b"x" * 65537))


@pytest.mark.parametrize("kind", ["ihave", "iwant", "idontwant"])
def test_5000_ids_are_accepted_5001_refused(kind: str) -> None:
    assert MAX_IDS == 5000

    def frame(count: int) -> Frame:
        ids = [ID] * count
        entry: dict[str, Any] = {
            "ihave": IHave("t", ids),
            "iwant": IWant(ids),
            "idontwant": IDontWant(ids),
        }
        return Frame(**{kind: [entry[kind]]})

    accepted(frame(5000))
    refused(frame(5001))


ENTRY: dict[str, Any] = {
    "subscriptions": SubOpt(True, "t"),
    "messages": MSG,
    "ihave": IHave("t", [ID]),
    "iwant": IWant([ID]),
    "graft": Graft("t"),
    "prune": Prune("t"),
    "idontwant": IDontWant([ID]),
}


@pytest.mark.parametrize("kind", sorted(ENTRY))
def test_1000_entries_of_a_kind_are_accepted_1001_refused(kind: str) -> None:
    assert MAX_ENTRIES == 1000
    accepted(Frame(**{kind: [ENTRY[kind]] * 1000}))
    refused(Frame(**{kind: [ENTRY[kind]] * 1001}))


def test_16_px_peers_are_accepted_17_refused() -> None:
    assert MAX_PX == 16
    accepted(Frame(prune=[Prune("t", [PX] * 16, 10)]))
    refused(Frame(prune=[Prune("t", [PX] * 17, 10)]))


def test_4_addresses_of_64_characters_are_accepted_5_or_65_characters_refused() -> None:
    assert (MAX_PX_ADDRESSES, MAX_ADDRESS) == (4, 64)
    key = bytes(OTHER.identity)
    accepted(Frame(prune=[Prune("t", [PxPeer(key, ["a" * 64] * 4)])]))
    refused(Frame(prune=[Prune("t", [PxPeer(key, ["a" * 64] * 5)])]))
    refused(Frame(prune=[Prune("t", [PxPeer(key, ["a" * 65])])]))


@pytest.mark.parametrize("length", [31, 33])
def test_px_identity_of_other_than_32_bytes_is_refused(length: int) -> None:
    refused(Frame(prune=[Prune("t", [PxPeer(b"k" * length)])]))


@pytest.mark.parametrize(("length", "ok"), [(0, False), (63, False), (64, True), (65, False)])
def test_signature_must_be_64_bytes(length: int, ok: bool) -> None:
    frame = with_message(signature=b"s" * length)
    accepted(frame) if ok else refused(frame)


@pytest.mark.parametrize(("length", "ok"), [(31, False), (32, True), (33, False)])
def test_ids_must_be_32_bytes_everywhere(length: int, ok: bool) -> None:
    ident = b"i" * length
    for frame in (
        with_message(id=ident),
        Frame(ihave=[IHave("t", [ID, ident])]),
        Frame(iwant=[IWant([ident])]),
        Frame(idontwant=[IDontWant([ident])]),
    ):
        accepted(frame) if ok else refused(frame)


@pytest.mark.parametrize(("length", "ok"), [(31, False), (32, True), (33, False)])
def test_source_must_be_32_bytes(length: int, ok: bool) -> None:
    frame = with_message(source=b"k" * length)
    accepted(frame) if ok else refused(frame)


def test_seqno_spans_u64_and_negative_is_refused() -> None:
    accepted(with_message(seqno=0))
    accepted(with_message(seqno=U64_MAX))
    refused(with_message(seqno=-1))


def test_backoff_of_3600_s_is_accepted_3601_or_negative_refused() -> None:
    assert MAX_BACKOFF_S == 3600
    accepted(Frame(prune=[Prune("t", [], 3600)]))
    refused(Frame(prune=[Prune("t", [], 3601)]))
    refused(Frame(prune=[Prune("t", [], -1)]))


def wire(*fields: object) -> bytes:
    return msgspec.msgpack.encode(list(fields))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",  # never used in MessagePack
        b"\x80",  # a map where an array belongs
        b"\x90\x90",  # trailing bytes
        b"\x91",  # truncated
        wire([[True, "t", "extra"]]),  # unknown trailing struct field
        wire([[1, "t"]]),  # int for bool
        wire([[True, b"t"]]),  # bytes for str
        b"\x91\x91\x92\xc3\xa2\xff\xfe",  # invalid UTF-8 topic
        wire([], [[ID, "t", bytes(32), 1.5, b"", bytes(64)]]),  # float seqno
        wire([], [[ID, "t", bytes(32), 2**64 - 1, b"", bytes(64), b"x"]]),  # extra field
        wire([], [], [], [], [], [], [], []),  # an eighth list
        b"\x91" * 100_000 + b"\xc0",  # deep nesting: refused at the first wrong shape
    ],
)
def test_malformed_frames_raise_only_decode_error(data: bytes) -> None:
    with pytest.raises(GossipDecodeError) as caught:
        decode(data)
    assert type(caught.value) is GossipDecodeError


# -- fuzzing ----------------------------------------------------------------------------------


def decodes_or_refuses(data: bytes) -> None:
    """Either a frame that re-encodes to itself, or exactly GossipDecodeError."""
    try:
        frame = decode(data)
    except GossipDecodeError:  # anything else propagates and fails the test
        return
    assert isinstance(frame, Frame)
    assert decode(encode(frame)) == frame


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_only_raise_decode_errors(data: bytes) -> None:
    decodes_or_refuses(data)


msgpack_values: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)  # what MessagePack can hold
    | st.floats()
    | st.text(max_size=40)
    | st.binary(max_size=70)
    | st.sampled_from([ID, bytes(OTHER.identity), bytes(64), "t" * 257, -1, 3601, 2**64 - 1]),
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=25,
)


@settings(max_examples=400, deadline=None)
@given(msgpack_values)
def test_well_formed_msgpack_of_any_shape_only_raises_decode_errors(value: Any) -> None:
    decodes_or_refuses(msgspec.msgpack.encode(value))


@settings(max_examples=150, deadline=None)
@given(st.lists(st.lists(msgpack_values, max_size=3), max_size=8))
def test_frame_shaped_msgpack_only_raises_decode_errors(lists: list[list[Any]]) -> None:
    """Seven lists of entries, as a frame is, with entries of any shape."""
    decodes_or_refuses(msgspec.msgpack.encode(lists))


RAW_FULL: Any = msgspec.msgpack.decode(encode(FULL))


def paths(value: Any, prefix: tuple[int, ...] = ()) -> list[tuple[int, ...]]:
    """Every position inside the nested lists of a decoded frame."""
    found = [prefix]
    if isinstance(value, list):
        for i, item in enumerate(value):
            found.extend(paths(item, (*prefix, i)))
    return found


FULL_PATHS = paths(RAW_FULL)[1:]


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(FULL_PATHS), msgpack_values)
def test_one_field_of_a_valid_frame_replaced_only_raises_decode_errors(
    path: tuple[int, ...], value: Any
) -> None:
    """Structure-aware: every field of a full frame, in turn, set to anything."""
    raw = msgspec.msgpack.decode(encode(FULL))
    target = raw
    for i in path[:-1]:
        target = target[i]
    target[path[-1]] = value
    decodes_or_refuses(msgspec.msgpack.encode(raw))


VALID = encode(FULL)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(VALID)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "truncate", "extend", "insert", "delete"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "truncate":
            del data[pos:]
        elif op == "extend":
            data.extend(draw(st.binary(min_size=1, max_size=8)))
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and data:
            del data[pos : pos + draw(st.integers(1, 8))]
    return bytes(data)


@settings(max_examples=800, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_frames_only_raise_decode_errors(data: bytes) -> None:
    decodes_or_refuses(data)


def test_every_truncation_of_a_valid_frame_is_refused() -> None:
    for end in range(len(VALID)):
        with pytest.raises(GossipDecodeError):
            decode(VALID[:end])


# -- signing ----------------------------------------------------------------------------------


def test_sign_gives_the_id_of_the_payload_and_verify_gives_the_publisher() -> None:
    assert MSG.id == message_id(MSG.payload())
    assert MSG.id == blake3.blake3(MSG.payload()).digest()
    assert (MSG.topic, MSG.seqno, MSG.data) == ("news", SEQNO, b"hello")
    assert MSG.source == bytes(KEYPAIR.identity)
    assert len(MSG.signature) == 64
    assert MSG.size == 5
    assert verify(MSG, MSG.payload()) == KEYPAIR.identity


def test_signed_payload_layout_is_exactly_as_documented() -> None:
    topic, seqno, data = "news/eu", 0x0102030405060708, b"\x00payload\xff"
    message = sign(KEYPAIR, topic, seqno, data)
    source = bytes(KEYPAIR.identity)
    by_hand = (
        source
        + struct.pack("<I", 7)
        + b"news/eu"
        + struct.pack("<Q", seqno)
        + struct.pack("<I", 9)
        + data
    )
    assert len(data) == 9
    assert by_hand[32:36] == b"\x07\x00\x00\x00"
    assert by_hand[43:51] == bytes([8, 7, 6, 5, 4, 3, 2, 1])
    assert message.payload() == by_hand
    assert signed_payload(source, topic, seqno, data) == by_hand
    assert message.id == blake3.blake3(by_hand).digest()


def test_signature_is_over_the_gossipsub_domain_only() -> None:
    assert DOMAIN == b"korium-gossipsub-v1:"
    payload = MSG.payload()
    KEYPAIR.identity.verify(b"korium-gossipsub-v1:", payload, MSG.signature)
    with pytest.raises(SignatureError):
        KEYPAIR.identity.verify(b"korium-contact-v1:", payload, MSG.signature)
    with pytest.raises(SignatureError):  # the domain is a prefix, not part of the payload
        KEYPAIR.identity.verify(b"korium-gossipsub-v1:", DOMAIN + payload, MSG.signature)


def test_a_signature_made_for_another_domain_does_not_verify() -> None:
    """A korium signature over the same bytes for another purpose cannot be replayed here."""
    foreign = KEYPAIR.sign(b"korium-contact-v1:", MSG.payload())
    forged = msgspec.structs.replace(MSG, signature=foreign)
    assert verify(forged, forged.payload()) is None


FORGERIES: list[tuple[str, object]] = [
    ("topic", "sport"),
    ("source", bytes(OTHER.identity)),
    ("source", bytes(32)),  # not a valid key at all
    ("seqno", SEQNO + 1),
    ("data", b"hellO"),
    ("data", b"hello\x00"),
]


@pytest.mark.parametrize(("field", "value"), FORGERIES)
def test_changing_a_signed_field_breaks_the_id_and_the_signature(field: str, value: object) -> None:
    stale = msgspec.structs.replace(MSG, **{field: value})
    # Id kept: the receiver sees the id mismatch (its first check) ...
    assert message_id(stale.payload()) != stale.id
    # ... and the signature fails too.
    assert verify(stale, stale.payload()) is None
    # Id recomputed by the forger: the id matches, but the signature still fails.
    fresh = msgspec.structs.replace(stale, id=message_id(stale.payload()))
    assert message_id(fresh.payload()) == fresh.id
    assert verify(fresh, fresh.payload()) is None


def test_changing_the_signature_breaks_only_the_signature() -> None:
    for signature in (bytes(64), MSG.signature[:-1] + bytes([MSG.signature[-1] ^ 1])):
        forged = msgspec.structs.replace(MSG, signature=signature)
        assert message_id(forged.payload()) == forged.id
        assert verify(forged, forged.payload()) is None


def test_changing_the_id_breaks_only_the_id() -> None:
    """The id is not signed: a receiver must recompute it (and does, in the router)."""
    forged = msgspec.structs.replace(MSG, id=bytes(32))
    assert message_id(forged.payload()) != forged.id
    assert verify(forged, forged.payload()) == KEYPAIR.identity


def test_verify_rejects_a_signature_over_other_bytes() -> None:
    assert verify(MSG, MSG.payload() + b"x") is None


def test_payload_lengths_prevent_field_boundary_shifts() -> None:
    """Topic "ab" with data "c" and topic "a" with data "bc" sign different bytes."""
    first = signed_payload(bytes(32), "ab", 1, b"c")
    second = signed_payload(bytes(32), "a", 1, b"bc")
    assert first != second
    assert message_id(first) != message_id(second)


# -- topics -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "topic",
    ["", "t" * 257, "café", "naïve/topic", "tab\there", "new\nline", "nul\x00", "del\x7f", "\x1b"],
)
def test_invalid_topics_are_refused(topic: str) -> None:
    assert not valid_topic(topic)
    with pytest.raises(InvalidTopicError) as caught:
        check_topic(topic)
    assert isinstance(caught.value, ValueError)


@pytest.mark.parametrize("topic", ["t", "t" * 256, "with space", " ", "a/b-c_d.e:f~!@#$%^&*()"])
def test_printable_ascii_topics_of_1_to_256_characters_are_valid(topic: str) -> None:
    assert valid_topic(topic)
    check_topic(topic)


def test_check_topic_refuses_non_strings() -> None:
    with pytest.raises(InvalidTopicError):
        check_topic(b"topic")  # type: ignore[arg-type]


@given(st.text(max_size=300))
def test_valid_topic_and_check_topic_agree(topic: str) -> None:
    expected = 0 < len(topic) <= 256 and all(32 <= ord(c) < 127 for c in topic)
    assert valid_topic(topic) is expected
    if expected:
        check_topic(topic)
    else:
        with pytest.raises(InvalidTopicError):
            check_topic(topic)


# -- sequence numbers -------------------------------------------------------------------------


def test_seqno_is_wall_microseconds_when_the_clock_moves_forward() -> None:
    clock = SeqnoClock()
    assert clock.next(1_000) == 1_000_000
    assert clock.next(1_001) == 1_001_000
    assert clock.next(5_000) == 5_000_000
    assert seqno_time_ms(5_000_000) == 5_000
    assert seqno_time_ms(5_000_999) == 5_000


def test_seqno_increases_by_one_for_equal_or_backward_wall_times() -> None:
    clock = SeqnoClock()
    assert clock.next(2_000) == 2_000_000
    assert clock.next(2_000) == 2_000_001
    assert clock.next(2_000) == 2_000_002
    assert clock.next(1_000) == 2_000_003  # clock stepped back
    assert clock.next(2_000) == 2_000_004
    assert clock.next(2_001) == 2_001_000


@given(st.lists(st.integers(0, 2**40), min_size=1, max_size=50))
def test_seqnos_strictly_increase_and_date_no_earlier_than_the_wall(walls: list[int]) -> None:
    clock = SeqnoClock()
    last = 0
    for wall in walls:
        seqno = clock.next(wall)
        assert seqno > last
        assert seqno >= wall * 1000
        assert seqno_time_ms(seqno) >= wall
        if wall * 1000 > last:  # the clock moved forward past every earlier seqno
            assert seqno == wall * 1000
            assert seqno_time_ms(seqno) == wall
        last = seqno
