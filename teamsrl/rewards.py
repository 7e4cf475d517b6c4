"""Rewards of the instruction MDP: reviewer verdict, novelty, failed evolution, query cost.

- verdict: the reviewer is shown the old and the new instruction and asked whether they are equal
  in constraints/requirements and in depth/breadth (the paper's binary signal). We read it from
  the engine's `score` call — the log-probabilities of the two answers "Equal" and "Not Equal" in
  one forward pass — so P(not equal) is a graded reward with no free-text parsing.
- graded score (optional, off by default): the reviewer generates a 1-10 rating; parsing takes the
  first integer in 1..10, and an unparseable reply is counted and earns a neutral 0.
- novelty: 1 - max cosine similarity to the episode's earlier instructions and a bounded pool of
  recent ones (`novelty`).
- failed evolution: WizardLM's elimination rules (`failed_evolution` returns a typed `Failure`).
- cost: a price per expert and per reviewer query.

The step reward is the sum of the weighted components (`combine`); the weights are config.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from teamsrl.llm.schema import ScoreRequest
from teamsrl.outcomes import Failure, FailureKind

VERDICT_CANDIDATES = ("Equal", "Not Equal")
_VERDICT_PROMPT = (
    "Here are two instructions. Are they equal? They are equal when they have the same "
    "constraints and requirements, and the same depth and breadth of inquiry.\n\n"
    "First instruction: {old}\n\n"
    "Second instruction: {new}\n\n"
    "Answer with Equal or Not Equal only."
)
_GRADED_PROMPT = (
    "First instruction: {old}\n\nSecond instruction: {new}\n\n"
    "On a scale from 1 to 10, how much harder and more detailed is the second instruction than "
    "the first? Reply with one number."
)

# Words an evolved instruction copies from WizardLM-style and from our own prompt templates.
TEMPLATE_MARKERS = (
    "given prompt", "rewritten prompt", "created prompt", "#rewritten prompt#", "#given prompt#",
    "#created prompt#", "given instruction", "rewritten instruction", "new instruction",
    "original instruction", "rewrite instruction",
)
_APOLOGY = re.compile(
    r"\b(sorry|apologi[sz]e|i (?:cannot|can't|can not|am unable|'m unable|am not able)|"
    r"as an ai)\b", re.IGNORECASE)
_STOP_WORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being
below between both but by can could did do does doing down during each few for from further had
has have having he her here hers herself him himself his how i if in into is it its itself just
me more most my myself no nor not now of off on once only or other our ours ourselves out over
own same she should so some such than that the their theirs them themselves then there these
they this those through to too under until up very was we were what when where which while who
whom why will with would you your yours yourself yourselves
""".split())


class RewardConfig(BaseModel):
    """Weights of the reward components and the elimination rules' limits."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    verdict_weight: float = Field(1.0, description="weight of the reviewer's P(not equal); "
                                  "0: the reviewer is not asked (no query, verdict 0)")
    novelty_weight: float = Field(0.5, description="weight of the embedding novelty (0..1)")
    failure_penalty: float = Field(1.0, ge=0.0, description="subtracted when a rewrite fails "
                                   "WizardLM's elimination rules (the rewrite is then discarded)")
    expert_query_cost: float = Field(0.02, ge=0.0, description="subtracted per expert query")
    reviewer_query_cost: float = Field(0.01, ge=0.0, description="subtracted per reviewer query")
    graded_score: bool = Field(False, description="also ask the reviewer for a generated 1-10 "
                               "rating (one more reviewer query per step)")
    graded_weight: float = Field(0.5, description="weight of the rating, mapped to -1..1 "
                                 "(unparseable replies count 0)")
    graded_max_tokens: int = Field(6, ge=1, le=64, description="tokens of the rating reply")
    novelty_pool_size: int = Field(256, ge=0, description="recent instructions (from earlier "
                                   "episodes) that novelty is measured against")
    max_rewrite_chars: int = Field(4000, ge=1, description="a longer rewrite fails the rules")
    validity_weight: float = Field(0.5, description="weight of the validity judge's P(valid "
                                   "instruction) of a rewrite that passed the rules (0: the "
                                   "judge is not asked for the reward)")
    invalid_fails: bool = Field(True, description="a rewrite the validity judge scores below "
                                "its threshold (env.quality) fails the rules: 'not an "
                                "instruction' (meta-text, an answer or a fragment in place of "
                                "a task)")
    cut_rewrite_fails: bool = Field(True, description="a rewrite the expert stopped at its "
                                    "max_tokens (finish_reason 'length') fails the rules: it is "
                                    "an instruction cut mid-way. Off only for plumbing runs with "
                                    "a few-token budget")
    apology_max_words: int = Field(80, ge=1, description="an apology under this many words fails")
    template_markers: list[str] = Field(default_factory=lambda: list(TEMPLATE_MARKERS),
                                        description="phrases (case-insensitive) whose presence "
                                        "in a rewrite means it copied the prompt template")

    @property
    def asks_verdict(self) -> bool:
        """Whether a step asks the reviewer for its verdict: not when it would weigh nothing."""
        return self.verdict_weight != 0.0


def _normalise(text: str) -> str:
    return " ".join(text.lower().split()).strip(string.punctuation + " ")


def failed_evolution(old: str, new: str, config: RewardConfig | None = None,
                     template_texts: Iterable[str] = (), cut: bool = False) -> Failure | None:
    """The elimination rule `new` breaks, or None when it passes.

    `template_texts` are texts from the prompt itself (its example, its sentences) that a rewrite
    must not reproduce. `cut`: the expert stopped at its token budget, not at its end of text
    (a failure when `config.cut_rewrite_fails`; the content rules are checked first, so their
    reason wins).
    """
    config = config or RewardConfig()
    text = new.strip()
    if not text:
        return Failure(FailureKind.EMPTY)
    if len(text) > config.max_rewrite_chars:
        return Failure(FailureKind.TOO_LONG,
                       f"{len(text)} characters > {config.max_rewrite_chars}")
    norm = _normalise(text)
    if norm == _normalise(old):
        return Failure(FailureKind.UNCHANGED)
    words = re.findall(r"[A-Za-z0-9']+", text.lower())
    if not words or all(w in _STOP_WORDS for w in words):
        return Failure(FailureKind.STOP_WORDS)
    if is_apology(text, config.apology_max_words):
        return Failure(FailureKind.APOLOGY)
    lower = text.lower()
    for marker in config.template_markers:
        if marker.lower() in lower:
            return Failure(FailureKind.COPIES_TEMPLATE, repr(marker))
    for copied in template_texts:
        if copied and _normalise(copied) in norm:
            return Failure(FailureKind.COPIES_PROMPT)
    if cut and config.cut_rewrite_fails:
        return Failure(FailureKind.CUT)
    return None


def is_apology(text: str, max_words: int) -> bool:
    """A short refusal or apology ("Sorry, I cannot ...") of fewer than `max_words` words."""
    return bool(_APOLOGY.search(text)) and len(text.split()) < max_words


def verdict_request(old: str, new: str) -> ScoreRequest:
    """The reviewer's scoring request: "Equal" vs "Not Equal" after the two instructions."""
    prompt = _VERDICT_PROMPT.format(old=old, new=new)
    return ScoreRequest(candidates=VERDICT_CANDIDATES,
                        messages=({"role": "user", "content": prompt},))


def graded_messages(old: str, new: str) -> list[dict[str, str]]:
    """The reviewer's chat messages for the optional 1-10 rating."""
    return [{"role": "user", "content": _GRADED_PROMPT.format(old=old, new=new)}]


def parse_graded(text: str) -> int | None:
    """The first integer 1..10 standing alone in `text` ("7", "Score: 7/10"); else None."""
    for match in re.finditer(r"(?<![\d.])(\d{1,2})(?![\d.]\d)", text):
        value = int(match.group(1))
        if 1 <= value <= 10:
            return value
    return None


def graded_reward(score: int | None) -> float:
    """A 1..10 rating mapped to -1..1; None (unparseable) is neutral 0."""
    return 0.0 if score is None else (score - 5.5) / 4.5


def novelty(vector: np.ndarray, references: np.ndarray) -> float:
    """1 - max cosine similarity of a unit vector to unit `references` (1 when none), in 0..1."""
    if references.size == 0:
        return 1.0
    return float(np.clip(1.0 - float(np.max(references @ vector)), 0.0, 1.0))


def combine(config: RewardConfig, *, verdict: float, novelty: float, graded: float,
            failed: bool, expert_queries: int, reviewer_queries: int, validity: float = 0.0
            ) -> dict[str, float]:
    """Weighted components (they sum to the step reward; `total` holds that sum)."""
    parts = {
        "verdict": config.verdict_weight * verdict,
        "novelty": config.novelty_weight * novelty,
        "validity": config.validity_weight * validity,
        "graded": config.graded_weight * graded if config.graded_score else 0.0,
        "failure": -config.failure_penalty if failed else 0.0,
        "cost": -(config.expert_query_cost * expert_queries
                  + config.reviewer_query_cost * reviewer_queries),
    }
    parts = {k: float(v) for k, v in parts.items()}
    parts["total"] = float(sum(parts.values()))
    return parts
