"""Generation's filters and bookkeeping: near-duplicate removal, failed-evolution drops, the
row log's crash recovery, forced actions. The engine here is deterministic (the properties are
about which rows are dropped and counted, not about text quality), and so is the embedder
(tests/embedding_doubles.py). The paraphrase test needs the real MiniLM: it is in
tests/integration/test_generation.py."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
from embedding_doubles import NO_JUDGE, HashEmbedder

from teamsrl.config import ConfigError, load_config
from teamsrl.generation.choose import Chooser
from teamsrl.generation.episodes import BatchGenerator
from teamsrl.generation.filters import deduplicate, distinct_n, mean_pairwise_distance
from teamsrl.generation.rows import Row, RowLog
from teamsrl.llm.client import LLMClient
from teamsrl.llm.schema import ChatResponse, ScoreResponse
from teamsrl.outcomes import Drop, DropKind, Failure, FailureKind
from teamsrl.seeds import Seed


def _row(seed_index: int, step: int, text: str) -> Row:
    return Row(f"s{seed_index}/{step}", f"s{seed_index}", seed_index, step, instruction=text)


BASE = [
    "Write a short poem about the sea at night, mentioning the moon and two ships.",
    "Explain how photosynthesis converts light into chemical energy in plant cells.",
    "List five practical tips for learning a new programming language quickly.",
    "Describe the causes of the French Revolution in three paragraphs.",
    "Compute the area of a triangle with sides 3, 4 and 5 and show each step.",
]


def test_minhash_drops_planted_near_duplicates_in_any_order():
    rows = [_row(i, 1, t) for i, t in enumerate(BASE)]
    # planted: the same text with one word changed (high Jaccard), later in seed order
    rows.append(_row(10, 1, BASE[0].replace("two", "three")))
    rows.append(_row(11, 2, BASE[3]))  # an exact copy
    results = set()
    for trial in range(5):
        shuffled = rows[:]
        random.Random(trial).shuffle(shuffled)  # shards finishing in another order
        kept, dropped = deduplicate(shuffled, 0.5, 128, None)
        results.add((tuple(r.row_id for r in kept),
                     tuple(sorted((r.row_id, str(why)) for r, why in dropped))))
    assert len(results) == 1
    (kept_ids, drops), = results
    assert kept_ids == ("s0/1", "s1/1", "s2/1", "s3/1", "s4/1")
    assert drops == (("s10/1", "near-duplicate (minhash) of s0/1"),
                     ("s11/2", "near-duplicate (minhash) of s3/1"))


def test_diversity_measures():
    assert distinct_n(["a b c", "a b d"], 2) == pytest.approx(3 / 4)
    v = np.eye(3, dtype=np.float32)
    assert mean_pairwise_distance(v) == pytest.approx(1.0)
    assert mean_pairwise_distance(np.stack([v[0], v[0]])) == pytest.approx(0.0)


class PlantedEngine:
    """Rewrites that fail the elimination rules for every other request; fine answers. Every
    rewrite prompt it receives is kept in `rewrite_prompts`."""

    model_id = "planted"

    def __init__(self):
        self.rewrite_prompts: list[str] = []

    def generate(self, requests):
        out = []
        for r in requests:
            prompt = r.messages[-1]["content"]
            if "#Given Prompt#" in prompt or "Rewritten" in prompt or len(r.messages) > 1:
                self.rewrite_prompts.append("\n".join(m["content"] for m in r.messages))
                bad = r.seed % 2 == 0
                text = APOLOGY if bad else \
                    f"Variant {r.seed}: describe the topic in depth with {r.seed % 97} examples."
            else:
                text = f"Here is a detailed answer number {r.seed}."
            out.append(ChatResponse(text, 12, 9))
        return out

    def score(self, requests):
        return [ScoreResponse((-1.0, -0.5), (1, 2), 9) for _ in requests]

    def count_tokens(self, text):
        return len(text.split())


APOLOGY = "I'm sorry, I cannot do that."


def test_failed_evolutions_dropped_with_reason_counted(tmp_path, monkeypatch):
    monkeypatch.setattr("teamsrl.embeddings.shared_embedder", lambda *a, **k: HashEmbedder())
    config = load_config(None, [f"run_dir={tmp_path}", "env.horizon=3",
                                "generate.batch_seeds=4", *NO_JUDGE])
    engine = PlantedEngine()
    client = LLMClient({"expert": engine, "reviewer": engine})
    gen = BatchGenerator(config, "random", client, "generate-random")
    batch = [(i, Seed(f"s{i}", f"Write a story about animal number {i}.")) for i in range(4)]
    rows = gen.run(batch)
    assert len(rows) == 12
    failed = [r for r in rows if r.failure]
    assert failed, "the planted apologies must fail some evolutions"
    for r in failed:
        assert r.failure == Failure(FailureKind.APOLOGY)
        assert not r.kept and r.drop == Drop(DropKind.FAILED_EVOLUTION, "apology")
        assert r.to_json()["drop_reason"] == "failed evolution: apology"
        assert r.output == "" and r.queries["expert"] == 1  # no answer is paid for
    for r in rows:
        if r.kept:
            assert r.output.startswith("Here is a detailed answer")
            assert r.queries["expert"] == 2
    # the instruction an episode continues from never is a failed rewrite: each step's rewrite
    # prompt holds the seed's last accepted instruction (the seed text until one is accepted)
    assert len(engine.rewrite_prompts) == 12
    assert not [p for p in engine.rewrite_prompts if APOLOGY in p]
    expected = []
    for _, seed in batch:
        steps = sorted((r for r in rows if r.seed_id == seed.id), key=lambda r: r.step)
        assert [r.step for r in steps] == [1, 2, 3]
        current = seed.text
        for r in steps:
            expected.append(current)
            if not r.failure:
                current = r.instruction
    assert any(r.failure and r.step < 3 for r in rows)  # a failure with a step after it
    for text in set(expected):  # texts are unique per seed: counts pair prompts with steps
        assert sum(text in p for p in engine.rewrite_prompts) == expected.count(text), text


def test_forced_actions_and_validation(tmp_path):
    names = ["breadth", "add_constraints", "deepening", "concretizing",
             "increase_reasoning_steps", "complicate_input"]
    config = load_config(None, ["generate.forced_actions={1: breadth, 3: deepening}"])
    chooser = Chooser(config, names, "random")
    obs = np.zeros((3, 10), np.float32)
    assert chooser.choose(["a", "b", "c"], 1, obs) == [0, 0, 0]
    assert chooser.choose(["a", "b", "c"], 3, obs) == [2, 2, 2]
    # random steps depend only on (run seed, seed id, step): not on batch-mates
    assert chooser.choose(["a", "b"], 2, obs[:2])[1] == chooser.choose(["z", "b"], 2, obs[:2])[1]
    # an unknown operation fails when the config loads, before any model or policy
    with pytest.raises(ConfigError, match=r"key 'generate.forced_actions.2' = 'widen': expected "
                       r"one of the action set's operations \['breadth'"):
        load_config(None, ["generate.forced_actions={2: widen}"])
    with_stop = load_config(None, ["actions.include_stop=true",
                                   "generate.forced_actions={2: stop}"])
    assert with_stop.generate.forced_actions == {2: "stop"}


class _FixedPolicy:
    """Stands in for a loaded policy: the same action distribution in every state."""

    def __init__(self, probs):
        self.probs = np.asarray(probs, np.float64)

    def action_probabilities(self, obs):
        return np.tile(self.probs, (len(obs), 1))


def test_policy_actions_are_sampled_by_default_and_argmax_when_greedy():
    names = ["breadth", "add_constraints", "deepening", "concretizing",
             "increase_reasoning_steps", "complicate_input"]
    probs = [0.5, 0.0, 0.3, 0.2, 0.0, 0.0]
    ids = [f"seed_{i}" for i in range(600)]
    obs = np.zeros((len(ids), 10), np.float32)

    sampled = Chooser(load_config(None, []), names, "random")
    assert sampled.greedy is False  # the default
    sampled.policy = _FixedPolicy(probs)
    picks = sampled.choose(ids, 2, obs)
    counts = np.bincount(picks, minlength=len(names)) / len(picks)
    assert counts[1] == counts[4] == counts[5] == 0  # never an action of probability 0
    assert np.allclose(counts, probs, atol=0.06), counts
    assert sampled.choose(ids, 2, obs) == picks  # seeded: a rerun draws the same
    assert sampled.choose(ids, 3, obs) != picks  # a new draw per step

    greedy = Chooser(load_config(None, ["generate.sampling=greedy"]), names, "random")
    greedy.policy = _FixedPolicy(probs)
    assert greedy.choose(ids, 2, obs) == [0] * len(ids)


def test_row_log_recovers_from_a_torn_write(tmp_path):
    path = tmp_path / "rows.jsonl"
    log = RowLog(path)
    dropped = Row("s0/2", "s0", 0, 2, failure=Failure(FailureKind.TOO_LONG, "9 > 8"),
                  drop=Drop(DropKind.FAILED_EVOLUTION, "too long: 9 > 8"))
    log.append([_row(0, 1, "Name a river."), dropped], ["s0"])
    with path.open("a") as f:  # a batch that died mid-write: rows without seed_done, torn line
        f.write(json.dumps(_row(1, 1, "Name a lake.").to_json()) + "\n")
        f.write('{"kind": "row", "seed_id": "s1", "ro')
    again = RowLog(path)
    assert again.done == {"s0"} and [r.row_id for r in again.rows] == ["s0/1", "s0/2"]
    assert again.rows[1] == dropped  # typed failure and drop read back, not parsed from text
    assert path.read_text().count("\n") == 3  # the unfinished seed's records are gone
