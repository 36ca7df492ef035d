"""Prove the NAT lab with plain UDP: mappings, filtering, hole punching, and a clean teardown.

Every other NAT-traversal test trusts the lab, so this module checks the lab itself, without
any korium code: a small agent script (one UDP socket, commands on stdin, received datagrams as
JSON lines on stdout) runs in the namespaces and the test plays the rendezvous's signalling.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from korium_relay.natlab import (
    Host,
    NatKind,
    NatLab,
    NatLabError,
    Router,
    unavailable_reason,
)

pytestmark = pytest.mark.skipif(
    unavailable_reason() is not None, reason=f"NAT lab unavailable: {unavailable_reason()}"
)

WAIT = 5.0
"""Seconds to wait for a datagram that should arrive."""

GRACE = 0.3
"""Seconds to let stray datagrams land before asserting that none arrived."""

PUNCH_INTERVAL = 0.2
"""Seconds between two punch rounds (each side sends one datagram per round)."""

PUNCH_ROUNDS = 25
"""Punch rounds before giving up: 5 s in all."""

# Runs in a lab namespace with the test's interpreter; argv: port, "reflect" or "plain".
AGENT = r"""
import json, socket, sys, threading

reflect = sys.argv[2] == "reflect"
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind(("0.0.0.0", int(sys.argv[1])))
lock = threading.Lock()

def emit(event):
    with lock:
        sys.stdout.write(json.dumps(event) + "\n")
        sys.stdout.flush()

def receive():
    while True:
        data, source = sock.recvfrom(2048)
        emit({"from": [source[0], source[1]], "data": data.decode()})
        if reflect:  # a rendezvous: tell the sender the address it was seen from
            sock.sendto(json.dumps({"observed": [source[0], source[1]]}).encode(), source)

threading.Thread(target=receive, daemon=True).start()
emit({"port": sock.getsockname()[1]})
for line in sys.stdin:
    command = json.loads(line)
    sock.sendto(command["data"].encode(), (command["host"], command["port"]))
    emit({"sent": command["data"]})
"""

Event = dict[str, Any]
Address = tuple[str, int]


class Agent:
    """The test's handle on one agent process: send commands, wait for its events."""

    def __init__(self, host: Host, process: asyncio.subprocess.Process) -> None:
        self.host = host
        self.process = process
        self.events: list[Event] = []
        self.port = 0
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, host: Host, *, reflect: bool = False) -> Agent:
        """Start an agent on *host* bound to a fresh port and wait until it is ready."""
        mode = "reflect" if reflect else "plain"
        agent = cls(host, await host.run(sys.executable, "-c", AGENT, "0", mode))
        ready = await agent.wait_for(lambda event: "port" in event)
        agent.port = ready["port"]
        return agent

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            self.events.append(json.loads(line))
            self._changed.set()

    async def wait_for(self, predicate: Callable[[Event], bool], timeout: float = WAIT) -> Event:
        """Return the first event matching *predicate*, waiting at most *timeout* seconds."""
        async with asyncio.timeout(timeout):
            while True:
                self._changed.clear()
                for event in self.events:
                    if predicate(event):
                        return event
                await self._changed.wait()

    async def send(self, to: Address, data: str) -> None:
        """Send one datagram to *to* and wait until the agent has sent it."""
        self.send_nowait(to, data)
        await self.wait_for(lambda event: event.get("sent") == data)

    def send_nowait(self, to: Address, data: str) -> None:
        """Ask the agent to send one datagram to *to*."""
        assert self.process.stdin is not None
        command = {"host": to[0], "port": to[1], "data": data}
        self.process.stdin.write(json.dumps(command).encode() + b"\n")

    async def received(self, data: str, source: Address | None = None) -> Address:
        """Wait for datagram *data* (from *source*, if given) and return where it came from."""

        def matches(event: Event) -> bool:
            if event.get("data") != data:
                return False
            return source is None or tuple(event["from"]) == source

        event = await self.wait_for(matches)
        return (event["from"][0], event["from"][1])

    def datagrams(self) -> list[tuple[Address, str]]:
        """Every datagram received so far, with its source."""
        return [
            ((event["from"][0], event["from"][1]), event["data"])
            for event in self.events
            if "data" in event
        ]

    @property
    def local(self) -> Address:
        """The address and port this agent's socket is bound to on its host."""
        return (self.host.address, self.port)

    async def stop(self) -> None:
        """End the agent (EOF on stdin), killing it if it does not exit promptly."""
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            async with asyncio.timeout(WAIT):
                await self.process.wait()
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
        await self._reader


class Agents:
    """Starts agents for one test and stops them all at teardown."""

    def __init__(self) -> None:
        self._agents: list[Agent] = []

    async def start(self, host: Host, *, reflect: bool = False) -> Agent:
        agent = await Agent.start(host, reflect=reflect)
        self._agents.append(agent)
        return agent

    async def stop_all(self) -> None:
        for agent in self._agents:
            await agent.stop()


@dataclass
class Topology:
    """The module's lab: two public hosts, two routers of each NAT kind, one open router."""

    lab: NatLab
    root_links_before: set[str]
    rendezvous: Host
    stranger: Host
    routers: dict[str, Router]
    hosts: dict[str, Host]


def root_links() -> set[str]:
    """Names of the root namespace's interfaces."""
    output = subprocess.run(
        ["ip", "-o", "link"], capture_output=True, text=True, check=True, timeout=10
    ).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in output.splitlines() if line}


def lab_namespaces(prefix: str) -> list[str]:
    """Namespaces on this machine whose name carries lab prefix *prefix*."""
    output = subprocess.run(
        ["ip", "netns", "list"], capture_output=True, text=True, check=True, timeout=10
    ).stdout
    names = [line.split()[0] for line in output.splitlines() if line.strip()]
    return sorted(name for name in names if name.startswith(f"{prefix}-"))


@pytest.fixture(scope="module")
def topology() -> Iterator[Topology]:
    before = root_links()
    with NatLab() as lab:
        rendezvous = lab.public_host("rendezvous")
        stranger = lab.public_host("stranger")
        routers = {
            "eim1": lab.nat("eim1", NatKind.EIM),
            "eim2": lab.nat("eim2", NatKind.EIM),
            "sym1": lab.nat("sym1", NatKind.SYMMETRIC),
            "sym2": lab.nat("sym2", NatKind.SYMMETRIC),
            "open": lab.nat("open", NatKind.NONE),
        }
        hosts = {f"{name}-host": lab.private_host(f"{name}-host", r) for name, r in routers.items()}
        yield Topology(
            lab=lab,
            root_links_before=before,
            rendezvous=rendezvous,
            stranger=stranger,
            routers=routers,
            hosts=hosts,
        )


@pytest.fixture
async def agents() -> AsyncIterator[Agents]:
    started = Agents()
    yield started
    await started.stop_all()


# -- addresses ---------------------------------------------------------------------------------


def test_topology_addresses(topology: Topology) -> None:
    lab = topology.lab
    assert topology.rendezvous.address == "203.0.113.2"
    assert topology.rendezvous.public_address == "203.0.113.2"
    eim1 = topology.routers["eim1"]
    assert (eim1.kind, eim1.address, eim1.lan_prefix) == (NatKind.EIM, "10.1.0.1", "10.1.0.0/24")
    assert eim1.wan_address == eim1.public_address == "203.0.113.4"
    host = topology.hosts["eim1-host"]
    assert (host.address, host.public_address) == ("10.1.0.2", eim1.wan_address)
    open_router = topology.routers["open"]
    assert open_router.lan_prefix == "198.51.100.0/28"
    open_host = topology.hosts["open-host"]
    assert (open_host.address, open_host.public_address) == ("198.51.100.2", "198.51.100.2")
    assert host.argv("true") == ["ip", "netns", "exec", f"{lab.prefix}-eim1-host", "true"]
    assert "10.1.0.2/24" in host.run_sync("ip", "-o", "-4", "addr", "show", "dev", "eth0")
    assert host.run_sync("ip", "route", "show", "default").split()[:3] == [
        "default",
        "via",
        "10.1.0.1",
    ]


# -- mapping -----------------------------------------------------------------------------------


async def test_eim_nat_keeps_one_external_port_for_every_destination(
    topology: Topology, agents: Agents
) -> None:
    private = await agents.start(topology.hosts["eim1-host"])
    first = await agents.start(topology.rendezvous)
    second = await agents.start(topology.stranger)
    await private.send(first.local, "hello first")
    await private.send(second.local, "hello second")
    seen_by_first = await first.received("hello first")
    seen_by_second = await second.received("hello second")
    wan = topology.routers["eim1"].wan_address
    assert seen_by_first[0] == wan  # the router's WAN address, not 10.1.0.2
    assert seen_by_first == seen_by_second


async def test_symmetric_nat_picks_a_new_port_per_destination(
    topology: Topology, agents: Agents
) -> None:
    private = await agents.start(topology.hosts["sym1-host"])
    destinations = [
        await agents.start(topology.rendezvous),
        await agents.start(topology.rendezvous),
        await agents.start(topology.stranger),
    ]
    seen: list[Address] = []
    for index, destination in enumerate(destinations):
        await private.send(destination.local, f"hello {index}")
        seen.append(await destination.received(f"hello {index}"))
    wan = topology.routers["sym1"].wan_address
    assert [address for address, _ in seen] == [wan, wan, wan]
    # An endpoint-independent NAT would show one port three times. fully-random draws each port
    # from ~64,000, so requiring two distinct ports of three cannot fail by chance collision.
    assert len({port for _, port in seen}) >= 2


# -- filtering ---------------------------------------------------------------------------------


@pytest.mark.parametrize("router", ["eim1", "sym1"])
async def test_nat_drops_unsolicited_datagrams(
    topology: Topology, agents: Agents, router: str
) -> None:
    private = await agents.start(topology.hosts[f"{router}-host"])
    rendezvous = await agents.start(topology.rendezvous)
    stranger = await agents.start(topology.stranger)
    neighbour = await agents.start(topology.rendezvous)  # same address, another port
    await private.send(rendezvous.local, "hello")
    mapped = await rendezvous.received("hello")
    wan = topology.routers[router].wan_address
    # Strangers try the live mapping and the socket's own port on the router: the filter is
    # address-and-port-dependent, so even the rendezvous's address from another port is refused.
    for port in {mapped[1], private.port}:
        await stranger.send((wan, port), "unsolicited")
        await neighbour.send((wan, port), "unsolicited")
    await rendezvous.send(mapped, "reply")
    assert await private.received("reply") == rendezvous.local  # the mapping works inbound
    await asyncio.sleep(GRACE)
    assert private.datagrams() == [(rendezvous.local, "reply")]


async def test_hosts_behind_an_open_router_are_public(topology: Topology, agents: Agents) -> None:
    host = topology.hosts["open-host"]
    public = await agents.start(host)
    rendezvous = await agents.start(topology.rendezvous)
    stranger = await agents.start(topology.stranger)
    await public.send(rendezvous.local, "hello")
    assert await rendezvous.received("hello") == (host.address, public.port)  # no translation
    await stranger.send(public.local, "unsolicited")
    assert await public.received("unsolicited") == stranger.local  # no filtering


# -- hole punching -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("left", "right", "punched"),
    [
        ("eim1", "eim2", True),
        ("sym1", "sym2", False),
        # The EIM side's mapping is known, but its filter accepts only the address it sent to:
        # the symmetric side's observed port. The symmetric side reaches it from a new random
        # port, so the EIM router drops it; the EIM side's punches hit a port of the symmetric
        # router mapped to the rendezvous only. Both NATs filter, so nothing gets through.
        ("eim1", "sym1", False),
    ],
)
async def test_hole_punching(
    topology: Topology, agents: Agents, left: str, right: str, punched: bool
) -> None:
    rendezvous = await agents.start(topology.rendezvous, reflect=True)
    a = await agents.start(topology.hosts[f"{left}-host"])
    b = await agents.start(topology.hosts[f"{right}-host"])
    observed: dict[str, Address] = {}
    for name, agent in (("a", a), ("b", b)):
        await agent.send(rendezvous.local, f"register {name}")
        observed[name] = await rendezvous.received(f"register {name}")
        reflection = json.dumps({"observed": list(observed[name])})
        assert await agent.received(reflection) == rendezvous.local  # each side learns its own
    assert observed["a"][0] == topology.routers[left].wan_address
    assert observed["b"][0] == topology.routers[right].wan_address

    for _ in range(PUNCH_ROUNDS):
        a.send_nowait(observed["b"], "punch from a")
        b.send_nowait(observed["a"], "punch from b")
        await asyncio.sleep(PUNCH_INTERVAL)
        if ("punch from b" in dict(a.datagrams()).values()) and (
            "punch from a" in dict(b.datagrams()).values()
        ):
            break

    if punched:  # each receives the other's punches directly, from its observed address
        assert await a.received("punch from b") == observed["b"]
        assert await b.received("punch from a") == observed["a"]
    else:
        await asyncio.sleep(GRACE)
        assert [data for _, data in a.datagrams() if data.startswith("punch")] == []
        assert [data for _, data in b.datagrams() if data.startswith("punch")] == []


# -- lifecycle ---------------------------------------------------------------------------------


def test_the_lab_adds_nothing_to_the_root_namespace(topology: Topology) -> None:
    assert root_links() == topology.root_links_before
    lab = topology.lab
    assert lab_namespaces(lab.prefix) == sorted(lab.namespaces)
    assert len(lab.namespaces) == 1 + 5 + 5 + 2  # internet, routers, private and public hosts


async def test_close_kills_processes_and_deletes_every_namespace() -> None:
    before = root_links()
    prefix = f"knlt{secrets.token_hex(3)}"
    lab = NatLab(prefix)
    router = lab.nat("home", NatKind.SYMMETRIC)
    host = lab.private_host("alice", router)
    lab.public_host("relay")
    process = await host.run(
        sys.executable, "-c", "import time; time.sleep(60)", stdin=None, stdout=None
    )
    assert lab_namespaces(prefix) == sorted(
        f"{prefix}-{name}" for name in ("internet", "home", "alice", "relay")
    )
    assert root_links() == before
    lab.close()
    async with asyncio.timeout(WAIT):
        assert await process.wait() == -9  # killed by close(), not left running in a dead netns
    assert lab_namespaces(prefix) == []
    assert lab.namespaces == ()
    assert root_links() == before
    lab.close()  # idempotent
    assert lab.closed
    with pytest.raises(NatLabError, match="is closed"):
        lab.public_host("late")


def crash_inside_a_lab(prefix: str) -> None:
    with NatLab(prefix) as lab:
        lab.public_host("relay")
        assert lab_namespaces(prefix) == [f"{prefix}-internet", f"{prefix}-relay"]
        raise RuntimeError("test crashed")


def test_with_block_closes_the_lab_on_error() -> None:
    prefix = f"knlt{secrets.token_hex(3)}"
    with pytest.raises(RuntimeError, match="test crashed"):
        crash_inside_a_lab(prefix)
    assert lab_namespaces(prefix) == []


async def test_async_with_closes_the_lab() -> None:
    prefix = f"knlt{secrets.token_hex(3)}"
    async with NatLab(prefix) as lab:
        lab.nat("home", NatKind.EIM)
        assert len(lab_namespaces(prefix)) == 2
    assert lab_namespaces(prefix) == []


@pytest.mark.parametrize("fail_at", [1, 2, 5, 8, 13, 21, 30])
def test_a_partly_built_lab_leaves_nothing_behind(
    monkeypatch: pytest.MonkeyPatch, fail_at: int
) -> None:
    prefix = f"knlt{secrets.token_hex(3)}"
    calls = 0
    original = NatLab._run

    def failing(lab: NatLab, argv: list[str], input: str | None = None) -> str:
        nonlocal calls
        calls += 1
        if calls == fail_at:
            raise NatLabError("injected failure")
        return original(lab, argv, input)

    monkeypatch.setattr(NatLab, "_run", failing)
    labs: list[NatLab] = []

    def build() -> None:  # the 32 commands of a small lab, one of which fails
        labs.append(NatLab(prefix))
        router = labs[0].nat("home", NatKind.EIM)
        labs[0].private_host("alice", router)
        labs[0].public_host("relay")

    with pytest.raises(NatLabError, match="injected failure"):
        build()
    for lab in labs:
        lab.close()
        lab.close()
    assert lab_namespaces(prefix) == []


def test_names_are_checked() -> None:
    with NatLab() as lab:
        with pytest.raises(ValueError, match="host name 'Bad Name'"):
            lab.public_host("Bad Name")
        with pytest.raises(ValueError, match="already has a host named 'internet'"):
            lab.public_host("internet")
        lab.public_host("relay")
        with pytest.raises(ValueError, match="already has a host named 'relay'"):
            lab.public_host("relay")
        with NatLab() as other:
            foreign = other.nat("home", NatKind.EIM)
            with pytest.raises(NatLabError, match="does not belong"):
                lab.private_host("alice", foreign)
    with pytest.raises(ValueError, match="lab prefix"):
        NatLab("has-dash")
