"""DHT benchmark: lookup latency on loopback, lookup cost at scale, and memory per node.

Run ``python benchmarks/dht.py [--real-nodes N] [--lookups M] [--sim-nodes N] [--sim-lookups M]
[--skip-real] [--skip-sim] [--memory/--no-memory]``.

Three parts:

1. **Loopback lookup latency** (real QUIC, wall clock). ``--real-nodes`` nodes in this process,
   on 127.0.0.1, proof-of-work difficulty 8, the ``dht`` plugin only. Each joins through a
   random earlier node (``node.bootstrap``), then every node publishes its address. Then
   ``--lookups`` iterations, one after another; each picks a random source node and a random
   other node as the target and runs, in an order rotated per iteration:

   * **full lookup**: ``plugin.service(node).lookup(bytes(target))``, the call behind
     ``node.find_peers(target)`` (the k closest peers that answered), which also gives the
     lookup's metrics;
   * **exact lookup**: the same with ``exact=True`` (stops once the target itself answers);
   * **resolve**: ``node.resolve(target)`` (a FIND_VALUE lookup with ``exact=True``: stops at
     the first stored record, or when the target answers); its queries are the source node's
     ``lookup_queries`` counter delta;
   * **RPC ping** (the baseline, same iteration): ``node.send`` from node 0 to node 1, whose
     ``set_request_handler`` echoes the 64-byte body: one request/response on a warm connection.

   Latency is ``time.perf_counter`` around the awaited call; "lookup / RPC" divides a lookup
   percentile by the same percentile of the pings. Connections are pooled as usual, so a
   lookup pays a QUIC handshake whenever it asks a peer its node is not connected to.

2. **Simulation** (``korium.testing.run``: virtual time, the plugin's unmodified code on
   ``SimNetwork``). ``SimDht.build(--sim-nodes, seed=1, regions=REGIONS_3)``: nodes spread over
   three regions (one-way 5 ms inside a region, 40 / 60 / 80 ms between them), each joining
   through a random node that already joined. Then, with separate seeded random sources,
   ``--sim-concurrency`` lookups at a time (as ``SimDht.lookups``; the simulated network has
   no CPU or bandwidth model, so running them together only shortens the virtual duration,
   and with it the background work such as bucket refreshes):

   * ``--sim-lookups`` full lookups (default settings, tiering on) of random existing
     identities from random nodes, next to the idealised reference in ``peers.md`` section 6.4;
   * tiering on vs off on the same network (``SimDht.set_tiering``), exact lookups and full
     lookups: pairs drawn alternately for on and off from one seeded random source (not the
     same pairs twice: a lookup teaches its source the target, so a rerun finds it in round
     0); batches with tiering on and off run back to back, the first alternating;
   * 20% of the nodes removed abruptly (``SimDht.remove``), then full and exact lookups among
     the survivors.

   Success = the lookup's closest answering peer is the target. Rounds: the deepest round
   asked (1 = peers from the source's own table). Found round: the round whose answer first
   named the target (0 = it was in the source's table). Queries: requests the lookup sent.
   Latency is virtual: the lookup's duration on the simulated clock.

3. **Memory per node** in the simulation, right after the build: RSS (current and peak) before
   and after the build, and a deep-size estimate of the DHT state alone (routing table, store,
   latency tiers, adaptive parameters, rate limiters, counters, settings) over a sample of
   nodes. With ``--memory`` (off by default: it slows the build about 2.5-3x, and the build
   time printed includes that) ``tracemalloc`` also runs during the build: the traced live
   memory divided by the node count, and its breakdown by allocation site (the innermost
   Python frame's file).
"""

from __future__ import annotations

import argparse
import asyncio
import enum
import gc
import math
import os
import platform
import random
import resource
import statistics
import sys
import time
import tracemalloc
import types
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Final

from _report import status, table
from korium_dht import plugin
from korium_dht.config import DhtConfig
from korium_dht.service import DhtService, LookupResult
from korium_dht.simulation import REGIONS_3, LookupReport, SimDht

from korium import Node, NodeIdentity
from korium.identity import Identity
from korium.testing import run as run_virtual

HOST: Final = "127.0.0.1"
DIFFICULTY: Final = 8
PAYLOAD: Final = bytes(range(64))
REMOVED_FRACTION: Final = 0.2
DEEP_SIZE_SAMPLE: Final = 100
ROOT: Final = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STDLIB: Final = os.path.dirname(os.__file__)


@dataclass(frozen=True, slots=True)
class Reference:
    """A row of the idealised hop table (peers.md 6.4: 64-bit ids, k=20, alpha=3, lock-step)."""

    nodes: int
    found_mean: float
    found_max: int
    terminate_mean: float
    queried_mean: float


REFERENCES: Final = (
    Reference(1_000, 0.88, 2, 2.88, 21.4),
    Reference(10_000, 1.36, 2, 3.36, 22.8),
    Reference(100_000, 1.92, 3, 3.92, 24.5),
)
THRESHOLD_FOUND_ROUNDS: Final = 3
THRESHOLD_QUERIES: Final = 30


# -- statistics and formatting ------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:,.2f} ms"


def vms(seconds: float) -> str:
    """Virtual milliseconds (sums of whole-millisecond link latencies)."""
    return f"{seconds * 1e3:,.0f} ms"


def mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else 0.0


def mean_max(values: Sequence[float], digits: int = 2) -> str:
    if not values:
        return "-"
    return f"{mean(values):.{digits}f} / {max(values):g}"


def pct(fraction: float) -> str:
    return f"{100 * fraction:.1f}%"


def kib(size: float) -> str:
    return f"{size / 1024:,.1f} KiB"


def mib(size: float) -> str:
    return f"{size / 2**20:,.1f} MiB"


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b > 0 else "-"


# -- 1. loopback ----------------------------------------------------------------------------


@dataclass(slots=True)
class Series:
    """Latencies (s) of one kind of operation, and what each cost."""

    latencies: list[float] = field(default_factory=list)
    queries: list[float] = field(default_factory=list)
    rounds: list[float] = field(default_factory=list)
    succeeded: int = 0

    def add(self, latency: float, ok: bool, queries: float, rounds: float | None = None) -> None:
        self.latencies.append(latency)
        self.queries.append(queries)
        if rounds is not None:
            self.rounds.append(rounds)
        self.succeeded += ok


async def real_node() -> Node:
    identity = NodeIdentity.generate(difficulty=DIFFICULTY)
    return await (
        Node.builder(f"{HOST}:0").identity(identity).difficulty(DIFFICULTY).plugins(["dht"]).build()
    )


def _echo(peer: Identity, data: bytes) -> bytes:
    return data


async def loopback(count: int, iterations: int, seed: int) -> None:
    rng = random.Random(seed)
    nodes: list[Node] = []
    try:
        started = time.perf_counter()
        for index in range(count):
            status(f"loopback: starting node {index + 1}/{count}")
            nodes.append(await real_node())
        built = time.perf_counter()
        for index in range(1, count):
            status(f"loopback: bootstrapping node {index + 1}/{count}")
            node, seed_node = nodes[index], rng.choice(nodes[:index])
            await node.bootstrap(seed_node.identity, seed_node.routable_addresses()[0])
        joined = time.perf_counter()
        for index, node in enumerate(nodes):
            status(f"loopback: publishing {index + 1}/{count}")
            await node.publish_address(node.routable_addresses())
        published = time.perf_counter()
        addresses = {node.identity: node.routable_addresses() for node in nodes}

        client, server = nodes[0], nodes[1]
        server.set_request_handler(_echo)
        server_addresses = addresses[server.identity]
        for _ in range(50):  # warm-up: connection and code paths
            await client.send(server.identity, PAYLOAD, addresses=server_addresses)

        full, exact, resolved, pings = Series(), Series(), Series(), Series()

        async def do_full(source: Node, target: Node) -> None:
            t0 = time.perf_counter()
            result = await plugin.service(source).lookup(bytes(target.identity))
            elapsed = time.perf_counter() - t0
            ok = bool(result.contacts) and result.contacts[0].identity == target.identity
            full.add(elapsed, ok, result.metrics.queries, result.metrics.rounds)

        async def do_exact(source: Node, target: Node) -> None:
            t0 = time.perf_counter()
            result = await plugin.service(source).lookup(bytes(target.identity), exact=True)
            elapsed = time.perf_counter() - t0
            ok = bool(result.contacts) and result.contacts[0].identity == target.identity
            exact.add(elapsed, ok, result.metrics.queries, result.metrics.rounds)

        async def do_resolve(source: Node, target: Node) -> None:
            counters = plugin.service(source).counters
            before = counters["lookup_queries"]
            t0 = time.perf_counter()
            contact = await source.resolve(target.identity)
            elapsed = time.perf_counter() - t0
            ok = (
                contact is not None
                and contact.identity == target.identity
                and list(contact.addresses) == addresses[target.identity]
            )
            resolved.add(elapsed, ok, counters["lookup_queries"] - before)

        async def do_ping(source: Node, target: Node) -> None:
            t0 = time.perf_counter()
            answer = await client.send(server.identity, PAYLOAD, addresses=server_addresses)
            pings.add(time.perf_counter() - t0, answer == PAYLOAD, 1)

        steps: list[Callable[[Node, Node], Awaitable[None]]] = [
            do_full,
            do_exact,
            do_resolve,
            do_ping,
        ]
        for index in range(iterations):
            if index % 50 == 0:
                status(f"loopback: iteration {index}/{iterations}")
            source, target = rng.sample(nodes, 2)
            shift = index % len(steps)
            for step in steps[shift:] + steps[:shift]:
                await step(source, target)
        measured = time.perf_counter()
        connections = [len(node.rpc.connected_peers()) for node in nodes]
        status("")
    finally:
        closing = time.perf_counter()
        await asyncio.gather(*(node.close() for node in nodes), return_exceptions=True)
        closed = time.perf_counter()

    print(f"1. Loopback lookup latency: {count} real nodes on {HOST} (QUIC), wall clock")
    print(
        f"  setup: start {built - started:.1f} s, bootstrap (each through a random earlier node) "
        f"{joined - built:.1f} s, publish_address on every node {published - joined:.1f} s; "
        f"close {closed - closing:.1f} s"
    )
    print(
        f"  {iterations} iterations of (full lookup, exact lookup, resolve, RPC ping), order "
        f"rotated per iteration, random source and target; {measured - published:.1f} s"
    )
    print(
        f"  open connections per node at the end: mean {mean(connections):.1f}, "
        f"min {min(connections)}, max {max(connections)} (of {count - 1} peers)"
    )
    print()
    base_p50 = percentile(pings.latencies, 0.5)
    base_p99 = percentile(pings.latencies, 0.99)
    rows = []
    for name, series in (
        ("full lookup (find_peers)", full),
        ("exact lookup", exact),
        ("resolve", resolved),
        ("RPC ping (baseline)", pings),
    ):
        p50 = percentile(series.latencies, 0.5)
        p99 = percentile(series.latencies, 0.99)
        rows.append(
            [
                name,
                pct(series.succeeded / len(series.latencies)),
                ms(p50),
                ms(p99),
                ms(max(series.latencies)),
                ratio(p50, base_p50),
                ratio(p99, base_p99),
                f"{mean(series.queries):.1f}",
                f"{mean(series.rounds):.2f}" if series.rounds else "-",
            ]
        )
    table(
        [
            "operation",
            "success",
            "median",
            "p99",
            "max",
            "median / RPC",
            "p99 / RPC",
            "queries/op",
            "rounds/op",
        ],
        rows,
    )
    print(
        "  success: full/exact = the closest answering peer is the target; resolve = the "
        "target's record with its published addresses; ping = the echo came back"
    )
    print(
        "  queries/op: DHT requests the lookup sent (resolve: the source's lookup_queries "
        "counter delta); rounds/op: deepest round asked (1 = peers from the source's table)"
    )
    print(
        "  all nodes share this process (one event loop, one core): a lookup's parallel "
        "requests do not overlap, so its latency is roughly the CPU that both sides spend on "
        "each query, summed; a FIND_NODE answer carries up to k=20 signed contacts, the ping "
        f"{len(PAYLOAD)} bytes"
    )
    print()
    sys.stdout.flush()


# -- 2. simulation --------------------------------------------------------------------------


@dataclass(slots=True)
class Batch:
    """Simulated lookups: the plugin's report plus failed queries and real time."""

    report: LookupReport
    failures: list[int]
    real_s: float

    @property
    def summary(self) -> dict[str, float]:
        return self.report.summary()


async def lookups(
    sim: SimDht,
    count: int,
    seed: int,
    *,
    exact: bool = False,
    among: Sequence[Node] = (),
    concurrency: int = 1,
) -> Batch:
    """As :meth:`SimDht.lookups`: random source, random other node as target, *concurrency*
    lookups at once; with failed queries and real time."""
    rng = random.Random(seed)
    nodes = list(among or sim.nodes)
    pairs = [rng.sample(nodes, 2) for _ in range(count)]
    batch = Batch(LookupReport(), [], 0.0)
    for start in range(0, count, concurrency):
        status(f"simulation: lookup {start}/{count}")
        await run_pairs(sim, pairs[start : start + concurrency], exact, batch)
    status("")
    return batch


async def run_pairs(sim: SimDht, pairs: Sequence[Sequence[Node]], exact: bool, into: Batch) -> None:
    """Run one lookup per (source, target) pair, all at once, and add them to *into*."""
    started = time.perf_counter()
    results: list[LookupResult] = await asyncio.gather(
        *(sim.dht(source).lookup(bytes(target.identity), exact=exact) for source, target in pairs)
    )
    into.real_s += time.perf_counter() - started
    for (_, target), result in zip(pairs, results, strict=True):
        into.report.add(result, target.identity)
        into.failures.append(result.metrics.failures)


async def tiering_pair(
    sim: SimDht, count: int, seed: int, *, exact: bool, concurrency: int
) -> tuple[Batch, Batch]:
    """*count* lookups with tiering on and *count* with it off (``SimDht.set_tiering``).

    The pairs come from one seeded random source, drawn alternately for on and off: not the
    same pairs twice, since a lookup teaches its source the target and its neighbours, so a
    rerun of a pair starts with the target in the source's table. Batch by batch, a batch of
    *concurrency* lookups with tiering on and one with it off run back to back, the setting
    that goes first alternating, so that neither gains from running later.
    """
    rng = random.Random(seed)
    pairs = [rng.sample(sim.nodes, 2) for _ in range(2 * count)]
    pairs_on, pairs_off = pairs[0::2], pairs[1::2]
    on, off = Batch(LookupReport(), [], 0.0), Batch(LookupReport(), [], 0.0)
    for index, start in enumerate(range(0, count, concurrency)):
        status(f"simulation: tiering {'exact' if exact else 'full'} {start}/{count}")
        end = start + concurrency
        runs = [(True, pairs_on[start:end], on), (False, pairs_off[start:end], off)]
        for enabled, chunk, batch in runs if index % 2 == 0 else runs[::-1]:
            sim.set_tiering(enabled)
            await run_pairs(sim, chunk, exact, batch)
    sim.set_tiering(True)
    status("")
    return on, off


def found_distribution(report: LookupReport) -> str:
    """Lookups by the round that first named the target: 0, 1, 2, 3, 4+ and never."""
    counts = [0] * 5
    for found in report.found_rounds:
        counts[min(found, 4)] += 1
    never = report.lookups - len(report.found_rounds)
    total = max(1, report.lookups)
    parts = [f"{label}: {100 * n / total:.0f}%" for label, n in zip("01234", counts, strict=True)]
    parts[-1] = parts[-1].replace("4:", "4+:")
    return ", ".join(parts) + (f", never: {100 * never / total:.0f}%" if never else "")


def reference_for(count: int) -> Reference:
    return min(REFERENCES, key=lambda r: abs(math.log(r.nodes) - math.log(count)))


def print_main_table(batch: Batch, count: int, concurrency: int) -> None:
    s = batch.summary
    report = batch.report
    ref = reference_for(count)
    found_ok = bool(report.found_rounds) and max(report.found_rounds) <= THRESHOLD_FOUND_ROUNDS
    verdict = (
        "MET"
        if s["success_rate"] == 1.0 and found_ok and s["queries_mean"] <= THRESHOLD_QUERIES
        else "NOT MET"
    )
    print(
        f"  Full lookups: {s['lookups']:.0f} random lookups, {concurrency} at a time, default "
        f"settings (tiering on), {batch.real_s:.1f} s real"
    )
    table(
        ["metric", f"korium (N={count:,})", f"reference (N={ref.nodes:,})"],
        [
            ["success (closest = target)", pct(s["success_rate"]), "100%"],
            [
                "found round, mean / max",
                mean_max(report.found_rounds),
                f"{ref.found_mean:.2f} / {ref.found_max}",
            ],
            ["found round, share of lookups", found_distribution(report), "-"],
            [
                "rounds (deepest asked), mean / max",
                mean_max(report.rounds),
                f"{ref.terminate_mean:.2f} mean (until termination)",
            ],
            ["queries, mean / max", mean_max(report.queries, 1), f"{ref.queried_mean:.1f} mean"],
            ["failed queries, mean", f"{mean(batch.failures):.2f}", "-"],
            ["virtual latency, median", vms(s["latency_median_s"]), "-"],
            ["virtual latency, p99", vms(s["latency_p99_s"]), "-"],
        ],
    )
    print(
        "  reference: peers.md 6.4, an idealised simulation (64-bit ids, k=20, alpha=3, "
        "lock-step rounds, no churn, 300 lookups); korium: 256-bit ids, adaptive k/alpha, "
        "alpha requests kept in flight"
    )
    print(
        f"  found round: round whose answer first named the target (0 = in the source's table); "
        f"{len(report.found_rounds)} of {report.lookups} lookups learnt it. It counts the first "
        "answer to arrive: over unequal links a 2-hop path through near peers can name the "
        "target before a 1-hop answer from a far peer does, where lock-step rounds count 1"
    )
    print(
        f"  threshold (peers.md 6.4): found in <= {THRESHOLD_FOUND_ROUNDS} rounds, <= "
        f"~{THRESHOLD_QUERIES} queries per lookup, 100% success: {verdict}"
    )
    print()


def tiering_rows(label: str, on: Batch, off: Batch) -> list[list[str]]:
    rows = []
    for setting, batch in (("on", on), ("off", off)):
        s = batch.summary
        rows.append(
            [
                f"{label}, tiering {setting}",
                pct(s["success_rate"]),
                f"{s['rounds_mean']:.2f}",
                f"{s['queries_mean']:.1f}",
                vms(s["latency_median_s"]),
                vms(s["latency_p99_s"]),
                vms(mean(batch.report.latencies)),
                f"{batch.real_s:.1f} s",
            ]
        )
    s_on, s_off = on.summary, off.summary
    rows.append(
        [
            f"{label}, on / off",
            "",
            "",
            "",
            ratio(s_on["latency_median_s"], s_off["latency_median_s"]),
            ratio(s_on["latency_p99_s"], s_off["latency_p99_s"]),
            ratio(mean(on.report.latencies), mean(off.report.latencies)),
            "",
        ]
    )
    return rows


def timed_out(batch: Batch, limit: float) -> str:
    """Share of lookups that ran into the lookup timeout (they return what they have)."""
    late = sum(latency >= limit - 1e-6 for latency in batch.report.latencies)
    return pct(late / len(batch.report.latencies)) if batch.report.latencies else "-"


def print_churn_table(
    full: Batch, exact: Batch, before: int, after: int, config: DhtConfig
) -> None:
    limit = config.lookup_timeout_s
    print(
        f"  After removing {before - after:,} of {before:,} nodes abruptly (no goodbye): "
        f"{full.report.lookups:,} full and {exact.report.lookups:,} exact lookups among the "
        f"{after:,} survivors ({full.real_s:.1f} s and {exact.real_s:.1f} s real)"
    )
    metrics: list[tuple[str, Callable[[Batch], str]]] = [
        ("success (closest = target)", lambda b: pct(b.summary["success_rate"])),
        ("found round, mean / max", lambda b: mean_max(b.report.found_rounds)),
        ("rounds (deepest asked), mean / max", lambda b: mean_max(b.report.rounds)),
        ("queries, mean / max", lambda b: mean_max(b.report.queries, 1)),
        ("failed queries, mean / max", lambda b: mean_max(b.failures)),
        ("virtual latency, median", lambda b: vms(b.summary["latency_median_s"])),
        ("virtual latency, p99", lambda b: vms(b.summary["latency_p99_s"])),
        (f"stopped by the {limit:g} s lookup timeout", lambda b: timed_out(b, limit)),
    ]
    table(["metric", "full", "exact"], [[name, get(full), get(exact)] for name, get in metrics])
    print(
        "  failed queries: requests that ended unanswered before the lookup finished (an exact "
        "lookup stops once the target answers and drops the requests still pending)"
    )
    print(
        f"  a dead peer costs its asker the query timeout ({config.query_timeout_s:g} s) unless "
        "the connection is already known to be gone; a full lookup waits for all k closest"
    )
    print()


# -- 3. memory ------------------------------------------------------------------------------


def rss_now() -> int:
    """Current resident set size in bytes (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status_file:
            for line in status_file:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def rss_peak() -> int:
    """Peak resident set size in bytes (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def site(filename: str) -> str:
    """An allocation site's file, shortened: korium_dht/x.py, korium/x.py, stdlib, package."""
    path = os.path.abspath(filename)
    if os.sep + "korium_dht" + os.sep in path:
        return "korium_dht/" + path.split(os.sep + "korium_dht" + os.sep, 1)[1]
    if "site-packages" + os.sep in path:
        return path.split("site-packages" + os.sep, 1)[1].split(os.sep, 1)[0] + " (package)"
    if path.startswith(ROOT + os.sep):
        return os.path.relpath(path, ROOT)
    if path.startswith(STDLIB + os.sep):
        return os.path.relpath(path, STDLIB) + " (stdlib)"
    return filename


_OPAQUE: Final = (
    type,
    types.ModuleType,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    types.CodeType,
    enum.Enum,
)


def reachable(roots: Sequence[object], stop: set[int]) -> dict[int, int]:
    """Objects reachable from *roots* (id -> size), not entering *stop*, types or code."""
    seen: dict[int, int] = {}
    todo = list(roots)
    while todo:
        obj = todo.pop()
        key = id(obj)
        if key in seen or key in stop or isinstance(obj, _OPAQUE):
            continue
        seen[key] = sys.getsizeof(obj)
        todo.extend(gc.get_referents(obj))
    return seen


def dht_parts(service: DhtService) -> dict[str, list[object]]:
    return {
        "routing table": [service.table],
        "store": [service.store],
        "latency tiers": [service.tiers],
        "other": [
            service.adaptive,
            service._per_peer,
            service._per_ip,
            service.counters,
            service.config,
            service._contact,
        ],
    }


def dht_deep_sizes(sim: SimDht, rng: random.Random) -> dict[str, float]:
    """Mean deep size per part of the DHT state, over a sample of nodes.

    Objects shared between nodes (default settings, interned values) are excluded: for each
    sampled node, whatever is also reachable from another node's DHT state is not counted.
    """
    sample = rng.sample(sim.nodes, min(DEEP_SIZE_SAMPLE, len(sim.nodes)))
    totals: dict[str, float] = {}
    for index, node in enumerate(sample):
        other = sample[(index + 1) % len(sample)]
        parts = dht_parts(sim.dht(node))
        shared = set(reachable([r for rs in dht_parts(sim.dht(other)).values() for r in rs], set()))
        for name, roots in parts.items():
            found = reachable(roots, shared)
            totals[name] = totals.get(name, 0.0) + sum(found.values())
            shared.update(found)  # count an object once, in the first part that reaches it
    return {name: total / len(sample) for name, total in totals.items()}


@dataclass(slots=True)
class Traced:
    """What tracemalloc saw: live memory after the build and its allocation sites."""

    traced: int
    traced_peak: int
    overhead: int
    by_site: list[tuple[str, int, int]]
    snapshot_s: float


@dataclass(slots=True)
class Memory:
    nodes: int
    traced: Traced | None
    deep: dict[str, float]
    contacts_mean: float
    cache_mean: float
    records_mean: float
    rss_before: int
    rss_after: int
    peak_before: int
    peak_after: int


def measure_traced() -> Traced:
    traced, traced_peak = tracemalloc.get_traced_memory()
    overhead = tracemalloc.get_tracemalloc_memory()
    status("memory: tracemalloc snapshot")
    started = time.perf_counter()
    snapshot = tracemalloc.take_snapshot()
    grouped: dict[str, tuple[int, int]] = {}
    for stat in snapshot.statistics("filename"):
        name = site(stat.traceback[0].filename)
        size, blocks = grouped.get(name, (0, 0))
        grouped[name] = (size + stat.size, blocks + stat.count)
    del snapshot
    snapshot_s = time.perf_counter() - started
    by_site = sorted(((n, s, b) for n, (s, b) in grouped.items()), key=lambda x: -x[1])
    return Traced(traced, traced_peak, overhead, by_site, snapshot_s)


def measure_memory(sim: SimDht, rss_before: int, peak_before: int, traced: bool) -> Memory:
    gc.collect()
    rss_after, peak_after = rss_now(), rss_peak()
    seen = measure_traced() if traced else None
    status("memory: deep size of DHT state")
    deep = dht_deep_sizes(sim, random.Random(7))
    stats = [sim.dht(node).stats() for node in sim.nodes]
    status("")
    return Memory(
        nodes=len(sim.nodes),
        traced=seen,
        deep=deep,
        contacts_mean=mean([s.get("dht.table.contacts", 0) for s in stats]),
        cache_mean=mean([s.get("dht.table.replacements", 0) for s in stats]),
        records_mean=mean([s.get("dht.store.entries", 0) for s in stats]),
        rss_before=rss_before,
        rss_after=rss_after,
        peak_before=peak_before,
        peak_after=peak_after,
    )


def print_traced(seen: Traced, n: int) -> None:
    print(
        f"  tracemalloc (--memory), live memory allocated since just before the build: "
        f"{mib(seen.traced)} = {kib(seen.traced / n)} per node (peak {mib(seen.traced_peak)}); "
        f"tracemalloc's own bookkeeping ({mib(seen.overhead)}) not included"
    )
    print(
        "  it counts everything the nodes hold: Node objects, the simulated RPC endpoints and "
        "connection pools, the DHT state, pending tasks and timers, the SimNetwork's tables"
    )
    print()
    print("  By allocation site (file of the innermost Python frame that allocated the block)")
    top, rest = seen.by_site[:14], seen.by_site[14:]
    rows = [
        [name, kib(size / n), f"{blocks / n:,.0f}", pct(size / seen.traced)]
        for name, size, blocks in top
    ]
    if rest:
        rows.append(
            [
                f"({len(rest)} other files)",
                kib(sum(s for _, s, _ in rest) / n),
                f"{sum(b for _, _, b in rest) / n:,.0f}",
                pct(sum(s for _, s, _ in rest) / seen.traced),
            ]
        )
    dht_size = sum(s for name, s, _ in seen.by_site if name.startswith("korium_dht/"))
    rows.append(["all korium_dht/*", kib(dht_size / n), "", pct(dht_size / seen.traced)])
    table(["allocation site", "per node", "blocks/node", "share"], rows)
    print(
        f"  (snapshot and grouping took {seen.snapshot_s:.1f} s; a Contact decoded by msgspec "
        "is attributed to the Python frame that called the decoder)"
    )
    print()


def print_memory(memory: Memory) -> None:
    n = memory.nodes
    print(f"3. Memory per node (simulation, N={n:,}, measured right after the build)")
    print("  RSS of the whole process (the loopback part, if run, came first)")
    table(
        ["", "before build", "after build", "difference", "per node"],
        [
            [
                "current (VmRSS)",
                mib(memory.rss_before),
                mib(memory.rss_after),
                mib(memory.rss_after - memory.rss_before),
                kib((memory.rss_after - memory.rss_before) / n),
            ],
            [
                "peak (ru_maxrss)",
                mib(memory.peak_before),
                mib(memory.peak_after),
                mib(memory.peak_after - memory.peak_before),
                kib((memory.peak_after - memory.peak_before) / n),
            ],
        ],
    )
    if memory.traced is not None:
        print(
            f"  with --memory the growth includes tracemalloc's bookkeeping "
            f"({mib(memory.traced.overhead)})"
        )
    print()
    if memory.traced is not None:
        print_traced(memory.traced, n)
    else:
        print(
            "  (--memory adds tracemalloc's count of live memory per node and where it was "
            "allocated; it slows the build about 2.5-3x)"
        )
        print()
    total = sum(memory.deep.values())
    print(
        f"  DHT state alone: deep size (sys.getsizeof over everything reachable) of one "
        f"DhtService's state, mean of {min(DEEP_SIZE_SAMPLE, n)} random nodes"
    )
    rows = [[name, kib(size), pct(size / total)] for name, size in memory.deep.items()]
    rows.append(["total DHT state", kib(total), pct(1.0)])
    table(["part", "per node", "share"], rows)
    per_contact = memory.deep.get("routing table", 0.0) / max(
        1.0, memory.contacts_mean + memory.cache_mean
    )
    print(
        f"  routing table: {memory.contacts_mean:.1f} contacts + {memory.cache_mean:.1f} "
        f"replacement-cache entries per node on average, about {per_contact:,.0f} bytes each; "
        f"store: {memory.records_mean:.1f} items per node"
    )
    print(
        "  counted: the routing table (buckets, entries, replacement caches, their Contact "
        "records), the store, latency tiers, and 'other' = adaptive k/alpha, insertion rate "
        "limiters, counters, settings, this node's own signed record; not counted: objects "
        "also reachable from another node's DHT state (shared defaults), classes, functions"
    )
    print()


# -- simulation driver ----------------------------------------------------------------------


async def simulation(args: argparse.Namespace) -> None:
    count: int = args.sim_nodes
    per: int = args.sim_lookups
    concurrency: int = args.sim_concurrency
    rss_before, peak_before = rss_now(), rss_peak()
    if args.memory:
        gc.collect()
        tracemalloc.start()
    loop = asyncio.get_running_loop()
    virtual_start = loop.time()
    started, cpu_started = time.perf_counter(), time.process_time()
    status(f"simulation: building {count:,} nodes")
    sim = await SimDht.build(count, seed=1, regions=REGIONS_3)
    build_s, build_cpu = time.perf_counter() - started, time.process_time() - cpu_started
    build_virtual = loop.time() - virtual_start
    delivered_build = sim.network.stats.delivered
    memory = measure_memory(sim, rss_before, peak_before, traced=args.memory)
    if args.memory:
        tracemalloc.stop()
    sizes = [len(sim.dht(node).table) for node in sim.nodes]
    print(
        f"2. Simulation: {count:,} nodes on virtual time (SimDht.build(seed=1, "
        "regions=REGIONS_3): one-way 5 ms within a region, 40/60/80 ms across)"
    )
    table(
        ["build", "value"],
        [
            [
                "real time",
                f"{build_s:.1f} s ({build_cpu:.1f} s CPU"
                + (", tracemalloc on)" if args.memory else ")"),
            ],
            ["virtual time", f"{build_virtual:,.0f} s"],
            ["frames delivered", f"{delivered_build:,} ({delivered_build / count:,.0f} per node)"],
            [
                "routing table contacts per node, mean / min / max",
                f"{mean(sizes):.1f} / {min(sizes)} / {max(sizes)}",
            ],
        ],
    )
    print(
        "  a frame is a request, a response or a one-way message (SimNetwork.stats.delivered); "
        "background work (bucket refreshes, liveness pings) is included"
    )
    print()
    sys.stdout.flush()

    main = await lookups(sim, per, seed=2, concurrency=concurrency)
    print_main_table(main, count, concurrency)
    sys.stdout.flush()

    exact_on, exact_off = await tiering_pair(sim, per, 3, exact=True, concurrency=concurrency)
    full_on, full_off = await tiering_pair(sim, per, 4, exact=False, concurrency=concurrency)
    print(
        f"  Latency tiering on vs off: {per:,} lookups per setting and kind on the same network, "
        "pairs drawn alternately from one random source (not the same pairs twice: a lookup "
        "teaches its source the target); virtual latency"
    )
    table(
        ["lookups", "success", "rounds", "queries", "median", "p99", "mean", "real time"],
        [
            *tiering_rows("exact", exact_on, exact_off),
            *tiering_rows("full", full_on, full_off),
        ],
    )
    print(
        f"  on / off < 1: tiering makes lookups faster. Tiering (SimDht.set_tiering) only "
        "reorders candidates of equal progress, lowest latency tier first. Batches of "
        f"{concurrency} lookups with tiering on and off ran back to back, alternating which "
        "went first"
    )
    print()
    sys.stdout.flush()

    status("simulation: removing nodes")
    delivered_before = sim.network.stats.delivered
    survivors = await sim.remove(REMOVED_FRACTION, random.Random(5))
    churn_full = await lookups(sim, per, seed=6, among=survivors, concurrency=concurrency)
    churn_exact = await lookups(
        sim, per, seed=7, among=survivors, exact=True, concurrency=concurrency
    )
    config = sim.dht(survivors[0]).config
    print_churn_table(churn_full, churn_exact, count, len(survivors), config)
    total_virtual = loop.time() - virtual_start
    status("simulation: closing")
    close_started = time.perf_counter()
    await sim.close()
    close_s = time.perf_counter() - close_started
    status("")
    delivered = sim.network.stats.delivered
    table(
        ["totals", "value"],
        [
            [
                f"frames delivered after the build, to the end of the {5 * per:,} "
                "lookups on the full network",
                f"{delivered_before - delivered_build:,}",
            ],
            ["frames delivered after the removal", f"{delivered - delivered_before:,}"],
            ["frames delivered in all", f"{delivered:,}"],
            ["virtual time in all", f"{total_virtual:,.0f} s"],
            ["closing the survivors, real time", f"{close_s:.1f} s"],
        ],
    )
    print(
        f"  the lookups' own frames are about 2 x queries; the rest is background work: bucket "
        f"refreshes every {sim.dht(sim.nodes[0]).config.refresh_interval_s:,.0f} virtual s per "
        "bucket, liveness pings, republishing"
    )
    print()
    sys.stdout.flush()
    print_memory(memory)


# -- main ---------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Measure korium's DHT: loopback lookup latency, simulated lookups at scale, "
        "memory per node."
    )
    parser.add_argument(
        "--real-nodes", type=int, default=50, help="loopback nodes (default 50, at least 3)"
    )
    parser.add_argument(
        "--lookups", type=int, default=500, help="loopback iterations (default 500)"
    )
    parser.add_argument(
        "--sim-nodes", type=int, default=10_000, help="simulated nodes (default 10000)"
    )
    parser.add_argument(
        "--sim-lookups",
        type=int,
        default=1_000,
        help="lookups per simulated batch (default 1000)",
    )
    parser.add_argument(
        "--sim-concurrency",
        type=int,
        default=20,
        help="simulated lookups run at once, from different nodes (default 20, as "
        "SimDht.lookups; it shortens the virtual duration, so less background work)",
    )
    parser.add_argument("--skip-real", action="store_true", help="skip the loopback part")
    parser.add_argument("--skip-sim", action="store_true", help="skip the simulation (and memory)")
    parser.add_argument(
        "--memory",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="trace memory allocations during the simulated build (tracemalloc): live "
        "memory per node and where it was allocated; slows the build about 2.5-3x (default off)",
    )
    parser.add_argument("--seed", type=int, default=1, help="loopback random seed (default 1)")
    args = parser.parse_args(argv)
    if args.real_nodes < 3:
        parser.error("--real-nodes must be at least 3")
    if args.sim_nodes < 3:
        parser.error("--sim-nodes must be at least 3")
    if args.sim_concurrency < 1:
        parser.error("--sim-concurrency must be at least 1")
    if args.lookups < 1 or args.sim_lookups < 1:
        parser.error("--lookups and --sim-lookups must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    print("korium DHT benchmark")
    print(
        f"  python {platform.python_version()}, {platform.machine()}, "
        f"cpu_count {os.cpu_count()}, load average before: "
        + " ".join(f"{x:.2f}" for x in os.getloadavg())
    )
    print()
    if not args.skip_real:
        asyncio.run(loopback(args.real_nodes, args.lookups, args.seed))
    if not args.skip_sim:
        run_virtual(simulation(args))
    print(f"  load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
