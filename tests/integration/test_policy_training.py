"""`teamsrl train-policy`: RLlib PPO over the Serve app, on the session's local Ray (2 CPUs).

The training app gets its own name and half a CPU so it fits beside the shared fixture's replica.
Only the test whose property rests on the texts (PPO learns to shun the operation whose rewrites
the validity judge rejects) runs the real SmolLM2. The others test bookkeeping and wiring:
checkpoint and resume, the metrics against the responses computed, the export, PPO finding the
action a text-free reward pays. Their engines are `engine: simulated` with no sleep
(`SIMULATED`): deterministic texts and log-probs that mean nothing, which those properties do not
read. With the real engine these took ~210 s of CI (2026-12-01); the PPO path they exercise (RLlib,
the env runners, Serve, the store, MiniLM observations) is the same.
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from contextlib import closing

import numpy as np
import pytest

from teamsrl.config import load_config
from teamsrl.llm.config import simulated_overrides

SMALL = [
    "serving.app_name=teamsrl-llm-train", "serving.route_prefix=/train", "serving.num_cpus=0.5",
    "env.horizon=3",
    "policy.num_envs_per_env_runner=4", "policy.train_batch_size=12", "policy.minibatch_size=6",
    "policy.num_epochs=2", "llm.expert.max_tokens=16", "tracking.mode=offline",
    "env.reward.cut_rewrite_fails=false",  # 16-token rewrites: plumbing
    "env.reward.invalid_fails=false", "env.reward.validity_weight=0",
]

SIMULATED = simulated_overrides(time_scale=0)

REQUIRED = ["rollout/return_mean", "reward/verdict", "reward/novelty", "reward/validity",
            "reward/failure", "reward/cost", "queries/expert", "queries/reviewer",
            "cache/hit_rate", "perf/env_steps_per_s", "timing/sample_s", "timing/learn_s",
            "actions/breadth"]


@pytest.fixture(scope="module")
def trained(ray_serve, tmp_path_factory):
    """One PPO iteration, then `--resume` for a second (a resume that restarted from nothing, or
    lost the first iteration's counters, would number its iteration 1)."""
    from teamsrl.policy.train import train_policy

    run_dir = tmp_path_factory.mktemp("train-run")
    config = load_config(None, [*SMALL, *SIMULATED, f"run_dir={run_dir}",
                                "policy.iterations=1"])
    first = train_policy(config, progress=False)
    resumed = train_policy(config, resume=True, iterations=1, progress=False)
    return config, first, resumed


def test_an_iteration_checkpoint_and_resume_to_the_second(trained):
    config, first, resumed = trained
    assert first.iterations == 1 and (first.checkpoint / "rllib_checkpoint.json").is_file()
    assert resumed.iterations == 2 and (resumed.checkpoint / "rllib_checkpoint.json").is_file()
    rows = [json.loads(line) for line in
            open(f"{config.run_dir}/train-policy-metrics.jsonl", encoding="utf-8")]
    assert [r["step"] for r in rows] == [1, 2]
    assert all(r["rollout/env_steps"] >= 12 for r in rows)  # no silent empty iteration


def test_wandb_offline_run_holds_the_metrics_and_matches_the_ledger(trained):
    from wandb_offline import run_history

    config, _, _ = trained
    rows = run_history(config.run_dir, "train-policy")
    assert [r["_step"] for r in rows] == [1, 2]  # --resume continued the same W&B run
    for key in REQUIRED:
        assert key in rows[-1], key
    # counted without the ledger: every response an engine computed is one row of the run's
    # cache (a new file; identical requests are computed once), and before training the warm-up
    # step computed one rewrite and one verdict per sub-env seed under its own stage (the
    # resumed run's warm-up was all cache hits)
    computed = _computed_responses(f"{config.run_dir}/llm-cache.sqlite")
    warmup = config.policy.num_envs_per_env_runner
    assert rows[-1]["queries/expert"] == computed["chat"] - warmup > 0, computed
    assert rows[-1]["queries/reviewer"] == computed["score"] - warmup > 0, computed
    assert rows[-1]["queries/failed"] == 0


def _computed_responses(path: str) -> Counter:
    """Cached responses by kind: a chat response has `text`, a scoring one `logprobs`."""
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        values = [json.loads(v) for (v,) in db.execute("SELECT value FROM responses")]
    return Counter("chat" if "text" in v else "score" if "logprobs" in v else "?"
                   for v in values)


def test_exported_policy_gives_the_trained_modules_probabilities(trained):
    import torch
    from ray.rllib.core.rl_module.rl_module import RLModule

    from teamsrl.policy.export import load_policy

    config, _, resumed = trained
    policy = load_policy(config.run_dir)
    assert policy.spec.iteration == 2 and len(policy.action_names) == 6
    trained_module = RLModule.from_checkpoint(
        str(resumed.checkpoint / "learner_group" / "learner" / "rl_module" / "default_policy"))
    obs = np.random.default_rng(0).uniform(-0.2, 0.2, (5, policy.spec.observation_size))
    obs = obs.astype(np.float32)
    with torch.no_grad():
        logits = trained_module.forward_inference({"obs": torch.from_numpy(obs)})
    expected = torch.softmax(logits["action_dist_inputs"], -1).numpy()
    assert np.allclose(policy.action_probabilities(obs), expected, atol=1e-6)
    assert np.allclose(policy.action_probabilities(obs).sum(-1), 1.0, atol=1e-5)


def test_ppo_learns_the_action_that_pays(ray_serve, tmp_path, embedded_client):
    """Rewards arranged so that `stop` (no query, no cost) clearly pays best: PPO finds it.

    The reward here does not depend on the text (weights of verdict and novelty are 0), so this
    tests the PPO wiring; the real engine still runs every rewrite.
    """
    from teamsrl.mdp import make_env
    from teamsrl.policy.export import load_policy
    from teamsrl.policy.train import train_policy

    config = load_config(None, [
        *SMALL, *SIMULATED, f"run_dir={tmp_path}", "actions.include_stop=true",
        "llm.expert.max_tokens=4",
        "env.reward.verdict_weight=0", "env.reward.novelty_weight=0",
        # a rewrite costs 2, stop 0 (verdict weight 0: no reviewer query is made)
        "env.reward.failure_penalty=0", "env.reward.expert_query_cost=2",
        "env.reward.reviewer_query_cost=1", "policy.lr=0.01", "policy.entropy_coeff=0",
        "policy.train_batch_size=24", "policy.minibatch_size=12", "policy.num_epochs=10",
        "policy.iterations=8", "tracking.mode=disabled",
    ])
    train_policy(config, progress=False)
    policy = load_policy(tmp_path)
    stop = policy.action_names.index("stop")
    env = make_env(config, embedded_client)
    obs = np.stack([env.reset(seed=s)[0] for s in range(8)])
    p_stop = policy.action_probabilities(obs)[:, stop]
    assert p_stop.mean() > 0.5, p_stop


# Self-contained requests on which `add_constraints` keeps the task form. Measured with the real
# engine (16 expert tokens, 8 samples a seed): the judge passes 75-100% of `add_constraints`'
# rewrites of each (65/72 in all) and none of `answer_it`'s (0/72). Not the bundled Self-Instruct
# seeds: there every operation's rewrites are mostly judged invalid (85-100% for each of the six
# and for `answer_it`, 20-40 resets, 24 tokens), so no operation pays; nor "Give three tips for
# ...": `add_constraints` makes the expert write the tips (10 such seeds: 0-12% valid).
TASK_SEEDS = (
    "Suggest a science-fiction novel for a teenager who loves space travel.",
    "Suggest a gift for a friend who likes gardening.",
    "Suggest a book for someone who wants to learn about history.",
    "Suggest a weekend activity for a family with young children.",
    "Suggest a board game for four friends.",
    "Suggest a hobby for someone who works from home.",
    "Suggest a day trip for someone who likes museums.",
    "List three benefits of regular exercise.",
    "List three benefits of learning to swim.",
)
# A custom operation that makes the expert answer the instruction instead of rewriting it.
ANSWER_OP = ('actions.custom=[{name: answer_it, '
             'template: "Answer this in one short sentence.\\n{instruction}"}]')


def test_ppo_learns_to_avoid_the_operation_whose_rewrites_are_not_instructions(
        ray_serve, tmp_path, embedded_client):
    """The validity judge decides the reward, and PPO learns to shun `answer_it`.

    Two operations: `add_constraints` (a rewrite) and the custom `answer_it` (the expert answers
    the instruction), on `TASK_SEEDS`, where the judge passes ~90% of the first's rewrites and
    none of the second's. Verdict, novelty and query costs weigh 0, so the reward is the judge's
    alone: -1 for a rewrite it fails (`invalid_fails`), else 0.5 x P(valid). Horizon 1: each
    episode is one choice on a seed, the observation the policy is then tested on. 16 expert
    tokens: the judge reads openings, and its calls at 24 tokens were the same (40% vs 42%
    invalid for `add_constraints`, 100% for `answer_it`). 8 sub-envs: each iteration is 3
    vector steps of 8 rewrites (73 s alone, mean P(answer_it) 0.05) rather than 6 of 4 (85 s,
    0.07; 2026-12-02). 4 iterations, not 5: each samples for ~14 s, and after 4 the mean
    P(answer_it) was 0.052 (5: 0.05); with the judge's reward off (validity weight 0, no
    `invalid_fails`) 4 iterations leave it at 0.35 (2026-12-03).

    The judge uses `env.quality.method=embedding`: the default (`auto` = combined) adds one
    reviewer query of a long few-shot prompt per rewrite (~4 s each on these 2 cores) and calls
    the same share of these rewrites invalid (measured on 40 resets: 42% vs 40% for
    `add_constraints`, 100% vs 100% for `answer_it`). The embedding judge still scores the text
    the real engine wrote, so the property rests on that text.
    """
    from teamsrl.mdp import make_env
    from teamsrl.policy.export import load_policy
    from teamsrl.policy.train import train_policy

    seeds = tmp_path / "task-seeds.jsonl"
    seeds.write_text("".join(json.dumps({"instruction": s}) + "\n" for s in TASK_SEEDS))
    config = load_config(None, [
        *SMALL, f"run_dir={tmp_path}", f"env.seed_file={seeds}", "env.horizon=1",
        "actions.operations=[add_constraints]", ANSWER_OP, "llm.expert.max_tokens=16",
        "env.reward.verdict_weight=0", "env.reward.novelty_weight=0",
        "env.reward.expert_query_cost=0", "env.reward.reviewer_query_cost=0",
        "env.reward.failure_penalty=1", "env.reward.invalid_fails=true",
        "env.reward.validity_weight=0.5", "env.quality.method=embedding",
        "policy.lr=0.01", "policy.entropy_coeff=0", "policy.train_batch_size=24",
        "policy.num_envs_per_env_runner=8",
        "policy.minibatch_size=12", "policy.num_epochs=10", "policy.iterations=4",
        "tracking.mode=disabled",
    ])
    train_policy(config, progress=False)
    policy = load_policy(tmp_path)
    assert policy.action_names == ["add_constraints", "answer_it"]
    env = make_env(config, embedded_client)
    obs = np.stack([env.reset(seed=0, options={"instruction": s})[0] for s in TASK_SEEDS])
    p_answer = policy.action_probabilities(obs)[:, 1]
    # from 0.5 (uniform) at the start; measured 0.052, and 0.35 with the judge off (no reward
    # at all: PPO's drift)
    assert p_answer.mean() < 0.15, p_answer

    rows = [json.loads(line) for line in
            open(f"{tmp_path}/train-policy-metrics.jsonl", encoding="utf-8")]
    assert all("reward/validity" in r for r in rows)
    assert rows[-1]["reward/validity"] > 0
    share = [r["actions/answer_it"] / (r["actions/answer_it"] + r["actions/add_constraints"])
             for r in rows]
    assert share[-1] < share[0], share  # the share of `answer_it` among the actions taken
