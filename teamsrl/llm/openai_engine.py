"""`OpenAIEngine`: the engine interface over an OpenAI-compatible server.

This is how teamsrl reaches vLLM on GPU clusters: `ray.serve.llm`'s `build_openai_app` serves
the expert/reviewer models with vLLM behind `/v1` (see `cluster/serve-vllm.yaml`), and this
engine sends each request there. Requests of a batch go out concurrently so vLLM's continuous
batching sees them together; each carries its own `seed`, which vLLM uses for that request's
sampling alone, so outputs do not depend on batch-mates (as with `TransformersEngine`).

`generate` uses `/v1/chat/completions`; `score` uses `/v1/completions` with `echo=True,
logprobs=0, max_tokens=1` on context + candidate and sums the log-probabilities of the echoed
tokens that start at or after the context's end (each token's `text_offset`). Servers differ in
the echo's shape: vLLM appends the one generated token, llama-cpp-python's server returns none;
tokens past the prompt are ignored either way. The echo must reconstruct the prompt (leading
tokens that are not prompt text, such as a BOS, aside) and a token must start exactly at the
candidate, else a `ServerScoreError` says what the server sent. `probe()` runs once at start-up
(`from_spec`, unless the spec's `probe_score` is off) and refuses a server whose echo disagrees
with its own generation at the same position (model-independent), whose log-probs for a fixed
likely/unlikely pair are implausible, or whose echo of a chat context is not faithful.
`generate` is tested against teamsrl's own OpenAI route, `score` on recorded responses of both
shapes and of llama-cpp-python 0.3.36's server, which the probe refuses
(tests/unit/test_openai_score.py; live: tests/integration/test_openai_score_llamacpp.py,
benchmarks/openai_score_parity.py); against vLLM it is UNTESTED on the CPU machines this was
written on.
"""

from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor

from teamsrl.llm.schema import ChatRequest, ChatResponse, ScoreRequest, ScoreResponse

# The start-up probe: any language model puts " Friday" far above " Banana" here (SmolLM2-135M,
# no BOS: -0.10 vs -18.08 nats). A server reporting each token's log-prob from the wrong
# position, or constant values, fails one of the bounds.
PROBE_CONTEXT = "Monday, Tuesday, Wednesday, Thursday,"
PROBE_LIKELY, PROBE_UNLIKELY = " Friday", " Banana"
PROBE_MIN_LIKELY = -4.0  # nats: the likely candidate is at least ~2% probable
PROBE_MIN_MARGIN = 4.0  # nats the likely candidate must beat the unlikely one by
# Model-independent: the echo's log-prob of a prompt token must equal the log-prob the server
# gives that token when it generates it at the same position (one forward pass in both; the
# tolerance covers bf16 kernels that differ between prompt and sampling paths). A server that
# reads each prompt token's log-prob from the distribution after it, as llama-cpp-python's
# does for a prompt without BOS, is off by nats.
PROBE_CONSISTENCY_TOL = 0.2
# Scored as chat messages when a local tokenizer renders the template: the echo must give back
# the template's special tokens (llama-cpp-python's server leaves them out).
PROBE_MESSAGES = ({"role": "user", "content": "What day comes after Thursday?"},)
PROBE_REPLY = "Friday"


class ServerScoreError(RuntimeError):
    """An OpenAI-compatible server's echoed log-probs cannot be trusted for scoring."""


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
        engine = cls(spec.base_url, spec.model, spec.served_model, key, spec.tokenizer,
                     max_concurrency=spec.max_batch_size)
        if spec.probe_score:
            engine.probe()
        return engine

    def probe(self) -> None:
        """Score fixed contexts at start-up; raise `ServerScoreError` naming the server and every
        problem found: the echo disagrees with generation at the same position, the probe's
        likely/unlikely log-probs are implausible, or a chat context's echo is not faithful."""
        where = f"{self.base_url} (model {self.served_model!r})"
        hint = ("; scoring needs /v1/completions with echo=True and correct prompt log-probs. "
                "If this role never scores (a chat-only expert), set probe_score: false in its "
                "model spec")
        problems = []
        try:
            problems += self._probe_plain()
            if self._load_tokenizer(required=False) is not None:
                self.score([ScoreRequest(messages=PROBE_MESSAGES, candidates=(PROBE_REPLY,))])
        except Exception as e:
            problems.append(f"score probe failed: {type(e).__name__}: {e}")
        if problems:
            raise ServerScoreError(f"{where}: {'; and '.join(problems)}{hint}")

    def _probe_plain(self) -> list[str]:
        """Problems with the plain-prompt probe: consistency with generation, then plausibility."""
        gen = self._client.completions.create(
            model=self.served_model, prompt=PROBE_CONTEXT, max_tokens=1, temperature=0.0,
            logprobs=1)
        glp = gen.choices[0].logprobs
        if glp is None or not glp.tokens or glp.token_logprobs[0] is None:
            return [f"/v1/completions with logprobs=1 returned no log-prob for the generated "
                    f"token after {PROBE_CONTEXT!r}"]
        token, generated = glp.tokens[0], float(glp.token_logprobs[0])
        candidates = (PROBE_LIKELY, PROBE_UNLIKELY) + (
            (token,) if token and token not in (PROBE_LIKELY, PROBE_UNLIKELY) else ())
        (resp,) = self.score([ScoreRequest(prompt=PROBE_CONTEXT, candidates=candidates)])
        problems = []
        echoed = dict(zip(candidates, zip(resp.logprobs, resp.num_tokens, strict=True),
                          strict=True)).get(token)
        if echoed is not None and echoed[1] == 1 and abs(echoed[0] - generated) > \
                PROBE_CONSISTENCY_TOL:
            problems.append(
                f"echo inconsistent with generation: after {PROBE_CONTEXT!r} the echo gives "
                f"{token!r} {echoed[0]:.3f} nats but generating it at the same position gives "
                f"{generated:.3f} (expected within {PROBE_CONSISTENCY_TOL:g}): the echo reports "
                "prompt log-probs from the wrong position (llama-cpp-python's server reads "
                "each prompt token's log-prob from the distribution after it when the prompt "
                "does not start with BOS)")
        likely, unlikely = resp.logprobs[:2]
        if not (0.0 >= likely >= PROBE_MIN_LIKELY and unlikely <= 0.0
                and likely - unlikely >= PROBE_MIN_MARGIN):
            problems.append(
                f"implausible log-probs: after {PROBE_CONTEXT!r}, {PROBE_LIKELY!r} got "
                f"{likely:.3f} and {PROBE_UNLIKELY!r} {unlikely:.3f} nats; expected both <= 0, "
                f"the first >= {PROBE_MIN_LIKELY:g} and >= {PROBE_MIN_MARGIN:g} above the "
                "second (a server that reports each prompt token's log-prob from the wrong "
                "position, as llama-cpp-python's server does, gives this)")
        return problems

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
        """Candidate log-probabilities from the echoed prompt's log-probs, aligned by offset."""
        return list(self._pool.map(self._score, requests))

    def _score(self, r: ScoreRequest) -> ScoreResponse:
        context = r.prompt if r.prompt is not None else self._chat_prefix(r.messages)
        logprobs, lengths, n_ctx = [], [], 0
        for candidate in r.candidates:
            resp = self._client.completions.create(
                model=self.served_model, prompt=context + candidate, echo=True, logprobs=0,
                max_tokens=1, temperature=0.0)
            lp = resp.choices[0].logprobs
            if lp is None or not lp.tokens:
                raise ServerScoreError(f"{self.base_url}: /v1/completions with echo=True, "
                                       "logprobs=0 returned no log-probs")
            cand, n_ctx = candidate_logprobs(lp.tokens, lp.token_logprobs, lp.text_offset,
                                             context, candidate)
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


def candidate_logprobs(tokens: list[str], token_logprobs: list[float | None],
                       text_offset: list[int], context: str, candidate: str
                       ) -> tuple[list[float], int]:
    """The log-probs of the candidate's tokens in an echo of `context + candidate`, and how many
    echoed tokens the context took. Raises `ServerScoreError` when the echo does not
    reconstruct the prompt or no token starts where the candidate does."""
    prompt = context + candidate
    if not len(tokens) == len(token_logprobs) == len(text_offset):
        raise ServerScoreError(f"echo: {len(tokens)} tokens, {len(token_logprobs)} log-probs, "
                               f"{len(text_offset)} offsets; expected as many of each")
    # Leading tokens that are not prompt text (a BOS such as "<s>") shift the offsets.
    lead = next((i for i in range(min(3, len(tokens)))
                 if "".join(tokens[i:]).startswith(prompt)), None)
    if lead is None:
        echoed = "".join(tokens)
        at = next((i for i, (a, b) in enumerate(zip(echoed, prompt, strict=False)) if a != b),
                  min(len(echoed), len(prompt)))
        lo, hi = max(0, at - 20), at + 20
        why = ""
        if "".join(echoed.split()).endswith("".join(prompt.split())):
            why = ("; they differ only in whitespace: the server decodes each token alone and "
                   "drops its leading space (SentencePiece tokenizers, e.g. Llama-1/2 on vLLM), "
                   "so its text_offset is wrong too")
        if echoed.startswith(re.sub(r"<\|[^|<>]*\|>", "", prompt)):
            why = ("; the echo leaves out the prompt's special tokens (such as '<|im_start|>'), "
                   "as llama-cpp-python's server does, so its text_offset misses them too")
        raise ServerScoreError(f"echo does not reconstruct the prompt: they part at character "
                               f"{at}: echoed {echoed[lo:hi]!r} vs prompt {prompt[lo:hi]!r}{why}")
    base = text_offset[lead]
    echo = [(o - base, t, lp) for o, t, lp in zip(text_offset, tokens, token_logprobs,
                                                   strict=True)][lead:]
    echo = [e for e in echo if e[0] < len(prompt)]  # later ones were generated
    pos = 0
    for o, t, _ in echo:  # an offset is the length of the echoed text before the token
        if o != pos:
            raise ServerScoreError(f"echo: token {t!r} at text_offset {o + base}; expected "
                                   f"{pos + base}, the length of the echoed text before it")
        pos += len(t)
    if pos != len(prompt) or not any(o == len(context) for o, _, _ in echo):
        raise ServerScoreError(f"echo: no token boundary where the candidate {candidate!r} "
                               f"starts (character {len(context)}) or ends ({len(prompt)}); the "
                               "server merged it with its neighbours")
    cand = [lp for o, _, lp in echo if o >= len(context)]
    if any(lp is None for lp in cand):
        raise ServerScoreError(f"echo: candidate {candidate!r} has a token without a log-prob "
                               "(an empty context cannot be scored)")
    return [float(lp) for lp in cand], lead + len(echo) - len(cand)
