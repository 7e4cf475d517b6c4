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
