"""Threshold CA benchmark: signing latency of a k-of-n certificate over QUIC on loopback.

Run ``python benchmarks/threshold_ca.py [--n 5] [--k 3] [--requests 50] [--repeat 3]``.

Method: n signer nodes and one requester on 127.0.0.1 (difficulty 0; plugins gossipsub,
spiffe, threshold_ca), all connected to each other. The requester asks for ``--requests``
workload certificates one after another; a latency runs from the call of
``request_ca_certificate_from_mesh`` to the DER certificate in hand (CSR on gossip, commitments
by RPC, k sign requests by RPC, aggregation with every share checked). Two set-ups:

* **one process per node**: each signer runs in its own process (a trusted dealer split the
  key; the ceremony is not part of this figure), as signers run in deployment;
* **all nodes in one process**: the signers run the key ceremony over the mesh (timed once),
  then serve; every packet of all six QUIC stacks is handled by one Python thread, so the
  latency is close to the sum of all nodes' CPU time.

Baselines measured in the same run, between the same nodes: one RPC round trip of 600 bytes
with a signer (the floor for each of the protocol's exchanges) and, for the one-process set-up,
the same k-of-n FROST signature computed entirely in this process (the protocol's cryptography
without any network). Medians of ``--repeat`` runs, with their spread.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Coroutine
from importlib.metadata import version
from multiprocessing.connection import Connection
from typing import Any

import korium_gossipsub.plugin
import korium_spiffe.plugin
import korium_threshold_ca.plugin
from _report import Summary, status, table
from korium_threshold_ca import (
    CaRequestConfig,
    SignerState,
    ThresholdCaConfig,
    dealer_split,
    service,
)
from korium_threshold_ca.signing import sign_locally

from korium.identity import Identity, Keypair
from korium.node import Node

PLUGINS = [korium_gossipsub.plugin, korium_spiffe.plugin, korium_threshold_ca.plugin]
DOMAIN = "bench.example"
PASSPHRASE = "benchmark"
Figures = dict[str, list[float]]
"""Per figure, the median of each repeat (seconds)."""


async def new_node(**extra: Any) -> Node:
    builder = Node.builder("127.0.0.1:0").difficulty(0).plugins(PLUGINS)
    # one requester asks far more often than the default per-requester limit allows
    builder.plugin_settings("threshold_ca", requests_per_minute=1_000_000)
    if "keypair" in extra:
        builder.keypair(extra["keypair"])
    if "state" in extra:
        builder.as_ca_signer(extra["state"])
    node = await builder.build()
    node.set_request_handler(lambda peer, data: data)
    return node


async def sample(
    figures: Figures, name: str, count: int, call: Callable[[], Coroutine[Any, Any, Any]]
) -> None:
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        await call()
        latencies.append(time.perf_counter() - started)
    figures.setdefault(name, []).append(statistics.median(latencies))


async def measure_in_process(args: argparse.Namespace) -> tuple[Figures, float]:
    nodes = [await new_node() for _ in range(args.n + 1)]
    signers, requester = nodes[:-1], nodes[-1]
    try:
        for index, node in enumerate(nodes):
            for other in nodes[index + 1 :]:
                await node.connect(other.identity, [other.local_addr])
        config = ThresholdCaConfig(args.n, args.k, DOMAIN)
        identities = [node.identity for node in signers]
        started = time.perf_counter()
        states = await asyncio.gather(
            *(service(node).run_dkg(config, identities, timeout=60) for node in signers)
        )
        ceremony = time.perf_counter() - started
        for node, state in zip(signers, states, strict=True):
            await service(node).serve_as_signer(state)
        request = CaRequestConfig(states[0].ca, timeout=30)
        tbs = os.urandom(600)

        async def local() -> None:
            sign_locally(states[: args.k], tbs)

        figures: Figures = {}
        for repeat in range(args.repeat):
            status(f"one process: repeat {repeat + 1}/{args.repeat}")
            await sample(
                figures, "certificate", args.requests, lambda: certificate(requester, request)
            )
            await sample(
                figures, "rpc", args.requests, lambda: requester.send(signers[0].identity, tbs)
            )
            await sample(figures, "frost", args.requests, local)
        return figures, ceremony
    finally:
        await asyncio.gather(*(node.close() for node in nodes))


def certificate(requester: Node, request: CaRequestConfig) -> Coroutine[Any, Any, bytes]:
    return requester.request_ca_certificate_from_mesh(DOMAIN, "api", request)


def signer_process(seed: bytes, sealed: bytes, pipe: Connection) -> None:
    """A signer node in a process of its own: sends its address, connects to the addresses it
    is given, serves until told to stop."""

    async def serve() -> None:
        state = SignerState.deserialize(sealed, PASSPHRASE)
        node = await new_node(keypair=Keypair.from_seed(seed), state=state)
        loop = asyncio.get_running_loop()
        pipe.send(node.local_addr)
        for identity, address in await loop.run_in_executor(None, pipe.recv):
            await node.connect(Identity.from_hex(identity), [tuple(address)])
        pipe.send("connected")
        await loop.run_in_executor(None, pipe.recv)
        await node.close()

    asyncio.run(serve())


async def measure_processes(args: argparse.Namespace) -> Figures:
    keypairs = [Keypair.generate() for _ in range(args.n)]
    states = dealer_split(
        ThresholdCaConfig(args.n, args.k, DOMAIN), [kp.identity for kp in keypairs]
    )
    context = multiprocessing.get_context("spawn")
    pipes, processes = [], []
    for kp in keypairs:
        mine, theirs = context.Pipe()
        sealed = states[kp.identity].serialize(PASSPHRASE, strength="interactive")
        process = context.Process(target=signer_process, args=(kp.seed, sealed, theirs))
        process.start()
        pipes.append(mine)
        processes.append(process)
    loop = asyncio.get_running_loop()
    requester = await new_node()
    try:
        addresses = [await loop.run_in_executor(None, pipe.recv) for pipe in pipes]
        known = [(kp.identity.hex(), list(a)) for kp, a in zip(keypairs, addresses, strict=True)]
        for index, pipe in enumerate(pipes):
            pipe.send(known[index + 1 :])
        for pipe in pipes:
            await loop.run_in_executor(None, pipe.recv)
        for kp, address in zip(keypairs, addresses, strict=True):
            await requester.connect(kp.identity, [address])
        request = CaRequestConfig(next(iter(states.values())).ca, timeout=30)
        await certificate(requester, request)  # warm-up: gossip meshes settle
        payload = os.urandom(600)
        figures: Figures = {}
        for repeat in range(args.repeat):
            status(f"one process per node: repeat {repeat + 1}/{args.repeat}")
            await sample(
                figures, "certificate", args.requests, lambda: certificate(requester, request)
            )
            await sample(
                figures, "rpc", args.requests, lambda: requester.send(keypairs[0].identity, payload)
            )
        return figures
    finally:
        await requester.close()
        for pipe in pipes:
            pipe.send("stop")
        for process in processes:
            process.join(10)


def report(title: str, figures: Figures) -> None:
    names = {
        "certificate": "certificate from the mesh",
        "rpc": "baseline: one RPC round trip",
        "frost": "baseline: FROST in one process",
    }
    cert = Summary.of(figures["certificate"]).median
    rows = []
    for key, values in figures.items():
        s = Summary.of(values)
        ratio = f"{cert / s.median:.1f}x" if key != "certificate" else ""
        rows.append([names[key], f"{s.median * 1000:.2f}", f"±{s.spread_pct:.0f}%", ratio])
    print(f"\n  {title}")
    table(["median latency", "ms", "spread", "certificate / this"], rows)


async def run(args: argparse.Namespace) -> None:
    separate = await measure_processes(args)
    together, ceremony = await measure_in_process(args)
    status("")
    print(f"threshold CA {args.k}-of-{args.n} on 127.0.0.1, {args.requests} sequential requests")
    print(
        f"  Python {platform.python_version()}, aioquic {version('aioquic')}, "
        f"PyNaCl {version('PyNaCl')}, {os.cpu_count()} CPUs"
    )
    report("one process per node", separate)
    report("all nodes in one process", together)
    print(f"\n  key ceremony over the mesh, all nodes in one process: {ceremony * 1000:.0f} ms")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--n", type=int, default=5)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    asyncio.run(run(parser.parse_args(argv)))


if __name__ == "__main__":
    main(sys.argv[1:])
