"""Node key files: writing, loading, and every reason a file is refused (without touching it)."""

from __future__ import annotations

import base64
import os
import re
import shutil
import stat
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa, x25519

from korium.errors import (
    ConfigError,
    KeyFileCorruptError,
    KeyFileError,
    KeyFileExistsError,
    KeyFileKeyTypeError,
    KeyFileNotFoundError,
    KeyFilePermissionError,
    KeyFileProofError,
    KoriumError,
)
from korium.identity import NodeIdentity, ProofOfWork, read_key_file, write_key_file
from korium.identity.keyfile import MAX_KEY_FILE_SIZE
from korium.identity.pow import WIRE_INT_MAX


@dataclass(frozen=True)
class Snapshot:
    """Everything about a path that loading must never change."""

    kind: int | None
    mode: int | None
    mtime_ns: int | None
    inode: int | None
    content: bytes | None
    link: str | None
    siblings: tuple[str, ...]


def snapshot(path: Path) -> Snapshot:
    siblings = tuple(sorted(os.listdir(path.parent)))
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return Snapshot(None, None, None, None, None, None, siblings)
    kind = stat.S_IFMT(info.st_mode)
    content = path.read_bytes() if stat.S_ISREG(info.st_mode) else None
    link = os.readlink(path) if stat.S_ISLNK(info.st_mode) else None
    return Snapshot(
        kind, stat.S_IMODE(info.st_mode), info.st_mtime_ns, info.st_ino, content, link, siblings
    )


def assert_refused(path: Path, error: type[KeyFileError], *, difficulty: int = 8) -> KeyFileError:
    """Loading *path* raises exactly *error* and leaves the file and its directory untouched."""
    before = snapshot(path)
    with pytest.raises(error) as info:
        read_key_file(path, difficulty=difficulty)
    assert type(info.value) is error
    assert info.value.path == str(path)
    assert snapshot(path) == before
    # load_or_generate must refuse the same file rather than replace it.
    if before.kind is not None:
        with pytest.raises(error):
            NodeIdentity.load_or_generate(path, difficulty=difficulty)
        assert snapshot(path) == before
    return info.value


def write_private(path: Path, data: bytes, mode: int = 0o600) -> Path:
    path.write_bytes(data)
    path.chmod(mode)
    return path


@pytest.fixture
def key_path(tmp_path: Path) -> Path:
    return tmp_path / "node.key"


@pytest.fixture
def saved(node_a: NodeIdentity, key_path: Path) -> Path:
    """A valid key file for ``node_a``."""
    node_a.save(key_path)
    return key_path


@pytest.fixture
def valid_text(saved: Path) -> str:
    return saved.read_text()


def rewrite(path: Path, text: str) -> Path:
    return write_private(path, text.encode())


def pem_of(
    key: object, *, encryption: serialization.KeySerializationEncryption | None = None
) -> bytes:
    assert hasattr(key, "private_bytes")
    data: bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        encryption or serialization.NoEncryption(),
    )
    return data


def header_of(text: str) -> str:
    return text[: text.index("-----BEGIN")]


# -- round trip --------------------------------------------------------------------------------


def test_save_and_load_round_trip(node_a: NodeIdentity, key_path: Path, difficulty: int) -> None:
    assert write_key_file(key_path, node_a.keypair, node_a.proof) == key_path
    keypair, proof = read_key_file(key_path, difficulty=difficulty)
    assert keypair.identity == node_a.identity
    assert keypair.seed == node_a.keypair.seed
    assert proof == node_a.proof


def test_node_identity_save_and_load(node_a: NodeIdentity, key_path: Path, difficulty: int) -> None:
    assert node_a.save(key_path) == key_path
    loaded = NodeIdentity.load(key_path, difficulty=difficulty)
    assert loaded.identity == node_a.identity
    assert loaded.proof == node_a.proof
    assert loaded.keypair.seed == node_a.keypair.seed


def test_load_accepts_str_path(saved: Path, node_a: NodeIdentity, difficulty: int) -> None:
    keypair, _ = read_key_file(str(saved), difficulty=difficulty)
    assert keypair.identity == node_a.identity


def test_saved_file_has_mode_0600(saved: Path) -> None:
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600


def test_saved_file_has_mode_0600_even_with_a_permissive_umask(
    node_a: NodeIdentity, key_path: Path
) -> None:
    previous = os.umask(0)
    try:
        node_a.save(key_path)
    finally:
        os.umask(previous)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600


def test_save_leaves_no_temporary_files(saved: Path) -> None:
    assert os.listdir(saved.parent) == [saved.name]


def test_save_creates_missing_parent_directories(node_a: NodeIdentity, tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "node.key"
    node_a.save(path)
    assert NodeIdentity.load(path, difficulty=0).identity == node_a.identity


def test_saved_file_has_the_documented_header(node_a: NodeIdentity, valid_text: str) -> None:
    lines = valid_text.splitlines()
    assert lines[0].startswith("# korium node identity")
    assert lines[1] == f"identity: {node_a.identity.hex()}"
    assert lines[2] == f"pow-nonce: {node_a.proof.nonce}"
    assert lines[3] == f"pow-difficulty: {node_a.strength}"
    assert lines[4] == "-----BEGIN PRIVATE KEY-----"
    assert lines[-1] == "-----END PRIVATE KEY-----"


def test_pem_part_is_a_standard_ed25519_pkcs8_key(node_a: NodeIdentity, saved: Path) -> None:
    data = saved.read_bytes()
    key = serialization.load_pem_private_key(data[data.index(b"-----BEGIN") :], password=None)
    assert isinstance(key, ed25519.Ed25519PrivateKey)
    public = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    assert public == bytes(node_a.identity)


def test_openssl_reads_the_key_file(node_a: NodeIdentity, saved: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command-line tool is not on PATH")
    result = subprocess.run(
        [openssl, "pkey", "-in", str(saved), "-noout", "-text_pub"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "ED25519" in result.stdout.upper()
    pub = result.stdout.split("pub:", 1)[1]
    assert bytes.fromhex(re.sub(r"[^0-9a-fA-F]", "", pub)) == bytes(node_a.identity)


def test_uppercase_identity_header_is_accepted(
    node_a: NodeIdentity, saved: Path, valid_text: str, difficulty: int
) -> None:
    rewrite(saved, valid_text.replace(node_a.identity.hex(), node_a.identity.hex().upper()))
    assert NodeIdentity.load(saved, difficulty=difficulty).identity == node_a.identity


def test_crlf_line_endings_and_extra_headers_are_accepted(
    node_a: NodeIdentity, saved: Path, valid_text: str, difficulty: int
) -> None:
    text = "# another comment\n\nnote: hello\n" + valid_text
    rewrite(saved, text.replace("\n", "\r\n"))
    assert NodeIdentity.load(saved, difficulty=difficulty).proof == node_a.proof


def test_owner_only_modes_are_accepted(saved: Path, difficulty: int) -> None:
    for mode in (0o400, 0o600, 0o700):
        saved.chmod(mode)
        read_key_file(saved, difficulty=difficulty)


def test_load_does_not_modify_a_valid_file(saved: Path, difficulty: int) -> None:
    before = snapshot(saved)
    read_key_file(saved, difficulty=difficulty)
    assert snapshot(saved) == before


def test_difficulty_zero_accepts_any_stored_proof(saved: Path) -> None:
    read_key_file(saved, difficulty=0)


@pytest.mark.parametrize("bad", [-1, 65])
def test_load_with_out_of_range_difficulty_is_a_config_error(saved: Path, bad: int) -> None:
    with pytest.raises(ConfigError):
        read_key_file(saved, difficulty=bad)


def test_key_file_errors_are_korium_errors() -> None:
    for error in (
        KeyFileNotFoundError,
        KeyFileExistsError,
        KeyFilePermissionError,
        KeyFileCorruptError,
        KeyFileKeyTypeError,
        KeyFileProofError,
    ):
        assert issubclass(error, KeyFileError)
        assert issubclass(error, KoriumError)


# -- never overwrite ---------------------------------------------------------------------------


def test_save_over_existing_file_is_refused(node_b: NodeIdentity, saved: Path) -> None:
    before = snapshot(saved)
    with pytest.raises(KeyFileExistsError) as info:
        node_b.save(saved)
    assert info.value.path == str(saved)
    assert snapshot(saved) == before


def test_save_over_existing_file_with_write_key_file_is_refused(
    node_b: NodeIdentity, saved: Path
) -> None:
    before = snapshot(saved)
    with pytest.raises(KeyFileExistsError):
        write_key_file(saved, node_b.keypair, node_b.proof)
    assert snapshot(saved) == before


def test_save_with_overwrite_replaces_the_file(
    node_b: NodeIdentity, saved: Path, difficulty: int
) -> None:
    node_b.save(saved, overwrite=True)
    assert NodeIdentity.load(saved, difficulty=difficulty).identity == node_b.identity
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert os.listdir(saved.parent) == [saved.name]


def test_save_does_not_write_through_a_dangling_symlink(
    node_a: NodeIdentity, tmp_path: Path
) -> None:
    link, target = tmp_path / "node.key", tmp_path / "elsewhere.key"
    link.symlink_to(target)
    with pytest.raises(KeyFileExistsError):
        node_a.save(link)
    assert link.is_symlink()
    assert os.readlink(link) == str(target)
    assert not target.exists()


def test_stale_temporary_file_does_not_break_saving(
    node_a: NodeIdentity, key_path: Path, difficulty: int
) -> None:
    """A crashed writer with the same pid (common in containers) must not block saving."""
    stale = key_path.with_name(f".{key_path.name}.{os.getpid()}.tmp")
    stale.write_bytes(b"left over by a crashed writer")
    node_a.save(key_path)
    assert NodeIdentity.load(key_path, difficulty=difficulty).identity == node_a.identity
    assert stale.read_bytes() == b"left over by a crashed writer"


# -- load_or_generate --------------------------------------------------------------------------


def test_load_or_generate_creates_once_then_loads(key_path: Path) -> None:
    created = NodeIdentity.load_or_generate(key_path, difficulty=8)
    assert created.strength >= 8
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    first = snapshot(key_path)
    loaded = NodeIdentity.load_or_generate(key_path, difficulty=8)
    assert loaded.identity == created.identity
    assert loaded.proof == created.proof
    assert loaded.keypair.seed == created.keypair.seed
    assert snapshot(key_path) == first


def test_load_or_generate_loads_an_existing_file(
    node_a: NodeIdentity, saved: Path, difficulty: int
) -> None:
    assert NodeIdentity.load_or_generate(saved, difficulty=difficulty).identity == node_a.identity


def test_load_or_generate_refuses_a_dangling_symlink(tmp_path: Path) -> None:
    link = tmp_path / "node.key"
    link.symlink_to(tmp_path / "missing.key")
    before = snapshot(link)
    with pytest.raises(KeyFilePermissionError):
        NodeIdentity.load_or_generate(link, difficulty=8)
    assert snapshot(link) == before
    assert not (tmp_path / "missing.key").exists()


# -- every load failure ------------------------------------------------------------------------


def test_missing_file(key_path: Path) -> None:
    assert_refused(key_path, KeyFileNotFoundError)
    assert not key_path.exists()


def test_empty_file(key_path: Path) -> None:
    assert_refused(write_private(key_path, b""), KeyFileCorruptError)


@pytest.mark.parametrize(
    "data",
    [bytes(range(256)) * 4, b"hello world\n", b"\x00" * 100, b"identity: abc\n"],
    ids=["binary", "text", "zeros", "header-only"],
)
def test_garbage_file(key_path: Path, data: bytes) -> None:
    assert_refused(write_private(key_path, data), KeyFileCorruptError)


def test_corrupt_pem_body_not_base64(saved: Path, valid_text: str) -> None:
    body = valid_text.splitlines()[5]
    rewrite(saved, valid_text.replace(body, "!!!! this is not base64 !!!!"))
    assert_refused(saved, KeyFileCorruptError)


def test_corrupt_pem_body_bad_der(saved: Path, valid_text: str) -> None:
    body = valid_text.splitlines()[5]
    rewrite(saved, valid_text.replace(body, "AAAA" + body[4:]))
    assert_refused(saved, KeyFileCorruptError)


def test_truncated_pem(saved: Path, valid_text: str) -> None:
    rewrite(saved, valid_text[: valid_text.index("-----END")])
    assert_refused(saved, KeyFileCorruptError)


def test_public_key_instead_of_private_key(
    node_a: NodeIdentity, saved: Path, valid_text: str
) -> None:
    public = (
        ed25519.Ed25519PrivateKey.from_private_bytes(node_a.keypair.seed)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    write_private(saved, header_of(valid_text).encode() + public)
    assert_refused(saved, KeyFileCorruptError)


def test_identity_header_not_matching_key(
    node_a: NodeIdentity, node_b: NodeIdentity, saved: Path, valid_text: str
) -> None:
    rewrite(saved, valid_text.replace(node_a.identity.hex(), node_b.identity.hex()))
    assert_refused(saved, KeyFileCorruptError)


def test_missing_identity_header(node_a: NodeIdentity, saved: Path, valid_text: str) -> None:
    rewrite(saved, valid_text.replace(f"identity: {node_a.identity.hex()}\n", ""))
    assert_refused(saved, KeyFileCorruptError)


@pytest.mark.parametrize("line", ["pow-nonce: {nonce}", "POW-NONCE: {nonce}", "identity: {id}"])
def test_duplicate_header(node_a: NodeIdentity, saved: Path, valid_text: str, line: str) -> None:
    extra = line.format(nonce=node_a.proof.nonce, id=node_a.identity.hex())
    rewrite(saved, extra + "\n" + valid_text)
    assert_refused(saved, KeyFileCorruptError)


@pytest.mark.parametrize(
    "header_line", ["# cl\u00e9 secr\u00e8te", "note: \u00e9", "\u00e9: x"], ids=repr
)
def test_non_ascii_header(saved: Path, valid_text: str, header_line: str) -> None:
    rewrite(saved, header_line + "\n" + valid_text)
    assert_refused(saved, KeyFileCorruptError)


def test_header_line_without_colon(saved: Path, valid_text: str) -> None:
    rewrite(saved, "this line has no separator\n" + valid_text)
    assert_refused(saved, KeyFileCorruptError)


def test_missing_pow_nonce(node_a: NodeIdentity, saved: Path, valid_text: str) -> None:
    rewrite(saved, valid_text.replace(f"pow-nonce: {node_a.proof.nonce}\n", ""))
    assert_refused(saved, KeyFileProofError)


@pytest.mark.parametrize(
    "nonce",
    ["abc", "", "-1", "+5", "1.0", "0x10", "1e3", "12 34", str(WIRE_INT_MAX + 1), "9" * 30],
    ids=repr,
)
def test_non_numeric_or_out_of_range_nonce(
    node_a: NodeIdentity, saved: Path, valid_text: str, nonce: str
) -> None:
    rewrite(saved, valid_text.replace(f"pow-nonce: {node_a.proof.nonce}", f"pow-nonce: {nonce}"))
    assert_refused(saved, KeyFileCorruptError)


def test_proof_below_required_difficulty(node_a: NodeIdentity, saved: Path) -> None:
    assert_refused(saved, KeyFileProofError, difficulty=node_a.strength + 1)


def test_proof_below_required_difficulty_ignores_the_claimed_difficulty_header(
    node_a: NodeIdentity, saved: Path, valid_text: str
) -> None:
    rewrite(saved, valid_text.replace(f"pow-difficulty: {node_a.strength}", "pow-difficulty: 64"))
    assert_refused(saved, KeyFileProofError, difficulty=node_a.strength + 1)


def test_proof_of_another_key(
    node_a: NodeIdentity, node_b: NodeIdentity, saved: Path, valid_text: str, difficulty: int
) -> None:
    assert node_b.proof.strength(node_a.identity) < difficulty  # holds for the fixed seeds
    rewrite(
        saved,
        valid_text.replace(f"pow-nonce: {node_a.proof.nonce}", f"pow-nonce: {node_b.proof.nonce}"),
    )
    assert_refused(saved, KeyFileProofError, difficulty=difficulty)


def test_changed_nonce(node_a: NodeIdentity, saved: Path, valid_text: str) -> None:
    candidates = range(node_a.proof.nonce + 1, 10**6)
    nonce = next(n for n in candidates if ProofOfWork(n).strength(node_a.identity) == 0)
    rewrite(saved, valid_text.replace(f"pow-nonce: {node_a.proof.nonce}", f"pow-nonce: {nonce}"))
    assert_refused(saved, KeyFileProofError, difficulty=1)


def other_private_keys() -> dict[str, object]:
    return {
        "rsa": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "ec-p256": ec.generate_private_key(ec.SECP256R1()),
        "x25519": x25519.X25519PrivateKey.generate(),
        "ed448": ed448.Ed448PrivateKey.generate(),
    }


@pytest.fixture(scope="module")
def foreign_keys() -> dict[str, object]:
    return other_private_keys()


@pytest.mark.parametrize("kind", ["rsa", "ec-p256", "x25519", "ed448"])
def test_wrong_key_type_with_korium_headers(
    saved: Path, valid_text: str, foreign_keys: dict[str, object], kind: str
) -> None:
    write_private(saved, header_of(valid_text).encode() + pem_of(foreign_keys[kind]))
    assert_refused(saved, KeyFileKeyTypeError)


def test_plain_rsa_pem_without_headers(key_path: Path, foreign_keys: dict[str, object]) -> None:
    write_private(key_path, pem_of(foreign_keys["rsa"]))
    assert_refused(key_path, KeyFileKeyTypeError)


def test_traditional_rsa_pem_without_headers(
    key_path: Path, foreign_keys: dict[str, object]
) -> None:
    key = foreign_keys["rsa"]
    assert isinstance(key, rsa.RSAPrivateKey)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    assert pem.startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    write_private(key_path, pem)
    assert_refused(key_path, KeyFileKeyTypeError)


@pytest.mark.parametrize("oid_last_byte", [0x71, 0x6F], ids=["ed448-oid", "x448-oid"])
def test_ed25519_key_with_a_wrong_curve_oid(
    saved: Path, valid_text: str, oid_last_byte: int
) -> None:
    """cryptography raises InternalError (not ValueError) for a 32-byte Ed448/X448 key."""
    start = valid_text.index("-----BEGIN")
    lines = valid_text[start:].splitlines()
    der = bytearray(base64.b64decode(lines[1]))
    assert der[9:12] == bytes([0x2B, 0x65, 0x70])  # OID 1.3.101.112, id-Ed25519
    der[11] = oid_last_byte
    pem = f"{lines[0]}\n{base64.b64encode(bytes(der)).decode()}\n{lines[-1]}\n"
    write_private(saved, (valid_text[:start] + pem).encode())
    before = snapshot(saved)
    with pytest.raises((KeyFileCorruptError, KeyFileKeyTypeError)):
        read_key_file(saved, difficulty=0)
    assert snapshot(saved) == before


def test_encrypted_pkcs8_key(node_a: NodeIdentity, saved: Path, valid_text: str) -> None:
    private = ed25519.Ed25519PrivateKey.from_private_bytes(node_a.keypair.seed)
    encrypted = pem_of(private, encryption=serialization.BestAvailableEncryption(b"secret"))
    assert encrypted.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----")
    write_private(saved, header_of(valid_text).encode() + encrypted)
    error = assert_refused(saved, KeyFileCorruptError)
    assert "encrypted" in str(error)


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660, 0o606, 0o620, 0o602, 0o610, 0o777])
def test_file_accessible_by_others(saved: Path, mode: int) -> None:
    saved.chmod(mode)
    assert_refused(saved, KeyFilePermissionError)


def test_symlink_to_a_valid_key_file_is_refused(saved: Path, tmp_path: Path) -> None:
    link = tmp_path / "link.key"
    link.symlink_to(saved)
    target_before = snapshot(saved)
    error = assert_refused(link, KeyFilePermissionError)
    assert "symbolic link" in str(error).lower()  # O_NOFOLLOW: ELOOP
    assert snapshot(saved) == target_before


def test_directory_is_refused(tmp_path: Path) -> None:
    """Python's FileIO refuses directories itself; that must not escape as IsADirectoryError."""
    directory = tmp_path / "node.key"
    directory.mkdir(mode=0o700)
    assert_refused(directory, KeyFileCorruptError)
    assert directory.is_dir()


def test_file_over_the_size_limit(saved: Path, valid_text: str) -> None:
    padding = "# " + "x" * 77 + "\n"
    data = (padding * (MAX_KEY_FILE_SIZE // len(padding) + 1) + valid_text).encode()
    assert len(data) > MAX_KEY_FILE_SIZE
    write_private(saved, data)
    assert_refused(saved, KeyFileCorruptError)


def test_file_of_exactly_the_size_limit_loads(
    node_a: NodeIdentity, saved: Path, valid_text: str, difficulty: int
) -> None:
    room = MAX_KEY_FILE_SIZE - len(valid_text.encode())
    comment = "#" + "x" * (room - 2) + "\n"
    write_private(saved, (comment + valid_text).encode())
    assert saved.stat().st_size == MAX_KEY_FILE_SIZE
    assert read_key_file(saved, difficulty=difficulty)[0].identity == node_a.identity
    write_private(saved, ("#" + comment + valid_text).encode())
    assert_refused(saved, KeyFileCorruptError)


def test_fifo_is_refused_without_blocking(key_path: Path) -> None:
    """Opening a FIFO for reading blocks until a writer appears, unless O_NONBLOCK is used."""
    os.mkfifo(key_path, 0o600)
    outcome: list[BaseException | None] = []

    def load() -> None:
        try:
            read_key_file(key_path, difficulty=0)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    thread.join(2)
    finished = not thread.is_alive()
    if not finished:  # unblock the reader by opening the write end, then let it finish
        fd = os.open(key_path, os.O_WRONLY | os.O_NONBLOCK)
        thread.join(10)
        os.close(fd)
    assert finished, "read_key_file blocked on a FIFO"
    assert len(outcome) == 1
    assert isinstance(outcome[0], KeyFileCorruptError)
    assert outcome[0].path == str(key_path)
    assert stat.S_ISFIFO(os.lstat(key_path).st_mode)
