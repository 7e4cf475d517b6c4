"""`benchmarks/headline.py`'s episode-return figures (issue 16's policy-vs-random comparison):
means over runs and generation seeds, each arm's difference from random, and a bootstrap that
resamples runs and seeds with the SAME draw for every arm (paired): a constant per-seed gain
over random must come out with a zero-width interval however much the seeds differ."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))

SEEDS = [f"seed_{i}" for i in range(12)]


def _returns(gain: dict[str, float], runs: int = 3) -> dict:
    """Per arm, per run, per seed: a seed-dependent base return (wide spread) plus the arm's
    gain and a run offset shared by every arm."""
    base = {sid: 4.0 * np.sin(i) for i, sid in enumerate(SEEDS)}
    return {arm: [{sid: base[sid] + g + 0.5 * k for sid in SEEDS} for k in range(runs)]
            for arm, g in gain.items()}


def test_means_and_paired_differences():
    from headline import returns_figures

    figs = returns_figures(_returns({"policy": 1.0, "frequency": 0.25, "random": 0.0}), SEEDS,
                           n_boot=400)
    m, ci = figs["mean_return"], figs["ci95"]
    base = np.mean([4.0 * np.sin(i) for i in range(len(SEEDS))]) + 0.5  # runs 0, 1, 2
    assert m["random"] == pytest.approx(base, abs=1e-5)
    assert m["policy"] == pytest.approx(base + 1.0, abs=1e-5)
    assert m["policy_minus_random"] == pytest.approx(1.0, abs=1e-5)
    assert m["frequency_minus_random"] == pytest.approx(0.25, abs=1e-5)
    # paired: every resample moves both arms alike, so the gain's interval has no width
    assert ci["policy_minus_random"] == pytest.approx([1.0, 1.0], abs=1e-5)
    assert ci["frequency_minus_random"] == pytest.approx([0.25, 0.25], abs=1e-5)
    # while each arm's own mean varies with the seeds drawn
    low, high = ci["random"]
    assert high - low > 0.5
    assert figs["episodes_per_arm"] == 3 * len(SEEDS)


def _row(seed_id: str, step: int, components: dict) -> dict:
    return {"kind": "row", "row_id": f"{seed_id}/{step}", "seed_id": seed_id, "seed_index": 0,
            "step": step, "seed_instruction": "s", "instruction": "i",
            "reward_components": components}


def test_an_episode_return_sums_every_step_and_component(tmp_path):
    import json

    from headline import seed_returns

    rows = [_row("a", 1, {"verdict": 1.0, "cost": -0.04}),
            _row("a", 2, {"failure": -1.0, "cost": -0.04}),
            _row("b", 1, {"novelty": 0.25})]
    (tmp_path / "rows.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows),
                                         encoding="utf-8")
    got = seed_returns(tmp_path, ["a", "b", "c"])
    assert got == pytest.approx({"a": -0.08, "b": 0.25, "c": 0.0})


def test_a_seed_outside_the_generation_slice_is_refused(tmp_path):
    import json

    from headline import seed_returns

    (tmp_path / "rows.jsonl").write_text(json.dumps({
        "kind": "row", "row_id": "x/1", "seed_id": "other", "seed_index": 0, "step": 1,
        "seed_instruction": "s", "instruction": "i", "reward_components": {"verdict": 1.0}}) +
        "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="'other', which is not a generation seed"):
        seed_returns(tmp_path, ["seed_0"])


def test_a_reference_unit_deletes_its_checkpoints_and_model_once_the_loss_is_recorded(
        tmp_path, monkeypatch):
    """The disk of the first full run filled up with 27 units' DeepSpeed checkpoints (4.6 GB
    each). Doubles stand in for the fine-tune and the loss: what is tested is the bookkeeping."""
    from types import SimpleNamespace

    import headline

    import teamsrl.evaluate.reference as reference
    import teamsrl.finetune.launch as launch
    from teamsrl.config import load_config

    def fake_finetune(cfg, data, out, resume=False):
        for leftover in ("checkpoints/step6", "model"):
            (Path(out) / leftover).mkdir(parents=True)
            (Path(out) / leftover / "weights.bin").write_bytes(b"\0" * 64)
        (Path(out) / "metrics.jsonl").write_text("{}\n")
        return {"steps": cfg.finetune.max_steps, "model_dir": str(Path(out) / "model")}

    loss = SimpleNamespace(mean=1.5)
    monkeypatch.setattr(launch, "run_finetune", fake_finetune)
    monkeypatch.setattr(reference, "check_reference", lambda *a, **k: None)
    monkeypatch.setattr(reference, "reference_loss", lambda *a, **k: SimpleNamespace(
        loss=loss, base_loss=SimpleNamespace(mean=2.0), difference=SimpleNamespace(mean=-0.5),
        n_tasks=3))
    config = load_config(None, [f"run_dir={tmp_path}"])
    rows = [(1, 2, True, True, "t", {"instruction": "Say hi.", "input": "", "output": "Hi."})]
    folder = tmp_path / "policy-0" / "reference-B8"
    record = headline.reference_unit(config, folder, rows, 3, ([], []), tmp_path)
    assert record == {"steps": 3, "rows": 1, "loss": 1.5, "base_loss": 2.0, "difference": -0.5,
                      "n_tasks": 3}
    assert json.loads((folder / "headline-done.json").read_text()) == record
    assert not (folder / "finetune" / "checkpoints").exists()
    assert not (folder / "finetune" / "model").exists()
    assert (folder / "finetune" / "metrics.jsonl").is_file()  # what it measured stays
    assert headline.reference_unit(config, folder, rows, 3, ([], []), tmp_path) == record
