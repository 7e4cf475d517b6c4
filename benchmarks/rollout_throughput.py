"""Env steps/s of the instruction MDP three ways, measured side by side in one run.

    .venv/bin/python benchmarks/rollout_throughput.py [--steps 48] [--num-envs 4] [--max-tokens 48]

(a) serial: one env, direct engine calls, no Serve — the original TeaMs-RL code's way;
(b) served: N envs in one vector env, every step one batched call per role through Ray Serve;
(c) engine: the engine's own rate on exactly the requests (b) sent, in the same batches.
Prints (b)/(a) and (b)/(c). Cache off everywhere. Goal on 2 cores: (b)/(c) >= 0.8.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")


class Recording:
    """Wraps a client and keeps every chat/score batch it sends, in order."""

    def __init__(self, client) -> None:
        self.inner = client
        self.batches: list[tuple[str, str, list]] = []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def chat(self, role, requests, stage=None):
        self.batches.append(("chat", role, list(requests)))
        return self.inner.chat(role, requests)

    def score(self, role, requests, stage=None):
        self.batches.append(("score", role, list(requests)))
        return self.inner.score(role, requests)


def _steps_per_s(vec, steps: int, rng) -> float:
    vec.reset(seed=0)
    n = vec.num_envs
    start = time.perf_counter()
    for _ in range(steps // n):
        vec.step(rng.integers(0, vec.single_action_space.n, size=n))
    return (steps // n) * n / (time.perf_counter() - start)


def main() -> None:
    """Run (a), (b), (c) and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=48, help="env steps per arm")
    parser.add_argument("--num-envs", type=int, default=4, help="sub-envs of arm (b)")
    parser.add_argument("--max-tokens", type=int, default=48, help="expert rewrite length")
    args = parser.parse_args()

    import numpy as np
    import ray
    from ray import serve

    from teamsrl.config import load_config
    from teamsrl.llm.client import LLMClient, build_engine
    from teamsrl.mdp import make_vector_env
    from teamsrl.raycluster import init_ray
    from teamsrl.serving.client import ServeLLMClient
    from teamsrl.serving.deployment import deploy

    run_dir = tempfile.mkdtemp(prefix="rollout-bench-")
    config = load_config(None, [f"run_dir={run_dir}", "llm.cache.enabled=false",
                                f"llm.expert.max_tokens={args.max_tokens}",
                                "serving.num_cpus=2", f"serving.max_batch_size={args.num_envs}",
                                f"serving.max_ongoing_requests={4 * args.num_envs}"])
    # (a) serial, direct
    engine = build_engine(config.llm.expert)
    direct = Recording(LLMClient({"expert": engine, "reviewer": engine}))
    serial = make_vector_env(config, direct, 1)
    a = _steps_per_s(serial, args.steps, np.random.default_rng(1))

    # (b) N envs through Serve (the replica owns the whole machine, like in training)
    init_ray(num_cpus=2)
    handle = deploy(config.llm, config.serving, run_dir, stage="bench")
    served = Recording(ServeLLMClient(handle, config.llm))
    vec = make_vector_env(config, served, args.num_envs)
    _steps_per_s(vec, args.num_envs, np.random.default_rng(3))  # warm-up step
    served.batches.clear()
    b = _steps_per_s(vec, args.steps, np.random.default_rng(2))
    batch_sizes = handle.stats.remote().result()["batch_sizes"]
    serve.shutdown()
    ray.shutdown()

    # (c) the engine alone on (b)'s requests, same batches
    start = time.perf_counter()
    for kind, _, requests in served.batches:
        (engine.generate if kind == "chat" else engine.score)(requests)
    c = (args.steps // args.num_envs) * args.num_envs / (time.perf_counter() - start)

    print(f"rollout throughput: {args.steps} env steps per arm, expert max_tokens "
          f"{args.max_tokens}, N = {args.num_envs}, cache off, 2 cores")
    print(f"{'arm':<44} {'env steps/s':>11}")
    print(f"{'(a) serial, one env, direct engine calls':<44} {a:>11.3f}")
    print(f"{'(b) Serve, N envs batched per step':<44} {b:>11.3f}")
    print(f"{'(c) engine alone, (b) requests, same batches':<44} {c:>11.3f}")
    print(f"(b)/(a) = {b / a:.2f}   (b)/(c) = {b / c:.2f}   replica batch sizes {batch_sizes}")


if __name__ == "__main__":
    main()
