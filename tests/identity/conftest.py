"""Shared fixtures for the identity tests: deterministic keypairs with cheap proofs of work.

The seeds are fixed so every run uses the same keys and (because the in-process search scans
nonces from 0) the same proofs: tests that depend on a particular nonce are reproducible.
"""

from __future__ import annotations

import pytest

from korium.identity import Keypair, NodeIdentity, solve_pow

SEED_A = bytes(range(32))
SEED_B = bytes(range(100, 132))
TEST_DIFFICULTY = 8


def _node(seed: bytes) -> NodeIdentity:
    keypair = Keypair.from_seed(seed)
    return NodeIdentity(keypair, solve_pow(keypair.identity, TEST_DIFFICULTY, workers=1))


@pytest.fixture(scope="session")
def difficulty() -> int:
    """The proof-of-work difficulty the fixture identities were generated at."""
    return TEST_DIFFICULTY


@pytest.fixture(scope="session")
def node_a() -> NodeIdentity:
    """A fixed identity with a proof of work at ``TEST_DIFFICULTY``."""
    return _node(SEED_A)


@pytest.fixture(scope="session")
def node_b() -> NodeIdentity:
    """A second fixed identity, different from ``node_a``, with its own proof."""
    return _node(SEED_B)
