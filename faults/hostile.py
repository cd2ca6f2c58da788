"""Records no bridge should choke on: the input side of the fault, fuzz and soak runs.

Each generator returns ``(key, value, headers)`` as a producer sends it. ``hostile`` records are
never valid commands (every one must come back ``rejected`` with a dead letter); ``fuzzed`` ones
are anything at all, including a mutated command that still happens to be valid.
"""

from __future__ import annotations

import json
import random
from typing import Any

Headers = list[tuple[str, bytes]]
Raw = tuple[bytes | None, bytes | None, Headers]

#: Headers the bridge itself writes on dead letters: a record must not be able to forge them.
OWN_PREFIX = "workflows_bridge."


def valid_command(rnd: random.Random, n: int, workflow: str = "fuzz") -> dict[str, Any]:
    """A command the fuzz run checks the answer of (a create of a fresh instance)."""
    return {
        "action": "create",
        "workflow": workflow,
        "instance_id": f"fz-{n}",
        "command_id": f"fz-cmd-{n}",
        "params": {"n": n, "r": rnd.random()},
    }


def hostile_headers(rnd: random.Random) -> Headers:
    """Huge, binary, repeated, empty and look-alike headers."""
    choice = rnd.randrange(6)
    if choice == 0:
        return [("big", rnd.randbytes(64 * 1024))]
    if choice == 1:
        return [("bin", bytes(range(256))), ("bin", b"\x00\xff" * 8)]
    if choice == 2:  # look like the bridge's own dead-letter headers
        return [
            (OWN_PREFIX + "errors.topic", b"elsewhere"),
            (OWN_PREFIX + "errors.offset", b"-1"),
            (OWN_PREFIX + "errors.partition", b"\xff\xfe"),
            (OWN_PREFIX + "command_id", b"forged"),
        ]
    if choice == 3:
        return [("", b""), ("dup", b"1"), ("dup", b"2"), ("dup", b"")]
    if choice == 4:
        return [("\u00e9t\u00e9-\U0001f600", "caf\u00e9".encode("latin-1"))]
    return [(f"h{i}", str(i).encode()) for i in range(200)]


def _nested(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


def hostile_value(rnd: random.Random) -> bytes | None:
    """A value that is never a valid command."""
    choice = rnd.randrange(12)
    if choice == 0:
        return rnd.randbytes(rnd.randrange(1, 300))
    if choice == 1:
        return None
    if choice == 2:
        return b""
    if choice == 3:
        return json.dumps({"action": "create", "workflow": "w"}).encode()[:-3]  # truncated
    if choice == 4:
        return _nested(rnd.choice((50, 1000, 100_000)))
    if choice == 5:
        return b"[" * 50_000
    if choice == 6:  # another encoding
        return json.dumps({"action": "pause", "workflow": "w", "instance_id": "x"}).encode("utf-16")
    if choice == 7:
        return json.dumps({"action": "explode", "workflow": "w"}).encode()
    if choice == 8:
        return json.dumps({"action": "create", "workflow": "w", "instance_id": "bad id!"}).encode()
    if choice == 9:  # a huge string inside an otherwise valid-looking command
        return json.dumps(
            {"action": "pause", "workflow": "w", "instance_id": "x" * 900_000}
        ).encode()
    if choice == 10:
        return b'{"action": "create", "workflow": "w", "params": 1e999999}'
    return json.dumps(
        {"action": "send_event", "workflow": "w", "instance_id": "i", "event_type": "t", "x": 1}
    ).encode()


def hostile(rnd: random.Random) -> Raw:
    """A record that is not a valid command, with a hostile key and headers half the time."""
    key = rnd.choice((None, b"", rnd.randbytes(8), b"\xff" * 300, b"k"))
    headers = hostile_headers(rnd) if rnd.random() < 0.5 else []
    value = hostile_value(rnd)
    if key is None and value is None:
        key = b"null-value"  # aiokafka cannot send a record with neither (other clients can)
    return key, value, headers


def mutated(rnd: random.Random, command: dict[str, Any]) -> bytes:
    """A valid command's bytes, truncated, flipped or spliced."""
    data = bytearray(json.dumps(command).encode())
    choice = rnd.randrange(4)
    if choice == 0:
        return bytes(data[: rnd.randrange(len(data))])
    if choice == 1:
        for _ in range(rnd.randrange(1, 6)):
            data[rnd.randrange(len(data))] = rnd.randrange(256)
        return bytes(data)
    if choice == 2:
        at = rnd.randrange(len(data))
        return bytes(data[:at] + rnd.randbytes(rnd.randrange(1, 40)) + data[at:])
    return bytes(data) * rnd.randrange(2, 5)


def fuzzed(rnd: random.Random, n: int) -> Raw:
    """Anything: hostile records, mutated commands, and valid ones under hostile headers."""
    choice = rnd.randrange(3)
    if choice == 0:
        return hostile(rnd)
    key = rnd.choice((None, b"", f"fz-{n}".encode()))
    headers = hostile_headers(rnd) if rnd.random() < 0.7 else []
    # Another workflow: a mutation that stays valid cannot take a checked command's instance.
    return key, mutated(rnd, valid_command(rnd, n, "fuzz-mutated")), headers
