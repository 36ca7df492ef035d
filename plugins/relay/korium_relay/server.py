"""The relay server's session table: who may send ``CRLY`` frames to whom, and for how long.

Every publicly reachable node relays for nodes behind NAT (spec, "Mesh-First Relay Model"). A
session joins two ends through this node:

1. the *initiator*, over an authenticated RPC, **reserves** a session id for a *target*
   identity; its address is the UDP source the RPC connection comes from (the relay shares its
   socket with QUIC, so that is also where the initiator's frames will come from);
2. the *target*, told out of band (mesh signal), **joins** it over its own authenticated RPC;
3. from then on, a frame arriving from one end's exact address is **forwarded** unchanged to the
   other end's address. Nothing else is forwarded.

Invariants (checked by the tests):

* A UDP source address never binds or changes a session: only the RPC layer, which knows the
  peer's identity, reserves or joins. A stranger who learns a session id (they are random and
  travel only inside encrypted RPCs) still cannot inject frames, because the source must be an
  end's address, nor end a session: a refused call changes nothing but the counters.
* Memory is bounded by :class:`RelayLimits`: at most ``max_sessions`` sessions, and every index
  (per peer, per IP, expiry order) holds entries only for live sessions; counters that reach zero
  are deleted.
* Each IP may be an end of at most ``max_sessions_per_ip`` sessions at once, both ends counted
  (a session whose two ends share an IP counts once for it). IPv6 addresses are grouped by
  prefix (``ipv6_prefix``, /64 by default), since one host usually holds a whole /64.
* ``forward`` costs a few dict lookups: it runs for every relayed datagram.

Expiry: a pending session lives ``pending_timeout`` from its reservation, a complete one
``idle_timeout`` from its last forwarded frame. Because each kind has one timeout, ordering the
sessions of each kind by their start or last activity orders them by deadline: two ordered dicts
(``move_to_end`` on traffic) make ``expire`` pop only what is due and ``get_timer`` O(1). The
table never lets its clock run backwards (it keeps the latest ``now`` seen), so those orders hold
even if a caller passes an older time.

This module is pure state: no sockets, no clock (``now`` is monotonic seconds, passed in), no
knowledge of RPC messages. The driver turns :class:`RelayRefused` into a refusal reply and sends
the datagrams ``forward`` routes.
"""

from __future__ import annotations

import ipaddress
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, NoReturn

from korium.errors import ConfigError, KoriumError
from korium.identity import Identity
from korium.netaddr import ip_of, prefix
from korium.transport.addresses import Address
from korium_relay import frames

AccessPolicy = Callable[[Identity, Identity, Address], "str | None"]
"""Decides whether this relay serves a session: called as ``policy(initiator, target,
initiator_address)``; returns None to allow it, or the reason to refuse it (sent back to the
initiator)."""

RULES: Final = frozenset(
    {"capacity", "per-ip", "exists", "policy", "self", "unknown-session", "wrong-peer", "complete"}
)
"""Every :attr:`RelayRefused.rule`, e.g. for a wire message's allowed values."""


@dataclass(frozen=True, slots=True)
class RelayLimits:
    """How much a relay serves. Times in seconds."""

    max_sessions: int = 10_000
    """Sessions at once, pending and complete (spec)."""
    max_sessions_per_ip: int = 50
    """Sessions an IP may be an end of at once, counting both ends' IPs (spec)."""
    pending_timeout: float = 30.0
    """A reserved session that the target has not joined is dropped after this."""
    idle_timeout: float = 300.0
    """A complete session that has forwarded no frame for this long is dropped."""
    max_payload: int = frames.MAX_PAYLOAD
    """Frames with a larger payload (bytes) are dropped, not forwarded."""
    ipv6_prefix: int = 64
    """IPv6 addresses sharing this many leading bits count as one IP (128: each address)."""

    def __post_init__(self) -> None:
        for name in ("max_sessions", "max_sessions_per_ip", "max_payload"):
            if getattr(self, name) < 1:
                raise ConfigError(f"RelayLimits.{name} must be at least 1")
        for name in ("pending_timeout", "idle_timeout"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"RelayLimits.{name} must be a positive number of seconds")
        if not 1 <= self.ipv6_prefix <= 128:
            raise ConfigError("RelayLimits.ipv6_prefix must be between 1 and 128 bits")


class RelayRefused(KoriumError):
    """The relay will not reserve or join a session.

    ``rule`` says which rule refused it: ``"capacity"``, ``"per-ip"``, ``"exists"``,
    ``"policy"``, ``"self"``, ``"unknown-session"``, ``"wrong-peer"`` or ``"complete"``.
    """

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule


@dataclass(slots=True)
class Session:
    """One relay session. Read it; only :class:`RelayServer` changes it."""

    id: bytes
    initiator: Identity
    target: Identity
    initiator_address: Address
    target_address: Address | None
    """None while pending (the target has not joined)."""
    created: float
    last_activity: float
    """When the session was joined or last forwarded a frame (seconds, the caller's clock)."""
    bytes_relayed: int = 0
    """Bytes of the frames forwarded, headers included."""
    packets_relayed: int = 0

    @property
    def complete(self) -> bool:
        """Whether the target has joined, so frames flow."""
        return self.target_address is not None


class RelayServer:
    """The sessions this node relays, their limits and counters.

    Inputs: :meth:`reserve`, :meth:`join`, :meth:`close`, :meth:`close_peer` (from the RPC
    driver), :meth:`forward` (every ``CRLY`` datagram), :meth:`expire` (at :meth:`get_timer`).
    """

    def __init__(self, limits: RelayLimits | None = None, policy: AccessPolicy | None = None):
        self.limits = limits or RelayLimits()
        self.policy = policy
        self.stats: Counter[str] = Counter()
        self._sessions: dict[bytes, Session] = {}
        self._pending: OrderedDict[bytes, None] = OrderedDict()
        """Pending sessions, oldest reservation first."""
        self._idle: OrderedDict[bytes, None] = OrderedDict()
        """Complete sessions, least recently active first."""
        self._by_peer: dict[Identity, set[bytes]] = {}
        self._per_ip: dict[str, int] = {}
        self._now = float("-inf")

    def __len__(self) -> int:
        return len(self._sessions)

    def get(self, session: bytes) -> Session | None:
        """The session with this id, or None."""
        return self._sessions.get(session)

    def sessions_of(self, identity: Identity) -> list[Session]:
        """The sessions *identity* is an end of (initiator or target), pending or complete."""
        return [self._sessions[sid] for sid in self._by_peer.get(identity, ())]

    def ip_count(self, address: Address) -> int:
        """How many sessions the IP of *address* is an end of."""
        return self._per_ip.get(self._ip_key(address), 0)

    # -- control plane (authenticated RPCs) --------------------------------------------------

    def reserve(
        self, session: bytes, initiator: Identity, target: Identity, address: Address, now: float
    ) -> None:
        """Open a pending session from *initiator* (at *address*) to *target*.

        *initiator* must be authenticated by the caller (the RPC connection's identity) and
        *address* must be where that connection's datagrams come from.

        :raises RelayRefused: ``"self"`` (initiator is the target), ``"exists"`` (id in use),
            ``"capacity"``, ``"per-ip"``, ``"policy"`` (the access policy said no).
        :raises ValueError: *session* is not 16 bytes (the caller should have checked).
        """
        now = self._clock(now)
        if len(session) != frames.SESSION_ID_SIZE:
            raise ValueError(
                f"a relay session id is {frames.SESSION_ID_SIZE} bytes, got {len(session)}"
            )
        if initiator == target:
            self._refuse("self", f"{initiator.short}... asked to relay to itself")
        if session in self._sessions:
            self._refuse("exists", f"relay session {session.hex()} already exists")
        if len(self._sessions) >= self.limits.max_sessions:
            self._refuse("capacity", f"relay is at capacity ({self.limits.max_sessions} sessions)")
        ip = self._ip_key(address)
        if self._per_ip.get(ip, 0) >= self.limits.max_sessions_per_ip:
            self._refuse(
                "per-ip",
                f"{ip} is already an end of {self.limits.max_sessions_per_ip} relay sessions",
            )
        if self.policy is not None:
            reason = self.policy(initiator, target, address)
            if reason is not None:
                self._refuse(
                    "policy",
                    f"relay policy refuses {initiator.short}... -> {target.short}...: {reason}",
                )
        self._sessions[session] = Session(session, initiator, target, address, None, now, now)
        self._pending[session] = None
        self._by_peer.setdefault(initiator, set()).add(session)
        self._by_peer.setdefault(target, set()).add(session)
        self._per_ip[ip] = self._per_ip.get(ip, 0) + 1
        self.stats["sessions_reserved"] += 1

    def join(self, session: bytes, joiner: Identity, address: Address, now: float) -> Session:
        """Complete a pending session: *joiner*, at *address*, is its target.

        *joiner* must be authenticated by the caller. Returns the session, so the caller can
        tell each end the other's observed address (for hole punching).

        :raises RelayRefused: ``"unknown-session"``; ``"wrong-peer"`` (joiner is not the
            target); ``"complete"`` (already joined); ``"self"`` (*address* is the initiator's:
            frames could not tell the ends apart); ``"per-ip"``. A refused join leaves the
            session as it was, so nobody but its target can affect it.
        """
        now = self._clock(now)
        entry = self._sessions.get(session)
        if entry is None:
            self._refuse("unknown-session", f"no relay session {session.hex()}")
        if joiner != entry.target:
            self._refuse(
                "wrong-peer",
                f"relay session {session.hex()} is for {entry.target.short}..., "
                f"not {joiner.short}...",
            )
        if entry.target_address is not None:
            self._refuse("complete", f"relay session {session.hex()} is already joined")
        if address == entry.initiator_address:
            self._refuse(
                "self", f"both ends of relay session {session.hex()} are at the same address"
            )
        ip = self._ip_key(address)
        shared = ip == self._ip_key(entry.initiator_address)
        if not shared and self._per_ip.get(ip, 0) >= self.limits.max_sessions_per_ip:
            self._refuse(
                "per-ip",
                f"{ip} is already an end of {self.limits.max_sessions_per_ip} relay sessions",
            )
        if not shared:
            self._per_ip[ip] = self._per_ip.get(ip, 0) + 1
        entry.target_address = address
        entry.last_activity = now
        del self._pending[session]
        self._idle[session] = None
        self.stats["sessions_joined"] += 1
        return entry

    def close(self, session: bytes) -> None:
        """Forget a session (either end asked, or the driver gave up on it); no-op if unknown."""
        if self._remove(session):
            self.stats["sessions_closed"] += 1

    def close_peer(self, identity: Identity) -> list[bytes]:
        """Close every session *identity* is an end of (its connection died); returns their ids."""
        ids = list(self._by_peer.get(identity, ()))
        for sid in ids:
            self.close(sid)
        return ids

    def _remove(self, session: bytes) -> bool:
        entry = self._sessions.pop(session, None)
        if entry is None:
            return False
        self._pending.pop(session, None)
        self._idle.pop(session, None)
        for peer in (entry.initiator, entry.target):
            ids = self._by_peer[peer]
            ids.discard(session)
            if not ids:
                del self._by_peer[peer]
        for ip in self._ips_of(entry):
            count = self._per_ip[ip] - 1
            if count:
                self._per_ip[ip] = count
            else:
                del self._per_ip[ip]
        return True

    # -- data plane ---------------------------------------------------------------------------

    def forward(self, datagram: bytes, source: Address, now: float) -> Address | None:
        """Where to send this ``CRLY`` datagram (unchanged), or None to drop it.

        Only a frame from one end's exact address, on a complete session, goes to the other
        end. Everything else is dropped and counted in :attr:`stats` (``dropped_malformed``,
        ``dropped_oversized``, ``dropped_unknown_session``, ``dropped_incomplete``,
        ``dropped_stranger``). Never raises for any datagram or source.
        """
        size = len(datagram)
        if size < frames.HEADER_SIZE or datagram[:4] != frames.MAGIC:
            self.stats["dropped_malformed"] += 1
            return None
        if size - frames.HEADER_SIZE > self.limits.max_payload:
            self.stats["dropped_oversized"] += 1
            return None
        sid = bytes(datagram[4 : frames.HEADER_SIZE])
        entry = self._sessions.get(sid)
        if entry is None:
            self.stats["dropped_unknown_session"] += 1
            return None
        destination = entry.target_address
        if destination is None:
            self.stats["dropped_incomplete"] += 1
            return None
        if source == destination:
            destination = entry.initiator_address
        elif source != entry.initiator_address:  # join refused a target at the same address
            self.stats["dropped_stranger"] += 1
            return None
        entry.last_activity = self._clock(now)
        self._idle.move_to_end(sid)
        entry.bytes_relayed += size
        entry.packets_relayed += 1
        self.stats["bytes_relayed"] += size
        self.stats["packets_relayed"] += 1
        return destination

    # -- timers -------------------------------------------------------------------------------

    def expire(self, now: float) -> list[bytes]:
        """Close pending sessions older than ``pending_timeout`` and complete ones idle for
        ``idle_timeout``; returns the ids closed (the driver may tell their ends)."""
        now = self._clock(now)
        expired: list[bytes] = []
        for queue, timeout, started in (
            (self._pending, self.limits.pending_timeout, _created),
            (self._idle, self.limits.idle_timeout, _last_activity),
        ):
            while queue:
                sid = next(iter(queue))
                if started(self._sessions[sid]) + timeout > now:
                    break
                self._remove(sid)
                self.stats["sessions_expired"] += 1
                expired.append(sid)
        return expired

    def get_timer(self) -> float | None:
        """When :meth:`expire` next has something to do, or None when there are no sessions."""
        deadlines = []
        if self._pending:
            deadlines.append(
                self._sessions[next(iter(self._pending))].created + self.limits.pending_timeout
            )
        if self._idle:
            deadlines.append(
                self._sessions[next(iter(self._idle))].last_activity + self.limits.idle_timeout
            )
        return min(deadlines, default=None)

    # -- helpers ------------------------------------------------------------------------------

    def _clock(self, now: float) -> float:
        """*now*, never earlier than a time seen before, so the expiry orders stay sorted."""
        if now > self._now:
            self._now = now
        return self._now

    def _refuse(self, rule: str, message: str) -> NoReturn:
        self.stats[f"refused_{rule}"] += 1
        raise RelayRefused(rule, message)

    def _ip_key(self, address: Address) -> str:
        """The key *address* counts under for ``max_sessions_per_ip`` (``"10.0.0.1/32"``)."""
        ip = ip_of(address)
        if ip is None:
            return address[0]  # not an IP literal: count the text as it is
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped  # a dual-stack socket's view of an IPv4 peer
        return prefix(ip, 32, self.limits.ipv6_prefix)

    def _ips_of(self, entry: Session) -> set[str]:
        ips = {self._ip_key(entry.initiator_address)}
        if entry.target_address is not None:
            ips.add(self._ip_key(entry.target_address))
        return ips


def _created(session: Session) -> float:
    return session.created


def _last_activity(session: Session) -> float:
    return session.last_activity
