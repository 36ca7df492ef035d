"""Ed25519 keys, self-certifying identities and domain-separated signatures.

An :class:`Identity` *is* a 32-byte Ed25519 public key: there is no registry to consult, a peer
proves it owns an identity by signing with the matching private key. Every signature korium makes
is over ``domain || message`` with a per-structure domain (``korium-contact-v1:`` ...), so a
signature made for one purpose can never be replayed as another. Verification is strict
(libsodium): non-canonical encodings and small-order keys or ``R`` values are refused.
"""

from __future__ import annotations

import functools
import re
from typing import Final

import nacl.bindings
import nacl.exceptions
import nacl.signing

from korium.errors import InvalidIdentityError, SignatureError

IDENTITY_LEN: Final = 32
SIGNATURE_LEN: Final = 64
_DOMAIN_RE: Final = re.compile(rb"[a-z0-9][a-z0-9-]*:")
_HEX_RE: Final = re.compile(r"[0-9a-fA-F]*")


def check_domain(domain: bytes) -> None:
    """Refuse a signature domain that could be confused with another one."""
    if not _DOMAIN_RE.fullmatch(domain):
        raise ValueError(
            f"signature domain {domain!r} must look like b'korium-name-v1:' "
            "(lowercase letters, digits and dashes, ending in one colon)"
        )


class Identity:
    """A peer's identity: its 32-byte Ed25519 public key, shown as 64 lowercase hex digits.

    Construction validates the key, so code holding an ``Identity`` may trust it. Equal
    identities compare and hash equal; ordering is bytewise.
    """

    __slots__ = ("_hash", "_key")
    _key: bytes
    _hash: int

    def __init__(self, key: bytes) -> None:
        if isinstance(key, str):
            raise TypeError("Identity takes bytes; use Identity.from_hex for text")
        key = bytes(key)
        _validate_public_key(key)
        self._key = key
        self._hash = hash(key)

    @classmethod
    def from_hex(cls, text: str) -> Identity:
        """Parse 64 hex digits in any case."""
        if len(text) != 2 * IDENTITY_LEN:
            raise InvalidIdentityError(
                "length",
                f"an identity is {2 * IDENTITY_LEN} hex characters, got {len(text)}",
            )
        if not _HEX_RE.fullmatch(text):
            raise InvalidIdentityError(
                "hex", "an identity must contain only hex digits 0-9 and a-f"
            )
        return cls(bytes.fromhex(text))

    @classmethod
    def _trusted(cls, key: bytes) -> Identity:
        """Wrap a key known to be valid (our own keypair's) without re-checking it."""
        self = cls.__new__(cls)
        self._key = key
        self._hash = hash(key)
        return self

    def __bytes__(self) -> bytes:
        return self._key

    def hex(self) -> str:
        """The 64-character lowercase hex form."""
        return self._key.hex()

    @property
    def short(self) -> str:
        """The first 16 hex digits, for logs and tables."""
        return self._key[:8].hex()

    def __str__(self) -> str:
        return self._key.hex()

    def __repr__(self) -> str:
        return f"Identity('{self.short}...')"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Identity) and other._key == self._key

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Identity):
            return NotImplemented
        return self._key < other._key

    def __hash__(self) -> int:
        return self._hash

    def distance(self, other: Identity | bytes) -> int:
        """Kademlia XOR distance to another identity or 32-byte key."""
        return xor_distance(self._key, bytes(other))

    def verify(self, domain: bytes, message: bytes, signature: bytes) -> None:
        """Check *signature* over ``domain || message``; raise :class:`SignatureError` if bad."""
        check_domain(domain)
        if len(signature) != SIGNATURE_LEN:
            raise SignatureError(f"a signature is {SIGNATURE_LEN} bytes, got {len(signature)}")
        try:
            nacl.bindings.crypto_sign_open(signature + domain + message, self._key)
        except nacl.exceptions.BadSignatureError:
            raise SignatureError(
                f"signature does not verify for identity {self.short}... "
                f"under domain {domain.decode()!r}"
            ) from None


class Keypair:
    """An Ed25519 signing key and its identity.

    The secret is the 32-byte RFC 8032 seed. ``repr`` never shows it.
    """

    __slots__ = ("_identity", "_signing_key")

    def __init__(self, signing_key: nacl.signing.SigningKey) -> None:
        self._signing_key = signing_key
        self._identity = Identity._trusted(bytes(signing_key.verify_key))

    @classmethod
    def generate(cls) -> Keypair:
        """A fresh random keypair from the OS random source."""
        return cls(nacl.signing.SigningKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> Keypair:
        """Rebuild a keypair from its 32-byte secret seed."""
        if len(seed) != 32:
            raise ValueError(f"an Ed25519 seed is 32 bytes, got {len(seed)}")
        return cls(nacl.signing.SigningKey(bytes(seed)))

    @property
    def identity(self) -> Identity:
        """The public identity of this keypair."""
        return self._identity

    @property
    def seed(self) -> bytes:
        """The 32-byte secret seed. Keep it secret."""
        return bytes(self._signing_key)

    def sign(self, domain: bytes, message: bytes) -> bytes:
        """Sign ``domain || message``; returns the 64-byte signature."""
        check_domain(domain)
        return self._signing_key.sign(domain + message).signature

    def __repr__(self) -> str:
        return f"Keypair(identity={self._identity!r})"


def xor_distance(a: bytes, b: bytes) -> int:
    """XOR distance between two 32-byte keys, as an integer (smaller is closer)."""
    if len(a) != len(b):
        raise ValueError(f"keys of different lengths ({len(a)} and {len(b)}) have no distance")
    return int.from_bytes(a, "big") ^ int.from_bytes(b, "big")


# -- validation ---------------------------------------------------------------------------------


def _validate_public_key(key: bytes) -> None:
    if len(key) != IDENTITY_LEN:
        raise InvalidIdentityError("length", f"an identity is {IDENTITY_LEN} bytes, got {len(key)}")
    if key == bytes(IDENTITY_LEN):
        raise InvalidIdentityError("all-zero", "the all-zero key is not a valid identity")
    if key == b"\xff" * IDENTITY_LEN:
        raise InvalidIdentityError("all-ones", "the all-0xFF key is not a valid identity")
    if _is_valid_point(key):
        return
    reason, message = _diagnose_invalid_point(key)
    raise InvalidIdentityError(reason, message)


@functools.lru_cache(maxsize=16384)
def _is_valid_point(key: bytes) -> bool:
    """Canonical, on the curve, in the prime-order subgroup, not small order (libsodium).

    The check costs a scalar multiplication (~30 us); a node sees the same peers' keys in
    every lookup reply, so results are cached (bounded: about 2 MiB when full).
    """
    return bool(nacl.bindings.crypto_core_ed25519_is_valid_point(key))


# Edwards25519 arithmetic, used only to explain *why* libsodium refused a key.
_P: Final = 2**255 - 19
_D: Final = -121665 * pow(121666, _P - 2, _P) % _P
_SQRT_M1: Final = pow(2, (_P - 1) // 4, _P)


def _diagnose_invalid_point(key: bytes) -> tuple[str, str]:
    y = int.from_bytes(key, "little") & ((1 << 255) - 1)
    if y >= _P:
        return "not-a-point", "the key is not a canonical Ed25519 point encoding"
    point = _decompress(y, key[31] >> 7)
    if point is None:
        return "not-a-point", "the key is not a point on the Ed25519 curve"
    multiple = point
    for _ in range(3):  # [8]P: the cofactor kills every small-order component
        multiple = _add(multiple, multiple)
    if multiple == (0, 1):
        return "small-order", "the key is a small-order point, which anyone can forge against"
    return "not-in-subgroup", "the key has a small-order component (not in the prime-order group)"


def _decompress(y: int, sign: int) -> tuple[int, int] | None:
    u = (y * y - 1) % _P
    v = (_D * y * y + 1) % _P
    x2 = u * pow(v, _P - 2, _P) % _P
    x = pow(x2, (_P + 3) // 8, _P)
    if (x * x - x2) % _P != 0:
        x = x * _SQRT_M1 % _P
    if (x * x - x2) % _P != 0:
        return None
    if x == 0 and sign:
        return None
    if x & 1 != sign:
        x = _P - x
    return x, y


def _add(p1: tuple[int, int], p2: tuple[int, int]) -> tuple[int, int]:
    (x1, y1), (x2, y2) = p1, p2
    t = _D * x1 * x2 * y1 * y2 % _P
    x3 = (x1 * y2 + y1 * x2) * pow(1 + t, _P - 2, _P) % _P
    y3 = (y1 * y2 + x1 * x2) * pow(1 - t, _P - 2, _P) % _P
    return x3, y3
