"""The Ed25519 prime-order group for FROST (RFC 9591 section 6.5), over libsodium via PyNaCl.

Scalars are canonical 32-byte little-endian integers mod ``L``; elements are 32-byte RFC 8032
compressed points. Every element operation runs in libsodium. This module hides what PyNaCl
lacks (python-recipes.md section 4): libsodium's scalar multiplications fail on a zero scalar,
the identity element or an identity result, so :func:`base_mul` and :func:`mul` return
:data:`IDENTITY` themselves, and sums start from the identity, which ``add``/``sub`` accept.
Arithmetic on secret scalars uses libsodium's constant-time functions; only inversion (of public
values) uses Python integers.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Final

import nacl.bindings as sodium
import nacl.exceptions

from korium.errors import KoriumError

L: Final = 2**252 + 27742317777372353535851937790883648493
"""Order of the prime-order subgroup (RFC 8032 section 5.1)."""
SCALAR_SIZE: Final = 32
ELEMENT_SIZE: Final = 32
IDENTITY: Final = b"\x01" + bytes(31)
"""Encoding of the neutral element (0, 1)."""
_ZERO: Final = bytes(SCALAR_SIZE)
_P: Final = 2**255 - 19  # the field prime; a canonical encoding has y < p


class GroupError(KoriumError, ValueError):
    """Bytes that are not a valid scalar or group element (the message says which and why)."""


def scalar_from_int(value: int) -> bytes:
    """Return *value* mod ``L`` as a 32-byte little-endian scalar."""
    return (value % L).to_bytes(SCALAR_SIZE, "little")


def scalar_to_int(scalar: bytes) -> int:
    """Return the integer a little-endian scalar encodes."""
    return int.from_bytes(scalar, "little")


def reduce(wide: bytes) -> bytes:
    """Reduce a 64-byte little-endian integer (a SHA-512 digest) mod ``L``."""
    if len(wide) != 64:
        raise GroupError(f"a wide scalar is 64 bytes, got {len(wide)}")
    return sodium.crypto_core_ed25519_scalar_reduce(wide)


def random_scalar() -> bytes:
    """Return a uniformly random nonzero scalar (RFC 9591 section 3.1 ``RandomScalar``)."""
    while is_zero(scalar := reduce(os.urandom(64))):
        pass  # probability 2^-252
    return scalar


def scalar_add(a: bytes, b: bytes) -> bytes:
    """Return ``a + b`` mod ``L``."""
    return sodium.crypto_core_ed25519_scalar_add(a, b)


def scalar_sub(a: bytes, b: bytes) -> bytes:
    """Return ``a - b`` mod ``L``."""
    return sodium.crypto_core_ed25519_scalar_sub(a, b)


def scalar_mul(a: bytes, b: bytes) -> bytes:
    """Return ``a * b`` mod ``L``."""
    return sodium.crypto_core_ed25519_scalar_mul(a, b)


def scalar_negate(a: bytes) -> bytes:
    """Return ``-a`` mod ``L``."""
    return sodium.crypto_core_ed25519_scalar_negate(a)


def scalar_invert(a: bytes) -> bytes:
    """Return ``1 / a`` mod ``L``.

    :raises GroupError: if *a* is zero mod ``L``.
    """
    value = scalar_to_int(a) % L
    if value == 0:
        raise GroupError("zero has no inverse mod L")
    return scalar_from_int(pow(value, -1, L))


def is_zero(scalar: bytes) -> bool:
    """Tell whether a canonical scalar is zero."""
    return scalar == _ZERO


def decode_scalar(data: bytes) -> bytes:
    """RFC 9591 ``DeserializeScalar``: 32 bytes encoding an integer below ``L``.

    :raises GroupError: on a wrong length or a non-canonical value.
    """
    if len(data) != SCALAR_SIZE:
        raise GroupError(f"a scalar is {SCALAR_SIZE} bytes, got {len(data)}")
    if scalar_to_int(data) >= L:
        raise GroupError("the scalar is not canonical (not below the group order L)")
    return bytes(data)


def decode_element(data: bytes) -> bytes:
    """RFC 9591 ``DeserializeElement`` for Ed25519 (section 6.5).

    Accepts only a canonical encoding of a point of the prime-order subgroup other than the
    identity, so no small-order or mixed-order point gets in.

    :raises GroupError: saying which of those rules *data* breaks.
    """
    if len(data) != ELEMENT_SIZE:
        raise GroupError(f"an element is {ELEMENT_SIZE} bytes, got {len(data)}")
    if data == IDENTITY:
        raise GroupError("the element is the identity, which RFC 9591 refuses")
    if not sodium.crypto_core_ed25519_is_valid_point(data):
        raise GroupError(f"the element is {_why_invalid(bytes(data))}")
    return bytes(data)


def _why_invalid(data: bytes) -> str:
    """Explain why libsodium refused a 32-byte element (slow path, errors only)."""
    if scalar_to_int(data) & ((1 << 255) - 1) >= _P:
        return "not a canonical encoding (y >= 2^255 - 19)"
    multiple = data
    try:
        for _ in range(3):  # [8]P is the identity exactly for small-order points
            multiple = sodium.crypto_core_ed25519_add(multiple, multiple)
    except nacl.exceptions.RuntimeError:
        return "not a point on the Ed25519 curve"
    if multiple == IDENTITY:
        return "a point of small order"
    return "not in the prime-order subgroup (it has a small-order component)"


def _check_scalar(scalar: bytes) -> None:
    if len(scalar) != SCALAR_SIZE or scalar_to_int(scalar) >= L:
        raise GroupError("a scalar multiplier must be 32 bytes and canonical")


def base_mul(scalar: bytes) -> bytes:
    """Return ``scalar * B``; the identity when *scalar* is zero."""
    _check_scalar(scalar)
    if is_zero(scalar):
        return IDENTITY
    return sodium.crypto_scalarmult_ed25519_base_noclamp(scalar)


def mul(scalar: bytes, element: bytes) -> bytes:
    """Return ``scalar * element``; the identity when either is zero/the identity.

    :raises GroupError: if *element* is not a valid element (libsodium checks it again).
    """
    _check_scalar(scalar)
    if is_zero(scalar) or element == IDENTITY:
        return IDENTITY
    try:
        return sodium.crypto_scalarmult_ed25519_noclamp(scalar, element)
    except (nacl.exceptions.RuntimeError, nacl.exceptions.TypeError) as exc:
        raise GroupError("cannot multiply: the point is not a valid group element") from exc


def add(p: bytes, q: bytes) -> bytes:
    """Return ``p + q`` (either may be the identity)."""
    try:
        return sodium.crypto_core_ed25519_add(p, q)
    except (nacl.exceptions.RuntimeError, nacl.exceptions.TypeError) as exc:
        raise GroupError("cannot add: an operand is not a point on the curve") from exc


def sub(p: bytes, q: bytes) -> bytes:
    """Return ``p - q`` (either may be the identity)."""
    try:
        return sodium.crypto_core_ed25519_sub(p, q)
    except (nacl.exceptions.RuntimeError, nacl.exceptions.TypeError) as exc:
        raise GroupError("cannot subtract: an operand is not a point on the curve") from exc


def element_sum(elements: Iterable[bytes]) -> bytes:
    """Return the sum of *elements*; the identity for an empty sum."""
    total = IDENTITY
    for element in elements:
        total = add(total, element)
    return total
