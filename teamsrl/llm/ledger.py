"""`QueryLedger`: who asked which model how often, at what token cost, and what the cache saved.

The ledger is what proves the method's headline (expert queries as a fraction of the Evol-Instruct
baseline), so every engine call is one committed row: a killed caller loses no counts. Rows carry
a `stage` tag (policy training, generation, ...) and a `session` id (one process's lifetime), so
totals can be read per stage, per session, or over the whole run. A row may carry a `batch` id:
a second row with the same id is ignored, so a writer that retries a commit (the serving side's
store actor, `teamsrl.serving.store`) counts the batch once.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from teamsrl.llm.store import SQLiteStore

_SCHEMA = """
CREATE TABLE IF NOT EXISTS calls (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ts REAL NOT NULL,
    session TEXT NOT NULL,
    stage TEXT NOT NULL,
    node TEXT NOT NULL DEFAULT '',
    role TEXT NOT NULL,
    kind TEXT NOT NULL,
    queries INTEGER NOT NULL,
    cache_hits INTEGER NOT NULL,
    failures INTEGER NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    seconds REAL NOT NULL,
    batch TEXT
);
"""
# after the column migration (a ledger written before `batch` existed has no such column)
_BATCH_INDEX = (
    "CREATE UNIQUE INDEX IF NOT EXISTS calls_batch ON calls(batch) WHERE batch IS NOT NULL")
_FIELDS = ("queries", "cache_hits", "failures", "prompt_tokens", "completion_tokens", "seconds")


@dataclass
class RoleTotals:
    """Summed counts of one role."""

    queries: int = 0
    cache_hits: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0

    @property
    def hit_rate(self) -> float:
        """Share of requests served by the cache."""
        total = self.queries + self.cache_hits
        return self.cache_hits / total if total else 0.0

    def as_dict(self) -> dict:
        """Plain dict with the hit rate."""
        return asdict(self) | {"hit_rate": self.hit_rate}


class QueryLedger:
    """Append-only record of LLM calls; `path=None` keeps it in memory."""

    def __init__(self, path: str | Path | None = None, stage: str = "default") -> None:
        self._store = SQLiteStore(path, _SCHEMA, "query ledger")
        self.path = self._store.path
        columns = {row[1] for row in self._store.read("PRAGMA table_info(calls)")}
        if "node" not in columns:  # a ledger written before per-node accounting
            self._store.write("ALTER TABLE calls ADD COLUMN node TEXT NOT NULL DEFAULT ''", [()])
        if "batch" not in columns:  # a ledger written before idempotent commits
            self._store.write("ALTER TABLE calls ADD COLUMN batch TEXT", [()])
        self._store.write(_BATCH_INDEX, [()])
        self.stage = stage
        self.session = uuid.uuid4().hex

    def record(
        self,
        role: str,
        kind: str,
        *,
        queries: int,
        cache_hits: int = 0,
        failures: int = 0,
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        seconds: float = 0.0,
        stage: str | None = None,
        node: str = "",
        batch: str | None = None,
    ) -> None:
        """Commit one call's counts (a batch counts each of its requests); `node` names the
        Ray node the requests came from ("" = this process); a `batch` id already recorded
        makes this a no-op (a retried commit)."""
        row = (time.time(), self.session, stage or self.stage, node, role, kind, queries,
               cache_hits, failures, prompt_tokens, completion_tokens, seconds, batch)
        self._store.write(
            "INSERT OR IGNORE INTO calls (ts, session, stage, node, role, kind, queries,"
            " cache_hits, failures, prompt_tokens, completion_tokens, seconds, batch)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            [row],
        )

    def totals(self, *, stage: str | None = None, session: str | None = None
               ) -> dict[str, RoleTotals]:
        """Per-role totals, optionally of one stage and/or one session only."""
        where, args = [], []
        if stage is not None:
            where.append("stage = ?")
            args.append(stage)
        if session is not None:
            where.append("session = ?")
            args.append(session)
        clause = f"WHERE {' AND '.join(where)}" if where else ""
        sums = ", ".join(f"SUM({f})" for f in _FIELDS)
        rows = self._store.read(
            f"SELECT role, {sums} FROM calls {clause} GROUP BY role ORDER BY role", tuple(args)
        )
        return {r[0]: RoleTotals(*r[1:6], seconds=float(r[6])) for r in rows}

    def queries_by_node(self, stage: str | None = None) -> dict[str, int]:
        """Queries sent per calling node (cache hits excluded), optionally of one stage."""
        clause, args = ("WHERE stage = ?", (stage,)) if stage is not None else ("", ())
        rows = self._store.read(
            f"SELECT node, SUM(queries) FROM calls {clause} GROUP BY node ORDER BY node", args)
        return {node: int(n) for node, n in rows}

    def session_totals(self) -> dict[str, RoleTotals]:
        """Totals of this process's calls only."""
        return self.totals(session=self.session)

    def close(self) -> None:
        """Close the underlying file."""
        self._store.close()


def format_totals(totals: dict[str, RoleTotals]) -> str:
    """One human line: `expert: 1 query, 0 cache hits, 52+48 tokens, 2.1 s; reviewer: ...`."""
    if not totals:
        return "no LLM calls"
    parts = []
    for role, t in totals.items():
        q = "query" if t.queries == 1 else "queries"
        h = "cache hit" if t.cache_hits == 1 else "cache hits"
        part = (f"{role}: {t.queries} {q}, {t.cache_hits} {h}, "
                f"{t.prompt_tokens}+{t.completion_tokens} tokens, {t.seconds:.1f} s")
        if t.failures:
            part += f", {t.failures} failed"
        parts.append(part)
    return "; ".join(parts)
