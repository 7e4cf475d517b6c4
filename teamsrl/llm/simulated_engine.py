"""`SimulatedEngine`: a SIMULATED LLM, a latency model of one GPU serving vLLM, with random texts.

For throughput and scaling measurements of the cluster path where no GPU is at hand: each call
sleeps as long as a vLLM GPU would take to answer it, and the texts are deterministic random words
of realistic token lengths so that every downstream stage runs. The texts and log-probs mean
nothing: quality benchmarks and reports refuse this engine (`teamsrl.llm.config.refuse_simulated`).

Latency: continuous batching (`GPUTimeline`). One instance is one GPU; every call, from any
thread, joins the one running batch, as requests join vLLM's: at each step the scheduler admits
waiting sequences (first come, first served) while fewer than `max_num_seqs` run, and the step
costs

    max(decode_step_s + decode_s_per_token * (sequences decoding),
        prefill_s_per_token * (prompt tokens admitted)) + wave_overhead_s (if any were admitted)

(a decode step reads the weights once, whatever the batch, and each row adds a little; the
prompts admitted are prefilled in the same step, as vLLM's chunked prefill does, so their compute
and the decode's weight reads overlap: the step lasts the longer of the two). A chat
sequence decodes one token a step after its admission step, and leaves when its completion is
done; a score sequence is prefill only (the context plus every candidate, the context counted
once, as with prefix caching) and leaves after its admission step. A call returns when all of its
sequences are done. So a batch alone on the GPU costs

    wave_overhead_s + prefill_s_per_token * prompt tokens
    + decode_step_s * longest completion + decode_s_per_token * generated tokens

(`wave_seconds`), and a call that arrives while others run is answered as soon as its own
sequences are done, not after theirs. Everything is times `time_scale`. Constants and the published
figures they are fitted to: `SimulatedEngineConfig`.

Texts. A request's text depends only on the request (messages, stop strings, sampling parameters,
and its seed unless temperature is 0): the same alone or in any batch, the same seed gives the
same text. Its natural length is drawn log-normally from the same seed and cut at `max_tokens`
(finish_reason "length"), so a larger `max_tokens` extends the same text. A token is a word or a
punctuation mark (`count_tokens`), so `count_tokens(text) == completion_tokens`.

    engine = SimulatedEngine("llama-3.1-8b", SimulatedEngineConfig(time_scale=0.01))
    # or in a config: llm.expert.engine=simulated llm.expert.simulated.time_scale=0.01
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import random
import re
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

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


class _Seq:
    """One request on the modelled GPU."""

    __slots__ = ("prompt", "completion", "remaining", "done_at")

    def __init__(self, prompt: int, completion: int) -> None:
        self.prompt, self.completion = prompt, completion
        self.remaining = completion  # decode steps left once admitted
        self.done_at: float | None = None  # modelled time its last step ended


@dataclass
class _Segment:
    """`steps` identical steps of `step_s` each from `start`; `admitted` joined at its first."""

    start: float
    steps: int
    step_s: float
    admitted: list[_Seq]

    @property
    def end(self) -> float:
        return self.start + self.steps * self.step_s


class GPUTimeline:
    """Continuous batching on one modelled GPU, in modelled seconds (before `time_scale`).

    Pure bookkeeping, no clock and no sleeping: `add` puts sequences on the GPU at a time,
    `advance` runs the schedule up to a time, `finish_time` says when sequences would be done
    if nothing else arrived (arrivals only delay others). Steps between two events (an admission,
    a sequence finishing) cost the same, so they are taken as one segment."""

    def __init__(self, config: SimulatedEngineConfig) -> None:
        self.config = config
        self.active: list[_Seq] = []  # admitted chat sequences still decoding
        self.waiting: deque[_Seq] = deque()
        self.segment: _Segment | None = None  # None: the GPU is idle
        self.busy_s = 0.0  # modelled seconds the GPU has worked (segments ended)

    def add(self, now: float, shapes: Sequence[tuple[int, int]]) -> list[_Seq]:
        """Sequences of (prompt tokens, completion tokens) arriving at `now`: admitted at the
        next step boundary (at once on an idle GPU)."""
        self.advance(now)
        seqs = [_Seq(p, c) for p, c in shapes]
        seg = self.segment
        if seg is not None and seg.start == now:  # it starts now: the arrivals join it
            self.waiting.extendleft(reversed(seg.admitted))
            self.segment = seg = None
        self.waiting.extend(seqs)
        if seg is None:
            self._start(now)
        elif seg.steps > 1 and seg.step_s > 0:  # cut it at the first step boundary after `now`
            done = max(1, math.ceil((now - seg.start) / seg.step_s - 1e-12))
            seg.steps = min(seg.steps, done)
        return seqs

    def advance(self, now: float) -> None:
        """Run every segment that ends by `now`."""
        while self.segment is not None and self.segment.end <= now:
            end = self._finish()
            self._start(end)

    def finish_time(self, seqs: Sequence[_Seq]) -> float:
        """When the last of `seqs` is done if nothing else arrives (already done: when it was)."""
        if all(s.done_at is not None for s in seqs):
            return max(s.done_at for s in seqs)
        probe = copy.deepcopy((self, list(seqs)), {id(self.config): self.config})
        probe[0].advance(math.inf)
        return max(s.done_at for s in probe[1])

    def _start(self, at: float) -> None:
        c = self.config
        room = c.max_num_seqs - len(self.active)
        admitted = [self.waiting.popleft() for _ in range(min(room, len(self.waiting)))]
        decode = c.decode_step_s + c.decode_s_per_token * len(self.active) if self.active else 0.0
        if admitted:
            prefill = c.prefill_s_per_token * sum(s.prompt for s in admitted)
            self.segment = _Segment(at, 1, max(decode, prefill) + c.wave_overhead_s, admitted)
        elif self.active:  # nothing to admit until a sequence leaves
            steps = min(s.remaining for s in self.active)
            self.segment = _Segment(at, steps, decode, [])
        else:
            self.segment = None

    def _finish(self) -> float:
        seg = self.segment
        end = seg.end
        self.busy_s += seg.steps * seg.step_s
        for s in self.active:
            s.remaining -= seg.steps
            if s.remaining <= 0:
                s.done_at = end
        self.active = [s for s in self.active if s.remaining > 0]
        for s in seg.admitted:  # prefilled in this segment's one step
            if s.completion > 0:
                self.active.append(s)
            else:
                s.done_at = end
        self.segment = None
        return end


class SimulatedEngine:
    """An `LLMEngine` that is a SIMULATED latency model of a vLLM GPU (texts are random words)."""

    def __init__(self, model: str = "vllm-gpu", config: SimulatedEngineConfig | None = None,
                 sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config or SimulatedEngineConfig()
        self.model_id = f"SIMULATED:{model}"
        self._sleep, self._clock = sleep, clock
        self._lock = threading.Lock()  # one instance = one GPU: one timeline for all callers
        self._gpu = GPUTimeline(self.config)
        self._origin = clock()  # wall time of modelled time 0
        self.generated_tokens = 0

    @property
    def simulated_s(self) -> float:
        """Modelled GPU seconds worked so far (before `time_scale`)."""
        with self._lock:
            return self._gpu.busy_s

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
        """Modelled GPU seconds of a batch of at most `max_num_seqs` sequences alone on the
        GPU, unscaled."""
        c = self.config
        return (c.wave_overhead_s + c.prefill_s_per_token * sum(prompt_tokens)
                + c.decode_step_s * max(completion_tokens, default=0)
                + c.decode_s_per_token * sum(completion_tokens))

    def throughput_ceiling(self, prompt_tokens: int, completion_tokens: int) -> float:
        """Generated tokens per modelled GPU second for full batches of requests of this shape
        (divide by `time_scale` for wall-clock seconds)."""
        n = self.config.max_num_seqs
        return n * completion_tokens / self.wave_seconds([prompt_tokens] * n,
                                                         [completion_tokens] * n)

    def _run(self, shapes: list[tuple[int, int]]) -> None:
        """Put a call's (prompt tokens, completion tokens) on the GPU and wait until all are
        done. Waiting sleeps until the time they would be done if nothing else arrived, then
        looks again (an arrival in between can only delay them)."""
        scale = self.config.time_scale
        with self._lock:
            self.generated_tokens += sum(c for _, c in shapes)
            if scale <= 0:  # no time passes: the call alone on the GPU, counted at its cost
                alone = GPUTimeline(self.config)
                alone.add(0.0, shapes)
                alone.advance(math.inf)
                self._gpu.busy_s += alone.busy_s
                return
            seqs = self._gpu.add((self._clock() - self._origin) / scale, shapes)
        until = -math.inf
        while True:
            with self._lock:  # having slept until `until`, it is at least that late
                self._gpu.advance(max(until, (self._clock() - self._origin) / scale))
                if all(s.done_at is not None for s in seqs):
                    return
                until = self._gpu.finish_time(seqs)
            wait = self._origin + until * scale - self._clock()
            if wait > 0:
                self._sleep(wait)

    # ---------------------------------------------------------------- generate
    def generate(self, requests: list[ChatRequest]) -> list[ChatResponse]:
        """Texts first (they never depend on the batch), then the batch's modelled latency."""
        out = [self._complete(r) for r in requests]
        self._run([(r.prompt_tokens, r.completion_tokens) for r in out])
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
        self._run([(r.prompt_tokens + sum(r.num_tokens), 0) for r in out])
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
