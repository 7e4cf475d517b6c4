"""The instruction MDP of TeaMs-RL as a Gymnasium environment (`teamsrl/InstructionMDP-v0`).

An episode starts from a seed instruction drawn from the pool (a new one every reset). Each action
is a rewriting operation: the expert LLM rewrites the current instruction with that operation's
prompt, the rewrite is checked against WizardLM's elimination rules, and — when it passes — the
reviewer LLM judges whether old and new differ (P("Not Equal") from one scoring pass). The reward
is the weighted sum of verdict, embedding novelty, failure penalty and query cost
(`teamsrl.rewards`). A failed rewrite is discarded: the instruction stays as it was. `stop` (when
the action set has it) ends the episode without a query. The episode is truncated at the horizon.

Config convention: the env takes ONE dict, an `ExperimentConfig.model_dump()` (it needs the `llm`,
`actions`, `env` sections and the run `seed`); RLlib's `num_envs` key is ignored here and used by
the vector form (`envs.vector`). The LLM client is injected (`client=`) or built from `llm`.

Determinism: every request's sampling seed derives from (env seed, episode index since the last
seeded reset, step, role), engines are batch-invariant, and a seeded reset also clears the
novelty pool, so the same seed and actions give the same trajectory, cached or not. A reset
without a seed on a never-seeded env uses the experiment seed (plus 10,000 x RLlib worker index).

    env = gymnasium.make("teamsrl/InstructionMDP-v0", config=ExperimentConfig().model_dump())
"""

from __future__ import annotations

import hashlib
import logging
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from teamsrl import rewards as R
from teamsrl.actions import ActionSet
from teamsrl.config import ExperimentConfig, validate
from teamsrl.embeddings import Embedder, shared_embedder
from teamsrl.llm.client import LLMClient, build_client
from teamsrl.llm.engine import LLMTimeoutError
from teamsrl.llm.schema import ChatRequest, ChatResponse, ScoreRequest
from teamsrl.seeds import SeedSet, load_seeds

log = logging.getLogger(__name__)

RLLIB_KEYS = ("num_envs",)
# The failure reason of a step whose expert or verdict request timed out (after the serving
# client's retries): the instruction is kept and the reward is a neutral 0 — an infrastructure
# fault is not the policy's doing.
TIMEOUT = "timeout"


def experiment_config(config: Mapping | ExperimentConfig | None) -> ExperimentConfig:
    """The experiment config from an env config dict (`ExperimentConfig.model_dump()` style)."""
    if config is None:
        return ExperimentConfig()
    if isinstance(config, ExperimentConfig):
        return config
    if not isinstance(config, Mapping):
        raise TypeError(f"env config: expected a dict like ExperimentConfig.model_dump(), got "
                        f"{type(config).__name__}")
    return validate({k: v for k, v in dict(config).items() if k not in RLLIB_KEYS},
                    source="<env config>")


def derive_seed(base: int, episode: int, step: int, role: str) -> int:
    """A request's sampling seed from (env seed, episode, step, role); 31 bits, stable."""
    digest = hashlib.sha256(f"{base}/{episode}/{step}/{role}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF


@dataclass
class PendingStep:
    """One env's step while its requests are in flight (see `step_many`)."""

    env: InstructionMDPEnv
    action: int
    before: str
    expert: ChatRequest | None = None
    prompt_truncated: bool = False
    rewrite: str = ""
    rewrite_truncated: bool = False
    failure: str = ""
    verdict_request: ScoreRequest | None = None
    verdict: float = 0.0
    graded_request: ChatRequest | None = None
    graded: int | None = None
    timeouts: int = 0


class InstructionMDPEnv(gym.Env):
    """Rewrite an instruction step by step; reward differences, novelty, success and thrift."""

    metadata = {"render_modes": []}

    def __init__(self, config: Mapping | ExperimentConfig | None = None, *,
                 client: LLMClient | None = None, embedder: Embedder | None = None,
                 seeds: SeedSet | None = None, default_seed: int | None = None) -> None:
        self.experiment = experiment_config(config)
        self.config = self.experiment.env
        self.actions = ActionSet.from_config(self.experiment.actions)
        if seeds is None:
            seeds = load_seeds(self.config.seed_file, self.config.seed_column,
                               self.config.max_seed_chars)
            if seeds.skipped:
                log.warning("seed pool: %s", seeds.report())
        self.seeds = seeds
        self.embedder = embedder if embedder is not None else shared_embedder(self.config.embedder)
        self._owns_client = client is None
        self.client = client if client is not None else build_client(
            self.experiment.llm, self.experiment.run_dir, stage="env")
        n, dim = len(self.actions), self.embedder.dim
        self.observation_space = spaces.Box(
            low=np.concatenate([-np.ones(dim), np.zeros(n + 1)]).astype(np.float32),
            high=np.ones(dim + n + 1, dtype=np.float32), dtype=np.float32)
        self.action_space = spaces.Discrete(n)
        worker = int(getattr(config, "worker_index", 0) or 0)  # RLlib's EnvContext
        self.default_seed = (default_seed if default_seed is not None
                             else self.experiment.seed + 10_000 * worker)
        self._base_seed: int | None = None
        self._episode = -1
        self._pool: deque[np.ndarray] = deque(maxlen=self.config.reward.novelty_pool_size)
        self._episode_vectors: list[np.ndarray] = []
        self._text = ""
        self._seed_id = ""
        self._t = 0
        self._last_action = -1
        self._done = True

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
    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Apply one operation (one expert and at most one reviewer query, `stop`: none)."""
        return step_many([self], [action])[0]

    def _plan(self, action: Any) -> PendingStep:
        if self._done:
            raise RuntimeError("InstructionMDPEnv.step: the episode is over (or never started); "
                               "call reset() first")
        if not self.action_space.contains(action):
            raise ValueError(f"action = {action!r}: expected an int in [0, {len(self.actions)}) "
                             f"for actions {self.actions.names}")
        a = int(action)
        pending = PendingStep(self, a, self._text)
        op = self.actions[a]
        if op.queries:
            prompt = self.actions.render_for(self.client, a, self._text)
            pending.prompt_truncated = prompt.truncated
            pending.expert = self.client.request(
                "expert", list(prompt.messages),
                seed=derive_seed(self._base_seed, self._episode, self._t, "expert"))
        return pending

    def _review(self, p: PendingStep, response: ChatResponse) -> None:
        op = self.actions[p.action]
        p.rewrite = response.text
        p.rewrite_truncated = response.finish_reason == "length"
        p.failure = R.failed_evolution(p.before, p.rewrite, self.config.reward,
                                       template_texts=op.prompt_texts(), cut=p.rewrite_truncated)
        if p.failure:
            return  # a failed rewrite is discarded: no reviewer query is spent on it
        p.verdict_request = R.verdict_request(p.before, p.rewrite)
        if self.config.reward.graded_score:
            p.graded_request = self.client.request(
                "reviewer", R.graded_messages(p.before, p.rewrite),
                seed=derive_seed(self._base_seed, self._episode, self._t, "reviewer"),
                max_tokens=self.config.reward.graded_max_tokens)

    def _finish(self, p: PendingStep, graded_unparsed: bool = False):
        cfg = self.config.reward
        stop = p.expert is None
        nov = 0.0
        if not stop and not p.failure:
            vector = self.embedder.encode([p.rewrite])[0]
            refs = np.stack([*self._episode_vectors, *self._pool])
            nov = R.novelty(vector, refs)
            self._episode_vectors.append(vector)
            self._text = p.rewrite
        reviewer_queries = int(p.verdict_request is not None) + int(p.graded_request is not None)
        if p.failure == TIMEOUT:  # neutral: no verdict, novelty, penalty or cost
            parts = R.combine(cfg, verdict=0.0, novelty=0.0, graded=0.0, failed=False,
                              expert_queries=0, reviewer_queries=0)
        else:
            parts = R.combine(cfg, verdict=p.verdict, novelty=nov,
                              graded=R.graded_reward(p.graded), failed=bool(p.failure),
                              expert_queries=int(not stop), reviewer_queries=reviewer_queries)
        self._t += 1
        self._last_action = p.action
        terminated = stop
        truncated = (not terminated) and self._t >= self.config.horizon
        self._done = terminated or truncated
        info = {
            "episode": self._episode, "step": self._t, "seed_id": self._seed_id,
            "action_name": self.actions.names[p.action],
            "instruction_before": p.before, "rewrite": p.rewrite, "instruction": self._text,
            "failure": p.failure, "verdict": float(p.verdict),
            "reviewed": p.verdict_request is not None, "novelty": float(nov),
            "graded_score": int(p.graded or 0), "graded_unparsed": bool(graded_unparsed),
            "reward_components": {k: v for k, v in parts.items() if k != "total"},
            "queries": {"expert": int(not stop), "reviewer": reviewer_queries},
            "prompt_truncated": p.prompt_truncated, "rewrite_truncated": p.rewrite_truncated,
            "timeouts": p.timeouts,
        }
        obs = self._observation(self._episode_vectors[-1])
        return obs, parts["total"], bool(terminated), bool(truncated), info

    def _observation(self, vector: np.ndarray) -> np.ndarray:
        n = len(self.actions)
        one_hot = np.zeros(n, dtype=np.float32)
        if self._last_action >= 0:
            one_hot[self._last_action] = 1.0
        frac = np.float32(min(self._t / self.config.horizon, 1.0))
        return np.concatenate([np.clip(vector, -1.0, 1.0).astype(np.float32), one_hot,
                               [frac]]).astype(np.float32)

    def close(self) -> None:
        """Close the client when this env built it."""
        if self._owns_client and self.client is not None:
            self.client.close()
            self.client = None
        super().close()


def step_many(envs: Sequence[InstructionMDPEnv], actions: Sequence[Any]) -> list[tuple]:
    """Step several envs that share one client: all expert requests go out as ONE `chat` batch,
    then all reviewer requests as ONE `score` batch (and one batch of ratings, if enabled).

    A request that timed out (the client raised `LLMTimeoutError`) fails only its own step: a
    timed-out rewrite or verdict makes the step a failed evolution with reason `TIMEOUT` and a
    neutral reward; a timed-out rating counts as unparsed (neutral 0)."""
    if not envs:
        return []
    client = envs[0].client
    if any(e.client is not client for e in envs):
        raise ValueError("step_many: expected every env to share one LLMClient")
    pending = [env._plan(a) for env, a in zip(envs, actions, strict=True)]
    rewriting = [p for p in pending if p.expert is not None]
    for p, response in zip(rewriting, _answers(client.chat, "expert",
                                               [p.expert for p in rewriting]), strict=True):
        if response is None:
            p.failure, p.timeouts = TIMEOUT, p.timeouts + 1
            continue
        p.env._review(p, response)
    judged = [p for p in pending if p.verdict_request is not None]
    scores = _answers(client.score, "reviewer", [p.verdict_request for p in judged])
    for p, s in zip(judged, scores, strict=True):
        if s is None:
            p.failure, p.timeouts = TIMEOUT, p.timeouts + 1
            continue
        p.verdict = float(s.probabilities()[R.VERDICT_CANDIDATES.index("Not Equal")])
    graded = [p for p in pending if p.graded_request is not None and p.failure != TIMEOUT]
    unparsed: set[int] = set()
    for p, r in zip(graded, _answers(client.chat, "reviewer",
                                     [p.graded_request for p in graded]), strict=True):
        if r is None:
            p.timeouts += 1
        p.graded = None if r is None else R.parse_graded(r.text)
        if p.graded is None:
            unparsed.add(id(p))
    return [p.env._finish(p, graded_unparsed=id(p) in unparsed) for p in pending]


def _answers(call, role: str, requests: list) -> list:
    """One batch's responses, `None` where a request timed out after the client's retries."""
    try:
        return call(role, requests)
    except LLMTimeoutError as e:
        log.warning("%s", e)
        return e.partial
