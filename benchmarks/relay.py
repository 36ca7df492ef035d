"""Relay benchmark: what a relayed path costs against a direct one, in the NAT lab.

Run (as root, Linux) ``python benchmarks/relay.py [--repeat 3] [--requests 300] [--bulk-mb 8]
[--profile]``.

Why: nodes behind symmetric NATs talk through a relay for the whole connection, while nodes
behind endpoint-independent NATs punch a hole and leave it; this says how much slower the relay
is, how long connecting through it takes, and how soon a punched path takes over.

Method: :class:`korium_relay.natlab.NatLab` labs (network namespaces and nftables NAT routers
on this machine, see that module), each with one public relay host and, per pair, two routers of
one kind with one host behind each: **open** routers (:attr:`NatKind.NONE`, routed, no NAT: the
direct baseline), **EIM** NATs (endpoint-independent mapping: they punch a direct path) and
**symmetric** NATs (a new port per destination: they stay relayed). Every node is a korium node
in its own process (``korium_relay.labnode``: plugins dht, gossipsub and relay,
difficulty 0, ``dial_timeout=2.0``, default relay settings: punching starts at once, for 5 s),
driven over its stdin; the relay host's node is the helper and relay of all the others.

* **Connecting** (``--repeat`` times per NAT kind, each in a new lab, so no NAT, conntrack or
  routing-table state carries over): ``connect(identity)`` from a node (the *client*) to one
  it has never reached. In a three-node network every DHT operation queries every node, so the
  steps are spaced (``SETTLE``) to let the DHT's own dials between the two fail before the
  next: client and server bootstrap to the relay; the server calls ``configure_nat`` (its
  record now names the relay); the client, which does not publish a record (it needs none to
  dial out), checks that neither end has a path to the other yet and calls ``connect``:
  resolve, a direct dial to the published (private) address that fails after
  ``dial_timeout``, the relay from the record, the QUIC handshake over the relay, then hole
  punching. Figures: the seconds ``connect`` took (the agent's clock); of which
  ``relay.last_relay_setup_ms`` (client's stats: reserve, hand-over, join) and the handshake
  over the relay (from the relayed path in the client's path table to the connection in its
  pool); the rest is resolve plus the direct dial's timeout. Each agent polls, every
  millisecond, when its path to the other end is first relayed, first direct, and when the
  connection first exists (``watch``; ``time.monotonic`` is one clock for every process here).
  Hole punching (EIM): from the relayed path in place (punching starts then) to the direct path
  in use at the client, and at both ends; and ``relay.last_punch_ms`` from the client's stats
  (its punch loop looks for the direct path every 10 ms).
* **Throughput**, in one more lab with a pair of each kind, set up as an application would
  (both ends bootstrap and ``configure_nat``, the client connects; the classification is
  checked): the EIM pair only once both ends are on the direct path, the symmetric pair only
  once both ends' punching gave up. After a warm-up (excluded: 50 requests and 1 MiB), per
  repeat, interleaved over the pairs so background load hits them alike: ``--requests``
  sequential echo requests of 100 bytes (``node.send``, requests/s), and ``--bulk-mb`` MB
  (10^6 bytes) sent as sequential requests of 60 KiB each to a handler that answers two bytes
  (``node.rpc.request``, MB/s of request bodies). Every request must succeed with the right
  answer and leave on the expected path (direct, or relayed: checked before each request at the
  client, before and after the run at the server). Alongside, each process's CPU time over the
  run (``time.process_time``, user + system; the relay's too) and the packets the relay
  forwarded: where the time goes.

Ratios (relayed / direct EIM, relayed / open baseline) are between medians of the same run,
with the spread of the repeats (half the min-max range). With ``--profile``, one more relayed
bulk transfer and request run are profiled (cProfile, wall clock, on both ends' and the relay's
event loop; profiling slows them, so these are not the figures above) and the top functions by
own time are printed.

Limits: every process shares this machine's CPUs (three busy processes on a relayed transfer),
and the lab's links are veths with no delay or loss, so these are CPU-bound figures: in a real
network, where round trips are milliseconds, the relay's longer route matters more than its CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import version
from typing import Final

from _report import Summary, status, table
from korium_relay.labnode import LabNode, LabNodeError
from korium_relay.natlab import Host, NatKind, NatLab, unavailable_reason

"""Seconds one agent operation may take (a whole bulk run is one operation)."""
DIAL_TIMEOUT: Final = 2.0
"""The agents' ``RpcConfig.dial_timeout``: what a direct dial waits before the relay."""
PUNCH_INTERVAL: Final = 0.2
"""The relay plugin's default ``punch_interval`` (between punch datagrams)."""
SETTLE: Final = DIAL_TIMEOUT + 1.5
"""Seconds for the DHT's dials between two nodes to fail (dial timeout, then a fallback that
finds no relay) before the next step of a cold connect."""
PATH_TIMEOUT: Final = 15.0
"""Seconds to wait for a punched path (the plugin punches for 5 s)."""
REQUEST_SIZE: Final = 100
BULK_REQUEST: Final = 60 * 1024
WARM_UP_REQUESTS: Final = 50
WARM_UP_BULK: Final = 1024 * 1024
"""Longest answer line read from an agent (a profile report is a few kB)."""
TOP: Final = 20

KINDS: Final = (NatKind.NONE, NatKind.EIM, NatKind.SYMMETRIC)
NAT_KINDS: Final = (NatKind.EIM, NatKind.SYMMETRIC)
"""Pairs whose connect is measured (open hosts meet as soon as the DHT queries one)."""
TAGS: Final = {NatKind.NONE: "open", NatKind.EIM: "eim", NatKind.SYMMETRIC: "sym"}
LABELS: Final = {
    NatKind.NONE: "open routers, direct (baseline)",
    NatKind.EIM: "EIM NATs, punched direct",
    NatKind.SYMMETRIC: "symmetric NATs, relayed",
}
EXPECTED_PATH: Final = {NatKind.NONE: "direct", NatKind.EIM: "direct", NatKind.SYMMETRIC: "relayed"}

Figures = dict[str, list[float]]
"""Per figure, one value per repeat."""


class BenchmarkError(LabNodeError):
    """An agent failed, or the lab did not behave as the benchmark needs (wrong path)."""


class Agent(LabNode):
    """A lab node, with the CPU time the benchmark reads."""

    async def cpu(self) -> float:
        """CPU seconds the node's process has used."""
        return float((await self("cpu"))["cpu"])


@dataclass
class Pair:
    """Two nodes behind two routers of one kind: *client* connects to *server*."""

    kind: NatKind
    client: Agent
    server: Agent

    @property
    def label(self) -> str:
        return LABELS[self.kind]

    @property
    def ends(self) -> tuple[tuple[Agent, Agent], tuple[Agent, Agent]]:
        """``(end, other end)`` both ways."""
        return ((self.client, self.server), (self.server, self.client))


class Lab:
    """Nodes in a NAT lab: makes hosts and pairs, stops every node it started."""

    def __init__(self, natlab: NatLab) -> None:
        self.natlab = natlab
        self.agents: list[Agent] = []
        self.built = 0

    async def agent(self, host: Host) -> Agent:
        agent = await Agent.start(host)
        self.agents.append(agent)
        return agent

    async def pair(self, kind: NatKind) -> Pair:
        """Two new routers of *kind*, a host behind each, a node on each host (not joined)."""
        self.built += 1
        agents = []
        for side in "ab":
            name = f"{TAGS[kind]}{self.built}{side}"
            router = self.natlab.nat(f"r-{name}", kind)
            agents.append(await self.agent(self.natlab.private_host(f"h-{name}", router)))
        await agents[1]("serve_sink")
        return Pair(kind, agents[0], agents[1])

    async def stop(self) -> None:
        """Stop the nodes, last started first (the relay, started first, goes last: no node
        behind NAT sees its relay go)."""
        for agent in reversed(self.agents):
            await agent.stop()


async def join(agent: Agent, relay: Agent, kind: NatKind) -> None:
    """Bootstrap *agent* to the relay and configure NAT; check the classification."""
    await agent("bootstrap", peer=relay.identity, address=relay.address)
    await configure(agent, relay, kind)


async def configure(agent: Agent, relay: Agent, kind: NatKind) -> None:
    answer = await agent("configure_nat", helper=relay.identity)
    if answer["public"] != (kind is NatKind.NONE):
        raise BenchmarkError(
            f"configure_nat classified {agent.host.name} behind {kind.value} as "
            f"public={answer['public']}"
        )


async def wait_for_stat(agent: Agent, key: str, seconds: float) -> dict[str, float]:
    """The agent's stats once *key* is in them (at most *seconds*), else the last stats."""
    stats = await agent.stats()
    for _ in range(int(seconds / 0.05)):
        if stats.get(key):
            break
        await asyncio.sleep(0.05)
        stats = await agent.stats()
    return stats


async def settle(pair: Pair, expected: str) -> None:
    """Wait until both ends use the *expected* path; for a relayed pair, also until both
    ends' punching has given up (its probes would load the measurement)."""
    for end, other in pair.ends:
        waited = await end("wait_path", peer=other.identity, path=expected, timeout=PATH_TIMEOUT)
        if waited["path"] != expected:
            raise BenchmarkError(
                f"{pair.label}: {end.host.name} is on path {waited['path']!r}, not {expected}, "
                f"{PATH_TIMEOUT} s after connecting"
            )
    if expected == "relayed":
        for end, other in pair.ends:
            if not (await wait_for_stat(end, "relay.punch_failed", PATH_TIMEOUT)).get(
                "relay.punch_failed"
            ):
                raise BenchmarkError(f"{pair.label}: {end.host.name}'s punching did not give up")
            if await end.path_to(other) != "relayed":
                raise BenchmarkError(f"{pair.label}: {end.host.name} left the relayed path")


async def connection_round(kind: NatKind, figures: Figures) -> None:
    """One cold ``connect(identity)`` between two nodes behind NATs of *kind*, in a new lab;
    records its figures in *figures*."""
    async with NatLab() as natlab:
        lab = Lab(natlab)
        try:
            relay = await lab.agent(natlab.public_host("relay"))
            pair = await lab.pair(kind)
            client, server = pair.client, pair.server
            await client("watch", peer=server.identity)
            await server("watch", peer=client.identity)
            # One step at a time, each followed by a pause in which the dials the DHT starts
            # to the other node (and that fail: nothing to reach it by yet) run out.
            await client("bootstrap", peer=relay.identity, address=relay.address)
            await server("bootstrap", peer=relay.identity, address=relay.address)
            await asyncio.sleep(SETTLE)
            await configure(server, relay, kind)
            await asyncio.sleep(SETTLE)
            if (await client.path_to(server), await server.path_to(client)) != ("none", "none"):
                raise BenchmarkError(f"{pair.label}: the nodes met before connect()")
            answer = await client("connect", peer=server.identity)
            expected = EXPECTED_PATH[kind]
            await settle(pair, expected)
            figures.setdefault("connect", []).append(answer["seconds"])
            figures.setdefault("returned relayed", []).append(float(answer["path"] == "relayed"))
            events = [(await end("watched"))["events"] for end in (client, server)]
            if kind is NatKind.EIM:  # the punch loop notices the direct path at its next turn
                stats = await wait_for_stat(client, "relay.punched", 1 + 2 * PUNCH_INTERVAL)
            else:
                stats = await client.stats()
            setup = stats.get("relay.last_relay_setup_ms")
            if setup is None:
                raise BenchmarkError(f"{pair.label}: the client connected without the relay")
            wanted = {"relayed", "connected"} | ({expected} if kind is NatKind.EIM else set())
            for end, seen in zip((client, server), events, strict=True):
                if not wanted <= seen.keys():
                    raise BenchmarkError(
                        f"{pair.label}: {end.host.name} saw only {sorted(seen)} (watch)"
                    )
            relayed, connected = events[0]["relayed"], events[0]["connected"]
            figures.setdefault("relay setup", []).append(setup / 1000)
            figures.setdefault("relayed handshake", []).append(connected - relayed)
            figures.setdefault("before relay", []).append(
                answer["seconds"] - setup / 1000 - (connected - relayed)
            )
            if kind is NatKind.EIM:
                figures.setdefault("punch client", []).append(events[0]["direct"] - relayed)
                figures.setdefault("punch both", []).append(
                    max(e["direct"] for e in events) - relayed
                )
                figures.setdefault("last_punch_ms", []).append(stats["relay.last_punch_ms"] / 1000)
        finally:
            await lab.stop()


@dataclass(frozen=True)
class Run:
    """One timed session of one pair."""

    seconds: float
    client_cpu: float
    server_cpu: float
    relay_cpu: float
    relay_packets: float


async def timed(pair: Pair, relay: Agent, op: str, count: int, size: int) -> Run:
    """Run *op* (``rate`` or ``bulk``) from the client; check every request's path at both
    ends; return its time and every process's CPU time over it."""
    expected = EXPECTED_PATH[pair.kind]
    seen = {await pair.server.path_to(pair.client)}
    server_cpu, relay_cpu = await pair.server.cpu(), await relay.cpu()
    relay_packets = (await relay.stats()).get("relay.packets_relayed", 0)
    answer = await pair.client(op, peer=pair.server.identity, count=count, size=size)
    server_cpu, relay_cpu = await pair.server.cpu() - server_cpu, await relay.cpu() - relay_cpu
    relay_packets = (await relay.stats()).get("relay.packets_relayed", 0) - relay_packets
    seen |= {*answer["paths"], await pair.server.path_to(pair.client)}
    if seen != {expected}:
        raise BenchmarkError(f"{pair.label}: {op} ran over {sorted(seen)}, not only {expected}")
    return Run(answer["seconds"], answer["cpu"], server_cpu, relay_cpu, relay_packets)


def record(figures: Figures, prefix: str, run: Run, units: float) -> None:
    """Store a run's rate (*units* per second) and CPU shares under *prefix*."""
    for name, value in (
        ("", units / run.seconds),
        (" client cpu", run.client_cpu / run.seconds),
        (" server cpu", run.server_cpu / run.seconds),
        (" relay cpu", run.relay_cpu / run.seconds),
        (" relay packets", run.relay_packets / units),
        (" relay us/packet", 1e6 * run.relay_cpu / run.relay_packets if run.relay_packets else 0),
    ):
        figures.setdefault(prefix + name, []).append(value)


async def throughput(
    pairs: list[Pair], relay: Agent, args: argparse.Namespace
) -> dict[NatKind, Figures]:
    """Warm up, then ``--repeat`` interleaved rounds of requests and bulk over every pair."""
    bulk_count = max(1, round(args.bulk_mb * 1e6 / BULK_REQUEST))
    results: dict[NatKind, Figures] = {pair.kind: {} for pair in pairs}
    for pair in pairs:
        status(f"warm-up: {pair.label}")
        await timed(pair, relay, "rate", WARM_UP_REQUESTS, REQUEST_SIZE)
        await timed(pair, relay, "bulk", WARM_UP_BULK // BULK_REQUEST, BULK_REQUEST)
    for repeat in range(args.repeat):
        for pair in pairs:
            status(f"throughput {repeat + 1}/{args.repeat}: requests, {pair.label}")
            run = await timed(pair, relay, "rate", args.requests, REQUEST_SIZE)
            record(results[pair.kind], "rate", run, args.requests)
        for pair in pairs:
            status(f"throughput {repeat + 1}/{args.repeat}: bulk, {pair.label}")
            run = await timed(pair, relay, "bulk", bulk_count, BULK_REQUEST)
            record(results[pair.kind], "bulk", run, bulk_count * BULK_REQUEST / 1e6)
    return results


async def profile(pair: Pair, relay: Agent, args: argparse.Namespace) -> list[str]:
    """Profile one relayed bulk transfer and one request run on all three processes; returns
    the report's lines."""
    bulk_count = max(1, round(args.bulk_mb * 1e6 / BULK_REQUEST))
    lines = []
    for op, count, size in (
        ("bulk", bulk_count, BULK_REQUEST),
        ("rate", args.requests, REQUEST_SIZE),
    ):
        status(f"profiling {op}")
        agents = {"client": pair.client, "server": pair.server, "relay": relay}
        for agent in agents.values():
            await agent("profile_start")
        run = await timed(pair, relay, op, count, size)
        lines.append(f"\n  profile of one {op} run over the relay ({run.seconds:.2f} s, profiled)")
        for name, agent in agents.items():
            report = (await agent("profile_stop", top=TOP))["report"].splitlines()
            header = next(i for i, line in enumerate(report) if "ncalls" in line)
            lines.append(f"\n  -- {name}: top {TOP} by own time")
            lines += [f"    {line}" for line in report[header:] if line.strip()]
    return lines


def summary_row(label: str, values: list[float], scale: float, digits: int) -> list[str]:
    s = Summary.of(values)
    return [label, f"{s.median * scale:.{digits}f}", f"±{s.spread_pct:.0f}%"]


def report_throughput(results: dict[NatKind, Figures], args: argparse.Namespace) -> None:
    """The rate and bulk tables, with ratios against the direct paths."""
    bulk_count = max(1, round(args.bulk_mb * 1e6 / BULK_REQUEST))
    for key, title, unit in (
        ("rate", f"sequential requests ({REQUEST_SIZE} bytes, echoed)", "req/s"),
        (
            "bulk",
            f"bulk: {bulk_count * BULK_REQUEST / 1e6:.2f} MB as {bulk_count} sequential "
            f"requests of {BULK_REQUEST // 1024} KiB",
            "MB/s",
        ),
    ):
        open_median = Summary.of(results[NatKind.NONE][key]).median
        eim_median = Summary.of(results[NatKind.EIM][key]).median
        rows = []
        for kind, figures in results.items():
            median = Summary.of(figures[key]).median
            row = summary_row(LABELS[kind], figures[key], 1, 1 if key == "rate" else 2)
            row += [f"{median / open_median:.2f}", f"{median / eim_median:.2f}"]
            row += [
                f"{100 * Summary.of(figures[f'{key} {side} cpu']).median:.0f}%"
                for side in ("client", "server", "relay")
            ]
            rows.append(row)
        print(f"\n  {title}, median of {args.repeat}")
        table([unit, "", "spread", "/ open", "/ EIM", "client", "server", "relay"], rows)
    relayed = results[NatKind.SYMMETRIC]
    print(
        "\n  CPU columns: each process's CPU time over the run / the run's wall time."
        "\n  relayed: the relay forwarded "
        f"{Summary.of(relayed['rate relay packets']).median:.1f} packets per request and "
        f"{Summary.of(relayed['bulk relay packets']).median:.0f} per MB, "
        f"{Summary.of(relayed['rate relay us/packet']).median:.0f} / "
        f"{Summary.of(relayed['bulk relay us/packet']).median:.0f} us of relay CPU per packet "
        "(requests / bulk)"
    )
    for key, name in (("rate", "request rate"), ("bulk", "bulk throughput")):
        sym = Summary.of(relayed[key]).median
        eim = Summary.of(results[NatKind.EIM][key]).median
        baseline = Summary.of(results[NatKind.NONE][key]).median
        print(
            f"  {name}: relayed / direct (EIM, punched) = {sym / eim:.2f}, "
            f"relayed / open baseline = {sym / baseline:.2f}"
        )


def report_connections(connections: dict[NatKind, Figures], repeat: int) -> None:
    """The connection-time table and the hole-punch figures."""
    rows = []
    for kind, figures in connections.items():
        row = summary_row(LABELS[kind], figures["connect"], 1000, 0)
        for key in ("before relay", "relay setup", "relayed handshake"):
            row += summary_row("", figures[key], 1000, 0)[1:] if key in figures else ["-", ""]
        row.append(f"{sum(figures['returned relayed']):.0f}/{repeat}")
        rows.append(row)
    print(
        f"\n  connect(identity) to a node never contacted before, new lab each time, median of "
        f"{repeat}, ms:\n  total = resolve + direct dial (fails after dial_timeout = "
        f"{DIAL_TIMEOUT * 1000:.0f} ms when behind NAT) + relay setup\n  "
        "(relay.last_relay_setup_ms, client) + QUIC handshake over the relay"
    )
    table(
        [
            "connect",
            "total",
            "spread",
            "resolve+dial",
            "spread",
            "relay setup",
            "spread",
            "handshake",
            "spread",
            "returned relayed",
        ],
        rows,
    )
    eim = connections[NatKind.EIM]
    print(f"\n  hole punching, EIM NATs, median of {repeat} (min - max), ms:")
    for key, text in (
        ("punch client", "relayed path in place -> direct path in use, client"),
        ("punch both", "relayed path in place (client) -> both ends on the direct path"),
        (
            "last_punch_ms",
            "relay.last_punch_ms, client (its punch loop looks every 10 ms)",
        ),
    ):
        s = Summary.of(eim[key])
        print(f"    {text}: {s.median * 1000:.0f} ({s.low * 1000:.0f} - {s.high * 1000:.0f})")


async def throughput_lab(args: argparse.Namespace) -> tuple[dict[NatKind, Figures], list[str]]:
    """One lab with a relay and a pair of each kind, connected as an application would."""
    async with NatLab() as natlab:
        lab = Lab(natlab)
        try:
            relay = await lab.agent(natlab.public_host("relay"))
            pairs = [await lab.pair(kind) for kind in KINDS]
            status("throughput lab: joining and connecting")
            for pair in pairs:
                for end in (pair.client, pair.server):
                    await join(end, relay, pair.kind)
            for pair in pairs:
                await pair.client("connect", peer=pair.server.identity)
            await asyncio.gather(*(settle(pair, EXPECTED_PATH[pair.kind]) for pair in pairs))
            results = await throughput(pairs, relay, args)
            lines = await profile(pairs[-1], relay, args) if args.profile else []
            return results, lines
        finally:
            await lab.stop()


async def run(args: argparse.Namespace) -> None:
    connections: dict[NatKind, Figures] = {kind: {} for kind in NAT_KINDS}
    for repeat in range(args.repeat):
        for kind in NAT_KINDS:
            status(f"connect {repeat + 1}/{args.repeat}: {LABELS[kind]}")
            await connection_round(kind, connections[kind])
    results, profiled = await throughput_lab(args)
    status("")
    bulk_count = max(1, round(args.bulk_mb * 1e6 / BULK_REQUEST))
    print(
        "relay benchmark, NAT lab (namespaces + nftables on this machine), one relay host"
        f"\n  Python {platform.python_version()}, aioquic {version('aioquic')}, "
        f"{os.cpu_count()} CPUs; {args.requests} requests and "
        f"{bulk_count * BULK_REQUEST / 1e6:.2f} MB per run"
    )
    report_throughput(results, args)
    report_connections(connections, args.repeat)
    for line in profiled:
        print(line)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per figure (default 3)")
    parser.add_argument(
        "--requests", type=int, default=300, help="sequential requests per run (default 300)"
    )
    parser.add_argument("--bulk-mb", type=float, default=8.0, help="MB per bulk run (default 8)")
    parser.add_argument(
        "--profile",
        action="store_true",
        help="then profile one relayed bulk and request run (cProfile, all three processes)",
    )
    args = parser.parse_args(argv)
    if args.repeat < 1 or args.requests < 1 or args.bulk_mb <= 0:
        parser.error("--repeat and --requests must be at least 1, --bulk-mb positive")
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    reason = unavailable_reason()
    if reason is not None:
        raise SystemExit(f"relay benchmark: the NAT lab cannot run here: {reason}")
    asyncio.run(run(args))


if __name__ == "__main__":
    main(sys.argv[1:])
