"""DHT wire messages (protocol ``korium/dht/1``): msgspec MessagePack, bounded, tagged.

Every request names its sender's signed contact record (or None for a client-only node that
does not want to be routed to); the server checks that it belongs to the authenticated peer.
Every variable-length field has a bound, so decoding cannot allocate more than the frame holds;
anything malformed raises :class:`~korium_dht.errors.DhtDecodeError`. See ``docs/protocol.md``.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

import msgspec

from korium.errors import ContactError, InvalidIdentityError
from korium.identity import Contact
from korium.identity.contact import dec_hook, enc_hook
from korium_dht.config import MAX_VALUE_SIZE
from korium_dht.errors import DhtDecodeError

PROTOCOL: Final = "korium/dht/1"
KEY_LEN: Final = 32
MAX_CONTACTS: Final = 100
"""No DHT message carries more contacts (a node answers with at most its k_max)."""
MAX_REASON: Final = 200

Key = Annotated[bytes, msgspec.Meta(min_length=KEY_LEN, max_length=KEY_LEN)]
Value = Annotated[bytes, msgspec.Meta(max_length=MAX_VALUE_SIZE)]
Contacts = Annotated[list[Contact], msgspec.Meta(max_length=MAX_CONTACTS)]


class _Message(msgspec.Struct, array_like=True, frozen=True, forbid_unknown_fields=True):
    pass


class Ping(_Message, tag=1, frozen=True):
    """Are you there? Answered with :class:`Pong`."""

    sender: Contact | None


class FindNode(_Message, tag=2, frozen=True):
    """Which contacts do you know closest to *target*? Answered with :class:`Nodes`."""

    sender: Contact | None
    target: Key


class FindValue(_Message, tag=3, frozen=True):
    """The value under *key*, else your closest contacts: :class:`Found` or :class:`Nodes`."""

    sender: Contact | None
    key: Key


class Store(_Message, tag=4, frozen=True):
    """Store *value* under *key* (a content address or an identity); :class:`StoreResult`."""

    sender: Contact | None
    key: Key
    value: Value


Request = Ping | FindNode | FindValue | Store


class Pong(_Message, tag=1, frozen=True):
    """I am here, and this is my record (None for a client-only node)."""

    contact: Contact | None


class Nodes(_Message, tag=2, frozen=True):
    """Contacts closest to the target, nearest first."""

    contacts: Contacts


class Found(_Message, tag=3, frozen=True):
    """The value stored under the requested key."""

    value: Value


class StoreResult(_Message, tag=4, frozen=True):
    """Whether a store was accepted; a refusal names its reason (a stable code)."""

    accepted: bool
    reason: Annotated[str, msgspec.Meta(max_length=MAX_REASON)] = ""


Response = Pong | Nodes | Found | StoreResult


_encoder: Final = msgspec.msgpack.Encoder(enc_hook=enc_hook)
_request_decoder: Final = msgspec.msgpack.Decoder(Request, dec_hook=dec_hook)
_response_decoder: Final = msgspec.msgpack.Decoder(Response, dec_hook=dec_hook)


def encode(message: Request | Response) -> bytes:
    """The wire form of a request or response."""
    return _encoder.encode(message)


def decode_request(data: bytes) -> Request:
    """Parse a request; raises :class:`DhtDecodeError` for anything malformed."""
    return _decode(_request_decoder, data, "request")  # type: ignore[no-any-return]


def decode_response(data: bytes) -> Response:
    """Parse a response; raises :class:`DhtDecodeError` for anything malformed."""
    return _decode(_response_decoder, data, "response")  # type: ignore[no-any-return]


def _decode(decoder: msgspec.msgpack.Decoder[Any], data: bytes, what: str) -> Any:
    try:
        return decoder.decode(data)
    except (msgspec.DecodeError, ContactError, InvalidIdentityError) as exc:
        raise DhtDecodeError(f"malformed DHT {what}: {exc}") from None
    except (UnicodeDecodeError, RecursionError, ValueError, TypeError) as exc:
        raise DhtDecodeError(f"malformed DHT {what}: {type(exc).__name__}") from None
