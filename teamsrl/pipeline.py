"""`teamsrl pipeline`: every stage that exists, in order, resumable, under one run dir.

    teamsrl pipeline --config experiments/quickstart.yaml [--address auto]

Stages now: train-policy (RLlib PPO over the Serve app) -> baseline-rollout (the random,
Evol-Instruct policy on the same MDP, for comparison). Generation, fine-tuning, evaluation and
the report join as their issues land. A finished stage is recorded in `<run_dir>/pipeline.json`
and skipped on a rerun; an interrupted train-policy resumes from its newest checkpoint.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path

from teamsrl.config import ExperimentConfig


def _train_policy(config: ExperimentConfig, address: str | None) -> str:
    from teamsrl.policy.train import latest_checkpoint, train_policy

    previous = latest_checkpoint(Path(config.run_dir) / "policy" / "checkpoints")
    done = previous[1] if previous else 0
    # 0 left: every iteration ran before the crash; the resume only exports the policy
    left = max(0, config.policy.iterations - done)
    result = train_policy(config, address=address, resume=previous is not None,
                          iterations=left)
    m = result.metrics
    return (f"return {m.get('rollout/return_mean', float('nan')):.3f} after "
            f"{result.iterations} iterations, {int(m.get('queries/expert', 0))} expert queries")


def _baseline_rollout(config: ExperimentConfig, address: str | None) -> str:
    from teamsrl.rollout import run_rollout

    episodes = max(config.policy.num_envs_per_env_runner, 8)
    summary = run_rollout(config, "random", episodes, config.policy.num_envs_per_env_runner)
    report = Path(config.run_dir) / "baseline-rollout.txt"
    report.write_text(summary.report() + "\n")
    return f"random policy over {episodes} episodes: see {report}"


STAGES: list[tuple[str, Callable[[ExperimentConfig, str | None], str]]] = [
    ("train-policy", _train_policy),
    ("baseline-rollout", _baseline_rollout),
]


def run_pipeline(config: ExperimentConfig, address: str | None = None,
                 echo: Callable[[str], None] = print) -> dict:
    """Run the stages not yet done; returns the pipeline state (per stage: summary, seconds)."""
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    state_file = run_dir / "pipeline.json"
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
    echo(f"pipeline done in {time.perf_counter() - total:.0f} s; artefacts under {run_dir}")
    return state
