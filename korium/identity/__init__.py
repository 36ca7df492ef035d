"""Identities: Ed25519 keys, S/Kademlia proof of work, signed contact records, key files."""

from korium.identity._pow_search import POW_DOMAIN
from korium.identity.contact import (
    CONTACT_DOMAIN,
    DEFAULT_MAX_AGE_S,
    FUTURE_TOLERANCE_MS,
    MAX_ADDRESS_BYTES,
    MAX_ADDRESSES,
    MAX_CONTACT_SIZE,
    Contact,
)
from korium.identity.keyfile import read_key_file, write_key_file
from korium.identity.keys import Identity, Keypair, xor_distance
from korium.identity.node_identity import NodeIdentity
from korium.identity.pow import (
    DEFAULT_DIFFICULTY,
    MAX_DIFFICULTY,
    PowProgress,
    ProofOfWork,
    leading_zero_bits,
    pow_hash,
    solve_pow,
    solve_pow_async,
)

__all__ = [
    "CONTACT_DOMAIN",
    "DEFAULT_DIFFICULTY",
    "DEFAULT_MAX_AGE_S",
    "FUTURE_TOLERANCE_MS",
    "MAX_ADDRESSES",
    "MAX_ADDRESS_BYTES",
    "MAX_CONTACT_SIZE",
    "MAX_DIFFICULTY",
    "POW_DOMAIN",
    "Contact",
    "Identity",
    "Keypair",
    "NodeIdentity",
    "PowProgress",
    "ProofOfWork",
    "leading_zero_bits",
    "pow_hash",
    "read_key_file",
    "solve_pow",
    "solve_pow_async",
    "write_key_file",
    "xor_distance",
]
