"""The Serve path's latency per request under two configurations, side by side (issue 17).

    .venv/bin/python benchmarks/proxy_ab.py [--a serving.cache_sync_s=0]
        [--b serving.cache_sync_s=1] [--requests 300] [--rounds 5]
        [--out benchmarks/results/proxy_ab.json]

Two LLM apps on one local Ray (2 CPUs), deployed with the same settings as
`cluster_scaling.py`'s proxy step (SIMULATED engines at time scale 0, no batch wait, one
replica each, each on its own run folder and store) except for the overrides of arm A and arm
B. Requests go one at a time, alternating between the apps (the order flipped every request),
so both arms see the same machine: the run-to-run drift of this 2-core machine (a bare handle
round trip 2.4-5.2 ms across one day) is larger than the differences this compares. Both arms
send the same requests (same texts and seeds, new in every round: every request a cache miss).
Printed per round: each arm's median latency; the figure is the ratio of the arms' medians over
all rounds, and the difference in ms.
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
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def deploy_arm(name: str, extra: list[str]):
    """One app named `name` on its own run folder: the proxy step's settings plus `extra`."""
    from teamsrl.config import load_config
    from teamsrl.llm.config import simulated_overrides
    from teamsrl.serving.deployment import deploy

    config = load_config(None, [
        f"run_dir={tempfile.mkdtemp(prefix=f'proxy-ab-{name}-')}", *simulated_overrides(0.0),
        "llm.expert.max_tokens=512", f"serving.app_name={name}", f"serving.route_prefix=/{name}",
        "serving.num_cpus=0", "serving.max_batch_size=32", "serving.max_concurrent_batches=32",
        "serving.max_ongoing_requests=1056", "serving.batch_wait_timeout_s=0", *extra])
    return deploy(config.llm, config.serving, config.run_dir, stage="proxy")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--a", nargs="*", default=["serving.cache_sync_s=0"],
                        help="overrides of arm A (key=value ...)")
    parser.add_argument("--b", nargs="*", default=["serving.cache_sync_s=1"],
                        help="overrides of arm B (key=value ...)")
    parser.add_argument("--requests", type=int, default=300, help="requests per arm per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds (new requests in each)")
    add_out_argument(parser, "proxy_ab")
    args = parser.parse_args()
    results = ResultsFile(args.out, vars(args))

    import ray
    from ray import serve

    from teamsrl.llm.schema import ChatRequest
    from teamsrl.serving.store import stop_store

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, namespace="teamsrl")
    serve.start(http_options={"host": "127.0.0.1", "port": 0})
    arms = {"A": deploy_arm("proxy-ab-a", args.a), "B": deploy_arm("proxy-ab-b", args.b)}
    text = "Rewrite the following instruction so that it asks for a table of results . " * 20

    def request(i: int) -> ChatRequest:
        return ChatRequest(messages=({"role": "user", "content": f"{i} {text}"},),
                           max_tokens=512, seed=i)

    for handle in arms.values():  # warm-up: replica, store, handle
        for i in range(10):
            handle.chat.remote("expert", request(10**7 + i), "proxy", "").result()
    rounds, latency = [], {arm: [] for arm in arms}
    for r in range(args.rounds):
        got = {arm: [] for arm in arms}
        for i in range(args.requests):
            order = list(arms) if i % 2 else list(reversed(arms))
            for arm in order:
                start = time.perf_counter()
                arms[arm].chat.remote("expert", request(r * 10**5 + i), "proxy", "").result()
                got[arm].append(time.perf_counter() - start)
        medians = {arm: 1e3 * statistics.median(x) for arm, x in got.items()}
        rounds.append({"ms_p50": medians, "loadavg": os.getloadavg()[0]})
        print(f"round {r}: A {medians['A']:.2f} ms, B {medians['B']:.2f} ms p50 "
              f"(load {os.getloadavg()[0]:.2f})", flush=True)
        for arm in arms:
            latency[arm] += got[arm]
    stats = {arm: h.stats.remote().result() for arm, h in arms.items()}
    for name in ("proxy-ab-a", "proxy-ab-b"):
        serve.delete(name)
        stop_store(name)
    p50 = {arm: 1e3 * statistics.median(x) for arm, x in latency.items()}
    p99 = {arm: 1e3 * sorted(x)[int(0.99 * (len(x) - 1))] for arm, x in latency.items()}
    summary = {"a": args.a, "b": args.b, "ms_p50": p50, "ms_p99": p99,
               "b_over_a_p50": p50["B"] / p50["A"], "a_minus_b_ms_p50": p50["A"] - p50["B"],
               "rounds_b_faster": sum(r["ms_p50"]["B"] < r["ms_p50"]["A"] for r in rounds),
               "rounds": rounds,
               "store_lookups": {arm: s.get("store_lookups") for arm, s in stats.items()}}
    print(f"A {' '.join(args.a)}: {p50['A']:.2f} ms p50, {p99['A']:.2f} p99; B "
          f"{' '.join(args.b)}: {p50['B']:.2f} ms p50, {p99['B']:.2f} p99; B/A "
          f"{summary['b_over_a_p50']:.3f} ({summary['a_minus_b_ms_p50']:+.2f} ms), B faster "
          f"in {summary['rounds_b_faster']} of {len(rounds)} rounds; store lookups "
          f"{summary['store_lookups']}")
    results.write(summary=summary, raw={"latency_s": latency})


if __name__ == "__main__":
    main()
