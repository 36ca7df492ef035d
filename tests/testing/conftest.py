"""Fixtures for the simulation tests: deterministic identities, so every run is the same run."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest

from korium.identity import Identity, Keypair

MakeIds = Callable[[int], list[Identity]]


@pytest.fixture
def make_ids() -> MakeIds:
    """``make_ids(n)``: *n* new identities from fixed seeds, distinct within a test."""
    counter = itertools.count()

    def make(n: int) -> list[Identity]:
        return [Keypair.from_seed(next(counter).to_bytes(32, "big")).identity for _ in range(n)]

    return make
