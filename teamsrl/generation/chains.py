"""A few seeds' evolution chains, for a person to read: each seed, then every step's operation,
rewrite (shortened), reviewer verdict, validity and fate (kept, or why it was dropped).

Built from a run's rows here and nowhere else; `teamsrl report` renders the steps as a Markdown
table per arm, `teamsrl generate` logs them to W&B as a table (`generate/chains`) when it ends.
The seeds shown are the first `seeds` in seed order (their position in the seed source), so two
arms generated from the same seeds show the same seeds.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from teamsrl.generation.rows import Row

CHAIN_COLUMNS = ("seed", "step", "operation", "rewrite", "verdict", "validity", "outcome")
SEEDS_SHOWN = 3
TEXT_CHARS = 160  # a rewrite longer than this is cut, with "…"
KEPT = "kept"
# kept by the rules and the answer filter, removed by the near-duplicate pass at the end
# (rows.jsonl still says kept; data.jsonl does not hold it)
DEDUPED = "dropped: near-duplicate (removed at the end)"


@dataclass(frozen=True)
class ChainStep:
    """One line of a chain table: the seed itself (step 0) or one evolution step."""

    seed_id: str
    step: int  # 0: the seed instruction
    operation: str  # the action taken; "seed" at step 0
    text: str  # the rewrite (or the seed), cut to `TEXT_CHARS`
    verdict: float | None  # the reviewer's P(the rewrite differs); None at step 0
    validity: float | None  # the judge's P(valid instruction); None: not judged
    outcome: str  # "kept", "dropped: <reason>", "" at step 0

    def cells(self) -> list[str | int | float | None]:
        """The line's values in `CHAIN_COLUMNS` order."""
        return [self.seed_id, self.step, self.operation, self.text, self.verdict,
                self.validity, self.outcome]


def shorten(text: str, chars: int = TEXT_CHARS) -> str:
    """`text` stripped, cut to `chars` characters with a closing "…" when longer."""
    text = text.strip()
    return text if len(text) <= chars else text[:chars - 1].rstrip() + "…"


def outcome(row: Row, final_ids: set[str] | None = None) -> str:
    """"kept" or "dropped: <reason>"; with `final_ids` (the row ids of data.jsonl), a row the
    near-duplicate pass removed shows as such."""
    if not row.kept:
        return f"dropped: {row.drop}"
    if final_ids is not None and row.row_id not in final_ids:
        return DEDUPED
    return KEPT


def chain_steps(rows: Iterable[Row], final_ids: set[str] | None = None,
                seeds: int = SEEDS_SHOWN, chars: int = TEXT_CHARS) -> list[ChainStep]:
    """The chains of the first `seeds` seeds in seed order: per seed its instruction (step 0),
    then its steps in order."""
    by_seed: dict[tuple[int, str], list[Row]] = {}
    for r in rows:
        by_seed.setdefault((r.seed_index, r.seed_id), []).append(r)
    out: list[ChainStep] = []
    for key in sorted(by_seed)[:seeds]:
        chain = sorted(by_seed[key], key=lambda r: r.order)
        out.append(ChainStep(key[1], 0, "seed", shorten(chain[0].seed_instruction, chars),
                             None, None, ""))
        out += [ChainStep(r.seed_id, r.step, r.action, shorten(r.instruction, chars), r.verdict,
                          r.validity, outcome(r, final_ids)) for r in chain]
    return out
