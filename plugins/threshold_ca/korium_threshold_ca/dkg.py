"""Key generation without a trusted dealer: a three-round Pedersen DKG with proofs of knowledge.

Every participant deals a random polynomial of degree k-1 (the construction of FROST's
``keygen`` in frost-core, after Komlo and Goldberg):

1. ``round1`` broadcasts Feldman commitments to the coefficients and a Schnorr proof of knowledge
   of the constant term (so nobody can cancel another's contribution: the rogue-key attack);
2. ``round2`` checks every proof and sends participant j its share f_i(j), to j alone;
3. ``round3`` checks every share it received against its sender's commitments and adds them up.

The group key is the sum of the constant-term commitments; no party ever holds its secret.
A participant who cheats is named (:attr:`DkgError.culprit`). Each round-2 share also carries a
hash of the round-1 messages its sender used, so a participant who broadcast different
commitments to different peers is caught before anyone finishes. The coordinators are pure
state: :mod:`korium_threshold_ca.service` carries the messages over the mesh, the ``korium ca``
command within one process.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import blake3

from korium.errors import KoriumError
from korium.identity import Identity
from korium_threshold_ca import frost, group, wire
from korium_threshold_ca.config import ThresholdCaConfig
from korium_threshold_ca.state import CaPublicKey, SignerState, make_ca_public_key

CA_BACKDATE = 300
"""Seconds the CA certificate starts before the ceremony: verifiers' clocks differ."""


class DkgError(KoriumError):
    """The key ceremony cannot finish; *culprit* is the participant at fault, if known."""

    def __init__(self, message: str, culprit: Identity | None = None) -> None:
        super().__init__(message)
        self.culprit = culprit


@dataclass(frozen=True, slots=True)
class Round1Secret:
    """What round 1 keeps for round 2: this participant's polynomial (secret)."""

    coefficients: tuple[bytes, ...] = field(repr=False)
    message: wire.DkgRound1


@dataclass(frozen=True, slots=True)
class Round2Secret:
    """What round 2 keeps for round 3: every participant's round-1 message, our own share."""

    round1: Mapping[Identity, wire.DkgRound1]
    own_share: bytes = field(repr=False)
    digest: bytes


class DkgCoordinator:
    """One participant's view of the ceremony among *signers* (which must include *me*).

    *ceremony* distinguishes repeated ceremonies of the same committee (a label, a date): a
    message of one can never be taken for a message of another.
    """

    def __init__(
        self,
        config: ThresholdCaConfig,
        signers: Sequence[Identity],
        me: Identity,
        ceremony: bytes = b"",
    ) -> None:
        ordered = tuple(sorted(set(signers)))
        if len(ordered) != len(signers) or len(ordered) != config.n:
            raise DkgError(
                f"the ceremony needs {config.n} distinct signers, got {len(set(signers))}"
            )
        if me not in ordered:
            raise DkgError(f"{me.short}... is not one of the ceremony's signers")
        self.config = config
        self.signers = ordered
        self.me = me
        self.identifier = ordered.index(me) + 1
        self.session = session_id(config, ordered, ceremony)

    def others(self) -> tuple[Identity, ...]:
        """The participants this one exchanges messages with."""
        return tuple(s for s in self.signers if s != self.me)

    def round1(self, now: float | None = None) -> tuple[Round1Secret, wire.DkgRound1]:
        """Deal a random polynomial; returns the secret to keep and the message to broadcast."""
        coefficients = tuple(group.random_scalar() for _ in range(self.config.k))
        commitment = frost.vss_commit(coefficients)
        nonce = group.random_scalar()
        proof_r = group.base_mul(nonce)
        challenge = self._challenge(self.identifier, commitment[0], proof_r)
        proof_z = group.scalar_add(nonce, group.scalar_mul(coefficients[0], challenge))
        timestamp = int(time.time() if now is None else now)
        message = wire.DkgRound1(self.session, list(commitment), proof_r, proof_z, timestamp)
        return Round1Secret(coefficients, message), message

    def round2(
        self, secret: Round1Secret, round1: Mapping[Identity, wire.DkgRound1]
    ) -> tuple[Round2Secret, dict[Identity, wire.DkgRound2]]:
        """Check everyone's round-1 message; returns the secret to keep and one share per peer.

        *round1* maps each other participant to its message (ours may be included).
        """
        messages = dict(round1)
        messages[self.me] = secret.message
        missing = [s.short for s in self.signers if s not in messages]
        if missing:
            raise DkgError(f"round 1 is missing the messages of {', '.join(missing)}")
        for sender, message in messages.items():
            self._check_round1(sender, message)
        digest = round1_digest(self.session, {s: messages[s] for s in self.signers})
        shares = {
            peer: wire.DkgRound2(
                self.session,
                frost.evaluate_polynomial(secret.coefficients, index + 1),
                digest,
            )
            for index, peer in enumerate(self.signers)
            if peer != self.me
        }
        own = frost.evaluate_polynomial(secret.coefficients, self.identifier)
        return Round2Secret(messages, own, digest), shares

    def round3(
        self, secret: Round2Secret, round2: Mapping[Identity, wire.DkgRound2]
    ) -> SignerState:
        """Check the shares sent to us and combine them into this participant's SignerState."""
        missing = [s.short for s in self.others() if s not in round2]
        if missing:
            raise DkgError(f"round 2 is missing the shares of {', '.join(missing)}")
        total = secret.own_share
        for sender in self.others():
            message = round2[sender]
            if message.session != self.session:
                raise DkgError(f"{sender.short}... sent a share of another ceremony", sender)
            if message.round1_digest != secret.digest:
                raise DkgError(
                    f"{sender.short}... used other round-1 messages than we did: "
                    "a participant sent different commitments to different peers",
                    sender,
                )
            commitment = secret.round1[sender].commitment
            try:
                share = group.decode_scalar(message.share)
            except group.GroupError:
                raise DkgError(f"{sender.short}... sent a malformed share", sender) from None
            if not frost.vss_verify(self.identifier, share, commitment):
                raise DkgError(
                    f"the share from {sender.short}... does not match its commitments", sender
                )
            total = group.scalar_add(total, share)
        commitments = [secret.round1[s].commitment for s in self.signers]
        summed = tuple(group.element_sum(c[j] for c in commitments) for j in range(self.config.k))
        public = frost.PublicKeyPackage(
            summed[0],
            {i: frost.vss_evaluate(summed, i) for i in range(1, self.config.n + 1)},
            self.config.k,
        )
        timestamps = [secret.round1[s].timestamp for s in self.signers]
        start = int(statistics.median_low(timestamps)) - CA_BACKDATE
        ca = make_ca_public_key(self.config, self.signers, public, start)
        state = SignerState.create(ca, self.identifier, total)
        return state

    def _check_round1(self, sender: Identity, message: wire.DkgRound1) -> None:
        if sender not in self.signers:
            raise DkgError(f"{sender.short}... is not a participant of this ceremony", sender)
        if message.session != self.session:
            raise DkgError(f"{sender.short}... sent a message of another ceremony", sender)
        if len(message.commitment) != self.config.k:
            raise DkgError(
                f"{sender.short}... committed to {len(message.commitment)} coefficients, "
                f"not k={self.config.k}",
                sender,
            )
        try:
            commitment = [group.decode_element(c) for c in message.commitment]
            proof_r = group.decode_element(message.proof_r)
            proof_z = group.decode_scalar(message.proof_z)
        except group.GroupError as exc:
            raise DkgError(f"{sender.short}... sent an invalid commitment: {exc}", sender) from None
        challenge = self._challenge(self.signers.index(sender) + 1, commitment[0], proof_r)
        expected = group.sub(group.base_mul(proof_z), group.mul(challenge, commitment[0]))
        if expected != proof_r:
            raise DkgError(f"{sender.short}...'s proof of knowledge does not verify", sender)

    @staticmethod
    def _challenge(identifier: int, constant: bytes, proof_r: bytes) -> bytes:
        return frost.hdkg(group.scalar_from_int(identifier) + constant + proof_r)


def session_id(config: ThresholdCaConfig, signers: Sequence[Identity], ceremony: bytes) -> bytes:
    """The ceremony's identifier: a hash of everything all participants must agree on."""
    hasher = blake3.blake3(b"korium-threshold-ca-dkg-v1\x00")
    c = config
    hasher.update(f"{c.n},{c.k},{c.trust_domain},{c.cert_validity},{c.ca_validity}".encode())
    for signer in sorted(signers):
        hasher.update(bytes(signer))
    hasher.update(len(ceremony).to_bytes(4, "big") + ceremony)
    return hasher.digest()


def round1_digest(session: bytes, messages: Mapping[Identity, wire.DkgRound1]) -> bytes:
    """A hash of the round-1 messages (by sorted sender), ignoring republication counters."""
    hasher = blake3.blake3(session)
    for sender in sorted(messages):
        m = messages[sender]
        hasher.update(bytes(sender))
        hasher.update(
            wire.encode(wire.DkgRound1(m.session, m.commitment, m.proof_r, m.proof_z, m.timestamp))
        )
    return hasher.digest()


def run_local_dkg(
    config: ThresholdCaConfig, signers: Sequence[Identity], ceremony: bytes = b""
) -> dict[Identity, SignerState]:
    """The whole ceremony in one process (the ``korium ca dkg`` command, tests)."""
    coordinators = {s: DkgCoordinator(config, signers, s, ceremony) for s in signers}
    first = {s: c.round1() for s, c in coordinators.items()}
    broadcast = {s: message for s, (_, message) in first.items()}
    second = {s: c.round2(first[s][0], broadcast) for s, c in coordinators.items()}
    return {
        s: c.round3(second[s][0], {sender: second[sender][1][s] for sender in c.others()})
        for s, c in coordinators.items()
    }


def dealer_split(
    config: ThresholdCaConfig,
    signers: Sequence[Identity],
    *,
    secret: bytes | None = None,
    ca_not_before: int | None = None,
) -> dict[Identity, SignerState]:
    """Split a CA key with a trusted dealer (who sees the whole key: tests and ceremonies
    that choose to). *secret* is the CA's private scalar; random by default."""
    ordered = tuple(sorted(set(signers)))
    if len(ordered) != config.n:
        raise DkgError(f"the CA needs {config.n} distinct signers, got {len(ordered)}")
    packages, public = frost.trusted_dealer_keygen(config.n, config.k, secret=secret)
    not_before = int(time.time()) - CA_BACKDATE if ca_not_before is None else ca_not_before
    ca: CaPublicKey = make_ca_public_key(config, ordered, public, not_before)
    return {
        signer: SignerState.create(ca, index + 1, packages[index + 1].signing_share)
        for index, signer in enumerate(ordered)
    }
