"""Property tests: no input, however malformed, makes the decoder do anything but answer."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from bridge.contract.commands import ACTIONS, command_to_json
from bridge.contract.decode import decode_command
from bridge.errors import ContractError

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=400)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_decode_or_raise_contract_error(raw: bytes) -> None:
    try:
        command = decode_command(raw)
    except ContractError as exc:
        assert str(exc)
        assert exc.stage in ("decode", "validate")
    else:
        assert command.action in ACTIONS


@settings(max_examples=400)
@given(
    st.fixed_dictionaries(
        {"action": st.sampled_from([*ACTIONS, "other"])},
        optional={
            "workflow": json_values,
            "instance_id": json_values,
            "event_type": json_values,
            "instances": json_values,
            "params": json_values,
            "payload": json_values,
            "rollback": json_values,
            "from": json_values,
            "command_id": json_values,
        },
    )
)
def test_arbitrary_command_shaped_objects_never_crash(data: dict[str, object]) -> None:
    try:
        command = decode_command(json.dumps(data).encode())
    except ContractError as exc:
        assert exc.stage == "validate"
        assert exc.field
    else:
        assert decode_command(json.dumps(command_to_json(command)).encode()) == command


def test_deep_nesting_is_an_answer_not_a_crash() -> None:
    raw = b'{"action":"create","workflow":"w","params":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    try:
        decode_command(raw)
    except ContractError as exc:
        assert exc.rule in ("json", "depth")
