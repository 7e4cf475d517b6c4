"""Configuration of the LLM layer: which model serves each role, how, and where the cache lives."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from teamsrl.llm.embedded import SMOLLM2_ID


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ModelSpec(_Strict):
    """One role's model and its default sampling parameters."""

    model: str = Field(SMOLLM2_ID, description="`embedded:smollm2-135m-instruct`, a local HF "
                       "folder, or a local .gguf file (nothing is downloaded)")
    engine: Literal["transformers", "openai", "vllm"] = Field(
        "transformers", description="transformers: a local model (CPU/GPU); openai: any "
        "OpenAI-compatible server at base_url; vllm: the same client pointed at a "
        "ray.serve.llm vLLM app (GPU clusters; untested on CPU machines)")
    base_url: str | None = Field(None, description="openai/vllm engines: the server's /v1 URL, "
                                 "e.g. http://127.0.0.1:8000/v1")
    served_model: str | None = Field(None, description="openai/vllm engines: the model name "
                                     "the server knows (default: `model`)")
    api_key_env: str | None = Field(None, description="openai/vllm engines: the environment "
                                    "variable holding the API key (keys never go in configs)")
    tokenizer: str | None = Field(None, description="openai/vllm engines: a local tokenizer "
                                  "folder for prompt budgets (default: `model` if local)")
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


    @model_validator(mode="after")
    def _remote_needs_url(self) -> ModelSpec:
        if self.engine != "transformers" and not self.base_url:
            raise ValueError(f"engine = {self.engine!r}: expected base_url (the server's /v1 "
                             "URL)")
        return self


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
