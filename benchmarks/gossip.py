"""GossipSub benchmark: hop-deliveries per second per process, and latency per hop, on loopback.

Run ``PYTHONPATH=plugins/gossipsub python benchmarks/gossip.py [--quick] [--messages N]
[--seconds S] [--profile [line6|star10]] [--profile-out FILE]``.

Method (py-libp2p's, ``peers.md`` section 4.1, reproduced for korium): every node runs in
**this process, on one asyncio loop**, on 127.0.0.1; real korium nodes
(``Node.builder("127.0.0.1:0").difficulty(0).plugins([korium_gossipsub.plugin])``, Ed25519
identities, QUIC with mutual TLS), GossipSub with its default settings (D=6, D_lo=5, D_hi=12,
heartbeat 1 s, flood publishing, peer scoring on, every message signed and verified on every
hop). Every node subscribes to one topic and reads it with ``node.messages(topic)``. Payloads
are 64 bytes and carry the publisher, a sequence number and the send time
(``time.perf_counter``, taken just before ``node.publish``); latency is the receive time (when
the subscriber's iterator yields the message) minus that timestamp, on the same clock. All
nodes share one core, so the figures measure total CPU per delivery, not a network limit.

Topologies (the meshes are awaited, each node's mesh = its neighbours, before measuring):

* **line6**: 6 nodes, node *i* connects to node *i+1* only; node 0 publishes, so the receivers
  are 1 to 5 hops away and every delivery is one hop (one forward) of the chain.
* **star10**: a hub and 9 leaves connected to the hub only; the hub publishes (flood publishing
  sends each message to the 9 leaves directly).

Counting, as ``peers.md`` 4.1: a *hop-delivery* is one message delivered to one subscriber
(line6: 5 per message, star10: 9), so hop-deliveries/s = messages/s delivered to all x
receivers per message (py-libp2p's saturation: line6 96 x 5 = 480/s; star10 40-44 x 9 ~ 380/s).
Here it is counted directly: every delivery across the nodes of this process, divided by the
wall time from the first publish to the last delivery. "Msgs/s delivered to all" is
py-libp2p's definition: messages delivered to every subscriber / (last full delivery - first
publish). CPU per hop-delivery is this process's ``time.process_time`` from the first publish
to the last delivery (publishing, signing, QUIC, verifying, routing, forwarding, delivery) /
deliveries; its inverse, hop-deliveries per CPU second, is what a process with a core to itself
reaches. "CPU wait" is the share of the run this process was ready to run but had no core
(``/proc/self/schedstat``): other load on the machine, which lowers the wall figures.

Runs:

1. **Offered 100 msg/s** (py-libp2p's ``*_p10`` runs): ``--messages`` messages (default 1,000)
   paced at 100/s by node 0 (the hub), default settings (``publish_rate`` 100/s). Delivered /
   expected, latency median and p99 overall and by hop distance from the publisher ("per
   hop" = median / hops; also split into messages sent while each sender's budget of
   unpaced frames lasts (half the receiver's burst of ``receive_burst`` = 500 frames: about
   5 s at 100 msg/s), and after it, when frames to a peer are paced at the receiver's
   50 frames/s limit), messages/s delivered to all, hop-deliveries/s.
2. **Saturation**: clusters of the same shape whose nodes are built with
   ``plugin_settings("gossipsub", publish_rate=1_000_000, source_rate=1_000_000)``: the
   publish rate limit (100/s by default) and the per-publisher limit every receiver keeps
   (200/s by default), both per-node security settings, would otherwise cap the offered load,
   so they are raised (on every node; nothing else changes). A fresh cluster per
   configuration, warmed up for 0.5 s. Two publisher sets per topology: the one publisher of
   run 1, and every node publishing an equal share. For each:

   * **closed loop** (window 200): the publishers publish as fast as they can while at most
     200 messages are published and not yet delivered to every receiver, for ``--seconds``.
     An open loop cannot be used: ``node.rpc.send_message`` never waits, so a publisher
     faster than the cluster moves an unbounded backlog into QUIC send buffers (measured: MBs
     pending, median latency 9 s in star10 with every node publishing). The window bounds
     it; its rate is the maximum throughput.
   * **sustained**: then paced (open-loop) runs of ``--seconds`` at 90% of the closed loop's
     messages/s to all, stepping down by 20% (at most four tries) until a rate is
     *sustained*: at least 99.9% of the expected deliveries, the publishers kept at least 97%
     of the offered rate, latency p99 at most 500 ms. Its hop-deliveries per CPU second are
     the headline figure, judged against the target (at least 4,000 per process, about 10x
     py-libp2p's best, ``peers.md`` 4.1). A cluster whose meshes broke during a run (a peer
     pruned for a negative score) is rebuilt before the next try, and this is reported.

   Also reported: messages per frame (each sender batches what accumulates while it paces its
   frames), frames dropped by a receiver's per-peer frame limit, drops on full peer queues.

Baseline, measured in the same run: the kernel's raw one-way message throughput between two
korium nodes in this process (no plugin): ``node.rpc.send_message`` of 64 bytes to a handler
registered with ``rpc.register_message``, in bursts of 10 and 100 (a ``sleep(0)`` after each
burst), timed until the receiver counted the last one; the median of ``--repeat`` runs after
a warm-up. "Of ceiling" = the raw message's CPU cost (bursts of 100) / the gossip CPU per
hop-delivery: the gossip rate as a share of the transport's, per CPU second (a gossip frame
carries several messages, so the share is not bounded by 1 in principle). py-libp2p's
published figures (``peers.md`` 4.1) are printed as reference rows: **not measured here**
(py-libp2p 0.8.1 on trio, same machine class: 2 vCPU AMD EPYC).

``--profile`` (line6 or star10, default star10) instead runs the single-publisher closed loop
twice on one cluster: plainly (true CPU per hop-delivery), then under cProfile on the CPU clock
(``time.process_time``; every node runs in this thread). It prints per hop-delivery the top
functions by cumulative and by own time and the own time by component (aioquic, signatures,
message ids, msgspec, the gossipsub router, scoring, caches and driver, korium's RPC and
transport, asyncio), plus the signature check and signing measured apart without the
profiler, since cProfile slows Python code about 5x and C code hardly at all (and so, here,
also shrinks the batches).

``--quick`` (about 20 s): 200 messages at 100/s, 1.5 s saturation runs, single publishers only.
A default run takes 1 to 2 minutes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import math
import os
import platform
import pstats
import statistics
import struct
import sys
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib.metadata import version
from typing import Any, Final, cast

import messages as raw
from _report import status, table
from korium_gossipsub import messages as wire
from korium_gossipsub import plugin as gossip_plugin
from korium_gossipsub import service as gossip_service
from korium_gossipsub.config import GossipConfig

from korium.identity import Identity, Keypair
from korium.node import Node

HOST: Final = "127.0.0.1"
TOPIC: Final = "bench"
PAYLOAD_SIZE: Final = 64
STAMP: Final = struct.Struct("<HHId")
"""Run number, publisher index, sequence number, send time (perf_counter); padded to 64 B."""
LINE6: Final = "line6"
STAR10: Final = "star10"
TOPOLOGIES: Final = (LINE6, STAR10)
OFFERED_RATE: Final = 100.0
_DEFAULTS: Final = GossipConfig()
SENDER_BURST: Final = _DEFAULTS.receive_burst // 2
BURST_WINDOW: Final = SENDER_BURST / (OFFERED_RATE - _DEFAULTS.receive_rate)
"""At one frame per message, the sender's unpaced frame budget lasts about this long."""
SATURATION_PUBLISH_RATE: Final = 1_000_000.0
"""``publish_rate`` and ``source_rate`` of the saturation clusters' nodes (the defaults are
100/s and 200/s)."""
TARGET: Final = 4_000.0
"""Hop-deliveries per second per process at saturation (peers.md 4.1: about 10x py-libp2p)."""
SUSTAINED_DELIVERED: Final = 0.999
SUSTAINED_PUBLISHED: Final = 0.97
SUSTAINED_P99: Final = 0.5
FIRST_TRY: Final = 0.9
STEP_DOWN: Final = 0.8
TRIES: Final = 4
QUIET: Final = 1.0
"""A run ends when everything expected arrived or nothing arrived for this long."""
DRAIN_CAP: Final = 5.0
"""Longest wait for stragglers after the publishers stopped (at least the publishing time)."""
STALL: Final = 1.0
"""A windowed publisher publishes anyway after waiting this long (a message was lost)."""
WINDOW: Final = 200
"""Closed loop: messages published and not yet delivered to every receiver, at most."""
WARM_UP: Final = 0.5
"""Seconds of unmeasured closed-loop publishing on a fresh saturation cluster."""
SETTLE: Final = 0.3
"""Pause between runs, for stragglers and heartbeats."""
MESH_TIMEOUT: Final = 20.0
MAX_CATCH_UP: Final = 50
"""Paced publishers that fell behind publish at most this many before yielding."""
RAW_BURSTS: Final = (10, 100)
TOP: Final = 25
ROOT: Final = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STDLIB: Final = os.path.dirname(os.__file__)

COUNTERS: Final = (
    "frames_sent",
    "messages_sent",
    "dropped_peer_queue",
    "frames_over_receive_rate",
    "delivery_dropped",
    "publish_waits",
    "send_paced",
    "duplicates",
    "pruned_negative_score",
)


@dataclass(frozen=True, slots=True)
class Reference:
    """A py-libp2p row of peers.md 4.1 (not measured here)."""

    run: str
    offered: str
    delivered: str
    median_ms: str
    p99_ms: str
    to_all: str
    hop_deliveries: str


REFERENCES: Final = (
    Reference("line6_quic_p10 (quic, line 6)", "100/s", "5000/5000", "7.1", "428", "87.9", "440"),
    Reference("line6_tcp_p10 (tcp, line 6)", "100/s", "5000/5000", "10.2", "24.5", "96.0", "480"),
    Reference("star6_quic_p10 (quic, star 6)", "100/s", "5000/5000", "5.8", "8.7", "91.1", "456"),
    Reference("star10_tcp_p10 (tcp, D_hi 8)", "100/s", "6196/9000", "7.8", "237", "63.2", "~390"),
    Reference(
        "star10_goD_p10 (tcp, D_hi 12)", "100/s", "9000/9000", "7577", "10005", "43.5", "~390"
    ),
    Reference("saturation, line6 (headline)", "", "", "", "", "96", "480"),
    Reference("saturation, star10 hub (headline)", "", "", "", "", "40-44", "~380"),
)
"""hop-deliveries = msgs/s to all x receivers, as peers.md 4.1 counts them."""


# -- the cluster --------------------------------------------------------------------------------


def payload(run: int, publisher: int, seq: int) -> bytes:
    return STAMP.pack(run, publisher, seq, time.perf_counter()).ljust(PAYLOAD_SIZE, b"\0")


def edges_of(topology: str) -> tuple[int, list[tuple[int, int]]]:
    """Node count and (dialer, listener) pairs."""
    if topology == LINE6:
        return 6, [(i, i + 1) for i in range(5)]
    return 10, [(0, i) for i in range(1, 10)]


def distances(count: int, edges: list[tuple[int, int]]) -> list[list[int]]:
    """Hop distance between every two nodes (breadth first)."""
    neighbours: list[set[int]] = [set() for _ in range(count)]
    for a, b in edges:
        neighbours[a].add(b)
        neighbours[b].add(a)
    table_: list[list[int]] = []
    for start in range(count):
        dist = [-1] * count
        dist[start] = 0
        queue = deque([start])
        while queue:
            here = queue.popleft()
            for there in neighbours[here]:
                if dist[there] < 0:
                    dist[there] = dist[here] + 1
                    queue.append(there)
        table_.append(dist)
    return table_


class Recorder:
    """Deliveries of one run: counts, latencies by hop distance, last arrival."""

    def __init__(self, run: int, max_distance: int, receivers: int) -> None:
        self.run = run
        self.receivers = receivers
        self.expected = math.inf
        self.delivered = 0
        self.latencies: list[list[float]] = [[] for _ in range(max_distance + 1)]
        self.sent_at: list[list[float]] = [[] for _ in range(max_distance + 1)]
        """Send time of each delivery in ``latencies``, seconds after ``start``."""
        self.start = time.perf_counter()
        self.last = 0.0
        self.reached: dict[tuple[int, int], int] = {}
        """(publisher, seq) -> receivers reached, to time the last full delivery."""
        self.last_full = 0.0
        self.full = 0
        self.last_cpu = 0.0
        self.published = 0
        self.stalls = 0
        """Times a windowed publisher gave up waiting for a full delivery (a lost message)."""
        self.done = asyncio.Event()
        self.progress = asyncio.Event()
        """Set whenever a message reached every receiver (windowed publishers wait on it)."""

    def record(self, publisher: int, seq: int, distance: int, latency: float, now: float) -> None:
        self.delivered += 1
        self.latencies[distance].append(latency)
        self.sent_at[distance].append(now - latency - self.start)
        self.last = now
        self.last_cpu = time.process_time()
        key = (publisher, seq)
        reached = self.reached.get(key, 0) + 1
        if reached == self.receivers:
            del self.reached[key]
            self.full += 1
            self.last_full = now
            self.progress.set()
        else:
            self.reached[key] = reached
        if self.delivered >= self.expected:
            self.done.set()

    def expect(self, deliveries: int) -> None:
        self.expected = deliveries
        if self.delivered >= deliveries:
            self.done.set()


class Cluster:
    """Real korium nodes of one topology in this process, each reading the topic."""

    def __init__(self, topology: str, nodes: list[Node], edges: list[tuple[int, int]]) -> None:
        self.topology = topology
        self.nodes = nodes
        self.edges = edges
        self.distance = distances(len(nodes), edges)
        self.recorder: Recorder | None = None
        self.stray = 0
        """Deliveries of an earlier run that arrived after it ended."""
        self.runs = 0
        self._consumers = [asyncio.create_task(self._consume(i)) for i in range(len(nodes))]

    @classmethod
    async def build(cls, topology: str, **settings: Any) -> Cluster:
        count, edges = edges_of(topology)
        nodes: list[Node] = []
        for _ in range(count):
            builder = Node.builder(f"{HOST}:0").difficulty(0).plugins([gossip_plugin])
            if settings:
                builder = builder.plugin_settings("gossipsub", **settings)
            nodes.append(await builder.build())
        for node in nodes:
            await node.subscribe(TOPIC)
        for a, b in edges:
            await nodes[a].connect(nodes[b].identity, [nodes[b].local_addr])
        cluster = cls(topology, nodes, edges)
        await cluster._await_meshes()
        return cluster

    async def _await_meshes(self) -> None:
        """Until each node's mesh is exactly its neighbours (grafts happen on heartbeats)."""
        wanted = self._wanted()
        deadline = time.perf_counter() + MESH_TIMEOUT
        while True:
            meshes = [set(gossip_service(n).mesh_peers(TOPIC)) for n in self.nodes]
            if meshes == wanted:
                return
            if time.perf_counter() > deadline:
                sizes = [len(m) for m in meshes]
                raise RuntimeError(f"{self.topology}: meshes not formed (sizes {sizes})")
            await asyncio.sleep(0.05)

    async def _consume(self, index: int) -> None:
        async for message in self.nodes[index].messages(TOPIC):
            now = time.perf_counter()
            run, publisher, seq, sent = STAMP.unpack_from(message.data)
            recorder = self.recorder
            if recorder is None or run != recorder.run:
                self.stray += 1
                continue
            recorder.record(publisher, seq, self.distance[publisher][index], now - sent, now)

    def intact(self) -> bool:
        """Whether each node's mesh is still exactly its neighbours."""
        return all(
            set(gossip_service(node).mesh_peers(TOPIC)) == wanted
            for node, wanted in zip(self.nodes, self._wanted(), strict=True)
        )

    def _wanted(self) -> list[set[Identity]]:
        wanted: list[set[Identity]] = [set() for _ in self.nodes]
        for a, b in self.edges:
            wanted[a].add(self.nodes[b].identity)
            wanted[b].add(self.nodes[a].identity)
        return wanted

    def counters(self) -> dict[str, float]:
        totals = dict.fromkeys(COUNTERS, 0.0)
        for node in self.nodes:
            stats = node.stats()
            for name in COUNTERS:
                totals[name] += stats.get(f"gossipsub.{name}", 0)
        return totals

    async def close(self) -> None:
        for task in self._consumers:
            task.cancel()
        await asyncio.gather(*self._consumers, return_exceptions=True)
        for node in self.nodes:
            await node.close()


# -- one run ------------------------------------------------------------------------------------


@dataclass(slots=True)
class Result:
    label: str
    publishers: int
    offered: float | None
    """Messages/s offered in total (None: closed loop)."""
    window: int | None
    published: int
    publish_seconds: float
    expected: int
    delivered: int
    elapsed: float
    """First publish to last delivery, seconds."""
    full: int
    """Messages delivered to every other node."""
    to_all_elapsed: float
    """First publish to last full delivery, seconds."""
    cpu: float
    """CPU seconds of this process from the first publish to the last delivery."""
    wait_share: float | None
    """Share of the run this process was ready to run but waited for a core (other load)."""
    stalls: int
    """Closed loop: times a publisher stopped waiting for a message that never reached all."""
    latencies: list[list[float]]
    """Per hop distance."""
    sent_at: list[list[float]]
    """Send time of each of ``latencies``, seconds after the first publish."""
    counters: dict[str, float] = field(default_factory=dict)

    @property
    def hop_rate(self) -> float:
        return self.delivered / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def to_all_rate(self) -> float:
        return self.full / self.to_all_elapsed if self.to_all_elapsed > 0 else 0.0

    @property
    def publish_rate(self) -> float:
        return self.published / self.publish_seconds if self.publish_seconds > 0 else 0.0

    @property
    def ratio(self) -> float:
        return self.delivered / self.expected if self.expected else 0.0

    @property
    def cpu_per_delivery(self) -> float:
        return self.cpu / self.delivered if self.delivered else math.inf

    @property
    def per_cpu_second(self) -> float:
        """Hop-deliveries per CPU second: the rate of a process that has a core to itself."""
        return self.delivered / self.cpu if self.cpu > 0 else 0.0

    @property
    def cpu_share(self) -> float:
        """CPU seconds per wall second over the run (1.0: one core fully used)."""
        return self.cpu / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def pooled(self) -> list[float]:
        return [x for group in self.latencies for x in group]

    @property
    def per_frame(self) -> float:
        frames = self.counters.get("frames_sent", 0.0)
        return self.counters.get("messages_sent", 0.0) / frames if frames else 0.0

    def sustained(self) -> bool:
        pooled = self.pooled
        return (
            self.offered is not None
            and self.ratio >= SUSTAINED_DELIVERED
            and self.publish_rate >= SUSTAINED_PUBLISHED * self.offered
            and bool(pooled)
            and percentile(pooled, 0.99) <= SUSTAINED_P99
        )


async def publish_loop(
    node: Node,
    recorder: Recorder,
    index: int,
    *,
    rate: float | None,
    window: int | None,
    count: int,
    seconds: float,
) -> int:
    """Publish *count* messages, or for *seconds*: paced at *rate*, or as fast as the
    *window* of messages not yet delivered to everyone allows (closed loop)."""
    sent = 0
    start = time.perf_counter()
    deadline = start + seconds
    while sent < count:
        now = time.perf_counter()
        if now >= deadline:
            break
        if rate is None:
            batch = 1
            while window is not None and recorder.published - recorder.full >= window:
                recorder.progress.clear()
                try:
                    await asyncio.wait_for(recorder.progress.wait(), STALL)
                except TimeoutError:
                    recorder.stalls += 1
                    break
        else:
            due = min(count, int((now - start) * rate) + 1)
            batch = min(due - sent, MAX_CATCH_UP)
            if batch <= 0:
                await asyncio.sleep(start + sent / rate - now)
                continue
        for _ in range(batch):
            recorder.published += 1
            await node.publish(TOPIC, payload(recorder.run, index, sent))
            sent += 1
        await asyncio.sleep(0)
    return sent


async def load(
    cluster: Cluster,
    label: str,
    publishers: Sequence[int],
    *,
    rate: float | None,
    window: int | None = None,
    count: int = sys.maxsize,
    seconds: float = math.inf,
) -> Result:
    """One run: publish, wait for every delivery (or quiet), measure."""
    cluster.runs += 1
    receivers = len(cluster.nodes) - 1
    recorder = Recorder(cluster.runs, max(map(max, cluster.distance)), receivers)
    cluster.recorder = recorder
    before = cluster.counters()
    share = None if rate is None else rate / len(publishers)
    cpu = time.process_time()
    waited = run_queue_wait()
    start = recorder.start = time.perf_counter()
    sent = await asyncio.gather(
        *(
            publish_loop(
                cluster.nodes[p],
                recorder,
                p,
                rate=share,
                window=window,
                count=count,
                seconds=seconds,
            )
            for p in publishers
        )
    )
    publish_seconds = time.perf_counter() - start
    published = sum(sent)
    recorder.expect(published * receivers)
    cap = time.perf_counter() + max(DRAIN_CAP, publish_seconds)
    while not recorder.done.is_set():
        now = time.perf_counter()
        if now - max(recorder.last, start + publish_seconds) > QUIET or now > cap:
            break
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(recorder.done.wait(), 0.1)
    cpu = (recorder.last_cpu or time.process_time()) - cpu
    end_wait = run_queue_wait()
    span = (recorder.last - start) if recorder.delivered else time.perf_counter() - start
    wait_share = None if waited is None or end_wait is None else (end_wait - waited) / span
    cluster.recorder = None
    after = cluster.counters()
    return Result(
        label=label,
        publishers=len(publishers),
        offered=rate,
        window=window,
        published=published,
        publish_seconds=publish_seconds,
        expected=published * receivers,
        delivered=recorder.delivered,
        elapsed=(recorder.last - start) if recorder.delivered else 0.0,
        full=recorder.full,
        to_all_elapsed=(recorder.last_full - start) if recorder.full else 0.0,
        cpu=cpu,
        wait_share=wait_share,
        stalls=recorder.stalls,
        latencies=recorder.latencies,
        sent_at=recorder.sent_at,
        counters={k: after[k] - before[k] for k in COUNTERS},
    )


def run_queue_wait() -> float | None:
    """Seconds this (main) thread has spent runnable but waiting for a CPU (Linux only)."""
    try:
        with open("/proc/self/schedstat") as file:
            return int(file.read().split()[1]) / 1e9
    except (OSError, IndexError, ValueError):
        return None


def share_text(share: float | None) -> str:
    return "-" if share is None else f"{share:.2f}"


async def settle() -> None:
    """Let queues drain and stragglers arrive between runs."""
    await asyncio.sleep(SETTLE)


# -- baseline: raw one-way messages -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RawRun:
    burst: int
    rate: float
    cpu: float


async def raw_baseline(count: int, repeat: int) -> list[RawRun]:
    """The kernel's one-way message throughput between two nodes of this process (the
    measurement of ``benchmarks/messages.py``, with this benchmark's payload)."""
    nodes = [await Node.builder(f"{HOST}:0").difficulty(0).plugins([]).build() for _ in range(2)]
    sender, receiver = nodes
    counter = raw.Counter()
    receiver.rpc.register_message(raw.PROTOCOL, counter)
    await sender.connect(receiver.identity, [receiver.local_addr])
    runs: list[RawRun] = []
    try:
        for burst in RAW_BURSTS:
            await raw.measure(
                raw.STREAM, sender, receiver, counter, max(1, count // 10), burst, PAYLOAD_SIZE
            )
            measured = [
                await raw.measure(raw.STREAM, sender, receiver, counter, count, burst, PAYLOAD_SIZE)
                for _ in range(repeat)
            ]
            rate = statistics.median(r.rate for r in measured)
            runs.append(RawRun(burst, rate, statistics.median(r.cpu for r in measured)))
    finally:
        for node in nodes:
            await node.close()
    return runs


# -- formatting ---------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.1f}" if seconds < 10 else f"{seconds * 1e3:,.0f}"


def rate_text(rate: float) -> str:
    return f"{rate:,.0f}" if rate >= 100 else f"{rate:.1f}"


def latency_cells(latencies: Sequence[float]) -> list[str]:
    if not latencies:
        return ["-", "-"]
    return [ms(statistics.median(latencies)), ms(percentile(latencies, 0.99))]


def report_offered(results: dict[str, Result]) -> None:
    print(
        f"1. Offered {OFFERED_RATE:.0f} msg/s by one publisher (default settings), "
        f"{PAYLOAD_SIZE}-byte signed messages"
    )
    rows = []
    for topology, r in results.items():
        rows.append(
            [
                f"korium {topology}",
                f"{r.publish_rate:.1f}/s",
                f"{r.delivered}/{r.expected}",
                *latency_cells(r.pooled),
                rate_text(r.to_all_rate),
                rate_text(r.hop_rate),
                f"{r.cpu_share:.2f}",
                share_text(r.wait_share),
                f"{r.cpu_per_delivery * 1e6:,.0f}",
            ]
        )
    for ref in REFERENCES[:5]:
        rows.append(
            [
                f"py-libp2p {ref.run}*",
                ref.offered,
                ref.delivered,
                ref.median_ms,
                ref.p99_ms,
                ref.to_all,
                ref.hop_deliveries,
                "",
                "",
                "",
            ]
        )
    table(
        [
            "run",
            "published",
            "delivered/expected",
            "median ms",
            "p99 ms",
            "msgs/s to all",
            "hop-deliveries/s",
            "CPU share",
            "CPU wait",
            "CPU us/hop-delivery",
        ],
        rows,
    )
    print(
        "  * py-libp2p 0.8.1 (trio), peers.md 4.1: NOT measured here; hop-deliveries = "
        "msgs/s to all x receivers"
    )
    print(
        "  CPU share = this process's CPU seconds / wall seconds over the run; CPU wait = share "
        "of it spent ready to run but waiting for a core (other load on the machine); CPU per "
        "hop-delivery includes the idle loop's timers and heartbeats"
    )
    print()
    print(
        "   Latency by hop distance from the publisher (offered 100 msg/s); 'first' = "
        f"messages sent in the first {BURST_WINDOW:.0f} s, while the sender's frame budget "
        f"(a burst of {SENDER_BURST} frames) lasts; 'after' = the rest, paced at "
        f"{_DEFAULTS.receive_rate:.0f} frames/s per peer"
    )
    rows = []
    for topology, r in results.items():
        for hops, group in enumerate(r.latencies):
            if not group:
                continue
            early = [x for x, t in zip(group, r.sent_at[hops], strict=True) if t < BURST_WINDOW]
            late = [x for x, t in zip(group, r.sent_at[hops], strict=True) if t >= BURST_WINDOW]
            rows.append(
                [
                    topology,
                    str(hops),
                    str(len(group)),
                    *latency_cells(group),
                    ms(statistics.median(group) / hops),
                    latency_cells(early)[0],
                    *latency_cells(late),
                ]
            )
    table(
        [
            "topology",
            "hops",
            "deliveries",
            "median ms",
            "p99 ms",
            "median/hop ms",
            "first: median",
            "after: median",
            "p99",
        ],
        rows,
    )
    print()


def report_saturation(found: list[Saturation], raw: RawRun) -> None:
    print(
        "2. Saturation: publish_rate and source_rate raised to "
        f"{SATURATION_PUBLISH_RATE:,.0f}/s on these clusters' nodes (defaults 100/s and "
        "200/s); every node in this one process; a fresh cluster "
        f"per configuration, warmed up {WARM_UP:.1f} s"
    )
    rows = []
    for sat in found:
        for r in [sat.closed, *sat.tries]:
            if r.offered is None:
                offered = f"window {r.window}"
                verdict = ""
            else:
                offered = f"{r.offered:,.0f}/s"
                verdict = "sustained" if r.sustained() else "no"
            rows.append(
                [
                    sat.name if r is sat.closed else "",
                    offered,
                    f"{r.publish_rate:,.0f}/s",
                    f"{r.ratio * 100:.2f}%",
                    *latency_cells(r.pooled),
                    rate_text(r.to_all_rate),
                    rate_text(r.hop_rate),
                    f"{r.cpu_share:.2f}",
                    share_text(r.wait_share),
                    f"{r.cpu_per_delivery * 1e6:,.0f}",
                    rate_text(r.per_cpu_second),
                    f"{r.per_frame:.1f}",
                    f"{r.counters.get('frames_over_receive_rate', 0):,.0f}",
                    verdict,
                ]
            )
    table(
        [
            "cluster, publishers",
            "offered",
            "published",
            "delivered",
            "median ms",
            "p99 ms",
            "msgs/s to all",
            "hop-deliv/s",
            "CPU share",
            "CPU wait",
            "CPU us/deliv",
            "per CPU-s",
            "msgs/frame",
            "rate-limited",
            "verdict",
        ],
        rows,
    )
    print(
        f"  window N = closed loop: publishers go as fast as they can while at most N messages "
        "are not yet delivered to every receiver; then paced runs from 90% of its msgs/s to "
        f"all, -20% a try. sustained = >= {SUSTAINED_DELIVERED * 100:.1f}% delivered, "
        f"publishers kept >= {SUSTAINED_PUBLISHED * 100:.0f}% of the offered rate, p99 <= "
        f"{SUSTAINED_P99 * 1e3:.0f} ms. per CPU-s = hop-deliveries / CPU seconds. "
        "rate-limited = frames a receiver dropped over its 50 frames/s per-peer limit"
    )
    notes = []
    for sat in found:
        dropped = sum(r.counters.get("dropped_peer_queue", 0) for r in [sat.closed, *sat.tries])
        pruned = sum(r.counters.get("pruned_negative_score", 0) for r in [sat.closed, *sat.tries])
        stalls = sum(r.stalls for r in [sat.closed, *sat.tries])
        if dropped or pruned or sat.rebuilds or stalls:
            notes.append(
                f"{sat.name}: {dropped:,.0f} forwarded messages dropped on full peer queues, "
                f"{pruned:,.0f} mesh peers pruned for a negative score, "
                f"{sat.rebuilds} cluster(s) rebuilt because a mesh broke, "
                f"{stalls} closed-loop stalls (a message never reached everyone)"
            )
    for note in notes:
        print(f"  note: {note}")
    print()
    print("   Headline: hop-deliveries/s per process at saturation")
    rows = []
    for sat in found:
        best = sat.best
        chosen = best or sat.closed
        figure = best.per_cpu_second if best is not None else 0.0
        rows.append(
            [
                f"korium {sat.name}",
                rate_text(best.hop_rate) if best is not None else "none",
                f"{chosen.cpu_share:.2f}",
                share_text(chosen.wait_share),
                rate_text(figure) if best is not None else "-",
                rate_text(sat.closed.hop_rate),
                rate_text(sat.closed.per_cpu_second),
                f"{chosen.cpu_per_delivery * 1e6:,.0f}",
                f"{raw.cpu / chosen.cpu_per_delivery:.3f}",
                "MET" if figure >= TARGET else "NOT MET",
            ]
        )
    for ref in REFERENCES[5:]:
        cells = [ref.hop_deliveries, "1 core", "", ref.hop_deliveries, "", "", "", "", ""]
        rows.append([f"py-libp2p {ref.run}*", *cells])
    table(
        [
            "system",
            "sustained (wall)",
            "CPU share",
            "CPU wait",
            "per CPU-s",
            "closed loop (wall)",
            "(per CPU-s)",
            "CPU us/deliv",
            "of ceiling",
            f"target >= {TARGET:,.0f}",
        ],
        rows,
    )
    print(
        "  * py-libp2p 0.8.1, peers.md 4.1 headline (96 x 5, 40-44 x 9): NOT measured here; "
        "all its hosts shared one core, so its figures are per CPU-second too."
    )
    print(
        "  per CPU-s = sustained hop-deliveries per CPU second of this process, the rate of a "
        "process with a core to itself; the target is judged on it, because other load on the "
        "machine lowers the wall figure (CPU wait = share of the run this process was ready but "
        "had no core; CPU share + CPU wait < 1: it waited idle). of ceiling = raw one-way "
        "message CPU "
        f"({raw.cpu * 1e6:.1f} us, burst {raw.burst}) / gossip CPU per hop-delivery: the "
        "gossip rate as a share of the kernel's message rate per CPU second"
    )
    print()


def report_raw(raw: list[RawRun]) -> None:
    print(
        "0. Baseline (transport ceiling): raw one-way messages between two korium nodes in "
        f"this process, node.rpc.send_message, {PAYLOAD_SIZE} B, no plugin"
    )
    table(
        ["burst", "messages/s", "CPU share", "CPU us/message", "per CPU-s"],
        [
            [
                str(r.burst),
                f"{r.rate:,.0f}",
                f"{r.rate * r.cpu:.2f}",
                f"{r.cpu * 1e6:.1f}",
                f"{1 / r.cpu:,.0f}",
            ]
            for r in raw
        ],
    )
    print()


# -- the benchmark ------------------------------------------------------------------------------


@dataclass(slots=True)
class Saturation:
    """One saturation configuration: the closed-loop run and the paced tries after it."""

    name: str
    closed: Result
    tries: list[Result]
    rebuilds: int
    """Fresh clusters built because a run left a mesh broken (a peer pruned for its score)."""

    @property
    def best(self) -> Result | None:
        return next((r for r in self.tries if r.sustained()), None)


async def saturation_cluster(topology: str, publishers: list[int]) -> Cluster:
    """A fresh cluster with the publish rate raised, warmed up (connections past slow start)."""
    cluster = await Cluster.build(
        topology, publish_rate=SATURATION_PUBLISH_RATE, source_rate=SATURATION_PUBLISH_RATE
    )
    await load(cluster, "warm-up", publishers, rate=None, window=WINDOW, seconds=WARM_UP)
    await settle()
    return cluster


async def saturate(topology: str, name: str, publishers: list[int], seconds: float) -> Saturation:
    """Closed loop first; then paced runs from 90% of its rate down to a sustained one."""
    status(f"{name}: building")
    cluster = await saturation_cluster(topology, publishers)
    rebuilds = 0
    try:
        status(f"{name}: closed loop")
        closed = await load(cluster, name, publishers, rate=None, window=WINDOW, seconds=seconds)
        await settle()
        tries: list[Result] = []
        rate = FIRST_TRY * closed.to_all_rate
        for attempt in range(TRIES):
            if not cluster.intact():
                await cluster.close()
                rebuilds += 1
                status(f"{name}: rebuilding (a mesh broke)")
                cluster = await saturation_cluster(topology, publishers)
            status(f"{name}: paced at {rate:,.0f}/s (try {attempt + 1})")
            count = max(1, int(rate * seconds / len(publishers)))
            result = await load(cluster, name, publishers, rate=rate, count=count)
            await settle()
            tries.append(result)
            if result.sustained():
                break
            rate *= STEP_DOWN
    finally:
        await cluster.close()
    return Saturation(name, closed, tries, rebuilds)


async def benchmark(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    status("baseline: raw one-way messages")
    raw = await raw_baseline(args.raw_messages, args.repeat)

    offered: dict[str, Result] = {}
    for topology in TOPOLOGIES:
        status(f"{topology}: building (default settings)")
        cluster = await Cluster.build(topology)
        try:
            status(f"{topology}: {args.messages} messages at {OFFERED_RATE:.0f}/s")
            offered[topology] = await load(
                cluster, topology, [0], rate=OFFERED_RATE, count=args.messages
            )
        finally:
            await cluster.close()

    found: list[Saturation] = []
    for topology in TOPOLOGIES:
        count, _ = edges_of(topology)
        first = "node 0" if topology == LINE6 else "hub"
        found.append(await saturate(topology, f"{topology}, {first}", [0], args.seconds))
        if not args.quick:
            everyone = list(range(count))
            name = f"{topology}, all {count}"
            found.append(await saturate(topology, name, everyone, args.seconds))
    status("")

    report_raw(raw)
    report_offered(offered)
    report_saturation(found, raw[-1])
    print(f"  wall time {time.perf_counter() - started:.0f} s")


# -- profile ------------------------------------------------------------------------------------

StatsKey = tuple[str, int, str]
StatsRow = tuple[int, int, float, float, object]


def where(key: StatsKey) -> str:
    path, line, name = key
    if path == "~":
        return name
    if "site-packages" + os.sep in path:
        path = path.split("site-packages" + os.sep, 1)[1]
    elif path.startswith(ROOT + os.sep):
        path = os.path.relpath(path, ROOT)
    elif path.startswith(STDLIB + os.sep):
        path = os.path.relpath(path, STDLIB)
    return f"{path}:{line}({name})"


GENERIC: Final = "builtins"


def component(key: StatsKey) -> str:
    """Which part of the stack a profiled function belongs to (GENERIC: ask its callers)."""
    path, _, name = key
    if path == "~":
        if "_sodium" in name:
            return "signatures (libsodium Ed25519)"
        if "blake3" in name:
            return "message ids (blake3)"
        if "poll" in name and "select" in name:
            return "epoll wait"
        if "socket" in name:
            return "socket syscalls"
        if "cryptography" in name or "_crypto" in name:
            return "QUIC packet protection (C)"
        if "aioquic" in name:
            return "aioquic C (buffers, ranges)"
        if "msgspec" in name:
            return "msgspec (frames)"
        return GENERIC
    if path == os.path.abspath(__file__):
        return "benchmark driver"
    relative = os.path.relpath(path, ROOT) if path.startswith(ROOT + os.sep) else path
    if "korium_gossipsub" in relative:
        return "gossipsub " + os.path.basename(relative).removesuffix(".py")
    if relative.startswith("korium" + os.sep):
        package = os.path.dirname(relative).removeprefix("korium").strip(os.sep)
        return "korium " + (package or os.path.basename(relative).removesuffix(".py"))
    if os.sep + "aioquic" + os.sep in path:
        return "aioquic Python"
    if os.sep + "nacl" + os.sep in path:
        return "signatures (libsodium Ed25519)"
    if os.sep + "asyncio" + os.sep in path or path.endswith("selectors.py"):
        return "asyncio event loop"
    if os.sep + "cryptography" + os.sep in path:
        return "QUIC packet protection (C)"
    return "other Python"


def components(rows: dict[StatsKey, StatsRow]) -> dict[str, float]:
    """Own seconds by component; generic builtins (len, dict.get, isinstance...) are charged
    to the components of their callers, in proportion to the time each caller spent in them."""
    totals: dict[str, float] = {}
    for key, row in rows.items():
        name = component(key)
        if name != GENERIC:
            totals[name] = totals.get(name, 0.0) + row[2]
            continue
        callers = cast(dict[StatsKey, tuple[int, int, float, float]], row[4])
        charged = 0.0
        for caller, timing in callers.items():
            owner = component(caller)
            owner = "other builtins" if owner == GENERIC else owner
            totals[owner] = totals.get(owner, 0.0) + timing[2]
            charged += timing[2]
        if row[2] > charged:
            totals["other builtins"] = totals.get("other builtins", 0.0) + row[2] - charged
    return totals


def print_top(rows: dict[StatsKey, StatsRow], count: int, cumulative: bool) -> None:
    def key(item: tuple[StatsKey, StatsRow]) -> float:
        return item[1][3] if cumulative else item[1][2]

    ranked = sorted(rows.items(), key=key, reverse=True)[:TOP]
    by = "cumulative" if cumulative else "own"
    print(f"Top {TOP} by {by} time, per hop-delivery ({count:,} hop-deliveries, profiler on)")
    table(
        ["calls/deliv", "own us/deliv", "cum us/deliv", "function"],
        [
            [
                f"{row[1] / count:.2f}",
                f"{1e6 * row[2] / count:.2f}",
                f"{1e6 * row[3] / count:.2f}",
                where(key),
            ]
            for key, row in ranked
        ],
        right=0,
    )
    print()


def crypto_costs(samples: int = 2000) -> tuple[float, float]:
    """CPU seconds of one message signature check and one signing, outside the profiler."""
    keypair = Keypair.generate()
    message = wire.sign(keypair, TOPIC, 1, bytes(PAYLOAD_SIZE))
    signed = message.payload()
    started = time.process_time()
    for _ in range(samples):
        wire.verify(message, signed)
    verify = (time.process_time() - started) / samples
    started = time.process_time()
    for seq in range(samples):
        wire.sign(keypair, TOPIC, seq, bytes(PAYLOAD_SIZE))
    return verify, (time.process_time() - started) / samples


async def profile(args: argparse.Namespace) -> None:
    """The single-publisher closed loop: once plain (true CPU), once under cProfile."""
    topology = args.profile
    status(f"{topology}: building (publish_rate and source_rate raised)")
    cluster = await saturation_cluster(topology, [0])
    try:
        status(f"{topology}: closed loop, no profiler")
        plain = await load(cluster, topology, [0], rate=None, window=WINDOW, seconds=args.seconds)
        await settle()
        status(f"{topology}: closed loop under cProfile")
        profiler = cProfile.Profile(time.process_time)
        profiler.enable()
        result = await load(cluster, topology, [0], rate=None, window=WINDOW, seconds=args.seconds)
        profiler.disable()
    finally:
        await cluster.close()
    status("")
    verify, sign = crypto_costs()
    rows = cast(dict[StatsKey, StatsRow], pstats.Stats(profiler).stats)  # type: ignore[attr-defined]
    count = result.delivered
    receivers = len(cluster.nodes) - 1
    real = plain.cpu_per_delivery
    print(
        f"Profile: {topology}, one publisher, closed loop (window {WINDOW}), "
        f"{args.seconds:.1f} s per run"
    )
    print(
        f"  without the profiler: {plain.hop_rate:,.0f} hop-deliveries/s, CPU share "
        f"{plain.cpu_share:.2f}, {real * 1e6:.0f} us CPU per hop-delivery, "
        f"{plain.per_frame:.1f} messages per frame"
    )
    print(
        f"  under cProfile: {count:,} hop-deliveries ({result.ratio * 100:.1f}% of expected), "
        f"{result.hop_rate:,.0f}/s, {result.cpu_per_delivery * 1e6:,.0f} us CPU each "
        f"({result.cpu_per_delivery / real:.1f}x inflated), {result.per_frame:.1f} per frame"
    )
    print(
        f"  measured apart (no profiler): signature check {verify * 1e6:.1f} us (one per "
        f"hop-delivery = {100 * verify / real:.0f}% of the real CPU), signing "
        f"{sign * 1e6:.1f} us (one per message = {sign / receivers * 1e6:.1f} us per "
        f"hop-delivery here)"
    )
    print()
    print_top(rows, count, cumulative=True)
    print_top(rows, count, cumulative=False)
    if args.profile_out:
        profiler.dump_stats(args.profile_out)
    totals = components(rows)
    grand = sum(totals.values())
    print(
        "Own time by component, per hop-delivery (builtins such as len or dict.get charged to "
        "their callers; the profiler inflates Python code far more than C)"
    )
    table(
        ["component", "us/deliv", "share"],
        [
            [name, f"{1e6 * value / count:.1f}", f"{100 * value / grand:.1f}%"]
            for name, value in sorted(totals.items(), key=lambda item: -item[1])
        ]
        + [["total", f"{1e6 * grand / count:.1f}", "100%"]],
    )


# -- main ---------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Measure korium GossipSub on 127.0.0.1: line6 and star10, all nodes in "
        "one process, against the kernel's raw one-way message throughput."
    )
    parser.add_argument(
        "--quick", action="store_true", help="about 20 s: fewer messages, shorter runs"
    )
    parser.add_argument(
        "--messages", type=int, help="messages of the 100 msg/s runs (default 1000; quick 200)"
    )
    parser.add_argument(
        "--seconds", type=float, help="duration of each saturation run (default 4; quick 1.5)"
    )
    parser.add_argument(
        "--raw-messages",
        type=int,
        help="messages per baseline measurement (default 20000; quick 5000)",
    )
    parser.add_argument(
        "--repeat", type=int, default=None, help="baseline repeats, median (default 3; quick 1)"
    )
    parser.add_argument(
        "--profile",
        nargs="?",
        const=STAR10,
        choices=TOPOLOGIES,
        help="instead: profile one publisher flat out (default star10)",
    )
    parser.add_argument(
        "--profile-out", metavar="FILE", help="with --profile: also save the raw pstats file"
    )
    args = parser.parse_args(argv)
    quick = args.quick
    if args.messages is None:
        args.messages = 200 if quick else 1000
    if args.seconds is None:
        args.seconds = 1.5 if quick else 4.0
    if args.raw_messages is None:
        args.raw_messages = 5000 if quick else 20_000
    if args.repeat is None:
        args.repeat = 1 if quick else 3
    if args.messages < 1 or args.raw_messages < 1 or args.repeat < 1:
        parser.error("--messages, --raw-messages and --repeat must be at least 1")
    if not args.seconds > 0:
        parser.error("--seconds must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    print("korium GossipSub benchmark, 127.0.0.1, every node in this process (one asyncio loop)")
    print(
        f"  python {platform.python_version()}, aioquic {version('aioquic')}, "
        f"msgspec {version('msgspec')}, PyNaCl {version('pynacl')}, {platform.machine()}, "
        f"cpu_count {os.cpu_count()}, load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    if args.profile:
        asyncio.run(profile(args))
        return 0
    print(
        f"  {PAYLOAD_SIZE}-byte signed messages; GossipSub defaults (D 6/5/12, heartbeat 1 s, "
        "flood publish, scoring on); proof-of-work difficulty 0"
    )
    print(
        f"  100 msg/s runs: {args.messages} messages; saturation runs: {args.seconds:.1f} s "
        f"each; baseline: {args.raw_messages:,} messages x {args.repeat}"
    )
    print()
    asyncio.run(benchmark(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
