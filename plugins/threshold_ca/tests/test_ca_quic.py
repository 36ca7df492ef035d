"""The threshold CA over real QUIC on 127.0.0.1: the key ceremony over the mesh, signing with
signers stopped, a cheating signer, refused requests, and openssl as the judge.

Every wait is a condition or a request with a generous deadline; nothing asserts a duration.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import korium_gossipsub.plugin
import korium_spiffe.plugin
import korium_threshold_ca.plugin
import pytest
from cryptography import x509
from korium_spiffe.certificates import spiffe_ids_of
from korium_threshold_ca import (
    CaPublicKey,
    CaRequestConfig,
    CaRequestError,
    CaTimeoutError,
    SignerState,
    ThresholdCaConfig,
    dealer_split,
    service,
    wire,
)
from korium_threshold_ca.certificates import generate_csr, to_pem, verify_certificate
from korium_threshold_ca.signing import Signer

from korium import CERTIFICATE_ISSUER, Identity, Keypair, Node
from korium.capabilities import PubSubMessage
from korium.errors import CapabilityMissing, ConfigError

PLUGINS = [korium_gossipsub.plugin, korium_spiffe.plugin, korium_threshold_ca.plugin]
TRUST_DOMAIN = "example.org"
DEADLINE_S = 30.0
NodeFactory = Callable[..., Awaitable[Node]]


@pytest.fixture
async def make_node() -> AsyncIterator[NodeFactory]:
    """Nodes with gossipsub, spiffe and the threshold CA, closed at teardown."""
    built: list[Node] = []

    async def make(
        keypair: Keypair | None = None, state: SignerState | None = None, **settings: float
    ) -> Node:
        builder = Node.builder("127.0.0.1:0").difficulty(0).plugins(PLUGINS)
        builder.plugin_settings("threshold_ca", **settings)
        if keypair is not None:
            builder.keypair(keypair)
        if state is not None:
            builder.as_ca_signer(state)
        node = await builder.build()
        built.append(node)
        return node

    yield make
    await asyncio.gather(*(node.close() for node in built))


def committee(n: int, k: int, **config: int) -> tuple[list[Keypair], dict[Identity, SignerState]]:
    """Signer keypairs and their states, split by a trusted dealer (the ceremony is tested
    over the mesh once; other tests need only the result)."""
    keypairs = [Keypair.generate() for _ in range(n)]
    ca_config = ThresholdCaConfig(n, k, TRUST_DOMAIN, **config)
    return keypairs, dealer_split(ca_config, [kp.identity for kp in keypairs])


async def connect_all(nodes: list[Node]) -> None:
    for index, node in enumerate(nodes):
        for other in nodes[index + 1 :]:
            await node.connect(other.identity, [other.local_addr])


def openssl_verify(
    tmp_path: Path, ca_der: bytes, leaf_der: bytes
) -> subprocess.CompletedProcess[str]:
    (tmp_path / "ca.pem").write_bytes(to_pem(ca_der))
    (tmp_path / "leaf.pem").write_bytes(to_pem(leaf_der))
    return subprocess.run(
        ["openssl", "verify", "-x509_strict", "-CAfile", "ca.pem", "leaf.pem"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )


async def wait_until(condition: Callable[[], bool], what: str) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE_S
    while not condition():
        assert loop.time() < deadline, f"not reached within {DEADLINE_S} s: {what}"
        await asyncio.sleep(0.02)


class Watcher:
    """Everything a node hears on the CA's gossip topics."""

    def __init__(self, node: Node) -> None:
        self.heard: list[PubSubMessage] = []
        self._task = asyncio.ensure_future(self._read(node))

    async def _read(self, node: Node) -> None:
        async for message in node.messages():
            self.heard.append(message)

    def close(self) -> None:
        self._task.cancel()


needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


@needs_openssl
async def test_dkg_over_the_mesh_then_3_of_5_signing_with_signers_stopped(
    make_node: NodeFactory, tmp_path: Path
) -> None:
    signers = [await make_node(announce_interval=0.2) for _ in range(5)]
    watcher_node = await make_node()
    await connect_all([*signers, watcher_node])
    watcher = Watcher(watcher_node)
    for topic in (wire.TOPIC_DKG_ROUND1, wire.TOPIC_DKG_ROUND2, wire.TOPIC_SIGNERS):
        await watcher_node.subscribe(topic)
    identities = [node.identity for node in signers]
    config = ThresholdCaConfig(5, 3, TRUST_DOMAIN)

    states = await asyncio.gather(
        *(service(node).run_dkg(config, identities, timeout=DEADLINE_S) for node in signers)
    )

    ca = states[0].ca
    assert all(state.ca == ca for state in states)
    assert sorted(state.identifier for state in states) == [1, 2, 3, 4, 5]
    assert [state.identity for state in states] == identities
    # Round 1 went over gossip; no round-2 share did (they go by RPC to their recipient).
    topics = {message.topic for message in watcher.heard}
    assert wire.TOPIC_DKG_ROUND1 in topics
    assert wire.TOPIC_DKG_ROUND2 not in topics
    for message in watcher.heard:
        if message.topic == wire.TOPIC_DKG_ROUND1:
            assert isinstance(wire.decode(message.data), wire.DkgRound1)
    watcher.close()

    for node, state in zip(signers, states, strict=True):
        await service(node).serve_as_signer(state)
    heard = service(signers[0]).signers_seen  # announcements on ca/signers
    await wait_until(lambda: set(heard) == set(identities[1:]), "every other signer announced")
    requester = await make_node()
    await requester.connect(signers[0].identity, [signers[0].local_addr])
    request = CaRequestConfig(CaPublicKey.decode(ca.encode()), timeout=DEADLINE_S)

    ca_der = await requester.request_ca_root_certificate_from_mesh(request)
    leaf_der = await requester.request_ca_certificate_from_mesh(TRUST_DOMAIN, "api", request)
    leaf = verify_certificate(leaf_der, ca_der)
    assert spiffe_ids_of(leaf) == [f"spiffe://{TRUST_DOMAIN}/{requester.identity.hex()}/api"]
    checked = openssl_verify(tmp_path, ca_der, leaf_der)
    assert checked.returncode == 0, checked.stdout + checked.stderr

    stopped = signers[3:]
    for node in stopped:
        await node.close()
    leaf_der = await requester.request_ca_certificate_from_mesh(TRUST_DOMAIN, "api", request)
    assert openssl_verify(tmp_path, ca_der, leaf_der).returncode == 0

    await signers[2].close()
    stopped = signers[2:]
    short = CaRequestConfig(ca, timeout=3.0)
    with pytest.raises(CaTimeoutError) as caught:
        await requester.request_ca_certificate_from_mesh(TRUST_DOMAIN, "api", short)
    assert set(caught.value.missing) == {node.identity for node in stopped}
    for node in stopped:
        assert node.identity.short in str(caught.value)
    assert "2 of the 3 signers needed answered" in str(caught.value)


async def test_a_ceremony_with_a_silent_participant_times_out_naming_it(
    make_node: NodeFactory,
) -> None:
    present = [await make_node() for _ in range(2)]
    absent = await make_node()
    await connect_all([*present, absent])
    config = ThresholdCaConfig(3, 2, TRUST_DOMAIN)
    identities = [node.identity for node in (*present, absent)]
    results = await asyncio.gather(
        *(service(node).run_dkg(config, identities, timeout=2.0) for node in present),
        return_exceptions=True,
    )
    for result in results:
        assert isinstance(result, CaTimeoutError), result
        assert result.missing == (absent.identity,)
        assert "round 1" in str(result)
    assert all(not service(node)._dkg for node in present)  # nothing left behind


async def test_signers_built_with_as_ca_signer_from_sealed_states(
    make_node: NodeFactory,
) -> None:
    keypairs, states = committee(3, 2, cert_validity=600)
    sealed = {
        identity: state.serialize("correct horse", strength="interactive")
        for identity, state in states.items()
    }
    signers = [
        await make_node(kp, SignerState.deserialize(sealed[kp.identity], "correct horse"))
        for kp in keypairs
    ]
    await connect_all(signers)
    requester = await make_node()
    await requester.connect(signers[1].identity, [signers[1].local_addr])
    ca = service(signers[0]).settings.signer_state.ca  # type: ignore[union-attr]

    request = CaRequestConfig(ca, timeout=DEADLINE_S, validity=300)
    ca_der = await requester.request_ca_root_certificate_from_mesh(request)
    leaf = verify_certificate(
        await requester.request_ca_certificate_from_mesh(TRUST_DOMAIN, None, request), ca_der
    )
    assert spiffe_ids_of(leaf) == [f"spiffe://{TRUST_DOMAIN}/{requester.identity.hex()}"]
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert lifetime.total_seconds() <= 300 + 60
    assert x509.load_der_x509_certificate(ca_der).subject == leaf.issuer
    stats = signers[0].stats()
    assert stats["threshold_ca.commitments"] >= 1

    # request_certificate: the CA in the settings, or the one a signer signs for
    with pytest.raises(ConfigError, match="no CA configured"):
        await service(requester).request_certificate("api")
    own = verify_certificate(await service(signers[2]).request_certificate("ops"), ca_der)
    assert spiffe_ids_of(own) == [f"spiffe://{TRUST_DOMAIN}/{signers[2].identity.hex()}/ops"]


async def test_a_signer_sending_bad_shares_is_left_out(make_node: NodeFactory) -> None:
    """3 signers, k=2: the liar and an honest signer answer first, the liar's share fails
    verification, the requester starts over with the two honest ones."""
    keypairs, states = committee(3, 2)
    liar_kp, honest_kp, slow_kp = keypairs
    liar, honest, slow = [await make_node(kp, states[kp.identity]) for kp in keypairs]
    await connect_all([liar, honest, slow])
    requester = await make_node()
    await connect_all([requester, liar, honest, slow])

    lying = service(liar).signer
    assert isinstance(lying, Signer)
    honest_sign = lying.sign

    def corrupt(request: wire.SignRequest, requester: Identity, now: float) -> wire.SignatureShare:
        share = honest_sign(request, requester, now)
        return wire.SignatureShare(share.session, share.identifier, bytes(32))

    lying.sign = corrupt  # type: ignore[method-assign]
    slow_service = service(slow)
    answer = slow_service._answer_csr
    late: list[bytes] = []

    async def answer_late(message: PubSubMessage) -> None:
        if not late:  # only the first session: the retry must be answered promptly
            late.append(message.data)
            await asyncio.sleep(2.0)
        await answer(message)

    slow_service._answer_csr = answer_late  # type: ignore[method-assign]
    ca = states[liar_kp.identity].ca
    leaf_der = await requester.request_ca_certificate_from_mesh(
        TRUST_DOMAIN, "api", CaRequestConfig(ca, timeout=DEADLINE_S)
    )
    verify_certificate(leaf_der, _ca_certificate(states))
    stats = requester.stats()
    assert stats["threshold_ca.invalid_shares"] == 1
    assert stats["threshold_ca.retries"] == 1
    assert slow_kp.identity != honest_kp.identity


def _ca_certificate(states: dict[Identity, SignerState]) -> bytes:
    from korium_threshold_ca.signing import ca_certificate_locally

    return ca_certificate_locally(list(states.values()))


async def test_signers_refuse_a_certificate_for_someone_else(make_node: NodeFactory) -> None:
    """A requester asking for a certificate naming another key gets every signer's refusal
    back, with the rule, instead of a timeout."""
    keypairs, states = committee(3, 2)
    signers = [await make_node(kp, states[kp.identity]) for kp in keypairs]
    requester = await make_node()
    await connect_all([requester, *signers])
    ca = states[keypairs[0].identity].ca
    victim = Keypair.generate().identity
    forged = generate_csr(victim, TRUST_DOMAIN, "api", ca_key=ca.group_public_key)

    with pytest.raises(CaRequestError) as caught:
        await service(requester)._threshold_sign(
            "leaf", forged.tbs_der, forged.tbs_der, CaRequestConfig(ca, timeout=DEADLINE_S)
        )
    assert not isinstance(caught.value, CaTimeoutError)
    assert set(caught.value.excluded) == {kp.identity for kp in keypairs}
    assert "[subject-key]" in str(caught.value)
    refused = sum(node.stats().get("threshold_ca.refused.subject-key", 0) for node in signers)
    assert refused == 3


async def test_a_lone_requester_times_out_naming_every_signer(make_node: NodeFactory) -> None:
    keypairs, states = committee(3, 2)
    requester = await make_node()
    ca = states[keypairs[0].identity].ca
    with pytest.raises(CaTimeoutError) as caught:
        await requester.request_ca_certificate_from_mesh(
            TRUST_DOMAIN, None, CaRequestConfig(ca, timeout=0.5)
        )
    assert set(caught.value.missing) == {kp.identity for kp in keypairs}


async def test_as_ca_signer_needs_the_plugin_and_the_right_node() -> None:
    state = next(iter(committee(3, 2)[1].values()))
    builder = Node.builder("127.0.0.1:0").difficulty(0).plugins([korium_gossipsub.plugin])
    with pytest.raises(CapabilityMissing, match=r"korium\[spiffe\]"):
        await builder.as_ca_signer(state).build()
    other = Node.builder("127.0.0.1:0").difficulty(0).plugins(PLUGINS).as_ca_signer(state)
    with pytest.raises(ConfigError, match="belongs to"):
        await other.build()
    assert CERTIFICATE_ISSUER.extra == "spiffe"


async def test_requesting_without_the_plugin_says_what_to_install() -> None:
    state = next(iter(committee(3, 2)[1].values()))
    async with await Node.builder("127.0.0.1:0").difficulty(0).plugins([]).build() as node:
        request = CaRequestConfig(state.ca)
        with pytest.raises(CapabilityMissing, match=r"korium\[spiffe\]"):
            await node.request_ca_certificate_from_mesh(TRUST_DOMAIN, None, request)
        with pytest.raises(CapabilityMissing, match="request_ca_root_certificate_from_mesh"):
            await node.request_ca_root_certificate_from_mesh(request)
