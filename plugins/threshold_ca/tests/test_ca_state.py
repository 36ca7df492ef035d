"""Tests of the threshold CA's settings and its persistent state (``config`` and ``state``).

``ThresholdCaConfig`` must refuse every committee FROST or the CA certificate cannot serve.
``CaPublicKey.decode`` reads bytes from elsewhere: arbitrary or mutated input must end in
CaStateError and nothing else. A sealed ``SignerState`` is a piece of the CA key on disk: the
tests re-implement the documented format (a ``>5sIQ16s24s`` header, Argon2id, then
XChaCha20-Poly1305 with the header as associated data) to reseal it with a cheap KDF, so that
every single-byte corruption can be tried, and to craft headers and plaintexts a real
``serialize`` never writes. The KDF is spied on to prove that absurd limits are refused before
it runs.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import struct
from collections.abc import Callable
from typing import Any, Final

import msgspec
import nacl.bindings
import nacl.pwhash
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from korium_threshold_ca import dkg, frost, group
from korium_threshold_ca.config import (
    DEFAULT_CA_VALIDITY,
    DEFAULT_CERT_VALIDITY,
    MAX_CERT_VALIDITY,
    CaRequestConfig,
    ThresholdCaConfig,
    ThresholdCaSettings,
)
from korium_threshold_ca.state import (
    MAX_STATE_SIZE,
    CaPublicKey,
    CaStateError,
    SignerState,
    WrongPassphraseError,
)

from korium.errors import ConfigError, KoriumError
from korium.identity import Identity, Keypair

TD: Final = "korium.example"
NOT_BEFORE: Final = 1_800_000_000
PASSPHRASE: Final = "correct horse battery staple"
HEADER: Final = struct.Struct(">5sIQ16s24s")  # magic+version, opslimit, memlimit, salt, nonce
MAGIC: Final = b"KCAS\x01"
CHEAP_OPS: Final = 1  # libsodium's minimum Argon2id limits: microseconds per derivation
CHEAP_MEM: Final = 8192
HUNDRED_YEARS: Final = 100 * 365 * 24 * 3600
BASE_POINT: Final = bytes.fromhex(
    "5866666666666666666666666666666666666666666666666666666666666666"
)
ORDER_8_POINT: Final = bytes.fromhex(
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"
)
INVALID_POINTS: Final = {
    "identity": group.IDENTITY,
    "order-2": bytes.fromhex("ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"),
    "order-8": ORDER_8_POINT,
    "mixed-order": nacl.bindings.crypto_core_ed25519_add(BASE_POINT, ORDER_8_POINT),
    "non-canonical": bytes.fromhex(
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"
    ),
    "off-curve": bytes.fromhex("0200000000000000000000000000000000000000000000000000000000000000"),
    "short": BASE_POINT[:31],
}


# -- fixtures and helpers -------------------------------------------------------------------------


def identities(n: int) -> list[Identity]:
    return [Keypair.from_seed(bytes([i + 1]) * 32).identity for i in range(n)]


@functools.cache
def committee() -> dict[Identity, SignerState]:
    """A 3-of-5 CA split by a dealer (cached: hypothesis tests cannot take function fixtures)."""
    return dkg.dealer_split(ThresholdCaConfig(5, 3, TD), identities(5), ca_not_before=NOT_BEFORE)


@functools.cache
def other_committee() -> dict[Identity, SignerState]:
    """Another CA of the same signers (another key)."""
    return dkg.dealer_split(ThresholdCaConfig(5, 3, TD), identities(5), ca_not_before=NOT_BEFORE)


def first_state() -> SignerState:
    return next(iter(committee().values()))


def the_ca() -> CaPublicKey:
    return first_state().ca


@functools.cache
def sealed_interactive() -> bytes:
    """The first signer's state as ``serialize`` writes it (interactive limits)."""
    return first_state().serialize(PASSPHRASE, strength="interactive")


def unseal(blob: bytes, passphrase: bytes) -> bytes:
    """The plaintext of a sealed state, read by the format the module documents."""
    _, opslimit, memlimit, salt, nonce = HEADER.unpack_from(blob)
    key = nacl.pwhash.argon2id.kdf(32, passphrase, salt, opslimit=opslimit, memlimit=memlimit)
    return nacl.bindings.crypto_aead_xchacha20poly1305_ietf_decrypt(
        blob[HEADER.size :], blob[: HEADER.size], nonce, key
    )


def reseal(
    plain: bytes,
    passphrase: bytes = PASSPHRASE.encode(),
    *,
    opslimit: int = CHEAP_OPS,
    memlimit: int = CHEAP_MEM,
    magic: bytes = MAGIC,
) -> bytes:
    """*plain* sealed like ``serialize`` does, with chosen (by default minimal) KDF limits."""
    salt, nonce = os.urandom(16), os.urandom(24)
    header = HEADER.pack(magic, opslimit, memlimit, salt, nonce)
    key = nacl.pwhash.argon2id.kdf(32, passphrase, salt, opslimit=opslimit, memlimit=memlimit)
    return header + nacl.bindings.crypto_aead_xchacha20poly1305_ietf_encrypt(
        plain, header, nonce, key
    )


@functools.cache
def plaintext() -> bytes:
    return unseal(sealed_interactive(), PASSPHRASE.encode())


@functools.cache
def sealed_cheap() -> bytes:
    """The first signer's real plaintext, sealed with the cheapest limits deserialize accepts."""
    return reseal(plaintext())


def plain_fields() -> list[Any]:
    """The plaintext as a generic MessagePack array: [public, identifier, signing_share]."""
    fields = msgspec.msgpack.decode(plaintext())
    assert isinstance(fields, list)
    return fields


def public_fields() -> list[Any]:
    """The CA public key as a generic MessagePack array."""
    fields = msgspec.msgpack.decode(the_ca().encode())
    assert isinstance(fields, list)
    return fields


class KdfCalled(Exception):
    """Raised by the spy that replaces Argon2id."""


@pytest.fixture
def kdf_spy(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """Replace Argon2id by a spy that records (opslimit, memlimit) and raises KdfCalled."""
    calls: list[tuple[int, int]] = []

    def spy(size: int, secret: bytes, salt: bytes, *, opslimit: int, memlimit: int) -> bytes:
        calls.append((opslimit, memlimit))
        raise KdfCalled

    monkeypatch.setattr(nacl.pwhash.argon2id, "kdf", spy)
    return calls


# -- ThresholdCaConfig ----------------------------------------------------------------------------


def test_config_defaults() -> None:
    config = ThresholdCaConfig(5, 3, TD)
    assert (config.n, config.k, config.trust_domain) == (5, 3, TD)
    assert config.cert_validity == DEFAULT_CERT_VALIDITY == 3600
    assert config.ca_validity == DEFAULT_CA_VALIDITY == 10 * 365 * 24 * 3600


@pytest.mark.parametrize(("n", "k"), [(3, 2), (3, 3), (255, 2), (255, 255), (10, 7)])
def test_config_accepts_committee_bounds(n: int, k: int) -> None:
    config = ThresholdCaConfig(n, k, TD)
    assert (config.n, config.k) == (n, k)


@pytest.mark.parametrize(
    ("n", "k", "match"),
    [
        (2, 2, "3 to 255 signers, got n=2"),
        (0, 2, "got n=0"),
        (-5, 2, "got n=-5"),
        (256, 200, "got n=256"),
        (3, 1, "between 2 and n=3, got k=1"),
        (3, 0, "got k=0"),
        (3, 4, "between 2 and n=3, got k=4"),
        (255, 256, "got k=256"),
    ],
)
def test_config_refuses_committee_out_of_range(n: int, k: int, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        ThresholdCaConfig(n, k, TD)


@pytest.mark.parametrize(
    "field", ["n", "k", "cert_validity", "ca_validity"], ids=lambda f: f"field={f}"
)
@pytest.mark.parametrize("value", [True, 3.0, "3", None], ids=repr)
def test_config_refuses_non_int_values(field: str, value: object) -> None:
    values: dict[str, Any] = {"n": 3, "k": 2, "cert_validity": 3600, "ca_validity": 7200}
    values[field] = value
    with pytest.raises(ConfigError, match=rf"ThresholdCaConfig\.{field} must be an int"):
        ThresholdCaConfig(trust_domain=TD, **values)


@pytest.mark.parametrize(
    "trust_domain",
    ["", "Korium.Example", "spiffe://korium.example", "korium example", "korium.example/x"],
)
def test_config_refuses_invalid_trust_domain(trust_domain: str) -> None:
    with pytest.raises(ConfigError, match=r"ThresholdCaConfig\.trust_domain"):
        ThresholdCaConfig(3, 2, trust_domain)


@pytest.mark.parametrize("cert_validity", [60, MAX_CERT_VALIDITY])
def test_config_accepts_cert_validity_bounds(cert_validity: int) -> None:
    config = ThresholdCaConfig(3, 2, TD, cert_validity=cert_validity)
    assert config.cert_validity == cert_validity


@pytest.mark.parametrize("cert_validity", [59, 0, -1, MAX_CERT_VALIDITY + 1])
def test_config_refuses_cert_validity_out_of_range(cert_validity: int) -> None:
    with pytest.raises(ConfigError, match=f"cert_validity must be 60 s to .*got {cert_validity}"):
        ThresholdCaConfig(3, 2, TD, cert_validity=cert_validity)


@pytest.mark.parametrize(("cert", "ca"), [(3600, 3601), (60, HUNDRED_YEARS)])
def test_config_accepts_ca_validity_bounds(cert: int, ca: int) -> None:
    assert ThresholdCaConfig(3, 2, TD, cert_validity=cert, ca_validity=ca).ca_validity == ca


@pytest.mark.parametrize(("cert", "ca"), [(3600, 3600), (3600, 3599), (60, HUNDRED_YEARS + 1)])
def test_config_refuses_ca_validity_out_of_range(cert: int, ca: int) -> None:
    with pytest.raises(ConfigError, match=f"ca_validity must exceed .*got {ca} s"):
        ThresholdCaConfig(3, 2, TD, cert_validity=cert, ca_validity=ca)


@pytest.mark.parametrize(("n", "k"), [(4, 2), (6, 3), (255, 127)])
def test_config_warns_when_two_minorities_could_sign(
    caplog: pytest.LogCaptureFixture, n: int, k: int
) -> None:
    with caplog.at_level(logging.WARNING, logger="korium_threshold_ca.config"):
        ThresholdCaConfig(n, k, TD)
    assert [r.getMessage() for r in caplog.records] == [
        f"threshold CA with k={k} of n={n}: two disjoint groups of {k} signers could each sign"
    ]
    assert caplog.records[0].levelno == logging.WARNING


@pytest.mark.parametrize(("n", "k"), [(3, 2), (4, 3), (5, 3), (255, 128)])
def test_config_majority_threshold_does_not_warn(
    caplog: pytest.LogCaptureFixture, n: int, k: int
) -> None:
    with caplog.at_level(logging.DEBUG, logger="korium_threshold_ca.config"):
        ThresholdCaConfig(n, k, TD)
    assert caplog.records == []


def test_config_is_frozen() -> None:
    config = ThresholdCaConfig(3, 2, TD)
    with pytest.raises(AttributeError):
        config.k = 3  # type: ignore[misc]


# -- CaRequestConfig and ThresholdCaSettings ------------------------------------------------------


def test_request_config_defaults_to_every_signer() -> None:
    request = CaRequestConfig(the_ca())
    assert request.signers == the_ca().signers
    assert (request.timeout, request.validity, request.round_timeout) == (30.0, None, 5.0)


def test_request_config_keeps_committee_order_of_chosen_signers() -> None:
    chosen = list(reversed(the_ca().signers[1:4]))
    assert CaRequestConfig(the_ca(), signer_identities=chosen).signers == the_ca().signers[1:4]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"timeout": 0}, "timeouts must be positive"),
        ({"round_timeout": -1.0}, "timeouts must be positive"),
        ({"validity": 59}, "validity must be 60 s to the CA's limit of 3600 s"),
        ({"validity": 3601}, "validity must be 60 s to the CA's limit of 3600 s"),
    ],
)
def test_request_config_refuses_bad_values(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        CaRequestConfig(the_ca(), **kwargs)


def test_request_config_refuses_unknown_or_too_few_signers() -> None:
    stranger = Keypair.from_seed(b"\x63" * 32).identity
    with pytest.raises(ConfigError, match=f"{stranger.short}... is not a signer of this CA"):
        CaRequestConfig(the_ca(), signer_identities=[*the_ca().signers[:3], stranger])
    two = list(the_ca().signers[:2])
    with pytest.raises(ConfigError, match="2 signer identities cannot reach the threshold of 3"):
        CaRequestConfig(the_ca(), signer_identities=two + two)


def test_settings_from_mapping_and_refusals() -> None:
    settings_ = ThresholdCaSettings.from_settings({"requests_per_minute": 5, "max_pending": 7})
    assert (settings_.requests_per_minute, settings_.max_pending) == (5, 7)
    assert ThresholdCaSettings(signer_state=first_state()).signer_state is first_state()
    with pytest.raises(ConfigError, match="signer_state must be a SignerState"):
        ThresholdCaSettings(signer_state=the_ca())  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="ca_public_key must be a CaPublicKey"):
        ThresholdCaSettings(ca_public_key=first_state())  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="max_pending must be >= 1"):
        ThresholdCaSettings(max_pending=0)
    with pytest.raises(ConfigError, match="pending_ttl and announce_interval must be > 0"):
        ThresholdCaSettings(pending_ttl=0.0)


# -- CaPublicKey ----------------------------------------------------------------------------------


def test_ca_public_key_round_trip() -> None:
    ca = the_ca()
    decoded = CaPublicKey.decode(ca.encode())
    assert decoded == ca
    assert decoded.encode() == ca.encode()
    assert decoded.signers == tuple(sorted(identities(5)))
    assert decoded.ca_not_before == NOT_BEFORE
    assert decoded.ca_not_after == NOT_BEFORE + DEFAULT_CA_VALIDITY
    assert decoded.trust_domain == TD
    assert decoded.ca_certificate_tbs() == ca.ca_certificate_tbs()


def test_ca_public_key_wire_layout() -> None:
    ca = the_ca()
    assert public_fields() == [
        [5, 3, TD, DEFAULT_CERT_VALIDITY, DEFAULT_CA_VALIDITY],
        ca.group_public_key,
        [bytes(s) for s in ca.signers],
        list(ca.verifying_shares),
        NOT_BEFORE,
    ]


def test_ca_public_key_repr_is_short() -> None:
    ca = the_ca()
    assert repr(ca) == f"CaPublicKey(3-of-5, {TD!r}, key={ca.group_public_key.hex()[:16]}...)"


def test_identifier_and_identity_of() -> None:
    ca = the_ca()
    for index, signer in enumerate(sorted(identities(5))):
        assert ca.identifier_of(signer) == index + 1
        assert ca.identity_of(index + 1) == signer
    stranger = Keypair.from_seed(b"\x63" * 32).identity
    with pytest.raises(CaStateError, match=f"{stranger.short}... is not a signer of this CA"):
        ca.identifier_of(stranger)
    for identifier in (0, 6, -1, 255):
        with pytest.raises(CaStateError, match=f"this CA has no signer {identifier}"):
            ca.identity_of(identifier)


def test_public_key_package_matches() -> None:
    ca = the_ca()
    package = ca.public_key_package()
    assert package.group_public_key == ca.group_public_key
    assert package.min_signers == 3
    assert package.verifying_shares == {i + 1: s for i, s in enumerate(ca.verifying_shares)}


def encode_fields(fields: list[Any]) -> bytes:
    return msgspec.msgpack.encode(fields)


def with_field(path: tuple[int, ...], value: Any) -> bytes:
    """The CA public key's encoding with the field at *path* replaced."""
    fields = public_fields()
    target: list[Any] = fields
    for index in path[:-1]:
        target = target[index]
    target[path[-1]] = value
    return encode_fields(fields)


@pytest.mark.parametrize(
    ("path", "value", "match"),
    [
        ((0, 0), "5", "malformed CA public key"),
        ((0, 0), 5.0, "malformed CA public key"),
        ((0, 1), True, "malformed CA public key"),
        ((0, 2), b"korium.example", "malformed CA public key"),
        ((1,), "group key", "malformed CA public key"),
        ((2,), b"signers", "malformed CA public key"),
        ((3,), [1, 2, 3, 4, 5], "malformed CA public key"),
        ((4,), "1800000000", "malformed CA public key"),
        ((4,), None, "malformed CA public key"),
        ((0, 0), 2, "invalid CA public key: .*3 to 255 signers"),
        ((0, 1), 6, "invalid CA public key: .*got k=6"),
        ((0, 2), "Not A Domain", "invalid CA public key: .*trust_domain"),
        ((0, 3), 10, "invalid CA public key: .*cert_validity"),
        ((0, 0), 6, "the CA names 5 signers, its config 6"),
        ((2, 0), bytes(32), "invalid CA public key: .*all-zero"),
        ((2, 1), b"\x01" * 31, "invalid CA public key: .*32 bytes"),
    ],
)
def test_ca_public_key_decode_refuses_bad_fields(
    path: tuple[int, ...], value: Any, match: str
) -> None:
    with pytest.raises(CaStateError, match=match):
        CaPublicKey.decode(with_field(path, value))


def structure_errors() -> dict[str, bytes]:
    fields = public_fields()
    encoded = the_ca().encode()
    return {
        "extra field": encode_fields([*fields, 0]),
        "missing field": encode_fields(fields[:-1]),
        "extra config field": with_field((0,), [*fields[0], 1]),
        "map instead of array": msgspec.msgpack.encode({"config": fields[0]}),
        "one signer too many": with_field((2,), [*fields[2], bytes(identities(6)[5])]),
        "one share too few": with_field((3,), fields[3][:4]),
        "signers unsorted": with_field((2,), list(reversed(fields[2]))),
        "signer twice": with_field((2,), [fields[2][0], *fields[2][:4]]),
        "empty": b"",
        "truncated": encoded[:-1],
        "trailing byte": encoded + b"\x00",
        "nil": b"\xc0",
    }


@pytest.mark.parametrize("case", list(structure_errors()))
def test_ca_public_key_decode_refuses_structure_errors(case: str) -> None:
    with pytest.raises(CaStateError):
        CaPublicKey.decode(structure_errors()[case])


def test_ca_public_key_decode_refuses_oversized_input() -> None:
    data = the_ca().encode()
    padded = data + bytes(MAX_STATE_SIZE + 1 - len(data))
    with pytest.raises(CaStateError, match=f"CA public key of {MAX_STATE_SIZE + 1} bytes exceeds"):
        CaPublicKey.decode(padded)


@pytest.mark.parametrize("point", INVALID_POINTS.values(), ids=INVALID_POINTS.keys())
def test_ca_public_key_refuses_invalid_group_key(point: bytes) -> None:
    with pytest.raises(CaStateError, match=r"invalid point|malformed"):
        CaPublicKey.decode(with_field((1,), point))
    ca = the_ca()
    with pytest.raises(CaStateError):
        CaPublicKey(ca.config, point, ca.signers, ca.verifying_shares, ca.ca_not_before)


@pytest.mark.parametrize("point", INVALID_POINTS.values(), ids=INVALID_POINTS.keys())
def test_ca_public_key_refuses_invalid_verifying_share(point: bytes) -> None:
    with pytest.raises(CaStateError, match=r"invalid point|malformed"):
        CaPublicKey.decode(with_field((3, 2), point))


@pytest.mark.parametrize("point", INVALID_POINTS.values(), ids=INVALID_POINTS.keys())
def test_ca_public_key_refuses_invalid_signer_identity(point: bytes) -> None:
    with pytest.raises(CaStateError):
        CaPublicKey.decode(with_field((2, 4), point))


@pytest.mark.parametrize("ca_not_before", [2**62, -(2**62)])
def test_ca_public_key_refuses_unrepresentable_ca_not_before(ca_not_before: int) -> None:
    with pytest.raises(CaStateError):
        CaPublicKey.decode(with_field((4,), ca_not_before)).ca_certificate_tbs()


INVALID_UTF8_TD: Final = b"\xae" + b"\x80" * 14  # a 14-byte msgpack str that is not UTF-8


def invalid_utf8_public_key() -> bytes:
    """The CA public key with its trust domain replaced by 14 bytes that are not UTF-8."""
    encoded = the_ca().encode()
    assert encoded.count(b"\xae" + TD.encode()) == 1
    return encoded.replace(b"\xae" + TD.encode(), INVALID_UTF8_TD)


@pytest.mark.parametrize("reader", ["CaPublicKey.decode", "SignerState.deserialize"])
def test_string_that_is_not_utf8_refused(reader: str) -> None:
    if reader == "CaPublicKey.decode":
        with pytest.raises(CaStateError):
            CaPublicKey.decode(invalid_utf8_public_key())
    else:
        plain = plaintext().replace(b"\xae" + TD.encode(), INVALID_UTF8_TD)
        assert plain != plaintext()
        with pytest.raises(CaStateError):
            SignerState.deserialize(reseal(plain), PASSPHRASE)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_ca_public_key_decode_fuzz_arbitrary_bytes(data: bytes) -> None:
    with contextlib.suppress(CaStateError):
        CaPublicKey.decode(data)


def mutations(valid: Callable[[], bytes]) -> st.SearchStrategy[bytes]:
    """Single-byte replacements, truncations and insertions of *valid*()."""
    data = valid()
    replace = st.tuples(st.integers(0, len(data) - 1), st.integers(0, 255)).map(
        lambda t: data[: t[0]] + bytes([t[1]]) + data[t[0] + 1 :]
    )
    truncate = st.integers(0, len(data) - 1).map(lambda cut: data[:cut])
    insert = st.tuples(st.integers(0, len(data)), st.binary(min_size=1, max_size=8)).map(
        lambda t: data[: t[0]] + t[1] + data[t[0] :]
    )
    return st.one_of(replace, truncate, insert)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutations(lambda: the_ca().encode()))
def test_ca_public_key_decode_fuzz_mutations(data: bytes) -> None:
    try:
        decoded = CaPublicKey.decode(data)
    except CaStateError:
        return
    assert len(decoded.signers) == len(decoded.verifying_shares) == decoded.config.n == 5


# -- SignerState: construction --------------------------------------------------------------------


def test_states_of_a_split_hang_together() -> None:
    ca = the_ca()
    for identity, state in committee().items():
        assert state.identity == identity
        assert state.identifier == ca.identifier_of(identity)
        assert state.ca_public_key() is state.ca
        assert state.config == ca.config
        assert state.key_package.verifying_share == ca.verifying_shares[state.identifier - 1]
        assert group.base_mul(state.key_package.signing_share) == state.key_package.verifying_share


def test_create_rebuilds_an_equal_state() -> None:
    state = first_state()
    rebuilt = SignerState.create(state.ca, state.identifier, state.key_package.signing_share)
    assert rebuilt == state


def test_state_with_another_signers_share_is_refused() -> None:
    states = list(committee().values())
    ca = the_ca()
    with pytest.raises(CaStateError, match="not the one the CA knows"):
        SignerState.create(ca, 1, states[1].key_package.signing_share)
    package = states[1].key_package
    relabelled = frost.KeyPackage(
        1, package.signing_share, package.verifying_share, ca.group_public_key, 3
    )
    with pytest.raises(CaStateError, match="not the one the CA knows"):
        SignerState(ca, relabelled)


def test_state_with_another_cas_share_is_refused() -> None:
    ca = the_ca()
    foreign = next(iter(other_committee().values()))
    with pytest.raises(CaStateError, match="not the one the CA knows"):
        SignerState(ca, foreign.key_package)
    with pytest.raises(CaStateError, match="not the one the CA knows"):
        SignerState(foreign.ca, first_state().key_package)


def test_state_with_another_group_key_or_threshold_is_refused() -> None:
    state = first_state()
    package = state.key_package
    other_key = next(iter(other_committee().values())).ca.group_public_key
    for group_key, min_signers in ((other_key, 3), (package.group_public_key, 2)):
        altered = frost.KeyPackage(
            package.identifier,
            package.signing_share,
            package.verifying_share,
            group_key,
            min_signers,
        )
        with pytest.raises(CaStateError, match="belongs to another CA"):
            SignerState(state.ca, altered)


def test_state_with_identifier_outside_committee_is_refused() -> None:
    share = first_state().key_package.signing_share
    with pytest.raises(CaStateError, match="this CA has no signer 6"):
        SignerState.create(the_ca(), 6, share)


def test_share_never_shown() -> None:
    state = first_state()
    share = state.key_package.signing_share
    texts = [repr(state), str(state), repr(state.key_package), f"{state}", f"{state!r}"]
    assert repr(state) == f"SignerState(signer {state.identifier} of {state.ca!r})"
    for text in texts:
        assert share.hex() not in text
        assert repr(share) not in text
    blob = sealed_interactive()
    assert share not in blob
    assert share.hex().encode() not in blob


# -- SignerState: sealing -------------------------------------------------------------------------


def test_serialize_round_trip_interactive() -> None:
    state = first_state()
    blob = sealed_interactive()
    magic, opslimit, memlimit, _, _ = HEADER.unpack_from(blob)
    assert magic == MAGIC
    assert (opslimit, memlimit) == (
        nacl.pwhash.argon2id.OPSLIMIT_INTERACTIVE,
        nacl.pwhash.argon2id.MEMLIMIT_INTERACTIVE,
    )
    restored = SignerState.deserialize(blob, PASSPHRASE)
    assert restored == state
    assert restored.key_package.signing_share == state.key_package.signing_share
    assert restored.ca.encode() == state.ca.encode()
    assert SignerState.deserialize(blob, PASSPHRASE.encode()) == state


def test_serialize_is_salted() -> None:
    state = first_state()
    again = state.serialize(PASSPHRASE, strength="interactive")
    assert again != sealed_interactive()
    assert HEADER.unpack_from(again)[3] != HEADER.unpack_from(sealed_interactive())[3]


def test_serialize_default_is_moderate() -> None:
    state = list(committee().values())[4]
    blob = state.serialize(b"\xffbinary passphrase")
    assert HEADER.unpack_from(blob)[1:3] == (
        nacl.pwhash.argon2id.OPSLIMIT_MODERATE,
        nacl.pwhash.argon2id.MEMLIMIT_MODERATE,
    )
    assert SignerState.deserialize(blob, b"\xffbinary passphrase") == state


def test_plaintext_is_the_documented_state() -> None:
    state = first_state()
    public, identifier, share = plain_fields()
    assert public == public_fields()
    assert (identifier, share) == (state.identifier, state.key_package.signing_share)
    assert SignerState.deserialize(sealed_cheap(), PASSPHRASE) == state


@pytest.mark.parametrize("wrong", ["correct horse battery stapl", PASSPHRASE + " ", "x"])
def test_wrong_passphrase(wrong: str) -> None:
    with pytest.raises(WrongPassphraseError, match="does not open this signer state"):
        SignerState.deserialize(sealed_interactive(), wrong)


def test_wrong_passphrase_is_a_state_error() -> None:
    assert issubclass(WrongPassphraseError, CaStateError)
    assert issubclass(CaStateError, KoriumError)


def test_empty_passphrase_refused(kdf_spy: list[tuple[int, int]]) -> None:
    state = first_state()
    for empty in ("", b""):
        with pytest.raises(CaStateError, match="empty passphrase"):
            state.serialize(empty, strength="interactive")
        with pytest.raises(CaStateError, match="empty passphrase"):
            SignerState.deserialize(sealed_interactive(), empty)
    assert kdf_spy == []


def test_every_single_byte_flip_is_refused() -> None:
    blob = sealed_cheap()
    for position in range(len(blob)):
        flipped = blob[:position] + bytes([blob[position] ^ 0xFF]) + blob[position + 1 :]
        with pytest.raises(CaStateError) as caught:
            SignerState.deserialize(flipped, PASSPHRASE)
        if position >= 5 + 4 + 8:  # past magic and limits: the AEAD refuses it
            assert type(caught.value) is WrongPassphraseError, position


@pytest.mark.parametrize(
    "position",
    [0, 4, 8, 12, 16, 20, 30, 50, 56, 57, 200, 400, -17, -1],
    ids=lambda p: f"byte {p}",
)
def test_byte_flips_of_a_real_blob_are_refused(position: int) -> None:
    blob = bytearray(sealed_interactive())
    blob[position] ^= 0xFF
    with pytest.raises(CaStateError):
        SignerState.deserialize(bytes(blob), PASSPHRASE)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_corruption_of_cheap_blob_fuzz(data: st.DataObject) -> None:
    """Any XOR mask on magic, salt, nonce or ciphertext (not the KDF limits) is refused."""
    blob = bytearray(sealed_cheap())
    limits = range(5, 5 + 4 + 8)
    positions = [p for p in range(len(blob)) if p not in limits]
    position = data.draw(st.sampled_from(positions))
    blob[position] ^= data.draw(st.integers(1, 255))
    with pytest.raises(CaStateError):
        SignerState.deserialize(bytes(blob), PASSPHRASE)


def test_every_truncation_is_refused() -> None:
    blob = sealed_cheap()
    for length in range(len(blob)):
        with pytest.raises(CaStateError):
            SignerState.deserialize(blob[:length], PASSPHRASE)
    with pytest.raises(CaStateError, match="not a signer state: 0 bytes"):
        SignerState.deserialize(b"", PASSPHRASE)


def test_oversized_blob_refused(kdf_spy: list[tuple[int, int]]) -> None:
    blob = sealed_cheap()
    oversized = blob + bytes(MAX_STATE_SIZE + 1 - len(blob))
    with pytest.raises(CaStateError, match=f"not a signer state: {MAX_STATE_SIZE + 1} bytes"):
        SignerState.deserialize(oversized, PASSPHRASE)
    assert kdf_spy == []


def test_appended_byte_is_refused_by_the_aead() -> None:
    with pytest.raises(WrongPassphraseError):
        SignerState.deserialize(sealed_cheap() + b"\x00", PASSPHRASE)


def test_other_magic_refused(kdf_spy: list[tuple[int, int]]) -> None:
    for magic in (b"KCAS\x02", b"KCAT\x01", bytes(5)):
        blob = magic + sealed_cheap()[5:]
        with pytest.raises(CaStateError, match="bad magic or version"):
            SignerState.deserialize(blob, PASSPHRASE)
    assert kdf_spy == []


@pytest.mark.parametrize(
    ("opslimit", "memlimit"),
    [
        (CHEAP_OPS, 2**63),
        (CHEAP_OPS, 2**64 - 1),
        (CHEAP_OPS, nacl.pwhash.argon2id.MEMLIMIT_SENSITIVE + 1),
        (CHEAP_OPS, 8191),
        (CHEAP_OPS, 0),
        (0, CHEAP_MEM),
        (nacl.pwhash.argon2id.OPSLIMIT_SENSITIVE + 1, CHEAP_MEM),
        (2**32 - 1, 2**64 - 1),
    ],
)
def test_out_of_range_kdf_limits_refused_before_the_kdf(
    kdf_spy: list[tuple[int, int]], opslimit: int, memlimit: int
) -> None:
    blob = bytearray(sealed_cheap())
    blob[5:17] = struct.pack(">IQ", opslimit, memlimit)
    with pytest.raises(CaStateError, match="out-of-range key derivation limits"):
        SignerState.deserialize(bytes(blob), PASSPHRASE)
    assert kdf_spy == []


def test_largest_kdf_limits_reach_the_kdf(kdf_spy: list[tuple[int, int]]) -> None:
    """The bounds are inclusive: "sensitive" states must open (the spy stands in for 1 GiB)."""
    limits = (nacl.pwhash.argon2id.OPSLIMIT_SENSITIVE, nacl.pwhash.argon2id.MEMLIMIT_SENSITIVE)
    blob = bytearray(sealed_cheap())
    blob[5:17] = struct.pack(">IQ", *limits)
    with pytest.raises(KdfCalled):
        SignerState.deserialize(bytes(blob), PASSPHRASE)
    assert kdf_spy == [limits]


def resealed_with(index: int, value: Any) -> bytes:
    fields = plain_fields()
    fields[index] = value
    return reseal(msgspec.msgpack.encode(fields))


@pytest.mark.parametrize(
    ("index", "value", "match"),
    [
        (1, 6, "this CA has no signer 6"),
        (1, 2, "not the one the CA knows"),
        (1, "1", "malformed signer state"),
        (2, b"\xff" * 32, "invalid signer state: .*not canonical"),
        (2, b"\x01" * 31, "invalid signer state: .*32 bytes"),
        (2, bytes(32), "does not match|not the one the CA knows"),
        (0, [1, 2], "malformed"),
    ],
)
def test_authentic_but_inconsistent_plaintext_refused(index: int, value: Any, match: str) -> None:
    with pytest.raises(CaStateError, match=match):
        SignerState.deserialize(resealed_with(index, value), PASSPHRASE)


def test_authentic_plaintext_of_another_ca_refused() -> None:
    foreign = next(iter(other_committee().values())).ca
    fields = plain_fields()
    fields[0] = msgspec.msgpack.decode(foreign.encode())
    with pytest.raises(CaStateError, match="not the one the CA knows"):
        SignerState.deserialize(reseal(msgspec.msgpack.encode(fields)), PASSPHRASE)


@pytest.mark.parametrize("plain", [b"", b"\xc0", b"\x93\x01\x02", b"\x94" + bytes(4)])
def test_authentic_garbage_plaintext_refused(plain: bytes) -> None:
    with pytest.raises(CaStateError, match="malformed signer state"):
        SignerState.deserialize(reseal(plain), PASSPHRASE)


@pytest.mark.parametrize("identifier", [0, -1, 70_000])
def test_authentic_plaintext_with_impossible_identifier_refused(identifier: int) -> None:
    with pytest.raises(CaStateError):
        SignerState.deserialize(resealed_with(1, identifier), PASSPHRASE)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=400))
def test_deserialize_fuzz_arbitrary_bytes(data: bytes) -> None:
    with contextlib.suppress(CaStateError):
        SignerState.deserialize(data, PASSPHRASE)
