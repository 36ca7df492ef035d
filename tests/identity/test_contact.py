"""Signed contact records: signing, the wire form, tampering, freshness, proof and structure."""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from typing import Any

import msgspec
import nacl.signing
import pytest

from korium.errors import (
    ContactDecodeError,
    ContactError,
    ContactFromFutureError,
    ContactProofError,
    ContactSignatureError,
    ContactStaleError,
    ContactStructureError,
    InsufficientProofOfWorkError,
)
from korium.identity import (
    CONTACT_DOMAIN,
    DEFAULT_MAX_AGE_S,
    FUTURE_TOLERANCE_MS,
    MAX_ADDRESS_BYTES,
    MAX_ADDRESSES,
    MAX_CONTACT_SIZE,
    Contact,
    NodeIdentity,
    ProofOfWork,
)

NOW = 1_700_000_000_000
ADDRESSES = ("quic://192.0.2.1:4433", "quic://[2001:db8::1]:4433")
DAY_MS = 24 * 3600 * 1000
replace = msgspec.structs.replace


@pytest.fixture
def contact(node_a: NodeIdentity) -> Contact:
    return node_a.contact(ADDRESSES, timestamp_ms=NOW)


def raw_record(contact: Contact, **changes: Any) -> bytes:
    """Hand-built wire form ``[identity, [addresses], timestamp_ms, [nonce], signature]``."""
    fields: dict[str, Any] = {
        "identity": bytes(contact.identity),
        "addresses": list(contact.addresses),
        "timestamp_ms": contact.timestamp_ms,
        "proof": [contact.proof.nonce],
        "signature": contact.signature,
    }
    fields.update(changes)
    return msgspec.msgpack.encode(list(fields.values()))


# -- constants ---------------------------------------------------------------------------------


def test_documented_limits() -> None:
    assert CONTACT_DOMAIN == b"korium-contact-v1:"
    assert MAX_ADDRESSES == 16
    assert MAX_ADDRESS_BYTES == 256
    assert FUTURE_TOLERANCE_MS == 5_000
    assert DEFAULT_MAX_AGE_S == 24 * 3600
    assert MAX_CONTACT_SIZE == 8 * 1024


# -- create, validate, encode ------------------------------------------------------------------


def test_create_then_validate(node_a: NodeIdentity, contact: Contact, difficulty: int) -> None:
    assert contact.identity == node_a.identity
    assert contact.addresses == ADDRESSES
    assert contact.timestamp_ms == NOW
    assert contact.proof == node_a.proof
    assert len(contact.signature) == 64
    contact.validate(difficulty=difficulty, now_ms=NOW)


def test_create_with_contact_create_matches_node_identity_contact(
    node_a: NodeIdentity, contact: Contact
) -> None:
    made = Contact.create(node_a.keypair, node_a.proof, list(ADDRESSES), timestamp_ms=NOW)
    assert made == contact  # Ed25519 signatures are deterministic


def test_create_without_timestamp_uses_the_wall_clock(
    node_a: NodeIdentity, difficulty: int
) -> None:
    before = time.time_ns() // 1_000_000
    made = node_a.contact(ADDRESSES)
    after = time.time_ns() // 1_000_000
    assert before <= made.timestamp_ms <= after
    made.validate(difficulty=difficulty)


def test_contact_with_no_addresses_is_valid(node_a: NodeIdentity, difficulty: int) -> None:
    made = node_a.contact([], timestamp_ms=NOW)
    made.validate(difficulty=difficulty, now_ms=NOW)
    assert Contact.decode(made.encode()) == made


def test_encode_decode_round_trip(contact: Contact, difficulty: int) -> None:
    encoded = contact.encode()
    decoded = Contact.decode(encoded)
    assert decoded == contact
    assert decoded.identity == contact.identity
    assert decoded.encode() == encoded
    decoded.validate(difficulty=difficulty, now_ms=NOW)


def test_wire_form_is_the_documented_array(contact: Contact) -> None:
    assert msgspec.msgpack.decode(contact.encode()) == [
        bytes(contact.identity),
        list(ADDRESSES),
        NOW,
        [contact.proof.nonce],
        contact.signature,
    ]


def test_hand_built_wire_form_decodes(contact: Contact) -> None:
    assert Contact.decode(raw_record(contact)) == contact


def test_contact_is_immutable(contact: Contact) -> None:
    with pytest.raises(AttributeError):
        contact.timestamp_ms = 0  # type: ignore[misc]


# -- signed bytes -----------------------------------------------------------------------------


def test_signed_bytes_match_the_documented_layout(node_a: NodeIdentity) -> None:
    addresses = ("quic://192.0.2.1:4433", "udp://h\u00f4te.example:1", "x")
    made = node_a.contact(addresses, timestamp_ms=NOW)
    expected = bytes(node_a.identity) + bytes([len(addresses)])
    for address in addresses:
        raw = address.encode("utf-8")
        expected += len(raw).to_bytes(2, "big") + raw
    expected += NOW.to_bytes(8, "big") + node_a.proof.nonce.to_bytes(8, "big")
    assert made.signed_bytes() == expected
    assert len("udp://h\u00f4te.example:1".encode()) == len("udp://h\u00f4te.example:1") + 1


def test_worked_example_of_the_protocol_document(node_a: NodeIdentity) -> None:
    """docs/protocol.md 4.5, with the seed bytes(range(32)) key of the conftest."""
    made = node_a.contact(["127.0.0.1:4433"], timestamp_ms=1_700_000_000_000)
    assert node_a.proof.nonce == 569
    assert made.signed_bytes().hex() == (
        "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"
        "01"
        "000e3132372e302e302e313a34343333"
        "0000018bcfe56800"
        "0000000000000239"
    )
    assert made.encode().hex() == (
        "95c42003a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b891ae3132372e302e302e31"
        "3a34343333cf0000018bcfe5680091cd0239c440d834bbb6fc8554bfb3dc8da2c0b45c915a00d07a0ab747195f34"
        "0f2a331293f821b1f7e8a14a93f0df36afce44e7817ebed473c73277d23048662ad7e69cf100"
    )


def test_signature_is_plain_ed25519_over_domain_and_signed_bytes(
    node_a: NodeIdentity, contact: Contact
) -> None:
    verify_key = nacl.signing.VerifyKey(bytes(node_a.identity))
    verify_key.verify(CONTACT_DOMAIN + contact.signed_bytes(), contact.signature)


def test_signed_bytes_of_empty_contact(node_a: NodeIdentity) -> None:
    made = node_a.contact([], timestamp_ms=7)
    assert made.signed_bytes() == (
        bytes(node_a.identity) + b"\x00" + struct.pack(">QQ", 7, node_a.proof.nonce)
    )


# -- tampering ---------------------------------------------------------------------------------


def flip_bit(data: bytes, position: int) -> bytes:
    changed = bytearray(data)
    changed[position] ^= 0x01
    return bytes(changed)


TAMPERINGS: dict[str, Callable[[Contact, NodeIdentity], Contact]] = {
    "identity-replaced": lambda c, other: replace(c, identity=other.identity),
    "address-changed": lambda c, _: replace(c, addresses=("quic://192.0.2.2:4433", ADDRESSES[1])),
    "address-one-char": lambda c, _: replace(c, addresses=(ADDRESSES[0] + "4", ADDRESSES[1])),
    "address-added": lambda c, _: replace(c, addresses=(*ADDRESSES, "quic://evil:1")),
    "address-removed": lambda c, _: replace(c, addresses=ADDRESSES[:1]),
    "addresses-emptied": lambda c, _: replace(c, addresses=()),
    "addresses-swapped": lambda c, _: replace(c, addresses=ADDRESSES[::-1]),
    "timestamp-plus-1ms": lambda c, _: replace(c, timestamp_ms=c.timestamp_ms + 1),
    "timestamp-minus-1ms": lambda c, _: replace(c, timestamp_ms=c.timestamp_ms - 1),
    "nonce-plus-1": lambda c, _: replace(c, proof=ProofOfWork(c.proof.nonce + 1)),
    "nonce-minus-1": lambda c, _: replace(c, proof=ProofOfWork(c.proof.nonce - 1)),
    "nonce-of-other-node": lambda c, other: replace(c, proof=other.proof),
    "signature-bit-0": lambda c, _: replace(c, signature=flip_bit(c.signature, 0)),
    "signature-bit-in-r": lambda c, _: replace(c, signature=flip_bit(c.signature, 20)),
    "signature-bit-in-s": lambda c, _: replace(c, signature=flip_bit(c.signature, 40)),
    "signature-last-bit": lambda c, _: replace(c, signature=flip_bit(c.signature, 63)),
    "signature-of-other-node": lambda c, other: replace(
        c, signature=other.keypair.sign(CONTACT_DOMAIN, c.signed_bytes())
    ),
}


@pytest.mark.parametrize("tamper", list(TAMPERINGS.values()), ids=list(TAMPERINGS))
def test_tampered_record_fails_signature_check(
    contact: Contact, node_b: NodeIdentity, tamper: Callable[[Contact, NodeIdentity], Contact]
) -> None:
    forged = tamper(contact, node_b)
    assert forged != contact
    with pytest.raises(ContactSignatureError):
        forged.validate(difficulty=0, now_ms=NOW)
    # The forgery survives the wire (it is structurally fine) and is still refused there.
    decoded = Contact.decode(forged.encode())
    with pytest.raises(ContactSignatureError):
        decoded.validate(difficulty=0, now_ms=NOW)


def test_record_resigned_by_another_key_fails_for_the_original_identity(
    node_a: NodeIdentity, node_b: NodeIdentity
) -> None:
    theirs = node_b.contact(ADDRESSES, timestamp_ms=NOW)
    stolen = replace(theirs, identity=node_a.identity)
    with pytest.raises(ContactSignatureError):
        stolen.validate(difficulty=0, now_ms=NOW)


# -- freshness --------------------------------------------------------------------------------


def test_record_just_under_default_max_age_is_accepted(contact: Contact, difficulty: int) -> None:
    contact.validate(difficulty=difficulty, now_ms=NOW + DAY_MS)


def test_record_older_than_default_max_age_is_stale(contact: Contact, difficulty: int) -> None:
    with pytest.raises(ContactStaleError) as info:
        contact.validate(difficulty=difficulty, now_ms=NOW + DAY_MS + 1)
    assert info.value.age_ms == DAY_MS + 1


def test_much_older_record_reports_its_age(contact: Contact, difficulty: int) -> None:
    with pytest.raises(ContactStaleError) as info:
        contact.validate(difficulty=difficulty, now_ms=NOW + 10 * DAY_MS)
    assert info.value.age_ms == 10 * DAY_MS


@pytest.mark.parametrize(("max_age_s", "age_ms"), [(60, 60_001), (0.5, 501), (3600, 3_600_001)])
def test_custom_max_age_refuses_older_records(
    contact: Contact, difficulty: int, max_age_s: float, age_ms: int
) -> None:
    with pytest.raises(ContactStaleError) as info:
        contact.validate(difficulty=difficulty, now_ms=NOW + age_ms, max_age_s=max_age_s)
    assert info.value.age_ms == age_ms
    contact.validate(difficulty=difficulty, now_ms=NOW + age_ms - 1, max_age_s=max_age_s)


def test_custom_max_age_can_accept_older_records(contact: Contact, difficulty: int) -> None:
    contact.validate(difficulty=difficulty, now_ms=NOW + 3 * DAY_MS, max_age_s=7 * 24 * 3600)


def test_record_more_than_5s_in_the_future_is_refused(contact: Contact, difficulty: int) -> None:
    with pytest.raises(ContactFromFutureError) as info:
        contact.validate(difficulty=difficulty, now_ms=NOW - 5_001)
    assert info.value.drift_ms == 5_001


def test_record_far_in_the_future_reports_its_drift(contact: Contact, difficulty: int) -> None:
    with pytest.raises(ContactFromFutureError) as info:
        contact.validate(difficulty=difficulty, now_ms=NOW - 3_600_000)
    assert info.value.drift_ms == 3_600_000


@pytest.mark.parametrize("drift_ms", [4_900, 5_000, 1, 0])
def test_record_within_5s_in_the_future_is_accepted(
    contact: Contact, difficulty: int, drift_ms: int
) -> None:
    contact.validate(difficulty=difficulty, now_ms=NOW - drift_ms)


def test_custom_future_tolerance(contact: Contact, difficulty: int) -> None:
    with pytest.raises(ContactFromFutureError) as info:
        contact.validate(difficulty=difficulty, now_ms=NOW - 1, future_tolerance_ms=0)
    assert info.value.drift_ms == 1
    contact.validate(difficulty=difficulty, now_ms=NOW - 60_000, future_tolerance_ms=60_000)


def test_freshness_is_checked_before_the_signature(contact: Contact) -> None:
    forged = replace(contact, signature=flip_bit(contact.signature, 5))
    with pytest.raises(ContactStaleError):
        forged.validate(difficulty=0, now_ms=NOW + DAY_MS + 1)
    with pytest.raises(ContactFromFutureError):
        forged.validate(difficulty=0, now_ms=NOW - 5_001)


# -- proof of work -----------------------------------------------------------------------------


def test_properly_signed_record_with_too_weak_proof_is_refused(
    node_a: NodeIdentity, contact: Contact
) -> None:
    required = node_a.strength + 1
    with pytest.raises(ContactProofError) as info:
        contact.validate(difficulty=required, now_ms=NOW)
    cause = info.value.__cause__
    assert isinstance(cause, InsufficientProofOfWorkError)
    assert cause.required == required
    assert cause.strength == node_a.strength
    contact.validate(difficulty=node_a.strength, now_ms=NOW)


def test_signed_record_with_worthless_proof_is_refused(node_a: NodeIdentity) -> None:
    nonce = next(n for n in range(1000) if ProofOfWork(n).strength(node_a.identity) == 0)
    made = Contact.create(node_a.keypair, ProofOfWork(nonce), ADDRESSES, timestamp_ms=NOW)
    made.validate(difficulty=0, now_ms=NOW)
    with pytest.raises(ContactProofError):
        made.validate(difficulty=1, now_ms=NOW)


def test_signature_is_checked_before_the_proof(contact: Contact, node_a: NodeIdentity) -> None:
    forged = replace(contact, signature=flip_bit(contact.signature, 5))
    with pytest.raises(ContactSignatureError):
        forged.validate(difficulty=node_a.strength + 1, now_ms=NOW)


def test_every_refusal_is_a_contact_error() -> None:
    for error in (
        ContactDecodeError,
        ContactStructureError,
        ContactSignatureError,
        ContactFromFutureError,
        ContactStaleError,
        ContactProofError,
    ):
        assert issubclass(error, ContactError)


# -- structure: construction -------------------------------------------------------------------

MULTIBYTE_257 = "\u00e9" * 128 + "a"  # 129 characters, 257 UTF-8 bytes
MULTIBYTE_256 = "\u00e9" * 128  # 128 characters, 256 UTF-8 bytes
EURO_258 = "\u20ac" * 86  # 86 characters, 258 UTF-8 bytes

BAD_ADDRESS_LISTS: dict[str, list[str]] = {
    "17-addresses": [f"quic://192.0.2.{i}:1" for i in range(17)],
    "empty-address": ["quic://192.0.2.1:1", ""],
    "257-ascii-bytes": ["a" * 257],
    "257-bytes-multibyte": [MULTIBYTE_257],
    "258-bytes-3-byte-chars": [EURO_258],
    "1000-bytes": ["a" * 1000],
}


def test_multibyte_vectors_are_short_in_characters_but_long_in_bytes() -> None:
    assert len(MULTIBYTE_257) <= 256
    assert len(MULTIBYTE_257.encode()) == 257
    assert len(EURO_258) <= 256
    assert len(EURO_258.encode()) == 258


@pytest.mark.parametrize("addresses", list(BAD_ADDRESS_LISTS.values()), ids=list(BAD_ADDRESS_LISTS))
def test_bad_addresses_are_refused_on_create(node_a: NodeIdentity, addresses: list[str]) -> None:
    with pytest.raises(ContactStructureError):
        node_a.contact(addresses, timestamp_ms=NOW)


@pytest.mark.parametrize("addresses", list(BAD_ADDRESS_LISTS.values()), ids=list(BAD_ADDRESS_LISTS))
def test_bad_addresses_are_refused_on_direct_construction(
    contact: Contact, addresses: list[str]
) -> None:
    with pytest.raises(ContactStructureError):
        Contact(contact.identity, tuple(addresses), NOW, contact.proof, contact.signature)


@pytest.mark.parametrize("addresses", list(BAD_ADDRESS_LISTS.values()), ids=list(BAD_ADDRESS_LISTS))
def test_bad_addresses_are_refused_on_decode(contact: Contact, addresses: list[str]) -> None:
    with pytest.raises(ContactStructureError):
        Contact.decode(raw_record(contact, addresses=addresses))


def test_largest_valid_record_is_accepted_and_fits_the_size_limit(
    node_a: NodeIdentity, difficulty: int
) -> None:
    addresses = [f"{i:02d}" + "a" * 254 for i in range(16)]
    multibyte = [f"{i:02d}" + "\u00e9" * 127 for i in range(16)]
    for candidate in (addresses, multibyte):
        assert all(len(a.encode()) == MAX_ADDRESS_BYTES for a in candidate)
        made = node_a.contact(candidate, timestamp_ms=NOW)
        encoded = made.encode()
        assert len(encoded) <= MAX_CONTACT_SIZE
        decoded = Contact.decode(encoded)
        assert decoded == made
        decoded.validate(difficulty=difficulty, now_ms=NOW)


def test_largest_record_encodes_to_the_documented_size(node_a: NodeIdentity) -> None:
    """docs/protocol.md 4.1: 16 addresses of 256 bytes and maximal integers give 4,267 bytes."""
    addresses = [f"{i:02d}" + "a" * 254 for i in range(16)]
    largest = Contact.create(
        node_a.keypair, ProofOfWork(2**63 - 1), addresses, timestamp_ms=2**63 - 1
    )
    assert len(largest.encode()) == 4267
    assert Contact.decode(largest.encode()) == largest


def test_256_byte_multibyte_address_is_accepted(node_a: NodeIdentity) -> None:
    made = node_a.contact([MULTIBYTE_256], timestamp_ms=NOW)
    assert Contact.decode(made.encode()) == made


@pytest.mark.parametrize("timestamp", [-1, 2**63, 2**64])
def test_out_of_range_timestamp_is_refused(contact: Contact, timestamp: int) -> None:
    with pytest.raises(ContactStructureError):
        replace(contact, timestamp_ms=timestamp)


def test_largest_timestamp_is_accepted(node_a: NodeIdentity) -> None:
    made = node_a.contact(ADDRESSES, timestamp_ms=2**63 - 1)
    assert Contact.decode(made.encode()) == made


@pytest.mark.parametrize("length", [0, 63, 65])
def test_wrong_length_signature_is_refused_on_construction(contact: Contact, length: int) -> None:
    with pytest.raises(ContactStructureError):
        replace(contact, signature=b"\x01" * length)


def test_raw_bytes_identity_is_refused_on_construction(contact: Contact) -> None:
    with pytest.raises(ContactStructureError):
        replace(contact, identity=bytes(contact.identity))


@pytest.mark.parametrize("nonce", [-1, 2**63, 2**64], ids=["negative", "2^63", "2^64"])
def test_out_of_range_proof_nonce_cannot_be_built(nonce: int) -> None:
    """A nonce outside 0 .. 2**63-1 could be signed but never decoded by a peer."""
    with pytest.raises(ValueError, match="nonce"):
        ProofOfWork(nonce)


def test_largest_proof_nonce_round_trips(node_a: NodeIdentity) -> None:
    made = Contact.create(node_a.keypair, ProofOfWork(2**63 - 1), ADDRESSES, timestamp_ms=NOW)
    decoded = Contact.decode(made.encode())
    assert decoded == made
    decoded.validate(difficulty=0, now_ms=NOW)


@pytest.mark.parametrize("address", ["quic://a\ud800b:1", "\udfff"], ids=["lone-high", "lone-low"])
def test_address_that_is_not_encodable_utf8_is_refused_on_create(
    node_a: NodeIdentity, address: str
) -> None:
    with pytest.raises(ContactStructureError):
        node_a.contact([address], timestamp_ms=NOW)
    with pytest.raises(ContactStructureError):
        Contact(node_a.identity, (address,), NOW, node_a.proof, bytes(64))


# -- structure: decode -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "identity",
    [
        bytes(32),
        b"\xff" * 32,
        (1).to_bytes(32, "little"),
        bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"),
        (2).to_bytes(32, "little"),
        b"\x01" * 31,
        b"\x01" * 33,
        b"",
    ],
    ids=["zero", "ones", "identity-point", "order-8", "not-a-point", "31-bytes", "33", "empty"],
)
def test_invalid_identity_in_record_is_a_structure_error(contact: Contact, identity: bytes) -> None:
    with pytest.raises(ContactStructureError):
        Contact.decode(raw_record(contact, identity=identity))


@pytest.mark.parametrize(
    "changes",
    [
        {"identity": "not bytes"},
        {"identity": None},
        {"addresses": "quic://192.0.2.1:1"},
        {"addresses": [1]},
        {"addresses": [b"quic://192.0.2.1:1"]},
        {"timestamp_ms": -1},
        {"timestamp_ms": 2**63},
        {"timestamp_ms": 1.5},
        {"timestamp_ms": "1"},
        {"proof": []},
        {"proof": [-1]},
        {"proof": [2**63]},
        {"proof": 5},
        {"signature": b"\x01" * 63},
        {"signature": b"\x01" * 65},
        {"signature": "x" * 64},
    ],
    ids=repr,
)
def test_wrongly_typed_or_out_of_range_fields_are_structure_errors(
    contact: Contact, changes: dict[str, Any]
) -> None:
    with pytest.raises(ContactStructureError):
        Contact.decode(raw_record(contact, **changes))


def test_proof_array_with_extra_elements_is_refused(contact: Contact) -> None:
    """Otherwise anyone could pad a signed record with junk and it would still validate."""
    padded = raw_record(contact, proof=[contact.proof.nonce, b"x" * 4000])
    with pytest.raises(ContactStructureError):
        Contact.decode(padded)


def test_record_with_extra_field_is_refused(contact: Contact) -> None:
    fields = msgspec.msgpack.decode(contact.encode())
    with pytest.raises(ContactStructureError):
        Contact.decode(msgspec.msgpack.encode([*fields, b"extra"]))


def test_record_with_missing_field_is_refused(contact: Contact) -> None:
    fields = msgspec.msgpack.decode(contact.encode())
    with pytest.raises(ContactStructureError):
        Contact.decode(msgspec.msgpack.encode(fields[:-1]))


@pytest.mark.parametrize("document", [{"identity": b"x"}, "a string", 42, None, []], ids=repr)
def test_msgpack_that_is_not_a_record_is_refused(document: object) -> None:
    with pytest.raises((ContactDecodeError, ContactStructureError)):
        Contact.decode(msgspec.msgpack.encode(document))


@pytest.mark.parametrize("field", ["address", "identity"])
def test_invalid_utf8_in_a_wire_string_is_a_decode_error(contact: Contact, field: str) -> None:
    """msgspec raises UnicodeDecodeError (not DecodeError) for a str that is not UTF-8."""
    encoded = contact.encode()
    if field == "address":
        start = encoded.index(ADDRESSES[0].encode())
        data = encoded[:start] + b"\x80" + encoded[start + 1 :]
    else:
        data = b"\x95\xa1\x80"  # array of 5, then a 1-byte str holding a lone continuation byte
    with pytest.raises(ContactDecodeError):
        Contact.decode(data)


def test_every_truncation_is_a_decode_error(contact: Contact) -> None:
    encoded = contact.encode()
    for end in range(len(encoded)):
        with pytest.raises(ContactDecodeError):
            Contact.decode(encoded[:end])


@pytest.mark.parametrize(
    "data",
    [b"\xc1", b"\xc1" * 100, b"\x95\xc1", b"\xdd\xff\xff\xff\xff", b"\xc4\xff"],
    ids=["never-used-byte", "many", "array-then-bad", "huge-array-header", "bin-overrun"],
)
def test_bytes_that_are_not_msgpack_are_a_decode_error(data: bytes) -> None:
    with pytest.raises(ContactDecodeError):
        Contact.decode(data)


def test_trailing_bytes_after_a_record_are_a_decode_error(contact: Contact) -> None:
    with pytest.raises(ContactDecodeError):
        Contact.decode(contact.encode() + b"\x00")


@pytest.mark.parametrize("size", [MAX_CONTACT_SIZE + 1, 2 * MAX_CONTACT_SIZE, 10**6])
def test_data_over_the_size_limit_is_a_decode_error(size: int) -> None:
    with pytest.raises(ContactDecodeError, match="limit"):
        Contact.decode(b"\x00" * size)


def test_size_limit_is_checked_before_structure(contact: Contact) -> None:
    oversized = raw_record(contact, addresses=["a" * 600] * 16)
    assert len(oversized) > MAX_CONTACT_SIZE
    with pytest.raises(ContactDecodeError, match="limit"):
        Contact.decode(oversized)


def test_deeply_nested_input_is_a_decode_error() -> None:
    nested = b"\x91" * (MAX_CONTACT_SIZE - 1) + b"\xc0"
    with pytest.raises((ContactDecodeError, ContactStructureError)):
        Contact.decode(nested)
