"""The instance-state stream: follow every instance to its end and publish each change once.

``tracker`` is the pure core (which observation is a change); ``events`` and ``polling`` turn
what the sources say into observations (pure too). The I/O edges: ``queue_source`` (Event
Subscriptions → Queue → HTTP pull), ``poller`` (budgeted ``list``/``get``), ``results_tail`` (the
bridge's own command answers), ``recovery`` (what was published, read back from Kafka),
``follower`` (all of it, run by one replica) and ``role`` (which replica that is).
"""
