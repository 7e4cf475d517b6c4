"""A generated row (`Row`) and the row log a run appends to and resumes from (`RowLog`).

`Row` holds the Alpaca columns (`instruction`, `input`, `output`) and the provenance of one
evolution step; it is serialised here and nowhere else: `dataset_record()` is a data.jsonl line,
`to_json()`/`from_json()` a rows.jsonl record (typed failure and drop reason included, so a
resumed run reads them back without parsing text).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

from teamsrl.outcomes import Drop, Failure

log = logging.getLogger(__name__)


@dataclass
class Row:
    """One evolution step of one seed: the instruction it produced, its answer, its provenance."""

    row_id: str
    seed_id: str
    seed_index: int
    step: int
    seed_instruction: str = ""
    instruction: str = ""
    input: str = ""
    output: str = ""
    action: str = ""
    action_path: list[str] = field(default_factory=list)
    arm: str = ""
    policy_id: str = ""
    expert_model: str = ""
    reviewer_model: str = ""
    sampling: dict = field(default_factory=dict)
    verdict: float = 0.0
    novelty: float = 0.0
    validity: float | None = None  # the judge's P(valid instruction); None: not judged
    reward_components: dict = field(default_factory=dict)
    queries: dict = field(default_factory=lambda: {"expert": 0, "reviewer": 0})
    failure: Failure | None = None
    prompt_truncated: bool = False
    rewrite_truncated: bool = False
    output_truncated: bool = False
    drop: Drop | None = None  # None: kept

    @property
    def kept(self) -> bool:
        """Still in the dataset (not dropped by a rule, a filter or dedup)."""
        return self.drop is None

    @property
    def order(self) -> tuple[int, int]:
        """The canonical order of rows: the seed's position in the seed source, then the step."""
        return self.seed_index, self.step

    @property
    def text(self) -> str:
        """What near-duplicate removal and diversity look at: instruction and input."""
        return f"{self.instruction}\n{self.input}".strip()

    def dataset_record(self) -> dict:
        """A data.jsonl line: Alpaca columns + provenance (the failure as its one-line text)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "drop"}
        out["failure"] = str(self.failure or "")
        return out

    def to_json(self) -> dict:
        """A rows.jsonl record (`kind: row`), with `kept` and the drop reason as text too."""
        out = {"kind": "row", **self.dataset_record()}
        out["failure"] = self.failure.to_json() if self.failure else None
        out["kept"] = self.kept
        out["drop_reason"] = str(self.drop or "")
        out["drop"] = self.drop.to_json() if self.drop else None
        return out

    @classmethod
    def from_json(cls, data: dict) -> Row:
        """The inverse of `to_json`."""
        names = {f.name for f in fields(cls)} - {"failure", "drop"}
        return cls(**{k: v for k, v in data.items() if k in names},
                   failure=Failure.from_json(data.get("failure") or None),
                   drop=Drop.from_json(data.get("drop")))


class RowLog:
    """`rows.jsonl`: appended per batch (flush + fsync); a seed counts once `seed_done`."""

    def __init__(self, path: Path):
        self.path = path
        self.rows: list[Row] = []
        self.done: set[str] = set()
        if path.is_file():
            self._recover()

    def _recover(self) -> None:
        raw = self.path.read_bytes()
        cut = raw.rfind(b"\n") + 1  # a torn last line (killed mid-write) is dropped
        records = []
        for n, line in enumerate(raw[:cut].splitlines(), start=1):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ValueError(f"{self.path}: line {n} is not JSON ({e.msg}); the file was "
                                 "edited or damaged — move it aside to start over") from None
        self.done = {r["seed_id"] for r in records if r.get("kind") == "seed_done"}
        self.rows = [Row.from_json(r) for r in records
                     if r.get("kind") == "row" and r["seed_id"] in self.done]
        unfinished = len(records) - len(self.rows) - len(self.done)
        if cut != len(raw) or unfinished:
            log.warning("%s: dropping %d records of unfinished seeds and %d torn bytes",
                        self.path, unfinished, len(raw) - cut)
            self._rewrite([r for r in records if r.get("kind") == "seed_done"
                           or r["seed_id"] in self.done])

    def _rewrite(self, records: list[dict]) -> None:
        tmp = self.path.with_suffix(".tmp")
        with tmp.open("w", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def append(self, rows: list[Row], seed_ids: Sequence[str]) -> None:
        """Write a finished batch: its rows, then a `seed_done` record per seed."""
        done = [{"kind": "seed_done", "seed_id": s} for s in seed_ids]
        records = [r.to_json() for r in rows] + done
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        self.rows.extend(rows)
        self.done.update(seed_ids)


def read_rows(path: Path) -> list[Row]:
    """The rows of a rows.jsonl file (every row, finished seeds or not)."""
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
               if line.strip()]
    return [Row.from_json(r) for r in records if r.get("kind") == "row"]
