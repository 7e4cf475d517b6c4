"""A deterministic stand-in for the MiniLM embedder, shared by unit and reliability tests."""

from __future__ import annotations

import hashlib

import numpy as np


class HashEmbedder:
    """Unit vectors from a digest of the text (the MiniLM shape, 384)."""

    dim = 384

    def encode(self, texts):
        out = []
        for t in texts:
            rng = np.random.default_rng(int.from_bytes(hashlib.sha1(t.encode()).digest()[:8]))
            v = rng.normal(size=self.dim).astype(np.float32)
            out.append(v / np.linalg.norm(v))
        return np.stack(out)
