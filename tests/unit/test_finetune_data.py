"""Fine-tuning inputs without a model: dataset forms, column checks, split, Alpaca tokenisation
with response-only labels and counted truncation, batching plan, and the driver's bad-input errors.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from teamsrl.finetune.data import (
    IGNORE_INDEX,
    DatasetError,
    alpaca_prompt,
    check_rows,
    micro_batch_indices,
    read_rows,
    resolve_data_path,
    split_rows,
    tokenize_rows,
)

FIXTURE = Path(__file__).parent.parent / "fixtures" / "finetune_run"


@pytest.fixture(scope="module")
def word_tokenizer():
    """A real (tiny, in-memory) fast tokenizer: one id per whitespace word, EOS = 1."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    rows = read_rows(FIXTURE)
    words = {w for r in rows for k in ("instruction", "input", "output") for w in r[k].split()}
    words |= set((alpaca_prompt("x", "y") + alpaca_prompt("x")).split())
    vocab = {"<unk>": 0, "</s>": 1, **{w: i + 2 for i, w in enumerate(sorted(words))}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="</s>")


def test_fixture_run_dir_resolves_to_its_jsonl_and_keeps_alpaca_columns():
    assert resolve_data_path(FIXTURE) == FIXTURE / "data.jsonl"
    rows = check_rows(read_rows(FIXTURE), "fixture")
    assert len(rows) == 20 and set(rows[0]) == {"instruction", "input", "output"}


def test_saved_datasets_folder_in_a_run_dir_is_read(tmp_path):
    import datasets

    rows = read_rows(FIXTURE)
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "dataset"))
    assert resolve_data_path(tmp_path) == tmp_path / "dataset"
    assert [r["output"] for r in read_rows(tmp_path)] == [r["output"] for r in rows]


def test_empty_dataset_is_an_error_naming_the_expected_columns(tmp_path):
    (tmp_path / "data.jsonl").write_text("\n")
    with pytest.raises(DatasetError, match="empty.*instruction, output"):
        check_rows(read_rows(tmp_path), "data.jsonl")


def test_missing_column_names_row_column_and_what_was_found():
    rows = [{"instruction": "a", "output": "b"}, {"instruction": "c", "response": "d"}]
    with pytest.raises(DatasetError, match=r"row 1: missing column 'output'.*"
                                           r"got \['instruction', 'response'\]"):
        check_rows(rows, "x.jsonl")


def test_non_string_value_and_bad_json_are_errors(tmp_path):
    with pytest.raises(DatasetError, match="column 'output' = 3: expected a string, got int"):
        check_rows([{"instruction": "a", "output": 3}], "x")
    bad = tmp_path / "d.jsonl"
    bad.write_text('{"instruction": "a", "output": "b"}\n{oops\n')
    with pytest.raises(DatasetError, match="line 2: not JSON"):
        read_rows(bad)
    with pytest.raises(DatasetError, match="not found"):
        resolve_data_path(tmp_path / "nope")


def test_missing_input_column_means_the_no_input_prompt():
    rows = check_rows([{"instruction": "Say hi.", "output": "hi"}], "x")
    assert rows[0]["input"] == ""
    assert "### Input" not in alpaca_prompt(rows[0]["instruction"], rows[0]["input"])
    assert "### Input:\nctx" in alpaca_prompt("Say hi.", "ctx")


def test_split_is_deterministic_disjoint_and_keeps_a_training_row():
    rows = [{"instruction": str(i), "input": "", "output": "o"} for i in range(50)]
    train, held = split_rows(rows, 0.2, seed=7)
    assert (train, held) == split_rows(rows, 0.2, seed=7)
    assert len(held) == 10 and not set(train) & set(held) and len(train) + len(held) == 50
    assert split_rows(rows, 0.2, seed=8)[1] != held
    assert split_rows(rows[:1], 0.9, seed=0) == ([0], [])


def test_labels_cover_exactly_the_response_and_eos(word_tokenizer):
    rows = [{"instruction": "Reverse the string.", "input": "hello", "output": "olleh"}]
    (ex,), report = tokenize_rows(rows, word_tokenizer, max_length=512)
    prompt_len = len(alpaca_prompt("Reverse the string.", "hello").split())
    assert ex.labels[:prompt_len] == [IGNORE_INDEX] * prompt_len
    assert ex.labels[prompt_len:] == ex.input_ids[prompt_len:]
    assert ex.input_ids[-1] == word_tokenizer.eos_token_id
    assert report.truncated == 0 and report.response_tokens == 2


def test_rows_longer_than_max_length_are_truncated_and_counted(word_tokenizer):
    short = {"instruction": "Name the largest planet.", "input": "", "output": "Jupiter."}
    long = {"instruction": "Write the opposite of the word.", "input": "",
            "output": " ".join(["Modern."] * 100)}
    no_room = {"instruction": " ".join(["Name"] * 200), "input": "", "output": "x"}
    examples, report = tokenize_rows([short, long, no_room], word_tokenizer, max_length=64)
    assert report.truncated == 2 and report.truncated_rows == [1, 2]
    assert report.dropped_no_response == 1 and len(examples) == 2
    assert all(len(e.input_ids) <= 64 for e in examples)
    with pytest.raises(DatasetError, match="max_length=8"):
        tokenize_rows([short], word_tokenizer, max_length=8)


def test_micro_batches_partition_each_epoch_across_ranks():
    plans = [micro_batch_indices(20, 3, 2, r, seed=1, epoch=0) for r in range(2)]
    assert len(plans[0]) == len(plans[1]) == 4  # 20 rows padded to 24 = 4 x (3 x 2)
    seen = [i for plan in plans for batch in plan for i in batch]
    assert set(seen) == set(range(20)) and len(seen) == 24
    assert micro_batch_indices(20, 3, 2, 0, seed=1, epoch=1) != plans[0]


def test_cli_reports_bad_data_before_any_model_or_process(tmp_path, capsys):
    from teamsrl.cli import main

    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps({"instruction": "a", "answer": "b"}) + "\n")
    rc = main(["finetune", "--data", str(data), "--out", str(tmp_path / "out"),
               "--set", "tracking.mode=disabled"])
    err = capsys.readouterr().err
    assert rc == 2 and "missing column 'output'" in err
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_base_model_that_is_not_a_causal_lm_is_rejected(tmp_path):
    from transformers import BertConfig, DistilBertConfig

    from teamsrl.finetune.launch import check_base_model

    DistilBertConfig(dim=32, n_layers=1, n_heads=2).save_pretrained(tmp_path / "distilbert")
    with pytest.raises(ValueError, match=r"model_type 'distilbert' is not a causal LM; expected"):
        check_base_model(str(tmp_path / "distilbert"))
    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
               architectures=["BertForSequenceClassification"]).save_pretrained(tmp_path / "cls")
    with pytest.raises(ValueError, match=r"\['BertForSequenceClassification'\] hold no "
                                         r"causal-LM head"):
        check_base_model(str(tmp_path / "cls"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no config.json"):
        check_base_model(str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        check_base_model(str(tmp_path / "missing"))


def test_gpu_backend_without_enough_gpus_fails_before_anything_runs(tmp_path):
    import torch

    from teamsrl.config import load_config
    from teamsrl.finetune.launch import run_finetune

    n = torch.cuda.device_count()
    config = load_config(None, ["finetune.backend=gpu", f"finetune.num_processes={n + 1}"])
    with pytest.raises(ValueError, match=rf"num_processes = {n + 1} with backend 'gpu': this "
                                         rf"machine has {n} CUDA GPU"):
        run_finetune(config, str(FIXTURE), tmp_path / "out")
    assert not (tmp_path / "out").exists()
