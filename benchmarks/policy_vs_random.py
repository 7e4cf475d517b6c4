"""Mean episode return of a trained policy vs the random (Evol-Instruct) policy, with 95% CIs.

    .venv/bin/python benchmarks/policy_vs_random.py --run runs/quickstart [--episodes 200]
        [--seeds HELD_OUT.jsonl] [--greedy]

Both arms run the same MDP with the same episode seeds (so the same seed instructions), with the
local engine and the run's config; the cache is off so neither arm benefits from the other.
For a held-out comparison train with `env.seed_file=TRAIN.jsonl` and pass `--seeds` here.
Outside CI: 200 episodes an arm is ~2,400 LLM steps, hours on 2 cores.
"""

from __future__ import annotations

import argparse
import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _ci95(values) -> tuple[float, float, float]:
    import numpy as np

    v = np.asarray(values, dtype=float)
    rng = np.random.default_rng(0)
    boots = rng.choice(v, size=(2000, len(v)), replace=True).mean(1)
    return float(v.mean()), float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))


def run_arm(config, act, episodes: int, num_envs: int, client) -> list[float]:
    """Episode returns of `act(obs_batch, rng) -> actions` over `episodes` episodes."""
    import numpy as np

    from envs.vector import InstructionMDPVectorEnv

    vec = InstructionMDPVectorEnv(config.model_dump(mode="json") | {"num_envs": num_envs},
                                  client=client)
    obs, _ = vec.reset(seed=config.seed)
    rng = np.random.default_rng(config.seed)
    returns, running = [], np.zeros(num_envs)
    done_prev = np.zeros(num_envs, dtype=bool)
    while len(returns) < episodes:
        obs, reward, term, trunc, _ = vec.step(act(obs, rng))
        running += np.where(done_prev, 0.0, reward)  # next-step autoreset: skip reset steps
        ended = (term | trunc) & ~done_prev
        for i in np.flatnonzero(ended):
            returns.append(float(running[i]))
            running[i] = 0.0
        done_prev = term | trunc
    return returns[:episodes]


def main() -> None:
    """Run both arms and print means, CIs and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", required=True, help="run dir with policy/export")
    parser.add_argument("--episodes", type=int, default=200)
    parser.add_argument("--num-envs", type=int, default=8)
    parser.add_argument("--seeds", default=None, help="held-out seed file")
    parser.add_argument("--greedy", action="store_true", help="argmax actions (default: sample)")
    args = parser.parse_args()

    from teamsrl.config import load_config
    from teamsrl.llm.client import build_client
    from teamsrl.policy.export import load_policy

    overrides = [f"run_dir={tempfile.mkdtemp(prefix='pvr-')}", "llm.cache.enabled=false"]
    if args.seeds:
        overrides.append(f"env.seed_file={args.seeds}")
    config = load_config(f"{args.run}/config.yaml", overrides)
    policy = load_policy(args.run)
    client = build_client(config.llm, config.run_dir, stage="benchmark")
    n = len(policy.action_names)
    trained = run_arm(config, lambda o, rng: policy.act(o, greedy=args.greedy, rng=rng),
                      args.episodes, args.num_envs, client)
    random = run_arm(config, lambda o, rng: rng.integers(0, n, size=len(o)), args.episodes,
                     args.num_envs, client)
    (tm, tl, th), (rm, rl, rh) = _ci95(trained), _ci95(random)
    print(f"episodes per arm: {args.episodes}, seeds: {args.seeds or 'the training pool'}, "
          f"{'greedy' if args.greedy else 'sampled'} policy")
    print(f"{'arm':<10} {'mean return':>12} {'95% CI':>20}")
    print(f"{'policy':<10} {tm:>12.3f} {f'[{tl:.3f}, {th:.3f}]':>20}")
    print(f"{'random':<10} {rm:>12.3f} {f'[{rl:.3f}, {rh:.3f}]':>20}")
    print(f"policy / random = {tm / rm:.2f}" if rm > 0 else "random mean <= 0: ratio undefined")


if __name__ == "__main__":
    main()
