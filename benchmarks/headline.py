"""The headline, measured honestly: expert queries for an equally good dataset, trained policy
(training included) vs Evol-Instruct (uniform random operations) vs a frequency-matched random arm.

    .venv/bin/python benchmarks/headline.py --work-dir runs/headline \
        [--config experiments/quickstart.yaml] [--policies 3] [--budgets 48,96,192] \
        [--finetune-steps 12] [--amortise-rows 10000] [--set KEY=VALUE ...] \
        [--out benchmarks/results/headline.json]

Resumable: rerun the same command; a finished unit (a policy, an arm's run, a fine-tune) is
skipped, an interrupted one resumes (training from its checkpoint, generation from rows.jsonl).

1. Seeds are split ONCE (`teamsrl.seed_split`, `<work>/seed-split.json`) into policy-training
   seeds, generation seeds and reference tasks; an overlap is refused; the ids are recorded.
2. `--policies` policies are trained (`teamsrl.policy.train`), policy k with run seed
   `seed + 1000 k`, each in its own folder with its own cache and ledger. A policy's cost is
   every expert and reviewer engine query of its training ledger (warm-up included), read from
   the ledger SQLite; a missing ledger is an error, never 0.
3. Run k generates three arms on the generation seeds (`teamsrl.generation.run`, run seed
   `seed + k`): `policy` (policy k, sampled), `random` (uniform: Evol-Instruct) and `frequency`
   (policy k's overall action shares in its generation, no state: an exported policy whose
   logits are constant). Each arm has its own fresh cache and ledger: the ledger must show 0
   cache hits and the cache no more entries than the ledger's queries when the arm starts.
4. Cost unit: engine queries (ledger `queries`, cache misses); requests (queries + hits) are
   reported beside. A budget B is a prefix of the arm's generation order (seed, step) whose rows'
   expert queries sum to <= B (equal to the ledger's when the arm had 0 cache hits, checked).
5. Quality at each budget: kept rows judged valid instructions (`teamsrl.quality` through
   `teamsrl.generation.compare`'s judges), the reference loss of the fine-tune of the prefix's
   kept rows after `--finetune-steps` steps from the same base (`teamsrl.evaluate.reference`;
   0 steps: skipped), diversity as a secondary figure. The policy arm's x-axis adds its
   training queries.
6. Headline (a): expert queries, training included, the policy needs for as many judged-valid
   rows as the baseline has at its largest budget, over that budget, with a bootstrap 95%
   interval (resampling policies/runs and generation seeds, paired across arms); (b) the same
   with training amortised over `--amortise-rows` kept rows, and the break-even dataset size.
The results JSON (`benchmarks/results_file.py`) holds the command, commit, config, machine,
date and every raw per-run figure (a copy stays at `<work>/headline.json` when `--out` is
elsewhere); `<work>/headline.png` plots valid rows (and reference loss) vs expert queries with
interval bands when matplotlib is installed (`teamsrl.evaluate.figures.quality_vs_queries`,
which `teamsrl report <work>` draws on its page too).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sqlite3
import sys
from collections import Counter
from contextlib import closing
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from results_file import ResultsFile, add_out_argument  # noqa: E402

from teamsrl.evaluate.figures import quality_vs_queries  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")

ARMS = ("policy", "frequency", "random")
DONE = "headline-done.json"
LEDGER, CACHE = "ledger.sqlite", "llm-cache.sqlite"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work-dir", required=True, help="every unit's folder; rerun to resume")
    p.add_argument("--config", default="experiments/quickstart.yaml", help="experiment YAML")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override (repeatable), as `teamsrl --set`")
    p.add_argument("--policies", type=int, default=3, help="policies trained, distinct seeds")
    p.add_argument("--budgets", default="48,96,192",
                   help="expert-query budgets of generation, increasing, comma-separated")
    p.add_argument("--finetune-steps", type=int, default=12, help="optimizer steps of each "
                   "budget's fine-tune (same base, same steps); 0: no reference loss")
    p.add_argument("--amortise-rows", type=int, default=10000, help="the larger dataset (kept "
                   "rows) that headline (b) spreads the training queries over")
    p.add_argument("--bootstrap", type=int, default=2000, help="bootstrap resamples")
    p.add_argument("--address", default=None, help="Ray address for policy training")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    add_out_argument(p, "headline")
    args = p.parse_args(argv)
    budgets = [int(b) for b in args.budgets.split(",") if b.strip()]
    if not budgets or budgets != sorted(set(budgets)) or budgets[0] < 1:
        p.error(f"--budgets {args.budgets!r}: expected increasing positive integers")
    if args.policies < 1:
        p.error(f"--policies {args.policies}: expected >= 1")
    args.budget_list = budgets
    return args


# ---------------------------------------------------------------- accounting


def ledger_counts(path: Path) -> dict:
    """Per role (and per stage) engine queries, cache hits and requests of a ledger file, read
    from the SQLite rows themselves; a missing ledger raises (never counts as 0)."""
    if not path.is_file():
        raise FileNotFoundError(f"ledger {str(path)!r}: not found; expected the run's query "
                                "ledger (a missing ledger is never counted as 0 queries)")
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        rows = db.execute("SELECT stage, role, SUM(queries), SUM(cache_hits) FROM calls "
                          "GROUP BY stage, role").fetchall()
    roles: dict = {}
    stages: dict = {}
    for stage, role, q, h in rows:
        for bucket in (roles.setdefault(role, {"queries": 0, "cache_hits": 0}),
                       stages.setdefault(stage, {}).setdefault(role, {"queries": 0,
                                                                      "cache_hits": 0})):
            bucket["queries"] += int(q)
            bucket["cache_hits"] += int(h)
    for bucket in [*roles.values(), *(b for s in stages.values() for b in s.values())]:
        bucket["requests"] = bucket["queries"] + bucket["cache_hits"]
    return {"ledger": str(path), "roles": roles, "stages": stages}


def queries(counts: dict, role: str) -> int:
    """Engine queries of one role in `ledger_counts` output."""
    return counts["roles"].get(role, {}).get("queries", 0)


def cache_entries(path: Path) -> int:
    """Responses stored in a cache file (0 when absent)."""
    if not path.is_file():
        return 0
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return int(db.execute("SELECT COUNT(*) FROM responses").fetchone()[0])


def check_fresh(run_dir: Path) -> dict:
    """At a unit's start: its cache holds no response its own ledger did not pay for (a shared
    or copied cache is refused), and a unit starting afresh has 0 cache hits in its ledger. A
    resumed unit (its ledger has queries) may have hits: the responses it paid for before."""
    ledger = run_dir / LEDGER
    counts = ledger_counts(ledger) if ledger.is_file() else {"roles": {}}
    hits = sum(b["cache_hits"] for b in counts["roles"].values())
    paid = sum(b["queries"] for b in counts["roles"].values())
    stored = cache_entries(run_dir / CACHE)
    if stored > paid or (hits and not paid):
        raise RuntimeError(f"{run_dir}: {hits} cache hits and {stored} cached responses vs "
                           f"{paid} queries in its ledger at start; expected a fresh cache of "
                           "its own (0 hits, no response it did not pay for)")
    return {"cache_hits": hits, "cache_entries": stored, "queries": paid, "resumed": paid > 0}


# ---------------------------------------------------------------- the units


def _done(folder: Path) -> dict | None:
    f = folder / DONE
    return json.loads(f.read_text(encoding="utf-8")) if f.is_file() else None


def _finish(folder: Path, record: dict) -> dict:
    (folder / DONE).write_text(json.dumps(record, indent=1), encoding="utf-8")
    return record


def _with(config, **updates):
    """A copy of the experiment config with dotted keys replaced (validated again)."""
    from teamsrl.config import validate

    data = config.model_dump(mode="json")
    for key, value in updates.items():
        *path, last = key.split(".")
        target = data
        for part in path:
            target = target[part]
        target[last] = value
    return validate(data, source="<headline>")


def train_unit(config, k: int, split, work: Path, address: str | None, progress: bool) -> dict:
    """Policy k: trained on the policy-training slice; its cost from its own ledger."""
    from teamsrl.layout import RunLayout
    from teamsrl.policy.train import train_policy

    folder = work / f"train-{k}"
    if (record := _done(folder)) is not None:
        return record
    folder.mkdir(parents=True, exist_ok=True)
    cfg = _with(config, **{"run_dir": str(folder), "seed": config.seed + 1000 * k,
                           "env.seed_file": split.files["policy_training"],
                           "llm.cache.path": None, "llm.ledger_path": None,
                           "llm.cache.enabled": True})
    start = check_fresh(folder)
    resume, left = RunLayout.of(folder).iterations_left(cfg.policy.iterations)
    result = train_policy(cfg, address=address, resume=resume, iterations=left,
                          progress=progress)
    cost = ledger_counts(folder / LEDGER)  # every stage: train-policy and warmup
    return _finish(folder, {"k": k, "seed": cfg.seed, "export": str(result.export),
                            "iterations": result.iterations, "at_start": start, "cost": cost})


def frequency_policy(policy_dir: str, shares: dict[str, float], out: Path) -> str:
    """An exported policy with the shares of `shares` whatever the observation: the trained
    module with its last action layer's weights 0 and its bias log(share)."""
    import torch

    from teamsrl.policy.export import MODULE, SPEC, load_policy

    policy = load_policy(policy_dir)
    p = np.array([shares.get(n, 0.0) for n in policy.action_names], dtype=np.float64)
    if "stop" in policy.action_names:
        raise ValueError("frequency arm: the action set has `stop`, which leaves no row to count;"
                         " expected actions.include_stop=false")
    layers = [m for m in policy.module.pi.modules() if isinstance(m, torch.nn.Linear)]
    with torch.no_grad():
        layers[-1].weight.zero_()
        layers[-1].bias.copy_(torch.log(torch.tensor(np.maximum(p, 1e-12))))
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    policy.module.save_to_path(str((tmp / MODULE).resolve()))
    (tmp / SPEC).write_text(json.dumps(policy.spec.to_json(), indent=2), encoding="utf-8")
    # no training of its own: its generation ledger is its whole cost (printed as such)
    (tmp / "ledger.json").write_text("{}", encoding="utf-8")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    check = load_policy(out).action_probabilities(
        np.random.default_rng(0).normal(size=(4, policy.spec.observation_size)))
    if not np.allclose(check, p[None] / p.sum(), atol=1e-5):
        raise RuntimeError(f"frequency policy {out}: probabilities {check[0]} != shares {p}")
    return str(out)


def generate_unit(config, arm: str, k: int, policy: str, split, work: Path, engines,
                  progress: bool) -> dict:
    """One arm of run k on the generation slice, with its own fresh cache and ledger."""
    from teamsrl.generation.run import run_generation, stage_of
    from teamsrl.llm.cache import ResponseCache
    from teamsrl.llm.client import LLMClient, build_engines
    from teamsrl.llm.ledger import QueryLedger

    folder = work / f"{arm}-{k}"
    if (record := _done(folder)) is not None:
        return record
    folder.mkdir(parents=True, exist_ok=True)
    cfg = _with(config, **{"run_dir": str(folder), "seed": config.seed + k,
                           "generate.shards": 0, "llm.cache.enabled": True,
                           "llm.cache.path": None, "llm.ledger_path": None})
    start = check_fresh(folder)
    client = LLMClient(engines if engines is not None else build_engines(cfg.llm),
                       cache=ResponseCache(folder / CACHE),
                       ledger=QueryLedger(folder / LEDGER, stage=stage_of(policy)),
                       specs={"expert": cfg.llm.expert, "reviewer": cfg.llm.reviewer})
    try:
        summary = run_generation(cfg, policy, out_dir=folder / "generate",
                                 seeds=split.files["generation"], client=client,
                                 progress=progress)
    finally:
        client.close()
    return _finish(folder, {"arm": arm, "k": k, "seed": cfg.seed, "policy": policy,
                            "at_start": start, "cost": ledger_counts(folder / LEDGER),
                            "cache_entries": cache_entries(folder / CACHE),
                            "rows_total": summary["rows_total"],
                            "rows_kept": summary["rows_kept"],
                            "seeds_used": summary["seeds"], "out": str(folder / "generate")})


# ---------------------------------------------------------------- quality along the budget


def seed_rows(gen_dir: Path, gen_ids: list[str]) -> dict:
    """Per generation seed, in order: (expert queries, reviewer queries, kept, valid, text,
    record) of each row; validity by the run's judge, rows it did not judge by the embedding
    judge (`teamsrl.generation.compare`)."""
    from teamsrl.generation.compare import embedding_judge, read_generation, recorded_judge
    from teamsrl.layout import GenerationLayout

    rows, kept = read_generation(gen_dir)
    kept_ids = {r.row_id for r in kept}
    judged = [r for r in rows if r.row_id in kept_ids and r.validity is not None]
    unjudged = [r for r in rows if r.row_id in kept_ids and r.validity is None]
    valid: dict[str, bool] = {}
    if judged:
        used = recorded_judge(GenerationLayout(gen_dir).config, judged[0].reviewer_model)
        valid |= {r.row_id: r.validity >= used.threshold for r in judged}
    if unjudged:
        judge = embedding_judge()
        scores = judge.validity([r.instruction for r in unjudged])
        valid |= {r.row_id: s >= judge.threshold for r, s in zip(unjudged, scores, strict=True)}
    by_seed: dict[str, list] = {sid: [] for sid in gen_ids}
    for r in sorted(rows, key=lambda r: r.order):
        by_seed[_generation_seed(gen_dir, r, by_seed)].append(
            (r.queries["expert"], r.queries["reviewer"], r.row_id in kept_ids,
             valid.get(r.row_id, False), r.text, r.dataset_record()))
    return by_seed


def seed_returns(gen_dir: Path, gen_ids: list[str]) -> dict[str, float]:
    """Per generation seed: its episode's return, the sum of its rows' step rewards (the MDP's
    reward components as rows.jsonl records them)."""
    from teamsrl.generation.rows import read_rows

    out = dict.fromkeys(gen_ids, 0.0)
    for r in read_rows(gen_dir / "rows.jsonl"):
        out[_generation_seed(gen_dir, r, out)] += sum(r.reward_components.values())
    return out


def _generation_seed(gen_dir: Path, row, gen_ids) -> str:
    """The row's seed id, refused unless it is one of `gen_ids` (the generation slice)."""
    if row.seed_id not in gen_ids:
        raise ValueError(f"{gen_dir}: row of seed {row.seed_id!r}, which is not a generation "
                         "seed; expected only the generation slice")
    return row.seed_id


def returns_figures(returns: dict, gen_ids: list[str], n_boot: int, seed: int = 0) -> dict:
    """Mean episode return per arm over runs and generation seeds, and each arm's difference
    from the random arm's, with bootstrap 95% intervals: runs and seeds resampled with
    replacement, the same draw for every arm (paired by run index and seed id)."""
    table = {arm: np.array([[per_seed[sid] for sid in gen_ids] for per_seed in returns[arm]])
             for arm in ARMS}
    n_runs = len(returns["random"])

    def means(ks, idx) -> dict:
        m = {arm: float(table[arm][np.ix_(ks, idx)].mean()) for arm in ARMS}
        return m | {f"{arm}_minus_random": m[arm] - m["random"] for arm in ARMS
                    if arm != "random"}

    point = means(np.arange(n_runs), np.arange(len(gen_ids)))
    rng = np.random.default_rng(seed)
    boots = [means(rng.integers(0, n_runs, n_runs), rng.integers(0, len(gen_ids), len(gen_ids)))
             for _ in range(n_boot)]
    ci = {k: _ci95([b[k] for b in boots]) for k in point}
    return {"mean_return": {k: _finite(v) for k, v in point.items()}, "ci95": ci,
            "episodes_per_arm": n_runs * len(gen_ids),
            "note": "a generation episode is one seed's whole evolution (env.horizon steps) "
                    "under the run's MDP and reward; the return sums its rows' step rewards",
            "bootstrap": f"{n_boot} resamples of (runs, generation seeds), paired across arms"}


def prefix(by_seed: dict, order: list[str], budget: float) -> list[tuple]:
    """The rows of a generation order (seed ids) whose cumulative expert queries stay <= budget."""
    out, spent = [], 0
    for sid in order:
        for row in by_seed[sid]:
            spent += row[0]
            if spent > budget:
                return out
            out.append(row)
    return out


def valid_kept(row: tuple) -> int:
    """1 for a `seed_rows` row that was kept and judged valid (the quality unit), else 0."""
    return int(row[2] and row[3])


def curve(by_seed: dict, order: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(cumulative expert queries, cumulative judged-valid kept rows) after each row."""
    rows = [row for sid in order for row in by_seed[sid]]
    cost = np.cumsum([0] + [r[0] for r in rows])
    good = np.cumsum([0] + [valid_kept(r) for r in rows])
    return cost, good


def _good_at(c: tuple, budgets) -> np.ndarray:
    cost, good = c
    return good[np.searchsorted(cost, budgets, side="right") - 1].astype(float)


def valid_at(c: tuple, budget: float) -> float:
    """Judged-valid kept rows of the prefix within `budget`."""
    return float(_good_at(c, np.array([budget]))[0])


def needed(curves: list[tuple], target: float) -> float:
    """The least generation budget at which the mean over runs of `curves` reaches `target`
    (inf if it never does)."""
    grid = np.unique(np.concatenate([c[0] for c in curves]))
    means = np.mean([_good_at(c, grid) for c in curves], axis=0)
    hit = np.flatnonzero(means >= target)
    return float(grid[hit[0]]) if hit.size else math.inf


def budget_figures(by_seed: dict, order: list[str], budgets: list[int], encode) -> list[dict]:
    """Per budget: expert/reviewer queries used, kept and judged-valid rows, diversity."""
    from teamsrl.generation.filters import diversity

    out = []
    for b in budgets:
        rows = prefix(by_seed, order, b)
        kept = [r for r in rows if r[2]]
        out.append({"budget": b, "expert_queries": sum(r[0] for r in rows),
                    "reviewer_queries": sum(r[1] for r in rows), "rows": len(rows),
                    "kept_rows": len(kept), "valid_rows": sum(r[3] for r in kept),
                    "diversity": diversity([r[4] for r in kept], encode)})
    return out


def reference_unit(config, folder: Path, rows: list[tuple], steps: int, tasks, work: Path
                   ) -> dict:
    """The reference loss after `steps` optimizer steps on a prefix's kept rows (same base). Once
    the loss is recorded the unit's checkpoints and model are deleted (its metrics stay)."""
    from teamsrl.evaluate.reference import check_reference, reference_loss
    from teamsrl.finetune.launch import run_finetune

    if (record := _done(folder)) is not None:
        return record
    kept = [r[5] for r in rows if r[2]]
    if not kept:
        return {"skipped": "no kept row within the budget"}
    data = folder / "data"
    data.mkdir(parents=True, exist_ok=True)
    (data / "data.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n"
                                             for r in kept), encoding="utf-8")
    cfg = _with(config, **{"run_dir": str(work), "finetune.max_steps": steps,
                           "finetune.epochs": 1e6, "finetune.heldout_fraction": 0.0})
    out = folder / "finetune"
    check_reference(tasks[0], cfg, None)  # no reference task is a seed of this work dir
    s = run_finetune(cfg, str(data), out, resume=(out / "checkpoints" / "latest").is_file())
    r = reference_loss(s["model_dir"], cfg.finetune.base_model, tasks[0],
                       cfg.evaluate.reference, seed=cfg.seed, device=cfg.evaluate.device,
                       base_cache=work / "base-reference.json", skipped=tasks[1])
    record = _finish(folder, {"steps": s["steps"], "rows": len(kept), "loss": r.loss.mean,
                              "base_loss": r.base_loss.mean, "difference": r.difference.mean,
                              "n_tasks": r.n_tasks})
    # the loss is recorded: the DeepSpeed checkpoints (~4 GB at 135M: model + both ranks'
    # optimizer states, twice) and the saved model only served this unit; 27 units filled the
    # disk of the first full run
    for leftover in (out / "checkpoints", Path(s["model_dir"])):
        shutil.rmtree(leftover, ignore_errors=True)
    return record


# ---------------------------------------------------------------- the headline figures


def _finite(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), 6)


def _ci95(values) -> list[float | None]:
    """The 95% percentile interval of bootstrap values (inverted CDF; infinite ends: None)."""
    low, high = np.quantile(np.array(values, dtype=float), [0.025, 0.975],
                            method="inverted_cdf")
    return [_finite(low), _finite(high)]


def headline(train: list[int], rows: dict, gen_ids: list[str], budgets: list[int],
             amortise_rows: int, n_boot: int, seed: int = 0) -> dict:
    """Headline (a) and (b) with bootstrap 95% intervals (resampling runs and generation seeds,
    the same draw for every arm), and the valid-rows curve's bands at the budgets."""
    top = budgets[-1]

    def figures(ks, order) -> dict:
        cur = {arm: [curve(rows[arm][k], order) for k in ks] for arm in ARMS}
        target = float(np.mean([valid_at(c, top) for c in cur["random"]]))
        t = float(np.mean([train[k] for k in ks]))
        b_pol, b_freq = needed(cur["policy"], target), needed(cur["frequency"], target)
        r_gen = b_pol / top
        per_query = target / top  # the baseline's judged-valid rows per expert query
        big = amortise_rows / per_query if per_query > 0 else math.inf
        even = t / (1.0 - r_gen) if r_gen < 1.0 else math.inf
        return {"target_valid_rows": target, "training_queries": t,
                "policy_generation_queries": b_pol, "frequency_generation_queries": b_freq,
                "ratio_training_included": (t + b_pol) / top,
                "ratio_generation_only": r_gen, "frequency_ratio_generation_only": b_freq / top,
                "amortised_queries": big, "ratio_amortised": r_gen + t / big,
                "break_even_queries": even, "break_even_valid_rows": even * per_query,
                "curve": {arm: [float(np.mean([valid_at(c, b) for c in cur[arm]]))
                                for b in budgets] for arm in ARMS}}

    point = figures(range(len(train)), gen_ids)
    rng = np.random.default_rng(seed)
    boots = []
    for _ in range(n_boot):
        ks = rng.integers(0, len(train), len(train))
        order = [gen_ids[i] for i in np.sort(rng.integers(0, len(gen_ids), len(gen_ids)))]
        boots.append(figures(ks, order))

    keys = [k for k in point if k != "curve"]
    bands = {arm: [[float(np.quantile([b["curve"][arm][i] for b in boots], q,
                                      method="inverted_cdf")) for q in (0.025, 0.975)]
                   for i in range(len(budgets))] for arm in ARMS}
    return {**{k: _finite(point[k]) for k in keys},
            "ci95": {k: _ci95([b[k] for b in boots]) for k in keys}, "curve": point["curve"],
            "bands": bands,
            "reached": math.isfinite(point["policy_generation_queries"]),
            "bootstrap": f"{n_boot} resamples of (runs, generation seeds) with replacement, the "
                         "same draw for every arm; 95% percentile intervals (inverted CDF: an "
                         "unreached match counts as infinite, shown as null)",
            "amortise_valid_rows": amortise_rows, "budgets": budgets}


def reference_headline(per_run: dict, train: list[int], budgets: list[int]) -> dict | None:
    """Mean reference loss per arm and budget (NaN where a run had no kept row to fine-tune
    on), and the least budget (training included) at which the policy's mean loss is <= the
    baseline's at its largest budget with a loss in every run (grid resolution)."""
    losses = {arm: [[r[i].get("loss") for r in per_run[arm]] for i in range(len(budgets))]
              for arm in ARMS}
    ok = [i for i in range(len(budgets))
          if all(v is not None for arm in ARMS for v in losses[arm][i])]
    if not ok:
        return None
    mean = {arm: [float(np.mean(losses[arm][i])) if i in ok else math.nan
                  for i in range(len(budgets))] for arm in ARMS}
    target = mean["random"][ok[-1]]
    hit = [budgets[i] for i in ok if mean["policy"][i] <= target]
    t = float(np.mean(train))
    return {"mean_loss": {arm: [_finite(v) for v in vals] for arm, vals in mean.items()},
            "target_budget": budgets[ok[-1]], "target_loss": target,
            "ratio_training_included": (t + hit[0]) / budgets[ok[-1]] if hit else None,
            "note": "the policy's budgets B1..Bk only (no interval): matched when its mean "
                    "loss over runs is <= the baseline's at target_budget (null loss: some "
                    "run had no kept row within that budget)"}


# ---------------------------------------------------------------- the command


def action_shares(gen_dir: Path) -> dict[str, float]:
    """The share of each operation among the rows an arm generated."""
    from teamsrl.generation.rows import read_rows

    counts = Counter(r.action for r in read_rows(gen_dir / "rows.jsonl"))
    total = sum(counts.values())
    if not total:
        raise ValueError(f"{gen_dir}: no rows; the frequency arm needs the policy's actions")
    return {a: n / total for a, n in sorted(counts.items())}


def main(argv: list[str] | None = None, engines=None) -> dict:
    """Run (or resume) every unit, then compute and write the figures; returns the record.
    `engines`: expert/reviewer engines to share across the generation arms (default: loaded
    once from the config)."""
    args = parse_args(argv)
    work = Path(args.work_dir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    out = Path(args.out).resolve() if args.out else work / "headline.json"
    config_record = {k: v for k, v in vars(args).items() if k != "budget_list"}
    results = ResultsFile(out, config_record)

    from teamsrl.config import load_config
    from teamsrl.embeddings import shared_embedder
    from teamsrl.layout import RunLayout
    from teamsrl.llm.config import refuse_simulated
    from teamsrl.seed_split import read_slices, write_split

    config = load_config(args.config, [*args.set, f"run_dir={work}",
                                       "generate.sampling=sample"])
    refuse_simulated(config.llm, "benchmarks/headline.py")
    layout = RunLayout.of(work)
    split = write_split(config, layout.seed_split, layout.seed_slices)
    slices = read_slices(split, config)  # refuses an overlap
    gen_ids = [s.id for s in slices["generation"]][:config.generate.max_seeds or None]
    if args.finetune_steps and not slices["reference"]:
        raise ValueError("--finetune-steps > 0 needs reference tasks: split.reference = 0")
    progress = not args.quiet

    policies = [train_unit(config, k, split, work, args.address, progress)
                for k in range(args.policies)]
    runs: dict[str, list[dict]] = {arm: [] for arm in ARMS}
    for k, trained in enumerate(policies):
        if engines is None and not all(_done(work / f"{a}-{k}") for a in ARMS):
            from teamsrl.llm.client import build_engines

            engines = build_engines(config.llm)
        runs["policy"].append(generate_unit(config, "policy", k, trained["export"], split,
                                            work, engines, progress))
        freq = work / f"frequency-{k}" / "policy-export"
        if not _done(freq.parent):
            freq.parent.mkdir(parents=True, exist_ok=True)
            shares = action_shares(Path(runs["policy"][k]["out"]))
            frequency_policy(trained["export"], shares, freq)
        runs["frequency"].append(generate_unit(config, "frequency", k, str(freq), split, work,
                                               engines, progress))
        runs["random"].append(generate_unit(config, "random", k, "random", split, work,
                                            engines, progress))

    encode = shared_embedder(config.env.embedder).encode
    rows = {arm: [seed_rows(Path(r["out"]), gen_ids) for r in runs[arm]] for arm in ARMS}
    per_run: dict[str, list] = {arm: [] for arm in ARMS}
    for arm in ARMS:
        for k, run in enumerate(runs[arm]):
            expert_rows = sum(x[0] for sid in gen_ids for x in rows[arm][k][sid])
            run["prefix_cost_matches_ledger"] = expert_rows == queries(run["cost"], "expert")
            run["cache_hits_at_end"] = sum(b["cache_hits"] for b in run["cost"]["roles"].values())
            if expert_rows < args.budget_list[-1] and arm == "random":
                raise ValueError(f"{arm}-{k}: {expert_rows} expert queries generated < the "
                                 f"largest budget {args.budget_list[-1]}; expected more "
                                 "generation seeds (generate.max_seeds) or smaller --budgets")
            points = budget_figures(rows[arm][k], gen_ids, args.budget_list, encode)
            for f in points:
                if args.finetune_steps:
                    f["reference"] = reference_unit(
                        config, work / f"{arm}-{k}" / f"reference-B{f['budget']}",
                        prefix(rows[arm][k], gen_ids, f["budget"]), args.finetune_steps,
                        _reference_tasks(split, config), work)
                else:
                    f["reference"] = {"skipped": "--finetune-steps 0"}
            run["budgets"] = points
            per_run[arm].append([f["reference"] for f in points])

    train = [queries(p["cost"], "expert") for p in policies]
    for trained, run in zip(policies, runs["policy"], strict=True):
        run["total_with_training"] = {
            role: queries(trained["cost"], role) + queries(run["cost"], role)
            for role in ("expert", "reviewer")}
    figs = headline(train, rows, gen_ids, args.budget_list, args.amortise_rows, args.bootstrap,
                    config.seed)
    figs["training_reviewer_queries"] = float(np.mean([queries(p["cost"], "reviewer")
                                                       for p in policies]))
    returns = {arm: [seed_returns(Path(r["out"]), gen_ids) for r in runs[arm]] for arm in ARMS}
    figs_return = returns_figures(returns, gen_ids, args.bootstrap, config.seed)
    ref = reference_headline(per_run, train, args.budget_list)
    try:
        png = quality_vs_queries(figs, ref, layout.headline.with_suffix(".png"))
    except ImportError:  # matplotlib is optional: the figures are in the JSON
        png = None
    if png and args.out:
        shutil.copyfile(png, out.with_suffix(".png"))
    _print(figs, ref, args, png, policies, runs)
    _print_returns(figs_return)
    record_path = results.write(
        summary={"valid_rows": figs, "reference_loss": ref, "episode_return": figs_return,
                 "png": str(png) if png else
                 "not drawn: matplotlib is not installed",
                 "cost_unit": "engine queries (ledger `queries`, cache misses); requests = "
                              "queries + cache hits beside"},
        raw={"seed_split": split.to_json(), "generation_seed_ids": gen_ids,
             "policies": policies, "runs": runs, "episode_returns": returns})
    if record_path != layout.headline:  # `teamsrl report <work>` reads it from the work dir
        shutil.copyfile(record_path, layout.headline)
    return json.loads(record_path.read_text(encoding="utf-8"))


def _reference_tasks(split, config):
    from teamsrl.evaluate.reference import load_reference

    return load_reference(split.files["reference"], config)


def _print(figs: dict, ref: dict | None, args, png, policies: list, runs: dict) -> None:
    top = args.budget_list[-1]
    print(f"{'unit':<14}{'expert q':>10}{'reviewer q':>12}{'cache hits':>12}{'requests':>10}"
          "  (engine queries = cache misses, from each unit's own ledger)")
    units = [(f"train-{p['k']}", p) for p in policies]
    units += [(f"{arm}-{r['k']}", r) for arm in ARMS for r in runs[arm]]
    for name, unit in units:
        roles = unit["cost"]["roles"].values()
        print(f"{name:<14}{queries(unit['cost'], 'expert'):>10}"
              f"{queries(unit['cost'], 'reviewer'):>12}{sum(b['cache_hits'] for b in roles):>12}"
              f"{sum(b['requests'] for b in roles):>10}")
    ci = figs["ci95"]
    t = figs["training_queries"]
    if not figs["target_valid_rows"]:
        print(f"the baseline kept no judged-valid row within {top} expert queries: the ratios "
              "below compare nothing (raise --budgets or generate.max_seeds)")
    if figs["reached"]:
        print(f"(a) policy / Evol-Instruct expert queries for {figs['target_valid_rows']:.1f} "
              f"judged-valid rows, TRAINING INCLUDED ({t:.0f} training (warm-up included; "
              f"reviewer {figs['training_reviewer_queries']:.0f}) + "
              f"{figs['policy_generation_queries']:.0f} generation vs {top}): "
              f"{figs['ratio_training_included']:.3f} 95% CI {ci['ratio_training_included']}")
    else:
        print(f"(a) the policy never reached the baseline's {figs['target_valid_rows']:.1f} "
              f"judged-valid rows at {top} queries (training included: {t:.0f})")
    print(f"(b) training amortised over {args.amortise_rows} judged-valid rows "
          f"({figs['amortised_queries']} baseline queries): ratio {figs['ratio_amortised']} "
          f"95% CI {ci['ratio_amortised']}; break-even at {figs['break_even_valid_rows']} "
          f"judged-valid rows ({figs['break_even_queries']} queries)")
    print(f"frequency-matched / Evol-Instruct, GENERATION QUERIES ONLY (the shares come from "
          f"a trained policy): {figs['frequency_ratio_generation_only']}")
    if ref:
        print(f"reference loss: policy / Evol-Instruct expert queries, TRAINING INCLUDED, to "
              f"match its loss at {ref['target_budget']} queries: "
              f"{ref['ratio_training_included']} (budget grid, no interval)")
    print(f"plot: {png}" if png else "plot: not drawn (matplotlib is not installed)")


def _print_returns(figs: dict) -> None:
    m, ci = figs["mean_return"], figs["ci95"]
    print(f"mean episode return over {figs['episodes_per_arm']} generation episodes an arm "
          "(95% bootstrap CI, runs and seeds resampled, paired):")
    for arm in ARMS:
        diff = "" if arm == "random" else (f"; minus random {m[arm + '_minus_random']} "
                                           f"{ci[arm + '_minus_random']}")
        print(f"  {arm:<10} {m[arm]} {ci[arm]}{diff}")


if __name__ == "__main__":
    main()
