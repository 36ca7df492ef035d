"""korium-gossipsub: GossipSub v1.1/v1.2 publish/subscribe with signed messages and scoring.

Installed as the ``gossipsub`` plugin (``pip install korium[gossipsub]``); it gives a node the
:data:`korium.PUBSUB` capability: ``node.subscribe``, ``node.unsubscribe``, ``node.publish``
and ``node.messages()``. ``korium_gossipsub.service(node)`` reaches validators, scores and the
mesh.
"""

from korium.capabilities import Validation
from korium_gossipsub.caches import Verdict
from korium_gossipsub.config import MAX_MESSAGE_SIZE, GossipConfig
from korium_gossipsub.errors import (
    GossipDecodeError,
    GossipError,
    InvalidTopicError,
    MessageTooLargeError,
    TooManyTopicsError,
)
from korium_gossipsub.plugin import service
from korium_gossipsub.score import ScoreParams, ScoreThresholds, TopicScoreParams
from korium_gossipsub.service import GossipService, Validator

__all__ = [
    "MAX_MESSAGE_SIZE",
    "GossipConfig",
    "GossipDecodeError",
    "GossipError",
    "GossipService",
    "InvalidTopicError",
    "MessageTooLargeError",
    "ScoreParams",
    "ScoreThresholds",
    "TooManyTopicsError",
    "TopicScoreParams",
    "Validation",
    "Validator",
    "Verdict",
    "service",
]
