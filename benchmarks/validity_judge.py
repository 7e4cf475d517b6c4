"""Train the validity judge on the dev part of the labelled set, measure every candidate on test.

Candidates (`teamsrl.quality`): `embedding` (logistic regression on MiniLM + cheap features),
`reviewer` (SmolLM2's few-shot P("Valid task") through `LLMClient.score`), `combined` (the
regression plus the reviewer's fluency and reply features: two short queries a text);
`combined_fewshot` (combined plus the few-shot log-odds: a third, 400-token query a text) is
measured beside them, not shipped.

On dev: the regularisation C and each method's threshold are chosen from out-of-fold
predictions (folds grouped by seed, so one seed's chain never sits on both sides); the
regressions are then refit on all of dev. Every method's validity is 0 where
`points_at_missing_context` fires (the shipped judge's default `missing_context: invalid`). Each
threshold: the best out-of-fold accuracy among thresholds with invalid recall >= 0.85 at
precision >= 0.8 (else the best accuracy). On test (touched only here): accuracy and the invalid
class's precision and recall at that threshold, each with a bootstrap 95% interval (items
resampled, 2000 times, fixed rng). Held out as well, the hand-labelled kept rows of generation
runs (`tests/data/validity/kept/`, `--kept`): per file, how many pass each threshold and the
invalid share among those (`before-*`: rows kept with no judge, the population a filter sees;
`after-*`: rows an older judge let through, its hard cases). Writes
benchmarks/results/validity_judge.json; with `--write-judge` also the shipped weights,
teamsrl/data/validity_judge.json. Reviewer scores go through the cached client: a rerun costs no
query.

    .venv/bin/python benchmarks/validity_judge.py --write-judge --threads 1
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402

from teamsrl.embeddings import shared_embedder  # noqa: E402
from teamsrl.llm.embedded import MINILM_ID  # noqa: E402
from teamsrl.quality import (  # noqa: E402
    CHEAP_FEATURES,
    DEFAULT_JUDGE_FILE,
    METHODS,
    OPENINGS,
    REVIEWER_FEATURES,
    REVIEWER_QUERIES_PER_TEXT,
    JudgeFile,
    LinearModel,
    feature_names,
    points_at_missing_context,
    reviewer_logodds,
    reviewer_prompt_digest,
    reviewer_signals,
    text_features,
)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data" / "validity"
C_GRID = (0.3, 1.0, 3.0, 10.0, 30.0)
KEPT = DATA / "kept"
GOAL_RECALL, GOAL_PRECISION = 0.85, 0.8


def load_items(path: Path) -> list[dict]:
    """Labelled items of one part; an unlabelled item is an error. Kept rows (`<seed>/<step>`
    ids, no `seed_id`) get their seed from the id."""
    items = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    missing = [it["id"] for it in items if not it.get("label")]
    if missing:
        raise SystemExit(f"{path}: {len(missing)} unlabelled item(s), e.g. {missing[:3]}")
    for it in items:
        if "seed_id" not in it:
            it["seed_id"] = it["id"].split("/")[0]
    return items


def figures(valid: np.ndarray, p: np.ndarray, threshold: float) -> dict[str, float]:
    """Accuracy and the invalid class's precision and recall (invalid = p < threshold)."""
    pred_invalid, invalid = p < threshold, ~valid
    tp = float(np.sum(pred_invalid & invalid))
    return {"accuracy": float(np.mean(pred_invalid == invalid)),
            "precision_invalid": tp / pred_invalid.sum() if pred_invalid.any() else float("nan"),
            "recall_invalid": tp / invalid.sum() if invalid.any() else float("nan")}


def bootstrap(valid: np.ndarray, p: np.ndarray, threshold: float, resamples: int, seed: int
              ) -> dict[str, dict]:
    """Each figure with its percentile 95% interval over item resamples."""
    rng = np.random.default_rng(seed)
    point = figures(valid, p, threshold)
    draws = {k: [] for k in point}
    for _ in range(resamples):
        idx = rng.integers(0, len(p), len(p))
        for k, v in figures(valid[idx], p[idx], threshold).items():
            draws[k].append(v)
    return {k: {"value": round(point[k], 4),
                "ci95": [round(float(np.nanpercentile(draws[k], q)), 4) for q in (2.5, 97.5)]}
            for k in point}


def paired_gain(valid: np.ndarray, p: np.ndarray, t: float, p_ref: np.ndarray, t_ref: float,
                resamples: int, seed: int) -> dict:
    """Accuracy of (p, t) minus that of the reference (p_ref, t_ref) on the same resamples."""
    right = (p < t) == ~valid
    right_ref = (p_ref < t_ref) == ~valid
    rng = np.random.default_rng(seed)
    draws = [np.mean(right[idx]) - np.mean(right_ref[idx])
             for idx in (rng.integers(0, len(p), len(p)) for _ in range(resamples))]
    return {"value": round(float(np.mean(right) - np.mean(right_ref)), 4),
            "ci95": [round(float(np.percentile(draws, q)), 4) for q in (2.5, 97.5)]}


def choose_threshold(valid: np.ndarray, p: np.ndarray) -> float:
    """The dev threshold: best accuracy among those meeting the goal (invalid recall >= 0.85 at
    precision >= 0.8); when none does, the best accuracy."""
    values = np.unique(p)
    cands = np.concatenate([[0.0], (values[:-1] + values[1:]) / 2, [1.0]])
    scored = [(figures(valid, p, t), float(t)) for t in cands]
    meets = [(f["accuracy"], t) for f, t in scored
             if f["recall_invalid"] >= GOAL_RECALL and f["precision_invalid"] >= GOAL_PRECISION]
    pool = meets or [(f["accuracy"], t) for f, t in scored]
    best = max(a for a, _ in pool)
    ties = [t for a, t in pool if a == best]
    return round(float(np.median(ties)), 6)


def recall_threshold(valid: np.ndarray, p: np.ndarray) -> float:
    """The dev threshold of a recall-first filter: the best precision among thresholds with
    invalid recall >= 0.85."""
    values = np.unique(p)
    cands = np.concatenate([(values[:-1] + values[1:]) / 2, [1.0]])
    scored = [(figures(valid, p, t), float(t)) for t in cands]
    ok = [(f["precision_invalid"], -t, t) for f, t in scored if f["recall_invalid"] >= GOAL_RECALL]
    return round(max(ok)[2], 6)


def kept_figures(valid: np.ndarray, p: np.ndarray, threshold: float) -> dict:
    """On one file of hand-labelled kept rows: how many pass and the invalid share of those."""
    def at(t: float) -> dict:
        passing = p >= t
        return {"passing": int(passing.sum()),
                "invalid_share_passing": round(float(np.mean(~valid[passing])), 4)
                if passing.any() else None}

    return {"rows": len(p), "invalid_share": round(float(np.mean(~valid)), 4), **at(threshold),
            "by_threshold": {f"{t:.2f}": at(t) for t in np.arange(0.30, 0.86, 0.05)}}


def fit_linear(x: np.ndarray, valid: np.ndarray, groups: list[str], names: list[str], seed: int,
               ruled_out: np.ndarray) -> tuple[LinearModel, dict]:
    """C by grouped-CV accuracy, threshold on the out-of-fold probabilities (0 where
    `ruled_out`), refit on all."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold

    folds = list(GroupKFold(n_splits=5).split(x, valid, groups))
    best = None
    for c in C_GRID:
        oof = np.zeros(len(valid))
        for tr, te in folds:
            model = LogisticRegression(C=c, max_iter=5000, random_state=seed)
            oof[te] = model.fit(x[tr], valid[tr]).predict_proba(x[te])[:, 1]
        oof[ruled_out] = 0.0
        acc = figures(valid, oof, choose_threshold(valid, oof))["accuracy"]
        if best is None or acc > best[0]:
            best = (acc, c, oof)
    _, c, oof = best
    threshold = choose_threshold(valid, oof)
    model = LogisticRegression(C=c, max_iter=5000, random_state=seed).fit(x, valid)
    linear = LinearModel(names, [float(v) for v in model.coef_[0]], float(model.intercept_[0]),
                         threshold)
    return linear, {"C": c, "oof": oof}


def git_commit() -> str:
    """The checkout's HEAD commit."""
    return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                          cwd=ROOT).stdout.strip()


def main(argv: list[str] | None = None) -> int:
    """Fit on dev, measure on test, write the results (and the judge with --write-judge)."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dev", default=str(DATA / "dev.jsonl"))
    p.add_argument("--test", default=str(DATA / "test.jsonl"))
    p.add_argument("--kept", nargs="*", default=[str(f) for f in sorted(KEPT.glob("*.jsonl"))],
                   help="hand-labelled kept rows of generation runs, scored as held-out checks")
    p.add_argument("--config", default=str(ROOT / "experiments" / "quickstart.yaml"),
                   help="experiment config whose llm section builds the reviewer")
    p.add_argument("--run-dir", default=str(ROOT / "runs" / "validity-judge"),
                   help="the reviewer's cache and ledger")
    p.add_argument("--results", default=str(ROOT / "benchmarks" / "results" /
                                            "validity_judge.json"))
    p.add_argument("--write-judge", action="store_true", help=f"write {DEFAULT_JUDGE_FILE.name}")
    p.add_argument("--judge-out", default=str(DEFAULT_JUDGE_FILE))
    p.add_argument("--resamples", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0, help="bootstrap and solver rng")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--dev-only", action="store_true",
                   help="fit and print dev out-of-fold figures; leave the test part untouched")
    args = p.parse_args(argv)

    from teamsrl.config import load_config
    from teamsrl.llm.client import build_client

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    dev, test = load_items(Path(args.dev)), load_items(Path(args.test))
    shared = {it["seed_id"] for it in dev} & {it["seed_id"] for it in test}
    if shared:
        raise SystemExit(f"seed(s) {sorted(shared)[:3]} in both dev and test")
    kept = {Path(f).stem: load_items(Path(f)) for f in args.kept}
    config = load_config(args.config, [f"run_dir={args.run_dir}"])
    client = build_client(config.llm, args.run_dir, stage="quality")
    embedder = shared_embedder(MINILM_ID)

    def measure(items: list[dict]) -> dict:
        texts = [it["rewrite"] for it in items]
        start = time.perf_counter()
        x = text_features(embedder, texts)
        emb_s = time.perf_counter() - start
        start = time.perf_counter()
        # Chunks: each is cached as it completes, so an interrupted run resumes for free.
        lo = np.concatenate([reviewer_logodds(client, texts[i : i + 16])
                             for i in range(0, len(texts), 16)])
        flu = np.concatenate([reviewer_signals(client, texts[i : i + 16])
                              for i in range(0, len(texts), 16)])
        return {"x": x, "lo": lo, "flu": flu,
                "valid": np.array([it["label"] == "valid" for it in items]),
                "groups": [it["seed_id"] for it in items],
                "ruled_out": np.array([points_at_missing_context(s) for s in texts]),
                "seconds": {"embedding": emb_s, "reviewer": time.perf_counter() - start}}

    d = measure(dev)
    names = feature_names(embedder.dim)
    fit = lambda x, cols: fit_linear(x, d["valid"], d["groups"], cols, args.seed,  # noqa: E731
                                     d["ruled_out"])
    emb_model, emb_fit = fit(d["x"], names)
    comb_model, comb_fit = fit(np.hstack([d["x"], d["flu"]]), [*names, *REVIEWER_FEATURES])
    fs_model, fs_fit = fit(np.hstack([d["x"], d["flu"], d["lo"][:, None]]),
                           [*names, *REVIEWER_FEATURES, "reviewer_logodds"])

    def sig(z: np.ndarray, ruled_out: np.ndarray) -> np.ndarray:
        return np.where(ruled_out, 0.0, 1.0 / (1.0 + np.exp(-z)))

    rev_threshold = choose_threshold(d["valid"], sig(d["lo"], d["ruled_out"]))
    dev_p = {"embedding": emb_fit["oof"], "reviewer": sig(d["lo"], d["ruled_out"]),
             "combined": comb_fit["oof"],
             "combined_fewshot": fs_fit["oof"]}
    thresholds = {"embedding": emb_model.threshold, "reviewer": rev_threshold,
                  "combined": comb_model.threshold, "combined_fewshot": fs_model.threshold}
    for m in (*METHODS, "combined_fewshot"):
        print(f"dev (out of fold) {m:10} threshold {thresholds[m]:.3f} " + "  ".join(
            f"{k} {v:.3f}" for k, v in figures(d["valid"], dev_p[m], thresholds[m]).items()))
    if args.dev_only:
        client.close()
        return 0
    t = measure(test)
    kept_parts = {name: measure(items) for name, items in kept.items()}
    parts = {"dev": d, "test": t}
    ledger = client.ledger.session_totals()
    client.close()
    def scores(part: dict) -> dict[str, np.ndarray]:
        """Each method's validity on a measured part (0 where the missing-context rule fires)."""
        p = {"embedding": emb_model.probability(part["x"]), "reviewer": sig(part["lo"], 0),
             "combined": comb_model.probability(np.hstack([part["x"], part["flu"]])),
             "combined_fewshot": fs_model.probability(
                 np.hstack([part["x"], part["flu"], part["lo"][:, None]]))}
        return {m: np.where(part["ruled_out"], 0.0, v) for m, v in p.items()}

    test_p = scores(t)
    kept_p = {name: scores(k) for name, k in kept_parts.items()}
    from sklearn.metrics import roc_auc_score

    candidates = {}
    for m in (*METHODS, "combined_fewshot"):
        test_fig = bootstrap(t["valid"], test_p[m], thresholds[m], args.resamples, args.seed)
        t_recall = recall_threshold(d["valid"], dev_p[m])
        candidates[m] = {
            "threshold": thresholds[m],
            "C": {"embedding": emb_fit["C"], "combined": comb_fit["C"],
                  "combined_fewshot": fs_fit["C"]}.get(m),
            "dev_out_of_fold": {k: round(v, 4) for k, v in
                                figures(d["valid"], dev_p[m], thresholds[m]).items()},
            "kept_rows_held_out": {
                name: kept_figures(k["valid"], kept_p[name][m], thresholds[m])
                for name, k in kept_parts.items()},
            "test": test_fig,
            "test_auc_valid": round(float(roc_auc_score(t["valid"], test_p[m])), 4),
            "dev_auc_valid_out_of_fold": round(float(roc_auc_score(d["valid"], dev_p[m])), 4),
            "recall_first": {
                "threshold": t_recall,
                "dev_out_of_fold": {k: round(v, 4) for k, v in
                                    figures(d["valid"], dev_p[m], t_recall).items()},
                "test": bootstrap(t["valid"], test_p[m], t_recall, args.resamples, args.seed)},
            "meets_goal_on_test": bool(test_fig["recall_invalid"]["value"] >= GOAL_RECALL and
                                       test_fig["precision_invalid"]["value"] >= GOAL_PRECISION),
            "accuracy_minus_embedding_paired": paired_gain(
                t["valid"], test_p[m], thresholds[m], test_p["embedding"],
                thresholds["embedding"], args.resamples, args.seed),
            # combined_fewshot: combined's two and the few-shot verdict
            "reviewer_queries_per_text": REVIEWER_QUERIES_PER_TEXT.get(m, 3),
            "test_validity": [round(float(v), 4) for v in test_p[m]],  # test.jsonl order
        }
    chosen = max(METHODS, key=lambda m: (candidates[m]["test"]["accuracy"]["value"],
                                         -candidates[m]["reviewer_queries_per_text"]))
    load = Path("/proc/loadavg").read_text().split()[:3]
    result = {
        "command": " ".join([".venv/bin/python", "benchmarks/validity_judge.py", *sys.argv[1:]]),
        "commit": git_commit(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {"nproc": os.cpu_count(), "load_1_5_15": [float(v) for v in load],
                    "uptime": subprocess.run(["uptime"], capture_output=True,
                                             text=True).stdout.strip()},
        "config": {"dev": str(Path(args.dev).relative_to(ROOT)), "dev_items": len(dev),
                   "kept": [str(Path(f).resolve().relative_to(ROOT)) for f in args.kept],
                   "test": str(Path(args.test).relative_to(ROOT)), "test_items": len(test),
                   "dev_invalid": int((~d["valid"]).sum()),
                   "test_invalid": int((~t["valid"]).sum()),
                   "embedder": MINILM_ID, "reviewer": config.llm.reviewer.model,
                   "reviewer_prompt": reviewer_prompt_digest(), "cheap_features": CHEAP_FEATURES,
                   "openings_embedded": OPENINGS,
                   "C_grid": C_GRID, "cv": "GroupKFold(5) by seed_id on dev",
                   "missing_context": "validity 0 where points_at_missing_context fires "
                   f"(dev {int(d['ruled_out'].sum())}, test {int(t['ruled_out'].sum())} items)",
                   "missing_context_hits": {
                       name: {"invalid": int((part["ruled_out"] & ~part["valid"]).sum()),
                              "valid": int((part["ruled_out"] & part["valid"]).sum()),
                              "items": int(part["valid"].size)}
                       for name, part in {"dev": d, "test": t, **kept_parts}.items()},
                   "threshold_rule": "best out-of-fold accuracy among thresholds with "
                   f"invalid recall >= {GOAL_RECALL} and precision >= {GOAL_PRECISION}; else "
                   "best accuracy (recall_first: best dev precision at recall >= "
                   f"{GOAL_RECALL})", "resamples": args.resamples, "rng_seed": args.seed,
                   "positive_class": "invalid (validity < threshold)"},
        "seconds": {k: {m: round(v, 1) for m, v in parts[k]["seconds"].items()} for k in parts},
        "reviewer_ledger": {r: vars(v) for r, v in ledger.items()},
        "candidates": candidates,
        "chosen": chosen,
        "chosen_by": "best test accuracy (ties: fewer reviewer queries)",
    }
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    Path(args.results).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    if args.write_judge:
        JudgeFile(MINILM_ID, embedder.dim, config.llm.reviewer.model, reviewer_prompt_digest(),
                  emb_model, comb_model,
                  rev_threshold, {"trained_on": result["config"]["dev"],
                                  "items": len(dev), "commit": result["commit"],
                                  "date": result["date"], "script": result["command"],
                                  "chosen_method": chosen}).save(args.judge_out)
    for m in candidates:
        print(f"{m:16} threshold {thresholds[m]:.3f}  " + "  ".join(
            f"{k} {v['value']:.3f} [{v['ci95'][0]:.3f}, {v['ci95'][1]:.3f}]"
            for k, v in candidates[m]["test"].items()))
        for name, k in candidates[m]["kept_rows_held_out"].items():
            print(f"{'':16} kept rows {name:14} pass {k['passing']:2}/{k['rows']} invalid "
                  f"{k['invalid_share']:.2f} -> {k['invalid_share_passing']}")
    print(f"chosen: {chosen}; wrote {args.results}"
          + (f" and {args.judge_out}" if args.write_judge else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
