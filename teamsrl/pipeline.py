"""`teamsrl pipeline`: every stage that exists, in order, resumable, under one run dir.

    teamsrl pipeline --config experiments/quickstart.yaml [--address auto]

Stages: train-policy (RLlib PPO over the Serve app; Serve and a Ray this command started are
shut down at its end, which frees the small machine for what follows) -> generate-policy (the
dataset from the trained policy) -> generate-random (WizardLM's Evol-Instruct baseline on the same
seeds, for comparison) -> finetune (DeepSpeed ZeRO on the policy's dataset) -> evaluate (lm-eval
scores and the membership attack of the fine-tuned model) -> report (one Markdown page with its
figures, whose path is the last line printed). A finished stage is
recorded in `<run_dir>/pipeline.json` and skipped on a rerun; an interrupted stage resumes:
train-policy from its newest checkpoint, generation from rows.jsonl, fine-tuning from its newest
DeepSpeed checkpoint.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from teamsrl.config import ExperimentConfig
from teamsrl.layout import RunLayout


def _train_policy(config: ExperimentConfig, address: str | None) -> str:
    from teamsrl.policy.train import train_policy

    resume, left = RunLayout.of(config.run_dir).iterations_left(config.policy.iterations)
    result = train_policy(config, address=address, resume=resume, iterations=left)
    m = result.metrics
    return (f"return {m.get('rollout/return_mean', float('nan')):.3f} after "
            f"{result.iterations} iterations, {int(m.get('queries/expert', 0))} expert queries")


def _generate(policy: str) -> Callable[[ExperimentConfig, str | None], str]:
    def stage(config: ExperimentConfig, address: str | None) -> str:
        from teamsrl.generation.run import run_generation

        source = config.run_dir if policy == "policy" else "random"
        s = run_generation(config, source, address=address)
        return (f"{s['rows_kept']} rows kept of {s['rows_total']}, {s['queries']['expert']} "
                f"expert requests, diversity {s['diversity']['mean_pairwise_distance']:.3f}: "
                f"{s['out']}")

    return stage


def _finetune(config: ExperimentConfig, address: str | None) -> str:
    from teamsrl.finetune.launch import run_finetune

    layout = RunLayout.of(config.run_dir)
    out = layout.finetune
    resume = (out / "checkpoints" / "latest").is_file()
    s = run_finetune(config, str(layout.generation("policy").root), str(out), resume=resume)
    return f"{s['steps']} steps, ZeRO-{s['zero_stage']}: {s['model_dir']}"


def _evaluate(config: ExperimentConfig, address: str | None) -> str:
    from teamsrl.evaluate.run import run_evaluate

    s = run_evaluate(config, str(RunLayout.of(config.run_dir).finetune))
    scores = ", ".join(f"{name} {r['metric']} {r['score']:.3f}"
                       for name, r in s["results"]["tasks"].items())
    mia = f", MIA AUC {s['mia']['auc']:.3f}" if s.get("mia") else ""
    return f"{scores}{mia}: {s['out']}"


def _report(config: ExperimentConfig, address: str | None) -> str:
    from teamsrl.evaluate.report import build_report

    return str(build_report(config.run_dir, config))


STAGES: list[tuple[str, Callable[[ExperimentConfig, str | None], str]]] = [
    ("train-policy", _train_policy),
    ("generate-policy", _generate("policy")),
    ("generate-random", _generate("random")),
    ("finetune", _finetune),
    ("evaluate", _evaluate),
    ("report", _report),
]


def run_pipeline(config: ExperimentConfig, address: str | None = None,
                 echo: Callable[[str], None] = print) -> dict:
    """Run the stages not yet done; returns the pipeline state (per stage: summary, seconds)."""
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    state_file = RunLayout.of(run_dir).pipeline_state
    state = json.loads(state_file.read_text()) if state_file.is_file() else {}
    total = time.perf_counter()
    for number, (name, stage) in enumerate(STAGES, start=1):
        if state.get(name, {}).get("done"):
            echo(f"[{number}/{len(STAGES)}] {name}: already done, skipped")
            continue
        echo(f"[{number}/{len(STAGES)}] {name} ...")
        start = time.perf_counter()
        summary = stage(config, address)
        seconds = time.perf_counter() - start
        state[name] = {"done": True, "seconds": round(seconds, 1), "summary": summary}
        tmp = state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        os.replace(tmp, state_file)  # a crash never leaves a half-written state
        echo(f"[{number}/{len(STAGES)}] {name}: {summary} ({seconds:.0f} s)")
    times = ", ".join(f"{name} {state[name]['seconds']:.0f} s" for name, _ in STAGES
                      if name in state)
    echo(f"pipeline done in {time.perf_counter() - total:.0f} s (stage times, first runs: "
         f"{times}); artefacts under {run_dir}")
    report = state.get("report", {}).get("summary")
    if report:
        echo(f"report: {report}")
    return state
