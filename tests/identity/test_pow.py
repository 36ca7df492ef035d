"""S/Kademlia proof of work: the puzzle hash, verification, generation, progress, cancellation.

Timing bounds here are hang guards only (seconds where the work takes milliseconds), so the
tests do not depend on the speed of the machine.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import blake3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from korium.errors import (
    ConfigError,
    InsufficientProofOfWorkError,
    ProofOfWorkCancelledError,
    ProofOfWorkError,
)
from korium.identity import (
    MAX_DIFFICULTY,
    POW_DOMAIN,
    Identity,
    Keypair,
    NodeIdentity,
    PowProgress,
    ProofOfWork,
    leading_zero_bits,
    pow_hash,
    solve_pow,
    solve_pow_async,
)

pytestmark = pytest.mark.timeout(60)  # a hung search or worker fails fast, not after 120 s

UNREACHABLE = 60  # no search at this difficulty finishes during a test
HANG_GUARD_S = 5.0


def reference_hash(public_key: bytes, nonce: int) -> bytes:
    return blake3.blake3(POW_DOMAIN + public_key + nonce.to_bytes(8, "little")).digest()


def reference_strength(public_key: bytes, nonce: int) -> int:
    bits = "".join(f"{byte:08b}" for byte in reference_hash(public_key, nonce))
    return len(bits) - len(bits.lstrip("0"))


def worker_pids(identity: Identity) -> list[int]:
    """Live processes (other than this one) with *identity*'s hex key on their command line.

    Every worker process gets the public key it searches for as an argument, and each test
    uses a fresh random key, so this finds exactly that search's workers, whatever the worker
    module is called.
    """
    proc = Path("/proc")
    if not proc.is_dir():
        pytest.skip("needs /proc to look for worker processes")
    key = identity.hex().encode()
    found = []
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if key in args:
            found.append(int(entry.name))
    return found


@pytest.fixture
def keypair() -> Keypair:
    """A fresh keypair, so worker processes can be told apart by their command line."""
    return Keypair.generate()


@pytest.fixture
def cancel_after() -> Iterator[threading.Event]:
    """An event set by a timer thread 0.3 s after the test starts."""
    event = threading.Event()
    timer = threading.Timer(0.3, event.set)
    timer.start()
    yield event
    timer.cancel()


# -- the puzzle --------------------------------------------------------------------------------


def test_pow_domain_is_the_documented_one() -> None:
    assert POW_DOMAIN == b"korium-pow-v1:"


@pytest.mark.parametrize("nonce", [0, 1, 255, 256, 2**32, 2**63 - 1])
def test_pow_hash_is_blake3_over_domain_key_and_little_endian_nonce(
    node_a: NodeIdentity, nonce: int
) -> None:
    key = bytes(node_a.identity)
    expected = blake3.blake3(b"korium-pow-v1:" + key + nonce.to_bytes(8, "little")).digest()
    assert pow_hash(key, nonce) == expected
    assert len(expected) == 32


def test_pow_known_answer_from_the_protocol_document(node_a: NodeIdentity) -> None:
    """docs/protocol.md section 3: for the bytes(range(32)) key, 569 is the first 8-bit nonce."""
    key = bytes(node_a.identity)
    assert key.hex() == "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8"
    digest = pow_hash(key, 569)
    assert digest.hex() == "00ae74eaa3a7708ae5ca8d061b3dfaad38cb3cd0aa39297e85282d0305d6a6c9"
    assert leading_zero_bits(digest) == 8
    assert solve_pow(node_a.identity, 8, workers=1) == ProofOfWork(569)


@settings(max_examples=300, deadline=None)
@given(key=st.binary(min_size=32, max_size=32), nonce=st.integers(0, 2**64 - 1))
def test_pow_hash_matches_reference_for_any_key_and_nonce(key: bytes, nonce: int) -> None:
    assert pow_hash(key, nonce) == reference_hash(key, nonce)


@pytest.mark.parametrize(
    ("digest", "bits"),
    [
        (bytes(32), 256),
        (b"\xff" + bytes(31), 0),
        (b"\x80" + bytes(31), 0),
        (b"\x7f" + b"\xff" * 31, 1),
        (b"\x01" + bytes(31), 7),
        (b"\x00\x80" + bytes(30), 8),
        (b"\x00\x00\x10" + bytes(29), 19),
        (bytes(31) + b"\x01", 255),
        (b"\x00\x01", 15),
        (b"", 0),
    ],
)
def test_leading_zero_bits_of_crafted_digests(digest: bytes, bits: int) -> None:
    assert leading_zero_bits(digest) == bits


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=40))
def test_leading_zero_bits_matches_bit_string_count(digest: bytes) -> None:
    text = "".join(f"{byte:08b}" for byte in digest)
    assert leading_zero_bits(digest) == len(text) - len(text.lstrip("0"))


@settings(max_examples=500, deadline=None)
@given(nonce=st.integers(0, 2**63 - 1), difficulty=st.integers(0, 12))
def test_verify_accepts_exactly_when_strength_reaches_difficulty(
    node_a: NodeIdentity, nonce: int, difficulty: int
) -> None:
    proof = ProofOfWork(nonce)
    strength = reference_strength(bytes(node_a.identity), nonce)
    assert proof.strength(node_a.identity) == strength
    if strength >= difficulty:
        proof.verify(node_a.identity, difficulty)
    else:
        with pytest.raises(InsufficientProofOfWorkError) as info:
            proof.verify(node_a.identity, difficulty)
        assert info.value.strength == strength
        assert info.value.required == difficulty


# -- verification ------------------------------------------------------------------------------


@pytest.mark.parametrize("difficulty", [1, 8, 12])
def test_generated_proof_reaches_difficulty_and_verifies(difficulty: int) -> None:
    keypair = Keypair.generate()
    proof = solve_pow(keypair.identity, difficulty, workers=1)
    assert proof.strength(keypair.identity) >= difficulty
    assert reference_strength(bytes(keypair.identity), proof.nonce) >= difficulty
    proof.verify(keypair.identity, difficulty)


def test_generated_proof_with_default_workers_verifies(keypair: Keypair) -> None:
    proof = solve_pow(keypair.identity, 12)
    proof.verify(keypair.identity, 12)


def test_proof_for_one_key_fails_for_another(
    node_a: NodeIdentity, node_b: NodeIdentity, difficulty: int
) -> None:
    wrong = reference_strength(bytes(node_b.identity), node_a.proof.nonce)
    assert wrong < difficulty  # fixed seeds: this holds for the fixture keys
    with pytest.raises(InsufficientProofOfWorkError) as info:
        node_a.proof.verify(node_b.identity, difficulty)
    assert info.value.strength == wrong
    assert info.value.required == difficulty
    assert isinstance(info.value, ProofOfWorkError)


@pytest.mark.parametrize("offset", [-1, 1])
def test_adjacent_nonce_does_not_carry_the_proof(node_a: NodeIdentity, offset: int) -> None:
    identity, difficulty = node_a.identity, 18
    proof = solve_pow(identity, difficulty, workers=1)
    proof.verify(identity, difficulty)
    neighbour = ProofOfWork(proof.nonce + offset)
    neighbour_strength = reference_strength(bytes(identity), neighbour.nonce)
    # For the fixed fixture key the neighbours are weak; a random key would have a 2**-18
    # chance of a valid neighbour.
    assert neighbour_strength < difficulty
    with pytest.raises(InsufficientProofOfWorkError) as info:
        neighbour.verify(identity, difficulty)
    assert info.value.strength == neighbour_strength
    # ...and at one bit above the neighbour's actual strength, it fails whatever the key.
    with pytest.raises(InsufficientProofOfWorkError):
        neighbour.verify(identity, neighbour_strength + 1)
    neighbour.verify(identity, neighbour_strength)


def test_in_process_search_finds_the_first_valid_nonce(node_a: NodeIdentity) -> None:
    proof = solve_pow(node_a.identity, 10, workers=1)
    key = bytes(node_a.identity)
    assert all(reference_strength(key, n) < 10 for n in range(proof.nonce))


@settings(max_examples=200, deadline=None)
@given(nonce=st.integers(0, 2**63 - 1))
def test_difficulty_zero_always_verifies(node_a: NodeIdentity, nonce: int) -> None:
    ProofOfWork(nonce).verify(node_a.identity, 0)


def test_difficulty_zero_verifies_a_nonce_with_zero_strength(node_a: NodeIdentity) -> None:
    nonce = next(n for n in range(1000) if reference_strength(bytes(node_a.identity), n) == 0)
    ProofOfWork(nonce).verify(node_a.identity, 0)
    with pytest.raises(InsufficientProofOfWorkError):
        ProofOfWork(nonce).verify(node_a.identity, 1)


def test_max_difficulty_is_a_valid_requirement(node_a: NodeIdentity) -> None:
    assert MAX_DIFFICULTY == 64
    with pytest.raises(InsufficientProofOfWorkError) as info:
        node_a.proof.verify(node_a.identity, MAX_DIFFICULTY)
    assert info.value.required == MAX_DIFFICULTY


BAD_DIFFICULTIES: list[object] = [-1, 65, 1000, 8.0, 1.5, "8", None]


@pytest.mark.parametrize("bad", BAD_DIFFICULTIES, ids=repr)
def test_verify_with_out_of_range_difficulty_raises_config_error(
    node_a: NodeIdentity, bad: object
) -> None:
    with pytest.raises(ConfigError, match="difficulty"):
        node_a.proof.verify(node_a.identity, bad)  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", BAD_DIFFICULTIES, ids=repr)
def test_solve_with_out_of_range_difficulty_raises_config_error(
    node_a: NodeIdentity, bad: object
) -> None:
    with pytest.raises(ConfigError, match="difficulty"):
        solve_pow(node_a.identity, bad, workers=1)  # type: ignore[arg-type]


@pytest.mark.parametrize("workers", [0, -1])
def test_solve_with_no_workers_raises_config_error(node_a: NodeIdentity, workers: int) -> None:
    with pytest.raises(ConfigError, match="workers"):
        solve_pow(node_a.identity, 4, workers=workers)


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


# -- progress snapshots ------------------------------------------------------------------------


def test_pow_progress_properties() -> None:
    snapshot = PowProgress(hashes=1000, elapsed=2.0, difficulty=10, workers=2)
    assert snapshot.rate == 500.0
    assert snapshot.expected_hashes == 1024.0
    assert snapshot.expected_remaining == pytest.approx(1024 / 500)


def test_pow_progress_with_no_time_or_hashes_has_no_estimate() -> None:
    assert PowProgress(hashes=0, elapsed=0.0, difficulty=10, workers=1).rate == 0.0
    assert PowProgress(hashes=0, elapsed=1.0, difficulty=10, workers=1).expected_remaining is None


# -- multi-process generation ------------------------------------------------------------------


def test_multi_process_generation_returns_valid_proof(keypair: Keypair) -> None:
    started = time.monotonic()
    proof = solve_pow(keypair.identity, 18, workers=2)
    assert time.monotonic() - started < 60  # hang guard only
    proof.verify(keypair.identity, 18)
    assert reference_strength(bytes(keypair.identity), proof.nonce) >= 18
    assert worker_pids(keypair.identity) == []


def test_multi_process_generation_reports_progress() -> None:
    # A search can get lucky and finish within one progress interval, so retry with fresh keys
    # until one run reports progress (each run has a >80 % chance to; ten runs all lucky: ~1e-8).
    for _ in range(10):
        keypair = Keypair.generate()
        snapshots: list[PowProgress] = []
        proof = solve_pow(
            keypair.identity, 20, workers=2, progress=snapshots.append, progress_interval=0.02
        )
        proof.verify(keypair.identity, 20)
        if snapshots:
            break
    assert snapshots, "no search at difficulty 20 ran long enough to report progress"
    assert all(s.workers == 2 and s.difficulty == 20 for s in snapshots)
    hashes = [s.hashes for s in snapshots]
    assert hashes == sorted(hashes)
    elapsed = [s.elapsed for s in snapshots]
    assert all(a < b for a, b in itertools.pairwise(elapsed))
    assert all(s.elapsed >= 0.02 for s in snapshots)


def test_multi_process_progress_counts_hashes_of_running_workers(keypair: Keypair) -> None:
    """At an unreachable difficulty, watch the hash count grow, then cancel from the callback."""
    snapshots: list[PowProgress] = []
    live_workers: list[int] = []
    cancel = threading.Event()

    def on_progress(snapshot: PowProgress) -> None:
        snapshots.append(snapshot)
        live_workers.append(len(worker_pids(keypair.identity)))
        if len({s.hashes for s in snapshots if s.hashes > 0}) >= 3:
            cancel.set()

    guard = threading.Timer(30, cancel.set)
    guard.start()
    try:
        with pytest.raises(ProofOfWorkCancelledError) as info:
            solve_pow(
                keypair.identity,
                UNREACHABLE,
                workers=2,
                progress=on_progress,
                progress_interval=0.02,
                cancel=cancel,
            )
    finally:
        guard.cancel()
    positive = sorted({s.hashes for s in snapshots if s.hashes > 0})
    assert len(positive) >= 3, "cancelled by the hang guard before progress was seen"
    assert [s.hashes for s in snapshots] == sorted(s.hashes for s in snapshots)
    assert all(s.workers == 2 and s.difficulty == UNREACHABLE for s in snapshots)
    assert snapshots[-1].rate > 0
    assert snapshots[-1].expected_remaining is not None
    assert max(live_workers) == 2
    assert info.value.hashes >= positive[-1]
    assert worker_pids(keypair.identity) == []


def test_in_process_progress_counts_hashes(keypair: Keypair) -> None:
    snapshots: list[PowProgress] = []
    cancel = threading.Event()

    def on_progress(snapshot: PowProgress) -> None:
        snapshots.append(snapshot)
        if len(snapshots) >= 3:
            cancel.set()

    guard = threading.Timer(30, cancel.set)
    guard.start()
    try:
        with pytest.raises(ProofOfWorkCancelledError) as info:
            solve_pow(
                keypair.identity,
                UNREACHABLE,
                workers=1,
                progress=on_progress,
                progress_interval=0.01,
                cancel=cancel,
            )
    finally:
        guard.cancel()
    assert len(snapshots) >= 3
    hashes = [s.hashes for s in snapshots]
    assert all(a < b for a, b in itertools.pairwise(hashes))
    assert all(s.workers == 1 and s.difficulty == UNREACHABLE for s in snapshots)
    assert info.value.hashes >= hashes[-1]


# -- cancellation ------------------------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 2])
def test_cancel_event_stops_the_search_quickly(
    keypair: Keypair, cancel_after: threading.Event, workers: int
) -> None:
    started = time.monotonic()
    with pytest.raises(ProofOfWorkCancelledError) as info:
        solve_pow(keypair.identity, UNREACHABLE, workers=workers, cancel=cancel_after)
    assert cancel_after.is_set()
    assert time.monotonic() - started < HANG_GUARD_S
    assert info.value.hashes >= 0
    assert isinstance(info.value, ProofOfWorkError)
    assert worker_pids(keypair.identity) == []


def test_cancelled_multi_process_search_had_workers_then_leaves_none(keypair: Keypair) -> None:
    seen: list[int] = []
    cancel = threading.Event()

    def on_progress(_: PowProgress) -> None:
        seen.append(len(worker_pids(keypair.identity)))
        if seen[-1] == 2:
            cancel.set()

    guard = threading.Timer(30, cancel.set)
    guard.start()
    try:
        with pytest.raises(ProofOfWorkCancelledError):
            solve_pow(
                keypair.identity,
                UNREACHABLE,
                workers=2,
                progress=on_progress,
                progress_interval=0.02,
                cancel=cancel,
            )
    finally:
        guard.cancel()
    assert 2 in seen  # the scan really sees the workers while they run...
    assert worker_pids(keypair.identity) == []  # ...and none survives the cancellation


@pytest.mark.parametrize("workers", [1, 2])
def test_cancel_set_before_start_raises(keypair: Keypair, workers: int) -> None:
    cancel = threading.Event()
    cancel.set()
    started = time.monotonic()
    with pytest.raises(ProofOfWorkCancelledError):
        solve_pow(keypair.identity, UNREACHABLE, workers=workers, cancel=cancel)
    assert time.monotonic() - started < HANG_GUARD_S
    assert worker_pids(keypair.identity) == []


def test_cancel_set_before_start_in_process_counts_no_hashes(keypair: Keypair) -> None:
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(ProofOfWorkCancelledError) as info:
        solve_pow(keypair.identity, 8, workers=1, cancel=cancel)
    assert info.value.hashes == 0


def test_progress_callback_exception_stops_workers(keypair: Keypair) -> None:
    class Stop(Exception):
        pass

    def explode(_: PowProgress) -> None:
        raise Stop

    with pytest.raises(Stop):
        solve_pow(
            keypair.identity, UNREACHABLE, workers=2, progress=explode, progress_interval=0.02
        )
    assert worker_pids(keypair.identity) == []


# -- asyncio -----------------------------------------------------------------------------------


async def test_solve_pow_async_returns_valid_proof(keypair: Keypair) -> None:
    proof = await asyncio.wait_for(solve_pow_async(keypair.identity, 12, workers=1), 60)
    proof.verify(keypair.identity, 12)


async def test_solve_pow_async_with_processes_returns_valid_proof(keypair: Keypair) -> None:
    proof = await asyncio.wait_for(solve_pow_async(keypair.identity, 18, workers=2), 60)
    proof.verify(keypair.identity, 18)
    assert worker_pids(keypair.identity) == []


@pytest.mark.parametrize("workers", [1, 2])
async def test_cancelling_solve_pow_async_raises_and_leaves_no_workers(
    keypair: Keypair, workers: int
) -> None:
    task = asyncio.create_task(solve_pow_async(keypair.identity, UNREACHABLE, workers=workers))
    await asyncio.sleep(0.3)
    assert not task.done()
    started = time.monotonic()
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=30)
    assert task in done, "the search did not stop after the task was cancelled"
    assert time.monotonic() - started < HANG_GUARD_S
    with pytest.raises(asyncio.CancelledError):
        task.result()
    assert worker_pids(keypair.identity) == []


async def test_solve_pow_async_progress_runs_on_the_event_loop_thread(keypair: Keypair) -> None:
    loop_thread = threading.get_ident()
    threads: list[int] = []
    snapshots: list[PowProgress] = []
    enough = asyncio.Event()

    def on_progress(snapshot: PowProgress) -> None:
        threads.append(threading.get_ident())
        snapshots.append(snapshot)
        if len(snapshots) >= 3:
            enough.set()

    task = asyncio.create_task(
        solve_pow_async(
            keypair.identity,
            UNREACHABLE,
            workers=2,
            progress=on_progress,
            progress_interval=0.02,
        )
    )
    try:
        await asyncio.wait_for(enough.wait(), 30)
    finally:
        task.cancel()
        await asyncio.wait({task}, timeout=30)
    assert task.cancelled()
    assert threads
    assert set(threads) == {loop_thread}
    assert all(s.workers == 2 for s in snapshots)
    assert worker_pids(keypair.identity) == []


# -- NodeIdentity ------------------------------------------------------------------------------


def test_node_identity_generate() -> None:
    node = NodeIdentity.generate(8)
    assert node.identity == node.keypair.identity
    assert node.strength >= 8
    assert node.strength == node.proof.strength(node.identity)
    node.proof.verify(node.identity, 8)
    assert NodeIdentity.generate(8).identity != node.identity


async def test_node_identity_generate_async() -> None:
    node = await asyncio.wait_for(NodeIdentity.generate_async(8), 60)
    assert node.strength >= 8
    node.proof.verify(node.identity, 8)


def test_node_identity_generate_can_be_cancelled() -> None:
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(ProofOfWorkCancelledError):
        NodeIdentity.generate(UNREACHABLE, workers=1, cancel=cancel)


def test_node_identity_generate_rejects_bad_difficulty() -> None:
    with pytest.raises(ConfigError):
        NodeIdentity.generate(MAX_DIFFICULTY + 1)
