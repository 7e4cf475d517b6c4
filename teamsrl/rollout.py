"""Roll out the instruction MDP with a fixed policy: `teamsrl rollout --policy random --episodes N`.

The random policy picks a uniformly random operation at every step — WizardLM's Evol-Instruct
behaviour, the baseline TeaMs-RL is measured against. Episodes run `num_envs` at a time on the
vector env's `run_episodes`, so each step's expert rewrites go to the engine as one batch; slot
i's env is seeded `seed + i` and runs episodes until N have started, so no query is spent on an
episode that is not counted. Prints mean return, per-component means, action counts, failure
reasons and the query ledger.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from envs.stepper import Transition
from teamsrl.config import ExperimentConfig
from teamsrl.llm.client import build_client
from teamsrl.llm.ledger import RoleTotals, format_totals
from teamsrl.llm.protocol import LLMService

POLICIES = ("random",)


@dataclass
class RolloutSummary:
    """What a rollout measured."""

    policy: str
    returns: list[float] = field(default_factory=list)
    components: dict[str, list[float]] = field(default_factory=dict)
    actions: Counter = field(default_factory=Counter)
    failures: Counter = field(default_factory=Counter)
    steps: int = 0
    seconds: float = 0.0
    ledger: dict[str, RoleTotals] = field(default_factory=dict)
    trajectory: list[dict] = field(default_factory=list)  # one record per step, in step order

    def report(self) -> str:
        """Human-readable lines for the terminal."""
        r = np.asarray(self.returns, dtype=float)
        comps = ", ".join(f"{k} {np.mean(v):+.3f}" for k, v in self.components.items())
        acts = ", ".join(f"{k} {v}" for k, v in sorted(self.actions.items()))
        n_failed = sum(self.failures.values())
        fails = ", ".join(f"{k} {v}" for k, v in self.failures.most_common()) or "none"
        return "\n".join([
            f"{self.policy} policy: {len(r)} episodes, {self.steps} steps, {self.seconds:.0f} s",
            f"mean return {r.mean():+.3f} (std {r.std():.3f}, min {r.min():+.3f}, "
            f"max {r.max():+.3f})",
            f"per-step component means: {comps}",
            f"action counts: {acts}",
            f"failed rewrites: {n_failed} of {self.steps} steps ({fails})",
            f"ledger (this rollout): {format_totals(self.ledger)}",
        ])


def run_rollout(config: ExperimentConfig, policy: str = "random", episodes: int = 20,
                num_envs: int = 4, client: LLMService | None = None, progress: bool = True
                ) -> RolloutSummary:
    """Run `episodes` episodes of the MDP under `policy`; the client is built unless given."""
    from tqdm import tqdm

    from envs.instruction_mdp import load_pool
    from teamsrl.mdp import make_vector_env

    if policy not in POLICIES:
        raise ValueError(f"--policy {policy!r}: expected one of {POLICIES}")
    if episodes < 1:
        raise ValueError(f"--episodes {episodes}: expected >= 1")
    if num_envs < 1:
        raise ValueError(f"--num-envs {num_envs}: expected >= 1")
    seeds = load_pool(config.env)  # a bad seed file fails before any model loads
    own = client is None
    client = client or build_client(config.llm, config.run_dir, stage="rollout")
    before = client.ledger.session_totals()
    n = min(num_envs, episodes)
    venv = make_vector_env(config, client, n, seeds=seeds)
    names = venv.actions.names
    rng = np.random.default_rng(config.seed)
    summary = RolloutSummary(policy)
    returns = [0.0] * n
    begun = n
    bar = tqdm(total=episodes, unit="episode", disable=not progress)

    def choose(slots: list[int], _obs: np.ndarray) -> list[int]:
        return [int(rng.integers(len(names))) for _ in slots]

    def on_step(i: int, a: int, t: Transition) -> None:
        info = t.info
        summary.steps += 1
        summary.actions[names[a]] += 1
        for k, v in info["reward_components"].items():
            summary.components.setdefault(k, []).append(v)
        if info["failure"]:
            summary.failures[info["failure"].kind.value] += 1
        returns[i] += t.reward
        summary.trajectory.append({
            "slot": i, "episode": info["episode"], "step": info["step"],
            "seed_id": info["seed_id"], "action": info["action_name"],
            "reward": float(t.reward), "failure": str(info["failure"] or ""),
            "rewrite": info["rewrite"], "instruction": info["instruction"],
            "verdict": info["verdict"], "novelty": info["novelty"],
            "terminated": t.terminated, "truncated": t.truncated})
        if t.done:
            summary.returns.append(returns[i])
            returns[i] = 0.0
            bar.update(1)

    def restart(_slot: int) -> bool:  # this slot starts another episode while some are due
        nonlocal begun
        if begun < episodes:
            begun += 1
            return True
        return False

    started = time.perf_counter()
    try:
        venv.reset(seed=config.seed)
        venv.run_episodes(choose, on_step, restart)
        bar.close()
    finally:
        summary.seconds = time.perf_counter() - started
        summary.ledger = _minus(client.ledger.session_totals(), before)
        if own:
            client.close()
    return summary


def _minus(after: dict[str, RoleTotals], before: dict[str, RoleTotals]) -> dict[str, RoleTotals]:
    out = {}
    for role, a in after.items():
        b = before.get(role, RoleTotals())
        out[role] = RoleTotals(a.queries - b.queries, a.cache_hits - b.cache_hits,
                               a.failures - b.failures, a.prompt_tokens - b.prompt_tokens,
                               a.completion_tokens - b.completion_tokens, a.seconds - b.seconds)
    return out
