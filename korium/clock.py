"""Wall-clock time that follows the event loop's clock, so simulations can advance it.

Why: signed records carry Unix timestamps and are checked for freshness. ``time.time()`` would
not move on a :class:`korium.testing.VirtualEventLoop`, so a simulated day would leave every
record fresh. :func:`wall_time_ms` anchors the wall clock to the running loop once, then
advances it with ``loop.time()``: real time on a real loop, virtual time in a simulation.
"""

from __future__ import annotations

import asyncio
import time
import weakref

_anchors: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, tuple[float, float]] = (
    weakref.WeakKeyDictionary()
)


def wall_time_ms(loop: asyncio.AbstractEventLoop | None = None) -> int:
    """Unix time in milliseconds, advancing with *loop*'s clock (default: the running loop).

    Outside a running loop (and with no loop given) this is plain ``time.time()``.
    """
    if loop is None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return time.time_ns() // 1_000_000
    anchor = _anchors.get(loop)
    if anchor is None:
        anchor = (time.time(), loop.time())
        _anchors[loop] = anchor
    epoch, start = anchor
    return int((epoch + loop.time() - start) * 1000)
