"""The reward pieces that need no model: elimination rules, rating parser, novelty, weighting.

The reviewer's verdict on the same (old, new) table runs with the real model in
tests/integration/test_instruction_mdp.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from teamsrl.actions import ActionSet
from teamsrl.outcomes import Failure, FailureKind
from teamsrl.rewards import (
    VERDICT_CANDIDATES,
    RewardConfig,
    combine,
    failed_evolution,
    graded_reward,
    novelty,
    parse_graded,
    verdict_request,
)

OLD = "Write a poem about autumn."
# (old, new, expected reason prefix or "" for a rewrite that passes the rules)
CASES = [
    ("", "", "empty"),
    (OLD, "", "empty"),
    (OLD, "   \n\t ", "empty"),
    (OLD, OLD, "unchanged"),
    (OLD, "  write a POEM about autumn ", "unchanged"),
    (OLD, "x" * 10_000, "too long"),
    (OLD, "Write a poem about autumn. " * 400, "too long"),
    (OLD, "...!?", "only punctuation and stop words"),
    (OLD, "It is what it is, and so on.", "only punctuation and stop words"),
    (OLD, "Sorry, I cannot help with that request.", "apology"),
    (OLD, "As an AI, I can't write poems about seasons.", "apology"),
    (OLD, "#Rewritten Prompt#: Write a poem about autumn leaves.", "copies template"),
    (OLD, "Here is the rewritten prompt: a poem on autumn rain.", "copies template"),
    (OLD, "The given prompt asks for a poem; write it in four lines.", "copies template"),
    (OLD, "New instruction: Write a sonnet about autumn.", "copies template"),
    (OLD, "Write a haiku about autumn, with the word 'amber' in the last line.", ""),
    (OLD, "Write a poem about autumn in exactly four lines, each starting with L.", ""),
    ("What is 2+2?", "Compute 2+2, then multiply the result by 3 and explain each step.", ""),
    (OLD, "I am sorry to say that autumn " + "leaves fall and the days grow short " * 12
     + "- write a long elegy about it.", ""),  # 'sorry' in a long text is no apology reply
]


@pytest.mark.parametrize(("old", "new", "expected"), CASES)
def test_elimination_rules_table(old, new, expected):
    reason = failed_evolution(old, new)
    if expected:
        assert reason is not None and reason.kind is FailureKind(expected), (new[:60], reason)
    else:
        assert reason is None, (new[:60], reason)


def test_rewrite_that_copies_the_prompts_text_fails():
    op = ActionSet.from_config()[ActionSet.from_config().index("breadth")]
    texts = op.prompt_texts()
    assert op.example[1] in texts and len(texts) >= 2
    example, task = op.example[1], texts[1]
    for copy in (example, f"{task}\nName three tropical fruits.", example.upper()):
        why = failed_evolution("Name three fruits.", copy, template_texts=texts)
        # a template marker or the prompt's own text
        assert why.kind in (FailureKind.COPIES_TEMPLATE, FailureKind.COPIES_PROMPT), copy
    why = failed_evolution("Sort it.", "Sort it. " + texts[-1], template_texts=texts,
                           config=RewardConfig(template_markers=[]))
    assert why == Failure(FailureKind.COPIES_PROMPT) and str(why) == "copies the prompt's text"
    assert failed_evolution("Name three fruits.", "Name three tropical fruits.",
                            template_texts=texts) is None


def test_length_limit_and_markers_come_from_config():
    cfg = RewardConfig(max_rewrite_chars=30, template_markers=["banana"])
    long = failed_evolution(OLD, "Write a poem about winter nights.", cfg)
    assert long == Failure(FailureKind.TOO_LONG, "33 characters > 30")
    marker = failed_evolution(OLD, "A banana poem.", cfg)
    assert marker == Failure(FailureKind.COPIES_TEMPLATE, "'banana'")
    assert str(marker) == "copies template: 'banana'"  # the text rows and logs carry
    assert failed_evolution(OLD, "New instruction: haiku", cfg) is None  # default list replaced


@pytest.mark.parametrize(("text", "value"), [
    ("7", 7), ("Score: 9/10", 9), ("I'd say 10.", 10), ("1", 1), ("rating 3 out of 10", 3),
    ("", None), ("great!", None), ("0", None), ("11", None), ("7.5", None), ("-", None),
    ("2.5 then 6", 6),
])
def test_parse_graded_is_robust(text, value):
    assert parse_graded(text) == value


def test_graded_reward_is_neutral_when_unparseable():
    assert graded_reward(None) == 0.0
    assert graded_reward(1) == -1.0 and graded_reward(10) == 1.0


def test_novelty_against_references():
    a, b = np.array([1.0, 0.0], dtype=np.float32), np.array([0.0, 1.0], dtype=np.float32)
    assert novelty(a, np.zeros((0, 2), dtype=np.float32)) == 1.0
    assert novelty(a, np.stack([a])) == pytest.approx(0.0)
    assert novelty(a, np.stack([b])) == pytest.approx(1.0)
    assert novelty(a, np.stack([-a])) == 1.0  # clipped to 0..1
    c = np.array([np.sqrt(0.5), np.sqrt(0.5)], dtype=np.float32)
    assert novelty(c, np.stack([a, b])) == pytest.approx(1 - np.sqrt(0.5), abs=1e-6)


def test_combine_weights_and_sums():
    cfg = RewardConfig(verdict_weight=2.0, novelty_weight=0.5, failure_penalty=1.5,
                       expert_query_cost=0.1, reviewer_query_cost=0.05)
    parts = combine(cfg, verdict=0.75, novelty=0.4, graded=1.0, failed=False, expert_queries=1,
                    reviewer_queries=1)
    assert parts["verdict"] == pytest.approx(1.5) and parts["novelty"] == pytest.approx(0.2)
    assert parts["graded"] == 0.0  # rating is off by default
    assert parts["cost"] == pytest.approx(-0.15)
    assert parts["total"] == pytest.approx(1.5 + 0.2 - 0.15)
    failed = combine(cfg, verdict=0.0, novelty=0.0, graded=0.0, failed=True, expert_queries=1,
                     reviewer_queries=0)
    assert failed["total"] == pytest.approx(-1.6)
    on = combine(cfg.model_copy(update={"graded_score": True}), verdict=0, novelty=0,
                 graded=-1.0, failed=False, expert_queries=0, reviewer_queries=0)
    assert on["graded"] == pytest.approx(-0.5)


def test_verdict_request_scores_two_answers_in_one_request():
    req = verdict_request("Sort the list.", "Sort the list in descending order.")
    assert req.candidates == VERDICT_CANDIDATES == ("Equal", "Not Equal")
    assert "Sort the list in descending order." in req.messages[-1]["content"]


def test_reward_config_rejects_bad_values():
    with pytest.raises(ValidationError, match="failure_penalty"):
        RewardConfig(failure_penalty=-1)
    with pytest.raises(ValidationError, match="extra"):
        RewardConfig(verdict_wieght=1.0)


def test_a_rewrite_cut_at_max_tokens_fails_unless_turned_off():
    cut = "Write a haiku about autumn, with the word 'amber' in the"
    assert failed_evolution(OLD, cut) is None  # stopped on its own: passes
    assert failed_evolution(OLD, cut, cut=True) == Failure(FailureKind.CUT)
    # a content rule's reason wins
    assert failed_evolution(OLD, OLD, cut=True) == Failure(FailureKind.UNCHANGED)
    off = RewardConfig(cut_rewrite_fails=False)
    assert failed_evolution(OLD, cut, off, cut=True) is None
