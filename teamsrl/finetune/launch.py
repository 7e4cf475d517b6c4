"""`teamsrl finetune`: check everything, split the data, then launch the training processes.

    teamsrl finetune --config experiments/quickstart.yaml --data runs/quickstart --out runs/ft
    teamsrl finetune ... --resume          # continue from the newest checkpoint in --out

All input errors (data, columns, base model) are raised here, in the driver, before any training
process starts. The launch is `finetune.num_processes` local processes (backend cpu: gloo with
DS_ACCELERATOR=cpu; gpu: NCCL, one per GPU) or a Ray Train `TorchTrainer` (backend ray), each
running `teamsrl.finetune.worker.train_worker`. With Ray on several nodes, --out must be on
storage every node sees (checkpoints and the model are written there).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from teamsrl.finetune.data import (
    DatasetError,
    check_rows,
    read_rows,
    resolve_data_path,
    row_id,
    schedule_steps,
    split_rows,
    tokenize_rows,
    write_jsonl,
)


def check_base_model(model_id: str) -> Path:
    """Resolve the base model and check it is a causal LM with a tokenizer; returns its folder."""
    from teamsrl.llm.embedded import resolve_model_path

    path = resolve_model_path(model_id)
    if not path.is_dir() or not (path / "config.json").is_file():
        raise ValueError(f"finetune.base_model = {model_id!r}: {str(path)!r} is not a Hugging "
                         "Face model folder (no config.json); expected a causal-LM folder")
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    config = AutoConfig.from_pretrained(path)
    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ValueError(f"finetune.base_model = {model_id!r}: model_type "
                         f"{config.model_type!r} is not a causal LM; expected a model type "
                         "AutoModelForCausalLM loads, e.g. 'llama'")
    heads = config.architectures or []
    if heads and not any(a.endswith(("ForCausalLM", "LMHeadModel")) for a in heads):
        raise ValueError(f"finetune.base_model = {model_id!r}: architectures {heads} hold no "
                         "causal-LM head; expected e.g. ['LlamaForCausalLM']")
    if getattr(config, "is_encoder_decoder", False):
        raise ValueError(f"finetune.base_model = {model_id!r}: an encoder-decoder model "
                         f"({config.model_type!r}); expected a decoder-only causal LM")
    return path


def prepare_split(data: str, out: Path, heldout_fraction: float, seed: int, resume: bool
                  ) -> dict[str, Any]:
    """Validate the dataset and write `split/train.jsonl`, `split/heldout.jsonl`, `split.json`."""
    source = resolve_data_path(data)
    rows = check_rows(read_rows(source), str(source))
    train_idx, held_idx = split_rows(rows, heldout_fraction, seed)
    digest = hashlib.sha256(json.dumps(rows, sort_keys=True).encode("utf-8")).hexdigest()
    record_path = out / "split.json"
    if resume and record_path.is_file():
        old = json.loads(record_path.read_text(encoding="utf-8"))
        if old["rows_sha256"] != digest or old["seed"] != seed \
                or old["heldout_fraction"] != heldout_fraction:
            raise ValueError(f"--resume: {str(record_path)!r} records another dataset or split "
                             f"(rows_sha256 {old['rows_sha256'][:12]}, seed {old['seed']}, "
                             f"heldout_fraction {old['heldout_fraction']}); expected --data "
                             f"{data!r} to hold the same rows as the run being resumed")
    tag = [dict(rows[i], row_id=row_id(rows[i]), source_index=i) for i in range(len(rows))]
    write_jsonl(out / "split" / "train.jsonl", [tag[i] for i in train_idx])
    write_jsonl(out / "split" / "heldout.jsonl", [tag[i] for i in held_idx])
    record = {"source": str(source.resolve()), "rows": len(rows), "rows_sha256": digest,
              "seed": seed, "heldout_fraction": heldout_fraction,
              "train_rows": len(train_idx), "heldout_rows": len(held_idx),
              "train_file": str(out / "split" / "train.jsonl"),
              "heldout_file": str(out / "split" / "heldout.jsonl"),
              "heldout_row_ids": [tag[i]["row_id"] for i in held_idx]}
    record_path.write_text(json.dumps(record, indent=1), encoding="utf-8")
    return record


def planned_steps(config, data: str) -> int:
    """The optimizer steps `run_finetune(config, data, ...)` will take: its training split's
    rows through the schedule (rows whose prompt alone overflows max_length not subtracted)."""
    ft = config.finetune
    source = resolve_data_path(data)
    train, _ = split_rows(check_rows(read_rows(source), str(source)), ft.heldout_fraction,
                          config.seed)
    return schedule_steps(len(train), ft.per_device_batch_size, ft.num_processes,
                          ft.gradient_accumulation_steps, ft.epochs, ft.max_steps)


def run_finetune(config, data: str, out: str | Path, resume: bool = False) -> dict[str, Any]:
    """Fine-tune `config.finetune.base_model` on `data` into `out`; returns the run summary."""
    ft = config.finetune
    out = Path(out).expanduser().resolve()
    if ft.backend == "gpu":
        import torch

        n_gpu = torch.cuda.device_count()
        if n_gpu < ft.num_processes:
            raise ValueError(f"finetune.num_processes = {ft.num_processes} with backend 'gpu': "
                             f"this machine has {n_gpu} CUDA GPU(s); expected at most {n_gpu}, "
                             "or backend 'cpu' / 'ray'")
    if not resume and (out / "checkpoints").is_dir() and any((out / "checkpoints").iterdir()):
        raise ValueError(f"--out {str(out)!r} already holds checkpoints; expected --resume to "
                         "continue that run, or a new --out")
    if resume and not (out / "checkpoints" / "latest").is_file():
        print(f"--resume: no checkpoint in {out / 'checkpoints'}; starting from step 0",
              file=sys.stderr)
    out.mkdir(parents=True, exist_ok=True)
    split = prepare_split(data, out, ft.heldout_fraction, config.seed, resume)
    model_path = check_base_model(ft.base_model)

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    _, report = tokenize_rows(read_rows(split["train_file"]), tokenizer, ft.max_length)
    data_report = {"train_rows": report.rows, "truncated_rows": report.truncated,
                   "dropped_no_response": report.dropped_no_response,
                   "train_tokens": report.tokens, "response_tokens": report.response_tokens,
                   "max_length": ft.max_length}
    (out / "data_report.json").write_text(json.dumps(data_report, indent=1))
    if report.truncated or report.dropped_no_response:
        print(f"finetune: {report.truncated} of {report.rows} training rows were longer than "
              f"max_length={ft.max_length} tokens and were truncated; "
              f"{report.dropped_no_response} lost their whole response and were dropped",
              file=sys.stderr)
    if report.dropped_no_response == report.rows:
        raise DatasetError("no training row left after truncation")

    on_gpu = ft.backend == "gpu" or (ft.backend == "ray" and ft.ray_use_gpu)
    spec = {"config": ft.model_dump(mode="json"), "seed": config.seed, "name": config.name,
            "model_path": str(model_path), "train_file": split["train_file"], "out": str(out),
            "resume": resume, "on_gpu": on_gpu,
            "tracking": config.tracking.model_dump(mode="json")}
    if ft.deepspeed_config:
        spec["config"]["deepspeed_config"] = str(Path(ft.deepspeed_config).resolve())
    if ft.backend == "ray":
        _launch_ray(spec, ft)
    else:
        _launch_local(spec, ft, on_gpu)
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    summary.update(split={k: split[k] for k in ("train_rows", "heldout_rows", "heldout_file")},
                   data=data_report)
    return summary


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch_local(spec: dict[str, Any], ft, on_gpu: bool) -> None:
    """Start one worker process per rank (what torchrun / the deepspeed launcher would do)."""
    out = Path(spec["out"])
    n = ft.num_processes
    if not on_gpu:
        spec["torch_threads"] = max(1, (os.cpu_count() or 1) // n)
    spec_file = out / "spec.json"
    spec_file.write_text(json.dumps(spec, indent=1), encoding="utf-8")
    base = dict(os.environ, MASTER_ADDR="127.0.0.1",
                MASTER_PORT=str(ft.master_port or _free_port()), WORLD_SIZE=str(n),
                LOCAL_WORLD_SIZE=str(n), CROSS_RANK="0", CROSS_SIZE="1")
    base.setdefault("TORCH_EXTENSIONS_DIR", str(Path(sys.prefix) / "torch_extensions"))
    if not on_gpu:
        base.update(DS_ACCELERATOR="cpu", OMP_NUM_THREADS=str(spec["torch_threads"]))
    (out / "logs").mkdir(exist_ok=True)
    procs, failed = [], None
    with _sigterm_raises():
        try:
            for rank in range(n):
                env = dict(base, RANK=str(rank), LOCAL_RANK=str(rank))
                # rank 0 talks to the console (progress, tracebacks); the others to log files
                log = open(out / "logs" / f"rank{rank}.log", "w") if rank else None  # noqa: SIM115
                procs.append((subprocess.Popen(
                    [sys.executable, "-m", "teamsrl.finetune.worker", str(spec_file)], env=env,
                    stdout=log, stderr=subprocess.STDOUT if log else None), log))
            while any(p.poll() is None for p, _ in procs) and failed is None:
                failed = next((r for r, (p, _) in enumerate(procs) if p.returncode not in
                               (None, 0)), None)
                time.sleep(0.2)
            if failed is None:
                failed = next((r for r, (p, _) in enumerate(procs) if p.returncode != 0), None)
        finally:  # also on Ctrl-C and SIGTERM: no rank outlives the driver
            for p, log in procs:
                if p.poll() is None:
                    p.terminate()
                    try:
                        p.wait(timeout=10)
                    except subprocess.TimeoutExpired:
                        p.kill()
                if log:
                    log.close()
    if failed is not None:
        where = "the traceback above" if failed == 0 else \
            f"{out / 'logs' / f'rank{failed}.log'}, which ends with:\n" + \
            (out / "logs" / f"rank{failed}.log").read_text(errors="replace")[-3000:]
        raise RuntimeError(f"fine-tuning rank {failed} exited with code "
                           f"{procs[failed][0].returncode}; see {where}")


@contextlib.contextmanager
def _sigterm_raises():
    """SIGTERM raises SystemExit(143) in the driver, so the ranks are stopped before it exits.

    Python's default SIGTERM handling ends the process at once: no `finally`, and the rank
    processes would train on, orphaned. Only the main thread can install handlers.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum, frame):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the clean-up
        print("teamsrl finetune: SIGTERM: stopping the ranks; `--resume` continues from the "
              "newest checkpoint", file=sys.stderr, flush=True)
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def _launch_ray(spec: dict[str, Any], ft) -> None:
    """Run the same training function as a Ray Train TorchTrainer (one worker per process)."""
    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    from teamsrl.raycluster import starts_local_ray

    if not ray.is_initialized():  # RAY_ADDRESS (set by `ray job submit`), else a Ray of our own
        ray.init(address="local" if starts_local_ray(None) else None)
    from teamsrl.finetune.worker import train_worker

    out = Path(spec["out"])
    spec = dict(spec, torch_threads=max(1, int(ft.ray_cpus_per_worker)))
    resources = {"CPU": ft.ray_cpus_per_worker}
    if ft.ray_use_gpu:
        resources["GPU"] = 1
    trainer = TorchTrainer(
        train_loop_per_worker=train_worker, train_loop_config=spec,
        scaling_config=ScalingConfig(num_workers=ft.num_processes, use_gpu=ft.ray_use_gpu,
                                     resources_per_worker=resources),
        torch_config=TorchConfig(backend="nccl" if ft.ray_use_gpu else "gloo"),
        run_config=RunConfig(name="finetune", storage_path=str(out / "ray")),
    )
    trainer.fit()
