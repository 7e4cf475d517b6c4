"""Tokens/s of the llama.cpp engine vs the transformers engine (the embedded SmolLM2 for both)
at batch 1 and batch 16, on the requests of `engine_batching.py`; plus how often the two engines
write the same text for the same seed, and how far apart their scores are.

    .venv/bin/python benchmarks/llamacpp_speed.py [--max-tokens 48] [--repeats 2]
        [--out benchmarks/results/llamacpp_speed.json]

Needs the optional extra (`pip install 'teamsrl[llamacpp]'`). Each (engine, batch size) gets
one untimed warm-up batch; every repeat runs the four arms in a shuffled order (seeded per
repeat), so machine load falls on all alike. Counts the completion tokens each engine returned
over wall time. `same_tokens` says whether an engine gave the same completion lengths at both
batch sizes (batch invariance, checked on texts too).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time

from engine_batching import PROMPTS
from results_file import ResultsFile, add_out_argument

os.environ.setdefault("HF_HUB_OFFLINE", "1")

SCORE_PROMPTS = [
    ("What is the capital of France? One word.", ("Paris", "Banana")),
    ("Is the sky blue? Answer yes or no.", ("Yes", "No")),
    ("Does 'Write a poem about cats.' differ from 'Write a poem about dogs.'? Yes or no.",
     ("Yes", "No")),
]


def main() -> None:
    """Run both engines at both sizes, print the table, write the results file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-tokens", type=int, default=48, help="new tokens per request")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of every arm")
    parser.add_argument("--requests", type=int, default=16, help="requests per arm and repeat")
    add_out_argument(parser, "llamacpp_speed")
    args = parser.parse_args()
    results = ResultsFile(args.out, vars(args))

    import torch

    from teamsrl.llm.embedded import SMOLLM2_ID
    from teamsrl.llm.llamacpp_engine import LlamaCppEngine
    from teamsrl.llm.schema import ChatRequest, ScoreRequest
    from teamsrl.llm.transformers_engine import TransformersEngine

    requests = [ChatRequest(messages=({"role": "user", "content": PROMPTS[i % len(PROMPTS)]},),
                            temperature=0.7, seed=1000 + i, max_tokens=args.max_tokens)
                for i in range(args.requests)]
    load_s = {}
    start = time.perf_counter()
    engines = {"transformers": TransformersEngine(SMOLLM2_ID, device="cpu",
                                                  max_batch_size=args.requests)}
    load_s["transformers"] = time.perf_counter() - start
    start = time.perf_counter()
    engines["llamacpp"] = LlamaCppEngine(SMOLLM2_ID)
    load_s["llamacpp"] = time.perf_counter() - start
    arms = [(name, size) for name in engines for size in (1, args.requests)]

    def run(name: str, size: int) -> tuple[float, list]:
        """Seconds and responses for all requests in batches of `size`."""
        out = []
        start = time.perf_counter()
        for lo in range(0, len(requests), size):
            out += engines[name].generate(requests[lo:lo + size])
        return time.perf_counter() - start, out

    for name, size in arms:
        engines[name].generate(requests[:size])
    seconds: dict[str, list[float]] = {f"{n}@{s}": [] for n, s in arms}
    texts: dict[str, list[str]] = {}
    tokens: dict[str, list[int]] = {}
    orders = []
    for rep in range(args.repeats):
        order = random.Random(rep).sample(arms, len(arms))
        orders.append([f"{n}@{s}" for n, s in order])
        for name, size in order:
            s, out = run(name, size)
            seconds[f"{name}@{size}"].append(s)
            texts.setdefault(f"{name}@{size}", [r.text for r in out])
            tokens.setdefault(f"{name}@{size}", [r.completion_tokens for r in out])
    rate = {k: [sum(tokens[k]) / s for s in v] for k, v in seconds.items()}
    median = {k: statistics.median(r) for k, r in rate.items()}
    big = args.requests
    invariant = {n: texts[f"{n}@1"] == texts[f"{n}@{big}"] for n in engines}
    same_text = sum(a == b for a, b in zip(texts["transformers@1"], texts["llamacpp@1"],
                                           strict=True))
    score_reqs = [ScoreRequest(messages=[{"role": "user", "content": q}], candidates=c)
                  for q, c in SCORE_PROMPTS]
    scores = {n: [list(r.logprobs) for r in e.score(score_reqs)] for n, e in engines.items()}
    score_diff = max(abs(a - b) for ra, rb in zip(scores["llamacpp"], scores["transformers"],
                                                  strict=True) for a, b in zip(ra, rb, strict=True))

    print(f"{args.requests} requests x max_tokens {args.max_tokens}, {args.repeats} repeats, "
          f"arms shuffled per repeat; torch threads {torch.get_num_threads()}, llama.cpp threads "
          f"{engines['llamacpp'].n_threads}; load s {load_s}")
    print(f"{'arm':>17} {'tokens':>7} {'median tok/s':>12} {'min-max tok/s':>15}")
    for k in seconds:
        spread = f"{min(rate[k]):.1f}-{max(rate[k]):.1f}"
        print(f"{k:>17} {sum(tokens[k]):>7} {median[k]:>12.1f} {spread:>15}")
    print(f"batch-invariant texts: {invariant}; same text on both engines (same seed): "
          f"{same_text}/{len(requests)}; max |score difference| {score_diff:.3f} nats")
    results.write(
        summary={"tokens_per_s_median": median, "batch_invariant_texts": invariant,
                 "same_text_both_engines": same_text, "max_score_diff_nats": score_diff,
                 "load_s": load_s, "torch_threads": torch.get_num_threads(),
                 "llamacpp_threads": engines["llamacpp"].n_threads},
        raw={"seconds": seconds, "tokens_per_s": rate, "completion_tokens": tokens,
             "order": orders, "scores": scores, "texts": texts})


if __name__ == "__main__":
    main()
