"""A korium node in a NAT lab host, driven over JSON lines (:class:`LabNode`).

``LabNode.start(host)`` runs ``python -m korium_relay.labnode`` inside the host's namespace:
a node with the DHT, GossipSub and relay plugins that reads one JSON command per line on stdin
and answers one line on stdout, ``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}``.
Operations: ``start`` (bind, relay and path settings), ``bootstrap``, ``configure_nat``,
``connect``, ``path``, ``requests`` (a request/response session, recording failures and the
path each request left on), ``subscribe``/``publish``/``received``, ``stats``, ``close``; for
``benchmarks/relay.py``: ``serve_sink``, ``rate`` and ``bulk`` (timed sequential sessions),
``wait_path``, ``watch``/``watched`` (when the path to a peer was first relayed, first direct),
``cpu`` and ``profile_start``/``profile_stop`` (cProfile of the event loop).
"""

from __future__ import annotations

import asyncio
import cProfile
import io
import json
import logging
import os
import pstats
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, Self

import korium_dht.plugin
import korium_gossipsub.plugin

import korium_relay.plugin
from korium import Identity, Node, NodeConfig
from korium.capabilities import PubSubMessage
from korium.errors import KoriumError
from korium.rpc.dispatch import RpcConfig
from korium.transport.paths import PathConfig
from korium.transport.smartsock import TransportConfig
from korium_relay.natlab import Host

PLUGINS = [korium_dht.plugin, korium_gossipsub.plugin, korium_relay.plugin]
ANSWER_TIMEOUT = 600.0
SINK_PROTOCOL = "korium-bench/sink/1"
"""Bulk requests go here: the answer is two bytes, so a transfer measures one direction."""
SINK_REPLY = b"ok"
BENCH_TIMEOUT = 30.0
"""Seconds one benchmark request may take before the session fails."""
POLL_INTERVAL = 0.005
WATCH_INTERVAL = 0.001
WATCH_LIMIT = 300.0
"""Seconds a ``watch`` polls at most."""


class Agent:
    def __init__(self) -> None:
        self.node: Node | None = None
        self.received: dict[str, list[str]] = {}
        self.readers: list[asyncio.Future[None]] = []
        self.profiler: cProfile.Profile | None = None
        self.events: dict[str, float] = {}
        self.watcher: asyncio.Future[None] | None = None

    @property
    def running(self) -> Node:
        assert self.node is not None, "start first"
        return self.node

    def path_of(self, peer: Identity) -> str:
        path = self.running.smartsock.paths.active_path(peer)
        if path is None:
            return "none"
        return "relayed" if path.relayed else "direct"

    async def start(
        self,
        bind: str,
        advertise: str,
        relay: dict[str, Any],
        paths: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        transport = TransportConfig(paths=PathConfig(**(paths or {})))
        config = NodeConfig(pow_difficulty=0, rpc=RpcConfig(dial_timeout=2.0), transport=transport)
        builder = Node.builder(bind).config(config).plugins(PLUGINS)
        self.node = await builder.plugin_settings("relay", **relay).build()
        self.node.set_request_handler(lambda peer, data: b"echo " + data)
        self.advertise = advertise
        return {"identity": self.node.identity.hex(), "port": self.node.local_addr[1]}

    async def bootstrap(self, peer: str, address: str) -> dict[str, Any]:
        await self.running.bootstrap(Identity.from_hex(peer), address)
        return {}

    async def configure_nat(self, helper: str) -> dict[str, Any]:
        port = self.running.local_addr[1]
        is_public, relay, _ = await self.running.configure_nat(
            Identity.from_hex(helper), [f"{self.advertise}:{port}"]
        )
        mapping = korium_relay.plugin.service(self.running).mapping
        return {"public": is_public, "relay": relay.hex() if relay else None, "mapping": mapping}

    async def connect(self, peer: str) -> dict[str, Any]:
        identity = Identity.from_hex(peer)
        started = time.monotonic()
        await self.running.connect(identity)
        return {"seconds": time.monotonic() - started, "path": self.path_of(identity)}

    async def path(self, peer: str) -> dict[str, Any]:
        return {"path": self.path_of(Identity.from_hex(peer))}

    async def requests(self, peer: str, count: int, interval: float) -> dict[str, Any]:
        identity = Identity.from_hex(peer)
        failures: list[str] = []
        paths: list[str] = []
        for index in range(count):
            data = b"r%d" % index
            paths.append(self.path_of(identity))  # the path the request leaves on
            try:
                reply = await self.running.send(identity, data, timeout=5.0)
                if reply != b"echo " + data:
                    failures.append(f"wrong reply {reply!r}")
            except Exception as exc:
                failures.append(f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(interval)
        return {"failures": failures, "paths": paths}

    async def serve_sink(self) -> dict[str, Any]:
        self.running.rpc.register(SINK_PROTOCOL, lambda peer, data: SINK_REPLY)
        return {}

    async def rate(self, peer: str, count: int, size: int) -> dict[str, Any]:
        """*count* sequential echo requests of *size* bytes through ``send``; any failure or
        wrong reply fails the operation. Returns the seconds, the CPU seconds this process
        spent and every path a request left on."""
        identity = Identity.from_hex(peer)
        data = os.urandom(size)
        expected = b"echo " + data
        paths = {self.path_of(identity)}
        cpu, started = time.process_time(), time.perf_counter()
        for _ in range(count):
            paths.add(self.path_of(identity))
            reply = await self.running.send(identity, data, timeout=BENCH_TIMEOUT)
            if reply != expected:
                raise ValueError(f"wrong reply of {len(reply)} bytes")
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        paths.add(self.path_of(identity))
        return {"seconds": seconds, "cpu": cpu, "paths": sorted(paths)}

    async def bulk(self, peer: str, count: int, size: int) -> dict[str, Any]:
        """*count* sequential requests of *size* bytes to the peer's sink (``serve_sink``);
        returns what ``rate`` returns."""
        identity = Identity.from_hex(peer)
        data = os.urandom(size)
        paths = {self.path_of(identity)}
        cpu, started = time.process_time(), time.perf_counter()
        for _ in range(count):
            paths.add(self.path_of(identity))
            reply = await self.running.rpc.request(
                identity, SINK_PROTOCOL, data, timeout=BENCH_TIMEOUT
            )
            if reply != SINK_REPLY:
                raise ValueError(f"wrong sink reply {reply[:16]!r}")
        seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
        paths.add(self.path_of(identity))
        return {"seconds": seconds, "cpu": cpu, "paths": sorted(paths)}

    async def wait_path(self, peer: str, path: str, timeout: float) -> dict[str, Any]:
        """Poll until the active path to *peer* is *path* (at most *timeout* seconds); returns
        the seconds waited and the path then."""
        identity = Identity.from_hex(peer)
        started = time.monotonic()
        for _ in range(int(timeout / POLL_INTERVAL) + 1):
            if self.path_of(identity) == path:
                break
            await asyncio.sleep(POLL_INTERVAL)
        return {"seconds": time.monotonic() - started, "path": self.path_of(identity)}

    async def watch(self, peer: str) -> dict[str, Any]:
        """Note (``time.monotonic``, polled every millisecond) when the path to *peer* is first
        ``relayed`` and first ``direct``, and when a connection to it first exists
        (``connected``), until ``watched`` is called."""
        identity = Identity.from_hex(peer)
        self.events = {}

        async def poll() -> None:
            for _ in range(int(WATCH_LIMIT / WATCH_INTERVAL)):
                now = time.monotonic()
                path = self.path_of(identity)
                if path != "none":
                    self.events.setdefault(path, now)
                if identity in self.running.rpc.connected_peers():
                    self.events.setdefault("connected", now)
                await asyncio.sleep(WATCH_INTERVAL)

        self.watcher = asyncio.ensure_future(poll())
        return {}

    async def watched(self) -> dict[str, Any]:
        """Stop ``watch``; returns its events (monotonic seconds: comparable across processes
        on one machine) and the time now."""
        if self.watcher is not None:
            self.watcher.cancel()
            self.watcher = None
        return {"events": self.events, "now": time.monotonic()}

    async def cpu(self) -> dict[str, Any]:
        return {"cpu": time.process_time()}

    async def profile_start(self) -> dict[str, Any]:
        self.profiler = cProfile.Profile()
        self.profiler.enable()
        return {}

    async def profile_stop(self, top: int) -> dict[str, Any]:
        """Stop profiling; returns the *top* functions by own time (tottime) as text."""
        if self.profiler is None:
            raise ValueError("profile_start first")
        self.profiler.disable()
        text = io.StringIO()
        stats = pstats.Stats(self.profiler, stream=text)
        stats.sort_stats("tottime").print_stats(top)
        self.profiler = None
        return {"report": text.getvalue()}

    async def subscribe(self, topic: str) -> dict[str, Any]:
        node = self.running
        messages = node.messages(topic)
        await node.subscribe(topic)
        self.received[topic] = []

        async def read() -> None:
            message: PubSubMessage
            async for message in messages:
                self.received[topic].append(message.data.decode())

        self.readers.append(asyncio.ensure_future(read()))
        return {}

    async def publish(self, topic: str, data: str) -> dict[str, Any]:
        return {"sent_to": await self.running.publish(topic, data.encode())}

    async def received_on(self, topic: str) -> dict[str, Any]:
        return {"messages": self.received.get(topic, [])}

    async def stats(self) -> dict[str, Any]:
        return {"stats": self.running.stats()}

    async def close(self) -> dict[str, Any]:
        if self.node is not None:
            await self.node.close()
        return {}


async def main() -> None:
    agent = Agent()
    loop = asyncio.get_running_loop()
    operations: dict[str, Callable[..., Awaitable[dict[str, Any]]]] = {
        "start": agent.start,
        "bootstrap": agent.bootstrap,
        "configure_nat": agent.configure_nat,
        "connect": agent.connect,
        "path": agent.path,
        "requests": agent.requests,
        "subscribe": agent.subscribe,
        "publish": agent.publish,
        "received": agent.received_on,
        "stats": agent.stats,
        "close": agent.close,
        "serve_sink": agent.serve_sink,
        "rate": agent.rate,
        "bulk": agent.bulk,
        "wait_path": agent.wait_path,
        "watch": agent.watch,
        "watched": agent.watched,
        "cpu": agent.cpu,
        "profile_start": agent.profile_start,
        "profile_stop": agent.profile_stop,
    }
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            break
        command = json.loads(line)
        operation = command.pop("op")
        try:
            answer = {"ok": True, **await operations[operation](**command)}
        except Exception as exc:
            answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
        if operation == "close":
            break


class LabNodeError(KoriumError):
    """A lab node failed a command, or died."""


class LabNode:
    """The test's or benchmark's handle on one korium node running in a lab host."""

    PORT = 4433

    def __init__(self, host: Host, process: asyncio.subprocess.Process) -> None:
        self.host = host
        self.process = process
        self.identity = ""
        self.address = f"{host.address}:{self.PORT}"

    @classmethod
    async def start(
        cls,
        host: Host,
        *,
        relay: dict[str, Any] | None = None,
        paths: dict[str, Any] | None = None,
        answer_limit: int = 1024 * 1024,
    ) -> Self:
        """A node on *host*, bound to its address, with these relay and path settings."""
        environment = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
        process = await host.run(
            sys.executable, "-m", "korium_relay.labnode", env=environment, limit=answer_limit
        )
        node = cls(host, process)
        try:
            info = await node(
                "start", bind=node.address, advertise=host.address, relay=relay or {}, paths=paths
            )
        except BaseException:
            process.kill()
            await process.wait()
            raise
        node.identity = info["identity"]
        return node

    async def __call__(
        self, op: str, *, answer_timeout: float = ANSWER_TIMEOUT, **arguments: Any
    ) -> dict[str, Any]:
        """Run one command; its answer without ``ok`` (LabNodeError if it failed)."""
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write((json.dumps({"op": op, **arguments}) + "\n").encode())
        await self.process.stdin.drain()
        line = await asyncio.wait_for(self.process.stdout.readline(), answer_timeout)
        if not line:
            raise LabNodeError(f"the node on {self.host.name} died during {op}")
        answer: dict[str, Any] = json.loads(line)
        if not answer.pop("ok"):
            raise LabNodeError(f"{self.host.name} {op}: {answer['error']}")
        return answer

    async def stats(self) -> dict[str, float]:
        """The node's ``stats()``."""
        stats: dict[str, float] = (await self("stats"))["stats"]
        return stats

    async def path_to(self, other: LabNode) -> str:
        """``"direct"``, ``"relayed"`` or ``"none"``: the active path to *other*."""
        return str((await self("path", peer=other.identity))["path"])

    async def stop(self) -> None:
        """Close the node and wait for its process (killed if it does not answer)."""
        if self.process.returncode is None:
            try:
                await self("close", answer_timeout=30.0)
            except (LabNodeError, TimeoutError, ConnectionError):
                self.process.kill()
            await self.process.wait()


if __name__ == "__main__":
    if os.environ.get("KORIUM_LOG"):
        logging.basicConfig(level=logging.INFO, format=f"%(name)s {os.getpid()} %(message)s")
    asyncio.run(main())
