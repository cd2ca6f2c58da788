"""Fault, fuzz and soak runs of the bridge (tooling: the service never imports this)."""
