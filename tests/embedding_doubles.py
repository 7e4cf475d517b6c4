"""A deterministic stand-in for the MiniLM embedder, shared by unit and reliability tests."""

from __future__ import annotations

import hashlib

import numpy as np

# The validity judge reads the text (MiniLM embeddings, the reviewer): a run on doubles turns it
# off (its rule and its reward), as a plumbing run must (`ValidityJudge` refuses a double).
NO_JUDGE = ("env.reward.invalid_fails=false", "env.reward.validity_weight=0")


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
