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
