"""The fine-tuning config: validation errors, the DeepSpeed JSON it builds (files under
experiments/deepspeed merged and every 'auto' filled), and the learning-rate schedule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from teamsrl.config import ConfigError, load_config
from teamsrl.finetune.engine import build_deepspeed_config, lr_factor

ROOT = Path(__file__).resolve().parent.parent.parent


def _ft(*overrides: str) -> dict:
    return load_config(None, list(overrides)).finetune.model_dump()


def test_defaults_are_the_cpu_recipe_and_paper_hyperparameters():
    ft = load_config(None).finetune
    assert (ft.backend, ft.num_processes, ft.precision, ft.zero_stage) == ("cpu", 2, "fp32", 2)
    assert (ft.learning_rate, ft.max_length, ft.lr_schedule) == (2e-5, 512, "cosine")


@pytest.mark.parametrize("override, message", [
    ("finetune.zero_stage=1", "finetune.zero_stage' = 1: .*2 or 3"),
    ("finetune.learning_rate=-1", "finetune.learning_rate' = -1"),
    ("finetune.heldout_fraction=1.0", "finetune.heldout_fraction' = 1.0"),
    ("finetune.offload=true", "offload=True with backend='cpu'"),
    ("finetune.precision=bf16", "precision='bf16' with backend='cpu'"),
    ("finetune.zero_stag=3", "unknown key 'finetune.zero_stag'"),
])
def test_bad_values_name_key_value_and_expectation(override, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(None, [override])


def test_built_config_has_no_auto_left_and_matches_the_settings():
    ds = build_deepspeed_config(_ft("finetune.per_device_batch_size=3",
                                    "finetune.gradient_accumulation_steps=2"), 2, False)
    assert "auto" not in json.dumps(ds)
    assert ds["train_batch_size"] == 12 and ds["train_micro_batch_size_per_gpu"] == 3
    assert ds["zero_optimization"]["stage"] == 2 and ds["bf16"]["enabled"] is False
    assert ds["zero_allow_untested_optimizer"] is True  # our torch AdamW is passed in


@pytest.mark.parametrize("name, stage", [("zero2.json", 2), ("zero3.json", 3),
                                         ("zero3_offload.json", 3)])
def test_shipped_deepspeed_files_merge_and_fill(name, stage):
    path = ROOT / "experiments" / "deepspeed" / name
    ds = build_deepspeed_config(_ft("finetune.backend=gpu", "finetune.precision=bf16",
                                    f"finetune.zero_stage={stage}",
                                    f"finetune.deepspeed_config={path}"), 4, True)
    assert "auto" not in json.dumps(ds) and ds["bf16"]["enabled"] is True
    assert ds["zero_optimization"]["stage"] == stage


def test_paper_experiment_validates_and_uses_zero3_offload():
    config = load_config(ROOT / "experiments" / "paper-llama7b.yaml")
    ft = config.finetune
    assert (ft.zero_stage, ft.offload, ft.backend, ft.learning_rate) == (3, True, "ray", 2e-5)
    ds = build_deepspeed_config(ft.model_dump() | {"deepspeed_config": str(
        ROOT / ft.deepspeed_config)}, 4, True)
    assert ds["zero_optimization"]["offload_param"]["device"] == "cpu"
    assert ds["train_batch_size"] == 256


def test_deepspeed_file_errors_name_the_problem(tmp_path):
    other = tmp_path / "z.json"
    other.write_text(json.dumps({"zero_optimization": {"stage": 3}}))
    with pytest.raises(ValueError, match=r"stage = 3 but finetune.zero_stage = 2"):
        build_deepspeed_config(_ft(f"finetune.deepspeed_config={other}"), 2, False)
    other.write_text(json.dumps({"optimizer": {"params": {"lr": "auto"}}}))
    with pytest.raises(ValueError, match=r"'optimizer.params.lr' = 'auto'"):
        build_deepspeed_config(_ft(f"finetune.deepspeed_config={other}"), 2, False)
    with pytest.raises(FileNotFoundError, match="file not found"):
        build_deepspeed_config(_ft(f"finetune.deepspeed_config={tmp_path / 'no.json'}"), 2,
                               False)


def test_lr_schedule_warms_up_from_a_nonzero_rate_then_decays_to_zero():
    f = [lr_factor(s, 10, 2, "cosine") for s in range(10)]
    assert f[0] == pytest.approx(1 / 3) and f[1] == pytest.approx(2 / 3) and f[2] == 1.0
    assert all(a > b for a, b in zip(f[2:], f[3:], strict=False)) and f[-1] > 0
    assert lr_factor(10, 10, 2, "cosine") == pytest.approx(0.0)
    assert lr_factor(7, 10, 2, "constant") == 1.0
