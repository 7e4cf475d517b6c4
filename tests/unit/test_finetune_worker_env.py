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


def test_zero_imports_muon_without_loading_torch_inductor():
    """ZeRO imports DeepSpeed's Muon optimizer in every rank; on CPU the import leaves its kernels
    eager instead of loading torch's inductor for them (~2 s of CPU a rank), and DeepSpeed's
    compile decorator is its own again afterwards. Run in a fresh interpreter: this one may have
    imported either module already."""
    import json
    import subprocess

    probe = (
        "import json, sys\n"
        "import deepspeed.runtime.compiler as c\n"
        "real = c.compile\n"
        "from teamsrl.finetune.engine import MUON_MODULE, _import_muon_uncompiled\n"
        "_import_muon_uncompiled()\n"
        "print(json.dumps({'muon': MUON_MODULE in sys.modules,\n"
        "                  'inductor': 'torch._inductor.compile_fx' in sys.modules,\n"
        "                  'decorator_restored': c.compile is real}))\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          timeout=300, env=os.environ | {"DS_ACCELERATOR": "cpu"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {
        "muon": True, "inductor": False, "decorator_restored": True}
