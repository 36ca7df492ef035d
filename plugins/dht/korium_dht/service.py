"""The DHT driver: serves ``korium/dht/1``, runs lookups, stores and republishes.

Why a thin driver: the decisions live in pure state objects (:mod:`~korium_dht.routing`,
:mod:`~korium_dht.lookup`, :mod:`~korium_dht.storage`, :mod:`~korium_dht.tiering`,
:mod:`~korium_dht.adaptive`); this class feeds them events and carries out what they decide
through :class:`korium.rpc.Rpc`. It reads time only from the running loop (monotonic) and
:func:`korium.clock.wall_time_ms` (record timestamps), so it runs unchanged on virtual time.

Who enters the routing table: only peers this node has heard from directly, a requester (its
own signed record, checked against the authenticated peer) or a peer that answered one of our
requests, never hearsay from third parties. Every record is checked (signature, proof of work,
freshness) before use, insertions are rate-limited per peer and per IP, and buckets keep IP
diversity.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

from korium.clock import wall_time_ms
from korium.errors import ContactError, RemoteError, RpcError
from korium.identity import Contact, Identity, NodeIdentity
from korium.limits import KeyedRateLimiter
from korium.rpc import Rpc
from korium.transport.addresses import parse_addresses
from korium_dht import messages
from korium_dht.adaptive import AdaptiveParams, Outcome
from korium_dht.config import DhtConfig
from korium_dht.errors import DhtDecodeError, DhtError, LookupFailedError, StoreRefusedError
from korium_dht.lookup import Candidate, Lookup, LookupMetrics
from korium_dht.netaddr import primary_ip
from korium_dht.routing import RoutingTable, Verdict, bucket_index, random_id_in_bucket
from korium_dht.storage import Kind, Store, value_key
from korium_dht.tiering import LatencyTiers

log = logging.getLogger(__name__)

MAX_BACKGROUND = 64
"""Background requests (liveness pings, replication) in flight at once; more are skipped."""
REFRESH_SPREAD = 4
"""Lookups per bucket when joining, each k/4 wide (see :meth:`DhtService.refresh`)."""
TICK_S = 60.0
"""How often housekeeping runs: expiry, bucket refresh, republishing."""


@dataclass(slots=True)
class LookupResult:
    """What a lookup found, and what it cost."""

    contacts: list[Contact]
    """Peers that answered, closest to the target first."""
    value: bytes | None
    """For value lookups: the (checked) value, if one was found."""
    metrics: LookupMetrics
    elapsed: float


class DhtService:
    """One node's DHT: the :class:`korium.capabilities.Discovery` capability and more."""

    def __init__(
        self,
        node_identity: NodeIdentity,
        rpc: Rpc,
        config: DhtConfig,
        *,
        difficulty: int,
        max_record_age_s: float,
        addresses: Callable[[], Sequence[str]] = tuple,
        rng: random.Random | None = None,
    ) -> None:
        self.node_identity = node_identity
        self.identity = node_identity.identity
        self.rpc = rpc
        self.config = config
        self.difficulty = difficulty
        self.max_record_age_s = max_record_age_s
        self.table = RoutingTable(self.identity, config)
        self.store = Store(
            config, self.identity, difficulty=difficulty, max_record_age_s=max_record_age_s
        )
        self.tiers = LatencyTiers(config)
        self.adaptive = AdaptiveParams(config)
        self.counters: Counter[str] = Counter()
        self._default_addresses = addresses
        self._published: tuple[str, ...] | None = None
        self._found: tuple[float, tuple[str, ...]] | None = None
        self._contact: Contact | None = None
        self._per_peer: KeyedRateLimiter[Identity] = KeyedRateLimiter(
            config.insertions_per_peer, config.insertion_window_s, config.rate_limiter_entries
        )
        self._per_ip: KeyedRateLimiter[str] = KeyedRateLimiter(
            config.insertions_per_ip, config.insertion_window_s, config.rate_limiter_entries
        )
        self.rng = rng or random.Random()
        """Picks refresh targets; simulations seed it so a run is reproducible."""
        self._background: set[asyncio.Task[Any]] = set()
        self._resolving: set[Identity] = set()
        self._ticker: asyncio.Task[None] | None = None
        self._last_publish = 0.0

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        """Serve the DHT protocol and start housekeeping."""
        self.rpc.register(messages.PROTOCOL, self._handle)
        if self._ticker is None:
            self._ticker = asyncio.get_running_loop().create_task(
                self._housekeeping(), name=f"dht-{self.identity.short}"
            )

    async def stop(self) -> None:
        """Stop serving and cancel background work."""
        self.rpc.unregister(messages.PROTOCOL)
        tasks = [*self._background, *([self._ticker] if self._ticker else [])]
        self._ticker = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- this node's record -----------------------------------------------------------------------

    @property
    def addresses(self) -> tuple[str, ...]:
        """The addresses this node advertises."""
        if self._published is not None:
            return self._published
        if self.config.addresses is not None:
            return self.config.addresses
        now = self._now()
        if self._found is None or now - self._found[0] >= TICK_S:
            # the node's own addresses can cost a resolver call: look them up once a minute
            self._found = (now, tuple(self._default_addresses()))
        return self._found[1]

    def own_contact(self) -> Contact:
        """This node's signed record, re-signed when half its republish period old."""
        now_ms = wall_time_ms()
        contact = self._contact
        if (
            contact is None
            or contact.addresses != self.addresses
            or now_ms - contact.timestamp_ms > self.config.republish_s * 500
        ):
            contact = self.node_identity.contact(self.addresses, timestamp_ms=now_ms)
            self._contact = contact
        return contact

    def _sender(self) -> Contact | None:
        return self.own_contact() if self.config.server else None

    # -- Discovery ------------------------------------------------------------------------------

    async def find_peers(self, target: Identity) -> list[Contact]:
        """The k peers closest to *target* that answered."""
        return (await self.lookup(bytes(target))).contacts

    async def resolve(self, identity: Identity) -> Contact | None:
        """The newest valid record of *identity*: stored in the DHT, or from the peer itself."""
        key = bytes(identity)
        result = await self.lookup(key, find_value=True, exact=True)
        found = [c for c in (self._local_record(identity),) if c is not None]
        if result.value is not None:
            found.append(Contact.decode(result.value))  # checked by the lookup
        if result.contacts and result.contacts[0].identity == identity:
            found.append(result.contacts[0])  # the peer answered us itself: its record is live
        return max(found, key=lambda c: c.timestamp_ms) if found else None

    async def publish_address(self, addresses: Sequence[str]) -> None:
        """Sign a record with *addresses*, store it on the closest peers; republished hourly."""
        addresses = tuple(addresses)
        # sign first: an invalid list raises ContactStructureError and changes nothing
        contact = self.node_identity.contact(addresses, timestamp_ms=wall_time_ms())
        self._published, self._contact = addresses, contact
        await self._publish()

    async def put(self, value: bytes) -> bytes:
        """Store *value* under blake3(value) here and on the closest peers; returns the key.

        :raises ValueTooLargeError: *value* is over MAX_VALUE_SIZE.
        :raises LookupFailedError: peers were found but none accepted the value.
        """
        key = value_key(value)
        await self._replicate(key, value)
        return key

    async def get(self, key: bytes) -> bytes | None:
        """The value whose blake3 hash is *key*, from here or the network (checked), or None."""
        if len(key) != messages.KEY_LEN:
            raise DhtError(f"a DHT key is {messages.KEY_LEN} bytes, got {len(key)}")
        local = self.store.get(key, self._now())
        if local is not None and value_key(local) == key:
            return local
        result = await self.lookup(key, find_value=True)
        value = result.value
        return value if value is not None and value_key(value) == key else None

    async def bootstrap(self, peer: Identity) -> None:
        """Join through *peer*: learn its record, look up our own id, refresh far buckets."""
        await self._query_identity(peer, messages.Ping(self._sender()))
        await self.lookup(bytes(self.identity))
        await self.refresh(only_empty=True)

    async def refresh(self, *, only_empty: bool = False) -> int:
        """Look up a random id in each stale bucket (or each empty bucket farther than our
        nearest neighbour); returns how many lookups ran."""
        local = bytes(self.identity)
        if only_empty:
            closest = self.table.closest(local, 1)
            if not closest:
                return 0
            occupied = {bucket_index(local, bytes(c.identity)) for c in self.table.contacts()}
            nearest = bucket_index(local, bytes(closest[0].identity))
            empty = [i for i in range(nearest) if i not in occupied]
            indexes = empty[: self.config.join_refresh]
        else:
            indexes = self.table.stale_buckets(self._now())
        # A bucket is filled by the peers that answer a lookup into its range. One lookup's
        # answers crowd around its target; narrower lookups at several targets spread them
        # over the range, and spread contacts are what makes each hop gain bits.
        spread = REFRESH_SPREAD if only_empty else 1
        width = max(1, self.table.k // spread)
        targets = [random_id_in_bucket(local, i, self.rng) for i in indexes for _ in range(spread)]
        await asyncio.gather(*(self.lookup(t, width=width) for t in targets))
        for index in indexes:
            self.table.mark_refreshed(index, self._now())
        return len(indexes)

    async def contact_for_dial(self, peer: Identity) -> Contact | None:
        """A record to dial *peer* with: local knowledge first, then a network lookup."""
        local = self._local_record(peer)
        if local is not None or peer in self._resolving:
            return local
        self._resolving.add(peer)
        try:
            return await self.resolve(peer)
        except DhtError:
            return None
        finally:
            self._resolving.discard(peer)

    # -- lookups --------------------------------------------------------------------------------

    async def lookup(
        self,
        target: bytes,
        *,
        find_value: bool = False,
        exact: bool = False,
        width: int | None = None,
    ) -> LookupResult:
        """One iterative lookup of *target* (FIND_NODE, or FIND_VALUE with *find_value*).

        *exact*: stop once the peer whose identity is *target* answers. *width*: how many
        closest peers must answer (default: the current k).
        """
        loop = asyncio.get_running_loop()
        started = loop.time()
        deadline = started + self.config.lookup_timeout_s
        lookup = Lookup(
            target,
            self.identity,
            width or self.adaptive.k,
            self.adaptive.alpha,
            tier_of=self._tier_of if self.config.tiering else None,
            exact=exact,
        )
        lookup.add(self.table.closest(target, lookup.k), depth=1)
        if find_value:
            message: messages.Request = messages.FindValue(self._sender(), target)
        else:
            message = messages.FindNode(self._sender(), target)
        pending: dict[asyncio.Task[messages.Response | None], Candidate] = {}
        value: bytes | None = None
        self.counters["lookups"] += 1
        try:
            while value is None and not lookup.done:
                while batch := lookup.next_queries(loop.time()):
                    for candidate in batch:
                        if self._checked(candidate, lookup):
                            task = loop.create_task(self._query(candidate.contact, message))
                            pending[task] = candidate
                if not pending:
                    break
                remaining = deadline - loop.time()
                if remaining <= 0:
                    self.counters["lookup_timeouts"] += 1
                    break
                finished, _ = await asyncio.wait(
                    pending, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                )
                for task in finished:
                    found = self._absorb(lookup, pending.pop(task), task.result(), target)
                    value = found if found is not None else value
        finally:
            for task in pending:
                task.cancel()
        metrics = lookup.metrics
        self.counters["lookup_queries"] += metrics.queries
        return LookupResult(lookup.result(), value, metrics, loop.time() - started)

    def _checked(self, candidate: Candidate, lookup: Lookup) -> bool:
        """Verify the candidate's record before asking it (falls back to an older record)."""
        while True:
            if self._valid(candidate.contact):
                return True
            self.counters["invalid_records"] += 1
            if not lookup.reject(candidate):
                return False

    def _absorb(
        self, lookup: Lookup, candidate: Candidate, response: messages.Response | None, key: bytes
    ) -> bytes | None:
        """Feed one answer into the lookup; returns a found value that checks out."""
        identity = candidate.identity
        if isinstance(response, messages.Nodes):
            lookup.answered(identity, self._usable(lookup, response.contacts))
            self._learn(candidate.contact)
        elif isinstance(response, messages.Found) and self._value_matches(key, response.value):
            lookup.answered(identity)
            self._learn(candidate.contact)
            return response.value
        else:
            if isinstance(response, messages.Found):
                self.counters["bad_values"] += 1
            lookup.failed(identity)
        return None

    def _value_matches(self, key: bytes, value: bytes) -> bool:
        if value_key(value) == key:
            return True
        try:
            contact = Contact.decode(value)
        except ContactError:
            return False
        return bytes(contact.identity) == key and self._valid(contact)

    def _usable(self, lookup: Lookup, contacts: Sequence[Contact]) -> list[Contact]:
        """Contacts from an answer worth offering: new to the lookup (or a newer record),
        with enough proof of work and an IP address."""
        usable = []
        for contact in contacts[: self.config.max_contacts_per_response]:
            known = lookup.candidate(contact.identity)
            if known is not None and contact.timestamp_ms <= known.contact.timestamp_ms:
                continue
            if contact.proof.strength(contact.identity) < self.difficulty:
                self.counters["weak_proof"] += 1
            elif primary_ip(contact) is None:
                self.counters["no_address"] += 1
            else:
                usable.append(contact)
        return usable

    def _tier_of(self, contact: Contact) -> int:
        return self.tiers.tier_of(primary_ip(contact))

    # -- requests -----------------------------------------------------------------------------

    async def _query(self, contact: Contact, message: messages.Request) -> messages.Response | None:
        """Send one request; None if the peer did not answer properly (outcome recorded)."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            body = await self.rpc.request(
                contact.identity,
                messages.PROTOCOL,
                messages.encode(message),
                addresses=parse_addresses(contact.addresses),
                timeout=self.config.query_timeout_s,
            )
            response = messages.decode_response(body)
        except RemoteError as exc:
            self.counters["remote_errors"] += 1
            log.debug("DHT peer %s refused: %s", contact.identity.short, exc)
            return None
        except DhtDecodeError:
            self.counters["malformed_responses"] += 1
            self._no_answer(contact)
            return None
        except RpcError:
            self._no_answer(contact)
            return None
        now = loop.time()
        rtt = now - started
        ip = primary_ip(contact)
        path_floor = self.tiers.floor_rtt(ip)  # read before this sample joins it
        self.tiers.record_rtt(ip, rtt, now)
        if self.adaptive.record(Outcome.ANSWERED, rtt, path_floor):
            self.table.set_k(self.adaptive.k)
        self.table.record_success(contact.identity, now)
        return response

    async def _query_identity(
        self, peer: Identity, message: messages.Request
    ) -> messages.Response | None:
        """A request to a peer known only by identity (bootstrap): no addresses to give."""
        try:
            body = await self.rpc.request(
                peer,
                messages.PROTOCOL,
                messages.encode(message),
                timeout=self.config.query_timeout_s,
            )
            response = messages.decode_response(body)
        except (RpcError, DhtDecodeError) as exc:
            raise LookupFailedError(
                f"bootstrap peer {peer.short}... did not answer: {exc}"
            ) from exc
        contact = response.contact if isinstance(response, messages.Pong) else None
        if contact is not None and contact.identity == peer:
            self._learn_checked(contact)
        return response

    def _no_answer(self, contact: Contact) -> None:
        if self.adaptive.record(Outcome.NO_ANSWER):
            self.table.set_k(self.adaptive.k)
        known = self.table.get(contact.identity)
        # Only a failure at the table's own record counts against the peer: a record someone
        # else handed us may carry old or wrong addresses, and must not evict a live peer.
        if known is not None and known.signature == contact.signature:
            self.table.record_failure(contact.identity, self._now())

    # -- routing table --------------------------------------------------------------------------

    def _valid(self, contact: Contact) -> bool:
        """Signature, proof of work and freshness; skipped for the record the table holds."""
        known = self.table.get(contact.identity)
        if known is not None and known.signature == contact.signature:
            return True
        try:
            contact.validate(
                difficulty=self.difficulty, now_ms=wall_time_ms(), max_age_s=self.max_record_age_s
            )
        except ContactError:
            return False
        return True

    def _learn_sender(self, contact: Contact) -> None:
        """Offer a requester's own record (its identity is the authenticated peer's).

        Proof of work and freshness are checked; the signature is not: the record's claims
        are the peer's own, made over an authenticated connection, and whoever receives it
        from us checks the signature before relying on it (see :meth:`_checked`).
        """
        try:
            contact.check_fresh(now_ms=wall_time_ms(), max_age_s=self.max_record_age_s)
        except ContactError:
            self.counters["invalid_records"] += 1
            return
        if contact.proof.strength(contact.identity) < self.difficulty:
            self.counters["invalid_records"] += 1
            return
        self._learn(contact)

    def _learn_checked(self, contact: Contact) -> None:
        if self._valid(contact):
            self._learn(contact)
        else:
            self.counters["invalid_records"] += 1

    def _learn(self, contact: Contact) -> None:
        """Offer a verified record of a peer we heard from directly to the routing table."""
        now = self._now()
        if contact.identity not in self.table:
            if not self._per_peer.allow(contact.identity, now):
                self.counters["rate_limited_insertions"] += 1
                return
            ip = primary_ip(contact)
            exempt = ip is None or self.config.is_exempt(ip)
            if not exempt and not self._per_ip.allow(str(ip), now):
                self.counters["rate_limited_insertions"] += 1
                return
        observation = self.table.observe(contact, now)
        if observation.verdict is Verdict.REFUSED:
            self.counters[f"refused_{observation.reason}"] += 1
        if observation.ping is not None:
            self._background_task(self._ping(observation.ping))

    async def _ping(self, contact: Contact) -> None:
        response = await self._query(contact, messages.Ping(self._sender()))
        self.table.ping_result(contact.identity, isinstance(response, messages.Pong), self._now())

    def _background_task(self, coro: Coroutine[Any, Any, Any]) -> None:
        if len(self._background) >= MAX_BACKGROUND:
            coro.close()
            self.counters["background_skipped"] += 1
            return
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- serving --------------------------------------------------------------------------------

    def _handle(self, peer: Identity, body: bytes) -> bytes:
        """Answer one DHT request (plain function: no task per request)."""
        try:
            request = messages.decode_request(body)
        except DhtDecodeError:
            self.counters["malformed_requests"] += 1
            raise
        sender = request.sender
        if sender is not None:
            if sender.identity != peer:
                self.counters["sender_mismatch"] += 1
                raise DhtError("the sender record is not the authenticated peer's")
            self._learn_sender(sender)
        self.counters["requests_served"] += 1
        response: messages.Response
        if isinstance(request, messages.Ping):
            response = messages.Pong(self._sender())
        elif isinstance(request, messages.FindNode):
            response = messages.Nodes(self.table.closest(request.target, self.adaptive.k))
        elif isinstance(request, messages.FindValue):
            stored = self.store.get(request.key, self._now())
            if stored is not None:
                response = messages.Found(stored)
            else:
                response = messages.Nodes(self.table.closest(request.key, self.adaptive.k))
        else:
            response = self._store(peer, request)
        return messages.encode(response)

    def _store(self, peer: Identity, request: messages.Store) -> messages.StoreResult:
        try:
            self.store.put(request.key, request.value, peer, self._now(), wall_time_ms())
        except StoreRefusedError as exc:
            self.counters[f"store_refused_{exc.reason}"] += 1
            return messages.StoreResult(False, exc.reason)
        return messages.StoreResult(True)

    # -- storing on peers -----------------------------------------------------------------------

    async def _replicate(self, key: bytes, value: bytes) -> int:
        """Store locally and on the closest peers; returns how many peers accepted."""
        kind = self.store.put(key, value, self.identity, self._now(), wall_time_ms())
        result = await self.lookup(key)
        targets = result.contacts[: self.config.replication]
        if not targets:
            return 0
        message = messages.Store(self._sender(), key, value)
        answers = await asyncio.gather(*(self._query(c, message) for c in targets))
        accepted = sum(isinstance(a, messages.StoreResult) and a.accepted for a in answers)
        self.counters[f"{kind.value}_replicas"] += accepted
        if accepted == 0:
            reasons = sorted(
                {a.reason for a in answers if isinstance(a, messages.StoreResult) and a.reason}
            )
            raise LookupFailedError(
                f"none of {len(targets)} peers accepted the {kind.value}"
                + (f" ({', '.join(reasons)})" if reasons else "")
                + "; it is stored on this node only"
            )
        return accepted

    async def _publish(self) -> None:
        contact = self.own_contact()
        self._last_publish = self._now()
        await self._replicate(bytes(self.identity), contact.encode())

    # -- housekeeping ---------------------------------------------------------------------------

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(TICK_S)
            now = self._now()
            self.counters["expired"] += self.store.expire(now)
            try:
                await self.refresh()
                if (
                    self._published is not None
                    and now - self._last_publish >= self.config.republish_s
                ):
                    await self._publish()
            except DhtError as exc:
                log.info("DHT housekeeping: %s", exc)

    def _local_record(self, identity: Identity) -> Contact | None:
        """The newest record of *identity* this node holds (routing table or store)."""
        found = [self.table.get(identity), self.store.record(identity, self._now())]
        oldest = wall_time_ms() - self.max_record_age_s * 1000
        records = [c for c in found if c is not None and c.timestamp_ms >= oldest]
        return max(records, key=lambda c: c.timestamp_ms) if records else None

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()

    def stats(self) -> dict[str, int | float]:
        """Routing table, storage, tiering, adaptive parameters and counters, prefixed dht."""
        merged: dict[str, int | float] = {}
        for prefix, part in (
            ("table", self.table.stats()),
            ("store", self.store.stats()),
            ("tiers", self.tiers.stats()),
            ("params", self.adaptive.stats()),
            ("", dict(self.counters)),
        ):
            for name, value in part.items():
                merged[f"dht.{prefix}.{name}" if prefix else f"dht.{name}"] = value
        return merged


__all__ = ["DhtService", "Kind", "LookupResult"]
