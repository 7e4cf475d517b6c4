"""How often the expert's rewrites fail WizardLM's elimination rules, per operation.

Every seed task gets every operation once (175 x 6 rewrites by default), with the prompts of
`teamsrl.actions` and the rules of `teamsrl.rewards.failed_evolution`; requests go to the engine
in batches (sorted by prompt length, which changes no text: the engine is batch-invariant).

    .venv/bin/python benchmarks/evolution_failures.py                # all 175 seeds
    .venv/bin/python benchmarks/evolution_failures.py --limit 24 --show 2
    .venv/bin/python benchmarks/evolution_failures.py --max-tokens 48 \
        --out benchmarks/results/evolution_failures-48tok.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from results_file import ResultsFile, add_out_argument  # noqa: E402

from envs.instruction_mdp import derive_seed  # noqa: E402
from teamsrl.actions import ActionSet, ActionSetConfig  # noqa: E402
from teamsrl.llm.embedded import SMOLLM2_ID  # noqa: E402
from teamsrl.quality import TASK_VERBS  # noqa: E402
from teamsrl.rewards import RewardConfig, failed_evolution  # noqa: E402
from teamsrl.seeds import load_seeds  # noqa: E402

# a request's first word: a task verb (the validity judge's list) or a question word
_ASKING = TASK_VERBS | frozenset("""
how what why which who when where is are can do does should could would if in for using based
given""".split())


def looks_like_instruction(text: str) -> bool:
    """Heuristic: a request, not an answer (first word asks, or it ends with a question mark)."""
    words = text.strip().split()
    first = words[0].strip("\"'*#:.,-").lower() if words else ""
    return first in _ASKING or text.rstrip().endswith("?")


def main(argv: list[str] | None = None) -> int:
    """Generate the rewrites, print the failure table (and a few examples per operation)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=SMOLLM2_ID, help="expert model id or local folder")
    p.add_argument("--limit", type=int, default=None, help="first N seed tasks only")
    p.add_argument("--operations", nargs="*", default=None, help="subset of operations")
    p.add_argument("--max-tokens", type=int, default=64, help="new tokens per rewrite")
    p.add_argument("--temperature", type=float, default=0.7, help="expert temperature")
    p.add_argument("--batch-size", type=int, default=16, help="rows per engine batch")
    p.add_argument("--seed", type=int, default=543, help="base sampling seed")
    p.add_argument("--cache", default=None, help="SQLite response cache (reruns cost nothing)")
    p.add_argument("--show", type=int, default=0, help="print N failed and N kept rewrites per op")
    p.add_argument("--chunk", type=int, default=8, help="seeds per engine call (x operations)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (1 is ~3x faster than 2 when another process is busy)")
    add_out_argument(p, "evolution_failures")
    args = p.parse_args(argv)
    results = ResultsFile(args.out, vars(args))

    from teamsrl.llm.cache import ResponseCache
    from teamsrl.llm.client import LLMClient
    from teamsrl.llm.transformers_engine import TransformersEngine

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    seeds = load_seeds().seeds[: args.limit]
    actions = ActionSet.from_config(ActionSetConfig(operations=args.operations)
                                    if args.operations else None)
    engine = TransformersEngine(args.model, device="cpu", max_batch_size=args.batch_size)
    client = LLMClient({"expert": engine}, cache=ResponseCache(args.cache) if args.cache else None)
    jobs = []  # (operation index, seed, request)
    for a in range(len(actions)):
        for s in seeds:
            prompt = actions.render(a, s.text, 384, engine.count_tokens)
            jobs.append((a, s, client.request(
                "expert", list(prompt.messages), seed=derive_seed(args.seed, 0, a, s.id),
                max_tokens=args.max_tokens, temperature=args.temperature)))
    # Chunks of `--chunk` seeds (all operations), each sorted by prompt length and cached as it
    # completes: an interrupted run resumes for free, and `--limit K` reuses the first K seeds.
    from tqdm import tqdm

    start, responses = time.perf_counter(), {}
    per_op = len(seeds)
    for lo in tqdm(range(0, per_op, args.chunk), unit="chunk", desc="rewrites"):
        idx = [a * per_op + j for a in range(len(actions))
               for j in range(lo, min(lo + args.chunk, per_op))]
        idx.sort(key=lambda i: len(str(jobs[i][2].messages)))
        out = client.chat("expert", [jobs[i][2] for i in idx])
        responses.update(zip(idx, out, strict=True))
    seconds = time.perf_counter() - start
    new_tokens = sum(r.completion_tokens for r in responses.values() if not r.cached)
    rules = RewardConfig()
    rows = {op.name: {"n": 0, "failed": 0, "cut": 0, "asks": 0, "reasons": Counter(),
                      "ex": ([], [])} for op in actions.operations}
    failures = []
    for i, (a, s, _) in enumerate(jobs):
        op, r = actions[a], responses[i]
        reason = failed_evolution(s.text, r.text, rules, template_texts=op.prompt_texts(),
                                  cut=r.finish_reason == "length")
        failures.append(reason)
        row = rows[op.name]
        row["n"] += 1
        row["failed"] += bool(reason)
        row["cut"] += r.finish_reason == "length"
        row["asks"] += not reason and looks_like_instruction(r.text)
        if reason:
            row["reasons"][reason.kind.value] += 1
        row["ex"][0 if reason else 1].append((s.text, r.text, reason))
    print(f"{len(jobs)} rewrites of {len(seeds)} seeds, max_tokens={args.max_tokens}, "
          f"temperature={args.temperature}, {seconds:.0f} s, "
          f"{sum(not r.cached for r in responses.values())} generated "
          f"({new_tokens / max(seconds, 1e-9):.0f}"
          " tok/s), the rest from the cache")
    print(f"{'operation':26} {'n':>4} {'failed':>7}  {'cut':>5}  {'asks':>5}  reasons")
    total_n = total_f = total_cut = 0
    for name, row in rows.items():
        total_n, total_f = total_n + row["n"], total_f + row["failed"]
        total_cut += row["cut"]
        reasons = ", ".join(f"{k} {v}" for k, v in row["reasons"].most_common())
        print(f"{name:26} {row['n']:4d} {row['failed'] / row['n']:7.1%}  "
              f"{row['cut'] / row['n']:5.0%}  {row['asks'] / row['n']:5.0%}  {reasons}")
    print(f"{'all':26} {total_n:4d} {total_f / total_n:7.1%}")
    print("failed: breaks an elimination rule (as the env applies them: a rewrite cut at "
          "max_tokens fails unless a content rule failed it first); cut: hit max_tokens; "
          "asks: kept AND reads like an instruction (a heuristic: starts with an instruction "
          "verb or question word, or ends with '?'); kept rewrites that do not are mostly "
          "answers to the seed.")
    for name, row in rows.items():
        for kind, items in zip(("FAILED", "kept"), row["ex"], strict=True):
            for old, new, reason in items[: args.show]:
                print(f"\n[{name}] {kind} {reason}\n  seed: {old[:200]!r}\n  new:  {new[:300]!r}")
    results.write(
        summary={"rewrites": total_n, "failed_share": total_f / total_n,
                 "cut_share": total_cut / total_n, "seconds": round(seconds, 1),
                 "generated": sum(not r.cached for r in responses.values()),
                 "per_operation": {name: {"n": row["n"], "failed_share": row["failed"] / row["n"],
                                          "cut_share": row["cut"] / row["n"],
                                          "asks_share": row["asks"] / row["n"],
                                          "reasons": dict(row["reasons"])}
                                   for name, row in rows.items()}},
        raw=[{"operation": actions[a].name, "seed": s.id,
              "failure": failure.kind.value if failure else None,
              "cut": responses[i].finish_reason == "length",
              "completion_tokens": responses[i].completion_tokens}
             for i, ((a, s, _), failure) in enumerate(zip(jobs, failures, strict=True))])
    client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
