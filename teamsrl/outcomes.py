"""Typed outcomes that cross stage boundaries: why an evolution failed, why a row was dropped.

Each is a kind (an enum whose value is the short label reports count by) and an optional detail;
`str()` gives the one-line text written into rows and logs, `to_json`/`from_json` the form a
resumed run reads back. Nothing parses the text.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class FailureKind(StrEnum):
    """Why a rewrite failed WizardLM's elimination rules (or never arrived)."""

    EMPTY = "empty"
    TOO_LONG = "too long"
    UNCHANGED = "unchanged"
    STOP_WORDS = "only punctuation and stop words"
    APOLOGY = "apology"
    COPIES_TEMPLATE = "copies template"
    COPIES_PROMPT = "copies the prompt's text"
    CUT = "cut at max_tokens"
    # the validity judge (teamsrl.quality) scored it below its threshold: meta-text, an answer
    # or a fragment instead of a task
    NOT_INSTRUCTION = "not an instruction"
    # the expert or verdict request timed out after the serving client's retries: the
    # instruction is kept and the reward is a neutral 0 (an infrastructure fault, not the policy's)
    TIMEOUT = "timeout"


@dataclass(frozen=True)
class Failure:
    """A failed evolution: its kind and a detail ("4100 characters > 4000", "'given prompt'")."""

    kind: FailureKind
    detail: str = ""

    def __str__(self) -> str:
        return f"{self.kind.value}: {self.detail}" if self.detail else self.kind.value

    def to_json(self) -> dict:
        """`{"kind": ..., "detail": ...}`."""
        return {"kind": self.kind.value, "detail": self.detail}

    @classmethod
    def from_json(cls, data: dict | None) -> Failure | None:
        """The inverse of `to_json` (None stays None)."""
        return None if data is None else cls(FailureKind(data["kind"]), data.get("detail", ""))


class DropKind(StrEnum):
    """Why a generated row is not in the dataset."""

    FAILED_EVOLUTION = "failed evolution"
    SUPERSEDED = "superseded (generate.keep = final)"
    ANSWER_EMPTY = "answer empty"
    ANSWER_APOLOGY = "answer apology"
    ANSWER_CUT = "answer cut at max_tokens"  # SFT on cut answers teaches abrupt stops
    DUPLICATE_MINHASH = "near-duplicate (minhash)"
    DUPLICATE_EMBEDDING = "near-duplicate (embedding)"


_OF = (DropKind.DUPLICATE_MINHASH, DropKind.DUPLICATE_EMBEDDING)  # "... of <row id>"


@dataclass(frozen=True)
class Drop:
    """A dropped row: the kind and a detail (the failure, or the row it duplicates)."""

    kind: DropKind
    detail: str = ""

    def __str__(self) -> str:
        if not self.detail:
            return self.kind.value
        sep = " of " if self.kind in _OF else ": "
        return f"{self.kind.value}{sep}{self.detail}"

    def to_json(self) -> dict:
        """`{"kind": ..., "detail": ...}`."""
        return {"kind": self.kind.value, "detail": self.detail}

    @classmethod
    def from_json(cls, data: dict | None) -> Drop | None:
        """The inverse of `to_json` (None stays None)."""
        return None if data is None else cls(DropKind(data["kind"]), data.get("detail", ""))
