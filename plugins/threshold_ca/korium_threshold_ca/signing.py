"""Threshold signing of certificates: the signer's policy, the requester's session, local issuance.

A :class:`Signer` turns a CSR into a commitment only after the certificate passes the signer's
own checks (:func:`certificates.check_leaf_tbs`), holds each nonce for one sign request of the
same requester, and refuses floods. A :class:`SigningSession` is the requester's side of one
attempt: it takes commitments only from the CA's signers, picks k, and aggregates the shares,
checking each one so that a bad share names its signer (identifiable abort). Both are pure
state; the service drives them.
"""

from __future__ import annotations

import time
from collections import Counter, OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from korium.identity import Identity
from korium.limits import KeyedRateLimiter
from korium_threshold_ca import certificates, frost, group, wire
from korium_threshold_ca.certificates import CsrRejected
from korium_threshold_ca.config import ThresholdCaSettings
from korium_threshold_ca.state import CaPublicKey, SignerState


def generate_signing_commitment(
    state: SignerState,
) -> tuple[frost.SigningNonces, frost.SigningCommitment]:
    """Fresh nonces (keep secret, use once) and the commitment to send."""
    nonces = frost.commit(state.key_package)
    return nonces, nonces.commitment


def sign_with_share(
    state: SignerState,
    nonces: frost.SigningNonces,
    message: bytes,
    commitments: Sequence[frost.SigningCommitment],
) -> bytes:
    """This signer's signature share of *message* for the chosen *commitments*."""
    check_commitments(state.ca, commitments)
    return frost.sign(state.key_package, nonces, message, commitments)


def aggregate_signatures(
    ca: CaPublicKey,
    message: bytes,
    commitments: Sequence[frost.SigningCommitment],
    shares: Mapping[int, bytes],
) -> bytes:
    """The 64-byte Ed25519 signature of the CA; InvalidShareError names bad signers."""
    return frost.aggregate(message, commitments, shares, ca.public_key_package())


def check_commitments(ca: CaPublicKey, commitments: Sequence[frost.SigningCommitment]) -> None:
    """At least k commitments, of distinct signers of *ca*; FrostError otherwise."""
    identifiers = [c.identifier for c in commitments]
    if len(set(identifiers)) != len(identifiers):
        raise frost.FrostError("a signer appears twice in the commitment list")
    if len(identifiers) < ca.config.k:
        raise frost.FrostError(f"{len(identifiers)} commitments, the threshold is {ca.config.k}")
    unknown = [i for i in identifiers if not 1 <= i <= ca.config.n]
    if unknown:
        raise frost.FrostError(f"commitment of signer {unknown[0]}, who is not in the CA")


def message_to_sign(ca: CaPublicKey, csr: wire.Csr, requester: Identity, now: float) -> bytes:
    """The bytes a signer agrees to sign for *csr*; CsrRejected says why not."""
    if csr.kind == "ca":
        return ca.ca_certificate_tbs()
    certificates.check_leaf_tbs(
        csr.tbs,
        requester=requester,
        ca_key=ca.group_public_key,
        trust_domain=ca.trust_domain,
        max_validity=ca.config.cert_validity,
        now=now,
    )
    return csr.tbs


@dataclass(slots=True)
class _Pending:
    nonces: frost.SigningNonces = field(repr=False)
    message: bytes
    expires: float


class Signer:
    """One signer's policy and outstanding nonces."""

    def __init__(self, state: SignerState, settings: ThresholdCaSettings) -> None:
        self.state = state
        self.settings = settings
        self._pending: OrderedDict[tuple[Identity, bytes], _Pending] = OrderedDict()
        self._limiter: KeyedRateLimiter[Identity] = KeyedRateLimiter(
            settings.requests_per_minute, 60.0, max_keys=10_000
        )
        self.stats: Counter[str] = Counter()

    def commit(self, csr: wire.Csr, requester: Identity, now: float) -> wire.Commitment:
        """Check *csr* and commit to signing it; CsrRejected with the rule it breaks."""
        self.expire(now)
        if not self._limiter.allow(requester, now):
            self.stats["refused.rate"] += 1
            raise CsrRejected("rate", "too many requests from this requester")
        try:
            message = message_to_sign(self.state.ca, csr, requester, now)
        except CsrRejected as exc:
            self.stats[f"refused.{exc.rule}"] += 1
            raise
        key = (requester, csr.session)
        if key in self._pending:
            raise CsrRejected("duplicate", "this session already has a commitment")
        if len(self._pending) >= self.settings.max_pending:
            self.stats["refused.busy"] += 1
            raise CsrRejected("busy", "the signer holds too many open requests")
        nonces, commitment = generate_signing_commitment(self.state)
        self._pending[key] = _Pending(nonces, message, now + self.settings.pending_ttl)
        self.stats["commitments"] += 1
        return wire.Commitment(
            csr.session, commitment.identifier, commitment.hiding, commitment.binding
        )

    def sign(
        self, request: wire.SignRequest, requester: Identity, now: float
    ) -> wire.SignatureShare:
        """The share for a session this requester opened; each nonce signs once."""
        self.expire(now)
        pending = self._pending.pop((requester, request.session), None)
        if pending is None:
            self.stats["refused.unknown-session"] += 1
            raise CsrRejected(
                "unknown-session", "no open commitment for this session (expired or used)"
            )
        try:
            commitments = [decode_commitment(c) for c in request.commitments]
            share = sign_with_share(self.state, pending.nonces, pending.message, commitments)
        except (frost.FrostError, group.GroupError) as exc:
            self.stats["refused.commitments"] += 1
            raise CsrRejected("commitments", str(exc)) from None
        self.stats["shares"] += 1
        return wire.SignatureShare(request.session, self.state.identifier, share)

    def expire(self, now: float) -> None:
        """Forget nonces whose sign request did not come in time."""
        while self._pending:
            key, pending = next(iter(self._pending.items()))
            if pending.expires > now:
                break
            del self._pending[key]
            self.stats["expired"] += 1

    @property
    def pending(self) -> int:
        return len(self._pending)


def decode_commitment(message: wire.Commitment) -> frost.SigningCommitment:
    """The FROST commitment in *message*, its points checked (FrostError if invalid)."""
    return frost.SigningCommitment.decode(
        group.scalar_from_int(message.identifier) + message.hiding + message.binding
    )


class SigningSession:
    """The requester's side of one signing attempt for *message* among *signers*."""

    def __init__(self, ca: CaPublicKey, message: bytes, signers: Sequence[Identity]) -> None:
        self.ca = ca
        self.message = message
        self.asked = tuple(signers)
        self.commitments: dict[Identity, frost.SigningCommitment] = {}
        self.shares: dict[int, bytes] = {}
        self.chosen: list[frost.SigningCommitment] = []

    def add_commitment(self, signer: Identity, message: wire.Commitment) -> None:
        """Take *signer*'s commitment; FrostError if it is not one of ours or is invalid."""
        if signer not in self.asked or self.ca.identifier_of(signer) != message.identifier:
            raise frost.FrostError(f"{signer.short}... is not signer {message.identifier}")
        if signer not in self.commitments and not self.chosen:
            self.commitments[signer] = decode_commitment(message)

    @property
    def ready(self) -> bool:
        """Whether k commitments are in."""
        return len(self.commitments) >= self.ca.config.k

    def choose(self, session: bytes) -> tuple[list[Identity], wire.SignRequest]:
        """Fix the first k commitments: who to ask for shares, and the request to send them."""
        first = list(self.commitments.items())[: self.ca.config.k]
        self.chosen = sorted((c for _, c in first), key=lambda c: c.identifier)
        listed = [wire.Commitment(session, c.identifier, c.hiding, c.binding) for c in self.chosen]
        return [signer for signer, _ in first], wire.SignRequest(session, listed)

    def add_share(self, signer: Identity, share: wire.SignatureShare) -> None:
        """Record *signer*'s share (checked when the signature is made)."""
        identifier = self.ca.identifier_of(signer)
        if share.identifier != identifier:
            raise frost.FrostError(f"{signer.short}... sent the share of signer {share.identifier}")
        self.shares[identifier] = share.share

    def bad_shares(self) -> list[Identity]:
        """The chosen signers whose share is in but does not verify (identifiable abort)."""
        bad = []
        for commitment in self.chosen:
            share = self.shares.get(commitment.identifier)
            if share is not None and not frost.verify_signature_share(
                commitment.identifier,
                self.ca.verifying_shares[commitment.identifier - 1],
                share,
                self.chosen,
                self.message,
                self.ca.group_public_key,
            ):
                bad.append(self.ca.identity_of(commitment.identifier))
        return bad

    def signature(self) -> bytes:
        """The aggregate signature, once every chosen signer's share is in; InvalidShareError
        names the signers whose shares do not verify."""
        return aggregate_signatures(self.ca, self.message, self.chosen, self.shares)


def sign_locally(states: Sequence[SignerState], message: bytes) -> bytes:
    """Sign *message* with signer states held in this process (at least k of one CA)."""
    if not states:
        raise frost.FrostError("no signer states given")
    ca = states[0].ca
    if any(s.ca != ca for s in states):
        raise frost.FrostError("the signer states belong to different CAs")
    chosen = {s.identifier: s for s in states}
    if len(chosen) < ca.config.k:
        raise frost.FrostError(f"{len(chosen)} distinct signers, the threshold is {ca.config.k}")
    round_one = {i: generate_signing_commitment(s) for i, s in chosen.items()}
    commitments = [round_one[i][1] for i in sorted(chosen)]
    shares = {
        i: sign_with_share(s, round_one[i][0], message, commitments) for i, s in chosen.items()
    }
    return aggregate_signatures(ca, message, commitments, shares)


def issue_locally(
    states: Sequence[SignerState],
    requester: Identity,
    workload_path: str | None = None,
    *,
    validity: int | None = None,
    now: float | None = None,
) -> bytes:
    """A workload certificate (DER) for *requester*, checked by each signer's policy first."""
    ca = states[0].ca
    csr = certificates.generate_csr(
        requester,
        ca.trust_domain,
        workload_path,
        ca_key=ca.group_public_key,
        validity=validity or ca.config.cert_validity,
        now=now,
    )
    request = wire.Csr(bytes(16), ca.group_public_key, "leaf", csr.tbs_der, b"")
    message_to_sign(ca, request, requester, time.time() if now is None else now)
    return certificates.assemble_certificate(csr.tbs_der, sign_locally(states, csr.tbs_der))


def ca_certificate_locally(states: Sequence[SignerState]) -> bytes:
    """The CA's self-signed certificate (DER), signed by signer states held in this process."""
    tbs = states[0].ca.ca_certificate_tbs()
    return certificates.assemble_certificate(tbs, sign_locally(states, tbs))
