"""The instruction MDP as a `gymnasium.vector.VectorEnv` whose step batches every LLM request.

N sub-envs share one LLM client, one embedder and one seed pool; one `step` sends all N expert
rewrites as ONE `client.chat` batch, then all reviewer verdicts as ONE `client.score` batch, so the
serving replica sees batches of N instead of N batches of 1. Autoreset follows gymnasium >= 1.0's
next-step mode (what RLlib's `gym_env_vectorize_mode="vector_entry_point"` expects): the step after
a sub-env ends resets it, ignores its action and returns reward 0. Sub-env i behaves exactly like
a lone `InstructionMDPEnv` reset with seed `seed + i`.

RLlib calls its env creator with `env_config | {"num_envs": N}` in that mode; `make_rllib_env`
returns this class then, and the single env otherwise. Set RLlib's `seed` so env runners differ.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from envs.instruction_mdp import InstructionMDPEnv, experiment_config, step_many
from teamsrl.config import ExperimentConfig
from teamsrl.embeddings import Embedder
from teamsrl.llm.client import LLMClient
from teamsrl.seeds import load_seeds


class InstructionMDPVectorEnv(VectorEnv):
    """N instruction MDPs stepped together, one LLM batch per role per step."""

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}

    def __init__(self, config: Mapping | ExperimentConfig | None = None,
                 num_envs: int | None = None, *, client: LLMClient | None = None,
                 embedder: Embedder | None = None) -> None:
        if num_envs is None:
            num_envs = config.get("num_envs", 1) if isinstance(config, Mapping) else 1
        if isinstance(num_envs, bool) or not isinstance(num_envs, int | np.integer) or \
                num_envs < 1:
            raise ValueError(f"num_envs = {num_envs!r}: expected an int >= 1")
        experiment = experiment_config(config)
        cfg = experiment.env
        seeds = load_seeds(cfg.seed_file, cfg.seed_column, cfg.max_seed_chars)
        first = InstructionMDPEnv(config if isinstance(config, Mapping) else experiment,
                                  client=client, embedder=embedder, seeds=seeds)
        self.envs = [first] + [
            InstructionMDPEnv(experiment, client=first.client, embedder=first.embedder,
                              seeds=seeds, default_seed=first.default_seed + i)
            for i in range(1, int(num_envs))]
        self.num_envs = int(num_envs)
        self.single_observation_space = first.observation_space
        self.single_action_space = first.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._autoreset = np.zeros(self.num_envs, dtype=bool)

    @property
    def client(self) -> LLMClient:
        """The LLM client every sub-env shares."""
        return self.envs[0].client

    def reset(self, *, seed: int | Sequence[int | None] | None = None,
              options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset every sub-env; an int seed gives sub-env i the seed `seed + i`."""
        if seed is None:
            seeds: list[int | None] = [None] * self.num_envs
        elif isinstance(seed, int | np.integer):
            seeds = [int(seed) + i for i in range(self.num_envs)]
        else:
            seeds = list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(f"reset seed: expected an int or {self.num_envs} seeds, got "
                                 f"{len(seeds)}")
        observations, infos = [], {}
        for i, (env, s) in enumerate(zip(self.envs, seeds, strict=True)):
            obs, info = env.reset(seed=s, options=options)
            observations.append(obs)
            infos = self._add_info(infos, info, i)
        self._autoreset[:] = False
        return np.stack(observations), infos

    def step(self, actions: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                          dict[str, Any]]:
        """Step all sub-envs at once; sub-envs that ended last step are reset instead."""
        actions = np.asarray(actions)
        if actions.shape != (self.num_envs,):
            raise ValueError(f"actions: expected shape ({self.num_envs},), got {actions.shape}")
        live = [i for i in range(self.num_envs) if not self._autoreset[i]]
        results = dict(zip(live, step_many([self.envs[i] for i in live],
                                           [actions[i] for i in live]), strict=True))
        observations, infos = [], {}
        rewards = np.zeros(self.num_envs, dtype=np.float64)
        terminations = np.zeros(self.num_envs, dtype=bool)
        truncations = np.zeros(self.num_envs, dtype=bool)
        for i, env in enumerate(self.envs):
            if i in results:
                obs, rewards[i], terminations[i], truncations[i], info = results[i]
            else:
                obs, info = env.reset()
            observations.append(obs)
            infos = self._add_info(infos, info, i)
        self._autoreset = terminations | truncations
        return np.stack(observations), rewards, terminations, truncations, infos

    def close_extras(self, **kwargs: Any) -> None:
        """Close the sub-envs (the first closes the client if it built it)."""
        for env in self.envs:
            env.close()


def make_rllib_env(env_config: Mapping) -> InstructionMDPEnv | InstructionMDPVectorEnv:
    """RLlib env creator: the vector env when RLlib passes `num_envs`, else the single env."""
    if "num_envs" in env_config:
        return InstructionMDPVectorEnv(env_config)
    return InstructionMDPEnv(env_config)
