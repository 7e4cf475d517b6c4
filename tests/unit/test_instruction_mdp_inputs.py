"""The instruction MDP's plumbing: spaces, episode bookkeeping, batching, autoreset, bad input.

No model here. Where a test steps the env, the property is about counts, shapes and control flow,
not text, so a deterministic engine and a hashing embedder stand in; everything about text runs
with the real models in tests/integration/test_instruction_mdp.py.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from embedding_doubles import NO_JUDGE, HashEmbedder

import envs
from envs.config import EnvConfig
from envs.instruction_mdp import InstructionMDPEnv, derive_seed
from teamsrl.config import ConfigError, ExperimentConfig, load_config
from teamsrl.llm.client import LLMClient
from teamsrl.llm.schema import ChatResponse, ScoreResponse
from teamsrl.mdp import make_env as experiment_env
from teamsrl.mdp import make_vector_env
from teamsrl.seeds import SeedError


class RecordingEngine:
    """Deterministic stand-in that records the size of every batch it receives."""

    model_id = "recording"

    def __init__(self) -> None:
        self.chat_batches: list[int] = []
        self.score_batches: list[int] = []
        self.chat_requests: list = []

    def generate(self, requests):
        self.chat_batches.append(len(requests))
        self.chat_requests.extend(requests)
        return [ChatResponse(f"Describe topic {hashlib.sha1(repr(r).encode()).hexdigest()[:8]} "
                             "in depth.", 10, 6) for r in requests]

    def score(self, requests):
        self.score_batches.append(len(requests))
        return [ScoreResponse((-1.0, -2.0), (1, 2), 9) for _ in requests]

    def count_tokens(self, text):
        return len(text.split())


def make_env(cfg=None, engine=None, **kw):
    engine = engine or RecordingEngine()
    client = LLMClient({"expert": engine, "reviewer": engine})
    cfg = cfg or load_config(None, list(NO_JUDGE))
    return experiment_env(cfg, client, embedder=HashEmbedder(), **kw), engine


def test_registered_with_horizon_time_limit():
    spec = envs.gymnasium.spec(envs.INSTRUCTION_MDP_ID)
    assert spec.max_episode_steps == 6 and spec.nondeterministic is False
    assert spec.vector_entry_point == "envs.vector:InstructionMDPVectorEnv"


def test_spaces_and_reset_observation():
    env, engine = make_env()
    assert env.action_space.n == 6
    assert env.observation_space.shape == (384 + 6 + 1,)
    obs, info = env.reset(seed=3)
    assert obs in env.observation_space
    assert obs[384:].tolist() == [0.0] * 7  # no last action, step fraction 0
    assert info["instruction"] in {s.instruction for s in env.seeds.seeds}
    assert engine.chat_batches == []  # reset sends no query


def test_step_info_rewards_and_truncation():
    cfg = load_config(None, list(NO_JUDGE))
    cfg.env.horizon = 2
    env, engine = make_env(cfg)
    env.reset(seed=0)
    obs, reward, term, trunc, info = env.step(2)
    assert (term, trunc) == (False, False) and type(term) is bool
    assert obs[384 + 2] == 1.0 and obs[-1] == pytest.approx(0.5)
    assert info["queries"] == {"expert": 1, "reviewer": 1}
    assert info["action_name"] == "deepening" and info["failure"] is None
    assert info["instruction"] == info["rewrite"] != info["instruction_before"]
    assert info["verdict"] == pytest.approx(1 / (1 + np.e))  # softmax of (-1, -2), 2nd answer
    assert reward == pytest.approx(sum(info["reward_components"].values()))
    *_, trunc, _ = env.step(0)
    assert trunc is True
    with pytest.raises(RuntimeError, match="reset"):
        env.step(0)


def test_a_verdict_that_weighs_nothing_is_not_asked():
    """verdict_weight 0: the rewrite is not sent to the reviewer (its answer would change no
    reward) and no reviewer query is counted; the rest of the step is unchanged."""
    cfg = load_config(None, [*NO_JUDGE, "env.reward.verdict_weight=0",
                             "env.reward.reviewer_query_cost=0.5"])
    env, engine = make_env(cfg)
    env.reset(seed=0)
    _, reward, _, _, info = env.step(2)
    assert engine.chat_batches == [1] and engine.score_batches == []
    assert info["queries"] == {"expert": 1, "reviewer": 0} and info["reviewed"] is False
    assert info["verdict"] == 0.0 and info["failure"] is None
    assert info["reward_components"]["cost"] == pytest.approx(-cfg.env.reward.expert_query_cost)
    assert reward == pytest.approx(sum(info["reward_components"].values()))


def test_stop_ends_the_episode_without_a_query():
    cfg = load_config(None, list(NO_JUDGE))
    cfg.actions.include_stop = True
    env, engine = make_env(cfg)
    env.reset(seed=0)
    _, reward, term, trunc, info = env.step(env.actions.index("stop"))
    assert term is True and trunc is False and reward == 0.0
    assert info["queries"] == {"expert": 0, "reviewer": 0}
    assert engine.chat_batches == [] and engine.score_batches == []


def test_bad_actions_and_options_are_named():
    env, _ = make_env()
    env.reset(seed=0)
    with pytest.raises(ValueError, match=r"action = 6: expected an int in \[0, 6\)"):
        env.step(6)
    with pytest.raises(ValueError, match="unknown key"):
        env.reset(options={"instuction": "x"})
    with pytest.raises(ValueError, match="non-empty string"):
        env.reset(options={"instruction": "  "})
    _, info = env.reset(options={"instruction": "Name a bird."})
    assert info["instruction"] == "Name a bird." and info["seed_id"] == "options"


def test_seeded_reset_restarts_episode_count_and_request_seeds():
    env, _ = make_env()
    env.reset(seed=5)
    first = env.step(0)[4]["rewrite"]
    env.reset()
    assert env.step(0)[4]["episode"] == 1
    _, info = env.reset(seed=5)
    assert info["episode"] == 0 and env.step(0)[4]["rewrite"] == first
    assert derive_seed(5, 0, 0, "expert") != derive_seed(5, 1, 0, "expert")


def test_vector_step_sends_one_batch_per_role():
    engine = RecordingEngine()
    client = LLMClient({"expert": engine, "reviewer": engine})
    venv = make_vector_env(load_config(None, list(NO_JUDGE)), client, 4, embedder=HashEmbedder())
    obs, infos = venv.reset(seed=1)
    assert obs.shape == (4, 391) and venv.num_envs == 4
    venv.step(np.array([0, 1, 2, 3]))
    assert engine.chat_batches == [4] and engine.score_batches == [4]


def test_vector_next_step_autoreset():
    engine = RecordingEngine()
    cfg = load_config(None, list(NO_JUDGE))
    cfg.env.horizon = 1
    venv = make_vector_env(cfg, LLMClient({"expert": engine, "reviewer": engine}), 2,
                           embedder=HashEmbedder())
    venv.reset(seed=0)
    _, _, term, trunc, _ = venv.step([0, 1])
    assert trunc.tolist() == [True, True] and term.tolist() == [False, False]
    obs, rewards, term, trunc, infos = venv.step([0, 1])  # actions ignored: sub-envs reset
    assert rewards.tolist() == [0.0, 0.0] and not trunc.any()
    assert engine.chat_batches == [2] and infos["episode"].tolist() == [1, 1]
    assert obs[:, -1].tolist() == [0.0, 0.0]
    venv.step([2, 3])
    assert engine.chat_batches == [2, 2]


def _rllib_creator(monkeypatch, engine):
    """The RLlib env creator with the Serve app replaced by a local client on `engine`."""
    from teamsrl.policy import train
    from teamsrl.serving.client import ServeLLMClient

    connected = []

    def connect(app, llm, **kw):
        connected.append(app)
        return LLMClient({"expert": engine, "reviewer": engine})

    monkeypatch.setattr(ServeLLMClient, "connect", staticmethod(connect))
    monkeypatch.setattr("teamsrl.embeddings.shared_embedder", lambda *a, **k: HashEmbedder())
    return train.make_env, connected


class _EnvContext(dict):
    """RLlib's EnvContext: the env config dict with the runner's index as an attribute."""

    worker_index = 2


def test_the_one_rllib_env_creator_dispatches_on_num_envs(monkeypatch):
    from envs.vector import InstructionMDPVectorEnv
    from teamsrl.policy.train import SERVE_APP_KEY

    creator, connected = _rllib_creator(monkeypatch, RecordingEngine())
    dump = ExperimentConfig(seed=9).model_dump(mode="json") | {SERVE_APP_KEY: "app"}
    vector = creator(_EnvContext(dump | {"num_envs": 3}))
    single = creator(_EnvContext(dump))
    assert isinstance(vector.env, InstructionMDPVectorEnv) and vector.num_envs == 3
    assert isinstance(single, InstructionMDPEnv) and connected == ["app", "app"]
    # runner w's sub-env i defaults to seed + 10,000 w + i
    assert [e.default_seed for e in vector.env.envs] == [20_009, 20_010, 20_011]
    assert single.default_seed == 20_009


@pytest.mark.parametrize(("data", "key"), [
    ({"env": {"horizon": 0}}, "env.horizon"),
    ({"env": {"horizn": 3}}, "env.horizn"),
    ({"env": {"reward": {"novelty_pool_size": -1}}}, "env.reward.novelty_pool_size"),
    ({"actions": {"operations": ["breadth", "breadth"]}}, "actions"),
    ({"actions": {"operations": []}}, "actions"),
])
def test_bad_env_config_fails_before_any_model(monkeypatch, data, key):
    from teamsrl.policy.train import SERVE_APP_KEY

    creator, connected = _rllib_creator(monkeypatch, RecordingEngine())
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        creator(data | {SERVE_APP_KEY: "app"})
    assert connected == []  # refused before connecting to any model


def test_the_env_takes_its_own_config_not_an_experiment():
    client = LLMClient({"expert": RecordingEngine()})
    with pytest.raises(TypeError, match="expected an EnvConfig, got dict"):
        InstructionMDPEnv(ExperimentConfig().model_dump(), client=client,
                          embedder=HashEmbedder())
    env = InstructionMDPEnv(EnvConfig(horizon=2, reward={"invalid_fails": False,
                                                         "validity_weight": 0}),
                            client=client, embedder=HashEmbedder())
    assert env.config.horizon == 2 and env.actions.names[0] == "breadth"


def write_lines(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def seeded_cfg(path):
    cfg = load_config(None, list(NO_JUDGE))
    cfg.env.seed_file = str(path)
    return cfg


def test_missing_or_empty_seed_file_is_a_clear_error(tmp_path):
    with pytest.raises(SeedError, match="not found"):
        make_env(seeded_cfg(tmp_path / "nope.jsonl"))
    with pytest.raises(SeedError, match="no usable instruction"):
        make_env(seeded_cfg(write_lines(tmp_path / "empty.jsonl", [])))
    with pytest.raises(SeedError, match="no usable instruction"):
        make_env(seeded_cfg(write_lines(tmp_path / "blank.jsonl", ["", "  ", ""])))


def test_bad_seed_lines_are_skipped_and_reported(tmp_path):
    path = write_lines(tmp_path / "mixed.jsonl", [
        json.dumps({"instruction": "Name a river."}),
        "",
        "this is not json",
        json.dumps({"instruction": "x" * 50_000}),
        "   ",
        json.dumps({"instruction": "Count to five."}),
    ])
    env, _ = make_env(seeded_cfg(path))
    assert [s.instruction for s in env.seeds.seeds] == ["Name a river.", "Count to five."]
    reasons = " ".join(r for _, r in env.seeds.skipped)
    assert "not JSON" in reasons and "too long: 50000" in reasons
    for seed in range(6):
        assert env.reset(seed=seed)[1]["instruction"] in {"Name a river.", "Count to five."}


def test_seed_inputs_are_part_of_the_evolved_text(tmp_path):
    """A seed's input (an `input` column or Self-Instruct's `instances[0].input`) follows its
    instruction after a blank line: "the following email:" must come with the email."""
    path = write_lines(tmp_path / "inputs.jsonl", [
        json.dumps({"id": "si", "instruction": "Title the following email:",
                    "instances": [{"input": "Hi Ann,\nlunch on Friday?", "output": "Lunch"}]}),
        json.dumps({"id": "col", "instruction": "Sort these numbers.", "input": " 3, 1, 2 "}),
        json.dumps({"id": "none", "instruction": "Name a river.", "instances": []}),
    ])
    env, engine = make_env(seeded_cfg(path))
    texts = {s.id: s.text for s in env.seeds.seeds}
    assert texts == {"si": "Title the following email:\n\nHi Ann,\nlunch on Friday?",
                     "col": "Sort these numbers.\n\n3, 1, 2", "none": "Name a river."}
    seen = {env.reset(seed=seed)[1]["instruction"] for seed in range(12)}
    assert seen == set(texts.values())  # the env evolves the whole text
    env.reset(options={"instruction": texts["si"]})
    env.step(0)
    assert "Hi Ann," in engine.chat_requests[-1].messages[-1]["content"]  # the expert sees it


def test_default_seeds_carry_their_self_instruct_inputs():
    from teamsrl.seeds import load_seeds

    seeds = load_seeds().seeds
    assert len(seeds) == 175
    assert sum(bool(s.input) for s in seeds) == 125  # counted in the shipped file
    pairs = next(s for s in seeds if s.instruction.startswith("What is the relation between"))
    assert pairs.text.endswith("\n\nNight : Day :: Right : Left")
