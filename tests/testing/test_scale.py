"""Acceptance: a thousand simulated nodes in one process, every request answered and checked."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass
from typing import Any

import pytest

from korium.errors import RpcTimeoutError
from korium.identity import Identity, Keypair
from korium.rpc import frames
from korium.testing import SimNetwork, SimRpc, run

NODES = 1_000
FANOUT = 5
PROTOCOL = "korium/test-scale/1"


@dataclass
class Outcome:
    requests: int
    answered: int
    timed_out: int
    virtual_seconds: float
    real_seconds: float


def build(nodes: int, *, seed: int, loss: float = 0.0) -> tuple[SimNetwork, list[SimRpc]]:
    """*nodes* nodes that answer ``"{own hex}<-{body}"``, with random per-link latencies."""
    network = SimNetwork(seed=seed, loss=loss)
    endpoints = [
        network.add_node(Keypair.from_seed(i.to_bytes(32, "big")).identity) for i in range(nodes)
    ]
    for node in endpoints:
        me = node.identity.hex().encode()

        def answer(peer: Identity, body: bytes, me: bytes = me) -> bytes:
            return me + b"<-" + body

        node.register(PROTOCOL, answer)
    return network, endpoints


async def exchange(network: SimNetwork, nodes: list[SimRpc], *, seed: int) -> Outcome:
    """Every node asks FANOUT random others at once; every answer and its timing is checked."""
    rng = random.Random(seed)
    plan = [
        (src, dst)
        for src in nodes
        for dst in rng.sample([n for n in nodes if n is not src], FANOUT)
    ]
    for src, dst in plan:
        network.set_link(src, dst, latency=rng.uniform(0.005, 0.150))
    loop = asyncio.get_running_loop()

    async def ask(src: SimRpc, dst: SimRpc) -> bool:
        body = src.identity.hex().encode()
        start = loop.time()
        try:
            reply = await src.request(dst.identity, PROTOCOL, body)
        except RpcTimeoutError:
            return False
        assert reply == dst.identity.hex().encode() + b"<-" + body
        round_trip = network.link(src, dst).latency + network.link(dst, src).latency
        # asyncio fires timers due within its clock resolution (1 ns) of each other together
        assert loop.time() - start == pytest.approx(round_trip, abs=1e-6)
        return True

    started_real, started_virtual = time.perf_counter(), loop.time()
    answered = await asyncio.gather(*(ask(src, dst) for src, dst in plan))
    return Outcome(
        requests=len(plan),
        answered=sum(answered),
        timed_out=len(plan) - sum(answered),
        virtual_seconds=loop.time() - started_virtual,
        real_seconds=time.perf_counter() - started_real,
    )


def verify(network: SimNetwork, nodes: list[SimRpc], outcome: Outcome) -> None:
    """Every request answered (exactly), every frame counted, every byte accounted for."""
    expected = len(nodes) * FANOUT
    assert outcome.requests == expected
    assert outcome.answered == expected  # exactly: one missing answer fails the test
    # everything started at once, so the run lasts as long as the slowest round trip
    assert 0.150 < outcome.virtual_seconds <= 0.300
    stats = network.stats
    assert (stats.delivered, stats.lost, stats.partitioned, stats.unreachable) == (
        2 * expected,
        0,
        0,
        0,
    )
    body = nodes[0].identity.hex().encode()
    request = len(frames.encode_request(PROTOCOL, body))
    response = len(frames.encode_response(frames.Ok(body + b"<-" + body)))
    assert stats.bytes == expected * (request + response)
    assert sum(n.stats["requests_served"] for n in nodes) == expected
    assert all(n.stats["requests_sent"] == FANOUT for n in nodes)


def test_a_thousand_nodes_exchange_requests() -> None:
    started = time.perf_counter()
    network, nodes = build(NODES, seed=1)
    outcome = run(exchange(network, nodes, seed=1))
    total = time.perf_counter() - started
    print(
        f"\n{NODES} nodes, {outcome.requests} requests: {outcome.answered} answered in "
        f"{outcome.virtual_seconds:.3f} s virtual, {outcome.real_seconds:.3f} s real "
        f"({total:.3f} s real including setup)"
    )
    verify(network, nodes, outcome)


def test_a_thousand_lossy_nodes_time_out_exactly_the_lost_exchanges() -> None:
    network, nodes = build(NODES, seed=2, loss=0.01)
    outcome = run(exchange(network, nodes, seed=2))
    assert outcome.answered + outcome.timed_out == NODES * FANOUT
    assert outcome.timed_out == network.stats.lost > 0  # each lost frame costs one exchange
    assert outcome.virtual_seconds == 10.0  # the lost ones waited out the request timeout


def test_verify_catches_a_single_dropped_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    """The acceptance test fails if delivery breaks: drop one frame in 2,000, silently."""
    arrive = SimNetwork._arrive
    count = 0

    def sabotaged(self: SimNetwork, *args: Any) -> None:
        nonlocal count
        count += 1
        if count != 500:
            arrive(self, *args)

    network, nodes = build(200, seed=3)
    outcome = run(exchange(network, nodes, seed=3))
    verify(network, nodes, outcome)  # intact, it passes
    monkeypatch.setattr(SimNetwork, "_arrive", sabotaged)
    network, nodes = build(200, seed=3)
    outcome = run(exchange(network, nodes, seed=3))
    assert outcome.answered == 200 * FANOUT - 1
    with pytest.raises(AssertionError):
        verify(network, nodes, outcome)
