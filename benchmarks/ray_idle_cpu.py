"""CPU a local Ray with the LLM app deployed burns while idle: Ray's defaults vs the test suite's.

The test suite starts its Ray clusters with `tests/ray_test_env.RAY_IDLE_SETTINGS` (Serve's
controller polling every 0.5 s instead of 0.1, the node agent's dashboard stats every 60 s
instead of 5, Serve's metrics every 5 s instead of 0.1); on 2 cores shared by two test
workers, what an idle cluster burns is taken from the other worker. Each arm, in a fresh
process: `ray.init` (2 CPUs, no dashboard), deploy the LLM app (`engine: simulated`, no sleep),
then sit idle for `--idle` seconds and count the CPU time of the driver and every process under
it (raylet, GCS, agents, actors); the arms alternate over `--repeats`.

    .venv/bin/python benchmarks/ray_idle_cpu.py [--idle 60] [--repeats 2] \\
        [--out benchmarks/results/ray_idle_cpu.json]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results_file import ResultsFile, add_out_argument

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from ray_test_env import RAY_IDLE_SETTINGS as TEST_KNOBS  # noqa: E402


def _tree_cpu() -> dict[int, float]:
    import psutil

    out = {}
    for p in psutil.Process().children(recursive=True):
        try:
            t = p.cpu_times()
            out[p.pid] = t.user + t.system
        except psutil.Error:
            pass
    return out


def probe(idle_s: float, run_dir: str) -> dict:
    """One arm in this process: start, deploy, idle; CPU seconds of the startup and the idle."""
    import ray
    from ray import serve

    from teamsrl.config import load_config
    from teamsrl.llm.config import simulated_overrides
    from teamsrl.serving.config import ServeConfig
    from teamsrl.serving.deployment import deploy

    start, own0 = time.monotonic(), os.times()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = load_config(None, [f"run_dir={run_dir}", *simulated_overrides(0)])
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        deploy(config.llm, ServeConfig(http_port=port, max_batch_size=8), run_dir, stage="bench")
        before, own1 = _tree_cpu(), os.times()
        started_s = time.monotonic() - start
        time.sleep(idle_s)
        after, own2 = _tree_cpu(), os.times()
    finally:
        serve.shutdown()
        ray.shutdown()
    idle = sum(after[p] - before[p] for p in after if p in before)
    idle += own2.user + own2.system - own1.user - own1.system
    startup = sum(before.values()) + own1.user + own1.system - own0.user - own0.system
    return {"startup_wall_s": round(started_s, 2), "startup_cpu_s": round(startup, 2),
            "idle_cpu_s": round(idle, 2), "idle_s": idle_s,
            "idle_cores": round(idle / idle_s, 4)}


def main() -> None:
    """Alternate the arms, print the table, write the results file."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--idle", type=float, default=60.0, help="idle seconds measured per run")
    parser.add_argument("--repeats", type=int, default=2, help="runs of each arm, alternating")
    parser.add_argument("--probe", default=None, help=argparse.SUPPRESS)  # internal: run dir
    add_out_argument(parser, "ray_idle_cpu")
    args = parser.parse_args()
    if args.probe:
        print("PROBE " + json.dumps(probe(args.idle, args.probe)))
        return
    results = ResultsFile(args.out, vars(args))
    arms = {"ray_defaults": {}, "test_suite_knobs": TEST_KNOBS}
    raw: dict[str, list[dict]] = {name: [] for name in arms}
    for rep in range(args.repeats):
        order = list(arms) if rep % 2 == 0 else list(reversed(arms))
        for name in order:
            env = {k: v for k, v in os.environ.items() if k not in TEST_KNOBS} | arms[name]
            with tempfile.TemporaryDirectory() as run_dir:
                done = subprocess.run([sys.executable, __file__, "--probe", run_dir,
                                       "--idle", str(args.idle)], env=env, capture_output=True,
                                      text=True, timeout=600)
            line = [x for x in done.stdout.splitlines() if x.startswith("PROBE ")]
            if done.returncode or not line:
                raise SystemExit(f"{name}: probe failed\n{done.stderr[-3000:]}")
            raw[name].append(json.loads(line[0][6:]))
            print(name, raw[name][-1], flush=True)
    summary = {name: {"idle_cores_median": statistics.median(r["idle_cores"] for r in runs),
                      "startup_cpu_s_median": statistics.median(r["startup_cpu_s"] for r in runs)}
               for name, runs in raw.items()}
    base = summary["ray_defaults"]["idle_cores_median"]
    summary["idle_ratio_knobs_over_defaults"] = round(
        summary["test_suite_knobs"]["idle_cores_median"] / base, 3)
    print(json.dumps(summary, indent=1))
    results.write(summary=summary, raw={"runs": raw, "knobs": TEST_KNOBS})


if __name__ == "__main__":
    main()
