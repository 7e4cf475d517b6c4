"""`teamsrl compare RUN_A RUN_B`: two generation runs side by side.

Every number is recomputed from the run's files — `rows.jsonl` (every row, its verdicts and the
requests it cost), `data.jsonl` (the kept rows) — plus the ledger snapshot in `summary.json`
(engine queries and cache hits) and the policy's training cost, so the table can be checked
against the artefacts.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from teamsrl.generation.filters import distinct_n, mean_pairwise_distance
from teamsrl.generation.rows import Row, read_rows
from teamsrl.layout import GenerationLayout


def _jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r}: not found — is this a finished "
                                "`teamsrl generate` run folder?")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()]


def run_stats(run: str | Path, encode=None) -> dict:
    """The comparison numbers of one generation run folder."""
    run = Path(run)
    files = GenerationLayout(run)
    _jsonl(files.rows)  # a clear error when the folder is not a generation run
    rows = read_rows(files.rows)
    kept = [Row.from_json(r) for r in _jsonl(files.data)]
    summary = json.loads(files.summary.read_text()) if files.summary.is_file() else {}
    drops = Counter(r.drop.kind.value for r in rows if not r.kept)
    kept_ids = {r.row_id for r in kept}
    drops["near-duplicate"] = sum(1 for r in rows if r.kept and r.row_id not in kept_ids)
    gen_q = {role: sum(r.queries[role] for r in rows) for role in ("expert", "reviewer")}
    train_q = {role: int(t.get("queries", 0))
               for role, t in summary.get("policy_training", {}).items()}
    texts = [r.text for r in kept]
    if encode is None:
        from teamsrl.embeddings import shared_embedder

        encode = shared_embedder().encode
    return {
        "run": str(run), "arm": summary.get("arm", "?"), "seeds": len({r.seed_id for r in rows}),
        "rows_generated": len(rows), "rows_kept": len(kept),
        "expert_generation": gen_q["expert"], "reviewer_generation": gen_q["reviewer"],
        "expert_training": train_q.get("expert", 0),
        "reviewer_training": train_q.get("reviewer", 0),
        "expert_total": gen_q["expert"] + train_q.get("expert", 0),
        "reviewer_total": gen_q["reviewer"] + train_q.get("reviewer", 0),
        "expert_per_kept_row": (gen_q["expert"] / len(kept)) if kept else float("nan"),
        "engine_queries_expert": summary.get("ledger", {}).get("expert", {}).get("queries"),
        "cache_hits_expert": summary.get("ledger", {}).get("expert", {}).get("cache_hits"),
        "diversity": round(mean_pairwise_distance(encode(texts)), 6) if len(texts) > 1 else 0.0,
        "distinct_2": round(distinct_n(texts, 2), 6),
        "drops": {k: v for k, v in sorted(drops.items()) if v},
    }


ROWS_SHOWN = [
    ("rows generated", "rows_generated", "d"), ("rows kept", "rows_kept", "d"),
    ("expert requests: generation", "expert_generation", "d"),
    ("expert requests: policy training", "expert_training", "d"),
    ("expert requests: total", "expert_total", "d"),
    ("reviewer requests: generation", "reviewer_generation", "d"),
    ("reviewer requests: policy training", "reviewer_training", "d"),
    ("reviewer requests: total", "reviewer_total", "d"),
    ("expert requests per kept row (generation)", "expert_per_kept_row", ".2f"),
    ("expert engine queries (ledger, cache misses)", "engine_queries_expert", "d"),
    ("expert cache hits (ledger)", "cache_hits_expert", "d"),
    ("diversity: mean pairwise distance", "diversity", ".4f"),
    ("diversity: distinct-2", "distinct_2", ".4f"),
]


def compare_table(a: dict, b: dict) -> str:
    """A plain-text table of two `run_stats` results."""
    def fmt(v, spec):
        return "-" if v is None else format(v, spec)

    head_a, head_b = f"A: {a['arm']}", f"B: {b['arm']}"
    width = max(len(r[0]) for r in ROWS_SHOWN) + 2
    lines = [f"A = {a['run']}", f"B = {b['run']}",
             f"{'':<{width}}{head_a:>14}{head_b:>14}"]
    for label, key, spec in ROWS_SHOWN:
        lines.append(f"{label:<{width}}{fmt(a[key], spec):>14}{fmt(b[key], spec):>14}")
    for reason in sorted(set(a["drops"]) | set(b["drops"])):
        lines.append(f"{'dropped: ' + reason:<{width}}{a['drops'].get(reason, 0):>14}"
                     f"{b['drops'].get(reason, 0):>14}")
    return "\n".join(lines)
