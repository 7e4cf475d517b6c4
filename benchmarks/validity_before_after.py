"""Kept rows that are not instructions, before and after the validity judge's rule (issue 15).

Reads generation runs of both arms (the Evol-Instruct baseline `random` and the trained
`policy`) made twice with the quickstart's settings: `before` with the judge off
(`env.reward.invalid_fails=false env.reward.validity_weight=0`, the old defaults, policy trained
that way too) and `after` with today's defaults (the rule and the validity reward on). For each
run and arm:

- `judged_invalid`: the share of kept rows (data.jsonl) the validity judge (default method:
  combined, through a cached client on the embedded reviewer) scores below its threshold, with
  a bootstrap 95% interval over rows. After the filter this is ~0 by construction; the figure
  that is not is the next one.
- `hand_invalid`: on a random sample of kept rows (`--sample`, fixed rng), the share a person
  labelled invalid by reading each row under tests/data/validity/README.md's rules. The sample
  is written to `<hand dir>/<phase>-<arm>.jsonl` with an empty `label` the first time (hand dir:
  `tests/data/validity/kept/` for `before`, `--after-hand-dir` for the after phase); labels are
  filled in by hand, and later runs read them. The judge trains on `kept/`; a later judge is
  checked on a fresh run whose sample goes elsewhere (`check/`), so no row it trained on is
  counted.
- `not_instruction_steps`: evolution steps that failed as "not an instruction" (rows.jsonl).

    .venv/bin/python benchmarks/validity_before_after.py --before runs/q15-before \
        --after runs/q15d runs/q15e,runs/q15e-more --after-name after2 after3 \
        --after-hand-dir tests/data/validity/check \
        --out benchmarks/results/validity_before_after.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
from results_file import ResultsFile, add_out_argument  # noqa: E402

from teamsrl.generation.rows import Row, read_rows  # noqa: E402
from teamsrl.outcomes import FailureKind  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
KEPT = ROOT / "tests" / "data" / "validity" / "kept"
ARMS = ("random", "policy")
VALID = "valid"


def share_with_interval(flags: list[bool], resamples: int = 2000, seed: int = 0) -> dict:
    """The share of True in `flags` with its percentile bootstrap 95% interval."""
    x = np.asarray(flags, dtype=float)
    if x.size == 0:
        raise ValueError("no rows to measure")
    rng = np.random.default_rng(seed)
    draws = x[rng.integers(0, x.size, (resamples, x.size))].mean(axis=1)
    return {"share": float(x.mean()), "ci95": [float(np.percentile(draws, 2.5)),
                                                 float(np.percentile(draws, 97.5))],
            "n": int(x.size)}


def hand_labels(path: Path, phase: str, arm: str, kept: list[Row], size: int) -> list[dict]:
    """The labelled sample at `path` (written unlabelled on first use: a person fills `label`
    in)."""
    if not path.is_file():
        picked = random.Random(f"{phase}-{arm}").sample(kept, min(size, len(kept)))
        picked.sort(key=lambda r: r.order)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as f:
            for r in picked:
                f.write(json.dumps({"id": r.row_id, "operation": r.action, "step": r.step,
                                    "previous_seed": r.seed_instruction, "rewrite": r.instruction,
                                    "input": r.input, "label": ""}, ensure_ascii=False) + "\n")
        print(f"wrote {path}: {len(picked)} rows to label by hand")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def kept_rows(arm_dir: Path) -> tuple[list[Row], list[Row]]:
    """(the rows in data.jsonl, every row of rows.jsonl): rows.jsonl does not record the
    near-duplicate removal at the end, data.jsonl does."""
    rows = read_rows(arm_dir / "rows.jsonl")
    with (arm_dir / "data.jsonl").open(encoding="utf-8") as f:
        final = {json.loads(line)["row_id"] for line in f}
    return [r for r in rows if r.row_id in final], rows


def measure(phase: str, runs: list[Path], arm: str, judge, sample: int, hand_dir: Path) -> dict:
    """One phase (one run, or several pooled) and arm: judged-invalid share of kept rows, hand
    labels, rule failures."""
    kept, rows = [], []
    for run in runs:
        k, r = kept_rows(run / "generate" / arm)
        kept, rows = kept + k, rows + r
    valid = judge.is_valid([r.instruction for r in kept])
    out = {
        "steps": len(rows), "kept": len(kept),
        "not_instruction_steps": sum(1 for r in rows if r.failure is not None
                                     and r.failure.kind is FailureKind.NOT_INSTRUCTION),
        "judged_invalid": share_with_interval([not v for v in valid]),
    }
    labels = (hand_labels(hand_dir / f"{phase}-{arm}.jsonl", phase, arm, kept, sample)
              if sample else [])
    if labels and all(item["label"] for item in labels):
        out["hand_invalid"] = share_with_interval([item["label"] != VALID for item in labels])
        kinds: dict[str, int] = {}
        for item in labels:
            kinds[item["label"]] = kinds.get(item["label"], 0) + 1
        out["hand_labels"] = kinds
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, required=True, help="run dir, judge off")
    parser.add_argument("--after", nargs="+", required=True,
                        help="run dir(s), judge on, one phase each; DIR1,DIR2 pools the kept "
                             "rows of several runs into one phase (a run too small for --sample)")
    parser.add_argument("--after-name", nargs="+", default=["after"],
                        help="each after phase's name in the results and its sample files, in "
                             "the order of --after")
    parser.add_argument("--after-hand-dir", type=Path, default=KEPT,
                        help="where the after phase's hand-labelled samples live")
    parser.add_argument("--judge-dir", type=Path, default=Path("runs/validity-before-after"),
                        help="cache and ledger of the judge's reviewer queries (not a run's)")
    parser.add_argument("--sample", type=int, default=50, help="kept rows labelled by hand")
    parser.add_argument("--hand-phases", nargs="+", default=["before", "after"],
                        help="phases (before, after) whose kept rows get a hand-labelled sample")
    add_out_argument(parser, "validity_before_after")
    args = parser.parse_args()
    if len(args.after_name) != len(args.after):
        parser.error(f"--after-name {args.after_name}: expected one name per --after run "
                     f"({len(args.after)})")
    results = ResultsFile(args.out, {k: [str(x) for x in v] if isinstance(v, list) else str(v)
                                     for k, v in vars(args).items()})

    from teamsrl.config import load_config
    from teamsrl.llm.client import build_client
    from teamsrl.quality import ValidityJudge

    config = load_config(ROOT / "experiments" / "quickstart.yaml")
    client = build_client(config.llm, args.judge_dir, stage="validity-before-after")
    judge = ValidityJudge.from_config(config.env.quality, client=client)
    summary = {"judge": {"method": judge.method, "threshold": judge.threshold}}
    phases = (("before", "before", [args.before], KEPT),
              *(("after", name, [Path(d) for d in run.split(",")], args.after_hand_dir)
                for name, run in zip(args.after_name, args.after, strict=True)))
    for role, phase, run, hand_dir in phases:
        for arm in ARMS:
            size = args.sample if role in args.hand_phases else 0
            summary[f"{phase}/{arm}"] = figures = measure(phase, run, arm, judge, size, hand_dir)
            print(f"{phase:6} {arm:6} kept {figures['kept']:3}/{figures['steps']:3}  "
                  f"judged invalid {figures['judged_invalid']['share']:.2f} "
                  f"{figures['judged_invalid']['ci95']}"
                  + (f"  by hand {figures['hand_invalid']['share']:.2f} "
                     f"{figures['hand_invalid']['ci95']}" if "hand_invalid" in figures else ""))
    client.close()
    results.write(summary=summary, raw=None)


if __name__ == "__main__":
    main()
