"""S/Kademlia static proof of work: the price of an identity.

A proof for public key ``pk`` is a nonce such that
``blake3(b"korium-pow-v1:" || pk || nonce_u64_le)`` starts with at least ``difficulty`` zero
bits. Making one costs about ``2**difficulty`` hashes (24 bits: a few seconds on two cores);
checking one costs a single hash. The proof travels with the identity (in contact records and
key files) so every peer can check it.

Generation runs in worker processes, one per core, each scanning interleaved chunks of nonces;
the caller gets progress callbacks and can cancel. Small difficulties (tests) run in-process,
where starting processes would cost more than the search.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import selectors
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Final

import blake3
import msgspec

from korium.errors import (
    ConfigError,
    InsufficientProofOfWorkError,
    ProofOfWorkCancelledError,
    ProofOfWorkError,
)
from korium.identity._pow_search import CHUNK, NONCE_LIMIT, POW_DOMAIN, scan
from korium.identity.keys import Identity

DEFAULT_DIFFICULTY: Final = 24
"""The spec's difficulty. Tests and local clusters configure a smaller one."""
MAX_DIFFICULTY: Final = 64
WIRE_INT_MAX: Final = NONCE_LIMIT - 1
"""Largest nonce or timestamp on the wire (MessagePack decoders bound integers to int64)."""
IN_PROCESS_MAX_DIFFICULTY: Final = 16
"""At or below this, starting worker processes costs more than the search itself."""

_pack_nonce = struct.Struct("<Q").pack


class ProofOfWork(msgspec.Struct, frozen=True, array_like=True, forbid_unknown_fields=True):
    """A proof-of-work nonce for one public key. Its strength depends on the key it is for."""

    nonce: Annotated[int, msgspec.Meta(ge=0, le=WIRE_INT_MAX)]

    def __post_init__(self) -> None:
        if type(self.nonce) is not int or not 0 <= self.nonce <= WIRE_INT_MAX:
            raise ValueError("a proof-of-work nonce is an integer from 0 to 2**63 - 1")

    def strength(self, identity: Identity) -> int:
        """Leading zero bits this nonce achieves for *identity* (0 to 256)."""
        return leading_zero_bits(pow_hash(bytes(identity), self.nonce))

    def verify(self, identity: Identity, difficulty: int) -> None:
        """Raise :class:`InsufficientProofOfWorkError` unless the proof meets *difficulty*."""
        check_difficulty(difficulty)
        if pow_hash(bytes(identity), self.nonce) >= _target(difficulty):
            strength = self.strength(identity)
            raise InsufficientProofOfWorkError(
                f"proof of work for {identity.short}... has {strength} leading zero bits, "
                f"{difficulty} are required: generate a new identity at this difficulty",
                strength=strength,
                required=difficulty,
            )


@dataclass(frozen=True, slots=True)
class PowProgress:
    """A snapshot of a running search, passed to progress callbacks."""

    hashes: int
    """Hashes computed so far, over all workers."""
    elapsed: float
    """Seconds since the search started."""
    difficulty: int
    workers: int

    @property
    def rate(self) -> float:
        """Hashes per second so far."""
        return self.hashes / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def expected_hashes(self) -> float:
        """Mean number of hashes a search at this difficulty needs (2**difficulty)."""
        return float(2**self.difficulty)

    @property
    def expected_remaining(self) -> float | None:
        """Seconds a fresh search would still need on average at the current rate.

        The search is memoryless: however long it has run, the mean time left is the same.
        """
        rate = self.rate
        return self.expected_hashes / rate if rate > 0 else None


ProgressCallback = Callable[[PowProgress], None]


def pow_hash(public_key: bytes, nonce: int) -> bytes:
    """The 32-byte puzzle hash for *public_key* and *nonce*."""
    return blake3.blake3(POW_DOMAIN + public_key + _pack_nonce(nonce)).digest()


def leading_zero_bits(digest: bytes) -> int:
    """Leading zero bits of *digest*, most significant bit of byte 0 first."""
    value = int.from_bytes(digest, "big")
    return len(digest) * 8 - value.bit_length()


def check_difficulty(difficulty: int) -> None:
    """Refuse a difficulty outside 0..MAX_DIFFICULTY."""
    if type(difficulty) is not int or not 0 <= difficulty <= MAX_DIFFICULTY:
        raise ConfigError(
            f"proof-of-work difficulty must be an integer from 0 to {MAX_DIFFICULTY}, "
            f"got {difficulty!r}"
        )


def _target(difficulty: int) -> bytes:
    """A digest meets *difficulty* exactly when it compares below this (one C-level compare)."""
    if difficulty == 0:
        return b"\xff" * 33  # longer than any digest, so every digest is smaller
    return (1 << (256 - difficulty)).to_bytes(32, "big")


def _search_script() -> str:
    return str(Path(__file__).with_name("_pow_search.py"))


def default_workers() -> int:
    """Cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def solve_pow(
    identity: Identity,
    difficulty: int = DEFAULT_DIFFICULTY,
    *,
    workers: int | None = None,
    progress: ProgressCallback | None = None,
    progress_interval: float = 0.25,
    cancel: threading.Event | None = None,
) -> ProofOfWork:
    """Find a proof of work for *identity*; blocks until found or cancelled.

    :param workers: processes to search with (default: every core this process may use).
    :param progress: called about every *progress_interval* seconds, from this thread.
    :param cancel: set it from another thread to stop; raises
        :class:`ProofOfWorkCancelledError`.
    """
    check_difficulty(difficulty)
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise ConfigError(f"proof-of-work workers must be at least 1, got {workers}")
    if workers == 1 or difficulty <= IN_PROCESS_MAX_DIFFICULTY:
        return _solve_here(identity, difficulty, progress, progress_interval, cancel)
    return _solve_in_processes(identity, difficulty, workers, progress, progress_interval, cancel)


def _solve_here(
    identity: Identity,
    difficulty: int,
    progress: ProgressCallback | None,
    interval: float,
    cancel: threading.Event | None,
) -> ProofOfWork:
    key, target = bytes(identity), _target(difficulty)
    start = last_report = time.monotonic()
    first = 0
    while first < NONCE_LIMIT:
        if cancel is not None and cancel.is_set():
            raise ProofOfWorkCancelledError("proof-of-work search cancelled", hashes=first)
        found = scan(key, target, first, CHUNK)
        if found is not None:
            return ProofOfWork(found)
        first += CHUNK
        now = time.monotonic()
        if progress is not None and now - last_report >= interval:
            last_report = now
            progress(PowProgress(first, now - start, difficulty, 1))
    raise ProofOfWorkError(f"no nonce below 2**63 reaches {difficulty} bits for this key")


def _solve_in_processes(
    identity: Identity,
    difficulty: int,
    workers: int,
    progress: ProgressCallback | None,
    interval: float,
    cancel: threading.Event | None,
) -> ProofOfWork:
    # Plain subprocesses running the search module by path, rather than multiprocessing:
    # nothing of the caller's __main__ is re-imported (spawn would re-run an unguarded
    # script), nothing is forked from a threaded event loop, and a worker imports only
    # blake3. A worker exits by itself when its pipe to us breaks.
    command = [sys.executable, _search_script(), bytes(identity).hex(), _target(difficulty).hex()]
    procs: list[subprocess.Popen[bytes]] = []
    counts = [0] * workers
    start = time.monotonic()
    try:
        with selectors.DefaultSelector() as selector:
            for index in range(workers):
                args = [str(index), str(workers)]
                proc = subprocess.Popen([*command, *args], stdout=subprocess.PIPE)
                procs.append(proc)
                assert proc.stdout is not None
                os.set_blocking(proc.stdout.fileno(), False)
                selector.register(proc.stdout, selectors.EVENT_READ, index)
            buffers = [b""] * workers
            open_pipes = workers
            last_report = start
            while open_pipes:
                for key, _ in selector.select(timeout=interval):
                    index = key.data
                    try:
                        chunk = os.read(key.fd, 65536)
                    except BlockingIOError:
                        continue
                    if not chunk:
                        selector.unregister(key.fileobj)
                        open_pipes -= 1
                        continue
                    *lines, buffers[index] = (buffers[index] + chunk).split(b"\n")
                    for line in lines:
                        kind, _, value = line.partition(b" ")
                        if kind == b"found":
                            return ProofOfWork(int(value))
                        counts[index] = int(value)
                if cancel is not None and cancel.is_set():
                    raise ProofOfWorkCancelledError(
                        "proof-of-work search cancelled", hashes=sum(counts)
                    )
                now = time.monotonic()
                if progress is not None and now - last_report >= interval:
                    last_report = now
                    progress(PowProgress(sum(counts), now - start, difficulty, workers))
            codes = [proc.wait() for proc in procs]
            raise ProofOfWorkError(f"every proof-of-work worker process exited (codes {codes})")
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()
            if proc.stdout is not None:
                proc.stdout.close()


async def solve_pow_async(
    identity: Identity,
    difficulty: int = DEFAULT_DIFFICULTY,
    *,
    workers: int | None = None,
    progress: ProgressCallback | None = None,
    progress_interval: float = 0.25,
) -> ProofOfWork:
    """:func:`solve_pow` without blocking the event loop; cancelling the task stops the search.

    *progress* is called on the event loop's thread.
    """
    loop = asyncio.get_running_loop()
    cancel = threading.Event()

    def report(snapshot: PowProgress) -> None:
        if progress is not None:
            loop.call_soon_threadsafe(progress, snapshot)

    future = loop.run_in_executor(
        None,
        lambda: solve_pow(
            identity,
            difficulty,
            workers=workers,
            progress=report if progress else None,
            progress_interval=progress_interval,
            cancel=cancel,
        ),
    )
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        cancel.set()
        with contextlib.suppress(ProofOfWorkCancelledError):
            await future
        raise
