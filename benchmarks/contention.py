"""The embedded expert's decode speed alone and beside busy processes, per thread setting.

Issue 19 measured a generation 4.5x slower beside a compile job (3 compiler processes on the 2
cores), far beyond the CPU share it lost: torch's OpenMP threads spin-wait when the cores are
taken. This measures the lever before it is wired into the pipeline: one engine batch (the same
`--requests` requests, per-request seeds, `--max-tokens` new tokens) timed in a fresh process per
setting, quiet and beside `--burners` busy Python processes (`while True: pass`), settings in a
shuffled order per repeat (seeded) so load drifts fall on all alike. Settings:

- `fixed`: torch's default threads (one per core), fixed, OpenMP's default wait policy (the
  engine before `teamsrl.cpu`);
- `adaptive`: the engine as shipped: its `ThreadGovernor` sets torch's threads to the cores other
  processes leave free, before each batch and every 16 decode steps;
- `passive`: fixed threads with `OMP_WAIT_POLICY=PASSIVE` (waiting threads sleep, not spin);
- `one-thread`: `OMP_NUM_THREADS=1` (no barrier to wait at).

`--job generate` times a whole command instead: `teamsrl generate --policy random` on the first
`--seeds` bundled seeds (the Self-Instruct seed tasks), with the settings the CLI ships, quiet and
beside the burners, each in a fresh run folder (a fresh cache):

    .venv/bin/python benchmarks/contention.py --job generate --seeds 16 --repeats 1 \
        --out benchmarks/results/contention_generate.json

Each process loads the engine and runs one untimed warm-up batch before the timed one. Prints the
median seconds per setting and condition and the slowdown (beside / quiet); the goal in issue 19
is <= 2.5x beside 2 busy processes.

    .venv/bin/python benchmarks/contention.py --out benchmarks/results/contention.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results_file import ResultsFile, add_out_argument

SETTINGS = {
    "fixed": {"BENCH_ADAPTIVE_THREADS": "0"},
    "adaptive": {"BENCH_ADAPTIVE_THREADS": "1"},
    "passive": {"OMP_WAIT_POLICY": "PASSIVE", "BENCH_ADAPTIVE_THREADS": "0"},
    "one-thread": {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "BENCH_ADAPTIVE_THREADS": "0"},
}
PROMPTS = [
    "Rewrite this instruction so it needs one more reasoning step: Explain how a bicycle gear "
    "works.", "Rewrite this instruction to be more specific: Describe your ideal city.",
    "Rewrite this instruction with one extra constraint: Write a recipe for a vegetable soup.",
    "Rewrite this instruction on a rarer topic: Give advice to a new gardener.",
]
_CHILD = r"""
import json, os, sys, time
from teamsrl.llm.embedded import SMOLLM2_ID
from teamsrl.llm.schema import ChatRequest
from teamsrl.llm.transformers_engine import TransformersEngine
import torch
prompts, n, max_tokens = json.loads(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
requests = [ChatRequest(messages=({"role": "user", "content": prompts[i % len(prompts)]},),
                        temperature=0.7, seed=2000 + i, max_tokens=max_tokens) for i in range(n)]
engine = TransformersEngine(SMOLLM2_ID, device="cpu", max_batch_size=n,
                            adaptive_threads=os.environ["BENCH_ADAPTIVE_THREADS"] == "1")
engine.generate(requests)  # warm-up, untimed
start = time.perf_counter()
out = engine.generate(requests)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "tokens": sum(r.completion_tokens for r in out),
                  "threads": torch.get_num_threads()}))
"""


def measure(setting: str, requests: int, max_tokens: int) -> dict:
    """One fresh process: load, warm up, time one batch; its JSON line."""
    env = os.environ | {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.update(SETTINGS[setting])
    out = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(PROMPTS), str(requests),
                          str(max_tokens)], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure_generate(seeds: int, scratch: Path, tag: str) -> dict:
    """One `teamsrl generate --policy random` of the first `seeds` seeds, timed wall to wall."""
    run_dir = scratch / tag
    env = os.environ | {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                        "TOKENIZERS_PARALLELISM": "false", "WANDB_MODE": "disabled"}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "teamsrl.cli", "generate", "--policy", "random",
                    "--set", f"generate.max_seeds={seeds}", "--set", f"run_dir={run_dir}"],
                   env=env, capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - start
    rows = (run_dir / "generate" / "random" / "rows.jsonl").read_text().splitlines()
    steps = sum(json.loads(line).get("kind") == "row" for line in rows)
    return {"seconds": seconds, "tokens": None, "threads": None, "evolutions": steps,
            "seconds_per_seed": seconds / seeds}


def main() -> None:
    """Every setting quiet and beside the burners, repeats shuffled; table and results file."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=8, help="requests in the timed batch")
    p.add_argument("--max-tokens", type=int, default=48)
    p.add_argument("--burners", type=int, default=2, help="busy processes beside the engine")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS),
                   help="--job batch: the OpenMP settings to compare")
    p.add_argument("--job", choices=("batch", "generate"), default="batch",
                   help="batch: one engine batch per setting; generate: a whole `teamsrl "
                   "generate` with the CLI's own settings")
    p.add_argument("--seeds", type=int, default=16, help="--job generate: seeds to evolve")
    add_out_argument(p, "contention")
    args = p.parse_args()
    results = ResultsFile(args.out, vars(args))
    runs: list[dict] = []
    if args.job == "generate":
        args.settings = ["shipped"]
    scratch = Path(tempfile.mkdtemp(prefix="contention-"))
    for rep in range(args.repeats):
        order = random.Random(rep).sample(args.settings, len(args.settings))
        for setting in order:
            for condition in ("quiet", "beside"):
                burners = []
                if condition == "beside":
                    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                               for _ in range(args.burners)]
                try:
                    r = (measure_generate(args.seeds, scratch, f"{rep}-{condition}")
                         if args.job == "generate"
                         else measure(setting, args.requests, args.max_tokens))
                finally:
                    for b in burners:
                        b.kill()
                        b.wait()
                runs.append({"repeat": rep, "setting": setting, "condition": condition, **r})
                print(f"repeat {rep} {setting:10} {condition:6} {r['seconds']:7.1f} s "
                      f"({r['tokens'] or r['evolutions']} tokens or evolutions, "
                      f"{r['threads']} threads)", flush=True)
    summary: dict = {}
    for s in args.settings:
        med = {c: statistics.median(r["seconds"] for r in runs
                                    if r["setting"] == s and r["condition"] == c)
               for c in ("quiet", "beside")}
        summary[s] = {"median_seconds": med, "slowdown": med["beside"] / med["quiet"]}
    base = summary[args.settings[0]]["median_seconds"]["quiet"] if args.settings else 1.0
    print(f"\n{'setting':10} {'quiet s':>8} {'beside s':>9} {'slowdown':>9} {'quiet / first':>14}")
    for s, v in summary.items():
        m = v["median_seconds"]
        print(f"{s:10} {m['quiet']:8.1f} {m['beside']:9.1f} {v['slowdown']:9.2f} "
              f"{m['quiet'] / base:14.2f}")
    shutil.rmtree(scratch, ignore_errors=True)
    results.write(summary=summary, raw={"runs": runs})


if __name__ == "__main__":
    main()
