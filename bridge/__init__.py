"""workflows-bridge: drive Cloudflare Workflows from Kafka command topics."""

__version__ = "0.1.0"
