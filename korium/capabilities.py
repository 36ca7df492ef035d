"""Capabilities: what a node can do, independent of which plugin does it.

A :class:`Capability` names an interface (a ``typing.Protocol``) and the ``korium[...]`` extra
that installs korium's own implementation. Plugins declare the capabilities they provide and
require (:class:`korium.plugins.PluginInfo`) and register one service object per node for each
capability they provide. Anyone can define a new capability; a third-party plugin can replace a
built-in one by providing the same capability.

The interfaces below are the kernel's contract with its built-in plugins. They grow by adding
methods as the plugins land; a method is never renamed or removed in place.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from korium.identity import Contact, Identity

T = TypeVar("T")


@dataclass(frozen=True, slots=True, eq=False)
class Capability(Generic[T]):
    """A typed key for a service: ``registry.require(DISCOVERY)`` returns a ``Discovery``.

    Capabilities compare by identity: two objects with the same name are different keys.
    """

    name: str
    """Short name shown in errors and by ``korium plugins``."""
    interface: type[Any]
    """A ``@runtime_checkable`` Protocol (or class) the service must satisfy."""
    extra: str | None = None
    """The ``korium[...]`` extra that installs a provider, for error messages."""

    def check(self, service: object) -> bool:
        """Whether *service* has the interface's methods (a structural check)."""
        return isinstance(service, self.interface)

    def __repr__(self) -> str:
        return f"Capability({self.name!r})"


@dataclass(frozen=True, slots=True)
class PubSubMessage:
    """A message delivered to a subscriber. ``source`` is verified by its signature."""

    topic: str
    source: Identity
    data: bytes


class Validation(enum.Enum):
    """A pubsub validator's verdict on a message."""

    ACCEPT = "accept"
    """Deliver and forward it."""
    REJECT = "reject"
    """Invalid: drop it and penalise the peer that sent it."""
    IGNORE = "ignore"
    """Drop it without penalty (not for us, no longer relevant)."""


ValidatorResult = Validation | bool | None
PubSubValidator = Callable[[PubSubMessage], "ValidatorResult | Awaitable[ValidatorResult]"]
"""``validator(message)`` before a new message is delivered or forwarded: a
:class:`Validation` (``True``/``False``/``None`` mean accept/reject/ignore); plain or async."""


class NatStatus(enum.Enum):
    """What a node knows about its own reachability."""

    UNKNOWN = "unknown"
    PUBLIC = "public"
    BEHIND_NAT = "behind-nat"


@runtime_checkable
class Discovery(Protocol):
    """Finding peers and their signed contact records (korium-dht)."""

    async def find_peers(self, target: Identity) -> list[Contact]:
        """Contacts of the peers closest to *target* that the network knows."""
        ...

    async def resolve(self, identity: Identity) -> Contact | None:
        """The newest valid contact record *identity* has published, or None."""
        ...

    async def publish_address(self, addresses: Sequence[str]) -> None:
        """Sign and publish this node's contact record with *addresses*."""
        ...

    async def put(self, value: bytes) -> bytes:
        """Store *value* in the network under its content address; returns the key."""
        ...

    async def get(self, key: bytes) -> bytes | None:
        """The value stored under the content address *key* (checked), or None."""
        ...


@runtime_checkable
class PubSub(Protocol):
    """Topic-based publish/subscribe (korium-gossipsub)."""

    async def subscribe(self, topic: str) -> None:
        """Join *topic*'s mesh and start delivering its messages."""
        ...

    async def unsubscribe(self, topic: str) -> None:
        """Leave *topic*."""
        ...

    async def publish(self, topic: str, data: bytes) -> int:
        """Sign and publish *data*; waits (backpressure) rather than dropping.

        Returns how many peers the message was sent to (0: no known subscriber got it).
        """
        ...

    def messages(self, topic: str | None = None) -> AsyncIterator[PubSubMessage]:
        """Messages of every subscribed topic (or only *topic*), in arrival order."""
        ...

    def add_validator(self, topic: str, validator: PubSubValidator) -> None:
        """Check every new message of *topic* with *validator* before it goes anywhere."""
        ...

    def mesh_peers(self, topic: str) -> list[Identity]:
        """The peers this node exchanges *topic*'s messages with eagerly."""
        ...

    def peer_score(self, peer: Identity) -> float:
        """This node's current score of *peer* (negative: misbehaving)."""
        ...


@runtime_checkable
class NatTraversal(Protocol):
    """Reachability detection, relays and hole punching (korium-relay)."""

    @property
    def nat_status(self) -> NatStatus:
        """The last known reachability of this node."""
        ...

    async def configure_nat(self, helper: Identity, addresses: Sequence[str] | None = None) -> Any:
        """Ask *helper* whether this node is reachable; behind a NAT, relay through it.

        Returns ``(is_public, relay, incoming)``: the relay's identity and an iterator of
        incoming relayed connections when behind a NAT.
        """
        ...

    def enable_mesh_signaling(self) -> AsyncIterator[Any]:
        """Incoming relayed connections, for the application to accept itself."""
        ...

    async def accept_incoming(self, incoming: Any) -> None:
        """Join the relay session of an incoming connection."""
        ...


@runtime_checkable
class WorkloadIdentity(Protocol):
    """SPIFFE identities bound to node keys (korium-spiffe)."""

    def spiffe_id(self, identity: Identity) -> str:
        """The SPIFFE ID (``spiffe://trust-domain/<hex>[/path]``) of *identity*."""
        ...


@runtime_checkable
class CertificateIssuer(Protocol):
    """Issuing X.509 certificates for node keys (korium-threshold-ca)."""

    async def request_certificate(self, workload_path: str | None = None) -> bytes:
        """A DER certificate for this node's key, signed by the issuer."""
        ...

    async def request_ca_certificate_from_mesh(
        self, trust_domain: str, workload_path: str | None, config: Any
    ) -> bytes:
        """A DER workload certificate for this node from the CA *config* names (a
        ``korium_threshold_ca.CaRequestConfig``), its SPIFFE ID in *trust_domain*."""
        ...

    async def request_ca_root_certificate(self, config: Any) -> bytes:
        """The DER certificate of the CA that *config* names, self-signed by its signers."""
        ...


DISCOVERY: Capability[Discovery] = Capability("discovery", Discovery, extra="dht")
PUBSUB: Capability[PubSub] = Capability("pubsub", PubSub, extra="gossipsub")
NAT_TRAVERSAL: Capability[NatTraversal] = Capability("nat-traversal", NatTraversal, extra="relay")
WORKLOAD_IDENTITY: Capability[WorkloadIdentity] = Capability(
    "workload-identity", WorkloadIdentity, extra="spiffe"
)
CERTIFICATE_ISSUER: Capability[CertificateIssuer] = Capability(
    "certificate-issuer", CertificateIssuer, extra="spiffe"
)
BUILTIN_CAPABILITIES: tuple[Capability[Any], ...] = (
    DISCOVERY,
    PUBSUB,
    NAT_TRAVERSAL,
    WORKLOAD_IDENTITY,
    CERTIFICATE_ISSUER,
)
