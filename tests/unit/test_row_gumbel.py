"""The default engine's sampler: its partial-sort nucleus picks the token a full sort of the
vocabulary picks (the law the engine had before, kept here as the reference), for every mix of
temperatures, top-p values, greedy rows, flat distributions whose nucleus is thousands of tokens
wide, and ties."""

from __future__ import annotations

import torch

from teamsrl.llm.schema import ChatRequest
from teamsrl.llm.transformers_engine import _RowGumbel

VOCAB = 49152  # SmolLM2's


def full_sort_reference(requests, prompt_len, input_ids, scores):
    """Temperature, top-p by a full descending sort, Gumbel noise for every entry."""
    scores = scores.float().clone()
    step = input_ids.shape[1] - prompt_len
    for row, r in enumerate(requests):
        if r.temperature == 0.0:
            continue
        s = scores[row] / r.temperature
        sorted_s, order = torch.sort(s, descending=True)
        probs = torch.softmax(sorted_s, dim=-1)
        drop = torch.zeros_like(s, dtype=torch.bool)
        drop[order] = (probs.cumsum(-1) - probs) >= r.top_p
        seed = hash((r.seed, step)) & 0x7FFF_FFFF_FFFF_FFFF
        u = torch.rand(s.shape[0], generator=torch.Generator().manual_seed(seed))
        noise = -torch.log(-torch.log(u.clamp_(1e-10, 1.0 - 1e-7)))
        scores[row] = s.masked_fill(drop, float("-inf")) + noise
    return scores.argmax(-1)


def test_the_partial_sort_picks_the_full_sorts_token():
    gen = torch.Generator().manual_seed(0)
    picked, widest = 0, 0
    for trial in range(40):
        requests = [ChatRequest(messages=({"role": "user", "content": "x"},),
                                temperature=(0.7, 1.0, 0.0, 0.3)[i % 4],
                                top_p=(0.95, 0.9, 1.0, 0.5)[(i + trial) % 4],
                                seed=1000 * trial + i, max_tokens=8) for i in range(6)]
        scores = torch.randn(6, VOCAB, generator=gen) * (1.0, 3.0, 8.0, 0.3)[trial % 4]
        if trial % 5 == 0:
            scores[:, :100] = 5.0  # ties at the top
        input_ids = torch.zeros(6, 5 + trial % 7, dtype=torch.long)
        new = _RowGumbel(requests, 5)(input_ids, scores.clone()).argmax(-1)
        ref = full_sort_reference(requests, 5, input_ids, scores)
        assert new.tolist() == ref.tolist(), f"trial {trial}"
        picked += len(requests)
        widest = max(widest, int(((scores / 0.3).softmax(-1).sort(descending=True).values
                                  .cumsum(-1) < 0.95).sum()))
    assert picked == 240 and widest > 4096  # some nuclei were far wider than the first topk
