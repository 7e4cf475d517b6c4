"""The fine-tuning worker's environment: DeepSpeed's JIT ops are built with this venv's ninja.

A system ninja and the venv's ninja hash command lines differently; whichever ran last makes
the other rebuild the op (minutes on 2 cores), so the worker always puts its own bin first.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from teamsrl.finetune.worker import _setup_env


def test_the_venv_bin_comes_first_on_path(monkeypatch):
    bin_dir = str(Path(sys.executable).parent)
    monkeypatch.setenv("PATH", os.pathsep.join(["/usr/bin", bin_dir, "/bin"]))
    monkeypatch.delenv("DS_ACCELERATOR", raising=False)
    monkeypatch.delenv("TORCH_EXTENSIONS_DIR", raising=False)  # restored afterwards
    assert _setup_env({"on_gpu": False}) is False
    path = os.environ["PATH"].split(os.pathsep)
    if (Path(bin_dir) / "ninja").is_file():
        assert path == [bin_dir, "/usr/bin", "/bin"]
    else:  # no ninja in this environment: PATH is left alone
        assert path == ["/usr/bin", bin_dir, "/bin"]
    assert os.environ["DS_ACCELERATOR"] == "cpu"
