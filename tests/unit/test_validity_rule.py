"""The validity judge wired into the MDP and generation: the `not an instruction` rule, the
validity reward component, and dropping answers cut at `generate.answer_max_tokens`.

The properties are about control flow (a score below the threshold fails the step, a cut answer
drops its row), not about which texts are valid, so a fixed-score judge and a deterministic
engine stand in; the judge's accuracy on real rewrites is tests/integration/test_quality_judge.py.
"""

from __future__ import annotations

import pytest
from embedding_doubles import NO_JUDGE, HashEmbedder

from teamsrl.config import load_config
from teamsrl.generation.episodes import BatchGenerator
from teamsrl.llm.client import LLMClient
from teamsrl.llm.schema import ChatResponse, ScoreResponse
from teamsrl.mdp import make_env
from teamsrl.outcomes import DropKind, FailureKind
from teamsrl.seeds import Seed


class Engine:
    """Rewrites that pass the elimination rules; answers cut at their budget when `cut`."""

    model_id = "fixed"

    def __init__(self, cut: bool = False) -> None:
        self.cut, self.scored = cut, 0

    def generate(self, requests):
        return [ChatResponse(f"Describe topic {r.seed % 1000} in depth with examples.", 9, 8,
                             finish_reason="length" if self.cut and len(r.messages) == 1
                             else "stop") for r in requests]

    def score(self, requests):
        self.scored += len(requests)
        return [ScoreResponse((-1.0, -0.5), (1, 2), 9) for _ in requests]

    def count_tokens(self, text):
        return len(text.split())


class FixedJudge:
    """Every text gets the same validity; counts the texts it was asked about."""

    def __init__(self, validity: float, threshold: float = 0.5) -> None:
        self.validity_value, self.threshold = validity, threshold
        self.reviewer_queries_per_text = 0
        self.asked: list[int] = []

    def validity(self, texts):
        self.asked.append(len(texts))
        return [self.validity_value] * len(texts)

    def reviewer_queries(self, text):
        return self.reviewer_queries_per_text


def _env(judge, *overrides):
    engine = Engine()
    config = load_config(None, ["env.horizon=2", *overrides])
    client = LLMClient({"expert": engine, "reviewer": engine})
    env = make_env(config, client, embedder=HashEmbedder(), judge=judge)
    env.reset(seed=0, options={"instruction": "Name a river."})
    return env, engine


def test_a_rewrite_judged_not_an_instruction_fails_without_a_reviewer_query():
    judge = FixedJudge(0.2)
    env, engine = _env(judge, "env.reward.invalid_fails=true", "env.reward.validity_weight=0.5")
    _, reward, _, _, info = env.step(0)
    assert info["failure"].kind is FailureKind.NOT_INSTRUCTION
    assert str(info["failure"]) == "not an instruction: validity 0.20"
    assert info["validity"] == 0.2 and judge.asked == [1]
    assert not info["reviewed"] and engine.scored == 0
    assert info["reward_components"]["failure"] == -1.0
    assert info["reward_components"]["validity"] == 0.0  # a failed rewrite earns none
    assert info["instruction"] == "Name a river."  # discarded, as any failed rewrite


class RuledJudge(FixedJudge):
    """Two reviewer queries a text, none for the text it decides by rule (`ruled`)."""

    def __init__(self, validity: float, ruled: str) -> None:
        super().__init__(validity)
        self.reviewer_queries_per_text, self.ruled = 2, ruled

    def reviewer_queries(self, text):
        return 0 if text == self.ruled else 2


def test_the_step_counts_the_judges_queries_for_its_own_text():
    env, engine = _env(RuledJudge(0.2, ruled="no such text"), "env.reward.invalid_fails=true")
    info = env.step(0)[4]
    assert info["failure"].kind is FailureKind.NOT_INSTRUCTION
    assert info["queries"] == {"expert": 1, "reviewer": 2}
    env, engine = _env(RuledJudge(0.2, ruled=info["rewrite"]), "env.reward.invalid_fails=true")
    info = env.step(0)[4]
    assert info["queries"] == {"expert": 1, "reviewer": 0}


def test_a_valid_rewrite_earns_the_weighted_validity_and_is_reviewed():
    judge = FixedJudge(0.9)
    env, engine = _env(judge, "env.reward.invalid_fails=true", "env.reward.validity_weight=0.5")
    _, reward, _, _, info = env.step(0)
    assert info["failure"] is None and info["reviewed"] and engine.scored == 1
    assert info["reward_components"]["validity"] == pytest.approx(0.45)
    assert reward == pytest.approx(sum(info["reward_components"].values()))


def test_rule_off_keeps_a_low_scored_rewrite_with_its_small_reward():
    env, _ = _env(FixedJudge(0.2), "env.reward.invalid_fails=false",
                  "env.reward.validity_weight=1.0")
    info = env.step(0)[4]
    assert info["failure"] is None and info["reward_components"]["validity"] == \
        pytest.approx(0.2)


def test_judge_is_on_by_default_and_off_unless_the_rule_or_the_reward_uses_it(monkeypatch):
    monkeypatch.setattr("teamsrl.quality.shared_embedder", lambda *a, **k: HashEmbedder())
    engine = Engine()
    client = LLMClient({"expert": engine, "reviewer": engine})
    config = load_config(None, [])
    assert config.env.reward.invalid_fails and config.env.reward.validity_weight == 0.5
    on = make_env(config, client, embedder=HashEmbedder())
    # 'auto': the shipped judge was fitted to SmolLM2, this reviewer is 'fixed' -> embedding
    assert on.judge is not None and on.judge.method == "embedding"
    assert on.judge.reviewer_queries_per_text == 0
    on.reset(seed=0)
    with pytest.raises(ValueError, match="env.reward.invalid_fails=false"):
        on.step(0)  # a hash double is not the judge's MiniLM: refused, never scored
    off = make_env(load_config(None, list(NO_JUDGE)), client, embedder=HashEmbedder())
    assert off.judge is None
    off.reset(seed=0)
    assert off.step(0)[4]["validity"] is None


def test_the_vector_env_judges_a_step_in_one_batch():
    from teamsrl.mdp import make_vector_env

    engine = Engine()
    config = load_config(None, ["env.reward.validity_weight=0.5"])
    judge = FixedJudge(0.7)
    venv = make_vector_env(config, LLMClient({"expert": engine, "reviewer": engine}), 3,
                           embedder=HashEmbedder(), judge=judge)
    venv.reset(seed=0)
    venv.step([0, 1, 2])
    assert judge.asked == [3]


@pytest.mark.parametrize("drop", [True, False])
def test_answers_cut_at_their_budget_are_dropped_by_default(tmp_path, monkeypatch, drop):
    monkeypatch.setattr("teamsrl.embeddings.shared_embedder", lambda *a, **k: HashEmbedder())
    config = load_config(None, [f"run_dir={tmp_path}", "env.horizon=1", "generate.batch_seeds=2",
                                *NO_JUDGE,
                                *([] if drop else ["generate.drop_cut_answers=false"])])
    assert config.generate.drop_cut_answers is drop
    engine = Engine(cut=True)
    gen = BatchGenerator(config, "random", LLMClient({"expert": engine, "reviewer": engine}),
                         "generate-random")
    rows = gen.run([(i, Seed(f"s{i}", f"Write about animal {i}.")) for i in range(2)])
    assert len(rows) == 2 and all(r.output_truncated and r.failure is None for r in rows)
    if drop:
        assert all(r.drop is not None and r.drop.kind is DropKind.ANSWER_CUT for r in rows)
        assert rows[0].to_json()["drop_reason"] == "answer cut at max_tokens"
    else:
        assert all(r.kept for r in rows)
