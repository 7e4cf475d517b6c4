"""The Ray Train path: the same training function as a 2-worker CPU (gloo) TorchTrainer on a
local `ray.init(address="local", num_cpus=2)`; it finishes and saves a model that reloads."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

FIXTURE = Path(__file__).parent.parent / "fixtures" / "finetune_run"


@pytest.fixture
def local_ray():
    """A private 2-CPU Ray cluster for this test, shut down afterwards."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=True)
    yield
    ray.shutdown()


def test_ray_train_two_cpu_workers_finish_and_save_a_model(local_ray, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from teamsrl.config import load_config
    from teamsrl.finetune.launch import run_finetune
    from teamsrl.llm.embedded import smollm2_hf_dir

    tok = AutoTokenizer.from_pretrained(smollm2_hf_dir())
    torch.manual_seed(0)
    base = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))
    base.save_pretrained(tmp_path / "base")
    tok.save_pretrained(tmp_path / "base")

    config = load_config(None, [
        f"finetune.base_model={tmp_path / 'base'}", "finetune.backend=ray",
        "finetune.num_processes=2", "finetune.max_steps=2", "finetune.learning_rate=3e-3",
        "finetune.per_device_batch_size=2", "finetune.max_length=96", "tracking.mode=disabled"])
    summary = run_finetune(config, str(FIXTURE), tmp_path / "out")

    assert summary["engine"] == "deepspeed.runtime.engine.DeepSpeedEngine"
    assert summary["world_size"] == 2 and summary["zero_stage"] == 2
    assert summary["finished"] and summary["steps"] == 2
    losses = [json.loads(r) for r in (tmp_path / "out" / "metrics.jsonl").open()]
    assert [r["step"] for r in losses] == [1, 2]
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "out" / "model")
    changed = [n for n, p in model.named_parameters()
               if not torch.equal(p, dict(base.named_parameters())[n])]
    assert changed, "the Ray-trained model is identical to its base"
