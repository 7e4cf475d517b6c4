"""The validity judge without models: the shipped JSON loads and scores (hash embedder), its
thresholds, config validation, the judge file's checks and the cheap features.

The real MiniLM on the labelled test part, and the reviewer through the client, run in
tests/integration/test_quality_judge.py.
"""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
from pydantic import ValidationError

from teamsrl.quality import (
    CHEAP_FEATURES,
    DEFAULT_JUDGE_FILE,
    REPLY_CANDIDATES,
    REVIEWER_CANDIDATES,
    REVIEWER_FEATURES,
    JudgeFile,
    LinearModel,
    QualityConfig,
    ValidityJudge,
    cheap_features,
    feature_names,
    fluency_request,
    opening,
    points_at_missing_context,
    reply_request,
    resolve_method,
    reviewer_prompt_digest,
    reviewer_request,
)
from tests.embedding_doubles import HashEmbedder


class MiniLMShaped(HashEmbedder):
    """The hash double under MiniLM's name: the judge's arithmetic, not its accuracy, is tested."""

    model_id = "embedded:all-minilm-l6-v2"

TEXTS = ["Describe how a rainbow forms, step by step.",
         "Here's a rewritten version of the instruction:",
         "The capital of France is Paris."]


def small_judge_file(coef_sign: float = 1.0) -> JudgeFile:
    """A judge whose only weight is on the `meta_start` feature (negative: invalid)."""
    names = feature_names(384)
    coef = [0.0] * len(names)
    coef[names.index("meta_start")] = -8.0 * coef_sign
    model = LinearModel(names, coef, 4.0, 0.5)
    return JudgeFile("embedded:all-minilm-l6-v2", 384, "embedded:smollm2-135m-instruct",
                     reviewer_prompt_digest(), model, None, 0.3, {})


def test_config_defaults_and_bad_values_name_the_key():
    cfg = QualityConfig()
    assert cfg.method == "auto" and cfg.threshold is None
    with pytest.raises(ValidationError, match="method"):
        QualityConfig(method="vibes")
    with pytest.raises(ValidationError, match="threshold"):
        QualityConfig(threshold=1.5)
    with pytest.raises(ValidationError, match="extra"):
        QualityConfig(treshold=0.5)
    for name, field in QualityConfig.model_fields.items():
        assert field.description, f"QualityConfig.{name} has no description"


def test_shipped_judge_loads_and_scores_with_the_hash_embedder():
    judge = ValidityJudge.from_config(QualityConfig(method="embedding"), embedder=MiniLMShaped())
    scores = judge.validity(TEXTS)
    assert len(scores) == 3 and all(isinstance(s, float) and 0.0 < s < 1.0 for s in scores)
    assert judge.validity([]) == []
    assert judge.threshold == JudgeFile.load().threshold("embedding")
    assert 0.0 < judge.threshold < 1.0


def test_shipped_judge_matches_this_code():
    """Changing the features or the reviewer prompt without retraining fails here."""
    weights = JudgeFile.load()
    assert weights.embedding.features == feature_names(weights.embedding_dim)
    assert weights.combined is not None
    assert weights.combined.features == [*weights.embedding.features, *REVIEWER_FEATURES]
    assert weights.reviewer_prompt == reviewer_prompt_digest()
    dev_lines = (DEFAULT_JUDGE_FILE.parents[2] / weights.provenance["trained_on"]).read_text()
    assert weights.provenance["items"] == len(dev_lines.splitlines())


def small_judge(path, threshold: float | None = None) -> ValidityJudge:
    """The embedding judge of the file at `path`, on the hash embedder."""
    config = QualityConfig(method="embedding", judge_file=str(path), threshold=threshold)
    return ValidityJudge.from_config(config, embedder=MiniLMShaped())


def test_threshold_override_and_is_valid(tmp_path):
    path = tmp_path / "judge.json"
    small_judge_file().save(path)
    judge = small_judge(path)
    scores = judge.validity(TEXTS)
    # sigmoid(4) for plain texts, sigmoid(4 - 8) for the meta-text
    assert scores[0] == pytest.approx(1 / (1 + np.exp(-4.0)))
    assert scores[1] == pytest.approx(1 / (1 + np.exp(4.0)))
    assert judge.is_valid(TEXTS) == [True, False, True]
    assert small_judge(path, threshold=0.0).is_valid(TEXTS) == [True, True, True]
    assert small_judge(path, threshold=1.0).is_valid(TEXTS) == [False, False, False]


def test_flipped_weights_flip_the_verdict(tmp_path):
    path = tmp_path / "judge.json"
    small_judge_file(coef_sign=-1.0).save(path)
    assert small_judge(path, threshold=0.99).is_valid(TEXTS) == [False, True, False]


def test_reviewer_methods_need_a_client_with_a_reviewer():
    for method in ("reviewer", "combined"):
        with pytest.raises(ValueError, match=f"method = '{method}'.*'reviewer' role, got None"):
            ValidityJudge.from_config(QualityConfig(method=method))


def test_judge_file_errors(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        JudgeFile.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="invalid JSON"):
        JudgeFile.load(tmp_path / "bad.json")
    small_judge_file().save(tmp_path / "j.json")
    data = json.loads((tmp_path / "j.json").read_text())
    (tmp_path / "old.json").write_text(json.dumps(data | {"format": 0}))
    with pytest.raises(ValueError, match="format 0, expected 2"):
        JudgeFile.load(tmp_path / "old.json")
    assert JudgeFile.load(tmp_path / "j.json") == small_judge_file()
    with pytest.raises(ValueError, match="no 'combined' model"):
        small_judge_file().threshold("combined")


def test_another_embedder_or_width_is_refused(tmp_path):
    class Narrow(MiniLMShaped):
        dim = 16

    judge = ValidityJudge.from_config(QualityConfig(method="embedding"), embedder=Narrow())
    with pytest.raises(ValueError, match=r"embedder 'embedded:all-minilm-l6-v2' \(16 dims\)"):
        judge.validity(TEXTS)
    judge = ValidityJudge.from_config(QualityConfig(method="embedding"), embedder=HashEmbedder())
    with pytest.raises(ValueError, match="embedder None .* is not the model the judge was"):
        judge.validity(TEXTS)
    with pytest.raises(ValueError, match="expected 779 feature columns, got 3"):
        small_judge_file().embedding.probability(np.zeros((1, 3)))


def features_of(text: str) -> dict[str, float]:
    return dict(zip(CHEAP_FEATURES, cheap_features(text), strict=True))


def test_cheap_features():
    f = features_of("Here's a rewritten version: list 3 fruits")
    assert f["meta_start"] == f["meta_word"] == 1.0 and f["verb_first"] == 0.0
    assert features_of("Sentiment: disappointed")["label_first"] == 1.0
    f = features_of("Explain how a rainbow forms.")
    assert f["verb_first"] == 1.0 and f["statement_first"] == f["question"] == 0.0
    f = features_of("What is 2 + 2?")
    assert f["question"] == 1.0 and f["verb_first"] == 0.0
    f = features_of("The answer is 42.")
    assert f["statement_first"] == 1.0 and f["verb_first"] == 0.0
    f = features_of("1. Sort the list\n2. Count")
    assert f["list_first"] == 1.0
    f = features_of("Remove the toxic word from the sentence.")
    assert f["missing_context"] == f["refers_to_context"] == 1.0
    f = features_of('Remove the toxic word from the sentence: "This is so bad."')
    assert f["missing_context"] == 0.0 and f["refers_to_context"] == 1.0
    for pointer in ("Write a report based on the given criteria.",
                    "Suggest a word that keeps the original meaning.",
                    "Generate a reply from the previous chat history.",
                    "Add a new requirement to this instruction."):
        assert features_of(pointer)["points_elsewhere"] == 1.0, pointer
    assert features_of("Explain how a rainbow forms.")["points_elsewhere"] == 0.0
    assert all(0.0 <= v <= 1.0 for v in cheap_features("word " * 10_000))
    assert cheap_features("") == [0.0] * len(CHEAP_FEATURES)
    assert opening("  Explain   how a rainbow forms. ", 3) == "Explain how a"


def test_reviewer_request_is_few_shot_and_ends_with_the_text():
    req = reviewer_request("  Name a red fruit.  ")
    assert req.candidates == REVIEWER_CANDIDATES
    assert req.messages[0]["role"] == "system"
    assert req.messages[-1]["role"] == "user" and "Text: Name a red fruit.\n" in \
        req.messages[-1]["content"]
    answers = [m["content"] for m in req.messages if m["role"] == "assistant"]
    assert set(answers) == set(REVIEWER_CANDIDATES)
    assert "x" * 2000 in reviewer_request("x" * 5000).messages[-1]["content"]
    assert "x" * 2001 not in reviewer_request("x" * 5000).messages[-1]["content"]


def test_fluency_request_scores_the_text_as_the_answer_to_a_task_request():
    req = fluency_request("  Name a red fruit.  ")
    assert req.candidates == ("Name a red fruit.",)
    assert [m["role"] for m in req.messages] == ["user"]
    assert fluency_request("x" * 5000).candidates == ("x" * 2000,)
    assert fluency_request("   ").candidates == ("(empty)",)


def test_reply_request_sends_the_text_as_the_user_message():
    req = reply_request("  Remove the toxic word from the sentence.  ")
    assert req.candidates == REPLY_CANDIDATES
    assert req.messages == ({"role": "user",
                             "content": "Remove the toxic word from the sentence."},)
    assert reply_request("x" * 5000).messages[0]["content"] == "x" * 2000


def test_missing_context_rule():
    for text in ("Remove the toxic word from the sentence.",
                 "Write a report based on the given criteria.",
                 "Generate a reply from the previous chat history."):
        assert points_at_missing_context(text), text
    for text in ('Remove the toxic word from the sentence: "This is so bad."',
                 "Find the odd one out in the list below.\n- cat\n- dog\n- car",
                 "Explain how a rainbow forms."):
        assert not points_at_missing_context(text), text


def test_fragments_with_a_dangling_pronoun_unseen_options_or_only_a_label_are_ruled_out():
    for text in ("Explain how to do that, and how to do it with a big impact.",
                 "Discuss how this will have a positive impact on your career.",
                 "Select A, B, C, or D for the final answer.",
                 "Behavior: cry.", "List: [1, 2, 5, 9, 101]", "Right: Left.",
                 "Answer: Paris is the capital of France."):
        assert points_at_missing_context(text), text
    for text in ("Explain why it is important to sleep well.",
                 "Describe a bicycle and how it works.",
                 "Which planet is largest? Select A, B, C, or D.\n(A) Mars\n(B) Venus\n"
                 "(C) Jupiter\n(D) Earth",
                 'Translate: "I am going to the market tomorrow."',
                 "Question: using the facts below, write a short story.\n- a cat\n- a hat",
                 "Title: The Sea. Write a poem with this title."):
        assert not points_at_missing_context(text), text


def test_missing_context_texts_are_invalid_unless_left_to_the_model(tmp_path):
    path = tmp_path / "judge.json"
    small_judge_file().save(path)
    texts = ["Remove the toxic word from the sentence.", "Explain how a rainbow forms."]
    on = small_judge(path)
    assert on.validity(texts)[0] == 0.0 and on.validity(texts)[1] > 0.9
    off = ValidityJudge.from_config(QualityConfig(method="embedding", judge_file=str(path),
                                                  missing_context="model"),
                                    embedder=MiniLMShaped())
    assert off.validity(texts)[0] == pytest.approx(on.validity(texts)[1])


class _Client:
    """Only what `resolve_method` reads: the reviewer's model name."""

    def __init__(self, model: str) -> None:
        self.model = model

    def spec(self, role):
        return type("Spec", (), {"model": self.model})()


def test_auto_is_the_chosen_method_where_it_can_run():
    shipped = JudgeFile.load()
    assert resolve_method("auto", shipped, _Client(shipped.reviewer_model)) == \
        shipped.provenance["chosen_method"]
    weights = replace(shipped, provenance=shipped.provenance | {"chosen_method": "combined"})
    fitted = _Client(weights.reviewer_model)
    assert resolve_method("auto", weights, fitted) == "combined"
    assert resolve_method("auto", weights, _Client("meta-llama/Llama-3.1-70B")) == "embedding"
    assert resolve_method("auto", weights, None) == "embedding"
    assert resolve_method("reviewer", weights, None) == "reviewer"  # explicit: as it is
    judge = ValidityJudge(QualityConfig(), weights, client=fitted)
    assert judge.method == "combined" and judge.reviewer_queries_per_text == 2
    assert judge.threshold == weights.combined.threshold
    cheap = replace(shipped, provenance=shipped.provenance | {"chosen_method": "embedding"})
    assert resolve_method("auto", cheap, fitted) == "embedding"
    other = ValidityJudge(QualityConfig(), weights, client=_Client("other"))
    assert other.method == "embedding" and other.threshold == weights.embedding.threshold
    with pytest.raises(ValueError, match="set env.quality.method=embedding"):
        ValidityJudge(QualityConfig(method="combined"), weights, client=_Client("other"))


class _ScoringClient(_Client):
    """A reviewer double for the combined method: every candidate log-prob -1; it records each
    request it is sent (the property tested does not depend on the scores)."""

    def __init__(self, model: str) -> None:
        super().__init__(model)
        self.sent: list = []

    def score(self, role, requests, stage=None):
        from types import SimpleNamespace

        self.sent += list(requests)
        return [SimpleNamespace(logprobs=[-1.0] * len(r.candidates),
                                num_tokens=[3] * len(r.candidates)) for r in requests]


def test_a_text_the_rule_decides_costs_no_reviewer_query():
    shipped = JudgeFile.load()
    client = _ScoringClient(shipped.reviewer_model)
    judge = ValidityJudge(QualityConfig(method="combined"), shipped, client=client,
                          embedder=MiniLMShaped())
    texts = ["Remove the toxic word from the sentence.", "Explain how a rainbow forms.",
             "Behavior: cry."]
    scores = judge.validity(texts)
    assert scores[0] == scores[2] == 0.0 and 0.0 < scores[1] < 1.0
    assert client.sent == [fluency_request(texts[1]), reply_request(texts[1])]
    assert [judge.reviewer_queries(t) for t in texts] == [0, 2, 0]
    left = ValidityJudge(QualityConfig(method="combined", missing_context="model"), shipped,
                         client=_ScoringClient(shipped.reviewer_model), embedder=MiniLMShaped())
    assert [left.reviewer_queries(t) for t in texts] == [2, 2, 2]
    left.validity(texts)
    assert len(left.client.sent) == 6
