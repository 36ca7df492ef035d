"""Identities (validated Ed25519 public keys), keypairs and domain-separated signatures."""

from __future__ import annotations

import nacl.bindings
import nacl.exceptions
import nacl.signing
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from korium.errors import IdentityError, InvalidIdentityError, KoriumError, SignatureError
from korium.identity import Identity, Keypair, xor_distance

P = 2**255 - 19
L = 2**252 + 27742317777372353535851937790883648493
D = -121665 * pow(121666, P - 2, P) % P
IDENTITY_POINT = (1).to_bytes(32, "little")
ORDER_2_POINT = (P - 1).to_bytes(32, "little")
ORDER_4_POINT = bytes(31) + b"\x80"
ORDER_8_POINT = bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a")
ORDER_8_POINT_NEG = bytes.fromhex(
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa"
)
ORDER_8_POINT_OTHER = bytes.fromhex(
    "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"
)
DOMAIN = b"korium-test-v1:"
# RFC 8032, section 7.1, test 1.
RFC8032_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")


def refusal(key: bytes) -> InvalidIdentityError:
    with pytest.raises(InvalidIdentityError) as info:
        Identity(key)
    return info.value


def refusal_hex(text: str) -> InvalidIdentityError:
    with pytest.raises(InvalidIdentityError) as info:
        Identity.from_hex(text)
    return info.value


def y_has_curve_point(y: int) -> bool:
    """Whether some x satisfies -x^2 + y^2 = 1 + d x^2 y^2 (Euler's criterion on x^2)."""
    x2 = (y * y - 1) * pow(D * y * y + 1, P - 2, P) % P
    return x2 == 0 or pow(x2, (P - 1) // 2, P) == 1


def times_eight(point: bytes) -> bytes:
    """[8]point, computed with libsodium's point addition (which accepts any curve point)."""
    for _ in range(3):
        point = nacl.bindings.crypto_core_ed25519_add(point, point)
    return point


@pytest.fixture
def keypair() -> Keypair:
    return Keypair.generate()


@pytest.fixture
def other() -> Keypair:
    return Keypair.generate()


# -- valid identities --------------------------------------------------------------------------


def test_valid_public_key_is_accepted_and_round_trips(keypair: Keypair) -> None:
    raw = bytes(keypair.identity)
    identity = Identity(raw)
    assert bytes(identity) == raw
    assert identity == keypair.identity


def test_identity_accepts_bytes_like_input(keypair: Keypair) -> None:
    raw = bytes(keypair.identity)
    assert Identity(bytearray(raw)) == keypair.identity  # type: ignore[arg-type]
    assert Identity(memoryview(raw)) == keypair.identity  # type: ignore[arg-type]


def test_invalid_identity_error_is_a_value_error_in_the_korium_hierarchy() -> None:
    error = refusal(b"short")
    assert isinstance(error, ValueError)
    assert isinstance(error, IdentityError)
    assert isinstance(error, KoriumError)


# -- each validation rule ---------------------------------------------------------------------


@pytest.mark.parametrize("length", [0, 1, 31, 33, 64])
def test_wrong_byte_length_is_refused(length: int) -> None:
    assert refusal(b"\x07" * length).reason == "length"


@pytest.mark.parametrize("length", [0, 2, 62, 63, 65, 66, 128])
def test_wrong_hex_length_is_refused(length: int) -> None:
    assert refusal_hex("a" * length).reason == "length"


@pytest.mark.parametrize(
    "bad",
    ["g", "z", "-", "x", "\u00e9", "\u0663", "\x00"],
    ids=["g", "z", "dash", "x", "e-acute", "arabic-digit", "nul"],
)
def test_non_hex_text_is_refused(keypair: Keypair, bad: str) -> None:
    text = keypair.identity.hex()[:-2] + "0" + bad
    assert len(text) == 64
    assert refusal_hex(text).reason == "hex"


def test_0x_prefixed_hex_is_refused(keypair: Keypair) -> None:
    assert refusal_hex("0x" + keypair.identity.hex()[2:]).reason == "hex"


@pytest.mark.parametrize("gap", ["  ", "\t\t", "\n\n", " 0", "0\n"], ids=repr)
def test_hex_with_whitespace_is_refused_as_non_hex(keypair: Keypair, gap: str) -> None:
    # bytes.fromhex alone would skip the whitespace and report a length problem instead.
    text = keypair.identity.hex()[:30] + gap + keypair.identity.hex()[32:]
    assert len(text) == 64
    assert refusal_hex(text).reason == "hex"


def test_hex_with_trailing_newline_is_refused(keypair: Keypair) -> None:
    text = keypair.identity.hex()[:-1] + "\n"
    assert refusal_hex(text).reason == "hex"


def test_all_zero_key_is_refused() -> None:
    assert refusal(bytes(32)).reason == "all-zero"
    assert refusal_hex("00" * 32).reason == "all-zero"


def test_all_ones_key_is_refused() -> None:
    assert refusal(b"\xff" * 32).reason == "all-ones"
    assert refusal_hex("FF" * 32).reason == "all-ones"


@pytest.mark.parametrize("y", [2, 7, 8])
def test_bytes_that_are_not_a_curve_point_are_refused(y: int) -> None:
    assert not y_has_curve_point(y)  # the test vector really is off the curve
    assert refusal(y.to_bytes(32, "little")).reason == "not-a-point"


@pytest.mark.parametrize(
    "value",
    [P, P + 1, P + 2, 2**255 - 1, P | (1 << 255), (P + 1) | (1 << 255)],
    ids=["p", "p+1", "p+2", "2^255-1", "p-signbit", "p+1-signbit"],
)
def test_non_canonical_encoding_with_y_at_least_p_is_refused(value: int) -> None:
    key = value.to_bytes(32, "little")
    assert key != b"\xff" * 32
    assert refusal(key).reason == "not-a-point"


def test_negative_zero_x_encoding_is_refused() -> None:
    # y = 1 has x = 0 only; setting the sign bit asks for "-0", a non-canonical encoding.
    key = bytes([1]) + bytes(30) + b"\x80"
    assert refusal(key).reason == "not-a-point"


@pytest.mark.parametrize(
    "key",
    [
        IDENTITY_POINT,
        ORDER_2_POINT,
        ORDER_4_POINT,
        ORDER_8_POINT,
        ORDER_8_POINT_NEG,
        ORDER_8_POINT_OTHER,
    ],
    ids=["identity", "order-2", "order-4", "order-8", "order-8-neg", "order-8-other"],
)
def test_small_order_points_are_refused(key: bytes) -> None:
    assert times_eight(key) == IDENTITY_POINT  # the vector really has small order
    assert refusal(key).reason == "small-order"


def test_mixed_order_key_is_refused_as_not_in_subgroup(keypair: Keypair) -> None:
    mixed = nacl.bindings.crypto_core_ed25519_add(bytes(keypair.identity), ORDER_8_POINT)
    assert times_eight(mixed) != IDENTITY_POINT  # not small order: it has a large component
    assert refusal(mixed).reason == "not-in-subgroup"
    assert refusal_hex(mixed.hex()).reason == "not-in-subgroup"


@pytest.mark.parametrize("y", [3, 4, 5])
def test_curve_points_outside_the_prime_order_group_are_refused(y: int) -> None:
    assert y_has_curve_point(y)
    assert refusal(y.to_bytes(32, "little")).reason == "not-in-subgroup"


# -- hex form ---------------------------------------------------------------------------------


def test_hex_is_64_lowercase_digits(keypair: Keypair) -> None:
    text = keypair.identity.hex()
    assert len(text) == 64
    assert text == bytes(keypair.identity).hex()
    assert text == text.lower()
    assert str(keypair.identity) == text


def test_uppercase_hex_round_trips(keypair: Keypair) -> None:
    assert Identity.from_hex(keypair.identity.hex().upper()) == keypair.identity


def test_mixed_case_hex_round_trips(keypair: Keypair) -> None:
    text = "".join(c.upper() if i % 2 else c for i, c in enumerate(keypair.identity.hex()))
    parsed = Identity.from_hex(text)
    assert parsed == keypair.identity
    assert parsed.hex() == keypair.identity.hex()


def test_short_is_first_16_hex_digits(keypair: Keypair) -> None:
    assert keypair.identity.short == keypair.identity.hex()[:16]
    assert len(keypair.identity.short) == 16


# -- equality, hashing, ordering --------------------------------------------------------------


def test_equal_identities_compare_and_hash_equal(keypair: Keypair) -> None:
    copy = Identity(bytes(keypair.identity))
    assert copy == keypair.identity
    assert hash(copy) == hash(keypair.identity)
    assert len({copy, keypair.identity}) == 1


def test_different_identities_are_not_equal(keypair: Keypair, other: Keypair) -> None:
    assert keypair.identity != other.identity
    assert len({keypair.identity, other.identity}) == 2


def test_identity_is_not_equal_to_its_raw_bytes(keypair: Keypair) -> None:
    assert keypair.identity != bytes(keypair.identity)
    assert keypair.identity != keypair.identity.hex()


def test_ordering_is_bytewise() -> None:
    identities = [Keypair.generate().identity for _ in range(20)]
    assert [bytes(i) for i in sorted(identities)] == sorted(bytes(i) for i in identities)
    low, high = sorted(identities[:2])
    assert low < high
    assert not high < low


def test_ordering_against_other_types_raises_type_error(keypair: Keypair) -> None:
    with pytest.raises(TypeError):
        _ = keypair.identity < bytes(keypair.identity)
    with pytest.raises(TypeError):
        sorted([keypair.identity, 5])  # type: ignore[type-var]


# -- repr does not leak secrets ---------------------------------------------------------------


def test_keypair_repr_and_str_do_not_leak_the_seed(keypair: Keypair) -> None:
    for text in (repr(keypair), str(keypair), f"{keypair}"):
        assert keypair.seed.hex() not in text
        assert keypair.seed.hex()[:16] not in text
        assert repr(keypair.seed) not in text
        assert keypair.identity.short in text


def test_identity_repr_shows_only_the_short_form(keypair: Keypair) -> None:
    text = repr(keypair.identity)
    assert keypair.identity.short in text
    assert keypair.identity.hex() not in text


# -- keypairs ---------------------------------------------------------------------------------


def test_keypair_from_seed_matches_rfc8032_vector() -> None:
    keypair = Keypair.from_seed(RFC8032_SEED)
    assert bytes(keypair.identity) == RFC8032_PUBLIC
    assert keypair.seed == RFC8032_SEED


def test_keypair_from_seed_is_deterministic(keypair: Keypair) -> None:
    rebuilt = Keypair.from_seed(keypair.seed)
    assert rebuilt.identity == keypair.identity
    assert rebuilt.sign(DOMAIN, b"m") == keypair.sign(DOMAIN, b"m")


@pytest.mark.parametrize("length", [0, 31, 33, 64])
def test_keypair_from_seed_of_wrong_length_is_refused(length: int) -> None:
    with pytest.raises(ValueError, match="32 bytes"):
        Keypair.from_seed(b"\x01" * length)


def test_generated_keypairs_differ() -> None:
    assert Keypair.generate().identity != Keypair.generate().identity


def test_generated_identity_passes_full_validation(keypair: Keypair) -> None:
    assert nacl.bindings.crypto_core_ed25519_is_valid_point(bytes(keypair.identity))
    assert Identity(bytes(keypair.identity)) == keypair.identity


# -- XOR distance ------------------------------------------------------------------------------


def test_distance_to_self_is_zero(keypair: Keypair) -> None:
    assert keypair.identity.distance(keypair.identity) == 0


def test_distance_is_symmetric_and_matches_integer_xor(keypair: Keypair, other: Keypair) -> None:
    a, b = keypair.identity, other.identity
    expected = int.from_bytes(bytes(a), "big") ^ int.from_bytes(bytes(b), "big")
    assert a.distance(b) == b.distance(a) == expected
    assert a.distance(bytes(b)) == expected
    assert xor_distance(bytes(a), bytes(b)) == expected
    assert expected > 0


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=32, max_size=32), st.binary(min_size=32, max_size=32))
def test_xor_distance_properties(a: bytes, b: bytes) -> None:
    d = xor_distance(a, b)
    assert d == int.from_bytes(bytes(x ^ y for x, y in zip(a, b, strict=True)), "big")
    assert d == xor_distance(b, a)
    assert (d == 0) == (a == b)
    assert xor_distance(a, a) == 0


@pytest.mark.parametrize(("left", "right"), [(32, 31), (31, 32), (0, 32), (32, 33)])
def test_xor_distance_of_unequal_lengths_raises(left: int, right: int) -> None:
    with pytest.raises(ValueError, match="different lengths"):
        xor_distance(b"\x01" * left, b"\x02" * right)


def test_identity_distance_to_wrong_length_bytes_raises(keypair: Keypair) -> None:
    with pytest.raises(ValueError, match="different lengths"):
        keypair.identity.distance(b"\x00" * 31)


# -- signatures --------------------------------------------------------------------------------


def test_sign_verify_round_trip(keypair: Keypair) -> None:
    signature = keypair.sign(DOMAIN, b"hello")
    assert len(signature) == 64
    keypair.identity.verify(DOMAIN, b"hello", signature)


def test_sign_verify_round_trip_with_empty_message(keypair: Keypair) -> None:
    keypair.identity.verify(DOMAIN, b"", keypair.sign(DOMAIN, b""))


def test_verify_under_another_domain_fails(keypair: Keypair) -> None:
    signature = keypair.sign(DOMAIN, b"hello")
    with pytest.raises(SignatureError):
        keypair.identity.verify(b"korium-other-v1:", b"hello", signature)


def test_domain_and_message_cannot_be_shifted(keypair: Keypair) -> None:
    # domain || message is the same byte string for both splits, so the only defence is that
    # the second domain (with an inner colon) is not a valid domain at all.
    signature = keypair.sign(b"korium-a:", b"b-v1:payload")
    assert b"korium-a:" + b"b-v1:payload" == b"korium-a:b-v1:" + b"payload"
    with pytest.raises(ValueError, match="signature domain"):
        keypair.identity.verify(b"korium-a:b-v1:", b"payload", signature)


@pytest.mark.parametrize("altered", [b"hellp", b"hello!", b"hell", b"", b"Hello"], ids=repr)
def test_verify_of_altered_message_fails(keypair: Keypair, altered: bytes) -> None:
    signature = keypair.sign(DOMAIN, b"hello")
    with pytest.raises(SignatureError):
        keypair.identity.verify(DOMAIN, altered, signature)


@pytest.mark.parametrize("position", [0, 17, 31, 32, 50, 63])
def test_verify_of_altered_signature_fails(keypair: Keypair, position: int) -> None:
    signature = bytearray(keypair.sign(DOMAIN, b"hello"))
    signature[position] ^= 0x01
    with pytest.raises(SignatureError):
        keypair.identity.verify(DOMAIN, b"hello", bytes(signature))


@pytest.mark.parametrize("length", [0, 1, 63, 65, 128])
def test_verify_of_wrong_length_signature_fails(keypair: Keypair, length: int) -> None:
    signature = keypair.sign(DOMAIN, b"hello")
    wrong = (signature * 2)[:length]
    with pytest.raises(SignatureError, match="64 bytes"):
        keypair.identity.verify(DOMAIN, b"hello", wrong)


def test_verify_of_another_keys_signature_fails(keypair: Keypair, other: Keypair) -> None:
    signature = other.sign(DOMAIN, b"hello")
    with pytest.raises(SignatureError):
        keypair.identity.verify(DOMAIN, b"hello", signature)


BAD_DOMAINS = [
    b"",
    b"nocolon",
    b"Upper-v1:",
    b"a:b:",
    b":",
    b"::",
    b"-leading-dash:",
    b"space here:",
    b"trailing-newline:\n",
    b"under_score:",
    b"caf\xc3\xa9:",
    b"a:b",
]


@pytest.mark.parametrize("domain", BAD_DOMAINS, ids=repr)
def test_sign_with_bad_domain_is_refused(keypair: Keypair, domain: bytes) -> None:
    with pytest.raises(ValueError, match="signature domain"):
        keypair.sign(domain, b"message")


@pytest.mark.parametrize("domain", BAD_DOMAINS, ids=repr)
def test_verify_with_bad_domain_is_refused(keypair: Keypair, domain: bytes) -> None:
    signature = keypair.sign(DOMAIN, b"message")
    with pytest.raises(ValueError, match="signature domain"):
        keypair.identity.verify(domain, b"message", signature)


@pytest.mark.parametrize("domain", [b"a:", b"0:", b"korium-contact-v1:", b"x-1-:"], ids=repr)
def test_well_formed_domains_are_accepted(keypair: Keypair, domain: bytes) -> None:
    keypair.identity.verify(domain, b"m", keypair.sign(domain, b"m"))


def test_signature_is_plain_ed25519_over_domain_then_message(keypair: Keypair) -> None:
    plain = nacl.signing.SigningKey(keypair.seed).sign(DOMAIN + b"payload").signature
    assert keypair.sign(DOMAIN, b"payload") == plain
    # ...and a plain Ed25519 verifier accepts korium's signature over the concatenation.
    nacl.signing.VerifyKey(bytes(keypair.identity)).verify(DOMAIN + b"payload", plain)


def test_signature_with_non_canonical_s_is_rejected(keypair: Keypair) -> None:
    signature = keypair.sign(DOMAIN, b"hello")
    s = int.from_bytes(signature[32:], "little")
    assert s < L
    malleated = signature[:32] + (s + L).to_bytes(32, "little")
    assert malleated != signature
    with pytest.raises(SignatureError):
        keypair.identity.verify(DOMAIN, b"hello", malleated)


def test_libsodium_rejects_the_non_canonical_s_too(keypair: Keypair) -> None:
    """Documents that strictness comes from libsodium, the verifier korium uses."""
    signature = keypair.sign(DOMAIN, b"hello")
    s = int.from_bytes(signature[32:], "little")
    malleated = signature[:32] + (s + L).to_bytes(32, "little")
    with pytest.raises(nacl.exceptions.BadSignatureError):
        nacl.bindings.crypto_sign_open(malleated + DOMAIN + b"hello", bytes(keypair.identity))
