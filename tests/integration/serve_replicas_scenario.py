"""3 `LLMServer` replicas on a 3-node Ray cluster (ray.cluster_utils, one machine), one per node:
a sharded generation run (2 shard actors), the same run again (from the driver), then a third
sharded run (another run seed, so new requests) during which a replica is SIGKILLed while its
engine is running. Run as a script (it
owns its Ray cluster); writes RUN_DIR/report.json, the counts test_serve_replicas_exact.py
checks.

    python tests/integration/serve_replicas_scenario.py RUN_DIR

The engines are `engine: simulated` (deterministic texts, sleeps scaled by TIME_SCALE): what is
checked is bookkeeping, which does not depend on the texts.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPLICAS = 3
SEEDS = 8
TIME_SCALE = 0.2  # a 2-request engine wave sleeps ~0.25 s: long enough to kill a replica in it
MAX_BATCH = 8


def _overrides(run_dir: Path, port: int, seed: int, shards: int) -> list[str]:
    from teamsrl.llm.config import simulated_overrides

    return [f"run_dir={run_dir}", f"seed={seed}", f"generate.shards={shards}",
            f"generate.max_seeds={SEEDS}", "generate.batch_seeds=2", "env.horizon=2",
            "env.reward.cut_rewrite_fails=false", "env.reward.invalid_fails=false",
            "env.reward.validity_weight=0", "generate.answer_max_tokens=32",
            "generate.drop_cut_answers=false",
            *simulated_overrides(TIME_SCALE),
            "llm.expert.max_tokens=48", f"serving.num_replicas={REPLICAS}",
            "serving.num_cpus=0.1", "serving.resources={llm_node: 1}",  # one replica per node
            f"serving.max_batch_size={MAX_BATCH}", f"serving.http_port={port}",
            "serving.request_timeout_s=60", "tracking.mode=disabled"]


def _replica_stats(handle, n: int = REPLICAS, timeout_s: float = 120) -> dict[int, dict]:
    """`stats` of each of the app's n live replicas, by pid (calls are routed at random: ask
    until every replica has answered)."""
    seen: dict[int, dict] = {}
    deadline = time.monotonic() + timeout_s
    while len(seen) < n:
        if time.monotonic() > deadline:
            raise TimeoutError(f"only {len(seen)} of {n} replicas answered stats")
        s = handle.stats.remote().result(timeout_s=30)
        seen[s["pid"]] = s
    return seen


def _engine_counts(stats: dict[int, dict]) -> dict[str, int]:
    """Requests the replicas' engines ran, per role (chat + score), summed over replicas."""
    out: dict[str, int] = {}
    for s in stats.values():
        for role, kinds in s["engine_requests"].items():
            out[role] = out.get(role, 0) + sum(kinds.values())
    return out


def _ledger(client, stage: str) -> dict[str, dict]:
    return {r: {"queries": t.queries, "cache_hits": t.cache_hits, "failures": t.failures}
            for r, t in client.ledger.totals(stage=stage).items()}


def _minus(after: dict[str, dict], before: dict[str, dict]) -> dict[str, dict]:
    return {r: {k: v - before.get(r, {}).get(k, 0) for k, v in t.items()}
            for r, t in after.items()}


def _row_ids(ledger_file: str) -> list[int]:
    """The ledger file's row ids, read from the file itself (not through the store)."""
    with sqlite3.connect(f"file:{ledger_file}?mode=ro", uri=True) as conn:
        return [r[0] for r in conn.execute("SELECT id FROM calls ORDER BY id")]


def _rows(out: Path) -> tuple[dict[str, int], int, int]:
    """Requests per role the generator made (from rows.jsonl), timed-out rows, seeds done."""
    records = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()
               if line.strip()]
    rows = [r for r in records if r["kind"] == "row"]
    requests = {role: sum(r["queries"][role] for r in rows) for role in ("expert", "reviewer")}
    timeouts = sum(1 for r in rows if (r["failure"] or {}).get("kind") == "timeout")
    return requests, timeouts, sum(1 for r in records if r["kind"] == "seed_done")


def _generation(config, handle, client, out: Path, stage: str, during=None) -> dict:
    """One generation run and the counts around it (`during`: a thread to run alongside)."""
    from teamsrl.generation.compare import run_stats
    from teamsrl.generation.run import run_generation
    from teamsrl.llm.ledger import QueryLedger

    engine_before = _engine_counts(_replica_stats(handle))
    ledger_before = _ledger(client, stage)
    start = time.monotonic()
    if during is not None:
        during.start()
    summary = run_generation(config, "random", out_dir=out, progress=False)
    ended = time.monotonic()
    if during is not None:
        during.join(30)
    stats = _replica_stats(handle)
    requests, timeouts, seeds_done = _rows(out)
    file_ledger = QueryLedger(Path(config.run_dir) / "ledger.sqlite")
    try:
        from_file = {r: {"queries": t.queries, "cache_hits": t.cache_hits}
                     for r, t in file_ledger.totals(stage=stage).items()}
    finally:
        file_ledger.close()
    compared = run_stats(out, encode=lambda texts: [[float(len(t)), 1.0] for t in texts])
    totals = client.ledger.totals(stage=stage)
    return {
        "seconds": round(ended - start, 1), "ended": ended,
        "engine": _minus({r: {"n": n} for r, n in _engine_counts(stats).items()},
                         {r: {"n": n} for r, n in engine_before.items()}),
        "engine_by_replica": {pid: s["engine_requests"] for pid, s in stats.items()},
        "ledger": _minus(_ledger(client, stage), ledger_before),
        "ledger_total": {r: {"queries": t.queries, "cache_hits": t.cache_hits,
                             "hit_rate": t.hit_rate} for r, t in totals.items()},
        "summary_ledger": {r: {k: t[k] for k in ("queries", "cache_hits", "hit_rate")}
                           for r, t in summary["ledger"].items()},
        "file_ledger": from_file,
        "compare": {"engine_queries_expert": compared["engine_queries_expert"],
                    "cache_hits_expert": compared["cache_hits_expert"]},
        "rows_requests": requests, "timeouts": timeouts, "seeds_done": seeds_done,
        "replica_pids": sorted(stats), "replica_nodes": sorted({s["node"] for s in stats.values()}),
    }


class _Killer(threading.Thread):
    """SIGKILLs a replica once this run has committed ledger rows and an engine call of it is
    running on that replica (polled, with a deadline; no fixed sleep)."""

    def __init__(self, handle, client, stage: str, ledger_file: str):
        super().__init__(daemon=True)
        self.handle, self.client, self.stage, self.ledger_file = handle, client, stage, ledger_file
        self.baseline = _ledger(client, stage)
        self.report: dict = {}

    def run(self) -> None:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            committed = _minus(_ledger(self.client, self.stage), self.baseline)
            if sum(t["queries"] for t in committed.values()) > 0:
                s = self.handle.stats.remote().result(timeout_s=30)
                if s["engine_running"] > 0:
                    ids = _row_ids(self.ledger_file)
                    os.kill(s["pid"], signal.SIGKILL)
                    self.report = {"pid": s["pid"], "at": time.monotonic(),
                                   "ids_before": ids, "committed_before": committed}
                    return
            time.sleep(0.02)  # polling interval, not synchronisation


def main(run_dir: str) -> None:
    """Start the cluster, run the scenario, write the report."""
    import ray
    from ray import serve
    from ray.cluster_utils import Cluster

    from teamsrl.config import load_config
    from teamsrl.generation.run import stage_of
    from teamsrl.serving.client import ServeLLMClient
    from teamsrl.serving.deployment import deploy

    run = Path(run_dir)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    node = {"num_cpus": 1, "resources": {"llm_node": 1}, "object_store_memory": 150 * 2**20}
    cluster = Cluster(initialize_head=True, head_node_args=node | {"include_dashboard": False})
    for _ in range(REPLICAS - 1):
        cluster.add_node(**node)
    env = {k: os.environ[k] for k in ("HF_HUB_OFFLINE", "WANDB_MODE", "TOKENIZERS_PARALLELISM")}
    ray.init(address=cluster.address, log_to_driver=False, runtime_env={"env_vars": env})
    try:
        # the first and the killed run through 2 shard actors (callers in other processes), the
        # rerun from this process (shards=0: the same requests; a shard actor costs a process
        # that loads torch and MiniLM, ~9 s of CPU, and a rerun's property is the cache's)
        config = load_config(None, _overrides(run, port, seed=543, shards=2))
        local = load_config(None, _overrides(run, port, seed=543, shards=0))
        stage = stage_of("random")
        started = time.monotonic()
        handle = deploy(config.llm, config.serving, run, stage="scenario")
        client = ServeLLMClient(handle, config.llm)
        report = {"deploy_s": round(time.monotonic() - started, 1),
                  "cluster_nodes": sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])}
        report["first"] = _generation(config, handle, client, run / "first", stage)
        report["again"] = _generation(local, handle, client, run / "again", stage)
        killer = _Killer(handle, client, stage, str(run / "ledger.sqlite"))
        kill_config = load_config(None, _overrides(run, port, seed=544, shards=2))  # new requests
        report["killed"] = _generation(kill_config, handle, client, run / "killed", stage,
                                       during=killer)
        report["kill"] = {"pid": killer.report.get("pid"),
                          "during_run": bool(killer.report)
                          and killer.report["at"] < report["killed"]["ended"],
                          "committed_before": killer.report.get("committed_before"),
                          "ids_before": killer.report.get("ids_before", []),
                          "ids_after": _row_ids(str(run / "ledger.sqlite"))}
        report["max_batch_size"] = MAX_BATCH
        report["seeds"] = SEEDS
        (run / "report.json").write_text(json.dumps(report, indent=1))
    finally:
        serve.shutdown()
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
