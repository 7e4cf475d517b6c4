"""How many engine batches a second the run's cache-and-ledger store takes (issue 17).

    .venv/bin/python benchmarks/store_throughput.py [--callers 1,3,6] [--seconds 20]
        [--batch 8] [--sync 1,0] [--out benchmarks/results/store_throughput.json]

One store actor (`teamsrl.serving.store.start_store`, as `deploy` starts it) on a local Ray
(2 CPUs); N caller actors, each a replica's `StoreClient`, loop engine batches of `--batch` new
requests as a replica does for a rollout: `get_many` of the batch's keys (which the client
skips when no key is known to be cached, unless `cache_sync_s` is 0) and `commit` of the ledger
row and the responses (64-token answers: ~270-character texts). Each caller counts its own
batches between a shared start and end time. Printed per N: batches/s and requests/s the store
took in all, and one batch's latency p50 (lookup and commit; the callers compete with the store
for the 2 cores, so it grows with N: the ceiling is the figure). Each N is measured with every
`--sync` value (`serving.cache_sync_s`), one after the other.
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

ANSWER = "word " * 54  # ~64 tokens


class Caller:
    """One replica's `StoreClient` in a loop of engine batches."""

    def __init__(self, store_name: str, batch: int, seed: int, sync_s: float) -> None:
        import ray

        from teamsrl.serving.store import NAMESPACE, StoreClient

        self.client = StoreClient(ray.get_actor(store_name, namespace=NAMESPACE), "bench",
                                  sync_s=sync_s)
        self.batch, self.seed, self.done = batch, seed, 0  # done: batches so far (new keys)

    def run(self, start: float, end: float) -> dict:
        """Batches until `end` (wall clock, shared with the other callers); those that began
        at or after `start` are counted, with their latency."""
        import hashlib

        latency, n = [], 0
        while time.time() < start:
            time.sleep(0.001)
        while time.time() < end:
            keys = [hashlib.sha256(f"{self.seed}-{self.done}-{i}".encode()).hexdigest()
                    for i in range(self.batch)]
            self.done += 1
            t0 = time.perf_counter()
            self.client.get_many(keys)
            self.client.commit({k: {"text": ANSWER, "prompt_tokens": 300,
                                    "completion_tokens": 64, "finish_reason": "stop"}
                                for k in keys}, "expert", "chat", queries=len(keys),
                               prompt_tokens=300 * len(keys), completion_tokens=64 * len(keys))
            latency.append(time.perf_counter() - t0)
            n += 1
        return {"batches": n, "latency_s": latency,
                "lookups": dict(self.client.lookups)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--callers", default="1,3,6",
                        help="comma-separated numbers of concurrent callers (replicas)")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per N")
    parser.add_argument("--batch", type=int, default=8, help="requests per engine batch")
    parser.add_argument("--sync", default="1,0", help="comma-separated serving.cache_sync_s "
                        "values, each measured at every N (1: the lookup skipped for keys not "
                        "known to be cached; 0: a lookup for every batch)")
    add_out_argument(parser, "store_throughput")
    args = parser.parse_args()
    callers = [int(x) for x in args.callers.split(",")]
    syncs = [float(x) for x in args.sync.split(",")]
    results = ResultsFile(args.out, vars(args))

    import ray

    from teamsrl.llm.config import LLMConfig
    from teamsrl.serving.store import StorePaths, start_store, stop_store, store_name

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, namespace="teamsrl")
    app = "store-bench"
    start_store(app, StorePaths.of(LLMConfig(), tempfile.mkdtemp(prefix="store-bench-")))
    remote = ray.remote(Caller).options(num_cpus=0)
    points = []
    for n, sync_s in ((n, s) for n in callers for s in syncs):
        actors = [remote.remote(store_name(app), args.batch, 1000 * n + i + int(1e6 * sync_s),
                                sync_s) for i in range(n)]
        ray.get([a.run.remote(0, time.time() + 1) for a in actors])  # warm-up: 1 s each
        start = time.time() + 1
        got = ray.get([a.run.remote(start, start + args.seconds) for a in actors])
        batches = sum(g["batches"] for g in got)
        latency = [x for g in got for x in g["latency_s"]]
        point = {"callers": n, "cache_sync_s": sync_s, "batches_per_s": batches / args.seconds,
                 "requests_per_s": batches * args.batch / args.seconds,
                 "batch_ms_p50": 1e3 * statistics.median(latency),
                 "lookups": [g["lookups"] for g in got], "loadavg": os.getloadavg()[0]}
        points.append(point)
        print(f"{n} caller(s), cache_sync_s {sync_s:g}: {point['batches_per_s']:.0f} batches/s, "
              f"{point['requests_per_s']:.0f} requests/s, a batch {point['batch_ms_p50']:.2f} ms "
              f"p50 (load {point['loadavg']:.2f})", flush=True)
        for a in actors:
            ray.kill(a)
    stop_store(app)
    ray.shutdown()
    results.write(summary={"points": points}, raw=None)


if __name__ == "__main__":
    main()
