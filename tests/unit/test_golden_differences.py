"""The golden run's comparison (tests/golden_run.py `differences`): floats to FLOAT_RTOL,
everything else exactly, key order included."""

from __future__ import annotations

import golden_run

ROW = {"row_id": "seed_task_0/1", "instruction": "Name three birds.", "step": 1,
       "novelty": 0.268608033657074, "reward_components": {"novelty": 0.134304016828537},
       "kept": True}


def _with(**changes):
    return {**ROW, **changes}


def test_last_bit_float_noise_is_the_same_behaviour():
    # the 2026-12-01 machine change: float32 rounding of one embedding, texts unchanged
    got = _with(novelty=0.26860809326171875,
                reward_components={"novelty": 0.13430404663085938})
    assert golden_run.differences([got], [ROW]) == []


def test_another_cpus_verdict_drift_is_the_same_behaviour():
    # 2026-12-03, an Intel Xeon with AVX-512 against the fixtures recorded on an AMD EPYC: the
    # largest relative drift of a verdict (texts, actions and counts unchanged)
    assert golden_run.differences([{"verdict": 0.3187029517282104}],
                                  [{"verdict": 0.31869767139966415}]) == []


def test_a_verdict_moved_by_a_thousandth_is_a_change():
    want = {"verdict": 0.040798581245393664, "reward": 0.0107985812}
    assert golden_run.differences([{**want, "verdict": want["verdict"] * 1.001}],
                                  [want]) == [f"[0].verdict: {want['verdict'] * 1.001!r} != "
                                              f"{want['verdict']!r}"]
    assert golden_run.differences([{**want, "reward": want["reward"] * 1.001}], [want]) != []


def test_a_real_change_is_reported_with_its_path():
    assert golden_run.differences([_with(novelty=0.2687)], [ROW]) == [
        "[0].novelty: 0.2687 != 0.268608033657074"]
    assert golden_run.differences([_with(reward_components={"novelty": 0.1})], [ROW]) == [
        "[0].reward_components.novelty: 0.1 != 0.134304016828537"]
    assert golden_run.differences([_with(instruction="Name two birds.")], [ROW]) != []
    assert golden_run.differences([_with(step=2)], [ROW]) != []
    assert golden_run.differences([_with(kept=False)], [ROW]) != []


def test_types_lengths_and_key_order_count():
    assert golden_run.differences([_with(step=1.0)], [ROW]) != []  # an int became a float
    assert golden_run.differences([ROW, ROW], [ROW]) == [": 2 items != 1"]
    reordered = dict(reversed(list(ROW.items())))
    assert golden_run.differences([reordered], [ROW]) != []
    missing = {k: v for k, v in ROW.items() if k != "kept"}
    assert golden_run.differences([missing], [ROW]) != []
