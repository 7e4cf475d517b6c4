"""`LLMService`: the one interface of an LLM client, local (`LLMClient`) or served
(`teamsrl.serving.client.ServeLLMClient`). The env, the stepper, rollouts and generation are
typed against it, never against one implementation.

Both clients take role-tagged batches, return responses in request order, and record every call
in a ledger under a stage tag: the `stage` attribute is the default a call records under (a
call's own `stage=` wins), set the same way on both.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from teamsrl.llm.config import ModelSpec
from teamsrl.llm.ledger import RoleTotals
from teamsrl.llm.schema import ChatRequest, ChatResponse, ScoreRequest, ScoreResponse


class LedgerTotals(Protocol):
    """What a client's ledger answers: per-role totals, optionally of one stage."""

    def totals(self, *, stage: str | None = None) -> dict[str, RoleTotals]:
        """Per-role totals (engine queries, cache hits, tokens)."""
        ...


@runtime_checkable
class LLMService(Protocol):
    """Batched, cached, ledgered chat and scoring for named roles (expert, reviewer)."""

    stage: str | None
    ledger: LedgerTotals

    def spec(self, role: str) -> ModelSpec:
        """The role's model spec (model id, sampling defaults, token budget)."""
        ...

    def request(self, role: str, messages: list[dict[str, str]], seed: int, **overrides
                ) -> ChatRequest:
        """A `ChatRequest` with the role's default sampling parameters."""
        ...

    def chat(self, role: str, requests: list[ChatRequest], stage: str | None = None
             ) -> list[ChatResponse]:
        """Complete a batch for `role` (one response per request, in order)."""
        ...

    def score(self, role: str, requests: list[ScoreRequest], stage: str | None = None
              ) -> list[ScoreResponse]:
        """Candidate log-probabilities for a batch, in order."""
        ...

    def count_tokens(self, role: str, text: str) -> int:
        """Tokens of `text` for the role's tokenizer."""
        ...

    def close(self) -> None:
        """Release what the client owns (files, connections)."""
        ...
