"""Seed instructions: the pool every episode and every generated row starts from.

Reads JSONL, JSON (a list of objects), CSV, or a `datasets` folder saved with `save_to_disk`,
taking the instruction from a configurable column. Bad rows (not JSON, not UTF-8, blank, missing
or empty instruction, over the length limit, duplicate id) are skipped and reported, not fatal;
a file with no usable row is an error. The default pool is the 175 Self-Instruct seed tasks
shipped in `teamsrl/data/` (Apache-2.0).

A seed's input (an `input` column, or Self-Instruct's `instances[0].input`) is part of the task:
125 of the 175 default seeds say "the following email:", "the given pairs" and hold the email or
the pairs there. `Seed.text` appends it to the instruction after a blank line, and that text is
what the MDP evolves and generation starts from, as WizardLM's Evol-Instruct does with Alpaca's
instruction + input. A seed's human-written answer (an `output` column, or `instances[0].output`)
is kept in `Seed.output`: the reference tasks of `teamsrl.seed_split` are scored on it.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_SEEDS = Path(__file__).parent / "data" / "self-instruct-seed-tasks.jsonl"


class SeedError(ValueError):
    """A seed source cannot be used at all."""


@dataclass(frozen=True)
class Seed:
    """One seed instruction with its stable id (the source's id, else `line-N`)."""

    id: str
    instruction: str
    input: str = ""
    output: str = ""  # a human-written answer when the source has one (reference tasks)

    @property
    def text(self) -> str:
        """The task as one text: the instruction, then its input (if any) after a blank line."""
        return f"{self.instruction}\n\n{self.input}" if self.input else self.instruction


@dataclass
class SeedSet:
    """The usable seeds plus what was skipped and why (`(location, reason)`)."""

    seeds: list[Seed]
    skipped: list[tuple[str, str]] = field(default_factory=list)
    source: str = ""

    def __len__(self) -> int:
        return len(self.seeds)

    def report(self) -> str:
        """One line: how many seeds were loaded and skipped."""
        line = f"{len(self.seeds)} seeds from {self.source}"
        if self.skipped:
            reasons: dict[str, int] = {}
            for _, r in self.skipped:
                reasons[r.split(":")[0]] = reasons.get(r.split(":")[0], 0) + 1
            detail = ", ".join(f"{k}: {v}" for k, v in reasons.items())
            line += f", {len(self.skipped)} skipped ({detail})"
        return line


def load_seeds(path: str | Path | None = None, column: str = "instruction",
               max_chars: int = 20_000) -> SeedSet:
    """Load seeds from `path` (default: the bundled Self-Instruct tasks)."""
    path = Path(path) if path is not None else DEFAULT_SEEDS
    if not path.exists():
        raise SeedError(f"seed file {str(path)!r}: not found")
    if path.is_dir():
        records = _records_from_dataset(path)
    else:
        try:
            raw = path.read_bytes()
        except OSError as e:
            raise SeedError(f"seed file {str(path)!r}: cannot be read ({e.strerror})") from None
        if b"\x00" in raw[:8192]:
            raise SeedError(f"seed file {str(path)!r}: binary data, expected JSONL, JSON or CSV")
        suffix = path.suffix.lower()
        if suffix == ".csv":
            records = _records_from_csv(raw)
        elif suffix == ".json" and raw.lstrip()[:1] == b"[":
            records = _records_from_json_list(raw, path)
        else:
            records = _records_from_jsonl(raw)
    seeds, skipped, seen = [], [], set()
    for loc, rec in records:
        if isinstance(rec, str):  # a parse problem reported by the reader
            skipped.append((loc, rec))
            continue
        text = rec.get(column)
        if not isinstance(text, str) or not text.strip():
            skipped.append((loc, f"no instruction: column {column!r} missing or empty"))
            continue
        seed = Seed(str(rec.get("id", loc)), text.strip(), _input_of(rec), _instance_field(rec,
                    "output"))
        if len(seed.text) > max_chars:
            skipped.append((loc, f"too long: {len(seed.text)} characters > {max_chars}"))
            continue
        if seed.id in seen:
            skipped.append((loc, f"duplicate id: {seed.id!r}"))
            continue
        seen.add(seed.id)
        seeds.append(seed)
    if not seeds:
        detail = f"; first problem: {skipped[0][0]}: {skipped[0][1]}" if skipped else ""
        raise SeedError(f"seed file {str(path)!r}: no usable instruction in column "
                        f"{column!r}{detail}")
    return SeedSet(seeds, skipped, str(path))


def _input_of(rec: dict) -> str:
    """The seed's input: an `input` column, else Self-Instruct's first instance's input."""
    return _instance_field(rec, "input")


def _instance_field(rec: dict, key: str) -> str:
    """A column (`input`, `output`), else Self-Instruct's first instance's value of it."""
    value = rec.get(key)
    if value is None:
        instances = rec.get("instances")
        if isinstance(instances, list) and instances and isinstance(instances[0], dict):
            value = instances[0].get(key)
    return value.strip() if isinstance(value, str) else ""


def _records_from_jsonl(raw: bytes):
    for n, line in enumerate(raw.split(b"\n"), start=1):
        loc = f"line-{n}"
        if not line.strip():
            continue
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            yield loc, f"not UTF-8: byte {e.start}"
            continue
        try:
            rec = json.loads(text)
        except json.JSONDecodeError as e:
            yield loc, f"not JSON: {e.msg}"
            continue
        yield (loc, rec) if isinstance(rec, dict) else (loc, "not an object: expected {...}")


def _records_from_json_list(raw: bytes, path: Path):
    try:
        items = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SeedError(f"seed file {str(path)!r}: invalid JSON ({e})") from None
    for n, rec in enumerate(items, start=1):
        yield (f"item-{n}", rec) if isinstance(rec, dict) else (f"item-{n}", "not an object")


def _records_from_csv(raw: bytes):
    text = raw.decode("utf-8", errors="replace")
    for n, row in enumerate(csv.DictReader(io.StringIO(text)), start=2):
        if any("\ufffd" in (v or "") for v in row.values()):
            yield f"line-{n}", "not UTF-8"
            continue
        yield f"line-{n}", row


def _records_from_dataset(path: Path):
    from datasets import load_from_disk

    try:
        ds = load_from_disk(str(path))
    except Exception as e:  # datasets raises several types for a folder it cannot read
        raise SeedError(
            f"seed folder {str(path)!r}: not a saved `datasets` dataset ({e})"
        ) from None
    for n, rec in enumerate(ds, start=1):
        yield f"row-{n}", dict(rec)
