"""An in-memory network of simulated nodes: links with latency and loss, partitions, churn.

Why: to run unmodified plugins (which talk only through :class:`korium.rpc.Rpc`) by the
thousand in one process, on virtual time (:mod:`korium.testing.clock`), under network
conditions a test chooses and can reproduce.

The network owns the topology and carries frames; :class:`~korium.testing.rpc.SimRpc` owns
the rpc semantics of each node. Every frame (request, response, one-way message) is the encoded
wire frame, so the receiver decodes its own copy and size limits apply to the real bytes.

Model, and its invariants:

* A frame from *a* to *b* arrives ``link(a, b).latency`` seconds after it was sent, unless it
  is lost: at random with probability ``link(a, b).loss`` (drawn from one ``random.Random(seed)``
  when sent, so a run is reproducible), or because a partition separates *a* and *b* or *b* is
  offline, whether at sending or at arrival. A lost request or response never arrives; the
  caller sees its timeout (:class:`~korium.errors.RpcTimeoutError`), as with a real peer.
* Frames are independent, like separate QUIC streams: two frames sent at the same time over
  the same link may arrive in either order (but in the same order on every run). This holds
  for one-way messages too, which the real endpoint delivers in order per connection (they
  share one stream there): a simulation does not promise that order.
* Connection set-up takes no time and is never lost (QUIC retransmits handshake packets). Each
  node keeps a pool of connections, like the real endpoint; what happens when a peer cannot be
  reached depends on it, see :class:`~korium.testing.rpc.SimRpc`. A connection whose peer became
  unreachable dies ``idle_timeout`` seconds later (QUIC's idle timeout, 60 s by default).
* Nothing here reads a clock except the running loop's; nothing iterates a set of identities
  (their hashes vary between processes), so order never depends on hash seeds.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from korium.identity import Identity, Keypair, NodeIdentity
from korium.rpc.dispatch import RpcConfig
from korium.testing.rpc import PeerCallback, SimRpc
from korium.transport.addresses import Address
from korium.transport.smartsock import TransportConfig

__all__ = ["LinkSettings", "NetworkStats", "NodeRef", "SimNetwork"]

_QUIC_IDLE_TIMEOUT = TransportConfig().idle_timeout

NodeRef = Identity | SimRpc
"""A node named by its identity or by its endpoint."""


@dataclass(frozen=True, slots=True)
class LinkSettings:
    """How frames travel in one direction between two nodes."""

    latency: float
    """One-way delay in seconds."""
    loss: float
    """Probability that a frame is lost, from 0 to 1."""

    def __post_init__(self) -> None:
        if not (math.isfinite(self.latency) and self.latency >= 0):
            raise ValueError(f"latency must be a finite number of seconds >= 0, got {self.latency}")
        if not 0.0 <= self.loss <= 1.0:
            raise ValueError(f"loss must be a probability from 0 to 1, got {self.loss}")


@dataclass(slots=True)
class NetworkStats:
    """Frame counters. A frame is a request, a response or a one-way message."""

    delivered: int = 0
    """Frames that reached their destination."""
    lost: int = 0
    """Frames dropped by random loss."""
    partitioned: int = 0
    """Frames dropped, and dials that failed, because a partition separates the two nodes."""
    unreachable: int = 0
    """Frames dropped, and dials that failed, because the destination is offline or unknown."""
    bytes: int = 0
    """Bytes of the delivered frames, length prefixes included."""


@dataclass(frozen=True, slots=True)
class _Partition:
    side_a: frozenset[Identity]
    side_b: frozenset[Identity] | None
    """``None``: every node not in ``side_a``."""
    since: float

    def separates(self, x: Identity, y: Identity) -> bool:
        if x in self.side_a:
            return y not in self.side_a if self.side_b is None else y in self.side_b
        if y in self.side_a:
            return self.side_b is None or x in self.side_b
        return False


class SimNetwork:
    """Simulated nodes and the links between them.

    Build it anywhere; use it from one event loop (one :func:`korium.testing.run`), since the
    times it keeps are that loop's.

    :param seed: seeds the random source for loss; the same seed gives the same run.
    :param default_latency: one-way latency of every link not set with :meth:`set_link`.
    :param loss: loss probability of every link not set with :meth:`set_link`.
    :param config: rpc settings (timeouts, size limits, pool) of nodes added without their own;
        the defaults are the real endpoint's.
    :param idle_timeout: seconds after which a connection to an unreachable peer dies (the QUIC
        idle timeout; the real transport's default).
    :param latency: ``latency(a, b)``: the one-way latency from *a* to *b* for links not set
        with :meth:`set_link` (instead of *default_latency*); a latency model such as regions,
        without setting each of the n² links.
    """

    def __init__(
        self,
        *,
        seed: int = 0,
        default_latency: float = 0.01,
        loss: float = 0.0,
        config: RpcConfig | None = None,
        idle_timeout: float = _QUIC_IDLE_TIMEOUT,
        latency: Callable[[Identity, Identity], float] | None = None,
    ) -> None:
        self.default_link = LinkSettings(default_latency, loss)
        self.latency_model = latency
        self.config = config or RpcConfig()
        self.idle_timeout = idle_timeout
        self.stats = NetworkStats()
        self._rng = random.Random(seed)
        self._nodes: dict[Identity, SimRpc] = {}
        self._links: dict[tuple[Identity, Identity], LinkSettings] = {}
        self._partitions: list[_Partition] = []

    # -- membership -------------------------------------------------------------------------

    def add_node(
        self,
        identity: Identity | NodeIdentity | Keypair,
        *,
        config: RpcConfig | None = None,
        address: Address | None = None,
        on_peer_connected: PeerCallback | None = None,
        on_peer_disconnected: PeerCallback | None = None,
    ) -> SimRpc:
        """Bring a node online and return its rpc endpoint (a :class:`korium.rpc.Rpc`).

        *address* is what the node's peers get from ``peer_address`` (nothing routes by it);
        the callbacks are told of the node's connections (:class:`SimRpc`). An identity that
        was removed may be added again: that is a restart, with a fresh endpoint (no handlers,
        no connections).
        """
        if not isinstance(identity, Identity):
            identity = identity.identity
        if identity in self._nodes:
            raise ValueError(f"node {identity.short}... is already in the network")
        node = SimRpc(
            self,
            identity,
            config or self.config,
            address=address,
            on_peer_connected=on_peer_connected,
            on_peer_disconnected=on_peer_disconnected,
        )
        self._nodes[identity] = node
        return node

    def remove_node(self, node: NodeRef) -> None:
        """Take a node offline, as if its process died.

        Its handlers stop, its own requests in flight fail with
        :class:`~korium.errors.ConnectionLostError`, frames to it vanish: peers holding a
        connection see timeouts until the connection dies, others fail to dial it. The node's
        own tasks (plugin drivers) are the caller's to stop.
        """
        identity = _identity(node)
        removed = self._nodes.pop(identity, None)
        if removed is None:
            raise KeyError(f"node {identity.short}... is not in the network")
        removed._shut_down(self._now())

    def node(self, identity: Identity) -> SimRpc:
        """The endpoint of the online node *identity*; ``KeyError`` if there is none."""
        return self._nodes[identity]

    @property
    def nodes(self) -> list[SimRpc]:
        """Online nodes, in the order they were added."""
        return list(self._nodes.values())

    def __len__(self) -> int:
        return len(self._nodes)

    def __contains__(self, identity: object) -> bool:
        return identity in self._nodes

    # -- links and partitions ---------------------------------------------------------------

    def set_link(
        self,
        a: NodeRef,
        b: NodeRef,
        *,
        latency: float | None = None,
        loss: float | None = None,
        symmetric: bool = True,
    ) -> None:
        """Set the latency and/or loss from *a* to *b* (and back, if *symmetric*)."""
        pairs = [(_identity(a), _identity(b))]
        if symmetric:
            pairs.append((pairs[0][1], pairs[0][0]))
        for pair in pairs:
            current = self._link(*pair)
            self._links[pair] = LinkSettings(
                current.latency if latency is None else latency,
                current.loss if loss is None else loss,
            )

    def link(self, a: NodeRef, b: NodeRef) -> LinkSettings:
        """The settings of the link from *a* to *b*."""
        return self._link(_identity(a), _identity(b))

    def _link(self, a: Identity, b: Identity) -> LinkSettings:
        link = self._links.get((a, b))
        if link is not None:
            return link
        if self.latency_model is not None:
            return LinkSettings(self.latency_model(a, b), self.default_link.loss)
        return self.default_link

    def partition(self, side_a: Iterable[NodeRef], side_b: Iterable[NodeRef] | None = None) -> None:
        """Cut every link between *side_a* and *side_b* (default: every other node).

        Partitions add up; :meth:`heal` removes them all. Nodes within one side still talk.
        """
        group_a = frozenset(_identity(n) for n in side_a)
        group_b = None if side_b is None else frozenset(_identity(n) for n in side_b)
        if group_b is not None and group_a & group_b:
            raise ValueError("a node cannot be on both sides of a partition")
        self._partitions.append(_Partition(group_a, group_b, self._now()))

    def heal(self) -> None:
        """Remove every partition. Connections that have not died yet carry traffic again."""
        self._partitions.clear()

    def reachable(self, a: NodeRef, b: NodeRef) -> bool:
        """Whether a frame sent now from *a* to *b* could arrive (ignoring random loss)."""
        return self._cut(_identity(a), _identity(b)) is None

    # -- carrying frames (used by SimRpc) ---------------------------------------------------

    def _now(self) -> float:
        """The running loop's time; minus infinity before any loop runs (nothing to age)."""
        try:
            return asyncio.get_running_loop().time()
        except RuntimeError:
            return -math.inf

    def _cut(self, src: Identity, dst: Identity) -> str | None:
        """Why no frame can go from *src* to *dst* right now, as a stats field, or None."""
        if dst not in self._nodes or src not in self._nodes:
            return "unreachable"
        if any(p.separates(src, dst) for p in self._partitions):
            return "partitioned"
        return None

    def _dial(self, src: SimRpc, dst: Identity) -> SimRpc | None:
        """The online node *dst* if *src* can reach it now; counts the failure otherwise."""
        reason = self._cut(src.identity, dst)
        if reason is not None:
            setattr(self.stats, reason, getattr(self.stats, reason) + 1)
            return None
        return self._nodes[dst]

    def _unreachable_since(self, src: SimRpc, dst: SimRpc) -> float | None:
        """Since when *src* cannot reach the endpoint *dst* (``None``: it can)."""
        if dst.removed_at is not None:
            return dst.removed_at
        times = [p.since for p in self._partitions if p.separates(src.identity, dst.identity)]
        return min(times) if times else None

    def _connection_alive(self, src: SimRpc, dst: SimRpc, now: float) -> bool:
        """Whether a connection from *src* to the endpoint *dst* would still be open."""
        current = self._nodes.get(dst.identity)
        if current is not None and current is not dst:
            return False  # the peer restarted: the old connection is gone (stateless reset)
        since = self._unreachable_since(src, dst)
        return since is None or now - since < self.idle_timeout

    def _transmit(
        self, src: SimRpc, dst: SimRpc, frame: bytes, deliver: Callable[[], None]
    ) -> None:
        """Carry *frame* from *src* to *dst*: call *deliver* on arrival unless it is lost."""
        reason = self._cut(src.identity, dst.identity)
        if reason is None and (not src.online or self._nodes[dst.identity] is not dst):
            reason = "unreachable"  # an old endpoint of a node that restarted
        if reason is not None:
            setattr(self.stats, reason, getattr(self.stats, reason) + 1)
            return
        link = self._link(src.identity, dst.identity)
        if link.loss and self._rng.random() < link.loss:
            self.stats.lost += 1
            return
        asyncio.get_running_loop().call_later(
            link.latency, self._arrive, src, dst, len(frame), deliver
        )

    def _arrive(self, src: SimRpc, dst: SimRpc, size: int, deliver: Callable[[], None]) -> None:
        if not dst.online:
            self.stats.unreachable += 1
            return
        reason = self._cut(src.identity, dst.identity)
        if reason == "partitioned":  # cut while in flight; an offline sender's frames still land
            self.stats.partitioned += 1
            return
        self.stats.delivered += 1
        self.stats.bytes += size
        deliver()


def _identity(node: NodeRef) -> Identity:
    return node if isinstance(node, Identity) else node.identity
