"""Tests of FROST(Ed25519, SHA-512) (``korium_threshold_ca.frost``) against RFC 9591.

The RFC 9591 Appendix E.1 vector is reproduced value by value (copied below from
cfrg/draft-irtf-cfrg-frost poc/frost-ed25519-sha512.json, identical to the RFC text; the
intermediates not printed in the RFC were recomputed independently in pure Python). Random
k-of-n keys then sign with many signer subsets, and every aggregate must verify as a plain
Ed25519 signature under PyNaCl. Bad shares must be pinned on exactly their signers, bad
commitment lists refused before any secret is used, and no secret may show in a repr.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Mapping, Sequence
from typing import Final

import nacl.signing
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from korium_threshold_ca import frost, group
from korium_threshold_ca.frost import (
    FrostError,
    InvalidShareError,
    KeyPackage,
    PublicKeyPackage,
    SigningCommitment,
    SigningNonces,
)
from korium_threshold_ca.group import L

from korium.errors import KoriumError

h = bytes.fromhex
Keys = tuple[dict[int, KeyPackage], PublicKeyPackage]
Round = tuple[list[SigningCommitment], dict[int, bytes], dict[int, SigningNonces]]

# -- RFC 9591 Appendix E.1 ------------------------------------------------------------------------

SECRET: Final = h("7b1c33d3f5291d85de664833beb1ad469f7fb6025a0ec78b3a790c6e13a98304")
GROUP_PUBLIC_KEY: Final = h("15d21ccd7ee42959562fc8aa63224c8851fb3ec85a3faf66040d380fb9738673")
MESSAGE: Final = h("74657374")
COEFFICIENTS: Final = [h("178199860edd8c62f5212ee91eff1295d0d670ab4ed4506866bae57e7030b204")]
SHARES: Final = {
    1: h("929dcc590407aae7d388761cddb0c0db6f5627aea8e217f4a033f2ec83d93509"),
    2: h("a91e66e012e4364ac9aaa405fcafd370402d9859f7b6685c07eed76bf409e80d"),
    3: h("d3cb090a075eb154e82fdb4b3cb507f110040905468bb9c46da8bdea643a9a02"),
}
PARTICIPANTS: Final = (1, 3)
ROUND_ONE: Final = {
    1: {
        "hiding_randomness": h("0fd2e39e111cdc266f6c0f4d0fd45c947761f1f5d3cb583dfcb9bbaf8d4c9fec"),
        "binding_randomness": h("69cd85f631d5f7f2721ed5e40519b1366f340a87c2f6856363dbdcda348a7501"),
        "hiding_nonce": h("812d6104142944d5a55924de6d49940956206909f2acaeedecda2b726e630407"),
        "binding_nonce": h("b1110165fc2334149750b28dd813a39244f315cff14d4e89e6142f262ed83301"),
        "hiding_commitment": h("b5aa8ab305882a6fc69cbee9327e5a45e54c08af61ae77cb8207be3d2ce13de3"),
        "binding_commitment": h("67e98ab55aa310c3120418e5050c9cf76cf387cb20ac9e4b6fdb6f82a469f932"),
        "binding_factor": h("f2cb9d7dd9beff688da6fcc83fa89046b3479417f47f55600b106760eb3b5603"),
        "lagrange": h("f8e97a2e8d31092c6bce7b51ef7c6f0a00000000000000000000000000000008"),
        "sig_share": h("001719ab5a53ee1a12095cd088fd149702c0720ce5fd2f29dbecf24b7281b603"),
    },
    3: {
        "hiding_randomness": h("86d64a260059e495d0fb4fcc17ea3da7452391baa494d4b00321098ed2a0062f"),
        "binding_randomness": h("13e6b25afb2eba51716a9a7d44130c0dbae0004a9ef8d7b5550c8a0e07c61775"),
        "hiding_nonce": h("c256de65476204095ebdc01bd11dc10e57b36bc96284595b8215222374f99c0e"),
        "binding_nonce": h("243d71944d929063bc51205714ae3c2218bd3451d0214dfb5aeec2a90c35180d"),
        "hiding_commitment": h("cfbdb165bd8aad6eb79deb8d287bcc0ab6658ae57fdcc98ed12c0669e90aec91"),
        "binding_commitment": h("7487bc41a6e712eea2f2af24681b58b1cf1da278ea11fe4e8b78398965f13552"),
        "binding_factor": h("b087686bf35a13f3dc78e780a34b0fe8a77fef1b9938c563f5573d71d8d7890f"),
        "lagrange": h("f6e97a2e8d31092c6bce7b51ef7c6f0a00000000000000000000000000000008"),
        "sig_share": h("bd86125de990acc5e1f13781d8e32c03a9bbd4c53539bbc106058bfd14326007"),
    },
}
H4_MESSAGE: Final = h(
    "504df914fa965023fb75c25ded4bb260f417de6d32e5c442c6ba313791cc9a49"
    "48d6273e8d3511f93348ea7a708a9b862bc73ba2a79cfdfe07729a193751cbc9"
)
H5_COMMITMENT_LIST: Final = h(
    "73af46d8ac3440e518d4ce440a0e7d4ad5f62ca8940f32de6d8dc00fc12c660b"
    "817d587d82f856d277ce6473cae6d2f5763f7da2e8b4d799a3f3e725d4522ec7"
)
ENCODED_COMMITMENT_LIST: Final = b"".join(
    i.to_bytes(32, "little")
    + ROUND_ONE[i]["hiding_commitment"]
    + ROUND_ONE[i]["binding_commitment"]
    for i in PARTICIPANTS
)
BINDING_FACTOR_INPUT_PREFIX: Final = GROUP_PUBLIC_KEY + H4_MESSAGE + H5_COMMITMENT_LIST
GROUP_COMMITMENT: Final = h("36282629c383bb820a88b71cae937d41f2f2adfcc3d02e55507e2fb9e2dd3cbe")
CHALLENGE: Final = h("24ea12de76516c09d7fd0c320389b9dbfcaa349c7436967354ed11d04cd8b409")
SIGNATURE: Final = h(
    "36282629c383bb820a88b71cae937d41f2f2adfcc3d02e55507e2fb9e2dd3cbe"
    "bd9d2b0844e49ae0f3fa935161e1419aab7b47d21a37ebeae1f17d4987b3160b"
)


@pytest.fixture(scope="module")
def rfc_keys() -> Keys:
    return frost.trusted_dealer_keygen(3, 2, secret=SECRET, coefficients=COEFFICIENTS)


@pytest.fixture(scope="module")
def rfc_nonces(
    rfc_keys: Keys,
) -> dict[int, SigningNonces]:
    packages, _ = rfc_keys
    return {
        i: frost.commit(
            packages[i],
            hiding_randomness=ROUND_ONE[i]["hiding_randomness"],
            binding_randomness=ROUND_ONE[i]["binding_randomness"],
        )
        for i in PARTICIPANTS
    }


@pytest.fixture(scope="module")
def rfc_commitments(rfc_nonces: dict[int, SigningNonces]) -> list[SigningCommitment]:
    return [rfc_nonces[3].commitment, rfc_nonces[1].commitment]  # order must not matter


def test_context_and_hashes() -> None:
    assert frost.CONTEXT == b"FROST-ED25519-SHA512-v1"
    m = b"korium"
    ctx = frost.CONTEXT

    def wide(data: bytes) -> int:
        return int.from_bytes(hashlib.sha512(data).digest(), "little") % L

    assert group.scalar_to_int(frost.h1(m)) == wide(ctx + b"rho" + m)
    assert group.scalar_to_int(frost.h2(m)) == wide(m)
    assert group.scalar_to_int(frost.h3(m)) == wide(ctx + b"nonce" + m)
    assert frost.h4(m) == hashlib.sha512(ctx + b"msg" + m).digest()
    assert frost.h5(m) == hashlib.sha512(ctx + b"com" + m).digest()
    assert group.scalar_to_int(frost.hdkg(m)) == wide(ctx + b"dkg" + m)


def test_rfc_h4_and_h5() -> None:
    assert frost.h4(MESSAGE) == H4_MESSAGE
    assert frost.h5(ENCODED_COMMITMENT_LIST) == H5_COMMITMENT_LIST


def test_rfc_group_public_key(rfc_keys: Keys) -> None:
    packages, public = rfc_keys
    assert group.base_mul(SECRET) == GROUP_PUBLIC_KEY
    assert public.group_public_key == GROUP_PUBLIC_KEY
    assert public.min_signers == 2
    assert all(p.group_public_key == GROUP_PUBLIC_KEY for p in packages.values())


@pytest.mark.parametrize("identifier", [1, 2, 3])
def test_rfc_participant_shares(rfc_keys: Keys, identifier: int) -> None:
    packages, public = rfc_keys
    assert sorted(packages) == [1, 2, 3]
    assert packages[identifier].identifier == identifier
    assert packages[identifier].signing_share == SHARES[identifier]
    assert packages[identifier].verifying_share == group.base_mul(SHARES[identifier])
    assert public.verifying_shares[identifier] == group.base_mul(SHARES[identifier])
    assert frost.evaluate_polynomial([SECRET, *COEFFICIENTS], identifier) == SHARES[identifier]


@pytest.mark.parametrize("identifier", PARTICIPANTS)
def test_rfc_nonces(rfc_nonces: dict[int, SigningNonces], identifier: int) -> None:
    vector = ROUND_ONE[identifier]
    assert rfc_nonces[identifier].hiding == vector["hiding_nonce"]
    assert rfc_nonces[identifier].binding == vector["binding_nonce"]
    share = SHARES[identifier]
    assert frost.nonce_generate(share, vector["hiding_randomness"]) == vector["hiding_nonce"]
    assert frost.nonce_generate(share, vector["binding_randomness"]) == vector["binding_nonce"]


@pytest.mark.parametrize("identifier", PARTICIPANTS)
def test_rfc_commitments(rfc_nonces: dict[int, SigningNonces], identifier: int) -> None:
    commitment = rfc_nonces[identifier].commitment
    assert commitment.identifier == identifier
    assert commitment.hiding == ROUND_ONE[identifier]["hiding_commitment"]
    assert commitment.binding == ROUND_ONE[identifier]["binding_commitment"]


def test_rfc_encoded_commitment_list(rfc_commitments: list[SigningCommitment]) -> None:
    assert frost.encode_commitment_list(rfc_commitments) == ENCODED_COMMITMENT_LIST
    assert ENCODED_COMMITMENT_LIST.hex() == (
        "0100000000000000000000000000000000000000000000000000000000000000"
        "b5aa8ab305882a6fc69cbee9327e5a45e54c08af61ae77cb8207be3d2ce13de3"
        "67e98ab55aa310c3120418e5050c9cf76cf387cb20ac9e4b6fdb6f82a469f932"
        "0300000000000000000000000000000000000000000000000000000000000000"
        "cfbdb165bd8aad6eb79deb8d287bcc0ab6658ae57fdcc98ed12c0669e90aec91"
        "7487bc41a6e712eea2f2af24681b58b1cf1da278ea11fe4e8b78398965f13552"
    )


@pytest.mark.parametrize("identifier", PARTICIPANTS)
def test_rfc_binding_factor_input(
    rfc_commitments: list[SigningCommitment], identifier: int
) -> None:
    inputs = frost.binding_factor_inputs(GROUP_PUBLIC_KEY, rfc_commitments, MESSAGE)
    assert sorted(inputs) == [1, 3]
    expected = BINDING_FACTOR_INPUT_PREFIX + identifier.to_bytes(32, "little")
    assert inputs[identifier] == expected
    assert (
        inputs[identifier]
        .hex()
        .startswith(
            "15d21ccd7ee42959562fc8aa63224c8851fb3ec85a3faf66040d380fb9738673504df914fa9650"
        )
    )


@pytest.mark.parametrize("identifier", PARTICIPANTS)
def test_rfc_binding_factors(rfc_commitments: list[SigningCommitment], identifier: int) -> None:
    factors = frost.compute_binding_factors(GROUP_PUBLIC_KEY, rfc_commitments, MESSAGE)
    assert factors[identifier] == ROUND_ONE[identifier]["binding_factor"]


def test_rfc_group_commitment_and_challenge(rfc_commitments: list[SigningCommitment]) -> None:
    factors = frost.compute_binding_factors(GROUP_PUBLIC_KEY, rfc_commitments, MESSAGE)
    commitment = frost.compute_group_commitment(rfc_commitments, factors)
    assert commitment == GROUP_COMMITMENT
    assert frost.compute_challenge(commitment, GROUP_PUBLIC_KEY, MESSAGE) == CHALLENGE


@pytest.mark.parametrize("identifier", PARTICIPANTS)
def test_rfc_lagrange_coefficients(identifier: int) -> None:
    assert frost.lagrange_coefficient(identifier, PARTICIPANTS) == ROUND_ONE[identifier]["lagrange"]
    assert (
        frost.lagrange_coefficient(identifier, PARTICIPANTS[::-1])
        == (ROUND_ONE[identifier]["lagrange"])
    )


@pytest.mark.parametrize("identifier", PARTICIPANTS)
def test_rfc_signature_shares(
    rfc_keys: Keys,
    rfc_nonces: dict[int, SigningNonces],
    rfc_commitments: list[SigningCommitment],
    identifier: int,
) -> None:
    packages, public = rfc_keys
    share = frost.sign(packages[identifier], rfc_nonces[identifier], MESSAGE, rfc_commitments)
    assert share == ROUND_ONE[identifier]["sig_share"]
    assert frost.verify_signature_share(
        identifier,
        public.verifying_shares[identifier],
        share,
        rfc_commitments,
        MESSAGE,
        GROUP_PUBLIC_KEY,
    )


def test_rfc_signature(
    rfc_keys: Keys,
    rfc_commitments: list[SigningCommitment],
) -> None:
    _, public = rfc_keys
    shares = {i: ROUND_ONE[i]["sig_share"] for i in PARTICIPANTS}
    signature = frost.aggregate(MESSAGE, rfc_commitments, shares, public)
    assert signature == SIGNATURE
    nacl.signing.VerifyKey(GROUP_PUBLIC_KEY).verify(MESSAGE, signature)
    assert frost.verify(GROUP_PUBLIC_KEY, MESSAGE, signature)
    assert not frost.verify(GROUP_PUBLIC_KEY, b"tesT", signature)


# -- random keys, many signer sets ---------------------------------------------------------------


def run_round(packages: Mapping[int, KeyPackage], signers: Sequence[int], message: bytes) -> Round:
    """Both rounds for *signers*: (commitment list, honest shares, nonces)."""
    nonces = {i: frost.commit(packages[i]) for i in signers}
    commitments = [n.commitment for n in nonces.values()]
    shares = {i: frost.sign(packages[i], nonces[i], message, commitments) for i in signers}
    return commitments, shares, nonces


@pytest.mark.parametrize(("n", "k"), [(2, 2), (3, 2), (5, 3), (7, 4), (10, 7)])
def test_random_k_of_n_signs_plain_ed25519(n: int, k: int) -> None:
    rng = random.Random(n * 100 + k)
    packages, public = frost.trusted_dealer_keygen(n, k)
    assert sorted(packages) == list(range(1, n + 1))
    assert len({p.signing_share for p in packages.values()}) == n
    subsets = [list(range(1, k + 1)), list(range(n - k + 1, n + 1)), list(range(1, n + 1))]
    subsets += [rng.sample(range(1, n + 1), rng.randint(k, n)) for _ in range(3)]
    signatures = set()
    for signers in subsets:
        message = f"certificate for {sorted(signers)}".encode()
        commitments, shares, _ = run_round(packages, signers, message)
        signature = frost.aggregate(message, commitments, shares, public)
        assert len(signature) == frost.SIGNATURE_SIZE
        nacl.signing.VerifyKey(public.group_public_key).verify(message, signature)
        assert frost.verify(public.group_public_key, message, signature)
        assert not frost.verify(public.group_public_key, message + b".", signature)
        with pytest.raises(nacl.exceptions.BadSignatureError):
            nacl.signing.VerifyKey(public.group_public_key).verify(b"other", signature)
        signatures.add(signature)
    assert len(signatures) == len(subsets)


def test_lagrange_interpolation_recovers_the_secret() -> None:
    secret = group.random_scalar()
    packages, _ = frost.trusted_dealer_keygen(6, 4, secret=secret)
    for signers in ([1, 2, 3, 4], [2, 3, 5, 6], [1, 3, 4, 5, 6]):
        total = sum(
            group.scalar_to_int(frost.lagrange_coefficient(i, signers))
            * group.scalar_to_int(packages[i].signing_share)
            for i in signers
        )
        assert total % L == group.scalar_to_int(secret)
    too_few = [1, 2, 3]
    total = sum(
        group.scalar_to_int(frost.lagrange_coefficient(i, too_few))
        * group.scalar_to_int(packages[i].signing_share)
        for i in too_few
    )
    assert total % L != group.scalar_to_int(secret)


def test_lagrange_coefficient_refuses_bad_participant_lists() -> None:
    with pytest.raises(FrostError, match="twice"):
        frost.lagrange_coefficient(1, [1, 2, 2])
    with pytest.raises(FrostError, match="signer 4 is not among the participants"):
        frost.lagrange_coefficient(4, [1, 2, 3])


# -- identifiable abort --------------------------------------------------------------------------

MSG: Final = b"leaf certificate TBS"


@pytest.fixture(scope="module")
def keys_3_of_5() -> Keys:
    return frost.trusted_dealer_keygen(5, 3)


@pytest.fixture
def honest(
    keys_3_of_5: Keys,
) -> Round:
    packages, _ = keys_3_of_5
    return run_round(packages, [1, 2, 4, 5], MSG)


def flip_bit(share: bytes) -> bytes:
    return bytes([share[0] ^ 1]) + share[1:]


def non_canonical(share: bytes) -> bytes:
    return (group.scalar_to_int(share) + L).to_bytes(32, "little")


CORRUPTIONS: Final = ["bit-flip", "other-message", "non-canonical", "all-ff", "short", "long"]


def corrupt(
    kind: str,
    identifier: int,
    keys: Keys,
    honest: Round,
) -> bytes:
    packages, _ = keys
    commitments, shares, nonces = honest
    share = shares[identifier]
    if kind == "bit-flip":
        return flip_bit(share)
    if kind == "other-message":
        return frost.sign(packages[identifier], nonces[identifier], b"other TBS", commitments)
    if kind == "non-canonical":
        return non_canonical(share)
    if kind == "all-ff":
        return b"\xff" * 32
    if kind == "short":
        return share[:31]
    assert kind == "long"
    return share + b"\x00"


def test_honest_shares_aggregate_and_verify(
    keys_3_of_5: Keys,
    honest: Round,
) -> None:
    _, public = keys_3_of_5
    commitments, shares, _ = honest
    for i, share in shares.items():
        vs = public.verifying_shares[i]
        assert frost.verify_signature_share(i, vs, share, commitments, MSG, public.group_public_key)
    assert frost.verify(
        public.group_public_key, MSG, frost.aggregate(MSG, commitments, shares, public)
    )


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_one_bad_share_is_named(
    keys_3_of_5: Keys,
    honest: Round,
    kind: str,
) -> None:
    _, public = keys_3_of_5
    commitments, shares, _ = honest
    bad = corrupt(kind, 4, keys_3_of_5, honest)
    assert bad != shares[4]
    assert not frost.verify_signature_share(
        4, public.verifying_shares[4], bad, commitments, MSG, public.group_public_key
    )
    with pytest.raises(InvalidShareError) as caught:
        frost.aggregate(MSG, commitments, {**shares, 4: bad}, public)
    assert caught.value.culprits == (4,)
    assert str(caught.value) == "signature share of signer 4 does not verify"


@pytest.mark.parametrize("kinds", [("bit-flip", "other-message"), ("non-canonical", "short")])
def test_two_bad_shares_are_both_named(
    keys_3_of_5: Keys,
    honest: Round,
    kinds: tuple[str, str],
) -> None:
    _, public = keys_3_of_5
    commitments, shares, _ = honest
    bad = {
        5: corrupt(kinds[0], 5, keys_3_of_5, honest),
        2: corrupt(kinds[1], 2, keys_3_of_5, honest),
    }
    with pytest.raises(InvalidShareError) as caught:
        frost.aggregate(MSG, commitments, {**shares, **bad}, public)
    assert caught.value.culprits == (2, 5)
    assert str(caught.value) == "signature shares of signers 2, 5 do not verify"
    assert isinstance(caught.value, FrostError)
    assert isinstance(caught.value, KoriumError)


def test_share_from_the_wrong_signer_is_named(
    keys_3_of_5: Keys,
    honest: Round,
) -> None:
    _, public = keys_3_of_5
    commitments, shares, _ = honest
    assert not frost.verify_signature_share(
        1, public.verifying_shares[1], shares[2], commitments, MSG, public.group_public_key
    )
    with pytest.raises(InvalidShareError) as caught:
        frost.aggregate(MSG, commitments, {**shares, 1: shares[2]}, public)
    assert caught.value.culprits == (1,)
    with pytest.raises(InvalidShareError) as caught:
        frost.aggregate(MSG, commitments, {**shares, 1: shares[2], 2: shares[1]}, public)
    assert caught.value.culprits == (1, 2)


def test_share_of_another_round_is_named(
    keys_3_of_5: Keys,
    honest: Round,
) -> None:
    packages, public = keys_3_of_5
    commitments, shares, _ = honest
    _, other_shares, _ = run_round(packages, [1, 2, 4, 5], MSG)  # fresh nonces, same message
    with pytest.raises(InvalidShareError) as caught:
        frost.aggregate(MSG, commitments, {**shares, 5: other_shares[5]}, public)
    assert caught.value.culprits == (5,)


@settings(max_examples=40, deadline=None)
@given(bad=st.binary(max_size=40))
@example(bad=bytes(32))
def test_arbitrary_share_bytes_only_blame_their_signer(
    keys_3_of_5: Keys,
    bad: bytes,
) -> None:
    packages, public = keys_3_of_5
    commitments, shares, _ = run_round(packages, [1, 3, 5], MSG)
    with pytest.raises(InvalidShareError) as caught:
        frost.aggregate(MSG, commitments, {**shares, 3: bad}, public)
    assert caught.value.culprits == (3,)


def test_verify_signature_share_needs_the_signer_in_the_list(
    keys_3_of_5: Keys,
    honest: Round,
) -> None:
    _, public = keys_3_of_5
    commitments, shares, _ = honest
    with pytest.raises(FrostError, match="signer 3 has no commitment"):
        frost.verify_signature_share(
            3, public.verifying_shares[3], shares[1], commitments, MSG, public.group_public_key
        )


def test_aggregate_refuses_inconsistent_sets(
    keys_3_of_5: Keys,
    honest: Round,
) -> None:
    _, public = keys_3_of_5
    commitments, shares, _ = honest
    missing = {i: s for i, s in shares.items() if i != 5}
    with pytest.raises(FrostError, match="name different signers"):
        frost.aggregate(MSG, commitments, missing, public)
    with pytest.raises(FrostError, match="name different signers"):
        frost.aggregate(MSG, commitments[:3], shares, public)
    with pytest.raises(FrostError, match="names a signer twice"):
        frost.aggregate(MSG, [*commitments, commitments[0]], shares, public)
    with pytest.raises(FrostError, match="2 shares, fewer than min_signers=3"):
        frost.aggregate(
            MSG, commitments[:2], {c.identifier: shares[1] for c in commitments[:2]}, public
        )
    stranger = SigningCommitment(9, commitments[0].hiding, commitments[0].binding)
    with pytest.raises(FrostError, match=r"signers \[9\] are not in the public key package"):
        frost.aggregate(MSG, [*commitments, stranger], {**shares, 9: shares[1]}, public)


def test_aggregate_catches_a_key_package_inconsistent_with_the_group_key() -> None:
    """Shares from one polynomial, group key from another: every share checks, the sum does not."""
    packages_a, public_a = frost.trusted_dealer_keygen(3, 2)
    _, public_b = frost.trusted_dealer_keygen(3, 2)
    mixed = {
        i: KeyPackage(i, p.signing_share, p.verifying_share, public_b.group_public_key, 2)
        for i, p in packages_a.items()
    }
    public = PublicKeyPackage(public_b.group_public_key, public_a.verifying_shares, 2)
    commitments, shares, _ = run_round(mixed, [1, 2], MSG)
    with pytest.raises(FrostError, match="aggregate does not verify") as caught:
        frost.aggregate(MSG, commitments, shares, public)
    assert not isinstance(caught.value, InvalidShareError)


# -- signer-side refusals ------------------------------------------------------------------------


def test_sign_refuses_bad_commitment_lists(
    keys_3_of_5: Keys,
) -> None:
    packages, _ = keys_3_of_5
    nonces = {i: frost.commit(packages[i]) for i in (1, 2, 3, 4)}
    own, others = nonces[1].commitment, [nonces[i].commitment for i in (2, 3, 4)]
    altered = SigningCommitment(1, own.binding, own.hiding)
    with pytest.raises(FrostError, match="lacks or alters signer 1's own commitment"):
        frost.sign(packages[1], nonces[1], MSG, others)
    with pytest.raises(FrostError, match="lacks or alters signer 1's own commitment"):
        frost.sign(packages[1], nonces[1], MSG, [altered, *others])
    with pytest.raises(FrostError, match="lacks or alters signer 1's own commitment"):
        frost.sign(packages[1], nonces[2], MSG, [own, *others])  # someone else's nonces
    with pytest.raises(FrostError, match="2 commitments, fewer than min_signers=3"):
        frost.sign(packages[1], nonces[1], MSG, [own, others[0]])
    with pytest.raises(FrostError, match="names a signer twice"):
        frost.sign(packages[1], nonces[1], MSG, [own, *others, others[0]])
    with pytest.raises(FrostError, match="names a signer twice"):
        frost.sign(packages[1], nonces[1], MSG, [own, altered, *others])
    assert len(frost.sign(packages[1], nonces[1], MSG, [own, *others])) == 32


def test_commit_gives_fresh_nonces(
    keys_3_of_5: Keys,
) -> None:
    packages, _ = keys_3_of_5
    first, second = frost.commit(packages[2]), frost.commit(packages[2])
    assert first.commitment.identifier == 2
    assert first.hiding != second.hiding
    assert first.binding != second.binding
    assert first.hiding != first.binding
    assert first.commitment.hiding == group.base_mul(first.hiding)
    assert first.commitment.binding == group.base_mul(first.binding)
    with pytest.raises(FrostError, match="randomness is 32 bytes, got 31"):
        frost.commit(packages[2], hiding_randomness=bytes(31))


# -- signing commitments on the wire -------------------------------------------------------------

POINT: Final = group.base_mul(group.scalar_from_int(7))
SMALL_ORDER_POINT: Final = h("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05")
BAD_ELEMENTS: Final = {
    "identity": (group.IDENTITY, "identity"),
    "small-order": (SMALL_ORDER_POINT, "small order"),
    "mixed-order": (group.add(POINT, SMALL_ORDER_POINT), "prime-order subgroup"),
    "non-canonical": ((2**255 - 19 + 3).to_bytes(32, "little"), "not a canonical encoding"),
    "off-curve": ((2).to_bytes(32, "little"), "not a point on the Ed25519 curve"),
}


def test_commitment_encoding_round_trips(rfc_nonces: dict[int, SigningNonces]) -> None:
    commitment = rfc_nonces[3].commitment
    encoded = commitment.encode()
    assert len(encoded) == frost.COMMITMENT_SIZE
    assert encoded == ENCODED_COMMITMENT_LIST[96:]
    assert SigningCommitment.decode(encoded) == commitment
    big = SigningCommitment(65535, POINT, POINT)
    assert big.encode()[:32] == b"\xff\xff" + bytes(30)
    assert SigningCommitment.decode(big.encode()) == big


@pytest.mark.parametrize("slot", ["hiding", "binding"])
@pytest.mark.parametrize("case", sorted(BAD_ELEMENTS))
def test_commitment_decode_refuses_bad_elements(slot: str, case: str) -> None:
    element, reason = BAD_ELEMENTS[case]
    hiding, binding = (element, POINT) if slot == "hiding" else (POINT, element)
    data = (2).to_bytes(32, "little") + hiding + binding
    with pytest.raises(FrostError, match=f"{slot} commitment of signer 2: .*{reason}"):
        SigningCommitment.decode(data)
    with pytest.raises(FrostError, match=reason):
        SigningCommitment(2, hiding, binding)


@pytest.mark.parametrize(
    ("identifier", "reason"),
    [(0, "outside 1..65535"), (65536, "outside 1..65535"), (L - 1, "outside"), (L, "canonical")],
)
def test_commitment_decode_refuses_bad_identifiers(identifier: int, reason: str) -> None:
    data = identifier.to_bytes(32, "little") + POINT + POINT
    with pytest.raises(FrostError, match=reason):
        SigningCommitment.decode(data)


@pytest.mark.parametrize("size", [0, 32, 95, 97, 192])
def test_commitment_decode_refuses_wrong_lengths(size: int) -> None:
    with pytest.raises(FrostError, match=f"96 bytes, got {size}"):
        SigningCommitment.decode(bytes(size))


VALID_COMMITMENT: Final = (
    (5).to_bytes(32, "little") + POINT + group.base_mul(group.scalar_from_int(9))
)


@given(
    st.one_of(
        st.binary(max_size=200),
        st.binary(min_size=96, max_size=96),
        st.tuples(st.integers(0, 95), st.integers(0, 255)).map(
            lambda t: VALID_COMMITMENT[: t[0]] + bytes([t[1]]) + VALID_COMMITMENT[t[0] + 1 :]
        ),
    )
)
@example(VALID_COMMITMENT)
def test_commitment_decode_fuzz(data: bytes) -> None:
    try:
        commitment = SigningCommitment.decode(data)
    except FrostError:
        return
    assert commitment.encode() == data
    assert 1 <= commitment.identifier <= frost.MAX_IDENTIFIER


# -- Feldman VSS and the dealer ------------------------------------------------------------------


def test_vss_on_the_rfc_polynomial(
    rfc_keys: Keys,
) -> None:
    packages, public = rfc_keys
    commitment = frost.vss_commit([SECRET, *COEFFICIENTS])
    assert commitment == (GROUP_PUBLIC_KEY, group.base_mul(COEFFICIENTS[0]))
    assert frost.vss_evaluate(commitment, 0) == GROUP_PUBLIC_KEY
    for i in (1, 2, 3):
        assert frost.vss_verify(i, SHARES[i], commitment)
        assert frost.vss_evaluate(commitment, i) == public.verifying_shares[i]
        assert frost.vss_evaluate(commitment, i) == packages[i].verifying_share


def test_vss_random_polynomial() -> None:
    secret = group.random_scalar()
    coefficients = [group.random_scalar() for _ in range(4)]
    packages, public = frost.trusted_dealer_keygen(8, 5, secret=secret, coefficients=coefficients)
    commitment = frost.vss_commit([secret, *coefficients])
    polynomial = [group.scalar_to_int(c) for c in (secret, *coefficients)]
    for i, package in packages.items():
        expected = sum(a * i**j for j, a in enumerate(polynomial)) % L
        assert group.scalar_to_int(package.signing_share) == expected
        assert frost.vss_verify(i, package.signing_share, commitment)
        assert frost.vss_evaluate(commitment, i) == public.verifying_shares[i]
        assert not frost.vss_verify(i, flip_bit(package.signing_share), commitment)
        assert not frost.vss_verify(i, non_canonical(package.signing_share), commitment)
        assert not frost.vss_verify(i % 8 + 1, package.signing_share, commitment)
        assert not frost.vss_verify(i, package.signing_share, commitment[:4])
    tampered = group.scalar_add(packages[3].signing_share, group.scalar_from_int(1))
    assert not frost.vss_verify(3, tampered, commitment)
    assert not frost.vss_verify(3, packages[3].signing_share, [*commitment[:4], SMALL_ORDER_POINT])
    assert not frost.vss_verify(3, packages[3].signing_share[:31], commitment)


def test_dealer_parameters() -> None:
    for max_signers, min_signers in [(3, 1), (3, 4), (1, 1), (65536, 2), (0, 0)]:
        with pytest.raises(FrostError, match="2 <= min_signers <= max_signers <= 65535"):
            frost.trusted_dealer_keygen(max_signers, min_signers)
    with pytest.raises(FrostError, match="need 2 coefficients, got 1"):
        frost.trusted_dealer_keygen(5, 3, coefficients=COEFFICIENTS)
    with pytest.raises(FrostError, match="must not be zero"):
        frost.trusted_dealer_keygen(3, 2, secret=bytes(32))
    with pytest.raises(FrostError, match="not canonical"):
        frost.trusted_dealer_keygen(3, 2, secret=L.to_bytes(32, "little"))
    with pytest.raises(FrostError, match="not canonical"):
        frost.trusted_dealer_keygen(3, 2, coefficients=[b"\xff" * 32])
    packages, public = frost.trusted_dealer_keygen(3, 2, secret=SECRET)
    assert public.group_public_key == GROUP_PUBLIC_KEY
    assert packages[1].signing_share != SHARES[1]  # random coefficient


def test_key_package_validation(rfc_keys: Keys) -> None:
    packages, _ = rfc_keys
    p = packages[1]
    with pytest.raises(FrostError, match="verifying share of signer 1 does not match"):
        KeyPackage(1, p.signing_share, packages[2].verifying_share, GROUP_PUBLIC_KEY, 2)
    with pytest.raises(FrostError, match="identifier 0 is outside"):
        KeyPackage(0, p.signing_share, p.verifying_share, GROUP_PUBLIC_KEY, 2)
    with pytest.raises(FrostError, match="min_signers=1"):
        KeyPackage(1, p.signing_share, p.verifying_share, GROUP_PUBLIC_KEY, 1)
    with pytest.raises(FrostError, match=r"group public key: .*small order"):
        KeyPackage(1, p.signing_share, p.verifying_share, SMALL_ORDER_POINT, 2)
    with pytest.raises(FrostError, match=r"signing share of signer 1: .*not canonical"):
        KeyPackage(1, b"\xff" * 32, p.verifying_share, GROUP_PUBLIC_KEY, 2)


def test_public_key_package_validation(
    rfc_keys: Keys,
) -> None:
    _, public = rfc_keys
    shares = dict(public.verifying_shares)
    package = PublicKeyPackage(GROUP_PUBLIC_KEY, shares, 2)
    shares[4] = POINT
    assert sorted(package.verifying_shares) == [1, 2, 3]  # a copy, not the caller's dict
    with pytest.raises(FrostError, match=r"verifying share of signer 2: .*identity"):
        PublicKeyPackage(GROUP_PUBLIC_KEY, {1: POINT, 2: group.IDENTITY}, 2)
    with pytest.raises(FrostError, match="identifier 0 is outside"):
        PublicKeyPackage(GROUP_PUBLIC_KEY, {0: POINT, 2: POINT}, 2)
    with pytest.raises(FrostError, match="min_signers=3, max_signers=2"):
        PublicKeyPackage(GROUP_PUBLIC_KEY, {1: POINT, 2: POINT}, 3)
    with pytest.raises(FrostError, match=r"group public key: .*not a point"):
        PublicKeyPackage((2).to_bytes(32, "little"), {1: POINT, 2: POINT}, 2)


def test_group_commitment_identity_is_refused() -> None:
    with pytest.raises(FrostError, match="group commitment is the identity"):
        frost.compute_challenge(group.IDENTITY, GROUP_PUBLIC_KEY, MESSAGE)
    commitment = SigningCommitment(1, POINT, POINT)
    with pytest.raises(FrostError, match="no binding factor for signer 1"):
        frost.compute_group_commitment([commitment], {2: group.scalar_from_int(1)})


def test_verify_is_false_on_malformed_input() -> None:
    assert frost.verify(GROUP_PUBLIC_KEY, MESSAGE, SIGNATURE)
    assert not frost.verify(GROUP_PUBLIC_KEY, MESSAGE, SIGNATURE[:63])
    assert not frost.verify(GROUP_PUBLIC_KEY[:31], MESSAGE, SIGNATURE)
    assert not frost.verify(
        GROUP_PUBLIC_KEY, MESSAGE, SIGNATURE[:32] + non_canonical(SIGNATURE[32:])
    )
    assert not frost.verify(GROUP_PUBLIC_KEY, MESSAGE, bytes([SIGNATURE[0] ^ 1]) + SIGNATURE[1:])


# -- secrets stay out of reprs -------------------------------------------------------------------


def test_no_secret_in_repr(
    rfc_keys: Keys,
    rfc_nonces: dict[int, SigningNonces],
) -> None:
    packages, _ = rfc_keys
    package, nonces = packages[1], rfc_nonces[1]
    text = repr(package) + str(package) + repr(nonces) + str(nonces) + repr(packages)
    for secret in (package.signing_share, nonces.hiding, nonces.binding):
        assert secret.hex() not in text
        assert repr(secret) not in text
        assert repr(secret)[2:-1][:24] not in text
    assert "signing_share" not in repr(package)
    assert repr(package).startswith("KeyPackage(identifier=1, verifying_share=")
    assert repr(nonces).startswith("SigningNonces(commitment=SigningCommitment(identifier=1,")
