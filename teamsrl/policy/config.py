"""`PolicyConfig`: RLlib PPO settings of `teamsrl train-policy` (the `policy` config section)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class PolicyConfig(BaseModel):
    """PPO on RLlib's current API stack, sized for the LLM being the whole cost of a step."""

    model_config = ConfigDict(extra="forbid")
    iterations: int = Field(2, ge=1, description="PPO iterations (train() calls) to run")
    num_env_runners: int = Field(1, ge=0, description="env runner actors (0 = sample in the "
                                 "driver); spread over the cluster's nodes")
    num_envs_per_env_runner: int = Field(4, ge=1, description="sub-envs per runner; their LLM "
                                         "requests reach the replica as one batch")
    num_cpus_per_env_runner: float = Field(0.0, ge=0, description="CPUs each runner reserves; "
                                           "0 on small machines so the LLM replica gets them")
    custom_resources_per_env_runner: dict[str, float] = Field(
        default_factory=dict, description="custom Ray resources per env runner, e.g. "
        "{rollout_node: 0.01} to place runners on the nodes that have them")
    vectorize_mode: Literal["vector_entry_point", "sync"] = Field(
        "vector_entry_point", description="vector_entry_point batches the sub-envs' requests; "
        "sync steps them one by one (batches of 1)")
    sampling: Literal["sync", "async"] = Field(
        "sync", description="sync: RLlib's PPO, all runners sample a round, the slowest ends "
        "it, then the learner updates; async: every runner keeps sampling, an update takes "
        "fragments as they arrive (some one update stale; teamsrl.policy.async_ppo)")
    train_batch_size: int = Field(32, ge=1, description="env steps per PPO update (per learner)")
    minibatch_size: int = Field(16, ge=1, description="SGD minibatch size")
    num_epochs: int = Field(4, ge=1, description="SGD passes over each train batch")
    lr: float = Field(3e-4, gt=0, description="Adam learning rate")
    gamma: float = Field(0.995, gt=0, le=1, description="discount (the paper's 0.995)")
    gae_lambda: float = Field(0.97, ge=0, le=1, description="GAE lambda (the paper's 0.97)")
    clip_param: float = Field(0.2, gt=0, description="PPO clip range")
    entropy_coeff: float = Field(0.01, ge=0, description="entropy bonus")
    hidden_sizes: list[int] = Field(default_factory=lambda: [64, 64],
                                    description="MLP layers of policy and value nets")
    sample_timeout_s: float | None = Field(
        None, gt=0, description="how long sampling may take before RLlib gives up; default: "
        "sized from a measured warm-up step")
    checkpoint_every: int = Field(1, ge=1, description="checkpoint every K iterations (and at "
                                  "the end)")
    num_learners: int = Field(0, ge=0, description="learner actors (0 = learn in the driver)")
    num_gpus_per_learner: float = Field(0.0, ge=0, description="GPUs per learner")
    max_env_runner_restarts: int = Field(100, ge=0, description="restarts of crashed runners")

    @model_validator(mode="after")
    def _batches(self) -> PolicyConfig:
        if self.minibatch_size > self.train_batch_size:
            raise ValueError(f"minibatch_size = {self.minibatch_size}: expected <= "
                             f"train_batch_size = {self.train_batch_size}")
        return self
