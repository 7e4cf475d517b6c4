"""Loader of teamsrl's offline smoke tasks for lm-evaluation-harness (`custom_dataset:`).

lm-eval calls `load(**metadata, **dataset_kwargs)`; `data_file` is a JSONL path, relative paths
resolve against this folder. The rows become the `test` split of a `datasets.DatasetDict`, so no
dataset is fetched from a hub.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent


def load(data_file: str | None = None, **_ignored):
    """The JSONL rows of `data_file` as a DatasetDict with one `test` split."""
    import datasets

    if not data_file:
        raise ValueError("teamsrl smoke task: dataset_kwargs.data_file is not set; expected a "
                         "JSONL file name")
    path = Path(data_file).expanduser()
    if not path.is_absolute():
        path = HERE / path
    if not path.is_file():
        raise FileNotFoundError(f"teamsrl smoke task: dataset_kwargs.data_file = "
                                f"{data_file!r}: {str(path)!r} not found")
    with path.open(encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    if not rows:
        raise ValueError(f"teamsrl smoke task: {str(path)!r} holds no rows")
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(rows)})
