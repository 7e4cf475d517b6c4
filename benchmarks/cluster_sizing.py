"""The throughput model behind `cluster_scaling.py`, and the paper run's sizing table from it.

The model (every input measured by `cluster_scaling.py` or a constant of the SIMULATED engine):

    env steps/s = min( runners:  W * E / (t_llm(b) + q * (l_proxy + w) + E * c_runner)
                       engine:   GPUs * B / t_wave_pair(B)        (full waves of B requests)
                       proxy:    R * proxy_rps / q
                       cpu:      C / c_cpu )

W env runners of E sub-envs each; b = W * E / GPUs requests in flight per GPU; t_llm(b) the
modelled LLM wait of one vector step (an expert wave of b rewrites, then a reviewer wave of b
verdicts, from `SimulatedEngine.wave_seconds`, times `time_scale`); l_proxy the latency the
Serve path adds per request, w Serve's batch wait while batches cannot fill; c_runner the env
runner's own CPU seconds per env step (observation encoding, env logic, RLlib); R serving
replicas, each answering at most
`proxy_rps` requests/s; q = 2 requests per env step (one rewrite, one verdict); C cores and
c_cpu the CPU seconds one env step costs anywhere (runner + serialisation + serving). A PPO
iteration is synchronous: `train_batch / rate + learner_s_per_step * train_batch`.

    .venv/bin/python benchmarks/cluster_sizing.py benchmarks/results/cluster_scaling.json \
        [--config experiments/paper-llama7b.yaml] [--seeds 788]
        [--out benchmarks/results/cluster_scaling.md]
"""

from __future__ import annotations

import argparse
import json
import math
import random
from dataclasses import dataclass
from pathlib import Path

from teamsrl.llm.config import SimulatedEngineConfig
from teamsrl.llm.simulated_engine import LENGTH_SIGMA, SimulatedEngine

REQUESTS_PER_STEP = 2  # one expert rewrite and one reviewer verdict per env step
# The paper's dataset is 6.75% of WizardLM's 70k rows (reference-facts.md), 6 rows a seed:
PAPER_SEEDS = round(0.0675 * 70_000 / 6)


@dataclass(frozen=True)
class Shapes:
    """Mean token counts of the env's requests (measured): expert prompt, verdict prompt."""

    chat_prompt: float
    score_prompt: float


@dataclass(frozen=True)
class Costs:
    """Per-env-step CPU seconds and ceilings measured on the benchmark machine."""

    encode_s: float  # MiniLM observation + novelty encoding
    env_s: float  # the env's own Python (rules, rewards) outside LLM wait and encoding
    rllib_s: float  # RLlib in the runner between env steps (connectors, module forward)
    transfer_s: float  # sample() results to the driver, scheduling, weight sync
    proxy_s_per_request: float  # the serving path's CPU per request (1 / its req/s ceiling)
    proxy_rps: float  # one replica's requests/s ceiling (engine time 0)
    proxy_latency_s: float  # what the Serve path adds to one request (p50), in a caller's wait
    learner_s_per_step: float  # PPO update seconds per env step of the train batch

    @property
    def runner_s(self) -> float:
        """CPU seconds an env runner spends per env step (its loop is serial)."""
        return self.encode_s + self.env_s + self.rllib_s

    @property
    def cpu_s(self) -> float:
        """CPU seconds one env step costs on the whole cluster."""
        return self.runner_s + self.transfer_s + REQUESTS_PER_STEP * self.proxy_s_per_request

    @classmethod
    def of(cls, summary: dict) -> Costs:
        """From a `cluster_scaling` results file's summary."""
        c = summary["costs_per_env_step"]
        return cls(c["encode_s"], c["env_s"], c["rllib_s"], c["transfer_s"],
                   1.0 / summary["proxy"]["rps_ceiling"], summary["proxy"]["rps_ceiling"],
                   summary["proxy"]["added_ms_p50"] / 1e3, c["learner_s"])


def wave_s(engine: SimulatedEngine, batch: int, prompt: float, max_tokens: int | None,
           draws: int = 200) -> float:
    """Expected modelled seconds of one wave of `batch` requests with mean prompt `prompt`;
    completions drawn like the engine's (log-normal, cut at `max_tokens`); None: a score wave."""
    if batch <= 0:
        return 0.0
    c = engine.config
    if max_tokens is None:
        return c.time_scale * engine.wave_seconds([round(prompt)] * batch, [0] * batch)
    rng = random.Random(0)
    total = 0.0
    for _ in range(draws):
        lengths = [min(max_tokens, max(1, round(c.median_completion_tokens
                                                 * math.exp(rng.gauss(0.0, LENGTH_SIGMA)))))
                   for _ in range(batch)]
        total += engine.wave_seconds([round(prompt)] * batch, lengths)
    return c.time_scale * total / draws


def waves_s(engine: SimulatedEngine, n: float, prompt: float, max_tokens: int | None,
            cap: int | None = None) -> float:
    """Seconds for `n` requests in waves of at most `cap` (default `max_num_seqs`)."""
    cap = min(cap or engine.config.max_num_seqs, engine.config.max_num_seqs)
    full, rest = divmod(math.ceil(n), cap)
    return (full * wave_s(engine, cap, prompt, max_tokens)
            + wave_s(engine, rest, prompt, max_tokens))


@dataclass(frozen=True)
class Projection:
    """Env steps/s of one configuration, each term of the model, and which one binds."""

    terms: dict[str, float]

    @property
    def rate(self) -> float:
        """Env steps/s: the smallest term."""
        return min(self.terms.values())

    @property
    def bound(self) -> str:
        """The term that binds."""
        return min(self.terms, key=self.terms.get)


def project(costs: Costs, shapes: Shapes, engine: SimulatedEngine, *, runners: int, envs: int,
            expert_gpus: int, reviewer_gpus: int, replicas: int, cores: float,
            max_tokens: int, shared: bool = False, batch_cap: int | None = None,
            batch_wait_s: float = 0.0) -> Projection:
    """The model's env steps/s for one configuration. `shared`: each GPU serves both roles
    (one engine per replica, as in the benchmark); `batch_cap`: requests per engine call
    (`serving.max_batch_size` when the replica batches, else vLLM's `max_num_seqs`);
    `batch_wait_s`: Serve's batch wait, paid per role while a replica's batch cannot fill."""
    inflight = runners * envs
    chat = waves_s(engine, inflight / expert_gpus, shapes.chat_prompt, max_tokens, batch_cap)
    score = waves_s(engine, inflight / reviewer_gpus, shapes.score_prompt, None, batch_cap)
    n = min(batch_cap or engine.config.max_num_seqs, engine.config.max_num_seqs)
    full_chat = wave_s(engine, n, shapes.chat_prompt, max_tokens)
    full_score = wave_s(engine, n, shapes.score_prompt, None)
    if shared:  # one GPU runs both roles' waves, one after the other
        ceiling = expert_gpus * n / (full_chat + full_score)
    else:
        ceiling = min(expert_gpus * n / full_chat, reviewer_gpus * n / full_score)
    cap = batch_cap or engine.config.max_num_seqs
    wait = batch_wait_s if inflight / replicas < cap else 0.0
    overhead = REQUESTS_PER_STEP * (costs.proxy_latency_s + wait)  # one call per role, in turn
    return Projection({
        "runners": inflight / (chat + score + overhead + envs * costs.runner_s),
        "engine": ceiling,
        "proxy": replicas * costs.proxy_rps / REQUESTS_PER_STEP,
        "cpu": cores / costs.cpu_s if costs.cpu_s > 0 else math.inf,
    })


def _engine_of(summary: dict, time_scale: float = 1.0) -> SimulatedEngine:
    constants = dict(summary["engine"]["constants"]) | {"time_scale": time_scale}
    return SimulatedEngine("projection", SimulatedEngineConfig(**constants))


def sizing_markdown(results: dict, experiment, seeds: int = PAPER_SEEDS,
                    gpu_splits: tuple[tuple[int, int], ...] = ((1, 1), (2, 1), (4, 2))) -> str:
    """The paper run's sizing table (a PROJECTION) from a `cluster_scaling` results file and
    the experiment config (`ExperimentConfig`): one row per (expert GPUs, reviewer GPUs)."""
    summary = results["summary"]
    costs, shapes = Costs.of(summary), Shapes(**summary["shapes"])
    engine = _engine_of(summary)  # real GPU seconds: time_scale 1
    p, s, g = experiment.policy, experiment.serving, experiment.generate
    rows = []
    for expert_gpus, reviewer_gpus in gpu_splits:
        train = project(costs, shapes, engine, runners=p.num_env_runners,
                        envs=p.num_envs_per_env_runner, expert_gpus=expert_gpus,
                        reviewer_gpus=reviewer_gpus, replicas=s.num_replicas,
                        cores=p.num_env_runners * max(1.0, p.num_cpus_per_env_runner),
                        max_tokens=experiment.llm.expert.max_tokens,
                        batch_cap=s.max_batch_size, batch_wait_s=s.batch_wait_timeout_s)
        iteration_s = (p.train_batch_size / train.rate
                       + costs.learner_s_per_step * p.train_batch_size)
        # generation: shards x batch_seeds envs in flight, an answer per kept row (all steps)
        gen = project(costs, shapes, engine, runners=max(1, g.shards), envs=g.batch_seeds,
                      expert_gpus=expert_gpus, reviewer_gpus=reviewer_gpus,
                      replicas=s.num_replicas, cores=max(1, g.shards),
                      max_tokens=experiment.llm.expert.max_tokens, batch_cap=s.max_batch_size,
                      batch_wait_s=s.batch_wait_timeout_s)
        steps = seeds * experiment.env.horizon
        answers = waves_s(engine, steps / expert_gpus, shapes.chat_prompt, g.answer_max_tokens,
                          s.max_batch_size)
        gen_s = steps / gen.rate + (answers if g.answer else 0.0)
        rows.append(f"| {expert_gpus} + {reviewer_gpus} | {s.num_replicas} | "
                    f"{p.num_env_runners} x {p.num_envs_per_env_runner} | {train.rate:.1f} "
                    f"({train.bound}) | {iteration_s:.0f} s | "
                    f"{iteration_s * p.iterations / 3600:.1f} h | {gen_s / 3600:.2f} h |")
    measured = results.get("machine", {})
    return "\n".join([
        f"**PROJECTION** for `{experiment.name}` (not measured on GPUs): the model in "
        "`benchmarks/cluster_sizing.py` with the per-step costs measured by "
        f"`{results.get('command', 'benchmarks/cluster_scaling.py')}` on "
        f"{measured.get('nproc', '?')} cores ({measured.get('cpu_model', '?')}) and the "
        "SIMULATED engine's constants (`SimulatedEngineConfig`: vLLM serving an 8B model on "
        "one A100 40GB; a 13B reviewer would be slower) at real speed, one GPU per engine. "
        f"Train batch {p.train_batch_size} env steps, {p.iterations} iterations; "
        f"generation of {seeds} seeds x {experiment.env.horizon} steps, "
        f"{g.shards} shards x {g.batch_seeds} seeds in flight, an answer per row "
        f"(median {engine.config.median_completion_tokens} tokens, as the simulated engine "
        "draws them). Expert prompt "
        f"{shapes.chat_prompt:.0f} tokens, verdict prompt {shapes.score_prompt:.0f} "
        "(measured means); runner cores: one per env runner.",
        "",
        "| GPUs (expert + reviewer) | serving replicas | env runners x envs | env steps/s "
        "(binding term) | PPO iteration | all iterations | generation |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        *rows, ""])


def main() -> None:
    """Read a results file, print and write the sizing table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("results", help="a cluster_scaling results JSON")
    parser.add_argument("--config", default="experiments/paper-llama7b.yaml",
                        help="the experiment to size (default: the paper's run)")
    parser.add_argument("--seeds", type=int, default=PAPER_SEEDS,
                        help="seed instructions generated from (default: the paper's dataset "
                        "size, 6.75%% of 70k rows, 6 rows a seed)")
    parser.add_argument("--out", default=None, help="write the Markdown here too")
    args = parser.parse_args()
    from teamsrl.config import load_config

    text = sizing_markdown(json.loads(Path(args.results).read_text()),
                           load_config(args.config), seeds=args.seeds)
    print(text)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
