"""Node builder and lifecycle: profiles, identities, hooks in order, capability facade."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from korium import (
    DISCOVERY,
    Keypair,
    Node,
    NodeConfig,
    NodeIdentity,
    PluginInfo,
    ProofOfWork,
    hookimpl,
)
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
