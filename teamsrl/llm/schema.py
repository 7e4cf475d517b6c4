"""Requests and responses of every LLM call, in the OpenAI chat-completions schema.

The same objects travel to our own engines, through Ray Serve, and (as plain dicts via
`to_openai`) to vLLM behind `ray.serve.llm`. They are frozen dataclasses so they pickle cheaply
and hash into the cache key (`cache_key`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

ROLES_OF_MESSAGES = ("system", "user", "assistant")


def _check_messages(messages: tuple[dict[str, str], ...]) -> None:
    if not messages:
        raise ValueError("messages: expected at least one message, got none")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or set(m) != {"role", "content"}:
            raise ValueError(f"messages[{i}]: expected {{'role', 'content'}}, got {m!r}")
        if m["role"] not in ROLES_OF_MESSAGES:
            raise ValueError(
                f"messages[{i}].role: expected one of {ROLES_OF_MESSAGES}, got {m['role']!r}"
            )
        if not isinstance(m["content"], str):
            raise ValueError(f"messages[{i}].content: expected str, got {type(m['content'])}")


def _freeze(messages) -> tuple[dict[str, str], ...]:
    return tuple({"role": m["role"], "content": m["content"]} for m in messages)


@dataclass(frozen=True)
class ChatRequest:
    """One chat completion: messages plus sampling parameters and the request's own seed."""

    messages: tuple[dict[str, str], ...]
    model: str = ""
    temperature: float = 0.7
    top_p: float = 0.95
    max_tokens: int = 128
    seed: int = 0
    stop: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "messages", _freeze(self.messages))
        object.__setattr__(self, "stop", tuple(self.stop))
        _check_messages(self.messages)
        if not 0.0 <= self.temperature <= 5.0:
            raise ValueError(f"temperature: expected 0 <= t <= 5, got {self.temperature}")
        if not 0.0 < self.top_p <= 1.0:
            raise ValueError(f"top_p: expected 0 < p <= 1, got {self.top_p}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens: expected >= 1, got {self.max_tokens}")

    def to_openai(self) -> dict[str, Any]:
        """The request as an OpenAI `/v1/chat/completions` body."""
        body = asdict(self)
        body["messages"] = list(self.messages)
        body["stop"] = list(self.stop) or None
        return body

    def cache_key(self, model_id: str) -> str:
        """Content address: model, messages, sampling parameters and seed."""
        return _digest("chat", model_id, self.to_openai() | {"model": model_id})


@dataclass(frozen=True)
class ChatResponse:
    """A completion's text with its token counts; `cached` says whether the cache served it."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str = "stop"
    cached: bool = False
    truncated_prompt: bool = False


@dataclass(frozen=True)
class ScoreRequest:
    """Log-probabilities of given candidate continuations after a context; no sampling.

    The context is either chat `messages` (the chat template and the assistant prefix are
    applied) or a raw `prompt` string (for per-example loss of plain text).
    """

    candidates: tuple[str, ...]
    messages: tuple[dict[str, str], ...] = ()
    prompt: str | None = None
    model: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "messages", _freeze(self.messages))
        object.__setattr__(self, "candidates", tuple(self.candidates))
        if (self.prompt is None) == (not self.messages):
            raise ValueError("ScoreRequest: expected exactly one of `messages` or `prompt`")
        if self.messages:
            _check_messages(self.messages)
        if not self.candidates or not all(isinstance(c, str) and c for c in self.candidates):
            raise ValueError(f"candidates: expected non-empty strings, got {self.candidates!r}")

    def cache_key(self, model_id: str) -> str:
        """Content address of the scoring request."""
        body = {"messages": list(self.messages), "prompt": self.prompt,
                "candidates": list(self.candidates)}
        return _digest("score", model_id, body)


@dataclass(frozen=True)
class ScoreResponse:
    """Per candidate: the summed log-probability of its tokens and how many tokens it had."""

    logprobs: tuple[float, ...]
    num_tokens: tuple[int, ...]
    prompt_tokens: int = 0
    cached: bool = False

    def probabilities(self) -> tuple[float, ...]:
        """Softmax over the candidates' summed log-probabilities (a choice among them)."""
        import math

        top = max(self.logprobs)
        weights = [math.exp(lp - top) for lp in self.logprobs]
        total = sum(weights)
        return tuple(w / total for w in weights)


def _digest(kind: str, model_id: str, body: dict[str, Any]) -> str:
    payload = json.dumps([kind, model_id, body], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()
