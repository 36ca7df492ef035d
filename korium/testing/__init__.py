"""Simulate korium networks: thousands of nodes in one process, on virtual time.

:class:`SimNetwork` is an in-memory network whose nodes get a :class:`SimRpc`, an
implementation of :class:`korium.rpc.Rpc` with the real endpoint's semantics (timeouts, size
limits, typed errors). Links have latency and loss, and nodes can be partitioned and removed.
:func:`run` and :func:`on_virtual_time` run code on a :class:`VirtualEventLoop`, where
``asyncio.sleep``, ``asyncio.timeout`` and ``loop.time()`` follow a simulated clock: an hour of
protocol time takes milliseconds, and the same seed gives the same run. Plugin code that uses
only ``Rpc`` and the loop's clock runs unmodified::

    import pytest
    from korium.errors import RpcTimeoutError
    from korium.identity import Keypair
    from korium.testing import SimNetwork, on_virtual_time

    @on_virtual_time                                      # runs on a simulated clock
    async def test_echo() -> None:
        network = SimNetwork(seed=1, default_latency=0.05)
        a, b = (network.add_node(Keypair.generate()) for _ in range(2))
        b.register("echo/1", lambda peer, body: body)
        assert await a.request(b.identity, "echo/1", b"hi") == b"hi"   # 0.1 s, virtual
        network.partition([a], [b])
        with pytest.raises(RpcTimeoutError):                            # 10 s, virtual
            await a.request(b.identity, "echo/1", b"hi")
"""

from korium.testing.clock import (
    SimulationDeadlock,
    SimulationError,
    SimulationTimeLimit,
    VirtualEventLoop,
    new_event_loop,
    on_virtual_time,
    run,
)
from korium.testing.network import LinkSettings, NetworkStats, NodeRef, SimNetwork
from korium.testing.rpc import SimRpc

__all__ = [
    "LinkSettings",
    "NetworkStats",
    "NodeRef",
    "SimNetwork",
    "SimRpc",
    "SimulationDeadlock",
    "SimulationError",
    "SimulationTimeLimit",
    "VirtualEventLoop",
    "new_event_loop",
    "on_virtual_time",
    "run",
]
