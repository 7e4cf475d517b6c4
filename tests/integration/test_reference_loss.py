"""The reference loss (`teamsrl evaluate --reference`) on real models.

SmolLM2-135M-Instruct, its top two layers trained for a few full-batch AdamW steps with the
fine-tuning's own tokenisation (Alpaca prompt, loss on the answer only), on the 8 shortest
reference tasks of the default seed split: scored on those same tasks it is clearly better than
the base; trained as long on unrelated text (paragraphs of the README as Alpaca rows) it is not.
A tiny random Llama checks the figure's definition by hand: answer tokens only, after the Alpaca
prompt. The CLI writes reference.json and prints the line.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TASKS, STEPS, LR = 8, 4, 1e-3


def _reference_tasks(run: Path, n: int):
    """The `n` shortest tasks of the default split's reference slice, and the config."""
    from teamsrl.config import load_config
    from teamsrl.evaluate.reference import load_reference
    from teamsrl.finetune.data import alpaca_prompt
    from teamsrl.layout import RunLayout
    from teamsrl.seed_split import write_split

    config = load_config(None, [f"run_dir={run}", "tracking.mode=disabled",
                                "evaluate.reference.bootstrap=500"])
    layout = RunLayout.of(run)
    split = write_split(config, layout.seed_split, layout.seed_slices)
    tasks, _ = load_reference(split.files["reference"], config)
    tasks = sorted(tasks, key=lambda s: len(alpaca_prompt(s.instruction, s.input) + s.output))
    return tasks[:n], config


def _rows(tasks) -> list[dict]:
    return [{"instruction": s.instruction, "input": s.input, "output": s.output} for s in tasks]


def _unrelated_rows(n: int) -> list[dict]:
    """`n` prose paragraphs of the README (about this code, not the seed tasks) as Alpaca rows."""
    paragraphs = [" ".join(p.split()) for p in (ROOT / "README.md").read_text().split("\n\n")
                  if len(p) > 200 and not p.lstrip().startswith(("|", "`", "#", "-"))]
    assert len(paragraphs) >= n
    return [{"instruction": "Recite the next paragraph of the project's README.", "input": "",
             "output": p[:250]} for p in paragraphs[:n]]


def _sft(base: Path, rows: list[dict], out: Path) -> Path:
    """A few full-batch AdamW steps on `rows` (top two layers), saved as an HF folder."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from teamsrl.finetune.data import collate, tokenize_rows

    tok = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base)
    examples, _ = tokenize_rows(rows, tok, 256)
    batch = collate(examples, tok.pad_token_id if tok.pad_token_id is not None
                    else tok.eos_token_id)
    model.requires_grad_(False)
    for module in (*model.model.layers[-2:], model.model.norm):
        module.requires_grad_(True)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=LR)
    torch.manual_seed(0)
    model.train()
    for _ in range(STEPS):
        model(**batch).loss.backward()
        opt.step()
        opt.zero_grad()
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """(tasks, config, base, fine-tuned on the tasks, fine-tuned on unrelated text, base cache)."""
    from teamsrl.llm.embedded import smollm2_hf_dir

    root = tmp_path_factory.mktemp("reference")
    tasks, config = _reference_tasks(root / "run", TASKS)
    base = smollm2_hf_dir()
    on_tasks = _sft(base, _rows(tasks), root / "on-tasks")
    unrelated = _sft(base, _unrelated_rows(TASKS), root / "unrelated")
    return tasks, config, base, on_tasks, unrelated, root / "base-reference.json"


def test_a_finetune_on_the_reference_tasks_scores_clearly_lower(tuned):
    from teamsrl.evaluate.reference import reference_loss

    tasks, config, base, on_tasks, _, cache = tuned
    r = reference_loss(on_tasks, base, tasks, config.evaluate.reference, seed=config.seed,
                       device="cpu", base_cache=cache)
    print(f"on the tasks: {r.loss} base {r.base_loss} difference {r.difference}")
    assert r.n_tasks == TASKS and [t["id"] for t in r.per_task] == [s.id for s in tasks]
    assert r.difference.high < -0.3, r.difference  # clearly lower, interval and all
    assert all(t["loss"] < t["base_loss"] for t in r.per_task)
    assert r.base_loss.mean == pytest.approx(r.loss.mean - r.difference.mean)


def test_a_finetune_on_unrelated_text_does_not(tuned):
    from teamsrl.evaluate.reference import reference_loss

    tasks, config, base, _, unrelated, cache = tuned
    r = reference_loss(unrelated, base, tasks, config.evaluate.reference, seed=config.seed,
                       device="cpu", base_cache=cache)
    print(f"unrelated: {r.loss} base {r.base_loss} difference {r.difference}")
    assert json.loads(cache.read_text())["losses"] == [t["base_loss"] for t in r.per_task]
    assert r.difference.mean > -0.1 and r.difference.high > 0, r.difference


def test_the_loss_counts_answer_tokens_only(tmp_path):
    """By hand on a tiny random Llama: mean NLL of the answer's tokens after BOS + the Alpaca
    prompt; the prompt's tokens carry no loss (their count does not enter the mean)."""
    import torch
    from tiny_models import save_tiny_llama
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from teamsrl.evaluate.reference import task_losses
    from teamsrl.finetune.data import alpaca_prompt

    tasks, _ = _reference_tasks(tmp_path / "run", 3)
    tiny = save_tiny_llama(tmp_path / "tiny")
    tok, model = AutoTokenizer.from_pretrained(tiny), AutoModelForCausalLM.from_pretrained(tiny)
    expected = []
    for s in tasks:
        prompt = [tok.bos_token_id, *tok(alpaca_prompt(s.instruction, s.input),
                                         add_special_tokens=False)["input_ids"]]
        answer = tok(s.output, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([prompt + answer])).logits[0], -1)
        nll = [-logp[len(prompt) - 1 + i, t].item() for i, t in enumerate(answer)]
        expected.append(sum(nll) / len(nll))
    assert task_losses(tiny, tasks, batch_size=2, device="cpu") == pytest.approx(expected,
                                                                                  abs=1e-4)


def test_cli_writes_reference_json_and_prints_the_figure(tuned, tmp_path, capsys):
    from teamsrl.cli import main

    tasks, config, _, on_tasks, _, _ = tuned
    ref = tmp_path / "reference.jsonl"
    ref.write_text("".join(json.dumps({"id": s.id, "instruction": s.instruction,
                                       "input": s.input, "output": s.output}) + "\n"
                           for s in tasks[:4]))
    out = tmp_path / "eval"
    rc = main(["evaluate", "--model", str(on_tasks), "--reference", str(ref), "--tasks",
               "teamsrl_arc_smoke", "--limit", "2", "--out", str(out), "--set",
               f"run_dir={config.run_dir}", "--set", "tracking.mode=disabled", "--set",
               "evaluate.reference.bootstrap=200"])
    printed = capsys.readouterr().out
    assert rc == 0, printed
    record = json.loads((out / "reference.json").read_text())
    assert record["n_tasks"] == 4 and record["source"] == str(ref)
    assert record["difference"]["high"] < 0
    assert "reference loss (4 human-written answers, nats/token): fine-tuned" in printed
    assert "reference.json" in printed.splitlines()[-1]
