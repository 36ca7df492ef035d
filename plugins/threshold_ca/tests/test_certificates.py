"""Tests of the threshold CA's X.509 layer (``korium_threshold_ca.certificates``).

A plain Ed25519 key stands in for the FROST group key: an aggregate FROST signature is an
ordinary Ed25519 signature, so nothing here can tell the difference. Every rule of the signer's
policy (``check_leaf_tbs``) has a TBS that breaks exactly that rule, built with cryptography's
CertificateBuilder or by editing DER bytes; openssl is the independent oracle for the
certificates the CA issues.
"""

from __future__ import annotations

import datetime
import hashlib
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Final

import nacl.signing
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID
from hypothesis import example, given, settings
from hypothesis import strategies as st
from korium_spiffe.spiffe_id import SpiffeIdError
from korium_threshold_ca.certificates import (
    BACKDATE,
    DEFAULT_CLOCK_SKEW,
    MAX_TBS_SIZE,
    CertificateError,
    CsrRejected,
    assemble_certificate,
    ca_certificate_tbs,
    ca_name,
    check_ca_tbs,
    check_leaf_tbs,
    generate_csr,
    key_identifier,
    tbs_of,
    to_pem,
    verify_certificate,
    verify_tbs_signature,
)

from korium.errors import InvalidIdentityError, KoriumError
from korium.identity import Identity, Keypair

TD: Final = "korium.example"
NOW: Final = 1_800_000_000  # 2027-01-15T08:00:00Z, wall-clock seconds
MAX_VALIDITY: Final = 3600
CA_SIGNING_KEY: Final = nacl.signing.SigningKey(bytes(range(32)))
CA_KEY: Final = bytes(CA_SIGNING_KEY.verify_key)
OTHER_CA_SIGNING_KEY: Final = nacl.signing.SigningKey(bytes(range(1, 33)))
REQUESTER: Final = Keypair.from_seed(b"\x07" * 32).identity
OTHER: Final = Keypair.from_seed(b"\x08" * 32).identity
SPIFFE_ID: Final = f"spiffe://{TD}/{REQUESTER.hex()}/api"
SERIAL: Final = 0x1234_5678_9ABC
CA_NOT_BEFORE: Final = NOW - 86_400
CA_NOT_AFTER: Final = NOW + 365 * 86_400
OPENSSL: Final = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="the openssl command is not on PATH")

ExtensionSpec = tuple[x509.ExtensionType, bool] | None


# -- helpers --------------------------------------------------------------------------------------


def public_key(identity: Identity | bytes) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(bytes(identity))


def utc(seconds: int) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)


def leaf_extensions(spiffe_id: str = SPIFFE_ID) -> dict[str, ExtensionSpec]:
    """The extensions generate_csr writes, keyed by a short name tests can replace or drop."""
    return {
        "san": (x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]), True),
        "bc": (x509.BasicConstraints(ca=False, path_length=None), True),
        "ku": (key_usage(digital_signature=True), True),
        "eku": (
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            False,
        ),
        "aki": (x509.AuthorityKeyIdentifier(key_identifier(CA_KEY), None, None), False),
        "ski": (x509.SubjectKeyIdentifier(key_identifier(bytes(REQUESTER))), False),
    }


def key_usage(
    *,
    digital_signature: bool = False,
    key_encipherment: bool = False,
    key_cert_sign: bool = False,
    crl_sign: bool = False,
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=key_encipherment,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def build_tbs(
    *,
    subject: x509.Name | None = None,
    issuer: x509.Name | None = None,
    subject_key: Ed25519PublicKey | ec.EllipticCurvePublicKey | rsa.RSAPublicKey | None = None,
    serial: int = SERIAL,
    not_before: int = NOW - BACKDATE,
    not_after: int = NOW - BACKDATE + MAX_VALIDITY,
    extra: tuple[tuple[x509.ExtensionType, bool], ...] = (),
    sign_with_ec: bool = False,
    spiffe_id: str = SPIFFE_ID,
    extensions: dict[str, ExtensionSpec] | None = None,
    **changes: ExtensionSpec,
) -> bytes:
    """A leaf TBS like generate_csr's, with the given fields or extensions changed."""
    extensions = (leaf_extensions(spiffe_id) if extensions is None else extensions) | changes
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]) if subject is None else subject)
        .issuer_name(ca_name(TD) if issuer is None else issuer)
        .public_key(public_key(REQUESTER) if subject_key is None else subject_key)
        .serial_number(serial)
        .not_valid_before(utc(not_before))
        .not_valid_after(utc(not_after))
    )
    for spec in [*extensions.values(), *extra]:
        if spec is not None:
            builder = builder.add_extension(spec[0], critical=spec[1])
    if sign_with_ec:
        return builder.sign(
            ec.generate_private_key(ec.SECP256R1()), hashes.SHA256()
        ).tbs_certificate_bytes
    return builder.sign(Ed25519PrivateKey.generate(), None).tbs_certificate_bytes


def tlv(tag: int, content: bytes) -> bytes:
    """A DER element (test-side encoder, independent of the module's)."""
    n = len(content)
    length = (
        bytes([n])
        if n < 0x80
        else bytes([0x80 | ((n.bit_length() + 7) // 8)]) + n.to_bytes((n.bit_length() + 7) // 8)
    )
    return bytes([tag]) + length + content


def children(element: bytes) -> list[bytes]:
    """The elements inside a constructed DER element (test-side decoder)."""
    first = element[1]
    offset = 2 + (first & 0x7F if first & 0x80 else 0)
    items = []
    while offset < len(element):
        first = element[offset + 1]
        header = 2 + (first & 0x7F if first & 0x80 else 0)
        length = int.from_bytes(element[offset + 2 : offset + header]) if first & 0x80 else first
        items.append(element[offset : offset + header + length])
        offset += header + length
    return items


def with_elements(tbs: bytes, edit: Callable[[list[bytes]], list[bytes]]) -> bytes:
    """*tbs* with its top-level elements replaced by edit(elements), re-framed."""
    return tlv(0x30, b"".join(edit(children(tbs))))


def sign(tbs: bytes, key: nacl.signing.SigningKey = CA_SIGNING_KEY) -> bytes:
    """The certificate the CA issues for *tbs* (a FROST group signs exactly like this)."""
    return assemble_certificate(tbs, key.sign(tbs).signature)


def check(tbs: bytes, *, now: float = NOW, requester: Identity = REQUESTER) -> x509.Certificate:
    return check_leaf_tbs(
        tbs, requester=requester, ca_key=CA_KEY, trust_domain=TD, max_validity=MAX_VALIDITY, now=now
    )


def ca_tbs(trust_domain: str = TD, key: nacl.signing.SigningKey = CA_SIGNING_KEY) -> bytes:
    return ca_certificate_tbs(bytes(key.verify_key), trust_domain, CA_NOT_BEFORE, CA_NOT_AFTER)


def flip_last_bit(der: bytes) -> bytes:
    return der[:-1] + bytes([der[-1] ^ 1])


VALID_TBS: Final = build_tbs()


# -- the valid leaf -------------------------------------------------------------------------------


def test_generate_csr_fields_and_policy_accepts_it() -> None:
    csr = generate_csr(REQUESTER, TD, "api", ca_key=CA_KEY, validity=MAX_VALIDITY, now=NOW + 0.9)
    assert csr.spiffe_id == SPIFFE_ID
    assert csr.subject_public_key == bytes(REQUESTER)
    assert (csr.not_before, csr.not_after) == (NOW - 60, NOW - 60 + MAX_VALIDITY)
    assert 0 < csr.serial_number < 2**159
    cert = check(csr.tbs_der)
    assert cert.serial_number == csr.serial_number
    assert cert.subject == x509.Name([])
    assert cert.issuer == ca_name(TD)
    assert int(cert.not_valid_before_utc.timestamp()) == NOW - 60
    extensions = [(ext.oid, ext.critical) for ext in cert.extensions]
    assert extensions == [
        (ExtensionOID.SUBJECT_ALTERNATIVE_NAME, True),
        (ExtensionOID.BASIC_CONSTRAINTS, True),
        (ExtensionOID.KEY_USAGE, True),
        (ExtensionOID.EXTENDED_KEY_USAGE, False),
        (ExtensionOID.AUTHORITY_KEY_IDENTIFIER, False),
        (ExtensionOID.SUBJECT_KEY_IDENTIFIER, False),
    ]
    # byte for byte what the test builder makes, so the rejection cases below are edits of it
    assert csr.tbs_der == build_tbs(serial=csr.serial_number)
    # the serial is random
    assert csr.tbs_der != generate_csr(REQUESTER, TD, "api", ca_key=CA_KEY, now=NOW).tbs_der


def test_generate_csr_without_workload_uses_the_bare_identity_id() -> None:
    csr = generate_csr(REQUESTER, TD, ca_key=CA_KEY, now=NOW)
    assert csr.spiffe_id == f"spiffe://{TD}/{REQUESTER.hex()}"
    san = check(csr.tbs_der).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert san.value.get_values_for_type(x509.UniformResourceIdentifier) == [csr.spiffe_id]


def test_generate_csr_uses_the_clock_when_now_is_not_given() -> None:
    csr = generate_csr(REQUESTER, TD, ca_key=CA_KEY)
    check_leaf_tbs(
        csr.tbs_der, requester=REQUESTER, ca_key=CA_KEY, trust_domain=TD, max_validity=3600
    )


def test_generate_csr_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match="validity must be a positive"):
        generate_csr(REQUESTER, TD, ca_key=CA_KEY, validity=0)
    with pytest.raises(SpiffeIdError, match="dot segments"):
        generate_csr(REQUESTER, TD, "a/../b", ca_key=CA_KEY)
    with pytest.raises(SpiffeIdError, match="trust domain"):
        generate_csr(REQUESTER, "Bad.Example", ca_key=CA_KEY)


def test_the_test_builder_matches_what_the_policy_accepts() -> None:
    cert = check(VALID_TBS)
    assert cert.serial_number == SERIAL
    # optional extensions may be left out
    check(build_tbs(eku=None, aki=None, ski=None))
    check(build_tbs(eku=(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), True)))
    check(build_tbs(bc=(x509.BasicConstraints(ca=False, path_length=None), False)))


def test_csr_rejected_is_a_korium_value_error_with_a_rule() -> None:
    error = CsrRejected("ca", "the certificate is a CA (BasicConstraints ca=True)")
    assert isinstance(error, KoriumError)
    assert isinstance(error, ValueError)
    assert (error.rule, error.reason) == (
        "ca",
        "the certificate is a CA (BasicConstraints ca=True)",
    )
    assert str(error) == "refused: the certificate is a CA (BasicConstraints ca=True)"


# -- one test per rule of check_leaf_tbs -----------------------------------------------------------


def _duplicate_last_extension(elements: list[bytes]) -> list[bytes]:
    extensions = children(children(elements[-1])[0])
    return [*elements[:-1], tlv(0xA3, tlv(0x30, b"".join([*extensions, extensions[-1]])))]


def _generalized_times(elements: list[bytes]) -> list[bytes]:
    validity = tlv(0x30, tlv(0x18, b"20270115075900Z") + tlv(0x18, b"20270115085900Z"))
    return [*elements[:4], validity, *elements[5:]]


def _swap_times(elements: list[bytes]) -> list[bytes]:
    not_before, not_after = children(elements[4])
    return [*elements[:4], tlv(0x30, not_after + not_before), *elements[5:]]


def _non_minimal_issuer_length(elements: list[bytes]) -> list[bytes]:
    issuer = elements[3]
    assert issuer[1] < 0x80
    return [*elements[:3], b"\x30\x81" + issuer[1:], *elements[4:]]


def _unknown_extension() -> tuple[x509.ExtensionType, bool]:
    oid = x509.ObjectIdentifier("1.3.6.1.4.1.99999.1")
    return x509.UnrecognizedExtension(oid, b"\x05\x00"), False


# (make the TBS, expected rule, a phrase the message must contain)
REJECTIONS: Final[dict[str, tuple[Callable[[], bytes], str, str]]] = {
    "ca-true": (
        lambda: build_tbs(bc=(x509.BasicConstraints(ca=True, path_length=None), True)),
        "ca",
        "the certificate is a CA (BasicConstraints ca=True)",
    ),
    "basic-constraints-missing": (lambda: build_tbs(bc=None), "ca", "BasicConstraints is missing"),
    "key-cert-sign": (
        lambda: build_tbs(ku=(key_usage(digital_signature=True, key_cert_sign=True), True)),
        "key-usage",
        "digitalSignature only",
    ),
    "key-encipherment": (
        lambda: build_tbs(ku=(key_usage(digital_signature=True, key_encipherment=True), True)),
        "key-usage",
        "digitalSignature only",
    ),
    "key-usage-missing": (lambda: build_tbs(ku=None), "key-usage", "KeyUsage must be present"),
    "key-usage-not-critical": (
        lambda: build_tbs(ku=(key_usage(digital_signature=True), False)),
        "key-usage",
        "critical",
    ),
    "eku-code-signing": (
        lambda: build_tbs(eku=(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), False)),
        "extended-key-usage",
        "server/clientAuth",
    ),
    "eku-extra-purpose": (
        lambda: build_tbs(
            eku=(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.OCSP_SIGNING]
                ),
                False,
            )
        ),
        "extended-key-usage",
        "server/clientAuth",
    ),
    "aki-other-key": (
        lambda: build_tbs(
            aki=(x509.AuthorityKeyIdentifier(key_identifier(bytes(OTHER)), None, None), False)
        ),
        "authority-key-id",
        "does not name this CA's key",
    ),
    "aki-with-issuer-and-serial": (
        lambda: build_tbs(
            aki=(
                x509.AuthorityKeyIdentifier(
                    key_identifier(CA_KEY), [x509.DirectoryName(ca_name(TD))], 5
                ),
                False,
            )
        ),
        "authority-key-id",
        "AuthorityKeyIdentifier",
    ),
    "ski-other-key": (
        lambda: build_tbs(ski=(x509.SubjectKeyIdentifier(key_identifier(bytes(OTHER))), False)),
        "extension",
        "SubjectKeyIdentifier does not match",
    ),
    "unknown-extension": (
        lambda: build_tbs(extra=(_unknown_extension(),)),
        "extension",
        "1.3.6.1.4.1.99999.1 not allowed",
    ),
    "name-constraints-in-leaf": (
        lambda: build_tbs(
            extra=((x509.NameConstraints([x509.UniformResourceIdentifier(TD)], None), True),)
        ),
        "extension",
        "2.5.29.30 not allowed",
    ),
    "duplicate-extension": (
        lambda: with_elements(VALID_TBS, _duplicate_last_extension),
        "extension",
        "2.5.29.14 appears twice",
    ),
    "malformed-extension": (
        lambda: build_tbs(
            bc=(x509.UnrecognizedExtension(ExtensionOID.BASIC_CONSTRAINTS, b"\x05\x00"), True)
        ),
        "der",
        "an extension is malformed",
    ),
    "key-usage-bit-string-not-canonical": (
        # 03 02 00 80: digitalSignature with 7 trailing zero bits left in, not 03 02 07 80
        lambda: VALID_TBS.replace(bytes.fromhex("040403020780"), bytes.fromhex("040403020080")),
        "der",
        "extension 2.5.29.15 is not in canonical DER",
    ),
    "other-subject-key": (
        lambda: build_tbs(subject_key=public_key(OTHER)),
        "subject-key",
        "not the requester's",
    ),
    "ec-subject-key": (
        lambda: build_tbs(subject_key=ec.generate_private_key(ec.SECP256R1()).public_key()),
        "subject-key",
        "the subject key is EC, not Ed25519",
    ),
    "rsa-subject-key": (
        lambda: build_tbs(subject_key=rsa.generate_private_key(65537, 1024).public_key()),
        "subject-key",
        "the subject key is RSA, not Ed25519",
    ),
    "spiffe-id-of-another-identity": (
        lambda: build_tbs(spiffe_id=f"spiffe://{TD}/{OTHER.hex()}"),
        "identity",
        f"names {OTHER!r}, not {REQUESTER!r}",
    ),
    "other-trust-domain": (
        lambda: build_tbs(spiffe_id=f"spiffe://other.example/{REQUESTER.hex()}"),
        "trust-domain",
        "trust domain 'other.example' is not 'korium.example'",
    ),
    "non-spiffe-uri": (
        lambda: build_tbs(spiffe_id=f"https://{TD}/{REQUESTER.hex()}"),
        "spiffe-id",
        "not a SPIFFE ID",
    ),
    "uppercase-identity": (
        lambda: build_tbs(spiffe_id=f"spiffe://{TD}/{REQUESTER.hex().upper()}"),
        "spiffe-id",
        "uppercase",
    ),
    "invalid-identity": (
        lambda: build_tbs(spiffe_id=f"spiffe://{TD}/{'00' * 32}"),
        "spiffe-id",
        "invalid Ed25519 identity",
    ),
    "no-identity-in-id": (
        lambda: build_tbs(spiffe_id=f"spiffe://{TD}"),
        "spiffe-id",
        "names no identity",
    ),
    "two-uris": (
        lambda: build_tbs(
            san=(
                x509.SubjectAlternativeName(
                    [
                        x509.UniformResourceIdentifier(SPIFFE_ID),
                        x509.UniformResourceIdentifier(f"spiffe://{TD}/{REQUESTER.hex()}/x"),
                    ]
                ),
                True,
            )
        ),
        "san",
        "exactly one URI, got 2",
    ),
    "uri-and-dns": (
        lambda: build_tbs(
            san=(
                x509.SubjectAlternativeName(
                    [x509.UniformResourceIdentifier(SPIFFE_ID), x509.DNSName("victim.example")]
                ),
                True,
            )
        ),
        "san",
        "exactly one URI, got 2",
    ),
    "dns-only": (
        lambda: build_tbs(
            san=(x509.SubjectAlternativeName([x509.DNSName("victim.example")]), True)
        ),
        "san",
        "exactly one URI, got 1",
    ),
    "san-missing": (lambda: build_tbs(san=None), "san", "SubjectAlternativeName"),
    "san-not-critical": (
        lambda: build_tbs(
            san=(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(SPIFFE_ID)]), False)
        ),
        "san",
        "critical",
    ),
    "issuer-attribute-typed-bit-string": (
        # cryptography raises TypeError (not ValueError) when it meets this name lazily
        lambda: VALID_TBS.replace(b"\x0c\x06korium", b"\x03\x06korium"),
        "der",
        "a name does not parse",
    ),
    "subject-not-empty": (
        lambda: build_tbs(subject=x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")])),
        "subject",
        "the subject must be empty",
    ),
    "wrong-issuer": (
        lambda: build_tbs(issuer=ca_name("other.example")),
        "issuer",
        "not this CA for 'korium.example'",
    ),
    "issuer-printable-string": (
        # the same text, but not the same encoding as the CA's subject
        lambda: build_tbs(
            issuer=x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "korium"),
                    x509.NameAttribute(
                        NameOID.COMMON_NAME,
                        f"korium threshold CA for {TD}",
                        x509.name._ASN1Type.PrintableString,
                    ),
                ]
            )
        ),
        "issuer",
        "not this CA",
    ),
    "validity-too-long": (
        lambda: build_tbs(not_after=NOW - BACKDATE + MAX_VALIDITY + BACKDATE + 1),
        "lifetime",
        f"valid for {MAX_VALIDITY + BACKDATE + 1} s, max {MAX_VALIDITY + BACKDATE} s",
    ),
    "not-before-in-the-future": (
        lambda: build_tbs(not_before=NOW + int(DEFAULT_CLOCK_SKEW) + 1, not_after=NOW + 3000),
        "not-before",
        "301 s in the future",
    ),
    "not-before-far-past": (
        lambda: build_tbs(not_before=NOW - 361 - 1000, not_after=NOW),
        "not-before",
        "1361 s in the past",
    ),
    "not-after-equals-not-before": (
        lambda: build_tbs(not_before=NOW, not_after=NOW),
        "validity",
        "is not after not_before",
    ),
    "not-after-before-not-before": (
        lambda: with_elements(build_tbs(not_before=NOW - 1, not_after=NOW), _swap_times),
        "validity",
        "is not after not_before",
    ),
    "generalized-time-before-2050": (
        lambda: with_elements(VALID_TBS, _generalized_times),
        "validity",
        "UTCTime before 2050",
    ),
    "ecdsa-tbs-signature-algorithm": (
        lambda: build_tbs(sign_with_ec=True),
        "signature-algorithm",
        "not Ed25519",
    ),
    "version-1": (
        lambda: with_elements(VALID_TBS, lambda elements: elements[1:-1]),
        "version",
        "X.509 v1, not v3",
    ),
    "version-2": (
        lambda: with_elements(VALID_TBS, lambda e: [tlv(0xA0, tlv(0x02, b"\x01")), *e[1:]]),
        "version",
        "not X.509 v3",
    ),
    "unique-ids": (
        lambda: with_elements(VALID_TBS, lambda e: [*e[:-1], tlv(0x81, b"\x00\x01"), e[-1]]),
        "der",
        "unique IDs",
    ),
    "negative-serial": (
        lambda: with_elements(VALID_TBS, lambda e: [e[0], tlv(0x02, b"\xff"), *e[2:]]),
        "serial",
        "not positive",
    ),
    "zero-serial": (
        lambda: with_elements(VALID_TBS, lambda e: [e[0], tlv(0x02, b"\x00"), *e[2:]]),
        "serial",
        "not positive",
    ),
    "serial-21-bytes": (
        lambda: with_elements(VALID_TBS, lambda e: [e[0], tlv(0x02, b"\x01" * 21), *e[2:]]),
        "serial",
        "21 bytes, max 20",
    ),
    "non-minimal-length": (
        lambda: with_elements(VALID_TBS, _non_minimal_issuer_length),
        "der",
        "not a valid DER certificate",
    ),
    "trailing-bytes": (lambda: VALID_TBS + b"\x00", "der", "trailing bytes"),
    "truncated": (lambda: VALID_TBS[:-1], "der", "not DER"),
    "certificate-not-tbs": (lambda: sign(VALID_TBS), "der", "not a valid DER certificate"),
    "oversize": (lambda: b"\x30" + bytes(MAX_TBS_SIZE), "size", f"max {MAX_TBS_SIZE}"),
    "empty": (lambda: b"", "der", "not DER"),
    "garbage": (lambda: b"GET / HTTP/1.1\r\n\r\n", "der", "not DER"),
}


@pytest.mark.parametrize("case", list(REJECTIONS))
def test_check_leaf_tbs_refuses(case: str) -> None:
    make, rule, phrase = REJECTIONS[case]
    tbs = make()
    with pytest.raises(CsrRejected) as caught:
        check(tbs)
    assert caught.value.rule == rule, str(caught.value)
    assert str(caught.value).startswith("refused: ")
    assert phrase in str(caught.value)


def test_size_limit_is_inclusive() -> None:
    with pytest.raises(CsrRejected) as caught:
        check(b"\x30" + bytes(MAX_TBS_SIZE - 1))
    assert caught.value.rule == "der"


@pytest.mark.parametrize(
    ("not_before", "not_after"),
    [
        (NOW + int(DEFAULT_CLOCK_SKEW), NOW + 3000),  # the latest accepted start
        (NOW - int(DEFAULT_CLOCK_SKEW) - BACKDATE, NOW),  # the earliest accepted start
        (NOW - BACKDATE, NOW + MAX_VALIDITY),  # the longest accepted lifetime
    ],
)
def test_validity_boundaries_are_accepted(not_before: int, not_after: int) -> None:
    check(build_tbs(not_before=not_before, not_after=not_after))


def test_check_leaf_tbs_refuses_for_another_requester() -> None:
    with pytest.raises(CsrRejected) as caught:
        check(VALID_TBS, requester=OTHER)
    assert caught.value.rule == "subject-key"


def test_a_trust_domain_with_underscore_works_end_to_end() -> None:
    trust_domain = "my_org.example"
    csr = generate_csr(REQUESTER, trust_domain, ca_key=CA_KEY, now=NOW)
    check_leaf_tbs(
        csr.tbs_der,
        requester=REQUESTER,
        ca_key=CA_KEY,
        trust_domain=trust_domain,
        max_validity=3600,
        now=NOW,
    )
    ca_der = sign(ca_tbs(trust_domain))
    verify_certificate(sign(csr.tbs_der), ca_der, now=NOW)


# -- fuzz: only CsrRejected ever escapes ----------------------------------------------------------


RULES: Final = {
    "size", "der", "version", "signature-algorithm", "issuer", "subject-key", "subject", "san",
    "spiffe-id", "trust-domain", "identity", "validity", "not-before", "lifetime", "ca",
    "key-usage", "extended-key-usage", "authority-key-id", "extension", "serial",
}  # fmt: skip


def _check_only_rejects(tbs: bytes) -> None:
    """check(tbs) returns or raises CsrRejected with a documented rule; anything else fails."""
    try:
        check(tbs)
    except CsrRejected as error:
        rejection = error
    else:
        return
    assert rejection.rule in RULES, rejection.rule
    assert str(rejection).startswith("refused: ")


@pytest.mark.filterwarnings("error")  # cryptography's deprecation warnings must not leak
@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=600))
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    _check_only_rejects(data)
    _check_only_rejects(tlv(0x30, data))


VALID_CONTENT: Final = VALID_TBS[4:]  # after the header 30 82 xx xx


@pytest.mark.filterwarnings("error")
@settings(max_examples=800, deadline=None)
@example(position=31, value=0x03, how="replace")  # the issuer's O typed BIT STRING: TypeError
@given(
    st.integers(0, len(VALID_CONTENT) - 1),
    st.integers(0, 255),
    st.sampled_from(["replace", "insert", "delete", "truncate"]),
)
def test_fuzz_mutated_valid_tbs(position: int, value: int, how: str) -> None:
    content = VALID_CONTENT
    mutated = {
        "replace": content[:position] + bytes([value]) + content[position + 1 :],
        "insert": content[:position] + bytes([value]) + content[position:],
        "delete": content[:position] + content[position + 1 :],
        "truncate": content[:position],
    }[how]
    _check_only_rejects(VALID_TBS[:4] + mutated)  # the outer length now lies
    _check_only_rejects(tlv(0x30, mutated))  # re-framed, so the parser goes deeper


EXTENSION_OIDS: Final = {
    "san": ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
    "bc": ExtensionOID.BASIC_CONSTRAINTS,
    "ku": ExtensionOID.KEY_USAGE,
    "eku": ExtensionOID.EXTENDED_KEY_USAGE,
    "aki": ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
    "ski": ExtensionOID.SUBJECT_KEY_IDENTIFIER,
}


@pytest.mark.filterwarnings("error")
@settings(max_examples=300, deadline=None)
@given(st.sampled_from(list(EXTENSION_OIDS)), st.binary(max_size=80), st.booleans())
def test_fuzz_extension_contents(name: str, value: bytes, critical: bool) -> None:
    """Arbitrary bytes as the value of each allowed extension (parsed lazily by cryptography)."""
    extension = x509.UnrecognizedExtension(EXTENSION_OIDS[name], value)
    _check_only_rejects(build_tbs(extensions=leaf_extensions() | {name: (extension, critical)}))


# -- the CA certificate ---------------------------------------------------------------------------


def test_ca_certificate_tbs_is_deterministic() -> None:
    tbs = ca_certificate_tbs(CA_KEY, TD, CA_NOT_BEFORE, CA_NOT_AFTER)
    assert tbs == ca_certificate_tbs(CA_KEY, TD, CA_NOT_BEFORE, CA_NOT_AFTER)
    # pinned: a change here breaks signers that disagree about the bytes to sign
    assert hashlib.sha256(tbs).hexdigest() == (
        "ac22f30a400a0ba27fec1794308bbd0d103d0611471ac493631acb6cfc192d48"
    )
    # the serial: SHA-256 of a label, the key and not_before, 20 bytes, shifted to 159 bits
    serial_seed = b"korium-threshold-ca-serial-v1:" + CA_KEY + str(CA_NOT_BEFORE).encode()
    expected_serial = int.from_bytes(hashlib.sha256(serial_seed).digest()[:20]) >> 1
    assert expected_serial == 0x5DA098BA3F25E308920E807192F3CCD9335695CE
    assert x509.load_der_x509_certificate(sign(tbs)).serial_number == expected_serial
    assert tbs != ca_certificate_tbs(CA_KEY, TD, CA_NOT_BEFORE + 1, CA_NOT_AFTER)
    other_key = bytes(OTHER_CA_SIGNING_KEY.verify_key)
    assert tbs != ca_certificate_tbs(other_key, TD, CA_NOT_BEFORE, CA_NOT_AFTER)


def test_ca_certificate_fields() -> None:
    cert = x509.load_der_x509_certificate(sign(ca_tbs()))
    assert cert.subject == cert.issuer == ca_name(TD)
    assert ca_name(TD).rfc4514_string() == "CN=korium threshold CA for korium.example,O=korium"
    assert cert.public_key() == public_key(CA_KEY)
    assert int(cert.not_valid_before_utc.timestamp()) == CA_NOT_BEFORE
    assert int(cert.not_valid_after_utc.timestamp()) == CA_NOT_AFTER
    assert 0 < cert.serial_number < 2**159
    extensions = {ext.oid: (ext.value, ext.critical) for ext in cert.extensions}
    assert extensions == {
        ExtensionOID.BASIC_CONSTRAINTS: (x509.BasicConstraints(ca=True, path_length=0), True),
        ExtensionOID.KEY_USAGE: (key_usage(key_cert_sign=True, crl_sign=True), True),
        ExtensionOID.SUBJECT_KEY_IDENTIFIER: (
            x509.SubjectKeyIdentifier(key_identifier(CA_KEY)),
            False,
        ),
        ExtensionOID.NAME_CONSTRAINTS: (
            x509.NameConstraints([x509.UniformResourceIdentifier(TD)], None),
            True,
        ),
    }
    cert.verify_directly_issued_by(cert)


def test_ca_certificate_tbs_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match="must be after not_before"):
        ca_certificate_tbs(CA_KEY, TD, CA_NOT_BEFORE, CA_NOT_BEFORE)
    with pytest.raises(InvalidIdentityError):
        ca_certificate_tbs(bytes(32), TD, CA_NOT_BEFORE, CA_NOT_AFTER)


def test_ca_name_of_a_long_trust_domain_fits_and_stays_distinct() -> None:
    long_a, long_b = "a" * 60 + ".example", "a" * 60 + ".example2"
    names = [
        str(ca_name(td).get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)
        for td in (long_a, long_b)
    ]
    assert [len(name) for name in names] == [64, 64]
    assert names[0] != names[1]
    assert names[0].startswith("korium threshold CA for aaaa")


def test_check_ca_tbs() -> None:
    check_ca_tbs(
        ca_tbs(), ca_key=CA_KEY, trust_domain=TD, not_before=CA_NOT_BEFORE, not_after=CA_NOT_AFTER
    )
    for wrong in (ca_tbs("other.example"), VALID_TBS, b""):
        with pytest.raises(CsrRejected) as caught:
            check_ca_tbs(
                wrong,
                ca_key=CA_KEY,
                trust_domain=TD,
                not_before=CA_NOT_BEFORE,
                not_after=CA_NOT_AFTER,
            )
        assert caught.value.rule == "ca-certificate"
        assert str(caught.value) == "refused: the CA certificate differs from ours"


def test_key_identifier_is_rfc5280_method_1() -> None:
    expected = x509.SubjectKeyIdentifier.from_public_key(public_key(CA_KEY)).digest
    assert key_identifier(CA_KEY) == expected == hashlib.sha1(CA_KEY).digest()
    with pytest.raises(ValueError, match="32 bytes, got 31"):
        key_identifier(CA_KEY[:31])


# -- assembly -------------------------------------------------------------------------------------


@pytest.mark.parametrize(("padding", "length_form"), [(0, 0x81), (300, 0x82), (70_000, 0x83)])
def test_assemble_certificate_matches_cryptography(padding: int, length_form: int) -> None:
    key = Ed25519PrivateKey.generate()
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(x509.Name([]))
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(utc(NOW))
        .not_valid_after(utc(NOW + 1))
    )
    if padding:
        oid = x509.ObjectIdentifier("1.3.6.1.4.1.99999.2")
        builder = builder.add_extension(x509.UnrecognizedExtension(oid, bytes(padding)), False)
    der = builder.sign(key, None).public_bytes(Encoding.DER)
    tbs = x509.load_der_x509_certificate(der).tbs_certificate_bytes
    assert der[1] == length_form
    assert assemble_certificate(tbs, der[-64:]) == der
    assert assemble_certificate(tbs, bytes(64)) == der[:-64] + bytes(64)
    assert tbs_of(der) == tbs


def test_assemble_certificate_short_length_form() -> None:
    assert assemble_certificate(b"\x30\x00", bytes(64)) == (
        b"\x30\x4c\x30\x00" + bytes.fromhex("300506032b6570") + b"\x03\x41\x00" + bytes(64)
    )


def test_assemble_certificate_refuses_a_signature_of_the_wrong_size() -> None:
    with pytest.raises(ValueError, match="64 bytes, got 63"):
        assemble_certificate(VALID_TBS, bytes(63))


def test_tbs_of_refuses_garbage() -> None:
    with pytest.raises(CertificateError, match=r"not a DER X\.509 certificate"):
        tbs_of(b"\x30\x03abc")


def test_verify_tbs_signature() -> None:
    signature = CA_SIGNING_KEY.sign(VALID_TBS).signature
    assert verify_tbs_signature(VALID_TBS, signature, CA_KEY) is True
    assert verify_tbs_signature(VALID_TBS + b"x", signature, CA_KEY) is False
    assert verify_tbs_signature(VALID_TBS, flip_last_bit(signature), CA_KEY) is False
    assert (
        verify_tbs_signature(VALID_TBS, signature, bytes(OTHER_CA_SIGNING_KEY.verify_key)) is False
    )
    assert verify_tbs_signature(VALID_TBS, signature[:63], CA_KEY) is False
    assert verify_tbs_signature(VALID_TBS, signature, CA_KEY[:31]) is False


def test_to_pem_matches_cryptography() -> None:
    der = sign(VALID_TBS)
    assert to_pem(der) == x509.load_der_x509_certificate(der).public_bytes(Encoding.PEM)


# -- verify_certificate ---------------------------------------------------------------------------


def test_verify_certificate_accepts_an_issued_leaf() -> None:
    leaf = verify_certificate(sign(VALID_TBS), sign(ca_tbs()), now=NOW)
    assert leaf.serial_number == SERIAL


# (make (leaf DER, CA DER), now, a phrase the message must contain)
VERIFY_FAILURES: Final[dict[str, tuple[Callable[[], tuple[bytes, bytes]], int, str]]] = {
    "flipped-signature-bit": (
        lambda: (flip_last_bit(sign(VALID_TBS)), sign(ca_tbs())),
        NOW,
        "signature does not verify",
    ),
    "signed-by-another-key": (
        lambda: (sign(VALID_TBS, OTHER_CA_SIGNING_KEY), sign(ca_tbs())),
        NOW,
        "signature does not verify",
    ),
    "issuer-is-another-ca": (
        lambda: (sign(VALID_TBS), sign(ca_tbs("other.example"))),
        NOW,
        "is not the CA",
    ),
    "leaf-expired": (
        lambda: (sign(VALID_TBS), sign(ca_tbs())),
        NOW - BACKDATE + MAX_VALIDITY + 1,
        "the certificate is not valid at 2027-01-15T08:59:01+00:00",
    ),
    "leaf-not-yet-valid": (
        lambda: (sign(VALID_TBS), sign(ca_tbs())),
        NOW - BACKDATE - 1,
        "the certificate is not valid at",
    ),
    "ca-expired": (
        lambda: (
            sign(build_tbs(not_after=CA_NOT_AFTER + 10)),
            sign(ca_tbs()),
        ),
        CA_NOT_AFTER + 1,
        "the CA certificate is not valid at",
    ),
    "leaf-is-a-ca": (
        lambda: (
            sign(build_tbs(bc=(x509.BasicConstraints(ca=True, path_length=None), True))),
            sign(ca_tbs()),
        ),
        NOW,
        "itself a CA",
    ),
    "anchor-is-not-a-ca": (
        lambda: (sign(VALID_TBS), sign(VALID_TBS)),
        NOW,
        "the CA certificate is not a CA",
    ),
    "outside-name-constraints": (
        lambda: (
            sign(build_tbs(spiffe_id=f"spiffe://other.example/{REQUESTER.hex()}")),
            sign(ca_tbs()),
        ),
        NOW,
        "outside the CA's name constraints",
    ),
    "leaf-garbage": (lambda: (b"\x30\x00", sign(ca_tbs())), NOW, "certificate is not a DER"),
    "ca-garbage": (lambda: (sign(VALID_TBS), b""), NOW, "CA certificate is not a DER"),
}


@pytest.mark.parametrize("case", list(VERIFY_FAILURES))
def test_verify_certificate_refuses(case: str) -> None:
    make, now, phrase = VERIFY_FAILURES[case]
    leaf, ca = make()
    with pytest.raises(CertificateError) as caught:
        verify_certificate(leaf, ca, now=now)
    assert phrase in str(caught.value)


# -- openssl as the oracle ------------------------------------------------------------------------


def openssl(*args: str | Path) -> subprocess.CompletedProcess[str]:
    assert OPENSSL is not None
    return subprocess.run(
        [OPENSSL, *map(str, args)], capture_output=True, text=True, timeout=30, check=False
    )


@pytest.fixture
def pki(tmp_path: Path) -> dict[str, Path]:
    """ca.pem and leaf.pem as the CA issues them, plus broken variants."""
    ca_der = sign(ca_tbs())
    leaf_der = sign(generate_csr(REQUESTER, TD, "api", ca_key=CA_KEY, now=NOW).tbs_der)
    outside = sign(build_tbs(spiffe_id=f"spiffe://other.example/{REQUESTER.hex()}"))
    files = {
        "ca": to_pem(ca_der),
        "leaf": to_pem(leaf_der),
        "bad-leaf": to_pem(flip_last_bit(leaf_der)),
        "bad-ca": to_pem(flip_last_bit(ca_der)),
        "outside": to_pem(outside),
    }
    paths = {}
    for name, pem in files.items():
        paths[name] = tmp_path / f"{name}.pem"
        paths[name].write_bytes(pem)
    (tmp_path / "leaf.der").write_bytes(leaf_der)
    (tmp_path / "ca.der").write_bytes(ca_der)
    paths["leaf.der"], paths["ca.der"] = tmp_path / "leaf.der", tmp_path / "ca.der"
    return paths


AT_NOW: Final = ("-attime", str(NOW))


@needs_openssl
@pytest.mark.parametrize(
    "options", [(), ("-x509_strict",), ("-purpose", "sslclient"), ("-purpose", "sslserver")]
)
def test_openssl_verifies_an_issued_leaf(pki: dict[str, Path], options: tuple[str, ...]) -> None:
    result = openssl("verify", *AT_NOW, *options, "-CAfile", pki["ca"], pki["leaf"])
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == f"{pki['leaf']}: OK"


@needs_openssl
def test_openssl_accepts_the_ca_certificate_strictly(pki: dict[str, Path]) -> None:
    options = ("-x509_strict", "-check_ss_sig")
    result = openssl("verify", *AT_NOW, *options, "-CAfile", pki["ca"], pki["ca"])
    assert result.returncode == 0, result.stdout + result.stderr


@needs_openssl
def test_openssl_refuses_a_flipped_signature_bit(pki: dict[str, Path]) -> None:
    result = openssl("verify", *AT_NOW, "-CAfile", pki["ca"], pki["bad-leaf"])
    assert result.returncode != 0
    assert "certificate signature failure" in result.stdout + result.stderr


@needs_openssl
def test_openssl_trusts_a_root_without_checking_its_self_signature(pki: dict[str, Path]) -> None:
    # openssl does not check a trust anchor's own signature unless told to (-check_ss_sig);
    # verify_certificate behaves the same: the CA certificate is trusted as given.
    assert openssl("verify", *AT_NOW, "-CAfile", pki["bad-ca"], pki["bad-ca"]).returncode == 0
    assert openssl("verify", *AT_NOW, "-CAfile", pki["bad-ca"], pki["leaf"]).returncode == 0
    strict = openssl("verify", *AT_NOW, "-check_ss_sig", "-CAfile", pki["bad-ca"], pki["leaf"])
    assert strict.returncode != 0
    assert "certificate signature failure" in strict.stdout + strict.stderr
    intact = openssl("verify", *AT_NOW, "-check_ss_sig", "-CAfile", pki["ca"], pki["leaf"])
    assert intact.returncode == 0


@needs_openssl
def test_openssl_enforces_the_uri_name_constraint(pki: dict[str, Path]) -> None:
    result = openssl("verify", *AT_NOW, "-CAfile", pki["ca"], pki["outside"])
    assert result.returncode != 0
    assert "permitted subtree violation" in result.stdout + result.stderr


@needs_openssl
def test_openssl_checks_dates(pki: dict[str, Path]) -> None:
    result = openssl(
        "verify", "-attime", str(NOW + 2 * MAX_VALIDITY), "-CAfile", pki["ca"], pki["leaf"]
    )
    assert result.returncode != 0
    assert "certificate has expired" in result.stdout + result.stderr


@needs_openssl
def test_openssl_text_shows_the_spiffe_id_and_ca_extensions(pki: dict[str, Path]) -> None:
    leaf = openssl("x509", "-noout", "-text", "-in", pki["leaf"])
    assert leaf.returncode == 0
    assert f"URI:{SPIFFE_ID}" in leaf.stdout
    assert "X509v3 Subject Alternative Name: critical" in leaf.stdout
    assert "CA:FALSE" in leaf.stdout
    assert "TLS Web Server Authentication, TLS Web Client Authentication" in leaf.stdout
    ca = openssl("x509", "-noout", "-text", "-in", pki["ca"])
    assert ca.returncode == 0
    assert "CA:TRUE, pathlen:0" in ca.stdout
    assert "Certificate Sign, CRL Sign" in ca.stdout
    assert f"URI:{TD}" in ca.stdout
    assert "Issuer: O = korium, CN = korium threshold CA for korium.example" in ca.stdout


@needs_openssl
@pytest.mark.parametrize("name", ["leaf.der", "ca.der"])
def test_openssl_asn1parse_parses_both(pki: dict[str, Path], name: str) -> None:
    result = openssl("asn1parse", "-inform", "DER", "-in", pki[name])
    assert result.returncode == 0, result.stderr
    assert "ED25519" in result.stdout
    assert "error" not in (result.stdout + result.stderr).lower()
