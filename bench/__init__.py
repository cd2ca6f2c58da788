"""The benchmark of issue #4: this bridge against a raw Kafka pipe and a naive bridge.

``scripts/bench`` (or ``python -m bench``) runs every scenario on a real broker (embedded Tansu,
or ``KAFKA_BOOTSTRAP_SERVERS``) against the project's API emulator over HTTP and prints one table.
"""
