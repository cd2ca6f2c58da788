"""The instance-state stream: follow every instance to its end and publish each change once.

The pure core: ``tracker`` (which observation is a change), ``events`` (queue messages) and
``results`` (the bridge's own command results) turning what the sources say into observations.
The I/O edges: ``queue_source`` (Event Subscriptions → Queue → HTTP pull), ``poller`` (``list``
sweeps), ``background`` (their budgeted ``list``/``get`` calls), ``sink`` (ordering, details,
publishing), ``kafka`` (topics read back and written), ``follower`` (recovery from Kafka, the
results tail, all of it on one replica) and ``role`` (which replica that is).
"""
