"""Mean episode return of a trained policy vs the random (Evol-Instruct) policy, with 95% CIs.

    .venv/bin/python benchmarks/policy_vs_random.py --run runs/quickstart [--episodes 200]
        [--seeds HELD_OUT.jsonl] [--arms sampled,greedy,random]
        [--out benchmarks/results/policy_vs_random.json]

Arms: `sampled` draws actions from the policy's distribution, `greedy` takes its argmax (what
`generate.sampling: greedy` does), `random` picks uniformly (Evol-Instruct). Every arm runs the
same MDP with the same episode seeds (so the same seed instructions in the same order), with the
local engine and the run's config; the cache is off so no arm benefits from another.
For a held-out comparison train with `env.seed_file=TRAIN.jsonl` and pass `--seeds` here.
Outside CI: 200 episodes an arm is 1,200 LLM steps at horizon 6, ~20 min an arm on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections import Counter

from results_file import ResultsFile, add_out_argument

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ARMS = ("sampled", "greedy", "random")


def _bootstrap(values, other=None, n: int = 2000) -> tuple[float, float, float]:
    """Mean of `values` (or the ratio of means to `other`) and its 95% percentile-bootstrap CI."""
    import numpy as np

    v = np.asarray(values, dtype=float)
    rng = np.random.default_rng(0)
    boot_v = rng.choice(v, size=(n, len(v)), replace=True).mean(1)
    if other is None:
        point, boots = v.mean(), boot_v
    else:
        o = np.asarray(other, dtype=float)
        boot_o = rng.choice(o, size=(n, len(o)), replace=True).mean(1)
        point, boots = v.mean() / o.mean(), boot_v / boot_o
    return float(point), float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))


def run_arm(config, act, episodes: int, num_envs: int, client, names) -> dict:
    """Returns, action counts and failure share of `act(obs_batch, rng) -> actions`."""
    import numpy as np
    from tqdm import tqdm

    from teamsrl.mdp import make_vector_env

    vec = make_vector_env(config, client, num_envs)
    obs, _ = vec.reset(seed=config.seed)
    rng = np.random.default_rng(config.seed)
    returns, running = [], np.zeros(num_envs)
    done_prev = np.zeros(num_envs, dtype=bool)
    actions_taken, steps, failures = Counter(), 0, 0
    start = time.perf_counter()
    with tqdm(total=episodes, desc="episodes", leave=False) as bar:
        while len(returns) < episodes:
            actions = np.asarray(act(obs, rng))
            obs, reward, term, trunc, info = vec.step(actions)
            live = ~done_prev  # next-step autoreset: a reset step ignores its action
            running += np.where(live, reward, 0.0)
            for i in np.flatnonzero(live):
                actions_taken[names[int(actions[i])]] += 1
                steps += 1
                failures += bool(info["failure"][i])
            ended = (term | trunc) & live
            for i in np.flatnonzero(ended):
                returns.append(float(running[i]))
                running[i] = 0.0
            bar.update(int(ended.sum()))
            done_prev = term | trunc
    vec.close()
    return {"returns": returns[:episodes], "steps": steps, "failure_share": failures / steps,
            "actions": dict(actions_taken.most_common()),
            "seconds": round(time.perf_counter() - start, 1)}


def main() -> None:
    """Run the arms and print means, CIs and each policy arm's ratio to random."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="run dir with policy/export")
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--seeds", default=None, help="held-out seed file")
    parser.add_argument("--arms", default=",".join(ARMS),
                        help=f"comma-separated subset of {','.join(ARMS)} (default: all)")
    add_out_argument(parser, "policy_vs_random")
    args = parser.parse_args()
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    bad = [a for a in arms if a not in ARMS]
    if bad or not arms:
        parser.error(f"--arms {args.arms!r}: expected names from {', '.join(ARMS)}")

    results_file = ResultsFile(args.out, vars(args))

    from teamsrl.config import load_config
    from teamsrl.llm.client import build_client
    from teamsrl.llm.config import refuse_simulated
    from teamsrl.policy.export import load_policy

    overrides = [f"run_dir={tempfile.mkdtemp(prefix='pvr-')}", "llm.cache.enabled=false"]
    if args.seeds:
        overrides.append(f"env.seed_file={args.seeds}")
    config = load_config(f"{args.run}/config.yaml", overrides)
    refuse_simulated(config.llm, "policy_vs_random (mean episode returns)")
    policy = load_policy(args.run)
    client = build_client(config.llm, config.run_dir, stage="benchmark")
    names = policy.action_names
    acts = {
        "sampled": lambda o, rng: policy.act(o, greedy=False, rng=rng),
        "greedy": lambda o, rng: policy.act(o, greedy=True),
        "random": lambda o, rng: rng.integers(0, len(names), size=len(o)),
    }
    results = {}
    for arm in arms:
        results[arm] = run_arm(config, acts[arm], args.episodes, args.num_envs, client, names)
        mean, lo, hi = _bootstrap(results[arm]["returns"])
        results[arm] |= {"mean": mean, "ci95": [lo, hi]}
        print(f"{arm}: mean return {mean:.3f} [{lo:.3f}, {hi:.3f}] in "
              f"{results[arm]['seconds']} s", flush=True)

    print(f"\nepisodes per arm: {args.episodes}, seeds: {args.seeds or 'the training pool'}, "
          f"policy: {args.run}")
    print(f"{'arm':<8} {'mean return':>12} {'95% CI':>18} {'failed steps':>13}  actions")
    for arm, r in results.items():
        ci = f"[{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]"
        print(f"{arm:<8} {r['mean']:>12.3f} {ci:>18} {r['failure_share']:>13.3f}  {r['actions']}")
    if "random" in results and results["random"]["mean"] > 0:
        for arm in (a for a in results if a != "random"):
            ratio, lo, hi = _bootstrap(results[arm]["returns"], other=results["random"]["returns"])
            results[arm]["ratio_to_random"] = {"ratio": ratio, "ci95": [lo, hi]}
            print(f"{arm} / random = {ratio:.2f}  (95% bootstrap CI [{lo:.2f}, {hi:.2f}])")
    elif "random" in results:
        print("random mean <= 0: ratio undefined")
    figures = ("mean", "ci95", "ratio_to_random", "failure_share", "seconds")
    results_file.write(
        summary={arm: {k: r[k] for k in figures if k in r} for arm, r in results.items()},
        raw={arm: {k: v for k, v in r.items() if k not in figures} for arm, r in results.items()})


if __name__ == "__main__":
    main()
