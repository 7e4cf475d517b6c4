"""GPU fine-tuning throughput and MFU: teamsrl's DeepSpeed path vs. the stock HF Trainer +
DeepSpeed ZeRO-2 path, on one GPU, a ~1.1B Llama config (TinyLlama shape), bf16, random tokens.

    python benchmarks/gpu_sft_mfu.py --out benchmarks/results/gpu_sft_mfu.json   # both paths
    python benchmarks/gpu_sft_mfu.py --compile --repeats 2     # torch.compile on both paths
    python benchmarks/gpu_sft_mfu.py --tiny --steps 2          # a 2-layer Llama: a smoke run

Like with like: both paths read the same dataset (one fixed random batch of `--micro-batch`
sequences, shuffled by a seeded sampler) through a torch DataLoader built the way the HF Trainer
builds its own (default collator, pinned memory, no workers); both use fused torch AdamW, cosine
schedule with 2 warm-up steps, gradient clipping 1.0, SDPA attention; `--compile` compiles both
(`DeepSpeedEngine.compile(backend="inductor")`, which is what the Trainer's `torch_compile` does
under DeepSpeed) or neither; both are timed the same way (a CUDA sync and a clock stamp at every
optimizer step's end; the mean over the steps after `--warmup`). Each path runs in its own
subprocess (a fresh CUDA context and memory), repeats alternate the order; the parent first
measures a bf16 matmul peak.

MFU (model FLOPs, not hardware FLOPs: the recompute of gradient checkpointing is not counted):
    mfu = 6 * N * tokens_per_s / peak
    mfu_with_attention = (6 * N + 12 * n_layers * d_model * seq) * tokens_per_s / peak
N = the non-embedding parameters: all parameters but the input embedding table (a lookup, no
matmul; the untied LM head is a matmul and counts). The attention term is PaLM's (QK^T and AV,
forward + backward, not halved for causal masking). peak = the H100/H200 datasheet dense bf16
989 TFLOP/s, and separately the matmul peak measured here.

Imports only torch, transformers and deepspeed (plus `teamsrl.finetune.engine`, which itself
imports nothing else), so it runs on a GPU host without Ray, datasets, trl or wandb; the HF
Trainer path also needs `accelerate`. Without a GPU only `--tiny` runs (on the CPU, fp32; a
smoke run of the code, no figure).
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results_file import ResultsFile, add_out_argument

REPO = Path(__file__).resolve().parent.parent
DATASHEET_TFLOPS = 989.0  # H100/H200 SXM dense bf16
PATHS = ("ours", "hf")


def llama_config(tiny: bool):
    """TinyLlama-1.1B's shape, or a 2-layer Llama for `--tiny` (random weights; no download)."""
    from transformers import LlamaConfig

    if tiny:
        return LlamaConfig(vocab_size=4096, hidden_size=128, intermediate_size=256,
                           num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                           max_position_embeddings=2048, use_cache=False,
                           tie_word_embeddings=False)
    return LlamaConfig(vocab_size=32000, hidden_size=2048, intermediate_size=5632,
                       num_hidden_layers=22, num_attention_heads=32, num_key_value_heads=4,
                       max_position_embeddings=2048, rms_norm_eps=1e-5, use_cache=False,
                       tie_word_embeddings=False)


def non_embedding_params(model) -> int:
    """Parameters whose use is a matmul: all but the input embedding table (a tied table is
    also the LM head, so it counts)."""
    n = sum(p.numel() for p in model.parameters())
    if model.config.tie_word_embeddings:
        return n
    return n - model.get_input_embeddings().weight.numel()


def flops_per_token(n_non_embedding: int, n_layers: int, d_model: int, seq: int
                    ) -> tuple[float, float]:
    """(6 N, 6 N + 12 L d T): training FLOPs per token without and with the attention term."""
    six_n = 6.0 * n_non_embedding
    return six_n, six_n + 12.0 * n_layers * d_model * seq


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


def _dist_env(on_gpu: bool) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1",
           "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    if not on_gpu:
        env["DS_ACCELERATOR"] = "cpu"
    for k, v in env.items():
        os.environ.setdefault(k, v)


class FixedTokens:
    """`rows` random sequences of `seq` tokens (seed 0), indexed `n` times over: a map-style
    dataset both paths read through a DataLoader."""

    def __init__(self, rows: int, seq: int, vocab: int, n: int) -> None:
        import torch

        g = torch.Generator().manual_seed(0)
        self.ids = torch.randint(0, vocab, (rows, seq), generator=g)
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict:
        import torch

        ids = self.ids[i % len(self.ids)]
        return {"input_ids": ids, "labels": ids.clone(), "attention_mask": torch.ones_like(ids)}


def _dataset(args, vocab: int) -> FixedTokens:
    # one spare batch: the Trainer may look one batch ahead
    return FixedTokens(args.micro_batch, args.seq, vocab,
                       args.micro_batch * (args.warmup + args.steps + 1))


def _sync(on_gpu: bool) -> None:
    if on_gpu:
        import torch

        torch.cuda.synchronize()


def _step_seconds(stamps: list[float], warmup: int) -> list[float]:
    """Per-step seconds of the measured steps, from the end-of-step stamps."""
    return [b - a for a, b in zip(stamps[warmup - 1:], stamps[warmup:], strict=False)]


def run_ours(args, on_gpu: bool) -> dict:
    """`teamsrl.finetune.engine`: the engine and micro-step every `teamsrl finetune` worker runs,
    fed by a DataLoader like the Trainer's."""
    import torch
    from transformers import AutoModelForCausalLM, default_data_collator

    sys.path.insert(0, str(REPO))
    from teamsrl.finetune import engine as eng

    precision = "bf16" if on_gpu else "fp32"
    cfg = {"zero_stage": 2, "offload": False, "deepspeed_config": None, "precision": precision,
           "per_device_batch_size": args.micro_batch, "gradient_accumulation_steps": 1,
           "max_grad_norm": 1.0, "learning_rate": 2e-5, "adam_betas": (0.9, 0.999),
           "adam_eps": 1e-8, "weight_decay": 0.0, "warmup_steps": 2, "lr_schedule": "cosine",
           "gradient_checkpointing": args.grad_ckpt, "attn_implementation": "sdpa"}
    ds_config = eng.build_deepspeed_config(cfg, world_size=1, on_gpu=on_gpu)
    hf_cfg = llama_config(args.tiny)
    torch.manual_seed(0)
    with torch.device("cuda" if on_gpu else "cpu"):
        model = AutoModelForCausalLM.from_config(hf_cfg, dtype=eng.torch_dtype(precision),
                                                 attn_implementation="sdpa")
    if args.grad_ckpt:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    n_params, n_non_emb = sum(p.numel() for p in model.parameters()), non_embedding_params(model)
    engine = eng.build_engine(model, cfg, ds_config, total_steps=args.warmup + args.steps,
                              on_gpu=on_gpu)
    if args.compile:
        engine.compile(backend="inductor")
    loader = torch.utils.data.DataLoader(
        _dataset(args, hf_cfg.vocab_size), batch_size=args.micro_batch, shuffle=True,
        generator=torch.Generator().manual_seed(0), collate_fn=default_data_collator,
        num_workers=0, pin_memory=on_gpu, drop_last=False)
    stamps, loss = [], None
    for i, batch in enumerate(loader):
        if i == args.warmup + args.steps:
            break
        loss = eng.micro_step(engine, batch)
        _sync(on_gpu)
        stamps.append(time.perf_counter())
    return {"step_seconds": _step_seconds(stamps, args.warmup), "params": n_params,
            "non_embedding_params": n_non_emb, "last_loss": float(loss),
            "compiled": bool(getattr(engine, "is_compiled", False)),
            "optimizer": type(engine.optimizer.optimizer if hasattr(engine.optimizer, "optimizer")
                              else engine.optimizer).__name__}


def run_hf(args, on_gpu: bool) -> dict:
    """The stock path: transformers' Trainer with a ZeRO-2 DeepSpeed config, default optimizer."""
    import torch
    from transformers import AutoModelForCausalLM, Trainer, TrainerCallback, TrainingArguments

    hf_cfg = llama_config(args.tiny)
    ds_config = {
        "train_micro_batch_size_per_gpu": "auto", "train_batch_size": "auto",
        "gradient_accumulation_steps": "auto", "gradient_clipping": "auto",
        "bf16": {"enabled": "auto"},
        "zero_optimization": {"stage": 2, "overlap_comm": on_gpu, "contiguous_gradients": True,
                              "allgather_bucket_size": 5e8, "reduce_bucket_size": "auto"},
    }
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(
        hf_cfg, dtype=torch.bfloat16 if on_gpu else torch.float32, attn_implementation="sdpa")
    n_params, n_non_emb = sum(p.numel() for p in model.parameters()), non_embedding_params(model)

    class Clock(TrainerCallback):
        stamps: list[float] = []

        def on_step_end(self, *a, **kw):
            _sync(on_gpu)
            self.stamps.append(time.perf_counter())

    clock = Clock()
    with tempfile.TemporaryDirectory() as tmp:
        targs = TrainingArguments(
            output_dir=tmp, per_device_train_batch_size=args.micro_batch,
            max_steps=args.warmup + args.steps, learning_rate=2e-5, lr_scheduler_type="cosine",
            warmup_steps=2, bf16=on_gpu, deepspeed=ds_config, max_grad_norm=1.0,
            gradient_checkpointing=args.grad_ckpt, save_strategy="no", report_to="none",
            logging_steps=args.warmup + args.steps, disable_tqdm=True, seed=0,
            dataloader_num_workers=0, dataloader_pin_memory=on_gpu,
            torch_compile=args.compile, torch_compile_backend="inductor" if args.compile else None,
            use_cpu=not on_gpu)
        trainer = Trainer(model=model, args=targs, train_dataset=_dataset(args, hf_cfg.vocab_size),
                          callbacks=[clock])
        result = trainer.train()
        compiled = bool(getattr(trainer.model_wrapped, "is_compiled", False))
    return {"step_seconds": _step_seconds(clock.stamps, args.warmup), "params": n_params,
            "non_embedding_params": n_non_emb, "last_loss": float(result.training_loss),
            "compiled": compiled, "optimizer": str(getattr(targs.optim, "value", targs.optim))}


def _worker_cmd(args, path: str, result: str) -> list[str]:
    cmd = [sys.executable, __file__, "--worker", path, "--result", result, "--seq",
           str(args.seq), "--micro-batch", str(args.micro_batch), "--steps", str(args.steps),
           "--warmup", str(args.warmup)]
    return cmd + ["--grad-ckpt"] * args.grad_ckpt + ["--compile"] * args.compile \
        + ["--tiny"] * args.tiny


def main() -> int:
    """Measure the matmul peak, run each path in a subprocess per repeat, print tokens/s, MFU
    and the ratio, write the results file."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--paths", default="ours,hf", help="comma list of: ours, hf")
    p.add_argument("--seq", type=int, default=1024)
    p.add_argument("--micro-batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=10, help="measured steps")
    p.add_argument("--warmup", type=int, default=3, help="unmeasured steps (>= 1)")
    p.add_argument("--repeats", type=int, default=1, help="runs of each path, order alternating")
    p.add_argument("--grad-ckpt", action="store_true", help="gradient checkpointing (both)")
    p.add_argument("--compile", action="store_true", help="torch.compile, inductor (both)")
    p.add_argument("--tiny", action="store_true", help="a 2-layer Llama (smoke run; CPU too)")
    add_out_argument(p, "gpu_sft_mfu")
    p.add_argument("--worker", choices=PATHS, help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args()
    args.warmup = max(1, args.warmup)
    paths = [x.strip() for x in args.paths.split(",") if x.strip()]
    if not paths or set(paths) - set(PATHS) or args.repeats < 1:
        p.error(f"--paths {args.paths!r}, --repeats {args.repeats}: expected names from "
                f"{', '.join(PATHS)} and repeats >= 1")

    import torch

    on_gpu = torch.cuda.is_available()
    if not on_gpu and not args.tiny:
        print("gpu_sft_mfu: no CUDA GPU; this benchmark needs one (--tiny runs on the CPU)",
              file=sys.stderr)
        return 2
    if args.worker:
        _dist_env(on_gpu)
        result = (run_ours if args.worker == "ours" else run_hf)(args, on_gpu)
        result["max_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30 if on_gpu else None
        Path(args.result).write_text(json.dumps(result))
        return 0

    results = ResultsFile(args.out, {k: v for k, v in vars(args).items()
                                     if k not in ("worker", "result")})
    peak = matmul_peak_tflops() if on_gpu else None
    if on_gpu:
        torch.cuda.empty_cache()
    hf_cfg = llama_config(args.tiny)
    tokens = args.seq * args.micro_batch
    device = torch.cuda.get_device_name() if on_gpu else "CPU (smoke run, fp32; no figure)"
    measured = f"{peak:.0f} TFLOP/s" if peak else "n/a"
    print(f"{device}: measured bf16 matmul peak {measured} (datasheet "
          f"{DATASHEET_TFLOPS:.0f} TFLOP/s); seq {args.seq} x micro-batch {args.micro_batch}, "
          f"{args.steps} steps after {args.warmup} warm-up, grad-ckpt {args.grad_ckpt}, "
          f"compile {args.compile} (both paths), {args.repeats} repeats")
    print("MFU = 6 * N_non-embedding * tokens/s / peak; '+attn' adds PaLM's 12 * layers * "
          "d_model * seq per token")
    runs: list[dict] = []
    for rep in range(args.repeats):
        for path in paths if rep % 2 == 0 else paths[::-1]:
            with tempfile.NamedTemporaryFile(suffix=".json") as f:
                proc = subprocess.run(_worker_cmd(args, path, f.name))
                if proc.returncode != 0:
                    print(f"{path}: failed with exit code {proc.returncode}")
                    continue
                r = json.loads(Path(f.name).read_text())
            step_s = statistics.mean(r["step_seconds"])
            six_n, with_attn = flops_per_token(r["non_embedding_params"],
                                               hf_cfg.num_hidden_layers, hf_cfg.hidden_size,
                                               args.seq)
            r.update(path=path, repeat=rep, step_s=step_s, tokens_per_s=tokens / step_s)
            r["tflops"] = six_n * r["tokens_per_s"] / 1e12
            r["tflops_with_attention"] = with_attn * r["tokens_per_s"] / 1e12
            r["mfu_datasheet"] = r["tflops"] / DATASHEET_TFLOPS
            r["mfu_with_attention_datasheet"] = r["tflops_with_attention"] / DATASHEET_TFLOPS
            r["mfu_measured_peak"] = r["tflops"] / peak if peak else None
            runs.append(r)
            mem = f"{r['max_mem_gib']:.1f} GiB" if r["max_mem_gib"] is not None else "n/a"
            print(f"{path:>4} rep {rep + 1}: {r['non_embedding_params'] / 1e9:.3f}B non-embedding"
                  f" params ({r['params'] / 1e9:.3f}B all), step {step_s * 1e3:.1f} ms, "
                  f"{r['tokens_per_s']:.0f} tokens/s, {r['tflops']:.1f} TFLOP/s, MFU "
                  f"{100 * r['mfu_datasheet']:.1f}% of datasheet (+attn "
                  f"{100 * r['mfu_with_attention_datasheet']:.1f}%)"
                  + (f", {100 * r['mfu_measured_peak']:.1f}% of measured peak" if peak else "")
                  + f", compiled {r['compiled']}, max mem {mem}, loss {r['last_loss']:.3f}",
                  flush=True)
    summary: dict = {"peak_tflops_measured": peak, "datasheet_tflops": DATASHEET_TFLOPS,
                     "tokens_per_step": tokens}
    for path in paths:
        mine = [r for r in runs if r["path"] == path]
        if mine:
            summary[path] = {k: statistics.median(r[k] for r in mine) for k in
                             ("tokens_per_s", "mfu_datasheet", "mfu_with_attention_datasheet")}
    if all(path in summary for path in PATHS):
        ratio = summary["ours"]["tokens_per_s"] / summary["hf"]["tokens_per_s"]
        summary["ratio_ours_to_hf"] = ratio
        print(f"ratio ours / stock HF Trainer + ZeRO-2 (median tokens/s): {ratio:.2f}x "
              "(goal >= 1.5x)")
    results.write(summary=summary, raw=runs)
    return 0 if runs else 1


if __name__ == "__main__":
    sys.exit(main())
