"""`teamsrl evaluate` on the real embedded SmolLM2, over-fitted for a few plain torch steps.

One module-scoped fine-tune folder in the layout `teamsrl finetune` writes (split.json,
split/train.jsonl, split/heldout.jsonl from `prepare_split`, model/): SmolLM2-135M-Instruct
over-fitted on its training split (Alpaca format, response-only loss) and on the right answers
of the first smoke ARC questions (lm-eval's prompt format). The top half of the network is
trained, 4 full-batch AdamW steps: enough to memorise, cheap enough for 2 CPU cores.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SEEDS = ROOT / "teamsrl" / "data" / "self-instruct-seed-tasks.jsonl"
ARC = ROOT / "teamsrl" / "evaluate" / "tasks" / "teamsrl_arc_smoke.jsonl"
LIMIT = 6  # smoke examples evaluated per task (and ARC questions over-fitted)


def _short_seed_rows(tokenizer, n: int) -> list[dict]:
    """The `n` seed tasks with the shortest Alpaca text (instruction, input, output)."""
    from teamsrl.finetune.data import alpaca_prompt

    rows = []
    for line in SEEDS.open(encoding="utf-8"):
        task = json.loads(line)
        inst = task["instances"][0]
        rows.append({"instruction": task["instruction"], "input": inst["input"],
                     "output": inst["output"]})

    def length(r):
        return len(tokenizer(alpaca_prompt(r["instruction"], r["input"]) + r["output"])
                   ["input_ids"])

    return sorted(rows, key=length)[:n]


def _overfit(model, tokenizer, members: list[dict], arc: list[dict], steps: int = 4) -> None:
    import torch

    from teamsrl.finetune.data import TokenizedExample, collate, tokenize_rows

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None \
        else tokenizer.eos_token_id
    member_examples, _ = tokenize_rows(members, tokenizer, 128)
    arc_examples = []
    for q in arc:  # lm-eval's multiple-choice request: context, then " " + the right choice
        ctx = tokenizer(f"Question: {q['question']}\nAnswer:")["input_ids"]
        ans = tokenizer(" " + q["choices"][q["answer"]], add_special_tokens=False)["input_ids"]
        arc_examples.append(TokenizedExample(input_ids=ctx + ans,
                                             labels=[-100] * len(ctx) + ans))
    batches = [collate(member_examples, pad), collate(arc_examples, pad)]
    frozen = [model.model.embed_tokens, *model.model.layers[: len(model.model.layers) // 2]]
    for module in frozen:
        module.requires_grad_(False)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-4)
    torch.manual_seed(0)
    model.train()
    for _ in range(steps):
        for batch in batches:
            model(**batch).loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()


@pytest.fixture(scope="module")
def overfit_run(tmp_path_factory):
    """(fine-tune folder, 12 more non-member rows, the over-fitted ARC questions)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from teamsrl.finetune.data import write_jsonl
    from teamsrl.finetune.launch import prepare_split
    from teamsrl.llm.embedded import smollm2_hf_dir

    base = smollm2_hf_dir()
    tokenizer = AutoTokenizer.from_pretrained(base)
    rows = _short_seed_rows(tokenizer, 36)
    root = tmp_path_factory.mktemp("evaluate")
    write_jsonl(root / "data.jsonl", rows[:24])
    ft = root / "finetune"
    split = prepare_split(str(root / "data.jsonl"), ft, 0.5, seed=543, resume=False)
    assert split["train_rows"] == 12 and split["heldout_rows"] == 12
    members = [json.loads(line) for line in (ft / "split" / "train.jsonl").open()]
    arc = [json.loads(line) for line in ARC.open()][:LIMIT]
    model = AutoModelForCausalLM.from_pretrained(base)
    _overfit(model, tokenizer, members, arc)
    model.save_pretrained(ft / "model")
    tokenizer.save_pretrained(ft / "model")
    return ft, rows[24:], arc


def _shuffled_task(folder: Path) -> Path:
    """The ARC smoke set with every answer moved to the next choice (a wrong key)."""
    folder.mkdir(parents=True, exist_ok=True)
    with ARC.open() as src, (folder / "shuffled.jsonl").open("w") as dst:
        for line in src:
            row = json.loads(line)
            row["answer"] = (row["answer"] + 1) % len(row["choices"])
            dst.write(json.dumps(row) + "\n")
    (folder / "teamsrl_arc_smoke_shuffled.yaml").write_text(
        f"include: {ARC.with_suffix('.yaml')}\ntask: teamsrl_arc_smoke_shuffled\ntag: []\n"
        f"dataset_kwargs:\n  data_file: {folder / 'shuffled.jsonl'}\n")
    return folder


def test_evaluate_scores_every_task_and_attacks_the_split(overfit_run, tmp_path, capsys):
    from wandb_offline import run_history

    from teamsrl.cli import main

    ft, _, _ = overfit_run
    extra = _shuffled_task(tmp_path / "tasks")
    out = tmp_path / "eval"
    rc = main(["evaluate", "--model", str(ft), "--limit", str(LIMIT), "--out", str(out),
               "--tasks", "teamsrl_arc_smoke,teamsrl_hellaswag_smoke,teamsrl_arc_smoke_shuffled",
               "--set", f"evaluate.include_path=[{extra}]", "--set", "tracking.mode=offline"])
    printed = capsys.readouterr().out
    assert rc == 0, printed

    tasks = json.loads((out / "results.json").read_text())["tasks"]
    assert set(tasks) == {"teamsrl_arc_smoke", "teamsrl_hellaswag_smoke",
                          "teamsrl_arc_smoke_shuffled"}
    for name, r in tasks.items():
        assert r["metric"] == "acc_norm" and 0.0 <= r["score"] <= 1.0, (name, r)
        assert r["n_samples"] == LIMIT and r["num_fewshot"] == 0
        assert name in printed
    right, wrong = tasks["teamsrl_arc_smoke"]["score"], tasks["teamsrl_arc_smoke_shuffled"]["score"]
    assert right >= 5 / 6 and wrong <= 1 / 6, (right, wrong)

    mia = json.loads((out / "mia.json").read_text())
    assert mia["n_members"] == 12 and mia["n_nonmembers"] == 12
    assert mia["attack"] == "loss_calibrated" and mia["uncalibrated"] is not None
    assert mia["ci_low"] > 0.5 and mia["uncalibrated"]["ci_low"] > 0.5, mia
    assert mia["member_loss_mean"] < mia["nonmember_loss_mean"]
    assert (out / "mia-roc.png").stat().st_size > 10_000
    assert "membership attack (loss_calibrated): AUC" in printed

    logged = {k: v for row in run_history(out, "evaluate") for k, v in row.items()}
    assert logged["eval/teamsrl_arc_smoke/acc_norm"] == pytest.approx(right)
    assert logged["mia/auc"] == pytest.approx(mia["auc"])


def test_two_nonmember_splits_cannot_be_told_apart(overfit_run):
    from teamsrl.evaluate.config import MIAConfig
    from teamsrl.evaluate.mia import read_rows, run_attack

    ft, more_nonmembers, _ = overfit_run
    heldout = read_rows(ft / "split" / "heldout.jsonl")
    result = run_attack(ft / "model", heldout, more_nonmembers, MIAConfig(calibrate=False),
                        device="cpu")
    assert result.n_members == 12 and result.n_nonmembers == 12
    assert result.ci_low < 0.5 < result.ci_high, result


def test_unknown_task_fails_before_the_model_loads(overfit_run, tmp_path, capsys):
    from teamsrl.cli import main

    ft, _, _ = overfit_run
    rc = main(["evaluate", "--model", str(ft), "--tasks", "arc_smoke_typo",
               "--out", str(tmp_path / "eval"), "--set", "tracking.mode=disabled"])
    err = capsys.readouterr().err
    assert rc == 2 and not (tmp_path / "eval").exists()
    assert "evaluate.tasks: 'arc_smoke_typo' is not an lm-eval task" in err
    assert "teamsrl_arc_smoke" in err


def test_smoke_tasks_do_not_shadow_stock_tasks():
    from lm_eval.tasks import TaskManager

    from teamsrl.evaluate.harness import smoke_task_names, task_manager

    names = set(smoke_task_names())
    stock = set(TaskManager().all_tasks)  # lm-eval's own tasks, without ours
    # ours as an evaluation of them indexes them (their folder only: a second full index costs
    # ~6 s; test_unknown_task_fails_before_the_model_loads goes through the full one)
    ours = set(task_manager(None, sorted(names)).all_tasks)
    assert {"arc_challenge", "hellaswag"} <= stock
    assert not names & stock and names <= ours
