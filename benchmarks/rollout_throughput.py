"""Env steps/s of the instruction MDP three ways, on the same work, interleaved over repeats.

    .venv/bin/python benchmarks/rollout_throughput.py [--steps 48] [--num-envs 4] [--repeats 3]
        [--max-tokens 48] [--out benchmarks/results/rollout_throughput.json]

Every arm steps the same N sub-envs (reset with the same seed, so the same seed instructions)
with the same action draws (the same rng seed every repeat) for the same number of env steps,
after the same unmeasured warm-up step; the engine is batch-invariant and the cache is off, so
every arm sends exactly the same requests (checked, and recorded as `same_requests`):

(a) serial: each request of a step sent alone to an engine in this process, one after the other
    (the original TeaMs-RL code's one-request-at-a-time calls);
(b) served: each step's N requests per role in flight at once through Ray Serve, batched there;
(c) engine: the engine alone on the batches the env asked for, timed without the env.

Ray Serve is up during all three arms (its idle replica is the same background for each), and the
arms run in a rotated order each repeat. Prints steps/s per repeat and median, and the paired
ratios (b)/(a) and (b)/(c) per repeat and their median. Goal on 2 cores: (b)/(c) >= 0.8.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

from results_file import ResultsFile, add_out_argument

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

ARMS = ("serial", "served", "engine")
LABELS = {"serial": "(a) serial, one request at a time, direct engine",
          "served": "(b) Serve, N requests per role in flight",
          "engine": "(c) engine alone, the env's batches"}
RESET_SEED = 0
ACTION_SEED = 1


class Recording:
    """Wraps a client; keeps every chat/score batch the env asks for, in order. With
    `one_at_a_time` each request of a batch goes to the inner client alone."""

    def __init__(self, client, one_at_a_time: bool = False) -> None:
        self.inner = client
        self.one_at_a_time = one_at_a_time
        self.batches: list[tuple[str, str, list]] = []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def chat(self, role, requests, stage=None):
        return self._call("chat", role, requests)

    def score(self, role, requests, stage=None):
        return self._call("score", role, requests)

    def _call(self, kind, role, requests):
        self.batches.append((kind, role, list(requests)))
        call = getattr(self.inner, kind)
        if self.one_at_a_time:
            return [out for r in requests for out in call(role, [r])]
        return call(role, requests)


def run_env_arm(vec, client: Recording, vector_steps: int) -> float:
    """Reset with RESET_SEED, step with ACTION_SEED's draws; seconds for `vector_steps` steps."""
    import numpy as np

    rng = np.random.default_rng(ACTION_SEED)
    vec.reset(seed=RESET_SEED)
    client.batches.clear()
    start = time.perf_counter()
    for _ in range(vector_steps):
        vec.step(rng.integers(0, vec.single_action_space.n, size=vec.num_envs))
    return time.perf_counter() - start


def run_engine_arm(engine, batches: list[tuple[str, str, list]]) -> float:
    """Seconds for the engine alone to answer `batches` as they were asked for."""
    start = time.perf_counter()
    for kind, _, requests in batches:
        (engine.generate if kind == "chat" else engine.score)(requests)
    return time.perf_counter() - start


def main() -> None:
    """Run the arms over the repeats, print the table and ratios, write the results file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=48,
                        help="measured env steps per arm and repeat (a multiple of --num-envs)")
    parser.add_argument("--num-envs", type=int, default=4, help="sub-envs stepped together")
    parser.add_argument("--repeats", type=int, default=3, help="measured runs of every arm")
    parser.add_argument("--max-tokens", type=int, default=48, help="expert rewrite length")
    add_out_argument(parser, "rollout_throughput")
    args = parser.parse_args()
    if args.num_envs < 1 or args.repeats < 1 or args.steps < args.num_envs \
            or args.steps % args.num_envs:
        parser.error(f"--steps {args.steps}, --num-envs {args.num_envs}, --repeats "
                     f"{args.repeats}: expected steps a positive multiple of num-envs, repeats "
                     ">= 1")
    results = ResultsFile(args.out, vars(args))
    vector_steps = args.steps // args.num_envs

    import ray
    from ray import serve

    from teamsrl.config import load_config
    from teamsrl.llm.client import build_client
    from teamsrl.mdp import make_vector_env
    from teamsrl.raycluster import init_ray
    from teamsrl.serving.client import ServeLLMClient
    from teamsrl.serving.deployment import deploy

    run_dir = tempfile.mkdtemp(prefix="rollout-bench-")
    config = load_config(None, [f"run_dir={run_dir}", "llm.cache.enabled=false",
                                f"llm.expert.max_tokens={args.max_tokens}",
                                "serving.num_cpus=2", f"serving.max_batch_size={args.num_envs}",
                                f"serving.max_ongoing_requests={4 * args.num_envs}"])
    # built like the replica's client (the config's sampling parameters, a ledger, one engine
    # for both roles), so (a) differs from (b) only in how requests reach the engine
    direct = build_client(config.llm, os.path.join(run_dir, "direct"), stage="bench")
    engine = direct.engine("expert")
    serial = Recording(direct, one_at_a_time=True)
    init_ray(num_cpus=2)  # the replica owns the whole machine, as in training
    handle = deploy(config.llm, config.serving, run_dir, stage="bench")
    served = Recording(ServeLLMClient(handle, config.llm))
    envs = {"serial": make_vector_env(config, serial, args.num_envs),
            "served": make_vector_env(config, served, args.num_envs)}
    clients = {"serial": serial, "served": served}

    # The same warm-up for every arm: one vector step on the same draws (the engine arm replays
    # the batches that step asked for).
    for arm in ("serial", "served"):
        run_env_arm(envs[arm], clients[arm], 1)
    run_engine_arm(engine, serial.batches)

    seconds: dict[str, list[float]] = {arm: [] for arm in ARMS}
    streams: dict[str, list] = {}  # arm -> the requests its first measured run sent
    env_batches: list = []  # what the env asked for in a measured run (the engine arm's work)
    orders = []
    for rep in range(args.repeats):
        # rotated each repeat; the engine arm replays the latest env arm's batches, and in the
        # first repeat it comes last
        order = ARMS[rep % 3:] + ARMS[:rep % 3]
        orders.append(list(order))
        for arm in order:
            if arm == "engine":
                seconds[arm].append(run_engine_arm(engine, env_batches))
                continue
            seconds[arm].append(run_env_arm(envs[arm], clients[arm], vector_steps))
            env_batches = list(clients[arm].batches)
            streams.setdefault(arm, [(k, r, q) for k, r, reqs in env_batches for q in reqs])
    same_requests = streams["serial"] == streams["served"]
    batch_sizes = handle.stats.remote().result()["batch_sizes"]
    serve.shutdown()
    ray.shutdown()

    env_steps = vector_steps * args.num_envs
    rate = {arm: [env_steps / s for s in seconds[arm]] for arm in ARMS}
    ratios = {"served/serial": [b / a for a, b in zip(rate["serial"], rate["served"],
                                                      strict=True)],
              "served/engine": [b / c for b, c in zip(rate["served"], rate["engine"],
                                                      strict=True)]}
    median = {k: statistics.median(v) for k, v in (rate | ratios).items()}

    print(f"rollout throughput: {env_steps} env steps per arm and repeat "
          f"({vector_steps} steps of N = {args.num_envs}), expert max_tokens {args.max_tokens}, "
          f"cache off, {args.repeats} repeats, one warm-up step each")
    head = " ".join(f"{'rep ' + str(r + 1):>8}" for r in range(args.repeats))
    print(f"{'env steps/s':<48} {head} {'median':>8}")
    for arm in ARMS:
        cells = " ".join(f"{x:>8.3f}" for x in rate[arm])
        print(f"{LABELS[arm]:<48} {cells} {median[arm]:>8.3f}")
    for name, label in (("served/serial", "(b)/(a)"), ("served/engine", "(b)/(c)")):
        cells = " ".join(f"{x:>8.2f}" for x in ratios[name])
        print(f"{label + ' (paired per repeat)':<48} {cells} {median[name]:>8.2f}")
    print(f"same requests in every arm: {same_requests}; replica batch sizes {batch_sizes}; "
          f"arm order per repeat {orders}")
    results.write(
        summary={"env_steps_per_s_median": {a: median[a] for a in ARMS},
                 "ratio_median": {k: median[k] for k in ratios}, "same_requests": same_requests,
                 "replica_batch_sizes": batch_sizes},
        raw={"env_steps_per_repeat": env_steps, "seconds": seconds, "env_steps_per_s": rate,
             "ratios": ratios, "order": orders})


if __name__ == "__main__":
    main()
