"""The DeepSpeed side of fine-tuning: config, optimizer, schedule, engine, one step, export.

This module imports only the standard library at the top and torch/transformers/deepspeed inside
functions, and takes the fine-tuning settings as a plain dict (`FinetuneConfig.model_dump()`), so
`benchmarks/gpu_sft_mfu.py` can run it on a machine without pydantic-config, Ray or datasets.
"""

from __future__ import annotations

import copy
import json
import math
import os
import sys
from pathlib import Path
from typing import Any


def build_deepspeed_config(cfg: dict[str, Any], world_size: int, on_gpu: bool) -> dict[str, Any]:
    """The DeepSpeed JSON config for these settings; an optional JSON file is merged on top."""
    zero: dict[str, Any] = {
        "stage": cfg["zero_stage"],
        "contiguous_gradients": True,
        # overlap needs device streams; the CPU accelerator has none worth overlapping
        "overlap_comm": on_gpu,
        "reduce_bucket_size": 5e7,
    }
    if cfg["zero_stage"] == 2:
        zero["allgather_bucket_size"] = 5e7
    else:
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    if cfg.get("offload"):
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
        if cfg["zero_stage"] == 3:
            zero["offload_param"] = {"device": "cpu", "pin_memory": True}
    ds = {
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "train_batch_size": "auto",
        "gradient_clipping": "auto",
        "zero_allow_untested_optimizer": True,
        "zero_optimization": zero,
        "bf16": {"enabled": "auto"},
        "fp16": {"enabled": "auto"},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if cfg.get("deepspeed_config"):
        path = Path(cfg["deepspeed_config"])
        try:
            user = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"finetune.deepspeed_config = {str(path)!r}: file not "
                                    "found; expected a DeepSpeed JSON file") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"finetune.deepspeed_config = {str(path)!r}: invalid JSON "
                             f"({e.msg} at line {e.lineno})") from None
        stage = user.get("zero_optimization", {}).get("stage", "auto")
        if stage not in ("auto", cfg["zero_stage"]):
            raise ValueError(f"finetune.deepspeed_config {str(path)!r} sets zero_optimization."
                             f"stage = {stage!r} but finetune.zero_stage = {cfg['zero_stage']}; "
                             "expected them to agree (or 'auto' in the JSON)")
        ds = _merge(ds, user)
    return _fill_auto(ds, cfg, world_size)


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _fill_auto(ds: dict, cfg: dict, world_size: int) -> dict:
    values = {
        "train_micro_batch_size_per_gpu": cfg["per_device_batch_size"],
        "gradient_accumulation_steps": cfg["gradient_accumulation_steps"],
        "train_batch_size": cfg["per_device_batch_size"] * cfg["gradient_accumulation_steps"]
        * world_size,
        "gradient_clipping": cfg["max_grad_norm"],
        "bf16.enabled": cfg["precision"] == "bf16",
        "fp16.enabled": cfg["precision"] == "fp16",
        "zero_optimization.stage": cfg["zero_stage"],
    }

    def walk(node: dict, prefix: str) -> None:
        for k, v in node.items():
            key = f"{prefix}{k}"
            if isinstance(v, dict):
                walk(v, key + ".")
            elif v == "auto":
                if key not in values:
                    raise ValueError(f"DeepSpeed config key {key!r} = 'auto': teamsrl fills "
                                     f"'auto' only for {sorted(values)}; expected a value")
                node[k] = values[key]

    walk(ds, "")
    return ds


def lr_factor(step: int, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """LR multiplier for optimizer update `step` (0-based): linear warm-up, then cosine to 0."""
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)  # never 0: the first update already moves
    if schedule == "constant":
        return 1.0
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def torch_dtype(precision: str):
    """The torch dtype of a precision name."""
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def load_model(model_path: str, cfg: dict[str, Any], ds_config: dict[str, Any]):
    """The causal LM; under ZeRO-3 it is built partitioned (`HfDeepSpeedConfig` -> zero.Init)."""
    from transformers import AutoModelForCausalLM

    keep_alive = None
    if cfg["zero_stage"] == 3:
        from transformers.integrations import HfDeepSpeedConfig

        keep_alive = HfDeepSpeedConfig(ds_config)  # must outlive from_pretrained
    # ZeRO keeps fp32 master weights itself; the module holds the training precision
    model = AutoModelForCausalLM.from_pretrained(
        model_path, dtype=torch_dtype(cfg["precision"]),
        attn_implementation=cfg.get("attn_implementation", "sdpa"))
    model.config.use_cache = False
    if cfg.get("gradient_checkpointing"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    del keep_alive
    return model


def make_optimizer(model, cfg: dict[str, Any], ds_config: dict[str, Any], on_gpu: bool):
    """AdamW without decay on biases/norms; torch's (fused on GPU), DeepSpeed's CPU Adam when
    the optimizer state is offloaded."""
    import torch

    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if p.ndim < 2 or "norm" in name.lower() else decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg["weight_decay"]},
              {"params": no_decay, "weight_decay": 0.0}]
    kwargs = {"lr": cfg["learning_rate"], "betas": tuple(cfg["adam_betas"]),
              "eps": cfg["adam_eps"]}
    offload = ds_config["zero_optimization"].get("offload_optimizer", {}).get("device", "none")
    if offload not in (None, "none"):
        from deepspeed.ops.adam import DeepSpeedCPUAdam  # JIT-built on first use (GPU hosts)

        return DeepSpeedCPUAdam(groups, adamw_mode=True, **kwargs)
    if on_gpu:
        kwargs["fused"] = True
    return torch.optim.AdamW(groups, **kwargs)


def build_engine(model, cfg: dict[str, Any], ds_config: dict[str, Any], total_steps: int,
                 on_gpu: bool):
    """`deepspeed.initialize` with our optimizer and a LambdaLR (saved in checkpoints)."""
    import deepspeed
    import torch

    optimizer = make_optimizer(model, cfg, ds_config, on_gpu)

    def scheduler(opt):
        return torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: lr_factor(s, total_steps, cfg["warmup_steps"], cfg["lr_schedule"]))

    if not on_gpu:
        _import_muon_uncompiled()
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer,
                                           lr_scheduler=scheduler, config=ds_config)
    return engine


MUON_MODULE = "deepspeed.runtime.zero.muon.muon_optimizer"


def _import_muon_uncompiled() -> None:
    """Import DeepSpeed's Muon optimizer with its kernels left eager. ZeRO imports the module in
    every rank whatever the optimizer (its optimizer check, ZeRO-2's gradient reduction, ZeRO-3's
    constructor), and at import the module wraps three Newton-Schulz kernels in `torch.compile`,
    which loads torch's inductor: ~2 s of CPU in each rank of a CPU fine-tune, for an optimizer
    we never build (ours is torch's AdamW or DeepSpeedCPUAdam). The module's decorator is
    DeepSpeed's `compiler.compile()`; for this one import it returns DeepSpeed's own fallback
    where torch has no `compile` (`dummy_decorator`, the identity). GPU runs keep the compiled
    kernels (`--compile` loads inductor there anyway)."""
    if MUON_MODULE in sys.modules:
        return
    import importlib

    from deepspeed.runtime import compiler

    real = compiler.compile
    compiler.compile = lambda: compiler.dummy_decorator
    try:
        importlib.import_module(MUON_MODULE)
    finally:
        compiler.compile = real


def micro_step(engine, batch: dict):
    """Forward, backward and (at an accumulation boundary) the optimizer step; returns the
    detached loss tensor (no host sync)."""
    batch = {k: v.to(engine.device, non_blocking=True) for k, v in batch.items()}
    loss = engine(**batch).loss
    engine.backward(loss)
    engine.step()
    return loss.detach()


def optimizer_fingerprint(engine) -> list[float]:
    """[sum |exp_avg|, sum exp_avg_sq, max step] over every rank's optimizer partition."""
    import torch
    import torch.distributed as dist

    inner = getattr(engine.optimizer, "optimizer", engine.optimizer)
    acc = torch.zeros(3, dtype=torch.float64)
    for state in inner.state.values():
        if "exp_avg" in state:
            acc[0] += state["exp_avg"].double().abs().sum().cpu()
            acc[1] += state["exp_avg_sq"].double().sum().cpu()
            acc[2] = max(acc[2], float(state.get("step", 0)))
    sums = acc[:2].clone().to(engine.device)
    dist.all_reduce(sums)
    return [float(sums[0]), float(sums[1]), float(acc[2])]


def full_state_dict(engine):
    """The whole model's weights on CPU on rank 0 (None elsewhere); call on every rank."""
    import torch.distributed as dist

    if engine.zero_optimization_stage() == 3:
        return engine._zero3_consolidated_16bit_state_dict()  # gathered layer by layer
    if dist.get_rank() != 0:
        return None
    return {k: v.detach().cpu() for k, v in engine.module.state_dict().items()}


def save_hf_model(engine, tokenizer, out_dir: str | Path, chat_template: str | None) -> None:
    """Write a Hugging Face folder (safetensors, config, tokenizer, chat template) on rank 0."""
    import torch.distributed as dist

    state = full_state_dict(engine)
    if dist.get_rank() == 0:
        out_dir = Path(out_dir)
        tmp = out_dir.with_name(out_dir.name + ".tmp")
        model = engine.module
        model.config.use_cache = True
        model.save_pretrained(tmp, state_dict=state, safe_serialization=True)
        if chat_template is not None:
            tokenizer.chat_template = chat_template
        tokenizer.save_pretrained(tmp)
        if out_dir.exists():
            import shutil

            shutil.rmtree(out_dir)
        os.replace(tmp, out_dir)
    dist.barrier()
