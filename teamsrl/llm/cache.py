"""`ResponseCache`: a content-addressed, on-disk cache of LLM responses.

Key = sha256 of (kind, model id, messages, sampling parameters, seed) — see `ChatRequest.cache_key`.
Because engines are batch-invariant and seeded per request, a cache hit returns exactly what a
fresh query would, so a rerun or a resumed run costs no new query and changes no result.
"""

from __future__ import annotations

import json
from pathlib import Path

from teamsrl.llm.store import SQLiteStore

_SCHEMA = "CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, value TEXT NOT NULL);"


class ResponseCache:
    """Maps request keys to response dicts; `path=None` keeps it in memory."""

    def __init__(self, path: str | Path | None) -> None:
        self._store = SQLiteStore(path, _SCHEMA, "LLM cache")
        self.path = self._store.path

    def get_many(self, keys: list[str]) -> dict[str, dict]:
        """The cached values among `keys` (missing keys are absent from the result)."""
        found: dict[str, dict] = {}
        for i in range(0, len(keys), 500):
            chunk = keys[i : i + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._store.read(
                f"SELECT key, value FROM responses WHERE key IN ({marks})", tuple(chunk)
            )
            found.update((k, json.loads(v)) for k, v in rows)
        return found

    def put_many(self, items: dict[str, dict]) -> None:
        """Store values (one transaction)."""
        rows = [(k, json.dumps(v, ensure_ascii=False)) for k, v in items.items()]
        self._store.write("INSERT OR REPLACE INTO responses (key, value) VALUES (?, ?)", rows)

    def keys_since(self, seq: int) -> tuple[int, list[str]]:
        """Keys stored after position `seq` (SQLite's rowid: 0 = all) and the last position
        now (`seq` when nothing is newer): a reader that keeps the position it got sees each
        key stored after it (a replaced key comes back once more, with a new position)."""
        rows = self._store.read(
            "SELECT rowid, key FROM responses WHERE rowid > ? ORDER BY rowid", (seq,))
        return (rows[-1][0] if rows else seq), [k for _, k in rows]

    def __len__(self) -> int:
        return self._store.read("SELECT COUNT(*) FROM responses")[0][0]

    def close(self) -> None:
        """Close the underlying file."""
        self._store.close()
