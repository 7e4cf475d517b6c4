"""`teamsrl generate` / `teamsrl compare` with the embedded SmolLM2 and MiniLM.

One reference run (the random, Evol-Instruct arm, through the CLI in a subprocess) is shared by
the tests that inspect artefacts, the golden-run check of the random arm among them; the crash
test SIGKILLs a second run of the same command mid-way, restarts it, and compares; the baseline
test runs a policy arm through Ray Serve shards.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import golden_run
import pytest

# The golden run's generation settings (tests/golden_run.py) with the response cache on: the
# reference run below is the golden `random` arm (test_reference_rows_match_the_golden_run)
TINY = [s for s in golden_run.GENERATE_SETTINGS if s != "llm.cache.enabled=false"]


def _cmd(run_dir: Path, policy: str = "random", extra=()) -> list[str]:
    sets = [f"--set={s}" for s in [f"run_dir={run_dir}", *TINY, *extra]]
    return [sys.executable, "-m", "teamsrl.cli", "generate", "--policy", policy, *sets]


def _env() -> dict:
    return os.environ | {"HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline",
                         "OMP_NUM_THREADS": "2"}


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _ledger_queries(run_dir: Path) -> dict[str, int]:
    from teamsrl.llm.ledger import QueryLedger

    ledger = QueryLedger(run_dir / "ledger.sqlite")
    try:
        return {role: t.queries for role, t in ledger.totals().items()}
    finally:
        ledger.close()


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """An uninterrupted random-arm run; returns its run dir."""
    run_dir = tmp_path_factory.mktemp("gen-reference")
    subprocess.run(_cmd(run_dir), check=True, env=_env(), timeout=900)
    return run_dir


def test_artefacts_and_provenance(reference):
    out = reference / "generate" / "random"
    rows = [r for r in _jsonl(out / "rows.jsonl") if r["kind"] == "row"]
    done = [r for r in _jsonl(out / "rows.jsonl") if r["kind"] == "seed_done"]
    data = _jsonl(out / "data.jsonl")
    summary = json.loads((out / "summary.json").read_text())
    assert len(done) == 6 and len({d["seed_id"] for d in done}) == 6
    assert len(rows) == 12  # 6 seeds x 2 steps, no stop action in the default set
    assert data and len(data) == summary["rows_kept"] <= sum(r["kept"] for r in rows)
    for r in data:
        assert r["instruction"].strip() and r["output"].strip() and r["input"] == ""
        assert r["seed_id"] and len(r["action_path"]) == r["step"] and r["policy_id"] == "random"
        assert r["expert_model"] == r["reviewer_model"] == "embedded:smollm2-135m-instruct"
        assert set(r["reward_components"]) >= {"verdict", "novelty", "failure", "cost"}
        assert r["sampling"]["answer_max_tokens"] == 16
    ids = [r["row_id"] for r in data]
    assert len(ids) == len(set(ids))
    from datasets import load_from_disk

    ds = load_from_disk(str(out / "dataset"))
    assert ds.num_rows == len(data) and {"instruction", "input", "output"} <= set(ds.column_names)
    card = (out / "README.md").read_text()
    assert "Query ledger" in card and f"kept: {len(data)}" in card
    # every request a row records was really made: the ledger counts the same (fresh cache)
    ledger = summary["ledger"]
    assert ledger["expert"]["queries"] + ledger["expert"]["cache_hits"] \
        == summary["queries"]["expert"] == sum(r["queries"]["expert"] for r in rows)
    assert summary["curve"][-1]["expert_queries"] == summary["queries"]["expert"]
    assert summary["curve"][-1]["rows_kept"] == len(data)


def test_reference_rows_match_the_golden_run(reference):
    """The random arm of the golden run (tests/golden_run.py; the policy arm and the rollout are
    in test_golden_behaviour.py): the reference run is that arm with the settings the golden run
    recorded, the response cache on (a fresh cache changes no text: every request is computed)."""
    got = (reference / "generate" / "random" / "data.jsonl").read_text(encoding="utf-8")
    want = (golden_run.GOLDEN / "random.data.jsonl").read_text(encoding="utf-8")
    assert golden_run.differences(
        [json.loads(golden_run.normalised(line)) for line in got.splitlines()],
        [json.loads(line) for line in want.splitlines()]) == []


def test_rerun_is_free(reference):
    """Rerunning a finished command sends no query and rewrites the same dataset."""
    out = reference / "generate" / "random"
    before, data = _ledger_queries(reference), (out / "data.jsonl").read_text()
    subprocess.run(_cmd(reference), check=True, env=_env(), timeout=600)
    assert _ledger_queries(reference) == before
    assert (out / "data.jsonl").read_text() == data


def _run_until(cmd, rows_file: Path, done_records: int) -> None:
    """Start `cmd`, SIGKILL it once rows.jsonl holds `done_records` seed_done records (0: while
    it is still starting up) and the next batch has had a moment to get in flight."""
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        have = rows_file.read_bytes().count(b"seed_done") if rows_file.is_file() else 0
        if have >= done_records:
            break
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended before it could be killed"
    time.sleep(1.0 if done_records else 3.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_sigkill_at_three_points_then_resume_equals_uninterrupted(reference, tmp_path):
    """Killed while starting, after the first batch and after the second (each time with the
    next batch in flight), restarted with the same command each time: the final dataset equals
    the uninterrupted run's; no row lost or doubled; each restart re-sends at most the queries
    of the one batch that was in flight."""
    run_dir = tmp_path / "crashed"
    rows_file = run_dir / "generate" / "random" / "rows.jsonl"
    for done_records in (0, 2, 4):  # 2 seeds per batch
        _run_until(_cmd(run_dir), rows_file, done_records)
        if done_records and rows_file.is_file():
            finished = rows_file.read_bytes().count(b"seed_done")
            assert done_records <= finished < 6
    subprocess.run(_cmd(run_dir), check=True, env=_env(), timeout=900)

    ref = reference / "generate" / "random"
    got = run_dir / "generate" / "random"
    strip = ("policy_id",)
    ref_data = [{k: v for k, v in r.items() if k not in strip} for r in _jsonl(ref / "data.jsonl")]
    got_data = [{k: v for k, v in r.items() if k not in strip} for r in _jsonl(got / "data.jsonl")]
    # every text, id and count exactly, floats to golden_run.FLOAT_RTOL: a restart re-scores the
    # in-flight batch's requests the cache lacks in a batch of another shape, and on some CPUs
    # (AVX-512) a score moves with its batch's padding by ~1e-5 relative (golden_run's docstring)
    assert golden_run.differences(got_data, ref_data) == []
    got_rows = [r for r in _jsonl(got / "rows.jsonl") if r["kind"] == "row"]
    assert len(got_rows) == len({r["row_id"] for r in got_rows}) == 12  # none lost or doubled
    # queries: the uninterrupted run's plus at most one in-flight batch per restart (a batch:
    # 2 seeds x (2 rewrites + 2 answers) expert, 2 x 2 verdicts reviewer)
    ref_q, got_q = _ledger_queries(reference), _ledger_queries(run_dir)
    assert ref_q["expert"] <= got_q["expert"] <= ref_q["expert"] + 3 * 8
    assert ref_q["reviewer"] <= got_q["reviewer"] <= ref_q["reviewer"] + 3 * 4


def _export_untrained_policy(path: Path, names: list[str], obs_size: int) -> Path:
    """A PPO RLModule as training builds it (untrained), exported the way training exports."""
    import gymnasium as gym
    import numpy as np
    from ray.rllib.algorithms.ppo.torch.default_ppo_torch_rl_module import (
        DefaultPPOTorchRLModule,
    )
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    module = DefaultPPOTorchRLModule(
        observation_space=gym.spaces.Box(-1.0, 1.0, (obs_size,), np.float32),
        action_space=gym.spaces.Discrete(len(names)),
        model_config=DefaultModelConfig(fcnet_hiddens=[16, 16]), inference_only=False)
    module.save_to_path(str((path / "rl_module").resolve()))
    (path / "spec.json").write_text(json.dumps({
        "action_names": names, "embedder": "embedded:all-minilm-l6-v2", "horizon": 2,
        "observation_size": obs_size, "iteration": 0, "seed": 543}))
    (path / "ledger.json").write_text("{}")  # untrained: no training cost, said explicitly
    return path


def test_policy_arm_through_serve_shards_and_compare(reference, ray_serve, tmp_path, capsys):
    """`--policy CHECKPOINT` through 2 Ray shards on the Serve app and `--policy random` on the
    same seeds both give datasets; `teamsrl compare`'s counts match the files."""
    from teamsrl.actions import ActionSet
    from teamsrl.cli import main
    from teamsrl.config import load_config
    from teamsrl.generation.compare import compare_table, run_stats
    from teamsrl.generation.run import run_generation

    _, serve_cfg, serve_config = ray_serve
    names = ActionSet.from_config(serve_cfg.actions).names
    export = _export_untrained_policy(tmp_path / "export", names, 384 + len(names) + 1)
    config = load_config(None, [f"run_dir={serve_cfg.run_dir}", *TINY,
                                "llm.expert.max_tokens=24", "generate.shards=2",
                                f"serving.app_name={serve_config.app_name}",
                                f"serving.route_prefix={serve_config.route_prefix}"])
    summary = run_generation(config, str(export), out_dir=tmp_path / "policy", progress=False)
    assert summary["rows_kept"] > 0 and summary["arm"] == "policy"
    rows = [r for r in _jsonl(tmp_path / "policy" / "rows.jsonl") if r["kind"] == "row"]
    assert {r["seed_id"] for r in rows} == {r["seed_id"] for r in _jsonl(
        reference / "generate" / "random" / "rows.jsonl") if r["kind"] == "row"}
    assert all(r["policy_id"].endswith("@iteration-0") for r in rows)

    a, b = run_stats(tmp_path / "policy"), run_stats(reference / "generate" / "random")
    expected: dict[str, tuple[str, ...]] = {}  # table row -> (A cell, B cell), from the files
    for stats, folder in ((a, tmp_path / "policy"), (b, reference / "generate" / "random")):
        all_rows = [r for r in _jsonl(folder / "rows.jsonl") if r["kind"] == "row"]
        kept = _jsonl(folder / "data.jsonl")
        expert = sum(r["queries"]["expert"] for r in all_rows)
        reviewer = sum(r["queries"]["reviewer"] for r in all_rows)
        assert stats["rows_generated"] == len(all_rows)
        assert stats["rows_kept"] == len(kept)
        assert stats["expert_generation"] == expert
        assert stats["reviewer_generation"] == reviewer
        assert sum(stats["drops"].values()) == len(all_rows) - len(kept)
        for label, n in (("rows generated", len(all_rows)), ("rows kept", len(kept)),
                         ("expert requests: generation", expert),
                         ("reviewer requests: generation", reviewer)):
            expected[label] = (*expected.get(label, ()), str(n))
    table = compare_table(a, b)
    assert _table_cells(table)[""] == ("A: policy", "B: random")
    # the CLI in this process (`python -m teamsrl.cli` runs in the other tests here): a
    # subprocess would load torch and MiniLM again, ~11 s of CPU, to print this table
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "policy"), str(reference / "generate" / "random")]) == 0
    printed = capsys.readouterr().out
    for text in (table, printed):
        cells = _table_cells(text)
        assert {label: cells[label] for label in expected} == expected, text


def _table_cells(text: str) -> dict[str, tuple[str, ...]]:
    """`teamsrl compare`'s table as {row label: (A cell, B cell)} ("" labels the header)."""
    cells = {}
    for line in text.splitlines():
        parts = re.split(r"\s{2,}", line.rstrip())
        if len(parts) == 3:
            cells[parts[0]] = (parts[1], parts[2])
    return cells


def test_embedding_dedup_drops_paraphrases_in_any_order():
    """MiniLM's embedding dedup drops a paraphrase that MinHash keeps, whatever order shards
    finish in (moved from tests/unit/test_generation_filters.py: it needs the real MiniLM)."""
    import random

    from teamsrl.embeddings import shared_embedder
    from teamsrl.generation.filters import deduplicate
    from teamsrl.generation.rows import Row

    base = [
        "Write a short poem about the sea at night, mentioning the moon and two ships.",
        "Explain how photosynthesis converts light into chemical energy in plant cells.",
        "List five practical tips for learning a new programming language quickly.",
        "Describe the causes of the French Revolution in three paragraphs.",
        "Compute the area of a triangle with sides 3, 4 and 5 and show each step.",
    ]
    rows = [Row(f"s{i}/1", f"s{i}", i, 1, instruction=t) for i, t in enumerate(base)]
    # a paraphrase shares few word 3-grams (MinHash misses it) but means the same
    rows.append(Row("s7/1", "s7", 7, 1, instruction="Explain the way photosynthesis turns "
                    "light into chemical energy inside the cells of plants."))
    encode = shared_embedder().encode
    outcomes = set()
    for trial in range(4):
        shuffled = rows[:]
        random.Random(trial).shuffle(shuffled)
        kept_mh, _ = deduplicate(shuffled, 0.5, 128, None)
        assert len(kept_mh) == 6  # MinHash alone keeps the paraphrase
        kept, dropped = deduplicate(shuffled, 0.5, 128, 0.85, encode)
        outcomes.add((tuple(r.row_id for r in kept),
                      tuple((r.row_id, str(why)) for r, why in dropped)))
    assert outcomes == {(("s0/1", "s1/1", "s2/1", "s3/1", "s4/1"),
                         (("s7/1", "near-duplicate (embedding) of s1/1"),))}
