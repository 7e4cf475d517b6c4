"""Fine-tuning throughput on CPU: our DeepSpeed ZeRO path vs. a plain PyTorch loop, same model,
same batch, same process, steps interleaved so that both see the same machine load.

    .venv/bin/python benchmarks/sft_throughput.py                  # SmolLM2-135M, batch 4 x 256
    .venv/bin/python benchmarks/sft_throughput.py --zero-stage 3 --steps 4
    .venv/bin/python benchmarks/sft_throughput.py --tiny           # seconds, a smoke run

Both paths run one process (world size 1) with fp32 weights, AdamW (torch's, the same class and
hyper-parameters), gradient clipping at 1.0 and loss on all tokens of a fixed random batch. The
DeepSpeed path is `teamsrl.finetune.engine` — the code `teamsrl finetune` runs in each worker.
Goal from issue #6: DeepSpeed step time <= 1.15x the plain loop's.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _single_process_env() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for k, v in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1",
                 "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                 "DS_ACCELERATOR": "cpu"}.items():
        os.environ.setdefault(k, v)
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(sys.prefix) / "torch_extensions"))


def _model(args):
    from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig

    if args.tiny:
        cfg = LlamaConfig(vocab_size=4096, hidden_size=128, intermediate_size=256,
                          num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
    else:
        from teamsrl.llm.embedded import resolve_model_path

        cfg = AutoConfig.from_pretrained(resolve_model_path(args.model))
    cfg.use_cache = False
    return cfg, lambda: AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa")


def main() -> int:
    """Print tokens/s of both paths and the step-time ratio."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="embedded:smollm2-135m-instruct",
                   help="model whose architecture is benchmarked (random weights)")
    p.add_argument("--tiny", action="store_true", help="a 2-layer Llama instead (smoke run)")
    p.add_argument("--batch", type=int, default=4, help="sequences per step")
    p.add_argument("--seq", type=int, default=256, help="tokens per sequence")
    p.add_argument("--steps", type=int, default=5, help="measured steps per path")
    p.add_argument("--warmup", type=int, default=2, help="unmeasured steps per path")
    p.add_argument("--zero-stage", type=int, default=2, choices=[2, 3])
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads")
    args = p.parse_args()

    _single_process_env()
    import deepspeed
    import torch

    from teamsrl.finetune import engine as eng
    from teamsrl.finetune.config import FinetuneConfig

    torch.set_num_threads(args.threads)
    deepspeed.init_distributed(dist_backend="gloo")
    cfg_hf, build = _model(args)
    torch.manual_seed(0)
    plain_model = build()
    ds_model = build()
    ds_model.load_state_dict(plain_model.state_dict())  # same weights
    n_params = sum(q.numel() for q in plain_model.parameters())

    cfg = FinetuneConfig(zero_stage=args.zero_stage, per_device_batch_size=args.batch,
                         learning_rate=1e-4, warmup_steps=0, lr_schedule="constant",
                         weight_decay=0.0).model_dump()
    ds_config = eng.build_deepspeed_config(cfg, world_size=1, on_gpu=False)
    engine = eng.build_engine(ds_model, cfg, ds_config, total_steps=10**6, on_gpu=False)
    plain_model.train()
    opt = torch.optim.AdamW(plain_model.parameters(), lr=1e-4, weight_decay=0.0)

    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, cfg_hf.vocab_size, (args.batch, args.seq), generator=g)
    batch = {"input_ids": ids, "labels": ids.clone(), "attention_mask": torch.ones_like(ids)}

    def plain_step():
        loss = plain_model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(plain_model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    def ds_step():
        return float(eng.micro_step(engine, batch))

    times = {"plain": [], "deepspeed": []}
    losses = {"plain": [], "deepspeed": []}
    for i in range(args.warmup + args.steps):
        # alternate which path goes first, so neither always follows the other's cache state
        order = [("plain", plain_step), ("deepspeed", ds_step)]
        for name, fn in order if i % 2 == 0 else order[::-1]:
            t = time.perf_counter()
            losses[name].append(fn())
            if i >= args.warmup:
                times[name].append(time.perf_counter() - t)

    tokens = args.batch * args.seq
    print(f"model: {'tiny llama' if args.tiny else args.model} ({n_params / 1e6:.1f}M params), "
          f"batch {args.batch} x {args.seq} tokens, fp32, {args.threads} threads, "
          f"ZeRO-{args.zero_stage} world size 1, {args.steps} measured steps after "
          f"{args.warmup} warm-up")
    print(f"{'path':<10} {'median step s':>14} {'tokens/s':>10}  losses (first, last)")
    med = {}
    for name in ("plain", "deepspeed"):
        med[name] = statistics.median(times[name])
        print(f"{name:<10} {med[name]:>14.3f} {tokens / med[name]:>10.1f}  "
              f"{losses[name][0]:.4f}, {losses[name][-1]:.4f}")
    paired = statistics.median(d / q for d, q in zip(times["deepspeed"], times["plain"],
                                                     strict=True))
    ratio = med["deepspeed"] / med["plain"]
    print(f"step time ratio deepspeed/plain: {ratio:.3f} (median of paired ratios "
          f"{paired:.3f}); goal <= 1.15: {'met' if ratio <= 1.15 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
