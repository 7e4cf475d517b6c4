"""`SimulatedEngine`: a SIMULATED LLM, a latency model of one GPU serving vLLM, with random texts.

For throughput and scaling measurements of the cluster path where no GPU is at hand: each batch
sleeps as long as a vLLM GPU would take for it, and the texts are deterministic random words of
realistic token lengths so that every downstream stage runs. The texts and log-probs mean nothing:
quality benchmarks and reports refuse this engine (`teamsrl.llm.config.refuse_simulated`).

Latency. A batch runs in waves of up to `max_num_seqs` requests (vLLM would refill finished slots
at once; waves are the conservative simplification); one instance is one GPU, so concurrent
callers queue. A wave costs

    wave_overhead_s + prefill_s_per_token * prompt tokens
    + decode_step_s * longest completion + decode_s_per_token * generated tokens

(a decode step reads the weights once, whatever the batch, and each row adds a little), times
`time_scale`. Constants and the published figures they are fitted to: `SimulatedEngineConfig`.
Scoring is prefill only (the context plus every candidate, the context counted once, as with
prefix caching).

Texts. A request's text depends only on the request (messages, stop strings, sampling parameters,
and its seed unless temperature is 0): the same alone or in any batch, the same seed gives the
same text. Its natural length is drawn log-normally from the same seed and cut at `max_tokens`
(finish_reason "length"), so a larger `max_tokens` extends the same text. A token is a word or a
punctuation mark (`count_tokens`), so `count_tokens(text) == completion_tokens`.

    engine = SimulatedEngine("llama-3.1-8b", SimulatedEngineConfig(time_scale=0.01))
    # or in a config: llm.expert.engine=simulated llm.expert.simulated.time_scale=0.01
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import threading
import time
from collections.abc import Callable, Sequence

from teamsrl.llm.config import SimulatedEngineConfig
from teamsrl.llm.schema import ChatRequest, ChatResponse, ScoreRequest, ScoreResponse

_PIECE = re.compile(r"\w+|[^\w\s]")
TEMPLATE_TOKENS_PER_MESSAGE = 4  # what a chat template adds around each message, roughly
LENGTH_SIGMA = 0.6  # log-normal spread of natural completion lengths

_OPENERS = """Write Explain Describe Design Compare Suggest Create Identify Summarize Analyze
Propose Outline Evaluate Develop List Rewrite Classify Estimate Plan Discuss""".split()
_WORDS = """the a an of to in for on with by from about across between under within each every
which that this these those several many two three five data table system model process user
users team project city river market policy recipe program function method result results
report study story letter email article poem song map plan budget schedule method network
service customer product design energy climate water health school student teacher history
science language code algorithm example examples reason reasons step steps way ways impact
risk cost benefit feature features value values change changes growth pattern patterns
simple detailed specific short clear careful main new different common important possible
recent local global public private small large modern ancient digital written numerical
explain describe compare list include consider use give provide show keep make find
should must could would can will may and or but also while because after before when if
how why what where whose whom three four ten twenty hundred percent year years month week
least most more fewer first second final given each""".split()


def _rng(*parts) -> random.Random:
    """A generator seeded by the content of `parts` alone (never by process or batch)."""
    payload = json.dumps(parts, sort_keys=True, ensure_ascii=False).encode("utf-8")
    return random.Random(int.from_bytes(hashlib.sha256(payload).digest()[:8], "big"))


def _render(pieces: Sequence[str]) -> str:
    """Words joined by spaces, punctuation attached to the word before it."""
    out = ""
    for p in pieces:
        out += p if (not out or not p[0].isalnum()) else " " + p
    return out


class SimulatedEngine:
    """An `LLMEngine` that is a SIMULATED latency model of a vLLM GPU (texts are random words)."""

    def __init__(self, model: str = "vllm-gpu", config: SimulatedEngineConfig | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.config = config or SimulatedEngineConfig()
        self.model_id = f"SIMULATED:{model}"
        self._sleep = sleep
        self._gpu = threading.Lock()  # one instance = one GPU: waves never overlap
        self.waves = 0
        self.simulated_s = 0.0  # GPU seconds modelled (before time_scale)
        self.generated_tokens = 0

    @classmethod
    def from_spec(cls, spec) -> SimulatedEngine:
        """Build from a `ModelSpec` with `engine: simulated` (`model` is only a label)."""
        return cls(spec.model, spec.simulated)

    # ------------------------------------------------------------------ tokens
    def count_tokens(self, text: str) -> int:
        """Words and punctuation marks of `text` (about what a BPE tokenizer gives for prose)."""
        return len(_PIECE.findall(text))

    def _chat_tokens(self, messages) -> int:
        return sum(self.count_tokens(m["content"]) + TEMPLATE_TOKENS_PER_MESSAGE
                   for m in messages) + 2  # the assistant prefix

    # ----------------------------------------------------------------- latency
    def wave_seconds(self, prompt_tokens: Sequence[int], completion_tokens: Sequence[int]
                     ) -> float:
        """Modelled GPU seconds of one wave (at most `max_num_seqs` sequences), unscaled."""
        c = self.config
        return (c.wave_overhead_s + c.prefill_s_per_token * sum(prompt_tokens)
                + c.decode_step_s * max(completion_tokens, default=0)
                + c.decode_s_per_token * sum(completion_tokens))

    def throughput_ceiling(self, prompt_tokens: int, completion_tokens: int) -> float:
        """Generated tokens per modelled GPU second for full waves of requests of this shape
        (divide by `time_scale` for wall-clock seconds)."""
        n = self.config.max_num_seqs
        return n * completion_tokens / self.wave_seconds([prompt_tokens] * n,
                                                         [completion_tokens] * n)

    def _run_waves(self, shapes: list[tuple[int, int]]) -> None:
        """Sleep through the waves of a batch of (prompt tokens, completion tokens)."""
        n = self.config.max_num_seqs
        for lo in range(0, len(shapes), n):
            prompt, completion = zip(*shapes[lo : lo + n], strict=True)
            seconds = self.wave_seconds(prompt, completion)
            with self._gpu:
                if self.config.time_scale > 0:
                    self._sleep(seconds * self.config.time_scale)
                self.waves += 1
                self.simulated_s += seconds
                self.generated_tokens += sum(completion)

    # ---------------------------------------------------------------- generate
    def generate(self, requests: list[ChatRequest]) -> list[ChatResponse]:
        """Texts first (they never depend on the batch), then the batch's modelled latency."""
        out = [self._complete(r) for r in requests]
        self._run_waves([(r.prompt_tokens, r.completion_tokens) for r in out])
        return out

    def _complete(self, r: ChatRequest) -> ChatResponse:
        sampling = [r.temperature, r.top_p, r.seed] if r.temperature > 0 else ["greedy"]
        rng = _rng("chat", self.model_id, list(r.messages), list(r.stop), sampling)
        natural = max(1, round(self.config.median_completion_tokens
                               * math.exp(rng.gauss(0.0, LENGTH_SIGMA))))
        pieces = _words(rng, natural)
        finish = "stop"
        if natural > r.max_tokens:
            pieces, finish = pieces[: r.max_tokens], "length"
        text = _render(pieces)
        cuts = [text.find(s) for s in r.stop if s and s in text]
        if cuts:  # a stop string ends the text before it, as a server does
            text, finish = text[: min(cuts)].rstrip(), "stop"
        return ChatResponse(text=text, prompt_tokens=self._chat_tokens(r.messages),
                            completion_tokens=self.count_tokens(text), finish_reason=finish)

    # ------------------------------------------------------------------- score
    def score(self, requests: list[ScoreRequest]) -> list[ScoreResponse]:
        """Deterministic log-probs: each candidate token's is drawn from (context, the candidate
        up to that token), so candidates sharing a prefix share its log-probs."""
        out = [self._score(r) for r in requests]
        self._run_waves([(r.prompt_tokens + sum(r.num_tokens), 0) for r in out])
        return out

    def _score(self, r: ScoreRequest) -> ScoreResponse:
        context = r.prompt if r.prompt is not None else list(r.messages)
        n_ctx = (self.count_tokens(r.prompt) if r.prompt is not None
                 else self._chat_tokens(r.messages))
        logprobs, lengths = [], []
        for candidate in r.candidates:
            pieces = _PIECE.findall(candidate) or [candidate]
            total = 0.0
            for i in range(len(pieces)):
                draw = _rng("score", self.model_id, context, pieces[: i + 1]).expovariate(0.5)
                total -= min(20.0, 0.05 + draw)  # mean ~2 nats a token, never 0 or absurd
            logprobs.append(total)
            lengths.append(len(pieces))
        return ScoreResponse(tuple(logprobs), tuple(lengths), n_ctx)


def _words(rng: random.Random, n: int) -> list[str]:
    """`n` tokens of instruction-like sentences: an opener, 6-18 words, a full stop or '?'."""
    pieces: list[str] = []
    while len(pieces) < n:
        pieces.append(rng.choice(_OPENERS))
        for j in range(rng.randint(6, 18)):
            pieces.append(rng.choice(_WORDS))
            if j > 2 and rng.random() < 0.08:
                pieces.append(",")
        pieces.append("?" if rng.random() < 0.2 else ".")
    return pieces[:n]
