"""Row filters and dataset measures of `teamsrl generate`.

- `answer_failure`: WizardLM's elimination rules for an answer (empty, a short apology).
- `deduplicate`: cross-row near-duplicate removal, MinHash LSH (datasketch) on word 3-gram
  shingles, then embedding cosine similarity (MiniLM). Rows are visited in (seed order, step)
  order (`Row.order`), so the kept set does not depend on which shard or batch finished first.
- `diversity`: mean pairwise embedding distance and distinct-2 of a set of instructions.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

import numpy as np

from teamsrl.generation.rows import Row
from teamsrl.outcomes import Drop, DropKind
from teamsrl.rewards import is_apology

_WORD = re.compile(r"[a-z0-9']+")


def answer_failure(text: str, apology_max_words: int = 80) -> Drop | None:
    """Why an answer is unusable (None when it is fine)."""
    stripped = text.strip()
    if not stripped:
        return Drop(DropKind.ANSWER_EMPTY)
    if is_apology(stripped, apology_max_words):
        return Drop(DropKind.ANSWER_APOLOGY)
    return None


def _shingles(text: str, n: int = 3) -> set[str]:
    words = _WORD.findall(text.lower())
    if len(words) < n:
        return {" ".join(words)} if words else {""}
    return {" ".join(words[i:i + n]) for i in range(len(words) - n + 1)}


def deduplicate(rows: Sequence[Row], minhash_threshold: float | None, num_perm: int,
                embedding_threshold: float | None,
                encode: Callable[[list[str]], np.ndarray] | None = None
                ) -> tuple[list[Row], list[tuple[Row, Drop]]]:
    """Split rows into (kept, [(dropped, reason)]), visiting them in `Row.order`.

    A row is dropped when its estimated Jaccard similarity to an earlier kept row reaches
    `minhash_threshold`, or its cosine similarity (vectors from `encode`, unit length) reaches
    `embedding_threshold`. The reason names the earlier row's id.
    """
    ordered = sorted(rows, key=lambda r: r.order)
    dropped: list[tuple[Row, Drop]] = []
    survivors = ordered
    if minhash_threshold is not None and ordered:
        from datasketch import MinHash, MinHashLSH

        lsh = MinHashLSH(threshold=minhash_threshold, num_perm=num_perm)
        hashes: dict[str, MinHash] = {}
        position = {r.row_id: r.order for r in ordered}
        survivors = []
        for row in ordered:
            m = MinHash(num_perm=num_perm, seed=1)
            m.update_batch([s.encode("utf-8") for s in _shingles(row.text)])
            similar = [k for k in lsh.query(m) if hashes[k].jaccard(m) >= minhash_threshold]
            if similar:
                first = min(similar, key=position.__getitem__)
                dropped.append((row, Drop(DropKind.DUPLICATE_MINHASH, first)))
                continue
            lsh.insert(row.row_id, m)
            hashes[row.row_id] = m
            survivors.append(row)
    if embedding_threshold is not None and survivors:
        if encode is None:
            raise ValueError("deduplicate: embedding_threshold is set but no encoder was given")
        vectors = np.asarray(encode([r.text for r in survivors]), dtype=np.float32)
        kept_idx: list[int] = []
        kept: list[Row] = []
        for i, row in enumerate(survivors):
            if kept_idx:
                sims = vectors[kept_idx] @ vectors[i]
                j = int(np.argmax(sims))
                if float(sims[j]) >= embedding_threshold:
                    dropped.append((row, Drop(DropKind.DUPLICATE_EMBEDDING,
                                              survivors[kept_idx[j]].row_id)))
                    continue
            kept_idx.append(i)
            kept.append(row)
        survivors = kept
    return survivors, dropped


def distinct_n(texts: Sequence[str], n: int = 2) -> float:
    """Distinct word n-grams / all word n-grams over `texts` (0 when there are none)."""
    grams, total = set(), 0
    for text in texts:
        words = _WORD.findall(text.lower())
        for i in range(len(words) - n + 1):
            grams.add(tuple(words[i:i + n]))
            total += 1
    return len(grams) / total if total else 0.0


def mean_pairwise_distance(vectors: np.ndarray, max_rows: int = 2000, seed: int = 0) -> float:
    """Mean cosine distance (1 - cos) over all pairs of unit vectors (a seeded sample of
    `max_rows` rows when there are more); 0 with fewer than two rows."""
    v = np.asarray(vectors, dtype=np.float64)
    if len(v) < 2:
        return 0.0
    if len(v) > max_rows:
        v = v[np.random.default_rng(seed).choice(len(v), max_rows, replace=False)]
    sims = v @ v.T
    n = len(v)
    return float(1.0 - (sims.sum() - np.trace(sims)) / (n * (n - 1)))


def diversity(texts: Sequence[str], encode: Callable[[list[str]], np.ndarray]) -> dict:
    """`mean_pairwise_distance` (MiniLM) and `distinct_2` of a set of texts."""
    if not texts:
        return {"mean_pairwise_distance": 0.0, "distinct_2": 0.0}
    return {"mean_pairwise_distance": round(mean_pairwise_distance(encode(list(texts))), 6),
            "distinct_2": round(distinct_n(texts, 2), 6)}
