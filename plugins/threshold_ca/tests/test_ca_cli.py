"""``korium ca``: a ceremony among local key files, issuing, verifying, with openssl as judge."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from korium_threshold_ca import CaPublicKey, SignerState, WrongPassphraseError
from korium_threshold_ca.cli import PASSPHRASE_ENV, ca

from korium.identity import NodeIdentity

PASSPHRASE = "a long and private passphrase"


def run(*args: str, passphrase: str = PASSPHRASE) -> Result:
    return CliRunner().invoke(ca, list(args), env={PASSPHRASE_ENV: passphrase})


@pytest.fixture
def ceremony(tmp_path: Path) -> tuple[Path, list[NodeIdentity]]:
    """A 3-of-5 CA made by ``korium ca dkg`` in tmp_path/ca."""
    identities = [NodeIdentity.generate(difficulty=0) for _ in range(5)]
    keys = []
    for index, node_identity in enumerate(identities):
        keys += ["--signer-key", str(node_identity.save(tmp_path / f"s{index}.pem"))]
    out = tmp_path / "ca"
    result = run(
        "dkg",
        *keys,
        "-k",
        "3",
        "--trust-domain",
        "example.org",
        "--out",
        str(out),
        "--kdf",
        "interactive",
    )
    assert result.exit_code == 0, result.output
    return out, identities


def test_dkg_writes_sealed_states_and_a_ca_certificate(
    ceremony: tuple[Path, list[NodeIdentity]],
) -> None:
    out, identities = ceremony
    ca_key = CaPublicKey.decode((out / "ca-public.key").read_bytes())
    assert (ca_key.config.n, ca_key.config.k, ca_key.trust_domain) == (5, 3, "example.org")
    assert set(ca_key.signers) == {i.identity for i in identities}
    states = sorted(out.glob("signer-*.state"))
    assert len(states) == 5
    for path in states:
        assert path.stat().st_mode & 0o777 == 0o600
        state = SignerState.deserialize(path.read_bytes(), PASSPHRASE)
        assert state.ca == ca_key
        with pytest.raises(WrongPassphraseError):
            SignerState.deserialize(path.read_bytes(), "not it")
    shown = run("show", str(out / "ca-public.key"))
    assert shown.exit_code == 0, shown.output
    assert "CA 3-of-5 for example.org" in shown.output
    assert ca_key.group_public_key.hex() in shown.output


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")
def test_issue_with_three_states_then_verify(
    ceremony: tuple[Path, list[NodeIdentity]], tmp_path: Path
) -> None:
    out, _ = ceremony
    states = sorted(out.glob("signer-*.state"))
    workload = NodeIdentity.generate(difficulty=0).save(tmp_path / "workload.pem")
    leaf = tmp_path / "leaf.pem"
    args = [arg for path in (states[0], states[2], states[4]) for arg in ("--state", str(path))]
    issued = run(
        "issue", *args, "--key-file", str(workload), "--workload", "api", "--out", str(leaf)
    )
    assert issued.exit_code == 0, issued.output
    identity = NodeIdentity.load(workload, difficulty=0).identity
    assert f"spiffe://example.org/{identity.hex()}/api" in issued.output

    verified = run("verify", "--ca", str(out / "ca.pem"), str(leaf))
    assert verified.exit_code == 0, verified.output
    openssl = subprocess.run(
        ["openssl", "verify", "-x509_strict", "-CAfile", str(out / "ca.pem"), str(leaf)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert openssl.returncode == 0, openssl.stdout + openssl.stderr

    other_ca = run("verify", "--ca", str(leaf), str(leaf))
    assert other_ca.exit_code != 0


def test_issue_needs_k_states_and_the_passphrase(
    ceremony: tuple[Path, list[NodeIdentity]], tmp_path: Path
) -> None:
    out, _ = ceremony
    states = sorted(out.glob("signer-*.state"))
    two = ["--state", str(states[0]), "--state", str(states[1])]
    identity = NodeIdentity.generate(difficulty=0).identity.hex()
    leaf = str(tmp_path / "leaf.pem")
    too_few = run("issue", *two, "--identity", identity, "--out", leaf)
    assert too_few.exit_code != 0
    assert "threshold is 3" in too_few.output
    three = [*two, "--state", str(states[2])]
    wrong = run("issue", *three, "--identity", identity, "--out", leaf, passphrase="nope")
    assert wrong.exit_code != 0
    assert "passphrase" in wrong.output
    neither = run("issue", *three, "--out", leaf)
    assert neither.exit_code != 0
    assert "exactly one of --identity and --key-file" in neither.output
    assert not Path(leaf).exists()


def test_dkg_refuses_a_bad_committee(tmp_path: Path) -> None:
    key = NodeIdentity.generate(difficulty=0).save(tmp_path / "s.pem")
    result = run(
        "dkg",
        "--signer-key",
        str(key),
        "--signer-key",
        str(key),
        "--signer-key",
        str(key),
        "-k",
        "2",
        "--trust-domain",
        "example.org",
        "--out",
        str(tmp_path / "o"),
    )
    assert result.exit_code != 0
    assert "3 distinct signers" in result.output


def test_the_korium_command_has_the_ca_group() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "from korium.cli import main; main()", "ca", "--help"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for command in ("dkg", "issue", "verify", "show"):
        assert command in result.stdout
