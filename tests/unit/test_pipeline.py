"""The pipeline's stage bookkeeping: finished stages are skipped, a failed one is rerun."""

from __future__ import annotations

import json

import pytest

from teamsrl import pipeline
from teamsrl.config import load_config


def test_rerun_after_a_failure_resumes_at_the_failed_stage(tmp_path, monkeypatch):
    calls: list[str] = []
    fail = {"second": True}

    def first(config, address):
        calls.append("first")
        return "ok"

    def second(config, address):
        calls.append("second")
        if fail["second"]:
            raise RuntimeError("killed mid-stage")
        return "ok too"

    monkeypatch.setattr(pipeline, "STAGES", [("first", first), ("second", second)])
    config = load_config(None, [f"run_dir={tmp_path}"])
    with pytest.raises(RuntimeError, match="killed mid-stage"):
        pipeline.run_pipeline(config, echo=lambda _: None)
    state = json.loads((tmp_path / "pipeline.json").read_text())
    assert state["first"]["done"] and "second" not in state

    fail["second"] = False
    lines: list[str] = []
    pipeline.run_pipeline(config, echo=lines.append)
    assert calls == ["first", "second", "second"]
    assert "[1/2] first: already done, skipped" in lines
    state = json.loads((tmp_path / "pipeline.json").read_text())
    assert state["second"] == {"done": True, "seconds": state["second"]["seconds"],
                               "summary": "ok too"}


def test_quickstart_config_is_valid():
    config = load_config("experiments/quickstart.yaml")
    assert config.env.horizon == 6 and config.policy.num_cpus_per_env_runner == 0


def test_stages_read_their_seed_slice_and_both_arms_get_one_budget(tmp_path, monkeypatch):
    """The real stage functions with the heavy work replaced by recorders: policy training's
    env seed pool is the training slice, both arms generate from the generation slice, are
    fine-tuned for the same steps from the same base and scored on the reference slice."""
    from teamsrl.evaluate import report, run
    from teamsrl.finetune import launch
    from teamsrl.generation import run as generation
    from teamsrl.layout import RunLayout
    from teamsrl.policy import train
    from teamsrl.seed_split import SeedSplit
    from teamsrl.seeds import load_seeds

    calls: dict[str, list] = {"train": [], "generate": [], "finetune": [], "evaluate": []}
    sizes = {"policy": 30, "random": 10}  # rows kept per arm: unequal on purpose

    def train_policy(config, address=None, resume=False, iterations=None):
        calls["train"].append(config.env.seed_file)
        return train.TrainResult(tmp_path, tmp_path, 1, {"rollout/return_mean": 0.5})

    def run_generation(config, policy, out_dir=None, seeds=None, **kw):
        arm = "random" if policy == "random" else "policy"
        calls["generate"].append((arm, seeds))
        out = RunLayout.of(config.run_dir).generation(arm)
        out.root.mkdir(parents=True, exist_ok=True)
        out.data.write_text("".join(json.dumps({"instruction": f"{arm} task {i}", "input": "",
                                                "output": f"answer {i}"}) + "\n"
                                    for i in range(sizes[arm])))
        return {"rows_kept": sizes[arm], "rows_total": sizes[arm], "queries": {"expert": 1},
                "diversity": {"mean_pairwise_distance": 0.5}, "out": str(out.root)}

    def run_finetune(config, data, out, resume=False):
        calls["finetune"].append((config.finetune.max_steps, config.finetune.base_model, data,
                                  out))
        return {"steps": config.finetune.max_steps, "zero_stage": 2, "model_dir": out}

    def run_evaluate(config, model, out=None, reference=None, base_cache=None):
        calls["evaluate"].append((model, str(out), reference, str(base_cache)))
        return {"results": {"tasks": {}}, "mia": None, "reference": None, "out": str(out)}

    monkeypatch.setattr(train, "train_policy", train_policy)
    monkeypatch.setattr(generation, "run_generation", run_generation)
    monkeypatch.setattr(launch, "run_finetune", run_finetune)
    monkeypatch.setattr(run, "run_evaluate", run_evaluate)
    monkeypatch.setattr(report, "build_report", lambda run_dir, config: "report.md")
    config = load_config(None, [f"run_dir={tmp_path}"])
    state = pipeline.run_pipeline(config, echo=lambda _: None)
    assert [name for name, _ in pipeline.STAGES] == list(state)

    layout = RunLayout.of(tmp_path)
    split = SeedSplit.read(layout.seed_split)
    assert calls["train"] == [split.files["policy_training"]]
    assert [s.id for s in load_seeds(calls["train"][0]).seeds] == \
        split.slices["policy_training"]
    assert calls["generate"] == [("policy", split.files["generation"]),
                                 ("random", split.files["generation"])]
    # 27 and 9 training rows (10% held out), 8 rows per step over 2 processes, 3 epochs:
    # 12 and 6 steps; both arms get the smaller budget
    assert calls["finetune"] == [
        (6, config.finetune.base_model, str(layout.generation(arm).root),
         str(layout.finetune_arm(arm))) for arm in ("policy", "random")]
    assert calls["evaluate"] == [
        (str(layout.finetune_arm(arm)), str(layout.eval_arm(arm)), split.files["reference"],
         str(layout.base_reference)) for arm in ("policy", "random")]
