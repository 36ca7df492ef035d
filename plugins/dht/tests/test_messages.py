"""Tests of the DHT wire messages (``korium_dht.messages``): round trips, bounds, fuzzing.

Whatever bytes arrive, ``decode_request`` and ``decode_response`` either return a message or
raise :class:`DhtDecodeError`; never another exception.
"""

from __future__ import annotations

import functools
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from korium_dht import messages
from korium_dht.config import MAX_VALUE_SIZE
from korium_dht.errors import DhtDecodeError
from korium_dht.messages import (
    KEY_LEN,
    MAX_CONTACTS,
    MAX_REASON,
    FindNode,
    FindValue,
    Found,
    Nodes,
    Ping,
    Pong,
    Store,
    StoreResult,
    decode_request,
    decode_response,
    encode,
)

from korium.identity import Contact, Keypair, NodeIdentity, ProofOfWork, solve_pow

TS = 1_700_000_000_000
KEY = bytes(range(32))


@functools.cache
def node(seed: int) -> NodeIdentity:
    keypair = Keypair.from_seed(bytes([seed]) * 32)
    return NodeIdentity(keypair, solve_pow(keypair.identity, 4, workers=1))


def contact(seed: int, addresses: tuple[str, ...] = ("10.0.0.1:4433",)) -> Contact:
    return node(seed).contact(addresses, timestamp_ms=TS + seed)


def contacts(count: int) -> list[Contact]:
    # Signing is the slow part: reuse a few records (a message may repeat one).
    pool = [contact(seed) for seed in range(1, 11)]
    return [pool[i % len(pool)] for i in range(count)]


REQUESTS: list[messages.Request] = [
    Ping(None),
    Ping(contact(1)),
    FindNode(None, KEY),
    FindNode(contact(2), bytes(32)),
    FindValue(None, KEY),
    FindValue(contact(3, ("10.0.0.3:1", "[2001:db8::1]:4433", "example.org:80")), KEY),
    Store(None, KEY, b""),
    Store(contact(4), KEY, b"value bytes"),
    Store(contact(5), KEY, bytes(range(256)) * 4),
]
RESPONSES: list[messages.Response] = [
    Pong(None),
    Pong(contact(6)),
    Nodes([]),
    Nodes(contacts(20)),
    Found(b""),
    Found(b"\x00" * 1000),
    StoreResult(True),
    StoreResult(False, "invalid"),
    StoreResult(False, "x" * MAX_REASON),
]


# -- round trips ---------------------------------------------------------------------------


@pytest.mark.parametrize("message", REQUESTS, ids=repr)
def test_request_round_trip(message: messages.Request) -> None:
    decoded = decode_request(encode(message))
    assert decoded == message
    assert type(decoded) is type(message)


@pytest.mark.parametrize("message", RESPONSES, ids=repr)
def test_response_round_trip(message: messages.Response) -> None:
    decoded = decode_response(encode(message))
    assert decoded == message
    assert type(decoded) is type(message)


def test_contacts_survive_with_valid_signatures() -> None:
    original = contacts(10)
    decoded = decode_response(encode(Nodes(original)))
    assert isinstance(decoded, Nodes)
    for c in decoded.contacts:
        c.validate(difficulty=4, now_ms=TS + 100)


def test_largest_store_round_trips() -> None:
    message = Store(contact(1), KEY, b"\xab" * MAX_VALUE_SIZE)
    assert decode_request(encode(message)) == message
    found = Found(b"\xcd" * MAX_VALUE_SIZE)
    assert decode_response(encode(found)) == found


def test_wire_form_is_a_tagged_array() -> None:
    assert msgspec.msgpack.decode(encode(Ping(None))) == [1, None]
    assert msgspec.msgpack.decode(encode(FindNode(None, KEY))) == [2, None, KEY]
    assert msgspec.msgpack.decode(encode(FindValue(None, KEY))) == [3, None, KEY]
    assert msgspec.msgpack.decode(encode(Store(None, KEY, b"v"))) == [4, None, KEY, b"v"]
    assert msgspec.msgpack.decode(encode(StoreResult(False, "rate"))) == [4, False, "rate"]
    assert msgspec.msgpack.decode(encode(StoreResult(True))) == [4, True, ""]
    c = contact(1)
    wire = msgspec.msgpack.decode(encode(Ping(c)))
    assert wire == [1, msgspec.msgpack.decode(c.encode())]


def test_a_response_is_not_a_request_of_another_kind() -> None:
    # Requests and responses reuse tags 1-4 but are decoded separately; shapes differ.
    with pytest.raises(DhtDecodeError):
        decode_request(encode(Nodes(contacts(2))))
    with pytest.raises(DhtDecodeError):
        decode_response(encode(FindNode(None, KEY)))
    with pytest.raises(DhtDecodeError):
        decode_response(encode(Store(None, KEY, b"v")))


# -- bounds --------------------------------------------------------------------------------


def test_one_hundred_contacts_accepted_one_hundred_and_one_refused() -> None:
    assert MAX_CONTACTS == 100
    decoded = decode_response(encode(Nodes(contacts(100))))
    assert isinstance(decoded, Nodes)
    assert len(decoded.contacts) == 100
    with pytest.raises(DhtDecodeError, match="100"):
        decode_response(encode(Nodes(contacts(101))))


def test_a_value_over_1_mib_refused() -> None:
    too_big = b"\x00" * (MAX_VALUE_SIZE + 1)
    with pytest.raises(DhtDecodeError):
        decode_request(encode(Store(None, KEY, too_big)))
    with pytest.raises(DhtDecodeError):
        decode_response(encode(Found(too_big)))


@pytest.mark.parametrize("length", [0, 1, 31, 33, 64])
def test_a_key_of_the_wrong_length_refused(length: int) -> None:
    key = b"\x01" * length
    assert length != KEY_LEN
    for message in (FindNode(None, key), FindValue(None, key), Store(None, key, b"v")):
        with pytest.raises(DhtDecodeError):
            decode_request(encode(message))


def test_a_long_reason_refused() -> None:
    with pytest.raises(DhtDecodeError):
        decode_response(encode(StoreResult(False, "x" * (MAX_REASON + 1))))


def wire(*items: Any) -> bytes:
    return msgspec.msgpack.encode(list(items))


def raw_contact(c: Contact) -> list[Any]:
    return list(msgspec.msgpack.decode(c.encode()))


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc0",
        wire(),
        wire(0, None),
        wire(5, None),
        wire(1),  # missing sender
        wire(1, None, None),  # an extra field
        wire(2, None, "a string key" * 3),
        wire(2, None, KEY, KEY),
        wire(4, None, KEY),  # missing value
        wire(4, None, KEY, "not bytes"),
        wire(1, "not a contact"),
        wire("1", None),
        msgspec.msgpack.encode({"sender": None}),
        encode(Ping(None)) + b"\x00",  # trailing bytes
        encode(FindNode(None, KEY))[:-1],  # truncated
    ],
)
def test_malformed_requests_refused(data: bytes) -> None:
    with pytest.raises(DhtDecodeError):
        decode_request(data)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        wire(),
        wire(9, True),
        wire(4, "yes", ""),
        wire(4, True, 5),
        wire(2, None),
        wire(2, [None]),
        wire(2, [[1, 2, 3]]),
        wire(3, 17),
        wire(1, None, None),
    ],
)
def test_malformed_responses_refused(data: bytes) -> None:
    with pytest.raises(DhtDecodeError):
        decode_response(data)


# -- bad contacts inside messages ----------------------------------------------------------


BAD_IDENTITIES = [b"\xff" * 32, b"\x00" * 32, b"\x02" + b"\x00" * 31, b"\x01" * 31, b"\x01" * 33]


@pytest.mark.parametrize("identity", BAD_IDENTITIES, ids=lambda b: b[:2].hex() + f"x{len(b)}")
def test_a_contact_with_a_bad_identity_is_a_decode_error(identity: bytes) -> None:
    good = raw_contact(contact(1))
    bad = [identity, *good[1:]]
    for data in (wire(1, bad), wire(2, bad, KEY), wire(3, bad, KEY), wire(4, bad, KEY, b"")):
        with pytest.raises(DhtDecodeError):
            decode_request(data)
    for data in (wire(1, bad), wire(2, [raw_contact(contact(2)), bad])):
        with pytest.raises(DhtDecodeError):
            decode_response(data)


@pytest.mark.parametrize(
    "change",
    [
        lambda r: [r[0], ["x" * 257], *r[2:]],  # an address over 256 bytes
        lambda r: [r[0], [""], *r[2:]],  # an empty address
        lambda r: [r[0], ["10.0.0.1:1"] * 17, *r[2:]],  # 17 addresses
        lambda r: [*r[:2], -1, *r[3:]],  # a negative timestamp
        lambda r: [*r[:2], 2**63, *r[3:]],  # a timestamp too large
        lambda r: [*r[:3], [-1], r[4]],  # a negative nonce
        lambda r: [*r[:3], [], r[4]],  # no nonce
        lambda r: [*r[:4], b"\x00" * 63],  # a short signature
        lambda r: [*r[:4], b"\x00" * 65],  # a long signature
        lambda r: [*r, None],  # an extra field
        lambda r: r[:4],  # a missing field
    ],
)
def test_a_structurally_bad_contact_is_a_decode_error(change: Any) -> None:
    bad = change(raw_contact(contact(1)))
    with pytest.raises(DhtDecodeError):
        decode_request(wire(1, bad))
    with pytest.raises(DhtDecodeError):
        decode_response(wire(2, [bad]))


def test_a_badly_signed_contact_decodes_the_signature_is_checked_later() -> None:
    r = raw_contact(contact(1))
    r[4] = bytes(64)
    decoded = decode_request(wire(1, r))
    assert isinstance(decoded, Ping)
    assert decoded.sender is not None
    assert decoded.sender.signature == bytes(64)


# -- fuzzing -------------------------------------------------------------------------------


def decodes_or_refuses(data: bytes) -> None:
    for decode in (decode_request, decode_response):
        try:
            decoded = decode(data)
        except DhtDecodeError:
            continue
        # Whatever decodes re-encodes to an equal message.
        assert decode(encode(decoded)) == decoded


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_only_raise_decode_errors(data: bytes) -> None:
    decodes_or_refuses(data)


VALID = [encode(m) for m in (*REQUESTS, *RESPONSES) if len(encode(m)) < 4000]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(VALID)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "set", "cut", "insert", "delete"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif op == "set" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "cut":
            del data[pos:]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and data:
            del data[pos : pos + draw(st.integers(1, 8))]
    return bytes(data)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_encodings_only_raise_decode_errors(data: bytes) -> None:
    decodes_or_refuses(data)


msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)  # what MessagePack can hold
    | st.floats()
    | st.text(max_size=40)
    | st.binary(max_size=70)
    | st.sampled_from([KEY, b"\xff" * 32, bytes(64)]),
    lambda children: (
        st.lists(children, max_size=6) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=20,
)


@settings(max_examples=500, deadline=None)
@given(st.integers(0, 5), st.lists(msgpack_values, max_size=5))
def test_well_formed_msgpack_of_any_shape_only_raises_decode_errors(
    tag: int, fields: list[Any]
) -> None:
    decodes_or_refuses(msgspec.msgpack.encode([tag, *fields]))


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 5), st.lists(msgpack_values, max_size=5))
def test_contact_shaped_fuzz_only_raises_decode_errors(tag: int, fields: list[Any]) -> None:
    """A contact-like array with fuzzed fields, inside a Ping and a Nodes."""
    r = raw_contact(contact(1))
    for i, value in enumerate(fields):
        r[i % len(r)] = value
    for data in (wire(1, r), wire(2, [r]), wire(tag, r, KEY)):
        decodes_or_refuses(data)


def test_deeply_nested_input_is_a_decode_error() -> None:
    data = b"\x91" * 100_000 + b"\xc0"
    with pytest.raises(DhtDecodeError):
        decode_request(data)
    with pytest.raises(DhtDecodeError):
        decode_response(data)


def test_a_contact_with_a_weak_proof_still_decodes() -> None:
    """Proof of work is policy (the node's difficulty), checked by the service, not here."""
    keypair = Keypair.from_seed(b"\x09" * 32)
    weak = Contact.create(keypair, ProofOfWork(0), ["10.0.0.9:1"], timestamp_ms=TS)
    decoded = decode_response(encode(Nodes([weak])))
    assert decoded == Nodes([weak])
