"""Seconds per generated instruction-answer pair: the whole `teamsrl generate` command, per arm.

Issue 19's job, the same as a peer's Evol-Instruct measured there (distilabel 1.5.3's
`EvolInstruct` + `TransformersLLM` on the same machine: 1,283 s for 90 pairs, 14.3 s per pair,
batch 1 only; not re-measured here, distilabel is not a dependency): the first 30 bundled seeds,
3 evolutions each, every kept evolution answered, at most 128 new tokens for rewrites and
answers:

    teamsrl generate --policy random --set generate.max_seeds=30 --set env.horizon=3 \
        --set llm.expert.max_tokens=128 --set generate.answer_max_tokens=128

Each arm runs that command as a fresh process in a fresh run folder (so a fresh cache: every
query reaches the engine) and is timed wall to wall, model loads included. An arm is a code
version and optional extra settings: `--arm before=6c86917` runs the command on a git worktree
of that commit (with this venv; PYTHONPATH points at the worktree), `--arm after=.` on this
working tree, `--arm llamacpp=.,llm.expert.engine=llamacpp` adds `--set` overrides. Arms run in
the given order, rotated over `--repeats`. A generated pair is one evolution step (30 x 3 = 90,
kept or not, as in the peer's count); seconds per kept row are printed too. Run it alone: a
figure measured beside other work is off by 2-4x on 2 cores.

    .venv/bin/python benchmarks/evolve_throughput.py --arm before=6c86917 --arm after=. \
        --out benchmarks/results/evolve_throughput.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results_file import REPO, ResultsFile, add_out_argument

PEER_SECONDS_PER_PAIR = 14.3  # distilabel 1.5.3, issue 19 (1,283 s / 90 pairs), this machine
JOB = ["generate", "--policy", "random", "--set", "generate.max_seeds=30",
       "--set", "env.horizon=3", "--set", "llm.expert.max_tokens=128",
       "--set", "generate.answer_max_tokens=128"]


def parse_arm(text: str) -> dict:
    """`LABEL=REF[,KEY=VALUE...]` -> {label, ref, sets}; REF `.` is this working tree."""
    label, sep, rest = text.partition("=")
    if not sep or not label or not rest:
        raise argparse.ArgumentTypeError(f"--arm {text!r}: expected LABEL=REF[,KEY=VALUE...]")
    ref, *sets = rest.split(",")
    bad = [s for s in sets if "=" not in s]
    if bad:
        raise argparse.ArgumentTypeError(f"--arm {text!r}: setting {bad[0]!r} is not KEY=VALUE")
    return {"label": label, "ref": ref, "sets": sets}


def checkout(ref: str, scratch: Path) -> Path:
    """The source tree of `ref`: this repo for `.`, else a detached git worktree under scratch."""
    if ref == ".":
        return REPO
    tree = scratch / f"tree-{ref}"
    if not tree.exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), ref], cwd=REPO,
                       check=True, capture_output=True)
    return tree


def run_arm(arm: dict, tree: Path, scratch: Path, repeat: int) -> dict:
    """Time one `teamsrl generate` of the job in a fresh run folder; counts from its files."""
    run_dir = scratch / f"run-{arm['label']}-{repeat}"
    shutil.rmtree(run_dir, ignore_errors=True)
    sets = [x for s in arm["sets"] for x in ("--set", s)]
    cmd = [sys.executable, "-m", "teamsrl.cli", *JOB, "--set", f"run_dir={run_dir}", *sets]
    env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "disabled"}
    start = time.perf_counter()
    proc = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"arm {arm['label']}: exit {proc.returncode}\n{proc.stderr[-3000:]}")
    out = run_dir / "generate" / "random"
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    steps = [r for r in rows if r.get("kind") == "row"]
    summary = json.loads((out / "summary.json").read_text())
    pairs = len(steps)
    # what the arm generated, order-free: a speed lever must leave every text as it was
    # (batch-invariant sampling), so arms of the same job compare equal here
    texts = sorted(json.dumps([r["row_id"], r["action"], r["instruction"], r["output"],
                               r["kept"]]) for r in steps)
    digest = hashlib.sha256("\n".join(texts).encode()).hexdigest()[:16]
    return {"arm": arm["label"], "repeat": repeat, "seconds": round(seconds, 1),
            "pairs": pairs, "rows_kept": summary["rows_kept"],
            "seconds_per_pair": round(seconds / pairs, 3),
            "seconds_per_kept_row": round(seconds / max(summary["rows_kept"], 1), 3),
            "rows_digest": digest, "queries": summary.get("queries"),
            "stderr_tail": proc.stderr[-600:]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arm", action="append", type=parse_arm, required=True,
                        metavar="LABEL=REF[,KEY=VALUE...]",
                        help="a code version (git ref, or . for this tree) and extra --set "
                        "overrides; repeatable, run in this order")
    parser.add_argument("--repeats", type=int, default=1, help="runs per arm (rotated)")
    parser.add_argument("--scratch", default=None, help="folder for worktrees and run folders "
                        "(default: a temporary one, removed at the end)")
    add_out_argument(parser, "evolve_throughput")
    args = parser.parse_args()
    results = ResultsFile(args.out, {**vars(args), "job": JOB,
                                     "peer_seconds_per_pair": PEER_SECONDS_PER_PAIR})
    scratch = Path(args.scratch or tempfile.mkdtemp(prefix="evolve-throughput-"))
    trees = {a["label"]: checkout(a["ref"], scratch) for a in args.arm}
    raw = []
    try:
        for repeat in range(args.repeats):
            order = args.arm[repeat % len(args.arm):] + args.arm[:repeat % len(args.arm)]
            for arm in order:
                r = run_arm(arm, trees[arm["label"]], scratch, repeat)
                raw.append(r)
                print(f"{r['arm']:>10} repeat {repeat}: {r['seconds']:.1f} s, {r['pairs']} pairs"
                      f" ({r['rows_kept']} kept): {r['seconds_per_pair']:.2f} s/pair, rows "
                      f"{r['rows_digest']}", flush=True)
    finally:
        for arm in args.arm:
            if arm["ref"] != ".":
                subprocess.run(["git", "worktree", "remove", "--force",
                                str(trees[arm["label"]])], cwd=REPO, capture_output=True)
        if args.scratch is None:
            shutil.rmtree(scratch, ignore_errors=True)
    summary = {}
    print(f"\n{'arm':>10} {'s/pair':>8} {'s/kept':>8} {'peer/arm':>9}")
    for arm in args.arm:
        mine = [r for r in raw if r["arm"] == arm["label"]]
        per_pair = statistics.median(r["seconds_per_pair"] for r in mine)
        per_kept = statistics.median(r["seconds_per_kept_row"] for r in mine)
        summary[arm["label"]] = {"ref": arm["ref"], "sets": arm["sets"],
                                 "median_seconds_per_pair": per_pair,
                                 "median_seconds_per_kept_row": per_kept,
                                 "speedup_vs_peer": round(PEER_SECONDS_PER_PAIR / per_pair, 2)}
        print(f"{arm['label']:>10} {per_pair:>8.2f} {per_kept:>8.2f} "
              f"{PEER_SECONDS_PER_PAIR / per_pair:>8.2f}x")
    digests = {r["rows_digest"] for r in raw}
    print("every arm and repeat generated the same rows" if len(digests) == 1 else
          f"the arms generated {len(digests)} different row sets (see raw[].rows_digest)")
    print(f"peer: distilabel 1.5.3 EvolInstruct, {PEER_SECONDS_PER_PAIR} s/pair (issue 19, not "
          "re-measured); goal <= 3.5 s/pair (>= 4x)")
    summary["same_rows"] = len(digests) == 1
    results.write(summary=summary, raw=raw)


if __name__ == "__main__":
    main()
