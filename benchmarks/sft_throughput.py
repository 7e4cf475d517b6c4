"""Fine-tuning throughput on CPU: our DeepSpeed ZeRO path vs. a plain PyTorch loop, same model,
same batch, same processes, steps interleaved so that both see the same machine load; at world
size 1 and 2.

    .venv/bin/python benchmarks/sft_throughput.py --out benchmarks/results/sft_throughput.json
    .venv/bin/python benchmarks/sft_throughput.py --zero-stage 3 --steps 4 --world-sizes 2
    .venv/bin/python benchmarks/sft_throughput.py --tiny --steps 1 --warmup 1   # a smoke run

At world size 1 ZeRO has nothing to partition, so world size 2 (two gloo processes, the
`teamsrl finetune` CPU launch) is measured too: there the plain loop is torch's
DistributedDataParallel and the DeepSpeed path partitions optimizer state and gradients (ZeRO-2)
or also the weights (ZeRO-3). Each rank gets `--batch` sequences a step (rank r draws its tokens
with seed r) and `--threads / world size` torch threads, so both world sizes use the same cores.
Both paths: fp32 weights, AdamW (torch's, the same class and hyper-parameters), gradient
clipping at 1.0, loss on all tokens. The DeepSpeed path is `teamsrl.finetune.engine` — the code
`teamsrl finetune` runs in each worker. Each world size runs in fresh processes. Goal from
issue #6: DeepSpeed step time <= 1.15x the plain loop's.
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
sys.path.insert(0, str(REPO))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def worker(args) -> dict:
    """One rank: both paths, steps interleaved; returns this rank's step times and losses."""
    import deepspeed
    import torch
    import torch.distributed as dist

    from teamsrl.finetune import engine as eng
    from teamsrl.finetune.config import FinetuneConfig

    world, rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
    torch.set_num_threads(args.rank_threads)
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
    ds_config = eng.build_deepspeed_config(cfg, world_size=world, on_gpu=False)
    engine = eng.build_engine(ds_model, cfg, ds_config, total_steps=10**6, on_gpu=False)
    plain_model.train()
    plain = plain_model if world == 1 else torch.nn.parallel.DistributedDataParallel(plain_model)
    opt = torch.optim.AdamW(plain.parameters(), lr=1e-4, weight_decay=0.0)

    g = torch.Generator().manual_seed(rank)
    ids = torch.randint(0, cfg_hf.vocab_size, (args.batch, args.seq), generator=g)
    batch = {"input_ids": ids, "labels": ids.clone(), "attention_mask": torch.ones_like(ids)}

    def plain_step():
        loss = plain(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(plain.parameters(), 1.0)
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
    dist.barrier()
    return {"world_size": world, "rank_threads": args.rank_threads, "params": n_params,
            "seconds": times, "losses": losses}


def launch(args, world: int) -> dict:
    """Run `world` ranks of this script (gloo, DS_ACCELERATOR=cpu); rank 0's result."""
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "rank0.json"
        threads = max(1, args.threads // world)
        env = os.environ | {"WORLD_SIZE": str(world), "LOCAL_WORLD_SIZE": str(world),
                            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()),
                            "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": str(threads)}
        env.setdefault("TORCH_EXTENSIONS_DIR", str(Path(sys.prefix) / "torch_extensions"))
        cmd = [sys.executable, __file__, "--worker-result", str(result),
               "--rank-threads", str(threads), "--model", args.model, "--batch",
               str(args.batch), "--seq", str(args.seq), "--steps", str(args.steps),
               "--warmup", str(args.warmup), "--zero-stage", str(args.zero_stage)]
        cmd += ["--tiny"] * args.tiny
        procs = [subprocess.Popen(cmd, env=env | {"RANK": str(r), "LOCAL_RANK": str(r)})
                 for r in range(world)]
        codes = [p.wait() for p in procs]
        if any(codes):
            raise SystemExit(f"sft_throughput: world size {world}: ranks exited {codes}")
        return json.loads(result.read_text())


def main() -> int:
    """Per world size: tokens/s of both paths and the step-time ratio; the results file."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="embedded:smollm2-135m-instruct",
                   help="model whose architecture is benchmarked (random weights)")
    p.add_argument("--tiny", action="store_true", help="a 2-layer Llama instead (smoke run)")
    p.add_argument("--batch", type=int, default=4, help="sequences per step and rank")
    p.add_argument("--seq", type=int, default=256, help="tokens per sequence")
    p.add_argument("--steps", type=int, default=5, help="measured steps per path")
    p.add_argument("--warmup", type=int, default=2, help="unmeasured steps per path")
    p.add_argument("--zero-stage", type=int, default=2, choices=[2, 3])
    p.add_argument("--world-sizes", type=int, nargs="+", default=[1, 2],
                   help="process counts to measure, in this order")
    p.add_argument("--threads", type=int, default=os.cpu_count(),
                   help="torch threads in all (each rank gets threads / world size)")
    add_out_argument(p, "sft_throughput")
    p.add_argument("--worker-result", help=argparse.SUPPRESS)
    p.add_argument("--rank-threads", type=int, help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.worker_result:
        out = worker(args)
        if int(os.environ["RANK"]) == 0:
            Path(args.worker_result).write_text(json.dumps(out))
        return 0
    if any(w < 1 for w in args.world_sizes):
        p.error(f"--world-sizes {args.world_sizes}: expected process counts >= 1")

    results = ResultsFile(args.out, {k: v for k, v in vars(args).items()
                                     if k not in ("worker_result", "rank_threads")})
    runs = [launch(args, world) for world in args.world_sizes]
    n_params = runs[0]["params"]
    print(f"model: {'tiny llama' if args.tiny else args.model} ({n_params / 1e6:.1f}M params), "
          f"batch {args.batch} x {args.seq} tokens per rank, fp32, {args.threads} threads in "
          f"all, ZeRO-{args.zero_stage}, {args.steps} measured steps after {args.warmup} warm-up")
    print(f"{'world':>5} {'path':<10} {'median step s':>14} {'tokens/s':>10}  "
          "losses rank 0 (first, last)")
    summary = {}
    for run in runs:
        world, times, losses = run["world_size"], run["seconds"], run["losses"]
        tokens = world * args.batch * args.seq
        med = {name: statistics.median(times[name]) for name in ("plain", "deepspeed")}
        for name in ("plain", "deepspeed"):
            print(f"{world:>5} {name:<10} {med[name]:>14.3f} {tokens / med[name]:>10.1f}  "
                  f"{losses[name][0]:.4f}, {losses[name][-1]:.4f}")
        paired = statistics.median(d / q for d, q in zip(times["deepspeed"], times["plain"],
                                                         strict=True))
        ratio = med["deepspeed"] / med["plain"]
        print(f"{world:>5} step time ratio deepspeed/plain: {ratio:.3f} (median of paired "
              f"ratios {paired:.3f}); goal <= 1.15: {'met' if ratio <= 1.15 else 'NOT met'}")
        summary[f"world_{world}"] = {
            "tokens_per_s_median": {k: tokens / v for k, v in med.items()},
            "step_s_median": med, "ratio_deepspeed_to_plain": ratio,
            "paired_ratio_median": paired, "rank_threads": run["rank_threads"]}
    results.write(summary=summary, raw=runs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
