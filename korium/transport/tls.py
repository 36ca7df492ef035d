"""Mutual TLS for QUIC with self-signed Ed25519 certificates, checked inside the handshake.

Certificate profile (the whole of it; peers check only what is listed under "verification"):

* key: the node's Ed25519 key; self-signed; subject ``CN=<identity hex>``; random serial;
  valid from one day before creation to one year after (renewed at every start);
* extension ``2.25.89821288756558314746106659770153488919`` (korium proof of work,
  non-critical): the PoW nonce as 8 bytes big-endian, so the proof travels with the identity;
* extensions returned by the ``korium_certificate_extensions`` hook (SubjectAlternativeName
  entries from several plugins are merged into one extension).

Verification, on both sides, right after the peer's CertificateVerify has proved it holds the
certificate's key (aioquic's ``_check_certificate_verify_signature``) and before Finished:
the key must be a valid Ed25519 identity, the dialer's expected identity (if any) must match,
the proof of work must reach the node's difficulty, and the node's verifier (plugin votes) must
not object. Any failure aborts the handshake with a ``bad_certificate`` alert. A listener
requests the client certificate and refuses an empty one (``certificate_required``).

aioquic 1.7 has no public API for any of this; the private hooks used are listed in
:data:`PRIVATE_HOOKS`, and ``tests/transport/test_aioquic_hooks.py`` fails loudly if an upgrade
removes one. Session tickets are never configured: a resumed session would skip certificates.
"""

from __future__ import annotations

import datetime
import os
import ssl
from collections.abc import Callable, Sequence
from typing import Any, Final

from aioquic import tls
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.x509.oid import NameOID

from korium.errors import InvalidIdentityError
from korium.identity import Identity, NodeIdentity, ProofOfWork

ALPN: Final = "korium/1"
POW_EXTENSION_OID: Final = x509.ObjectIdentifier("2.25.89821288756558314746106659770153488919")
CONNECTION_ID_LENGTH: Final = 8
MAX_STREAMS: Final = 64
"""Concurrent bidirectional streams a peer may open on one connection."""
PRIVATE_HOOKS: Final = (
    (QuicConnection, "_initialize"),
    (QuicConnection, "_write_connection_limits"),
    (QuicConnection, "_local_max_streams_bidi"),
    (QuicConnection, "_local_max_streams_uni"),
    (QuicConnection, "_close_event"),
    (QuicConnection, "_handshake_confirmed"),
    (tls.Context, "_check_certificate_verify_signature"),
    (tls.Context, "_server_handle_certificate"),
    (tls.Context, "_request_client_certificate"),
    (tls.Context, "_peer_certificate"),
)
"""aioquic internals korium relies on (class, attribute); pinned by a regression test."""

CertificateExtension = tuple[x509.ExtensionType, bool]
PeerVerifier = Callable[[Identity, x509.Certificate], str | None]
"""Returns None to accept a peer, or the reason to reject it."""


def build_certificate(
    node_identity: NodeIdentity, extensions: Sequence[CertificateExtension] = ()
) -> tuple[x509.Certificate, Ed25519PrivateKey]:
    """The node's self-signed TLS certificate and private key (see the module docstring)."""
    key = Ed25519PrivateKey.from_private_bytes(node_identity.keypair.seed)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, node_identity.identity.hex())])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(int.from_bytes(os.urandom(16), "big") >> 1)
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(
            x509.UnrecognizedExtension(
                POW_EXTENSION_OID, node_identity.proof.nonce.to_bytes(8, "big")
            ),
            critical=False,
        )
    )
    for value, critical in _merge_subject_alt_names(extensions):
        builder = builder.add_extension(value, critical=critical)
    return builder.sign(key, None), key


def _merge_subject_alt_names(
    extensions: Sequence[CertificateExtension],
) -> list[CertificateExtension]:
    names: list[x509.GeneralName] = []
    san_critical = False
    merged: list[CertificateExtension] = []
    for value, critical in extensions:
        if isinstance(value, x509.SubjectAlternativeName):
            names.extend(value)
            san_critical = san_critical or critical
        else:
            merged.append((value, critical))
    if names:
        merged.append((x509.SubjectAlternativeName(names), san_critical))
    return merged


def certificate_proof(certificate: x509.Certificate) -> ProofOfWork | None:
    """The proof of work carried by a peer certificate, or None if it has none."""
    try:
        extension = certificate.extensions.get_extension_for_oid(POW_EXTENSION_OID)
    except (x509.ExtensionNotFound, ValueError):
        return None
    value = extension.value
    if not isinstance(value, x509.UnrecognizedExtension) or len(value.value) != 8:
        return None
    nonce = int.from_bytes(value.value, "big")
    return ProofOfWork(nonce) if nonce < 2**63 else None


def quic_configuration(
    *,
    is_client: bool,
    certificate: x509.Certificate,
    private_key: Ed25519PrivateKey,
    idle_timeout: float,
    max_data: int,
    max_stream_data: int,
) -> QuicConfiguration:
    """QUIC settings shared by every korium connection; no session tickets, no CA checks."""
    configuration = QuicConfiguration(
        is_client=is_client,
        alpn_protocols=[ALPN],
        verify_mode=ssl.CERT_NONE,  # korium's own checks run inside the handshake instead
        connection_id_length=CONNECTION_ID_LENGTH,
        idle_timeout=idle_timeout,
        max_data=max_data,
        max_stream_data=max_stream_data,
    )
    configuration.certificate = certificate
    configuration.private_key = private_key
    return configuration


class AlertCertificateRequired(tls.Alert):
    description = tls.AlertDescription.certificate_required


class KoriumTlsContext(tls.Context):
    """aioquic's TLS context plus korium's peer checks (installed by class swap)."""

    korium_verify: Callable[[x509.Certificate], Identity]

    def _check_certificate_verify_signature(self, verify: Any) -> None:
        super()._check_certificate_verify_signature(verify)  # proof of possession of the key
        certificate = self._peer_certificate
        assert certificate is not None
        self.korium_peer = self.korium_verify(certificate)

    def _server_handle_certificate(self, input_buf: Any) -> None:
        start = input_buf.tell()
        if not tls.pull_certificate(input_buf).certificates:
            raise AlertCertificateRequired("a client certificate is required")
        input_buf.seek(start)
        super()._server_handle_certificate(input_buf)


class KoriumQuicConnection(QuicConnection):
    """A QUIC connection whose handshake authenticates the peer's korium identity.

    :param expected: the identity a dialer insists on; None on the listening side.
    :param verify: extra checks (proof of work, plugin votes); returns a rejection reason.
    """

    def __init__(
        self,
        *,
        configuration: QuicConfiguration,
        expected: Identity | None,
        verify: PeerVerifier,
        **kwargs: Any,
    ) -> None:
        super().__init__(configuration=configuration, **kwargs)
        self.expected = expected
        self._korium_verifier = verify
        self.peer_identity: Identity | None = None
        """Set once the peer's certificate passed every check."""
        for limit in (self._local_max_streams_bidi, self._local_max_streams_uni):
            limit.value = limit.sent = MAX_STREAMS  # "sent": what the transport parameters say

    def _write_connection_limits(self, builder: Any, space: Any) -> None:
        # aioquic holds back MAX_STREAMS until the peer has almost no stream credit left,
        # which stalls a peer running half the limit in parallel. Grant returned credit as
        # soon as the peer has used half its window (the concurrency bound is unchanged).
        eager = [
            limit
            for limit in (self._local_max_streams_bidi, self._local_max_streams_uni)
            if limit.value != limit.sent and limit.sent - limit.used < MAX_STREAMS // 2
        ]
        saved = [limit.used for limit in eager]
        for limit in eager:
            limit.used = limit.sent  # defeats the batching test for this call only
        try:
            super()._write_connection_limits(builder, space)
        finally:
            for limit, used in zip(eager, saved, strict=True):
                limit.used = used

    def _initialize(self, peer_cid: bytes) -> None:
        super()._initialize(peer_cid)
        self.tls.__class__ = KoriumTlsContext
        context: Any = self.tls
        context.korium_verify = self._verify_peer
        context.korium_peer = None
        if not self._is_client:
            context._request_client_certificate = True

    def _verify_peer(self, certificate: x509.Certificate) -> Identity:
        public_key = certificate.public_key()
        if not isinstance(public_key, Ed25519PublicKey):
            raise tls.AlertBadCertificate("peer certificate key is not Ed25519")
        raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        try:
            identity = Identity(raw)
        except InvalidIdentityError as exc:
            raise tls.AlertBadCertificate(f"peer key is not a valid identity: {exc}") from None
        if self.expected is not None and identity != self.expected:
            raise tls.AlertBadCertificate(
                f"peer is {identity.short}..., expected {self.expected.short}..."
            )
        reason = self._korium_verifier(identity, certificate)
        if reason is not None:
            raise tls.AlertBadCertificate(reason)
        self.peer_identity = identity
        return identity
