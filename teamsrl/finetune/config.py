"""Configuration of the fine-tuning stage (`teamsrl finetune`): model, ZeRO, schedule, launch.

Defaults are the CPU recipe (fp32, ZeRO-2, 2 processes, gloo); the paper's GPU settings
(Llama-7B, ZeRO-3 with offload, bf16, batch 64, 3 epochs) live in `experiments/*.yaml`.
Only pydantic is imported here, so `teamsrl.config` loads without torch or DeepSpeed.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from teamsrl.llm.embedded import SMOLLM2_ID


class FinetuneConfig(BaseModel):
    """DeepSpeed ZeRO supervised fine-tuning of a causal LM on an Alpaca-format dataset."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    base_model: str = Field(SMOLLM2_ID, description="`embedded:smollm2-135m-instruct` or a "
                            "local Hugging Face causal-LM folder (nothing is downloaded)")
    backend: Literal["cpu", "gpu", "ray"] = Field(
        "cpu", description="cpu: N local processes over gloo; gpu: N local processes over "
        "NCCL, one per GPU; ray: a Ray Train TorchTrainer with N workers (cluster or local)")
    num_processes: int = Field(2, ge=1, le=4096, description="data-parallel processes "
                               "(cpu/gpu) or Ray Train workers (ray)")
    ray_use_gpu: bool = Field(False, description="ray backend: one GPU per worker (NCCL) "
                              "instead of CPU workers (gloo)")
    ray_cpus_per_worker: float = Field(1.0, gt=0, description="ray backend: CPUs per worker")
    zero_stage: Literal[2, 3] = Field(2, description="DeepSpeed ZeRO stage (2: optimizer state "
                                      "and gradients sharded; 3: parameters too)")
    offload: bool = Field(False, description="offload optimizer state (and parameters with "
                          "ZeRO-3) to CPU memory; GPU backends only")
    deepspeed_config: str | None = Field(
        None, description="optional DeepSpeed JSON (e.g. experiments/deepspeed/zero3_offload."
        "json) merged over the settings built from this section; 'auto' values are filled in")
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="training precision; fp32 on CPU, bf16 on GPUs that have it")
    epochs: float = Field(3.0, gt=0, description="passes over the training split (paper: 3)")
    max_steps: int | None = Field(None, ge=1, description="stop after this many optimizer steps "
                                  "(overrides epochs when smaller)")
    stop_at_step: int | None = Field(None, ge=1, description="end this invocation after this "
                                     "step (a checkpoint is written) without changing the "
                                     "schedule; `--resume` continues (time-sliced jobs)")
    learning_rate: float = Field(2e-5, gt=0, le=1.0, description="peak learning rate "
                                 "(paper: 2e-5)")
    lr_schedule: Literal["cosine", "constant"] = Field(
        "cosine", description="decay after warm-up (paper: cosine)")
    warmup_steps: int = Field(2, ge=0, description="linear warm-up steps (paper: 2)")
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW weight decay (not applied to "
                                "biases and norm weights)")
    adam_betas: tuple[float, float] = Field((0.9, 0.999), description="AdamW betas")
    adam_eps: float = Field(1e-8, gt=0, description="AdamW epsilon")
    max_grad_norm: float = Field(1.0, ge=0.0, description="gradient clipping (0 = off)")
    max_length: int = Field(512, ge=8, description="tokens per example, prompt + response; "
                            "longer rows are truncated and counted (paper: 512)")
    per_device_batch_size: int = Field(4, ge=1, description="examples per process per "
                                       "micro-step (paper: 64 on 4 GPUs)")
    gradient_accumulation_steps: int = Field(1, ge=1, description="micro-steps per optimizer "
                                             "step")
    gradient_checkpointing: bool = Field(False, description="recompute activations in the "
                                         "backward pass (less memory, ~30% more compute)")
    heldout_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="share of rows set aside "
                                    "and never trained on (the membership-inference attack's "
                                    "non-members)")
    save_steps: int = Field(50, ge=1, description="write a resumable DeepSpeed checkpoint "
                            "every N optimizer steps")
    keep_checkpoints: int = Field(2, ge=1, description="newest checkpoints kept on disk")
    logging_steps: int = Field(1, ge=1, description="log loss, lr, grad norm, tokens/s every "
                               "N optimizer steps")
    chat_template: Literal["alpaca", "base"] = Field(
        "alpaca", description="chat template saved with the model: the Alpaca format it was "
        "trained on, or the base model's own")
    attn_implementation: Literal["sdpa", "eager"] = Field(
        "sdpa", description="attention kernel of the model")
    mfu_peak_tflops: float = Field(989.0, gt=0, description="per-GPU peak (TFLOP/s) for the "
                                   "MFU logged on GPUs; 989 = H100/H200 dense bf16 datasheet")
    master_port: int = Field(0, ge=0, le=65535, description="rendezvous port of the cpu/gpu "
                             "launch (0 = pick a free one)")

    @model_validator(mode="after")
    def _check_combinations(self) -> FinetuneConfig:
        if self.offload and self.backend == "cpu":
            raise ValueError("offload=True with backend='cpu': offload moves state from GPU "
                             "to CPU memory; expected offload=False or backend gpu/ray")
        if self.precision != "fp32" and self.backend == "cpu":
            raise ValueError(f"precision={self.precision!r} with backend='cpu': the CPU "
                             "recipe trains in fp32; expected precision='fp32'")
        return self
