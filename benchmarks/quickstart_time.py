"""The quickstart's wall time per stage, from a fresh clone (issue 19: <= 10 min of pipeline on a
quiet 2-core machine, the same stages and the same kind of output).

    .venv/bin/python benchmarks/quickstart_time.py --clone /tmp/qs-clone \
        --out benchmarks/results/quickstart_time.json

Clones this repository into --clone (a new folder) at --ref (default HEAD), then runs the
README's command there, `make quickstart`, in two timed parts: `make install` (its own venv;
pip's wheel cache makes this pip's time, not the network's) and `make quickstart` (the install
is then a no-op, so this is the pipeline). The per-stage seconds are the pipeline's own
(`<run_dir>/pipeline.json`); the datasets' digests (sha256 of each arm's data.jsonl) say
whether a speed change left them as they were. The issue's figure from before (a fresh clone at
load ~1.8, 2026-11, another machine) is kept beside it for the ratio; `--ref` of an older
commit measures a before on this machine. Run it alone: a figure taken beside other work is
off by 2-4x on 2 cores.

    .venv/bin/python benchmarks/quickstart_time.py --clone /tmp/qs-before --ref 6c86917 \
        --out benchmarks/results/quickstart_time_6c86917.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import time
from pathlib import Path

from results_file import REPO, ResultsFile, add_out_argument

# Issue 19's fresh-clone figure (the "before" of this benchmark; not re-measured)
ISSUE_BEFORE = {"pipeline_s": 1100, "stages_s": {"train-policy": 299, "generate-policy": 238,
                                                 "generate-random": 232, "finetune": 258,
                                                 "evaluate": 72}, "load": 1.8}
GOAL_S = 600


def _run(cmd: list[str], cwd: Path, log: Path) -> float:
    start = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.run(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise SystemExit(f"{' '.join(cmd)} in {cwd}: exit {proc.returncode}; log {log}:\n{tail}")
    return round(seconds, 1)


def grouped(stages: dict[str, float]) -> dict[str, float]:
    """Stage seconds summed into the issue's groups (finetune = both arms' fine-tunes, ...)."""
    out: dict[str, float] = {}
    for name, seconds in stages.items():
        group = name.split("-")[0] if name.startswith(("finetune", "evaluate")) else name
        out[group] = round(out.get(group, 0.0) + seconds, 1)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clone", required=True, help="a folder that does not exist yet: the "
                        "fresh clone goes there (and stays, with its run, for inspection)")
    parser.add_argument("--ref", default="HEAD", help="the commit to clone and run (default: "
                        "this repo's HEAD; an older one measures a before on this machine)")
    add_out_argument(parser, "quickstart_time")
    args = parser.parse_args()
    clone = Path(args.clone)
    if clone.exists():
        parser.error(f"--clone {str(clone)!r} exists; expected a new folder (a fresh clone)")
    results = ResultsFile(args.out, {**vars(args), "issue_before": ISSUE_BEFORE})
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    subprocess.run(["git", "checkout", "-q", "--detach", args.ref], cwd=clone, check=True)
    # the code measured is the clone's (this repo may get new commits while it runs)
    clone_commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=clone, check=True,
                                  capture_output=True, text=True).stdout.strip()
    install_s = _run(["make", "install"], clone, clone.parent / f"{clone.name}-install.log")
    print(f"make install: {install_s:.0f} s", flush=True)
    pipeline_s = _run(["make", "quickstart"], clone, clone.parent / f"{clone.name}-quickstart.log")
    run_dir = clone / "runs" / "quickstart"
    state = json.loads((run_dir / "pipeline.json").read_text())
    stages = {name: s["seconds"] for name, s in state.items()}
    digests = {arm: hashlib.sha256((run_dir / "generate" / arm / "data.jsonl").read_bytes())
               .hexdigest()[:16] for arm in ("policy", "random")
               if (run_dir / "generate" / arm / "data.jsonl").is_file()}
    summary = {"clone_commit": clone_commit, "make_quickstart_s": pipeline_s,
               "pipeline_stages_sum_s": round(sum(stages.values()), 1), "install_s": install_s,
               "stages_s": stages, "grouped_s": grouped(stages), "goal_s": GOAL_S,
               "ratio_to_issue_before": round(pipeline_s / ISSUE_BEFORE["pipeline_s"], 2),
               "dataset_digests": digests}
    print(f"make quickstart: {pipeline_s:.0f} s (goal <= {GOAL_S} s; issue's before "
          f"{ISSUE_BEFORE['pipeline_s']} s)")
    for name, seconds in summary["grouped_s"].items():
        print(f"  {name:<16} {seconds:>7.0f} s   before {ISSUE_BEFORE['stages_s'].get(name, '-')}")
    results.write(summary=summary, raw=state)


if __name__ == "__main__":
    main()
