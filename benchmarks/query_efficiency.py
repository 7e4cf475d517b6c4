"""Expert queries vs dataset diversity: the trained policy against the random (Evol-Instruct) arm.

    .venv/bin/python benchmarks/query_efficiency.py --run runs/quickstart [--seeds 32]
        [--config experiments/quickstart.yaml] [--work-dir /tmp/qe]
        [--out benchmarks/results/query_efficiency.json]

Both arms generate from the same seeds with the run's config (the embedded default), each with a
fresh response cache and its own ledger, so every request is paid for. Printed side by side:
rows kept, expert requests for generation, for policy training (from the run's ledger) and in
total, expert requests per kept row, failure rate, mean steps per seed (early stops), final
diversity (mean pairwise MiniLM distance, distinct-2), and the expert requests each arm spent
before its curve first reached the random arm's final diversity. The policy can only save queries
by stopping early, failing less, or producing more diverse rows per query: the last lines say
which of the three the numbers show.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

from results_file import ResultsFile, add_out_argument

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")


def _arm(config, policy: str, out: Path) -> dict:
    from teamsrl.generation.run import run_generation

    run_generation(config, policy, out_dir=out, progress=True)
    return _load(out)


def _load(out: Path) -> dict:
    """A finished generation folder's summary plus failure rate and steps per seed."""
    summary = json.loads((out / "summary.json").read_text())
    rows = [json.loads(x) for x in (out / "rows.jsonl").read_text().splitlines()]
    rows = [r for r in rows if r.get("kind") == "row"]
    summary["failure_rate"] = sum(bool(r["failure"]) for r in rows) / max(1, len(rows))
    summary["steps_per_seed"] = len(rows) / max(1, summary["seeds"])
    return summary


def _to_reach(curve: list[dict], target: float) -> int | None:
    for point in curve:
        if point["diversity"] >= target:
            return point["expert_queries"]
    return None


def main() -> None:
    """Run both arms and print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="run dir with policy/export")
    parser.add_argument("--config", default=None, help="experiment YAML (default: the run's "
                        "config.yaml)")
    parser.add_argument("--seeds", type=int, default=32, help="seeds per arm")
    parser.add_argument("--seed-file", default=None, help="seed instructions (default: the "
                        "config's)")
    parser.add_argument("--work-dir", default=None,
                        help="the arms' run folders (default: a temp dir)")
    parser.add_argument("--existing", nargs=2, metavar=("POLICY_DIR", "RANDOM_DIR"),
                        help="compare two finished generation folders instead of generating "
                        "(request counts and diversity do not depend on the cache; the ledger's "
                        "engine-query counts do)")
    add_out_argument(parser, "query_efficiency")
    args = parser.parse_args()

    from teamsrl.config import load_config

    out = Path(args.work_dir or tempfile.mkdtemp(prefix="query-efficiency-"))
    results_file = ResultsFile(args.out or out / "query-efficiency.json", vars(args))
    results = {}
    if args.existing:
        results = {"policy": _load(Path(args.existing[0])),
                   "random": _load(Path(args.existing[1]))}
    else:
        for arm, policy in (("policy", args.run), ("random", "random")):
            overrides = [f"run_dir={out / arm}", f"generate.max_seeds={args.seeds}",
                         f"llm.cache.path={out / arm / 'fresh-cache.sqlite'}"]
            if args.seed_file:
                overrides.append(f"env.seed_file={args.seed_file}")
            config = load_config(args.config or f"{args.run}/config.yaml", overrides)
            results[arm] = _arm(config, policy, out / arm / "generate")
    p, r = results["policy"], results["random"]
    train = {role: int(t.get("queries", 0)) for role, t in p["policy_training"].items()}
    target = r["diversity"]["mean_pairwise_distance"]
    rows = [
        ("seeds", p["seeds"], r["seeds"]),
        ("rows generated", p["rows_total"], r["rows_total"]),
        ("rows kept", p["rows_kept"], r["rows_kept"]),
        ("expert requests: generation", p["queries"]["expert"], r["queries"]["expert"]),
        ("expert requests: policy training", train.get("expert", 0), 0),
        ("expert requests: total", p["queries"]["expert"] + train.get("expert", 0),
         r["queries"]["expert"]),
        ("expert requests per kept row", p["queries"]["expert"] / max(1, p["rows_kept"]),
         r["queries"]["expert"] / max(1, r["rows_kept"])),
        ("failed evolutions (share of steps)", p["failure_rate"], r["failure_rate"]),
        ("steps per seed", p["steps_per_seed"], r["steps_per_seed"]),
        ("diversity: mean pairwise distance", p["diversity"]["mean_pairwise_distance"], target),
        ("diversity: distinct-2", p["diversity"]["distinct_2"], r["diversity"]["distinct_2"]),
        ("expert requests to reach random's final diversity", _to_reach(p["curve"], target),
         _to_reach(r["curve"], target)),
    ]
    how = "existing runs" if args.existing else f"fresh cache per arm ({out})"
    print(f"\nquery efficiency, {p['seeds']} seeds per arm, {how}")
    print(f"{'':<52}{'policy':>12}{'random':>12}")
    for label, a, b in rows:
        def fmt(v):
            return "never" if v is None else (f"{v:.4f}" if isinstance(v, float) else str(v))
        print(f"{label:<52}{fmt(a):>12}{fmt(b):>12}")
    q_p = p["queries"]["expert"] / max(1, p["rows_kept"])
    q_r = r["queries"]["expert"] / max(1, r["rows_kept"])
    print(f"policy / random expert requests per kept row = {q_p / q_r:.2f}" if q_r else "")
    print("levers: early stops" + (" yes" if p["steps_per_seed"] < r["steps_per_seed"] else " no")
          + "; fewer failures" + (" yes" if p["failure_rate"] < r["failure_rate"] else " no")
          + "; more diverse rows" + (" yes" if p["diversity"]["mean_pairwise_distance"] > target
                                     else " no"))
    results_file.write(summary={label: {"policy": a, "random": b} for label, a, b in rows},
                       raw=results)


if __name__ == "__main__":
    main()
