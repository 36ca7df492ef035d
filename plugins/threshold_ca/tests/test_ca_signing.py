"""Tests of threshold signing (``korium_threshold_ca.signing``): the signer's policy, the
requester's session, and issuance within one process.

A :class:`Signer` is pure state driven with an explicit ``now``: it must commit only to CSRs its
policy accepts, refuse floods (rate, open sessions), hold each nonce for one sign request of the
requester that opened it, and refuse commitment lists that FROST cannot safely sign. A
:class:`SigningSession` must take commitments only from the signers it asked, detect a bad
signature share, and aggregate a plain Ed25519 signature that assembles into a certificate
``certificates.verify_certificate`` accepts. The CA is split by a dealer (the DKG has its own
tests); the requesters are fresh node identities.
"""

from __future__ import annotations

import functools
import os
from typing import Final, Literal

import msgspec
import nacl.exceptions
import nacl.signing
import pytest
from cryptography import x509
from korium_threshold_ca import certificates, frost, group, signing, wire
from korium_threshold_ca.certificates import BACKDATE, CsrRejected
from korium_threshold_ca.config import ThresholdCaConfig, ThresholdCaSettings
from korium_threshold_ca.dkg import dealer_split
from korium_threshold_ca.signing import Signer, SigningSession
from korium_threshold_ca.state import CaPublicKey, SignerState

from korium.identity import Identity, Keypair

TD: Final = "korium.example"
NOW: Final = 1_800_000_000.0  # 2027-01-15T08:00:00Z
N: Final = 5
K: Final = 3
CERT_VALIDITY: Final = 3600


@functools.cache
def committee() -> tuple[SignerState, ...]:
    """A 3-of-5 CA whose certificate is valid at NOW; states in identifier order."""
    config = ThresholdCaConfig(N, K, TD, cert_validity=CERT_VALIDITY)
    signers = [Keypair.generate().identity for _ in range(N)]
    states = dealer_split(config, signers, ca_not_before=int(NOW) - 300)
    return tuple(sorted(states.values(), key=lambda s: s.identifier))


@functools.cache
def other_committee() -> tuple[SignerState, ...]:
    """Another CA, same trust domain and threshold."""
    config = ThresholdCaConfig(N, K, TD, cert_validity=CERT_VALIDITY)
    signers = [Keypair.generate().identity for _ in range(N)]
    states = dealer_split(config, signers, ca_not_before=int(NOW) - 300)
    return tuple(sorted(states.values(), key=lambda s: s.identifier))


def the_ca() -> CaPublicKey:
    return committee()[0].ca


@functools.cache
def ca_certificate() -> bytes:
    return signing.ca_certificate_locally(committee())


def new_identity() -> Identity:
    return Keypair.generate().identity


def make_csr(
    subject: Identity,
    *,
    trust_domain: str = TD,
    validity: int = CERT_VALIDITY,
    ca_key: bytes | None = None,
    kind: Literal["leaf", "ca"] = "leaf",
    tbs: bytes | None = None,
    workload_path: str | None = None,
) -> wire.Csr:
    """A wire CSR of *subject*'s certificate (its TBS from ``certificates.generate_csr``)."""
    ca_key = the_ca().group_public_key if ca_key is None else ca_key
    if tbs is None:
        request = certificates.generate_csr(
            subject, trust_domain, workload_path, ca_key=ca_key, validity=validity, now=NOW
        )
        tbs = request.tbs_der
    return wire.Csr(session=os.urandom(16), ca_key=ca_key, kind=kind, tbs=tbs, contact=b"")


def signers(
    *, requests_per_minute: int = 30, max_pending: int = 1_000, pending_ttl: float = 30.0
) -> list[Signer]:
    """One Signer per state of the committee (identifier order), all with the same settings."""
    config = ThresholdCaSettings(
        requests_per_minute=requests_per_minute, max_pending=max_pending, pending_ttl=pending_ttl
    )
    return [Signer(state, config) for state in committee()]


def commit_all(
    group_: list[Signer], csr: wire.Csr, requester: Identity, now: float = NOW
) -> list[wire.Commitment]:
    return [signer.commit(csr, requester, now) for signer in group_]


def verifies(message: bytes, signature: bytes, key: bytes | None = None) -> bool:
    try:
        nacl.signing.VerifyKey(the_ca().group_public_key if key is None else key).verify(
            message, signature
        )
    except nacl.exceptions.BadSignatureError:
        return False
    return True


# -- Signer.commit: the policy --------------------------------------------------------------------


def test_commit_for_a_valid_csr() -> None:
    signer = signers()[1]
    requester = new_identity()
    csr = make_csr(requester)
    commitment = signer.commit(csr, requester, NOW)
    assert isinstance(commitment, wire.Commitment)
    assert commitment.session == csr.session
    assert commitment.identifier == 2
    decoded = signing.decode_commitment(commitment)
    assert (decoded.hiding, decoded.binding) == (commitment.hiding, commitment.binding)
    assert commitment.hiding != commitment.binding
    assert wire.decode(wire.encode(commitment)) == commitment
    assert signer.pending == 1
    assert signer.stats == {"commitments": 1}


def test_commitments_are_fresh_per_session() -> None:
    signer = signers()[0]
    requester = new_identity()
    first = signer.commit(make_csr(requester), requester, NOW)
    second = signer.commit(make_csr(requester), requester, NOW)
    assert {first.hiding, first.binding}.isdisjoint({second.hiding, second.binding})


def test_commit_twice_for_one_session_is_refused() -> None:
    signer = signers()[0]
    requester = new_identity()
    csr = make_csr(requester)
    signer.commit(csr, requester, NOW)
    with pytest.raises(CsrRejected) as caught:
        signer.commit(csr, requester, NOW)
    assert caught.value.rule == "duplicate"
    assert signer.pending == 1


@pytest.mark.parametrize(
    ("case", "rule"),
    [
        ("another requester's key", "subject-key"),
        ("another trust domain", "issuer"),
        ("validity one second too long", "lifetime"),
        ("another CA's key identifier", "authority-key-id"),
        ("not DER", "der"),
        ("empty TBS", "der"),
    ],
)
def test_commit_refuses_csr_breaking_a_rule(case: str, rule: str) -> None:
    signer = signers()[0]
    requester = new_identity()
    csr = {
        "another requester's key": lambda: make_csr(new_identity()),
        "another trust domain": lambda: make_csr(requester, trust_domain="other.example"),
        "validity one second too long": lambda: make_csr(
            requester, validity=CERT_VALIDITY + BACKDATE + 1
        ),
        "another CA's key identifier": lambda: make_csr(
            requester, ca_key=other_committee()[0].ca.group_public_key
        ),
        "not DER": lambda: make_csr(requester, tbs=b"\x30\x03abc and more"),
        "empty TBS": lambda: make_csr(requester, tbs=b""),
    }[case]()
    with pytest.raises(CsrRejected) as caught:
        signer.commit(csr, requester, NOW)
    assert caught.value.rule == rule
    assert signer.stats == {f"refused.{rule}": 1}
    assert signer.pending == 0


def test_commit_accepts_the_longest_validity() -> None:
    signer = signers()[0]
    requester = new_identity()
    csr = make_csr(requester, validity=CERT_VALIDITY + BACKDATE)
    assert signer.commit(csr, requester, NOW).identifier == 1


def test_commit_refuses_a_csr_that_is_not_yet_or_no_longer_acceptable() -> None:
    signer = signers(requests_per_minute=100)[0]
    requester = new_identity()
    csr = make_csr(requester)
    for now in (NOW - 400, NOW + 400):
        with pytest.raises(CsrRejected) as caught:
            signer.commit(csr, requester, now)
        assert caught.value.rule == "not-before"
    assert signer.stats == {"refused.not-before": 2}


def test_ca_kind_signs_exactly_the_ca_certificate() -> None:
    group_ = signers()[:K]
    requester = new_identity()
    ca = the_ca()
    leaf_tbs = make_csr(requester).tbs
    csr = make_csr(requester, kind="ca", tbs=leaf_tbs)
    session = SigningSession(ca, ca.ca_certificate_tbs(), ca.signers)
    wrong = SigningSession(ca, leaf_tbs, ca.signers)
    for signer, commitment in zip(group_, commit_all(group_, csr, requester), strict=True):
        session.add_commitment(signer.state.identity, commitment)
        wrong.add_commitment(signer.state.identity, commitment)
    _, request = session.choose(csr.session)
    wrong.choose(csr.session)
    for signer in group_:
        share = signer.sign(request, requester, NOW)
        session.add_share(signer.state.identity, share)
        wrong.add_share(signer.state.identity, share)
    assert len(wrong.bad_shares()) == K  # shares of the CA certificate, not of the leaf
    assert session.bad_shares() == []
    signature = session.signature()
    assert verifies(ca.ca_certificate_tbs(), signature)
    certificate = certificates.assemble_certificate(ca.ca_certificate_tbs(), signature)
    assert certificates.tbs_of(certificate) == certificates.tbs_of(ca_certificate())


def test_ca_kind_ignores_garbage_tbs() -> None:
    signer = signers()[0]
    requester = new_identity()
    commitment = signer.commit(make_csr(requester, kind="ca", tbs=b"junk"), requester, NOW)
    assert commitment.identifier == 1
    assert signer.stats == {"commitments": 1}


# -- Signer.commit: floods ------------------------------------------------------------------------


def test_rate_limit_per_requester() -> None:
    signer = signers(requests_per_minute=2)[0]
    requester, other = new_identity(), new_identity()
    signer.commit(make_csr(requester), requester, NOW)
    signer.commit(make_csr(requester), requester, NOW + 1)
    with pytest.raises(CsrRejected) as caught:
        signer.commit(make_csr(requester), requester, NOW + 2)
    assert caught.value.rule == "rate"
    assert signer.stats["refused.rate"] == 1
    assert signer.commit(make_csr(other), other, NOW + 2).identifier == 1
    assert signer.commit(make_csr(requester), requester, NOW + 61).identifier == 1
    assert signer.stats["commitments"] == 4


def test_refused_csrs_count_against_the_rate() -> None:
    signer = signers(requests_per_minute=2)[0]
    requester = new_identity()
    for _ in range(2):
        with pytest.raises(CsrRejected):
            signer.commit(make_csr(new_identity()), requester, NOW)
    with pytest.raises(CsrRejected) as caught:
        signer.commit(make_csr(requester), requester, NOW)
    assert caught.value.rule == "rate"
    assert signer.stats == {"refused.subject-key": 2, "refused.rate": 1}


def test_max_pending() -> None:
    signer = signers(max_pending=2, pending_ttl=30.0)[0]
    requester = new_identity()
    signer.commit(make_csr(requester), requester, NOW)
    signer.commit(make_csr(requester), requester, NOW + 10)
    with pytest.raises(CsrRejected) as caught:
        signer.commit(make_csr(requester), requester, NOW + 20)
    assert caught.value.rule == "busy"
    assert signer.stats["refused.busy"] == 1
    assert signer.pending == 2
    # the first nonce expires at NOW + 30, which frees a place
    assert signer.commit(make_csr(requester), requester, NOW + 30).identifier == 1
    assert signer.stats["expired"] == 1
    assert signer.pending == 2


def test_pending_ttl() -> None:
    requester = new_identity()
    csr = make_csr(requester)
    late = signers(pending_ttl=30.0)
    request = wire.SignRequest(csr.session, commit_all(late[:K], csr, requester))
    with pytest.raises(CsrRejected) as caught:
        late[0].sign(request, requester, NOW + 30)
    assert caught.value.rule == "unknown-session"
    assert late[0].stats["expired"] == 1
    assert late[0].stats["refused.unknown-session"] == 1
    assert late[0].pending == 0
    in_time = signers(pending_ttl=30.0)
    request = wire.SignRequest(csr.session, commit_all(in_time[:K], csr, requester))
    share = in_time[0].sign(request, requester, NOW + 29.9)
    assert (share.session, share.identifier) == (csr.session, 1)


def test_expire_forgets_only_old_nonces() -> None:
    signer = signers(pending_ttl=30.0)[0]
    requester = new_identity()
    for offset in (0, 10, 20):
        signer.commit(make_csr(requester), requester, NOW + offset)
    signer.expire(NOW + 15)
    assert signer.pending == 3
    signer.expire(NOW + 35)
    assert signer.pending == 2
    signer.expire(NOW + 50)
    assert signer.pending == 0
    assert signer.stats["expired"] == 3


# -- Signer.sign ----------------------------------------------------------------------------------


def test_sign_returns_a_valid_share_once() -> None:
    group_ = signers()[:K]
    requester = new_identity()
    csr = make_csr(requester)
    request = wire.SignRequest(csr.session, commit_all(group_, csr, requester))
    share = group_[0].sign(request, requester, NOW + 1)
    assert (share.session, share.identifier) == (csr.session, 1)
    chosen = [signing.decode_commitment(c) for c in request.commitments]
    ca = the_ca()
    assert frost.verify_signature_share(
        1, ca.verifying_shares[0], share.share, chosen, csr.tbs, ca.group_public_key
    )
    assert group_[0].stats["shares"] == 1
    with pytest.raises(CsrRejected) as caught:
        group_[0].sign(request, requester, NOW + 2)
    assert caught.value.rule == "unknown-session"


def test_sign_for_another_identity_is_refused_and_keeps_the_nonce() -> None:
    group_ = signers()[:K]
    requester, impostor = new_identity(), new_identity()
    csr = make_csr(requester)
    request = wire.SignRequest(csr.session, commit_all(group_, csr, requester))
    with pytest.raises(CsrRejected) as caught:
        group_[0].sign(request, impostor, NOW)
    assert caught.value.rule == "unknown-session"
    assert group_[0].pending == 1
    assert group_[0].sign(request, requester, NOW).identifier == 1


def test_sign_for_an_unknown_session_is_refused() -> None:
    group_ = signers()[:K]
    requester = new_identity()
    csr = make_csr(requester)
    commitments = commit_all(group_, csr, requester)
    request = wire.SignRequest(os.urandom(16), commitments)
    with pytest.raises(CsrRejected) as caught:
        group_[0].sign(request, requester, NOW)
    assert caught.value.rule == "unknown-session"


def altered(original: wire.Commitment, **changes: object) -> wire.Commitment:
    return msgspec.structs.replace(original, **changes)


BAD_LISTS: Final = [
    "k-1 commitments",
    "duplicate",
    "unknown identifier",
    "without ours",
    "ours altered",
    "invalid point",
]


@pytest.mark.parametrize("case", BAD_LISTS)
def test_sign_refuses_a_bad_commitment_list(case: str) -> None:
    group_ = signers()[: K + 1]
    requester = new_identity()
    csr = make_csr(requester)
    ours, *others = commit_all(group_, csr, requester)
    point = group.base_mul(group.random_scalar())
    commitments = {
        "k-1 commitments": [ours, *others[: K - 2]],
        "duplicate": [ours, ours, others[0]],
        "unknown identifier": [ours, others[0], altered(others[1], identifier=N + 1)],
        "without ours": others[:K],
        "ours altered": [altered(ours, hiding=point), *others[: K - 1]],
        "invalid point": [ours, others[0], altered(others[1], binding=group.IDENTITY)],
    }[case]
    request = wire.SignRequest(csr.session, commitments)
    with pytest.raises(CsrRejected) as caught:
        group_[0].sign(request, requester, NOW)
    assert caught.value.rule == "commitments"
    assert group_[0].stats["refused.commitments"] == 1
    assert "shares" not in group_[0].stats
    # a refused request used the nonce up: it can never sign for another list
    good = wire.SignRequest(csr.session, [ours, *others[: K - 1]])
    with pytest.raises(CsrRejected) as again:
        group_[0].sign(good, requester, NOW)
    assert again.value.rule == "unknown-session"


def test_sign_accepts_more_than_k_commitments() -> None:
    group_ = signers()
    requester = new_identity()
    csr = make_csr(requester)
    commitments = commit_all(group_, csr, requester)
    request = wire.SignRequest(csr.session, list(reversed(commitments)))
    shares = {s.state.identifier: s.sign(request, requester, NOW).share for s in group_}
    chosen = [signing.decode_commitment(c) for c in commitments]
    signature = signing.aggregate_signatures(the_ca(), csr.tbs, chosen, shares)
    assert verifies(csr.tbs, signature)


# -- SigningSession and the whole exchange --------------------------------------------------------


def test_end_to_end_certificate() -> None:
    group_ = signers()
    ca = the_ca()
    requester = new_identity()
    csr = make_csr(requester, workload_path="api")
    session = SigningSession(ca, csr.tbs, ca.signers)
    assert not session.ready
    # signers 5, 2, 4 answer first, then 1 (too late to be chosen)
    order = [group_[4], group_[1], group_[3], group_[0]]
    for signer in order:
        session.add_commitment(signer.state.identity, signer.commit(csr, requester, NOW))
    assert session.ready
    chosen, request = session.choose(csr.session)
    assert chosen == [s.state.identity for s in order[:K]]
    assert [c.identifier for c in request.commitments] == [2, 4, 5]
    assert request.session == csr.session
    late = group_[2]
    session.add_commitment(late.state.identity, late.commit(csr, requester, NOW))
    assert late.state.identity not in session.commitments
    for signer in order[:K]:
        received = wire.expect(wire.encode(request), wire.SignRequest)
        share = signer.sign(received, requester, NOW + 1)
        session.add_share(signer.state.identity, share)
    signature = session.signature()
    assert verifies(csr.tbs, signature)
    certificate = certificates.assemble_certificate(csr.tbs, signature)
    parsed = certificates.verify_certificate(certificate, ca_certificate(), now=NOW + 2)
    san = parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        f"spiffe://{TD}/{requester.hex()}/api"
    ]


def test_ca_certificate_locally_is_self_signed() -> None:
    ca = the_ca()
    certificate = ca_certificate()
    tbs = certificates.tbs_of(certificate)
    assert tbs == ca.ca_certificate_tbs()
    parsed = x509.load_der_x509_certificate(certificate)
    assert verifies(tbs, parsed.signature)
    parsed.verify_directly_issued_by(parsed)


def exchange(
    requester: Identity, csr: wire.Csr
) -> tuple[SigningSession, list[Signer], dict[int, wire.SignatureShare]]:
    """k signers commit and sign; the session has chosen them; shares not yet added."""
    group_ = signers()[:K]
    ca = the_ca()
    session = SigningSession(ca, csr.tbs, ca.signers)
    for signer in group_:
        session.add_commitment(signer.state.identity, signer.commit(csr, requester, NOW))
    _, request = session.choose(csr.session)
    shares = {s.state.identifier: s.sign(request, requester, NOW) for s in group_}
    return session, group_, shares


def test_a_corrupted_share_is_detected() -> None:
    requester = new_identity()
    csr = make_csr(requester)
    session, group_, shares = exchange(requester, csr)
    cheater = group_[1].state
    bad = group.scalar_add(shares[2].share, group.scalar_from_int(1))
    with pytest.raises(frost.FrostError, match="share of signer 3"):
        session.add_share(cheater.identity, altered_share(shares[2], identifier=3))
    with pytest.raises(frost.FrostError, match="share of signer 3"):
        session.add_share(cheater.identity, shares[3])  # signer 3's share, as signer 2
    assert 2 not in session.shares
    session.add_share(group_[0].state.identity, shares[1])
    session.add_share(group_[2].state.identity, shares[3])
    with pytest.raises(frost.FrostError, match="name different signers"):
        session.signature()  # signer 2's share is missing
    for corrupted in (bad, b"\xff" * 32):
        session.add_share(cheater.identity, altered_share(shares[2], share=corrupted))
        assert session.bad_shares() == [cheater.identity]
        with pytest.raises(frost.InvalidShareError) as caught:
            session.signature()
        assert caught.value.culprits == (2,)
    # the honest share completes it
    session.add_share(cheater.identity, shares[2])
    assert session.bad_shares() == []
    assert verifies(csr.tbs, session.signature())


def altered_share(original: wire.SignatureShare, **changes: object) -> wire.SignatureShare:
    return msgspec.structs.replace(original, **changes)


def test_aggregate_names_the_bad_signer() -> None:
    requester = new_identity()
    csr = make_csr(requester)
    session, _, shares = exchange(requester, csr)
    raw = {i: s.share for i, s in shares.items()}
    raw[3] = group.scalar_add(raw[3], group.scalar_from_int(1))
    with pytest.raises(frost.InvalidShareError) as caught:
        signing.aggregate_signatures(the_ca(), csr.tbs, session.chosen, raw)
    assert caught.value.culprits == (3,)


def test_session_refuses_commitments_of_strangers() -> None:
    group_ = signers()
    ca = the_ca()
    requester = new_identity()
    csr = make_csr(requester)
    asked = ca.signers[:4]
    session = SigningSession(ca, csr.tbs, asked)
    commitments = commit_all(group_, csr, requester)
    with pytest.raises(frost.FrostError, match="is not signer 5"):
        session.add_commitment(ca.signers[4], commitments[4])  # not asked
    with pytest.raises(frost.FrostError, match="is not signer 2"):
        session.add_commitment(ca.signers[0], commitments[1])  # another signer's commitment
    with pytest.raises(frost.FrostError, match="is not signer 1"):
        session.add_commitment(new_identity(), commitments[0])  # not a signer at all
    with pytest.raises(frost.FrostError):
        session.add_commitment(ca.signers[0], altered(commitments[0], hiding=group.IDENTITY))
    assert session.commitments == {}
    session.add_commitment(ca.signers[0], commitments[0])
    session.add_commitment(ca.signers[0], commitments[0])
    assert list(session.commitments) == [ca.signers[0]]
    assert not session.ready


# -- issuance within one process ------------------------------------------------------------------


def test_issue_locally() -> None:
    requester = new_identity()
    states = committee()
    certificate = signing.issue_locally(states[2:], requester, "db/primary", now=NOW)
    parsed = certificates.verify_certificate(certificate, ca_certificate(), now=NOW)
    san = parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == [
        f"spiffe://{TD}/{requester.hex()}/db/primary"
    ]
    lifetime = parsed.not_valid_after_utc - parsed.not_valid_before_utc
    assert lifetime.total_seconds() == CERT_VALIDITY
    short = signing.issue_locally(states[:K], requester, validity=600, now=NOW)
    parsed = certificates.verify_certificate(short, ca_certificate(), now=NOW)
    assert (parsed.not_valid_after_utc - parsed.not_valid_before_utc).total_seconds() == 600


def test_issue_locally_applies_the_policy() -> None:
    with pytest.raises(CsrRejected) as caught:
        signing.issue_locally(
            committee(), new_identity(), validity=CERT_VALIDITY + BACKDATE + 1, now=NOW
        )
    assert caught.value.rule == "lifetime"


def test_local_functions_refuse_states_of_two_cas() -> None:
    mixed = [*committee()[:2], other_committee()[2]]
    with pytest.raises(frost.FrostError, match="belong to different CAs"):
        signing.sign_locally(mixed, b"message")
    with pytest.raises(frost.FrostError, match="belong to different CAs"):
        signing.issue_locally(mixed, new_identity(), now=NOW)
    with pytest.raises(frost.FrostError, match="belong to different CAs"):
        signing.ca_certificate_locally(mixed)


def test_local_functions_refuse_too_few_states() -> None:
    with pytest.raises(frost.FrostError, match="no signer states given"):
        signing.sign_locally([], b"message")
    with pytest.raises(frost.FrostError, match="2 distinct signers, the threshold is 3"):
        signing.ca_certificate_locally(committee()[:2])
    with pytest.raises(frost.FrostError, match="2 distinct signers, the threshold is 3"):
        signing.issue_locally(committee()[:2], new_identity(), now=NOW)


def test_check_commitments() -> None:
    ca = the_ca()
    commitments = [signing.generate_signing_commitment(s)[1] for s in committee()]
    signing.check_commitments(ca, commitments[:K])
    signing.check_commitments(ca, commitments)
    with pytest.raises(frost.FrostError, match="2 commitments, the threshold is 3"):
        signing.check_commitments(ca, commitments[:2])
    with pytest.raises(frost.FrostError, match="a signer appears twice"):
        signing.check_commitments(ca, [*commitments[:K], commitments[0]])
    stranger = frost.SigningCommitment(N + 1, commitments[0].hiding, commitments[0].binding)
    with pytest.raises(frost.FrostError, match="commitment of signer 6, who is not in the CA"):
        signing.check_commitments(ca, [*commitments[:K], stranger])
