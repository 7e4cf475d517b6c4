"""The one writer of a benchmark's results file (`--out benchmarks/results/<name>.json`).

Every benchmark that quotes a figure keeps it here, with what is needed to reproduce and judge
it: the command line, the commit (and whether the tree had uncommitted changes), the
arguments, the date, the machine (cores, memory, CPU model, load averages at start and end,
torch version and threads, the GPU if any) and the raw per-repeat figures.

    results = ResultsFile(args.out, vars(args))     # at the start: command, date, load
    ...
    results.write(summary={...}, raw={...})         # at the end; does nothing without --out
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def add_out_argument(parser: argparse.ArgumentParser, name: str) -> None:
    """`--out PATH`: where the results JSON goes (conventionally benchmarks/results/NAME.json)."""
    parser.add_argument("--out", default=None, metavar="PATH",
                        help=f"write the results JSON here (e.g. benchmarks/results/{name}.json)")


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def _cpuinfo(field: str) -> str | None:
    """The first value of `field` in /proc/cpuinfo (None where there is none)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith(field):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def _cpu_model() -> str:
    return _cpuinfo("model name") or platform.processor() or platform.machine()


def cpu_vector_flags() -> list[str]:
    """The CPU's AVX / AMX / FMA flags: float32 kernels, and so last bits, differ by them."""
    return sorted(f for f in (_cpuinfo("flags") or "").split()
                  if f.startswith(("avx", "amx", "fma")))


def _mem_total_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


def machine_facts() -> dict[str, Any]:
    """Cores, memory, CPU model, load averages now, Python, torch (version, threads), GPU."""
    facts: dict[str, Any] = {
        "hostname": platform.node(),
        "nproc": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else os.cpu_count(),
        "cpu_count": os.cpu_count(),
        "mem_total_gib": _mem_total_gib(),
        "cpu_model": _cpu_model(),
        "loadavg_1_5_15": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
    }
    try:
        import torch

        facts["torch"] = torch.__version__
        facts["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            facts["gpu"] = torch.cuda.get_device_name()
    except ImportError:
        facts["torch"] = None
    return facts


class ResultsFile:
    """One benchmark run's results file: opened when the run starts, written when it ends."""

    def __init__(self, path: str | os.PathLike | None, config: dict[str, Any]) -> None:
        self.path = Path(path) if path else None
        self.config = {k: v for k, v in config.items() if k != "out"}
        exe = Path(sys.executable)
        if exe.is_relative_to(REPO):  # e.g. .venv/bin/python
            exe = exe.relative_to(REPO)
        self.command = shlex.join([str(exe), *sys.argv])
        self.date = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
        self.load_at_start = [round(x, 2) for x in os.getloadavg()]
        self._t0 = time.perf_counter()

    def write(self, summary: dict[str, Any], raw: Any) -> Path | None:
        """Write {command, commit, config, date, machine, wall_s, summary, raw}; None without
        a path. `summary` holds the figures the benchmark prints, `raw` every repeat's."""
        if self.path is None:
            return None
        machine = machine_facts()
        machine["loadavg_at_start"] = self.load_at_start
        machine["loadavg_at_end"] = machine.pop("loadavg_1_5_15")
        record = {
            "command": self.command,
            "commit": _git("rev-parse", "HEAD"),
            "uncommitted_changes": bool(_git("status", "--porcelain", "--untracked-files=no")),
            "config": self.config,
            "date": self.date,
            "wall_s": round(time.perf_counter() - self._t0, 1),
            "machine": machine,
            "summary": summary,
            "raw": raw,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_text(json.dumps(record, indent=1, default=str) + "\n", encoding="utf-8")
        print(f"results: {self.path}")
        return self.path
