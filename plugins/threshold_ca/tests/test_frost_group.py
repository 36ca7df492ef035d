"""Tests of the Ed25519 group layer (``korium_threshold_ca.group``) under FROST.

Scalar arithmetic is checked against Python integers mod L, element arithmetic against the
group laws and RFC 8032 key derivation, and the decoders against the eight small-order points,
non-canonical and off-curve encodings, mixed-order points, korium's independent identity-key
validator, and arbitrary bytes (only GroupError may escape).
"""

from __future__ import annotations

import hashlib
from typing import Final

import nacl.signing
import pytest
from hypothesis import example, given
from hypothesis import strategies as st
from korium_threshold_ca import group
from korium_threshold_ca.group import GroupError, L

from korium.errors import InvalidIdentityError, KoriumError
from korium.identity import Identity

P: Final = 2**255 - 19
B: Final = group.base_mul(group.scalar_from_int(1))

# The eight points of order dividing 8, canonically encoded (libsodium's ge25519_has_small_order
# list plus the x-negated twins); test_small_order_list_is_right checks [8]T = identity for each.
SMALL_ORDER: Final = [
    bytes.fromhex("0100000000000000000000000000000000000000000000000000000000000000"),  # order 1
    bytes.fromhex("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),  # order 2
    bytes.fromhex("0000000000000000000000000000000000000000000000000000000000000000"),  # order 4
    bytes.fromhex("0000000000000000000000000000000000000000000000000000000000000080"),  # order 4
    bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"),  # order 8
    bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85"),  # order 8
    bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"),  # order 8
    bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa"),  # order 8
]
scalars = st.integers(min_value=0, max_value=L - 1)
nonzero_scalars = st.integers(min_value=1, max_value=L - 1)
# Candidate encodings: random bytes (mostly invalid), prime-order points, mixed-order points.
encodings = st.one_of(
    st.binary(min_size=32, max_size=32),
    nonzero_scalars.map(lambda s: group.base_mul(group.scalar_from_int(s))),
    st.tuples(nonzero_scalars, st.sampled_from(SMALL_ORDER)).map(
        lambda t: group.add(group.base_mul(group.scalar_from_int(t[0])), t[1])
    ),
)


def _times_eight(point: bytes) -> bytes:
    for _ in range(3):
        point = group.add(point, point)
    return point


def test_constants() -> None:
    assert L == 0x1000000000000000000000000000000014DEF9DEA2F79CD65812631A5CF5D3ED  # RFC 8032
    assert bytes.fromhex("01" + "00" * 31) == group.IDENTITY
    # RFC 8032 section 5.1: the base point's encoding
    assert B.hex() == "5866666666666666666666666666666666666666666666666666666666666666"
    assert issubclass(GroupError, KoriumError)
    assert issubclass(GroupError, ValueError)


@given(scalars, scalars)
def test_scalar_arithmetic_matches_integers(a: int, b: int) -> None:
    sa, sb = group.scalar_from_int(a), group.scalar_from_int(b)
    assert group.scalar_to_int(group.scalar_add(sa, sb)) == (a + b) % L
    assert group.scalar_to_int(group.scalar_sub(sa, sb)) == (a - b) % L
    assert group.scalar_to_int(group.scalar_mul(sa, sb)) == a * b % L
    assert group.scalar_to_int(group.scalar_negate(sa)) == -a % L
    if a:
        assert group.scalar_to_int(group.scalar_invert(sa)) * a % L == 1


def test_scalar_from_int_reduces_and_encodes_little_endian() -> None:
    assert group.scalar_from_int(L + 5) == bytes([5]) + bytes(31)
    assert group.scalar_from_int(-1) == (L - 1).to_bytes(32, "little")
    assert group.scalar_to_int(bytes([1, 2]) + bytes(30)) == 0x0201


def test_scalar_invert_of_zero_is_refused() -> None:
    with pytest.raises(GroupError, match="zero has no inverse"):
        group.scalar_invert(bytes(32))
    with pytest.raises(GroupError, match="zero has no inverse"):
        group.scalar_invert(L.to_bytes(32, "little"))


def test_reduce() -> None:
    assert group.reduce(L.to_bytes(64, "little")) == bytes(32)
    assert group.reduce((L + 7).to_bytes(64, "little")) == group.scalar_from_int(7)
    wide = (2**512 - 1).to_bytes(64, "little")
    assert group.scalar_to_int(group.reduce(wide)) == (2**512 - 1) % L
    for size in (0, 32, 63, 65):
        with pytest.raises(GroupError, match=f"64 bytes, got {size}"):
            group.reduce(bytes(size))


def test_random_scalar_is_canonical_nonzero_and_varies() -> None:
    values = {group.random_scalar() for _ in range(64)}
    assert len(values) == 64
    for value in values:
        assert group.decode_scalar(value) == value
        assert not group.is_zero(value)


def test_base_mul_matches_rfc8032_public_keys() -> None:
    key = nacl.signing.SigningKey(bytes(range(32)))
    # RFC 8032 section 5.1.5: the public key is (clamped SHA-512(seed)[:32]) * B
    digest = bytearray(hashlib.sha512(bytes(range(32))).digest()[:32])
    digest[0] &= 248
    digest[31] &= 127
    digest[31] |= 64
    scalar = group.scalar_from_int(int.from_bytes(digest, "little"))
    assert group.base_mul(scalar) == bytes(key.verify_key)


def test_zero_and_identity_are_handled() -> None:
    s = group.random_scalar()
    point = group.base_mul(s)
    assert group.base_mul(bytes(32)) == group.IDENTITY
    assert group.mul(bytes(32), point) == group.IDENTITY
    assert group.mul(s, group.IDENTITY) == group.IDENTITY
    assert group.add(point, group.IDENTITY) == point
    assert group.add(group.IDENTITY, point) == point
    assert group.sub(point, point) == group.IDENTITY
    assert group.element_sum([]) == group.IDENTITY
    assert group.element_sum([point]) == point
    assert group.is_zero(bytes(32))
    assert not group.is_zero(group.scalar_from_int(1))


@given(scalars, scalars)
def test_group_laws(a: int, b: int) -> None:
    sa, sb = group.scalar_from_int(a), group.scalar_from_int(b)
    pa, pb = group.base_mul(sa), group.base_mul(sb)
    assert group.add(pa, pb) == group.base_mul(group.scalar_from_int(a + b))
    assert group.sub(pa, pb) == group.base_mul(group.scalar_from_int(a - b))
    assert group.mul(sb, pa) == group.base_mul(group.scalar_from_int(a * b))
    assert group.element_sum([pa, pb, pa]) == group.base_mul(group.scalar_from_int(2 * a + b))


def test_mul_refuses_non_canonical_scalars_and_invalid_points() -> None:
    with pytest.raises(GroupError, match="canonical"):
        group.base_mul(L.to_bytes(32, "little"))
    with pytest.raises(GroupError, match="canonical"):
        group.mul(bytes(31), B)
    with pytest.raises(GroupError, match="not a valid group element"):
        group.mul(group.scalar_from_int(3), SMALL_ORDER[4])
    with pytest.raises(GroupError, match="not a point on the curve"):
        group.add(B, (2).to_bytes(32, "little"))
    with pytest.raises(GroupError, match="not a point on the curve"):
        group.sub((2).to_bytes(32, "little"), B)


# -- decoders -------------------------------------------------------------------------------------


def test_decode_scalar() -> None:
    assert group.decode_scalar(bytes(32)) == bytes(32)
    top = (L - 1).to_bytes(32, "little")
    assert group.decode_scalar(top) == top
    for bad in (L, L + 1, 2**256 - 1):
        with pytest.raises(GroupError, match="not canonical"):
            group.decode_scalar(bad.to_bytes(32, "little"))
    for size in (0, 31, 33, 64):
        with pytest.raises(GroupError, match=f"32 bytes, got {size}"):
            group.decode_scalar(bytes(size))


def test_decode_element_accepts_prime_order_points() -> None:
    point = group.base_mul(group.random_scalar())
    assert group.decode_element(point) == point
    assert group.decode_element(B) == B


def test_small_order_list_is_right() -> None:
    assert len(set(SMALL_ORDER)) == 8
    for point in SMALL_ORDER:
        assert _times_eight(point) == group.IDENTITY


@pytest.mark.parametrize("point", SMALL_ORDER[1:])
def test_decode_element_refuses_small_order_points(point: bytes) -> None:
    with pytest.raises(GroupError, match="small order"):
        group.decode_element(point)


def test_decode_element_refuses_the_identity() -> None:
    with pytest.raises(GroupError, match="identity"):
        group.decode_element(group.IDENTITY)


@pytest.mark.parametrize("torsion", SMALL_ORDER[1:])
def test_decode_element_refuses_mixed_order_points(torsion: bytes) -> None:
    mixed = group.add(group.base_mul(group.random_scalar()), torsion)
    with pytest.raises(GroupError, match="not in the prime-order subgroup"):
        group.decode_element(mixed)


@pytest.mark.parametrize(
    "y", [P, P + 1, P + 3, P + 18, 2**255 - 1], ids=["p", "p+1", "p+3", "p+18", "2^255-1"]
)
@pytest.mark.parametrize("sign", [0, 1])
def test_decode_element_refuses_non_canonical_encodings(y: int, sign: int) -> None:
    with pytest.raises(GroupError, match="not a canonical encoding"):
        group.decode_element((y | sign << 255).to_bytes(32, "little"))


@pytest.mark.parametrize("y", [2, 7, 8, 11, 12, 13, 17])
def test_decode_element_refuses_points_off_the_curve(y: int) -> None:
    with pytest.raises(GroupError, match="not a point on the Ed25519 curve"):
        group.decode_element(y.to_bytes(32, "little"))


@pytest.mark.parametrize("size", [0, 1, 31, 33, 64])
def test_decode_element_refuses_wrong_lengths(size: int) -> None:
    with pytest.raises(GroupError, match=f"32 bytes, got {size}"):
        group.decode_element(b"\x58" * size)


@given(encodings)
@example(bytes(32))
@example(group.IDENTITY)
@example(B)
def test_decode_element_agrees_with_korium_identity_validation(data: bytes) -> None:
    """Two independent validators (libsodium here, pure Python in korium.identity) agree."""
    try:
        Identity(data)
        identity_ok = True
    except InvalidIdentityError:
        identity_ok = False
    try:
        group.decode_element(data)
        element_ok = True
    except GroupError:
        element_ok = False
    assert element_ok == identity_ok


@given(st.binary(max_size=80))
@example(bytes(32))
@example(b"\xff" * 32)
def test_decoders_raise_only_group_error(data: bytes) -> None:
    for decode in (group.decode_scalar, group.decode_element):
        try:
            result = decode(data)
        except GroupError:
            continue
        assert result == data
        assert len(result) == 32


@given(st.binary(min_size=32, max_size=32))
def test_decode_scalar_accepts_exactly_the_values_below_l(data: bytes) -> None:
    accepted = True
    try:
        group.decode_scalar(data)
    except GroupError:
        accepted = False
    assert accepted == (int.from_bytes(data, "little") < L)
