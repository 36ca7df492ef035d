"""One-way message benchmark: korium's message stream against one QUIC stream per message.

Run ``python benchmarks/messages.py [--messages N] [--size BYTES] [--repeat R]``.

Method: two korium nodes in this process on 127.0.0.1 (difficulty 0, no plugins), connected
once. A measurement sends ``--messages`` one-way messages of ``--size`` bytes from one node to
the other, yielding to the event loop (``await asyncio.sleep(0)``) after every *burst*
messages, and ends when the receiver's handler has counted the last one: messages/s is end to
end, and CPU is this process's (sender and receiver together) per message. Each measurement
is preceded by an unmeasured warm-up; the two ways of sending are interleaved per repeat so
background load hits them alike, and the median of ``--repeat`` runs is reported with its
spread.

Ways of sending, same receiver (``RpcEndpoint`` as shipped):

* **message stream**: ``node.rpc.send_message``: every message to a peer is one frame on the
  connection's long-lived unidirectional stream.
* **stream per message** (the former ``send_message``, for comparison): a new unidirectional
  stream per message carrying one frame and FIN, written through the connection's aioquic
  object. Bursts stall on the receiver's stream credit (64 concurrent streams, returned as
  each stream is acknowledged finished).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.metadata import version
from typing import Final

from _report import Summary, status, table

from korium.identity import Identity
from korium.node import Node
from korium.rpc import frames
from korium.transport.connection import PeerConnection

PROTOCOL: Final = "bench/message/1"
BURSTS: Final = (1, 10)
STREAM: Final = "message stream"
PER_MESSAGE: Final = "stream per message"
WAYS: Final = (STREAM, PER_MESSAGE)
TIMEOUT: Final = 300.0


@dataclass(frozen=True, slots=True)
class Run:
    rate: float
    """Messages per second, end to end."""
    cpu: float
    """CPU seconds of this process per message."""


class Counter:
    """The receiver's handler: counts messages and wakes the measurement at its target."""

    def __init__(self) -> None:
        self.count = 0
        self.target = 0
        self.done = asyncio.Event()

    def expect(self, messages: int) -> None:
        self.count = 0
        self.target = messages
        self.done.clear()

    def __call__(self, peer: Identity, body: bytes) -> None:
        self.count += 1
        if self.count == self.target:
            self.done.set()


def _send_on_new_stream(conn: PeerConnection, frame: bytes) -> None:
    """What ``send_message`` did before the message stream: one stream, one frame, FIN."""
    stream_id = conn.quic.get_next_available_stream_id(is_unidirectional=True)
    conn.quic.send_stream_data(stream_id, frame, end_stream=True)
    conn.transmit_soon()


async def measure(
    way: str, sender: Node, receiver: Node, counter: Counter, messages: int, burst: int, size: int
) -> Run:
    body = bytes(size)
    peer = receiver.identity
    conn = await sender.connect(peer)
    frame = frames.encode_request(PROTOCOL, body)
    counter.expect(messages)
    started, cpu = time.perf_counter(), time.process_time()
    for i in range(messages):
        if way == STREAM:
            await sender.rpc.send_message(peer, PROTOCOL, body)
        else:
            _send_on_new_stream(conn, frame)
        if i % burst == burst - 1:
            await asyncio.sleep(0)
    await asyncio.wait_for(counter.done.wait(), TIMEOUT)
    elapsed = time.perf_counter() - started
    return Run(messages / elapsed, (time.process_time() - cpu) / messages)


async def benchmark(args: argparse.Namespace) -> dict[tuple[str, int], list[Run]]:
    nodes = [await Node.builder("127.0.0.1:0").difficulty(0).plugins([]).build() for _ in range(2)]
    sender, receiver = nodes
    try:
        counter = Counter()
        receiver.rpc.register_message(PROTOCOL, counter)
        await sender.connect(receiver.identity, [receiver.local_addr])
        results: dict[tuple[str, int], list[Run]] = {(w, b): [] for w in WAYS for b in BURSTS}
        for repeat in range(args.repeat):
            for burst in BURSTS:
                for way in WAYS:
                    status(f"repeat {repeat + 1}/{args.repeat}: {way}, burst {burst}")
                    warmup = max(1, args.messages // 10)
                    await measure(way, sender, receiver, counter, warmup, burst, args.size)
                    run = await measure(
                        way, sender, receiver, counter, args.messages, burst, args.size
                    )
                    results[(way, burst)].append(run)
        status("")
        return results
    finally:
        for node in nodes:
            await node.close()


def report(results: dict[tuple[str, int], list[Run]]) -> None:
    rows = []
    for burst in BURSTS:
        baseline = Summary.of([r.rate for r in results[(PER_MESSAGE, burst)]]).median
        for way in WAYS:
            runs = results[(way, burst)]
            rate = Summary.of([r.rate for r in runs])
            cpu = Summary.of([r.cpu for r in runs])
            rows.append(
                [
                    way,
                    str(burst),
                    f"{rate.median:,.0f}",
                    f"±{rate.spread_pct:.0f}%",
                    f"{cpu.median * 1e6:.1f}",
                    f"{rate.median / baseline:.1f}x",
                ]
            )
    table(["way", "burst", "messages/s", "spread", "CPU µs/message", "vs per message"], rows)
    print()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Measure korium one-way messages: message stream vs a stream per message."
    )
    parser.add_argument(
        "--messages", type=int, default=10_000, help="messages per measurement (default 10000)"
    )
    parser.add_argument("--size", type=int, default=300, help="body bytes (default 300)")
    parser.add_argument(
        "--repeat", type=int, default=3, help="repeats of each measurement; median is reported"
    )
    args = parser.parse_args(argv)
    if args.messages < 1 or args.repeat < 1 or args.size < 0:
        parser.error("--messages and --repeat must be at least 1, --size not negative")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    print("korium one-way message benchmark, 127.0.0.1, sender and receiver in one process")
    print(
        f"  python {platform.python_version()}, aioquic {version('aioquic')}, "
        f"{platform.machine()}, cpu_count {os.cpu_count()}, "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )
    print(
        f"  {args.messages:,} messages of {args.size} bytes per measurement, "
        f"{args.repeat} repeat(s), interleaved; warm-up excluded"
    )
    print()
    report(asyncio.run(benchmark(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
