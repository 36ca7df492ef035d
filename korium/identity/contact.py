"""Signed contact records: "identity X can be reached at these addresses, as of time T".

A :class:`Contact` is self-validating at construction (structure), and :meth:`Contact.validate`
checks what needs context: freshness against a clock, the signature, and the proof of work
against the caller's difficulty. Each refusal is its own error type.

Signed bytes (all integers big-endian)::

    b"korium-contact-v1:" || identity (32) || u8 address count
        || count x (u16 length || UTF-8 address) || u64 timestamp_ms || u64 pow nonce

The wire form is msgspec MessagePack ``[identity, [address, ...], timestamp_ms, [nonce],
signature]``; see ``docs/protocol.md``.
"""

from __future__ import annotations

import functools
import struct
import time
from collections.abc import Iterable
from typing import Annotated, Any, Final

import msgspec

from korium.errors import (
    ContactDecodeError,
    ContactError,
    ContactFromFutureError,
    ContactProofError,
    ContactSignatureError,
    ContactStaleError,
    ContactStructureError,
    InsufficientProofOfWorkError,
    SignatureError,
)
from korium.identity.keys import SIGNATURE_LEN, Identity, Keypair
from korium.identity.pow import WIRE_INT_MAX, ProofOfWork, check_difficulty

CONTACT_DOMAIN: Final = b"korium-contact-v1:"
MAX_ADDRESSES: Final = 16
MAX_ADDRESS_BYTES: Final = 256
FUTURE_TOLERANCE_MS: Final = 5_000
DEFAULT_MAX_AGE_S: Final = 24 * 3600
MAX_CONTACT_SIZE: Final = 8 * 1024
"""No valid encoded record is larger (16 addresses of 256 bytes is about 4.2 KiB)."""

Address = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ADDRESS_BYTES)]
_u16, _u64 = struct.Struct(">H").pack, struct.Struct(">Q").pack


class Contact(msgspec.Struct, frozen=True, array_like=True, forbid_unknown_fields=True):
    """A signed, timestamped list of addresses for one identity, with its proof of work."""

    identity: Identity
    addresses: Annotated[tuple[Address, ...], msgspec.Meta(max_length=MAX_ADDRESSES)]
    timestamp_ms: Annotated[int, msgspec.Meta(ge=0, le=WIRE_INT_MAX)]
    proof: ProofOfWork
    signature: Annotated[bytes, msgspec.Meta(min_length=SIGNATURE_LEN, max_length=SIGNATURE_LEN)]

    def __post_init__(self) -> None:
        # msgspec checks the Meta bounds only when decoding; this covers direct construction
        # and the UTF-8 byte length, which Meta (counting characters) cannot express.
        if not isinstance(self.identity, Identity):
            raise ContactStructureError("identity must be an Identity")
        if len(self.addresses) > MAX_ADDRESSES:
            raise ContactStructureError(
                f"a contact holds at most {MAX_ADDRESSES} addresses, got {len(self.addresses)}"
            )
        for address in self.addresses:
            try:  # ASCII (the usual case) has as many bytes as characters: skip encoding
                size = len(address) if address.isascii() else len(address.encode("utf-8"))
            except UnicodeEncodeError:
                raise ContactStructureError("an address is not valid Unicode text") from None
            if not 1 <= size <= MAX_ADDRESS_BYTES:
                raise ContactStructureError(
                    f"each address must be 1 to {MAX_ADDRESS_BYTES} bytes of UTF-8, "
                    f"got {size} bytes"
                )
        if not 0 <= self.timestamp_ms <= WIRE_INT_MAX:
            raise ContactStructureError("timestamp_ms must be between 0 and 2**63 - 1")
        if len(self.signature) != SIGNATURE_LEN:
            raise ContactStructureError(
                f"a contact signature is {SIGNATURE_LEN} bytes, got {len(self.signature)}"
            )

    @classmethod
    def create(
        cls,
        keypair: Keypair,
        proof: ProofOfWork,
        addresses: Iterable[str],
        *,
        timestamp_ms: int | None = None,
    ) -> Contact:
        """Sign a fresh record for *keypair*'s identity (timestamp: now, unless given)."""
        addresses = tuple(addresses)
        ts = time.time_ns() // 1_000_000 if timestamp_ms is None else timestamp_ms
        unsigned = cls(keypair.identity, addresses, ts, proof, bytes(SIGNATURE_LEN))
        signature = keypair.sign(CONTACT_DOMAIN, unsigned.signed_bytes())
        return msgspec.structs.replace(unsigned, signature=signature)

    def signed_bytes(self) -> bytes:
        """The bytes the signature covers, without the domain prefix."""
        parts = [bytes(self.identity), bytes([len(self.addresses)])]
        for address in self.addresses:
            raw = address.encode("utf-8")
            parts += (_u16(len(raw)), raw)
        parts += (_u64(self.timestamp_ms), _u64(self.proof.nonce))
        return b"".join(parts)

    def validate(
        self,
        *,
        difficulty: int,
        now_ms: int | None = None,
        max_age_s: float = DEFAULT_MAX_AGE_S,
        future_tolerance_ms: int = FUTURE_TOLERANCE_MS,
    ) -> None:
        """Check freshness, then the signature, then the proof of work.

        :param difficulty: the proof-of-work bits this node requires.
        :param now_ms: the caller's clock in Unix milliseconds (default: wall clock).
        :raises ContactFromFutureError, ContactStaleError, ContactSignatureError,
            ContactProofError:
        """
        check_difficulty(difficulty)
        self.check_fresh(
            now_ms=now_ms, max_age_s=max_age_s, future_tolerance_ms=future_tolerance_ms
        )
        try:
            self.identity.verify(CONTACT_DOMAIN, self.signed_bytes(), self.signature)
        except SignatureError as exc:
            raise ContactSignatureError(
                f"contact for {self.identity.short}... has a bad signature: "
                "it was forged or altered in transit"
            ) from exc
        try:
            self.proof.verify(self.identity, difficulty)
        except InsufficientProofOfWorkError as exc:
            raise ContactProofError(f"contact refused: {exc}") from exc

    def check_fresh(
        self,
        *,
        now_ms: int | None = None,
        max_age_s: float = DEFAULT_MAX_AGE_S,
        future_tolerance_ms: int = FUTURE_TOLERANCE_MS,
    ) -> None:
        """The freshness part of :meth:`validate` alone (no signature, no proof of work).

        :raises ContactFromFutureError, ContactStaleError:
        """
        now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        drift = self.timestamp_ms - now
        if drift > future_tolerance_ms:
            raise ContactFromFutureError(
                f"contact for {self.identity.short}... is dated {drift} ms in the future "
                f"(tolerance {future_tolerance_ms} ms): check the clocks of both hosts",
                drift_ms=drift,
            )
        age = now - self.timestamp_ms
        if age > max_age_s * 1000:
            raise ContactStaleError(
                f"contact for {self.identity.short}... is {age / 1000:.0f} s old "
                f"(maximum {max_age_s:.0f} s): ask the peer to publish a fresh one",
                age_ms=age,
            )

    def encode(self) -> bytes:
        """The MessagePack wire form."""
        return _encoder.encode(self)

    @classmethod
    def decode(cls, data: bytes) -> Contact:
        """Parse the wire form. Checks size and structure, not signature or freshness.

        :raises ContactDecodeError: not a contact encoding, or larger than MAX_CONTACT_SIZE.
        :raises ContactStructureError: decodes, but breaks a structural rule.
        """
        if len(data) > MAX_CONTACT_SIZE:
            raise ContactDecodeError(
                f"contact record is {len(data)} bytes, the limit is {MAX_CONTACT_SIZE}"
            )
        try:
            return _decoder.decode(data)
        except msgspec.ValidationError as exc:
            raise ContactStructureError(f"malformed contact record: {exc}") from None
        except msgspec.DecodeError as exc:
            raise ContactDecodeError(f"not a contact record: {exc}") from None
        except ContactError:
            raise
        except UnicodeDecodeError:
            raise ContactDecodeError("not a contact record: an address is not UTF-8") from None
        except RecursionError:
            raise ContactDecodeError("not a contact record: nested too deeply") from None


def enc_hook(obj: Any) -> Any:
    """msgspec ``enc_hook``: an :class:`Identity` travels as its 32 bytes."""
    if isinstance(obj, Identity):
        return bytes(obj)
    raise NotImplementedError(f"cannot encode {type(obj).__name__}")


def dec_hook(kind: type, obj: Any) -> Any:
    """msgspec ``dec_hook``: 32 bytes become a validated :class:`Identity`."""
    if kind is Identity:
        if not isinstance(obj, bytes):
            raise TypeError(f"expected 32 bytes, got {type(obj).__name__}")
        return _wire_identity(obj)  # InvalidIdentityError is a ValueError: a ValidationError
    raise NotImplementedError(f"cannot decode {kind.__name__}")


@functools.lru_cache(maxsize=16384)
def _wire_identity(raw: bytes) -> Identity:
    """Decoded identities are shared: the same peers appear in message after message, and an
    Identity is immutable. Invalid keys raise every time (exceptions are not cached)."""
    return Identity(raw)


_encoder: Final = msgspec.msgpack.Encoder(enc_hook=enc_hook)
_decoder: Final = msgspec.msgpack.Decoder(Contact, dec_hook=dec_hook)
