"""Sentence embeddings for the MDP's observations and the novelty reward.

`Embedder` wraps a sentence-transformers model (default: the embedded all-MiniLM-L6-v2, 384
dimensions, found through `teamsrl.llm.embedded`; nothing is downloaded). Vectors are
L2-normalised, so a dot product is a cosine similarity. Texts are encoded one at a time and at one
torch thread: padding a batch, or a second thread (`teamsrl.cpu`), changes the float result in
the last bits, and the env must give the same observation and novelty for the same text alone or
in a vector env, quiet or under load, first run or resumed (one thread: ~13 ms a text here
against ~11 ms at two; encoding is cheap next to generation).
The model loads on the first `encode`, so building an env that never resets loads nothing.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np

from teamsrl.cpu import torch_threads
from teamsrl.llm.embedded import MINILM_ID, resolve_model_path

MINILM_DIM = 384


class Embedder:
    """Normalised sentence embeddings on CPU, with a small text -> vector memo."""

    def __init__(self, model_id: str = MINILM_ID, device: str = "cpu", memo_size: int = 4096
                 ) -> None:
        self.model_id = model_id
        self.device = device
        self.memo_size = memo_size
        self._model = None
        self._memo: OrderedDict[str, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()

    def _load(self):
        if self._model is None:
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(str(resolve_model_path(self.model_id)),
                                              device=self.device, local_files_only=True)
        return self._model

    @property
    def dim(self) -> int:
        """Embedding width (384 for MiniLM; read from the model otherwise)."""
        if self.model_id == MINILM_ID and self._model is None:
            return MINILM_DIM
        model = self._load()
        get_dim = getattr(model, "get_embedding_dimension", None) or \
            model.get_sentence_embedding_dimension
        return int(get_dim())

    def encode(self, texts: list[str]) -> np.ndarray:
        """`(len(texts), dim)` float32 unit vectors; an empty text embeds like any other."""
        with self._lock, torch_threads(1):
            out = []
            for text in texts:
                vec = self._memo.get(text)
                if vec is None:
                    vec = self._load().encode([text], batch_size=1, normalize_embeddings=True,
                                              convert_to_numpy=True, show_progress_bar=False)[0]
                    vec = np.asarray(vec, dtype=np.float32)
                    self._memo[text] = vec
                    if len(self._memo) > self.memo_size:
                        self._memo.popitem(last=False)
                else:
                    self._memo.move_to_end(text)
                out.append(vec)
            return np.stack(out) if out else np.zeros((0, self.dim), dtype=np.float32)


_SHARED: dict[tuple[str, str], Embedder] = {}


def shared_embedder(model_id: str = MINILM_ID, device: str = "cpu") -> Embedder:
    """One `Embedder` per (model, device) in this process, shared by every env copy."""
    key = (model_id, device)
    if key not in _SHARED:
        _SHARED[key] = Embedder(model_id, device)
    return _SHARED[key]
