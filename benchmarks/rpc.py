"""RPC benchmark: korium requests and handshakes against raw aioquic doing the same work.

Run ``python benchmarks/rpc.py [--seconds S] [--repeat R] [--inflight N] [--profile]``.

Method (as the prototype's loopback test): every server runs in a **child process** (started
with ``subprocess``; it prints its port and identity on stdout and answers ``cpu`` queries on
stdin), every client in this process, unpinned, on 127.0.0.1 only. 64-byte payloads, one
bidirectional QUIC stream per request, echoed back with FIN. Each measurement runs a warm-up
(excluded) and then ``--seconds``; the three systems are interleaved per metric and per repeat
so background load hits them alike, and the median of ``--repeat`` runs is reported with its
spread.

Systems:

* **korium**: the server is ``Node.builder("127.0.0.1:0").difficulty(0).plugins([]).build()``
  with ``set_request_handler`` echoing the body (a plain function: the synchronous path); the
  client is a node of the same kind calling ``node.send(peer, data, addresses=[...])``.
  Difficulty 0 on both sides, so proof of work costs nothing (the check still runs).
* **raw aioquic, mTLS**: ``aioquic.asyncio.serve`` with a ``QuicConnectionProtocol`` subclass
  echoing each stream; a self-signed Ed25519 certificate; the server requests the client's
  certificate (aioquic's private ``tls.Context._request_client_certificate``, the same hook
  korium uses) and the client presents its own Ed25519 certificate: mutual TLS with Ed25519 on
  both sides, like korium. Neither side verifies a chain (``CERT_NONE``; korium also runs its
  own identity checks instead). The RPC client is ``aioquic.asyncio.connect`` with a protocol
  subclass that maps stream IDs to futures and coalesces writes into one ``transmit()`` per loop
  iteration (aioquic's own stream writer does the same). This is the like-for-like baseline:
  the targets compare korium against it. (``connect()`` always binds its dual-stack socket to
  ``::`` and dials ``::ffff:127.0.0.1``; every other socket here is bound to 127.0.0.1.)
* **raw aioquic, TLS**: the same, but the server does not ask for a client certificate
  (server-only authentication), to show what mutual TLS itself costs.

Both use the same QUIC settings: korium's ``TransportConfig`` windows and idle timeout, 8-byte
connection IDs, no session tickets (no resumption), no retry.

Metrics:

* **sequential**: one request at a time, requests/s (1 / round trip).
* **in flight**: ``--inflight`` worker coroutines (default 32) each sending back to back on one
  connection, completed requests/s.
* **handshakes**: sequential, one at a time, handshakes/s of the whole loop. One *handshake* is:
  from the connect call until the client holds a *confirmed* connection, then an immediate
  close (one CONNECTION_CLOSE datagram, nothing awaited). Confirmed means: full TLS 1.3 (no
  resumption) with X25519, both Ed25519 certificates sent and their CertificateVerify signatures
  checked, and the server's HANDSHAKE_DONE received, i.e. the server has also accepted the
  client's certificate. That is what korium's ``connect()`` waits for (it resolves on
  confirmation, not on the client-side TLS completion one half round trip earlier), so the raw
  client waits for it too (``wait_connected()``, then aioquic's private
  ``_handshake_confirmed``). korium: ``conn = await client.connect(peer, [addr])`` on one client
  node whose pool is empty (the previous connection was ``conn.abort()``-ed, which drops it from
  the pool at once); this includes korium's pool and dial tasks, its identity checks on both
  sides (Ed25519 key, expected identity, proof-of-work extension, plugin votes) and, on the
  server, the same peer reconnecting while its previous connection drains. Raw: what
  ``aioquic.asyncio.connect`` does minus the thread-pool ``getaddrinfo`` and minus awaiting the
  closing period on exit: a new UDP socket on 127.0.0.1 (aioquic's asyncio API has one socket
  per client connection), ``protocol.connect(addr)``, wait for confirmation, then
  ``protocol.close()``; the socket is closed in the background after the closing period.

Besides rates, the CPU time each side spent per operation is reported: ``time.process_time``
deltas of this process (client) and of the server child (asked over its stdin).

``--profile`` (or ``--profile inflight``) instead runs the sequential (or in-flight) test under
cProfile, timed by the event-loop thread's CPU clock, for korium and for raw aioquic (mTLS), on
the client and (over the same control channel) on the server. It prints, per request, the korium
client's top 25 functions by cumulative and by own time, the top 25 by own time of the korium
server and of the raw client and server, and CPU per request by component side by side.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import datetime
import os
import platform
import pstats
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import version
from typing import IO, Final, cast

from _report import Summary, status, table
from aioquic.asyncio.client import connect
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.asyncio.server import serve
from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import NetworkAddress, QuicConnection
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.x509.oid import NameOID

from korium.identity import Identity
from korium.node import Node
from korium.transport.addresses import Address
from korium.transport.connection import PeerConnection
from korium.transport.smartsock import TransportConfig
from korium.transport.tls import CONNECTION_ID_LENGTH

HOST: Final = "127.0.0.1"
PAYLOAD: Final = bytes(range(64))
RAW_ALPN: Final = "korium-bench/raw"
KORIUM: Final = "korium"
RAW_MTLS: Final = "raw-mtls"
RAW_TLS: Final = "raw-tls"
SERVER_KINDS: Final = (KORIUM, RAW_MTLS, RAW_TLS)
LABELS: Final = {
    KORIUM: "korium",
    RAW_MTLS: "raw aioquic (mTLS)",
    RAW_TLS: "raw aioquic (TLS)",
}
SEQUENTIAL: Final = "sequential"
IN_FLIGHT: Final = "in flight"
HANDSHAKES: Final = "handshakes"
TARGETS: Final = {SEQUENTIAL: 0.8, IN_FLIGHT: 0.7, HANDSHAKES: 0.8}
"""Minimum korium / raw aioquic (mTLS) ratio per metric."""
TOP: Final = 25


# -- raw aioquic --------------------------------------------------------------------------------


def self_signed_ed25519(name: str) -> tuple[x509.Certificate, Ed25519PrivateKey]:
    """A self-signed Ed25519 certificate, like korium's (without its proof-of-work extension)."""
    key = Ed25519PrivateKey.generate()
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=365))
        .sign(key, None)
    )
    return certificate, key


def raw_configuration(*, is_client: bool, certificate: bool = True) -> QuicConfiguration:
    """korium's QUIC settings (windows, idle timeout, CID length) without korium."""
    transport = TransportConfig()
    configuration = QuicConfiguration(
        is_client=is_client,
        alpn_protocols=[RAW_ALPN],
        verify_mode=ssl.CERT_NONE,
        connection_id_length=CONNECTION_ID_LENGTH,
        idle_timeout=transport.idle_timeout,
        max_data=transport.max_data,
        max_stream_data=transport.max_stream_data,
    )
    if certificate:
        cert, key = self_signed_ed25519("server" if not is_client else "client")
        configuration.certificate = cert
        configuration.private_key = key
    return configuration


class _MutualServerConnection(QuicConnection):
    """A server connection that requests the client's certificate (as korium's listener)."""

    def _initialize(self, peer_cid: bytes) -> None:
        super()._initialize(peer_cid)
        self.tls._request_client_certificate = True


class EchoServerProtocol(QuicConnectionProtocol):
    """Echo each bidirectional stream back with FIN once the request's FIN arrived."""

    def __init__(self, quic: QuicConnection, stream_handler: object = None) -> None:
        super().__init__(quic)
        self._partial: dict[int, bytearray] = {}

    def quic_event_received(self, event: events.QuicEvent) -> None:
        if not isinstance(event, events.StreamDataReceived):
            return
        stream_id = event.stream_id
        if event.end_stream:
            head = self._partial.pop(stream_id, None)
            data = event.data if head is None else bytes(head + event.data)
            self._quic.send_stream_data(stream_id, data, end_stream=True)
        else:
            self._partial.setdefault(stream_id, bytearray()).extend(event.data)
        # datagram_received transmits right after the events are processed


class MutualEchoServerProtocol(EchoServerProtocol):
    def __init__(self, quic: QuicConnection, stream_handler: object = None) -> None:
        quic.__class__ = _MutualServerConnection  # before the first datagram creates its TLS
        super().__init__(quic)


class EchoClientProtocol(QuicConnectionProtocol):
    """Requests as futures keyed by stream ID; writes flushed once per loop iteration."""

    def __init__(self, quic: QuicConnection, stream_handler: object = None) -> None:
        super().__init__(quic)
        self._waiting: dict[int, tuple[asyncio.Future[bytes], bytearray]] = {}
        self._flush_pending = False

    async def request(self, data: bytes) -> bytes:
        quic = self._quic
        stream_id = quic.get_next_available_stream_id()
        future: asyncio.Future[bytes] = self._loop.create_future()
        self._waiting[stream_id] = (future, bytearray())
        quic.send_stream_data(stream_id, data, end_stream=True)
        if not self._flush_pending:
            self._flush_pending = True
            self._loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._flush_pending = False
        self.transmit()

    def quic_event_received(self, event: events.QuicEvent) -> None:
        if isinstance(event, events.StreamDataReceived):
            entry = self._waiting.get(event.stream_id)
            if entry is None:
                return
            future, buffer = entry
            buffer.extend(event.data)
            if event.end_stream:
                del self._waiting[event.stream_id]
                if not future.done():
                    future.set_result(bytes(buffer))
        elif isinstance(event, events.ConnectionTerminated):
            for future, _ in self._waiting.values():
                if not future.done():
                    future.set_exception(ConnectionError(event.reason_phrase))
            self._waiting.clear()


class ConfirmingClientProtocol(EchoClientProtocol):
    """Also tells when the handshake is *confirmed* (HANDSHAKE_DONE arrived), as korium waits.

    A TLS 1.3 client completes its handshake before the server has checked the client's
    certificate; only the server's HANDSHAKE_DONE says it accepted it. aioquic has no event for
    it, so this reads the private ``QuicConnection._handshake_confirmed`` after each datagram.
    """

    def __init__(self, quic: QuicConnection, stream_handler: object = None) -> None:
        super().__init__(quic)
        self._confirmed: asyncio.Future[None] | None = None

    def datagram_received(self, data: bytes | str, addr: NetworkAddress) -> None:
        super().datagram_received(data, addr)
        waiter = self._confirmed
        if waiter is not None and self._quic._handshake_confirmed and not waiter.done():
            waiter.set_result(None)

    async def wait_confirmed(self) -> None:
        if self._quic._handshake_confirmed:
            return
        self._confirmed = self._loop.create_future()
        await self._confirmed


# -- server child process -----------------------------------------------------------------------


def _echo(peer: Identity, data: bytes) -> bytes:
    return data


def _reply(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def _in_loop(loop: asyncio.AbstractEventLoop, function: Callable[[], None]) -> None:
    """Run *function* in the event loop's thread and wait for it (cProfile is per thread)."""
    done = threading.Event()

    def run() -> None:
        try:
            function()
        finally:
            done.set()

    loop.call_soon_threadsafe(run)
    done.wait()


def _control(loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
    """The parent's commands, one a line on stdin; EOF stops the server."""
    profiler = cProfile.Profile(time.thread_time)  # CPU time of the loop thread
    while line := sys.stdin.readline():
        command, _, argument = line.strip().partition(" ")
        if command == "cpu":
            _reply(f"{time.process_time():.9f}")
        elif command == "profile-start":
            _in_loop(loop, profiler.enable)
            _reply("ok")
        elif command == "profile-stop":

            def finish(path: str = argument) -> None:
                profiler.disable()
                profiler.dump_stats(path)

            _in_loop(loop, finish)
            _reply("ok")
        else:
            _reply(f"error unknown command {command!r}")
    loop.call_soon_threadsafe(stop.set)


async def _serve(kind: str) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    if kind == KORIUM:
        node = await Node.builder(f"{HOST}:0").difficulty(0).plugins([]).build()
        node.set_request_handler(_echo)
        port, identity = node.local_addr[1], str(node.identity)
        close: Callable[[], Awaitable[None]] = node.close
    else:
        protocol = MutualEchoServerProtocol if kind == RAW_MTLS else EchoServerProtocol
        server = await serve(
            HOST, 0, configuration=raw_configuration(is_client=False), create_protocol=protocol
        )
        transport = server._transport
        assert transport is not None
        port, identity = transport.get_extra_info("sockname")[1], "-"

        async def close() -> None:
            server.close()

    threading.Thread(target=_control, args=(loop, stop), daemon=True).start()
    _reply(f"READY {port} {identity}")
    await stop.wait()
    await close()
    return 0


class ServerProcess:
    """A server in a child process: ``python rpc.py --serve KIND``."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._process = subprocess.Popen(
            [sys.executable, os.path.abspath(__file__), "--serve", kind],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        line = self._stdout.readline().split()
        if len(line) != 3 or line[0] != "READY":
            self.close()
            raise SystemExit(f"the {kind} server did not start (said {line!r})")
        self.address: Address = (HOST, int(line[1]))
        self.identity = None if line[2] == "-" else Identity.from_hex(line[2])

    @property
    def _stdout(self) -> IO[str]:
        assert self._process.stdout is not None
        return self._process.stdout

    def command(self, text: str) -> str:
        stdin = self._process.stdin
        assert stdin is not None
        stdin.write(text + "\n")
        stdin.flush()
        return self._stdout.readline().strip()

    def cpu(self) -> float:
        """The child's CPU time (user + system) so far, in seconds."""
        return float(self.command("cpu"))

    def close(self) -> None:
        if self._process.stdin is not None:
            with contextlib.suppress(OSError):
                self._process.stdin.close()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()


# -- clients ------------------------------------------------------------------------------------


class Client:
    """What the workloads need from a system under test."""

    async def request(self, data: bytes) -> bytes:
        raise NotImplementedError

    async def prepare_handshakes(self) -> None:
        """Make sure the next ``handshake`` dials a fresh connection."""

    async def handshake(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class KoriumClient(Client):
    def __init__(self, node: Node, server: ServerProcess) -> None:
        assert server.identity is not None
        self.node = node
        self.peer = server.identity
        self.addresses = [server.address]
        self._last: PeerConnection | None = None

    @classmethod
    async def start(cls, server: ServerProcess) -> KoriumClient:
        node = await Node.builder(f"{HOST}:0").difficulty(0).plugins([]).build()
        return cls(node, server)

    async def request(self, data: bytes) -> bytes:
        return await self.node.send(self.peer, data, addresses=self.addresses)

    async def prepare_handshakes(self) -> None:
        # drop the pooled RPC connection: the first handshake must dial
        conn = await self.node.connect(self.peer, self.addresses)
        conn.abort("benchmark: fresh handshakes")
        self._last = conn

    async def handshake(self) -> None:
        conn = await self.node.connect(self.peer, self.addresses)
        if conn is self._last or not conn.dialed:
            raise RuntimeError("connect() returned an old connection: not a fresh handshake")
        self._last = conn
        conn.abort("benchmark: next handshake")  # closed and out of the pool at once
        if not conn.closed:
            raise RuntimeError("abort() left the connection open")

    async def close(self) -> None:
        await self.node.close()


class RawClient(Client):
    def __init__(self, server: ServerProcess, *, mutual: bool) -> None:
        self.address = server.address
        self._handshake_configuration = raw_configuration(is_client=True, certificate=mutual)
        self._stack = contextlib.AsyncExitStack()
        self._protocol: EchoClientProtocol | None = None
        self._closing: set[asyncio.Task[None]] = set()

    @classmethod
    async def start(cls, server: ServerProcess, *, mutual: bool) -> RawClient:
        client = cls(server, mutual=mutual)
        configuration = raw_configuration(is_client=True, certificate=mutual)
        protocol = await client._stack.enter_async_context(
            connect(
                HOST,
                server.address[1],
                configuration=configuration,
                create_protocol=EchoClientProtocol,
            )
        )
        client._protocol = cast(EchoClientProtocol, protocol)
        return client

    async def request(self, data: bytes) -> bytes:
        assert self._protocol is not None
        return await self._protocol.request(data)

    async def handshake(self) -> None:
        loop = asyncio.get_running_loop()
        configuration = self._handshake_configuration
        transport, protocol = await loop.create_datagram_endpoint(
            lambda: ConfirmingClientProtocol(QuicConnection(configuration=configuration)),
            local_addr=(HOST, 0),
        )
        protocol.connect(self.address)
        await protocol.wait_connected()
        await protocol.wait_confirmed()
        protocol.close()
        task = asyncio.create_task(self._release(protocol, transport))
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    @staticmethod
    async def _release(protocol: QuicConnectionProtocol, transport: asyncio.BaseTransport) -> None:
        try:
            async with asyncio.timeout(5):
                await protocol.wait_closed()
        finally:
            transport.close()

    async def close(self) -> None:
        await asyncio.gather(*self._closing, return_exceptions=True)
        await self._stack.aclose()


async def start_client(server: ServerProcess) -> Client:
    if server.kind == KORIUM:
        return await KoriumClient.start(server)
    return await RawClient.start(server, mutual=server.kind == RAW_MTLS)


# -- workloads ----------------------------------------------------------------------------------

Outcome = tuple[int, float, list[float]]
"""Operations completed, seconds taken, each operation's latency in seconds."""
Workload = Callable[[Client, float], Awaitable[Outcome]]


async def sequential(client: Client, seconds: float) -> Outcome:
    request, clock = client.request, time.perf_counter
    latencies: list[float] = []
    start = now = clock()
    deadline = start + seconds
    while now < deadline:
        sent = now
        if await request(PAYLOAD) != PAYLOAD:
            raise RuntimeError("the echo differs from the request")
        now = clock()
        latencies.append(now - sent)
    return len(latencies), now - start, latencies


def in_flight(workers: int) -> Workload:
    async def run(client: Client, seconds: float) -> Outcome:
        request, clock = client.request, time.perf_counter
        start = clock()
        deadline = start + seconds

        async def worker() -> list[float]:
            latencies: list[float] = []
            now = clock()
            while now < deadline:
                sent = now
                if await request(PAYLOAD) != PAYLOAD:
                    raise RuntimeError("the echo differs from the request")
                now = clock()
                latencies.append(now - sent)
            return latencies

        results = await asyncio.gather(*(worker() for _ in range(workers)))
        elapsed = clock() - start
        latencies = [x for result in results for x in result]
        return len(latencies), elapsed, latencies

    return run


async def handshakes(client: Client, seconds: float) -> Outcome:
    await client.prepare_handshakes()
    handshake, clock = client.handshake, time.perf_counter
    latencies: list[float] = []
    start = now = clock()
    deadline = start + seconds
    while now < deadline:
        sent = now
        await handshake()
        now = clock()
        latencies.append(now - sent)
    return len(latencies), now - start, latencies


@dataclass(frozen=True, slots=True)
class Run:
    """One timed measurement."""

    count: int
    seconds: float
    client_cpu: float
    server_cpu: float
    latencies: list[float]

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else 0.0

    @property
    def client_us(self) -> float:
        return 1e6 * self.client_cpu / self.count if self.count else 0.0

    @property
    def server_us(self) -> float:
        return 1e6 * self.server_cpu / self.count if self.count else 0.0


async def measure(
    client: Client, server: ServerProcess, workload: Workload, seconds: float, warmup: float
) -> Run:
    if warmup > 0:
        await workload(client, warmup)
    server_before, client_before = server.cpu(), time.process_time()
    count, elapsed, latencies = await workload(client, seconds)
    client_cpu = time.process_time() - client_before
    server_cpu = server.cpu() - server_before
    if count == 0:
        raise RuntimeError("nothing completed")
    return Run(count, elapsed, client_cpu, server_cpu, latencies)


# -- statistics and formatting ------------------------------------------------------------------


def rate_text(rate: float) -> str:
    return f"{rate / 1000:.2f} k" if rate >= 1000 else f"{rate:.0f}"


def micros(seconds: float) -> str:
    return f"{seconds * 1e6:,.0f} us"


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- the benchmark ------------------------------------------------------------------------------


async def benchmark(
    servers: dict[str, ServerProcess], args: argparse.Namespace
) -> dict[str, dict[str, list[Run]]]:
    """Every metric for every system, interleaved: results[metric][kind] is one Run a repeat."""
    workloads: dict[str, Workload] = {
        SEQUENTIAL: sequential,
        IN_FLIGHT: in_flight(args.inflight),
        HANDSHAKES: handshakes,
    }
    clients = {kind: await start_client(server) for kind, server in servers.items()}
    results: dict[str, dict[str, list[Run]]] = {m: {k: [] for k in servers} for m in workloads}
    try:
        for round_ in range(1, args.repeat + 1):
            for metric, workload in workloads.items():
                for kind, client in clients.items():
                    status(f"measuring: repeat {round_}/{args.repeat}, {metric}, {LABELS[kind]}")
                    run = await measure(client, servers[kind], workload, args.seconds, args.warmup)
                    results[metric][kind].append(run)
    finally:
        status("")
        for client in clients.values():
            await client.close()
    return results


def report(results: dict[str, dict[str, list[Run]]], inflight: int, repeat: int) -> None:
    names = {
        SEQUENTIAL: "sequential requests/s",
        IN_FLIGHT: f"requests/s, {inflight} in flight",
        HANDSHAKES: "handshakes/s (sequential)",
    }
    rates = {
        metric: {kind: Summary.of([r.rate for r in runs]) for kind, runs in by_kind.items()}
        for metric, by_kind in results.items()
    }
    has_tls = all(RAW_TLS in by_kind for by_kind in results.values())

    print(f"korium vs raw aioquic (median of {repeat}; ratio against raw aioquic with mutual TLS)")
    rows = []
    for metric, summaries in rates.items():
        korium, raw = summaries[KORIUM].median, summaries[RAW_MTLS].median
        ratio = korium / raw if raw > 0 else 0.0
        target = TARGETS[metric]
        paired = " ".join(
            f"{k.rate / r.rate:.2f}"
            for k, r in zip(results[metric][KORIUM], results[metric][RAW_MTLS], strict=True)
        )
        rows.append(
            [
                names[metric],
                rate_text(korium),
                rate_text(raw),
                f"{ratio:.2f}x",
                f">= {target}x",
                "MET" if ratio >= target else "NOT MET",
                paired,
            ]
        )
    header = ["metric", "korium", "raw aioquic", "korium/raw", "target", "verdict"]
    table([*header, "ratio per repeat"], rows)
    print(
        "  korium/raw = median korium rate / median raw rate; 'ratio per repeat' pairs the runs "
        "made back to back"
    )
    print(
        "  handshake = connect() until the connection is confirmed (full TLS 1.3, mutual "
        "Ed25519, HANDSHAKE_DONE received), then an immediate close; see the module docstring"
    )
    print()

    kinds = [KORIUM, RAW_MTLS, *([RAW_TLS] if has_tls else [])]
    print("Spread over repeats (median, min - max, half-range)")
    rows = []
    for metric, summaries in rates.items():
        for kind in kinds:
            s = summaries[kind]
            rows.append(
                [
                    names[metric] if kind == KORIUM else "",
                    LABELS[kind],
                    rate_text(s.median),
                    f"{rate_text(s.low)} - {rate_text(s.high)}",
                    f"+/-{s.spread_pct:.0f}%",
                    f"{s.median / summaries[RAW_MTLS].median:.2f}x",
                ]
            )
    table(["metric", "system", "median", "min - max", "spread", "vs raw mTLS"], rows, right=2)
    print()

    print(
        "Latency (all repeats pooled) and CPU per operation (median over repeats; "
        "client = this process, server = the child)"
    )
    rows = []
    for metric, by_kind in results.items():
        for kind in kinds:
            runs = by_kind[kind]
            latencies = [x for run in runs for x in run.latencies]
            client_us = statistics.median(r.client_us for r in runs)
            server_us = statistics.median(r.server_us for r in runs)
            rows.append(
                [
                    names[metric] if kind == KORIUM else "",
                    LABELS[kind],
                    micros(percentile(latencies, 0.5)),
                    micros(percentile(latencies, 0.9)),
                    micros(percentile(latencies, 0.99)),
                    f"{client_us:,.0f} us",
                    f"{server_us:,.0f} us",
                ]
            )
    table(["metric", "system", "p50", "p90", "p99", "client CPU/op", "server CPU/op"], rows, 2)


# -- profile ------------------------------------------------------------------------------------

StatsKey = tuple[str, int, str]
StatsRow = tuple[int, int, float, float, object]
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_STDLIB = os.path.dirname(os.__file__)


def _where(key: StatsKey) -> str:
    path, line, name = key
    if path == "~":
        return name
    if "site-packages" + os.sep in path:
        path = path.split("site-packages" + os.sep, 1)[1]
    elif path.startswith(_ROOT + os.sep):
        path = os.path.relpath(path, _ROOT)
    elif path.startswith(_STDLIB + os.sep):
        path = os.path.relpath(path, _STDLIB)
    return f"{path}:{line}({name})"


def _component(key: StatsKey) -> str:
    path, _, name = key
    if path == "~":
        if "poll" in name and "select" in name:
            return "epoll syscall"
        if "_crypto" in name or "aioquic" in name or "_buffer" in name:
            return "aioquic C (crypto, buffer)"
        if "socket" in name:
            return "socket syscalls"
        if "msgspec" in name:
            return "msgspec"
        return "other builtins"
    if path == os.path.abspath(__file__):
        return "benchmark driver"
    if os.sep + "korium" + os.sep in path and "site-packages" not in path:
        return "korium " + os.path.relpath(path, _ROOT).removeprefix("korium" + os.sep)
    if os.sep + "aioquic" + os.sep in path:
        return "aioquic Python"
    if os.sep + "asyncio" + os.sep in path or path.endswith("selectors.py"):
        return "asyncio event loop"
    if os.sep + "cryptography" + os.sep in path:
        return "cryptography"
    return "other Python"


def _stats(profile: cProfile.Profile | str) -> dict[StatsKey, StatsRow]:
    stats = pstats.Stats(profile)
    return cast(dict[StatsKey, StatsRow], stats.stats)  # type: ignore[attr-defined]


def print_top(title: str, rows: dict[StatsKey, StatsRow], count: int, by: str) -> None:
    cumulative = by == "cumulative"

    def key(item: tuple[StatsKey, StatsRow]) -> float:
        return item[1][3] if cumulative else item[1][2]

    ranked = sorted(rows.items(), key=key, reverse=True)[:TOP]
    print(f"{title}: top {TOP} by {by} time, per request ({count} requests, profiler on)")
    table(
        ["calls/req", "own us/req", "cum us/req", "function"],
        [
            [
                f"{row[1] / count:.2f}",
                f"{1e6 * row[2] / count:.2f}",
                f"{1e6 * row[3] / count:.2f}",
                _where(key),
            ]
            for key, row in ranked
        ],
        right=0,
    )
    print()


def components(rows: dict[StatsKey, StatsRow], count: int) -> dict[str, float]:
    """Own time per request (us) by component."""
    totals: dict[str, float] = {}
    for key, row in rows.items():
        name = _component(key)
        totals[name] = totals.get(name, 0.0) + 1e6 * row[2] / count
    return totals


async def profile(servers: dict[str, ServerProcess], args: argparse.Namespace) -> None:
    """One workload under cProfile (CPU clock), client and server, korium and raw aioquic."""
    workload = sequential if args.profile == SEQUENTIAL else in_flight(args.inflight)
    what = SEQUENTIAL if args.profile == SEQUENTIAL else f"{args.inflight} in flight"
    profiles: dict[str, tuple[int, dict[StatsKey, StatsRow], dict[StatsKey, StatsRow]]] = {}
    with tempfile.TemporaryDirectory() as directory:
        for kind, server in servers.items():
            client = await start_client(server)
            try:
                status(f"profiling {LABELS[kind]}")
                await workload(client, args.warmup)
                path = os.path.join(directory, f"{kind}.prof")
                server.command("profile-start")
                profiler = cProfile.Profile(time.thread_time)
                profiler.enable()
                count, _, _ = await workload(client, args.seconds)
                profiler.disable()
                server.command(f"profile-stop {path}")
                profiles[kind] = (count, _stats(profiler), _stats(path))
            finally:
                await client.close()
        status("")

    count, client_rows, server_rows = profiles[KORIUM]
    print_top(f"korium client ({what})", client_rows, count, "cumulative")
    print_top(f"korium client ({what})", client_rows, count, "own")
    print_top(f"korium server ({what})", server_rows, count, "own")
    raw_count, raw_client_rows, raw_server_rows = profiles[RAW_MTLS]
    print_top(f"raw aioquic (mTLS) client ({what})", raw_client_rows, raw_count, "own")
    print_top(f"raw aioquic (mTLS) server ({what})", raw_server_rows, raw_count, "own")

    parts = {
        "korium client": components(client_rows, count),
        "raw client": components(raw_client_rows, raw_count),
        "korium server": components(server_rows, count),
        "raw server": components(raw_server_rows, raw_count),
    }
    names = sorted(
        {name for part in parts.values() for name in part},
        key=lambda name: -max(part.get(name, 0.0) for part in parts.values()),
    )
    print(f"CPU per request by component, us ({what}; own time; the profiler inflates it)")
    rows = [[name, *(f"{part.get(name, 0.0):.1f}" for part in parts.values())] for name in names]
    totals = [sum(part.values()) for part in parts.values()]
    rows.append(["total", *(f"{total:.1f}" for total in totals)])
    table(["component", *parts], rows)
    print(
        f"  requests profiled: korium {count}, raw {raw_count}, {args.seconds:.1f} s each; "
        "clock: CPU time of the event-loop thread (time.thread_time)"
    )


# -- main ---------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Measure korium RPC and handshakes against raw aioquic on 127.0.0.1."
    )
    parser.add_argument(
        "--seconds", type=float, default=3.0, help="duration of each measurement (default 3.0)"
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="repeats of each measurement; median is reported"
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=0.5,
        help="unmeasured run before each measurement, seconds (default 0.5)",
    )
    parser.add_argument(
        "--inflight", type=int, default=32, help="concurrent requests for 'in flight' (default 32)"
    )
    parser.add_argument(
        "--no-server-auth-only",
        action="store_true",
        help="skip raw aioquic without a client certificate (server-only TLS)",
    )
    parser.add_argument(
        "--profile",
        nargs="?",
        const=SEQUENTIAL,
        choices=[SEQUENTIAL, "inflight"],
        help="instead of the benchmark: profile sequential (default) or in-flight requests, "
        "korium and raw aioquic, client and server",
    )
    parser.add_argument("--serve", choices=SERVER_KINDS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.seconds <= 0 or args.warmup < 0:
        parser.error("--seconds must be positive and --warmup not negative")
    if args.inflight < 1:
        parser.error("--inflight must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve is not None:
        return asyncio.run(_serve(args.serve))

    kinds = [KORIUM, RAW_MTLS]
    if not args.profile and not args.no_server_auth_only:
        kinds.append(RAW_TLS)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print("korium RPC benchmark: korium vs raw aioquic, 127.0.0.1")
    print(
        f"  python {platform.python_version()}, aioquic {version('aioquic')}, "
        f"cryptography {version('cryptography')}, msgspec {version('msgspec')}, "
        f"asyncio default event loop, {platform.machine()}, cpu_count {os.cpu_count()}"
    )
    print(f"  load average before: {load}")
    if args.profile:
        print(
            f"  profile: {args.profile}"
            + (f" ({args.inflight} in flight)" if args.profile != SEQUENTIAL else "")
            + f", {args.seconds:.1f} s after "
            f"{args.warmup:.1f} s of warm-up; {len(PAYLOAD)}-byte payloads"
        )
    else:
        print(
            f"  {args.repeat} repeat(s) x {args.seconds:.1f} s per measurement, interleaved; "
            f"warm-up {args.warmup:.1f} s excluded; {len(PAYLOAD)}-byte payloads; "
            f"{args.inflight} in flight"
        )
    print(
        "  servers in child processes, clients in this process, unpinned; "
        "proof-of-work difficulty 0"
    )
    print()

    servers: dict[str, ServerProcess] = {}
    try:
        for kind in kinds:
            servers[kind] = ServerProcess(kind)
        if args.profile:
            asyncio.run(profile(servers, args))
        else:
            results = asyncio.run(benchmark(servers, args))
            report(results, args.inflight, args.repeat)
    finally:
        for server in servers.values():
            server.close()
    print(f"  load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
