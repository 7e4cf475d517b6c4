"""`GenerateConfig`: the `generate` section of an experiment config (`teamsrl generate`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class DedupConfig(BaseModel):
    """Cross-row near-duplicate removal, applied once at the end in (seed id, step) order."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    minhash_threshold: float | None = Field(
        0.7, gt=0.0, le=1.0, description="MinHash LSH Jaccard threshold on word 3-gram "
        "shingles of instruction + input (datasketch); null turns it off")
    num_perm: int = Field(128, ge=16, le=1024, description="MinHash permutations")
    embedding_threshold: float | None = Field(
        0.95, gt=0.0, le=1.0, description="cosine similarity (MiniLM) at or above which a row "
        "is a near-duplicate of an earlier kept row; null turns it off")


class GenerateConfig(BaseModel):
    """Dataset generation from the trained policy (or the random Evol-Instruct baseline)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)
    sampling: Literal["greedy", "sample"] = Field(
        "sample", description="sample: draw from the policy's distribution (seeded per run "
        "seed, seed and step, so a rerun gives the same dataset); greedy: its most probable "
        "operation, which for a briefly trained policy is often one operation at every step. "
        "benchmarks/headline.py measures the sampled policy against random on held-out seeds")
    forced_actions: dict[int, str] = Field(
        default_factory=dict, description="operation forced at a step (1-based), e.g. "
        "{1: breadth, 4: breadth} as in the paper; the policy picks the other steps")
    keep: Literal["all_steps", "final"] = Field(
        "all_steps", description="all_steps: a row for every successful evolution step (the "
        "paper keeps them all); final: only each seed's last successful instruction")
    answer: bool = Field(True, description="the expert answers every kept instruction (the "
                         "`output` column); off: instructions only")
    answer_max_tokens: int = Field(128, ge=1, le=8192, description="tokens of each answer")
    drop_cut_answers: bool = Field(True, description="drop a row whose answer the expert "
                                   "stopped at answer_max_tokens (SFT on cut answers teaches "
                                   "abrupt stops); off: keep it, flagged output_truncated")
    batch_seeds: int = Field(16, ge=1, description="seeds stepped together: one engine batch "
                             "per step, one append to rows.jsonl per batch. 16 fills the "
                             "engine's default max_batch_size (issue 19's job, side by side: "
                             "2.06 s per pair vs 2.54 s at 8, benchmarks/results/"
                             "evolve_throughput_batch16.json). Another value gives the same "
                             "rows up to float rounding: the batch's padding moves logits and "
                             "scores in their last bits, which flips a sampled token or a "
                             "judgement only where two candidates nearly tie (there: 1 rewrite "
                             "of 90 differed, from its first token)")
    max_seeds: int | None = Field(None, ge=1, description="use only the first N seeds")
    shards: int = Field(0, ge=0, description="0: run in this process with a local engine; "
                        "N: N Ray actors against the Serve app, batches spread over them")
    dedup: DedupConfig = Field(default_factory=DedupConfig, description="near-duplicates")

    @field_validator("forced_actions")
    @classmethod
    def _steps_positive(cls, value: dict[int, str]) -> dict[int, str]:
        bad = [k for k in value if k < 1]
        if bad:
            raise ValueError(f"step {bad[0]}: expected steps numbered from 1")
        return value
