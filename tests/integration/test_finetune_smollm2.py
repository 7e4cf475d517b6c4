"""The embedded default end to end: SmolLM2-135M-Instruct (the config's default base model)
fine-tuned with 2-process ZeRO-2 on CPU for a few steps; its loss on the training split drops
and the saved folder reloads and generates."""

from __future__ import annotations

import json
from pathlib import Path

FIXTURE = Path(__file__).parent.parent / "fixtures" / "finetune_run"


def _response_loss(model, tokenizer, rows: list[dict]) -> float:
    """Mean loss on the response tokens of `rows` (the quantity fine-tuning minimises)."""
    import torch

    from teamsrl.finetune.data import collate, tokenize_rows

    examples, _ = tokenize_rows(rows, tokenizer, max_length=128)
    with torch.no_grad():
        batch = collate(examples, tokenizer.pad_token_id or tokenizer.eos_token_id)
        return float(model(**batch).loss)


def test_smollm2_zero2_two_processes(tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from teamsrl.config import load_config
    from teamsrl.finetune.launch import run_finetune
    from teamsrl.llm.embedded import smollm2_hf_dir

    config = load_config(None, [
        "finetune.max_steps=3", "finetune.warmup_steps=0", "finetune.learning_rate=5e-5",
        "finetune.per_device_batch_size=2", "finetune.max_length=128",
        "finetune.save_steps=100", "tracking.mode=disabled"])
    assert config.finetune.base_model == "embedded:smollm2-135m-instruct"
    out = tmp_path / "out"
    summary = run_finetune(config, str(FIXTURE), out)
    assert summary["finished"] and summary["zero_stage"] == 2 and summary["world_size"] == 2

    rows = [json.loads(r) for r in (out / "split" / "train.jsonl").open()]
    tok = AutoTokenizer.from_pretrained(out / "model")
    base = AutoModelForCausalLM.from_pretrained(smollm2_hf_dir())
    tuned = AutoModelForCausalLM.from_pretrained(out / "model")
    assert sum(p.numel() for p in tuned.parameters()) == sum(p.numel() for p in base.parameters())
    before, after = _response_loss(base, tok, rows), _response_loss(tuned, tok, rows)
    assert after < before, (before, after)

    prompt = tok.apply_chat_template([{"role": "user", "content": "Name a color."}],
                                     tokenize=False)
    ids = tok(prompt, return_tensors="pt")
    gen = tuned.generate(**ids, max_new_tokens=8, do_sample=False)
    assert tok.decode(gen[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()
