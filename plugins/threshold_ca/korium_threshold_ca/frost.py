"""FROST(Ed25519, SHA-512) threshold signatures, RFC 9591, with a trusted dealer and Feldman VSS.

The CA key exists only as Shamir shares: any ``min_signers`` of the holders produce, in two
rounds (:func:`commit`, then :func:`sign` on the coordinator's commitment list), shares that
:func:`aggregate` turns into one plain RFC 8032 Ed25519 signature, so certificate verifiers never
learn that the key is shared. The coordinator checks every share before aggregating and names
the signers whose shares fail (RFC 9591 section 5.4, identifiable abort).

Everything is pure and reproduces the RFC 9591 Appendix E.1 vector. Identifiers are the
integers 1..65535, serialized as 32-byte scalars. Values from peers enter through validating
constructors (:class:`SigningCommitment`, :class:`PublicKeyPackage`) and raise
:class:`FrostError`. A :class:`SigningNonces` must be used for one :func:`sign` call only:
keeping that promise is the caller's job.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

import nacl.exceptions
import nacl.signing

from korium.errors import KoriumError
from korium_threshold_ca.group import (
    IDENTITY,
    GroupError,
    L,
    add,
    base_mul,
    decode_element,
    decode_scalar,
    element_sum,
    mul,
    random_scalar,
    reduce,
    scalar_add,
    scalar_from_int,
    scalar_mul,
    scalar_to_int,
)

CONTEXT: Final = b"FROST-ED25519-SHA512-v1"
"""RFC 9591 section 6.5 contextString."""
MAX_IDENTIFIER: Final = 65535
COMMITMENT_SIZE: Final = 96
SIGNATURE_SIZE: Final = 64


class FrostError(KoriumError, ValueError):
    """Invalid FROST input: a malformed commitment, a bad signer set, parameters out of range."""


class InvalidShareError(FrostError):
    """Signature shares that do not verify (identifiable abort); ``culprits`` names the signers."""

    def __init__(self, culprits: Iterable[int]) -> None:
        self.culprits: tuple[int, ...] = tuple(sorted(culprits))
        ids = ", ".join(map(str, self.culprits))
        if len(self.culprits) == 1:
            super().__init__(f"signature share of signer {ids} does not verify")
        else:
            super().__init__(f"signature shares of signers {ids} do not verify")


# -- hashes (RFC 9591 section 6.5) --------------------------------------------------------------


def h1(m: bytes) -> bytes:
    """Binding-factor hash: SHA-512(ctx || "rho" || m) mod L."""
    return reduce(hashlib.sha512(CONTEXT + b"rho" + m).digest())


def h2(m: bytes) -> bytes:
    """Challenge hash: SHA-512(m) mod L, no context (the RFC 8032 challenge)."""
    return reduce(hashlib.sha512(m).digest())


def h3(m: bytes) -> bytes:
    """Nonce hash: SHA-512(ctx || "nonce" || m) mod L."""
    return reduce(hashlib.sha512(CONTEXT + b"nonce" + m).digest())


def h4(m: bytes) -> bytes:
    """Message hash: SHA-512(ctx || "msg" || m), 64 bytes."""
    return hashlib.sha512(CONTEXT + b"msg" + m).digest()


def h5(m: bytes) -> bytes:
    """Commitment-list hash: SHA-512(ctx || "com" || m), 64 bytes."""
    return hashlib.sha512(CONTEXT + b"com" + m).digest()


def hdkg(m: bytes) -> bytes:
    """DKG proof-of-knowledge challenge: SHA-512(ctx || "dkg" || m) mod L (frost-core's HDKG)."""
    return reduce(hashlib.sha512(CONTEXT + b"dkg" + m).digest())


# -- data ---------------------------------------------------------------------------------------


def _check_identifier(identifier: int) -> None:
    if not 1 <= identifier <= MAX_IDENTIFIER:
        raise FrostError(f"identifier {identifier} is outside 1..{MAX_IDENTIFIER}")


def _element(data: bytes, what: str) -> bytes:
    try:
        return decode_element(data)
    except GroupError as exc:
        raise FrostError(f"{what}: {exc}") from exc


@dataclass(frozen=True, slots=True)
class SigningCommitment:
    """A signer's public round-one commitment (RFC 9591 section 5.1); validated when built."""

    identifier: int
    hiding: bytes
    binding: bytes

    def __post_init__(self) -> None:
        _check_identifier(self.identifier)
        _element(self.hiding, f"hiding commitment of signer {self.identifier}")
        _element(self.binding, f"binding commitment of signer {self.identifier}")

    def encode(self) -> bytes:
        """Return the 96 bytes SerializeScalar(identifier) || hiding || binding (section 4.3)."""
        return scalar_from_int(self.identifier) + self.hiding + self.binding

    @classmethod
    def decode(cls, data: bytes) -> SigningCommitment:
        """Parse :meth:`encode`'s output. :raises FrostError: if it is malformed."""
        if len(data) != COMMITMENT_SIZE:
            raise FrostError(f"a signing commitment is {COMMITMENT_SIZE} bytes, got {len(data)}")
        try:
            identifier = scalar_to_int(decode_scalar(data[:32]))
        except GroupError as exc:
            raise FrostError(f"commitment identifier: {exc}") from exc
        return cls(identifier, bytes(data[32:64]), bytes(data[64:]))


@dataclass(frozen=True, slots=True)
class SigningNonces:
    """A signer's secret round-one nonces and their public commitment; use for one signature."""

    hiding: bytes = field(repr=False)
    binding: bytes = field(repr=False)
    commitment: SigningCommitment


@dataclass(frozen=True, slots=True)
class KeyPackage:
    """One signer's long-lived key material; checks that the verifying share matches."""

    identifier: int
    signing_share: bytes = field(repr=False)
    verifying_share: bytes
    group_public_key: bytes
    min_signers: int

    def __post_init__(self) -> None:
        _check_identifier(self.identifier)
        _check_min_signers(self.min_signers, MAX_IDENTIFIER)
        _element(self.group_public_key, "group public key")
        try:
            share = decode_scalar(self.signing_share)
        except GroupError as exc:
            raise FrostError(f"signing share of signer {self.identifier}: {exc}") from exc
        if base_mul(share) != self.verifying_share:
            raise FrostError(f"verifying share of signer {self.identifier} does not match")


@dataclass(frozen=True, slots=True)
class PublicKeyPackage:
    """The group public key and every signer's verifying share; validated when built."""

    group_public_key: bytes
    verifying_shares: Mapping[int, bytes]
    min_signers: int

    def __post_init__(self) -> None:
        _element(self.group_public_key, "group public key")
        shares = dict(self.verifying_shares)
        _check_min_signers(self.min_signers, len(shares))
        for identifier, share in shares.items():
            _check_identifier(identifier)
            _element(share, f"verifying share of signer {identifier}")
        object.__setattr__(self, "verifying_shares", shares)


def _check_min_signers(min_signers: int, max_signers: int) -> None:
    if not 2 <= min_signers <= max_signers <= MAX_IDENTIFIER:
        raise FrostError(
            f"need 2 <= min_signers <= max_signers <= {MAX_IDENTIFIER}, "
            f"got min_signers={min_signers}, max_signers={max_signers}"
        )


# -- round one (RFC 9591 sections 4.1 and 5.1) --------------------------------------------------


def nonce_generate(secret: bytes, randomness: bytes | None = None) -> bytes:
    """Section 4.1: H3(random_bytes(32) || SerializeScalar(secret)); *randomness* for tests."""
    randomness = os.urandom(32) if randomness is None else randomness
    if len(randomness) != 32:
        raise FrostError(f"nonce randomness is 32 bytes, got {len(randomness)}")
    return h3(randomness + secret)


def commit(
    key_package: KeyPackage,
    *,
    hiding_randomness: bytes | None = None,
    binding_randomness: bytes | None = None,
) -> SigningNonces:
    """Section 5.1 round one: fresh nonces and their commitment (send only the commitment)."""
    hiding = nonce_generate(key_package.signing_share, hiding_randomness)
    binding = nonce_generate(key_package.signing_share, binding_randomness)
    commitment = SigningCommitment(key_package.identifier, base_mul(hiding), base_mul(binding))
    return SigningNonces(hiding, binding, commitment)


# -- shared computations (RFC 9591 section 4) ---------------------------------------------------


def _by_identifier(commitments: Sequence[SigningCommitment]) -> dict[int, SigningCommitment]:
    """Index the commitment list sorted by identifier, refusing duplicates."""
    indexed = {c.identifier: c for c in commitments}
    if len(indexed) != len(commitments):
        raise FrostError("the commitment list names a signer twice")
    return dict(sorted(indexed.items()))


def encode_commitment_list(commitments: Sequence[SigningCommitment]) -> bytes:
    """Section 4.3: the commitments, sorted by identifier, concatenated."""
    return b"".join(c.encode() for c in _by_identifier(commitments).values())


def binding_factor_inputs(
    group_public_key: bytes, commitments: Sequence[SigningCommitment], message: bytes
) -> dict[int, bytes]:
    """Section 4.4 ``rho_input`` per signer: PK || H4(msg) || H5(list) || SerializeScalar(id)."""
    prefix = group_public_key + h4(message) + h5(encode_commitment_list(commitments))
    return {i: prefix + scalar_from_int(i) for i in _by_identifier(commitments)}


def compute_binding_factors(
    group_public_key: bytes, commitments: Sequence[SigningCommitment], message: bytes
) -> dict[int, bytes]:
    """Section 4.4: each signer's binding factor H1(rho_input)."""
    inputs = binding_factor_inputs(group_public_key, commitments, message)
    return {i: h1(rho_input) for i, rho_input in inputs.items()}


def compute_group_commitment(
    commitments: Sequence[SigningCommitment], binding_factors: Mapping[int, bytes]
) -> bytes:
    """Section 4.5: R = sum of hiding_i + binding_factor_i * binding_i."""
    try:
        return element_sum(
            add(c.hiding, mul(binding_factors[i], c.binding))
            for i, c in _by_identifier(commitments).items()
        )
    except KeyError as exc:
        raise FrostError(f"no binding factor for signer {exc.args[0]}") from exc


def compute_challenge(group_commitment: bytes, group_public_key: bytes, message: bytes) -> bytes:
    """Section 4.6: c = H2(R || PK || msg); refuses an identity R (SerializeElement fails)."""
    if group_commitment == IDENTITY:
        raise FrostError("the group commitment is the identity element")
    return h2(group_commitment + group_public_key + message)


def _lagrange(identifier: int, participants: Sequence[int], x: int = 0) -> int:
    if len(set(participants)) != len(participants):
        raise FrostError("the participant list names a signer twice")
    if identifier not in participants:
        raise FrostError(f"signer {identifier} is not among the participants")
    numerator = denominator = 1
    for other in participants:
        if other != identifier:
            numerator = numerator * (other - x) % L
            denominator = denominator * (other - identifier) % L
    return numerator * pow(denominator, -1, L) % L


def lagrange_coefficient(identifier: int, participants: Sequence[int], x: int = 0) -> bytes:
    """Section 4.2 ``derive_interpolating_value``, at *x* (0: the secret's place; another x
    evaluates the polynomial through the participants' points there, as a share check does)."""
    return scalar_from_int(_lagrange(identifier, participants, x))


@dataclass(frozen=True, slots=True)
class _Round:
    """What every party derives from (public key, commitment list, message), computed once."""

    commitments: dict[int, SigningCommitment]
    binding_factors: dict[int, bytes]
    group_commitment: bytes
    challenge: bytes

    def lambda_challenge(self, identifier: int) -> bytes:
        """lambda_i * c, the factor of signer *identifier*'s secret share in its share."""
        lambda_i = lagrange_coefficient(identifier, list(self.commitments))
        return scalar_mul(lambda_i, self.challenge)


def _round(
    group_public_key: bytes, commitments: Sequence[SigningCommitment], message: bytes
) -> _Round:
    indexed = _by_identifier(commitments)
    factors = compute_binding_factors(group_public_key, commitments, message)
    group_commitment = compute_group_commitment(commitments, factors)
    challenge = compute_challenge(group_commitment, group_public_key, message)
    return _Round(indexed, factors, group_commitment, challenge)


# -- round two and aggregation (RFC 9591 sections 5.2 to 5.4) -----------------------------------


def sign(
    key_package: KeyPackage,
    nonces: SigningNonces,
    message: bytes,
    commitments: Sequence[SigningCommitment],
) -> bytes:
    """Section 5.2: this signer's share z_i = d_i + e_i * rho_i + lambda_i * s_i * c.

    :raises FrostError: if our commitment is absent or differs from ``nonces.commitment``, the
        list names a signer twice or has fewer than ``min_signers`` commitments.
    """
    me, indexed = key_package.identifier, _by_identifier(commitments)
    if indexed.get(me) != nonces.commitment:
        raise FrostError(f"the commitment list lacks or alters signer {me}'s own commitment")
    if len(indexed) < key_package.min_signers:
        raise FrostError(
            f"{len(indexed)} commitments, fewer than min_signers={key_package.min_signers}"
        )
    state = _round(key_package.group_public_key, commitments, message)
    return scalar_add(
        scalar_add(nonces.hiding, scalar_mul(nonces.binding, state.binding_factors[me])),
        scalar_mul(state.lambda_challenge(me), key_package.signing_share),
    )


def _share_verifies(state: _Round, identifier: int, verifying_share: bytes, share: bytes) -> bool:
    """Section 5.4: z_i * B == D_i + rho_i * E_i + (c * lambda_i) * PK_i."""
    try:
        z = decode_scalar(share)
    except GroupError:
        return False
    commitment = state.commitments[identifier]
    expected = add(
        add(commitment.hiding, mul(state.binding_factors[identifier], commitment.binding)),
        mul(state.lambda_challenge(identifier), verifying_share),
    )
    return base_mul(z) == expected


def verify_signature_share(
    identifier: int,
    verifying_share: bytes,
    share: bytes,
    commitments: Sequence[SigningCommitment],
    message: bytes,
    group_public_key: bytes,
) -> bool:
    """Section 5.4: whether signer *identifier*'s share is valid (False if not a scalar).

    :raises FrostError: if the list names a signer twice or lacks *identifier*.
    :raises GroupError: if *verifying_share* is not a valid element.
    """
    state = _round(group_public_key, commitments, message)
    if identifier not in state.commitments:
        raise FrostError(f"signer {identifier} has no commitment in the list")
    return _share_verifies(state, identifier, verifying_share, share)


def aggregate(
    message: bytes,
    commitments: Sequence[SigningCommitment],
    shares: Mapping[int, bytes],
    public: PublicKeyPackage,
) -> bytes:
    """Section 5.3: verify every share, then return the Ed25519 signature R || sum(z_i).

    :raises InvalidShareError: naming every signer whose share does not verify.
    :raises FrostError: if shares and commitments name different signers, a signer is unknown,
        there are fewer than ``min_signers``, or the result does not verify under the group key.
    """
    if set(shares) != set(_by_identifier(commitments)):
        raise FrostError("the signature shares and the commitment list name different signers")
    if len(shares) < public.min_signers:
        raise FrostError(f"{len(shares)} shares, fewer than min_signers={public.min_signers}")
    if unknown := set(shares) - set(public.verifying_shares):
        raise FrostError(f"signers {sorted(unknown)} are not in the public key package")
    state = _round(public.group_public_key, commitments, message)
    culprits = [
        i
        for i in state.commitments
        if not _share_verifies(state, i, public.verifying_shares[i], shares[i])
    ]
    if culprits:
        raise InvalidShareError(culprits)
    z = sum(scalar_to_int(shares[i]) for i in state.commitments)
    signature = state.group_commitment + scalar_from_int(z)
    if not verify(public.group_public_key, message, signature):
        raise FrostError("the aggregate does not verify: verifying shares and group key disagree")
    return signature


def verify(group_public_key: bytes, message: bytes, signature: bytes) -> bool:
    """Check a plain RFC 8032 Ed25519 signature (libsodium); False on any malformed input."""
    try:
        nacl.signing.VerifyKey(group_public_key).verify(message, signature)
    except (nacl.exceptions.CryptoError, ValueError, TypeError):
        return False
    return True


# -- polynomials, Feldman VSS and the trusted dealer (RFC 9591 Appendix C) ----------------------


def evaluate_polynomial(coefficients: Sequence[bytes], x: int) -> bytes:
    """Appendix C.1 ``polynomial_evaluate``: sum a_j * x^j by Horner's rule (constant-time ops)."""
    x_scalar = scalar_from_int(x)
    value = bytes(32)
    for coefficient in reversed(coefficients):
        value = scalar_add(scalar_mul(value, x_scalar), coefficient)
    return value


def vss_commit(coefficients: Sequence[bytes]) -> tuple[bytes, ...]:
    """Appendix C.2 ``vss_commit``: the coefficients times the base point."""
    return tuple(base_mul(coefficient) for coefficient in coefficients)


def vss_evaluate(commitment: Sequence[bytes], identifier: int) -> bytes:
    """Sum C_j * identifier^j: the verifying share *identifier* must have (Appendix C.2).

    :raises GroupError: if a commitment entry is not a valid element.
    """
    return element_sum(
        c if j == 0 else mul(scalar_from_int(pow(identifier, j, L)), c)
        for j, c in enumerate(commitment)
    )


def vss_verify(identifier: int, share: bytes, commitment: Sequence[bytes]) -> bool:
    """Appendix C.2 ``vss_verify``: False also when the share or commitment is malformed."""
    try:
        return base_mul(decode_scalar(share)) == vss_evaluate(commitment, identifier)
    except GroupError:
        return False


def trusted_dealer_keygen(
    max_signers: int,
    min_signers: int,
    *,
    secret: bytes | None = None,
    coefficients: Sequence[bytes] | None = None,
) -> tuple[dict[int, KeyPackage], PublicKeyPackage]:
    """Appendix C: split *secret* (random if None) into shares for signers 1..max_signers.

    :param coefficients: the ``min_signers - 1`` non-constant coefficients (random if None);
        with *secret*, the output is deterministic (the RFC vector).
    :raises FrostError: on parameters out of range or a zero / non-canonical secret.
    """
    _check_min_signers(min_signers, max_signers)
    try:
        secret = random_scalar() if secret is None else decode_scalar(secret)
        if coefficients is None:
            coefficients = [random_scalar() for _ in range(min_signers - 1)]
        coefficients = [decode_scalar(c) for c in coefficients]
    except GroupError as exc:
        raise FrostError(f"dealer input: {exc}") from exc
    if secret == bytes(32):
        raise FrostError("the group secret must not be zero")
    if len(coefficients) != min_signers - 1:
        raise FrostError(f"need {min_signers - 1} coefficients, got {len(coefficients)}")
    polynomial = [secret, *coefficients]
    group_public_key = base_mul(secret)
    packages: dict[int, KeyPackage] = {}
    for i in range(1, max_signers + 1):
        share = evaluate_polynomial(polynomial, i)
        packages[i] = KeyPackage(i, share, base_mul(share), group_public_key, min_signers)
    verifying = {i: p.verifying_share for i, p in packages.items()}
    return packages, PublicKeyPackage(group_public_key, verifying, min_signers)
