"""A 2-node Ray cluster on one machine (ray.cluster_utils.Cluster): the LLM deployment on the
head node, the PPO env runners on the second node. Run as a script (it owns its own Ray cluster);
prints one JSON line with what the test checks. The engines are `engine: simulated` (no sleep):
which node a request came from does not depend on its text.

    python tests/integration/multinode_scenario.py RUN_DIR
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")


def main(run_dir: str) -> None:
    """Start the cluster, train one iteration, report the per-node ledger."""
    import ray
    from ray.cluster_utils import Cluster

    from teamsrl.config import load_config
    from teamsrl.llm.config import simulated_overrides
    from teamsrl.llm.ledger import QueryLedger
    from teamsrl.policy.train import train_policy

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "resources": {"llm_node": 1}, "include_dashboard": False})
    worker = cluster.add_node(num_cpus=1, resources={"rollout_node": 1})
    ray.init(address=cluster.address, log_to_driver=False,
             runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}})
    try:
        config = load_config(None, [
            f"run_dir={run_dir}", "serving.resources={llm_node: 0.01}",
            "policy.custom_resources_per_env_runner={rollout_node: 0.01}",
            "policy.num_env_runners=1", "policy.num_envs_per_env_runner=2", "env.horizon=2",
            "policy.train_batch_size=8", "policy.minibatch_size=4", "policy.num_epochs=1",
            "policy.iterations=1", "llm.expert.max_tokens=8", "tracking.mode=disabled",
            "env.reward.cut_rewrite_fails=false", "env.reward.invalid_fails=false",
            "env.reward.validity_weight=0",
            *simulated_overrides(time_scale=0),
        ])
        result = train_policy(config, address=cluster.address, progress=False)
        ledger = QueryLedger(f"{run_dir}/ledger.sqlite")
        print(json.dumps({
            "iterations": result.iterations,
            "env_steps": result.metrics["rollout/env_steps"],
            "head_node": cluster.head_node.node_id, "worker_node": worker.node_id,
            "train_by_node": ledger.queries_by_node(stage="train-policy"),
            "warmup_by_node": ledger.queries_by_node(stage="warmup"),
        }))
    finally:
        ray.shutdown()
        cluster.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
