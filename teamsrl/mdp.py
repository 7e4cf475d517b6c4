"""The instruction MDP of one experiment: the bridge from `ExperimentConfig` to `envs/`.

`envs/` knows only its own parts (`EnvConfig`, `ActionSet`, an LLM client, a seed pool, a
seed); this module picks them out of an experiment config, so rollouts, generation, policy
training and benchmarks build the env one way.

    venv = make_vector_env(config, client, num_envs=4)
"""

from __future__ import annotations

from envs.instruction_mdp import InstructionMDPEnv
from envs.vector import InstructionMDPVectorEnv
from teamsrl.actions import ActionSet
from teamsrl.config import ExperimentConfig
from teamsrl.embeddings import Embedder
from teamsrl.llm.protocol import LLMService
from teamsrl.quality import ValidityJudge
from teamsrl.seeds import SeedSet


def make_env(config: ExperimentConfig, client: LLMService, *, seeds: SeedSet | None = None,
             embedder: Embedder | None = None, judge: ValidityJudge | None = None,
             seed: int | None = None) -> InstructionMDPEnv:
    """One env of the experiment (default seed: the run seed)."""
    return InstructionMDPEnv(config.env, client=client,
                             actions=ActionSet.from_config(config.actions), seeds=seeds,
                             embedder=embedder, judge=judge,
                             seed=config.seed if seed is None else seed)


def make_vector_env(config: ExperimentConfig, client: LLMService, num_envs: int, *,
                    seeds: SeedSet | None = None, embedder: Embedder | None = None,
                    judge: ValidityJudge | None = None, seed: int | None = None
                    ) -> InstructionMDPVectorEnv:
    """N envs of the experiment stepped together (sub-env i: default seed `seed + i`)."""
    return InstructionMDPVectorEnv(config.env, num_envs, client=client,
                                   actions=ActionSet.from_config(config.actions), seeds=seeds,
                                   embedder=embedder, judge=judge,
                                   seed=config.seed if seed is None else seed)
