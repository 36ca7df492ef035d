"""GossipSub wire frames (protocol ``korium/gossipsub/1``) and signed messages.

A frame is what one peer sends another in one go: subscription changes, messages and control
(IHAVE, IWANT, GRAFT, PRUNE, IDONTWANT), like libp2p's RPC. Frames travel as korium one-way
messages, all frames to one peer on one QUIC stream. MessagePack via msgspec, array-like
structs; every variable-length field has a bound, so decoding cannot allocate more than the
frame holds, and anything malformed raises :class:`~korium_gossipsub.errors.GossipDecodeError`.

A message is signed by its publisher over ``korium-gossipsub-v1:`` || *payload*, where::

    payload = source(32) || u32le(len(topic)) || topic || u64le(seqno) || u32le(len(data)) || data

and its id is ``blake3(payload)``: topic, publisher, sequence number and data. The id travels
with the message so duplicates are dropped without hashing, but a receiver recomputes it for
every new message and refuses one whose id does not match (so nobody can claim another
message's id and have the real one dropped as a duplicate later). Sequence numbers are
microseconds since the epoch (kept increasing), so a receiver can tell a replayed old message
by its age even after the publisher restarted.
"""

from __future__ import annotations

import struct
from typing import Annotated, Final

import blake3
import msgspec

from korium.identity import Identity, Keypair
from korium_gossipsub.config import MAX_MESSAGE_SIZE, MAX_TOPIC_LENGTH
from korium_gossipsub.errors import GossipDecodeError, InvalidTopicError

PROTOCOL: Final = "korium/gossipsub/1"
DOMAIN: Final = b"korium-gossipsub-v1:"
ID_LEN: Final = 32
MAX_IDS: Final = 5000
"""Ids in one IHAVE, IWANT or IDONTWANT."""
MAX_ENTRIES: Final = 1000
"""Subscriptions, messages or control entries of one kind in one frame."""
MAX_PX: Final = 16
MAX_PX_ADDRESSES: Final = 4
MAX_ADDRESS: Final = 64
MAX_BACKOFF_S: Final = 3600
U64_MAX: Final = 2**64 - 1

MessageId = Annotated[bytes, msgspec.Meta(min_length=ID_LEN, max_length=ID_LEN)]
Key = Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]
Topic = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TOPIC_LENGTH)]
Ids = Annotated[list[MessageId], msgspec.Meta(max_length=MAX_IDS)]

_U32: Final = struct.Struct("<I")
_U64: Final = struct.Struct("<Q")


class _Wire(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    pass


class SubOpt(_Wire, frozen=True):
    """The sender subscribed to (or left) *topic*."""

    subscribe: bool
    topic: Topic


class Message(_Wire, frozen=True, gc=False):
    """A published message, as signed by *source*."""

    id: MessageId
    topic: Topic
    source: Key
    seqno: Annotated[int, msgspec.Meta(ge=0)]  # MessagePack ints stop at 2**64 - 1
    data: Annotated[bytes, msgspec.Meta(max_length=MAX_MESSAGE_SIZE)]
    signature: Annotated[bytes, msgspec.Meta(min_length=64, max_length=64)]

    def payload(self) -> bytes:
        """The signed bytes (without the domain); their blake3 hash is the id."""
        return signed_payload(self.source, self.topic, self.seqno, self.data)

    @property
    def size(self) -> int:
        """Bytes that count against limits and the IDONTWANT threshold."""
        return len(self.data)


class IHave(_Wire, frozen=True):
    """The sender has these messages of *topic* (gossip)."""

    topic: Topic
    ids: Ids


class IWant(_Wire, frozen=True):
    """Send me these messages (answer to IHAVE)."""

    ids: Ids


class Graft(_Wire, frozen=True):
    """Add me to your mesh for *topic*."""

    topic: Topic


class PxPeer(_Wire, frozen=True):
    """A peer offered by peer exchange: its identity and where the pruner reaches it."""

    identity: Key
    addresses: Annotated[
        list[Annotated[str, msgspec.Meta(max_length=MAX_ADDRESS)]],
        msgspec.Meta(max_length=MAX_PX_ADDRESSES),
    ] = []


class Prune(_Wire, frozen=True):
    """You are out of my mesh for *topic*; do not graft again for *backoff_s* seconds."""

    topic: Topic
    peers: Annotated[list[PxPeer], msgspec.Meta(max_length=MAX_PX)] = []
    backoff_s: Annotated[int, msgspec.Meta(ge=0, le=MAX_BACKOFF_S)] = 0


class IDontWant(_Wire, frozen=True):
    """Do not send me these messages: I already have them (v1.2)."""

    ids: Ids


_MAX: Final = msgspec.Meta(max_length=MAX_ENTRIES)


class Frame(_Wire, frozen=True):
    """Everything one peer sends another in one go."""

    subscriptions: Annotated[list[SubOpt], _MAX] = []
    messages: Annotated[list[Message], _MAX] = []
    ihave: Annotated[list[IHave], _MAX] = []
    iwant: Annotated[list[IWant], _MAX] = []
    graft: Annotated[list[Graft], _MAX] = []
    prune: Annotated[list[Prune], _MAX] = []
    idontwant: Annotated[list[IDontWant], _MAX] = []

    def __bool__(self) -> bool:
        return bool(
            self.subscriptions
            or self.messages
            or self.ihave
            or self.iwant
            or self.graft
            or self.prune
            or self.idontwant
        )


_encoder: Final = msgspec.msgpack.Encoder()
_decoder: Final = msgspec.msgpack.Decoder(Frame)


def encode(frame: Frame) -> bytes:
    """The wire form of *frame*."""
    return _encoder.encode(frame)


def decode(data: bytes) -> Frame:
    """Parse a frame; raises :class:`GossipDecodeError` for anything malformed."""
    try:
        return _decoder.decode(data)
    except (msgspec.DecodeError, UnicodeDecodeError, RecursionError, ValueError) as exc:
        raise GossipDecodeError(f"malformed gossipsub frame: {exc}") from None


def check_topic(topic: str) -> None:
    """Raise :class:`InvalidTopicError` unless *topic* is 1-256 printable ASCII characters."""
    if not isinstance(topic, str) or not 0 < len(topic) <= MAX_TOPIC_LENGTH:
        raise InvalidTopicError(f"a topic is 1 to {MAX_TOPIC_LENGTH} characters, got {topic!r}")
    if not (topic.isascii() and topic.isprintable()):
        raise InvalidTopicError(f"a topic is printable ASCII, got {topic!r}")


def valid_topic(topic: str) -> bool:
    """Whether *topic* is a valid topic name (see :func:`check_topic`)."""
    return topic.isascii() and topic.isprintable() and 0 < len(topic) <= MAX_TOPIC_LENGTH


def signed_payload(source: bytes, topic: str, seqno: int, data: bytes) -> bytes:
    """The bytes a publisher signs and whose blake3 hash is the message id."""
    name = topic.encode()
    return b"".join(
        (source, _U32.pack(len(name)), name, _U64.pack(seqno), _U32.pack(len(data)), data)
    )


def message_id(payload: bytes) -> bytes:
    """The id of the message whose signed payload is *payload*."""
    return blake3.blake3(payload).digest()


def sign(keypair: Keypair, topic: str, seqno: int, data: bytes) -> Message:
    """A message published by *keypair* (the caller checks topic and size)."""
    source = bytes(keypair.identity)
    payload = signed_payload(source, topic, seqno, data)
    signature = keypair.sign(DOMAIN, payload)
    return Message(message_id(payload), topic, source, seqno, data, signature)


def seqno_time_ms(seqno: int) -> int:
    """When a message was published (Unix ms), from its sequence number."""
    return seqno // 1000


class SeqnoClock:
    """Sequence numbers that are microseconds since the epoch, and always increase.

    Why: a receiver can then refuse replays by age alone, and a restarted publisher's new
    messages are never mistaken for old ones (libp2p's counter restarting at 1 is).
    """

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last = 0

    def next(self, wall_ms: int) -> int:
        """The next sequence number at Unix time *wall_ms*."""
        self._last = max(self._last + 1, wall_ms * 1000)
        return self._last


def verify(message: Message, payload: bytes) -> Identity | None:
    """The publisher of *message* if its signature over *payload* is valid, else None."""
    try:
        source = Identity(message.source)
        source.verify(DOMAIN, payload, message.signature)
    except Exception:
        return None
    return source
