"""`OpenAIEngine`: the engine interface over an OpenAI-compatible server.

This is how teamsrl reaches vLLM on GPU clusters: `ray.serve.llm`'s `build_openai_app` serves
the expert/reviewer models with vLLM behind `/v1` (see `cluster/serve-vllm.yaml`), and this
engine sends each request there. Requests of a batch go out concurrently so vLLM's continuous
batching sees them together; each carries its own `seed`, which vLLM uses for that request's
sampling alone, so outputs do not depend on batch-mates (as with `TransformersEngine`).

`generate` uses `/v1/chat/completions`; `score` uses `/v1/completions` with `echo=True,
logprobs=0, max_tokens=1` and sums the prompt-token log-probabilities of the candidate. The
vLLM path (and `score` over HTTP in general) is UNTESTED on the CPU machines this was written
on; `generate` is tested against teamsrl's own OpenAI route.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

from teamsrl.llm.schema import ChatRequest, ChatResponse, ScoreRequest, ScoreResponse


class OpenAIEngine:
    """An `LLMEngine` whose model runs behind an OpenAI-compatible HTTP server."""

    def __init__(self, base_url: str, model_id: str, served_model: str | None = None,
                 api_key: str | None = None, tokenizer_path: str | None = None,
                 max_concurrency: int = 16, timeout_s: float = 300.0) -> None:
        import openai

        self.model_id = model_id
        self.served_model = served_model or model_id
        self.base_url = base_url
        self._client = openai.OpenAI(base_url=base_url, api_key=api_key or "unused",
                                     timeout=timeout_s, max_retries=2)
        self._pool = ThreadPoolExecutor(max_workers=max_concurrency)
        self._tokenizer_path = tokenizer_path
        self._tokenizer = None

    @classmethod
    def from_spec(cls, spec) -> OpenAIEngine:
        """Build from a `ModelSpec` (the API key comes from `spec.api_key_env` only)."""
        key = os.environ.get(spec.api_key_env) if spec.api_key_env else None
        if spec.api_key_env and key is None:
            raise ValueError(f"api_key_env = {spec.api_key_env!r}: that environment variable "
                             "is not set")
        return cls(spec.base_url, spec.model, spec.served_model, key, spec.tokenizer,
                   max_concurrency=spec.max_batch_size)

    def generate(self, requests: list[ChatRequest]) -> list[ChatResponse]:
        """All requests in flight at once; responses in request order."""
        return list(self._pool.map(self._chat, requests))

    def _chat(self, r: ChatRequest) -> ChatResponse:
        resp = self._client.chat.completions.create(
            model=self.served_model, messages=list(r.messages), temperature=r.temperature,
            top_p=r.top_p, max_tokens=r.max_tokens, seed=r.seed, stop=list(r.stop) or None)
        choice = resp.choices[0]
        usage = resp.usage
        return ChatResponse(
            text=(choice.message.content or "").strip(),
            prompt_tokens=usage.prompt_tokens if usage else 0,
            completion_tokens=usage.completion_tokens if usage else 0,
            finish_reason=choice.finish_reason or "stop")

    def score(self, requests: list[ScoreRequest]) -> list[ScoreResponse]:
        """Candidate log-probabilities from echoed prompt logprobs (untested here)."""
        return list(self._pool.map(self._score, requests))

    def _score(self, r: ScoreRequest) -> ScoreResponse:
        context = r.prompt if r.prompt is not None else self._chat_prefix(r.messages)
        n_ctx = self.count_tokens(context)
        logprobs, lengths = [], []
        for candidate in r.candidates:
            resp = self._client.completions.create(
                model=self.served_model, prompt=context + candidate, echo=True, logprobs=0,
                max_tokens=1, temperature=0.0)
            token_lps = resp.choices[0].logprobs.token_logprobs
            n_total = len([t for t in token_lps if t is not None]) + 1  # first has none
            n_cand = max(1, n_total - 1 - n_ctx)  # minus the one generated token
            cand = [t for t in token_lps[-1 - n_cand : -1] if t is not None]
            logprobs.append(float(sum(cand)))
            lengths.append(len(cand))
        return ScoreResponse(tuple(logprobs), tuple(lengths), n_ctx)

    def _chat_prefix(self, messages) -> str:
        return self._load_tokenizer().apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=True)

    def count_tokens(self, text: str) -> int:
        """Tokens of `text` with the local tokenizer (or ~4 characters a token without one)."""
        tok = self._load_tokenizer(required=False)
        if tok is None:
            return (len(text) + 3) // 4
        return len(tok(text, add_special_tokens=False)["input_ids"])

    def _load_tokenizer(self, required: bool = True):
        if self._tokenizer is None:
            from pathlib import Path

            from transformers import AutoTokenizer

            path = self._tokenizer_path or self.model_id
            if Path(path).exists() or path.startswith("embedded:"):
                from teamsrl.llm.embedded import resolve_model_path

                self._tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(path))
            elif required:
                raise ValueError(f"model {self.model_id!r}: scoring chat messages over HTTP "
                                 "needs a local tokenizer; set `tokenizer:` in the model spec")
        return self._tokenizer
