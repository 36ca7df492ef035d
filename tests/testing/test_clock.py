"""The virtual-time loop: time jumps to the next timer, deadlocks raise, real I/O is refused."""

from __future__ import annotations

import asyncio
import random
import socket
import threading
import time
from collections.abc import AsyncIterator

import pytest

from korium.testing import (
    SimulationDeadlock,
    SimulationError,
    SimulationTimeLimit,
    VirtualEventLoop,
    on_virtual_time,
    run,
)


def test_an_hour_of_sleep_takes_no_real_time() -> None:
    async def main() -> tuple[float, float]:
        loop = asyncio.get_running_loop()
        before = loop.time()
        await asyncio.sleep(3600)
        return before, loop.time()

    started = time.perf_counter()
    before, after = run(main())
    elapsed = time.perf_counter() - started
    assert after - before == 3600.0
    assert elapsed < 1.0  # a real loop would take an hour; this one takes microseconds


@on_virtual_time
async def test_loop_is_virtual_and_starts_at_zero() -> None:
    loop = asyncio.get_running_loop()
    assert isinstance(loop, VirtualEventLoop)
    assert loop.time() == 0.0


def test_start_time_is_configurable() -> None:
    async def now() -> float:
        return asyncio.get_running_loop().time()

    assert run(now(), start=1_000_000.0) == 1_000_000.0


@on_virtual_time
async def test_timeouts_fire_at_their_virtual_time() -> None:
    loop = asyncio.get_running_loop()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(2.5):
            await asyncio.Event().wait()
    assert loop.time() == 2.5
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(asyncio.sleep(100), timeout=4)
    assert loop.time() == 6.5
    async with asyncio.timeout(1):  # finishes in time: the timeout never fires
        await asyncio.sleep(0.999)
    assert loop.time() == pytest.approx(7.499)


@on_virtual_time
async def test_timers_fire_in_order_at_their_times() -> None:
    loop = asyncio.get_running_loop()
    fired: list[tuple[str, float]] = []

    async def sleeper(name: str, delay: float) -> None:
        await asyncio.sleep(delay)
        fired.append((name, loop.time()))

    loop.call_later(1.5, lambda: fired.append(("call_later", loop.time())))
    await asyncio.gather(sleeper("c", 3), sleeper("a", 1), sleeper("b", 2))
    assert fired == [("a", 1.0), ("call_later", 1.5), ("b", 2.0), ("c", 3.0)]


@on_virtual_time
async def test_running_code_takes_no_virtual_time() -> None:
    loop = asyncio.get_running_loop()
    for _ in range(1000):
        await asyncio.sleep(0)
    sum(range(100_000))  # real CPU time
    assert loop.time() == 0.0


@on_virtual_time
async def test_long_timers_beyond_a_day_fire() -> None:
    # asyncio caps one select() at 24 h; the clock must still reach a timer days away
    await asyncio.sleep(3 * 86_400 + 0.5)
    assert asyncio.get_running_loop().time() == 3 * 86_400 + 0.5


def test_deadlock_raises_and_names_the_waiting_task() -> None:
    async def waits_forever() -> None:
        await asyncio.sleep(1)
        await asyncio.Event().wait()

    with pytest.raises(SimulationDeadlock, match=r"virtual time 1\.0+ s") as info:
        run(waits_forever())
    assert "waits_forever" in str(info.value)


def test_deadlock_in_a_background_task_is_detected() -> None:
    async def main() -> None:
        never: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await asyncio.gather(asyncio.sleep(5), never)

    with pytest.raises(SimulationDeadlock):
        run(main())


def test_time_limit_stops_a_simulation_that_never_finishes() -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()

        def tick() -> None:
            loop.call_later(1, tick)

        tick()  # a periodic timer that hides the deadlock below
        await asyncio.Event().wait()

    with pytest.raises(SimulationTimeLimit, match="time limit"):
        run(main(), time_limit=3600)


def test_exceptions_propagate_and_run_cleans_up() -> None:
    loops: list[asyncio.AbstractEventLoop] = []
    finalised: list[str] = []
    cancelled: list[str] = []

    async def agen() -> AsyncIterator[int]:
        try:
            yield 1
            yield 2
        finally:
            finalised.append("agen")

    async def background() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append("background")
            raise

    async def main() -> None:
        loops.append(asyncio.get_running_loop())
        task = asyncio.create_task(background())
        async for _ in agen():
            break  # leaves the generator suspended: shutdown_asyncgens must close it
        await asyncio.sleep(1)
        assert not task.done()
        raise KeyError("boom")

    with pytest.raises(KeyError, match="boom"):
        run(main())
    assert finalised == ["agen"]
    assert cancelled == ["background"]
    assert loops[0].is_closed()


@on_virtual_time
async def test_real_io_is_refused() -> None:
    loop = asyncio.get_running_loop()
    with pytest.raises(SimulationError, match="create_connection"):
        await asyncio.open_connection("127.0.0.1", 9)
    with pytest.raises(SimulationError, match="create_datagram_endpoint"):
        await loop.create_datagram_endpoint(asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
    with pytest.raises(SimulationError, match="getaddrinfo"):
        await loop.getaddrinfo("localhost", 80)
    with pytest.raises(SimulationError, match="subprocess_exec"):
        await asyncio.create_subprocess_exec("true")
    a, b = socket.socketpair()
    with a, b:
        with pytest.raises(SimulationError, match="add_reader"):
            loop.add_reader(a.fileno(), lambda: None)
        with pytest.raises(SimulationError, match="sock_recv"):
            await loop.sock_recv(a, 1)


@on_virtual_time
async def test_executor_jobs_take_no_virtual_time() -> None:
    loop = asyncio.get_running_loop()

    def work() -> str:
        time.sleep(0.05)  # real time, while a virtual timeout is pending
        return threading.current_thread().name

    async with asyncio.timeout(0.001):  # would fire if the clock moved while the thread ran
        name = await asyncio.to_thread(work)
    assert name != threading.current_thread().name
    assert loop.time() == 0.0
    assert await loop.run_in_executor(None, sum, [1, 2, 3]) == 6


def test_decorator_accepts_run_options() -> None:
    @on_virtual_time(start=100.0, time_limit=10.0)
    async def sleep_then_tell_time(delay: float) -> float:
        await asyncio.sleep(delay)
        return asyncio.get_running_loop().time()

    assert sleep_then_tell_time(5) == 105.0
    with pytest.raises(SimulationTimeLimit):
        sleep_then_tell_time(11)


@pytest.fixture
def answer() -> int:
    return 42


@on_virtual_time
async def test_decorated_tests_receive_fixtures(answer: int) -> None:
    assert answer == 42


def test_runs_are_deterministic() -> None:
    async def main() -> list[tuple[str, float]]:
        rng = random.Random(5)
        trace: list[tuple[str, float]] = []
        loop = asyncio.get_running_loop()

        async def worker(name: str) -> None:
            for _ in range(20):
                await asyncio.sleep(rng.choice([0.0, 0.01, 0.5]))
                trace.append((name, loop.time()))

        await asyncio.gather(*(worker(f"w{i}") for i in range(10)))
        return trace

    assert run(main()) == run(main())
