"""``korium ca``: a key ceremony among local key files, issuing and checking certificates.

For a committee whose members sit at one machine (an offline ceremony, a test bed): ``dkg``
runs the dealer-free key generation for the identities in the given key files and writes each
signer's encrypted state, the CA's public key and its self-signed certificate; ``issue`` signs
a workload certificate with k of those states; ``verify`` checks one against the CA. Signer
nodes on a network use ``Node.builder().as_ca_signer(SignerState.deserialize(...))``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import cast

import click
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from korium_spiffe.certificates import extract_spiffe_id_from_cert

from korium.errors import KoriumError
from korium.identity import Identity, NodeIdentity
from korium_threshold_ca import certificates
from korium_threshold_ca.config import DEFAULT_CERT_VALIDITY, ThresholdCaConfig
from korium_threshold_ca.dkg import run_local_dkg
from korium_threshold_ca.signing import ca_certificate_locally, issue_locally
from korium_threshold_ca.state import CaPublicKey, KdfStrength, SignerState

PASSPHRASE_ENV = "KORIUM_CA_PASSPHRASE"

passphrase_option = click.option(
    "--passphrase",
    envvar=PASSPHRASE_ENV,
    prompt=True,
    hide_input=True,
    help=f"Passphrase of the signer states (or ${PASSPHRASE_ENV}).",
)


@click.group("ca")
def ca() -> None:
    """Threshold CA: key ceremony, issuing and verifying certificates."""


@ca.command("dkg")
@click.option(
    "--signer-key",
    "signer_keys",
    multiple=True,
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Key file of a signer node (repeat once per signer).",
)
@click.option("-k", "--threshold", type=int, required=True, help="Signers needed to sign.")
@click.option("--trust-domain", required=True, help="SPIFFE trust domain of the CA.")
@click.option(
    "--cert-validity",
    type=int,
    default=DEFAULT_CERT_VALIDITY,
    show_default=True,
    help="Longest lifetime of a workload certificate, in seconds.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Directory for ca.pem, ca-public.key and the signer states.",
)
@click.option(
    "--kdf",
    type=click.Choice(["interactive", "moderate", "sensitive"]),
    default="moderate",
    show_default=True,
    help="Argon2id strength protecting the signer states.",
)
@click.option(
    "--passphrase",
    envvar=PASSPHRASE_ENV,
    prompt=True,
    hide_input=True,
    confirmation_prompt=True,
    help=f"Passphrase sealing the signer states (or ${PASSPHRASE_ENV}).",
)
def dkg_command(
    signer_keys: tuple[Path, ...],
    threshold: int,
    trust_domain: str,
    cert_validity: int,
    out: Path,
    kdf: str,
    passphrase: str,
) -> None:
    """Run the key ceremony among the identities of SIGNER_KEY files, without a dealer."""
    try:
        identities = [NodeIdentity.load(p, difficulty=0).identity for p in signer_keys]
        config = ThresholdCaConfig(len(identities), threshold, trust_domain, cert_validity)
        states = run_local_dkg(config, identities)
        ca_der = ca_certificate_locally(list(states.values()))
    except KoriumError as exc:
        raise click.ClickException(str(exc)) from None
    out.mkdir(parents=True, exist_ok=True)
    first = next(iter(states.values()))
    _write(out / "ca.pem", certificates.to_pem(ca_der), 0o644)
    _write(out / "ca-public.key", first.ca.encode(), 0o644)
    for identity, state in states.items():
        sealed = state.serialize(passphrase, strength=cast(KdfStrength, kdf))
        path = out / f"signer-{state.identifier}-{identity.hex()[:16]}.state"
        _write(path, sealed, 0o600)
        click.echo(f"signer {state.identifier}  {identity}  {path}")
    click.echo(f"CA {threshold}-of-{len(identities)} for {trust_domain}: {out / 'ca.pem'}")
    click.echo(f"CA key    {first.ca.group_public_key.hex()}")


@ca.command("issue")
@click.option(
    "--state",
    "state_files",
    multiple=True,
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A signer state (repeat; at least k).",
)
@click.option("--identity", "identity_hex", help="Identity (64 hex) the certificate is for.")
@click.option(
    "--key-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Or: the node key file whose identity the certificate is for.",
)
@click.option("--workload", "workload_path", help="Workload path of the SPIFFE ID (e.g. api).")
@click.option("--validity", type=int, help="Lifetime in seconds (default: the CA's maximum).")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Where to write the certificate (PEM).",
)
@passphrase_option
def issue_command(
    state_files: tuple[Path, ...],
    identity_hex: str | None,
    key_file: Path | None,
    workload_path: str | None,
    validity: int | None,
    out: Path,
    passphrase: str,
) -> None:
    """Issue a workload certificate with signer states held here."""
    if (identity_hex is None) == (key_file is None):
        raise click.UsageError("give exactly one of --identity and --key-file")
    try:
        if key_file is not None:
            identity = NodeIdentity.load(key_file, difficulty=0).identity
        else:
            identity = Identity.from_hex(identity_hex or "")
        states = [SignerState.deserialize(p.read_bytes(), passphrase) for p in state_files]
        der = issue_locally(states, identity, workload_path, validity=validity)
    except KoriumError as exc:
        raise click.ClickException(str(exc)) from None
    _write(out, certificates.to_pem(der), 0o644)
    click.echo(f"issued {extract_spiffe_id_from_cert(der)} -> {out}")


@ca.command("verify")
@click.option(
    "--ca",
    "ca_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The CA certificate (PEM or DER).",
)
@click.argument("certificate", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def verify_command(ca_file: Path, certificate: Path) -> None:
    """Check that CERTIFICATE was issued by the CA and is valid now."""
    try:
        leaf = _read_der(certificate)
        certificates.verify_certificate(leaf, _read_der(ca_file))
    except (KoriumError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"OK {extract_spiffe_id_from_cert(leaf)}")


@ca.command("show")
@click.argument("public_key", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def show_command(public_key: Path) -> None:
    """Show a CA public key file (ca-public.key)."""
    try:
        ca_key = CaPublicKey.decode(public_key.read_bytes())
    except KoriumError as exc:
        raise click.ClickException(str(exc)) from None
    config = ca_key.config
    click.echo(f"CA {config.k}-of-{config.n} for {config.trust_domain}")
    click.echo(f"key       {ca_key.group_public_key.hex()}")
    for index, signer in enumerate(ca_key.signers):
        click.echo(f"signer {index + 1}  {signer}")


def _read_der(path: Path) -> bytes:
    data = path.read_bytes()
    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificate(data).public_bytes(Encoding.DER)
    return data


def _write(path: Path, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
