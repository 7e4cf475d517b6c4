"""Sample the expert's real rewrites for the validity labelled set (`tests/data/validity/`).

Random-policy episodes of the quickstart config (expert max_tokens 48, temperature 0.7, horizon
6, the six operations, seeds drawn from the 175 bundled Self-Instruct tasks) run through
`teamsrl.rollout.run_rollout`, i.e. the env's own prompts, elimination rules and client. Every
step goes to `<run-dir>/steps.jsonl`; the rewrites that pass the elimination rules (what a
dataset keeps, and what the judge must sort) go to `dev.jsonl` / `test.jsonl`, split by seed id
so one seed's chain never spans both parts. Labels already in those files are kept (matched by
id and rewrite); new items get `"label": null` — label them by reading (README.md there).
The response cache lives in the run dir: a rerun costs no query.

    .venv/bin/python benchmarks/validity_sample.py --episodes 112 --threads 1
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from teamsrl.config import load_config  # noqa: E402
from teamsrl.rollout import run_rollout  # noqa: E402
from teamsrl.seeds import load_seeds  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FIELDS = ("id", "seed_id", "has_input", "operation", "step", "previous", "rewrite", "label")


def split_by_seed(items: list[dict], dev_share: float) -> tuple[list[dict], list[dict]]:
    """Seeds in a fixed hash order go to dev until it holds `dev_share` of the items."""
    per_seed = Counter(it["seed_id"] for it in items)
    order = sorted(per_seed, key=lambda s: hashlib.sha256(s.encode()).hexdigest())
    dev_seeds, n_dev = set(), 0
    for s in order:
        if n_dev >= dev_share * len(items):
            break
        dev_seeds.add(s)
        n_dev += per_seed[s]
    return ([it for it in items if it["seed_id"] in dev_seeds],
            [it for it in items if it["seed_id"] not in dev_seeds])


def read_labels(folder: Path) -> dict[tuple[str, str], str | None]:
    """(id, rewrite) -> label of the items already in dev.jsonl / test.jsonl."""
    labels = {}
    for part in ("dev", "test"):
        path = folder / f"{part}.jsonl"
        if path.exists():
            for line in path.read_text(encoding="utf-8").splitlines():
                it = json.loads(line)
                labels[(it["id"], it["rewrite"])] = it.get("label")
    return labels


def main(argv: list[str] | None = None) -> int:
    """Roll out, record every step, write the kept rewrites split into dev and test."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--config", default=str(ROOT / "experiments" / "quickstart.yaml"))
    p.add_argument("--episodes", type=int, default=112, help="random-policy episodes")
    p.add_argument("--num-envs", type=int, default=8, help="envs stepped together (one batch)")
    p.add_argument("--run-dir", default=str(ROOT / "runs" / "validity-sample"),
                   help="cache, ledger and steps.jsonl")
    p.add_argument("--out", default=str(ROOT / "tests" / "data" / "validity"))
    p.add_argument("--dev-share", type=float, default=0.6, help="share of items in dev")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = p.parse_args(argv)

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    config = load_config(args.config, [f"run_dir={args.run_dir}"])
    seeds = {s.id: s for s in load_seeds(config.env.seed_file, config.env.seed_column,
                                         config.env.max_seed_chars).seeds}
    summary = run_rollout(config, "random", episodes=args.episodes, num_envs=args.num_envs)
    print(summary.report())

    steps, current = [], {}  # (slot, episode) -> the instruction before the next step
    for rec in summary.trajectory:
        key = (rec["slot"], rec["episode"])
        previous = current.get(key, seeds[rec["seed_id"]].text)
        current[key] = rec["instruction"]
        steps.append({
            "id": f"{rec['seed_id']}/slot{rec['slot']}-ep{rec['episode']}-step{rec['step']}",
            "seed_id": rec["seed_id"], "has_input": bool(seeds[rec["seed_id"]].input),
            "operation": rec["action"], "step": rec["step"], "previous": previous,
            "rewrite": rec["rewrite"], "failure": rec["failure"]})
    run_dir = Path(args.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / "steps.jsonl", "w", encoding="utf-8") as f:
        f.writelines(json.dumps(s, ensure_ascii=False) + "\n" for s in steps)

    out = Path(args.out)
    labels = read_labels(out)
    kept = [{k: s.get(k) for k in FIELDS[:-1]} | {"label": labels.get((s["id"], s["rewrite"]))}
            for s in steps if not s["failure"]]
    dev, test = split_by_seed(kept, args.dev_share)
    out.mkdir(parents=True, exist_ok=True)
    for name, part in (("dev", dev), ("test", test)):
        with open(out / f"{name}.jsonl", "w", encoding="utf-8") as f:
            f.writelines(json.dumps(it, ensure_ascii=False) + "\n" for it in part)
    print(f"{len(steps)} steps, {len(kept)} kept: dev {len(dev)} items "
          f"({len({i['seed_id'] for i in dev})} seeds), test {len(test)} "
          f"({len({i['seed_id'] for i in test})} seeds); "
          f"{sum(i['label'] is None for i in kept)} unlabelled")
    print("kept per operation:", dict(Counter(i["operation"] for i in kept)))
    print("kept per step:", dict(sorted(Counter(i["step"] for i in kept).items())))
    print("kept with input:", sum(i["has_input"] for i in kept))
    return 0


if __name__ == "__main__":
    sys.exit(main())
