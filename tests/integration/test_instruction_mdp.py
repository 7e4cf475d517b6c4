"""The instruction MDP with the real embedded models (SmolLM2-135M expert/reviewer, MiniLM).

Small horizons and max_tokens keep this to a few minutes on 2 cores; the session engine is reused
wherever the test does not need the env to build its own client.
"""

from __future__ import annotations

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import envs
from teamsrl.actions import ActionSet
from teamsrl.cli import main
from teamsrl.config import ExperimentConfig
from teamsrl.llm.cache import ResponseCache
from teamsrl.llm.client import LLMClient
from teamsrl.llm.ledger import QueryLedger
from teamsrl.mdp import make_env, make_vector_env
from teamsrl.outcomes import Failure, FailureKind
from teamsrl.rewards import failed_evolution, verdict_request

pytestmark = pytest.mark.integration


def small_config(tmp_path, horizon: int = 2, cache: bool = False) -> ExperimentConfig:
    cfg = ExperimentConfig(run_dir=str(tmp_path))
    cfg.llm.expert.max_tokens = 32
    cfg.env.reward.cut_rewrite_fails = False  # 32-token rewrites: plumbing, not quality
    cfg.env.reward.invalid_fails, cfg.env.reward.validity_weight = False, 0.0  # the judge: below
    cfg.llm.cache.enabled = cache
    cfg.env.horizon = horizon
    return cfg


def client_for(engine, cfg, tmp_path=None) -> LLMClient:
    """A client over the session engine; with `tmp_path`, cache and ledger live there."""
    return LLMClient({"expert": engine, "reviewer": engine},
                     cache=ResponseCache(tmp_path / "cache.sqlite") if tmp_path else None,
                     ledger=QueryLedger(tmp_path / "ledger.sqlite") if tmp_path else None,
                     specs={"expert": cfg.llm.expert, "reviewer": cfg.llm.reviewer})


def test_an_embedding_does_not_depend_on_torchs_thread_count():
    """Observations and novelty come from MiniLM vectors, and torch's thread count changes with
    the load (`teamsrl.cpu.ThreadGovernor`): a vector must be the same bits at 1 and 2 threads,
    or a resumed generation's novelty differs from the uninterrupted one's in the 8th digit (seen
    in CI). Short texts: there a second thread changed 3 of these 5 vectors by ~1e-7."""
    import torch

    from teamsrl.embeddings import Embedder

    texts = ["How to handle a car without a seat.", "Suggest a gift.", "a b c d e f g h",
             "Write a poem about the sea in five lines.",
             "Is there anything I can eat for a breakfast that does not include eggs, yet "
             "includes protein, and has roughly 700-1000 calories?"]
    before = torch.get_num_threads()
    seen = {}
    try:
        for threads in (2, 1):
            torch.set_num_threads(threads)
            seen[threads] = Embedder().encode(texts)  # a fresh model and memo each time
            assert torch.get_num_threads() == threads  # the caller's count is restored
    finally:
        torch.set_num_threads(before)
    assert seen[1].tobytes() == seen[2].tobytes()


def test_check_env_passes_on_the_registered_env_with_cache_off(smollm2_engine, tmp_path):
    cfg = small_config(tmp_path, horizon=2, cache=False)
    env = gymnasium.make(envs.INSTRUCTION_MDP_ID, config=cfg.env,
                         actions=ActionSet.from_config(cfg.actions),
                         client=client_for(smollm2_engine, cfg), max_episode_steps=2)
    try:
        assert env.unwrapped.client.cache is None
        check_env(env.unwrapped)  # includes same-seed step determinism and a fresh make()
        totals = env.unwrapped.client.ledger.session_totals()
        assert totals["expert"].queries >= 2 and totals["expert"].cache_hits == 0
    finally:
        env.close()


def run_episode(env, seed, actions):
    obs, info = env.reset(seed=seed)
    traj = [(obs, info["instruction"])]
    for a in actions:
        obs, reward, term, trunc, info = env.step(a)
        traj.append((obs, info["rewrite"], reward, info["failure"], info["verdict"]))
        if term or trunc:
            break
    return traj


def test_vector_env_matches_separate_envs(smollm2_engine, tmp_path):
    cfg = small_config(tmp_path, horizon=2)
    actions = np.array([[0, 3, 5], [1, 2, 4], [4, 0, 1]])  # 2 steps, then the autoreset step
    venv = make_vector_env(cfg, client_for(smollm2_engine, cfg), 3)
    v_obs, _ = venv.reset(seed=7)
    v_steps = [venv.step(a) for a in actions]
    for i in range(3):
        env = make_env(cfg, client_for(smollm2_engine, cfg))
        obs, _ = env.reset(seed=7 + i)
        np.testing.assert_array_equal(obs, v_obs[i])
        for k in range(2):
            obs, reward, term, trunc, info = env.step(actions[k][i])
            v_obs_k, v_rew, v_term, v_trunc, v_info = v_steps[k]
            np.testing.assert_array_equal(obs, v_obs_k[i])
            assert info["rewrite"] == v_info["rewrite"][i]  # texts: exactly equal
            assert (term, trunc) == (v_term[i], v_trunc[i])
            # Scores of a padded batch differ from batch-of-1 scores in the last float bits.
            assert reward == pytest.approx(v_rew[i], abs=1e-4)
            assert info["verdict"] == pytest.approx(v_info["verdict"][i], abs=1e-4)
        obs, info = env.reset()  # what next-step autoreset did in the vector env
        np.testing.assert_array_equal(obs, v_steps[2][0][i])
        assert info["instruction"] == v_steps[2][4]["instruction"][i]
    texts = {v_steps[0][4]["rewrite"][i] for i in range(3)}
    assert len(texts) == 3 and all(texts)


def test_same_seed_with_cache_gives_same_trajectory_and_no_new_queries(smollm2_engine,
                                                                        tmp_path):
    cfg = small_config(tmp_path, horizon=3, cache=True)
    first_client = client_for(smollm2_engine, cfg, tmp_path)
    first = run_episode(make_env(cfg, first_client), 21, [0, 3, 5])
    spent = first_client.ledger.session_totals()
    assert spent["expert"].queries == 3 and spent["expert"].cache_hits == 0
    first_client.close()

    again_client = client_for(smollm2_engine, cfg, tmp_path)  # same cache and ledger files
    again = run_episode(make_env(cfg, again_client), 21, [0, 3, 5])
    totals = again_client.ledger.session_totals()
    assert sum(t.queries for t in totals.values()) == 0
    assert totals["expert"].cache_hits == 3
    assert totals.get("reviewer") is None or totals["reviewer"].cache_hits == \
        spent["reviewer"].queries
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a[0], b[0])
        assert a[1:] == b[1:]
    again_client.close()


# (old, the same instruction again or a paraphrase, a deeper / more constrained rewrite)
VERDICT_TABLE = [
    ("Write a poem about autumn.", "Write a poem about autumn.",
     "Write a poem about autumn in exactly four lines, each line starting with L."),
    ("Why is the sky blue?", "Why is the sky blue?",
     "Explain why the sky is blue and why sunsets are red, with the physics of Rayleigh "
     "scattering and a worked numeric example."),
    ("Name three fruits.", "Name three fruits",
     "Name three tropical fruits, give the country that exports most of each, and rank them "
     "by vitamin C content."),
    ("Describe a cat.", "Describe a cat.",
     "Describe a Siamese cat's temperament, diet and grooming needs in three paragraphs of "
     "under 80 words each."),
    ("Summarize the plot of Hamlet.", "Summarise the plot of Hamlet.",
     "Summarize the plot of Hamlet act by act, naming who dies in each act and why, in under "
     "200 words."),
    ("Write a story about a dragon.", "Write a story about a dragon.",
     "Write a story about a dragon who is afraid of fire, told in the first person, ending "
     "with a twist, in at most 300 words."),
    ("How do plants grow?", "How do plants grow?",
     "Explain how plants grow, covering photosynthesis, the role of auxins, and root water "
     "uptake, with one experiment a student could run."),
    ("Give tips for studying.", "Give some tips for studying.",
     "Give five evidence-based tips for studying for a university maths exam, each with a "
     "study that supports it and a weekly schedule."),
    ("Translate 'hello' into French.", "Translate 'hello' into French.",
     "Translate 'hello' into French, Spanish and Japanese, give the formal and informal "
     "forms, and explain when each is used."),
    ("What is a prime number?", "What is a prime number?",
     "Define a prime number, prove that there are infinitely many primes, and list all primes "
     "between 100 and 150."),
    ("Write a recipe for pancakes.", "Write a recipe for pancakes.",
     "Write a gluten-free, vegan recipe for pancakes for six people, with metric quantities, "
     "a shopping list and the cost of each item."),
    ("Explain gravity.", "Explain gravity.",
     "Explain gravity as Newton and as Einstein described it, derive the escape velocity of "
     "Earth, and compare the two theories' predictions."),
    ("List some animals.", "List some animals.",
     "List ten endangered animals, grouped by continent, with their estimated wild population "
     "and the main threat to each."),
    ("Describe the ocean.", "Describe the ocean",
     "Describe the ocean's five depth zones, the pressure and temperature in each, and one "
     "animal adapted to each zone."),
]
RULE_CASES = [  # (old, new, fails the rules?)
    ("Write a poem.", "", True),
    ("", "", True),
    ("Write a poem.", "Write a poem.", True),
    ("Write a poem.", "x" * 10_000, True),
    ("Write a poem.", "#Rewritten Prompt#: Write a poem about the sea.", True),
    ("Write a poem.", "The given prompt wants a poem about the sea.", True),
    ("Write a poem.", "Sorry, I can't do that.", True),
    ("Write a poem.", "the and of, to!", True),
    ("Write a poem.", "Write a poem about the sea in the style of a sailor's log.", False),
    ("Sort the list.", "Sort the list in descending order and explain each swap.", False),
    ("Name a colour.", "Name a colour that appears in the flag of Japan.", False),
    ("What is 2+2?", "What is 2+2 multiplied by 7, minus 3? Show each step.", False),
]


def test_reviewer_verdict_and_rules_on_a_table(smollm2_engine):
    """The rules on their table; the real SmolLM2 reviewer on 14 instructions, each paired with
    itself (or a paraphrase) and with a deeper, more constrained rewrite. Measured on this
    table: mean P(Not Equal) 0.26 for the same instruction vs 0.60 for the deeper one, and the
    deeper rewrite scored higher for 14 of the 14 instructions (smallest gap 0.07)."""
    for old, new, fails in RULE_CASES:
        assert bool(failed_evolution(old, new)) is fails, (old, new[:40])
    client = LLMClient({"reviewer": smollm2_engine})
    kept = [(o, n) for o, n, fails in RULE_CASES if not fails]
    pairs = [(o, s) for o, s, _ in VERDICT_TABLE] + [(o, d) for o, _, d in VERDICT_TABLE] + kept
    scores = client.score("reviewer", [verdict_request(o, n) for o, n in pairs])
    assert client.ledger.session_totals()["reviewer"].queries == len(pairs)  # one pass each
    assert all(len(s.logprobs) == 2 for s in scores)
    p_not_equal = [s.probabilities()[1] for s in scores]
    assert all(0.0 < p < 1.0 for p in p_not_equal)
    n = len(VERDICT_TABLE)
    same, deeper = np.array(p_not_equal[:n]), np.array(p_not_equal[n: 2 * n])
    assert deeper.mean() - same.mean() > 0.2, (same.round(3), deeper.round(3))
    assert (deeper > same).sum() >= 11, (same.round(3), deeper.round(3))  # a clear majority


def test_rollout_cli_smoke(tmp_path, capsys):
    code = main(["rollout", "--policy", "random", "--episodes", "2", "--num-envs", "2",
                 "--set", f"run_dir={tmp_path}", "--set", "env.horizon=2",
                 "--set", "llm.expert.max_tokens=24"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "random policy: 2 episodes, 4 steps" in out
    assert "mean return" in out and "action counts:" in out
    assert "expert: 4 queries" in out


def test_graded_rating_option_adds_one_reviewer_query(smollm2_engine, tmp_path):
    cfg = small_config(tmp_path, horizon=1)
    cfg.env.reward.graded_score = True
    env = make_env(cfg, client_for(smollm2_engine, cfg))
    env.reset(seed=3, options={"instruction": "Write a poem about autumn."})
    _, reward, _, trunc, info = env.step(env.actions.index("add_constraints"))
    assert trunc is True
    if info["failure"]:  # a discarded rewrite is neither judged nor rated
        assert info["queries"]["reviewer"] == 0
    else:
        assert info["queries"]["reviewer"] == 2
        assert info["graded_unparsed"] or 1 <= info["graded_score"] <= 10
        assert reward == pytest.approx(sum(info["reward_components"].values()))
        totals = env.client.ledger.session_totals()["reviewer"]
        assert totals.queries == 2 and totals.completion_tokens > 0


def test_a_rewrite_cut_at_max_tokens_fails_and_is_discarded(smollm2_engine, tmp_path):
    cfg = ExperimentConfig(run_dir=str(tmp_path))  # the rule is on by default
    cfg.llm.expert.max_tokens = 3  # no rewrite of this seed ends within 3 tokens
    cfg.env.horizon = 1
    env = make_env(cfg, client_for(smollm2_engine, cfg))
    seed = "Write a poem about autumn."
    env.reset(seed=5, options={"instruction": seed})
    _, reward, _, _, info = env.step(env.actions.index("add_constraints"))
    assert info["rewrite_truncated"] and info["rewrite"], info
    assert info["failure"] == Failure(FailureKind.CUT), info
    assert info["instruction"] == seed  # the cut rewrite is not the next state
    assert info["queries"] == {"expert": 1, "reviewer": 0}  # and no verdict is spent on it
    assert info["reward_components"]["failure"] == -cfg.env.reward.failure_penalty
