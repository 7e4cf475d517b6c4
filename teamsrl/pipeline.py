"""`teamsrl pipeline`: every stage that exists, in order, resumable, under one run dir.

    teamsrl pipeline --config experiments/quickstart.yaml [--address auto]

Stages: split-seeds (the seed file cut once into policy-training seeds, generation seeds and
reference tasks, disjoint, recorded in `<run_dir>/seed-split.json`) -> train-policy (RLlib PPO
over the Serve app, its episodes drawn from the policy-training slice; Serve and a Ray this
command started are shut down at its end, which frees the small machine for what follows) ->
generate-policy (the dataset from the trained policy) -> generate-random (WizardLM's
Evol-Instruct baseline), both on the generation slice -> finetune-policy, finetune-random
(DeepSpeed ZeRO, the same base and the same number of optimizer steps for both arms) ->
evaluate-policy, evaluate-random (lm-eval scores, the membership attack, and the loss of the
reference slice's human-written answers, fine-tuned vs base) -> report (one Markdown page with
both arms side by side, whose path is the last line printed). A finished stage is recorded in
`<run_dir>/pipeline.json` and skipped on a rerun; an interrupted stage resumes: train-policy
from its newest checkpoint, generation from rows.jsonl, fine-tuning from its newest DeepSpeed
checkpoint.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from teamsrl.config import ExperimentConfig
from teamsrl.layout import ARMS, RunLayout
from teamsrl.seed_split import SeedSplit, write_split


def _split_seeds(config: ExperimentConfig, address: str | None) -> str:
    layout = RunLayout.of(config.run_dir)
    split = write_split(config, layout.seed_split, layout.seed_slices)
    counts = ", ".join(f"{name} {len(ids)}" for name, ids in split.slices.items())
    return f"{counts} seeds of {split.source}: {layout.seed_split}"


def _split(config: ExperimentConfig) -> SeedSplit:
    return SeedSplit.read(RunLayout.of(config.run_dir).seed_split)


def _train_policy(config: ExperimentConfig, address: str | None) -> str:
    from teamsrl.policy.train import train_policy

    # the env runners get the experiment config: its seed file is the training slice
    env = config.env.model_copy(update={"seed_file": _split(config).files["policy_training"]})
    config = config.model_copy(update={"env": env})
    resume, left = RunLayout.of(config.run_dir).iterations_left(config.policy.iterations)
    result = train_policy(config, address=address, resume=resume, iterations=left)
    m = result.metrics
    return (f"return {m.get('rollout/return_mean', float('nan')):.3f} after "
            f"{result.iterations} iterations, {int(m.get('queries/expert', 0))} expert queries")


def _generate(policy: str) -> Callable[[ExperimentConfig, str | None], str]:
    def stage(config: ExperimentConfig, address: str | None) -> str:
        from teamsrl.generation.run import run_generation

        source = config.run_dir if policy == "policy" else "random"
        s = run_generation(config, source, seeds=_split(config).files["generation"],
                           address=address)
        return (f"{s['rows_kept']} rows kept of {s['rows_total']}, {s['queries']['expert']} "
                f"expert requests, diversity {s['diversity']['mean_pairwise_distance']:.3f}: "
                f"{s['out']}")

    return stage


def finetune_budget(config: ExperimentConfig) -> int:
    """The optimizer steps both arms train for: the fewer of the two arms' schedules (the same
    budget from the same base, whatever each dataset's size)."""
    from teamsrl.finetune.launch import planned_steps

    layout = RunLayout.of(config.run_dir)
    return min(planned_steps(config, str(layout.generation(arm).root)) for arm in ARMS)


def _finetune(arm: str) -> Callable[[ExperimentConfig, str | None], str]:
    def stage(config: ExperimentConfig, address: str | None) -> str:
        from teamsrl.finetune.launch import run_finetune

        layout = RunLayout.of(config.run_dir)
        steps = finetune_budget(config)
        config = config.model_copy(update={"finetune": config.finetune.model_copy(
            update={"max_steps": steps})})
        out = layout.finetune_arm(arm)
        resume = (out / "checkpoints" / "latest").is_file()
        s = run_finetune(config, str(layout.generation(arm).root), str(out), resume=resume)
        return (f"{s['steps']} steps (the budget of both arms: {steps}), ZeRO-{s['zero_stage']}: "
                f"{s['model_dir']}")

    return stage


def _evaluate(arm: str) -> Callable[[ExperimentConfig, str | None], str]:
    def stage(config: ExperimentConfig, address: str | None) -> str:
        from teamsrl.evaluate.run import run_evaluate

        layout = RunLayout.of(config.run_dir)
        split = _split(config)
        reference = split.files["reference"] if split.slices["reference"] else None
        s = run_evaluate(config, str(layout.finetune_arm(arm)), layout.eval_arm(arm),
                         reference=reference, base_cache=layout.base_reference)
        parts = [f"{name} {r['metric']} {r['score']:.3f}"
                 for name, r in s["results"]["tasks"].items()]
        if s.get("mia"):
            parts.append(f"MIA AUC {s['mia']['auc']:.3f}"
                         + ("" if s["mia"]["informative"] else " (not informative)"))
        if s.get("reference"):
            diff = s["reference"]["difference"]
            parts.append(f"reference loss fine-tuned minus base {diff['mean']:+.3f} "
                         f"[{diff['low']:+.3f}, {diff['high']:+.3f}]")
        return f"{', '.join(parts)}: {s['out']}"

    return stage


def _report(config: ExperimentConfig, address: str | None) -> str:
    from teamsrl.evaluate.report import build_report

    return str(build_report(config.run_dir, config))


STAGES: list[tuple[str, Callable[[ExperimentConfig, str | None], str]]] = [
    ("split-seeds", _split_seeds),
    ("train-policy", _train_policy),
    ("generate-policy", _generate("policy")),
    ("generate-random", _generate("random")),
    ("finetune-policy", _finetune("policy")),
    ("finetune-random", _finetune("random")),
    ("evaluate-policy", _evaluate("policy")),
    ("evaluate-random", _evaluate("random")),
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
