"""`BatchStepper`: the one place that turns N envs' actions into LLM batches.

One call steps several `InstructionMDPEnv`s that share one client: all expert rewrites go out as
ONE `chat` batch, then all reviewer verdicts as ONE `score` batch (and one batch of ratings, if
enabled), so a serving replica sees batches of N instead of N batches of 1. The single env's
`step`, the vector env, rollouts, generation and RLlib's env runners all step through here.

A request that timed out (the client raised `LLMTimeoutError`) fails only its own step: a
timed-out rewrite or verdict makes the step a failed evolution of kind `TIMEOUT` with a neutral
reward; a timed-out rating counts as unparsed (neutral 0).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from teamsrl import rewards as R
from teamsrl.llm.engine import LLMTimeoutError
from teamsrl.llm.protocol import LLMService
from teamsrl.llm.schema import ChatRequest, ScoreRequest
from teamsrl.outcomes import Failure, FailureKind

if TYPE_CHECKING:
    from envs.instruction_mdp import InstructionMDPEnv

log = logging.getLogger(__name__)
_TIMEOUT = Failure(FailureKind.TIMEOUT)


class Transition(NamedTuple):
    """What `step` returns (Gymnasium's 5-tuple, with names)."""

    obs: np.ndarray
    reward: float
    terminated: bool
    truncated: bool
    info: dict[str, Any]

    @property
    def done(self) -> bool:
        """The episode ended (terminated or truncated)."""
        return self.terminated or self.truncated


@dataclass
class PendingStep:
    """One env's step while its requests are in flight."""

    env: InstructionMDPEnv
    action: int
    before: str
    expert: ChatRequest | None = None
    prompt_truncated: bool = False
    rewrite: str = ""
    rewrite_truncated: bool = False
    failure: Failure | None = None
    verdict_request: ScoreRequest | None = None
    verdict: float = 0.0
    graded_request: ChatRequest | None = None
    graded: int | None = None
    graded_unparsed: bool = False
    validity: float | None = None  # the judge's P(valid instruction); None: not judged
    judge_queries: int = 0  # reviewer queries the judge spent on this rewrite
    timeouts: int = 0


class BatchStepper:
    """Steps envs that share `client`, one LLM batch per role per step."""

    def __init__(self, client: LLMService) -> None:
        self.client = client

    def step(self, envs: Sequence[InstructionMDPEnv], actions: Sequence[Any]
             ) -> list[Transition]:
        """One step of each env (in order), every request of a role in one batch."""
        if not envs:
            return []
        if any(e.client is not self.client for e in envs):
            raise ValueError("BatchStepper.step: expected every env to use the stepper's client")
        pending = [env.begin_step(a) for env, a in zip(envs, actions, strict=True)]
        rewriting = [p for p in pending if p.expert is not None]
        for p, response in _answered(self.client.chat, "expert", rewriting, "expert"):
            p.env.take_rewrite(p, response)
        self._judge([p for p in rewriting if p.failure is None])
        judged = [p for p in pending if p.verdict_request is not None]
        for p, s in _answered(self.client.score, "reviewer", judged, "verdict_request"):
            p.verdict = float(s.probabilities()[R.VERDICT_CANDIDATES.index("Not Equal")])
        graded = [p for p in pending if p.graded_request is not None and p.failure != _TIMEOUT]
        ratings = _answers(self.client.chat, "reviewer", [p.graded_request for p in graded])
        for p, r in zip(graded, ratings, strict=True):
            if r is None:
                p.timeouts += 1
            p.graded = None if r is None else R.parse_graded(r.text)
            p.graded_unparsed = p.graded is None
        return [p.env.end_step(p) for p in pending]


    @staticmethod
    def _judge(passed: list[PendingStep]) -> None:
        """The validity judge on every rewrite that passed the rules, one batch per judge."""
        judges: dict[int, list[PendingStep]] = {}
        for p in passed:
            judges.setdefault(id(p.env.judge), []).append(p)
        for group in judges.values():
            judge = group[0].env.judge
            if judge is None:
                scores = [None] * len(group)
            else:
                scores = judge.validity([p.rewrite for p in group])
            for p, v in zip(group, scores, strict=True):
                p.judge_queries = judge.reviewer_queries(p.rewrite) if judge is not None else 0
                p.env.take_validity(p, v)


def _answered(call: Callable, role: str, steps: list[PendingStep], request: str
              ) -> Iterator[tuple[PendingStep, Any]]:
    """(step, answer) for each step whose `request` (a PendingStep field) was answered, in one
    batch; a step whose request timed out becomes a failed evolution of kind `TIMEOUT`."""
    answers = _answers(call, role, [getattr(p, request) for p in steps])
    for p, answer in zip(steps, answers, strict=True):
        if answer is None:
            p.failure, p.timeouts = _TIMEOUT, p.timeouts + 1
        else:
            yield p, answer


def _answers(call: Callable, role: str, requests: list) -> list:
    """One batch's responses, `None` where a request timed out after the client's retries."""
    try:
        return call(role, requests)
    except LLMTimeoutError as e:
        log.warning("%s", e)
        return e.partial
