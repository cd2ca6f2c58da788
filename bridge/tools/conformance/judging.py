"""How the conformance run judges an answer: rows, verdicts, and the emulator's expected errors.

Verdicts: ``match``; ``differ`` (the run fails); ``not compared`` (the target does not define
that detail: Cloudflare's local engine has no HTTP statuses, codes or some endpoints of its own);
``not emulated`` (a documented gap of the emulator); ``inconclusive`` (the instance was not in
the state the scenario needed); ``not run`` (deliberately skipped).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from bridge.tools.conformance.probe import Observed, Probe


class Verdict(StrEnum):
    MATCH = "match"
    DIFFER = "differ"
    NOT_COMPARED = "not compared"
    NOT_EMULATED = "not emulated"
    INCONCLUSIVE = "inconclusive"
    NOT_RUN = "not run"


@dataclass(frozen=True, slots=True)
class Row:
    behaviour: str
    observed: str
    assumed: str
    verdict: Verdict
    #: The emulator setting to change when they differ ("" when none can).
    setting: str = ""
    note: str = ""


@dataclass
class Run:
    """One conformance run's state: where it is pointed and what it created."""

    probe: Probe
    workflow: str
    prefix: str
    created: list[str] = field(default_factory=list)
    rows: list[Row] = field(default_factory=list)

    def iid(self, name: str) -> str:
        return f"{self.prefix}-{name}"

    def add(self, row: Row) -> None:
        self.rows.append(row)


@dataclass(frozen=True, slots=True)
class Expect:
    """An error the emulator answers: HTTP status, code, and a pattern for the text that
    accepts both Cloudflare's local engine's slug and production's wording."""

    status: int
    code: int
    text: re.Pattern[str]

    def describe(self, words: str) -> str:
        return f"HTTP {self.status} code {self.code} ({words})"


NO_SETTING = "none: the emulator's answer is fixed (bridge/local/emulator/problems.py)"
LOCAL_NOTE = "HTTP status and code not compared: Cloudflare's local engine defines neither"


def judge_error(
    run: Run, obs: Observed[Any], expect: Expect, *, behaviour: str, words: str, setting: str = ""
) -> Row:
    """The row of a call the emulator answers with an error."""
    assumed = expect.describe(words)
    observed = obs.describe()
    if obs.ok:
        return Row(behaviour, observed, assumed, Verdict.DIFFER, setting or NO_SETTING)
    matches_text = expect.text.search(obs.error.message if obs.error else "") is not None
    if run.probe.local_engine:
        verdict = Verdict.MATCH if matches_text else Verdict.DIFFER
        return Row(behaviour, observed, assumed, verdict, note=LOCAL_NOTE)
    same = matches_text and obs.status == expect.status and obs.code == expect.code
    if same:
        return Row(behaviour, observed, assumed, Verdict.MATCH)
    return Row(behaviour, observed, assumed, Verdict.DIFFER, setting or NO_SETTING)


def judge(
    behaviour: str, observed: str, assumed: str, agrees: bool, setting: str = NO_SETTING
) -> Row:
    """The row of a behaviour judged by a condition."""
    if agrees:
        return Row(behaviour, observed, assumed, Verdict.MATCH)
    return Row(behaviour, observed, assumed, Verdict.DIFFER, setting)


def local_only(run: Run, behaviour: str, obs: Observed[Any], assumed: str, why: str) -> bool:
    """Add a ``not compared`` row and return True when the local engine lacks what is probed."""
    if run.probe.local_engine and obs.slug.startswith("shim."):
        run.add(Row(behaviour, obs.describe(), assumed, Verdict.NOT_COMPARED, note=why))
        return True
    return False


NOT_FOUND = Expect(404, 10400, re.compile(r"instance\.not_found"))
WORKFLOW_NOT_FOUND = Expect(404, 10200, re.compile(r"workflow\.not_found"))
DUPLICATE = Expect(409, 10405, re.compile(r"instance\.already_exists"))
INVALID_ID = Expect(400, 10002, re.compile(r"invalid[_ ]id|ID is not valid", re.IGNORECASE))
FINAL_STATE = Expect(
    409,
    10409,
    re.compile(r"cannot_terminate|not in a restartable state", re.IGNORECASE),
)
NO_STEP = Expect(404, 10404, re.compile(r"step\.not_found"))
NOT_EMULATED = Expect(501, 7501, re.compile(r"not emulated"))


class Aborted(Exception):
    """A first step failed in a way that makes the rest meaningless (token, workflow)."""
