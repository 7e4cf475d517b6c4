"""`teamsrl compare RUN_A RUN_B`: two generation runs side by side.

Every number is recomputed from the run's files — `rows.jsonl` (every row, its verdicts and the
requests it cost), `data.jsonl` (the kept rows) — plus the ledger snapshot in `summary.json`
(engine queries and cache hits) and the policy's training cost, so the table can be checked
against the artefacts.

Validity (`validity_share`, also in `teamsrl report`): the share of the kept rows that are valid
instructions, with a 95% percentile bootstrap interval over rows. A row judged during generation
counts by its recorded validity against the threshold of the run's judge (`env.quality` in the
run's config.yaml, `auto` resolved for the run's reviewer); a row the run did not judge (an
older run, or the judge off) is scored now by the judge's `embedding` method (MiniLM, no LLM
query). With `env.reward.invalid_fails` on, a kept row passed the judge already, so the recorded
share is 1 by construction; the share of all steps that failed as "not an instruction" is then
the figure that tells the arms apart.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from teamsrl.config import read_yaml
from teamsrl.generation.filters import distinct_n, mean_pairwise_distance
from teamsrl.generation.rows import Row, read_rows
from teamsrl.layout import GenerationLayout
from teamsrl.llm.config import ModelSpec
from teamsrl.outcomes import FailureKind
from teamsrl.quality import JudgeFile, QualityConfig, ValidityJudge, resolve_method

CONFIDENCE = 0.95
RESAMPLES = 2000


def _jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise FileNotFoundError(f"{str(path)!r}: not found — is this a finished "
                                "`teamsrl generate` run folder?")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()]


def read_generation(run: str | Path) -> tuple[list[Row], list[Row]]:
    """Every row of a generation run folder (rows.jsonl) and its kept rows (data.jsonl)."""
    files = GenerationLayout(Path(run))
    _jsonl(files.rows)  # a clear error when the folder is not a generation run
    return read_rows(files.rows), [Row.from_json(r) for r in _jsonl(files.data)]


def run_stats(run: str | Path, encode=None,
              rescore: Callable[[], ValidityScorer] | None = None) -> dict:
    """The comparison numbers of one generation run folder (`rescore`: see `validity_share`)."""
    run = Path(run)
    files = GenerationLayout(run)
    rows, kept = read_generation(run)
    validity = validity_share(rows, kept, files.config, rescore or embedding_judge)
    summary = json.loads(files.summary.read_text()) if files.summary.is_file() else {}
    drops = Counter(r.drop.kind.value for r in rows if not r.kept)
    kept_ids = {r.row_id for r in kept}
    drops["near-duplicate"] = sum(1 for r in rows if r.kept and r.row_id not in kept_ids)
    gen_q = {role: sum(r.queries[role] for r in rows) for role in ("expert", "reviewer")}
    train_q = {role: int(t.get("queries", 0))
               for role, t in summary.get("policy_training", {}).items()}
    texts = [r.text for r in kept]
    if encode is None:
        from teamsrl.embeddings import shared_embedder

        encode = shared_embedder().encode
    return {
        "run": str(run), "arm": summary.get("arm", "?"), "seeds": len({r.seed_id for r in rows}),
        "rows_generated": len(rows), "rows_kept": len(kept),
        "expert_generation": gen_q["expert"], "reviewer_generation": gen_q["reviewer"],
        "expert_training": train_q.get("expert", 0),
        "reviewer_training": train_q.get("reviewer", 0),
        "expert_total": gen_q["expert"] + train_q.get("expert", 0),
        "reviewer_total": gen_q["reviewer"] + train_q.get("reviewer", 0),
        "expert_per_kept_row": (gen_q["expert"] / len(kept)) if kept else float("nan"),
        "engine_queries_expert": summary.get("ledger", {}).get("expert", {}).get("queries"),
        "cache_hits_expert": summary.get("ledger", {}).get("expert", {}).get("cache_hits"),
        "diversity": round(mean_pairwise_distance(encode(texts)), 6) if len(texts) > 1 else 0.0,
        "distinct_2": round(distinct_n(texts, 2), 6),
        "drops": {k: v for k, v in sorted(drops.items()) if v},
        "valid_share": validity.share, "valid_interval": validity.interval(),
        "not_instruction_share": validity.not_instruction_share,
        "validity": validity.as_dict(),
    }


ROWS_SHOWN = [
    ("rows generated", "rows_generated", "d"), ("rows kept", "rows_kept", "d"),
    ("expert requests: generation", "expert_generation", "d"),
    ("expert requests: policy training", "expert_training", "d"),
    ("expert requests: total", "expert_total", "d"),
    ("reviewer requests: generation", "reviewer_generation", "d"),
    ("reviewer requests: policy training", "reviewer_training", "d"),
    ("reviewer requests: total", "reviewer_total", "d"),
    ("expert requests per kept row (generation)", "expert_per_kept_row", ".2f"),
    ("expert engine queries (ledger, cache misses)", "engine_queries_expert", "d"),
    ("expert cache hits (ledger)", "cache_hits_expert", "d"),
    ("diversity: mean pairwise distance", "diversity", ".4f"),
    ("diversity: distinct-2", "distinct_2", ".4f"),
    ("kept rows judged valid: share", "valid_share", ".3f"),
    (f"kept rows judged valid: {CONFIDENCE:.0%} interval", "valid_interval", "s"),
    ("steps failed as not an instruction: share", "not_instruction_share", ".3f"),
]


def compare_table(a: dict, b: dict) -> str:
    """A plain-text table of two `run_stats` results, then how each run's validity was judged."""
    def fmt(v, spec):
        return "-" if v is None else format(v, spec)

    cells = [(label, fmt(a[key], spec), fmt(b[key], spec)) for label, key, spec in ROWS_SHOWN]
    for reason in sorted(set(a["drops"]) | set(b["drops"])):
        cells.append((f"dropped: {reason}", str(a["drops"].get(reason, 0)),
                      str(b["drops"].get(reason, 0))))
    width = max(len(c[0]) for c in cells) + 2
    col = max(14, *(len(v) + 2 for c in cells for v in c[1:]))
    lines = [f"A = {a['run']}", f"B = {b['run']}",
             f"{'':<{width}}{'A: ' + a['arm']:>{col}}{'B: ' + b['arm']:>{col}}"]
    lines += [f"{label:<{width}}{va:>{col}}{vb:>{col}}" for label, va, vb in cells]
    lines += [f"validity of {name}: {s['validity']['method']}" for name, s in (("A", a), ("B", b))]
    return "\n".join(lines)


class ValidityScorer(Protocol):
    """What scores the kept rows a run did not judge (`ValidityJudge` is one)."""

    method: str
    threshold: float

    def validity(self, texts: list[str]) -> list[float]:
        """P(valid instruction) per text."""
        ...


@dataclass(frozen=True)
class JudgeUsed:
    """A judge's method and threshold: a text is valid when its validity is >= the threshold."""

    method: str
    threshold: float

    def __str__(self) -> str:
        return f"{self.method} judge, valid at >= {self.threshold:.3f}"


@dataclass(frozen=True)
class ValidityShare:
    """An arm's kept rows judged valid instructions, how they were judged, and its steps that
    failed as "not an instruction"."""

    kept: int
    valid: int
    low: float  # the share's percentile bootstrap interval over rows (`CONFIDENCE`)
    high: float
    recorded: int  # kept rows judged during generation: their recorded validity vs `recorded_by`
    rescored: int  # kept rows the run did not judge, scored now by `rescored_by`
    recorded_by: JudgeUsed | None
    rescored_by: JudgeUsed | None
    steps: int  # every evolution step (rows.jsonl)
    not_instruction: int  # steps that failed as FailureKind.NOT_INSTRUCTION

    @property
    def share(self) -> float:
        """Valid kept rows / kept rows (NaN without kept rows)."""
        return self.valid / self.kept if self.kept else float("nan")

    @property
    def not_instruction_share(self) -> float:
        """Steps failed as "not an instruction" / all steps (NaN without steps)."""
        return self.not_instruction / self.steps if self.steps else float("nan")

    def interval(self) -> str:
        """`[low, high]`, or "–" without kept rows."""
        return "–" if math.isnan(self.low) else f"[{self.low:.3f}, {self.high:.3f}]"

    def method(self) -> str:
        """How the kept rows were judged, in words."""
        parts = []
        if self.recorded:
            parts.append(f"{self.recorded} kept rows by the validity recorded during generation "
                         f"({self.recorded_by})")
        if self.rescored:
            parts.append(f"{self.rescored} kept rows not judged by the run, scored now "
                         f"({self.rescored_by}; no LLM query when embedding)")
        return "; ".join(parts) or "no kept rows"

    def as_dict(self) -> dict:
        """The fields, the shares and `method()` (for `--json`)."""
        return {**asdict(self), "share": self.share,
                "not_instruction_share": self.not_instruction_share, "method": self.method()}


def embedding_judge() -> ValidityScorer:
    """The judge's `embedding` method (MiniLM + logistic regression, no LLM query) at its
    dev-chosen threshold: what scores rows a run did not judge."""
    return ValidityJudge.from_config(QualityConfig(method="embedding"))


@dataclass(frozen=True)
class _RunReviewer:
    """Stands in for a run's LLM client in `resolve_method`, which asks only for the reviewer's
    model (each row records it)."""

    model: str

    def spec(self, role: str) -> ModelSpec:
        return ModelSpec(model=self.model)


def recorded_judge(config_file: Path, reviewer_model: str) -> JudgeUsed:
    """The judge a run recorded validities with: method and threshold from `env.quality` of its
    config.yaml (defaults when absent), `auto` resolved for the run's reviewer as the run did."""
    data = read_yaml(config_file) if config_file.is_file() else {}
    config = QualityConfig(**((data.get("env") or {}).get("quality") or {}))
    weights = JudgeFile.load(config.judge_file)
    method = resolve_method(config.method, weights, _RunReviewer(reviewer_model))
    threshold = config.threshold if config.threshold is not None else weights.threshold(method)
    return JudgeUsed(method, threshold)


def share_interval(valid: int, n: int, confidence: float = CONFIDENCE,
                   resamples: int = RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the share `valid / n` over rows. A resample of the n
    rows (with replacement) holds Binomial(n, valid/n) valid ones, so the resampled shares are
    drawn from that directly: the same distribution, without n x resamples row draws."""
    if n == 0:
        return float("nan"), float("nan")
    shares = np.random.default_rng(seed).binomial(n, valid / n, size=resamples) / n
    alpha = (1.0 - confidence) / 2
    low, high = np.quantile(shares, [alpha, 1.0 - alpha])
    return float(low), float(high)


def validity_share(rows: list[Row], kept: list[Row], config_file: Path,
                   rescore: Callable[[], ValidityScorer]) -> ValidityShare:
    """How many of `kept` are valid instructions: recorded validities against the run's judge
    (`recorded_judge` of `config_file`), the rest scored by `rescore()` (called only when some
    kept row has no recorded validity); and the steps of `rows` failed as not an instruction."""
    judged = [r for r in kept if r.validity is not None]
    unjudged = [r for r in kept if r.validity is None]
    recorded_by = (recorded_judge(config_file, judged[0].reviewer_model) if judged else None)
    valid = sum(r.validity >= recorded_by.threshold for r in judged)
    rescored_by = None
    if unjudged:
        scorer = rescore()
        rescored_by = JudgeUsed(scorer.method, scorer.threshold)
        scores = scorer.validity([r.instruction for r in unjudged])
        valid += sum(v >= scorer.threshold for v in scores)
    low, high = share_interval(valid, len(kept))
    not_instruction = sum(1 for r in rows
                          if r.failure and r.failure.kind == FailureKind.NOT_INSTRUCTION)
    return ValidityShare(len(kept), valid, low, high, len(judged), len(unjudged), recorded_by,
                         rescored_by, len(rows), not_instruction)
