"""An env runner killed mid-training: RLlib restarts it, the run finishes, the ledger is whole.

The engines are `engine: simulated` at its default latency (a few seconds an iteration, so the kill
lands mid-run): restarts and counts do not depend on what the texts say."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import psutil

from teamsrl.config import load_config
from teamsrl.llm.config import simulated_overrides
from teamsrl.llm.ledger import QueryLedger


def _env_runner_pids() -> list[int]:
    """Env runners of THIS test session's Ray only (the processes it started): other Ray
    sessions on a shared machine run env runners too, and they are not ours to kill."""
    pids = []
    for proc in psutil.Process().children(recursive=True):
        try:
            cmd = proc.name() + " " + " ".join(proc.cmdline())
        except psutil.Error:
            continue
        if "SingleAgentEnvRunner" in cmd:
            pids.append(proc.pid)
    return pids


def test_killed_env_runner_is_restarted_and_no_count_is_lost(ray_serve, tmp_path):
    from teamsrl.policy.train import train_policy

    config = load_config(None, [
        f"run_dir={tmp_path}", "serving.app_name=teamsrl-llm-fault",
        "serving.route_prefix=/fault", "serving.num_cpus=0.5", "env.horizon=2",
        "policy.num_envs_per_env_runner=2", "policy.train_batch_size=8",
        "policy.minibatch_size=4", "policy.num_epochs=1", "policy.iterations=4",
        "llm.expert.max_tokens=8", "env.reward.cut_rewrite_fails=false",
        "env.reward.invalid_fails=false", "env.reward.validity_weight=0", "tracking.mode=disabled",
        *simulated_overrides(time_scale=1.0),  # the default latency
    ])
    killed: list[int] = []
    metrics_file = Path(tmp_path) / "train-policy-metrics.jsonl"

    def killer() -> None:
        deadline = time.time() + 600
        while time.time() < deadline and not killed:
            if metrics_file.is_file() and metrics_file.read_text().strip():
                for pid in _env_runner_pids():  # during iteration 2
                    os.kill(pid, signal.SIGKILL)
                    killed.append(pid)
                    break
            time.sleep(0.5)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    result = train_policy(config, progress=False)
    thread.join(timeout=5)
    assert killed, "no env runner process was found to kill"
    assert result.iterations == 4
    rows = [json.loads(line) for line in metrics_file.read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert max(r["health/env_runner_restarts"] for r in rows) >= 1, json.dumps([
        {k[:12]: v for k, v in r.items() if k.startswith(("health", "rollout/env"))}
        for r in rows])
    assert rows[-1]["rollout/env_steps"] >= 8  # sampling works again after the restart
    # every request the replica served is in the ledger: nothing lost with the dead caller
    stats = json.loads((Path(tmp_path) / "policy" / "serve-stats.json").read_text())
    served = sum(int(size) * n for size, n in stats["batch_sizes"].items())
    totals = QueryLedger(Path(tmp_path) / "ledger.sqlite").totals()
    assert served == sum(t.queries + t.cache_hits for t in totals.values())
