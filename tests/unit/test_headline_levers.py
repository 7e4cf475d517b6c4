"""`benchmarks/headline_levers.py`: the levers read from a headline run's own rows. A
horizon h keeps steps 1..h of each seed (never the last h); per-step figures sum the right step;
valid rows per expert query are ratios of sums, bootstrapped with the same draw for every arm."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))

SEEDS = [f"seed_{i}" for i in range(10)]


OPS = ("breadth", "deepening")


def _row(expert: int, valid: bool, kept: bool = True, step: int = 1) -> tuple:
    """A row as `headline.seed_rows` gives it; its operation alternates with the step."""
    return (expert, 2, kept, valid, "text", {"step": step, "action": OPS[step % 2]})


def _rows(valid_steps: dict[str, set[int]], runs: int = 2, horizon: int = 4) -> dict:
    """Per arm, per run, per seed: `horizon` rows; step s (1-based) costs s expert queries and is
    valid when s is in the arm's set and the seed index is even (so seeds differ); the last step
    is never kept (a judged-valid row the filters dropped is no valid row of the dataset)."""
    return {arm: [{sid: [_row(s, s in steps and i % 2 == 0, kept=s < horizon, step=s)
                         for s in range(1, horizon + 1)]
                   for i, sid in enumerate(SEEDS)} for _ in range(runs)]
            for arm, steps in valid_steps.items()}


def test_truncate_keeps_the_first_steps():
    from headline_levers import truncate

    by_seed = {"a": [_row(1, True, step=1), _row(2, False, step=2), _row(3, True, step=3)]}
    assert [r[0] for r in truncate(by_seed, 2)["a"]] == [1, 2]
    with pytest.raises(ValueError, match="horizon 0"):
        truncate(by_seed, 0)


def test_per_step_sums_each_step_over_seeds():
    from headline_levers import per_step

    rows = _rows({"policy": {1, 2}, "frequency": {1}, "random": {3, 4}})
    steps = per_step(rows, SEEDS, 4)
    assert steps["random"]["expert_queries"] == [10.0, 20.0, 30.0, 40.0]  # 10 seeds x s
    assert steps["policy"]["valid_rows"] == [5.0, 5.0, 0.0, 0.0]  # the 5 even seeds
    assert steps["random"]["valid_rows"] == [0.0, 0.0, 5.0, 0.0]  # step 4: valid, not kept


def test_valid_per_query_is_paired_and_a_ratio_of_sums():
    from headline_levers import truncate, valid_per_query

    rows = _rows({"policy": {1, 2}, "frequency": {2}, "random": {1}})
    cut = {arm: [truncate(b, 2) for b in runs] for arm, runs in rows.items()}
    figs = valid_per_query(cut, SEEDS, n_boot=300)
    p, ci = figs["point"], figs["ci95"]
    assert p["random"] == pytest.approx(5 / 30, abs=1e-5)  # 5 valid rows for 10 x (1 + 2) queries
    assert p["policy"] == pytest.approx(10 / 30, abs=1e-5)
    # every seed costs the same in each arm and the policy's valid rows are twice random's on
    # every seed: a paired resample cannot move the ratio
    assert p["policy_over_random"] == pytest.approx(2.0)
    assert ci["policy_over_random"] == pytest.approx([2.0, 2.0])
    assert ci["frequency_over_random"] == pytest.approx([1.0, 1.0])
    assert ci["random"][0] < ci["random"][1]  # the rate itself varies with the seeds drawn


def test_per_action_pools_the_arms_and_compares_the_best_with_random():
    from headline_levers import per_action

    # odd steps draw `deepening`, even ones `breadth` (OPS[step % 2])
    rows = _rows({"policy": {1, 3, 4}, "frequency": {1}, "random": {2}}, runs=1)
    figs = per_action(rows, SEEDS)
    ops = figs["operations"]
    assert ops["deepening"]["steps"] == 3 * 10 * 2  # 3 arms x 10 seeds x steps 1 and 3
    assert ops["deepening"]["expert_queries"] == 3 * 10 * (1 + 3)
    assert ops["deepening"]["valid_rows"] == 5 * 2 + 5  # policy at 1 and 3, frequency at 1
    assert ops["breadth"]["valid_rows"] == 5  # random at 2; the policy's step 4 is not kept
    random_rate = 5 / (10 * (1 + 2 + 3 + 4))
    assert figs["random_valid_per_expert_query"] == pytest.approx(random_rate, abs=1e-6)
    assert figs["best_over_random"] == pytest.approx((15 / 120) / random_rate, abs=1e-5)


def test_failure_shares_read_the_kind_before_the_detail():
    from headline_levers import failure_shares

    def row(failure):
        return (1, 2, not failure, not failure, "t", {"step": 1, "action": "breadth",
                                                        "failure": failure})

    rows = {"policy": [{"a": [row("not an instruction: validity 0.19"), row("")]}],
            "frequency": [{"a": [row("cut at max_tokens")]}],
            "random": [{"a": [row("not an instruction: validity 0.02")]}]}
    figs = failure_shares(rows, ["a"])
    assert figs == {"steps": 4, "shares": {"not an instruction": 0.5, "none": 0.25,
                                           "cut at max_tokens": 0.25}}


def test_compare_runs_counts_the_same_operations_and_rewrites_step_by_step():
    from headline_levers import compare_runs

    def run(actions, texts):
        return {"a": [(1, 2, True, True, t, {"step": s + 1, "action": a, "instruction": t})
                      for s, (a, t) in enumerate(zip(actions, texts, strict=True))]}

    mine = run(["breadth", "deepening", "breadth"], ["x", "y", "z"])
    theirs = run(["breadth", "breadth"], ["x", "y"])  # it stopped before step 3
    rows = {arm: [mine] for arm in ("policy", "frequency", "random")}
    other = {"policy": [theirs], "frequency": [theirs], "random": []}  # no random run there
    out = compare_runs(rows, other, ["a"])
    assert set(out) == {"policy-0", "frequency-0"}
    assert out["policy-0"] == {"steps_in_both": 2, "same_operation": 1, "same_rewrite": 2,
                               "their_operations": {"breadth": 2}}
