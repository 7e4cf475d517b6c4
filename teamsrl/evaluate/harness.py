"""lm-evaluation-harness on a local Hugging Face model folder: one score per task.

The smoke tasks in `tasks/` (YAML + JSONL, loaded through `TaskManager(include_path=...)`) run
offline; real harness tasks (`arc_challenge`, `hellaswag`) need their datasets from the hub.
The model is loaded once (lm-eval's `HFLM`) and each task is evaluated with its own shots.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

TASKS_DIR = Path(__file__).resolve().parent / "tasks"


def smoke_task_names() -> list[str]:
    """Names of the offline smoke tasks shipped with teamsrl."""
    import yaml

    names = []
    for path in sorted(TASKS_DIR.glob("*.yaml")):
        # the YAML holds an lm-eval `!function` tag; only the task name is read here
        text = "\n".join(line for line in path.read_text().splitlines() if "!function" not in line)
        names.append(yaml.safe_load(text)["task"])
    return names


def task_manager(include_path: list[str] | None = None, tasks: list[str] | None = None):
    """lm-eval's TaskManager with the smoke tasks and any extra task folders.

    Indexing lm-eval's own task files costs ~6 s of CPU a TaskManager (measured here); when every
    name in `tasks` is a single task (not a group or tag, whose members may be stock tasks) of
    teamsrl's smoke folder or `include_path`, only those folders are indexed. Otherwise, or
    without `tasks`, the stock tasks are indexed too."""
    from lm_eval.tasks import TaskManager

    paths = [str(TASKS_DIR)]
    for p in include_path or []:
        if not Path(p).expanduser().is_dir():
            raise FileNotFoundError(f"evaluate.include_path entry {p!r}: not a folder; expected "
                                    "a folder of lm-eval task YAML files")
        paths.append(str(Path(p).expanduser()))
    if tasks:
        ours = TaskManager(include_path=paths, include_defaults=False)
        if all(_is_single_task(ours.task_index.get(t)) for t in tasks):
            return ours
    return TaskManager(include_path=paths)


def _is_single_task(entry) -> bool:
    """A task-index entry of one task (lm-eval >= 0.4.10: an `Entry` with a `kind`; earlier: a
    dict with a `type`)."""
    if entry is None:
        return False
    kind = entry.kind.name if hasattr(entry, "kind") else str(entry.get("type", ""))
    return kind.upper() in ("TASK", "PY_TASK", "PYTHON_TASK")


def check_tasks(tasks: list[str], manager) -> None:
    """Every name must be a task lm-eval knows; the error lists the smoke tasks."""
    for name in tasks:
        if name not in manager.all_tasks:
            raise ValueError(f"evaluate.tasks: {name!r} is not an lm-eval task; expected a "
                             f"harness task (e.g. arc_challenge, hellaswag) or one of the "
                             f"offline smoke tasks {smoke_task_names()}")


def model_dtype(dtype: str, device: str) -> str:
    """`auto` -> float32 on CPU, bfloat16 on CUDA."""
    if dtype != "auto":
        return dtype
    return "bfloat16" if device.startswith("cuda") else "float32"


def run_harness(model_dir: str | Path, cfg, tasks: list[str] | None = None,
                limit: int | None = None) -> dict[str, Any]:
    """Evaluate `model_dir` on `tasks` (default `cfg.tasks`); returns {task: score record}."""
    import lm_eval
    import torch
    from lm_eval.models.huggingface import HFLM

    tasks = list(tasks or cfg.tasks)
    limit = limit if limit is not None else cfg.limit
    manager = task_manager(cfg.include_path, tasks)
    check_tasks(tasks, manager)
    device = cfg.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    lm = HFLM(pretrained=str(model_dir), device=device, dtype=model_dtype(cfg.dtype, device),
              batch_size=cfg.batch_size)
    smoke = set(smoke_task_names())
    out: dict[str, Any] = {}
    for name in tasks:
        shots = cfg.num_fewshot.get(name)
        try:
            result = lm_eval.simple_evaluate(
                model=lm, tasks=[name], num_fewshot=shots, limit=limit, task_manager=manager,
                log_samples=False, bootstrap_iters=1000,
                random_seed=0, numpy_random_seed=0, torch_random_seed=0,
                fewshot_random_seed=0)
        except (ConnectionError, OSError) as e:
            offline = os.environ.get("HF_HUB_OFFLINE") == "1"
            raise RuntimeError(f"evaluate.tasks: {name!r} could not load its dataset"
                               f"{' (HF_HUB_OFFLINE=1: no hub)' if offline else ''}: "
                               f"{type(e).__name__}: {str(e)[:200]}; offline, use the smoke "
                               f"tasks {sorted(smoke)}") from None
        out.update(_scores(result, name, cfg.metric, shots, name in smoke))
    return out


def _scores(result: dict, name: str, metric: str, shots: int | None, smoke: bool
            ) -> dict[str, Any]:
    """The headline metric (and its stderr) of every task in one lm-eval result."""
    records = {}
    for task, values in result["results"].items():
        if task != name and task in result.get("group_subtasks", {}):
            continue  # a group's aggregate is reported under its own name only when asked for
        used = metric if f"{metric},none" in values else "acc"
        if f"{used},none" not in values:
            raise ValueError(f"evaluate.metric = {metric!r}: task {task!r} reports "
                             f"{sorted(k.split(',')[0] for k in values if ',' in k)}; expected "
                             "one of those")
        stderr = values.get(f"{used}_stderr,none")
        records[task] = {
            "metric": used, "score": float(values[f"{used},none"]),
            "stderr": float(stderr) if isinstance(stderr, (int, float)) else None,
            "n_samples": int(result.get("n-samples", {}).get(task, {}).get("effective", 0)),
            "num_fewshot": result.get("n-shot", {}).get(task, shots),
            "smoke_set": smoke,
        }
    return records
