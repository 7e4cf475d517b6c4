"""`teamsrl evaluate`: lm-eval scores and the membership attack of one fine-tuned model.

    teamsrl evaluate --model runs/quickstart/finetune              # a `teamsrl finetune` --out
    teamsrl evaluate --model path/to/hf-folder --tasks teamsrl_arc_smoke --limit 8

Writes `<out>/results.json` (one score per task), and for a fine-tune folder (one with
`split/train.jsonl` and `split/heldout.jsonl`) `<out>/mia.json` and `<out>/mia-roc.png`; the
same numbers go to W&B (offline by default, files under `<out>/wandb`) and
`<out>/evaluate-metrics.jsonl`. Default `<out>`: `<run_dir>/eval`, where `teamsrl report` looks.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from teamsrl.layout import RunLayout


@dataclass
class EvalTarget:
    """What `--model` points at: the HF folder, and the fine-tune folder when there is one."""

    model_dir: Path
    finetune_dir: Path | None


def resolve_target(model: str) -> EvalTarget:
    """A fine-tune --out folder, its `model/` folder, any HF folder, or an embedded model id."""
    from teamsrl.llm.embedded import resolve_model_path

    path = Path(model).expanduser()
    if model.startswith("embedded:"):
        return EvalTarget(resolve_model_path(model), None)
    if not path.exists():
        raise FileNotFoundError(f"--model {model!r}: not found; expected a `teamsrl finetune` "
                                "output folder, a Hugging Face model folder or an embedded id")
    if (path / "model" / "config.json").is_file():
        return EvalTarget(path / "model", path)
    if (path / "config.json").is_file():
        parent = path.parent if (path.parent / "split").is_dir() else None
        return EvalTarget(path, parent)
    if (path / "split").is_dir():
        raise ValueError(f"--model {model!r}: a fine-tune folder without model/config.json "
                         "(unfinished run?); expected `teamsrl finetune` to have finished")
    raise ValueError(f"--model {model!r}: no config.json in it or in {str(path / 'model')!r}; "
                     "expected a Hugging Face causal-LM folder")


def reference_model(config, target: EvalTarget) -> str:
    """The calibration model: evaluate.mia.base_model, the fine-tune's base, the config's."""
    if config.evaluate.mia.base_model:
        return config.evaluate.mia.base_model
    spec = target.finetune_dir / "spec.json" if target.finetune_dir else None
    if spec is not None and spec.is_file():
        recorded = json.loads(spec.read_text(encoding="utf-8")).get("model_path")
        if recorded and Path(recorded).is_dir():
            return recorded
    return config.finetune.base_model


def run_evaluate(config, model: str, out: str | Path | None = None) -> dict[str, Any]:
    """Evaluate `model` with `config.evaluate`; writes results.json (+ mia.json); the summary."""
    from teamsrl.evaluate.harness import run_harness
    from teamsrl.evaluate.mia import plot_roc, read_rows, run_attack, usable_rows

    cfg = config.evaluate
    target = resolve_target(model)
    out = Path(out or RunLayout.of(config.run_dir).eval).expanduser().resolve()
    t0 = time.perf_counter()
    scores = run_harness(target.model_dir, cfg)
    out.mkdir(parents=True, exist_ok=True)
    results = {"model": str(target.model_dir), "limit": cfg.limit, "tasks": scores,
               "seconds": round(time.perf_counter() - t0, 1),
               "note": "tasks named teamsrl_*_smoke are offline smoke sets, not the benchmarks"}
    (out / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    summary: dict[str, Any] = {"out": str(out), "results": results, "mia": None,
                               "mia_skipped": None}

    split = target.finetune_dir / "split" if target.finetune_dir else None
    if not cfg.mia.enabled:
        summary["mia_skipped"] = "evaluate.mia.enabled is false"
    elif split is None or not (split / "heldout.jsonl").is_file():
        summary["mia_skipped"] = (f"--model {model!r} has no split/train.jsonl + "
                                  "split/heldout.jsonl (not a `teamsrl finetune` folder)")
    else:
        members, nonmembers = read_rows(split / "train.jsonl"), read_rows(split / "heldout.jsonl")
        n_m, n_n = len(usable_rows(members)[0]), len(usable_rows(nonmembers)[0])
        if min(n_m, n_n) < 2:  # tiny runs: a note, not a failed stage
            summary["mia_skipped"] = (f"{n_m} scorable training rows and {n_n} held-out rows in "
                                      f"{str(split)!r}; the attack needs at least 2 of each "
                                      "(raise finetune.heldout_fraction or generate more rows)")
        else:
            ref = reference_model(config, target) if cfg.mia.calibrate else None
            result = run_attack(target.model_dir, members, nonmembers, cfg.mia, ref,
                                seed=config.seed, device=cfg.device)
            (out / "mia.json").write_text(json.dumps(result.to_json(), indent=1),
                                          encoding="utf-8")
            plot_roc(result, out / "mia-roc.png")
            summary["mia"] = result.to_json()
    if summary["mia_skipped"]:
        results["mia_skipped"] = summary["mia_skipped"]
        (out / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
        for stale in ("mia.json", "mia-roc.png"):  # no attack left over from an earlier run
            (out / stale).unlink(missing_ok=True)
    _track(config, out, summary)
    return summary


def _track(config, out: Path, summary: dict[str, Any]) -> None:
    """The scores (and the ROC image) in W&B and `<out>/evaluate-metrics.jsonl`."""
    from teamsrl.tracking import Tracker

    tracker = Tracker(config.model_copy(update={"run_dir": str(out)}), "evaluate")
    metrics = {f"eval/{task}/{r['metric']}": r["score"]
               for task, r in summary["results"]["tasks"].items()}
    mia = summary["mia"]
    if mia:
        metrics.update({"mia/auc": mia["auc"], "mia/ci_low": mia["ci_low"],
                        "mia/ci_high": mia["ci_high"], "mia/n_members": mia["n_members"],
                        "mia/n_nonmembers": mia["n_nonmembers"]})
    tracker.log(metrics, step=0)
    if tracker.run is not None and mia:
        import wandb

        tracker.run.log({"mia/roc": wandb.Image(str(out / "mia-roc.png"))}, step=0)
    tracker.finish()


def format_summary(summary: dict[str, Any]) -> str:
    """Lines the CLI prints: one per task, the attack, the files."""
    lines = []
    for task, r in summary["results"]["tasks"].items():
        err = f" ± {r['stderr']:.3f}" if r["stderr"] is not None else ""
        smoke = " (smoke set, not the benchmark)" if r["smoke_set"] else ""
        lines.append(f"{task}: {r['metric']} {r['score']:.3f}{err} on {r['n_samples']} "
                     f"examples, {r['num_fewshot']}-shot{smoke}")
    mia = summary["mia"]
    if mia:
        lines.append(f"membership attack ({mia['attack']}): AUC {mia['auc']:.3f} "
                     f"[{mia['ci_low']:.3f}, {mia['ci_high']:.3f}], {mia['n_members']} members "
                     f"vs {mia['n_nonmembers']} non-members (0.5 = cannot tell them apart)")
    else:
        lines.append(f"membership attack skipped: {summary['mia_skipped']}")
    lines.append(f"written: {summary['out']}/results.json" +
                 (", mia.json, mia-roc.png" if mia else ""))
    return "\n".join(lines)
