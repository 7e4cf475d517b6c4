"""Policy training across two Ray nodes (one machine): the ledger counts both nodes' queries."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_env_runners_on_the_second_node_share_the_head_nodes_ledger(tmp_path):
    script = Path(__file__).with_name("multinode_scenario.py")
    done = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True,
                          text=True, timeout=900, cwd=Path(__file__).parents[2])
    assert done.returncode == 0, done.stderr[-4000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["iterations"] == 1 and report["env_steps"] >= 8
    # the env runners' requests came from the worker node, the warm-up from the driver (head)
    assert set(report["train_by_node"]) == {report["worker_node"]}
    assert report["train_by_node"][report["worker_node"]] > 0
    assert set(report["warmup_by_node"]) == {report["head_node"]}
