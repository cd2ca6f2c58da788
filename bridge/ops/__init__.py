"""What an operator watches a running bridge with: ``health`` (``/livez``, ``/readyz``,
``/metrics``), ``metrics`` (Prometheus) and ``tracing`` (OpenTelemetry)."""
