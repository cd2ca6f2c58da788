"""The command path, one module per stage a record passes: ``kafka_io`` (clients and
transactions), ``readback`` (what is already answered), ``translate`` (pure: command → plan →
result), ``keyed`` (per-instance order), ``executor`` with ``coalesce`` (the API calls),
``statuses`` and ``lookup`` (what is known of instances without a ``get`` each), ``budget``,
``shares``, ``share_exchange`` and ``auth_gate`` (what calls may spend, and when), ``outbox``
(results written, then offsets) and ``offsets``. ``service`` assembles a replica's parts;
``replica`` runs them.
"""
