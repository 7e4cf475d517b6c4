"""The instruction MDP of TeaMs-RL as a Gymnasium environment (`teamsrl/InstructionMDP-v0`).

An episode starts from a seed instruction drawn from the pool (a new one every reset). Each action
is a rewriting operation: the expert LLM rewrites the current instruction with that operation's
prompt, the rewrite is checked against WizardLM's elimination rules, and — when it passes — the
reviewer LLM judges whether old and new differ (P("Not Equal") from one scoring pass). The reward
is the weighted sum of verdict, embedding novelty, failure penalty and query cost
(`teamsrl.rewards`). A failed rewrite is discarded: the instruction stays as it was. `stop` (when
the action set has it) ends the episode without a query. The episode is truncated at the horizon.

The env is built from what is its own: its `EnvConfig` section, the `ActionSet`, an LLM client
(anything that follows `teamsrl.llm.protocol.LLMService`), the seed pool and a default seed. Its
step goes through `envs.stepper.BatchStepper`, the one place that turns actions into LLM batches;
`envs.vector.InstructionMDPVectorEnv` steps N of these envs with one batch per role.

Determinism: every request's sampling seed derives from (env seed, episode index since the last
seeded reset, step, role), engines are batch-invariant, and a seeded reset also clears the
novelty pool, so the same seed and actions give the same trajectory, cached or not. A reset
without a seed on a never-seeded env uses `seed`.

    env = gymnasium.make("teamsrl/InstructionMDP-v0", config=EnvConfig(), client=client)
"""

from __future__ import annotations

import hashlib
import logging
from collections import deque
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.config import EnvConfig
from envs.stepper import BatchStepper, PendingStep, Transition
from teamsrl import rewards as R
from teamsrl.actions import ActionSet
from teamsrl.embeddings import Embedder, shared_embedder
from teamsrl.llm.protocol import LLMService
from teamsrl.llm.schema import ChatResponse
from teamsrl.outcomes import Failure, FailureKind
from teamsrl.quality import ValidityJudge
from teamsrl.seeds import SeedSet, load_seeds

log = logging.getLogger(__name__)


def derive_seed(base: int, episode: int, step: int, role: str) -> int:
    """A request's sampling seed from (env seed, episode, step, role); 31 bits, stable."""
    digest = hashlib.sha256(f"{base}/{episode}/{step}/{role}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF


def load_pool(config: EnvConfig) -> SeedSet:
    """The seed pool `config` names (skipped rows logged)."""
    seeds = load_seeds(config.seed_file, config.seed_column, config.max_seed_chars)
    if seeds.skipped:
        log.warning("seed pool: %s", seeds.report())
    return seeds


def make_judge(config: EnvConfig, client: LLMService, embedder: Embedder
               ) -> ValidityJudge | None:
    """The validity judge when the config uses it (the rule or the reward), else None. It shares
    the env's embedder when that is the model the judge was trained on."""
    if not (config.reward.invalid_fails or config.reward.validity_weight):
        return None
    judge = ValidityJudge.from_config(config.quality, client=client)
    if getattr(embedder, "model_id", None) == judge.weights.embedder:
        judge.use_embedder(embedder)
    return judge


class InstructionMDPEnv(gym.Env):
    """Rewrite an instruction step by step; reward differences, novelty, success and thrift."""

    metadata = {"render_modes": []}

    def __init__(self, config: EnvConfig | None = None, *, client: LLMService,
                 actions: ActionSet | None = None, seeds: SeedSet | None = None,
                 embedder: Embedder | None = None, judge: ValidityJudge | None = None,
                 seed: int = 0) -> None:
        if config is not None and not isinstance(config, EnvConfig):
            raise TypeError(f"config: expected an EnvConfig, got {type(config).__name__} "
                            "(build the env from an experiment with teamsrl.mdp.make_env)")
        self.config = config if config is not None else EnvConfig()
        self.actions = actions if actions is not None else ActionSet.from_config()
        self.seeds = seeds if seeds is not None else load_pool(self.config)
        self.embedder = embedder if embedder is not None else shared_embedder(self.config.embedder)
        self.client = client
        self.judge = judge if judge is not None else make_judge(self.config, client,
                                                                self.embedder)
        self.stepper = BatchStepper(client)
        n, dim = len(self.actions), self.embedder.dim
        self.observation_space = spaces.Box(
            low=np.concatenate([-np.ones(dim), np.zeros(n + 1)]).astype(np.float32),
            high=np.ones(dim + n + 1, dtype=np.float32), dtype=np.float32)
        self.action_space = spaces.Discrete(n)
        self.default_seed = int(seed)
        self._base_seed: int | None = None
        self._episode = -1
        self._pool: deque[np.ndarray] = deque(maxlen=self.config.reward.novelty_pool_size)
        self._episode_vectors: list[np.ndarray] = []
        self._text = ""
        self._seed_id = ""
        self._t = 0
        self._last_action = -1
        self._done = True

    @property
    def steps_taken(self) -> int:
        """Steps taken in the current episode."""
        return self._t

    # ------------------------------------------------------------------ reset
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start an episode from a new seed instruction (or `options["instruction"]`)."""
        if seed is None and self._base_seed is None:
            seed = self.default_seed
        super().reset(seed=seed)
        if seed is not None:  # a seeded reset restarts the whole env: episodes, novelty pool
            self._base_seed, self._episode = int(seed), -1
            self._pool.clear()
        else:
            self._pool.extend(self._episode_vectors)
        options = dict(options or {})
        unknown = sorted(set(options) - {"instruction"})
        if unknown:
            raise ValueError(f"reset options: unknown key(s) {unknown}; expected only "
                             "'instruction'")
        if "instruction" in options:
            text = options["instruction"]
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"reset options['instruction'] = {text!r}: expected a "
                                 "non-empty string")
            self._text, self._seed_id = text.strip(), "options"
        else:
            s = self.seeds.seeds[int(self.np_random.integers(len(self.seeds)))]
            self._text, self._seed_id = s.text, s.id
        self._episode += 1
        self._t, self._last_action, self._done = 0, -1, False
        vector = self.embedder.encode([self._text])[0]
        self._episode_vectors = [vector]
        info = {"episode": self._episode, "seed_id": self._seed_id, "instruction": self._text,
                "step": 0}
        return self._observation(vector), info

    # ------------------------------------------------------------------- step
    def step(self, action: int) -> Transition:
        """Apply one operation (one expert and at most one reviewer query, `stop`: none)."""
        return self.stepper.step([self], [action])[0]

    # The three phases of a step, called by `BatchStepper` around its LLM batches.
    def begin_step(self, action: Any) -> PendingStep:
        """Check the action and build the expert request (none for `stop`)."""
        if self._done:
            raise RuntimeError("InstructionMDPEnv.step: the episode is over (or never started); "
                               "call reset() first")
        if not self.action_space.contains(action):
            raise ValueError(f"action = {action!r}: expected an int in [0, {len(self.actions)}) "
                             f"for actions {self.actions.names}")
        a = int(action)
        pending = PendingStep(self, a, self._text)
        if self.actions[a].queries:
            prompt = self.actions.render_for(self.client, a, self._text)
            pending.prompt_truncated = prompt.truncated
            pending.expert = self.client.request(
                "expert", list(prompt.messages),
                seed=derive_seed(self._base_seed, self._episode, self._t, "expert"))
        return pending

    def take_rewrite(self, p: PendingStep, response: ChatResponse) -> None:
        """Check the rewrite against the elimination rules."""
        op = self.actions[p.action]
        p.rewrite = response.text
        p.rewrite_truncated = response.finish_reason == "length"
        p.failure = R.failed_evolution(p.before, p.rewrite, self.config.reward,
                                       template_texts=op.prompt_texts(), cut=p.rewrite_truncated)

    def take_validity(self, p: PendingStep, validity: float | None) -> None:
        """Apply the judge's P(valid instruction) (None: not judged), then plan the reviewer's
        requests for a rewrite that still passes."""
        p.validity = validity
        if validity is not None and self.config.reward.invalid_fails and \
                validity < self.judge.threshold:
            p.failure = Failure(FailureKind.NOT_INSTRUCTION, f"validity {validity:.2f}")
        if p.failure:
            return  # a failed rewrite is discarded: no reviewer query is spent on it
        if self.config.reward.asks_verdict:
            p.verdict_request = R.verdict_request(p.before, p.rewrite)
        if self.config.reward.graded_score:
            p.graded_request = self.client.request(
                "reviewer", R.graded_messages(p.before, p.rewrite),
                seed=derive_seed(self._base_seed, self._episode, self._t, "reviewer"),
                max_tokens=self.config.reward.graded_max_tokens)

    def end_step(self, p: PendingStep) -> Transition:
        """Apply the step's outcome: novelty, reward, the next instruction, the info."""
        cfg = self.config.reward
        stop = p.expert is None
        nov = 0.0
        if not stop and not p.failure:
            vector = self.embedder.encode([p.rewrite])[0]
            refs = np.stack([*self._episode_vectors, *self._pool])
            nov = R.novelty(vector, refs)
            self._episode_vectors.append(vector)
            self._text = p.rewrite
        reviewer_queries = (int(p.verdict_request is not None) + int(p.graded_request is not None)
                            + p.judge_queries)
        if p.failure and p.failure.kind is FailureKind.TIMEOUT:  # neutral: nothing counted
            parts = R.combine(cfg, verdict=0.0, novelty=0.0, graded=0.0, failed=False,
                              expert_queries=0, reviewer_queries=0)
        else:
            parts = R.combine(cfg, verdict=p.verdict, novelty=nov,
                              graded=R.graded_reward(p.graded), failed=bool(p.failure),
                              expert_queries=int(not stop), reviewer_queries=reviewer_queries,
                              validity=0.0 if p.failure or p.validity is None else p.validity)
        self._t += 1
        self._last_action = p.action
        terminated = stop
        truncated = (not terminated) and self._t >= self.config.horizon
        self._done = terminated or truncated
        info = {
            "episode": self._episode, "step": self._t, "seed_id": self._seed_id,
            "action_name": self.actions.names[p.action],
            "instruction_before": p.before, "rewrite": p.rewrite, "instruction": self._text,
            "failure": p.failure, "verdict": float(p.verdict), "validity": p.validity,
            "reviewed": p.verdict_request is not None, "novelty": float(nov),
            "graded_score": int(p.graded or 0), "graded_unparsed": bool(p.graded_unparsed),
            "reward_components": {k: v for k, v in parts.items() if k != "total"},
            "queries": {"expert": int(not stop), "reviewer": reviewer_queries},
            "prompt_truncated": p.prompt_truncated, "rewrite_truncated": p.rewrite_truncated,
            "timeouts": p.timeouts,
        }
        obs = self._observation(self._episode_vectors[-1])
        return Transition(obs, parts["total"], bool(terminated), bool(truncated), info)

    def _observation(self, vector: np.ndarray) -> np.ndarray:
        n = len(self.actions)
        one_hot = np.zeros(n, dtype=np.float32)
        if self._last_action >= 0:
            one_hot[self._last_action] = 1.0
        frac = np.float32(min(self._t / self.config.horizon, 1.0))
        return np.concatenate([np.clip(vector, -1.0, 1.0).astype(np.float32), one_hot,
                               [frac]]).astype(np.float32)
