"""Choosing each step's operation in `teamsrl generate`: forced steps first, else the trained
policy (sampled or greedy) or, for the Evol-Instruct baseline, a uniformly random operation.

Every draw is seeded by (run seed, seed id, step), so a seed's actions do not depend on batching,
sharding or restarts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from teamsrl.config import ExperimentConfig


def derive(*parts) -> int:
    """A stable 31-bit seed from any parts (`derive(run_seed, seed_id, step, "action")`)."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & 0x7FFF_FFFF


class Chooser:
    """Picks each step's operation: forced ones first, else the policy (or uniform random)."""

    def __init__(self, config: ExperimentConfig, names: Sequence[str], policy: str):
        self.names = list(names)
        self.seed = config.seed
        self.greedy = config.generate.sampling == "greedy"
        # names checked against the action set by ExperimentConfig's validator
        self.forced = {int(step): self.names.index(name)
                       for step, name in config.generate.forced_actions.items()}
        self.policy = None
        self.policy_id = "random"
        if policy != "random":
            from teamsrl.policy.export import load_policy

            self.policy = load_policy(policy)
            if self.policy.action_names != self.names:
                raise ValueError(f"--policy {policy!r}: trained for actions "
                                 f"{self.policy.action_names}, but the config's action set is "
                                 f"{self.names}")
            self.policy_id = f"{Path(policy).resolve()}@iteration-{self.policy.spec.iteration}"

    def choose(self, seed_ids: Sequence[str], step: int, obs: np.ndarray) -> list[int]:
        """Actions for one step (1-based) of the given seeds' episodes."""
        out = []
        probs = None
        if self.policy is not None and step not in self.forced:
            probs = self.policy.action_probabilities(np.asarray(obs))
        for i, sid in enumerate(seed_ids):
            rng = np.random.default_rng(derive(self.seed, sid, step, "action"))
            if step in self.forced:
                out.append(self.forced[step])
            elif probs is None:
                out.append(int(rng.integers(len(self.names))))
            elif self.greedy:
                out.append(int(np.argmax(probs[i])))
            else:
                p = probs[i] / probs[i].sum()
                out.append(int(rng.choice(len(p), p=p)))
        return out
