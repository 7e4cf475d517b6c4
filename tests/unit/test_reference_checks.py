"""The reference loss without a model: its bootstrap intervals, and `teamsrl evaluate
--reference` refusing tasks that are seeds of the run before any model loads."""

from __future__ import annotations

import json

import numpy as np
import pytest

from teamsrl.config import load_config
from teamsrl.evaluate.reference import bootstrap_means, check_reference, load_reference
from teamsrl.layout import RunLayout
from teamsrl.seed_split import SeedOverlapError, write_split
from teamsrl.seeds import DEFAULT_SEEDS


def test_bootstrap_means_are_paired_over_tasks():
    rng = np.random.default_rng(0)
    base = rng.normal(2.5, 0.6, 40)
    tuned = base - 0.3  # every task exactly 0.3 lower: the paired difference has no spread
    loss, base_iv, diff = bootstrap_means([list(tuned), list(base), list(tuned - base)],
                                          n_boot=500, confidence=0.95, seed=1)
    assert loss.mean == pytest.approx(tuned.mean()) and base_iv.mean == pytest.approx(2.5, 0.1)
    assert loss.low < loss.mean < loss.high and base_iv.high - base_iv.low > 0.2
    assert [diff.mean, diff.low, diff.high] == pytest.approx([-0.3] * 3)
    again = bootstrap_means([list(tuned), list(base), list(tuned - base)], 500, 0.95, 1)
    assert again == [loss, base_iv, diff]
    with pytest.raises(ValueError, match="1 task"):
        bootstrap_means([[1.0]], 100, 0.95, 0)


def _fake_finetune(folder, data_rows=None):
    """A folder `resolve_target` accepts as a fine-tune (no weights: nothing may load them)."""
    (folder / "model").mkdir(parents=True)
    (folder / "model" / "config.json").write_text("{}")
    (folder / "split").mkdir()
    if data_rows is not None:
        data = folder / "data.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in data_rows))
        (folder / "split.json").write_text(json.dumps({"source": str(data)}))
    return folder


def test_evaluate_refuses_reference_tasks_that_are_seeds_of_the_run(tmp_path, capsys):
    from teamsrl.cli import main

    run = tmp_path / "run"
    config = load_config(None, [f"run_dir={run}"])
    layout = RunLayout.of(run)
    split = write_split(config, layout.seed_split, layout.seed_slices)
    ft = _fake_finetune(tmp_path / "ft")
    out = tmp_path / "eval"
    # the whole bundled file holds the run's training and generation seeds too
    rc = main(["evaluate", "--model", str(ft), "--reference", str(DEFAULT_SEEDS), "--out",
               str(out), "--set", f"run_dir={run}", "--set", "tracking.mode=disabled"])
    err = capsys.readouterr().err
    assert rc == 2 and not out.exists()
    assert "policy_training and reference share 88 seed(s)" in err
    assert "generation and reference share 52 seed(s)" in err
    assert split.slices["generation"][0] in err and "\n" not in err.strip()
    # the reference slice itself passes the check
    tasks, skipped = load_reference(split.files["reference"], config)
    assert len(tasks) == 35 and skipped == []
    check_reference(tasks, config, ft)


def test_evaluate_refuses_reference_tasks_that_seeded_the_finetune_data(tmp_path):
    config = load_config(None, [f"run_dir={tmp_path / 'no-split-here'}"])
    tasks, _ = load_reference(DEFAULT_SEEDS, config)
    rows = [{"instruction": "Evolved task", "output": "x", "seed_id": "seed_task_7"},
            {"instruction": "Another", "output": "y", "seed_id": "seed_task_100"}]
    ft = _fake_finetune(tmp_path / "ft", rows)
    with pytest.raises(SeedOverlapError, match=r"2 reference task\(s\) seeded the fine-tune's "
                       r"data .*seed_task_100, seed_task_7"):
        check_reference(tasks, config, ft)
    check_reference([t for t in tasks if t.id not in ("seed_task_7", "seed_task_100")],
                    config, ft)


def test_reference_file_without_answers_is_an_error(tmp_path):
    f = tmp_path / "ref.jsonl"
    f.write_text('{"id": "a", "instruction": "Say hi."}\n{"id": "b", "instruction": "Go."}\n')
    with pytest.raises(ValueError, match="no task with a human-written answer"):
        load_reference(f, load_config(None))
    f.write_text('{"id": "a", "instruction": "Say hi.", "output": "Hi."}\n'
                 '{"id": "b", "instruction": "Go."}\n')
    tasks, skipped = load_reference(f, load_config(None))
    assert [t.id for t in tasks] == ["a"] and skipped == ["b"]
