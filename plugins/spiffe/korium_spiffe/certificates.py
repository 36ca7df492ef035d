"""SPIFFE IDs in X.509 certificates: the URI SAN a node presents, and reading it back.

An SVID carries exactly one URI SAN, the SPIFFE ID (SPIFFE X.509-SVID standard, section 4.1);
korium puts it into the node's self-signed certificate next to the proof-of-work extension, so
the SPIFFE ID travels in every TLS handshake and is bound to the key that signs it.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding

from korium.identity import Keypair, NodeIdentity, ProofOfWork
from korium.transport.tls import build_certificate
from korium_spiffe.config import SpiffeConfig

SCHEME = "spiffe://"


def spiffe_extension(spiffe_id: str) -> x509.SubjectAlternativeName:
    """The URI SAN extension carrying *spiffe_id*."""
    return x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id)])


def generate_ed25519_cert_with_spiffe(
    identity: NodeIdentity | Keypair, config: SpiffeConfig
) -> bytes:
    """A self-signed Ed25519 certificate (DER) for *identity* with its SPIFFE ID as URI SAN.

    The same certificate a node presents; a bare Keypair gets a proof-of-work nonce of 0.
    """
    node_identity = (
        identity if isinstance(identity, NodeIdentity) else NodeIdentity(identity, ProofOfWork(0))
    )
    spiffe_id = config.spiffe_id(node_identity.identity)
    certificate, _ = build_certificate(node_identity, [(spiffe_extension(spiffe_id), False)])
    return certificate.public_bytes(Encoding.DER)


def spiffe_ids_of(certificate: x509.Certificate) -> list[str]:
    """Every ``spiffe://`` URI SAN of *certificate* (a valid SVID has exactly one)."""
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    uris = names.value.get_values_for_type(x509.UniformResourceIdentifier)
    return [uri for uri in uris if uri.startswith(SCHEME)]


def extract_spiffe_id_from_cert(der: bytes) -> str | None:
    """The SPIFFE ID in the DER certificate *der*, or None; ValueError if it is not DER."""
    ids = spiffe_ids_of(x509.load_der_x509_certificate(der))
    return ids[0] if ids else None
