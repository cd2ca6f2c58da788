"""Local infrastructure for development and tests: an embedded Kafka broker and topic helpers.

Nothing here is used by the bridge in production; ``workflows-bridge dev`` and the test suite
start a broker from here instead of needing one on the network.
"""

from bridge.local.tansu import EmbeddedTansu, TansuStartError, find_tansu_binary, free_port
from bridge.local.topics import ensure_topics

__all__ = ["EmbeddedTansu", "TansuStartError", "ensure_topics", "find_tansu_binary", "free_port"]
