"""The fine-tuning data: read the generated dataset, split off a held-out set, tokenise with the
Alpaca template so that only response tokens carry a loss, and batch.

Accepted inputs (what `teamsrl generate` writes): a run folder holding `data.jsonl` or a
`dataset/` folder saved with `datasets.save_to_disk`, or a path to such a JSONL file or dataset
folder. Columns `instruction` and `output` are required, `input` is optional; provenance columns
(`seed_id`, `step`, `action_path`, ...) are ignored. Torch is imported only where batches are built.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REQUIRED_COLUMNS = ("instruction", "output")
OPTIONAL_COLUMNS = ("input",)
IGNORE_INDEX = -100

PROMPT_WITH_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n"
)
PROMPT_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n"
)
# The same format as a chat template, saved with the model so chat use matches training.
ALPACA_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}"
    "{{ 'Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\n' + message['content'] + '\n\n### Response:\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token }}{% endif %}"
    "{% endfor %}"
)


class DatasetError(ValueError):
    """The fine-tuning data is missing, empty or malformed; the message says where and why."""


def alpaca_prompt(instruction: str, input_text: str = "") -> str:
    """The Alpaca prompt for one row (the no-input variant when `input` is empty)."""
    if input_text and input_text.strip():
        return PROMPT_WITH_INPUT.format(instruction=instruction, input=input_text)
    return PROMPT_NO_INPUT.format(instruction=instruction)


def resolve_data_path(path: str | Path) -> Path:
    """A run folder, JSONL file or dataset folder -> the file/folder that holds the rows."""
    p = Path(path).expanduser()
    if not p.exists():
        raise DatasetError(f"--data {str(path)!r}: not found; expected a run folder with "
                           "data.jsonl or dataset/, a .jsonl file, or a saved datasets folder")
    if p.is_file():
        return p
    for candidate in (p / "data.jsonl", p / "dataset"):
        if candidate.exists():
            return candidate
    if (p / "dataset_info.json").is_file() or (p / "state.json").is_file():
        return p
    raise DatasetError(f"--data {str(path)!r}: a folder without data.jsonl, dataset/ or a saved "
                       "datasets.Dataset (state.json); expected the output of `teamsrl generate`")


def read_rows(path: str | Path) -> list[dict[str, Any]]:
    """All rows of a JSONL file or a saved `datasets` folder, as dicts."""
    p = resolve_data_path(path)
    if p.is_dir():
        import datasets

        ds = datasets.load_from_disk(str(p))
        if isinstance(ds, datasets.DatasetDict):
            if "train" not in ds:
                raise DatasetError(f"{str(p)!r}: a DatasetDict without a 'train' split "
                                   f"(splits: {sorted(ds)})")
            ds = ds["train"]
        return [dict(r) for r in ds]
    rows = []
    with p.open("rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DatasetError(f"{str(p)!r} line {n}: not UTF-8 text (byte {e.start}); "
                                   "expected JSON lines") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DatasetError(f"{str(p)!r} line {n}: not JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise DatasetError(f"{str(p)!r} line {n}: expected a JSON object, got "
                                   f"{type(row).__name__}")
            rows.append(row)
    return rows


def check_rows(rows: list[dict[str, Any]], source: str) -> list[dict[str, str]]:
    """Validate the Alpaca columns; returns rows reduced to instruction/input/output."""
    if not rows:
        raise DatasetError(f"{source}: the dataset is empty; expected at least one row with "
                           f"columns {', '.join(REQUIRED_COLUMNS)} (and optionally input)")
    out = []
    for i, row in enumerate(rows):
        for col in REQUIRED_COLUMNS:
            if col not in row:
                raise DatasetError(f"{source} row {i}: missing column {col!r}; expected columns "
                                   f"instruction, input, output, got {sorted(row)}")
        clean = {}
        for col in REQUIRED_COLUMNS + OPTIONAL_COLUMNS:
            value = row.get(col)
            if value is None and col in OPTIONAL_COLUMNS:
                value = ""
            if not isinstance(value, str):
                raise DatasetError(f"{source} row {i}: column {col!r} = {value!r:.60}: "
                                   f"expected a string, got {type(value).__name__}")
            clean[col] = value
        if not clean["instruction"].strip():
            raise DatasetError(f"{source} row {i}: column 'instruction' is empty; expected text")
        out.append(clean)
    return out


def row_id(row: dict[str, str]) -> str:
    """A content hash that identifies a row across files (members vs. non-members)."""
    key = json.dumps([row["instruction"], row.get("input", ""), row["output"]])
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:16]


def split_rows(rows: list[dict[str, str]], heldout_fraction: float, seed: int
               ) -> tuple[list[int], list[int]]:
    """Deterministic (train indices, held-out indices); at least one training row stays.

    Identical rows (same `row_id`) always land on the same side: a held-out row that was also
    trained on would be a member posing as a non-member in the membership attack.
    """
    groups: dict[str, list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(row_id(row), []).append(i)
    order = list(groups.values())  # without duplicates: one index per group, as before
    random.Random(seed).shuffle(order)
    n_held = min(int(round(len(rows) * heldout_fraction)), len(rows) - 1)
    held: list[int] = []
    for group in order:
        if len(held) + len(group) > n_held:
            break
        held += group
    held_set = set(held)
    return [i for i in range(len(rows)) if i not in held_set], sorted(held)


@dataclass
class TokenizedExample:
    """One training example: token ids and labels (-100 on prompt tokens)."""

    input_ids: list[int]
    labels: list[int]


@dataclass
class TokenizeReport:
    """What tokenisation did to the rows: truncations and drops are counted, never silent."""

    rows: int = 0
    truncated: int = 0
    dropped_no_response: int = 0
    tokens: int = 0
    response_tokens: int = 0
    truncated_rows: list[int] = field(default_factory=list)


def tokenize_rows(rows: list[dict[str, str]], tokenizer, max_length: int
                  ) -> tuple[list[TokenizedExample], TokenizeReport]:
    """Alpaca prompt + response + EOS, truncated to `max_length`; loss only on the response."""
    if tokenizer.eos_token_id is None:
        raise DatasetError("the base model's tokenizer has no eos_token; expected one to end "
                           "each response")
    report = TokenizeReport(rows=len(rows))
    examples = []
    for i, row in enumerate(rows):
        # special tokens on the prompt only: a BOS where the tokenizer adds one (Llama), none
        # where it does not (SmolLM2); the response ends with EOS, which the model must learn.
        prompt = tokenizer(alpaca_prompt(row["instruction"], row["input"]))["input_ids"]
        response = tokenizer(row["output"], add_special_tokens=False)["input_ids"]
        response = response + [tokenizer.eos_token_id]
        ids = prompt + response
        labels = [IGNORE_INDEX] * len(prompt) + response
        if len(ids) > max_length:
            report.truncated += 1
            report.truncated_rows.append(i)
            ids, labels = ids[:max_length], labels[:max_length]
        n_resp = sum(1 for t in labels if t != IGNORE_INDEX)
        if n_resp == 0:  # the prompt alone fills max_length: nothing left to learn from
            report.dropped_no_response += 1
            continue
        report.tokens += len(ids)
        report.response_tokens += n_resp
        examples.append(TokenizedExample(ids, labels))
    if not examples:
        raise DatasetError(f"every one of {len(rows)} training rows has its prompt alone at or "
                           f"over max_length={max_length} tokens; expected a larger max_length")
    return examples, report


def micro_batch_indices(n_examples: int, batch_size: int, world_size: int, rank: int,
                        seed: int, epoch: int) -> list[list[int]]:
    """This rank's micro-batches of one epoch: a seeded shuffle, padded cyclically so that every
    rank gets the same number of full micro-batches (like torch's DistributedSampler)."""
    order = list(range(n_examples))
    random.Random(seed * 100_003 + epoch).shuffle(order)
    chunk = batch_size * world_size
    total = -(-n_examples // chunk) * chunk
    order = (order * (total // max(1, n_examples) + 1))[:total]
    return [order[s + rank * batch_size: s + (rank + 1) * batch_size]
            for s in range(0, total, chunk)]


def schedule_steps(n_examples: int, batch_size: int, world_size: int, accumulation: int,
                   epochs: float, max_steps: int | None) -> int:
    """Optimizer steps of a run: `epochs` passes of micro-batches, capped by `max_steps`."""
    micro_per_epoch = len(micro_batch_indices(n_examples, batch_size, world_size, 0, 0, 0))
    total = max(1, int(epochs * micro_per_epoch) // accumulation)
    return min(total, max_steps) if max_steps else total


def collate(examples: list[TokenizedExample], pad_id: int) -> dict:
    """Right-pad a micro-batch into tensors (labels padded with -100)."""
    import torch

    width = max(len(e.input_ids) for e in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, e in enumerate(examples):
        n = len(e.input_ids)
        ids[i, :n] = torch.tensor(e.input_ids)
        labels[i, :n] = torch.tensor(e.labels)
        mask[i, :n] = 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def write_jsonl(path: Path, rows: list[dict]) -> None:
    """Write rows as JSON lines (UTF-8)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
