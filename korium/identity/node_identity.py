"""A node's identity bundle: the keypair plus the proof of work that makes it acceptable."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from korium.identity.contact import Contact
from korium.identity.keyfile import read_key_file, write_key_file
from korium.identity.keys import Identity, Keypair
from korium.identity.pow import (
    DEFAULT_DIFFICULTY,
    ProgressCallback,
    ProofOfWork,
    solve_pow,
    solve_pow_async,
)


@dataclass(frozen=True, slots=True)
class NodeIdentity:
    """Everything a node needs to prove who it is: its keypair and proof of work."""

    keypair: Keypair
    proof: ProofOfWork

    @property
    def identity(self) -> Identity:
        """The public identity."""
        return self.keypair.identity

    @property
    def strength(self) -> int:
        """Leading zero bits the proof achieves."""
        return self.proof.strength(self.identity)

    @classmethod
    def generate(
        cls,
        difficulty: int = DEFAULT_DIFFICULTY,
        *,
        workers: int | None = None,
        progress: ProgressCallback | None = None,
        cancel: threading.Event | None = None,
    ) -> NodeIdentity:
        """A new keypair with a proof of work at *difficulty*; see :func:`solve_pow`."""
        keypair = Keypair.generate()
        proof = solve_pow(
            keypair.identity, difficulty, workers=workers, progress=progress, cancel=cancel
        )
        return cls(keypair, proof)

    @classmethod
    async def generate_async(
        cls,
        difficulty: int = DEFAULT_DIFFICULTY,
        *,
        workers: int | None = None,
        progress: ProgressCallback | None = None,
    ) -> NodeIdentity:
        """:meth:`generate` without blocking the event loop; cancel the task to stop."""
        keypair = Keypair.generate()
        proof = await solve_pow_async(
            keypair.identity, difficulty, workers=workers, progress=progress
        )
        return cls(keypair, proof)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, difficulty: int) -> NodeIdentity:
        """Read a key file; the proof must reach *difficulty*. See :func:`read_key_file`."""
        return cls(*read_key_file(path, difficulty=difficulty))

    @classmethod
    def load_or_generate(
        cls,
        path: str | os.PathLike[str],
        *,
        difficulty: int = DEFAULT_DIFFICULTY,
        progress: ProgressCallback | None = None,
    ) -> NodeIdentity:
        """Load *path* if it exists, else generate an identity and save it there.

        A file that exists but cannot be used is an error, never silently replaced.
        """
        if os.path.lexists(path):
            return cls.load(path, difficulty=difficulty)
        created = cls.generate(difficulty, progress=progress)
        created.save(path)
        return created

    def save(self, path: str | os.PathLike[str], *, overwrite: bool = False) -> Path:
        """Write a key file with mode 0600. See :func:`write_key_file`."""
        return write_key_file(path, self.keypair, self.proof, overwrite=overwrite)

    def contact(self, addresses: Iterable[str], *, timestamp_ms: int | None = None) -> Contact:
        """A freshly signed contact record for this identity."""
        return Contact.create(self.keypair, self.proof, addresses, timestamp_ms=timestamp_ms)
