"""korium-dht: adaptive, latency-tiered Kademlia with signed contact records.

Installed as the ``dht`` plugin (``pip install korium[dht]``); it gives a node the
:data:`korium.DISCOVERY` capability: ``node.find_peers``, ``node.resolve``,
``node.publish_address``, ``node.put`` / ``node.get`` and ``node.connect(identity)`` without an
address.
"""

from korium_dht.config import MAX_VALUE_SIZE, DhtConfig

__all__ = ["MAX_VALUE_SIZE", "DhtConfig"]
