"""The end of a generation run: near-duplicate removal, data.jsonl + dataset/, the summary
(counts, drop reasons, diversity, the diversity-vs-queries curve, the ledger of this arm and the
policy's training cost), the dataset card, and the W&B run of the arm (`track`: the counts and
a few seeds' evolution chains as a table, job `generate-<arm>`, files under the arm's folder)."""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from teamsrl.config import ExperimentConfig
from teamsrl.generation.card import write_card
from teamsrl.generation.chains import CHAIN_COLUMNS, chain_steps
from teamsrl.generation.episodes import arm_of
from teamsrl.generation.filters import deduplicate, diversity
from teamsrl.generation.rows import Row
from teamsrl.layout import GenerationLayout, RunLayout
from teamsrl.seeds import Seed, SeedSet

CURVE_POINTS = 20


def finalize(config: ExperimentConfig, out: GenerationLayout, policy: str, rows: list[Row],
             pool: Sequence[Seed], seed_set: SeedSet, client, stage: str) -> dict:
    """Deduplicate, write data.jsonl + dataset/ + the card; return the summary."""
    from teamsrl.embeddings import shared_embedder

    embedder = shared_embedder(config.env.embedder)
    d = config.generate.dedup
    candidates = [r for r in rows if r.kept]
    kept, dups = deduplicate(candidates, d.minhash_threshold, d.num_perm, d.embedding_threshold,
                             embedder.encode)
    duplicate_of = {r.row_id: drop for r, drop in dups}
    drops = Counter(r.drop.kind.value for r in rows if not r.kept)
    drops.update(drop.kind.value for drop in duplicate_of.values())
    write_data(out, kept)
    result = {
        "arm": arm_of(policy), "policy": policy, "stage": stage, "out": str(out.root),
        "seeds": len(pool),
        "seed_source": seed_set.source, "seeds_skipped": seed_set.skipped[:100],
        "rows_total": len(rows), "rows_kept": len(kept),
        "drops": dict(sorted(drops.items())),
        "queries": {"expert": sum(r.queries["expert"] for r in rows),
                    "reviewer": sum(r.queries["reviewer"] for r in rows)},
        "diversity": diversity([r.text for r in kept], embedder.encode),
        "curve": curve(rows, {r.row_id for r in kept}, embedder.encode),
        "ledger": _ledger(config, client, stage),
        "policy_training": training_queries(policy),
    }
    write_card(out, config, result)
    track(config, out, result, rows, {r.row_id for r in kept})
    return result


def track(config: ExperimentConfig, out: GenerationLayout, summary: dict, rows: list[Row],
          kept_ids: set[str]) -> None:
    """Log the arm's counts and its first seeds' evolution chains (`chain_steps`) as the W&B
    table `generate/chains` (job `generate-<arm>`, run files under the arm's folder)."""
    from teamsrl.tracking import Tracker

    tracker = Tracker(config.model_copy(update={"run_dir": str(out.root)}),
                      f"generate-{summary['arm']}")
    steps = chain_steps(rows, kept_ids)
    tracker.log({"generate/rows_total": summary["rows_total"],
                 "generate/rows_kept": summary["rows_kept"],
                 "generate/expert_queries": summary["queries"]["expert"],
                 "generate/chain_lines": len(steps)}, step=0)
    if tracker.run is not None:
        import wandb

        table = wandb.Table(columns=list(CHAIN_COLUMNS), data=[s.cells() for s in steps])
        tracker.run.log({"generate/chains": table}, step=0)
    tracker.finish()


def write_data(out: GenerationLayout, kept: list[Row]) -> None:
    """data.jsonl (atomically replaced) and the same rows as a `datasets.Dataset`."""
    from datasets import Dataset

    records = [r.dataset_record() for r in kept]
    tmp = out.data.with_name(out.data.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    os.replace(tmp, out.data)
    if records:
        ds = Dataset.from_list([{**r, "reward_components": json.dumps(r["reward_components"]),
                                 "sampling": json.dumps(r["sampling"]),
                                 "queries": json.dumps(r["queries"])} for r in records])
        staging = out.dataset.with_name(out.dataset.name + ".tmp")
        ds.save_to_disk(str(staging))
        shutil.rmtree(out.dataset, ignore_errors=True)
        os.replace(staging, out.dataset)


def curve(rows: list[Row], kept_ids: set[str], encode: Callable) -> list[dict]:
    """Diversity of the final dataset's rows generated so far vs expert queries spent so far,
    in seed order (the order a run spends queries in)."""
    by_seed: dict[int, list[Row]] = {}
    for r in rows:
        by_seed.setdefault(r.seed_index, []).append(r)
    order = sorted(by_seed)
    if not order:
        return []
    marks = {order[max(0, -(-k * len(order) // CURVE_POINTS) - 1)]
             for k in range(1, CURVE_POINTS + 1)}
    points, queries, texts, reviewer = [], 0, [], 0
    for idx in order:
        for r in sorted(by_seed[idx], key=lambda r: r.order):
            queries += r.queries["expert"]
            reviewer += r.queries["reviewer"]
            if r.row_id in kept_ids:
                texts.append(r.text)
        if idx in marks:
            div = diversity(texts, encode)
            points.append({"expert_queries": queries, "reviewer_queries": reviewer,
                           "rows_kept": len(texts), "diversity": div["mean_pairwise_distance"],
                           "distinct_2": div["distinct_2"]})
    return points


def _ledger(config: ExperimentConfig, client, stage: str) -> dict:
    """This arm's ledger totals per role (engine queries, cache hits, tokens)."""
    if client is not None:
        totals = client.ledger.totals(stage=stage)
    else:
        from teamsrl.llm.ledger import QueryLedger

        path = config.llm.ledger_path or RunLayout.of(config.run_dir).ledger
        if not Path(path).is_file():
            return {}
        ledger = QueryLedger(path)
        try:
            totals = ledger.totals(stage=stage)
        finally:
            ledger.close()
    return {role: t.as_dict() for role, t in totals.items()}


def training_ledger_candidates(policy: str) -> list[Path]:
    """Where a policy's training cost may be, in order: `ledger.json` in the export folder,
    then the run's `policy/ledger.json` above it (`teamsrl train-policy` writes that one)."""
    path = Path(policy)
    return [path / "ledger.json", *(c / "ledger.json" if c.name == "policy"
                                    else RunLayout.of(c).policy_ledger
                                    for c in (path, path.parent, path.parent.parent))]


def training_queries(policy: str) -> dict:
    """The policy's training cost, per role (random: none). A policy with no training ledger
    is an error, never a cost of 0: an untrained or hand-made policy says so with a
    `ledger.json` holding `{}` in its folder."""
    if policy == "random":
        return {}
    candidates = training_ledger_candidates(policy)
    for f in candidates:
        if f.is_file():
            return json.loads(f.read_text())
    raise ValueError(f"--policy {policy!r}: no training ledger (looked for "
                     f"{', '.join(str(c) for c in dict.fromkeys(candidates))}); its training "
                     "queries are part of the policy arm's cost. Train it with `teamsrl "
                     "train-policy` (which writes policy/ledger.json) or, for a policy with no "
                     "training cost, put a ledger.json holding {} in its folder")
