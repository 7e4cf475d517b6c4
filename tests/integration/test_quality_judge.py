"""The shipped validity judge with the real models on the committed test part of the labelled set:
MiniLM for the `embedding` method (the default's choice), and the embedded SmolLM2 reviewer
through the client (cache and ledger) for the `combined` method.

The embedding judge must reach the test accuracy recorded in benchmarks/results/validity_judge.json
(by benchmarks/validity_judge.py) on the whole test part; the default judge must be the recorded
choice and reproduce its per-item scores on a fifth of the test part; the combined judge, two
reviewer queries a text, must reproduce its recorded per-item scores on another fifth. (A fifth
each: the judge scores each text on its own, so a fault in the scoring path moves every item's
score; on all 122 items the default's check took 50 s of CI, 2026-12-02.) A planted fault (the
weights' signs flipped) must fail each bar.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from teamsrl.quality import (
    JudgeFile,
    LinearModel,
    QualityConfig,
    ValidityJudge,
    points_at_missing_context,
)

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TEST_PART = ROOT / "tests" / "data" / "validity" / "test.jsonl"
RESULTS = ROOT / "benchmarks" / "results" / "validity_judge.json"
MARGIN = 0.02  # float noise of the models across machines, not room for a worse judge
FAULT_DROP = 0.15  # a broken judge falls at least this far below the recorded accuracy


def agreement(judge: ValidityJudge, items: list[dict]) -> float:
    """Share of items whose judged validity agrees with the hand label."""
    judged = judge.is_valid([it["rewrite"] for it in items])
    return float(np.mean([j == (it["label"] == "valid")
                          for j, it in zip(judged, items, strict=True)]))


def flipped(model: LinearModel) -> LinearModel:
    """The planted fault: every weight's sign flipped."""
    return replace(model, coef=[-c for c in model.coef], intercept=-model.intercept)


@pytest.fixture(scope="module")
def items() -> list[dict]:
    return [json.loads(line) for line in TEST_PART.read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def recorded() -> dict:
    return json.loads(RESULTS.read_text(encoding="utf-8"))


def test_embedding_judge_reaches_the_recorded_accuracy(items, recorded):
    expected = recorded["candidates"]["embedding"]
    judge = ValidityJudge.from_config(QualityConfig(method="embedding"))
    assert judge.threshold == expected["threshold"]
    bar = expected["test"]["accuracy"]["value"] - MARGIN
    assert agreement(judge, items) >= bar

    w = judge.weights
    broken = ValidityJudge(judge.config, replace(w, embedding=flipped(w.embedding)),
                           embedder=judge.embedder)
    assert agreement(broken, items) < bar - FAULT_DROP


def test_default_judge_is_the_chosen_one_and_reproduces_its_scores(items, recorded,
                                                                   embedded_client):
    """The default judge ('auto') with the SmolLM2 reviewer it was fitted to is the method the
    benchmark chose, at its recorded threshold, with its recorded per-item validity on every 5th
    test item from the third (the combined test below takes those from the first)."""
    assert QualityConfig().method == "auto"
    chosen = recorded["chosen"]
    assert JudgeFile.load().provenance["chosen_method"] == chosen
    judge = ValidityJudge.from_config(client=embedded_client)
    expected = recorded["candidates"][chosen]
    assert judge.method == chosen and judge.threshold == expected["threshold"]
    picked = list(range(2, len(items), 5))
    scores = judge.validity([items[i]["rewrite"] for i in picked])
    assert scores == pytest.approx([expected["test_validity"][i] for i in picked], abs=0.02)


def test_combined_judge_reproduces_its_scores_through_the_client(items, recorded,
                                                                embedded_client):
    """The combined judge (the SmolLM2 reviewer's fluency and reply as four more features),
    through the client, on every 5th test item: the recorded per-item validity, hence its
    accuracy; flipped weights do not."""
    expected = recorded["candidates"]["combined"]
    picked = list(range(0, len(items), 5))
    subset = [items[i] for i in picked]
    judge = ValidityJudge.from_config(QualityConfig(method="combined"), client=embedded_client)
    assert judge.threshold == expected["threshold"]
    scores = judge.validity([it["rewrite"] for it in subset])
    want = [expected["test_validity"][i] for i in picked]
    assert scores == pytest.approx(want, abs=0.02)
    valid = np.array([it["label"] == "valid" for it in subset])
    right = np.mean((np.array(scores) >= judge.threshold) == valid)
    assert right >= np.mean((np.array(want) >= judge.threshold) == valid) - MARGIN
    totals = embedded_client.ledger.session_totals()["reviewer"]
    asked = [not points_at_missing_context(it["rewrite"]) for it in subset]
    assert 0 < sum(asked) < len(subset)  # both kinds are in the subset
    # fluency and reply per text, none for a text the missing-context rule decides
    assert totals.queries + totals.cache_hits == 2 * sum(asked)

    w = judge.weights
    broken = ValidityJudge(judge.config, replace(w, combined=flipped(w.combined)),
                           client=embedded_client, embedder=judge.embedder)
    assert agreement(broken, subset) < right - FAULT_DROP
    after = embedded_client.ledger.session_totals()["reviewer"]
    assert after.queries == totals.queries  # the second pass came from the cache


def test_reviewer_method_is_the_reviewers_probability(embedded_client):
    texts = ["Name three birds that cannot fly.",
             "Here's a rewritten version of the instruction with an extra requirement:"]
    judge = ValidityJudge.from_config(QualityConfig(method="reviewer"), client=embedded_client)
    scores = judge.validity(texts)
    logodds = judge.reviewer_logodds(texts)
    assert scores == pytest.approx(list(1.0 / (1.0 + np.exp(-logodds))))
    totals = embedded_client.ledger.session_totals()["reviewer"]
    assert (totals.queries, totals.cache_hits) == (2, 2)
    assert judge.threshold == JudgeFile.load().reviewer_threshold


def test_a_different_reviewer_model_is_refused(smollm2_engine):
    from teamsrl.llm.client import LLMClient
    from teamsrl.llm.config import ModelSpec

    client = LLMClient({"reviewer": smollm2_engine},
                       specs={"reviewer": ModelSpec(model="/models/a-bigger-reviewer")})
    with pytest.raises(ValueError, match="fitted to reviewer 'embedded:smollm2-135m-instruct'"):
        ValidityJudge.from_config(QualityConfig(method="combined"), client=client)
    ValidityJudge.from_config(QualityConfig(method="embedding"), client=client)  # no reviewer
