"""X.509 for the threshold CA: what signers sign, the policy that decides it, and assembly.

The CA key exists only as FROST shares, so nothing here signs: functions build the DER
TBSCertificate bytes, the signers produce an ordinary Ed25519 signature over them, and
:func:`assemble_certificate` appends it (python-recipes.md section 6). Because k signers sign
whatever bytes they are shown, :func:`check_leaf_tbs` is the signer's whole policy: it refuses
anything but a well-formed SPIFFE workload certificate for the requesting node's own key
(the Rust reference signs any 16 KiB blob, rust-protocols.md section 3.8). Pure functions: the
wall clock is read only when ``now`` is not given.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Final, TypeVar

import nacl.exceptions
import nacl.signing
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID
from korium_spiffe.spiffe_id import SpiffeIdError, identity_of, korium_spiffe_id, parse_spiffe_id

from korium.errors import KoriumError
from korium.identity import Identity

MAX_TBS_SIZE: Final = 16 * 1024  # bytes; the Rust reference's MAX_TBS_CERTIFICATE_SIZE
DEFAULT_CLOCK_SKEW: Final = 300.0  # seconds a requester's clock may differ from a signer's
BACKDATE: Final = 60  # seconds generate_csr puts not_before in the past
MAX_SERIAL_BYTES: Final = 20  # RFC 5280 section 4.1.2.2

_ED25519_ALGORITHM: Final = bytes.fromhex("300506032b6570")  # AlgorithmIdentifier id-Ed25519
_SIGNATURE_LEN: Final = 64
_UTC_TIME_RANGE: Final = range(-631152000, 2524608000)  # 1950 to 2049: RFC 5280 4.1.2.5
_MAX_CN: Final = 64  # ub-common-name, RFC 5280 appendix A
_LEAF_EXTENSIONS: Final = {
    ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
    ExtensionOID.BASIC_CONSTRAINTS,
    ExtensionOID.KEY_USAGE,
    ExtensionOID.EXTENDED_KEY_USAGE,
    ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
    ExtensionOID.SUBJECT_KEY_IDENTIFIER,
}
_LEAF_EKU: Final = {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
_LEAF_KEY_USAGE: Final = x509.KeyUsage(True, False, False, False, False, False, False, False, False)
_CA_KEY_USAGE: Final = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
# What cryptography raises for malformed certificates, names and extensions (it parses the
# latter two lazily; TypeError comes from e.g. a name attribute typed BIT STRING).
_PARSE_ERRORS: Final = (
    ValueError,
    TypeError,
    x509.InvalidVersion,
    x509.DuplicateExtension,
    x509.UnsupportedGeneralNameType,
)


class CsrRejected(KoriumError, ValueError):
    """A signer refuses to sign: ``rule`` names the broken rule, ``str()`` says it in words."""

    def __init__(self, rule: str, reason: str) -> None:
        super().__init__(f"refused: {reason}")
        self.rule = rule
        self.reason = reason


class CertificateError(KoriumError):
    """A certificate does not verify against the CA certificate; the message says why."""


@dataclass(frozen=True, slots=True)
class CertificateSigningRequest:
    """A leaf TBSCertificate ready to send to the signers, with the fields it was built from."""

    tbs_der: bytes
    spiffe_id: str
    subject_public_key: bytes
    not_before: int  # Unix seconds, UTC
    not_after: int
    serial_number: int


def ca_name(trust_domain: str) -> x509.Name:
    """The CA's subject and issuer name: O=korium, CN=korium threshold CA for <trust_domain>.

    A trust domain too long for a 64-character CN is cut and suffixed with 8 hex digits of its
    SHA-256, so the name stays unique per trust domain.
    """
    common_name = f"korium threshold CA for {trust_domain}"
    if len(common_name) > _MAX_CN:
        digest = hashlib.sha256(trust_domain.encode()).hexdigest()[:8]
        common_name = f"{common_name[: _MAX_CN - 9]}~{digest}"
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "korium"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def key_identifier(public_key: bytes) -> bytes:
    """SHA-1 of a raw Ed25519 key: RFC 5280 section 4.2.1.2 method 1 (the BIT STRING contents)."""
    if len(public_key) != 32:
        raise ValueError(f"an Ed25519 public key is 32 bytes, got {len(public_key)}")
    return hashlib.sha1(public_key).digest()


def _utc(seconds: int) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(seconds, tz=datetime.UTC)


def _tbs(builder: x509.CertificateBuilder) -> bytes:
    """The TBS bytes of *builder*: signed with a throw-away key whose signature is dropped."""
    return builder.sign(Ed25519PrivateKey.generate(), None).tbs_certificate_bytes


def ca_certificate_tbs(ca_key: bytes, trust_domain: str, not_before: int, not_after: int) -> bytes:
    """The self-issued CA certificate's TBS; the same arguments give the same bytes everywhere.

    The serial is derived from the key and ``not_before``. NameConstraints permit only URIs in
    ``spiffe://<trust_domain>`` (openssl checks the URI host), so the CA cannot vouch elsewhere.
    """
    Identity(ca_key)  # refuses a malformed key
    if not_after <= not_before:
        raise ValueError(f"not_after ({not_after}) must be after not_before ({not_before})")
    digest = hashlib.sha256(b"korium-threshold-ca-serial-v1:" + ca_key + b"%d" % not_before)
    name = ca_name(trust_domain)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(Ed25519PublicKey.from_public_bytes(ca_key))
        .serial_number(int.from_bytes(digest.digest()[:MAX_SERIAL_BYTES]) >> 1 or 1)
        .not_valid_before(_utc(not_before))
        .not_valid_after(_utc(not_after))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_CA_KEY_USAGE, critical=True)
        .add_extension(x509.SubjectKeyIdentifier(key_identifier(ca_key)), critical=False)
        .add_extension(
            x509.NameConstraints([x509.UniformResourceIdentifier(trust_domain)], None),
            critical=True,
        )
    )
    return _tbs(builder)


def generate_csr(
    identity: Identity,
    trust_domain: str,
    workload_path: str | None = None,
    *,
    ca_key: bytes,
    validity: int = 3600,
    now: float | None = None,
) -> CertificateSigningRequest:
    """The leaf TBS for *identity*'s SPIFFE ID, which :func:`check_leaf_tbs` accepts.

    :param validity: seconds from ``not_before`` (``now - BACKDATE``) to ``not_after``.
    :param now: wall-clock Unix seconds; default ``time.time()``.
    """
    if validity <= 0:
        raise ValueError(f"validity must be a positive number of seconds, got {validity}")
    spiffe_id = korium_spiffe_id(trust_domain, identity, workload_path)
    key = bytes(identity)
    not_before = int(time.time() if now is None else now) - BACKDATE
    not_after = not_before + validity
    serial = secrets.randbits(159) or 1
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(ca_name(trust_domain))
        .public_key(Ed25519PublicKey.from_public_bytes(key))
        .serial_number(serial)
        .not_valid_before(_utc(not_before))
        .not_valid_after(_utc(not_after))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)]),
            critical=True,  # the subject is empty (RFC 5280 section 4.2.1.6)
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_LEAF_KEY_USAGE, critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(x509.AuthorityKeyIdentifier(key_identifier(ca_key), None, None), False)
        .add_extension(x509.SubjectKeyIdentifier(key_identifier(key)), critical=False)
    )
    return CertificateSigningRequest(_tbs(builder), spiffe_id, key, not_before, not_after, serial)


# -- the signer's policy ------------------------------------------------------------------------


def _elements(der: bytes) -> list[bytes]:
    """The encoded elements inside the one DER SEQUENCE *der*; ValueError if it does not frame."""
    elements: list[bytes] = []
    content, rest = _split(der, expected_tag=0x30)
    if rest:
        raise ValueError("trailing bytes after the SEQUENCE")
    while content:
        element, content = _split(content)
        elements.append(element)
    return elements


def _split(data: bytes, expected_tag: int | None = None) -> tuple[bytes, bytes]:
    """(first element, rest), or with *expected_tag* (its content, rest). One-byte tags only."""
    if len(data) < 2 or (expected_tag is not None and data[0] != expected_tag):
        raise ValueError("not a DER element of the expected type")
    start, length = 2, data[1]
    if length & 0x80:
        start += length & 0x7F
        if not 1 <= length & 0x7F <= 4 or len(data) < start:
            raise ValueError("bad DER length")
        length = int.from_bytes(data[2:start])
    end = start + length
    if len(data) < end:
        raise ValueError("truncated DER element")
    return (data[start:end] if expected_tag is not None else data[:end]), data[end:]


def _load_tbs(tbs: bytes) -> tuple[x509.Certificate, list[bytes]]:
    """Parse a bare TBS by wrapping it with a dummy signature; it must re-encode to itself."""
    try:
        elements = _elements(tbs)
    except ValueError as err:
        raise CsrRejected("der", f"the TBSCertificate is not DER: {err}") from None
    # The serial is checked here: cryptography warns when it loads a non-positive one.
    serial = next((element for element in elements[:2] if element[0] == 0x02), None)
    if serial is not None:
        content, _ = _split(serial, expected_tag=0x02)
        if not content or int.from_bytes(content, signed=True) <= 0:
            raise CsrRejected("serial", "the serial number is not positive (RFC 5280 4.1.2.2)")
        if len(content) > MAX_SERIAL_BYTES:
            raise CsrRejected("serial", f"the serial number is {len(content)} bytes, max 20")
    try:
        certificate = x509.load_der_x509_certificate(assemble_certificate(tbs, bytes(64)))
        if certificate.tbs_certificate_bytes != tbs:
            raise ValueError("it does not re-encode to the same bytes")
    except x509.InvalidVersion as err:
        raise CsrRejected("version", f"the certificate is not X.509 v3 ({err})") from None
    except _PARSE_ERRORS as err:
        raise CsrRejected(
            "der", f"the TBSCertificate is not a valid DER certificate: {err}"
        ) from None
    return certificate, elements


def check_leaf_tbs(
    tbs: bytes,
    *,
    requester: Identity,
    ca_key: bytes,
    trust_domain: str,
    max_validity: int,
    now: float | None = None,
    clock_skew: float = DEFAULT_CLOCK_SKEW,
) -> x509.Certificate:
    """Return *tbs* parsed (with a dummy signature) if it is a workload certificate for *requester*.

    :param now: wall-clock Unix seconds; default ``time.time()``.
    :raises CsrRejected: naming the first rule *tbs* breaks; nothing else for any bytes.
    """
    if len(tbs) > MAX_TBS_SIZE:
        raise CsrRejected("size", f"the TBSCertificate is {len(tbs)} bytes, max {MAX_TBS_SIZE}")
    cert, elements = _load_tbs(tbs)
    if cert.version != x509.Version.v3:
        raise CsrRejected("version", f"the certificate is X.509 {cert.version.name}, not v3")
    if elements[2] != _ED25519_ALGORITHM:
        raise CsrRejected("signature-algorithm", "the TBS signature algorithm is not Ed25519")
    if any(element[0] in (0x81, 0x82) for element in elements):
        raise CsrRejected("der", "the certificate has issuer/subject unique IDs (RFC 5280 4.1.2.8)")
    _check_names_and_key(cert, requester, trust_domain)
    _check_validity(
        cert, elements[4], max_validity, time.time() if now is None else now, clock_skew
    )
    _check_extensions(cert, requester, ca_key, trust_domain)
    _check_canonical_extensions(cert, elements[-1])
    return cert


def _check_names_and_key(cert: x509.Certificate, requester: Identity, trust_domain: str) -> None:
    try:
        issuer, subject = cert.issuer.public_bytes(), cert.subject.public_bytes()
    except _PARSE_ERRORS as err:
        raise CsrRejected("der", f"a name does not parse: {err}") from None
    try:
        key = cert.public_key()
    except (ValueError, UnsupportedAlgorithm) as err:
        raise CsrRejected("subject-key", f"the subject key is not usable: {err}") from None
    if issuer != ca_name(trust_domain).public_bytes():
        shown = cert.issuer.rfc4514_string()
        raise CsrRejected("issuer", f"the issuer is {shown!r}, not this CA for {trust_domain!r}")
    if subject != x509.Name([]).public_bytes():
        raise CsrRejected("subject", "the subject must be empty; the identity is in the SAN")
    if not isinstance(key, Ed25519PublicKey):
        kind = type(key).__name__.removesuffix("PublicKey")
        raise CsrRejected("subject-key", f"the subject key is {kind}, not Ed25519")
    if key.public_bytes(Encoding.Raw, PublicFormat.Raw) != bytes(requester):
        raise CsrRejected("subject-key", f"the subject key is not the requester's {requester!r}")


def _check_validity(
    cert: x509.Certificate, validity: bytes, max_validity: int, now: float, skew: float
) -> None:
    not_before = int(cert.not_valid_before_utc.timestamp())
    not_after = int(cert.not_valid_after_utc.timestamp())
    for time_element, value in zip(_elements(validity), (not_before, not_after), strict=True):
        if time_element[0] != (0x17 if value in _UTC_TIME_RANGE else 0x18):
            raise CsrRejected("validity", "times must be UTCTime before 2050 (RFC 5280 4.1.2.5)")
    if not_after <= not_before:
        raise CsrRejected("validity", f"not_after ({not_after}) is not after not_before")
    if not_before > now + skew:
        raise CsrRejected("not-before", f"not_before is {not_before - now:.0f} s in the future")
    if not_before < now - skew - BACKDATE:
        raise CsrRejected("not-before", f"not_before is {now - not_before:.0f} s in the past")
    if not_after - not_before > max_validity + BACKDATE:
        raise CsrRejected(
            "lifetime", f"valid for {not_after - not_before} s, max {max_validity + BACKDATE} s"
        )


def _check_extensions(
    cert: x509.Certificate, requester: Identity, ca_key: bytes, trust_domain: str
) -> None:
    try:
        extensions = {extension.oid: extension for extension in cert.extensions}
    except x509.DuplicateExtension as err:
        raise CsrRejected("extension", f"extension {err.oid.dotted_string} appears twice") from None
    except _PARSE_ERRORS as err:
        raise CsrRejected("der", f"an extension is malformed: {err}") from None
    unknown = sorted(oid.dotted_string for oid in extensions.keys() - _LEAF_EXTENSIONS)
    if unknown:
        raise CsrRejected("extension", f"extension(s) {', '.join(unknown)} not allowed here")
    constraints = extensions.get(ExtensionOID.BASIC_CONSTRAINTS)
    if constraints is None or not isinstance(constraints.value, x509.BasicConstraints):
        raise CsrRejected("ca", "BasicConstraints is missing; a workload certificate says CA:FALSE")
    if constraints.value.ca:
        raise CsrRejected("ca", "the certificate is a CA (BasicConstraints ca=True)")
    usage = extensions.get(ExtensionOID.KEY_USAGE)
    if usage is None or not usage.critical or usage.value != _LEAF_KEY_USAGE:
        raise CsrRejected("key-usage", "KeyUsage must be present, critical, digitalSignature only")
    eku = extensions.get(ExtensionOID.EXTENDED_KEY_USAGE)
    if eku is not None and (
        not isinstance(eku.value, x509.ExtendedKeyUsage) or not set(eku.value) <= _LEAF_EKU
    ):
        raise CsrRejected("extended-key-usage", "ExtendedKeyUsage may only be server/clientAuth")
    aki = extensions.get(ExtensionOID.AUTHORITY_KEY_IDENTIFIER)
    if aki is not None and aki.value != x509.AuthorityKeyIdentifier(
        key_identifier(ca_key), None, None
    ):
        raise CsrRejected("authority-key-id", "AuthorityKeyIdentifier does not name this CA's key")
    ski = extensions.get(ExtensionOID.SUBJECT_KEY_IDENTIFIER)
    if ski is not None and ski.value != x509.SubjectKeyIdentifier(key_identifier(bytes(requester))):
        raise CsrRejected("extension", "SubjectKeyIdentifier does not match the subject key")
    _check_san(extensions.get(ExtensionOID.SUBJECT_ALTERNATIVE_NAME), requester, trust_domain)


def _check_canonical_extensions(cert: x509.Certificate, wrapper: bytes) -> None:
    """Each extension value must be the DER cryptography writes for what it parsed.

    cryptography keeps some non-canonical values as written (a KeyUsage BIT STRING with
    trailing zero bits, X.690 11.2.2), so the TBS re-encoding check alone lets them through.
    """
    if wrapper[0] != 0xA3:  # no extensions
        return
    content, _ = _split(wrapper, expected_tag=0xA3)
    for extension, encoded in zip(cert.extensions, _elements(content), strict=True):
        raw, _ = _split(_elements(encoded)[-1], expected_tag=0x04)
        if extension.value.public_bytes() != raw:
            oid = extension.oid.dotted_string
            raise CsrRejected("der", f"extension {oid} is not in canonical DER (X.690 11.2.2)")


def _check_san(
    san: x509.Extension[x509.ExtensionType] | None, requester: Identity, trust_domain: str
) -> None:
    if san is None or not isinstance(san.value, x509.SubjectAlternativeName) or not san.critical:
        raise CsrRejected("san", "a critical SubjectAlternativeName with the SPIFFE ID is missing")
    names = list(san.value)
    if len(names) != 1 or not isinstance(names[0], x509.UniformResourceIdentifier):
        raise CsrRejected("san", f"the SAN must be exactly one URI, got {len(names)} name(s)")
    try:
        spiffe_id = parse_spiffe_id(names[0].value)
    except SpiffeIdError as err:
        raise CsrRejected("spiffe-id", f"the SAN URI is not a SPIFFE ID: {err}") from None
    if spiffe_id.trust_domain != trust_domain:
        raise CsrRejected(
            "trust-domain", f"trust domain {spiffe_id.trust_domain!r} is not {trust_domain!r}"
        )
    try:
        named = identity_of(spiffe_id)
    except SpiffeIdError as err:
        raise CsrRejected("spiffe-id", str(err)) from None
    if named != requester:
        raise CsrRejected("identity", f"the SPIFFE ID names {named!r}, not {requester!r}")


def check_ca_tbs(
    tbs: bytes, *, ca_key: bytes, trust_domain: str, not_before: int, not_after: int
) -> None:
    """Refuse a CA certificate TBS unless it is exactly the one this signer's state describes."""
    if tbs != ca_certificate_tbs(ca_key, trust_domain, not_before, not_after):
        raise CsrRejected("ca-certificate", "the CA certificate differs from ours")


# -- assembly and verification ------------------------------------------------------------------


def _der_length(length: int) -> bytes:
    if length < 0x80:
        return bytes([length])
    encoded = length.to_bytes((length.bit_length() + 7) // 8)
    return bytes([0x80 | len(encoded)]) + encoded


def assemble_certificate(tbs: bytes, signature: bytes) -> bytes:
    """The DER Certificate ``SEQUENCE {tbs, id-Ed25519, BIT STRING signature}``."""
    if len(signature) != _SIGNATURE_LEN:
        raise ValueError(f"an Ed25519 signature is 64 bytes, got {len(signature)}")
    body = tbs + _ED25519_ALGORITHM + b"\x03\x41\x00" + signature
    return b"\x30" + _der_length(len(body)) + body


def _load(der: bytes, what: str) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(der)
    except _PARSE_ERRORS as err:
        raise CertificateError(f"the {what} is not a DER X.509 certificate: {err}") from None


def tbs_of(certificate_der: bytes) -> bytes:
    """The TBSCertificate bytes of a DER certificate; CertificateError if it is not one."""
    return _load(certificate_der, "certificate").tbs_certificate_bytes


def verify_tbs_signature(tbs: bytes, signature: bytes, ca_key: bytes) -> bool:
    """Whether *signature* is a valid Ed25519 signature of *tbs* under *ca_key*."""
    try:
        nacl.signing.VerifyKey(ca_key).verify(tbs, signature)
    except (nacl.exceptions.BadSignatureError, ValueError):
        return False
    return True


def verify_certificate(
    certificate_der: bytes, ca_certificate_der: bytes, *, now: float | None = None
) -> x509.Certificate:
    """Check a leaf against the CA certificate (the trust anchor) and return it parsed.

    Checks the signature, issuer, both validity periods, that the CA is a CA and the leaf is
    not, and the CA's URI NameConstraints (exact host match, as korium's CA writes them). The
    CA certificate's own signature is not checked: it is trusted as given.

    :param now: wall-clock Unix seconds; default ``time.time()``.
    :raises CertificateError: saying which check failed.
    """
    leaf = _load(certificate_der, "certificate")
    ca = _load(ca_certificate_der, "CA certificate")
    moment = _utc(int(time.time() if now is None else now))
    try:
        ca_constraints = _extension(ca, x509.BasicConstraints)
        if ca_constraints is None or not ca_constraints.ca:
            raise CertificateError("the CA certificate is not a CA (no BasicConstraints ca=True)")
        leaf_constraints = _extension(leaf, x509.BasicConstraints)
        if leaf_constraints is not None and leaf_constraints.ca:
            raise CertificateError("the certificate is itself a CA (BasicConstraints ca=True)")
        if leaf.issuer != ca.subject:
            raise CertificateError(f"issuer {leaf.issuer.rfc4514_string()!r} is not the CA")
        leaf.verify_directly_issued_by(ca)
        for cert, what in ((leaf, "certificate"), (ca, "CA certificate")):
            if not cert.not_valid_before_utc <= moment <= cert.not_valid_after_utc:
                raise CertificateError(f"the {what} is not valid at {moment.isoformat()}")
        _check_name_constraints(leaf, ca)
    except InvalidSignature:
        raise CertificateError("the signature does not verify under the CA's key") from None
    except (*_PARSE_ERRORS, UnsupportedAlgorithm) as err:
        raise CertificateError(f"the certificate cannot be checked: {err}") from None
    return leaf


def _check_name_constraints(leaf: x509.Certificate, ca: x509.Certificate) -> None:
    constraints = _extension(ca, x509.NameConstraints)
    permitted = constraints.permitted_subtrees if constraints is not None else None
    hosts = {
        name.value for name in permitted or () if isinstance(name, x509.UniformResourceIdentifier)
    }
    san = _extension(leaf, x509.SubjectAlternativeName)
    if not hosts or san is None:
        return
    for uri in san.get_values_for_type(x509.UniformResourceIdentifier):
        if uri.partition("://")[2].partition("/")[0] not in hosts:
            raise CertificateError(f"URI {uri!r} is outside the CA's name constraints")


_E = TypeVar("_E", bound=x509.ExtensionType)


def _extension(cert: x509.Certificate, kind: type[_E]) -> _E | None:
    try:
        return cert.extensions.get_extension_for_class(kind).value
    except x509.ExtensionNotFound:
        return None


def to_pem(der: bytes) -> bytes:
    """PEM text of a DER certificate, 64 base64 characters per line."""
    encoded = base64.b64encode(der)
    lines = [encoded[i : i + 64] for i in range(0, len(encoded), 64)]
    return b"-----BEGIN CERTIFICATE-----\n" + b"\n".join(lines) + b"\n-----END CERTIFICATE-----\n"
