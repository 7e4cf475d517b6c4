"""Levers on the headline, measured on a finished `benchmarks/headline.py` work dir's own rows:
the choice of operation and the horizon.

    .venv/bin/python benchmarks/headline_levers.py --work-dir runs/headline \
        [--bootstrap 2000] [--out benchmarks/results/headline_levers.json]

An evolution step h of a seed only depends on steps 1..h-1, so the first h rows of every
generation seed are what the same arm would have produced with `env.horizon = h` (exactly for the
random and frequency-matched arms, whose actions ignore the state; for the policy arm this is the
horizon-6 policy's first h steps, not a policy trained for horizon h). It prints and records
(intervals: the headline's paired bootstrap, runs and generation seeds resampled, the same draw
for every arm):
- per operation: valid rows per expert query of the steps that drew it (every arm pooled), and
  the best one's over the random arm's (what failure avoidance by a state-free mix could gain);
- per step s: each arm's expert queries and judged-valid kept rows at that step (where the
  queries go and where the valid rows come from);
- the share of steps ending in each failure kind;
- with `--compare`: how many steps of another run on the same seeds drew the same operation and
  gave the same rewrite (a lever's effect on the actions; a determinism check of the random arm);
- per horizon h: judged-valid rows per expert query (generation only) per arm, and headline (a)
  and the break-even dataset size at the budget every random run reaches with horizon h.
Training cost is the headline's (`train-k` ledgers): the policy was trained once, at the run's
horizon. Nothing is generated again: no engine query is made.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import Counter
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from headline import ARMS, _ci95, _finite, headline, queries, seed_rows, valid_kept  # noqa: E402
from results_file import ResultsFile, add_out_argument  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work-dir", required=True, help="a finished benchmarks/headline.py work dir "
                   "(its headline.json names the units)")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples")
    p.add_argument("--compare", nargs="*", default=[], metavar="WORK_DIR",
                   help="other finished headline work dirs (lever runs on the same seeds): per "
                        "arm and run they share, the steps with the same operation and the same "
                        "rewrite, and each of their arms' operation counts")
    add_out_argument(p, "headline_levers.json")
    return p.parse_args(argv)


def _step(row: tuple) -> int:
    return int(row[5]["step"])


def truncate(by_seed: dict, h: int) -> dict:
    """Steps 1..h of every seed's evolution."""
    if h < 1:
        raise ValueError(f"horizon {h}: expected >= 1")
    return {sid: [r for r in rows if _step(r) <= h] for sid, rows in by_seed.items()}


def per_step(rows: dict, gen_ids: list[str], horizon: int) -> dict:
    """Per arm and step s (1-based): mean over runs of the expert queries spent at step s and of
    the judged-valid kept rows it gave, summed over the generation seeds."""
    out = {}
    for arm in ARMS:
        q = np.zeros((len(rows[arm]), horizon))
        good = np.zeros_like(q)
        for k, by_seed in enumerate(rows[arm]):
            for sid in gen_ids:
                for row in by_seed[sid]:
                    q[k, _step(row) - 1] += row[0]
                    good[k, _step(row) - 1] += valid_kept(row)
        out[arm] = {"expert_queries": [round(float(v), 3) for v in q.mean(0)],
                    "valid_rows": [round(float(v), 3) for v in good.mean(0)]}
    return out


def per_action(rows: dict, gen_ids: list[str]) -> dict:
    """Per operation, pooled over every arm and run: the steps that drew it, their expert queries,
    the judged-valid kept rows they gave, and valid rows per expert query; with the random arm's
    overall rate beside it, so `best_over_random` is what always choosing the best operation
    would give if its rate held in every state (a ceiling for a state-free mix, not a policy)."""
    counts: dict[str, list[float]] = {}
    for arm in ARMS:
        for by_seed in rows[arm]:
            for sid in gen_ids:
                for row in by_seed[sid]:
                    c = counts.setdefault(row[5]["action"], [0, 0, 0])
                    c[0] += 1
                    c[1] += row[0]
                    c[2] += valid_kept(row)
    ops = {a: {"steps": n, "expert_queries": q, "valid_rows": g,
               "valid_per_expert_query": round(g / q, 6) if q else None}
           for a, (n, q, g) in sorted(counts.items())}
    rnd = [row for by_seed in rows["random"] for sid in gen_ids for row in by_seed[sid]]
    rate = sum(valid_kept(r) for r in rnd) / max(sum(r[0] for r in rnd), 1)
    best = max((v["valid_per_expert_query"] or 0.0 for v in ops.values()), default=0.0)
    return {"operations": ops, "random_valid_per_expert_query": round(rate, 6),
            "best_over_random": round(best / rate, 6) if rate else None}


def failure_shares(rows: dict, gen_ids: list[str]) -> dict:
    """Every arm and run pooled: the steps, and the share that ended in each failure kind (the
    text before the row's failure detail; "none" for a step that passed)."""
    kinds = Counter((row[5]["failure"] or "none").split(": ")[0] for arm in ARMS
                    for by_seed in rows[arm] for sid in gen_ids for row in by_seed[sid])
    total = sum(kinds.values())
    return {"steps": total, "shares": {k: round(n / total, 4) for k, n in kinds.most_common()}}


def compare_runs(rows: dict, other: dict, gen_ids: list[str]) -> dict:
    """Per arm and run index both have: the steps (seed, step) of both, how many drew the same
    operation and how many the same rewrite; and `other`'s operation counts per arm and run."""
    out = {}
    for arm in ARMS:
        for k, (mine, theirs) in enumerate(zip(rows[arm], other[arm], strict=False)):
            a = {(sid, _step(r)): r[5] for sid in gen_ids for r in mine[sid]}
            b = {(sid, _step(r)): r[5] for sid in gen_ids for r in theirs[sid]}
            both = a.keys() & b.keys()
            out[f"{arm}-{k}"] = {
                "steps_in_both": len(both),
                "same_operation": sum(a[x]["action"] == b[x]["action"] for x in both),
                "same_rewrite": sum(a[x]["instruction"] == b[x]["instruction"] for x in both),
                "their_operations": dict(Counter(r["action"] for r in b.values()).most_common())}
    return out


def valid_per_query(rows: dict, gen_ids: list[str], n_boot: int, seed: int = 0) -> dict:
    """Per arm: judged-valid kept rows per generation expert query over runs and seeds, with the
    paired bootstrap's 95% interval, and each arm's ratio to the random arm's."""
    def table(arm, value):  # runs x seeds: the sum of value(row) over the seed's rows
        return np.array([[sum(value(row) for row in by_seed[sid]) for sid in gen_ids]
                         for by_seed in rows[arm]], dtype=float)

    q = {arm: table(arm, lambda row: row[0]) for arm in ARMS}
    good = {arm: table(arm, valid_kept) for arm in ARMS}
    n_runs = len(rows["random"])

    def figures(ks, idx):
        rate = {arm: good[arm][np.ix_(ks, idx)].sum() / max(q[arm][np.ix_(ks, idx)].sum(), 1)
                for arm in ARMS}
        return rate | {f"{arm}_over_random": rate[arm] / rate["random"] if rate["random"]
                       else math.inf for arm in ARMS if arm != "random"}

    point = figures(np.arange(n_runs), np.arange(len(gen_ids)))
    rng = np.random.default_rng(seed)
    boots = [figures(rng.integers(0, n_runs, n_runs), rng.integers(0, len(gen_ids),
                                                                   len(gen_ids)))
             for _ in range(n_boot)]
    return {"point": {k: _finite(v) for k, v in point.items()},
            "ci95": {k: _ci95([b[k] for b in boots]) for k in point}}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    work = Path(args.work_dir).resolve()
    record = json.loads((work / "headline.json").read_text(encoding="utf-8"))
    raw, cfg = record["raw"], record["config"]
    gen_ids = raw["generation_seed_ids"]
    train = [queries(p["cost"], "expert") for p in raw["policies"]]
    rows = _rows(record, gen_ids)
    horizon = max(_step(r) for arm in ARMS for by_seed in rows[arm] for v in by_seed.values()
                  for r in v)
    results = ResultsFile(Path(args.out).resolve(), {**vars(args), "headline_config": cfg,
                                                      "headline_commit": record.get("commit")})
    steps = per_step(rows, gen_ids, horizon)
    actions = per_action(rows, gen_ids)
    failures = failure_shares(rows, gen_ids)
    compared = {}
    for other in args.compare:
        theirs = json.loads((Path(other) / "headline.json").read_text(encoding="utf-8"))
        if theirs["raw"]["generation_seed_ids"] != gen_ids:
            raise ValueError(f"--compare {other}: other generation seeds than {work}'s; expected "
                             "a run on the same seed split")
        compared[str(Path(other).resolve())] = compare_runs(rows, _rows(theirs, gen_ids),
                                                            gen_ids)
    keep = ("target_valid_rows", "training_queries", "policy_generation_queries",
            "ratio_generation_only", "ratio_training_included", "ratio_amortised",
            "break_even_valid_rows")
    by_h = []
    for h in range(1, horizon + 1):
        cut = {arm: [truncate(by_seed, h) for by_seed in rows[arm]] for arm in ARMS}
        budget = int(min(sum(row[0] for sid in gen_ids for row in by_seed[sid])
                         for by_seed in cut["random"]))
        figs = headline(train, cut, gen_ids, [budget], int(cfg["amortise_rows"]), args.bootstrap)
        rate = valid_per_query(cut, gen_ids, args.bootstrap)
        by_h.append({"horizon": h, "budget": budget, "valid_per_expert_query": rate,
                     **{k: figs[k] for k in keep},
                     "ci95": {k: figs["ci95"][k] for k in keep if k in figs["ci95"]}})
    _print(steps, actions, by_h)
    print(f"failure kinds over {failures['steps']} steps: {failures['shares']}")
    for other, runs in compared.items():
        print(f"compared with {other}: " + "; ".join(
            f"{unit} {c['same_operation']}/{c['steps_in_both']} same operation, "
            f"{c['same_rewrite']} same rewrite" for unit, c in runs.items()))
    out = results.write(summary={"per_step": steps, "per_operation": actions, "by_horizon": by_h,
                                 "failure_shares": failures, "compared_runs": compared,
                                 "note": "the first h steps of each seed's evolution, from the "
                                         "headline's own rows: no new generation; the policy "
                                         "was trained at the full horizon"},
                        raw={"training_expert_queries": train, "generation_seed_ids": gen_ids})
    return json.loads(out.read_text(encoding="utf-8"))


def _rows(record: dict, gen_ids: list[str]) -> dict:
    """Per arm, per run: `headline.seed_rows` of the run a headline record names."""
    return {arm: [seed_rows(Path(r["out"]), gen_ids) for r in record["raw"]["runs"][arm]]
            for arm in ARMS}


def _print(steps: dict, actions: dict, by_h: list[dict]) -> None:
    print("per step: expert queries / judged-valid kept rows (mean over runs, summed over seeds)")
    for arm in ARMS:
        cells = "  ".join(f"s{s + 1} {q:.0f}/{g:.1f}" for s, (q, g) in
                          enumerate(zip(steps[arm]["expert_queries"], steps[arm]["valid_rows"],
                                        strict=True)))
        print(f"  {arm:<10} {cells}")
    print("per operation (every arm and run): valid rows per expert query")
    for a, v in actions["operations"].items():
        print(f"  {a:<26} {v['valid_rows']:>4.0f} / {v['expert_queries']:>5.0f} = "
              f"{v['valid_per_expert_query']}")
    print(f"  random arm overall {actions['random_valid_per_expert_query']}; best operation / "
          f"random {actions['best_over_random']} (a ceiling for a state-free mix)")
    print("by horizon h: valid rows per generation expert query (95% CI); policy / random")
    for f in by_h:
        p, ci = f["valid_per_expert_query"]["point"], f["valid_per_expert_query"]["ci95"]
        print(f"  h={f['horizon']} budget {f['budget']}: "
              + "  ".join(f"{arm} {p[arm]:.3f}" for arm in ARMS)
              + f"  policy/random {p['policy_over_random']} {ci['policy_over_random']}; "
              f"(a) training included {f['ratio_training_included']} "
              f"{f['ci95']['ratio_training_included']}; break-even "
              f"{f['break_even_valid_rows']} valid rows")


if __name__ == "__main__":
    main()
