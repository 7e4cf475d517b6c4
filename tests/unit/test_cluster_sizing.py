"""The throughput model of benchmarks/cluster_sizing.py: the binding term, its arithmetic, and
the paper run's sizing table built from a results summary (no Ray)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))

from cluster_sizing import (  # noqa: E402
    Costs,
    Shapes,
    project,
    sizing_markdown,
    wave_s,
)

from teamsrl.config import load_config  # noqa: E402
from teamsrl.llm.config import SimulatedEngineConfig  # noqa: E402
from teamsrl.llm.simulated_engine import SimulatedEngine  # noqa: E402

REPO = Path(__file__).parents[2]
SHAPES = Shapes(chat_prompt=300.0, score_prompt=400.0)


def _costs(cpu_ms: float = 10.0, proxy_rps: float = 1000.0) -> Costs:
    return Costs(encode_s=cpu_ms / 2e3, env_s=cpu_ms / 4e3, rllib_s=cpu_ms / 4e3,
                 transfer_s=0.0, proxy_s_per_request=1 / proxy_rps, proxy_rps=proxy_rps,
                 proxy_latency_s=0.002, learner_s_per_step=1e-4)


def _engine() -> SimulatedEngine:
    return SimulatedEngine("test", SimulatedEngineConfig())


def test_score_wave_is_the_engines_own_latency_and_chat_waves_grow_with_the_batch():
    engine = _engine()
    assert wave_s(engine, 8, 400, None) == pytest.approx(engine.wave_seconds([400] * 8, [0] * 8))
    assert wave_s(engine, 1, 300, 1) == pytest.approx(engine.wave_seconds([300], [1]))
    assert wave_s(engine, 32, 300, 512) > wave_s(engine, 4, 300, 512) > 0


def test_the_smallest_term_binds_and_each_term_follows_its_formula():
    engine, costs = _engine(), _costs(cpu_ms=50.0)
    kw = dict(runners=8, envs=16, expert_gpus=2, reviewer_gpus=1, replicas=2, max_tokens=512)
    p = project(costs, SHAPES, engine, cores=0.1, **kw)
    assert p.terms["cpu"] == pytest.approx(0.1 / (costs.runner_s + 2 / 1000.0))
    assert p.terms["proxy"] == pytest.approx(2 * 1000.0 / 2)
    assert p.bound == "cpu" and p.rate == pytest.approx(p.terms["cpu"])
    # with cores to spare something else binds, and the rate is that term
    free = project(costs, SHAPES, engine, cores=1e9, **kw)
    assert free.bound != "cpu" and free.rate == pytest.approx(min(free.terms.values()))
    assert free.rate > p.rate


def test_more_gpus_raise_the_engine_ceiling_and_a_shared_gpu_serves_both_roles_in_turn():
    engine, costs = _engine(), _costs()
    kw = dict(runners=8, envs=16, replicas=2, cores=1e9, max_tokens=512)
    one = project(costs, SHAPES, engine, expert_gpus=1, reviewer_gpus=1, **kw).terms["engine"]
    two = project(costs, SHAPES, engine, expert_gpus=2, reviewer_gpus=2, **kw).terms["engine"]
    assert two == pytest.approx(2 * one)
    shared = project(costs, SHAPES, engine, expert_gpus=1, reviewer_gpus=1, shared=True,
                     **kw).terms["engine"]
    assert shared < one


def test_the_sizing_table_is_a_projection_with_a_row_per_gpu_split():
    summary = {
        "shapes": {"chat_prompt": 300.0, "score_prompt": 400.0},
        "proxy": {"rps_ceiling": 800.0, "added_ms_p50": 3.0},
        "costs_per_env_step": {"encode_s": 0.006, "env_s": 0.002, "rllib_s": 0.003,
                               "transfer_s": 0.001, "learner_s": 0.0002},
        "engine": {"constants": SimulatedEngineConfig().model_dump(exclude={"time_scale"})},
    }
    experiment = load_config(REPO / "experiments" / "paper-llama7b.yaml")
    text = sizing_markdown({"summary": summary, "command": "cmd"}, experiment,
                           gpu_splits=((1, 1), (4, 2)))
    assert "PROJECTION" in text
    rows = [line for line in text.splitlines() if line.startswith("| 1 + 1")
            or line.startswith("| 4 + 2")]
    assert len(rows) == 2
    # more GPUs never make an iteration slower
    iteration = [float(r.split("|")[5].strip().rstrip(" s")) for r in rows]
    assert iteration[1] <= iteration[0]
