"""The reference loss: how well a model predicts human-written answers it never trained on.

    teamsrl evaluate --model runs/quickstart/finetune/policy \
        --reference runs/quickstart/seeds/reference.jsonl

Each reference task (a seed with a human-written `output`: the Self-Instruct seeds carry one in
`instances[0].output`) is scored as fine-tuning formats it: the Alpaca prompt of its instruction
and input, then the answer; a task's loss is the mean negative log-likelihood per answer token
(prompt tokens carry none, as in training). The figure is the mean over tasks, for the
fine-tuned model and its base, and their paired difference "fine-tuned minus base" (< 0: the
fine-tune predicts human answers better), each with a percentile bootstrap interval over tasks
(the same resampled tasks for both models in the difference).

Reference tasks must never be seeds of the run that made the model: `check_reference` refuses
tasks that are in the run's policy-training or generation slice (`<run_dir>/seed-split.json`)
or that seeded the fine-tune's own data, naming them.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from teamsrl.finetune.data import read_rows
from teamsrl.layout import RunLayout
from teamsrl.seed_split import SeedOverlapError, SeedSplit, check_disjoint, read_slices
from teamsrl.seeds import Seed, load_seeds


@dataclass
class Interval:
    """A mean and its bootstrap interval."""

    mean: float
    low: float
    high: float


def format_interval(iv: Interval, sign: bool = False) -> str:
    """`2.314 [2.101, 2.530]` (with `sign`: `-0.412 [-0.530, -0.301]`)."""
    f = "+.3f" if sign else ".3f"
    return f"{iv.mean:{f}} [{iv.low:{f}}, {iv.high:{f}}]"


@dataclass
class ReferenceResult:
    """The reference loss of a fine-tuned model and of its base (`reference.json`)."""

    model: str
    base_model: str
    source: str
    n_tasks: int
    loss: Interval  # fine-tuned model, nats per answer token, mean over tasks
    base_loss: Interval
    difference: Interval  # fine-tuned minus base, paired per task
    confidence: float
    bootstrap: int
    method: str
    skipped_tasks: list[str] = field(default_factory=list)  # ids without a human answer
    per_task: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The record written to `reference.json`."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ReferenceResult:
        """A record read back (the report)."""
        data = dict(data)
        for key in ("loss", "base_loss", "difference"):
            data[key] = Interval(**data[key])
        return cls(**data)


def load_reference(path: str | Path, config) -> tuple[list[Seed], list[str]]:
    """The reference tasks of a seed-format file (those with an answer) and the ids without."""
    env = config.env
    seeds = load_seeds(path, env.seed_column, env.max_seed_chars).seeds
    tasks = [s for s in seeds if s.output]
    if not tasks:
        raise ValueError(f"--reference {str(path)!r}: no task with a human-written answer; "
                         "expected an `output` column or Self-Instruct `instances[0].output`")
    limit = config.evaluate.reference.max_tasks
    return tasks[:limit] if limit else tasks, [s.id for s in seeds if not s.output]


def check_reference(tasks: list[Seed], config, finetune_dir: Path | None) -> None:
    """Refuse reference tasks that are seeds of the run (`config.run_dir`'s recorded split) or
    of the fine-tune's data (`seed_id` of the rows in its split.json source), naming them."""
    record = RunLayout.of(config.run_dir).seed_split
    if record.is_file():
        used = read_slices(SeedSplit.read(record), config)
        check_disjoint({"policy_training": used["policy_training"],
                        "generation": used["generation"], "reference": tasks})
    source = _finetune_source(finetune_dir)
    if source is not None:
        seeded = {str(r["seed_id"]) for r in read_rows(source) if r.get("seed_id") is not None}
        shared = sorted(s.id for s in tasks if s.id in seeded)
        if shared:
            raise SeedOverlapError(f"--reference: {len(shared)} reference task(s) seeded the "
                                   f"fine-tune's data {str(source)!r}: {', '.join(shared)}; "
                                   "expected reference tasks that are no seed of the run (the "
                                   "pipeline's <run_dir>/seeds/reference.jsonl)")


def _finetune_source(finetune_dir: Path | None) -> Path | None:
    """The dataset a fine-tune folder was trained from, when its split.json names one."""
    record = finetune_dir / "split.json" if finetune_dir else None
    if record is None or not record.is_file():
        return None
    source = json.loads(record.read_text(encoding="utf-8")).get("source")
    return Path(source) if source and Path(source).exists() else None


def task_losses(model: str | Path, tasks: list[Seed], batch_size: int, device: str
                ) -> list[float]:
    """Each task's mean loss per answer token after its Alpaca prompt, under `model`."""
    from teamsrl.evaluate.mia import response_losses
    from teamsrl.llm.transformers_engine import TransformersEngine

    engine = TransformersEngine(str(model), device=device, max_batch_size=batch_size)
    rows = [{"instruction": s.instruction, "input": s.input, "output": s.output} for s in tasks]
    return response_losses(engine, rows)


def base_losses(model: str | Path, tasks: list[Seed], cfg, device: str,
                cache: Path | None = None) -> list[float]:
    """`task_losses` of the base model, read from `cache` when it holds the same model and
    tasks (both arms of a pipeline share one base)."""
    key = hashlib.sha256(json.dumps([str(Path(model).resolve()) if Path(model).exists()
                                     else str(model), [[s.id, s.text, s.output] for s in tasks]]
                                    ).encode("utf-8")).hexdigest()
    if cache is not None and cache.is_file():
        stored = json.loads(cache.read_text(encoding="utf-8"))
        if stored.get("key") == key:
            return stored["losses"]
    losses = task_losses(model, tasks, cfg.batch_size, device)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({"key": key, "model": str(model), "losses": losses}),
                         encoding="utf-8")
    return losses


def bootstrap_means(columns: list[list[float]], n_boot: int, confidence: float, seed: int
                    ) -> list[Interval]:
    """The mean of each column and its percentile bootstrap interval; every resample draws the
    same tasks (rows) for all columns, so a column of paired differences stays paired."""
    import numpy as np

    data = np.asarray(columns, dtype=float)  # (columns, tasks)
    n = data.shape[1]
    if n < 2:
        raise ValueError(f"reference loss: {n} task(s); expected at least 2 for an interval")
    draws = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    boots = data[:, draws].mean(axis=2)  # (columns, n_boot)
    alpha = (1.0 - confidence) / 2
    lows, highs = np.quantile(boots, [alpha, 1.0 - alpha], axis=1)
    return [Interval(float(m), float(lo), float(hi))
            for m, lo, hi in zip(data.mean(axis=1), lows, highs, strict=True)]


def reference_loss(model: str | Path, base_model: str | Path, tasks: list[Seed], cfg,
                   seed: int = 0, device: str = "auto", base_cache: Path | None = None,
                   source: str = "", skipped: list[str] | None = None) -> ReferenceResult:
    """Score `tasks` under the fine-tuned model and its base; the record with its intervals."""
    tuned = task_losses(model, tasks, cfg.batch_size, device)
    base = base_losses(base_model, tasks, cfg, device, base_cache)
    diff = [t - b for t, b in zip(tuned, base, strict=True)]
    loss, base_iv, diff_iv = bootstrap_means([tuned, base, diff], cfg.bootstrap, cfg.confidence,
                                             seed)
    method = (f"mean over {len(tasks)} tasks of each task's mean negative log-likelihood per "
              f"answer token (Alpaca prompt, prompt tokens not scored); {cfg.confidence:.0%} "
              f"percentile bootstrap over tasks, {cfg.bootstrap} resamples, the difference "
              "paired per task")
    return ReferenceResult(
        model=str(model), base_model=str(base_model), source=source, n_tasks=len(tasks),
        loss=loss, base_loss=base_iv, difference=diff_iv, confidence=cfg.confidence,
        bootstrap=cfg.bootstrap, method=method, skipped_tasks=list(skipped or []),
        per_task=[{"id": s.id, "loss": t, "base_loss": b}
                  for s, t, b in zip(tasks, tuned, base, strict=True)])
