"""Tokens/s of the embedded expert at batch 1, 4, 8 and 16, and the ratio to batch 1.

    .venv/bin/python benchmarks/engine_batching.py [--max-tokens 48] [--repeats 2]

Counts the completion tokens the engine actually returned (rows that stop early count less),
over wall time, with the same per-row sampling (temperature 0.7, seeded Gumbel) used everywhere.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

PROMPTS = [
    "Write a short story about a lighthouse keeper.", "Explain how a bicycle gear works.",
    "Describe the water cycle for a child.", "Give advice to a new gardener.",
    "Write a letter to a friend about a trip to the mountains.",
    "Explain why leaves change colour in autumn.", "Describe your ideal city.",
    "Write a recipe for a vegetable soup.",
]


def main() -> None:
    """Run the sweep and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8, 16])
    args = parser.parse_args()

    import torch

    from teamsrl.llm.embedded import SMOLLM2_ID
    from teamsrl.llm.schema import ChatRequest
    from teamsrl.llm.transformers_engine import TransformersEngine

    engine = TransformersEngine(SMOLLM2_ID, device="cpu", max_batch_size=max(args.batches))
    engine.generate([ChatRequest(messages=[{"role": "user", "content": "hi"}], max_tokens=4)])
    rows = []
    for batch in args.batches:
        tokens, seconds = 0, 0.0
        for rep in range(args.repeats):
            reqs = [ChatRequest(messages=[{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
                                temperature=0.7, seed=1000 * rep + i, max_tokens=args.max_tokens)
                    for i in range(batch)]
            start = time.perf_counter()
            out = engine.generate(reqs)
            seconds += time.perf_counter() - start
            tokens += sum(r.completion_tokens for r in out)
        rows.append((batch, tokens, seconds, tokens / seconds))
    base = rows[0][3]
    print(f"engine: {SMOLLM2_ID} on cpu, torch threads {torch.get_num_threads()}, "
          f"max_tokens {args.max_tokens}, {args.repeats} repeats")
    print(f"{'batch':>5} {'tokens':>7} {'seconds':>8} {'tok/s':>7} {'x batch 1':>9}")
    for batch, tokens, seconds, rate in rows:
        print(f"{batch:>5} {tokens:>7} {seconds:>8.2f} {rate:>7.1f} {rate / base:>9.2f}")


if __name__ == "__main__":
    main()
