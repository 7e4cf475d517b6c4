"""Configuration of the LLM layer: which model serves each role, how, and where the cache lives."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from teamsrl.llm.embedded import SMOLLM2_ID


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SimulatedEngineConfig(_Strict):
    """Constants of `engine: simulated`, a latency model of one GPU running vLLM (no model).

    Continuous batching: each step admits waiting sequences while fewer than `max_num_seqs` run,
    and costs max(decode_step_s + decode_s_per_token * (sequences decoding), prefill_s_per_token
    * (prompt tokens admitted)) + wave_overhead_s (when it admits any): the admitted prompts are
    prefilled in the decode step (chunked prefill), compute beside weight reads. A batch alone on
    the GPU (a "wave") so costs
        wave_overhead_s + prefill_s_per_token * (prompt tokens of the wave)
        + decode_step_s * (longest completion of the wave) + decode_s_per_token * (tokens generated)
    which is a + b * (batch tokens) plus one fixed cost per decode step. Defaults are fitted to
    the vLLM sweep of Llama-3.1-8B-Instruct (bf16, one A100 40GB, 1024 in / 128 out) in
    ../shared/mission/reference-facts.md: ~75 tok/s for one request alone (13.3 ms a token) and
    6.6x that aggregate at concurrency 8 (8 rows a step in 16.2 ms).
    """

    wave_overhead_s: float = Field(
        0.005, ge=0.0, description="fixed seconds of a step that admits new sequences "
        "(scheduling, sampling, HTTP); an assumption, not in the published figures")
    prefill_s_per_token: float = Field(
        1.3e-4, ge=0.0, description="seconds per prompt token: 2 x 8.0e9 FLOP a token at ~40% "
        "of the A100's 312 TFLOP/s bf16 peak (the datasheet peak is the one input not in "
        "reference-facts.md); 1024 prompt tokens ~0.13 s to the first token")
    decode_step_s: float = Field(
        12.93e-3, ge=0.0, description="seconds per decode step whatever the batch (reading the "
        "weights): 1/75 s per token alone (reference-facts.md) minus decode_s_per_token")
    decode_s_per_token: float = Field(
        4.04e-4, ge=0.0, description="seconds each generated token adds to its step: 8 rows "
        "at 6.6 x 75 tok/s take 16.16 ms a step vs 13.33 ms alone, (16.16 - 13.33) / 7; "
        "ceiling 1/b ~2,500 tok/s, the order of the ~3,363 tok/s peak published for a 7B on "
        "one A100 80GB (reference-facts.md)")
    max_num_seqs: int = Field(
        128, ge=1, description="sequences running at once (vLLM's max_num_seqs); more wait "
        "for a free slot. 128: the ~18 GB of KV cache an A100 40GB keeps beside 16 GB of "
        "bf16 weights hold ~140 sequences of 1,152 tokens at 128 KiB a token")
    median_completion_tokens: int = Field(
        64, ge=1, description="median natural length of a completion (log-normal, sigma "
        "0.6), before max_tokens cuts it; an assumption for instruction rewrites")
    time_scale: float = Field(
        1.0, ge=0.0, description="multiplies every simulated latency: 0.01 makes a run 100x "
        "shorter (say so beside any figure measured with it); 0 never sleeps")


class ModelSpec(_Strict):
    """One role's model and its default sampling parameters."""

    model: str = Field(SMOLLM2_ID, description="`embedded:smollm2-135m-instruct`, a local HF "
                       "folder, or a local .gguf file (nothing is downloaded)")
    engine: Literal["transformers", "llamacpp", "openai", "vllm", "simulated"] = Field(
        "transformers", description="transformers: a local model (CPU/GPU); llamacpp: the same "
        "GGUF run by llama.cpp on the CPU, one request at a time, same prompts and seeded "
        "sampling (the optional extra `teamsrl[llamacpp]`; device, dtype and max_batch_size do "
        "not apply); openai: any "
        "OpenAI-compatible server at base_url; vllm: the same client pointed at a "
        "ray.serve.llm vLLM app (GPU clusters; untested on CPU machines); simulated: a "
        "latency model of a vLLM GPU with random-word texts, for throughput benchmarks only "
        "(see `simulated`; quality benchmarks and reports refuse it)")
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
    adaptive_threads: bool = Field(
        True, description="transformers engine on CPU: torch's threads follow the cores other "
        "processes leave free, re-read every 16 decode steps (teamsrl/cpu.py); off: torch's "
        "fixed count")
    temperature: float = Field(0.7, ge=0.0, le=5.0, description="sampling temperature (0 = greedy)")
    top_p: float = Field(0.95, gt=0.0, le=1.0, description="nucleus sampling mass")
    max_tokens: int = Field(96, ge=1, le=8192, description="new tokens per completion")
    max_prompt_tokens: int = Field(
        384, ge=16, description="token budget of the instruction inside a prompt; longer "
        "instructions are truncated and the truncation recorded")
    probe_score: bool = Field(
        True, description="openai/vllm engines: score a fixed probe once at start-up and refuse "
        "a server whose log-probs are implausible; off for a chat-only server (a role that "
        "never scores)")
    simulated: SimulatedEngineConfig = Field(
        default_factory=SimulatedEngineConfig, description="engine = simulated: the latency "
        "model's constants (ignored by other engines)")

    @model_validator(mode="after")
    def _remote_needs_url(self) -> ModelSpec:
        if self.engine in ("openai", "vllm") and not self.base_url:
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


def simulated_overrides(time_scale: float) -> list[str]:
    """`--set`-style overrides that put both roles on `engine: simulated` with this
    `time_scale` (0: no sleep): for throughput benchmarks, and for tests whose property does not
    depend on the texts."""
    return [f"llm.{role}.{key}" for role in ("expert", "reviewer")
            for key in ("engine=simulated", f"simulated.time_scale={time_scale}")]


def refuse_simulated(llm_config: LLMConfig, what: str) -> None:
    """Raise if any role runs `engine: simulated`: its texts are random words, so `what` (a
    quality figure) would be meaningless."""
    roles = [r for r in ("expert", "reviewer") if getattr(llm_config, r).engine == "simulated"]
    if roles:
        keys = ", ".join(f"llm.{r}.engine = 'simulated'" for r in roles)
        raise ValueError(f"{what}: {keys}: a latency model whose texts and log-probs are random, "
                         "for throughput benchmarks only; expected a real engine (transformers, "
                         "llamacpp, openai or vllm) for a quality figure")
