"""Node builder and lifecycle: profiles, identities, hooks in order, capability facade."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from korium import (
    DISCOVERY,
    PUBSUB,
    Identity,
    Keypair,
    Node,
    NodeConfig,
    NodeIdentity,
    PluginInfo,
    ProofOfWork,
    hookimpl,
)
from korium.capabilities import PubSub, PubSubMessage, PubSubValidator, Validation
from korium.errors import (
    CapabilityMissing,
    ConfigError,
    InsufficientProofOfWorkError,
    PluginError,
)

DIFFICULTY = 6


class Recorder:
    """A plugin object that records every lifecycle hook call."""

    korium_plugin = PluginInfo(name="recorder")

    def __init__(self) -> None:
        self.calls: list[str] = []

    @hookimpl
    def korium_configure(self, config: NodeConfig) -> None:
        self.calls.append("configure")
        config.settings("recorder").setdefault("seen", True)

    @hookimpl
    def korium_node_setup(self, node: Node) -> None:
        self.calls.append(f"setup:{node.identity.short}")

    @hookimpl
    def korium_node_started(self, node: Node) -> object:
        async def started() -> None:
            await asyncio.sleep(0)
            self.calls.append("started")

        return started()

    @hookimpl
    def korium_node_stopping(self, node: Node) -> None:
        self.calls.append("stopping")

    @hookimpl
    def korium_stats(self, node: Node) -> dict[str, int]:
        return {"recorder.calls": len(self.calls)}


async def test_builder_runs_hooks_in_lifecycle_order() -> None:
    recorder = Recorder()
    node = await Node.builder("127.0.0.1:0").difficulty(DIFFICULTY).plugins([recorder]).build()
    assert recorder.calls == ["configure", f"setup:{node.identity.short}", "started"]
    assert node.config.settings("recorder") == {"seen": True}
    async with node:
        assert node.running
    assert not node.running
    assert recorder.calls[-1] == "stopping"
    stats = node.stats()
    assert stats["kernel.plugins"] == 1
    assert stats["recorder.calls"] == 4


async def test_start_and_close_are_idempotent() -> None:
    recorder = Recorder()
    node = await Node.builder("127.0.0.1:0").difficulty(DIFFICULTY).plugins([recorder]).build()
    await node.start()
    await node.close()
    await node.close()
    assert recorder.calls.count("started") == 1
    assert recorder.calls.count("stopping") == 1


async def test_failing_start_hook_closes_the_node() -> None:
    class Broken:
        @hookimpl
        def korium_node_started(self, node: Node) -> None:
            raise RuntimeError("boom")

    recorder = Recorder()
    builder = Node.builder("127.0.0.1:0").difficulty(DIFFICULTY).plugins([recorder, Broken()])
    with pytest.raises(RuntimeError, match="boom"):
        await builder.build()
    assert "stopping" in recorder.calls


async def test_failing_stop_hook_is_logged_and_shutdown_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken:
        @hookimpl
        def korium_node_stopping(self, node: Node) -> object:
            async def fail() -> None:
                raise RuntimeError("cannot flush")

            return fail()

    recorder = Recorder()
    node = (
        await Node.builder("127.0.0.1:0")
        .difficulty(DIFFICULTY)
        .plugins([recorder, Broken()])
        .build()
    )
    await node.close()
    assert "stopping" in recorder.calls
    assert "failed while stopping" in caplog.text


async def test_declared_capability_must_be_provided() -> None:
    class Liar:
        korium_plugin = PluginInfo(name="liar", provides=(DISCOVERY,))

    with pytest.raises(PluginError, match="declares discovery but did not register it"):
        await Node.builder("127.0.0.1:0").difficulty(DIFFICULTY).plugins([Liar()]).build()


async def test_capability_facade_names_the_extra() -> None:
    node = await Node.builder("127.0.0.1:0").difficulty(DIFFICULTY).plugins([]).build()
    with pytest.raises(CapabilityMissing, match=r"find_peers needs a discovery .*korium\[dht\]"):
        await node.find_peers(node.identity)
    with pytest.raises(CapabilityMissing, match=r"korium\[dht\]"):
        await node.resolve(node.identity)
    with pytest.raises(CapabilityMissing, match=r"publish needs a pubsub .*korium\[gossipsub\]"):
        await node.publish("t", b"x")
    with pytest.raises(CapabilityMissing, match=r"korium\[gossipsub\]"):
        await node.subscribe("t")
    with pytest.raises(
        CapabilityMissing, match=r"unsubscribe needs a pubsub .*korium\[gossipsub\]"
    ):
        await node.unsubscribe("t")
    with pytest.raises(CapabilityMissing, match=r"messages needs a pubsub .*korium\[gossipsub\]"):
        node.messages()
    await node.close()


class FakePubSub:
    """A PubSub service that loops published messages back to its own subscriptions."""

    def __init__(self, source: Identity) -> None:
        self.source = source
        self.topics: set[str] = set()
        self.queue: asyncio.Queue[PubSubMessage] = asyncio.Queue()
        self.validators: list[tuple[str, PubSubValidator]] = []

    async def subscribe(self, topic: str) -> None:
        self.topics.add(topic)

    async def unsubscribe(self, topic: str) -> None:
        self.topics.discard(topic)

    async def publish(self, topic: str, data: bytes) -> int:
        if topic not in self.topics:
            return 0
        self.queue.put_nowait(PubSubMessage(topic, self.source, data))
        return 1

    async def messages(self, topic: str | None = None) -> AsyncIterator[PubSubMessage]:
        while True:
            message = await self.queue.get()
            if topic is None or message.topic == topic:
                yield message

    def add_validator(self, topic: str, validator: PubSubValidator) -> None:
        self.validators.append((topic, validator))

    def mesh_peers(self, topic: str) -> list[Identity]:
        return []

    def peer_score(self, peer: Identity) -> float:
        return 1.5


async def test_pubsub_facade_reaches_the_service() -> None:
    class Provider:
        korium_plugin = PluginInfo(name="fake-pubsub", provides=(PUBSUB,))

        service: FakePubSub

        @hookimpl
        def korium_node_setup(self, node: Node) -> None:
            self.service = FakePubSub(node.identity)
            provided: PubSub = self.service
            node.services.provide(PUBSUB, provided, provider="fake-pubsub")

    provider = Provider()
    node = await Node.builder("127.0.0.1:0").difficulty(DIFFICULTY).plugins([provider]).build()
    service = provider.service
    try:
        await node.subscribe("t")
        await node.subscribe("u")
        await node.publish("t", b"1")
        await node.unsubscribe("t")
        await node.publish("t", b"2")  # not subscribed any more: not delivered
        await node.publish("u", b"3")
        await node.subscribe("t")
        await node.publish("t", b"4")
        everything = node.messages()
        assert [await anext(everything) for _ in range(2)] == [
            PubSubMessage("t", node.identity, b"1"),
            PubSubMessage("u", node.identity, b"3"),
        ]
        assert await anext(node.messages("t")) == PubSubMessage("t", node.identity, b"4")
        assert await node.publish("nobody", b"5") == 0
        assert await node.publish("t", b"6") == 1

        def accept(message: PubSubMessage) -> Validation:
            return Validation.ACCEPT

        node.add_validator("t", accept)
        assert service.validators == [("t", accept)]
        assert node.mesh_peers("t") == []
        assert node.peer_score(node.identity) == 1.5
    finally:
        await node.close()


async def test_given_identity_must_meet_difficulty() -> None:
    strong = NodeIdentity.generate(DIFFICULTY)
    node = (
        await Node.builder("127.0.0.1:0")
        .identity(strong)
        .difficulty(DIFFICULTY)
        .plugins([])
        .build()
    )
    assert node.identity == strong.identity
    await node.close()
    keypair = Keypair.generate()
    nonce = next(n for n in range(100) if ProofOfWork(n).strength(keypair.identity) < 20)
    weak = NodeIdentity(keypair, ProofOfWork(nonce))
    with pytest.raises(InsufficientProofOfWorkError):
        await Node.builder("127.0.0.1:0").identity(weak).difficulty(20).plugins([]).build()


async def test_key_file_keeps_identity_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "node.pem"
    builder = Node.builder("127.0.0.1:0").key_file(path).difficulty(DIFFICULTY).plugins([])
    first = await builder.build()
    await first.close()
    second = await builder.build()
    await second.close()
    assert path.stat().st_mode & 0o777 == 0o600
    assert first.identity == second.identity


async def test_identity_and_key_file_are_exclusive(tmp_path: Path) -> None:
    builder = Node.builder().identity(NodeIdentity.generate(0)).key_file(tmp_path / "k.pem")
    with pytest.raises(ConfigError, match="at most one of"):
        await builder.plugins([]).build()


def test_bad_difficulty_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        Node.builder().difficulty(65)
    with pytest.raises(ConfigError):
        NodeConfig(contact_max_age_s=0)


async def test_add_plugin_keeps_installed_plugins() -> None:
    recorder = Recorder()
    node = await Node.builder("127.0.0.1:0").difficulty(DIFFICULTY).add_plugin(recorder).build()
    assert {"greeter", "recorder"} <= set(node.plugins.plugins)
    await node.close()
