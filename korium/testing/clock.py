"""A virtual-time asyncio event loop: a simulated hour runs in milliseconds of real time.

Why: protocol code times everything through the loop (``asyncio.sleep``, ``asyncio.timeout``,
``loop.time()``), so a loop whose clock is simulated runs that code unchanged, as fast as the
CPU allows and the same way every time.

How: :class:`VirtualEventLoop` is an ordinary ``SelectorEventLoop`` with a selector that never
waits. When no callback is ready, asyncio asks the selector to block until the next timer is due;
this selector instead moves the loop's clock forward by exactly that amount and returns at once,
so the timer fires next.

Invariants:

* Virtual time advances only when no callback is ready: everything runnable at time *t* runs at
  *t*, and running code takes no virtual time.
* Time never goes backwards and only ever jumps to the next timer. (As on any asyncio loop,
  timers due within the clock resolution, 1 ns, of each other fire together.)
* Runs are deterministic: with no real I/O and no threads, the same program sees the same
  events in the same order at the same virtual times.
* The loop never waits for real time, with one exception: executor jobs (``run_in_executor``,
  ``asyncio.to_thread``) take zero virtual time. While one is outstanding the loop waits for it
  (really) before advancing the clock.
* A loop with nothing ready, no timer and no executor job can never make progress. Where a real
  loop would hang, this one raises :class:`SimulationDeadlock` naming the waiting tasks.
* Real I/O (sockets, pipes, subprocesses, DNS) is refused with :class:`SimulationError`: a
  simulation that touched the network would be neither isolated nor reproducible.

Wall-clock reads (``time.time()``, ``time.monotonic()``) are *not* virtual; code that must run
in simulations reads the loop's clock.
"""

from __future__ import annotations

import asyncio
import functools
import selectors
from collections.abc import Callable, Coroutine, Mapping
from concurrent.futures import Executor
from typing import TYPE_CHECKING, Any, NoReturn, ParamSpec, TypeVar, TypeVarTuple, overload

if TYPE_CHECKING:
    from _typeshed import FileDescriptorLike

__all__ = [
    "SimulationDeadlock",
    "SimulationError",
    "SimulationTimeLimit",
    "VirtualEventLoop",
    "new_event_loop",
    "on_virtual_time",
    "run",
]

P = ParamSpec("P")
T = TypeVar("T")
Ts = TypeVarTuple("Ts")

_MAX_TASKS_SHOWN = 10


class SimulationError(RuntimeError):
    """The program asked the simulation for something it cannot do (real I/O, for instance).

    Deliberately not a :class:`korium.errors.KoriumError`: it reports a mistake in the test or
    simulation setup, and code that handles network errors must not swallow it.
    """


class SimulationDeadlock(SimulationError):
    """Nothing is ready, no timer is set and no executor job runs: the program waits forever."""


class SimulationTimeLimit(SimulationError):
    """The next event lies beyond the run's virtual time limit."""


class _VirtualSelector(selectors.BaseSelector):
    """Never blocks: hands every wait to the loop, which advances its clock instead.

    The only file descriptor it accepts is the loop's internal self-pipe (registered while the
    loop is built), which carries wake-ups from executor threads and signal handlers.
    """

    def __init__(self, loop: VirtualEventLoop) -> None:
        self._loop = loop
        self._real = selectors.DefaultSelector()
        self.sealed = False

    def register(
        self, fileobj: FileDescriptorLike, events: int, data: Any = None
    ) -> selectors.SelectorKey:
        if self.sealed:
            raise SimulationError(
                "real I/O is not available on virtual time: use korium.testing.SimNetwork "
                "instead of sockets"
            )
        return self._real.register(fileobj, events, data)

    def unregister(self, fileobj: FileDescriptorLike) -> selectors.SelectorKey:
        return self._real.unregister(fileobj)

    def modify(
        self, fileobj: FileDescriptorLike, events: int, data: Any = None
    ) -> selectors.SelectorKey:
        return self._real.modify(fileobj, events, data)

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        return self._loop._wait(self._real, timeout)

    def close(self) -> None:
        self._real.close()

    def get_map(self) -> Mapping[FileDescriptorLike, selectors.SelectorKey]:
        return self._real.get_map()


class VirtualEventLoop(asyncio.SelectorEventLoop):
    """An asyncio event loop on simulated time; see the module docstring for the rules.

    :param start: the virtual time ``loop.time()`` reports at first, in seconds.
    :param time_limit: if set, advancing the clock beyond ``start + time_limit`` raises
        :class:`SimulationTimeLimit` (a guard against simulations that never finish).
    """

    def __init__(self, *, start: float = 0.0, time_limit: float | None = None) -> None:
        if time_limit is not None and time_limit < 0:
            raise ValueError(f"time_limit must not be negative, got {time_limit}")
        self._now = float(start)
        self._deadline = None if time_limit is None else self._now + time_limit
        self._executor_jobs = 0
        selector = _VirtualSelector(self)
        super().__init__(selector)
        selector.sealed = True  # the self-pipe is registered: nothing else may be

    def time(self) -> float:
        """The virtual now, in seconds."""
        return self._now

    # -- the clock --------------------------------------------------------------------------

    def _wait(
        self, real: selectors.BaseSelector, timeout: float | None
    ) -> list[tuple[selectors.SelectorKey, int]]:
        """What the selector does instead of blocking for *timeout* seconds."""
        if timeout is not None and timeout <= 0:
            return []  # callbacks are ready: run them now (thread wake-ups are in the queue)
        events = real.select(0)
        if events:
            return events
        if self._executor_jobs:
            return real.select(None)  # executor jobs take no virtual time: wait for one
        if timeout is None:
            raise SimulationDeadlock(self._deadlock_report())
        target = self._now + timeout
        if self._deadline is not None and target > self._deadline:
            raise SimulationTimeLimit(
                f"the next event is due at virtual time {target:.6f} s, beyond the time limit "
                f"of {self._deadline:.6f} s: the simulation did not finish in time"
            )
        self._now = target
        return []

    def _deadlock_report(self) -> str:
        waiting = [task for task in asyncio.all_tasks(self) if not task.done()]
        lines = [_shorten(repr(task)) for task in waiting[:_MAX_TASKS_SHOWN]]
        if len(waiting) > _MAX_TASKS_SHOWN:
            lines.append(f"... and {len(waiting) - _MAX_TASKS_SHOWN} more")
        shown = "\n  ".join(lines) if lines else "(none)"
        return (
            f"deadlock at virtual time {self._now:.6f} s: no callback is ready, no timer is set "
            "and no executor job is running, so the program would wait forever (a future "
            "nobody resolves, an event nobody sets, a queue nobody feeds?). "
            f"{len(waiting)} task(s) waiting:\n  {shown}"
        )

    # -- executors: zero virtual time -------------------------------------------------------

    def run_in_executor(
        self, executor: Executor | None, func: Callable[[*Ts], T], *args: *Ts
    ) -> asyncio.Future[T]:
        """Run *func* in a thread (or process); the loop waits for it before moving the clock."""
        future = super().run_in_executor(executor, func, *args)
        self._executor_jobs += 1
        future.add_done_callback(self._executor_job_done)
        return future

    def _executor_job_done(self, _future: asyncio.Future[Any]) -> None:
        self._executor_jobs -= 1

    async def shutdown_default_executor(self) -> None:
        """Shut the default executor down; its helper thread counts as an executor job."""
        self._executor_jobs += 1
        try:
            await super().shutdown_default_executor()
        finally:
            self._executor_jobs -= 1


def _shorten(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _refused_async(name: str) -> Callable[..., Coroutine[Any, Any, NoReturn]]:
    async def refused(self: VirtualEventLoop, *args: object, **kwargs: object) -> NoReturn:
        raise SimulationError(
            f"loop.{name}() does real I/O, which is not available on virtual time: use "
            "korium.testing.SimNetwork for traffic between simulated nodes"
        )

    refused.__name__ = refused.__qualname__ = name
    return refused


def _refused_sync(name: str) -> Callable[..., NoReturn]:
    def refused(self: VirtualEventLoop, *args: object, **kwargs: object) -> NoReturn:
        raise SimulationError(
            f"loop.{name}() watches a real file descriptor, which is not available on "
            "virtual time: use korium.testing.SimNetwork for traffic between simulated nodes"
        )

    refused.__name__ = refused.__qualname__ = name
    return refused


_REFUSED_ASYNC = (
    "connect_accepted_socket",
    "connect_read_pipe",
    "connect_write_pipe",
    "create_connection",
    "create_datagram_endpoint",
    "create_server",
    "create_unix_connection",
    "create_unix_server",
    "getaddrinfo",
    "getnameinfo",
    "sendfile",
    "sock_accept",
    "sock_connect",
    "sock_recv",
    "sock_recv_into",
    "sock_recvfrom",
    "sock_recvfrom_into",
    "sock_sendall",
    "sock_sendfile",
    "sock_sendto",
    "start_tls",
    "subprocess_exec",
    "subprocess_shell",
)
_REFUSED_SYNC = ("add_reader", "add_writer")

for _name in _REFUSED_ASYNC:
    setattr(VirtualEventLoop, _name, _refused_async(_name))
for _name in _REFUSED_SYNC:
    setattr(VirtualEventLoop, _name, _refused_sync(_name))


# -- running code on virtual time -----------------------------------------------------------


def new_event_loop(*, start: float = 0.0, time_limit: float | None = None) -> VirtualEventLoop:
    """A fresh :class:`VirtualEventLoop`; a loop factory for ``asyncio.Runner`` and friends."""
    return VirtualEventLoop(start=start, time_limit=time_limit)


def run(
    main: Coroutine[Any, Any, T],
    *,
    start: float = 0.0,
    time_limit: float | None = None,
    debug: bool | None = None,
) -> T:
    """Run *main* to completion on a new virtual-time loop, like :func:`asyncio.run`.

    Afterwards the remaining tasks are cancelled, async generators and the default executor
    are shut down and the loop is closed, exactly as ``asyncio.run`` does.

    :raises SimulationDeadlock: the program waits for something that can never happen.
    :raises SimulationTimeLimit: virtual time would pass ``start + time_limit``.
    """
    with asyncio.Runner(
        debug=debug,
        loop_factory=functools.partial(new_event_loop, start=start, time_limit=time_limit),
    ) as runner:
        return runner.run(main)


@overload
def on_virtual_time(func: Callable[P, Coroutine[Any, Any, T]], /) -> Callable[P, T]: ...


@overload
def on_virtual_time(
    *, start: float = 0.0, time_limit: float | None = None
) -> Callable[[Callable[P, Coroutine[Any, Any, T]]], Callable[P, T]]: ...


def on_virtual_time(
    func: Callable[P, Coroutine[Any, Any, T]] | None = None,
    /,
    *,
    start: float = 0.0,
    time_limit: float | None = None,
) -> Callable[P, T] | Callable[[Callable[P, Coroutine[Any, Any, T]]], Callable[P, T]]:
    """Turn an ``async def`` (a test, typically) into a plain function run on virtual time.

    Use bare (``@on_virtual_time``) or with :func:`run`'s options
    (``@on_virtual_time(time_limit=3600)``). Pytest sees an ordinary synchronous test, so
    pytest-asyncio leaves it alone; its fixtures must be synchronous (build the
    :class:`~korium.testing.SimNetwork` inside the test or in a plain fixture).
    """

    def decorate(coro_func: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, T]:
        @functools.wraps(coro_func)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            return run(coro_func(*args, **kwargs), start=start, time_limit=time_limit)

        return wrapper

    return decorate if func is None else decorate(func)
