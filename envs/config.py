"""`EnvConfig`: the instruction MDP's section of an experiment config (`ExperimentConfig.env`).

The env is built from this section plus an `ActionSet`, an LLM client, a seed pool and a seed
(`teamsrl.mdp` picks those out of an experiment config); this section holds what is the env's own:
horizon, seed pool, embedder and rewards.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from teamsrl.llm.embedded import MINILM_ID
from teamsrl.quality import QualityConfig
from teamsrl.rewards import RewardConfig


class EnvConfig(BaseModel):
    """The instruction MDP: episodes, observations and rewards."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    horizon: int = Field(6, ge=1, le=1000, description="evolution steps per episode (the "
                         "paper's 6); the episode is truncated after this many steps")
    seed_file: str | None = Field(None, description="seed instructions (JSONL, JSON, CSV or a "
                                  "saved `datasets` folder); default: the 175 bundled "
                                  "Self-Instruct seed tasks")
    seed_column: str = Field("instruction", min_length=1,
                             description="column holding the instruction in the seed file")
    max_seed_chars: int = Field(20_000, ge=1, description="longer seed instructions are skipped "
                                "and reported")
    embedder: str = Field(MINILM_ID, description="sentence-transformers model for observations "
                          f"and novelty: {MINILM_ID!r} or a local folder")
    reward: RewardConfig = Field(default_factory=RewardConfig,
                                 description="reward weights and elimination-rule limits")
    quality: QualityConfig = Field(default_factory=QualityConfig,
                                   description="the instruction-validity judge behind the "
                                   "`not an instruction` rule and the validity reward")
