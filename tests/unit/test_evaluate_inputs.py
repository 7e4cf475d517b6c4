"""`evaluate` config and `--model` errors: one line naming the key or path, before any model
loads; the shipped smoke tasks load offline and stay distinct from the real harness tasks."""

from __future__ import annotations

import pytest

from teamsrl.config import ConfigError, load_config


@pytest.mark.parametrize(("override", "expected"), [
    ("evaluate.num_fewshot={arc_challenge: -1}", "key 'evaluate.num_fewshot' = {'arc_challenge'"
                                                 ": -1}: expected shots >= 0"),
    ("evaluate.tasks=[]", "key 'evaluate.tasks' = []"),
    ("evaluate.limit=0", "key 'evaluate.limit' = 0: expected greater than or equal to 1"),
    ("evaluate.mia.confidence=1.0", "key 'evaluate.mia.confidence' = 1.0"),
    ("evaluate.mia.bootstrap=10", "key 'evaluate.mia.bootstrap' = 10"),
    ("evaluate.device=tpu", "key 'evaluate.device' = 'tpu'"),
    ("evaluate.shots=3", "unknown key 'evaluate.shots'"),
])
def test_bad_evaluate_values_name_the_key(override, expected):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert expected in str(e.value) and "\n" not in str(e.value)


def test_defaults_are_the_offline_smoke_tasks_and_the_papers_shots():
    cfg = load_config().evaluate
    assert cfg.tasks == ["teamsrl_arc_smoke", "teamsrl_hellaswag_smoke"]
    assert cfg.num_fewshot == {"arc_challenge": 25, "hellaswag": 10}
    assert cfg.metric == "acc_norm" and cfg.mia.enabled and cfg.mia.calibrate


def test_model_path_errors(tmp_path):
    from teamsrl.evaluate.run import resolve_target

    with pytest.raises(FileNotFoundError, match="--model '.*nope': not found"):
        resolve_target(str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="no config.json in it"):
        resolve_target(str(tmp_path))
    (tmp_path / "split").mkdir()
    with pytest.raises(ValueError, match="without model/config.json"):
        resolve_target(str(tmp_path))
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")
    target = resolve_target(str(tmp_path))
    assert target.model_dir == tmp_path / "model" and target.finetune_dir == tmp_path
    assert resolve_target(str(tmp_path / "model")).finetune_dir == tmp_path


def test_the_pipelines_finetune_parent_names_its_arms(tmp_path):
    from teamsrl.evaluate.run import resolve_target

    for arm in ("policy", "random"):
        (tmp_path / arm / "model").mkdir(parents=True)
        (tmp_path / arm / "model" / "config.json").write_text("{}")
    with pytest.raises(ValueError, match=f"per-arm fine-tunes; expected one of them: "
                       f"{tmp_path / 'policy'}, {tmp_path / 'random'}"):
        resolve_target(str(tmp_path))
    assert resolve_target(str(tmp_path / "random")).finetune_dir == tmp_path / "random"


def test_smoke_tasks_load_offline_and_are_marked(tmp_path):
    import importlib.util
    import json

    from teamsrl.evaluate.harness import TASKS_DIR, smoke_task_names

    # the loader lm-eval imports by path (`custom_dataset: !function smoke_data.load`)
    spec = importlib.util.spec_from_file_location("smoke_data", TASKS_DIR / "smoke_data.py")
    loader = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loader)

    def load_smoke_rows(data_file):
        return list(loader.load(data_file=data_file, version=1.0)["test"])

    names = smoke_task_names()
    assert names == ["teamsrl_arc_smoke", "teamsrl_hellaswag_smoke"]
    for name in names:
        assert "SMOKE SET, NOT THE" in (TASKS_DIR / f"{name}.yaml").read_text()
        rows = load_smoke_rows(f"{name}.jsonl")
        assert len(rows) == 24 and len({json.dumps(r, sort_keys=True) for r in rows}) == 24
        key = "answer" if "arc" in name else "label"
        choices = "choices" if "arc" in name else "endings"
        assert all(0 <= r[key] < len(r[choices]) == 4 for r in rows)
    with pytest.raises(FileNotFoundError, match="data_file = 'missing.jsonl'"):
        load_smoke_rows("missing.jsonl")


def test_single_smoke_tasks_skip_indexing_the_stock_tasks_and_a_tag_does_not():
    """Only teamsrl's folder is indexed when every task asked for is one of its single tasks; a
    tag (its members could be stock tasks) or an unknown name needs lm-eval's whole index."""
    from teamsrl.evaluate.harness import _is_single_task, task_manager

    ours = task_manager(None, ["teamsrl_arc_smoke", "teamsrl_hellaswag_smoke"])
    assert set(ours.all_tasks) == {"teamsrl_arc_smoke", "teamsrl_hellaswag_smoke",
                                   "teamsrl_smoke"}
    assert _is_single_task(ours.task_index["teamsrl_arc_smoke"])
    assert not _is_single_task(ours.task_index["teamsrl_smoke"])  # a tag
    assert not _is_single_task(ours.task_index.get("arc_easy"))  # not in our folder
    assert _is_single_task({"type": "python_task"}) and not _is_single_task({"type": "group"})
