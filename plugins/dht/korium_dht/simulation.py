"""Simulated DHT networks: thousands of real korium nodes on :mod:`korium.testing`.

Why: lookups, churn and latency tiering are measured at scale on virtual time, running the
plugin's unmodified code (every node is a ``Node`` built with ``.simulated(network)``). The
tests and ``benchmarks/dht.py`` use this; so can applications.

Each node gets a private address (``10.x.y.z:4433``) from its region's /16 prefixes, so the
/16-based latency tiering sees regions as a real deployment would. Run it on virtual time
(``korium.testing.run``)::

    sim = await SimDht.build(1000, regions=REGIONS_3)
    report = await sim.lookups(200, random.Random(1))
"""

from __future__ import annotations

import asyncio
import random
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from korium import Node, NodeIdentity
from korium.identity import Identity, Keypair
from korium.identity.pow import solve_pow
from korium.testing import SimNetwork
from korium_dht import plugin
from korium_dht.service import DhtService, LookupResult

REGIONS_3: tuple[tuple[float, ...], ...] = (
    (0.005, 0.040, 0.080),
    (0.040, 0.005, 0.060),
    (0.080, 0.060, 0.005),
)
"""One-way latency in seconds between three regions (for example Europe, US East, Asia)."""
PREFIXES_PER_REGION = 10
SIM_DIFFICULTY = 8
"""Proof-of-work bits of simulated identities (the rules are the same; generation is fast)."""


@dataclass(slots=True)
class LookupReport:
    """Outcome of a batch of lookups of existing identities."""

    lookups: int = 0
    succeeded: int = 0
    rounds: list[int] = field(default_factory=list)
    found_rounds: list[int] = field(default_factory=list)
    queries: list[int] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)

    @property
    def success_rate(self) -> float:
        return self.succeeded / self.lookups if self.lookups else 0.0

    def add(self, result: LookupResult, target: Identity) -> None:
        self.lookups += 1
        ok = bool(result.contacts) and result.contacts[0].identity == target
        self.succeeded += ok
        self.rounds.append(result.metrics.rounds)
        self.queries.append(result.metrics.queries)
        self.latencies.append(result.elapsed)
        if result.metrics.found_round is not None:
            self.found_rounds.append(result.metrics.found_round)

    def summary(self) -> dict[str, float]:
        """Mean and max rounds, rounds to find the target, queries; latency median and p99."""
        latencies = sorted(self.latencies)

        def pct(q: float) -> float:
            return latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else 0

        return {
            "lookups": self.lookups,
            "success_rate": self.success_rate,
            "rounds_mean": statistics.fmean(self.rounds) if self.rounds else 0.0,
            "rounds_max": max(self.rounds, default=0),
            "found_round_mean": statistics.fmean(self.found_rounds) if self.found_rounds else 0,
            "found_round_max": max(self.found_rounds, default=0),
            "queries_mean": statistics.fmean(self.queries) if self.queries else 0.0,
            "queries_max": max(self.queries, default=0),
            "latency_median_s": statistics.median(latencies) if latencies else 0.0,
            "latency_p99_s": pct(0.99),
        }


class SimDht:
    """A simulated network of DHT nodes; build with :meth:`build`."""

    def __init__(self, network: SimNetwork, regions: Sequence[Sequence[float]] | None) -> None:
        self.network = network
        self.regions = regions
        self.nodes: list[Node] = []
        self.region_of: dict[Identity, int] = {}

    @classmethod
    async def build(
        cls,
        count: int,
        *,
        seed: int = 0,
        regions: Sequence[Sequence[float]] | None = None,
        latency: float = 0.02,
        settings: Mapping[str, Any] | None = None,
        concurrency: int = 20,
    ) -> SimDht:
        """*count* nodes, joining *concurrency* at a time, each through a random node that
        has already joined.

        :param regions: a one-way latency matrix; nodes are spread evenly over its regions.
            Without it every link has *latency*.
        :param settings: ``dht`` plugin settings for every node.
        """
        rng = random.Random(seed)
        sim = cls(SimNetwork(seed=seed, default_latency=latency), regions)
        if regions is not None:
            sim.network.latency_model = sim._latency
        await sim.add_node(0, rng, settings or {})
        for start in range(1, count, concurrency):
            batch = range(start, min(count, start + concurrency))
            joined = list(sim.nodes)
            new = [await sim.add_node(i, rng, settings or {}, join=False) for i in batch]
            seeds = [rng.choice(joined) for _ in new]
            await asyncio.gather(
                *(n.bootstrap(s.identity, "10.0.0.1:4433") for n, s in zip(new, seeds, strict=True))
            )
        return sim

    def _latency(self, a: Identity, b: Identity) -> float:
        assert self.regions is not None
        return self.regions[self.region_of[a]][self.region_of[b]]

    async def add_node(
        self, index: int, rng: random.Random, settings: Mapping[str, Any], *, join: bool = True
    ) -> Node:
        """Create node number *index* and (with *join*) bootstrap it through a random node."""
        keypair = Keypair.from_seed(rng.randbytes(32))
        proof = solve_pow(keypair.identity, SIM_DIFFICULTY, workers=1)
        node_identity = NodeIdentity(keypair, proof)
        region = index % len(self.regions) if self.regions else 0
        self.region_of[node_identity.identity] = region
        address = (
            f"10.{region * PREFIXES_PER_REGION + rng.randrange(PREFIXES_PER_REGION)}."
            f"{rng.randrange(256)}.{rng.randrange(1, 255)}:4433"
        )
        node = await (
            Node.builder()
            .identity(node_identity)
            .difficulty(SIM_DIFFICULTY)
            .plugins([plugin])
            .plugin_settings("dht", addresses=(address,), **settings)
            .simulated(self.network)
            .build()
        )
        self.dht(node).rng = random.Random(rng.randbytes(16))  # the same seed, the same run
        if self.nodes and join:
            seed_node = rng.choice(self.nodes)
            await node.bootstrap(seed_node.identity, address)
        self.nodes.append(node)
        return node

    def dht(self, node: Node) -> DhtService:
        return plugin.service(node)

    async def lookups(
        self,
        count: int,
        rng: random.Random,
        *,
        nodes: Sequence[Node] | None = None,
        exact: bool = False,
        concurrency: int = 20,
    ) -> LookupReport:
        """*count* lookups, each from a random node for another random node's identity.

        *exact*: stop when the target answers (resolving a peer), instead of finding its k
        closest peers. *concurrency* lookups run at once (from different nodes), which keeps
        the virtual duration short without loading any one node.
        """
        among = list(nodes if nodes is not None else self.nodes)
        report = LookupReport()
        pairs = [rng.sample(among, 2) for _ in range(count)]
        for start in range(0, count, concurrency):
            batch = pairs[start : start + concurrency]
            results = await asyncio.gather(
                *(self.dht(s).lookup(bytes(t.identity), exact=exact) for s, t in batch)
            )
            for (_, target), result in zip(batch, results, strict=True):
                report.add(result, target.identity)
        return report

    async def remove(self, fraction: float, rng: random.Random) -> list[Node]:
        """Take *fraction* of the nodes offline abruptly (no goodbye); returns the survivors."""
        doomed = rng.sample(self.nodes, int(len(self.nodes) * fraction))
        gone = {n.identity for n in doomed}
        for node in doomed:
            self.network.remove_node(node.identity)
            await self.dht(node).stop()
        self.nodes = [n for n in self.nodes if n.identity not in gone]
        return self.nodes

    def set_tiering(self, enabled: bool) -> None:
        """Switch tier preference in lookups on or off on every node (same tables)."""
        for node in self.nodes:
            self.dht(node).config.tiering = enabled

    async def close(self) -> None:
        for node in self.nodes:
            await node.close()
