"""korium-threshold-ca: a certificate authority whose key no single machine holds.

The CA's Ed25519 key exists only as FROST (RFC 9591) shares, made by a dealer-free key
ceremony among n signer nodes; any k of them sign a certificate, and the result is an ordinary
Ed25519 signature that ``openssl verify`` accepts. Signers check every request before they
sign: a workload certificate for the requester's own key, with its SPIFFE ID in the CA's trust
domain, short-lived, never a CA. Installed as the ``threshold_ca`` plugin by
``pip install korium[spiffe]``.
"""

from korium_threshold_ca.certificates import (
    CertificateSigningRequest,
    CsrRejected,
    assemble_certificate,
    generate_csr,
    verify_certificate,
    verify_tbs_signature,
)
from korium_threshold_ca.config import CaRequestConfig, ThresholdCaConfig, ThresholdCaSettings
from korium_threshold_ca.dkg import DkgCoordinator, DkgError, dealer_split, run_local_dkg
from korium_threshold_ca.frost import FrostError, InvalidShareError
from korium_threshold_ca.plugin import service
from korium_threshold_ca.service import CaRequestError, CaTimeoutError, ThresholdCaService
from korium_threshold_ca.signing import (
    aggregate_signatures,
    generate_signing_commitment,
    sign_with_share,
)
from korium_threshold_ca.state import CaPublicKey, CaStateError, SignerState, WrongPassphraseError

__all__ = [
    "CaPublicKey",
    "CaRequestConfig",
    "CaRequestError",
    "CaStateError",
    "CaTimeoutError",
    "CertificateSigningRequest",
    "CsrRejected",
    "DkgCoordinator",
    "DkgError",
    "FrostError",
    "InvalidShareError",
    "SignerState",
    "ThresholdCaConfig",
    "ThresholdCaService",
    "ThresholdCaSettings",
    "WrongPassphraseError",
    "aggregate_signatures",
    "assemble_certificate",
    "dealer_split",
    "generate_csr",
    "generate_signing_commitment",
    "run_local_dkg",
    "service",
    "sign_with_share",
    "verify_certificate",
    "verify_tbs_signature",
]
