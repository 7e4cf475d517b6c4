"""The SmolLM2 HF folder is built by one process when several ask for it at once.

The de-quantisation itself is replaced by a stub that records who ran it (the property is who
builds, not what): two forked processes pass a barrier together and ask for the folder of an
empty cache; one builds, the other waits for it and reuses the folder.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

from teamsrl.llm import embedded


def _stub_build(gguf: Path, target: Path) -> None:
    with open(target.parent / "builds.log", "a") as f:
        f.write(f"{os.getpid()}\n")
    time.sleep(0.5)  # a build takes a while: long enough for the other process to look
    target.mkdir(exist_ok=True)
    (target / "config.json").write_text("{}")


def _ask(barrier, out: multiprocessing.Queue) -> None:
    embedded._build_smollm2_hf_dir = _stub_build
    barrier.wait()
    out.put(str(embedded.smollm2_hf_dir()))


def test_two_processes_asking_at_once_build_the_folder_once(tmp_path, monkeypatch):
    monkeypatch.setenv("TEAMSRL_CACHE", str(tmp_path))
    ctx = multiprocessing.get_context("fork")
    barrier, out = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_ask, args=(barrier, out)) for _ in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    assert [p.exitcode for p in procs] == [0, 0]
    folders = {out.get(timeout=5) for _ in procs}
    assert len(folders) == 1 and Path(folders.pop(), "config.json").is_file()
    builds = (tmp_path / "models" / "builds.log").read_text().split()
    assert len(builds) == 1, f"built by {len(builds)} processes: {builds}"
