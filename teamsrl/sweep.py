"""`teamsrl sweep`: Ray Tune over action sets; each trial = a short policy training + a small
generation with the trained policy, reported as one row of a results table.

    teamsrl sweep --config experiments/sweep-action-sets.yaml [--set policy.iterations=1]

The sweep YAML (`SweepConfig`) names a base experiment YAML, overrides for every trial and one
entry per trial with its action set. Each trial gets its own experiment config (validated before
Ray starts), its own run dir `<run_dir>/<trial>` and the W&B group of the sweep. Trials run
`max_concurrent_trials` at a time (1 on a small machine: one Serve app at a time, with the CPUs
it needs). Each trial deploys its Serve app and removes it when its training ends: the app holds
the response cache, and a cache shared across trials would let later trials reuse earlier
trials' answers, so queries per kept row would depend on trial order.

A trial that finished writes `<run_dir>/<trial>/sweep-trial.json`; rerunning the sweep reuses
it, so an interrupted sweep continues with the trials that had not finished (their training
resumes from its newest checkpoint, their generation from its rows when the policy is final).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from teamsrl.actions import ActionSet, ActionSetConfig
from teamsrl.config import (
    ConfigError,
    ExperimentConfig,
    apply_overrides,
    format_validation_error,
    parse_override,
    read_yaml,
    validate,
)
from teamsrl.layout import RunLayout

COLUMNS = [("trial", "trial", "{}"), ("actions", "num_actions", "{}"),
           ("return", "return", "{:.3f}"),
           ("rows", "rows_kept", "{}"), ("expert q", "gen_expert_queries", "{}"),
           ("reviewer q", "gen_reviewer_queries", "{}"),
           ("q/kept row", "queries_per_kept_row", "{:.2f}"),
           ("expert q/kept row", "expert_queries_per_kept_row", "{:.2f}"),
           ("diversity", "mean_pairwise_distance", "{:.4f}"), ("distinct-2", "distinct_2",
                                                                 "{:.3f}"),
           ("train q", "train_queries", "{}"), ("s", "seconds", "{:.0f}")]
ROW_KEYS = {key for _, key, _ in COLUMNS} | {"actions", "dataset"}
SWEEP_KEYS = {"name", "run_dir", "max_concurrent_trials", "trial_cpus"}


class TrialSpec(BaseModel):
    """One trial: a name and the action set the policy may choose from."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="trial name (its run "
                      "dir and W&B run names use it)")
    actions: ActionSetConfig = Field(description="the trial's action set (operations, custom "
                                     "operations, include_stop), as in an experiment's `actions`")
    set: list[str] = Field(default_factory=list, description="extra KEY=VALUE overrides of this "
                           "trial's experiment config")


class SweepConfig(BaseModel):
    """A sweep over action sets: one YAML file."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field("sweep-action-sets", min_length=1, description="sweep name; the W&B group "
                      "of every trial (unless tracking.group is set) and the Tune run name")
    base: str | None = Field(None, description="experiment YAML every trial starts from, "
                             "relative to the sweep file (default: the built-in defaults)")
    set: list[str] = Field(default_factory=list, description="KEY=VALUE overrides applied to "
                           "every trial (after `base`, before the trial's own)")
    run_dir: str = Field("runs/sweep-action-sets", description="trial run dirs go under it")
    max_concurrent_trials: int = Field(1, ge=1, description="trials at once (1 on a small "
                                       "machine: each trial deploys its own Serve app)")
    trial_cpus: float = Field(0.0, ge=0, description="CPUs Tune reserves for each trial's "
                              "coordinator, which only waits for the trial's task; 0 leaves "
                              "the CPUs to the Serve replica")
    trials: list[TrialSpec] = Field(min_length=1, description="the action sets to compare")

    @field_validator("trials")
    @classmethod
    def _unique(cls, trials: list[TrialSpec]) -> list[TrialSpec]:
        names = [t.name for t in trials]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"trial name {dup[0]!r} appears more than once")
        return trials


def load_sweep(path: str | Path, overrides: list[str] | None = None
               ) -> tuple[SweepConfig, dict[str, ExperimentConfig]]:
    """The sweep and every trial's validated experiment config. CLI `--set`s apply to every
    trial, except those of the sweep's own keys (`SWEEP_KEYS`), which set the sweep's."""
    from pydantic import ValidationError

    path = Path(path)
    # `--set run_dir=...` (and the other sweep-level keys) set the sweep's own field: every
    # trial's run_dir and name are derived from the sweep's
    own = [o for o in overrides or [] if parse_override(o)[0][0] in SWEEP_KEYS]
    for_trials = [o for o in overrides or [] if o not in own]
    try:
        sweep = SweepConfig.model_validate(apply_overrides(read_yaml(path), own))
    except ValidationError as e:
        raise ConfigError(format_validation_error(e, str(path))) from None
    base = read_yaml(path.parent / sweep.base) if sweep.base else {}
    experiments = {}
    for trial in sweep.trials:
        data = apply_overrides(json.loads(json.dumps(base)),
                               [*sweep.set, *for_trials, *trial.set])
        data["actions"] = trial.actions.model_dump(mode="json")
        data["name"] = f"{sweep.name}-{trial.name}"
        data["run_dir"] = str(Path(sweep.run_dir) / trial.name)
        tracking = data.setdefault("tracking", {})
        if isinstance(tracking, dict) and not tracking.get("group"):
            tracking["group"] = sweep.name
        # ExperimentConfig's own rules (a forced operation must be in the trial's action set)
        # fail here, naming the trial, before any trial starts
        experiments[trial.name] = validate(data, source=f"{path} trial {trial.name!r}")
    return sweep, experiments


def run_trial(config: ExperimentConfig, progress: bool = False) -> dict:
    """Train the policy, generate with it; the trial's row of the results table."""
    from teamsrl.generation.run import run_generation
    from teamsrl.policy.train import train_policy

    run_dir = Path(config.run_dir)
    layout = RunLayout.of(run_dir)
    done = layout.sweep_trial
    if done.is_file():
        return json.loads(done.read_text())
    start = time.perf_counter()
    # an interrupted trial resumes its training; 0 iterations left only re-exports the policy
    resume, left = layout.iterations_left(config.policy.iterations)
    if left:  # the policy will change: rows generated by an earlier try are stale
        shutil.rmtree(layout.generate, ignore_errors=True)
    trained = train_policy(config, resume=resume, iterations=left, progress=progress)
    gen = run_generation(config, policy=str(run_dir), out_dir=None, progress=progress)
    m = trained.metrics
    expert, reviewer = int(gen["queries"]["expert"]), int(gen["queries"]["reviewer"])
    kept = int(gen["rows_kept"])
    names = ActionSet.from_config(config.actions).names
    row = {
        "actions": "+".join(names), "num_actions": len(names),
        "return": float(m.get("rollout/return_mean", float("nan"))),
        "train_queries": int(m.get("queries/expert", 0) + m.get("queries/reviewer", 0)),
        "rows_kept": kept, "gen_expert_queries": expert, "gen_reviewer_queries": reviewer,
        "queries_per_kept_row": (expert + reviewer) / kept if kept else float("nan"),
        "expert_queries_per_kept_row": expert / kept if kept else float("nan"),
        "mean_pairwise_distance": float(gen["diversity"]["mean_pairwise_distance"]),
        "distinct_2": float(gen["diversity"]["distinct_2"]),
        "seconds": time.perf_counter() - start, "dataset": gen.get("out", ""),
    }
    done.write_text(json.dumps(row, indent=2))
    return row


def _tune_trial(params: dict, experiments: dict, cwd: str) -> None:
    """Tune's function trainable: runs the trial as a Ray task, reports its row once.

    Tune places a trial in a placement group that captures the trial's child tasks and actors;
    RLlib's env runners and Serve need to be scheduled on the whole cluster (e.g. on the nodes
    with their custom resources), so the work runs in a task with the default strategy.
    """
    import ray
    from ray import tune

    task = ray.remote(num_cpus=0, max_retries=0, scheduling_strategy="DEFAULT")(_trial_task)
    tune.report(ray.get(task.remote(experiments[params["trial"]], cwd)))


def _trial_task(experiment: dict, cwd: str) -> dict:
    previous = os.getcwd()
    os.chdir(cwd)  # relative paths in the config mean what they mean at the CLI
    try:
        return run_trial(ExperimentConfig.model_validate(experiment))
    finally:
        os.chdir(previous)


def format_row(row: dict) -> list[str]:
    """The table cells of one trial's results."""
    cells = []
    for _, key, fmt in COLUMNS:
        value = row.get(key, "")
        if isinstance(value, float) and math.isnan(value):
            cells.append("n/a")
        else:
            cells.append(fmt.format(value) if value != "" else "")
    return cells


def format_table(rows: list[dict]) -> str:
    """A plain-text table, one line per trial."""
    header = [h for h, _, _ in COLUMNS]
    body = [format_row(r) for r in rows]
    widths = [max(len(x) for x in col) for col in zip(header, *body, strict=True)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip()
             for line in [header, ["-" * w for w in widths], *body]]
    return "\n".join(lines)


def run_sweep(sweep: SweepConfig, experiments: dict[str, ExperimentConfig],
              address: str | None = None, echo: Callable[[str], None] = print) -> list[dict]:
    """Run every trial with Ray Tune; print each trial's row as it finishes, then the table."""
    import ray
    from ray import tune

    from teamsrl.raycluster import init_ray, starts_local_ray

    root = Path(sweep.run_dir).resolve()
    root.mkdir(parents=True, exist_ok=True)
    started_ray = starts_local_ray(address)  # joined: leave its Serve and Ray
    init_ray(address)
    try:
        trainable = tune.with_resources(
            tune.with_parameters(_tune_trial, experiments={
                k: v.model_dump(mode="json") for k, v in experiments.items()},
                cwd=os.getcwd()),
            # a bundle cannot be all zeros: 1 byte of memory makes it valid without taking a
            # CPU from the Serve replica (the trial itself only waits for its task)
            {"cpu": sweep.trial_cpus, "memory": 1})
        tuner = tune.Tuner(
            trainable,
            param_space={"trial": tune.grid_search([t.name for t in sweep.trials])},
            tune_config=tune.TuneConfig(max_concurrent_trials=sweep.max_concurrent_trials),
            run_config=tune.RunConfig(name=sweep.name, storage_path=str(root / "tune"),
                                      verbose=0, callbacks=[_echo_rows(echo)]),
        )
        grid = tuner.fit()
    finally:
        if started_ray:
            from ray import serve

            serve.shutdown()
            ray.shutdown()
    rows, failed = [], []
    for result in grid:
        name = (result.config or {}).get("trial", "?")
        if result.error is not None:
            failed.append(f"{name}: {_first_line(result.error)}")
        else:
            rows.append({"trial": name} | {k: v for k, v in result.metrics.items()
                                           if k in ROW_KEYS})
    order = [t.name for t in sweep.trials]
    rows.sort(key=lambda r: order.index(r["trial"]) if r["trial"] in order else len(order))
    (root / "sweep-results.json").write_text(json.dumps(rows, indent=2))
    table = format_table(rows)
    (root / "sweep-results.txt").write_text(table + "\n")
    echo(table)
    if failed:
        raise RuntimeError(f"{len(failed)} of {len(order)} trials failed: " + "; ".join(failed))
    return rows


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    tail = [line for line in text if line.strip()][-1:] or [type(error).__name__]
    return tail[0][:300]


def _echo_rows(echo: Callable[[str], None]):
    """A Tune callback that prints a trial's table row as soon as the trial reports."""
    from ray.tune import Callback

    class EchoRows(Callback):
        def on_trial_result(self, iteration, trials, trial, result, **info):
            cells = format_row({"trial": trial.config.get("trial", "?"), **result})
            echo("trial done: " + ", ".join(
                f"{h} {c}" for (h, _, _), c in zip(COLUMNS, cells, strict=True)))

    return EchoRows()
