"""GPU fine-tuning throughput and MFU: teamsrl's DeepSpeed path vs. the stock HF Trainer +
DeepSpeed ZeRO-2 path, on one GPU, a ~1.1B Llama config (TinyLlama shape), bf16, random tokens.

    python benchmarks/gpu_sft_mfu.py                       # seq 1024, micro-batch 8, both paths
    python benchmarks/gpu_sft_mfu.py --paths ours --steps 20 --compile

Imports only torch, transformers and deepspeed (plus `teamsrl.finetune.engine`, which itself
imports nothing else), so it runs on a GPU host without Ray, datasets, trl or wandb; the HF
Trainer path also needs `accelerate`, which transformers' Trainer requires. Each path runs in its
own subprocess (a fresh CUDA context and memory); the parent first measures a bf16 matmul peak.
MFU counts 6 * params * tokens FLOPs per step, over the H100/H200 datasheet dense bf16 peak
(989 TFLOP/s) and over the peak measured here. UNMEASURED: written without a GPU in reach.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DATASHEET_TFLOPS = 989.0  # H100/H200 SXM dense bf16


def llama_1b_config():
    """TinyLlama-1.1B's shape (random weights; nothing is downloaded)."""
    from transformers import LlamaConfig

    return LlamaConfig(vocab_size=32000, hidden_size=2048, intermediate_size=5632,
                       num_hidden_layers=22, num_attention_heads=32, num_key_value_heads=4,
                       max_position_embeddings=2048, rms_norm_eps=1e-5, use_cache=False,
                       tie_word_embeddings=False)


def matmul_peak_tflops(n: int = 8192, iters: int = 50) -> float:
    """Measured dense bf16 matmul throughput of this GPU (TFLOP/s)."""
    import torch

    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    c = torch.empty(n, n, device="cuda", dtype=torch.bfloat16)
    for _ in range(5):
        torch.mm(a, b, out=c)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(iters):
        torch.mm(a, b, out=c)
    end.record()
    torch.cuda.synchronize()
    return 2 * n**3 / (start.elapsed_time(end) / 1e3 / iters) / 1e12


def _dist_env() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for k, v in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1",
                 "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}.items():
        os.environ.setdefault(k, v)


def _batch(args, vocab: int, device: str):
    import torch

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, vocab, (args.micro_batch, args.seq), generator=g).to(device)
    return {"input_ids": ids, "labels": ids.clone(), "attention_mask": torch.ones_like(ids)}


def run_ours(args) -> dict:
    """`teamsrl.finetune.engine`: the engine and micro-step every `teamsrl finetune` worker runs."""
    import torch
    from transformers import AutoModelForCausalLM

    sys.path.insert(0, str(REPO))
    from teamsrl.finetune import engine as eng

    cfg = {"zero_stage": 2, "offload": False, "deepspeed_config": None, "precision": "bf16",
           "per_device_batch_size": args.micro_batch, "gradient_accumulation_steps": 1,
           "max_grad_norm": 1.0, "learning_rate": 2e-5, "adam_betas": (0.9, 0.999),
           "adam_eps": 1e-8, "weight_decay": 0.0, "warmup_steps": 2, "lr_schedule": "cosine",
           "gradient_checkpointing": args.grad_ckpt, "attn_implementation": "sdpa"}
    ds_config = eng.build_deepspeed_config(cfg, world_size=1, on_gpu=True)
    hf_cfg = llama_1b_config()
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(hf_cfg, dtype=torch.bfloat16,
                                                 attn_implementation="sdpa")
    if args.grad_ckpt:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    n_params = sum(p.numel() for p in model.parameters())
    engine = eng.build_engine(model, cfg, ds_config, total_steps=10**6, on_gpu=True)
    if args.compile:
        engine.compile()
    batch = _batch(args, hf_cfg.vocab_size, engine.device)
    for _ in range(args.warmup):
        eng.micro_step(engine, batch)
    torch.cuda.synchronize()
    t = time.perf_counter()
    losses = [eng.micro_step(engine, batch) for _ in range(args.steps)]
    torch.cuda.synchronize()
    step_s = (time.perf_counter() - t) / args.steps
    return {"step_s": step_s, "params": n_params, "last_loss": float(losses[-1]),
            "engine": type(engine).__name__, "optimizer": type(engine.optimizer).__name__}


def run_hf(args) -> dict:
    """The stock path: transformers' Trainer with a ZeRO-2 DeepSpeed config, default optimizer."""
    import torch
    from transformers import AutoModelForCausalLM, Trainer, TrainerCallback, TrainingArguments

    hf_cfg = llama_1b_config()
    ds_config = {
        "train_micro_batch_size_per_gpu": "auto", "train_batch_size": "auto",
        "gradient_accumulation_steps": "auto", "gradient_clipping": "auto",
        "bf16": {"enabled": "auto"},
        "zero_optimization": {"stage": 2, "overlap_comm": True, "contiguous_gradients": True,
                              "allgather_bucket_size": 5e8, "reduce_bucket_size": "auto"},
    }
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(hf_cfg, dtype=torch.bfloat16,
                                             attn_implementation="sdpa")
    n_params = sum(p.numel() for p in model.parameters())
    batch = _batch(args, hf_cfg.vocab_size, "cpu")

    class Fixed(torch.utils.data.Dataset):
        def __len__(self):
            return args.micro_batch * (args.warmup + args.steps + 1)

        def __getitem__(self, i):
            return {k: v[i % args.micro_batch] for k, v in batch.items()}

    class Clock(TrainerCallback):
        stamps: list[float] = []

        def on_step_end(self, *a, **kw):
            torch.cuda.synchronize()
            self.stamps.append(time.perf_counter())

    clock = Clock()
    with tempfile.TemporaryDirectory() as tmp:
        targs = TrainingArguments(
            output_dir=tmp, per_device_train_batch_size=args.micro_batch,
            max_steps=args.warmup + args.steps, learning_rate=2e-5, lr_scheduler_type="cosine",
            warmup_steps=2, bf16=True, deepspeed=ds_config, max_grad_norm=1.0,
            gradient_checkpointing=args.grad_ckpt, save_strategy="no", report_to="none",
            logging_steps=args.warmup + args.steps, disable_tqdm=True, seed=0)
        trainer = Trainer(model=model, args=targs, train_dataset=Fixed(), callbacks=[clock])
        result = trainer.train()
    s = clock.stamps
    step_s = (s[-1] - s[args.warmup - 1]) / (len(s) - args.warmup)
    return {"step_s": step_s, "params": n_params, "last_loss": float(result.training_loss),
            "optimizer": str(getattr(targs.optim, "value", targs.optim))}


def main() -> int:
    """Measure the matmul peak, run each path in a subprocess, print tokens/s, MFU and ratio."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--paths", default="ours,hf", help="comma list of: ours, hf")
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--micro-batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=10, help="measured steps")
    p.add_argument("--warmup", type=int, default=3, help="unmeasured steps (>= 1)")
    p.add_argument("--grad-ckpt", action="store_true", help="gradient checkpointing (both)")
    p.add_argument("--compile", action="store_true", help="ours: DeepSpeedEngine.compile()")
    p.add_argument("--worker", choices=["ours", "hf"], help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args()
    args.warmup = max(1, args.warmup)

    import torch

    if not torch.cuda.is_available():
        print("gpu_sft_mfu: no CUDA GPU; this benchmark needs one", file=sys.stderr)
        return 2
    if args.worker:
        _dist_env()
        result = (run_ours if args.worker == "ours" else run_hf)(args)
        result["max_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
        Path(args.result).write_text(json.dumps(result))
        return 0

    peak = matmul_peak_tflops()
    torch.cuda.empty_cache()
    tokens = args.seq * args.micro_batch
    print(f"{torch.cuda.get_device_name()}: measured bf16 matmul peak {peak:.0f} TFLOP/s "
          f"(datasheet {DATASHEET_TFLOPS:.0f}); seq {args.seq} x micro-batch {args.micro_batch}, "
          f"{args.steps} steps after {args.warmup} warm-up, grad-ckpt {args.grad_ckpt}")
    rows = {}
    for path in [x.strip() for x in args.paths.split(",") if x.strip()]:
        with tempfile.NamedTemporaryFile(suffix=".json") as f:
            cmd = [sys.executable, __file__, "--worker", path, "--result", f.name,
                   "--seq", str(args.seq), "--micro-batch", str(args.micro_batch),
                   "--steps", str(args.steps), "--warmup", str(args.warmup)]
            cmd += ["--grad-ckpt"] * args.grad_ckpt + ["--compile"] * args.compile
            proc = subprocess.run(cmd)
            if proc.returncode != 0:
                print(f"{path}: failed with exit code {proc.returncode}")
                continue
            r = json.loads(Path(f.name).read_text())
        tflops = 6 * r["params"] * tokens / r["step_s"] / 1e12
        r.update(tokens_per_s=tokens / r["step_s"], tflops=tflops,
                 mfu_datasheet=tflops / DATASHEET_TFLOPS, mfu_measured=tflops / peak)
        rows[path] = r
        print(f"{path:>4}: {r['params'] / 1e9:.3f}B params, step {r['step_s'] * 1e3:.0f} ms, "
              f"{r['tokens_per_s']:.0f} tokens/s, {tflops:.0f} TFLOP/s, MFU "
              f"{100 * r['mfu_datasheet']:.1f}% of datasheet, {100 * r['mfu_measured']:.1f}% of "
              f"measured peak, max mem {r['max_mem_gib']:.1f} GiB, loss {r['last_loss']:.3f}",
              flush=True)
    if {"ours", "hf"} <= rows.keys():
        ratio = rows["ours"]["tokens_per_s"] / rows["hf"]["tokens_per_s"]
        print(f"ratio ours / stock HF Trainer + ZeRO-2: {ratio:.2f}x (goal >= 1.5x)")
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
