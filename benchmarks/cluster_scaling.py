"""Cluster scaling of the rollout path with SIMULATED GPU engines (issue 17): where it saturates.

    .venv/bin/python benchmarks/cluster_scaling.py [--quick] [--runners 1,2,4,8]
        [--envs-per-runner 1] [--saturation 16x8] [--replicas 1,2,4] [--max-batch 32]
        [--concurrent-batches 32] [--batch-wait 0] [--max-num-seqs 32] [--time-scale 2]
        [--iterations 3] [--saturation-iterations N] [--proxy-requests 300] [--proxy-rounds 5]
        [--proxy-only] [--prefill-s-per-token S] [--no-saturation] [--sampling sync,async]
        [--out benchmarks/results/cluster_scaling.json]

A `ray.cluster_utils.Cluster` of virtual nodes on this machine (a head with the driver, PPO's
learner and the cache-and-ledger store; one `llm_node` per LLMServer replica; `rollout_node`s for
the env runners). Expert and reviewer are `engine: simulated` (one engine per replica = one GPU
serving both roles, continuous batching with `--max-num-seqs` slots; it sleeps the modelled vLLM
latency times `--time-scale`, burning no CPU). Each replica runs up to `--concurrent-batches`
engine calls at once with no batch wait, as in front of a vLLM server, which batches itself.

1. proxy: a second app with time_scale 0 and no batch wait; requests one at a time give the
   latency the Serve deployment adds (request minus the engine's own CPU time, measured alone;
   the median of several rounds' p50 and p99, each round on new requests), a burst of requests
   gives one replica's requests/s ceiling.
2. engine ceiling: the engine alone, kept full: as many caller threads as one replica lets
   into it (`--max-num-seqs`, or `--max-batch` x `--concurrent-batches` if fewer), each looping
   one rewrite then one verdict of the env's measured request shapes: the most env steps/s one
   replica can give.
3. sweep: RLlib PPO (teamsrl's own env creator and PPO config, `teamsrl.policy.train`) with 1, 2,
   4, 8 env runners of `--envs-per-runner` sub-envs on one replica (below the engine's knee),
   then `--saturation` (runners x envs, more requests in flight than the engine has slots) on
   1, 2, 4 replicas; every point once per `--sampling` mode (`policy.sampling`: RLlib's
   synchronous rounds, or teamsrl's AsyncPPO keeping every runner sampling), interleaved.
   Per point:
   env steps/s (the env steps the runners' own records say finished from the end of the first,
   warm-up, iteration to the end of the last, over that time: both modes measured alike, an
   async runner's fragment counted when sampled, not when trained on), PPO iteration time, and per
   env step the LLM wait, MiniLM encoding, the env's own Python, RLlib in the runner (its loop
   time outside env.step) and transfer (driver time not spent in runners or the learner:
   serialisation of episodes, scheduling, weight sync), timed inside the runners.
The per-step CPU costs of the smallest point feed the model in `cluster_sizing.py` (formula
there), printed beside each measured point for this machine's cores and for unlimited cores.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import socket
import statistics
import tempfile
import time

from cluster_report import goals, plot, point_summary, print_table, split_ints, step_split
from cluster_sizing import Costs, Shapes, project, sizing_markdown
from results_file import REPO, ResultsFile, add_out_argument, machine_facts

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SINK = "cluster-scaling-timings"  # the named actor env runners report their step timings to
ENV_ID = "teamsrl/ClusterScalingTimed-v0"
APP, PROXY_APP = "bench-llm", "bench-proxy"
SEED_STRIDE = 100_000  # run seeds of successive points: RLlib seeds runner w with seed + w


class _Clock:
    """Seconds and token counts accumulated by the wrapped calls of one runner process."""

    def __init__(self) -> None:
        self.totals = {"llm_s": 0.0, "encode_s": 0.0, "chat_prompt": 0, "chat_completion": 0,
                       "chats": 0, "score_prompt": 0, "scores": 0}

    def wrap(self, fn, key: str, count=None):
        """`fn` timed into `key`; `count(responses)` adds token counts."""
        def timed(*args, **kwargs):
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            self.totals[key] += time.perf_counter() - start
            if count is not None:
                count(out)
            return out
        return timed


def timed_env(env_config):
    """teamsrl's RLlib env creator, its LLM calls and MiniLM encodings timed; each vector
    step's timings and env steps (sub-envs that stepped, not those resetting: next-step
    autoreset) reach the SINK actor before the step returns (one round trip, ~1 ms)."""
    import numpy as np
    import ray
    from gymnasium.vector import VectorWrapper

    from teamsrl.policy.train import make_env

    venv = make_env(env_config)
    inner, clock = venv.env, _Clock()
    t = clock.totals

    def chats(out):
        t["chat_prompt"] += sum(r.prompt_tokens for r in out if r is not None)
        t["chat_completion"] += sum(r.completion_tokens for r in out if r is not None)
        t["chats"] += sum(r is not None for r in out)

    def scores(out):
        t["score_prompt"] += sum(r.prompt_tokens + sum(r.num_tokens) for r in out if r)
        t["scores"] += sum(r is not None for r in out)

    client, embedder = inner.client, inner.envs[0].embedder
    client.chat = clock.wrap(client.chat, "llm_s", chats)  # the instance every sub-env holds
    client.score = clock.wrap(client.score, "llm_s", scores)
    embedder.encode = clock.wrap(embedder.encode, "encode_s")  # shared by envs and judge
    sink = ray.get_actor(SINK, namespace="teamsrl")
    pid = os.getpid()

    class Timed(VectorWrapper):
        resetting = np.zeros(venv.num_envs, dtype=bool)  # sub-envs this step resets

        def reset(self, **kwargs):
            self.resetting = np.zeros(self.num_envs, dtype=bool)
            return self.env.reset(**kwargs)

        def step(self, actions):
            before, start = dict(t), time.time()
            out = self.env.step(actions)
            end, steps = time.time(), int(self.num_envs - self.resetting.sum())
            self.resetting = np.logical_or(out[2], out[3])
            ray.get(sink.add.remote({"pid": pid, "start": start, "end": end, "steps": steps}
                                    | {k: t[k] - before[k] for k in t}))
            return out

    return Timed(venv)


class Sink:
    """Collects step records from the env runners; `take` empties it."""

    def __init__(self) -> None:
        self.records: list[dict] = []

    def add(self, record: dict) -> None:
        self.records.append(record)

    def take(self) -> list[dict]:
        out, self.records = self.records, []
        return out


def overrides(args, run_dir: str, replicas: int, runners: int, time_scale: float,
              app: str = APP, envs: int | None = None, seed: int = 543,
              sampling: str = "sync") -> list[str]:
    """The experiment: default env and PPO, both roles simulated, the paper's env settings."""
    from teamsrl.llm.config import simulated_overrides

    envs = envs or args.envs_per_runner
    batch = runners * envs * args.horizon
    return [f"run_dir={run_dir}", f"seed={seed}", "env.quality.method=embedding",
            f"env.horizon={args.horizon}",
            *simulated_overrides(time_scale),
            *[f"llm.{r}.simulated.max_num_seqs={args.max_num_seqs}"
              for r in ("expert", "reviewer")],
            *[f"llm.{r}.simulated.prefill_s_per_token={args.prefill_s_per_token}"
              for r in ("expert", "reviewer") if args.prefill_s_per_token is not None],
            "llm.expert.max_tokens=512", f"serving.app_name={app}",
            f"serving.route_prefix=/{app}", f"serving.http_port={args.http_port}",
            f"serving.num_replicas={replicas}",
            "serving.num_cpus=0", "serving.resources={llm_node: 1}",
            f"serving.max_batch_size={args.max_batch}",
            f"serving.max_concurrent_batches={args.concurrent_batches}",
            f"serving.max_ongoing_requests={args.max_batch * (args.concurrent_batches + 1)}",
            f"serving.batch_wait_timeout_s={args.batch_wait}",
            f"policy.num_env_runners={runners}",
            f"policy.num_envs_per_env_runner={envs}", f"policy.sampling={sampling}",
            "policy.custom_resources_per_env_runner={rollout_node: 0.01}",
            f"policy.train_batch_size={batch}", f"policy.minibatch_size={min(batch, 128)}",
            "policy.sample_timeout_s=600"]


def measure_proxy(args, run_dir: str) -> dict:
    """Latency the deployment adds (one request at a time; the median of `--proxy-rounds`
    rounds' p50 and p99) and one replica's requests/s."""
    from ray import serve

    from teamsrl.config import load_config
    from teamsrl.llm.schema import ChatRequest
    from teamsrl.llm.simulated_engine import SimulatedEngine
    from teamsrl.serving.deployment import deploy
    from teamsrl.serving.store import stop_store

    config = load_config(None, overrides(args, os.path.join(run_dir, "proxy"), 1, 1, 0.0,
                                         app=PROXY_APP))
    handle = deploy(config.llm, config.serving, config.run_dir, stage="proxy")
    text = "Rewrite the following instruction so that it asks for a table of results . " * 20

    def request(i: int) -> ChatRequest:
        return ChatRequest(messages=({"role": "user", "content": f"{i} {text}"},),
                           max_tokens=512, seed=i)

    engine = SimulatedEngine("alone", config.llm.expert.simulated)
    alone = []
    for i in range(args.proxy_requests):
        start = time.perf_counter()
        engine.generate([request(-1 - i)])
        alone.append(time.perf_counter() - start)
    for i in range(5):  # warm-up: replica, store, handle
        handle.chat.remote("expert", request(10**6 + i), "proxy", "").result()
    engine_s = statistics.median(alone)
    rounds, latency = [], []
    for r in range(args.proxy_rounds):  # the machine's state drifts: several rounds, new keys
        got = []
        for i in range(args.proxy_requests):
            start = time.perf_counter()
            handle.chat.remote("expert", request(r * 10**5 + i), "proxy", "").result()
            got.append(time.perf_counter() - start)
        bare = []  # a method with no batching and no store: Serve's own routing round trip
        for _ in range(args.proxy_requests):
            start = time.perf_counter()
            handle.roles.remote().result()
            bare.append(time.perf_counter() - start)
        added = sorted(x - engine_s for x in got)
        rounds.append({"added_ms_p50": 1e3 * added[len(added) // 2],
                       "added_ms_p99": 1e3 * added[min(len(added) - 1, int(0.99 * len(added)))],
                       "handle_ms_p50": 1e3 * statistics.median(bare),
                       "loadavg": os.getloadavg()[0]})
        latency += got
    n = 4 * args.proxy_requests
    start = time.perf_counter()
    burst = [handle.chat.remote("expert", request(10**7 + i), "proxy", "") for i in range(n)]
    for r in burst:
        r.result()
    rps = n / (time.perf_counter() - start)
    lookups = handle.stats.remote().result().get("store_lookups")
    serve.delete(PROXY_APP)
    stop_store(PROXY_APP)
    return {k: statistics.median(r[k] for r in rounds)
            for k in ("added_ms_p50", "added_ms_p99", "handle_ms_p50")} | {
            "engine_cpu_ms": 1e3 * engine_s, "rps_ceiling": rps, "burst": n,
            "store_lookups": lookups,
            "rounds": rounds, "latency_s": latency}


def _runners_x_envs(text: str) -> tuple[int, int]:
    """'16x4' -> (16, 4) (argparse type)."""
    try:
        runners, envs = (int(x) for x in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected RUNNERSxENVS, e.g. 16x4") from None
    return runners, envs


def _modes(text: str) -> list[str]:
    """'sync,async' -> ['sync', 'async'] (argparse type)."""
    modes = [m.strip() for m in text.split(",") if m.strip()]
    if not modes or set(modes) - {"sync", "async"}:
        raise argparse.ArgumentTypeError(f"{text!r}: expected sync, async or sync,async")
    return modes


def inflight_cap(args) -> int:
    """Requests one replica lets into its engine at once: its slots, or its concurrent
    batches if they hold fewer."""
    return min(args.max_num_seqs, args.max_batch * args.concurrent_batches)


def engine_ceiling(config, shapes: Shapes, callers: int, seconds: float = 30.0,
                   warmup: float = 5.0) -> float:
    """Env steps/s of one engine alone, kept full (measured): `callers` threads, each looping
    one rewrite then one verdict of the env's request shapes; steps finished in the window
    after `warmup`."""
    import threading

    from teamsrl.llm.schema import ChatRequest, ScoreRequest
    from teamsrl.llm.simulated_engine import SimulatedEngine

    engine = SimulatedEngine("ceiling", config.llm.expert.simulated)
    words = " ".join(["word"] * max(1, round(shapes.chat_prompt) - 6))
    context = " ".join(["word"] * max(1, round(shapes.score_prompt) - 2))
    start = time.monotonic()
    done: list[float] = []

    def caller(k: int) -> None:
        i = 0
        while time.monotonic() - start < seconds:
            engine.generate([ChatRequest(messages=({"role": "user", "content": words},),
                                         max_tokens=512, seed=k * 10**6 + i)])
            engine.score([ScoreRequest(prompt=f"{k} {i} {context}",
                                       candidates=("Equal", "Not Equal"))])
            done.append(time.monotonic() - start)
            i += 1

    threads = [threading.Thread(target=caller, args=(k,), daemon=True) for k in range(callers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(warmup <= t <= seconds for t in done) / (seconds - warmup)


def run_point(args, run_dir: str, runners: int, envs: int, replicas: int, sink, seed: int,
              sampling: str, iterations: int) -> dict:
    """Deploy `replicas`, train PPO with `runners` env runners; per-iteration timings. Every
    (runners, envs, replicas) has its own run seed and every sampling mode its own run folder:
    a cache must not answer a point from an earlier one (`cache_hits` says it did not)."""
    import ray
    from ray.tune.registry import register_env

    from teamsrl.config import load_config
    from teamsrl.policy.train import STAGE, build_ppo
    from teamsrl.serving.deployment import deploy

    config = load_config(None, overrides(args, run_dir, replicas, runners, args.time_scale,
                                         envs=envs, seed=seed, sampling=sampling))
    handle = deploy(config.llm, config.serving, run_dir, stage="bench")
    hits_before = _hits(handle, STAGE)
    register_env(ENV_ID, timed_env)
    ppo = build_ppo(config, 600.0, config.seed).environment(ENV_ID)
    t0 = time.perf_counter()
    algo = ppo.build_algo()
    build_s = time.perf_counter() - t0
    learn: list[float] = []
    update = algo.learner_group.update

    def timed_update(*a, **kw):
        start = time.perf_counter()
        try:
            return update(*a, **kw)
        finally:
            learn.append(time.perf_counter() - start)

    algo.learner_group.update = timed_update
    measured, carry, since = [], [], None
    try:
        for it in range(iterations):
            start = time.perf_counter()
            result = algo.train()
            wall, end = time.perf_counter() - start, time.time()
            # the env steps that ended since the last iteration's end (runners record each
            # before it returns; async runners go on sampling between train() calls)
            records = carry + ray.get(sink.take.remote())
            carry = [r for r in records if r["end"] > end]
            records = [r for r in records if r["end"] <= end]
            window, since = (end - since if since is not None else wall), end
            steps = int(result["env_runners"].get("num_env_steps_sampled", 0))
            measured.append({"warmup": it == 0, "wall_s": wall, "learn_s": learn[-1],
                               "window_s": window, "trained_env_steps": steps,
                               **step_split(records, wall, learn[-1])})
    finally:
        algo.stop()
    return {"runners": runners, "envs": envs, "replicas": replicas, "sampling": sampling,
            "build_s": build_s, "cache_hits": _hits(handle, STAGE) - hits_before,
            "iterations": measured, **point_summary(measured)}


def _hits(handle, stage: str) -> int:
    """Cache hits the ledger holds for `stage` (a measured point must have none)."""
    return sum(t["cache_hits"] for t in handle.ledger_totals.remote(stage).result().values())


def main() -> None:
    """Build the cluster, measure, print the table and goals, write JSON, PNG and Markdown."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 2)[2])
    parser.add_argument("--quick", action="store_true", help="smoke run: runners 1,2, "
                        "saturation 4x4, replicas 1,2, 2 iterations, 40 proxy requests, "
                        "8 engine slots, time scale 0.5")
    parser.add_argument("--runners", type=split_ints, default=[1, 2, 4, 8],
                        help="env runner counts of the sweep below the knee (one replica)")
    parser.add_argument("--envs-per-runner", type=int, default=1,
                        help="sub-envs per env runner in the runner sweep (their requests go "
                        "out together and the vector step waits for all)")
    parser.add_argument("--saturation", type=_runners_x_envs, default=(16, 8),
                        help="RUNNERSxENVS of the saturation points, run on each --replicas "
                        "count (default 16x8: 128 requests in flight, 4x the engine's slots, "
                        "since a vector step waits for its slowest sub-env)")
    parser.add_argument("--replicas", type=split_ints, default=[1, 2, 4],
                        help="LLMServer replica counts at saturation (one llm node each)")
    parser.add_argument("--max-batch", type=int, default=32,
                        help="serving.max_batch_size: requests per engine call")
    parser.add_argument("--concurrent-batches", type=int, default=32,
                        help="serving.max_concurrent_batches: engine calls a replica runs at "
                        "once (the simulated GPU batches them itself, like vLLM)")
    parser.add_argument("--batch-wait", type=float, default=0.0,
                        help="serving.batch_wait_timeout_s (0: a request never waits to be "
                        "grouped; the engine batches)")
    parser.add_argument("--max-num-seqs", type=int, default=32, help="the simulated engine's "
                        "slots (sequences decoding at once); its knee, decode_step_s / "
                        "decode_s_per_token, is ~32 requests at the default constants")
    parser.add_argument("--prefill-s-per-token", type=float, default=None,
                        help="the simulated engine's prefill cost (default: the config's, "
                        "1.3e-4 s, 40%% of the A100's peak). 0 is the model fitted to the "
                        "published vLLM figures alone (75 tok/s alone, 6.6x at concurrency 8 "
                        "with 1024-token prompts need prefill ~0 at these decode constants)")
    parser.add_argument("--sampling", type=_modes, default=["sync", "async"],
                        help="policy.sampling modes, each point run once per mode, interleaved "
                        "(sync: RLlib's PPO rounds, the slowest runner ends each; async: "
                        "teamsrl.policy.async_ppo, every runner kept sampling)")
    parser.add_argument("--no-saturation", action="store_true", help="the runner sweep only: "
                        "no --saturation points (their goal is then not measured)")
    parser.add_argument("--horizon", type=int, default=6, help="env steps per episode; the "
                        "train batch is runners x envs x horizon (one sample round)")
    parser.add_argument("--time-scale", type=float, default=2.0, help="multiplies the "
                        "simulated engine's latency (1 = the modelled A100's real speed; 2 "
                        "keeps the engine's ceiling below what 2 cores can feed)")
    parser.add_argument("--iterations", type=int, default=3,
                        help="PPO iterations per point; the first is a warm-up, not counted")
    parser.add_argument("--saturation-iterations", type=int, default=None,
                        help="PPO iterations per saturation point (default: --iterations; a "
                        "16 x 8 iteration on one replica takes ~2 min here)")
    parser.add_argument("--proxy-requests", type=int, default=300, help="sequential requests "
                        "for the proxy latency (4x that in the requests/s burst)")
    parser.add_argument("--proxy-rounds", type=int, default=5, help="rounds of "
                        "--proxy-requests sequential requests; the proxy figures are the "
                        "medians of the rounds' (each round's own in the results)")
    parser.add_argument("--proxy-only", action="store_true", help="measure the proxy "
                        "(step 1) alone, on the same cluster, and stop: no sweep, no figure")
    parser.add_argument("--rollout-nodes", type=int, default=2, help="virtual nodes for env "
                        "runners (replicas get one llm node each; the head has the driver)")
    add_out_argument(parser, "cluster_scaling")
    parser.add_argument("--png", default=None, help="the figure (default: --out with .png)")
    parser.add_argument("--md", default=None, help="the paper run's sizing table (default: "
                        "--out with .md)")
    args = parser.parse_args()
    if args.quick:
        args.runners, args.replicas, args.iterations = [1, 2], [1, 2], 2
        args.proxy_requests, args.time_scale, args.saturation = 40, 0.5, (4, 4)
        args.proxy_rounds = 2
        args.max_num_seqs = 8
    if min(args.runners + args.replicas + list(args.saturation)) < 1 or args.iterations < 2 \
            or (args.saturation_iterations or 2) < 2 or args.time_scale <= 0:
        parser.error(f"--runners {args.runners}, --replicas {args.replicas}, --iterations "
                     f"{args.iterations}, --saturation-iterations {args.saturation_iterations}, "
                     f"--time-scale {args.time_scale}: expected counts >= 1, iterations >= 2 "
                     "(one warm-up), time scale > 0")
    results = ResultsFile(args.out, vars(args))
    with socket.socket() as s:  # Serve's HTTP proxy: a free port, not a shared 8000
        s.bind(("127.0.0.1", 0))
        args.http_port = s.getsockname()[1]

    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    from teamsrl.config import load_config
    from teamsrl.raycluster import PROPAGATED

    run_dir = tempfile.mkdtemp(prefix="cluster-scaling-")
    head = {"num_cpus": 2, "include_dashboard": False, "object_store_memory": 200 * 2**20}
    cluster = Cluster(initialize_head=True, head_node_args=head)
    for _ in range(max(args.replicas)):
        cluster.add_node(num_cpus=1, resources={"llm_node": 1}, object_store_memory=80 * 2**20)
    for _ in range(args.rollout_nodes):
        cluster.add_node(num_cpus=1, resources={"rollout_node": 100},
                         object_store_memory=150 * 2**20)
    env = {k: os.environ[k] for k in PROPAGATED if k in os.environ}
    ray.init(address=cluster.address, log_to_driver=False, namespace="teamsrl",
             runtime_env={"env_vars": env})
    points = []
    try:
        sink = ray.remote(Sink).options(name=SINK, namespace="teamsrl", num_cpus=0).remote()
        proxy = measure_proxy(args, run_dir)
        print(f"proxy: +{proxy['added_ms_p50']:.1f} ms p50, +{proxy['added_ms_p99']:.1f} ms "
              f"p99 per request (a bare handle round trip {proxy['handle_ms_p50']:.1f} ms), "
              f"ceiling {proxy['rps_ceiling']:.0f} requests/s; rounds' p50 "
              + ", ".join(f"{r['added_ms_p50']:.1f}" for r in proxy["rounds"]) + " ms",
              flush=True)
        if args.proxy_only:
            p50 = proxy["added_ms_p50"]
            print(f"goal: the proxy adds <= 5 ms p50 per request: {p50:.2f} ms, "
                  f"{'met' if p50 <= 5.0 else 'not met'}")
            results.write(summary={"proxy": {k: v for k, v in proxy.items()
                                             if k != "latency_s"}},
                          raw={"proxy_latency_s": proxy["latency_s"]})
            return
        # The modes interleaved point by point (the machine's drift falls on both alike), with
        # the same run seed (the same first episodes) and each its own cache (run folder).
        sweep = [(w, args.envs_per_runner, 1, args.iterations) for w in args.runners]
        sweep += [(*args.saturation, r, args.saturation_iterations or args.iterations)
                  for r in ([] if args.no_saturation else args.replicas)]
        for (i, (runners, envs, replicas, its)), mode in itertools.product(enumerate(sweep),
                                                                           args.sampling):
            p = run_point(args, os.path.join(run_dir, mode), runners, envs, replicas, sink,
                          seed=SEED_STRIDE * (1 + i), sampling=mode, iterations=its)
            points.append(p)
            print(f"{mode:>5} sampling, {runners:>3} runners x {envs} envs, {replicas} replica(s): "
                  f"{p['env_steps_per_s']:.1f} env "
                  f"steps/s, iteration {p['iteration_s']:.1f} s (build {p['build_s']:.0f} s), "
                  f"{p['cache_hits']} cache hits", flush=True)
    finally:
        serve.shutdown()
        ray.shutdown()
        cluster.shutdown()

    from teamsrl.llm.simulated_engine import SimulatedEngine

    config = load_config(None, overrides(args, run_dir, 1, 1, args.time_scale))
    machine = machine_facts()
    base = points[0]
    shapes = Shapes(**base["shapes"])
    ceiling = engine_ceiling(config, shapes, inflight_cap(args))
    summary = {"time_scale": args.time_scale, "shapes": base["shapes"],
               "sweep": {"envs_per_runner": args.envs_per_runner,
                         "saturation": list(args.saturation), "sampling": args.sampling},
               "proxy": {k: v for k, v in proxy.items() if k != "latency_s"},
               "engine": {"constants": config.llm.expert.simulated.model_dump(
                              exclude={"time_scale"}),
                          "ceiling_env_steps_per_s": ceiling, "batch": args.max_batch,
                          "inflight_cap": inflight_cap(args)},
               "costs_per_env_step": base["per_env_step"],
               "points": [{k: v for k, v in p.items() if k != "iterations"} for p in points]}
    costs = Costs.of(summary)
    free = Costs(0.0, 0.0, 0.0, 0.0, 0.0, math.inf, 0.0, 0.0)  # the engine alone: no overheads
    engine = SimulatedEngine("model", config.llm.expert.simulated)
    cores = machine["nproc"]
    for p in summary["points"]:
        kw = dict(runners=p["runners"], envs=p["envs"], expert_gpus=p["replicas"],
                  reviewer_gpus=p["replicas"], replicas=p["replicas"], max_tokens=512,
                  shared=True, batch_cap=inflight_cap(args),
                  batch_wait_s=config.serving.batch_wait_timeout_s)
        here = project(costs, shapes, engine, cores=cores, **kw)
        p["model_here"], p["model_bound_here"] = here.rate, here.bound
        p["model_unlimited_cores"] = project(costs, shapes, engine, cores=1e9, **kw).rate
        p["model_engine_only"] = project(free, shapes, engine, cores=1e9,
                                         **(kw | {"batch_wait_s": 0.0})).rate
    summary["goals"] = goals(summary, args, cores)
    print_table(summary, args, cores)
    results.write(summary=summary, raw={"points": points, "proxy_latency_s": proxy["latency_s"]})
    if args.out:
        stem = os.path.splitext(args.out)[0]
        plot(summary, args.png or stem + ".png")
        md = sizing_markdown({"summary": summary, "command": results.command,
                              "machine": machine},
                             load_config(REPO / "experiments" / "paper-llama7b.yaml"))
        with open(args.md or stem + ".md", "w", encoding="utf-8") as f:
            f.write(md)
        print(md)


if __name__ == "__main__":
    main()
