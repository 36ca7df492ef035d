"""Node key files: the private key and its proof of work, so a node pays the PoW once.

Format: a few ``name: value`` header lines, then the Ed25519 private key as PKCS#8 PEM, which
``openssl pkey -in FILE`` reads directly (PEM readers skip the text before ``-----BEGIN``)::

    # korium node identity: keep this file secret
    identity: 3b6a27bc...
    pow-nonce: 1234567
    pow-difficulty: 24
    -----BEGIN PRIVATE KEY-----
    MC4CAQAwBQYDK2VwBCIEI...
    -----END PRIVATE KEY-----

Files are created with mode 0600 and written atomically; loading refuses a file others can
read, never writes, and checks that header, key and proof agree.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path
from typing import Final

from cryptography.exceptions import InternalError, UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from korium.errors import (
    InsufficientProofOfWorkError,
    KeyFileCorruptError,
    KeyFileError,
    KeyFileExistsError,
    KeyFileKeyTypeError,
    KeyFileNotFoundError,
    KeyFilePermissionError,
    KeyFileProofError,
)
from korium.identity.keys import Keypair
from korium.identity.pow import WIRE_INT_MAX, ProofOfWork, check_difficulty

MAX_KEY_FILE_SIZE: Final = 16 * 1024
_PEM_BEGIN: Final = b"-----BEGIN "
_COMMENT: Final = "# korium node identity: keep this file secret\n"


def write_key_file(
    path: str | os.PathLike[str], keypair: Keypair, proof: ProofOfWork, *, overwrite: bool = False
) -> Path:
    """Write *keypair* and *proof* to *path* with mode 0600, atomically.

    :raises KeyFileExistsError: *path* exists and *overwrite* is false.
    """
    target = Path(path)
    if target.exists() and not overwrite:
        raise KeyFileExistsError(
            f"{target} already exists: refusing to overwrite a node identity "
            "(remove it first, or pass overwrite=True / --force)",
            path=str(target),
        )
    private = Ed25519PrivateKey.from_private_bytes(keypair.seed)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    header = (
        f"{_COMMENT}identity: {keypair.identity.hex()}\n"
        f"pow-nonce: {proof.nonce}\n"
        f"pow-difficulty: {proof.strength(keypair.identity)}\n"
    )
    temp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise KeyFileError(f"cannot write {target}: {exc.strerror}", path=str(target)) from None
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(header.encode() + pem)
            out.flush()
            os.fsync(out.fileno())
        if overwrite:
            os.replace(temp, target)
        else:
            os.link(temp, target)  # fails if someone created *target* meanwhile
        _fsync_directory(target.parent)
    except FileExistsError:
        raise KeyFileExistsError(
            f"{target} appeared while writing: not overwritten", path=str(target)
        ) from None
    except OSError as exc:
        raise KeyFileError(f"cannot write {target}: {exc.strerror}", path=str(target)) from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
    return target


def _fsync_directory(directory: Path) -> None:
    """Make the new directory entry durable, so a crash cannot lose a fresh identity."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_key_file(path: str | os.PathLike[str], *, difficulty: int) -> tuple[Keypair, ProofOfWork]:
    """Load a key file written by :func:`write_key_file`; never modifies it.

    :param difficulty: the proof-of-work bits this node requires; a weaker proof is refused.
    :raises KeyFileNotFoundError, KeyFilePermissionError, KeyFileCorruptError,
        KeyFileKeyTypeError, KeyFileProofError:
    """
    check_difficulty(difficulty)
    source = Path(path)
    where = str(source)
    data = _read_private(source)
    begin = data.find(_PEM_BEGIN)
    if begin < 0:
        raise KeyFileCorruptError(f"{source} holds no PEM private key", path=where)
    header = _parse_header(data[:begin], where)
    try:
        key = serialization.load_pem_private_key(data[begin:], password=None)
    except TypeError:
        raise KeyFileCorruptError(
            f"{source} holds an encrypted private key: korium needs an unencrypted one",
            path=where,
        ) from None
    except (ValueError, UnsupportedAlgorithm, InternalError) as exc:
        raise KeyFileCorruptError(
            f"{source} has an unreadable private key: {exc}", path=where
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileKeyTypeError(
            f"{source} holds a {type(key).__name__.removeprefix('_')} key; "
            "korium identities are Ed25519",
            path=where,
        )
    keypair = Keypair.from_seed(
        key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
    )
    if header.get("identity", "").lower() != keypair.identity.hex():
        raise KeyFileCorruptError(
            f"{source}: the 'identity' header does not match the private key", path=where
        )
    nonce_text = header.get("pow-nonce")
    if nonce_text is None:
        raise KeyFileProofError(f"{source} has no 'pow-nonce' header", path=where)
    if not nonce_text.isdigit() or int(nonce_text) > WIRE_INT_MAX:
        raise KeyFileCorruptError(f"{source}: 'pow-nonce' is not a valid nonce", path=where)
    proof = ProofOfWork(int(nonce_text))
    try:
        proof.verify(keypair.identity, difficulty)
    except InsufficientProofOfWorkError as exc:
        raise KeyFileProofError(f"{source}: {exc}", path=where) from None
    return keypair, proof


def _read_private(source: Path) -> bytes:
    where = str(source)
    try:
        # O_NONBLOCK: a FIFO planted at the path must not hang the loader (no effect on files).
        fd = os.open(source, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise KeyFileNotFoundError(
            f"no key file at {source}: create one with 'korium identity new --key-file {source}'",
            path=where,
        ) from None
    except OSError as exc:
        raise KeyFilePermissionError(f"cannot open {source}: {exc.strerror}", path=where) from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise KeyFileCorruptError(f"{source} is not a regular file", path=where)
    with os.fdopen(fd, "rb") as handle:
        if info.st_mode & 0o077:
            raise KeyFilePermissionError(
                f"{source} is accessible by other users (mode {stat.filemode(info.st_mode)}): "
                f"run 'chmod 600 {source}' if it was not exposed, otherwise create a new identity",
                path=where,
            )
        data = handle.read(MAX_KEY_FILE_SIZE + 1)
    if len(data) > MAX_KEY_FILE_SIZE:
        raise KeyFileCorruptError(
            f"{source} is larger than {MAX_KEY_FILE_SIZE} bytes: not a korium key file", path=where
        )
    return data


def _parse_header(raw: bytes, where: str) -> dict[str, str]:
    try:
        text = raw.decode("ascii")
    except UnicodeDecodeError:
        raise KeyFileCorruptError(f"{where}: the header is not ASCII text", path=where) from None
    fields: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise KeyFileCorruptError(f"{where}: bad header line {line[:40]!r}", path=where)
        name = name.strip().lower()
        if name in fields:
            raise KeyFileCorruptError(f"{where}: header {name!r} appears twice", path=where)
        fields[name] = value.strip()
    return fields
