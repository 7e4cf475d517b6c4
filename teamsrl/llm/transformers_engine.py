"""`TransformersEngine`: batched generation and scoring with Hugging Face transformers (CPU/GPU).

Batch invariance: every row samples with its own noise, so a request gives the same text alone
and inside any batch, up to float rounding: the batch's padding changes the matrix shapes, which
moves logits (and scores) in their last bits, and where two tokens nearly tie that can flip one
(issue 19's job: 1 rewrite of 90 differed between batches of 8 and 16 seeds). A cache hit
returns exactly what was computed. Sampling is Gumbel-max: the row's
logits (temperature- and top-p-processed) plus Gumbel noise drawn from a generator keyed by
(request seed, index of the generated token), then greedy argmax. Keying by the padded length
instead would make the text depend on the batch.
"""

from __future__ import annotations

import logging
from pathlib import Path

from teamsrl.llm.embedded import resolve_model_path
from teamsrl.llm.schema import ChatRequest, ChatResponse, ScoreRequest, ScoreResponse

log = logging.getLogger(__name__)


def chat_ids(tokenizer, messages, budget: int) -> tuple[list[int], bool]:
    """Token ids of chat messages with the assistant prefix, left-truncated to `budget`, and
    whether they were (the prompt of every engine that renders the HF chat template itself)."""
    text = tokenizer.apply_chat_template(list(messages), tokenize=False,
                                         add_generation_prompt=True)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    if len(ids) > budget:
        return ids[-budget:], True
    return ids, False


def score_ids(tokenizer, req: ScoreRequest, context_length: int
              ) -> tuple[list[int], list[list[int]]]:
    """A score request's context ids (chat template, or the plain prompt after BOS), left-cut so
    the longest candidate still fits `context_length`, and each candidate's ids."""
    cand_ids = [tokenizer(c, add_special_tokens=False)["input_ids"] for c in req.candidates]
    budget = context_length - max(len(c) for c in cand_ids)
    if req.messages:
        return chat_ids(tokenizer, req.messages, budget)[0], cand_ids
    ctx = tokenizer(req.prompt, add_special_tokens=False)["input_ids"][-budget:]
    if tokenizer.bos_token_id is not None:
        ctx = [tokenizer.bos_token_id, *ctx][-budget:]
    return ctx, cand_ids


class TransformersEngine:
    """An `LLMEngine` over a local HF model folder or GGUF file."""

    def __init__(
        self,
        model_id: str,
        device: str = "auto",
        dtype: str = "auto",
        max_batch_size: int = 16,
        adaptive_threads: bool = True,
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from teamsrl.cpu import ThreadGovernor

        if max_batch_size < 1:
            raise ValueError(f"max_batch_size: expected >= 1, got {max_batch_size}")
        self.model_id = model_id
        self.max_batch_size = max_batch_size
        path = resolve_model_path(model_id)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        if dtype == "auto":
            dtype = "bfloat16" if self.device.type == "cuda" else "float32"
        kwargs: dict = {"dtype": getattr(torch, dtype)}
        if Path(path).suffix == ".gguf":
            path, kwargs["gguf_file"] = Path(path).parent, Path(path).name
        tok_kwargs = {"gguf_file": kwargs["gguf_file"]} if "gguf_file" in kwargs else {}
        self.tokenizer = AutoTokenizer.from_pretrained(path, **tok_kwargs)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(path, **kwargs).to(self.device).eval()
        self.context_length = int(getattr(self.model.config, "max_position_embeddings", 2048))
        # on CPU, torch's threads follow this process's share of the cores (teamsrl.cpu)
        self.governor = ThreadGovernor() if adaptive_threads and self.device.type == "cpu" \
            else None

    # ------------------------------------------------------------------ tokens
    def count_tokens(self, text: str) -> int:
        """Number of tokens of `text` (no special tokens added)."""
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _chat_ids(self, messages, budget: int) -> tuple[list[int], bool]:
        return chat_ids(self.tokenizer, messages, budget)

    # ---------------------------------------------------------------- generate
    def generate(self, requests: list[ChatRequest]) -> list[ChatResponse]:
        """Complete each request; rows are batched `max_batch_size` at a time."""
        out: list[ChatResponse] = []
        for i in range(0, len(requests), self.max_batch_size):
            out.extend(self._generate_batch(requests[i : i + self.max_batch_size]))
        return out

    def _generate_batch(self, requests: list[ChatRequest]) -> list[ChatResponse]:
        import torch
        from transformers import GenerationConfig, LogitsProcessorList, StoppingCriteriaList

        if self.governor:
            self.governor.adjust()
        max_new = max(r.max_tokens for r in requests)
        encoded = [self._chat_ids(r.messages, self.context_length - r.max_tokens) for r in requests]
        batch = self.tokenizer.pad(
            {"input_ids": [ids for ids, _ in encoded]}, padding=True, return_tensors="pt"
        ).to(self.device)
        prompt_len = batch["input_ids"].shape[1]
        eos = self.tokenizer.eos_token_id
        config = GenerationConfig(
            max_new_tokens=max_new,
            do_sample=False,
            eos_token_id=eos,
            pad_token_id=self.tokenizer.pad_token_id,
        )
        with torch.inference_mode():
            seqs = self.model.generate(
                **batch,
                generation_config=config,
                logits_processor=LogitsProcessorList([_RowGumbel(requests, prompt_len)]),
                stopping_criteria=StoppingCriteriaList([_RowBudget(requests, prompt_len,
                                                                   self.governor)]),
            )
        responses = []
        for row, req in enumerate(requests):
            new = seqs[row, prompt_len:].tolist()[: req.max_tokens]
            n_generated, finish = len(new), "length"
            if eos in new:
                new, finish = new[: new.index(eos)], "stop"
                n_generated = len(new) + 1  # the end-of-sequence token was generated too
            text = self.tokenizer.decode(new, skip_special_tokens=True)
            for s in req.stop:
                if s in text:
                    text, finish = text[: text.index(s)], "stop"
            responses.append(
                ChatResponse(
                    text=text.strip(),
                    prompt_tokens=len(encoded[row][0]),
                    completion_tokens=n_generated,
                    finish_reason=finish,
                    truncated_prompt=encoded[row][1],
                )
            )
        return responses

    # ------------------------------------------------------------------- score
    def score(self, requests: list[ScoreRequest]) -> list[ScoreResponse]:
        """Summed log-probability of each candidate after its request's context; contexts are
        batched `max_batch_size` at a time."""
        out: list[ScoreResponse] = []
        for i in range(0, len(requests), self.max_batch_size):
            out.extend(self._score_batch(requests[i : i + self.max_batch_size]))
        return out

    def _score_batch(self, requests: list[ScoreRequest]) -> list[ScoreResponse]:
        """One pass over the contexts (each once, whatever its number of candidates), keeping
        their key-value cache and only the last positions' logits; then one pass over the
        candidates' tokens after the first, each row on its context's cache. Before, each
        (context, candidate) pair was a full row and every position's logits were computed
        (benchmarks/score_speed.py keeps that method and compares). Positions count from each
        row's first real token, so a row's positions do not depend on the batch's padding."""
        import torch

        if self.governor:
            self.governor.adjust()
        encoded = [score_ids(self.tokenizer, r, self.context_length) for r in requests]
        ctx = self.tokenizer.pad({"input_ids": [c for c, _ in encoded]}, padding=True,
                                 return_tensors="pt").to(self.device)
        ids, mask = _min_token_rows(ctx["input_ids"], ctx["attention_mask"],
                                    self.tokenizer.pad_token_id, left=True)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        rows = [(i, cand) for i, (_, cands) in enumerate(encoded) for cand in cands]
        with torch.inference_mode():
            first = self.model(input_ids=ids, attention_mask=mask,
                               position_ids=positions, use_cache=True,
                               logits_to_keep=-(-MIN_TOKEN_ROWS // len(requests)))
            first_lp = torch.log_softmax(first.logits[:, -1].float(), dim=-1)
            sums = [float(first_lp[i, cand[0]]) for i, cand in rows]
            longer = [k for k, (_, cand) in enumerate(rows) if len(cand) > 1]
            if longer:
                self._score_continuations(first, mask, positions, rows, longer, sums)
        out, k = [], 0
        for i, req in enumerate(requests):
            m = len(req.candidates)
            out.append(ScoreResponse(logprobs=tuple(sums[k : k + m]),
                                     num_tokens=tuple(len(c) for _, c in rows[k : k + m]),
                                     prompt_tokens=len(encoded[i][0])))
            k += m
        return out

    def _score_continuations(self, first, mask, positions, rows, longer, sums) -> None:
        """Add to `sums[k]` the log-probabilities of candidate k's tokens after its first, for
        each k in `longer`: the candidates (all but their last token, right-padded) run on a
        copy of their contexts' cache."""
        import torch

        index = torch.tensor([rows[k][0] for k in longer], device=self.device)
        cache = first.cache if hasattr(first, "cache") else first.past_key_values
        cache.reorder_cache(index)  # row j of the cache is now candidate longer[j]'s context
        width = max(len(rows[k][1]) for k in longer) - 1
        ids = torch.full((len(longer), width), self.tokenizer.pad_token_id, device=self.device)
        cand_mask = torch.zeros((len(longer), width), dtype=mask.dtype, device=self.device)
        for j, k in enumerate(longer):
            feed = rows[k][1][:-1]
            ids[j, : len(feed)] = torch.tensor(feed)
            cand_mask[j, : len(feed)] = 1
        ids, cand_mask = _min_token_rows(ids, cand_mask, self.tokenizer.pad_token_id, left=False)
        width = ids.shape[1]
        cand_positions = positions[index, -1:] + 1 + torch.arange(width, device=self.device)
        logits = self.model(input_ids=ids, attention_mask=torch.cat([mask[index], cand_mask], 1),
                            position_ids=cand_positions, use_cache=False,
                            **{self._cache_kwarg: cache}).logits.float()
        logp = torch.log_softmax(logits, dim=-1)
        for j, k in enumerate(longer):
            rest = rows[k][1][1:]
            sums[k] += float(logp[j, torch.arange(len(rest)), torch.tensor(rest)].sum())

    @property
    def _cache_kwarg(self) -> str:
        """The forward's name for a key-value cache (`past_key_values` before transformers
        renamed it `cache`)."""
        import inspect

        params = inspect.signature(self.model.forward).parameters
        return "cache" if "cache" in params else "past_key_values"


MIN_TOKEN_ROWS = 16


def _min_token_rows(ids, mask, pad_id: int, left: bool):
    """`ids` and `mask` padded (left or right, masked out) to at least `MIN_TOKEN_ROWS` tokens
    in all (the first pass also keeps the logits of that many rows). With 5-11 token rows, the
    float32 matrix products (MKL's sgemm, measured on an AMD EPYC) give different last bits at 1
    and 2 threads, so a short score depended on the thread count; with 1-4, 8 and 12 or more rows
    they give the same bits. Not a guarantee on every CPU: on an Intel Xeon with AVX-512 a score
    still moves in its last bits with the thread count and its batch-mates' padding
    (benchmarks/score_invariance.py)."""
    import torch

    rows, width = ids.shape
    need = -(-MIN_TOKEN_ROWS // rows) - width
    if need <= 0:
        return ids, mask
    pad_ids = torch.full((rows, need), pad_id, dtype=ids.dtype, device=ids.device)
    pad_mask = torch.zeros((rows, need), dtype=mask.dtype, device=mask.device)
    if left:
        return torch.cat([pad_ids, ids], 1), torch.cat([pad_mask, mask], 1)
    return torch.cat([ids, pad_ids], 1), torch.cat([mask, pad_mask], 1)


class _RowGumbel:
    """Per-row temperature, top-p and Gumbel noise keyed by (seed, generated-token index).

    Top-p keeps a token while the probability mass before it (tokens in descending order) is
    below top_p; the first is always kept. The nucleus is found by a partial sort (`topk`), widened
    until every row's nucleus ends inside it: a full sort of the 49k-token vocabulary took ~31 ms
    of a ~166 ms decode step at batch 16 (2 cores). The noise is one uniform per vocabulary entry
    from torch.Generator(seed = hash((request seed, step))), read at the kept tokens.
    """

    def __init__(self, requests: list[ChatRequest], prompt_len: int) -> None:
        import torch

        self.requests = requests
        self.prompt_len = prompt_len
        self.sampled = [i for i, r in enumerate(requests) if r.temperature > 0.0]
        self.temperature = torch.tensor([requests[i].temperature for i in self.sampled])
        self.top_p = torch.tensor([requests[i].top_p for i in self.sampled])

    def __call__(self, input_ids, scores):
        import torch

        scores = scores.float()
        if not self.sampled:
            return scores  # all rows greedy
        step = input_ids.shape[1] - self.prompt_len
        rows = torch.tensor(self.sampled, device=scores.device)
        s = scores[rows] / self.temperature.to(scores.device)[:, None]
        probs = torch.softmax(s, dim=-1)
        top_p = self.top_p.to(scores.device)[:, None]
        vocab = s.shape[1]
        k = min(64, vocab)
        while True:  # widen the partial sort until every row's nucleus ends inside it
            order = torch.topk(s, k, dim=-1).indices  # descending
            p = probs.gather(1, order)
            keep = (p.cumsum(-1) - p) < top_p
            if k == vocab or not bool(keep[:, -1].any()):
                break
            k = min(k * 8, vocab)
        out = torch.full_like(s, float("-inf"))
        for j, row in enumerate(self.sampled):
            kept = order[j][keep[j]]
            seed = hash((self.requests[row].seed, step)) & 0x7FFF_FFFF_FFFF_FFFF
            u = torch.rand(vocab, generator=torch.Generator().manual_seed(seed))[kept.cpu()]
            noise = -torch.log(-torch.log(u.clamp_(1e-10, 1.0 - 1e-7)))
            out[j, kept] = s[j, kept] + noise.to(s.device)
        scores[rows] = out
        return scores


class _RowBudget:
    """Marks a row finished once it has generated its own `max_tokens`; ticks the thread
    governor once per decode step."""

    def __init__(self, requests: list[ChatRequest], prompt_len: int, governor=None) -> None:
        self.budgets = [r.max_tokens for r in requests]
        self.prompt_len = prompt_len
        self.governor = governor

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        if self.governor:
            self.governor.tick()

        done = input_ids.shape[1] - self.prompt_len
        return torch.tensor([done >= b for b in self.budgets], device=input_ids.device)
