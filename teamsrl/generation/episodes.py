"""Running a batch of seeds through the MDP and the answer step (`BatchGenerator`).

The batch's seeds are the sub-envs of one vector env: each step of every live episode is one
expert batch and one reviewer batch (the vector env's `run_episodes`). Each evolution step
becomes a `Row`; failed evolutions are kept as dropped rows with their typed reason (the episode
continues from the previous instruction); then the expert answers every kept instruction in one
batch.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from envs.stepper import Transition
from teamsrl.config import ExperimentConfig
from teamsrl.generation.choose import Chooser, derive
from teamsrl.generation.filters import answer_failure
from teamsrl.generation.rows import Row
from teamsrl.llm.protocol import LLMService
from teamsrl.outcomes import Drop, DropKind
from teamsrl.seeds import Seed, SeedSet


def arm_of(policy: str) -> str:
    """`random` for the Evol-Instruct baseline, `policy` for a trained policy."""
    return "random" if policy == "random" else "policy"


def stage_of(policy: str) -> str:
    """The ledger stage of a generation arm."""
    return f"generate-{arm_of(policy)}"


class BatchGenerator:
    """Runs a batch of seeds through the MDP and the answer step; returns their rows."""

    def __init__(self, config: ExperimentConfig, policy: str, client: LLMService, stage: str,
                 chooser: Chooser | None = None):
        from teamsrl.mdp import make_vector_env

        self.config = config
        self.client = client
        self.stage = stage
        self.arm = arm_of(policy)
        placeholder = SeedSet([Seed("placeholder", "placeholder")], source="<generate>")
        self.venv = make_vector_env(config, client, config.generate.batch_seeds,
                                    seeds=placeholder)
        self.names = self.venv.actions.names
        self.chooser = chooser or Chooser(config, self.names, policy)

    def run(self, batch: Sequence[tuple[int, Seed]]) -> list[Row]:
        """Rows of every step of every seed in `batch` (index in the seed source, seed)."""
        if len(batch) > self.venv.num_envs:
            raise ValueError(f"batch of {len(batch)} seeds: expected <= "
                             f"generate.batch_seeds = {self.venv.num_envs}")
        cfg = self.config
        paths: list[list[str]] = [[] for _ in batch]
        rows: list[Row] = []
        for i, (_, seed) in enumerate(batch):
            self.venv.reset_one(i, seed=derive(cfg.seed, seed.id, "episode"),
                                options={"instruction": seed.text})

        def choose(slots: list[int], obs: np.ndarray) -> list[int]:
            step = self.venv.envs[slots[0]].steps_taken + 1  # live episodes move in lockstep
            return self.chooser.choose([batch[i][1].id for i in slots], step, obs)

        def on_step(i: int, a: int, t: Transition) -> None:
            index, seed = batch[i]
            paths[i].append(self.names[a])
            if t.info["queries"]["expert"]:  # `stop` ends the episode without a row
                rows.append(self._row(index, seed, t.info["step"], list(paths[i]), t.info))

        self.venv.run_episodes(choose, on_step, slots=range(len(batch)))
        self._select_and_answer(rows)
        return rows

    def _row(self, index: int, seed: Seed, step: int, path: list[str], info: dict) -> Row:
        spec = self.client.spec("expert")
        failure = info["failure"]
        return Row(
            row_id=f"{seed.id}/{step}", seed_id=seed.id, seed_index=index, step=step,
            seed_instruction=seed.text,
            instruction=info["rewrite"] if failure else info["instruction"],
            action=path[-1], action_path=path, arm=self.arm, policy_id=self.chooser.policy_id,
            expert_model=spec.model, reviewer_model=self.client.spec("reviewer").model,
            sampling={"temperature": spec.temperature, "top_p": spec.top_p,
                      "max_tokens": spec.max_tokens,
                      "answer_max_tokens": self.config.generate.answer_max_tokens,
                      "policy": self.config.generate.sampling},
            verdict=info["verdict"], novelty=info["novelty"], validity=info["validity"],
            reward_components=info["reward_components"], queries=dict(info["queries"]),
            failure=failure, prompt_truncated=info["prompt_truncated"],
            rewrite_truncated=info["rewrite_truncated"],
            drop=Drop(DropKind.FAILED_EVOLUTION, str(failure)) if failure else None)

    def _select_and_answer(self, rows: list[Row]) -> None:
        gen = self.config.generate
        if gen.keep == "final":
            last: dict[str, Row] = {}
            for r in rows:
                if r.kept:
                    last[r.seed_id] = r
            for r in rows:
                if r.kept and last[r.seed_id] is not r:
                    r.drop = Drop(DropKind.SUPERSEDED)
        todo = [r for r in rows if r.kept]
        if not gen.answer or not todo:
            return
        requests = [self.client.request(
            "expert", [{"role": "user", "content": r.instruction}],
            seed=derive(self.config.seed, r.seed_id, r.step, "answer"),
            max_tokens=gen.answer_max_tokens) for r in todo]
        for r, response in zip(todo, self.client.chat("expert", requests, stage=self.stage),
                               strict=True):
            r.output = response.text.strip()
            r.output_truncated = response.finish_reason == "length"
            r.queries["expert"] += 1
            r.drop = answer_failure(r.output, self.config.env.reward.apology_max_words)
            if r.drop is None and r.output_truncated and gen.drop_cut_answers:
                r.drop = Drop(DropKind.ANSWER_CUT)
