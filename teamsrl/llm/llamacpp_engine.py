"""`LlamaCppEngine`: the same SmolLM2 GGUF run by llama.cpp (`llama-cpp-python`), an optional
extra (`pip install 'teamsrl[llamacpp]'`; it builds from source). Selected with
`llm.<role>.engine: llamacpp`.

It keeps the transformers engine's contract, not only its protocol:
- prompts are built by the same HF tokenizer and chat template, and passed as token ids, so
  both engines see the same tokens, count the same tokens and truncate the same way;
- sampling follows `transformers_engine._RowGumbel` (temperature, then top-p, then Gumbel noise
  drawn from a generator keyed by (request seed, generated-token index)) on llama.cpp's logits:
  the same law and the same noise, so a seed gives the same text on both engines wherever their
  logits agree on the winner (Q4_1 kernels vs de-quantised float32 weights differ slightly).
  `sample_token` finds the nucleus by a partial sort: ~0.8 ms a token vs ~4.5 ms for
  `_RowGumbel`'s full sort of the vocabulary, against ~10 ms a decode step (2 cores); a test
  checks it picks `_RowGumbel`'s token;
- requests run one at a time, each from an empty KV cache (`reset`), so a request's text never
  depends on what ran before it or beside it. llama.cpp's own prompt-prefix reuse is not used.
"""

from __future__ import annotations

import os
import weakref
from pathlib import Path

import numpy as np

from teamsrl.llm.embedded import SMOLLM2_ID, smollm2_gguf, smollm2_hf_dir
from teamsrl.llm.schema import ChatRequest, ChatResponse, ScoreRequest, ScoreResponse

INSTALL_HINT = ("engine 'llamacpp' needs llama-cpp-python, an optional extra: pip install "
                "'teamsrl[llamacpp]' (it builds llama.cpp from source, ~14 min on 2 cores, then "
                "pip caches the wheel)")


def cpu_share() -> int:
    """Threads for this process: torch's setting (which follows the process's CPU share)."""
    try:
        import torch

        return max(1, torch.get_num_threads())
    except ImportError:
        return max(1, len(os.sched_getaffinity(0)))


def _gguf_and_tokenizer_dir(model_id: str) -> tuple[Path, Path, str | None]:
    """(GGUF file, folder of its HF tokenizer, gguf_file argument for that folder)."""
    if model_id == SMOLLM2_ID:
        return smollm2_gguf(), smollm2_hf_dir(), None
    path = Path(model_id).expanduser()
    if path.suffix != ".gguf" or not path.is_file():
        raise ValueError(f"engine 'llamacpp', model {model_id!r}: expected {SMOLLM2_ID!r} or a "
                         "local .gguf file")
    return path, path.parent, path.name


def sample_token(logits: np.ndarray, req: ChatRequest, step: int) -> int:
    """The token `_RowGumbel` picks for `req` at generated-token index `step` (argmax if greedy).

    Temperature, then top-p (a token is dropped once the probability mass before it reaches
    top_p; the first is always kept), then Gumbel-max with noise from
    torch.Generator(seed = hash((req.seed, step))), one uniform per vocabulary entry.
    """
    import torch

    if req.temperature == 0.0:
        return int(np.argmax(logits))
    s = logits.astype(np.float32) / np.float32(req.temperature)
    z = np.exp(s - s.max(), dtype=np.float32)
    probs = z / z.sum(dtype=np.float32)
    k = min(64, s.size)
    while True:  # widen the partial sort until the nucleus ends inside it
        top = np.argpartition(-s, k - 1)[:k] if k < s.size else np.arange(s.size)
        top = top[np.argsort(-s[top], kind="stable")]
        p = probs[top]
        keep = (np.cumsum(p, dtype=np.float32) - p) < np.float32(req.top_p)
        if not keep[-1] or k == s.size:
            break
        k = min(k * 8, s.size)
    kept = top[keep]
    seed = hash((req.seed, step)) & 0x7FFF_FFFF_FFFF_FFFF
    u = torch.rand(s.size, generator=torch.Generator().manual_seed(seed)).numpy()[kept]
    noise = -np.log(-np.log(np.clip(u, 1e-10, 1.0 - 1e-7)))
    return int(kept[np.argmax(s[kept] + noise)])


class LlamaCppEngine:
    """An `LLMEngine` over a GGUF file run by llama.cpp on the CPU, one request at a time."""

    def __init__(self, model_id: str, n_threads: int | None = None) -> None:
        try:
            from llama_cpp import Llama
        except ImportError as e:
            raise ImportError(f"{INSTALL_HINT} ({e})") from e
        from transformers import AutoConfig, AutoTokenizer

        gguf, tok_dir, gguf_file = _gguf_and_tokenizer_dir(model_id)
        # The cache key is built from model_id: a different id keeps this engine's texts apart
        # from the transformers engine's for the same model (their logits differ slightly).
        self.model_id = f"llamacpp:{model_id}"
        kwargs = {"gguf_file": gguf_file} if gguf_file else {}
        self.tokenizer = AutoTokenizer.from_pretrained(tok_dir, **kwargs)
        config = AutoConfig.from_pretrained(tok_dir, **kwargs)
        self.context_length = int(getattr(config, "max_position_embeddings", 2048))
        self.n_threads = n_threads or cpu_share()
        # logits_all: score() needs every position's logits; generation reads the last row.
        self.llm = Llama(model_path=str(gguf), n_ctx=self.context_length, n_batch=512,
                         n_threads=self.n_threads, n_threads_batch=self.n_threads,
                         logits_all=True, verbose=False)
        # freed before interpreter teardown (llama-cpp-python's __del__ fails during it)
        weakref.finalize(self, self.llm.close)
        if self.llm.n_vocab() != config.vocab_size:  # the Gumbel noise is drawn per vocab entry
            raise ValueError(f"model {model_id!r}: llama.cpp vocabulary {self.llm.n_vocab()}, "
                             f"expected the HF config's {config.vocab_size}")

    # ------------------------------------------------------------------ tokens
    def count_tokens(self, text: str) -> int:
        """Number of tokens of `text` (no special tokens added), as the transformers engine."""
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _chat_ids(self, messages, budget: int) -> tuple[list[int], bool]:
        """The transformers engine's prompt ids, token for token (`chat_ids`)."""
        from teamsrl.llm.transformers_engine import chat_ids

        return chat_ids(self.tokenizer, messages, budget)

    def _eval_from_empty(self, ids: list[int]) -> None:
        """Evaluate `ids` from an empty KV cache, so nothing from an earlier call is reused."""
        self.llm.reset()
        self.llm.eval(ids)

    # ---------------------------------------------------------------- generate
    def generate(self, requests: list[ChatRequest]) -> list[ChatResponse]:
        """Complete each request on its own (batch-invariant by construction)."""
        return [self._generate_one(r) for r in requests]

    def _generate_one(self, req: ChatRequest) -> ChatResponse:
        ids, truncated = self._chat_ids(req.messages, self.context_length - req.max_tokens)
        eos = self.tokenizer.eos_token_id
        self._eval_from_empty(ids)
        new: list[int] = []
        finish = "length"
        while len(new) < req.max_tokens:
            token = sample_token(self.llm.scores[self.llm.n_tokens - 1], req, step=len(new))
            new.append(token)
            if token == eos:
                finish = "stop"
                break
            self.llm.eval([token])
        n_generated = len(new)  # the end-of-sequence token counts as generated
        if finish == "stop":
            new = new[:-1]
        text = self.tokenizer.decode(new, skip_special_tokens=True)
        for s in req.stop:
            if s in text:
                text, finish = text[: text.index(s)], "stop"
        return ChatResponse(text=text.strip(), prompt_tokens=len(ids),
                            completion_tokens=n_generated, finish_reason=finish,
                            truncated_prompt=truncated)

    # ------------------------------------------------------------------- score
    def score(self, requests: list[ScoreRequest]) -> list[ScoreResponse]:
        """Summed log-probability of each candidate after its request's context."""
        return [self._score_one(r) for r in requests]

    def _score_one(self, req: ScoreRequest) -> ScoreResponse:
        import torch

        from teamsrl.llm.transformers_engine import score_ids

        ctx, cand_ids = score_ids(self.tokenizer, req, self.context_length)
        sums = []
        for cand in cand_ids:
            self._eval_from_empty(ctx + cand)
            # logits at position p predict token p + 1: the candidate's tokens follow ctx
            rows = torch.from_numpy(self.llm.scores[len(ctx) - 1 : len(ctx) + len(cand) - 1])
            logp = torch.log_softmax(rows.float(), dim=-1)
            sums.append(float(logp.gather(-1, torch.tensor(cand)[:, None]).sum()))
        return ScoreResponse(logprobs=tuple(sums), num_tokens=tuple(len(c) for c in cand_ids),
                             prompt_tokens=len(ctx))

    def close(self) -> None:
        """Free the llama.cpp model and context."""
        self.llm.close()
