"""The threshold CA over the mesh: signers answer CSRs, requesters collect k shares, DKG runs.

Signing (RFC 9591 two rounds, spread over gossip and RPC):

1. the requester publishes a :class:`wire.Csr` on ``csr``, with its signed contact record;
2. each signer that accepts the certificate (:mod:`korium_threshold_ca.signing`) sends a
   commitment to the requester by RPC; a refusal is sent back instead, with its reason;
3. the requester picks the first k commitments and asks those signers for their shares, by RPC;
4. it checks every share: a signer that does not answer or answers wrongly is left out and the
   requester starts over with a fresh session among the others, until the timeout. Up to n-k
   silent or misbehaving signers are thus tolerated.

The key ceremony (``run_dkg``) broadcasts round-1 commitments on ``ca/dkg/round1``
(republished until every peer has shown, by its round-2 share, that it has them all) and sends
each round-2 share to its recipient alone, by RPC over mutual TLS.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any, Literal

from korium import PUBSUB, Identity, Node
from korium.capabilities import PubSub, PubSubMessage
from korium.errors import ConfigError, KoriumError, RpcError, RpcTimeoutError
from korium.identity import Contact
from korium.transport.addresses import parse_addresses
from korium_threshold_ca import certificates, frost, wire
from korium_threshold_ca.certificates import CsrRejected
from korium_threshold_ca.config import CaRequestConfig, ThresholdCaConfig, ThresholdCaSettings
from korium_threshold_ca.dkg import DkgCoordinator, DkgError
from korium_threshold_ca.signing import Signer, SigningSession
from korium_threshold_ca.state import CaPublicKey, SignerState

log = logging.getLogger(__name__)

RETRY_DELAY = 0.2
REPUBLISH_INTERVAL = 1.0


class CaRequestError(KoriumError):
    """No certificate: the signers refused it, or too few of them are left."""

    def __init__(self, message: str, excluded: dict[Identity, str] | None = None) -> None:
        super().__init__(message)
        self.excluded = dict(excluded or {})
        """Signers left out, and why."""


class CaTimeoutError(CaRequestError, RpcTimeoutError):
    """Too few signers answered within the timeout; *missing* names the silent ones."""

    def __init__(
        self, message: str, missing: tuple[Identity, ...], excluded: dict[Identity, str]
    ) -> None:
        super().__init__(message, excluded)
        self.missing = missing


class _Attempt:
    """A requester's open session: commitments arrive here from the RPC handler."""

    def __init__(self, session: SigningSession) -> None:
        self.session = session
        self.changed = asyncio.Event()
        self.refusals: dict[Identity, str] = {}
        self.answered: set[Identity] = set()

    def settled(self) -> bool:
        """k commitments are in, or every signer asked has answered."""
        return self.session.ready or len(self.answered) >= len(self.session.asked)


class _DkgRun:
    """A ceremony in progress at this node: the messages received so far."""

    def __init__(self, coordinator: DkgCoordinator) -> None:
        self.coordinator = coordinator
        self.round1: dict[Identity, wire.DkgRound1] = {}
        self.round2: dict[Identity, wire.DkgRound2] = {}
        self.changed = asyncio.Event()
        self.failure: DkgError | None = None

    def fail(self, error: DkgError) -> None:
        self.failure = self.failure or error
        self.changed.set()


class ThresholdCaService:
    """One node's threshold CA: a signer if given a SignerState, always able to request."""

    def __init__(self, node: Node, settings: ThresholdCaSettings) -> None:
        self.node = node
        self.settings = settings
        self.signer: Signer | None = None
        if settings.signer_state is not None:
            self._check_owner(settings.signer_state)
        self.stats_counter: Counter[str] = Counter()
        self.signers_seen: dict[Identity, float] = {}
        """Signers of our CA heard on ``ca/signers``, with the time last heard (signers only)."""
        self._attempts: dict[bytes, _Attempt] = {}
        self._dkg: dict[bytes, _DkgRun] = {}
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def pubsub(self) -> PubSub:
        return self.node.services.require(PUBSUB, needed_by="threshold_ca")

    # -- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Serve the CA protocol; a signer subscribes to CSRs and starts announcing itself."""
        self.node.rpc.register(wire.PROTOCOL, self._on_request)
        if self.settings.signer_state is not None:
            await self.serve_as_signer(self.settings.signer_state)

    async def serve_as_signer(self, state: SignerState) -> None:
        """Start signing for the CA of *state* (a node signs for one CA at a time)."""
        self._check_owner(state)
        if self.signer is not None:
            raise ConfigError("this node already signs for a CA")
        self.signer = Signer(state, self.settings)
        csrs = self.pubsub.messages(wire.TOPIC_CSR)
        announcements = self.pubsub.messages(wire.TOPIC_SIGNERS)
        await self.pubsub.subscribe(wire.TOPIC_CSR)
        await self.pubsub.subscribe(wire.TOPIC_SIGNERS)
        self._spawn(self._serve_csrs(csrs))
        self._spawn(self._hear_signers(announcements))
        self._spawn(self._announce())

    def _check_owner(self, state: SignerState) -> None:
        if state.identity != self.node.identity:
            raise ConfigError(
                f"this signer state belongs to {state.identity.short}..., "
                f"not to this node ({self.node.identity.short}...)"
            )

    async def stop(self) -> None:
        """Stop serving; open requests and ceremonies fail."""
        self.node.rpc.unregister(wire.PROTOCOL)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def stats(self) -> dict[str, int | float]:
        """Counters for ``node.stats()``, prefixed ``threshold_ca.``."""
        counters: Counter[str] = Counter(self.stats_counter)
        if self.signer is not None:
            counters.update(self.signer.stats)
            counters["pending"] = self.signer.pending
        return {f"threshold_ca.{key}": value for key, value in counters.items()}

    # -- RPC ----------------------------------------------------------------------------------

    def _on_request(self, peer: Identity, body: bytes) -> bytes:
        try:
            message = wire.decode(body)
        except wire.WireError as exc:
            self.stats_counter["malformed"] += 1
            return wire.encode(wire.Refused("malformed", str(exc)[:500]))
        if isinstance(message, wire.Commitment | wire.Refused) and message.session in (
            self._attempts
        ):
            return self._on_commitment(peer, message)
        if isinstance(message, wire.SignRequest) and self.signer is not None:
            try:
                reply: wire.Message = self.signer.sign(message, peer, time.time())
            except CsrRejected as exc:
                reply = wire.Refused(exc.rule, exc.reason[:500], message.session)
            return wire.encode(reply)
        if isinstance(message, wire.DkgRound2):
            return wire.encode(self._on_dkg_share(peer, message))
        self.stats_counter["unexpected"] += 1
        return wire.encode(wire.Refused("unexpected", f"no use for {type(message).__name__} now"))

    # -- signer -------------------------------------------------------------------------------

    async def _serve_csrs(self, csrs: AsyncIterator[PubSubMessage]) -> None:
        async for message in csrs:
            if len(self._tasks) >= self.settings.max_pending:
                self.stats_counter["csrs_dropped_busy"] += 1  # a flood: answers are pending
                continue
            self._spawn(self._answer_csr(message))

    async def _answer_csr(self, message: PubSubMessage) -> None:
        assert self.signer is not None
        requester = message.source
        try:
            csr = wire.expect(message.data, wire.Csr)
            contact = Contact.decode(csr.contact)
        except (wire.WireError, KoriumError):
            self.stats_counter["malformed_csr"] += 1
            return
        if csr.ca_key != self.signer.state.ca.group_public_key:
            return  # a request for another CA
        if contact.identity != requester:
            self.stats_counter["malformed_csr"] += 1
            return
        reply: wire.Message
        try:
            reply = self.signer.commit(csr, requester, time.time())
        except CsrRejected as exc:
            log.info("refused a CSR from %s: %s", requester.short, exc)
            reply = wire.Refused(exc.rule, exc.reason[:500], csr.session)
        addresses = parse_addresses(contact.addresses)
        try:
            await self.node.rpc.request(
                requester, wire.PROTOCOL, wire.encode(reply), addresses=addresses
            )
        except RpcError as exc:
            self.stats_counter["requester_unreachable"] += 1
            log.info("cannot reach requester %s: %s", requester.short, exc)

    async def _announce(self) -> None:
        assert self.signer is not None
        state = self.signer.state
        while True:
            announcement = wire.SignerAnnouncement(
                state.ca.group_public_key, state.identifier, int(time.time())
            )
            with contextlib.suppress(KoriumError):
                await self.pubsub.publish(wire.TOPIC_SIGNERS, wire.encode(announcement))
            await asyncio.sleep(self.settings.announce_interval)

    async def _hear_signers(self, announcements: AsyncIterator[PubSubMessage]) -> None:
        assert self.signer is not None
        ca = self.signer.state.ca
        async for message in announcements:
            with contextlib.suppress(wire.WireError, KoriumError):
                heard = wire.expect(message.data, wire.SignerAnnouncement)
                if heard.ca_key == ca.group_public_key and (
                    ca.identity_of(heard.identifier) == message.source
                ):
                    self.signers_seen[message.source] = time.time()

    # -- requester ----------------------------------------------------------------------------

    async def request_certificate(self, workload_path: str | None = None) -> bytes:
        """A workload certificate from the CA in the settings (``ca_public_key``, or the CA
        this node signs for), with default request settings."""
        ca = self.settings.ca_public_key
        if ca is None and self.signer is not None:
            ca = self.signer.state.ca
        if ca is None:
            raise ConfigError(
                "no CA configured: set plugin_settings('threshold_ca', ca_public_key=...) "
                "or call request_ca_certificate_from_mesh with a CaRequestConfig"
            )
        config = CaRequestConfig(ca)
        return await self.request_ca_certificate_from_mesh(ca.trust_domain, workload_path, config)

    async def request_ca_certificate_from_mesh(
        self, trust_domain: str, workload_path: str | None, config: CaRequestConfig
    ) -> bytes:
        """A workload certificate (DER) for this node, signed by k of the CA's signers."""
        ca = config.ca_public_key
        if trust_domain != ca.trust_domain:
            raise ConfigError(
                f"the CA serves trust domain {ca.trust_domain!r}, not {trust_domain!r}"
            )
        csr = certificates.generate_csr(
            self.node.identity,
            trust_domain,
            workload_path,
            ca_key=ca.group_public_key,
            validity=config.validity or ca.config.cert_validity,
        )
        signature = await self._threshold_sign("leaf", csr.tbs_der, csr.tbs_der, config)
        return certificates.assemble_certificate(csr.tbs_der, signature)

    async def request_ca_root_certificate(self, config: CaRequestConfig) -> bytes:
        """The CA's own certificate (DER), self-signed by k of its signers."""
        tbs = config.ca_public_key.ca_certificate_tbs()
        signature = await self._threshold_sign("ca", b"", tbs, config)
        return certificates.assemble_certificate(tbs, signature)

    async def _threshold_sign(
        self, kind: Literal["leaf", "ca"], tbs: bytes, message: bytes, config: CaRequestConfig
    ) -> bytes:
        ca = config.ca_public_key
        loop = asyncio.get_running_loop()
        deadline = loop.time() + config.timeout
        excluded: dict[Identity, str] = {}
        answered: set[Identity] = set()
        refusals: dict[Identity, str] = {}
        contact = self.node.peer_endpoint().encode()
        while True:
            live = [s for s in config.signers if s not in excluded and s not in refusals]
            if len(live) < ca.config.k:
                raise _too_few(ca, live, excluded, refusals)
            session_id = os.urandom(16)
            attempt = _Attempt(SigningSession(ca, message, live))
            self._attempts[session_id] = attempt
            try:
                csr = wire.Csr(session_id, ca.group_public_key, kind, tbs, contact)
                await self._publish_until_heard(wire.encode(csr), deadline)
                await self._wait(attempt, attempt.settled, deadline)
                ready = attempt.session.ready
                answered |= attempt.answered
                refusals.update(attempt.refusals)
                if not ready:
                    willing = [s for s in live if s not in attempt.refusals]
                    if len(willing) < ca.config.k:
                        raise _too_few(ca, willing, excluded, refusals)
                    raise _timeout(ca, config, answered, excluded)
                chosen, request = attempt.session.choose(session_id)
                results = await asyncio.gather(
                    *(self._ask_share(attempt, s, request, config, deadline) for s in chosen)
                )
                excluded.update((s, why) for s, why in zip(chosen, results, strict=True) if why)
                if not any(results):
                    try:
                        signature = attempt.session.signature()
                    except frost.InvalidShareError as exc:
                        bad = [ca.identity_of(i) for i in exc.culprits]
                    else:
                        self.stats_counter["certificates"] += 1
                        return signature
                else:
                    bad = attempt.session.bad_shares()
                self.stats_counter["invalid_shares"] += len(bad)
                excluded.update((s, "its signature share does not verify") for s in bad)
                self.stats_counter["retries"] += 1
            finally:
                del self._attempts[session_id]

    async def _publish_until_heard(self, data: bytes, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        while await self.pubsub.publish(wire.TOPIC_CSR, data) == 0:
            if loop.time() + RETRY_DELAY > deadline:
                return  # nobody to send it to: the wait for commitments times out
            await asyncio.sleep(RETRY_DELAY)

    async def _ask_share(
        self,
        attempt: _Attempt,
        signer: Identity,
        request: wire.SignRequest,
        config: CaRequestConfig,
        deadline: float,
    ) -> str | None:
        """None once *signer*'s share is in (checked at aggregation), else why the signer is
        left out."""
        remaining = deadline - asyncio.get_running_loop().time()
        timeout = max(0.001, min(config.round_timeout, remaining))
        try:
            body = await self.node.rpc.request(
                signer, wire.PROTOCOL, wire.encode(request), timeout=timeout
            )
            share = wire.expect(body, wire.SignatureShare)
        except wire.RefusedError as exc:
            return f"refused to sign: {exc} [{exc.rule}]"
        except (RpcError, wire.WireError) as exc:
            return f"no signature share: {exc}"
        if share.session != request.session:
            return "it answered for another session"
        try:
            attempt.session.add_share(signer, share)
        except frost.FrostError as exc:
            return str(exc)
        return None

    def _on_commitment(self, peer: Identity, message: wire.Commitment | wire.Refused) -> bytes:
        attempt = self._attempts[message.session]
        if peer not in attempt.session.asked:
            return wire.encode(wire.Refused("not-a-signer", "you are not asked in this session"))
        attempt.answered.add(peer)
        if isinstance(message, wire.Refused):
            attempt.refusals[peer] = f"refused: {message.reason} [{message.rule}]"
        else:
            try:
                attempt.session.add_commitment(peer, message)
            except frost.FrostError as exc:
                attempt.refusals[peer] = f"sent an invalid commitment: {exc}"
        attempt.changed.set()
        return wire.encode(wire.Ack())

    @staticmethod
    async def _wait(holder: _Attempt | _DkgRun, done: Callable[[], bool], deadline: float) -> bool:
        """Until *done()* (True) or the deadline (False); a ceremony's failure is raised."""
        loop = asyncio.get_running_loop()
        while True:
            holder.changed.clear()  # before the checks: a change after them wakes the wait
            if isinstance(holder, _DkgRun) and holder.failure is not None:
                raise holder.failure
            if done():
                return True
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(holder.changed.wait(), remaining)

    # -- key ceremony -------------------------------------------------------------------------

    async def run_dkg(
        self,
        config: ThresholdCaConfig,
        signers: list[Identity],
        *,
        ceremony: bytes = b"",
        timeout: float = 60.0,
    ) -> SignerState:
        """Run the key ceremony with the other *signers* (each runs this at about the same
        time) and return this node's SignerState. Raises DkgError naming a cheating
        participant, or CaTimeoutError naming the silent ones."""
        coordinator = DkgCoordinator(config, signers, self.node.identity, ceremony)
        run = _DkgRun(coordinator)
        self._dkg[coordinator.session] = run
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        incoming = self.pubsub.messages(wire.TOPIC_DKG_ROUND1)
        await self.pubsub.subscribe(wire.TOPIC_DKG_ROUND1)
        listener = asyncio.ensure_future(self._hear_round1(run, incoming))
        secret1, round1 = coordinator.round1()
        publisher = asyncio.ensure_future(self._republish(round1, deadline))
        senders: list[asyncio.Future[None]] = []
        try:
            others = coordinator.others()
            if not await self._wait(run, lambda: all(p in run.round1 for p in others), deadline):
                raise _dkg_timeout("round 1", [p for p in others if p not in run.round1])
            secret2, shares = coordinator.round2(secret1, run.round1)
            senders = [
                asyncio.ensure_future(self._send_share(peer, share, deadline))
                for peer, share in shares.items()
            ]
            if not await self._wait(run, lambda: all(p in run.round2 for p in others), deadline):
                raise _dkg_timeout("round 2", [p for p in others if p not in run.round2])
            state = coordinator.round3(secret2, run.round2)
            await asyncio.gather(*senders)  # every peer has our share: it can finish too
            return state
        finally:
            for task in (listener, publisher, *senders):
                task.cancel()
            del self._dkg[coordinator.session]
            with contextlib.suppress(KoriumError):
                await self.pubsub.unsubscribe(wire.TOPIC_DKG_ROUND1)

    async def _hear_round1(self, run: _DkgRun, incoming: AsyncIterator[PubSubMessage]) -> None:
        coordinator = run.coordinator
        async for message in incoming:
            try:
                round1 = wire.expect(message.data, wire.DkgRound1)
            except wire.WireError:
                self.stats_counter["malformed_dkg"] += 1
                continue
            sender = message.source
            if round1.session != coordinator.session or sender not in coordinator.signers:
                continue
            known = run.round1.get(sender)
            if known is None:
                run.round1[sender] = round1
            elif _without_attempt(known) != _without_attempt(round1):
                run.fail(
                    DkgError(f"{sender.short}... broadcast two different round-1 messages", sender)
                )
            run.changed.set()

    async def _republish(self, round1: wire.DkgRound1, deadline: float) -> None:
        """Broadcast round 1 until every peer has sent us its round-2 share (so it had ours)."""
        attempt = 0
        while asyncio.get_running_loop().time() < deadline:
            message = wire.DkgRound1(
                round1.session,
                round1.commitment,
                round1.proof_r,
                round1.proof_z,
                round1.timestamp,
                attempt,
            )
            with contextlib.suppress(KoriumError):
                await self.pubsub.publish(wire.TOPIC_DKG_ROUND1, wire.encode(message))
            attempt += 1
            await asyncio.sleep(REPUBLISH_INTERVAL)

    async def _send_share(self, peer: Identity, share: wire.DkgRound2, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise _dkg_timeout("round 2 delivery", [peer])
            try:
                body = await self.node.rpc.request(
                    peer, wire.PROTOCOL, wire.encode(share), timeout=min(remaining, 5.0)
                )
                wire.expect(body, wire.Ack)
                return
            except (RpcError, wire.WireError):
                await asyncio.sleep(RETRY_DELAY)

    def _on_dkg_share(self, peer: Identity, share: wire.DkgRound2) -> wire.Message:
        run = self._dkg.get(share.session)
        if run is None:
            return wire.Refused("not-ready", "no ceremony with this session is running here")
        if peer not in run.coordinator.signers:
            return wire.Refused("not-a-signer", "you are not a participant of this ceremony")
        known = run.round2.get(peer)
        if known is None:
            run.round2[peer] = share
            run.changed.set()
        elif known != share:
            run.fail(DkgError(f"{peer.short}... sent two different round-2 shares", peer))
        return wire.Ack()


def _without_attempt(message: wire.DkgRound1) -> tuple[Any, ...]:
    return (
        message.session,
        message.commitment,
        message.proof_r,
        message.proof_z,
        message.timestamp,
    )


def _names(ca: CaPublicKey, signers: list[Identity] | tuple[Identity, ...]) -> str:
    return ", ".join(f"{ca.identifier_of(s)} ({s.short}...)" for s in signers)


def _timeout(
    ca: CaPublicKey, config: CaRequestConfig, answered: set[Identity], excluded: dict[Identity, str]
) -> CaTimeoutError:
    missing = tuple(s for s in config.signers if s not in answered)
    good = len(answered) - len(excluded)
    text = (
        f"no certificate within {config.timeout} s: {good} of the {ca.config.k} signers needed "
        f"answered; no answer from signers {_names(ca, missing)}"
    )
    if excluded:
        text += "; left out: " + "; ".join(
            f"{_names(ca, [s])}: {why}" for s, why in excluded.items()
        )
    return CaTimeoutError(text, missing, excluded)


def _too_few(
    ca: CaPublicKey,
    live: list[Identity],
    excluded: dict[Identity, str],
    refusals: dict[Identity, str],
) -> CaRequestError:
    reasons = {**refusals, **excluded}
    text = f"no certificate: {len(live)} signers left, {ca.config.k} needed; " + "; ".join(
        f"signer {_names(ca, [s])}: {why}" for s, why in reasons.items()
    )
    return CaRequestError(text, reasons)


def _dkg_timeout(stage: str, missing: list[Identity]) -> CaTimeoutError:
    names = ", ".join(f"{p.short}..." for p in missing)
    return CaTimeoutError(
        f"key ceremony timed out in {stage}: nothing from {names}", tuple(missing), {}
    )
