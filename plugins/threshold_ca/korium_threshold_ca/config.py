"""Settings of a threshold CA: the committee (n signers, threshold k), and what a request waits for.

``ThresholdCaConfig`` is fixed at the key ceremony and travels inside every signer's state, so
all signers apply the same policy. ``CaRequestConfig`` is a requester's: which CA, how long to
wait. ``ThresholdCaSettings`` is the plugin's settings section of a node.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from korium_spiffe.spiffe_id import SpiffeIdError, validate_trust_domain

from korium.config import plugin_config
from korium.errors import ConfigError
from korium.identity import Identity

if TYPE_CHECKING:
    from korium_threshold_ca.state import CaPublicKey, SignerState

log = logging.getLogger(__name__)

MIN_SIGNERS = 3
"""A committee of fewer than 3 cannot both tolerate a loss and need more than one signer."""
MAX_SIGNERS = 255
DEFAULT_CERT_VALIDITY = 3600
"""Workload certificates are short-lived (an hour, as SPIFFE SVIDs usually are): with no
revocation, expiry is what ends a certificate."""
MAX_CERT_VALIDITY = 400 * 24 * 3600
DEFAULT_CA_VALIDITY = 10 * 365 * 24 * 3600


@dataclass(frozen=True, slots=True)
class ThresholdCaConfig:
    """*n* signers, any *k* of whom sign, for the SPIFFE *trust_domain*.

    Raises :class:`ConfigError` unless 3 <= n <= 255 and 2 <= k <= n; a threshold of at most
    n/2 is allowed but logged, because then two disjoint minorities could each sign.
    """

    n: int
    k: int
    trust_domain: str
    cert_validity: int = DEFAULT_CERT_VALIDITY
    """The longest lifetime (seconds) signers grant a workload certificate."""
    ca_validity: int = DEFAULT_CA_VALIDITY
    """Lifetime of the CA certificate, from the key ceremony."""

    def __post_init__(self) -> None:
        for name in ("n", "k", "cert_validity", "ca_validity"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigError(f"ThresholdCaConfig.{name} must be an int, got {value!r}")
        if not MIN_SIGNERS <= self.n <= MAX_SIGNERS:
            raise ConfigError(
                f"a threshold CA needs {MIN_SIGNERS} to {MAX_SIGNERS} signers, got n={self.n}"
            )
        if not 2 <= self.k <= self.n:
            raise ConfigError(f"the threshold k must be between 2 and n={self.n}, got k={self.k}")
        if not 60 <= self.cert_validity <= MAX_CERT_VALIDITY:
            raise ConfigError(
                f"cert_validity must be 60 s to {MAX_CERT_VALIDITY} s, got {self.cert_validity}"
            )
        if not self.cert_validity < self.ca_validity <= 100 * 365 * 24 * 3600:
            raise ConfigError(
                "ca_validity must exceed cert_validity and be at most 100 years, "
                f"got {self.ca_validity} s"
            )
        try:
            validate_trust_domain(self.trust_domain)
        except SpiffeIdError as exc:
            raise ConfigError(f"ThresholdCaConfig.trust_domain: {exc}") from None
        if 2 * self.k <= self.n:
            log.warning(
                "threshold CA with k=%d of n=%d: two disjoint groups of %d signers could each sign",
                self.k,
                self.n,
                self.k,
            )


@dataclass(frozen=True, slots=True)
class CaRequestConfig:
    """What ``request_ca_certificate_from_mesh`` asks of which CA.

    The request tolerates up to n-k signers that do not answer or answer wrongly: it collects
    commitments from the first k that respond, drops any signer whose share does not verify,
    and tries again with others until *timeout* (seconds) runs out.
    """

    ca_public_key: CaPublicKey
    timeout: float = 30.0
    validity: int | None = None
    """Requested lifetime in seconds (default: the CA's ``cert_validity``, its maximum)."""
    signer_identities: Sequence[Identity] | None = None
    """Ask only these signers (default: every signer of the CA)."""
    round_timeout: float = 5.0
    """How long one signer may take to return its signature share before it is skipped."""

    def __post_init__(self) -> None:
        if not self.timeout > 0 or not self.round_timeout > 0:
            raise ConfigError("CaRequestConfig timeouts must be positive")
        ca = self.ca_public_key
        limit = ca.config.cert_validity
        if self.validity is not None and not 60 <= self.validity <= limit:
            raise ConfigError(f"validity must be 60 s to the CA's limit of {limit} s")
        if self.signer_identities is not None:
            unknown = [p for p in self.signer_identities if p not in ca.signers]
            if unknown:
                raise ConfigError(f"{unknown[0].short}... is not a signer of this CA")
            if len(set(self.signer_identities)) < ca.config.k:
                raise ConfigError(
                    f"{len(set(self.signer_identities))} signer identities cannot reach the "
                    f"threshold of {ca.config.k}"
                )

    @property
    def signers(self) -> tuple[Identity, ...]:
        """The signers this request asks."""
        wanted = self.signer_identities
        return tuple(p for p in self.ca_public_key.signers if wanted is None or p in wanted)


@dataclass(frozen=True, slots=True)
class ThresholdCaSettings:
    """The ``threshold_ca`` section of a node's settings (``NodeBuilder.as_ca_signer`` fills
    ``signer_state``)."""

    signer_state: SignerState | None = None
    """Serve as this CA signer: sign valid CSRs of the mesh with this key share."""
    ca_public_key: CaPublicKey | None = None
    """The CA ``request_certificate`` asks (default: a signer's own CA)."""
    requests_per_minute: int = 30
    """Sign requests a signer accepts from one requester per minute."""
    max_pending: int = 1_000
    """Outstanding commitments a signer holds (each an unused nonce) before refusing more."""
    pending_ttl: float = 30.0
    """Seconds a signer keeps a commitment's nonce waiting for the sign request."""
    announce_interval: float = 30.0
    """Seconds between a signer's announcements on ``ca/signers``."""

    def __post_init__(self) -> None:
        from korium_threshold_ca.state import CaPublicKey, SignerState

        if self.signer_state is not None and not isinstance(self.signer_state, SignerState):
            raise ConfigError("threshold_ca: signer_state must be a SignerState")
        if self.ca_public_key is not None and not isinstance(self.ca_public_key, CaPublicKey):
            raise ConfigError("threshold_ca: ca_public_key must be a CaPublicKey")
        if self.requests_per_minute < 1 or self.max_pending < 1:
            raise ConfigError("threshold_ca: requests_per_minute and max_pending must be >= 1")
        if not self.pending_ttl > 0 or not self.announce_interval > 0:
            raise ConfigError("threshold_ca: pending_ttl and announce_interval must be > 0")

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> ThresholdCaSettings:
        """Built from the plugin's settings section; ConfigError names a bad or unknown key."""
        return plugin_config(cls, settings, "threshold_ca")
