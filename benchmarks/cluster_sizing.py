"""The throughput model behind `cluster_scaling.py`, and the paper run's sizing table from it.

The model (every input measured by `cluster_scaling.py` or a constant of the SIMULATED engine):

    env steps/s = min( runners:  simulate_rollout(W runners of E envs, CPU E * c_runner
                                                  + q * (l_proxy + w) a vector step)
                       engine:   gpu_ceiling(the GPUs kept full, no CPU)
                       proxy:    R * proxy_rps / q
                       cpu:      C / c_cpu )

`simulate_rollout` is a discrete-event simulation of the closed loop on the engine's own
continuous-batching model (`GPUTimeline`, in seconds times `time_scale`): each of W env runners
sends its E rewrites (prompt: the measured mean, completion drawn like the engine's, log-normal
and cut at `max_tokens`, seeded), waits for all E, sends its E verdicts (prefill only), waits for
all, then spends E * c_runner + q * (l_proxy + w) without the GPU (its CPU, the Serve path) and
starts again. A replica lets at most `batch_cap` requests of a kind (chat, score) into its engine
at once (`serving.max_batch_size x serving.max_concurrent_batches`, at most the engine's
`max_num_seqs`); with R replicas in front of a role's G GPUs, a GPU takes ceil(R * cap / G) of a
kind, the rest wait outside the engine in arrival order. A runner's requests go round-robin over
the role's GPUs; `shared`: every GPU serves both roles (one timeline each). It runs until the
runners have finished max(20 W, 4000 / E) vector steps and measures over the last 80%.
`gpu_ceiling`: the same simulation of one GPU with twice as many callers (one env each, no
CPU) as its lanes admit, so more callers add nothing, times the GPUs; with separate roles, the
slower of the expert GPUs (rewrites alone) and the reviewer GPUs (verdicts alone).

l_proxy is the latency the Serve path adds per request, w Serve's batch wait while a replica's
share of the requests in flight cannot fill `batch_cap`; c_runner the env runner's own CPU
seconds per env step (observation encoding, env logic, RLlib); R serving replicas, each answering
at most `proxy_rps` requests/s; q = 2 requests per env step (one rewrite, one verdict); C cores
and c_cpu the CPU seconds one env step costs anywhere (runner + serialisation + serving). A PPO
iteration is synchronous: `train_batch / rate + learner_s_per_step * train_batch`. Generation:
seeds x horizon env steps at the rate of `shards x batch_seeds` envs in flight, then an answer
per row at the expert GPUs' full rate (`full_gpu_rate`, rewrites of `answer_max_tokens`).

    .venv/bin/python benchmarks/cluster_sizing.py benchmarks/results/cluster_scaling.json \
        [--config experiments/paper-llama7b.yaml] [--seeds 788]
        [--out benchmarks/results/cluster_scaling.md]
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import random
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from teamsrl.llm.config import SimulatedEngineConfig
from teamsrl.llm.simulated_engine import LENGTH_SIGMA, GPUTimeline, SimulatedEngine

REQUESTS_PER_STEP = 2  # one expert rewrite and one reviewer verdict per env step
# The paper's dataset is 6.75% of WizardLM's 70k rows (reference-facts.md), 6 rows a seed:
PAPER_SEEDS = round(0.0675 * 70_000 / 6)
CHAT, SCORE = "chat", "score"  # the two kinds of request: rewrite (expert), verdict (reviewer)
MIN_STEPS_PER_RUNNER = 20  # vector steps each runner makes, on average, in one simulation
MIN_ENV_STEPS = 4000  # and env steps in all: the noise of the mean completion length ~1%
WARMUP = 0.2  # the share of a simulation's vector steps left out of its rate (runners in step)


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


@dataclass(eq=False)
class _Lane:
    """One kind of request on one GPU: at most `cap` in its engine, the rest wait in `queue`."""

    gpu: GPUTimeline
    cap: int
    inflight: int = 0
    queue: deque = field(default_factory=deque)  # (runner, (prompt, completion)), first in first


def _at_speed(config: SimulatedEngineConfig) -> SimulatedEngineConfig:
    """The engine's constants times `time_scale`: a `GPUTimeline` in wall-clock seconds."""
    s = config.time_scale
    return config.model_copy(update={
        "wave_overhead_s": s * config.wave_overhead_s,
        "prefill_s_per_token": s * config.prefill_s_per_token,
        "decode_step_s": s * config.decode_step_s,
        "decode_s_per_token": s * config.decode_s_per_token, "time_scale": 1.0})


def replica_cap(config: SimulatedEngineConfig, batch_cap: int | None) -> int:
    """Requests of a kind one replica lets into its engine at once: `batch_cap`, at most the
    engine's `max_num_seqs` (None: that)."""
    return min(batch_cap or config.max_num_seqs, config.max_num_seqs)


def lane_caps(config: SimulatedEngineConfig, *, replicas: int, batch_cap: int | None,
              expert_gpus: int, reviewer_gpus: int, shared: bool = False) -> tuple[int, int]:
    """Requests of a kind one GPU takes at once, (chat, score): `replicas` replicas each let
    `replica_cap` into the role's GPUs, spread evenly."""
    n = config.max_num_seqs
    cap = replica_cap(config, batch_cap)
    gpus = (expert_gpus, expert_gpus if shared else reviewer_gpus)
    return tuple(min(n, math.ceil(replicas * cap / g)) for g in gpus)


def simulate_rollout(config: SimulatedEngineConfig, *, runners: int, envs: int, shapes: Shapes,
                     max_tokens: int, runner_s: float = 0.0, overhead_s: float = 0.0,
                     inflight_caps: tuple[int, int] | None = None,
                     gpus: tuple[int, int] = (1, 1), shared: bool = False,
                     kinds: tuple[str, ...] = (CHAT, SCORE), seed: int = 0) -> float:
    """Env steps/s of `runners` closed loops of `envs` envs on the modelled GPUs (module
    docstring): each sends its requests of each of `kinds` in turn, waits for all, then spends
    `envs * runner_s + overhead_s` off the GPU. `inflight_caps`: requests of a kind (chat,
    score) one GPU takes at once (default `max_num_seqs`); `gpus`: (expert, reviewer) GPUs;
    `shared`: the expert GPUs serve both. Runs max(MIN_STEPS_PER_RUNNER * runners,
    MIN_ENV_STEPS / envs) vector steps; the rate is over those after the first WARMUP."""
    if runners < 1 or envs < 1:
        raise ValueError(f"runners = {runners}, envs = {envs}: expected both >= 1")
    at_speed = _at_speed(config)
    caps = inflight_caps or (config.max_num_seqs, config.max_num_seqs)
    chat_gpus = [GPUTimeline(at_speed) for _ in range(gpus[0])]
    score_gpus = chat_gpus if shared else [GPUTimeline(at_speed) for _ in range(gpus[1])]
    timelines = chat_gpus if shared else chat_gpus + score_gpus
    lanes = {CHAT: [_Lane(g, caps[0]) for g in chat_gpus],
             SCORE: [_Lane(g, caps[1]) for g in score_gpus]}
    inside: dict[GPUTimeline, list] = {g: [] for g in timelines}  # sequences not done yet
    owner: dict = {}  # sequence -> (runner, lane)
    rng = random.Random(seed)
    median = config.median_completion_tokens

    def shape(kind: str) -> tuple[float, int]:
        if kind == SCORE:
            return shapes.score_prompt, 0
        natural = round(median * math.exp(rng.gauss(0.0, LENGTH_SIGMA)))
        return shapes.chat_prompt, min(max_tokens, max(1, natural))  # as the engine draws it

    pending = [0] * runners  # requests of the runner's phase not done yet
    phase = [0] * runners  # index in `kinds` of the runner's phase
    cpu: list[tuple[float, int]] = []  # heap of (end, runner) off the GPU
    touched: dict[_Lane, None] = {}  # lanes to fill, in a fixed order (results are seeded)

    def send(runner: int, kind: str) -> None:
        ours = lanes[kind]
        for j in range(envs):
            lane = ours[(runner * envs + j) % len(ours)]
            lane.queue.append((runner, shape(kind)))
            touched[lane] = None
        pending[runner] = envs

    def fill(now: float) -> None:
        for lane in touched:
            k = min(lane.cap - lane.inflight, len(lane.queue))
            if k > 0:
                taken = [lane.queue.popleft() for _ in range(k)]
                seqs = lane.gpu.add(now, [s for _, s in taken])
                owner.update((s, (r, lane)) for (r, _), s in zip(taken, seqs, strict=True))
                inside[lane.gpu].extend(seqs)
                lane.inflight += k
        touched.clear()

    for r in range(runners):
        send(r, kinds[0])
    fill(0.0)
    target = max(MIN_STEPS_PER_RUNNER * runners, math.ceil(MIN_ENV_STEPS / envs))
    warm, done, start = int(WARMUP * target), 0, 0.0
    while done < target:
        ends = [g.segment.end for g in timelines if g.segment is not None]
        now = min(ends + [cpu[0][0]]) if cpu else min(ends)  # a loop is always somewhere
        released = []
        for g in timelines:
            if g.segment is None or g.segment.end > now:
                continue
            g.advance(now)
            still = []
            for s in inside[g]:
                if s.done_at is None:
                    still.append(s)
                    continue
                r, lane = owner.pop(s)
                lane.inflight -= 1
                touched[lane] = None
                pending[r] -= 1
                if pending[r] == 0:
                    released.append(r)
            inside[g] = still
        while cpu and cpu[0][0] <= now:
            r = heapq.heappop(cpu)[1]
            done += 1
            if done == warm:
                start = now
            phase[r] = 0
            send(r, kinds[0])
        for r in released:
            phase[r] += 1
            if phase[r] < len(kinds):
                send(r, kinds[phase[r]])
            else:
                heapq.heappush(cpu, (now + envs * runner_s + overhead_s, r))
        fill(now)
    return envs * (done - warm) / (now - start) if now > start else math.inf


def full_gpu_rate(config: SimulatedEngineConfig, shapes: Shapes, *, max_tokens: int,
                  inflight_caps: tuple[int, int], kinds: tuple[str, ...] = (CHAT, SCORE)
                  ) -> float:
    """Env steps/s of one GPU kept full: callers of one env each, no CPU, looping one request
    of each of `kinds`, twice as many as its lanes admit (more add nothing)."""
    callers = 2 * sum(inflight_caps[0 if k == CHAT else 1] for k in kinds)
    return simulate_rollout(config, runners=callers, envs=1, shapes=shapes,
                            max_tokens=max_tokens, inflight_caps=inflight_caps, shared=True,
                            kinds=kinds)


def gpu_ceiling(config: SimulatedEngineConfig, shapes: Shapes, *, max_tokens: int,
                   inflight_caps: tuple[int, int], gpus: tuple[int, int] = (1, 1),
                   shared: bool = False) -> float:
    """The most env steps/s the GPUs give: each kept full, times their count; with separate
    roles, the slower of the expert GPUs (rewrites alone) and the reviewer GPUs (verdicts)."""
    kw = dict(max_tokens=max_tokens, inflight_caps=inflight_caps)
    if shared:
        return gpus[0] * full_gpu_rate(config, shapes, **kw)
    return min(gpus[0] * full_gpu_rate(config, shapes, kinds=(CHAT,), **kw),
               gpus[1] * full_gpu_rate(config, shapes, kinds=(SCORE,), **kw))


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
    (one engine per replica, as in the benchmark); `batch_cap`: the most requests of a kind one
    replica lets into its engine at once (`serving.max_batch_size x
    serving.max_concurrent_batches`, at most the engine's `max_num_seqs`; None:
    `max_num_seqs`); `batch_wait_s`: Serve's batch wait, paid per role while a replica's share
    of the requests in flight is below `batch_cap`."""
    c = engine.config
    caps = lane_caps(c, replicas=replicas, batch_cap=batch_cap, expert_gpus=expert_gpus,
                     reviewer_gpus=reviewer_gpus, shared=shared)
    cap = replica_cap(c, batch_cap)
    wait = batch_wait_s if runners * envs / replicas < cap else 0.0
    overhead = REQUESTS_PER_STEP * (costs.proxy_latency_s + wait)  # one call per role, in turn
    where = dict(inflight_caps=caps, gpus=(expert_gpus, reviewer_gpus), shared=shared)
    return Projection({
        "runners": simulate_rollout(c, runners=runners, envs=envs, shapes=shapes,
                                    max_tokens=max_tokens, runner_s=costs.runner_s,
                                    overhead_s=overhead, **where),
        "engine": gpu_ceiling(c, shapes, max_tokens=max_tokens, **where),
        "proxy": replicas * costs.proxy_rps / REQUESTS_PER_STEP,
        "cpu": cores / costs.cpu_s if costs.cpu_s > 0 else math.inf,
    })


def _engine_of(summary: dict, time_scale: float = 1.0, **overrides) -> SimulatedEngine:
    constants = dict(summary["engine"]["constants"]) | {"time_scale": time_scale} | overrides
    return SimulatedEngine("projection", SimulatedEngineConfig(**constants))


def sizing_markdown(results: dict, experiment, seeds: int = PAPER_SEEDS,
                    gpu_splits: tuple[tuple[int, int], ...] = ((1, 1), (2, 1), (4, 2))) -> str:
    """The paper run's sizing table (a PROJECTION) from a `cluster_scaling` results file and
    the experiment config (`ExperimentConfig`): one row per (expert GPUs, reviewer GPUs)."""
    summary = results["summary"]
    costs, shapes = Costs.of(summary), Shapes(**summary["shapes"])
    # Real GPU seconds (time_scale 1) and the modelled A100's slots: the benchmark may run its
    # engine with fewer (`--max-num-seqs`) to stay within what its cores can feed.
    engine = _engine_of(summary, max_num_seqs=SimulatedEngineConfig().max_num_seqs)
    p, s, g = experiment.policy, experiment.serving, experiment.generate
    cap = s.max_batch_size * s.max_concurrent_batches  # per replica and kind, in its engine
    rows = []
    for expert_gpus, reviewer_gpus in gpu_splits:
        where = dict(expert_gpus=expert_gpus, reviewer_gpus=reviewer_gpus,
                     replicas=s.num_replicas, max_tokens=experiment.llm.expert.max_tokens,
                     batch_cap=cap, batch_wait_s=s.batch_wait_timeout_s)
        train = project(costs, shapes, engine, runners=p.num_env_runners,
                        envs=p.num_envs_per_env_runner,
                        cores=p.num_env_runners * max(1.0, p.num_cpus_per_env_runner), **where)
        iteration_s = (p.train_batch_size / train.rate
                       + costs.learner_s_per_step * p.train_batch_size)
        # generation: shards x batch_seeds envs in flight, then an answer per kept row (all
        # steps), a flood of answers that keeps the expert GPUs full
        gen = project(costs, shapes, engine, runners=max(1, g.shards), envs=g.batch_seeds,
                      cores=max(1, g.shards), **where)
        steps = seeds * experiment.env.horizon
        caps = lane_caps(engine.config, replicas=s.num_replicas, batch_cap=cap,
                         expert_gpus=expert_gpus, reviewer_gpus=reviewer_gpus)
        answers = steps / (expert_gpus * full_gpu_rate(
            engine.config, shapes, max_tokens=g.answer_max_tokens, inflight_caps=caps,
            kinds=(CHAT,)))
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
        "one A100 40GB; a 13B reviewer would be slower) at real speed, one GPU per engine, "
        f"continuous batching with at most {replica_cap(engine.config, cap)} requests of "
        "a kind from each replica in the engines at once. "
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
