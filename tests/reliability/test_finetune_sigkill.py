"""Fine-tuning killed with SIGKILL mid-epoch (driver and both ranks at once, as an OOM killer
or a pre-empted node would) and resumed from its newest checkpoint.

The run is the `teamsrl finetune` command in its own process group on a tiny random Llama; once
it has logged a step past a checkpoint, the whole group gets SIGKILL. `--resume` then continues
from the newest complete checkpoint: nothing written before is lost or corrupt, the steps done
twice (after the checkpoint, before the kill) give the same losses again, and the run finishes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from tiny_models import save_tiny_llama

FIXTURE = Path(__file__).parent.parent / "fixtures" / "finetune_run"
SAVE, KILL_AFTER, STEPS = 3, 4, 12


@pytest.fixture(scope="module")
def tiny_llama_base(tmp_path_factory) -> Path:
    """A random 2-layer Llama (hidden 64) with the SmolLM2 tokenizer, saved as an HF folder."""
    return save_tiny_llama(tmp_path_factory.mktemp("tiny-llama-kill"))


def _sets(base: Path) -> list[str]:
    sets = [f"finetune.base_model={base}", "finetune.learning_rate=3e-3", "finetune.epochs=10",
            f"finetune.max_steps={STEPS}", f"finetune.save_steps={SAVE}",
            "finetune.keep_checkpoints=2", "finetune.per_device_batch_size=2",
            "finetune.max_length=128", "finetune.heldout_fraction=0.1", "tracking.mode=disabled"]
    return [a for s in sets for a in ("--set", s)]


def _rows(out: Path) -> list[dict]:
    lines = (out / "metrics.jsonl").read_text().splitlines() if (out / "metrics.jsonl").is_file() \
        else []
    return [json.loads(line) for line in lines]  # every line whole: a torn line fails here


def test_sigkilled_finetune_resumes_from_its_last_checkpoint(tiny_llama_base, tmp_path):
    from teamsrl.config import load_config
    from teamsrl.finetune.launch import run_finetune

    out = tmp_path / "ft"
    cmd = [sys.executable, "-m", "teamsrl.cli", "finetune", "--data", str(FIXTURE), "--out",
           str(out), *_sets(tiny_llama_base)]
    log = (tmp_path / "first.log").open("w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    group = os.getpgid(proc.pid)
    killed_at = None
    deadline = time.monotonic() + 300
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            steps = [r["step"] for r in _rows(out) if "loss" in r]
            if steps and steps[-1] >= KILL_AFTER:
                os.killpg(group, signal.SIGKILL)  # driver and both ranks, no clean-up
                killed_at = steps[-1]
                break
            time.sleep(0.05)
    finally:
        if proc.poll() is None and killed_at is None:
            os.killpg(group, signal.SIGKILL)
        proc.wait(timeout=30)
        log.close()
    assert killed_at is not None, (tmp_path / "first.log").read_text()[-3000:]
    assert proc.returncode == -signal.SIGKILL
    time.sleep(0.5)
    alive = [p for p in psutil.process_iter(["pid"]) if _in_group(p, group)]
    assert not alive, alive  # no rank survived the kill
    assert killed_at < STEPS and not (out / "model").exists()  # killed mid-run, mid-epoch
    before = _rows(out)
    latest = (out / "checkpoints" / "latest").read_text().strip()
    checkpoint_step = int(latest.removeprefix("step"))
    assert SAVE <= checkpoint_step <= killed_at and checkpoint_step % SAVE == 0

    config = load_config(None, [s for s in _sets(tiny_llama_base) if s != "--set"])
    summary = run_finetune(config, str(FIXTURE), out, resume=True)
    assert summary["finished"] and summary["steps"] == STEPS
    assert (out / "model" / "model.safetensors").is_file()

    rows = _rows(out)
    assert rows[: len(before)] == before  # nothing written before the kill was lost
    (resumed,) = [r for r in rows if r.get("event") == "resumed"]
    assert resumed["from_step"] == checkpoint_step
    assert resumed["optimizer_fingerprint"] == pytest.approx(resumed["saved_fingerprint"],
                                                             rel=1e-12)
    first = {r["step"]: r for r in before if "loss" in r}
    again = {r["step"]: r for r in rows[len(before):] if "loss" in r}
    assert sorted(again) == list(range(checkpoint_step + 1, STEPS + 1))
    redone = sorted(set(first) & set(again))
    assert redone, "the kill came right after a checkpoint: no step was redone"
    for step in redone:  # same data order, same restored weights and optimizer state
        assert again[step]["loss"] == pytest.approx(first[step]["loss"], rel=1e-5)
        assert again[step]["lr"] == pytest.approx(first[step]["lr"], rel=1e-9)


def test_sigterm_stops_the_ranks_with_the_driver(tiny_llama_base, tmp_path):
    """SIGTERM to the driver alone (what `kill PID` or a job supervisor sends): the driver stops
    its ranks before it exits, so none trains on orphaned; `--resume` can pick the run up."""
    out = tmp_path / "ft"
    cmd = [sys.executable, "-m", "teamsrl.cli", "finetune", "--data", str(FIXTURE), "--out",
           str(out), *_sets(tiny_llama_base)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    group = os.getpgid(proc.pid)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None and \
                not [r for r in _rows(out) if "loss" in r]:
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        ranks = [p for p in psutil.Process(proc.pid).children() if "teamsrl.finetune.worker"
                 in " ".join(p.cmdline())]
        assert len(ranks) == 2, ranks
        proc.send_signal(signal.SIGTERM)  # the driver only, not its group
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(group, signal.SIGKILL)
            proc.wait(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "SIGTERM: stopping the ranks" in err
    _, alive = psutil.wait_procs(ranks, timeout=5)
    assert not alive, alive
    assert not [p for p in psutil.process_iter(["pid"]) if _in_group(p, group)]
    assert not (out / "model").exists()


def _in_group(proc: psutil.Process, group: int) -> bool:
    try:  # a zombie is dead: it only waits for its new parent to reap it
        return os.getpgid(proc.pid) == group and proc.status() != psutil.STATUS_ZOMBIE
    except (ProcessLookupError, psutil.Error, OSError):
        return False
