"""`RunLayout`: every path in a run folder, named once.

    runs/quickstart/
        config.yaml  ledger.sqlite  llm-cache.sqlite  pipeline.json  <job>-metrics.jsonl
        seed-split.json  seeds/{policy-training,generation,reference}.jsonl
        policy/checkpoints/iter_00003/  policy/export/  policy/ledger.json
        generate/<policy|random>/   rows.jsonl data.jsonl dataset/ summary.json README.md run.json
        finetune/<policy|random>/   eval/<policy|random>/   eval/base-reference.json   report/
        headline.json  (a `benchmarks/headline.py` work dir: its results, drawn by the report)

`teamsrl finetune --out` and `teamsrl evaluate` standalone default to `finetune/` and `eval/`
themselves (one model); the pipeline fine-tunes and evaluates each arm in its own sub-folder.

Train-policy, generate, compare, pipeline, sweep and report take their paths from here, and the
rule for resuming policy training (how many iterations are left) lives here too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

ARMS = ("policy", "random")
_CKPT = re.compile(r"^iter_(\d{5})$")


@dataclass(frozen=True)
class GenerationLayout:
    """The files of one generation arm's folder."""

    root: Path
    rows: Path = field(init=False)  # every raw row + a `seed_done` record per seed (resume)
    data: Path = field(init=False)  # the final dataset: Alpaca columns + provenance
    dataset: Path = field(init=False)  # the same as a `datasets.Dataset` (`save_to_disk`)
    summary: Path = field(init=False)  # counts, drop reasons, ledger, diversity, the curve
    card: Path = field(init=False)  # the dataset card
    manifest: Path = field(init=False)  # what must not change between a run and its resume
    config: Path = field(init=False)  # the resolved config of the run

    def __post_init__(self) -> None:
        _place(self, rows="rows.jsonl", data="data.jsonl", dataset="dataset",
               summary="summary.json", card="README.md", manifest="run.json",
               config="config.yaml")


@dataclass(frozen=True)
class RunLayout:
    """The paths of one run folder (the config's `run_dir`)."""

    root: Path
    config: Path = field(init=False)  # the resolved experiment config
    ledger: Path = field(init=False)  # the query ledger (unless llm.ledger_path moves it)
    cache: Path = field(init=False)  # the response cache (unless llm.cache.path moves it)
    pipeline_state: Path = field(init=False)  # pipeline stages done, their summaries and times
    seed_split: Path = field(init=False)  # which seed went to which slice (teamsrl.seed_split)
    seed_slices: Path = field(init=False)  # the slices' seed files
    policy: Path = field(init=False)  # everything of policy training
    checkpoints: Path = field(init=False)  # RLlib checkpoints, one `iter_NNNNN` folder each
    export: Path = field(init=False)  # the exported policy generation loads
    policy_ledger: Path = field(init=False)  # the training stage's cost, warm-up included
    serve_stats: Path = field(init=False)  # the Serve app's counters at the end of training
    generate: Path = field(init=False)  # the parent of the generation arms
    finetune: Path = field(init=False)  # model, checkpoints, split, logs of fine-tuning
    eval: Path = field(init=False)  # evaluation results (where `teamsrl report` looks)
    base_reference: Path = field(init=False)  # the base model's reference losses (both arms')
    report: Path = field(init=False)  # the report page and its figures
    sweep_trial: Path = field(init=False)  # a finished sweep trial's row of the results
    headline: Path = field(init=False)  # benchmarks/headline.py's results (its work dir only)

    def __post_init__(self) -> None:
        _place(self, config="config.yaml", ledger="ledger.sqlite", cache="llm-cache.sqlite",
               pipeline_state="pipeline.json", seed_split="seed-split.json",
               seed_slices="seeds", policy="policy",
               checkpoints="policy/checkpoints", export="policy/export",
               policy_ledger="policy/ledger.json", serve_stats="policy/serve-stats.json",
               generate="generate", finetune="finetune", eval="eval",
               base_reference="eval/base-reference.json", report="report",
               sweep_trial="sweep-trial.json", headline="headline.json")

    @classmethod
    def of(cls, run_dir: str | Path) -> RunLayout:
        """The layout of `run_dir`."""
        return cls(Path(run_dir))

    def metrics(self, job: str) -> Path:
        """The JSONL metrics of a job (`train-policy`, `finetune`, ...)."""
        return self.root / f"{job}-metrics.jsonl"

    def checkpoint(self, iteration: int) -> Path:
        """The checkpoint folder of an iteration."""
        return self.checkpoints / f"iter_{iteration:05d}"

    def latest_checkpoint(self) -> tuple[Path, int] | None:
        """The newest complete checkpoint and its iteration, or None."""
        found = [(int(m.group(1)), d) for d in self.checkpoints.glob("iter_*")
                 if (m := _CKPT.match(d.name)) and (d / "rllib_checkpoint.json").is_file()]
        if not found:
            return None
        it, path = max(found)
        return path, it

    def iterations_left(self, total: int) -> tuple[bool, int]:
        """(resume?, iterations still to run) for a run of `total` iterations: an interrupted
        run resumes its newest checkpoint; 0 left means only the export is redone."""
        previous = self.latest_checkpoint()
        done = previous[1] if previous else 0
        return previous is not None, max(0, total - done)

    def generation(self, arm: str) -> GenerationLayout:
        """The folder of a generation arm (`policy` or `random`)."""
        return GenerationLayout(self.generate / _arm(arm))

    def finetune_arm(self, arm: str) -> Path:
        """The pipeline's fine-tune folder of an arm's dataset."""
        return self.finetune / _arm(arm)

    def eval_arm(self, arm: str) -> Path:
        """The pipeline's evaluation folder of an arm's fine-tuned model."""
        return self.eval / _arm(arm)


def _arm(arm: str) -> str:
    if arm not in ARMS:
        raise ValueError(f"arm {arm!r}: expected one of {ARMS}")
    return arm


def _place(layout, **relative: str) -> None:
    """Set each path field of a frozen layout to `root / relative path`."""
    for name, rel in relative.items():
        object.__setattr__(layout, name, layout.root / rel)
