"""Scoring speed: `TransformersEngine.score` against the full-row method it replaced, side by side.

Until 2026-12-01 the engine scored a request by running one full row per candidate (context +
candidate) and computing every position's logits. It now runs each context once, keeps its
key-value cache and the last positions' logits, then runs the candidates' later tokens on that
cache. This benchmark keeps the full-row method (`full_rows_score`, the old code) and times both
on the same requests, the same engine and the same torch threads, alternating the two methods
within every repeat, in batches of `--batch` requests (as a Serve replica gets them):

- `verdict`: the reviewer's two-candidate verdict (`rewards.verdict_request`) on pairs of seeds;
- `judge`: the validity judge's three reviewer signals (`quality.reviewer_request`,
  `fluency_request`, `reply_request`) on seed instructions.

It prints seconds per request for each method and kind, their ratio, and the largest difference
between the two methods' log-probabilities.

    .venv/bin/python benchmarks/score_speed.py --requests 8 --repeats 3 \\
        --out benchmarks/results/score_speed.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_file import ResultsFile, add_out_argument  # noqa: E402


def full_rows_score(engine, requests):
    """The previous method: one padded row per (context, candidate), logits at every position."""
    import torch

    from teamsrl.llm.transformers_engine import score_ids

    rows = []
    for i, req in enumerate(requests):
        ctx, cands = score_ids(engine.tokenizer, req, engine.context_length)
        rows.extend((i, ctx + c, len(c)) for c in cands)
    sums = [0.0] * len(rows)
    for start in range(0, len(rows), engine.max_batch_size):
        chunk = rows[start : start + engine.max_batch_size]
        batch = engine.tokenizer.pad({"input_ids": [ids for _, ids, _ in chunk]}, padding=True,
                                     return_tensors="pt")
        with torch.inference_mode():
            logits = engine.model(**batch).logits.float()
        logp = torch.log_softmax(logits[:, :-1], dim=-1)
        tok_lp = logp.gather(-1, batch["input_ids"][:, 1:].unsqueeze(-1)).squeeze(-1)
        for j, (_, _, n) in enumerate(chunk):
            sums[start + j] = float(tok_lp[j, -n:].sum())
    out, k = [], 0
    for req in requests:
        out.append(tuple(sums[k : k + len(req.candidates)]))
        k += len(req.candidates)
    return out


def bundled_seeds() -> list[str]:
    """The default config's seed instructions."""
    from teamsrl.config import load_config
    from teamsrl.seeds import load_seeds

    env = load_config(None, []).env
    return [s.text for s in load_seeds(env.seed_file, env.seed_column, env.max_seed_chars).seeds]


def verdict_requests(seeds: list[str], n: int) -> list:
    """`n` reviewer verdict requests, each on a pair of consecutive seeds."""
    from teamsrl.rewards import verdict_request

    return [verdict_request(seeds[i], seeds[i + 1]) for i in range(n)]


def workload(n: int) -> dict[str, list]:
    """`n` verdict requests and `n` seeds' judge requests (3 each), from the bundled seeds."""
    from teamsrl import quality

    seeds = bundled_seeds()
    judge = []
    for text in seeds[:n]:
        judge += [quality.reviewer_request(text), quality.fluency_request(text),
                  quality.reply_request(text)]
    return {"verdict": verdict_requests(seeds, n), "judge": judge}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=16, help="verdicts and judged seeds")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8, help="requests per engine call")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a Serve replica "
                        "at 0.5-1 CPU runs 1)")
    add_out_argument(parser, "score_speed")
    args = parser.parse_args()
    results = ResultsFile(args.out, vars(args))

    import torch

    from teamsrl.llm.embedded import SMOLLM2_ID
    from teamsrl.llm.transformers_engine import TransformersEngine

    torch.set_num_threads(args.threads)
    engine = TransformersEngine(SMOLLM2_ID, device="cpu", max_batch_size=args.batch,
                                adaptive_threads=False)
    methods = {"cached_context": lambda r: [s.logprobs for s in engine.score(r)],
               "full_rows": lambda r: full_rows_score(engine, r)}
    work = workload(args.requests)
    for fn in methods.values():  # the same warm-up for both
        fn(work["verdict"][:2])
    seconds = {kind: {m: [] for m in methods} for kind in work}
    scores: dict = {kind: {} for kind in work}
    for rep in range(args.repeats):
        order = list(methods) if rep % 2 == 0 else list(methods)[::-1]
        for kind, requests in work.items():
            for name in order:
                start = time.perf_counter()
                got = []
                for i in range(0, len(requests), args.batch):
                    got += methods[name](requests[i : i + args.batch])
                seconds[kind][name].append(time.perf_counter() - start)
                scores[kind][name] = got
    summary: dict = {}
    print(f"{'kind':8} {'requests':>8} {'full rows s/req':>16} {'cached s/req':>13} "
          f"{'speed-up':>9} {'max |dlogp|':>12}")
    for kind, requests in work.items():
        per = {m: min(s) / len(requests) for m, s in seconds[kind].items()}
        diff = max(abs(a - b) for x, y in zip(scores[kind]["cached_context"],
                                              scores[kind]["full_rows"], strict=True)
                   for a, b in zip(x, y, strict=True))
        summary[kind] = {"requests": len(requests),
                         "full_rows_s_per_request": round(per["full_rows"], 4),
                         "cached_context_s_per_request": round(per["cached_context"], 4),
                         "speedup": round(per["full_rows"] / per["cached_context"], 2),
                         "max_abs_logprob_difference": diff}
        print(f"{kind:8} {len(requests):>8} {per['full_rows']:>16.3f} "
              f"{per['cached_context']:>13.3f} {summary[kind]['speedup']:>8.2f}x {diff:>12.2e}")
    print("(fastest repeat of each; both methods alternate within every repeat)")
    results.write(summary=summary, raw={"seconds": seconds})


if __name__ == "__main__":
    main()
