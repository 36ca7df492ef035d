"""The relay plugin's messages: RPC control messages and the signed relay signal.

Control goes by RPC over mutual TLS (``korium/relay/1``), so the relay knows who asks: the
initiator *reserves* a session for a target, the target *joins* it, and each learns the other's
address as the relay observed it (for hole punching). The target hears of a session through a
:class:`RelaySignal` signed by the initiator (``korium-relay-signal-v1:``): the relay hands it
over on the target's own connection, and the initiator also publishes it on the GossipSub
topic ``relay/signal`` (mesh-mediated signalling), so it arrives even when the relay cannot
reach the target directly. Whatever carried it, the target checks the signature against the
initiator, that it names itself, its age, that it is new, and that the relay is one it uses.
"""

from __future__ import annotations

from typing import Annotated, TypeVar

import msgspec

from korium.errors import KoriumError, SignatureError
from korium.identity import Identity, Keypair

PROTOCOL = "korium/relay/1"
TOPIC_SIGNAL = "relay/signal"
SIGNAL_DOMAIN = b"korium-relay-signal-v1:"
MAX_MESSAGE_SIZE = 4 * 1024

Bytes32 = Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]
SessionId = Annotated[bytes, msgspec.Meta(min_length=16, max_length=16)]
HostPort = Annotated[str, msgspec.Meta(max_length=64)]
Millis = Annotated[int, msgspec.Meta(ge=0, le=2**62)]


class WireError(KoriumError, ValueError):
    """A relay message that is malformed or of the wrong kind."""


class SignalError(KoriumError):
    """A relay signal that must not be acted on; the message says why."""


class _Message(msgspec.Struct, frozen=True, array_like=True, forbid_unknown_fields=True, tag=True):
    pass


class RelaySignal(_Message, frozen=True, tag="signal"):
    """ "*initiator* wants to reach *target* through session *session* on *relay*"."""

    target: Bytes32
    initiator: Bytes32
    session: SessionId
    relay: Bytes32
    timestamp_ms: Millis
    signature: Annotated[bytes, msgspec.Meta(min_length=64, max_length=64)]

    @classmethod
    def create(
        cls, keypair: Keypair, target: Identity, session: bytes, relay: Identity, now_ms: int
    ) -> RelaySignal:
        """A signal signed by *keypair*, the initiator."""
        unsigned = cls(
            bytes(target), bytes(keypair.identity), session, bytes(relay), now_ms, bytes(64)
        )
        return msgspec.structs.replace(
            unsigned, signature=keypair.sign(SIGNAL_DOMAIN, unsigned.signed_bytes())
        )

    def signed_bytes(self) -> bytes:
        return (
            self.target
            + self.initiator
            + self.session
            + self.relay
            + self.timestamp_ms.to_bytes(8, "little")
        )

    def verify(self, me: Identity, now_ms: int, *, max_age_ms: int, max_skew_ms: int) -> Identity:
        """The initiator, if this signal is for *me*, fresh and signed by it; else SignalError."""
        if self.target != bytes(me):
            raise SignalError("the signal is for another node")
        age = now_ms - self.timestamp_ms
        if age > max_age_ms:
            raise SignalError(f"the signal is {age} ms old (at most {max_age_ms})")
        if -age > max_skew_ms:
            raise SignalError(f"the signal is {-age} ms in the future")
        try:
            initiator = Identity(self.initiator)
            initiator.verify(SIGNAL_DOMAIN, self.signed_bytes(), self.signature)
        except (SignatureError, KoriumError, ValueError) as exc:
            raise SignalError(f"the signal's signature does not verify: {exc}") from None
        return initiator


class Reserve(_Message, frozen=True, tag="reserve"):
    """Initiator to relay: open *session* to the signal's target and hand it the signal.
    Answered with :class:`Joined` once the target joins (or Refused)."""

    signal: RelaySignal


class Join(_Message, frozen=True, tag="join"):
    """Target to relay: complete *session*. Answered with :class:`Joined`."""

    session: SessionId


class Joined(_Message, frozen=True, tag="joined"):
    """The session is complete; *peer_address* is the other end as the relay sees it."""

    session: SessionId
    peer_address: HostPort


class Incoming(_Message, frozen=True, tag="incoming"):
    """Relay to target: a signal for you (answered with Ack)."""

    signal: RelaySignal


class CheckReachability(_Message, frozen=True, tag="check"):
    """Node to helper: dial me back, from another socket, at the address you see."""

    nonce: Bytes32


class Reachability(_Message, frozen=True, tag="reachability"):
    """Helper to node: the address it saw, and whether the dial-back got an answer.

    *probe_port* is the fresh socket's port on the helper, open a few seconds more: the node
    probes it, and if the helper sees another source port there than *observed*, the node's
    NAT maps by destination ("symmetric"), so hole punching cannot work from it.
    """

    observed: HostPort
    reachable: bool
    probe_port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 0


class Ack(_Message, frozen=True, tag="ack"):
    """Received."""


class Refused(_Message, frozen=True, tag="refused"):
    """Refused, with the rule and a sentence for the user."""

    rule: Annotated[str, msgspec.Meta(max_length=64)]
    reason: Annotated[str, msgspec.Meta(max_length=512)]


Message = (
    RelaySignal
    | Reserve
    | Join
    | Joined
    | Incoming
    | CheckReachability
    | Reachability
    | Ack
    | Refused
)
_M = TypeVar("_M", bound=_Message)
_decoder: msgspec.msgpack.Decoder[Message] = msgspec.msgpack.Decoder(Message)


def encode(message: Message) -> bytes:
    """The message's bytes; WireError if a field breaks its limits (the peer would refuse it)."""
    data = msgspec.msgpack.encode(message)
    decode(data)
    return data


def decode(data: bytes) -> Message:
    """The message in *data*; WireError if oversized or malformed."""
    if len(data) > MAX_MESSAGE_SIZE:
        raise WireError(f"relay message of {len(data)} bytes exceeds {MAX_MESSAGE_SIZE}")
    try:
        return _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
        raise WireError(f"malformed relay message: {exc}") from None


class RefusedError(WireError):
    """The peer refused, saying why."""

    def __init__(self, rule: str, reason: str) -> None:
        super().__init__(reason)
        self.rule = rule


def expect(data: bytes, kind: type[_M]) -> _M:
    """The message in *data*, which must be a *kind* (a Refused one raises RefusedError)."""
    message = decode(data)
    if isinstance(message, kind):
        return message
    if isinstance(message, Refused):
        raise RefusedError(message.rule, message.reason)
    raise WireError(f"expected {kind.__name__}, got {type(message).__name__}")
