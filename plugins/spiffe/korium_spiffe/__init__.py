"""korium-spiffe: SPIFFE IDs bound to korium's Ed25519 identities.

Installed as the ``spiffe`` plugin (``pip install korium[spiffe]``): a node built with
``.spiffe_trust_domain("example.org")`` presents ``spiffe://example.org/<identity hex>`` as a
URI SAN in its TLS certificate, and every node checks that a SPIFFE ID a peer presents names
that peer's own key (optionally admitting only given trust domains).
"""

from korium_spiffe.certificates import (
    extract_spiffe_id_from_cert,
    generate_ed25519_cert_with_spiffe,
)
from korium_spiffe.config import PeerPolicy, SpiffeConfig, SpiffeSettings
from korium_spiffe.plugin import SpiffeService, service
from korium_spiffe.spiffe_id import SpiffeId, SpiffeIdError, parse_spiffe_id, validate_spiffe_id

__all__ = [
    "PeerPolicy",
    "SpiffeConfig",
    "SpiffeId",
    "SpiffeIdError",
    "SpiffeService",
    "SpiffeSettings",
    "extract_spiffe_id_from_cert",
    "generate_ed25519_cert_with_spiffe",
    "parse_spiffe_id",
    "service",
    "validate_spiffe_id",
]
