"""korium: a batteries-included peer-to-peer networking fabric.

The kernel holds identities, the plugin host and the node facade; protocols (DHT, GossipSub,
relay, SPIFFE, threshold CA) are plugins installed as extras, ``pip install korium[dht]``.
"""

from importlib.metadata import PackageNotFoundError, version

from korium.capabilities import (
    CERTIFICATE_ISSUER,
    DISCOVERY,
    NAT_TRAVERSAL,
    PUBSUB,
    WORKLOAD_IDENTITY,
    Capability,
    PubSubMessage,
    Validation,
)
from korium.config import NodeConfig
from korium.errors import CapabilityMissing, KoriumError
from korium.hookspecs import hookimpl
from korium.identity import Contact, Identity, Keypair, NodeIdentity, ProofOfWork
from korium.node import Node, NodeBuilder
from korium.plugins import PluginInfo, Profile

try:
    __version__ = version("korium")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

__all__ = [
    "CERTIFICATE_ISSUER",
    "DISCOVERY",
    "NAT_TRAVERSAL",
    "PUBSUB",
    "WORKLOAD_IDENTITY",
    "Capability",
    "CapabilityMissing",
    "Contact",
    "Identity",
    "Keypair",
    "KoriumError",
    "Node",
    "NodeBuilder",
    "NodeConfig",
    "NodeIdentity",
    "PluginInfo",
    "Profile",
    "ProofOfWork",
    "PubSubMessage",
    "Validation",
    "__version__",
    "hookimpl",
]
