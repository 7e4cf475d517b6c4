"""Configuration of the LLM layer: which model serves each role, how, and where the cache lives."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from teamsrl.llm.embedded import SMOLLM2_ID


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSpec(_Strict):
    """One role's model and its default sampling parameters."""

    model: str = Field(SMOLLM2_ID, description="`embedded:smollm2-135m-instruct`, a local HF "
                       "folder, or a local .gguf file (nothing is downloaded)")
    engine: Literal["transformers", "vllm"] = Field(
        "transformers", description="transformers (CPU/GPU, here) or vllm (GPU clusters, via "
        "ray.serve.llm; untested on CPU machines)")
    device: str = Field("auto", description="torch device: auto, cpu, cuda, cuda:1, ...")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="weights dtype; auto = bfloat16 on GPU, float32 on CPU")
    max_batch_size: int = Field(16, ge=1, description="rows per forward pass in the engine")
    temperature: float = Field(0.7, ge=0.0, le=5.0, description="sampling temperature (0 = greedy)")
    top_p: float = Field(0.95, gt=0.0, le=1.0, description="nucleus sampling mass")
    max_tokens: int = Field(96, ge=1, le=8192, description="new tokens per completion")
    max_prompt_tokens: int = Field(
        384, ge=16, description="token budget of the instruction inside a prompt; longer "
        "instructions are truncated and the truncation recorded")


class CacheConfig(_Strict):
    """The content-addressed response cache."""

    enabled: bool = Field(True, description="serve repeated requests from the cache")
    path: str | None = Field(None, description="SQLite file; default <run_dir>/llm-cache.sqlite")


class LLMConfig(_Strict):
    """Models of the expert and reviewer roles, the cache and the ledger."""

    expert: ModelSpec = Field(default_factory=ModelSpec, description="rewrites and answers")
    reviewer: ModelSpec = Field(
        default_factory=lambda: ModelSpec(temperature=0.0, max_tokens=8),
        description="judges whether a rewrite differs from its source")
    cache: CacheConfig = Field(default_factory=CacheConfig, description="response cache")
    ledger_path: str | None = Field(
        None, description="SQLite ledger; default <run_dir>/ledger.sqlite")
