"""Tokens/s of the embedded expert at batch 1, 4, 8 and 16 on the same requests, and the ratio
to batch 1.

    .venv/bin/python benchmarks/engine_batching.py [--max-tokens 48] [--repeats 3]
        [--requests 16] [--batches 1 4 8 16] [--out benchmarks/results/engine_batching.json]

Every batch size sends the same `--requests` requests (a fixed prompt list, each request with its
own seed), cut into batches of that size; the engine is batch-invariant, so every size generates
the same tokens (checked, and recorded as `same_tokens`). Each size gets one untimed warm-up batch;
then every repeat runs every size once, in a shuffled order (seeded per repeat), so machine load
falls on all sizes alike. Counts the completion tokens the engine returned over wall time;
prints the median tok/s per size, its spread (min-max over repeats) and the median ratio to
batch 1.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time

from results_file import ResultsFile, add_out_argument

os.environ.setdefault("HF_HUB_OFFLINE", "1")

PROMPTS = [
    "Write a short story about a lighthouse keeper.", "Explain how a bicycle gear works.",
    "Describe the water cycle for a child.", "Give advice to a new gardener.",
    "Write a letter to a friend about a trip to the mountains.",
    "Explain why leaves change colour in autumn.", "Describe your ideal city.",
    "Write a recipe for a vegetable soup.",
]


def main() -> None:
    """Run the sweep, print the table, write the results file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-tokens", type=int, default=48, help="new tokens per request")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs of every size")
    parser.add_argument("--requests", type=int, default=16,
                        help="requests per size and repeat (a multiple of every batch size)")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 8, 16],
                        help="batch sizes")
    add_out_argument(parser, "engine_batching")
    args = parser.parse_args()
    bad = [b for b in args.batches if b < 1 or args.requests % b]
    if bad or args.repeats < 1:
        parser.error(f"--batches {args.batches}, --requests {args.requests}, --repeats "
                     f"{args.repeats}: expected every batch size to divide the requests, "
                     "repeats >= 1")
    results = ResultsFile(args.out, vars(args))

    import torch

    from teamsrl.llm.embedded import SMOLLM2_ID
    from teamsrl.llm.schema import ChatRequest
    from teamsrl.llm.transformers_engine import TransformersEngine

    requests = [ChatRequest(messages=({"role": "user", "content": PROMPTS[i % len(PROMPTS)]},),
                            temperature=0.7, seed=1000 + i, max_tokens=args.max_tokens)
                for i in range(args.requests)]
    engine = TransformersEngine(SMOLLM2_ID, device="cpu", max_batch_size=max(args.batches))

    def run(size: int) -> tuple[float, list[int]]:
        """Seconds and per-request completion tokens for all requests in batches of `size`."""
        tokens: list[int] = []
        start = time.perf_counter()
        for lo in range(0, len(requests), size):
            tokens += [r.completion_tokens for r in engine.generate(requests[lo:lo + size])]
        return time.perf_counter() - start, tokens

    for size in args.batches:  # the same warm-up for every size: one untimed batch
        engine.generate(requests[:size])
    seconds: dict[int, list[float]] = {b: [] for b in args.batches}
    tokens: dict[int, list[int]] = {}
    orders = []
    for rep in range(args.repeats):
        order = random.Random(rep).sample(args.batches, len(args.batches))
        orders.append(order)
        for size in order:
            s, t = run(size)
            seconds[size].append(s)
            tokens.setdefault(size, t)
    same_tokens = len({tuple(t) for t in tokens.values()}) == 1
    rate = {b: [sum(tokens[b]) / s for s in seconds[b]] for b in args.batches}
    median = {b: statistics.median(r) for b, r in rate.items()}
    base = args.batches[0]

    print(f"engine: {SMOLLM2_ID} on cpu, torch threads {torch.get_num_threads()}, "
          f"{args.requests} requests per size (max_tokens {args.max_tokens}), "
          f"{args.repeats} repeats, sizes shuffled per repeat; same tokens at every size: "
          f"{same_tokens}")
    print(f"{'batch':>5} {'tokens':>7} {'median tok/s':>12} {'min-max tok/s':>15} "
          f"{'x batch ' + str(base):>10}")
    for b in args.batches:
        spread = f"{min(rate[b]):.1f}-{max(rate[b]):.1f}"
        print(f"{b:>5} {sum(tokens[b]):>7} {median[b]:>12.1f} {spread:>15} "
              f"{median[b] / median[base]:>10.2f}")
    results.write(
        summary={"tokens_per_s_median": median,
                 "ratio_to_first_size": {b: median[b] / median[base] for b in args.batches},
                 "same_tokens": same_tokens, "torch_threads": torch.get_num_threads()},
        raw={"seconds": seconds, "tokens_per_s": rate, "completion_tokens": tokens,
             "order": orders})


if __name__ == "__main__":
    main()
