"""The policy's training cost (`policy/ledger.json`, which `teamsrl generate` and `teamsrl
compare` charge to the policy arm) counts the warm-up probe's queries as well as training's."""

from __future__ import annotations

from teamsrl.llm.ledger import QueryLedger
from teamsrl.policy.train import STAGE, WARMUP_STAGE, training_cost


def test_training_cost_is_training_plus_warmup_and_nothing_else():
    ledger = QueryLedger(None)
    ledger.record("expert", "chat", queries=2, prompt_tokens=40, stage=WARMUP_STAGE)
    ledger.record("reviewer", "score", queries=2, stage=WARMUP_STAGE)
    ledger.record("expert", "chat", queries=7, cache_hits=1, failures=1, stage=STAGE)
    ledger.record("reviewer", "score", queries=5, stage=STAGE)
    ledger.record("expert", "chat", queries=100, stage="generate")  # another stage's cost
    cost = training_cost(ledger)
    assert {r: (t.queries, t.cache_hits, t.failures) for r, t in cost.items()} == {
        "expert": (9, 1, 1), "reviewer": (7, 0, 0)}
    assert cost["expert"].prompt_tokens == 40


def test_a_policy_arm_without_a_training_ledger_is_an_error_never_zero(tmp_path):
    import json

    import pytest

    from teamsrl.generation.finalize import training_queries

    export = tmp_path / "run" / "policy" / "export"
    export.mkdir(parents=True)
    with pytest.raises(ValueError, match=r"no training ledger .*policy/ledger\.json"):
        training_queries(str(export))
    cost = {"expert": {"queries": 9}, "reviewer": {"queries": 7}}
    (tmp_path / "run" / "policy" / "ledger.json").write_text(json.dumps(cost))
    assert training_queries(str(export)) == cost  # the run's, found from its export folder
    assert training_queries(str(tmp_path / "run")) == cost  # from the run folder (sweep)
    (export / "ledger.json").write_text("{}")  # an untrained policy says "no cost" itself
    assert training_queries(str(export)) == {}
    assert training_queries("random") == {}


def test_the_warmup_step_asks_for_verdicts_only_when_they_weigh_something():
    """The warm-up probe times one vector-env step as the env takes it: with verdict_weight 0
    the env sends no verdict, so neither does the probe (its queries are training cost)."""
    from teamsrl.config import load_config
    from teamsrl.llm.client import LLMClient, build_engines
    from teamsrl.llm.config import simulated_overrides
    from teamsrl.policy.train import measure_step_s

    asked = {}
    for weight in (1.0, 0.0):
        config = load_config(None, [*simulated_overrides(time_scale=0),
                                    "policy.num_envs_per_env_runner=3",
                                    f"env.reward.verdict_weight={weight}"])
        ledger = QueryLedger(None)
        client = LLMClient(build_engines(config.llm), ledger=ledger)
        measure_step_s(client, config)
        asked[weight] = {r: t.queries for r, t in ledger.totals(stage=WARMUP_STAGE).items()}
    assert asked[1.0] == {"expert": 3, "reviewer": 3}
    assert asked[0.0].get("reviewer", 0) == 0 and asked[0.0]["expert"] == 3
