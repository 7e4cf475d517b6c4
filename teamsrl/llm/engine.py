"""The engine interface: what every LLM backend (transformers, vLLM via Ray Serve) offers."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from teamsrl.llm.schema import ChatRequest, ChatResponse, ScoreRequest, ScoreResponse


@runtime_checkable
class LLMEngine(Protocol):
    """A batched LLM backend. A request's output never depends on its batch-mates."""

    model_id: str

    def generate(self, requests: list[ChatRequest]) -> list[ChatResponse]:
        """Complete a batch of chat requests; one response per request, in order."""
        ...

    def score(self, requests: list[ScoreRequest]) -> list[ScoreResponse]:
        """Log-probabilities of each request's candidates, in one forward pass, no sampling."""
        ...

    def count_tokens(self, text: str) -> int:
        """Number of tokens `text` takes for this engine's tokenizer."""
        ...


class LLMTimeoutError(TimeoutError):
    """Some requests of a batch got no answer within the timeout (after the configured retries).

    `partial` holds the batch's responses in request order, `None` where a request timed out, so
    a caller that can degrade (an env step counts a failed evolution) keeps the answers it got.
    """

    def __init__(self, role: str, kind: str, partial: list, timeout_s: float, attempts: int
                 ) -> None:
        self.role, self.kind, self.partial = role, kind, partial
        self.failed = [i for i, r in enumerate(partial) if r is None]
        super().__init__(f"{role} {kind}: {len(self.failed)} of {len(partial)} request(s) got "
                         f"no answer within {timeout_s:g} s ({attempts} attempt(s) each); see "
                         "serving.request_timeout_s and serving.timeout_retries")
