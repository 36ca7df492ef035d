"""The threshold CA's messages: MessagePack structs, bounded and strictly typed on decode.

Broadcasts go over GossipSub, whose signature proves the sender: CSRs on ``csr``, DKG round-1
commitments on ``ca/dkg/round1``, signer presence on ``ca/signers``. Everything secret or
addressed to one party goes by RPC over mutual TLS (``korium/ca/1``), where the handshake proves
the peer: commitments, sign requests, signature shares and DKG round-2 shares. A round-2 share
therefore never travels over gossip, not even encrypted.
"""

from __future__ import annotations

from typing import Annotated, Literal, TypeVar

import msgspec

from korium.errors import KoriumError

PROTOCOL = "korium/ca/1"
TOPIC_CSR = "csr"
TOPIC_SIGNERS = "ca/signers"
TOPIC_DKG_ROUND1 = "ca/dkg/round1"
TOPIC_DKG_ROUND2 = "ca/dkg/round2"
"""Reserved by the spec for round-2 packages; korium sends them by RPC instead (see above)."""

MAX_MESSAGE_SIZE = 48 * 1024
MAX_TBS_SIZE = 16 * 1024
MAX_SIGNERS = 255

Bytes32 = Annotated[bytes, msgspec.Meta(min_length=32, max_length=32)]
SessionId = Annotated[bytes, msgspec.Meta(min_length=16, max_length=16)]
Identifier = Annotated[int, msgspec.Meta(ge=1, le=MAX_SIGNERS)]
Timestamp = Annotated[int, msgspec.Meta(ge=0, le=2**62)]


class WireError(KoriumError, ValueError):
    """A threshold CA message that is malformed, oversized or of the wrong kind."""


class _Message(msgspec.Struct, frozen=True, array_like=True, forbid_unknown_fields=True, tag=True):
    pass


class Csr(_Message, frozen=True, tag="csr"):
    """A request for a certificate, broadcast to the signers on ``csr``."""

    session: SessionId
    """Fresh per attempt: a signer's nonce and commitment belong to one session."""
    ca_key: Bytes32
    """The CA asked (signers of other CAs ignore the request)."""
    kind: Literal["leaf", "ca"]
    """A workload certificate, or the CA's own certificate (whose bytes signers build)."""
    tbs: Annotated[bytes, msgspec.Meta(max_length=MAX_TBS_SIZE)]
    contact: Annotated[bytes, msgspec.Meta(max_length=8 * 1024)]
    """The requester's signed contact record, so signers can reach it by RPC."""


class Commitment(_Message, frozen=True, tag="commit"):
    """A signer's FROST round-one commitment for a session, sent to the requester."""

    session: SessionId
    identifier: Identifier
    hiding: Bytes32
    binding: Bytes32


class SignRequest(_Message, frozen=True, tag="sign"):
    """The requester's chosen commitments: sign the session's bytes with these."""

    session: SessionId
    commitments: Annotated[list[Commitment], msgspec.Meta(max_length=MAX_SIGNERS)]


class SignatureShare(_Message, frozen=True, tag="share"):
    """A signer's FROST signature share for a session."""

    session: SessionId
    identifier: Identifier
    share: Bytes32


class DkgRound1(_Message, frozen=True, tag="dkg1"):
    """A DKG participant's Feldman commitment and proof of knowledge of its secret."""

    session: Bytes32
    commitment: Annotated[list[Bytes32], msgspec.Meta(min_length=2, max_length=MAX_SIGNERS)]
    proof_r: Bytes32
    proof_z: Bytes32
    timestamp: Timestamp
    """Seconds; the median over all participants starts the CA certificate."""
    attempt: Annotated[int, msgspec.Meta(ge=0, le=2**31)] = 0
    """Republication counter (gossip drops repeats of identical bytes)."""


class DkgRound2(_Message, frozen=True, tag="dkg2"):
    """A DKG participant's secret share for one recipient, sent to it alone by RPC."""

    session: Bytes32
    share: Bytes32
    round1_digest: Bytes32
    """Hash of all round-1 messages the sender used: the recipient's must be the same."""

    def __repr__(self) -> str:
        return f"DkgRound2(session={self.session.hex()[:16]}...)"


class SignerAnnouncement(_Message, frozen=True, tag="signer"):
    """A signer's presence on ``ca/signers``."""

    ca_key: Bytes32
    identifier: Identifier
    timestamp: Timestamp


class Ack(_Message, frozen=True, tag="ack"):
    """Received."""


class Refused(_Message, frozen=True, tag="refused"):
    """The request was refused; *reason* says why (shown to the requester)."""

    rule: Annotated[str, msgspec.Meta(max_length=64)]
    reason: Annotated[str, msgspec.Meta(max_length=512)]
    session: Annotated[bytes, msgspec.Meta(max_length=32)] = b""
    """The signing session refused, when the refusal answers a CSR."""


Message = (
    Csr
    | Commitment
    | SignRequest
    | SignatureShare
    | DkgRound1
    | DkgRound2
    | SignerAnnouncement
    | Ack
    | Refused
)
_M = TypeVar("_M", bound=_Message)
_decoder: msgspec.msgpack.Decoder[Message] = msgspec.msgpack.Decoder(Message)


def encode(message: Message) -> bytes:
    """The message's bytes."""
    return msgspec.msgpack.encode(message)


def decode(data: bytes) -> Message:
    """The message in *data*; WireError if it is oversized or malformed."""
    if len(data) > MAX_MESSAGE_SIZE:
        raise WireError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE_SIZE}")
    try:
        return _decoder.decode(data)
    except (msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError) as exc:
        raise WireError(f"malformed threshold CA message: {exc}") from None


def expect(data: bytes, kind: type[_M]) -> _M:
    """The message in *data*, which must be a *kind*; WireError otherwise (a Refused reply
    becomes :class:`RefusedError`)."""
    message = decode(data)
    if isinstance(message, kind):
        return message
    if isinstance(message, Refused):
        raise RefusedError(message.rule, message.reason)
    raise WireError(f"expected {kind.__name__}, got {type(message).__name__}")


class RefusedError(WireError):
    """The peer refused the request, saying why."""

    def __init__(self, rule: str, reason: str) -> None:
        super().__init__(reason)
        self.rule = rule
