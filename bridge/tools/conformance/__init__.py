"""``workflows-bridge conformance``: the emulator's assumptions, checked against a real API."""
