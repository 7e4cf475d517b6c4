"""`teamsrl sweep`: two Ray Tune trials (the six operations; deepening alone), each a one-iteration
PPO training over the Serve app and a two-seed generation with the trained policy; the command
prints one table row per trial and the trials share one W&B group.

The engines are `engine: simulated` (no sleep): the table, the counts and the W&B group are
bookkeeping that does not depend on what the texts say."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from teamsrl.cli import main
from teamsrl.llm.config import simulated_overrides

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.integration

TINY = [
    # its own app name and half a CPU: fits beside the session's shared Serve fixture
    "serving.app_name=teamsrl-llm-sweep", "serving.route_prefix=/sweep", "serving.num_cpus=0.5",
    "env.horizon=2", "llm.expert.max_tokens=8", "env.reward.cut_rewrite_fails=false",
    "env.reward.invalid_fails=false", "env.reward.validity_weight=0",
    "policy.iterations=1",
    "policy.num_envs_per_env_runner=2", "policy.train_batch_size=4", "policy.minibatch_size=2",
    "policy.num_epochs=1", "generate.max_seeds=2", "generate.batch_seeds=2",
    "generate.answer_max_tokens=8", "generate.drop_cut_answers=false", "generate.shards=0",
    "generate.forced_actions={}",
    "tracking.mode=offline",
    *simulated_overrides(time_scale=0),
]


def _wandb_group(run_dir: Path, job_type: str) -> str:
    from wandb_offline import run_records

    run_id = (run_dir / f"wandb-{job_type}.id").read_text().strip()
    for f in run_dir.glob(f"wandb/offline-run-*-{run_id}/run-{run_id}.wandb"):
        for record in run_records(f):
            if record.WhichOneof("record_type") == "run":
                return record.run.run_group
    raise AssertionError(f"no W&B run record for {job_type} under {run_dir}")


def _ledger_totals(run_dir: Path, stage: str) -> dict:
    from teamsrl.llm.ledger import QueryLedger

    ledger = QueryLedger(run_dir / "ledger.sqlite")
    try:
        return ledger.totals(stage=stage)
    finally:
        ledger.close()


def test_two_trial_sweep_prints_its_table(tmp_path, capsys):
    sweep = {
        "name": "sweep-test", "base": str(ROOT / "experiments" / "quickstart.yaml"),
        "set": TINY, "run_dir": str(tmp_path / "sweep"), "max_concurrent_trials": 1,
        "trials": [
            {"name": "all-six", "actions": {"operations": [
                "breadth", "add_constraints", "deepening", "concretizing",
                "increase_reasoning_steps", "complicate_input"]}},
            {"name": "depth-only", "actions": {"operations": ["deepening"]}},
        ],
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))

    assert main(["sweep", "--config", str(path)]) == 0
    out = capsys.readouterr().out
    print(out)

    lines = out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["trial", "actions"])
    assert "return" in lines[header] and "q/kept row" in lines[header]
    assert "diversity" in lines[header]
    table = lines[header + 2: header + 4]
    assert [line.split()[0] for line in table] == ["all-six", "depth-only"]
    assert sum(line.startswith("trial done: trial ") for line in lines) == 2

    rows = json.loads((tmp_path / "sweep" / "sweep-results.json").read_text())
    assert [r["trial"] for r in rows] == ["all-six", "depth-only"]
    for row in rows:
        run_dir = tmp_path / "sweep" / row["trial"]
        assert math.isfinite(row["return"]) and row["train_queries"] > 0
        assert row["gen_expert_queries"] > 0  # the trained policy drove rewrites
        # the row's generation numbers against the trial's files: every request a generated
        # row made (rows.jsonl), the rows kept (data.jsonl), what the ledger saw for the stage
        dataset = Path(row["dataset"])
        records = [json.loads(line) for line in (dataset / "rows.jsonl").open()]
        generated = [r for r in records if r["kind"] == "row"]
        kept = (dataset / "data.jsonl").read_text().splitlines()
        asked = {role: sum(r["queries"][role] for r in generated)
                 for role in ("expert", "reviewer")}
        summary = json.loads((dataset / "summary.json").read_text())
        ledger = _ledger_totals(run_dir, summary["stage"])
        for role in ("expert", "reviewer"):
            assert asked[role] == row[f"gen_{role}_queries"], (role, asked, row)
            if asked[role]:
                assert ledger[role].queries + ledger[role].cache_hits == asked[role], role
        assert row["rows_kept"] == len(kept) == summary["rows_kept"]
        if kept:
            assert row["queries_per_kept_row"] == pytest.approx(
                (asked["expert"] + asked["reviewer"]) / len(kept))
        assert summary["diversity"]["distinct_2"] == row["distinct_2"]
        assert _wandb_group(run_dir, "train-policy") == "sweep-test"
    spec = json.loads((tmp_path / "sweep" / "depth-only" / "policy" / "export" / "spec.json")
                      .read_text())
    assert spec["action_names"] == ["deepening"]
    assert rows[0]["actions"].count("+") == 5 and rows[1]["actions"] == "deepening"
    assert [line.split()[1] for line in table] == ["6", "1"]


def test_sweep_config_errors_name_the_trial_and_key(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({
        "base": str(ROOT / "experiments" / "quickstart.yaml"),
        "set": ["generate.forced_actions={1: breadth}"],
        "trials": [{"name": "depth", "actions": {"operations": ["deepening"]}}],
    }))
    assert main(["sweep", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "trial 'depth': key 'generate.forced_actions.1' = 'breadth'" in err

    path.write_text(yaml.safe_dump({"trials": [
        {"name": "a", "actions": {"operations": ["deepening"]}},
        {"name": "a", "actions": {"operations": ["breadth"]}}]}))
    assert main(["sweep", "--config", str(path)]) == 2
    assert "trial name 'a' appears more than once" in capsys.readouterr().err

    path.write_text(yaml.safe_dump({"trials": [{"name": "a", "actions": {"operations": [
        "deepning"]}}]}))
    assert main(["sweep", "--config", str(path)]) == 2
    assert "deepning" in capsys.readouterr().err
