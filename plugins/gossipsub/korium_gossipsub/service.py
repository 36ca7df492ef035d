"""The GossipSub driver: frames in and out through ``node.rpc``, heartbeats, the app's queues.

Why a thin driver: every decision is made by the pure :class:`~korium_gossipsub.router.Router`
(and its :class:`~korium_gossipsub.score.PeerScore`); this class feeds it events and carries
out what it decides. It reads time only from the running loop and
:func:`korium.clock.wall_time_ms`, so it runs unchanged in ``korium.testing`` simulations.

Flow control, end to end:

* Frames to one peer go out one at a time (a sender task per busy peer); whatever accumulates
  meanwhile is batched into the next frame, control first. Forwarded messages beyond
  ``peer_queue`` are dropped and counted; the router never waits.
* ``publish`` waits for a publish token (100/s) and for room in its peers' queues: the caller
  is slowed down, nothing is dropped.
* Each ``messages()`` consumer has its own bounded queue; a slow consumer loses its oldest
  messages (counted in ``gossipsub.delivery_dropped``) and never blocks the router.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import ipaddress
import logging
import random
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable
from dataclasses import dataclass, field

from korium.capabilities import PubSubMessage, PubSubValidator, Validation, ValidatorResult
from korium.clock import wall_time_ms
from korium.errors import RpcError
from korium.identity import Identity, Keypair
from korium.limits import TokenBucket
from korium.rpc import Rpc
from korium.transport.addresses import format_address, parse_addresses
from korium_gossipsub import messages as wire
from korium_gossipsub.caches import Verdict
from korium_gossipsub.config import GossipConfig
from korium_gossipsub.errors import GossipDecodeError, MessageTooLargeError
from korium_gossipsub.router import Incoming, Router
from korium_gossipsub.score import PeerScore

log = logging.getLogger(__name__)

Validator = PubSubValidator
"""``validator(message) -> korium.Validation``: ACCEPT, REJECT (the sender is penalised) or
IGNORE; ``True``/``False``/``None`` mean accept/reject/ignore. Plain or async."""
_VERDICTS = {
    Validation.ACCEPT: Verdict.ACCEPTED,
    Validation.REJECT: Verdict.REJECTED,
    Validation.IGNORE: Verdict.IGNORED,
    True: Verdict.ACCEPTED,
    False: Verdict.REJECTED,
}
MAX_PX_DIALS = 8
"""Peer-exchange connections attempted at once."""


@dataclass(slots=True)
class _Consumer:
    topic: str | None
    queue: deque[PubSubMessage]
    wake: asyncio.Event = field(default_factory=asyncio.Event)


class GossipService:
    """One node's GossipSub: the :class:`korium.capabilities.PubSub` capability and more."""

    def __init__(
        self,
        keypair: Keypair,
        rpc: Rpc,
        config: GossipConfig,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.identity = keypair.identity
        self.rpc = rpc
        self.config = config
        self.rng = rng or random.Random()
        self.score = PeerScore(config.score, self._exempt)
        self.router = self._make_router(keypair, config)
        self.stats_counter: Counter[str] = Counter()
        self._validators: dict[str, list[Validator]] = {}
        self._consumers: list[_Consumer] = []
        self._backlog: deque[PubSubMessage] = deque()
        self._senders: dict[Identity, asyncio.Task[None]] = {}
        self._drained = asyncio.Event()
        self._flush_handle: asyncio.Handle | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._dials: set[asyncio.Task[None]] = set()
        self._publish_bucket: TokenBucket | None = None
        self._started = False

    def _make_router(self, keypair: Keypair, config: GossipConfig) -> Router:
        """The router this driver runs (simulations override it with a misbehaving one)."""
        return Router(keypair, config, self.score, rng=self.rng, addresses_of=self._addresses_of)

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Serve the protocol and start heartbeats (call inside the running loop)."""
        if self._started:
            return
        self._started = True
        self.rpc.register_message(wire.PROTOCOL, self._on_frame)
        self._heartbeat = asyncio.create_task(self._beat(), name="korium-gossipsub-heartbeat")
        for peer in self.rpc.connected_peers():
            self.peer_connected(peer)

    async def stop(self) -> None:
        """Stop heartbeats and senders; wake consumers so their iterators end."""
        if not self._started:
            return
        self._started = False
        self.rpc.unregister(wire.PROTOCOL)
        tasks = [
            t for t in (self._heartbeat, *self._senders.values(), *self._tasks, *self._dials) if t
        ]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._senders.clear()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        for consumer in self._consumers:
            consumer.wake.set()

    # -- peers ----------------------------------------------------------------------------

    def peer_connected(self, peer: Identity) -> None:
        """A connection to *peer* is up: exchange subscriptions."""
        if not self._started:
            return
        outbound = self.rpc.is_outbound(peer)
        self.router.add_peer(peer, self._ip_of(peer), self._now(), outbound=outbound)
        self._flush_soon()

    def peer_disconnected(self, peer: Identity) -> None:
        """The last connection to *peer* closed."""
        self.router.remove_peer(peer, self._now())

    def _ip_of(self, peer: Identity) -> str | None:
        address = self.rpc.peer_address(peer)
        return None if address is None else address[0]

    def _addresses_of(self, peer: Identity) -> list[str]:
        address = self.rpc.peer_address(peer)
        return [] if address is None else [format_address(address)]

    def _exempt(self, ip: str) -> bool:
        try:
            return ipaddress.ip_address(ip) in self.config.exempt
        except ValueError:
            return False

    # -- PubSub capability ----------------------------------------------------------------

    async def subscribe(self, topic: str) -> None:
        """Join *topic*'s mesh and start delivering its messages."""
        self.router.subscribe(topic, self._now())
        self._flush_soon()

    async def unsubscribe(self, topic: str) -> None:
        """Leave *topic* (mesh peers are pruned with the unsubscribe backoff)."""
        self.router.unsubscribe(topic, self._now())
        self._flush_soon()

    async def publish(self, topic: str, data: bytes) -> int:
        """Sign and send *data* on *topic*; returns how many peers it was sent to.

        Waits (backpressure) while the publish rate (100/s) is spent or a peer's queue is
        full; raises :class:`~korium_gossipsub.errors.InvalidTopicError` or
        :class:`~korium_gossipsub.errors.MessageTooLargeError` for bad input.
        """
        wire.check_topic(topic)
        if len(data) > self.config.max_message_size:  # refused before it costs a token
            raise MessageTooLargeError(
                f"message of {len(data)} bytes exceeds the {self.config.max_message_size}-byte "
                "limit"
            )
        await self._publish_token()
        while True:
            now = self._now()
            targets = self.router.publish_targets(topic, now)
            if all(self.router.queued(p) < self.config.peer_queue for p in targets):
                break
            self.stats_counter["publish_waits"] += 1
            self._drained.clear()
            with contextlib.suppress(TimeoutError):  # look again at least every heartbeat
                await asyncio.wait_for(self._drained.wait(), self.config.heartbeat_s)
        _, count = self.router.publish(topic, data, now, wall_time_ms(), targets)
        self._flush_soon()
        return count

    async def _publish_token(self) -> None:
        loop = asyncio.get_running_loop()
        rate = self.config.publish_rate
        if self._publish_bucket is None:  # a second's worth of burst
            burst = max(1, int(rate))
            self._publish_bucket = TokenBucket.full(burst, burst / rate, loop.time())
        while not self._publish_bucket.take(loop.time()):
            self.stats_counter["publish_rate_waits"] += 1
            await asyncio.sleep(1.0 / rate)

    def messages(self, topic: str | None = None) -> AsyncIterator[PubSubMessage]:
        """Messages of every subscribed topic (or of *topic*), in arrival order.

        Each iterator has its own queue of ``delivery_queue`` messages; a message that no
        iterator wants yet waits in a backlog of the same size for the first that does (so a
        plugin reading one topic does not make the application miss the others).
        """
        consumer = _Consumer(topic, deque())
        kept: deque[PubSubMessage] = deque()
        for message in self._backlog:
            (consumer.queue if topic in (None, message.topic) else kept).append(message)
        self._backlog = kept
        self._consumers.append(consumer)
        return self._iterate(consumer)

    async def _iterate(self, consumer: _Consumer) -> AsyncIterator[PubSubMessage]:
        try:
            while True:
                while consumer.queue:
                    yield consumer.queue.popleft()
                if not self._started:
                    return
                consumer.wake.clear()
                await consumer.wake.wait()
        finally:
            if consumer in self._consumers:
                self._consumers.remove(consumer)

    # -- validators, scores, introspection ------------------------------------------------

    def add_validator(self, topic: str, validator: Validator) -> None:
        """Run *validator* on every new message of *topic* before it is delivered or
        forwarded. Rejected messages penalise their sender (P4); ignored ones are dropped."""
        wire.check_topic(topic)
        self._validators.setdefault(topic, []).append(validator)

    def remove_validator(self, topic: str, validator: Validator) -> None:
        validators = self._validators.get(topic, [])
        if validator in validators:
            validators.remove(validator)

    def set_application_score(self, peer: Identity, value: float) -> None:
        """The application's opinion of *peer* (P5, weighted by ``app_specific_weight``)."""
        self.score.set_application_score(peer, value)

    def peer_score(self, peer: Identity) -> float:
        """This node's current score of *peer* (0 for peers it knows nothing about)."""
        return self.score.score(peer)

    def score_breakdown(self, peer: Identity) -> dict[str, float]:
        """Each scoring component of *peer* (p1..p7) and the total."""
        return self.score.breakdown(peer, self._now())

    def mesh_peers(self, topic: str) -> list[Identity]:
        """The peers *topic*'s messages are eagerly exchanged with."""
        return sorted(self.router.mesh.get(topic, ()))

    def topic_peers(self, topic: str) -> list[Identity]:
        """Peers known to subscribe to *topic*."""
        return sorted(self.router.topics.get(topic, ()))

    def subscriptions(self) -> list[str]:
        return sorted(self.router.subscriptions)

    def stats(self) -> dict[str, int | float]:
        """Counters and sizes, for ``node.stats()`` (prefixed ``gossipsub.``)."""
        router = self.router
        stats: dict[str, int | float] = {
            f"gossipsub.{k}": v for k, v in (router.stats + self.stats_counter).items()
        }
        stats.update(
            {
                "gossipsub.peers": len(router.peers),
                "gossipsub.topics": len(router.topics),
                "gossipsub.subscriptions": len(router.subscriptions),
                "gossipsub.mesh_peers": sum(len(m) for m in router.mesh.values()),
                "gossipsub.fanout_topics": len(router.fanout),
                "gossipsub.seen": len(router.seen),
                "gossipsub.seen_evicted": router.seen.evicted,
                "gossipsub.message_cache": len(router.mcache),
                "gossipsub.message_cache_bytes": router.mcache.bytes,
                "gossipsub.message_cache_evicted": router.mcache.evicted,
                "gossipsub.scored_peers": len(self.score),
                "gossipsub.promises": len(router.promises),
                "gossipsub.backlog": len(self._backlog),
            }
        )
        return stats

    # -- receiving ------------------------------------------------------------------------

    def _on_frame(self, peer: Identity, body: bytes) -> None:
        if not self._started:
            return
        now = self._now()
        try:
            frame = wire.decode(body)
        except GossipDecodeError:
            self.router.malformed(peer)
            return
        for incoming in self.router.receive(peer, frame, now, wall_time_ms()):
            self._validate(incoming, now)
        self._after_receive()

    def _validate(self, incoming: Incoming, now: float) -> None:
        message = incoming.message
        validators = self._validators.get(message.topic)
        if not validators:
            self._finish(incoming, Verdict.ACCEPTED, now)
            return
        public = PubSubMessage(message.topic, incoming.source, message.data)
        results: list[ValidatorResult | Awaitable[ValidatorResult]] = []
        for validator in validators:
            try:
                results.append(validator(public))
            except Exception:
                log.exception("validator for %r raised; message ignored", message.topic)
                results.append(Validation.IGNORE)
        if any(inspect.isawaitable(r) for r in results):
            self._spawn(self._validate_async(incoming, results))
            return
        verdicts = [_verdict(r) for r in results]
        self._finish(incoming, _combine(verdicts), now)

    async def _validate_async(
        self, incoming: Incoming, results: list[ValidatorResult | Awaitable[ValidatorResult]]
    ) -> None:
        verdicts: list[Verdict] = []
        for result in results:
            try:
                value = await result if inspect.isawaitable(result) else result
            except Exception:
                log.exception("validator for %r raised; message ignored", incoming.message.topic)
                value = Validation.IGNORE
            verdicts.append(_verdict(value))
        self._finish(incoming, _combine(verdicts), self._now())
        self._after_receive()

    def _finish(self, incoming: Incoming, verdict: Verdict, now: float) -> None:
        self.router.finish(incoming, verdict, now)

    def _after_receive(self) -> None:
        delivered = self.router.delivered
        while delivered:
            message, source = delivered.popleft()
            self._deliver(PubSubMessage(message.topic, source, message.data))
        self._flush_soon()

    def _deliver(self, message: PubSubMessage) -> None:
        limit = self.config.delivery_queue
        consumers = [c for c in self._consumers if c.topic in (None, message.topic)]
        if not consumers:
            if len(self._backlog) >= limit:
                self._backlog.popleft()
                self.stats_counter["delivery_dropped"] += 1
            self._backlog.append(message)
            return
        for consumer in consumers:
            if len(consumer.queue) >= limit:
                consumer.queue.popleft()
                self.stats_counter["delivery_dropped"] += 1
            consumer.queue.append(message)
            consumer.wake.set()

    # -- sending --------------------------------------------------------------------------

    def _flush_soon(self) -> None:
        if self._flush_handle is None and self._started:
            self._flush_handle = asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        for peer in list(self.router.dirty):
            if peer not in self._senders:
                self._senders[peer] = asyncio.create_task(self._send(peer))

    async def _send(self, peer: Identity) -> None:
        router = self.router
        try:
            while True:
                if peer not in router.dirty:
                    return
                delay = router.pace(peer, self._now())
                if delay:  # batching what accumulates meanwhile into the next frame
                    self.stats_counter["send_paced"] += 1
                    await asyncio.sleep(delay)
                    continue
                frame = router.take(peer, self._now())
                if frame is None:
                    return
                self._drained.set()
                try:
                    await self.rpc.send_message(peer, wire.PROTOCOL, wire.encode(frame))
                except RpcError as exc:
                    self.stats_counter["send_failures"] += 1
                    log.debug("gossipsub: cannot send to %s: %s", peer.short, exc)
                    router.remove_peer(peer, self._now())
                    return
        finally:
            self._senders.pop(peer, None)

    # -- heartbeat ------------------------------------------------------------------------

    async def _beat(self) -> None:
        interval = self.config.heartbeat_s
        await asyncio.sleep(self.rng.uniform(0, interval))
        while True:
            self.router.heartbeat(self._now())
            self._exchange_peers()
            self._flush_soon()
            await asyncio.sleep(interval)

    def _exchange_peers(self) -> None:
        offered, self.router.px_candidates = self.router.px_candidates, []
        connected = set(self.rpc.connected_peers())
        for px in offered:
            if len(self._dials) >= MAX_PX_DIALS:
                self.stats_counter["px_skipped"] += 1
                continue
            try:
                peer = Identity(px.identity)
            except Exception:
                self.stats_counter["px_invalid"] += 1
                continue
            if peer in connected or peer in self.router.peers or peer == self.identity:
                continue
            dial = asyncio.ensure_future(self._dial(peer, px.addresses))
            self._dials.add(dial)
            dial.add_done_callback(self._dials.discard)

    async def _dial(self, peer: Identity, addresses: list[str]) -> None:
        hello = wire.Frame(
            subscriptions=[wire.SubOpt(True, t) for t in sorted(self.router.subscriptions)]
        )
        try:
            await self.rpc.send_message(
                peer,
                wire.PROTOCOL,
                wire.encode(hello),
                addresses=parse_addresses(addresses) or None,
            )
        except RpcError:
            self.stats_counter["px_dial_failures"] += 1
            return
        self.stats_counter["px_connected"] += 1
        self.peer_connected(peer)

    def _spawn(self, coro: Awaitable[None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()


def _verdict(result: object) -> Verdict:
    """A validator's answer as a verdict; anything unexpected counts as IGNORE."""
    if isinstance(result, Verdict) and result is not Verdict.PENDING:
        return result
    try:
        return _VERDICTS.get(result, Verdict.IGNORED)
    except TypeError:  # unhashable
        return Verdict.IGNORED


def _combine(verdicts: list[Verdict]) -> Verdict:
    """Reject beats ignore beats accept: every validator must accept."""
    if Verdict.REJECTED in verdicts:
        return Verdict.REJECTED
    if Verdict.IGNORED in verdicts:
        return Verdict.IGNORED
    return Verdict.ACCEPTED
