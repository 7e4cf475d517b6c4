"""The training function every process runs: the local launch starts it with
`python -m teamsrl.finetune.worker SPEC.json`, Ray Train calls `train_worker(spec)` in each worker.

It joins the process group, tokenises the training split, builds the DeepSpeed engine, resumes
from the newest checkpoint when asked, trains with checkpoints every `save_steps`, logs loss, lr,
grad norm and tokens/s (rank 0: `metrics.jsonl` and W&B), and writes the final HF model folder.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import Any


def _setup_env(spec: dict[str, Any]) -> bool:
    """Environment that must exist before deepspeed is imported; returns whether GPUs are used."""
    on_gpu = spec["on_gpu"]
    if not on_gpu:
        os.environ.setdefault("DS_ACCELERATOR", "cpu")
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(Path(sys.prefix) / "torch_extensions"))
    # DeepSpeed JIT-builds its ops (e.g. CPU Adam for an offloaded optimizer) with the first
    # `ninja` on PATH. Two ninja versions hash command lines differently, so a venv ninja and a
    # system ninja taking turns rebuild the op every run (minutes on 2 cores): always use this
    # Python's.
    bin_dir = str(Path(sys.executable).parent)
    if (Path(bin_dir) / "ninja").is_file():
        path = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != bin_dir]
        os.environ["PATH"] = os.pathsep.join([bin_dir, *path])
    return on_gpu


def _skip_the_shm_comm_op() -> None:
    """Keep DeepSpeed from JIT-compiling its CPU shared-memory comm op in every new environment
    (40 s of wall, 71 s of CPU on 2 cores, once per venv): the op serves `inference_all_reduce`
    alone (AutoTP inference); training's collectives go through torch.distributed (gloo) with or
    without it. DeepSpeed's TorchBackend builds it only where its table of compatible ops says
    so, and that table is one module-level dict, cached so that edits to it persist
    (deepspeed/ops/__init__.py)."""
    import deepspeed.ops
    from deepspeed.accelerator import get_accelerator

    builder = get_accelerator().create_op_builder("ShareMemCommBuilder")
    if builder is not None:
        deepspeed.ops.__compatible_ops__[builder.NAME] = False


def train_worker(spec: dict[str, Any]) -> dict[str, Any] | None:
    """Train on this process's shard; returns the run summary on rank 0 (None elsewhere)."""
    on_gpu = _setup_env(spec)
    import warnings

    # DeepSpeed calls torch's deprecated all_gather_into_tensor every step: one line, not 100
    warnings.filterwarnings("once", category=FutureWarning, module="torch.distributed")
    import deepspeed
    import torch
    import torch.distributed as dist
    from transformers import AutoTokenizer

    from teamsrl.finetune import engine as eng
    from teamsrl.finetune.data import (
        ALPACA_CHAT_TEMPLATE,
        collate,
        micro_batch_indices,
        read_rows,
        schedule_steps,
        tokenize_rows,
    )

    cfg, out = spec["config"], Path(spec["out"])
    if spec.get("torch_threads"):
        torch.set_num_threads(spec["torch_threads"])
    if on_gpu:  # one GPU per process; a worker that sees only its own GPU uses device 0
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local if local < torch.cuda.device_count() else 0)
    else:
        _skip_the_shm_comm_op()
    deepspeed.init_distributed(dist_backend="nccl" if on_gpu else "gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(spec["seed"])

    tokenizer = AutoTokenizer.from_pretrained(spec["model_path"])
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None \
        else tokenizer.eos_token_id
    examples, _ = tokenize_rows(read_rows(spec["train_file"]), tokenizer, cfg["max_length"])

    ds_config = eng.build_deepspeed_config(cfg, world, on_gpu)
    B, ga = cfg["per_device_batch_size"], cfg["gradient_accumulation_steps"]
    micro_per_epoch = len(micro_batch_indices(len(examples), B, world, 0, 0, 0))
    total_steps = schedule_steps(len(examples), B, world, ga, cfg["epochs"], cfg.get("max_steps"))

    model = eng.load_model(spec["model_path"], cfg, ds_config)
    engine = eng.build_engine(model, cfg, ds_config, total_steps, on_gpu)

    # ZeRO-3 leaves empty placeholders in the module; ds_numel is the full size
    n_params = sum(getattr(p, "ds_numel", p.numel()) for p in engine.module.parameters())
    ckpt_dir = out / "checkpoints"
    # what fixes the data order and the schedule: a resumed run must agree on all of it
    plan = {"per_device_batch_size": B, "gradient_accumulation_steps": ga, "world_size": world,
            "total_steps": total_steps, "seed": spec["seed"], "train_examples": len(examples)}
    step, events = 0, []
    if spec.get("resume") and (ckpt_dir / "latest").is_file():
        step, resumed = _resume(engine, ckpt_dir, plan)
        events.append(resumed)

    logger = _Logger(out, spec) if rank == 0 else None
    if logger:
        for e in events:
            logger.event(e)

    def batches_from(micro: int):
        epoch, offset = divmod(micro, micro_per_epoch)
        while True:
            order = micro_batch_indices(len(examples), B, world, rank, spec["seed"], epoch)
            for idx in order[offset:]:
                yield epoch, collate([examples[i] for i in idx], pad_id)
            epoch, offset = epoch + 1, 0

    stream = batches_from(step * ga)
    end = min(total_steps, cfg.get("stop_at_step") or total_steps)
    # summed on the device between log steps: no host sync per micro-step on GPUs
    loss_sum = torch.zeros((), dtype=torch.float32, device=engine.device)
    n_micro, n_tokens = 0, 0
    t_last = time.perf_counter()
    while step < end:
        lr = float(engine.get_lr()[0])  # the rate this update uses (the scheduler steps after)
        for _ in range(ga):
            epoch, batch = next(stream)
            n_tokens += int(batch["attention_mask"].sum())
            loss_sum += eng.micro_step(engine, batch).float()
            n_micro += 1
        step += 1
        if step % cfg["logging_steps"] == 0 or step == end:
            acc = torch.tensor([float(loss_sum), n_micro, n_tokens], dtype=torch.float64,
                               device=engine.device)
            dist.all_reduce(acc)
            now = time.perf_counter()
            row = {"step": step, "epoch": epoch, "loss": float(acc[0] / acc[1]),
                   "lr": lr,
                   "grad_norm": _float(engine.get_global_grad_norm()),
                   "tokens_per_s": float(acc[2]) / (now - t_last)}
            if on_gpu:  # 6 * params * tokens FLOPs over the peak of every GPU in the job
                row["mfu"] = 6 * n_params * row["tokens_per_s"] / (
                    world * cfg["mfu_peak_tflops"] * 1e12)
            if logger:
                logger.log(row)
            loss_sum.zero_()
            n_micro, n_tokens = 0, 0
            t_last = time.perf_counter()
        if step % cfg["save_steps"] == 0 or step == end:
            _save_checkpoint(engine, ckpt_dir, step, plan, cfg["keep_checkpoints"], rank)
            t_last = time.perf_counter()

    finished = step >= total_steps  # False when stop_at_step paused the run
    if finished:
        template = ALPACA_CHAT_TEMPLATE if cfg["chat_template"] == "alpaca" else None
        eng.save_hf_model(engine, tokenizer, out / "model", template)
    summary = None
    if rank == 0:
        summary = {
            "engine": f"{type(engine).__module__}.{type(engine).__name__}",
            "deepspeed_version": deepspeed.__version__,
            "zero_stage": int(engine.zero_optimization_stage()),
            "world_size": world,
            "optimizer": type(engine.optimizer).__name__,
            "basic_optimizer": type(getattr(engine.optimizer, "optimizer", engine.optimizer))
            .__name__,
            "accelerator": deepspeed.accelerator.get_accelerator().device_name(),
            "steps": step, "total_steps": total_steps, "train_examples": len(examples),
            "micro_batches_per_epoch": micro_per_epoch, "finished": finished,
            "model_dir": str(out / "model") if finished else None,
            "deepspeed_config": ds_config,
        }
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
        logger.close()
    dist.barrier()
    return summary


def _resume(engine, ckpt_dir: Path, plan: dict) -> tuple[int, dict]:
    """Load the newest checkpoint (weights, optimizer, schedule); refuse a different plan."""
    from teamsrl.finetune.engine import optimizer_fingerprint

    path, client = engine.load_checkpoint(str(ckpt_dir))
    if path is None:
        raise RuntimeError(f"--resume: could not load the checkpoint named in "
                           f"{ckpt_dir / 'latest'}")
    changed = {k: (v, plan[k]) for k, v in client.get("plan", {}).items() if plan[k] != v}
    if changed:
        raise RuntimeError("--resume: this run's settings differ from the checkpoint's: " +
                           ", ".join(f"{k} = {new} (checkpoint: {old})"
                                     for k, (old, new) in changed.items()) +
                           "; expected the same batch, accumulation, processes, steps, seed "
                           "and data")
    step = int(client["step"])
    return step, {"event": "resumed", "from_step": step, "checkpoint": str(path),
                  "optimizer_fingerprint": optimizer_fingerprint(engine),
                  "saved_fingerprint": client.get("optimizer_fingerprint")}


def _float(x) -> float | None:
    return None if x is None else float(x)


def _save_checkpoint(engine, ckpt_dir: Path, step: int, plan: dict, keep: int,
                     rank: int) -> None:
    from teamsrl.finetune.engine import optimizer_fingerprint

    fingerprint = optimizer_fingerprint(engine)
    engine.save_checkpoint(str(ckpt_dir), tag=f"step{step}",
                           client_state={"step": step, "plan": plan,
                                         "optimizer_fingerprint": fingerprint})
    import torch.distributed as dist

    dist.barrier()
    if rank == 0:
        tags = sorted((p for p in ckpt_dir.glob("step*") if p.is_dir()),
                      key=lambda p: int(p.name[4:]))
        for old in tags[:-keep]:
            shutil.rmtree(old, ignore_errors=True)


class _Logger:
    """Rank 0's metrics: one JSON line per log step, mirrored to W&B unless disabled."""

    def __init__(self, out: Path, spec: dict[str, Any]):
        self.path = out / "metrics.jsonl"
        self.run = None
        tracking = spec.get("tracking") or {}
        if tracking.get("mode", "disabled") != "disabled":
            import wandb

            id_file = out / "wandb_id"
            run_id = id_file.read_text().strip() if id_file.is_file() else uuid.uuid4().hex[:8]
            id_file.write_text(run_id)
            self.run = wandb.init(project=tracking.get("project", "teamsrl"),
                                  group=tracking.get("group"), mode=tracking["mode"],
                                  name=f"{spec.get('name', 'finetune')}-finetune", id=run_id,
                                  resume="allow", dir=str(out), config=spec["config"])

    def log(self, row: dict) -> None:
        from teamsrl.tracking import append_line

        append_line(self.path, json.dumps(row) + "\n")  # a whole line or nothing (disk full)
        print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                       for k, v in row.items()), flush=True)
        if self.run is not None:
            self.run.log({f"finetune/{k}": v for k, v in row.items() if k != "step"},
                         step=row["step"])

    def event(self, row: dict) -> None:
        from teamsrl.tracking import append_line

        append_line(self.path, json.dumps(row) + "\n")

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()


def main(argv: list[str] | None = None) -> int:
    """`python -m teamsrl.finetune.worker SPEC.json` (started by the launcher, once per rank)."""
    argv = sys.argv[1:] if argv is None else argv
    spec = json.loads(Path(argv[0]).read_text(encoding="utf-8"))
    try:
        train_worker(spec)
    finally:
        # Tear the process group down before the interpreter does: left to exit-time
        # destructors, gloo's threads can abort a finished rank ("terminate called without an
        # active exception", exit -6; seen once in CI on the ZeRO-3 test). Ray Train's workers
        # do not come through here: Ray owns their group.
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
