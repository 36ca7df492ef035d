"""RPC framing: one request per QUIC stream, one u32-length-prefixed MessagePack frame each way.

Request (client-initiated bidirectional stream, or unidirectional for a one-way message)::

    u32 BE length || msgpack [protocol: str (<= 128 chars), body: bytes]     then FIN

Response (same bidirectional stream)::

    u32 BE length || msgpack [0, body: bytes]                    success
    u32 BE length || msgpack [1, code: int, message: str]        error     then FIN

A frame's length is checked against the limit before anything is buffered or decoded. The
limits admit a 1 MB DHT value with room for its envelope.
"""

from __future__ import annotations

import enum
import struct
from typing import Annotated, Final, TypeVar

import msgspec

MAX_REQUEST_SIZE: Final = 1024 * 1024 + 64 * 1024
MAX_RESPONSE_SIZE: Final = 1024 * 1024 + 64 * 1024
MAX_PROTOCOL_NAME: Final = 128
"""Characters (MessagePack string bounds count characters)."""
MAX_ERROR_MESSAGE: Final = 1024
LENGTH: Final = struct.Struct(">I")
T = TypeVar("T")


class ErrorCode(enum.IntEnum):
    """Why a request failed on the remote side (the ``code`` of an error response)."""

    UNKNOWN_PROTOCOL = 1
    """No handler for the protocol on the peer."""
    HANDLER_ERROR = 2
    """The peer's handler raised; ``message`` says what."""
    REQUEST_TOO_LARGE = 3
    MALFORMED = 4
    HANDLER_TIMEOUT = 5
    RESPONSE_TOO_LARGE = 7
    """The handler's response exceeded the limit; it was not sent."""


class Request(msgspec.Struct, array_like=True, forbid_unknown_fields=True):
    protocol: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_PROTOCOL_NAME)]
    body: bytes


class Ok(msgspec.Struct, array_like=True, forbid_unknown_fields=True, tag=0):
    body: bytes


class Error(msgspec.Struct, array_like=True, forbid_unknown_fields=True, tag=1):
    code: int
    message: Annotated[str, msgspec.Meta(max_length=MAX_ERROR_MESSAGE)]


Response = Ok | Error

_encoder: Final = msgspec.msgpack.Encoder()
_request_decoder: Final = msgspec.msgpack.Decoder(Request)
_response_decoder: Final[msgspec.msgpack.Decoder[Ok | Error]] = msgspec.msgpack.Decoder(Response)


class FrameError(ValueError):
    """A frame that is malformed or too large; never raised for a well-formed frame."""


def encode_request(protocol: str, body: bytes) -> bytes:
    payload = _encoder.encode(Request(protocol, body))
    return LENGTH.pack(len(payload)) + payload


def encode_response(response: Ok | Error) -> bytes:
    payload = _encoder.encode(response)
    return LENGTH.pack(len(payload)) + payload


def decode_request(frame: bytes, limit: int = MAX_REQUEST_SIZE) -> Request:
    """Decode a complete request frame (length prefix included) of at most *limit* bytes."""
    return _decode(frame, limit, _request_decoder)


def decode_response(frame: bytes) -> Ok | Error:
    """Decode a complete response frame (length prefix included)."""
    return _decode(frame, MAX_RESPONSE_SIZE, _response_decoder)


def _decode(frame: bytes, limit: int, decoder: msgspec.msgpack.Decoder[T]) -> T:
    if len(frame) < LENGTH.size:
        raise FrameError("frame shorter than its length prefix")
    (length,) = LENGTH.unpack_from(frame)
    if length > limit or len(frame) - LENGTH.size > limit:
        size = max(length, len(frame) - LENGTH.size)
        raise FrameError(f"frame of {size} bytes exceeds the {limit}-byte limit")
    if len(frame) != LENGTH.size + length:
        raise FrameError(f"frame length prefix says {length} bytes, got {len(frame) - 4}")
    try:
        return decoder.decode(memoryview(frame)[LENGTH.size :])
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
        raise FrameError(f"malformed frame: {exc}") from None


class FrameBuffer:
    """Collects one length-prefixed frame from stream data, refusing oversize ones early."""

    __slots__ = ("_chunks", "_expected", "_received", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._chunks: list[bytes] = []
        self._received = 0
        self._expected: int | None = None

    @property
    def received(self) -> int:
        """Bytes fed so far."""
        return self._received

    def feed(self, data: bytes) -> None:
        """Add stream data; raises :class:`FrameError` as soon as the frame is known too big."""
        self._chunks.append(data)
        self._received += len(data)
        if self._expected is None and self._received >= LENGTH.size:
            head = b"".join(self._chunks)
            self._chunks = [head]
            (length,) = LENGTH.unpack_from(head)
            if length > self.limit:
                raise FrameError(f"frame of {length} bytes exceeds the {self.limit}-byte limit")
            self._expected = LENGTH.size + length
        if self._expected is not None and self._received > self._expected:
            raise FrameError("stream carries bytes after its frame")

    def frame(self) -> bytes:
        """The complete frame; call at end of stream. Raises :class:`FrameError` if cut short."""
        if self._expected is None or self._received != self._expected:
            raise FrameError("stream ended before its frame was complete")
        return b"".join(self._chunks)
