"""`teamsrl evaluate`: lm-eval scores, the membership attack and the reference loss of one
fine-tuned model.

    teamsrl evaluate --model runs/quickstart/finetune              # a `teamsrl finetune` --out
    teamsrl evaluate --model path/to/hf-folder --tasks teamsrl_arc_smoke --limit 8
    teamsrl evaluate --model DIR --reference runs/quickstart/seeds/reference.jsonl

Writes `<out>/results.json` (one score per task), for a fine-tune folder (one with
`split/train.jsonl` and `split/heldout.jsonl`) `<out>/mia.json` and `<out>/mia-roc.png`, and with
`--reference FILE` `<out>/reference.json` (`teamsrl.evaluate.reference`); the same numbers go to
W&B (offline by default, files under `<out>/wandb`) and `<out>/evaluate-metrics.jsonl`. Default
`<out>`: `<run_dir>/eval`, where `teamsrl report` looks.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from teamsrl.layout import ARMS, RunLayout


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
    arms = [str(path / a) for a in ARMS if (path / a / "model" / "config.json").is_file()]
    if arms:  # the pipeline's finetune/ holds one fine-tune per arm
        raise ValueError(f"--model {model!r}: the pipeline's per-arm fine-tunes; expected one "
                         f"of them: {', '.join(arms)}")
    raise ValueError(f"--model {model!r}: no config.json in it or in {str(path / 'model')!r}; "
                     "expected a Hugging Face causal-LM folder")


def reference_model(config, target: EvalTarget) -> str:
    """The calibration model: evaluate.mia.base_model, the fine-tune's base, the config's."""
    if config.evaluate.mia.base_model:
        return config.evaluate.mia.base_model
    return base_model_of(config, target)


def base_model_of(config, target: EvalTarget) -> str:
    """The model a fine-tune started from: its spec.json's, else finetune.base_model."""
    spec = target.finetune_dir / "spec.json" if target.finetune_dir else None
    if spec is not None and spec.is_file():
        recorded = json.loads(spec.read_text(encoding="utf-8")).get("model_path")
        if recorded and Path(recorded).is_dir():
            return recorded
    return config.finetune.base_model


def run_evaluate(config, model: str, out: str | Path | None = None,
                 reference: str | Path | None = None, base_cache: Path | None = None
                 ) -> dict[str, Any]:
    """Evaluate `model` with `config.evaluate`; writes results.json (+ mia.json, and with
    `reference` reference.json); the summary. `base_cache`: where the base model's reference
    losses are kept for the next model of the same base."""
    from teamsrl.evaluate.harness import run_harness
    from teamsrl.evaluate.mia import plot_roc, read_rows, run_attack, usable_rows

    cfg = config.evaluate
    target = resolve_target(model)
    out = Path(out or RunLayout.of(config.run_dir).eval).expanduser().resolve()
    tasks = _reference_tasks(config, reference, target)  # refused overlaps fail before lm-eval
    t0 = time.perf_counter()
    scores = run_harness(target.model_dir, cfg)
    out.mkdir(parents=True, exist_ok=True)
    results = {"model": str(target.model_dir), "limit": cfg.limit, "tasks": scores,
               "seconds": round(time.perf_counter() - t0, 1),
               "note": "tasks named teamsrl_*_smoke are offline smoke sets, not the benchmarks"}
    (out / "results.json").write_text(json.dumps(results, indent=1), encoding="utf-8")
    summary: dict[str, Any] = {"out": str(out), "results": results, "mia": None,
                               "mia_skipped": None, "reference": None}
    (out / "reference.json").unlink(missing_ok=True)  # none left over from an earlier run
    if tasks is not None:
        from teamsrl.evaluate.reference import reference_loss

        result = reference_loss(target.model_dir, base_model_of(config, target), tasks[0],
                                cfg.reference, seed=config.seed, device=cfg.device,
                                base_cache=base_cache, source=str(reference), skipped=tasks[1])
        (out / "reference.json").write_text(json.dumps(result.to_json(), indent=1),
                                            encoding="utf-8")
        summary["reference"] = result.to_json()

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


def _reference_tasks(config, reference, target: EvalTarget):
    """(tasks, ids without an answer) of `--reference`, checked against the run's seeds."""
    if reference is None:
        return None
    from teamsrl.evaluate.reference import check_reference, load_reference

    tasks, skipped = load_reference(reference, config)
    check_reference(tasks, config, target.finetune_dir)
    return tasks, skipped


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
                        "mia/n_nonmembers": mia["n_nonmembers"],
                        "mia/informative": int(mia["informative"])})
    ref = summary["reference"]
    if ref:
        for name in ("loss", "base_loss", "difference"):
            metrics.update({f"reference/{name}": ref[name]["mean"],
                            f"reference/{name}_ci_low": ref[name]["low"],
                            f"reference/{name}_ci_high": ref[name]["high"]})
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
                     f"vs {mia['n_nonmembers']} non-members (0.5 = cannot tell them apart)"
                     + ("" if mia["informative"] else f"; {mia['note']}"))
    else:
        lines.append(f"membership attack skipped: {summary['mia_skipped']}")
    ref = summary["reference"]
    if ref:
        from teamsrl.evaluate.reference import ReferenceResult, format_interval

        r = ReferenceResult.from_json(ref)
        lines.append(f"reference loss ({r.n_tasks} human-written answers, nats/token): "
                     f"fine-tuned {format_interval(r.loss)}, base {format_interval(r.base_loss)}"
                     f", fine-tuned minus base {format_interval(r.difference, sign=True)} "
                     f"({r.confidence:.0%} bootstrap over tasks)")
    lines.append(f"written: {summary['out']}/results.json" +
                 (", mia.json, mia-roc.png" if mia else "") + (", reference.json" if ref else ""))
    return "\n".join(lines)

