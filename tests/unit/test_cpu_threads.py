"""`teamsrl.cpu`: the share of the cores other processes leave free, read from /proc, and the
torch thread count the engines take from it."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from teamsrl import cpu


def fake_proc(tmp_path: Path, running: int, states: str) -> Path:
    """A /proc with `running` runnable threads machine-wide and this process's threads in
    `states` (one letter each)."""
    (tmp_path / "loadavg").write_text(f"0.52 0.40 0.31 {running}/412 31337\n")
    for i, state in enumerate(states):
        task = tmp_path / "self" / "task" / str(100 + i)
        task.mkdir(parents=True)
        task.joinpath("stat").write_text(f"{100 + i} (python (x) y) {state} 1 2 3 4\n")
    return tmp_path


def test_this_process_running_threads_are_not_counted(tmp_path):
    proc = fake_proc(tmp_path, running=5, states="RRSS")
    assert cpu.others_running(reads=1, proc=proc) == 3


def test_no_proc_means_unknown(tmp_path):
    assert cpu.others_running(reads=1, proc=tmp_path / "absent") is None


def test_busy_processes_are_seen():
    burners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:  # the burners are runnable at every read once started: wait for that, with a deadline
        deadline, seen = time.monotonic() + 10.0, 0
        while seen < 2 and time.monotonic() < deadline:
            seen = cpu.others_running() or 0
    finally:
        for b in burners:
            b.kill()
            b.wait()
    assert seen >= 2


@pytest.mark.parametrize(("others", "threads"), [(0, 2), (1, 1), (2, 1), (7, 1), (None, 2)])
def test_the_share_is_the_free_cores_between_one_and_the_maximum(monkeypatch, others, threads):
    monkeypatch.setattr(cpu, "others_running", lambda: others)
    governor = cpu.ThreadGovernor(max_threads=2)
    governor.cores = 2
    assert governor.share() == threads


def test_tick_re_reads_every_n_steps(monkeypatch):
    import torch

    calls = []
    monkeypatch.setattr(cpu, "others_running", lambda: calls.append(1) or 0)
    before = torch.get_num_threads()
    governor = cpu.ThreadGovernor(max_threads=before, every=4)
    for _ in range(12):
        governor.tick()
    assert len(calls) == 3
    assert torch.get_num_threads() == before
