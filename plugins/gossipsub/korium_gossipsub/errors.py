"""Errors of the GossipSub plugin: every refusal has its own type and says why."""

from __future__ import annotations

from korium.errors import KoriumError


class GossipError(KoriumError):
    """Base class of every GossipSub error."""


class GossipDecodeError(GossipError):
    """A GossipSub frame is not well-formed: not MessagePack, or breaks a bound."""


class InvalidTopicError(GossipError, ValueError):
    """A topic name is empty, too long or has characters other than printable ASCII."""


class MessageTooLargeError(GossipError, ValueError):
    """The data to publish is larger than ``max_message_size``."""


class TooManyTopicsError(GossipError):
    """This node already subscribes to ``max_topics`` topics."""
