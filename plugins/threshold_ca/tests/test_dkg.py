"""Tests of the key ceremony (``korium_threshold_ca.dkg``): honest runs, cheaters, the dealer.

An honest ceremony must leave every participant with the same CA, whose key any k of them (and
no k-1) can use for a plain Ed25519 signature. The coordinators are driven by hand to cheat in
each way the module claims to catch; each time the ceremony must stop with DkgError naming the
cheater, or, for equivocation (different round-1 messages to different peers), naming a peer
whose view differs, before anyone holds a state.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import msgspec
import nacl.bindings
import nacl.exceptions
import nacl.signing
import pytest
from korium_threshold_ca import dkg, frost, group, wire
from korium_threshold_ca.config import ThresholdCaConfig
from korium_threshold_ca.dkg import (
    CA_BACKDATE,
    DkgCoordinator,
    DkgError,
    Round1Secret,
    Round2Secret,
    dealer_split,
    run_local_dkg,
)
from korium_threshold_ca.signing import sign_locally
from korium_threshold_ca.state import SignerState

from korium.identity import Identity, Keypair

TD: Final = "korium.example"
MESSAGE: Final = b"a TBSCertificate, or anything else"
ORDER_8_POINT: Final = bytes.fromhex(
    "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"
)
NON_CANONICAL_POINT: Final = bytes.fromhex(
    "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f"
)
SUBSETS_PER_COMMITTEE: Final = 24


def identities(n: int) -> list[Identity]:
    return [Keypair.generate().identity for _ in range(n)]


def verifies(group_key: bytes, message: bytes, signature: bytes) -> bool:
    """Plain RFC 8032 verification by libsodium, independent of the FROST code."""
    try:
        nacl.signing.VerifyKey(group_key).verify(message, signature)
    except nacl.exceptions.BadSignatureError:
        return False
    return True


# -- honest ceremonies ----------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "k"), [(3, 2), (5, 3), (7, 5), (10, 7)])
def test_run_local_dkg_any_k_sign_and_k_minus_1_cannot(n: int, k: int) -> None:
    signers = identities(n)
    states = run_local_dkg(ThresholdCaConfig(n, k, TD), signers)
    assert set(states) == set(signers)
    ca = states[signers[0]].ca
    assert all(state.ca == ca for state in states.values())
    assert all(state.ca.encode() == ca.encode() for state in states.values())
    assert ca.signers == tuple(sorted(signers))
    assert (ca.config.n, ca.config.k) == (n, k)
    for identity, state in states.items():
        assert state.identity == identity
        assert state.key_package.group_public_key == ca.group_public_key
    shares = {state.key_package.signing_share for state in states.values()}
    assert len(shares) == n

    ordered = [states[s] for s in ca.signers]
    subsets = list(itertools.combinations(ordered, k))
    if len(subsets) > SUBSETS_PER_COMMITTEE:
        subsets = random.Random(n * 1000 + k).sample(subsets, SUBSETS_PER_COMMITTEE)
    for subset in subsets:
        signature = sign_locally(subset, MESSAGE)
        assert verifies(ca.group_public_key, MESSAGE, signature)
        assert not verifies(ca.group_public_key, MESSAGE + b".", signature)
    for subset in itertools.islice(itertools.combinations(ordered, k - 1), 5):
        with pytest.raises(frost.FrostError, match=f"{k - 1} distinct signers, the threshold"):
            sign_locally(subset, MESSAGE)
        with pytest.raises(frost.FrostError, match=f"{k - 1} distinct signers"):
            sign_locally([*subset, subset[0]], MESSAGE)


def test_every_subset_of_a_small_committee_signs() -> None:
    signers = identities(5)
    states = run_local_dkg(ThresholdCaConfig(5, 3, TD), signers)
    ca = states[signers[0]].ca
    count = 0
    for size in (3, 4, 5):
        for subset in itertools.combinations(states.values(), size):
            assert verifies(ca.group_public_key, MESSAGE, sign_locally(subset, MESSAGE))
            count += 1
    assert count == 10 + 5 + 1


def test_ceremonies_give_different_keys() -> None:
    signers = identities(3)
    config = ThresholdCaConfig(3, 2, TD)
    first = run_local_dkg(config, signers)[signers[0]].ca.group_public_key
    second = run_local_dkg(config, signers, b"again")[signers[0]].ca.group_public_key
    assert first != second


def test_round1_message_is_well_formed() -> None:
    signers = identities(5)
    config = ThresholdCaConfig(5, 3, TD)
    coordinator = DkgCoordinator(config, signers, signers[2])
    secret, message = coordinator.round1(now=1_800_000_000.9)
    assert secret.message is message
    assert message.session == coordinator.session == dkg.session_id(config, signers, b"")
    assert len(message.commitment) == 3
    assert message.commitment[0] == group.base_mul(secret.coefficients[0])
    assert message.timestamp == 1_800_000_000
    assert message.attempt == 0
    assert wire.decode(wire.encode(message)) == message
    assert coordinator.identifier == sorted(signers).index(signers[2]) + 1
    assert set(coordinator.others()) == set(signers) - {signers[2]}
    assert secret.coefficients[0].hex() not in repr(secret)


def test_session_id_binds_everything_agreed() -> None:
    signers = identities(4)
    config = ThresholdCaConfig(4, 3, TD)
    base = dkg.session_id(config, signers, b"label")
    assert dkg.session_id(config, list(reversed(signers)), b"label") == base
    others = [
        dkg.session_id(config, signers, b"label2"),
        dkg.session_id(config, signers, b""),
        dkg.session_id(ThresholdCaConfig(4, 2, TD), signers, b"label"),
        dkg.session_id(ThresholdCaConfig(4, 3, "other.example"), signers, b"label"),
        dkg.session_id(ThresholdCaConfig(4, 3, TD, cert_validity=61), signers, b"label"),
        dkg.session_id(config, [*signers[:3], Keypair.generate().identity], b"label"),
    ]
    assert len({base, *others}) == 1 + len(others)
    assert len(base) == 32


# -- a ceremony driven by hand --------------------------------------------------------------------


@dataclass
class Ceremony:
    """n coordinators and the messages of each round, for tests to tamper with in between."""

    config: ThresholdCaConfig
    coordinators: dict[Identity, DkgCoordinator]
    round1_secrets: dict[Identity, Round1Secret]
    round1: dict[Identity, wire.DkgRound1]

    @property
    def signers(self) -> tuple[Identity, ...]:
        return tuple(sorted(self.coordinators))

    def round2_everyone(
        self, views: Mapping[Identity, Mapping[Identity, wire.DkgRound1]] | None = None
    ) -> tuple[dict[Identity, Round2Secret], dict[Identity, dict[Identity, wire.DkgRound2]]]:
        """Each participant's round 2 on its view of round 1 (default: the common broadcast)."""
        secrets: dict[Identity, Round2Secret] = {}
        sent: dict[Identity, dict[Identity, wire.DkgRound2]] = {}
        for s, coordinator in self.coordinators.items():
            view = self.round1 if views is None else views[s]
            secrets[s], sent[s] = coordinator.round2(self.round1_secrets[s], view)
        return secrets, sent

    def round3(
        self,
        me: Identity,
        secret: Round2Secret,
        sent: Mapping[Identity, Mapping[Identity, wire.DkgRound2]],
    ) -> SignerState:
        inbox = {sender: sent[sender][me] for sender in self.coordinators if sender != me}
        return self.coordinators[me].round3(secret, inbox)


def start(
    n: int = 5, k: int = 3, *, now: Sequence[float] | None = None, ceremony: bytes = b"c"
) -> Ceremony:
    config = ThresholdCaConfig(n, k, TD)
    signers = identities(n)
    coordinators = {s: DkgCoordinator(config, signers, s, ceremony) for s in signers}
    secrets: dict[Identity, Round1Secret] = {}
    messages: dict[Identity, wire.DkgRound1] = {}
    for index, (s, coordinator) in enumerate(sorted(coordinators.items())):
        secrets[s], messages[s] = coordinator.round1(None if now is None else now[index])
    return Ceremony(config, coordinators, secrets, messages)


def test_hand_driven_ceremony_finishes() -> None:
    ceremony = start(4, 3, now=[1_800_000_400, 1_800_000_100, 1_800_000_300, 1_800_000_200])
    secrets, sent = ceremony.round2_everyone()
    digests = {secret.digest for secret in secrets.values()}
    assert len(digests) == 1
    for s, outbox in sent.items():
        assert set(outbox) == set(ceremony.signers) - {s}
        assert all(m.round1_digest in digests for m in outbox.values())
    states = {s: ceremony.round3(s, secrets[s], sent) for s in ceremony.signers}
    cas = {state.ca for state in states.values()}
    assert len(cas) == 1
    ca = cas.pop()
    # median_low of the four timestamps (not the mean of the middle two), minus the backdate
    assert ca.ca_not_before == 1_800_000_200 - CA_BACKDATE
    # the group key is the sum of the constant-term commitments
    constants = [ceremony.round1[s].commitment[0] for s in ceremony.signers]
    assert ca.group_public_key == group.element_sum(constants)
    signature = sign_locally(list(states.values())[1:], MESSAGE)
    assert verifies(ca.group_public_key, MESSAGE, signature)


@pytest.mark.parametrize(
    ("timestamps", "median_low"),
    [
        ([1_000, 5_000, 2_000, 9_000, 3_000], 3_000),
        ([7_000, 7_000, 1_000], 7_000),
        ([4_000, 1_000, 3_000, 2_000], 2_000),
    ],
)
def test_ca_not_before_is_median_low_minus_backdate(timestamps: list[int], median_low: int) -> None:
    ceremony = start(len(timestamps), 3, now=[1_800_000_000 + t for t in timestamps])
    secrets, sent = ceremony.round2_everyone()
    for s in ceremony.signers:
        state = ceremony.round3(s, secrets[s], sent)
        assert state.ca.ca_not_before == 1_800_000_000 + median_low - CA_BACKDATE


def test_round2_accepts_our_own_message_in_the_mapping() -> None:
    ceremony = start(3, 2)
    me = ceremony.signers[0]
    without_me = {s: m for s, m in ceremony.round1.items() if s != me}
    coordinator = ceremony.coordinators[me]
    with_own, _ = coordinator.round2(ceremony.round1_secrets[me], ceremony.round1)
    without_own, _ = coordinator.round2(ceremony.round1_secrets[me], without_me)
    assert with_own.digest == without_own.digest


def test_round1_digest_ignores_the_attempt_counter() -> None:
    ceremony = start(3, 2)
    session = ceremony.coordinators[ceremony.signers[0]].session
    republished = {s: msgspec.structs.replace(m, attempt=7) for s, m in ceremony.round1.items()}
    assert dkg.round1_digest(session, republished) == dkg.round1_digest(session, ceremony.round1)
    changed = dict(ceremony.round1)
    first = ceremony.signers[0]
    changed[first] = msgspec.structs.replace(changed[first], timestamp=changed[first].timestamp + 1)
    assert dkg.round1_digest(session, changed) != dkg.round1_digest(session, ceremony.round1)


# -- cheating in round 1 --------------------------------------------------------------------------

Tamper = Callable[[Ceremony, Identity], wire.DkgRound1]


def wrong_proof(c: Ceremony, cheater: Identity) -> wire.DkgRound1:
    m = c.round1[cheater]
    z = group.scalar_add(m.proof_z, group.scalar_from_int(1))
    return msgspec.structs.replace(m, proof_z=z)


def wrong_proof_r(c: Ceremony, cheater: Identity) -> wire.DkgRound1:
    return msgspec.structs.replace(c.round1[cheater], proof_r=group.base_mul(group.random_scalar()))


def non_canonical_proof_z(c: Ceremony, cheater: Identity) -> wire.DkgRound1:
    m = c.round1[cheater]
    z = (group.scalar_to_int(m.proof_z) + group.L).to_bytes(32, "little")
    return msgspec.structs.replace(m, proof_z=z)


def rogue_key(c: Ceremony, cheater: Identity) -> wire.DkgRound1:
    """Replace the constant term: the proof no longer shows knowledge of its secret."""
    m = c.round1[cheater]
    victim = next(s for s in c.signers if s != cheater)
    rogue = group.sub(group.base_mul(group.random_scalar()), c.round1[victim].commitment[0])
    return msgspec.structs.replace(m, commitment=[rogue, *m.commitment[1:]])


def replayed(c: Ceremony, cheater: Identity) -> wire.DkgRound1:
    """Another participant's message as one's own: the proof is bound to its identifier."""
    victim = next(s for s in c.signers if s != cheater)
    return c.round1[victim]


def too_few_commitments(c: Ceremony, cheater: Identity) -> wire.DkgRound1:
    m = c.round1[cheater]
    return msgspec.structs.replace(m, commitment=m.commitment[:-1])


def too_many_commitments(c: Ceremony, cheater: Identity) -> wire.DkgRound1:
    m = c.round1[cheater]
    extra = group.base_mul(group.random_scalar())
    return msgspec.structs.replace(m, commitment=[*m.commitment, extra])


def small_order_commitment(c: Ceremony, cheater: Identity) -> wire.DkgRound1:
    m = c.round1[cheater]
    return msgspec.structs.replace(
        m, commitment=[m.commitment[0], ORDER_8_POINT, *m.commitment[2:]]
    )


def mixed_order_constant(c: Ceremony, cheater: Identity) -> wire.DkgRound1:
    m = c.round1[cheater]
    mixed = nacl.bindings.crypto_core_ed25519_add(m.commitment[0], ORDER_8_POINT)
    return msgspec.structs.replace(m, commitment=[mixed, *m.commitment[1:]])


def identity_commitment(c: Ceremony, cheater: Identity) -> wire.DkgRound1:
    m = c.round1[cheater]
    return msgspec.structs.replace(m, commitment=[*m.commitment[:-1], group.IDENTITY])


def non_canonical_proof_r(c: Ceremony, cheater: Identity) -> wire.DkgRound1:
    return msgspec.structs.replace(c.round1[cheater], proof_r=NON_CANONICAL_POINT)


def other_ceremony(c: Ceremony, cheater: Identity) -> wire.DkgRound1:
    """A valid round-1 message of the same committee, for a ceremony with another label."""
    coordinator = DkgCoordinator(c.config, c.signers, cheater, b"another label")
    return coordinator.round1()[1]


CHEATS: Final[dict[str, tuple[Tamper, str]]] = {
    "wrong proof_z": (wrong_proof, "proof of knowledge does not verify"),
    "wrong proof_r": (wrong_proof_r, "proof of knowledge does not verify"),
    "non-canonical proof_z": (non_canonical_proof_z, "invalid commitment: .*not canonical"),
    "rogue key": (rogue_key, "proof of knowledge does not verify"),
    "replayed message": (replayed, "proof of knowledge does not verify"),
    "k-1 commitments": (too_few_commitments, "committed to 2 coefficients, not k=3"),
    "k+1 commitments": (too_many_commitments, "committed to 4 coefficients, not k=3"),
    "small-order point": (small_order_commitment, "invalid commitment: .*small order"),
    "mixed-order point": (mixed_order_constant, "invalid commitment: .*prime-order subgroup"),
    "identity point": (identity_commitment, "invalid commitment: .*identity"),
    "non-canonical proof_r": (
        non_canonical_proof_r,
        "invalid commitment: .*not a canonical encoding",
    ),
    "another ceremony": (other_ceremony, "sent a message of another ceremony"),
}


@pytest.mark.parametrize("cheat", CHEATS, ids=CHEATS)
def test_round1_cheater_is_named(cheat: str) -> None:
    tamper, reason = CHEATS[cheat]
    ceremony = start(5, 3)
    cheater = ceremony.signers[2]
    ceremony.round1[cheater] = tamper(ceremony, cheater)
    for honest in ceremony.signers:
        if honest == cheater:
            continue
        with pytest.raises(DkgError, match=reason) as caught:
            ceremony.coordinators[honest].round2(ceremony.round1_secrets[honest], ceremony.round1)
        assert caught.value.culprit == cheater
        assert cheater.short in str(caught.value)


def test_message_from_a_non_participant_is_refused() -> None:
    ceremony = start(3, 2)
    outsider = Keypair.generate().identity
    outsider_coordinator = DkgCoordinator(
        ceremony.config, [*ceremony.signers[:2], outsider], outsider, b"c"
    )
    view = {**ceremony.round1, outsider: outsider_coordinator.round1()[1]}
    for honest in ceremony.signers:
        with pytest.raises(DkgError, match="is not a participant of this ceremony") as caught:
            ceremony.coordinators[honest].round2(ceremony.round1_secrets[honest], view)
        assert caught.value.culprit == outsider


def test_missing_round1_messages_are_listed() -> None:
    ceremony = start(5, 3)
    me, absent = ceremony.signers[0], ceremony.signers[3:]
    view = {s: m for s, m in ceremony.round1.items() if s not in absent}
    with pytest.raises(DkgError) as caught:
        ceremony.coordinators[me].round2(ceremony.round1_secrets[me], view)
    assert str(caught.value) == (
        f"round 1 is missing the messages of {absent[0].short}, {absent[1].short}"
    )
    assert caught.value.culprit is None


# -- cheating in round 2 --------------------------------------------------------------------------


def test_share_not_matching_commitment_names_its_sender() -> None:
    ceremony = start(5, 3)
    secrets, sent = ceremony.round2_everyone()
    cheater, victim = ceremony.signers[1], ceremony.signers[3]
    honest_share = sent[cheater][victim].share
    bad = group.scalar_add(honest_share, group.scalar_from_int(1))
    sent[cheater][victim] = msgspec.structs.replace(sent[cheater][victim], share=bad)
    with pytest.raises(DkgError, match="does not match its commitments") as caught:
        ceremony.round3(victim, secrets[victim], sent)
    assert caught.value.culprit == cheater
    # the others, who got honest shares, finish
    for s in ceremony.signers:
        if s != victim:
            assert ceremony.round3(s, secrets[s], sent).identity == s


def test_share_meant_for_another_names_its_sender() -> None:
    ceremony = start(5, 3)
    secrets, sent = ceremony.round2_everyone()
    cheater, victim, other = ceremony.signers[0], ceremony.signers[2], ceremony.signers[4]
    sent[cheater][victim] = sent[cheater][other]
    with pytest.raises(DkgError, match="does not match its commitments") as caught:
        ceremony.round3(victim, secrets[victim], sent)
    assert caught.value.culprit == cheater


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("share", b"\xff" * 32, "sent a malformed share"),
        ("share", b"\x01" * 31, "sent a malformed share"),
        ("session", bytes(32), "sent a share of another ceremony"),
        ("round1_digest", bytes(32), "used other round-1 messages than we did"),
    ],
)
def test_malformed_round2_message_names_its_sender(field: str, value: bytes, match: str) -> None:
    ceremony = start(4, 3)
    secrets, sent = ceremony.round2_everyone()
    cheater, victim = ceremony.signers[3], ceremony.signers[0]
    sent[cheater][victim] = msgspec.structs.replace(sent[cheater][victim], **{field: value})
    with pytest.raises(DkgError, match=match) as caught:
        ceremony.round3(victim, secrets[victim], sent)
    assert caught.value.culprit == cheater


def test_equivocation_in_round1_is_caught_before_anyone_finishes() -> None:
    """The cheater broadcasts message A to some and B to others, each with consistent shares."""
    ceremony = start(5, 3)
    cheater = ceremony.signers[2]
    honest = [s for s in ceremony.signers if s != cheater]
    group_a, group_b = honest[:2], honest[2:]
    secret_a = ceremony.round1_secrets[cheater]
    secret_b, message_b = ceremony.coordinators[cheater].round1()
    assert message_b.commitment != secret_a.message.commitment
    views = {s: dict(ceremony.round1) for s in ceremony.signers}
    for s in group_b:
        views[s][cheater] = message_b
    secrets, sent = ceremony.round2_everyone(views)
    # What the cheater sends group B: shares of polynomial B, and B's view digest.
    _, sent_b = ceremony.coordinators[cheater].round2(secret_b, views[group_b[0]])
    for s in group_b:
        sent[cheater][s] = sent_b[s]
        assert sent_b[s].round1_digest == secrets[s].digest
    assert secrets[group_a[0]].digest != secrets[group_b[0]].digest
    # Each share from the cheater verifies against the commitment its recipient saw ...
    for s in honest:
        commitment = views[s][cheater].commitment
        identifier = ceremony.coordinators[s].identifier
        assert frost.vss_verify(identifier, sent[cheater][s].share, commitment)
    # ... so only the digests from honest peers of the other group give the cheater away.
    for s in honest:
        other_group = group_b if s in group_a else group_a
        with pytest.raises(DkgError, match="used other round-1 messages than we did") as caught:
            ceremony.round3(s, secrets[s], sent)
        assert caught.value.culprit == min(other_group)


def test_missing_round2_messages_are_listed() -> None:
    ceremony = start(5, 3)
    secrets, sent = ceremony.round2_everyone()
    me = ceremony.signers[4]
    absent = [ceremony.signers[0], ceremony.signers[2]]
    inbox = {s: sent[s][me] for s in ceremony.signers if s not in (me, *absent)}
    with pytest.raises(DkgError) as caught:
        ceremony.coordinators[me].round3(secrets[me], inbox)
    assert str(caught.value) == (
        f"round 2 is missing the shares of {absent[0].short}, {absent[1].short}"
    )
    assert caught.value.culprit is None


# -- the coordinator's arguments ------------------------------------------------------------------


def test_coordinator_refuses_a_wrong_committee() -> None:
    config = ThresholdCaConfig(4, 3, TD)
    signers = identities(5)
    with pytest.raises(DkgError, match="needs 4 distinct signers, got 3"):
        DkgCoordinator(config, signers[:3], signers[0])
    with pytest.raises(DkgError, match="needs 4 distinct signers, got 5"):
        DkgCoordinator(config, signers, signers[0])
    with pytest.raises(DkgError, match="needs 4 distinct signers, got 3"):
        DkgCoordinator(config, [*signers[:3], signers[0]], signers[0])
    with pytest.raises(DkgError, match=f"{signers[4].short}... is not one of the ceremony"):
        DkgCoordinator(config, signers[:4], signers[4])
    coordinator = DkgCoordinator(config, list(reversed(signers[:4])), signers[1])
    assert coordinator.signers == tuple(sorted(signers[:4]))


# -- the trusted dealer ---------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "k"), [(3, 2), (5, 3), (7, 7)])
def test_dealer_split_any_k_sign(n: int, k: int) -> None:
    signers = identities(n)
    states = dealer_split(ThresholdCaConfig(n, k, TD), signers, ca_not_before=1_700_000_000)
    ca = states[signers[0]].ca
    assert ca.ca_not_before == 1_700_000_000
    assert all(state.ca == ca for state in states.values())
    assert {state.identity for state in states.values()} == set(signers)
    for subset in itertools.combinations(states.values(), k):
        assert verifies(ca.group_public_key, MESSAGE, sign_locally(subset, MESSAGE))
    with pytest.raises(frost.FrostError, match="distinct signers, the threshold"):
        sign_locally(list(states.values())[: k - 1], MESSAGE)


def test_dealer_split_with_a_given_secret() -> None:
    secret = group.random_scalar()
    signers = identities(3)
    states = dealer_split(ThresholdCaConfig(3, 2, TD), signers, secret=secret)
    ca = states[signers[0]].ca
    assert ca.group_public_key == group.base_mul(secret)
    signature = sign_locally(list(states.values())[:2], MESSAGE)
    assert verifies(group.base_mul(secret), MESSAGE, signature)
    # the shares interpolate to the secret
    shares = {s.identifier: s.key_package.signing_share for s in states.values()}
    lagrange = {i: frost.lagrange_coefficient(i, [1, 3]) for i in (1, 3)}
    recovered = group.scalar_add(
        group.scalar_mul(lagrange[1], shares[1]), group.scalar_mul(lagrange[3], shares[3])
    )
    assert recovered == secret


def test_dealer_split_defaults_and_refusals() -> None:
    signers = identities(4)
    config = ThresholdCaConfig(4, 3, TD)
    before = int(time.time())
    states = dealer_split(config, signers)
    after = int(time.time())
    ca = states[signers[0]].ca
    assert before - CA_BACKDATE <= ca.ca_not_before <= after - CA_BACKDATE
    assert ca.ca_not_after == ca.ca_not_before + config.ca_validity
    with pytest.raises(DkgError, match="needs 4 distinct signers, got 3"):
        dealer_split(config, signers[:3])
    with pytest.raises(DkgError, match="needs 4 distinct signers, got 3"):
        dealer_split(config, [*signers[:3], signers[0]])
    with pytest.raises(frost.FrostError, match="must not be zero"):
        dealer_split(config, signers, secret=bytes(32))
    with pytest.raises(frost.FrostError, match="not canonical"):
        dealer_split(config, signers, secret=b"\xff" * 32)


def test_states_of_two_ceremonies_do_not_mix() -> None:
    signers = identities(3)
    config = ThresholdCaConfig(3, 2, TD)
    first = run_local_dkg(config, signers)
    second = run_local_dkg(config, signers)
    with pytest.raises(frost.FrostError, match="belong to different CAs"):
        sign_locally([first[signers[0]], second[signers[1]]], MESSAGE)
