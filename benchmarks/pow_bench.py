"""Proof-of-work benchmark: hash rate on one core and on all cores, and what it means for 24 bits.

Run ``python benchmarks/pow_bench.py [--seconds S] [--repeat R] [--solve N --bits B]``.

Every korium rate is measured through the real code path, :func:`korium.identity.pow.solve_pow`,
searching at an unreachable difficulty (64 bits) and cancelled by a timer:

* one core (``workers=1``, in-process): the hash count is ``ProofOfWorkCancelledError.hashes``,
  which counts every completed chunk up to the moment the search raises, so
  ``hashes / wall time`` is exact to one chunk (``CHUNK`` nonces, about 10 ms).
* all cores (``workers=default_workers()``, one subprocess each): workers report their counts
  about every 0.1 s, so both the exception's count and the progress snapshots lag by up to
  0.1 s of work per worker. The *warm* rate is the least-squares slope of the progress
  snapshots taken after the warm-up (start-up excluded, the lag averages out); the
  *end-to-end* rate is ``hashes / wall time`` including process start-up and shutdown.
  Worker start-up is also timed directly: a fresh interpreter importing the worker module.

Baselines measured in the same run, on one core: a bare ``blake3(prefix + key + nonce)`` loop,
and the same from a precomputed prefix state (``.copy()`` + ``update``), as korium's ``scan``.
Neither compares the digest with a target, which korium does.
Measurements are interleaved per repeat so a change in background load hits all of them alike.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib.metadata import version

import blake3
from _report import Summary, status, table

from korium.errors import ProofOfWorkCancelledError
from korium.identity import _pow_search
from korium.identity._pow_search import CHUNK, POW_DOMAIN
from korium.identity.keys import Keypair
from korium.identity.pow import (
    IN_PROCESS_MAX_DIFFICULTY,
    MAX_DIFFICULTY,
    PowProgress,
    default_workers,
    solve_pow,
)

GOAL_SPEEDUP = 1.7
TARGET_BITS = 24
P90 = math.log(10)  # exponential quantiles: t_q = -ln(1 - q) * mean
P99 = math.log(100)
SEED = bytes(range(32))
_pack = struct.Struct("<Q").pack


# -- measurements -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Sample:
    """One timed run."""

    hashes: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.hashes / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True, slots=True)
class MultiSample:
    """One timed multi-process run: end-to-end, and the warm slope."""

    end_to_end: Sample
    warm: Sample | None
    first_count: float | None
    """Seconds until the first worker count reached the parent (after 0.1 s of hashing)."""


def bare_hash(key: bytes, seconds: float) -> Sample:
    """``blake3(prefix + key + nonce).digest()`` in a plain loop, no difficulty check."""
    head = POW_DOMAIN + key
    pack, new = _pack, blake3.blake3
    nonce = 0
    start = time.monotonic()
    deadline = start + seconds
    while True:
        for n in range(nonce, nonce + CHUNK):
            new(head + pack(n)).digest()
        nonce += CHUNK
        now = time.monotonic()
        if now >= deadline:
            return Sample(nonce, now - start)


def bare_prefix_copy(key: bytes, seconds: float) -> Sample:
    """The same hash from a precomputed prefix state: ``copy()``, ``update(nonce)``, ``digest``."""
    prefix = blake3.blake3(POW_DOMAIN + key)
    pack, copy = _pack, prefix.copy
    nonce = 0
    start = time.monotonic()
    deadline = start + seconds
    while True:
        for n in range(nonce, nonce + CHUNK):
            h = copy()
            h.update(pack(n))
            h.digest()
        nonce += CHUNK
        now = time.monotonic()
        if now >= deadline:
            return Sample(nonce, now - start)


def _cancelled_search(
    keypair: Keypair, workers: int, seconds: float
) -> tuple[Sample, list[PowProgress]]:
    """Run ``solve_pow`` at MAX_DIFFICULTY for *seconds*; return the count and the snapshots."""
    snapshots: list[PowProgress] = []
    cancel = threading.Event()
    timer = threading.Timer(seconds, cancel.set)
    timer.daemon = True
    start = time.monotonic()
    timer.start()
    try:
        solve_pow(
            keypair.identity,
            MAX_DIFFICULTY,
            workers=workers,
            progress=snapshots.append,
            progress_interval=0.05,
            cancel=cancel,
        )
    except ProofOfWorkCancelledError as exc:
        hashes = exc.hashes
    else:  # pragma: no cover - a 64-bit proof in a few seconds
        raise SystemExit("found a 64-bit proof of work: this benchmark is not measuring anything")
    finally:
        timer.cancel()
    return Sample(hashes, time.monotonic() - start), snapshots


def korium_one_core(keypair: Keypair, seconds: float) -> Sample:
    """``solve_pow(workers=1)``: the in-process path."""
    sample, _ = _cancelled_search(keypair, 1, seconds)
    return sample


def korium_all_cores(keypair: Keypair, workers: int, seconds: float, warmup: float) -> MultiSample:
    """``solve_pow(workers=N)``: one subprocess per core, rate from warm progress snapshots.

    The warm rate is the least-squares slope of (elapsed, hashes) over the snapshots taken after
    *warmup*: each worker's count is a sawtooth lagging 0 to 0.1 s behind its real progress, which
    a fit over many points averages out (two snapshots alone could be off by 0.1 s of work).
    """
    end_to_end, snapshots = _cancelled_search(keypair, workers, seconds)
    first_count = next((s.elapsed for s in snapshots if s.hashes > 0), None)
    warm_snaps = [s for s in snapshots if s.elapsed >= warmup and s.hashes > 0]
    if len(warm_snaps) < 3 or warm_snaps[-1].hashes == warm_snaps[0].hashes:
        return MultiSample(end_to_end, None, first_count)
    slope, _ = statistics.linear_regression(
        [s.elapsed for s in warm_snaps], [float(s.hashes) for s in warm_snaps]
    )
    span = warm_snaps[-1].elapsed - warm_snaps[0].elapsed
    return MultiSample(end_to_end, Sample(round(slope * span), span), first_count)


def process_start(*args: str) -> float:
    """Wall time of ``python ARGS`` in a fresh interpreter, as the workers are started."""
    start = time.monotonic()
    subprocess.run([sys.executable, *args], check=False, stdout=subprocess.DEVNULL)
    return time.monotonic() - start


# -- statistics and formatting ------------------------------------------------------------------


def mega(rate: float) -> str:
    return f"{rate / 1e6:.2f} M"


def duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min"


# -- main ---------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Measure korium's proof-of-work hash rate on one core and on all cores."
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
        help="all-core snapshots before this many seconds are ignored (default 0.5)",
    )
    parser.add_argument(
        "--workers", type=int, default=None, help="all-core worker count (default: every core)"
    )
    parser.add_argument(
        "--solve", type=int, default=0, metavar="N", help="also solve N real proofs on all cores"
    )
    parser.add_argument(
        "--bits", type=int, default=20, help="difficulty of the --solve proofs (default 20)"
    )
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    if args.seconds < args.warmup + 0.5:
        parser.error("--seconds must exceed --warmup by at least 0.5 s")
    if not 1 <= args.bits <= 40:
        parser.error("--bits must be between 1 and 40")
    if args.solve < 0:
        parser.error("--solve must not be negative")
    if args.workers is not None and args.workers < 1:
        parser.error("--workers must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    seconds: float = args.seconds
    repeat: int = args.repeat
    workers: int = args.workers if args.workers is not None else default_workers()
    keypair = Keypair.from_seed(SEED)
    key = bytes(keypair.identity)

    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print("korium proof-of-work benchmark")
    print(
        f"  python {platform.python_version()}, blake3 {version('blake3')}, "
        f"{platform.machine()}, usable cores {default_workers()} (cpu_count {os.cpu_count()})"
    )
    print(f"  load average before: {load}   all-core workers: {workers}")
    print(
        f"  {repeat} repeat(s) x {seconds:.1f} s per measurement, interleaved; "
        f"warm-up ignored: {args.warmup:.1f} s"
    )
    print()

    raw: list[Sample] = []
    copied: list[Sample] = []
    one: list[Sample] = []
    multi: list[MultiSample] = []
    steps: list[tuple[str, Callable[[], None]]] = [
        ("bare hash", lambda: raw.append(bare_hash(key, seconds))),
        ("bare prefix copy", lambda: copied.append(bare_prefix_copy(key, seconds))),
        ("korium 1 core", lambda: one.append(korium_one_core(keypair, seconds))),
        (
            "korium all cores",
            lambda: multi.append(korium_all_cores(keypair, workers, seconds, args.warmup)),
        ),
    ]
    for round_ in range(1, repeat + 1):
        for name, step in steps:
            status(f"measuring: repeat {round_}/{repeat}, {name}")
            step()
    status("")
    worker_start = Summary.of(
        # the worker script by path with an invalid chunk range: imports, then exits at once
        [process_start(_pow_search.__file__, "00", "00", str(2**60), "1") for _ in range(5)]
    )
    bare_start = Summary.of([process_start("-c", "import blake3") for _ in range(5)])
    startup = worker_start.median if workers > 1 else 0.0

    raw_s = Summary.of([s.rate for s in raw])
    copy_s = Summary.of([s.rate for s in copied])
    one_s = Summary.of([s.rate for s in one])
    e2e_s = Summary.of([m.end_to_end.rate for m in multi])
    warm_rates = [m.warm.rate for m in multi if m.warm is not None]
    warm_s = Summary.of(warm_rates) if warm_rates else e2e_s
    firsts = [m.first_count for m in multi if m.first_count is not None]

    def row(label: str, summary: Summary) -> list[str]:
        return [
            label,
            mega(summary.median),
            f"{mega(summary.low)} - {mega(summary.high)}",
            f"+/-{summary.spread_pct:.0f}%",
            f"{summary.median / raw_s.median:.2f}x",
        ]

    path = "processes" if workers > 1 else "in-process"
    print("Hash rate (hashes/s; median of repeats, min - max, half-range)")
    table(
        ["measurement", "median", "min - max", "spread", "vs bare"],
        [
            row("bare blake3(prefix+key+nonce).digest(), 1 core", raw_s),
            row("bare blake3 prefix .copy()+update, 1 core", copy_s),
            row("korium solve_pow, 1 worker (in-process)", one_s),
            row(
                f"korium solve_pow, {workers} workers ({path}), warm"
                + ("" if warm_rates else " [no warm data: end-to-end]"),
                warm_s,
            ),
            row(f"korium solve_pow, {workers} workers, end-to-end incl. start-up", e2e_s),
        ],
    )
    print(
        f"  korium 1 core vs bare loops: {one_s.median / raw_s.median - 1:+.1%} vs concat, "
        f"{one_s.median / copy_s.median - 1:+.1%} vs prefix copy "
        "(the bare loops skip korium's digest < target compare)"
    )
    print(
        f"  worker start-up: python + imports of one worker {duration(worker_start.median)}"
        f" (python + blake3 alone: {duration(bare_start.median)})"
    )
    if firsts:
        print(
            f"  first worker count reached the parent after {duration(statistics.median(firsts))}"
            " (workers first report after 0.1 s of hashing)"
        )
    print()

    speedup = warm_s.median / one_s.median
    e2e_speedup = e2e_s.median / one_s.median
    verdict = "MET" if speedup >= GOAL_SPEEDUP else "NOT MET"
    print(f"Multi-core speed-up ({workers} workers vs 1)")
    print(f"  warm:                      {speedup:.2f}x   goal {GOAL_SPEEDUP}x: {verdict}")
    print(f"  end-to-end over {seconds:.1f} s:    {e2e_speedup:.2f}x")
    print(f"  per worker (warm):         {100 * speedup / workers:.0f}% of one core")
    print()

    mean_one = 2**TARGET_BITS / one_s.median
    mean_all = 2**TARGET_BITS / warm_s.median
    print(
        f"Expected time to solve {TARGET_BITS} bits (2**{TARGET_BITS} / rate; solve time is "
        f"geometric: p90 = {P90:.2f}x mean, p99 = {P99:.2f}x mean)"
    )
    rows = [
        ["one core", duration(mean_one), duration(P90 * mean_one), duration(P99 * mean_one)],
        [
            f"all cores ({workers}), search only",
            duration(mean_all),
            duration(P90 * mean_all),
            duration(P99 * mean_all),
        ],
        [
            f"all cores ({workers}), + start-up",
            duration(startup + mean_all),
            duration(startup + P90 * mean_all),
            duration(startup + P99 * mean_all),
        ],
    ]
    table(["", "mean", "p90", "p99"], rows)
    print(f"  load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    if args.solve:
        print()
        solve_real(args.solve, args.bits, workers, one_s.median, warm_s.median, startup)
    return 0


def solve_real(
    count: int, bits: int, workers: int, one_rate: float, warm_rate: float, startup: float
) -> None:
    """Solve *count* real proofs with fresh keys and compare their times to the prediction."""
    in_process = bits <= IN_PROCESS_MAX_DIFFICULTY or workers == 1
    if in_process:
        fixed, search = 0.0, 2**bits / one_rate
        how = f"in-process: solve_pow runs <= {IN_PROCESS_MAX_DIFFICULTY} bits on one core"
    else:
        fixed, search = startup, 2**bits / warm_rate
        how = f"{workers} worker processes"
    predicted = fixed + search
    print(f"Real solves: {count} x {bits} bits, fresh random key each, {how}")
    times: list[float] = []
    nonces: list[int] = []
    for index in range(1, count + 1):
        keypair = Keypair.generate()
        start = time.monotonic()
        proof = solve_pow(keypair.identity, bits, workers=workers)
        times.append(time.monotonic() - start)
        proof.verify(keypair.identity, bits)
        nonces.append(proof.nonce)
        status(f"solved {index}/{count}")
    status("")
    rows = [
        ["mean", duration(statistics.fmean(times)), duration(predicted)],
        ["median", duration(statistics.median(times)), duration(fixed + math.log(2) * search)],
        [
            "p90",
            duration(statistics.quantiles(times, n=10)[-1]) if count >= 10 else "",
            duration(fixed + P90 * search),
        ],
        ["min", duration(min(times)), ""],
        ["max", duration(max(times)), ""],
    ]
    table(["wall time", "measured", "predicted"], rows)
    ratio = statistics.fmean(times) / predicted
    print(
        f"  measured mean / predicted mean: {ratio:.2f}   "
        f"mean nonce / 2**{bits}: {statistics.fmean(nonces) / 2**bits:.2f} "
        "(~ hashes spent / expected; interleaved chunks make the nonce ~ the total count)"
    )
    if count < 20:
        print(
            f"  note: with {count} geometric samples the mean's standard error is about "
            f"{100 / math.sqrt(count):.0f}%"
        )


if __name__ == "__main__":
    sys.exit(main())
