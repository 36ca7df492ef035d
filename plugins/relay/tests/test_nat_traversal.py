"""NAT traversal with real korium nodes behind real NATs (the NAT lab: network namespaces and
nftables routers on this machine).

Each node is a process in a lab host (:class:`korium_relay.labnode.LabNode`).
Topology, built afresh for each test (0.3 s; no conntrack state carries over): two public
relays; two endpoint-independent NATs (``e1``,
``e2``), two symmetric ones (``s1``, ``s2``) and an unfiltered router (``open``), one host
behind each. Every wait is bounded; nothing asserts a duration (connect times are printed for
the record: ``pytest -s``).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from korium_relay.labnode import LabNode
from korium_relay.natlab import Host, NatKind, NatLab, unavailable_reason

pytestmark = [
    pytest.mark.skipif(unavailable_reason() is not None, reason=f"NAT lab: {unavailable_reason()}"),
    pytest.mark.timeout(300),
]


@pytest.fixture
def lab() -> Iterator[dict[str, Host]]:
    with NatLab() as built:
        routers = {
            "e1": built.nat("e1", NatKind.EIM),
            "e2": built.nat("e2", NatKind.EIM),
            "s1": built.nat("s1", NatKind.SYMMETRIC),
            "s2": built.nat("s2", NatKind.SYMMETRIC),
            "open": built.nat("open", NatKind.NONE),
        }
        hosts: dict[str, Host] = {
            name: built.private_host(f"h-{name}", router) for name, router in routers.items()
        }
        hosts.update({f"nat-{name}": router for name, router in routers.items()})
        hosts["relay"] = built.public_host("relay")
        hosts["relay2"] = built.public_host("relay2")
        yield hosts


Start = Callable[..., Awaitable[LabNode]]


@pytest.fixture
async def start(lab: dict[str, Host]) -> AsyncIterator[Start]:
    """``await start("e1", **relay_settings)``: a node on that host; all stopped at teardown."""
    nodes: list[LabNode] = []

    async def make(name: str, paths: dict[str, Any] | None = None, **relay: Any) -> LabNode:
        node = await LabNode.start(lab[name], relay=relay, paths=paths)
        nodes.append(node)
        return node

    yield make
    await asyncio.gather(*(node.stop() for node in nodes))


async def joined(
    start: Start, *names: str, paths: dict[str, Any] | None = None, **relay: Any
) -> tuple[LabNode, list[LabNode]]:
    """A public relay, and nodes on *names* that bootstrapped through it and configured NAT."""
    relay_node = await start("relay", paths=paths)
    nodes = [await start(name, paths=paths, **relay) for name in names]
    for node in nodes:
        await node("bootstrap", peer=relay_node.identity, address=relay_node.address)
    for node in nodes:
        await node("configure_nat", helper=relay_node.identity)
    return relay_node, nodes


async def test_configure_nat_classifies_each_host(start: Start) -> None:
    relay_node, nodes = await joined(start, "e1", "s1", "open")
    relay2 = await start("relay2")
    await relay2("bootstrap", peer=relay_node.identity, address=relay_node.address)
    assert (await relay_node("configure_nat", helper=relay2.identity))["public"] is True
    results = {
        node.host.name: await node("configure_nat", helper=relay_node.identity) for node in nodes
    }
    independent, dependent = "endpoint-independent", "address-and-port-dependent"
    assert results["h-open"] == {"public": True, "relay": None, "mapping": independent}
    assert results["h-e1"] == {
        "public": False,
        "relay": relay_node.identity,
        "mapping": independent,
    }
    assert results["h-s1"] == {"public": False, "relay": relay_node.identity, "mapping": dependent}


@pytest.mark.parametrize(
    ("first", "second", "outcome"),
    [
        ("e1", "e2", "direct"),
        ("s1", "s2", "relayed"),
        ("e1", "s2", "relayed"),
        ("s1", "e2", "relayed"),
        ("open", "e2", "direct"),
    ],
)
async def test_connect_by_identity_across_nats(
    start: Start, first: str, second: str, outcome: str
) -> None:
    """The NAT-type matrix: connect by identity (direct dial, then the relay from the peer's
    record, then hole punching) and run requests across any relay-to-direct switch."""
    _, (a, b) = await joined(start, first, second, punch_delay=0.5)
    connected = await a("connect", peer=b.identity)
    session = await a("requests", peer=b.identity, count=100, interval=0.02)
    stats = {**(await b("stats"))["stats"], **(await a("stats"))["stats"]}
    print(
        f"\nNAT matrix: {first} -> {second}: connect() {connected['seconds']:.2f} s over "
        f"{connected['path']} (relay set up in {stats.get('relay.last_relay_setup_ms')} ms "
        f"after a failed direct dial; punched in {stats.get('relay.last_punch_ms')} ms), "
        f"ends {session['paths'][-1]}"
    )
    assert session["failures"] == []
    assert session["paths"][-1] == outcome
    if outcome == "direct" and first != "open":
        assert connected["path"] == "relayed"  # it started relayed and switched mid-session
        assert "relayed" in session["paths"]
        assert (await b("path", peer=a.identity))["path"] == "direct"


async def test_pubsub_over_a_relayed_connection(start: Start) -> None:
    _, (a, b) = await joined(start, "s1", "s2")
    await a("connect", peer=b.identity)
    for node in (a, b):
        await node("subscribe", topic="lab")
    for attempt in range(100):  # until the subscription is known, then messages flow
        await a("publish", topic="lab", data=f"m{attempt}")
        if (await b("received", topic="lab"))["messages"]:
            break
        await asyncio.sleep(0.1)
    await a("publish", topic="lab", data="last")
    for _ in range(100):
        if "last" in (await b("received", topic="lab"))["messages"]:
            break
        await asyncio.sleep(0.1)
    assert "last" in (await b("received", topic="lab"))["messages"]
    assert (await a("path", peer=b.identity))["path"] == "relayed"


async def test_a_dead_direct_path_falls_back_to_the_relay(
    start: Start, lab: dict[str, Host]
) -> None:
    """After the punch, the routers start dropping traffic between the two NATs: the path
    table notices (fast probing here) and the connection goes back to the relay, while a
    request session runs."""
    fast = {"probe_interval": 0.5, "probe_timeout": 0.3, "max_failures": 2, "stale_after": 2.0}
    _, (a, b) = await joined(start, "e1", "e2", paths=fast)
    await a("connect", peer=b.identity)
    assert (await a("requests", peer=b.identity, count=50, interval=0.02))["paths"][-1] == "direct"
    for mine, theirs in (("nat-e1", "nat-e2"), ("nat-e2", "nat-e1")):
        other = lab[theirs].public_address
        for direction in ("saddr", "daddr"):
            lab[mine].run_sync(
                "nft", "insert", "rule", "ip", "natlab", "forward", "ip", direction, other, "drop"
            )
    session = await a("requests", peer=b.identity, count=150, interval=0.05)
    assert session["failures"] == []
    assert session["paths"][0] == "direct"
    assert session["paths"][-1] == "relayed"


async def test_killing_the_relay_after_the_switch_keeps_the_direct_path(start: Start) -> None:
    relay_node, (a, b) = await joined(start, "e1", "e2")
    await a("connect", peer=b.identity)
    before = await a("requests", peer=b.identity, count=50, interval=0.02)
    assert before["paths"][-1] == "direct"
    await relay_node.stop()
    after = await a("requests", peer=b.identity, count=50, interval=0.02)
    assert after["failures"] == []
    assert set(after["paths"]) == {"direct"}


async def test_killing_the_relay_while_relayed_fails_clearly_then_another_relay_serves(
    start: Start,
) -> None:
    relay_node, (a, b) = await joined(start, "s1", "s2", hole_punching=False)
    relay2 = await start("relay2")
    for node in (relay2, a, b):
        if node is not relay2:
            await node("bootstrap", peer=relay2.identity, address=relay2.address)
    await relay2("bootstrap", peer=relay_node.identity, address=relay_node.address)
    await relay2("configure_nat", helper=relay_node.identity)  # publishes its public record
    await a("connect", peer=b.identity)
    assert (await a("requests", peer=b.identity, count=5, interval=0.02))["failures"] == []

    await relay_node.stop()
    broken = await a("requests", peer=b.identity, count=1, interval=0.0)
    assert len(broken["failures"]) == 1
    assert "relay" in broken["failures"][0]
    for _ in range(100):  # b notices, picks relay2 and republishes its record
        if (await b("stats"))["stats"].get("relay.relays_reselected"):
            break
        await asyncio.sleep(0.1)
    assert (await b("stats"))["stats"]["relay.relays_reselected"] == 1
    for _ in range(10):  # until a finds b's new record in the DHT (a dial or two)
        if not (await a("requests", peer=b.identity, count=1, interval=0.0))["failures"]:
            break
    again = await a("requests", peer=b.identity, count=20, interval=0.02)
    assert again["failures"] == []
    assert again["paths"][-1] == "relayed"
