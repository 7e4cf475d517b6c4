"""`teamsrl train-policy`: RLlib PPO on the instruction MDP, the LLMs behind Ray Serve.

    teamsrl train-policy --config experiments/quickstart.yaml [--address auto] [--resume]

Reads top to bottom like the algorithm: join Ray, deploy the expert/reviewer app, size the
sampling timeout from a measured warm-up step, build PPO, then per iteration: sample (env runners
step their vector envs; every step is one batched LLM call per role), learn, log, checkpoint.
At the end the policy is exported for generation (`teamsrl.policy.export`).

Resume: `--resume` restores the newest checkpoint and continues with the next iteration. Env
seeds derive from (run seed, first iteration of this invocation, runner index), so nothing
random needs saving.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, fields
from pathlib import Path

from gymnasium.vector import VectorWrapper

from envs import INSTRUCTION_MDP_ID
from teamsrl.config import ExperimentConfig, dump_config
from teamsrl.layout import RunLayout
from teamsrl.llm.ledger import RoleTotals

log = logging.getLogger(__name__)

SERVE_APP_KEY = "teamsrl_serve_app"
STAGE = "train-policy"
WARMUP_STAGE = "warmup"  # the timing probe before training: its queries are training cost too


@dataclass
class TrainResult:
    """Where the artefacts went and the last iteration's metrics."""

    checkpoint: Path
    export: Path
    iterations: int
    metrics: dict


def make_env(env_config):
    """The RLlib env creator (the only one): the instruction MDP of the experiment in
    `env_config` (an `ExperimentConfig` dump plus the Serve app's name), its LLM calls sent to
    the Serve app. RLlib passes `num_envs` in `vector_entry_point` mode: then a vector env."""
    from teamsrl.config import validate
    from teamsrl.mdp import make_env as make_single
    from teamsrl.mdp import make_vector_env
    from teamsrl.serving.client import ServeLLMClient

    cfg = dict(env_config)
    app = cfg.pop(SERVE_APP_KEY)
    num_envs = cfg.pop("num_envs", None)
    experiment = validate(cfg, source="<env config>")
    client = ServeLLMClient.connect(app, experiment.llm, stage=STAGE,
                                    transport=experiment.serving.transport,
                                    timeout_s=experiment.serving.request_timeout_s,
                                    timeout_retries=experiment.serving.timeout_retries)
    worker = int(getattr(env_config, "worker_index", 0) or 0)  # RLlib's EnvContext
    seed = experiment.seed + 10_000 * worker
    if num_envs is not None:
        return SpreadSeeds(make_vector_env(experiment, client, int(num_envs), seed=seed))
    return make_single(experiment, client, seed=seed)


class SpreadSeeds(VectorWrapper):
    """RLlib seeds runner w with `seed + w` and a vector env gives sub-env i `seed + i`, so
    runners would share sub-env seeds (and, through the cache, trajectories); resetting with
    `seed * num_envs` keeps every (runner, sub-env) seed distinct."""

    def reset(self, *, seed=None, options=None):
        """Reset all sub-envs, spreading an int seed over runners."""
        if isinstance(seed, int):
            seed = seed * self.num_envs
        return self.env.reset(seed=seed, options=options)


def build_ppo(config: ExperimentConfig, sample_timeout_s: float, seed: int):
    """The PPOConfig (RLlib's current API stack) that `config.policy` describes."""
    from ray.rllib.algorithms.ppo import PPOConfig
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    from teamsrl.policy.callbacks import InstructionMetrics

    p = config.policy
    env_config = config.model_dump(mode="json") | {SERVE_APP_KEY: config.serving.app_name}
    config_class = PPOConfig
    if p.sampling == "async":
        from teamsrl.policy.async_ppo import AsyncPPOConfig as config_class
    return (
        config_class()
        .environment(INSTRUCTION_MDP_ID, env_config=env_config)
        .env_runners(
            num_env_runners=p.num_env_runners,
            num_envs_per_env_runner=p.num_envs_per_env_runner,
            num_cpus_per_env_runner=p.num_cpus_per_env_runner,
            custom_resources_per_env_runner=dict(p.custom_resources_per_env_runner),
            rollout_fragment_length=config.env.horizon,
            gym_env_vectorize_mode=p.vectorize_mode,
            sample_timeout_s=sample_timeout_s,
        )
        .training(
            train_batch_size_per_learner=p.train_batch_size,
            minibatch_size=p.minibatch_size,
            num_epochs=p.num_epochs,
            lr=p.lr,
            gamma=p.gamma,
            lambda_=p.gae_lambda,
            clip_param=p.clip_param,
            entropy_coeff=p.entropy_coeff,
        )
        .rl_module(model_config=DefaultModelConfig(fcnet_hiddens=list(p.hidden_sizes)))
        .learners(num_learners=p.num_learners, num_gpus_per_learner=p.num_gpus_per_learner)
        .fault_tolerance(
            restart_failed_env_runners=True,
            max_num_env_runner_restarts=p.max_env_runner_restarts,
        )
        .callbacks(InstructionMetrics)
        .debugging(seed=seed)
    )


def measure_step_s(client, config: ExperimentConfig) -> float:
    """Seconds of one vector-env step: a warm-up batch of expert rewrites plus verdicts (no
    verdicts when they weigh nothing in the reward: the env does not ask for them then)."""
    from teamsrl.actions import ActionSet
    from teamsrl.rewards import verdict_request
    from teamsrl.seeds import load_seeds

    n = config.policy.num_envs_per_env_runner
    actions = ActionSet.from_config(config.actions)
    seeds = load_seeds(config.env.seed_file, config.env.seed_column,
                       config.env.max_seed_chars).seeds[:n]
    requests = [client.request("expert", list(actions.render_for(client, 0, s.text).messages),
                               seed=config.seed + i) for i, s in enumerate(seeds)]
    start = time.perf_counter()
    rewrites = client.chat("expert", requests, stage=WARMUP_STAGE)
    if config.env.reward.asks_verdict:  # as the env steps
        client.score("reviewer", [verdict_request(s.text, r.text or s.text)
                                  for s, r in zip(seeds, rewrites, strict=True)],
                     stage=WARMUP_STAGE)
    return time.perf_counter() - start


def sample_timeout(config: ExperimentConfig, step_s: float) -> float:
    """Generous bound on one `sample()` call: 5x its expected time, at least 2 minutes."""
    p = config.policy
    vector_steps = p.train_batch_size / max(1, p.num_env_runners) / p.num_envs_per_env_runner
    return max(120.0, 5.0 * vector_steps * step_s * max(1, p.num_env_runners))


def train_policy(config: ExperimentConfig, address: str | None = None, resume: bool = False,
                 iterations: int | None = None, progress: bool = True) -> TrainResult:
    """Train (or continue training) the policy; returns the checkpoint and export paths."""
    import ray
    from ray.tune.registry import register_env

    from teamsrl.policy.callbacks import summarize
    from teamsrl.policy.export import PolicySpec, export_policy
    from teamsrl.raycluster import init_ray, starts_local_ray
    from teamsrl.serving.client import ServeLLMClient
    from teamsrl.serving.deployment import deploy
    from teamsrl.tracking import Tracker

    layout = RunLayout.of(config.run_dir)
    previous = layout.latest_checkpoint() if resume else None
    if resume and previous is None:
        raise FileNotFoundError(f"--resume: no checkpoint under {layout.checkpoints}; run "
                                "without --resume first")
    start_iter = previous[1] if previous else 0
    total = config.policy.iterations if iterations is None else iterations
    if total < 0 or (total == 0 and previous is None):
        raise ValueError(f"iterations = {total}: expected >= 1 (0 only with --resume, to "
                         "export the newest checkpoint)")
    layout.root.mkdir(parents=True, exist_ok=True)
    layout.config.write_text(dump_config(config))

    started_ray = starts_local_ray(address)  # joined: leave its Serve and Ray
    init_ray(address)
    algo, tracker = None, None
    try:
        handle = deploy(config.llm, config.serving, layout.root, stage=STAGE)
        client = ServeLLMClient(handle, config.llm, timeout_s=config.serving.request_timeout_s)
        step_s = measure_step_s(client, config)
        timeout = config.policy.sample_timeout_s or sample_timeout(config, step_s)
        log.info("warm-up step %.2f s -> sample_timeout_s %.0f", step_s, timeout)

        register_env(INSTRUCTION_MDP_ID, make_env)
        seed = config.seed + 7919 * start_iter  # a resumed run samples fresh episodes
        algo = build_ppo(config, timeout, seed).build_algo()
        if previous:
            algo.restore_from_path(str(previous[0].resolve()))
        tracker = Tracker(config, STAGE, resume=resume)
        last, metrics = _train_loop(algo, client, tracker, config, layout, start_iter, total,
                                    progress, summarize)
        export = export_policy(algo, layout.export, PolicySpec(
            action_names=config.actions.names(), embedder=config.env.embedder,
            horizon=config.env.horizon,
            observation_size=int(algo.get_module().observation_space.shape[0]),
            iteration=last, seed=config.seed, hidden_sizes=list(config.policy.hidden_sizes)))
        layout.policy_ledger.write_text(json.dumps(
            {r: t.as_dict() for r, t in training_cost(client.ledger).items()}, indent=2))
        layout.serve_stats.write_text(json.dumps(handle.stats.remote().result(), indent=2))
        return TrainResult(layout.checkpoint(last), export, last, metrics)
    finally:
        from ray import serve

        if tracker is not None:
            tracker.finish()
        if algo is not None:
            algo.stop()
        serve.delete(config.serving.app_name)  # frees the replica's CPUs/GPUs
        if started_ray:
            serve.shutdown()
            ray.shutdown()


def _train_loop(algo, client, tracker, config, layout, start_iter, total, progress,
                summarize) -> tuple[int, dict]:
    """Train `total` iterations after `start_iter`: log, checkpoint every K and at the end.

    An iteration that sampled nothing (its env runners crashed) is not counted: the loop waits
    for RLlib to restart them and runs that iteration again; 3 in a row fail the run.
    """
    from tqdm import tqdm

    action_names = config.actions.names()
    metrics = _last_logged(tracker)
    empty = 0
    it, last = start_iter + 1, start_iter + total
    bar = tqdm(total=total, desc="train-policy", unit="iter", disable=not progress)
    while it <= last:
        result = algo.train()
        metrics = summarize(result, action_names)
        if not metrics["rollout/env_steps"] > 0:  # 0 or NaN: a crashed runner fails silently
            empty += 1
            if empty >= 3:
                raise RuntimeError("3 attempts in a row sampled 0 env steps: the env runners "
                                   "keep failing (see the Ray logs)")
            log.warning("iteration %d sampled nothing; waiting for env runners to restart", it)
            _wait_for_env_runners(algo, config.policy.num_env_runners)
            continue
        empty = 0
        metrics |= _ledger_metrics(client) | _health_metrics(result)
        # RLlib's sampling timer is smoothed across iterations; the iteration's wall time is not
        iteration_s = metrics.get("timing/iteration_s") or float("nan")
        metrics["perf/env_steps_per_s"] = metrics["rollout/env_steps"] / iteration_s
        metrics["iteration"] = it
        tracker.log(metrics, step=it)
        bar.update()
        bar.set_postfix(ret=f"{metrics['rollout/return_mean']:.2f}",
                        expert=int(metrics["queries/expert"]))
        if it % config.policy.checkpoint_every == 0 or it == last:
            algo.save_to_path(str(layout.checkpoint(it).resolve()))
        it += 1
    bar.close()
    return last, metrics


def _last_logged(tracker) -> dict:
    """The newest metrics row already logged (what a resume with 0 iterations reports)."""
    if not tracker.jsonl.is_file():
        return {}
    lines = tracker.jsonl.read_text(encoding="utf-8").strip().splitlines()
    return json.loads(lines[-1]) if lines else {}


def _wait_for_env_runners(algo, expected: int, timeout_s: float = 300.0) -> None:
    """Poll until RLlib has brought the env runners back (restarted actors re-create envs)."""
    group = algo.env_runner_group
    if expected == 0 or group is None:
        return
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        algo.restore_env_runners(group)
        if group.num_healthy_remote_workers() >= expected:
            return
        time.sleep(2.0)
    raise RuntimeError(f"env runners did not come back within {timeout_s:.0f} s")


def training_cost(ledger) -> dict[str, RoleTotals]:
    """Per-role totals of everything policy training asked: its own stage plus the warm-up."""
    out: dict[str, RoleTotals] = {}
    for stage in (WARMUP_STAGE, STAGE):
        for role, t in ledger.totals(stage=stage).items():
            acc = out.setdefault(role, RoleTotals())
            for f in fields(RoleTotals):
                setattr(acc, f.name, getattr(acc, f.name) + getattr(t, f.name))
    return out


def _ledger_metrics(client) -> dict[str, float]:
    totals = client.ledger.totals(stage=STAGE)
    out = {f"queries/{role}": float(totals[role].queries if role in totals else 0)
           for role in ("expert", "reviewer")}
    # requests dropped after timing out (serving.timeout_retries), every role together
    out["queries/failed"] = float(sum(t.failures for t in totals.values()))
    hits = sum(t.cache_hits for t in totals.values())
    asked = hits + sum(t.queries for t in totals.values())
    out["cache/hit_rate"] = hits / asked if asked else 0.0
    return out


def _health_metrics(result: dict) -> dict[str, float]:
    group = result.get("env_runner_group", {})
    fault = result.get("fault_tolerance", {})
    return {
        "health/env_runner_restarts": float(fault.get("num_remote_worker_restarts", 0)),
        "health/healthy_env_runners": float(fault.get("num_healthy_workers",
                                                      group.get("num_healthy_workers", 0))),
        "health/env_runners_dropped": float(fault.get("num_env_runners_dropped_lifetime", 0)),
    }
