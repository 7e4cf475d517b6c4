"""The instruction MDP as a `gymnasium.vector.VectorEnv` whose step batches every LLM request.

N sub-envs share one LLM client, one embedder, one seed pool and one `BatchStepper`; a step
sends all N expert rewrites as ONE `chat` batch, then all reviewer verdicts as ONE `score` batch,
so the serving replica sees batches of N instead of N batches of 1. Two ways to drive it:

- `step(actions)`: Gymnasium's API with next-step autoreset (what RLlib's
  `gym_env_vectorize_mode="vector_entry_point"` expects): the step after a sub-env ends resets it,
  ignores its action and returns reward 0;
- `run_episodes(choose, on_step, restart)`: the loop rollouts and generation use — only the
  sub-envs still in an episode are stepped, so no query is spent on an episode nobody counts.

Sub-env i behaves exactly like a lone `InstructionMDPEnv` with default seed `seed + i`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from envs.config import EnvConfig
from envs.instruction_mdp import InstructionMDPEnv, load_pool, make_judge
from envs.stepper import BatchStepper, Transition
from teamsrl.actions import ActionSet
from teamsrl.embeddings import Embedder, shared_embedder
from teamsrl.llm.protocol import LLMService
from teamsrl.quality import ValidityJudge
from teamsrl.seeds import SeedSet

# choose(slots, observations) -> one action per slot
Chooser = Callable[[list[int], np.ndarray], Sequence[int]]


class InstructionMDPVectorEnv(VectorEnv):
    """N instruction MDPs stepped together, one LLM batch per role per step."""

    metadata = {"autoreset_mode": AutoresetMode.NEXT_STEP, "render_modes": []}

    def __init__(self, config: EnvConfig | None = None, num_envs: int = 1, *,
                 client: LLMService, actions: ActionSet | None = None,
                 seeds: SeedSet | None = None, embedder: Embedder | None = None,
                 judge: ValidityJudge | None = None, seed: int = 0) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, int | np.integer) or \
                num_envs < 1:
            raise ValueError(f"num_envs = {num_envs!r}: expected an int >= 1")
        config = config if config is not None else EnvConfig()
        actions = actions if actions is not None else ActionSet.from_config()
        seeds = seeds if seeds is not None else load_pool(config)
        embedder = embedder if embedder is not None else shared_embedder(config.embedder)
        if judge is None:  # one judge for every sub-env: one batch per step
            judge = make_judge(config, client, embedder)
        self.envs = [InstructionMDPEnv(config, client=client, actions=actions, seeds=seeds,
                                       embedder=embedder, judge=judge, seed=seed + i)
                     for i in range(int(num_envs))]
        self.stepper = BatchStepper(client)
        self.num_envs = int(num_envs)
        first = self.envs[0]
        self.single_observation_space = first.observation_space
        self.single_action_space = first.action_space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self._autoreset = np.zeros(self.num_envs, dtype=bool)
        self._obs: list[np.ndarray | None] = [None] * self.num_envs

    @property
    def client(self) -> LLMService:
        """The LLM client every sub-env shares."""
        return self.stepper.client

    @property
    def actions(self) -> ActionSet:
        """The action set every sub-env shares."""
        return self.envs[0].actions

    # ------------------------------------------------------------- Gymnasium API
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
        for i, s in enumerate(seeds):
            obs, info = self.reset_one(i, seed=s, options=options)
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
        results = dict(zip(live, self.step_some(live, [actions[i] for i in live]), strict=True))
        observations, infos = [], {}
        rewards = np.zeros(self.num_envs, dtype=np.float64)
        terminations = np.zeros(self.num_envs, dtype=bool)
        truncations = np.zeros(self.num_envs, dtype=bool)
        for i in range(self.num_envs):
            if i in results:
                obs, rewards[i], terminations[i], truncations[i], info = results[i]
            else:
                obs, info = self.reset_one(i)
            observations.append(obs)
            infos = self._add_info(infos, info, i)
        self._autoreset = terminations | truncations
        return np.stack(observations), rewards, terminations, truncations, infos

    # ------------------------------------------------------------- sub-env control
    def reset_one(self, i: int, *, seed: int | None = None,
                  options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """Reset sub-env `i` alone."""
        obs, info = self.envs[i].reset(seed=seed, options=options)
        self._obs[i] = obs
        return obs, info

    def step_some(self, slots: Sequence[int], actions: Sequence[Any]) -> list[Transition]:
        """Step only the sub-envs `slots` (one batch per role), no autoreset."""
        results = self.stepper.step([self.envs[i] for i in slots], actions)
        for i, t in zip(slots, results, strict=True):
            self._obs[i] = t.obs
        return results

    def run_episodes(self, choose: Chooser, on_step: Callable[[int, int, Transition], None],
                     restart: Callable[[int], bool] = lambda slot: False,
                     slots: Sequence[int] | None = None) -> None:
        """Step the (already reset) sub-envs `slots` until every episode has ended.

        Each round, `choose(active_slots, their_observations)` picks the actions, one batched
        step runs, and `on_step(slot, action, transition)` sees each result in slot order; a slot
        whose episode ended is reset and kept running while `restart(slot)` says so.
        """
        active = list(range(self.num_envs) if slots is None else slots)
        while active:
            actions = [int(a) for a in choose(active, np.stack([self._obs[i] for i in active]))]
            still = []
            for i, a, t in zip(active, actions, self.step_some(active, actions), strict=True):
                on_step(i, a, t)
                if not t.done:
                    still.append(i)
                elif restart(i):
                    self.reset_one(i)
                    still.append(i)
            active = still
