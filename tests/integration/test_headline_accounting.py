"""`benchmarks/headline.py`, CI-sized: the ACCOUNTING, not the result.

One policy trained for 1 PPO iteration (horizon 1, 2 sub-envs, 8-token rewrites), three arms on
2 generation seeds, budgets of 1 and 2 expert queries, no fine-tune. Every count is checked
against the ledger and cache SQLite files read here directly, not through the benchmark.

The validity judge is off (`NO_JUDGE`): its reviewer queries would be counted by the same ledger
rows this test already checks (nothing new for the accounting), and at 8 tokens nearly every
rewrite would fail it, leaving no kept row. The judged-valid figure still runs: kept rows the
run did not judge are scored by the judge's embedding method (MiniLM, no LLM query).
"""

from __future__ import annotations

import json
import sqlite3
import sys
from contextlib import closing
from pathlib import Path

import pytest
from embedding_doubles import NO_JUDGE

from teamsrl.config import read_yaml
from teamsrl.seeds import load_seeds

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

ENVS = 2  # sub-envs: the warm-up step sends one rewrite and one verdict per sub-env
TINY = [
    "serving.app_name=teamsrl-llm-headline", "serving.route_prefix=/headline",
    "serving.num_cpus=0.5", "env.horizon=1", "llm.expert.max_tokens=8",
    "generate.answer_max_tokens=8", "generate.max_seeds=2", "generate.batch_seeds=2",
    "policy.iterations=1", f"policy.num_envs_per_env_runner={ENVS}",
    "policy.train_batch_size=2", "policy.minibatch_size=2", "policy.num_epochs=1",
    "env.reward.cut_rewrite_fails=false", *NO_JUDGE, "tracking.mode=disabled",
]
ARMS = ("policy", "frequency", "random")


def _argv(work: Path) -> list[str]:
    return ["--work-dir", str(work), "--config", str(ROOT / "experiments" / "quickstart.yaml"),
            "--policies", "1", "--budgets", "1,2", "--finetune-steps", "0", "--bootstrap",
            "100", "--quiet", *[f"--set={s}" for s in TINY]]


def _ledger(path: Path, stage: str | None = None) -> dict[str, dict[str, int]]:
    """Per role: queries and cache hits, summed from the ledger's rows (all stages or one)."""
    assert path.is_file(), path
    where, args = ("WHERE stage = ?", (stage,)) if stage else ("", ())
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        rows = db.execute(f"SELECT role, SUM(queries), SUM(cache_hits) FROM calls {where} "
                          "GROUP BY role", args).fetchall()
    return {role: {"queries": int(q), "hits": int(h)} for role, q, h in rows}


def _cache(path: Path) -> dict[str, int]:
    """Stored responses by kind: a chat response has `text`, a scoring one `logprobs`."""
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        values = [json.loads(v) for (v,) in db.execute("SELECT value FROM responses")]
    chat = sum("text" in v for v in values)
    return {"expert": chat, "reviewer": sum("logprobs" in v for v in values if "text" not in v)}


def _ledger_rows(path: Path) -> int:
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        return int(db.execute("SELECT COUNT(*) FROM calls").fetchone()[0])


@pytest.fixture(scope="module")
def headline_run(ray_serve, smollm2_engine, tmp_path_factory):
    """The tiny benchmark, then the same command again (everything finished: skipped)."""
    import headline

    work = tmp_path_factory.mktemp("headline")
    engines = {"expert": smollm2_engine, "reviewer": smollm2_engine}
    record = headline.main(_argv(work), engines=engines)
    ledgers = {p: _ledger_rows(p) for p in work.glob("*/ledger.sqlite")}
    again = headline.main(_argv(work), engines=engines)
    return work, record, ledgers, again


def test_policy_cost_is_the_whole_training_ledger_warmup_included_plus_generation(headline_run):
    work, record, _, _ = headline_run
    train = _ledger(work / "train-0" / "ledger.sqlite")
    warmup = _ledger(work / "train-0" / "ledger.sqlite", stage="warmup")
    assert warmup["expert"]["queries"] == ENVS and warmup["reviewer"]["queries"] == ENVS
    # counted without the ledger: every engine query of a fresh cache stores one response
    assert _cache(work / "train-0" / "llm-cache.sqlite") == {
        role: train[role]["queries"] for role in ("expert", "reviewer")}
    gen = _ledger(work / "policy-0" / "ledger.sqlite")
    run = record["raw"]["runs"]["policy"][0]
    assert run["total_with_training"] == {
        role: train[role]["queries"] + gen[role]["queries"] for role in ("expert", "reviewer")}
    assert record["summary"]["valid_rows"]["training_queries"] == train["expert"]["queries"]
    policy = record["raw"]["policies"][0]
    assert policy["cost"]["roles"]["expert"]["queries"] == train["expert"]["queries"]


def test_missing_training_ledger_is_an_error_not_zero(tmp_path):
    import headline

    with pytest.raises(FileNotFoundError, match="never counted as 0"):
        headline.ledger_counts(tmp_path / "train-0" / "ledger.sqlite")


def test_each_arm_starts_with_an_empty_cache_of_its_own(headline_run):
    work, record, _, _ = headline_run
    for arm in ARMS:
        run = record["raw"]["runs"][arm][0]
        assert run["at_start"] == {"cache_hits": 0, "cache_entries": 0, "queries": 0,
                                   "resumed": False}, arm
        ledger = _ledger(work / f"{arm}-0" / "ledger.sqlite")
        assert (work / f"{arm}-0" / "llm-cache.sqlite").is_file(), f"{arm}: no cache of its own"
        assert all(t["hits"] == 0 for t in ledger.values()), (arm, ledger)
        # its own cache holds exactly the responses its own ledger paid for
        assert _cache(work / f"{arm}-0" / "llm-cache.sqlite") == {
            role: ledger[role]["queries"] for role in ("expert", "reviewer")}, arm
        assert run["prefix_cost_matches_ledger"] and run["cache_hits_at_end"] == 0, arm


def test_seed_slices_are_disjoint_and_each_stage_used_its_own(headline_run):
    work, record, _, _ = headline_run
    slices = {k: set(v) for k, v in record["raw"]["seed_split"]["slices"].items()}
    assert all(slices.values())
    names = list(slices)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            assert not slices[a] & slices[b], (a, b)
    trained_on = read_yaml(work / "train-0" / "config.yaml")["env"]["seed_file"]
    assert {s.id for s in load_seeds(trained_on).seeds} == slices["policy_training"]
    for arm in ARMS:
        rows = [json.loads(x) for x in
                (work / f"{arm}-0" / "generate" / "rows.jsonl").read_text().splitlines()]
        used = {r["seed_id"] for r in rows}
        assert used and used <= slices["generation"], arm
    assert set(record["raw"]["generation_seed_ids"]) <= slices["generation"]


def test_results_json_holds_every_field(headline_run):
    work, record, _, again = headline_run
    assert {"command", "commit", "config", "date", "machine", "wall_s", "summary",
            "raw"} <= set(record)
    assert json.loads((work / "headline.json").read_text()) == again  # the rerun's
    figs = record["summary"]["valid_rows"]
    for key in ("target_valid_rows", "training_queries", "policy_generation_queries",
                "ratio_training_included", "ratio_generation_only", "ratio_amortised",
                "amortised_queries", "break_even_queries", "break_even_valid_rows",
                "frequency_ratio_generation_only"):
        assert key in figs and key in figs["ci95"], key
    assert set(figs["curve"]) == set(ARMS) == set(figs["bands"])
    assert {"seed_split", "generation_seed_ids", "policies", "runs",
            "episode_returns"} <= set(record["raw"])
    returns = record["summary"]["episode_return"]
    assert set(returns["mean_return"]) == set(returns["ci95"]) == {
        *ARMS, "policy_minus_random", "frequency_minus_random"}
    gen_ids = record["raw"]["generation_seed_ids"]
    for arm in ARMS:  # one run, every generation seed, its return from the rows' own rewards
        per_seed = record["raw"]["episode_returns"][arm][0]
        assert list(per_seed) == gen_ids, arm
        rows = [json.loads(line) for line in
                (work / f"{arm}-0" / "generate" / "rows.jsonl").read_text().splitlines()]
        for sid in gen_ids:
            want = sum(sum(r["reward_components"].values()) for r in rows
                       if r.get("kind") == "row" and r["seed_id"] == sid)
            assert per_seed[sid] == pytest.approx(want), (arm, sid)
    for arm in ARMS:
        run = record["raw"]["runs"][arm][0]
        assert [b["budget"] for b in run["budgets"]] == [1, 2]
        for b in run["budgets"]:
            assert b["expert_queries"] <= b["budget"]
            assert {"kept_rows", "valid_rows", "diversity", "reference"} <= set(b)


def test_rerun_skips_every_finished_unit(headline_run):
    _, record, ledgers, again = headline_run
    assert {p: _ledger_rows(p) for p in ledgers} == ledgers  # no new LLM call
    assert again["raw"]["runs"] == record["raw"]["runs"]
    assert again["summary"]["valid_rows"] == record["summary"]["valid_rows"]
