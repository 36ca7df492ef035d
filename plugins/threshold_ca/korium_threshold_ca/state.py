"""What a key ceremony leaves behind: the CA's public key, and each signer's encrypted share.

:class:`CaPublicKey` is public and identical at every signer: the committee (sorted identities;
the i-th is FROST signer i+1), the group key, each signer's verifying share, and the time of
the ceremony, from which the CA certificate is built byte for byte the same everywhere.
:class:`SignerState` adds one signer's secret share. ``serialize(passphrase)`` seals it with
XChaCha20-Poly1305 under an Argon2id key, because a share on disk is a piece of the CA key.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, TypeVar

import msgspec
import nacl.bindings
import nacl.exceptions
import nacl.pwhash

from korium.errors import ConfigError, KoriumError
from korium.identity import Identity
from korium_threshold_ca import certificates, frost, group
from korium_threshold_ca.config import ThresholdCaConfig


class CaStateError(KoriumError, ValueError):
    """A CA public key or signer state that cannot be read or does not hang together."""


class WrongPassphraseError(CaStateError):
    """The passphrase does not open this signer state (or the file was altered)."""


MAX_STATE_SIZE = 64 * 1024
KdfStrength = Literal["interactive", "moderate", "sensitive"]
_KDF_LIMITS: dict[str, tuple[int, int]] = {
    "interactive": (
        nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE,
        nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE,
    ),
    "moderate": (nacl.pwhash.argon2id.OPSLIMIT_MODERATE, nacl.pwhash.argon2id.MEMLIMIT_MODERATE),
    "sensitive": (nacl.pwhash.argon2id.OPSLIMIT_SENSITIVE, nacl.pwhash.argon2id.MEMLIMIT_SENSITIVE),
}
_MAX_OPSLIMIT = nacl.pwhash.argon2id.OPSLIMIT_SENSITIVE
_MAX_MEMLIMIT = nacl.pwhash.argon2id.MEMLIMIT_SENSITIVE
_T = TypeVar("_T")
_LAST_X509_TIME = 253_402_300_799
"""9999-12-31T23:59:59Z, the last time X.509 can express."""
_MAGIC = b"KCAS\x01"
_HEADER = struct.Struct(">5sIQ16s24s")  # magic+version, opslimit, memlimit, salt, nonce


class _ConfigWire(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    n: int
    k: int
    trust_domain: str
    cert_validity: int
    ca_validity: int


class _PublicWire(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    config: _ConfigWire
    group_public_key: bytes
    signers: list[bytes]
    verifying_shares: list[bytes]
    ca_not_before: int


class _StateWire(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    public: _PublicWire
    identifier: int
    signing_share: bytes


@dataclass(frozen=True, slots=True)
class CaPublicKey:
    """The CA as the world sees it; give it to requesters and verifiers (``encode()``)."""

    config: ThresholdCaConfig
    group_public_key: bytes
    """The 32-byte Ed25519 CA key: every certificate verifies against it."""
    signers: tuple[Identity, ...]
    """The committee, sorted; FROST identifier i+1 is ``signers[i]``."""
    verifying_shares: tuple[bytes, ...]
    """``verifying_shares[i]`` checks the signature shares of ``signers[i]``."""
    ca_not_before: int
    """Unix time the CA certificate starts (agreed during the key ceremony)."""
    _package: frost.PublicKeyPackage = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.signers) != self.config.n or len(self.verifying_shares) != self.config.n:
            raise CaStateError(
                f"the CA names {len(self.signers)} signers, its config {self.config.n}"
            )
        if list(self.signers) != sorted(set(self.signers)):
            raise CaStateError("the CA's signers must be sorted and distinct")
        if not 0 <= self.ca_not_before < self.ca_not_after <= _LAST_X509_TIME:
            raise CaStateError(f"the CA's validity cannot start at {self.ca_not_before}")
        try:
            group.decode_element(self.group_public_key)
            for share in self.verifying_shares:
                group.decode_element(share)
        except group.GroupError as exc:
            raise CaStateError(f"the CA public key holds an invalid point: {exc}") from None
        self._check_shares_consistent()
        shares = {i + 1: share for i, share in enumerate(self.verifying_shares)}
        package = frost.PublicKeyPackage(self.group_public_key, shares, self.config.k)
        object.__setattr__(self, "_package", package)  # built and checked once

    def _check_shares_consistent(self) -> None:
        """The verifying shares lie on one polynomial of degree k-1 whose value at 0 is the
        group key; otherwise honest signers' shares would fail verification and be blamed."""
        k = self.config.k
        base = {i + 1: self.verifying_shares[i] for i in range(k)}
        expected = {0: self.group_public_key}
        expected.update({i + 1: self.verifying_shares[i] for i in range(k, self.config.n)})
        for x, element in expected.items():
            if _interpolate(base, x) != element:
                what = "the group key" if x == 0 else f"signer {x}'s verifying share"
                raise CaStateError(f"{what} does not fit the other verifying shares")

    @property
    def ca_not_after(self) -> int:
        """Unix time the CA certificate ends."""
        return self.ca_not_before + self.config.ca_validity

    @property
    def trust_domain(self) -> str:
        return self.config.trust_domain

    def identifier_of(self, signer: Identity) -> int:
        """The FROST identifier of *signer*; CaStateError if it is not in the committee."""
        try:
            return self.signers.index(signer) + 1
        except ValueError:
            raise CaStateError(f"{signer.short}... is not a signer of this CA") from None

    def identity_of(self, identifier: int) -> Identity:
        """The signer with FROST *identifier*; CaStateError if there is none."""
        if not 1 <= identifier <= len(self.signers):
            raise CaStateError(f"this CA has no signer {identifier}")
        return self.signers[identifier - 1]

    def public_key_package(self) -> frost.PublicKeyPackage:
        """The FROST view: group key, verifying shares by identifier, threshold."""
        return self._package

    def ca_certificate_tbs(self) -> bytes:
        """The CA certificate's to-be-signed bytes: the same at every signer and requester."""
        return certificates.ca_certificate_tbs(
            self.group_public_key, self.trust_domain, self.ca_not_before, self.ca_not_after
        )

    def encode(self) -> bytes:
        """MessagePack; ``CaPublicKey.decode`` reads it back."""
        return msgspec.msgpack.encode(self._wire())

    @classmethod
    def decode(cls, data: bytes) -> CaPublicKey:
        """Read an encoded CA public key; CaStateError says what is wrong with it."""
        return cls._from_wire(_decode(data, _PublicWire, "CA public key"))

    def _wire(self) -> _PublicWire:
        c = self.config
        config = _ConfigWire(c.n, c.k, c.trust_domain, c.cert_validity, c.ca_validity)
        signers = [bytes(s) for s in self.signers]
        shares = list(self.verifying_shares)
        return _PublicWire(config, self.group_public_key, signers, shares, self.ca_not_before)

    @classmethod
    def _from_wire(cls, wire: _PublicWire) -> CaPublicKey:
        c = wire.config
        try:
            config = ThresholdCaConfig(c.n, c.k, c.trust_domain, c.cert_validity, c.ca_validity)
            signers = tuple(Identity(key) for key in wire.signers)
        except (ConfigError, KoriumError, ValueError) as exc:
            raise CaStateError(f"invalid CA public key: {exc}") from None
        return cls(
            config, wire.group_public_key, signers, tuple(wire.verifying_shares), wire.ca_not_before
        )

    def __repr__(self) -> str:
        c = self.config
        key = self.group_public_key.hex()[:16]
        return f"CaPublicKey({c.k}-of-{c.n}, {c.trust_domain!r}, key={key}...)"


@dataclass(frozen=True, slots=True)
class SignerState:
    """One signer's share of the CA key, with the public CA it belongs to."""

    ca: CaPublicKey
    key_package: frost.KeyPackage = field(repr=False)

    def __post_init__(self) -> None:
        package = self.key_package
        ca = self.ca
        ca.identity_of(package.identifier)
        if group.base_mul(package.signing_share) != package.verifying_share:
            raise CaStateError("the signer's share does not match its verifying share")
        if package.verifying_share != ca.verifying_shares[package.identifier - 1]:
            raise CaStateError("the signer's share is not the one the CA knows for it")
        if package.group_public_key != ca.group_public_key or package.min_signers != ca.config.k:
            raise CaStateError("the signer's key package belongs to another CA")

    @property
    def identifier(self) -> int:
        """This signer's FROST identifier (1-based)."""
        return self.key_package.identifier

    @property
    def identity(self) -> Identity:
        """The node identity this share belongs to (it signs only from that node)."""
        return self.ca.identity_of(self.identifier)

    @property
    def config(self) -> ThresholdCaConfig:
        return self.ca.config

    def ca_public_key(self) -> CaPublicKey:
        """The CA's public key, to hand to requesters and verifiers."""
        return self.ca

    @classmethod
    def create(cls, ca: CaPublicKey, identifier: int, signing_share: bytes) -> SignerState:
        """The state of signer *identifier* holding *signing_share* (checked against *ca*)."""
        ca.identity_of(identifier)
        verifying = group.base_mul(signing_share)
        package = frost.KeyPackage(
            identifier, signing_share, verifying, ca.group_public_key, ca.config.k
        )
        return cls(ca, package)

    def serialize(self, passphrase: str | bytes, *, strength: KdfStrength = "moderate") -> bytes:
        """The state sealed under *passphrase* (Argon2id, then XChaCha20-Poly1305).

        *strength* picks libsodium's Argon2id limits: "moderate" (256 MiB, about a second)
        by default; "interactive" (64 MiB) for tests, "sensitive" (1 GiB) for cold storage.
        """
        plain = msgspec.msgpack.encode(
            _StateWire(self.ca._wire(), self.identifier, self.key_package.signing_share)
        )
        opslimit, memlimit = _KDF_LIMITS[strength]
        salt = os.urandom(16)
        nonce = os.urandom(24)
        header = _HEADER.pack(_MAGIC, opslimit, memlimit, salt, nonce)
        key = _derive_key(passphrase, salt, opslimit, memlimit)
        sealed = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(plain, header, nonce, key)
        return header + sealed

    @classmethod
    def deserialize(cls, data: bytes, passphrase: str | bytes) -> SignerState:
        """Open a state made by :meth:`serialize`; WrongPassphraseError if it does not open."""
        if len(data) > MAX_STATE_SIZE or len(data) < _HEADER.size + 16:
            raise CaStateError(f"not a signer state: {len(data)} bytes")
        magic, opslimit, memlimit, salt, nonce = _HEADER.unpack_from(data)
        if magic != _MAGIC:
            raise CaStateError("not a korium signer state (bad magic or version)")
        if not 1 <= opslimit <= _MAX_OPSLIMIT or not 8192 <= memlimit <= _MAX_MEMLIMIT:
            raise CaStateError("signer state with out-of-range key derivation limits")
        key = _derive_key(passphrase, salt, opslimit, memlimit)
        try:
            plain = nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
                data[_HEADER.size :], data[: _HEADER.size], nonce, key
            )
        except nacl.exceptions.CryptoError:
            raise WrongPassphraseError(
                "the passphrase does not open this signer state, or the file was altered"
            ) from None
        wire = _decode(plain, _StateWire, "signer state")
        ca = CaPublicKey._from_wire(wire.public)
        try:
            group.decode_scalar(wire.signing_share)
            return cls.create(ca, wire.identifier, wire.signing_share)
        except (group.GroupError, frost.FrostError) as exc:
            raise CaStateError(f"invalid signer state: {exc}") from None

    def __repr__(self) -> str:
        return f"SignerState(signer {self.identifier} of {self.ca!r})"


def _interpolate(points: dict[int, bytes], x: int) -> bytes:
    """The element at *x* of the polynomial (in the exponent) through *points*."""
    participants = list(points)
    return group.element_sum(
        group.mul(frost.lagrange_coefficient(i, participants, x), element)
        for i, element in points.items()
    )


def _derive_key(passphrase: str | bytes, salt: bytes, opslimit: int, memlimit: int) -> bytes:
    secret = passphrase.encode() if isinstance(passphrase, str) else bytes(passphrase)
    if not secret:
        raise CaStateError("an empty passphrase does not protect a key share")
    return nacl.pwhash.argon2id.kdf(32, secret, salt, opslimit=opslimit, memlimit=memlimit)


def _decode(data: bytes, kind: type[_T], what: str) -> _T:
    if len(data) > MAX_STATE_SIZE:
        raise CaStateError(f"{what} of {len(data)} bytes exceeds {MAX_STATE_SIZE}")
    try:
        return msgspec.msgpack.decode(data, type=kind)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
        raise CaStateError(f"malformed {what}: {exc}") from None


def make_ca_public_key(
    config: ThresholdCaConfig,
    signers: Sequence[Identity],
    public: frost.PublicKeyPackage,
    ca_not_before: int,
) -> CaPublicKey:
    """The CaPublicKey of a committee (any order) from FROST's public key package."""
    ordered = tuple(sorted(set(signers)))
    shares = tuple(public.verifying_shares[i + 1] for i in range(len(ordered)))
    return CaPublicKey(config, public.group_public_key, ordered, shares, ca_not_before)
