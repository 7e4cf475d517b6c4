"""DeepSpeed ZeRO fine-tuning on CPU: 2 gloo processes on a tiny random Llama and the fixture
dataset. ZeRO-2 learns (loss down, every parameter changed) and saves a reloadable model, ZeRO-3
runs, and a run paused at step 3 resumes at step 4 with the same optimizer state, matching the
uninterrupted run step for step.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tiny_models import save_tiny_llama

FIXTURE = Path(__file__).parent.parent / "fixtures" / "finetune_run"
STEPS, PAUSE = 6, 3


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> Path:
    """A random 2-layer Llama (hidden 64) with the SmolLM2 tokenizer, saved as an HF folder."""
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


def _overrides(base: Path, *extra: str) -> list[str]:
    return [f"finetune.base_model={base}", "finetune.learning_rate=3e-3",
            "finetune.weight_decay=0", f"finetune.max_steps={STEPS}",
            f"finetune.save_steps={PAUSE}", "finetune.per_device_batch_size=2",
            "finetune.max_length=128", "finetune.heldout_fraction=0.1", "tracking.mode=disabled",
            *extra]


def _config(base: Path, *extra: str):
    from teamsrl.config import load_config

    return load_config(None, _overrides(base, *extra))


def _metrics(out: Path) -> tuple[list[dict], list[dict]]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "loss" in r], [r for r in rows if "event" in r]


def _weights(folder: Path) -> dict:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder)
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _response_loss(model, tok, row: dict) -> float:
    """Mean loss per token of a row's response + EOS after its Alpaca prompt."""
    import torch

    from teamsrl.finetune.data import alpaca_prompt

    prompt = tok(alpaca_prompt(row["instruction"], row["input"]))["input_ids"]
    response = tok(row["output"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    with torch.no_grad():
        return model(input_ids=torch.tensor([prompt + response]),
                     labels=torch.tensor([[-100] * len(prompt) + response])).loss.item()


def _extensions_dir(out: Path) -> Path:
    """The TORCH_EXTENSIONS_DIR of the ZeRO-2 fixture's ranks, beside its output folder."""
    return out.parent / f"{out.name}-torch-extensions"


@pytest.fixture(scope="module")
def zero2_run(tiny_llama, tmp_path_factory):
    """The uninterrupted ZeRO-2 run (W&B offline), shared by the learning and resume tests. Its
    ranks JIT-build any DeepSpeed op into an empty TORCH_EXTENSIONS_DIR of their own."""
    from teamsrl.finetune.launch import run_finetune

    out = tmp_path_factory.mktemp("zero2")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_EXTENSIONS_DIR", str(_extensions_dir(out)))
        summary = run_finetune(_config(tiny_llama, "tracking.mode=offline"), str(FIXTURE), out)
    return out, summary


def test_a_cpu_finetune_compiles_no_deepspeed_op(zero2_run):
    """DeepSpeed's CPU process group would JIT-compile its shared-memory comm op (40 s on 2
    cores, once per environment) that only AutoTP inference uses: the ranks skip it."""
    out, summary = zero2_run
    assert summary["finished"]
    built = _extensions_dir(out)
    assert not built.exists() or not any(built.iterdir()), sorted(built.rglob("*"))[:5]


def test_zero2_two_processes_learns_and_saves_a_model_that_generates(tiny_llama, zero2_run):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out, summary = zero2_run
    assert summary["engine"] == "deepspeed.runtime.engine.DeepSpeedEngine"
    assert summary["zero_stage"] == 2 and summary["world_size"] == 2
    assert summary["optimizer"] == "DeepSpeedZeroOptimizer"
    assert summary["basic_optimizer"] == "AdamW" and summary["accelerator"] == "cpu"
    assert summary["finished"] and summary["steps"] == STEPS

    losses, _ = _metrics(out)
    assert [r["step"] for r in losses] == list(range(1, STEPS + 1))
    assert losses[-1]["loss"] < losses[0]["loss"] - 0.3, losses
    assert all(r["grad_norm"] > 0 and r["tokens_per_s"] > 0 and r["lr"] > 0 for r in losses)
    assert list(out.glob("wandb/offline-run-*")), "W&B offline run missing"

    before, after = _weights(tiny_llama), _weights(out / "model")
    assert before.keys() == after.keys()
    unchanged = [n for n in before if torch.equal(before[n], after[n])]
    assert not unchanged, f"parameters not updated: {unchanged}"

    tok = AutoTokenizer.from_pretrained(out / "model")
    model = AutoModelForCausalLM.from_pretrained(out / "model")
    assert (out / "model" / "model.safetensors").is_file()
    prompt = tok.apply_chat_template([{"role": "user", "content": "Name a color."}],
                                     tokenize=False)
    assert prompt.endswith("### Response:\n")  # the Alpaca template it was trained on
    ids = tok(prompt, return_tensors="pt")
    n = ids["input_ids"].shape[1]
    gen = model.generate(**ids, max_new_tokens=5, do_sample=False)[0, n:].tolist()
    base = AutoModelForCausalLM.from_pretrained(tiny_llama)
    base_gen = base.generate(**ids, max_new_tokens=5, do_sample=False)[0, n:].tolist()
    # it generates what it learned: tokens of the training responses (each ends with EOS; 6
    # steps teach mostly that), where the random model it started from says unrelated tokens
    train_rows = [json.loads(r) for r in (out / "split" / "train.jsonl").open()]
    learned = {tok.eos_token_id} | {t for r in train_rows for t in
                                    tok(r["output"], add_special_tokens=False)["input_ids"]}
    assert gen and set(gen) <= learned, tok.decode(gen)
    assert not set(base_gen) <= learned, tok.decode(base_gen)
    # and it gives every training response (+ EOS) a lower loss than the base model does
    for r in train_rows:
        assert _response_loss(model, tok, r) < _response_loss(base, tok, r) - 0.2, r

    split = json.loads((out / "split.json").read_text())
    assert split["train_rows"] == 18 and split["heldout_rows"] == 2
    held = [json.loads(r)["row_id"] for r in (out / "split" / "heldout.jsonl").open()]
    train = [json.loads(r)["row_id"] for r in (out / "split" / "train.jsonl").open()]
    assert held == split["heldout_row_ids"] and not set(held) & set(train)


def test_paused_run_resumes_at_next_step_with_the_same_optimizer_state(tiny_llama, zero2_run,
                                                                        tmp_path, capfd):
    import torch

    from teamsrl.finetune.launch import run_finetune

    full_out, _ = zero2_run
    out = tmp_path / "paused"
    first = run_finetune(_config(tiny_llama, f"finetune.stop_at_step={PAUSE}"), str(FIXTURE), out)
    assert not first["finished"] and first["steps"] == PAUSE and not (out / "model").exists()
    with pytest.raises(ValueError, match="already holds checkpoints; expected --resume"):
        run_finetune(_config(tiny_llama), str(FIXTURE), out)

    with pytest.raises(RuntimeError) as err:  # another batch size would replay other data
        run_finetune(_config(tiny_llama, "finetune.per_device_batch_size=3"), str(FIXTURE), out,
                     resume=True)
    said = str(err.value) + capfd.readouterr().err
    assert "per_device_batch_size = 3 (checkpoint: 2)" in said

    second = run_finetune(_config(tiny_llama), str(FIXTURE), out, resume=True)
    assert second["finished"] and second["steps"] == STEPS
    losses, events = _metrics(out)
    (resumed,) = events
    assert resumed["from_step"] == PAUSE
    assert resumed["optimizer_fingerprint"] == pytest.approx(resumed["saved_fingerprint"],
                                                             rel=1e-12)
    assert resumed["optimizer_fingerprint"][2] == PAUSE  # Adam's step count came back
    assert [r["step"] for r in losses] == list(range(1, STEPS + 1))

    reference, _ = _metrics(full_out)
    for mine, ref in zip(losses, reference, strict=True):
        assert mine["loss"] == pytest.approx(ref["loss"], rel=1e-5), (mine, ref)
        assert mine["lr"] == pytest.approx(ref["lr"], rel=1e-9)
    a, b = _weights(full_out / "model"), _weights(out / "model")
    assert all(torch.allclose(a[n], b[n], atol=1e-6) for n in a)


def test_zero3_with_checkpointing_and_accumulation_saves_the_full_model(tiny_llama, tmp_path,
                                                                        capsys):
    import torch

    from teamsrl.cli import main

    out = tmp_path / "zero3"
    extra = ["finetune.zero_stage=3", "finetune.max_steps=3",
             "finetune.gradient_checkpointing=true", "finetune.gradient_accumulation_steps=2"]
    sets = [a for o in _overrides(tiny_llama, *extra) for a in ("--set", o)]
    assert main(["finetune", "--data", str(FIXTURE), "--out", str(out), *sets]) == 0  # the CLI
    assert f"model: {out / 'model'} (3 steps, ZeRO-3, world size 2)" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["zero_stage"] == 3 and summary["world_size"] == 2
    assert summary["deepspeed_config"]["train_batch_size"] == 2 * 2 * 2  # micro x accum x world
    assert summary["optimizer"] == "DeepSpeedZeroOptimizer_Stage3"
    losses, _ = _metrics(out)
    assert losses[-1]["loss"] < losses[0]["loss"]
    before, after = _weights(tiny_llama), _weights(out / "model")
    assert all(after[n].shape == before[n].shape for n in before)  # gathered, not partitions
    assert not [n for n in before if torch.equal(before[n], after[n])]
