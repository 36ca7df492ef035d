"""RPC framing: u32-length-prefixed MessagePack frames on QUIC streams.

A request has its own client-initiated bidirectional stream, one frame each way::

    u32 BE length || msgpack [protocol: str (<= 128 chars), body: bytes]     then FIN

    u32 BE length || msgpack [0, body: bytes]                    success
    u32 BE length || msgpack [1, code: int, message: str]        error     then FIN

One-way messages travel as request frames, one after another, on a unidirectional stream that a
sender keeps open for the life of the connection (:class:`FrameSplitter` cuts them apart); a
unidirectional stream that carries one frame and then FIN is just the shortest such stream.

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


class FrameSplitter:
    """Cuts a stream of successive length-prefixed frames into whole frames (one-way messages).

    Why: a sender writes every message to one long-lived stream, and QUIC hands over the bytes
    in arbitrary chunks; each frame must reach its handler as soon as its last byte arrives.
    """

    __slots__ = ("_buffer", "_error", "_expected", "limit")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._buffer = bytearray()
        self._expected = 0
        """Length of the frame in progress, prefix included; 0 while its prefix is incomplete."""
        self._error: str | None = None

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held back."""
        return len(self._buffer)

    def feed(self, data: bytes) -> list[bytes]:
        """Add stream data; return the frames it completed, in order.

        Raises :class:`FrameError` at a length prefix over the limit, before buffering that
        frame, and on every later call. Frames completed earlier in the same *data* are
        returned first; the error then comes with the next call (``feed`` or ``finish``).
        """
        if self._error is not None:
            raise FrameError(self._error)
        complete: list[bytes] = []
        buffer = self._buffer
        start = 0
        if buffer:  # finish the frame in progress first
            if not self._expected:
                start = LENGTH.size - len(buffer)
                buffer += data[:start]
                if len(buffer) < LENGTH.size:
                    return complete
                self._expected = self._check(LENGTH.unpack_from(buffer)[0], complete)
            missing = self._expected - len(buffer)
            if len(data) - start < missing:
                buffer += memoryview(data)[start:]
                return complete
            buffer += memoryview(data)[start : start + missing]
            complete.append(bytes(buffer))
            buffer.clear()
            self._expected = 0
            start += missing
        end = len(data)
        while end - start >= LENGTH.size:
            size = self._check(LENGTH.unpack_from(data, start)[0], complete)
            if self._error is not None:
                return complete
            stop = start + size
            if stop > end:
                self._expected = size
                break
            complete.append(data[start:stop])  # no copy when the frame is all of data
            start = stop
        if start < end:
            buffer += memoryview(data)[start:]
        return complete

    def finish(self) -> None:
        """The stream ended: raises :class:`FrameError` if it cut a frame short."""
        if self._error is not None:
            raise FrameError(self._error)
        if self._buffer:
            raise FrameError(f"stream ended with a frame cut short ({len(self._buffer)} bytes)")

    def _check(self, length: int, complete: list[bytes]) -> int:
        """The whole frame's size for a prefix of *length*; refuses one over the limit."""
        if length > self.limit:
            self._error = f"frame of {length} bytes exceeds the {self.limit}-byte limit"
            self._buffer.clear()
            self._expected = 0
            if not complete:  # else hand over the frames before it first
                raise FrameError(self._error)
        return LENGTH.size + length
