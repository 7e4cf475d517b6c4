"""The seed split: one seed file cut ONCE into policy-training seeds, generation seeds and
reference tasks — disjoint slices, recorded in the run folder.

    teamsrl pipeline --config experiments/quickstart.yaml
    # -> <run_dir>/seed-split.json and <run_dir>/seeds/{policy-training,generation,reference}.jsonl

Policy training's episodes start from the first slice, generation evolves the second, and the
third holds the human-written answers whose loss `teamsrl evaluate --reference` measures: a model
must never be scored on a task its dataset was grown from. The rule: seeds are ordered by
sha256("<split seed>:<seed id>") and cut at the configured shares (the order of the file does not
matter; the same file, shares and seed give the same slices). Seeds with the same text go where
the first of them goes, so a duplicate under another id cannot cross slices. A seed without a
human-written answer cannot be a reference task and goes to one of the other two.

`check_disjoint` refuses slices that share a seed id or a seed text, naming the seeds; the split
runs it on what it writes and on what it reads back, and evaluation runs it on its reference file.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator

from teamsrl.seeds import Seed, load_seeds

SLICES = ("policy_training", "generation", "reference")


class SeedOverlapError(ValueError):
    """Two slices share a seed (same id or same text); the message names the seeds."""


class SplitConfig(BaseModel):
    """Shares of the seed file's three disjoint slices (they sum to 1)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    policy_training: float = Field(0.5, gt=0, le=1, description="share of the seeds policy "
                                   "training's episodes start from (the env's seed pool)")
    generation: float = Field(0.3, gt=0, le=1, description="share of the seeds the dataset is "
                              "generated from (both arms; generate.max_seeds takes the first N)")
    reference: float = Field(0.2, ge=0, le=1, description="share kept as reference tasks: their "
                             "human-written answers are scored after fine-tuning and are never "
                             "seeds of the run; 0: no reference loss")
    seed: int | None = Field(None, ge=0, description="hash seed of the split; default: the run "
                             "seed")

    @model_validator(mode="after")
    def _shares_sum_to_one(self) -> SplitConfig:
        total = self.policy_training + self.generation + self.reference
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split: policy_training {self.policy_training:g} + generation "
                             f"{self.generation:g} + reference {self.reference:g} = {total:g}; "
                             "expected the shares to sum to 1")
        return self


@dataclass(frozen=True)
class SeedSplit:
    """The record of a split (`<run_dir>/seed-split.json`): where each seed went, and why."""

    source: str  # the seed file that was split
    source_sha256: str  # of the usable seeds (id, instruction, input, output), in file order
    hash_seed: int
    shares: dict[str, float]
    slices: dict[str, list[str]]  # slice name -> seed ids, in the source's order
    files: dict[str, str]  # slice name -> the JSONL file holding its seeds
    rule: str = ("seeds ordered by sha256('<hash_seed>:<id of the first seed with the same "
                 "text>'), cut at the shares; reference tasks only among seeds with an output")

    def to_json(self) -> dict:
        """The record as written to disk."""
        return asdict(self)

    @classmethod
    def read(cls, path: str | Path) -> SeedSplit:
        """A split recorded by `write_split`."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"seed split {str(path)!r}: not found; the pipeline's "
                                    "split-seeds stage writes it")
        return cls(**json.loads(path.read_text(encoding="utf-8")))


def _normal(text: str) -> str:
    return " ".join(text.lower().split())


def split_seeds(seeds: Sequence[Seed], config: SplitConfig, hash_seed: int
                ) -> dict[str, list[Seed]]:
    """The three slices of `seeds` (each in the input's order), disjoint by id and by text."""
    first_of: dict[str, str] = {}  # normalised text -> id of its first seed
    for s in seeds:
        first_of.setdefault(_normal(s.text), s.id)

    def key(s: Seed) -> str:
        return hashlib.sha256(f"{hash_seed}:{first_of[_normal(s.text)]}".encode()).hexdigest()

    order = sorted(seeds, key=lambda s: (key(s), s.id))
    n = len(order)
    groups: dict[str, list[Seed]] = {}
    for s in order:
        groups.setdefault(key(s), []).append(s)
    placed: dict[str, str] = {}  # group key -> slice
    counts = dict.fromkeys(SLICES, 0)
    want_ref = round(config.reference * n)
    for k, members in groups.items():  # reference first: only groups with an answer qualify
        if counts["reference"] < want_ref and all(m.output for m in members):
            placed[k] = "reference"
            counts["reference"] += len(members)
    rest = n - counts["reference"]
    shares = config.policy_training + config.generation
    want_gen = round(config.generation / shares * rest) if shares else 0
    for k, members in groups.items():
        if k not in placed:
            placed[k] = "generation" if counts["generation"] < want_gen else "policy_training"
            counts[placed[k]] += len(members)
    slices: dict[str, list[Seed]] = {name: [] for name in SLICES}
    for s in seeds:
        slices[placed[key(s)]].append(s)
    return slices


def check_disjoint(slices: Mapping[str, Sequence[Seed]]) -> None:
    """Raise `SeedOverlapError` naming every seed found in two slices (same id or same text)."""
    problems = []
    names = list(slices)
    for i, a in enumerate(names):
        ids_a = {s.id for s in slices[a]}
        texts_a = {_normal(s.text): s.id for s in slices[a]}
        for b in names[i + 1:]:
            shared = sorted(s.id for s in slices[b] if s.id in ids_a)
            same_text = sorted(f"{texts_a[_normal(s.text)]} = {s.id}" for s in slices[b]
                               if s.id not in ids_a and _normal(s.text) in texts_a)
            if shared or same_text:
                listed = ", ".join(shared + [f"{p} (same text)" for p in same_text])
                problems.append(f"{a} and {b} share {len(shared) + len(same_text)} seed(s): "
                                f"{listed}")
    if problems:
        raise SeedOverlapError("seed split overlaps: " + "; ".join(problems) + "; expected "
                               "disjoint policy-training seeds, generation seeds and reference "
                               "tasks")


def _digest(seeds: Sequence[Seed]) -> str:
    body = json.dumps([[s.id, s.instruction, s.input, s.output] for s in seeds])
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def write_split(config, record: Path, folder: Path) -> SeedSplit:
    """Split `config.env.seed_file` once: the slices' JSONL files under `folder` and the record
    at `record`. A recorded split is reused when it is of the same seeds, shares and seed, and
    refused otherwise (a run's slices never change under it)."""
    env = config.env
    seed_set = load_seeds(env.seed_file, env.seed_column, env.max_seed_chars)
    hash_seed = config.seed if config.split.seed is None else config.split.seed
    shares = {name: getattr(config.split, name) for name in SLICES}
    digest = _digest(seed_set.seeds)
    if record.is_file():
        old = SeedSplit.read(record)
        if (old.source_sha256, old.hash_seed, old.shares) != (digest, hash_seed, shares):
            raise ValueError(f"seed split {str(record)!r} records another split (seeds sha256 "
                             f"{old.source_sha256[:12]}, hash seed {old.hash_seed}, shares "
                             f"{old.shares}); expected seed file, seed and split shares as "
                             "when the run began, or a new run_dir")
    slices = split_seeds(seed_set.seeds, config.split, hash_seed)
    for name in ("policy_training", "generation"):
        if not slices[name]:
            raise ValueError(f"split.{name} = {shares[name]:g}: 0 of {len(seed_set)} seeds "
                             f"from {seed_set.source}; expected a seed file with enough seeds "
                             "or a larger share")
    check_disjoint(slices)
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, members in slices.items():
        path = (folder / f"{name.replace('_', '-')}.jsonl").resolve()
        with path.open("w", encoding="utf-8") as f:
            for s in members:  # the seed file's own column name: the same config reads it
                f.write(json.dumps({"id": s.id, env.seed_column: s.instruction, "input": s.input,
                                    "output": s.output}, ensure_ascii=False) + "\n")
        files[name] = str(path)
    split = SeedSplit(source=seed_set.source, source_sha256=digest, hash_seed=hash_seed,
                      shares=shares, slices={k: [s.id for s in v] for k, v in slices.items()},
                      files=files)
    record.write_text(json.dumps(split.to_json(), indent=1), encoding="utf-8")
    return split


def read_slices(split: SeedSplit, config) -> dict[str, list[Seed]]:
    """The seeds of each recorded slice (an empty slice has none), checked disjoint again."""
    env = config.env
    slices = {}
    for name in SLICES:
        if not split.slices.get(name):
            slices[name] = []
            continue
        slices[name] = load_seeds(split.files[name], env.seed_column, env.max_seed_chars).seeds
    check_disjoint(slices)
    return slices
