"""Property-based fuzzing of everything that parses untrusted input in the identity layer.

Invariants: decoders only ever raise their own documented error types (never a crash from a
library underneath), and no mutation of a signed contact record yields a *different* record
that still validates.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import msgspec
import nacl.bindings
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from korium.errors import (
    ContactDecodeError,
    ContactError,
    ContactStructureError,
    InvalidIdentityError,
    KeyFileError,
)
from korium.identity import Contact, Identity, NodeIdentity, read_key_file

NOW = 1_700_000_000_000
ADDRESSES = ("quic://192.0.2.1:4433", "quic://[2001:db8::1]:4433")
FUZZ = settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def record(node_a: NodeIdentity) -> Contact:
    return node_a.contact(ADDRESSES, timestamp_ms=NOW)


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("keyfile-fuzz")


@pytest.fixture(scope="module")
def valid_key_text(node_a: NodeIdentity, fuzz_dir: Path) -> str:
    path = node_a.save(fuzz_dir / "valid.key")
    return path.read_text()


def decode_or_error(data: bytes) -> Contact | None:
    """Decode *data*; ``None`` if refused with one of the two documented decode errors.

    Any other exception propagates and fails the calling test.
    """
    try:
        return Contact.decode(data)
    except (ContactDecodeError, ContactStructureError):
        return None


def assert_no_forgery(decoded: Contact | None, original: Contact) -> None:
    """A decoded record that passes validation must be the original record."""
    if decoded is None:
        return
    try:
        decoded.validate(difficulty=0, now_ms=decoded.timestamp_ms)
    except ContactError:
        return
    assert decoded == original


# A record whose first field is a 1-byte str holding a lone UTF-8 continuation byte.
BAD_UTF8_RECORD = b"\x95\xa1\x80"


# -- contact records: raw bytes ----------------------------------------------------------------


@FUZZ
@example(data=BAD_UTF8_RECORD)
@given(data=st.binary(max_size=600))
def test_random_bytes_decode_only_to_documented_errors(record: Contact, data: bytes) -> None:
    decoded = decode_or_error(data)
    assert decoded is None or isinstance(decoded, Contact)
    assert_no_forgery(decoded, record)


@FUZZ
@example(head=b"\x95", tail=b"\xa1\x80")
@given(
    head=st.sampled_from([b"\x95", b"\xdc\x00\x05", b"\xdd\x00\x00\x00\x05", b"\x95\xc4\x20"]),
    tail=st.binary(max_size=300),
)
def test_random_bytes_after_a_plausible_array_header_only_documented_errors(
    head: bytes, tail: bytes
) -> None:
    decode_or_error(head + tail)


Mutation = tuple[str, int, int]
mutations = st.lists(
    st.tuples(
        st.sampled_from(["flip", "set", "insert", "delete"]),
        st.integers(min_value=0, max_value=10_000),
        st.integers(min_value=0, max_value=255),
    ),
    min_size=1,
    max_size=4,
)


def mutate(data: bytes, steps: list[Mutation]) -> bytes:
    out = bytearray(data)
    for kind, where, value in steps:
        if kind == "insert":
            out.insert(where % (len(out) + 1), value)
            continue
        if not out:
            continue
        index = where % len(out)
        if kind == "flip":
            out[index] ^= 1 << (value % 8)
        elif kind == "set":
            out[index] = value
        else:
            del out[index]
    return bytes(out)


@settings(max_examples=1000, deadline=None)
@example(steps=[("set", 37, 0x80)])  # first byte of the first address -> invalid UTF-8
@example(steps=[("set", 93, 0x92), ("insert", 97, 0xC0)])  # proof [569] -> [569, nil]
@given(steps=mutations)
def test_mutated_encoding_decodes_only_to_documented_errors_and_never_forges(
    record: Contact, steps: list[Mutation]
) -> None:
    encoded = record.encode()
    assert encoded[35:38] == b"\x92\xb5q"  # the examples' offsets: array of 2, fixstr 21, "q"
    assert encoded[93:97] == b"\x91\xcd\x02\x39"  # ...and proof: array of 1, uint16 569
    data = mutate(encoded, steps)
    assert_no_forgery(decode_or_error(data), record)


@FUZZ
@given(cut=st.integers(min_value=0, max_value=10_000), junk=st.binary(max_size=20))
def test_truncated_or_extended_encoding(record: Contact, cut: int, junk: bytes) -> None:
    encoded = record.encode()
    data = encoded[: cut % len(encoded)] + junk
    assume(data != encoded)
    assert_no_forgery(decode_or_error(data), record)


# -- contact records: structured field mutations ------------------------------------------------

msgpack_values: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=40)
    | st.binary(max_size=80),
    lambda children: st.lists(children, max_size=4),
    max_leaves=10,
)


@FUZZ
@given(index=st.integers(min_value=0, max_value=4), value=msgpack_values)
def test_any_value_in_any_field_is_refused_or_not_a_forgery(
    record: Contact, index: int, value: Any
) -> None:
    fields = msgspec.msgpack.decode(record.encode())
    fields[index] = value
    assert_no_forgery(decode_or_error(msgspec.msgpack.encode(fields)), record)


@FUZZ
@given(
    addresses=st.lists(st.text(min_size=0, max_size=300), max_size=20),
    timestamp=st.integers(min_value=-(2**63), max_value=2**64 - 1),
    nonce=st.integers(min_value=-(2**63), max_value=2**64 - 1),
)
def test_well_typed_but_altered_fields_are_refused_or_not_a_forgery(
    record: Contact, addresses: list[str], timestamp: int, nonce: int
) -> None:
    fields = msgspec.msgpack.decode(record.encode())
    fields[1], fields[2], fields[3] = addresses, timestamp, [nonce]
    decoded = decode_or_error(msgspec.msgpack.encode(fields))
    assert_no_forgery(decoded, record)
    if decoded is not None:
        assert len(decoded.addresses) <= 16
        assert all(1 <= len(a.encode()) <= 256 for a in decoded.addresses)
        assert 0 <= decoded.timestamp_ms <= 2**63 - 1


@FUZZ
@given(identity=st.binary(min_size=32, max_size=32))
def test_random_identity_in_a_record(record: Contact, identity: bytes) -> None:
    fields = msgspec.msgpack.decode(record.encode())
    fields[0] = identity
    decoded = decode_or_error(msgspec.msgpack.encode(fields))
    if decoded is not None:
        assert nacl.bindings.crypto_core_ed25519_is_valid_point(identity)
    assert_no_forgery(decoded, record)


# -- key files --------------------------------------------------------------------------------


def write_private(path: Path, data: bytes) -> Path:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
    path.chmod(0o600)
    return path


def load_or_key_file_error(path: Path, node: NodeIdentity) -> None:
    """Load *path*: either a KeyFileError, or (only if it really holds it) *node*'s key."""
    try:
        keypair, proof = read_key_file(path, difficulty=0)
    except KeyFileError as exc:
        error: KeyFileError = exc
    else:
        assert keypair.identity == node.identity
        assert keypair.seed == node.keypair.seed
        assert proof.nonce >= 0
        return
    assert error.path == str(path)
    assert type(error) is not KeyFileError  # always a specific subclass


@FUZZ
@given(data=st.binary(max_size=2000))
def test_random_key_file_bytes_raise_only_key_file_errors(
    fuzz_dir: Path, node_a: NodeIdentity, data: bytes
) -> None:
    load_or_key_file_error(write_private(fuzz_dir / "random.key", data), node_a)


@FUZZ
@given(
    label=st.sampled_from(["PRIVATE KEY", "ENCRYPTED PRIVATE KEY", "RSA PRIVATE KEY", "X"]),
    body=st.binary(max_size=200),
    as_base64=st.booleans(),
)
def test_valid_header_with_random_pem_body(
    fuzz_dir: Path,
    node_a: NodeIdentity,
    valid_key_text: str,
    label: str,
    body: bytes,
    as_base64: bool,
) -> None:
    header = valid_key_text[: valid_key_text.index("-----BEGIN")].encode()
    content = base64.encodebytes(body) if as_base64 else body
    pem = f"-----BEGIN {label}-----\n".encode() + content + f"\n-----END {label}-----\n".encode()
    load_or_key_file_error(write_private(fuzz_dir / "body.key", header + pem), node_a)


@FUZZ
@example(der_prefix_cut=0, flip=88)  # byte 11 bit 0: OID 1.3.101.112 (Ed25519) -> .113 (Ed448)
@given(der_prefix_cut=st.integers(min_value=0, max_value=47), flip=st.integers(0, 47 * 8 - 1))
def test_valid_header_with_damaged_der(
    fuzz_dir: Path, node_a: NodeIdentity, valid_key_text: str, der_prefix_cut: int, flip: int
) -> None:
    start = valid_key_text.index("-----BEGIN")
    lines = valid_key_text[start:].splitlines()
    der = bytearray(base64.b64decode(lines[1]))
    der[(flip // 8) % len(der)] ^= 1 << (flip % 8)
    der = der[: len(der) - der_prefix_cut] if der_prefix_cut else der
    pem = f"{lines[0]}\n{base64.b64encode(bytes(der)).decode()}\n{lines[-1]}\n"
    path = write_private(fuzz_dir / "der.key", (valid_key_text[:start] + pem).encode())
    load_or_key_file_error(path, node_a)


header_lines = st.one_of(
    st.text(max_size=60),
    st.builds(
        "{}:{}".format,
        st.sampled_from(["identity", "pow-nonce", "pow-difficulty", "IDENTITY", " x "]),
        st.text(max_size=70),
    ),
)


@FUZZ
@given(lines=st.lists(header_lines, max_size=6))
def test_random_header_text_with_valid_pem(
    fuzz_dir: Path, node_a: NodeIdentity, valid_key_text: str, lines: list[str]
) -> None:
    pem = valid_key_text[valid_key_text.index("-----BEGIN") :]
    header = "".join(line + "\n" for line in lines)
    data = header.encode("utf-8", "surrogatepass") + pem.encode()
    load_or_key_file_error(write_private(fuzz_dir / "header.key", data), node_a)


@FUZZ
@given(nonce=st.text(max_size=30), identity=st.text(max_size=70))
def test_random_header_values_with_valid_pem(
    fuzz_dir: Path, node_a: NodeIdentity, valid_key_text: str, nonce: str, identity: str
) -> None:
    pem = valid_key_text[valid_key_text.index("-----BEGIN") :]
    text = f"identity: {identity}\npow-nonce: {nonce}\n{pem}"
    path = write_private(fuzz_dir / "values.key", text.encode("utf-8", "surrogatepass"))
    load_or_key_file_error(path, node_a)


# -- identities -------------------------------------------------------------------------------

REASONS = {"length", "hex", "all-zero", "all-ones", "not-a-point", "small-order", "not-in-subgroup"}


@settings(max_examples=1000, deadline=None)
@given(st.one_of(st.binary(max_size=40), st.binary(min_size=32, max_size=32)))
def test_random_bytes_into_identity(data: bytes) -> None:
    valid = len(data) == 32 and nacl.bindings.crypto_core_ed25519_is_valid_point(data)
    if valid:
        assert bytes(Identity(data)) == data
        return
    with pytest.raises(InvalidIdentityError) as info:
        Identity(data)
    assert info.value.reason in REASONS - {"hex"}
    assert (info.value.reason == "length") == (len(data) != 32)


@settings(max_examples=1000, deadline=None)
@given(
    st.one_of(
        st.text(max_size=80),
        st.text(alphabet="0123456789abcdefABCDEF", min_size=64, max_size=64),
        st.text(alphabet="0123456789abcdefxyz \t\u0660", min_size=64, max_size=64),
    )
)
def test_random_strings_into_identity_from_hex(text: str) -> None:
    try:
        raw = bytes.fromhex(text) if len(text) == 64 else None
    except ValueError:
        raw = None
    if raw is not None and len(raw) == 32 and nacl.bindings.crypto_core_ed25519_is_valid_point(raw):
        assert Identity.from_hex(text).hex() == text.lower()
        return
    with pytest.raises(InvalidIdentityError) as info:
        Identity.from_hex(text)
    assert info.value.reason in REASONS
