"""Errors of the DHT plugin: every refusal has its own type and says why."""

from __future__ import annotations

from korium.errors import KoriumError


class DhtError(KoriumError):
    """Base class of every DHT error."""


class DhtDecodeError(DhtError):
    """A DHT message is not well-formed: wrong size, not MessagePack, or breaks a bound."""


class StoreRefusedError(DhtError):
    """A value or record was refused for storage; ``reason`` is a short stable code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class InvalidValueError(StoreRefusedError):
    """The key is neither the blake3 hash of the value nor a valid record's identity."""


class ValueTooLargeError(StoreRefusedError):
    """The value is larger than MAX_VALUE_SIZE."""


class RecordRefusedError(StoreRefusedError):
    """A contact record is stale, future-dated, badly signed, for another key, or older
    than the one already stored."""


class QuotaExceededError(StoreRefusedError):
    """The storing peer already holds its quota of bytes or entries on this node."""


class RateLimitedError(StoreRefusedError):
    """The storing peer stores faster than the rate limit allows."""


class StorageFullError(StoreRefusedError):
    """This node holds as many entries as it is configured to."""


class LookupFailedError(DhtError):
    """A lookup could not reach any peer (empty routing table, or every peer failed)."""
