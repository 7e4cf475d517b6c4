"""Torch threads from this process's CPU share, re-read while an engine runs.

Torch's CPU kernels split each op over one OpenMP thread per core, and the threads meet at a
barrier after every op, spinning there before they sleep. On cores that other busy processes
share, a thread waits at each barrier for a partner the scheduler has parked, and a generation
beside two busy processes ran 5.6-7.5x slower than quiet instead of the ~2x its lost CPU share
explains (benchmarks/results/contention.json). `ThreadGovernor` sets torch's threads to the
cores nobody else is running on (at least one, at most the threads torch started with): with one
thread there is no barrier to wait at. The engines call `adjust()` before each batch and
`tick()` on every decode step (re-read every `every` steps), so a compile that starts
mid-generation is seen within a few seconds. Reading the share costs ~1 ms (`/proc/loadavg`'s
running count minus this process's running threads, the fewest of 3 reads 2 ms apart so a
passing daemon is not counted).

Threads change no text: a generation is the same at 1 or 2 threads
(tests/integration/test_engine_and_client.py). They do change floats in the last bits where a
matrix is small: MiniLM's vector of a 5-11-token text differs by ~1e-7 between 1 and 2 threads
(the matmul kernel blocks its sums by thread), so `teamsrl.embeddings` encodes at one thread
(`torch_threads`) and an observation or a novelty is the same whatever the load.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def others_running(reads: int = 3, gap_s: float = 0.002, proc: Path = Path("/proc")
                   ) -> int | None:
    """Threads running or runnable on this machine outside this process: the fewest over
    `reads` reads; None where /proc cannot tell (not Linux)."""
    fewest = None
    for i in range(reads):
        try:
            running = int((proc / "loadavg").read_text().split()[3].split("/")[0])
            mine = 0
            for task in os.scandir(proc / "self" / "task"):
                try:
                    stat = Path(task.path, "stat").read_text()
                except OSError:  # the thread ended meanwhile
                    continue
                mine += stat[stat.rindex(")") + 2] == "R"
        except (OSError, ValueError, IndexError):
            return None
        others = max(0, running - mine)
        fewest = others if fewest is None else min(fewest, others)
        if fewest == 0:
            break
        if i + 1 < reads:
            time.sleep(gap_s)
    return fewest


class ThreadGovernor:
    """Keeps torch's thread count at this process's share of its cores.

    `max_threads`: the most it may use (default: torch's count when the governor is built, which
    Ray and OMP_NUM_THREADS already set from the process's reserved CPUs)."""

    def __init__(self, max_threads: int | None = None, every: int = 16) -> None:
        import torch

        self.max_threads = max_threads or torch.get_num_threads()
        self.cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
            else (os.cpu_count() or 1)
        self.every = every
        self._ticks = 0

    def share(self) -> int:
        """Threads to use now: the cores others leave free, between 1 and `max_threads`."""
        others = others_running()
        if others is None:
            return self.max_threads
        return max(1, min(self.max_threads, self.cores - others))

    def adjust(self) -> int:
        """Set torch's threads to `share()`; returns it."""
        import torch

        threads = self.share()
        if threads != torch.get_num_threads():
            torch.set_num_threads(threads)
        return threads

    def tick(self) -> None:
        """Call once per decode step: re-adjusts every `every` calls."""
        self._ticks += 1
        if self._ticks % self.every == 0:
            self.adjust()


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with torch at `n` threads, then restore the count. The count is the
    process's: another thread that sets it meanwhile (a `ThreadGovernor`) wins until the end."""
    import torch

    before = torch.get_num_threads()
    if before != n:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
